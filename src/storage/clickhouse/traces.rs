//! The telemetry role over ClickHouse: traces listed and summed from every
//! node's spans, one trace read whole, sessions, the spans and traces the
//! statistics scan, and log records listed. A span shipped twice (a block
//! sent again, or the span sent to two nodes) reads once: spans are taken
//! `LIMIT 1 BY trace_id, span_id`, which makes `FINAL` (slow, and merging
//! only one node's copies) needless; and only the columns a query needs are
//! read, never the attributes unless a filter names one. The trace list
//! groups only the spans of candidate traces, those with a span starting
//! in its window, newest first.

use async_trait::async_trait;

use super::telemetry::{LogRow, SpanRow};
use super::{ClickHouse, StorageError, backend};
use crate::storage::{
    LogFilter, SessionSummary, SpanTiming, StoredTrace, TelemetryScope, TelemetryStore,
    TelemetryVisitor, TraceBounds, TraceFilter, TraceSummary, TraceTiming,
};

const DAY_NS: i64 = 86_400_000_000_000;

/// A value bound to a statement, in placeholder order.
enum Arg {
    Text(String),
    Int(i64),
}

/// A count bound as a `LIMIT` (a bound past `i64::MAX` is no bound: bound
/// as a negative number, 18.16 refuses it).
fn count(n: usize) -> Arg {
    Arg::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Runs `sql` with `args` bound in order.
fn query(ch: &ClickHouse, sql: &str, args: Vec<Arg>) -> clickhouse::query::Query {
    let mut query = ch.client().query(sql);
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        };
    }
    query
}

/// The columns a trace's totals (`traces_sql`) and span conditions
/// (`span_match`, but for attributes) read; `root_rank` puts a parentless
/// span first (4e18 ns below any start).
const TRACE_COLUMNS: &str = "trace_id, span_id, name, kind, service, start_ns, end_ns, status, \
    model, user, session, input_tokens, output_tokens, cache_read_tokens, cost_usd, llm_call, \
    if(isNull(parent_span_id), start_ns - 4000000000000000000, start_ns) AS root_rank";

/// Every span of `project` on the days a window from `from_ns` can reach,
/// each once, as a subquery (its arguments pushed onto `args`); with
/// `attributes`, their attributes too; with `ids` (not empty), only the
/// spans of those traces.
fn spans_once(
    ch: &ClickHouse,
    project: &str,
    from_ns: i64,
    attributes: bool,
    ids: Option<&[String]>,
    args: &mut Vec<Arg>,
) -> String {
    args.push(Arg::Text(project.to_owned()));
    // Spans of a trace that started a day before the window count for
    // the trace, not for the window.
    args.push(Arg::Int((from_ns - DAY_NS).div_euclid(DAY_NS)));
    let attributes = if attributes { ", attributes" } else { "" };
    let only = match ids {
        Some(ids) => {
            args.extend(ids.iter().map(|id| Arg::Text(id.clone())));
            format!(" AND trace_id IN ({})", vec!["?"; ids.len()].join(", "))
        }
        None => String::new(),
    };
    format!(
        "(SELECT {TRACE_COLUMNS}{attributes} FROM {}.spans \
         WHERE project = ? AND toUInt16(day) >= ?{only} LIMIT 1 BY trace_id, span_id)",
        ch.database()
    )
}

/// A span condition: one span of the trace must meet all of `filter`'s.
fn span_match(filter: &TraceFilter, args: &mut Vec<Arg>) -> Option<String> {
    let mut conditions = Vec::new();
    for (column, value) in
        [("service", &filter.service), ("kind", &filter.kind), ("model", &filter.model)]
    {
        if let Some(value) = value {
            conditions.push(format!("ifNull({column}, '') = ?"));
            args.push(Arg::Text(value.clone()));
        }
    }
    for (key, value) in &filter.attributes {
        // The attribute's JSON value: a string quoted, a number or boolean
        // bare.
        conditions.push("visitParamExtractRaw(attributes, ?) IN (?, ?)".into());
        args.push(Arg::Text(key.clone()));
        args.push(Arg::Text(serde_json::Value::String(value.clone()).to_string()));
        args.push(Arg::Text(value.clone()));
    }
    (!conditions.is_empty()).then(|| conditions.join(" AND "))
}

