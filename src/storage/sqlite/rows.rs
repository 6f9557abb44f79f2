//! Conversions between rows and the record model.

use rusqlite::{Row, Statement, params};

use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::{Cell, CellKey, SeriesKey, Sketch, Tier};
use crate::model::{LlmCall, Operation, Source, Status, Tags};
use crate::storage::StorageError;

pub const INSERT_CALL: &str = "INSERT OR IGNORE INTO calls (project, id, series, time_ms, \
    started_at_ms, completed_at_ms, response_model, session, requests, input_tokens, \
    output_tokens, total_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, \
    completed, estimated, streaming, request_bytes, output_chunks, ttft_ms, duration_ms, \
    error_type, cost_usd, price_id, reported_cost_usd, source, trace_id, span_id) VALUES \
    (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)";

/// Inserts one call; returns false when its id was already stored.
pub fn insert_call(
    stmt: &mut Statement<'_>,
    call: &LlmCall,
    series: i64,
) -> Result<bool, rusqlite::Error> {
    let changed = stmt.execute(params![
        call.project,
        call.id,
        series,
        call.time_ms,
        call.started_at_ms,
        call.completed_at_ms,
        call.response_model,
        call.session,
        call.requests as i64,
        call.input_tokens as i64,
        call.output_tokens as i64,
        call.total_tokens as i64,
        call.cache_read_tokens as i64,
        call.cache_write_tokens as i64,
        call.reasoning_tokens as i64,
        call.completed,
        call.estimated,
        call.streaming,
        call.request_bytes.map(|n| n as i64),
        call.output_chunks.map(|n| n as i64),
        call.ttft_ms,
        call.duration_ms,
        call.error_type,
        call.cost_usd,
        call.price_id,
        call.reported_cost_usd,
        call.source.as_str(),
        call.trace_id,
        call.span_id,
    ])?;
    Ok(changed == 1)
}

/// Columns read back by `call_from_row`, with the series joined in.
pub const SELECT_CALL: &str = "SELECT c.seq, c.series, c.project, c.id, c.time_ms, \
    c.started_at_ms, c.completed_at_ms, c.response_model, c.session, c.requests, \
    c.input_tokens, c.output_tokens, c.total_tokens, c.cache_read_tokens, \
    c.cache_write_tokens, c.reasoning_tokens, c.completed, c.estimated, c.streaming, \
    c.request_bytes, c.output_chunks, c.ttft_ms, c.duration_ms, c.error_type, c.cost_usd, \
    c.price_id, c.reported_cost_usd, c.source, c.trace_id, c.span_id, s.model, s.provider, \
    s.operation, s.user, s.api_key, s.route, s.status, s.cluster, s.tags \
    FROM calls c JOIN series s ON s.id = c.series";

fn corrupt(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(StorageError::Corrupt(what)),
    )
}

pub fn call_from_row(row: &Row<'_>) -> Result<SequencedCall, rusqlite::Error> {
    let u = |i: usize| -> Result<u64, rusqlite::Error> { Ok(row.get::<_, i64>(i)? as u64) };
    let operation: String = row.get(32)?;
    let status: String = row.get(36)?;
    let source: String = row.get(27)?;
    let tags: String = row.get(38)?;
    let call = LlmCall {
        id: row.get(3)?,
        project: row.get(2)?,
        time_ms: row.get(4)?,
        started_at_ms: row.get(5)?,
        completed_at_ms: row.get(6)?,
        model: row.get(30)?,
        response_model: row.get(7)?,
        provider: row.get(31)?,
        operation: Operation::parse(&operation)
            .ok_or_else(|| corrupt(format!("operation {operation:?}")))?,
        user: row.get(33)?,
        api_key: row.get(34)?,
        session: row.get(8)?,
        route: row.get(35)?,
        cluster: row.get(37)?,
        tags: serde_json::from_str::<Tags>(&tags).map_err(|e| corrupt(format!("tags: {e}")))?,
        requests: u(9)?,
        input_tokens: u(10)?,
        output_tokens: u(11)?,
        total_tokens: u(12)?,
        cache_read_tokens: u(13)?,
        cache_write_tokens: u(14)?,
        reasoning_tokens: u(15)?,
        completed: row.get(16)?,
        estimated: row.get(17)?,
        streaming: row.get(18)?,
        request_bytes: row.get::<_, Option<i64>>(19)?.map(|n| n as u64),
        output_chunks: row.get::<_, Option<i64>>(20)?.map(|n| n as u64),
        ttft_ms: row.get(21)?,
        duration_ms: row.get(22)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        error_type: row.get(23)?,
        cost_usd: row.get(24)?,
        price_id: row.get(25)?,
        reported_cost_usd: row.get(26)?,
        source: Source::parse(&source).ok_or_else(|| corrupt(format!("source {source:?}")))?,
        trace_id: row.get(28)?,
        span_id: row.get(29)?,
    };
    Ok(SequencedCall {
        seq: row.get(0)?,
        series: row.get(1)?,
        call,
    })
}

pub const INSERT_SERIES: &str = "INSERT OR IGNORE INTO series (id, project, model, provider, \
    operation, user, api_key, route, status, cluster, tags) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

