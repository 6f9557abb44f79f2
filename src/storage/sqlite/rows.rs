//! Conversions between rows and the record model.

use rusqlite::{Row, Statement, params};
use serde::{Deserialize, Serialize};

use super::call_columns::CallRow;
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::{Cell, CellKey, SeriesKey, Sketch, Tier};
use crate::model::{LlmCall, Operation, Source, Status, Tags};
use crate::storage::StorageError;

/// A call's own fields as schema 11 and before wrote them, a postcard
/// record each (`call_columns` writes them since), read only to move old
/// calls into the columns; the rest of its bytes were its own dimensions.
#[derive(Serialize, Deserialize)]
struct LegacyPayload<'a> {
    started_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
    #[serde(borrow)]
    response_model: Option<&'a str>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    completed: bool,
    estimated: bool,
    streaming: Option<bool>,
    request_bytes: Option<u64>,
    output_chunks: Option<u64>,
    ttft_ms: Option<f64>,
    duration_ms: Option<f64>,
    #[serde(borrow)]
    error_type: Option<&'a str>,
    cost_usd: f64,
    #[serde(borrow)]
    price_id: Option<&'a str>,
    reported_cost_usd: Option<f64>,
    #[serde(borrow)]
    source: &'a str,
    #[serde(borrow)]
    trace_id: Option<&'a str>,
    #[serde(borrow)]
    span_id: Option<&'a str>,
}

/// A call as schema 11 and before stored it (its seq, series, time, id and
/// session beside a postcard payload), as a row of the columns.
pub fn legacy_row<'a>(
    (seq, series, time_ms): (i64, i64, i64),
    id: Option<&'a str>,
    session: Option<&'a str>,
    payload: &'a [u8],
) -> Result<CallRow<'a>, StorageError> {
    let corrupt = |e: postcard::Error| StorageError::Corrupt(format!("call payload: {e}"));
    let (p, own) = postcard::take_from_bytes::<LegacyPayload<'a>>(payload).map_err(corrupt)?;
    Ok(CallRow {
        seq,
        time_ms,
        series,
        id,
        session,
        started_at_ms: p.started_at_ms,
        completed_at_ms: p.completed_at_ms,
        response_model: p.response_model,
        requests: p.requests,
        input_tokens: p.input_tokens,
        output_tokens: p.output_tokens,
        total_tokens: p.total_tokens,
        cache_read_tokens: p.cache_read_tokens,
        cache_write_tokens: p.cache_write_tokens,
        reasoning_tokens: p.reasoning_tokens,
        completed: p.completed,
        estimated: p.estimated,
        streaming: p.streaming,
        request_bytes: p.request_bytes,
        output_chunks: p.output_chunks,
        ttft_ms: p.ttft_ms,
        duration_ms: p.duration_ms,
        error_type: p.error_type,
        cost_usd: p.cost_usd,
        price_id: p.price_id,
        reported_cost_usd: p.reported_cost_usd,
        source: Source::parse(p.source)
            .ok_or_else(|| StorageError::Corrupt(format!("source {:?}", p.source)))?,
        trace_id: p.trace_id,
        span_id: p.span_id,
        own: (!own.is_empty()).then_some(own),
    })
}

/// `call`'s payload as schema 11 and before wrote it, for tests that make
/// old stores.
#[cfg(test)]
pub fn legacy_payload(call: &LlmCall, out: &mut Vec<u8>) {
    let payload = LegacyPayload {
        started_at_ms: call.started_at_ms,
        completed_at_ms: call.completed_at_ms,
        response_model: call.response_model.as_deref(),
        requests: call.requests,
        input_tokens: call.input_tokens,
        output_tokens: call.output_tokens,
        total_tokens: call.total_tokens,
        cache_read_tokens: call.cache_read_tokens,
        cache_write_tokens: call.cache_write_tokens,
        reasoning_tokens: call.reasoning_tokens,
        completed: call.completed,
        estimated: call.estimated,
        streaming: call.streaming,
        request_bytes: call.request_bytes,
        output_chunks: call.output_chunks,
        ttft_ms: call.ttft_ms,
        duration_ms: call.duration_ms,
        error_type: call.error_type.as_deref(),
        cost_usd: call.cost_usd,
        price_id: call.price_id.as_deref(),
        reported_cost_usd: call.reported_cost_usd,
        source: call.source.as_str(),
        trace_id: call.trace_id.as_deref(),
        span_id: call.span_id.as_deref(),
    };
    out.clear();
    postcard::to_io(&payload, &mut *out).expect("writing to a Vec cannot fail");
}