/// One row per trace: its totals over its spans, and how many of its spans
/// meet `matched` (1 when there is no condition).
fn traces_sql(spans: &str, matched: Option<&str>) -> String {
    let matched = matched.map_or("1".to_owned(), |m| format!("countIf({m})"));
    format!(
        "SELECT trace_id, argMin(name, root_rank) AS root_name, argMin(service, root_rank) AS root_service, \
         min(start_ns) AS trace_start, max(end_ns) AS trace_end, count() AS span_count, \
         countIf(status = 'error') AS error_count, sum(llm_call) AS llm_calls, \
         sum(input_tokens) AS input_sum, sum(output_tokens) AS output_sum, \
         sum(cache_read_tokens) AS cache_read_sum, sum(cost_usd) AS cost_sum, \
         any(user) AS trace_user, any(session) AS trace_session, {matched} AS matched \
         FROM {spans} GROUP BY trace_id"
    )
}

const SUMMARY_COLUMNS: &str = "trace_id, root_name, root_service, trace_start, trace_end, \
    span_count, error_count, llm_calls, input_sum, output_sum, cache_read_sum, cost_sum, \
    trace_user, trace_session";

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct SummaryRow {
    trace_id: String,
    root_name: String,
    root_service: String,
    trace_start: i64,
    trace_end: i64,
    span_count: u64,
    error_count: u64,
    llm_calls: u64,
    input_sum: u64,
    output_sum: u64,
    cache_read_sum: u64,
    cost_sum: f64,
    trace_user: Option<String>,
    trace_session: Option<String>,
}

impl From<SummaryRow> for TraceSummary {
    fn from(r: SummaryRow) -> Self {
        TraceSummary {
            trace_id: r.trace_id,
            root_name: r.root_name,
            service: r.root_service,
            start_ns: r.trace_start,
            end_ns: r.trace_end,
            span_count: r.span_count,
            error_count: r.error_count,
            llm_calls: r.llm_calls,
            input_tokens: r.input_sum,
            output_tokens: r.output_sum,
            cache_read_tokens: r.cache_read_sum,
            cost_usd: r.cost_sum,
            user: r.trace_user,
            session: r.trace_session,
            // Counted by the node that did not keep them, not shipped.
            dropped_spans: 0,
        }
    }
}

/// The log records' order within one nanosecond: the node's sequence
/// number, with the node told apart by 16 bits of its name's hash.
const LOG_ORDER: &str = "bitOr(bitShiftLeft(seq, 16), cityHash64(node) % 65536)";

/// Most candidate traces one round of the trace list reads (their ids are
/// bound into the next statement, well under ClickHouse's query size).
const MAX_CANDIDATES: usize = 4_000;
/// Rounds of candidates before the trace list groups the rest of its
/// window whole.
const CANDIDATE_ROUNDS: usize = 3;

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct Candidate {
    trace_id: String,
    first_start: i64,
}

impl ClickHouse {
    /// Up to `page` traces with a span starting in `filter`'s window, newest
    /// first by the earliest such span, after `before`: (start, trace id).
    async fn candidates(
        &self,
        filter: &TraceFilter,
        before: Option<&(i64, String)>,
        page: usize,
    ) -> Result<Vec<(i64, String)>, StorageError> {
        let mut args = vec![
            Arg::Text(filter.project.clone()),
            Arg::Int(filter.from_ns.div_euclid(DAY_NS)),
            Arg::Int(filter.to_ns.div_euclid(DAY_NS)),
            Arg::Int(filter.from_ns),
            Arg::Int(filter.to_ns),
        ];
        let mut sql = format!(
            "SELECT trace_id, min(start_ns) AS first_start FROM {}.spans \
             WHERE project = ? AND toUInt16(day) >= ? AND toUInt16(day) <= ? \
             AND start_ns >= ? AND start_ns < ? GROUP BY trace_id",
            self.database()
        );
        if let Some((start, trace_id)) = before {
            sql.push_str(" HAVING first_start < ? OR (first_start = ? AND trace_id < ?)");
            args.extend([Arg::Int(*start), Arg::Int(*start), Arg::Text(trace_id.clone())]);
        }
        sql.push_str(" ORDER BY first_start DESC, trace_id DESC LIMIT ?");
        args.push(count(page));
        let rows: Vec<Candidate> = query(self, &sql, args).fetch_all().await.map_err(backend)?;
        Ok(rows.into_iter().map(|c| (c.first_start, c.trace_id)).collect())
    }

