//! The `calls` table: every field of a call in a column of its own, with the
//! node that committed it and its sequence number there. The table is a
//! ReplacingMergeTree ordered with `(node, seq)` last, so a block shipped
//! again (a crash between the insert and the node's own record of it) holds
//! the same keys and reads once through `FINAL`.

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::{ClickHouse, StorageError, backend};
use crate::aggregate::rollup::SequencedCall;
use crate::model::{LlmCall, Operation, Source, Status};

/// The statements of the table (a migration's).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.calls (
            project {lc},
            day Date,
            time_ms Int64{delta},
            node {lc},
            seq Int64,
            id String{zstd},
            started_at_ms Nullable(Int64),
            completed_at_ms Nullable(Int64),
            model {lc},
            response_model Nullable(String),
            provider Nullable(String),
            operation {lc},
            user Nullable(String){zstd},
            api_key Nullable(String),
            session Nullable(String){zstd},
            route Nullable(String),
            cluster Nullable(String),
            tag_keys Array(String),
            tag_values Array(String),
            requests UInt64,
            input_tokens UInt64,
            output_tokens UInt64,
            total_tokens UInt64,
            cache_read_tokens UInt64,
            cache_write_tokens UInt64,
            reasoning_tokens UInt64,
            completed UInt8,
            estimated UInt8,
            request_bytes Nullable(UInt64),
            output_chunks Nullable(UInt64),
            streaming Nullable(UInt8),
            ttft_ms Nullable(Float64),
            duration_ms Nullable(Float64),
            status {lc},
            error_type Nullable(String),
            cost_usd Float64,
            price_id Nullable(String),
            reported_cost_usd Nullable(Float64),
            source {lc},
            trace_id Nullable(String){zstd},
            span_id Nullable(String)
        ) ENGINE = ReplacingMergeTree
        PARTITION BY day
        ORDER BY (project, day, node, seq)",
        db = ddl.database,
        delta = ddl.codec("DoubleDelta, ZSTD"),
        zstd = ddl.codec("ZSTD"),
    )]
}

/// A call as a row of the table, in its column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct CallRow {
    project: String,
    /// Days since the epoch (`Date`).
    day: u16,
    time_ms: i64,
    node: String,
    seq: i64,
    id: String,
    started_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
    model: String,
    response_model: Option<String>,
    provider: Option<String>,
    operation: String,
    user: Option<String>,
    api_key: Option<String>,
    session: Option<String>,
    route: Option<String>,
    cluster: Option<String>,
    /// Tags as two parallel arrays, in key order.
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    completed: u8,
    estimated: u8,
    request_bytes: Option<u64>,
    output_chunks: Option<u64>,
    streaming: Option<u8>,
    ttft_ms: Option<f64>,
    duration_ms: Option<f64>,
    status: String,
    error_type: Option<String>,
    cost_usd: f64,
    price_id: Option<String>,
    reported_cost_usd: Option<f64>,
    source: String,
    trace_id: Option<String>,
    span_id: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day of `ms` as `YYYY-MM-DD` (what `toDate` reads on every
/// server version).
fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.max(0))
        .map_or_else(|| "1970-01-01".to_owned(), |t| t.date_naive().to_string())
}

impl CallRow {
    fn of(node: &str, stored: &SequencedCall) -> CallRow {
        let c = &stored.call;
        CallRow {
            project: c.project.clone(),
            day: c.time_ms.div_euclid(DAY_MS).clamp(0, i64::from(u16::MAX)) as u16,
            time_ms: c.time_ms,
            node: node.to_owned(),
            seq: stored.seq,
            id: c.id.clone().unwrap_or_default(),
            started_at_ms: c.started_at_ms,
            completed_at_ms: c.completed_at_ms,
            model: c.model.clone(),
            response_model: c.response_model.clone(),
            provider: c.provider.clone(),
            operation: c.operation.as_str().to_owned(),
            user: c.user.clone(),
            api_key: c.api_key.clone(),
            session: c.session.clone(),
            route: c.route.clone(),
            cluster: c.cluster.clone(),
            tag_keys: c.tags.keys().cloned().collect(),
            tag_values: c.tags.values().cloned().collect(),
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            total_tokens: c.total_tokens,
            cache_read_tokens: c.cache_read_tokens,
            cache_write_tokens: c.cache_write_tokens,
            reasoning_tokens: c.reasoning_tokens,
            completed: u8::from(c.completed),
            estimated: u8::from(c.estimated),
            request_bytes: c.request_bytes,
            output_chunks: c.output_chunks,
            streaming: c.streaming.map(u8::from),
            ttft_ms: c.ttft_ms,
            duration_ms: c.duration_ms,
            status: c.status.as_str().to_owned(),
            error_type: c.error_type.clone(),
            cost_usd: c.cost_usd,
            price_id: c.price_id.clone(),
            reported_cost_usd: c.reported_cost_usd,
            source: c.source.as_str().to_owned(),
            trace_id: c.trace_id.clone(),
            span_id: c.span_id.clone(),
        }
    }