pub fn insert_series(
    stmt: &mut Statement<'_>,
    id: i64,
    key: &SeriesKey,
) -> Result<(), rusqlite::Error> {
    let tags = serde_json::to_string(&key.tags).expect("string maps serialize");
    stmt.execute(params![
        id,
        key.project,
        key.model,
        key.provider,
        key.operation.as_str(),
        key.user,
        key.api_key,
        key.route,
        key.status.as_str(),
        key.cluster,
        tags,
    ])?;
    Ok(())
}

pub const SELECT_SERIES: &str = "SELECT id, project, model, provider, operation, user, api_key, \
    route, status, cluster, tags FROM series";

pub fn series_from_row(row: &Row<'_>) -> Result<(i64, SeriesKey), rusqlite::Error> {
    let operation: String = row.get(4)?;
    let status: String = row.get(8)?;
    let tags: String = row.get(10)?;
    let key = SeriesKey {
        project: row.get(1)?,
        model: row.get(2)?,
        provider: row.get(3)?,
        operation: Operation::parse(&operation)
            .ok_or_else(|| corrupt(format!("operation {operation:?}")))?,
        user: row.get(5)?,
        api_key: row.get(6)?,
        route: row.get(7)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        cluster: row.get(9)?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(format!("tags: {e}")))?,
    };
    Ok((row.get(0)?, key))
}

pub const SELECT_ROLLUP: &str = "SELECT tier, bucket, series, requests, input_tokens, \
    output_tokens, total_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, \
    errors, estimated, unpriced, cost_usd, reported_cost_usd, latency, ttft FROM rollups";

/// Adds a cell to the stored one (or inserts it): counters add up, sketches
/// merge through the `sketch_merge` SQL function, all in one statement.
pub const MERGE_ROLLUP: &str = "INSERT INTO rollups (tier, bucket, series, requests, \
    input_tokens, output_tokens, total_tokens, cache_read_tokens, cache_write_tokens, \
    reasoning_tokens, errors, estimated, unpriced, cost_usd, reported_cost_usd, latency, ttft) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
    ON CONFLICT (tier, bucket, series) DO UPDATE SET \
    requests = requests + excluded.requests, \
    input_tokens = input_tokens + excluded.input_tokens, \
    output_tokens = output_tokens + excluded.output_tokens, \
    total_tokens = total_tokens + excluded.total_tokens, \
    cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, \
    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, \
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
    errors = errors + excluded.errors, \
    estimated = estimated + excluded.estimated, \
    unpriced = unpriced + excluded.unpriced, \
    cost_usd = cost_usd + excluded.cost_usd, \
    reported_cost_usd = reported_cost_usd + excluded.reported_cost_usd, \
    latency = sketch_merge(latency, excluded.latency), \
    ttft = sketch_merge(ttft, excluded.ttft)";

/// Registers `sketch_merge(a, b)`: the encoding of two encoded sketches merged.
pub fn register_functions(conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "sketch_merge",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let decode = |i: usize| -> Result<Sketch, rusqlite::Error> {
                let bytes = ctx
                    .get_raw(i)
                    .as_blob()
                    .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?;
                Sketch::decode(bytes).map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
            };
            let b = decode(1)?;
            if b.is_empty() {
                return Ok(ctx
                    .get_raw(0)
                    .as_blob()
                    .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?
                    .to_vec());
            }
            let mut a = decode(0)?;
            a.merge(&b);
            Ok(a.to_bytes())
        },
    )
}

pub fn rollup_from_row(row: &Row<'_>) -> Result<(CellKey, Cell), rusqlite::Error> {
    let u = |i: usize| -> Result<u64, rusqlite::Error> { Ok(row.get::<_, i64>(i)? as u64) };
    let tier_code: i64 = row.get(0)?;
    let tier = Tier::from_code(tier_code).ok_or_else(|| corrupt(format!("tier {tier_code}")))?;
    let sketch = |i: usize| -> Result<Sketch, rusqlite::Error> {
        let bytes = row.get_ref(i)?.as_blob()?;
        Sketch::decode(bytes).map_err(|e| corrupt(format!("sketch: {e}")))
    };
    let key = CellKey {
        tier,
        bucket: row.get(1)?,
        series: row.get(2)?,
    };
    let cell = Cell {
        requests: u(3)?,
        input_tokens: u(4)?,
        output_tokens: u(5)?,
        total_tokens: u(6)?,
        cache_read_tokens: u(7)?,
        cache_write_tokens: u(8)?,
        reasoning_tokens: u(9)?,
        errors: u(10)?,
        estimated: u(11)?,
        unpriced: u(12)?,
        cost_usd: row.get(13)?,
        reported_cost_usd: row.get(14)?,
        latency_ms: sketch(15)?,
        ttft_ms: sketch(16)?,
    };
    Ok((key, cell))
}

pub fn write_rollup(
    stmt: &mut Statement<'_>,
    key: &CellKey,
    cell: &Cell,
) -> Result<(), rusqlite::Error> {
    stmt.execute(params![
        key.tier.code(),
        key.bucket,
        key.series,
        cell.requests as i64,
        cell.input_tokens as i64,
        cell.output_tokens as i64,
        cell.total_tokens as i64,
        cell.cache_read_tokens as i64,
        cell.cache_write_tokens as i64,
        cell.reasoning_tokens as i64,
        cell.errors as i64,
        cell.estimated as i64,
        cell.unpriced as i64,
        cell.cost_usd,
        cell.reported_cost_usd,
        cell.latency_ms.to_bytes(),
        cell.ttft_ms.to_bytes(),
    ])?;
    Ok(())
}