    /// The `limit` newest traces that pass `filter`, after `before`, among
    /// `ids` (all the window's traces without).
    async fn summaries(
        &self,
        filter: &TraceFilter,
        ids: Option<&[String]>,
        before: Option<&(i64, String)>,
        limit: usize,
    ) -> Result<Vec<TraceSummary>, StorageError> {
        // Placeholders in the order of the text: the span condition is in
        // the select list, before the spans it is counted over.
        let mut args = Vec::new();
        let matched = span_match(filter, &mut args);
        let attributes = !filter.attributes.is_empty();
        let spans = spans_once(self, &filter.project, filter.from_ns, attributes, ids, &mut args);
        let mut sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM ({}) WHERE trace_start >= ? AND trace_start < ?",
            traces_sql(&spans, matched.as_deref())
        );
        args.push(Arg::Int(filter.from_ns));
        args.push(Arg::Int(filter.to_ns));
        if matched.is_some() {
            sql.push_str(" AND matched > 0");
        }
        if filter.errors_only {
            sql.push_str(" AND error_count > 0");
        }
        for (column, value) in [("trace_user", &filter.user), ("trace_session", &filter.session)] {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(Arg::Text(value.clone()));
            }
        }
        if let Some(min) = filter.min_duration_ns {
            sql.push_str(" AND trace_end - trace_start >= ?");
            args.push(Arg::Int(min));
        }
        if let Some(max) = filter.max_duration_ns {
            sql.push_str(" AND trace_end - trace_start <= ?");
            args.push(Arg::Int(max));
        }
        if let Some((start, trace_id)) = before {
            sql.push_str(" AND (trace_start < ? OR (trace_start = ? AND trace_id < ?))");
            args.extend([Arg::Int(*start), Arg::Int(*start), Arg::Text(trace_id.clone())]);
        }
        sql.push_str(" ORDER BY trace_start DESC, trace_id DESC LIMIT ?");
        args.push(count(limit));
        let rows: Vec<SummaryRow> = query(self, &sql, args).fetch_all().await.map_err(backend)?;
        Ok(rows.into_iter().map(TraceSummary::from).collect())
    }
}

#[async_trait]
impl TelemetryStore for ClickHouse {
    async fn list_traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StorageError> {
        // Newest first, a page of candidates at a time: the traces with a
        // span starting in the window, by the earliest such span. A trace
        // that starts in the window is one of them, its earliest span in
        // the window being its first, so the traces that pass come in the
        // order the list wants, and only their spans are grouped.
        let mut out = Vec::new();
        let mut before = filter.before.clone();
        let mut page = (filter.limit * 4).clamp(64, MAX_CANDIDATES);
        for _ in 0..CANDIDATE_ROUNDS {
            let candidates = self.candidates(&filter, before.as_ref(), page).await?;
            let Some(last) = candidates.last().cloned() else { return Ok(out) };
            let ids: Vec<String> = candidates.iter().map(|(_, id)| id.clone()).collect();
            let wanted = filter.limit - out.len();
            out.extend(self.summaries(&filter, Some(&ids), before.as_ref(), wanted).await?);
            if out.len() >= filter.limit || candidates.len() < page {
                return Ok(out);
            }
            before = Some(last);
            page = (page * 4).min(MAX_CANDIDATES);
        }
        // Few traces pass the filter: the rest of the window in one pass
        // over its days' spans.
        let wanted = filter.limit - out.len();
        out.extend(self.summaries(&filter, None, before.as_ref(), wanted).await?);
        Ok(out)
    }

