//! The `spans` and `logs` tables: each record with the node that committed
//! it and its sequence number there, ReplacingMergeTree so that a block
//! shipped again reads once through `FINAL`. Spans are ordered for trace
//! lookups, logs by time. Attributes, events and resources are JSON text.

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::{ClickHouse, StorageError, backend};
use crate::model::{LogRecord, SpanKind, SpanRecord, SpanStatus};

const DAY_NS: i64 = 86_400_000_000_000;

fn day_of(ns: i64) -> u16 {
    ns.div_euclid(DAY_NS).clamp(0, i64::from(u16::MAX)) as u16
}

/// The statements of both tables (a migration's).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    let zstd = ddl.codec("ZSTD");
    let delta = ddl.codec("DoubleDelta, ZSTD");
    let db = ddl.database;
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.spans (
                project {lc},
                day Date,
                trace_id String,
                span_id String,
                node {lc},
                seq Int64,
                parent_span_id Nullable(String),
                name String,
                kind {lc},
                service {lc},
                start_ns Int64{delta},
                end_ns Int64{delta},
                status {lc},
                status_message Nullable(String),
                attributes String{zstd},
                events String{zstd},
                resource String{zstd},
                model Nullable(String),
                provider Nullable(String),
                user Nullable(String),
                session Nullable(String),
                input_tokens UInt64,
                output_tokens UInt64,
                cache_read_tokens UInt64,
                cost_usd Float64,
                llm_call UInt8
            ) ENGINE = ReplacingMergeTree
            PARTITION BY day
            ORDER BY (project, trace_id, span_id, node, seq)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.logs (
                project {lc},
                day Date,
                time_ns Int64{delta},
                node {lc},
                seq Int64,
                severity_number Int32,
                severity_text Nullable(String),
                body String{zstd},
                attributes String{zstd},
                trace_id Nullable(String),
                span_id Nullable(String),
                service {lc}
            ) ENGINE = ReplacingMergeTree
            PARTITION BY day
            ORDER BY (project, day, time_ns, node, seq)"
        ),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
pub(super) struct SpanRow {
    project: String,
    day: u16,
    trace_id: String,
    span_id: String,
    node: String,
    seq: i64,
    parent_span_id: Option<String>,
    name: String,
    kind: String,
    service: String,
    start_ns: i64,
    end_ns: i64,
    status: String,
    status_message: Option<String>,
    attributes: String,
    events: String,
    resource: String,
    model: Option<String>,
    provider: Option<String>,
    user: Option<String>,
    session: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cost_usd: f64,
    llm_call: u8,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("JSON values serialize")
}

impl SpanRow {
    fn of(node: &str, seq: i64, s: &SpanRecord) -> SpanRow {
        SpanRow {
            project: s.project.clone(),
            day: day_of(s.start_ns),
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
            node: node.to_owned(),
            seq,
            parent_span_id: s.parent_span_id.clone(),
            name: s.name.clone(),
            kind: s.kind.as_str().to_owned(),
            service: s.service.clone(),
            start_ns: s.start_ns,
            end_ns: s.end_ns,
            status: s.status.as_str().to_owned(),
            status_message: s.status_message.clone(),
            attributes: json(&*s.attributes_map()),
            events: json(&s.events),
            resource: json(&*s.resource),
            model: s.model.clone(),
            provider: s.provider.clone(),
            user: s.user.clone(),
            session: s.session.clone(),
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cache_read_tokens: s.cache_read_tokens,
            cost_usd: s.cost_usd,
            llm_call: u8::from(s.llm_call),
        }
    }