/// The dimensions a call keeps in its own record when its series holds
/// `OVERFLOW` in their place; written after the payload.
#[derive(Serialize)]
struct OwnDimensionsRef<'a> {
    model: &'a str,
    provider: Option<&'a str>,
    user: Option<&'a str>,
    api_key: Option<&'a str>,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    tags: &'a Tags,
}

#[derive(Deserialize)]
struct OwnDimensions {
    model: String,
    provider: Option<String>,
    user: Option<String>,
    api_key: Option<String>,
    route: Option<String>,
    cluster: Option<String>,
    tags: Tags,
}

/// Appends `call`'s dimensions to its encoded payload.
pub fn encode_own_dimensions(call: &LlmCall, out: &mut Vec<u8>) {
    let own = OwnDimensionsRef {
        model: &call.model,
        provider: call.provider.as_deref(),
        user: call.user.as_deref(),
        api_key: call.api_key.as_deref(),
        route: call.route.as_deref(),
        cluster: call.cluster.as_deref(),
        tags: &call.tags,
    };
    postcard::to_io(&own, &mut *out).expect("writing to a Vec cannot fail");
}

/// The own dimensions of calls whose series holds `OVERFLOW` in their place,
/// encoded by the request handlers (`Storage::encode`), one after the other
/// in one buffer (empty for a call whose series holds them).
#[derive(Default)]
pub struct EncodedCalls {
    bytes: Vec<u8>,
    /// Where each call's part ends in `bytes`.
    ends: Vec<usize>,
}

impl EncodedCalls {
    /// The own dimensions of `calls` at `own_dimensions` (ascending indices).
    pub fn of(calls: &[LlmCall], own_dimensions: &[usize]) -> Self {
        let mut encoded = Self { bytes: Vec::new(), ends: Vec::with_capacity(calls.len()) };
        let mut own = own_dimensions.iter().peekable();
        for (index, call) in calls.iter().enumerate() {
            if own.next_if_eq(&&index).is_some() {
                encode_own_dimensions(call, &mut encoded.bytes);
            }
            encoded.ends.push(encoded.bytes.len());
        }
        encoded
    }

    /// Encoded calls joined in order.
    pub fn joined(parts: impl Iterator<Item = Self>, calls: usize) -> Self {
        let mut all = Self { bytes: Vec::new(), ends: Vec::with_capacity(calls) };
        for part in parts {
            let offset = all.bytes.len();
            all.bytes.extend_from_slice(&part.bytes);
            all.ends.extend(part.ends.iter().map(|end| end + offset));
        }
        all
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The own dimensions of the `i`th call, when it keeps them.
    pub fn own_dimensions(&self, i: usize) -> Option<&[u8]> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.ends[i] > start).then(|| &self.bytes[start..self.ends[i]])
    }
}

fn corrupt(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(StorageError::Corrupt(what)),
    )
}

/// A stored call of `project` put back together with its series'
/// dimensions (or its own).
pub fn decode_call(
    row: &CallRow<'_>,
    project: &str,
    key: &SeriesKey,
) -> Result<SequencedCall, StorageError> {
    let mut call = LlmCall {
        id: row.id.map(str::to_owned),
        project: project.to_owned(),
        time_ms: row.time_ms,
        started_at_ms: row.started_at_ms,
        completed_at_ms: row.completed_at_ms,
        model: key.model.clone(),
        response_model: row.response_model.map(str::to_owned),
        provider: key.provider.clone(),
        operation: key.operation,
        user: key.user.clone(),
        api_key: key.api_key.clone(),
        session: row.session.map(str::to_owned),
        route: key.route.clone(),
        cluster: key.cluster.clone(),
        tags: key.tags.clone(),
        requests: row.requests,
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        total_tokens: row.total_tokens,
        cache_read_tokens: row.cache_read_tokens,
        cache_write_tokens: row.cache_write_tokens,
        reasoning_tokens: row.reasoning_tokens,
        completed: row.completed,
        estimated: row.estimated,
        streaming: row.streaming,
        request_bytes: row.request_bytes,
        output_chunks: row.output_chunks,
        ttft_ms: row.ttft_ms,
        duration_ms: row.duration_ms,
        status: key.status,
        error_type: row.error_type.map(str::to_owned),
        cost_usd: row.cost_usd,
        price_id: row.price_id.map(str::to_owned),
        reported_cost_usd: row.reported_cost_usd,
        source: row.source,
        trace_id: row.trace_id.map(str::to_owned),
        span_id: row.span_id.map(str::to_owned),
    };
    if let Some(own) = row.own {
        let own: OwnDimensions = postcard::from_bytes(own)
            .map_err(|e| StorageError::Corrupt(format!("call's own dimensions: {e}")))?;
        call.model = own.model;
        call.provider = own.provider;
        call.user = own.user;
        call.api_key = own.api_key;
        call.route = own.route;
        call.cluster = own.cluster;
        call.tags = own.tags;
    }
    Ok(SequencedCall { seq: row.seq, series: row.series, call })
}