    async fn trace(
        &self,
        project: &str,
        trace_id: &str,
        bounds: TraceBounds,
    ) -> Result<StoredTrace, StorageError> {
        let db = self.database();
        let spans = format!(
            "(SELECT {TRACE_COLUMNS} FROM {db}.spans WHERE project = ? AND trace_id = ? \
             LIMIT 1 BY span_id)"
        );
        let args = || vec![Arg::Text(project.to_owned()), Arg::Text(trace_id.to_owned())];
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM ({})", traces_sql(&spans, None));
        let summary: Option<SummaryRow> =
            query(self, &sql, args()).fetch_optional().await.map_err(backend)?;
        let Some(summary) = summary.map(TraceSummary::from) else {
            return Ok(StoredTrace {
                spans: Vec::new(),
                spans_left_out: 0,
                summary: None,
                logs: Vec::new(),
                logs_cut: false,
            });
        };
        let sql = format!(
            "SELECT ?fields FROM {db}.spans WHERE project = ? AND trace_id = ? \
             ORDER BY start_ns, span_id LIMIT 1 BY span_id LIMIT ?"
        );
        let mut span_args = args();
        span_args.push(count(bounds.max_spans));
        let rows: Vec<SpanRow> = query(self, &sql, span_args).fetch_all().await.map_err(backend)?;
        let spans = rows.into_iter().map(SpanRow::into_span).collect::<Result<Vec<_>, _>>()?;
        let sql = format!(
            "SELECT ?fields FROM {db}.logs FINAL WHERE project = ? AND trace_id = ? \
             ORDER BY time_ns, node, seq LIMIT ?"
        );
        let mut log_args = args();
        log_args.push(count(bounds.max_logs.saturating_add(1)));
        let rows: Vec<LogRow> = query(self, &sql, log_args).fetch_all().await.map_err(backend)?;
        let mut logs = rows.into_iter().map(LogRow::into_log).collect::<Result<Vec<_>, _>>()?;
        let logs_cut = logs.len() > bounds.max_logs;
        logs.truncate(bounds.max_logs);
        Ok(StoredTrace {
            spans_left_out: summary.span_count.saturating_sub(spans.len() as u64),
            spans,
            summary: Some(summary),
            logs,
            logs_cut,
        })
    }

    async fn scan_spans(
        &self,
        scope: TelemetryScope,
        mut visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        let mut sql = format!(
            "SELECT kind, name, model, end_ns - start_ns, status = 'error' FROM {}.spans \
             WHERE project = ? AND day >= toDate(?) AND start_ns >= ? AND start_ns < ?",
            self.database()
        );
        let mut args = vec![
            Arg::Text(scope.project.clone()),
            Arg::Text(date(scope.from_ns)),
            Arg::Int(scope.from_ns),
            Arg::Int(scope.to_ns),
        ];
        if let Some(service) = &scope.service {
            sql.push_str(" AND service = ?");
            args.push(Arg::Text(service.clone()));
        }
        sql.push_str(" LIMIT 1 BY trace_id, span_id");
        let mut cursor = query(self, &sql, args)
            .fetch::<(String, String, Option<String>, i64, u8)>()
            .map_err(backend)?;
        while let Some((kind, name, model, duration_ns, error)) =
            cursor.next().await.map_err(backend)?
        {
            visitor.span(SpanTiming {
                kind: &kind,
                name: &name,
                model: model.as_deref(),
                duration_ns,
                error: error != 0,
            });
        }
        Ok(visitor)
    }

    async fn scan_traces(
        &self,
        scope: TelemetryScope,
        mut visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        let mut args = Vec::new();
        let spans = spans_once(self, &scope.project, scope.from_ns, false, None, &mut args);
        let mut sql = format!(
            "SELECT trace_end - trace_start, error_count, cost_sum FROM ({}) \
             WHERE trace_start >= ? AND trace_start < ?",
            traces_sql(&spans, None)
        );
        args.push(Arg::Int(scope.from_ns));
        args.push(Arg::Int(scope.to_ns));
        if let Some(service) = &scope.service {
            sql.push_str(" AND root_service = ?");
            args.push(Arg::Text(service.clone()));
        }
        let mut cursor = query(self, &sql, args).fetch::<(i64, u64, f64)>().map_err(backend)?;
        while let Some((duration_ns, errors, cost_usd)) = cursor.next().await.map_err(backend)? {
            visitor.trace(TraceTiming { duration_ns, errors, cost_usd });
        }
        Ok(visitor)
    }