    pub(super) fn into_span(self) -> Result<SpanRecord, StorageError> {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!("spans row {}/{}: {what}", self.node, self.seq))
        };
        Ok(SpanRecord {
            kind: SpanKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            status: SpanStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            attributes: serde_json::from_str(&self.attributes)
                .map_err(|_| corrupt("attributes"))?,
            events: serde_json::from_str(&self.events).map_err(|_| corrupt("events"))?,
            resource: std::sync::Arc::new(
                serde_json::from_str(&self.resource).map_err(|_| corrupt("resource"))?,
            ),
            project: self.project,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: self.name,
            service: self.service,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            status_message: self.status_message,
            model: self.model,
            provider: self.provider,
            user: self.user,
            session: self.session,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cost_usd: self.cost_usd,
            llm_call: self.llm_call != 0,
            packed: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
pub(super) struct LogRow {
    project: String,
    day: u16,
    time_ns: i64,
    node: String,
    seq: i64,
    severity_number: i32,
    severity_text: Option<String>,
    body: String,
    attributes: String,
    trace_id: Option<String>,
    span_id: Option<String>,
    service: String,
}

impl LogRow {
    fn of(node: &str, seq: i64, l: &LogRecord) -> LogRow {
        LogRow {
            project: l.project.clone(),
            day: day_of(l.time_ns),
            time_ns: l.time_ns,
            node: node.to_owned(),
            seq,
            severity_number: l.severity_number,
            severity_text: l.severity_text.clone(),
            body: json(&l.body),
            attributes: json(&l.attributes),
            trace_id: l.trace_id.clone(),
            span_id: l.span_id.clone(),
            service: l.service.clone(),
        }
    }

    pub(super) fn into_log(self) -> Result<LogRecord, StorageError> {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!("logs row {}/{}: {what}", self.node, self.seq))
        };
        Ok(LogRecord {
            body: serde_json::from_str(&self.body).map_err(|_| corrupt("body"))?,
            attributes: serde_json::from_str(&self.attributes)
                .map_err(|_| corrupt("attributes"))?,
            project: self.project,
            time_ns: self.time_ns,
            severity_number: self.severity_number,
            severity_text: self.severity_text,
            trace_id: self.trace_id,
            span_id: self.span_id,
            service: self.service,
        })
    }
}

/// Inserts a node's committed spans (with their chunks' sequence numbers)
/// as one block.
pub async fn insert_spans(
    ch: &ClickHouse,
    node: &str,
    spans: &[(i64, SpanRecord)],
) -> Result<(), StorageError> {
    let client = ch.client().clone().with_database(ch.database());
    let mut insert = client.insert::<SpanRow>("spans").await.map_err(backend)?;
    for (seq, span) in spans {
        insert.write(&SpanRow::of(node, *seq, span)).await.map_err(backend)?;
    }
    insert.end().await.map_err(backend)
}

/// Inserts a node's committed log records as one block.
pub async fn insert_logs(
    ch: &ClickHouse,
    node: &str,
    logs: &[(i64, LogRecord)],
) -> Result<(), StorageError> {
    let client = ch.client().clone().with_database(ch.database());
    let mut insert = client.insert::<LogRow>("logs").await.map_err(backend)?;
    for (seq, log) in logs {
        insert.write(&LogRow::of(node, *seq, log)).await.map_err(backend)?;
    }
    insert.end().await.map_err(backend)
}

/// The spans of one trace, each once, by start.
pub async fn trace(
    ch: &ClickHouse,
    project: &str,
    trace_id: &str,
) -> Result<Vec<SpanRecord>, StorageError> {
    let rows: Vec<SpanRow> = ch
        .client()
        .query(&format!(
            "SELECT ?fields FROM {}.spans FINAL WHERE project = ? AND trace_id = ? \
             ORDER BY start_ns, span_id",
            ch.database()
        ))
        .bind(project)
        .bind(trace_id)
        .fetch_all()
        .await
        .map_err(backend)?;
    rows.into_iter().map(SpanRow::into_span).collect()
}

/// The log records of `project` (all of its days), each once, by time.
pub async fn logs(ch: &ClickHouse, project: &str) -> Result<Vec<LogRecord>, StorageError> {
    let rows: Vec<LogRow> = ch
        .client()
        .query(&format!(
            "SELECT ?fields FROM {}.logs FINAL WHERE project = ? ORDER BY time_ns, node, seq",
            ch.database()
        ))
        .bind(project)
        .fetch_all()
        .await
        .map_err(backend)?;
    rows.into_iter().map(LogRow::into_log).collect()
}