pub const INSERT_SERIES: &str = "INSERT OR IGNORE INTO series (id, project, model, provider, \
    operation, user, api_key, route, status, cluster, tags, projection) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

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
        key.projection,
    ])?;
    Ok(())
}

pub const SELECT_SERIES: &str = "SELECT id, project, model, provider, operation, user, api_key, \
    route, status, cluster, tags, projection FROM series";

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
        projection: row.get(11)?,
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

/// A rollup row's key and counters; its sketches (columns 15 and 16) are
/// left to the caller, to decode or merge as they are.
pub fn rollup_counters_from_row(row: &Row<'_>) -> Result<(CellKey, Cell), rusqlite::Error> {
    let u = |i: usize| -> Result<u64, rusqlite::Error> { Ok(row.get::<_, i64>(i)? as u64) };
    let tier_code: i64 = row.get(0)?;
    let tier = Tier::from_code(tier_code).ok_or_else(|| corrupt(format!("tier {tier_code}")))?;
    let key = CellKey { tier, bucket: row.get(1)?, series: row.get(2)? };
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
        latency_ms: Sketch::default(),
        ttft_ms: Sketch::default(),
    };
    Ok((key, cell))
}

pub fn rollup_from_row(row: &Row<'_>) -> Result<(CellKey, Cell), rusqlite::Error> {
    let (key, mut cell) = rollup_counters_from_row(row)?;
    let sketch = |i: usize| -> Result<Sketch, rusqlite::Error> {
        let bytes = row.get_ref(i)?.as_blob()?;
        Sketch::decode(bytes).map_err(|e| corrupt(format!("sketch: {e}")))
    };
    cell.latency_ms = sketch(15)?;
    cell.ttft_ms = sketch(16)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_payload_reads_back_every_field() {
        // Every payload field set to something other than its default.
        let call = LlmCall {
            id: Some("r1".into()),
            time_ms: 5,
            started_at_ms: Some(1),
            completed_at_ms: Some(5),
            response_model: Some("m-2024".into()),
            requests: 2,
            input_tokens: 10,
            output_tokens: 11,
            total_tokens: 21,
            cache_read_tokens: 3,
            cache_write_tokens: 4,
            reasoning_tokens: 5,
            completed: false,
            estimated: true,
            streaming: Some(true),
            request_bytes: Some(400),
            output_chunks: Some(7),
            ttft_ms: Some(12.5),
            duration_ms: Some(99.0),
            error_type: Some("timeout".into()),
            cost_usd: 0.25,
            price_id: Some("catalog:m".into()),
            reported_cost_usd: Some(0.5),
            trace_id: Some("t".into()),
            span_id: Some("s".into()),
            ..LlmCall::example()
        };
        let mut bytes = Vec::new();
        legacy_payload(&call, &mut bytes);
        let plain = legacy_row((3, 1, 5), Some("r1"), None, &bytes).unwrap();
        assert_eq!(plain, CallRow::of(&call, 3, 1, None));
        // Own dimensions followed the payload.
        encode_own_dimensions(&call, &mut bytes);
        let with_own = legacy_row((3, 1, 5), Some("r1"), None, &bytes).unwrap();
        assert!(with_own.own.is_some_and(|own| !own.is_empty()));
    }
}