    fn into_call(self) -> Result<(String, i64, LlmCall), StorageError> {
        let corrupt = |what: &str, value: &str| {
            StorageError::Corrupt(format!("calls row {}/{}: {what} {value:?}", self.node, self.seq))
        };
        let operation = Operation::parse(&self.operation)
            .ok_or_else(|| corrupt("operation", &self.operation))?;
        let status = Status::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))?;
        let source = Source::parse(&self.source).ok_or_else(|| corrupt("source", &self.source))?;
        let call = LlmCall {
            id: (!self.id.is_empty()).then_some(self.id),
            project: self.project,
            time_ms: self.time_ms,
            started_at_ms: self.started_at_ms,
            completed_at_ms: self.completed_at_ms,
            model: self.model,
            response_model: self.response_model,
            provider: self.provider,
            operation,
            user: self.user,
            api_key: self.api_key,
            session: self.session,
            route: self.route,
            cluster: self.cluster,
            tags: self.tag_keys.into_iter().zip(self.tag_values).collect(),
            requests: self.requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            total_tokens: self.total_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
            completed: self.completed != 0,
            estimated: self.estimated != 0,
            request_bytes: self.request_bytes,
            output_chunks: self.output_chunks,
            streaming: self.streaming.map(|s| s != 0),
            ttft_ms: self.ttft_ms,
            duration_ms: self.duration_ms,
            status,
            error_type: self.error_type,
            cost_usd: self.cost_usd,
            price_id: self.price_id,
            reported_cost_usd: self.reported_cost_usd,
            source,
            trace_id: self.trace_id,
            span_id: self.span_id,
        };
        Ok((self.node, self.seq, call))
    }
}

/// Inserts a node's committed calls as one block (RowBinary, LZ4).
pub async fn insert(
    ch: &ClickHouse,
    node: &str,
    calls: &[SequencedCall],
) -> Result<(), StorageError> {
    // The insert names its table alone: the database goes with the client.
    let client = ch.client().clone().with_database(ch.database());
    let mut insert = client.insert::<CallRow>("calls").await.map_err(backend)?;
    for stored in calls {
        insert.write(&CallRow::of(node, stored)).await.map_err(backend)?;
    }
    insert.end().await.map_err(backend)
}

/// The calls of `project` with time in `[from_ms, to_ms)`, each once
/// (`FINAL`), with the node and sequence number that shipped them, in
/// (time, node, seq) order.
pub async fn read(
    ch: &ClickHouse,
    project: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, i64, LlmCall)>, StorageError> {
    let rows: Vec<CallRow> = ch
        .client()
        .query(&format!(
            "SELECT ?fields FROM {}.calls FINAL \
             WHERE project = ? AND day >= toDate(?) AND day <= toDate(?) \
             AND time_ms >= ? AND time_ms < ? ORDER BY time_ms, node, seq",
            ch.database()
        ))
        .bind(project)
        .bind(date(from_ms))
        .bind(date(to_ms))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all()
        .await
        .map_err(backend)?;
    rows.into_iter().map(CallRow::into_call).collect()
}

/// Which calls a page of raw records holds.
#[derive(Debug, Clone, Default)]
pub struct CallPage {
    pub project: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// (dimension, values): a call passes when its value of every
    /// dimension is one of the values (`""` for a value it lacks).
    pub filters: Vec<(String, Vec<String>)>,
    pub session: Option<String>,
    /// Resume after this (time_ms, node, seq).
    pub after: Option<(i64, String, i64)>,
    pub limit: usize,
}

/// A ledger dimension as a column expression (`""` where the call lacks
/// it), and the tag name a `tag.NAME` dimension binds.
fn dimension_sql(dimension: &str) -> Option<(&'static str, Option<&str>)> {
    let column = match dimension {
        "model" => "model",
        "operation" => "operation",
        "status" => "status",
        "provider" => "ifNull(provider, '')",
        "user" => "ifNull(user, '')",
        "api_key" => "ifNull(api_key, '')",
        "route" => "ifNull(route, '')",
        "cluster" => "ifNull(cluster, '')",
        _ => {
            let tag = dimension.strip_prefix("tag.")?;
            // A missing tag reads as element 0: the empty string.
            return Some(("tag_values[indexOf(tag_keys, ?)]", Some(tag)));
        }
    };
    Some((column, None))
}

/// A page of `page.project`'s calls in `[from_ms, to_ms)` passing its
/// filters, each once, in (time, node, seq) order, with the node and
/// sequence number of each.
pub async fn page(
    ch: &ClickHouse,
    page: &CallPage,
) -> Result<Vec<(String, i64, LlmCall)>, StorageError> {
    let mut sql = format!(
        "SELECT ?fields FROM {}.calls FINAL \
         WHERE project = ? AND day >= toDate(?) AND day <= toDate(?) \
         AND time_ms >= ? AND time_ms < ?",
        ch.database()
    );
    let mut filters = Vec::new();
    for (dimension, values) in &page.filters {
        let (column, tag) = dimension_sql(dimension)
            .ok_or_else(|| backend(format!("no such dimension {dimension:?}")))?;
        let marks = vec!["?"; values.len()].join(", ");
        sql.push_str(&format!(" AND {column} IN ({marks})"));
        filters.push((tag, values));
    }
    if page.session.is_some() {
        sql.push_str(" AND session = ?");
    }
    if page.after.is_some() {
        sql.push_str(
            " AND (time_ms > ? OR (time_ms = ? AND (node > ? OR (node = ? AND seq > ?))))",
        );
    }
    sql.push_str(" ORDER BY time_ms, node, seq LIMIT ?");
    let mut query = ch
        .client()
        .query(&sql)
        .bind(&page.project)
        .bind(date(page.from_ms))
        .bind(date(page.to_ms))
        .bind(page.from_ms)
        .bind(page.to_ms);
    for (tag, values) in filters {
        if let Some(tag) = tag {
            query = query.bind(tag);
        }
        for value in values {
            query = query.bind(value);
        }
    }
    if let Some(session) = &page.session {
        query = query.bind(session);
    }
    if let Some((time, node, seq)) = &page.after {
        query = query.bind(time).bind(time).bind(node).bind(node).bind(seq);
    }
    let rows: Vec<CallRow> = query.bind(page.limit as u64).fetch_all().await.map_err(backend)?;
    rows.into_iter().map(CallRow::into_call).collect()
}