    async fn list_logs(
        &self,
        filter: LogFilter,
    ) -> Result<Vec<(i64, crate::model::LogRecord)>, StorageError> {
        let mut sql = format!(
            "SELECT ?fields, {LOG_ORDER} AS log_order FROM {}.logs FINAL \
             WHERE project = ? AND day >= toDate(?) AND time_ns >= ? AND time_ns < ? \
             AND severity_number >= ?",
            self.database()
        );
        let mut args = vec![
            Arg::Text(filter.project.clone()),
            Arg::Text(date(filter.from_ns)),
            Arg::Int(filter.from_ns),
            Arg::Int(filter.to_ns),
            Arg::Int(i64::from(filter.min_severity)),
        ];
        if let Some(trace_id) = &filter.trace_id {
            sql.push_str(" AND trace_id = ?");
            args.push(Arg::Text(trace_id.clone()));
        }
        if let Some(text) = &filter.contains {
            sql.push_str(" AND positionCaseInsensitiveUTF8(body, ?) > 0");
            args.push(Arg::Text(text.clone()));
        }
        if let Some((time, order)) = filter.before {
            sql.push_str(" AND (time_ns < ? OR (time_ns = ? AND log_order < ?))");
            args.extend([Arg::Int(time), Arg::Int(time), Arg::Int(order)]);
        }
        sql.push_str(" ORDER BY time_ns DESC, log_order DESC LIMIT ?");
        args.push(count(filter.limit));
        let rows: Vec<(LogRow, u64)> =
            query(self, &sql, args).fetch_all().await.map_err(backend)?;
        rows.into_iter().map(|(log, order)| Ok((order as i64, log.into_log()?))).collect()
    }

    async fn list_sessions(
        &self,
        project: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StorageError> {
        let mut args = Vec::new();
        let spans = spans_once(self, project, from_ns, false, None, &mut args);
        let sql = format!(
            "SELECT trace_session, count(), min(trace_start), max(trace_end), sum(span_count), \
             sum(error_count), sum(llm_calls), sum(input_sum), sum(output_sum), \
             sum(cache_read_sum), sum(cost_sum), max(trace_user) FROM ({}) \
             WHERE isNotNull(trace_session) AND trace_start >= ? AND trace_start < ? \
             GROUP BY trace_session ORDER BY max(trace_end) DESC, trace_session LIMIT ?",
            traces_sql(&spans, None)
        );
        args.extend([Arg::Int(from_ns), Arg::Int(to_ns), count(limit)]);
        let rows: Vec<SessionRow> = query(self, &sql, args).fetch_all().await.map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| SessionSummary {
                session: r.session.unwrap_or_default(),
                traces: r.traces,
                start_ns: r.start_ns,
                end_ns: r.end_ns,
                span_count: r.span_count,
                error_count: r.error_count,
                llm_calls: r.llm_calls,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cost_usd: r.cost_usd,
                user: r.user,
            })
            .collect())
    }
}

#[derive(serde::Deserialize, clickhouse::Row)]
struct SessionRow {
    session: Option<String>,
    traces: u64,
    start_ns: i64,
    end_ns: i64,
    span_count: u64,
    error_count: u64,
    llm_calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cost_usd: f64,
    user: Option<String>,
}

/// `YYYY-MM-DD` of a time in nanoseconds, as `toDate` takes it.
fn date(ns: i64) -> String {
    let days = ns.div_euclid(DAY_NS).max(0);
    let date = chrono::DateTime::from_timestamp(days * 86_400, 0).unwrap_or_default();
    date.format("%Y-%m-%d").to_string()
}
