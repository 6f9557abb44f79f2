//! The trace API: traces listed with their totals, one trace as a span tree
//! with its logs, traces grouped by session, and log records.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::QueryState;
use super::params::{Params, parse_cursor};
use super::trace_tree;
use crate::error::{ApiError, PathParam};
use crate::model::{LogRecord, SpanKind};
use crate::storage::{
    LogFilter, SessionSummary, StoredTrace, TraceBounds, TraceFilter, TraceSummary,
};
use crate::time::{format_instant, now_ms};

const NS_PER_MS: i64 = 1_000_000;
/// Deepest span tree served as nested JSON.
const MAX_TREE_DEPTH: usize = 500;

fn ms(ns: i64) -> f64 {
    ns as f64 / NS_PER_MS as f64
}

fn trace_json(t: &TraceSummary) -> Value {
    json!({
        "trace_id": t.trace_id,
        "root_name": t.root_name,
        "service": t.service,
        "start_ms": ms(t.start_ns),
        "start": format_instant(t.start_ns / NS_PER_MS),
        "duration_ms": ms(t.end_ns - t.start_ns),
        "span_count": t.span_count,
        "error_count": t.error_count,
        "llm_calls": t.llm_calls,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        "cost_usd": t.cost_usd,
        "user": t.user,
        "session": t.session,
        "spans_dropped": t.dropped_spans,
    })
}

fn storage_error(err: crate::storage::StorageError) -> ApiError {
    ApiError::internal("reading traces failed", &err)
}

fn duration_ns(params: &Params, key: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(key)
        .map(|v| match v.parse::<f64>() {
            Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok((ms * NS_PER_MS as f64) as i64),
            _ => Err(ApiError::bad_request(format!(
                "{key}: expected a non-negative number of milliseconds, got {v:?}"
            ))),
        })
        .transpose()
}

fn parse_trace_cursor(text: &str) -> Result<(i64, String), ApiError> {
    text.split_once(':')
        .and_then(|(start, id)| Some((start.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| is_hex_id(id, 32))
        .ok_or_else(|| {
            ApiError::bad_request(format!("cursor: {text:?} is not a cursor from a previous page"))
        })
}

/// A trace id as given in a path or query: 32 hex digits, lowercased.
fn trace_id_param(text: &str) -> Result<String, ApiError> {
    let id = text.to_ascii_lowercase();
    if is_hex_id(&id, 32) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!("trace_id: {text:?} is not 32 hex digits")))
    }
}

fn is_hex_id(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET /api/v1/traces`
#[utoipa::path(
    get, path = "/api/v1/traces", tag = "traces",
    description = "Also takes `attr.KEY=VALUE` conditions (span or resource attributes, compared as text; `true`/`false` match booleans); `service`, `kind`, `model` and the `attr.` conditions must all hold for one span of the trace.",
    params(crate::query::params::WindowParams, ("service" = Option<String>, Query, description = "A span of the trace has this service"), ("kind" = Option<String>, Query, description = "A span of the trace has this kind (`agent`, `llm`, `tool`, …)"), ("status" = Option<String>, Query, description = "`error`: traces with a failed span"), ("model" = Option<String>, Query, description = "A span of the trace names this model"), ("user" = Option<String>, Query, description = "The trace's user"), ("session" = Option<String>, Query, description = "The trace's session"), ("min_duration_ms" = Option<f64>, Query, description = "Shortest trace listed"), ("max_duration_ms" = Option<f64>, Query, description = "Longest trace listed"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items per page (default 50)"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses(
        (status = 200, description = "Traces, newest first", body = crate::openapi::TraceList),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.window()?;
    let limit = params.limit(50, 1_000)?;
    let kind = match params.get("kind") {
        None => None,
        Some(kind) => Some(
            SpanKind::parse(kind)
                .ok_or_else(|| {
                    let known: Vec<&str> = SpanKind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::bad_request(format!(
                        "kind: unknown span kind {kind:?} (expected one of {})",
                        known.join(", ")
                    ))
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let errors_only = match params.get("status") {
        None => false,
        Some("error") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("status: expected error, got {other:?}")));
        }
    };
    let text = |key: &str| params.get(key).filter(|v| !v.is_empty()).map(str::to_owned);
    let attributes: Vec<(String, String)> = params
        .pairs()
        .filter_map(|(k, v)| Some((k.strip_prefix("attr.")?.to_owned(), v.to_owned())))
        .collect();
    if let Some((key, _)) = attributes.iter().find(|(key, _)| key.is_empty()) {
        return Err(ApiError::bad_request(format!("attr.{key}: name the attribute")));
    }
    let filter = TraceFilter {
        project: params.project(),
        from_ns: from.saturating_mul(NS_PER_MS),
        to_ns: to.saturating_mul(NS_PER_MS),
        service: text("service"),
        kind,
        model: text("model"),
        attributes,
        errors_only,
        user: text("user"),
        session: text("session"),
        min_duration_ns: duration_ns(&params, "min_duration_ms")?,
        max_duration_ns: duration_ns(&params, "max_duration_ms")?,
        before: params.get("cursor").map(parse_trace_cursor).transpose()?,
        limit,
    };
    let traces = state.telemetry.list_traces(filter).await.map_err(storage_error)?;
    let next_cursor = (traces.len() == limit)
        .then(|| traces.last().map(|t| format!("{}:{}", t.start_ns, t.trace_id)))
        .flatten();
    Ok(Json(json!({
        "project": params.project(),
        "from": from,
        "to": to,
        "traces": traces.iter().map(trace_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

fn log_json(log: &LogRecord, trace_start_ns: i64) -> Value {
    let mut value = serde_json::to_value(log).expect("log records serialize");
    let object = value.as_object_mut().expect("object");
    object.insert("time_ms".into(), json!(ms(log.time_ns)));
    object.insert("offset_ms".into(), json!(ms(log.time_ns - trace_start_ns)));
    value
}

/// `GET /api/v1/traces/{trace_id}`
#[utoipa::path(
    get, path = "/api/v1/traces/{trace_id}", tag = "traces",
    params(("trace_id" = String, Path, description = "32 hex digits"), ("project" = Option<String>, Query, description = "The project (default `default`)")),
    responses(
        (status = 200, description = "The trace as a tree of spans, with its logs", body = crate::openapi::TraceDetail),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such trace in the project", body = crate::openapi::ErrorBody),
        (status = 422, description = "The trace nests too deep to be served as a tree", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn detail(
    State(state): State<Arc<QueryState>>,
    PathParam(trace_id): PathParam,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let trace_id = trace_id_param(&trace_id)?;
    let project = params.project();
    let bounds = TraceBounds {
        max_spans: state.limits.max_trace_spans,
        max_logs: state.limits.max_trace_logs,
    };
    let stored = state
        .telemetry
        .trace(&project, &trace_id, bounds)
        .await
        .map_err(|e| state.failure("reading traces failed", &e))?;
    if stored.spans.is_empty() {
        return Err(ApiError::not_found(format!("no trace {trace_id} in project {project:?}")));
    }
    // Building the tree and its JSON is CPU work in proportion to the spans:
    // off the async threads.
    let body = tokio::task::spawn_blocking(move || detail_body(&trace_id, &project, stored))
        .await
        .map_err(|e| ApiError::internal("building a trace failed", &e))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One trace's detail as served, written straight to JSON (the span tree is
/// not copied into a JSON value first).
#[derive(serde::Serialize)]
struct TraceDetail<'a> {
    trace_id: &'a str,
    project: &'a str,
    start_ms: f64,
    duration_ms: f64,
    span_count: usize,
    error_count: usize,
    totals: Value,
    spans_returned: usize,
    spans_left_out: u64,
    spans_dropped: u64,
    truncated: bool,
    spans: &'a [trace_tree::SpanNode],
    logs: Vec<Value>,
    logs_truncated: bool,
}

/// The JSON of one trace's detail.
fn detail_body(trace_id: &str, project: &str, stored: StoredTrace) -> Result<Vec<u8>, ApiError> {
    let StoredTrace { spans, spans_left_out, summary, logs, logs_cut } = stored;
    let spans_returned = spans.len();
    let spans_dropped = summary.as_ref().map_or(0, |t| t.dropped_spans);
    let start_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let tree = trace_tree::build(spans);
    // Nested objects are serialized recursively: a pathological chain of
    // spans must not exhaust the stack.
    if tree.depth() > MAX_TREE_DEPTH {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "too_deep",
            format!(
                "trace {trace_id} nests {} levels deep, more than the {MAX_TREE_DEPTH} a tree is served with; list its spans with /api/v1/traces filters instead",
                tree.depth()
            ),
        ));
    }
    // When spans were left out, the trace's stored totals count them all.
    let (start_ms, duration_ms, span_count, error_count, totals) = match &summary {
        Some(t) if spans_left_out > 0 => (
            ms(t.start_ns),
            ms(t.end_ns - t.start_ns),
            t.span_count as usize,
            t.error_count as usize,
            json!({
                "spans": t.span_count,
                "llm_calls": t.llm_calls,
                "errors": t.error_count,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cache_read_tokens": t.cache_read_tokens,
                "cost_usd": t.cost_usd,
            }),
        ),
        _ => (
            tree.start_ms,
            tree.duration_ms,
            tree.span_count,
            tree.error_count,
            serde_json::to_value(tree.totals).expect("totals serialize"),
        ),
    };
    let body = TraceDetail {
        trace_id,
        project,
        start_ms,
        duration_ms,
        span_count,
        error_count,
        totals,
        spans_returned,
        spans_left_out,
        spans_dropped,
        truncated: spans_left_out > 0 || spans_dropped > 0,
        spans: &tree.roots,
        logs: logs.iter().map(|log| log_json(log, start_ns)).collect(),
        logs_truncated: logs_cut,
    };
    serde_json::to_vec(&body).map_err(|e| ApiError::internal("serializing a trace failed", &e))
}

fn session_json(s: &SessionSummary) -> Value {
    json!({
        "session": s.session,
        "traces": s.traces,
        "start_ms": ms(s.start_ns),
        "end_ms": ms(s.end_ns),
        "duration_ms": ms(s.end_ns - s.start_ns),
        "span_count": s.span_count,
        "error_count": s.error_count,
        "llm_calls": s.llm_calls,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cache_read_tokens": s.cache_read_tokens,
        "cost_usd": s.cost_usd,
        "user": s.user,
    })
}

/// `GET /api/v1/sessions`
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "traces",
    params(crate::query::params::WindowParams, ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most items per page (default 100)")),
    responses(
        (status = 200, description = "Sessions with a trace in the window, most recently active first", body = crate::openapi::SessionList),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn sessions(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.window()?;
    let limit = params.limit(100, 10_000)?;
    let project = params.project();
    let sessions = state
        .telemetry
        .list_sessions(
            &project,
            from.saturating_mul(NS_PER_MS),
            to.saturating_mul(NS_PER_MS),
            limit,
        )
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({
        "project": project,
        "from": from,
        "to": to,
        "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/sessions/{id}`: the session's traces, oldest first, and
/// their totals (over all time unless `from`/`to`/`since` say otherwise).
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}", tag = "traces",
    params(("session_id" = String, Path, description = "The session id"), crate::query::params::WindowParams),
    responses(
        (status = 200, description = "The session's traces, oldest first, and totals (all time unless a window is given)", body = crate::openapi::SessionDetail),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such session in the project", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn session(
    State(state): State<Arc<QueryState>>,
    PathParam(session): PathParam,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let explicit = ["from", "to", "since"].iter().any(|k| params.get(k).is_some());
    let (from, to) = if explicit { params.window()? } else { (0, now_ms() + 86_400_000) };
    let project = params.project();
    let filter = TraceFilter {
        project: project.clone(),
        from_ns: from.saturating_mul(NS_PER_MS),
        to_ns: to.saturating_mul(NS_PER_MS),
        session: Some(session.clone()),
        limit: 10_000,
        ..TraceFilter::default()
    };
    let mut traces = state.telemetry.list_traces(filter).await.map_err(storage_error)?;
    if traces.is_empty() {
        return Err(ApiError::not_found(format!("no session {session:?} in project {project:?}")));
    }
    traces.reverse();
    let sum = |f: fn(&TraceSummary) -> u64| traces.iter().map(f).sum::<u64>();
    let totals = json!({
        "traces": traces.len(),
        "start_ms": ms(traces.iter().map(|t| t.start_ns).min().unwrap_or(0)),
        "end_ms": ms(traces.iter().map(|t| t.end_ns).max().unwrap_or(0)),
        "span_count": sum(|t| t.span_count),
        "error_count": sum(|t| t.error_count),
        "llm_calls": sum(|t| t.llm_calls),
        "input_tokens": sum(|t| t.input_tokens),
        "output_tokens": sum(|t| t.output_tokens),
        "cache_read_tokens": sum(|t| t.cache_read_tokens),
        "cost_usd": traces.iter().map(|t| t.cost_usd).sum::<f64>(),
    });
    Ok(Json(json!({
        "project": project,
        "session": session,
        "traces": traces.iter().map(trace_json).collect::<Vec<_>>(),
        "totals": totals,
    })))
}

/// A severity by OTLP number or name (`info`, `warn`, …): the lowest number
/// of that level.
fn min_severity(text: &str) -> Result<i32, ApiError> {
    if let Ok(n) = text.parse::<i32>()
        && (1..=24).contains(&n)
    {
        return Ok(n);
    }
    let n = match text.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" => 9,
        "warn" | "warning" => 13,
        "error" => 17,
        "fatal" => 21,
        _ => {
            return Err(ApiError::bad_request(format!(
                "severity: expected trace, debug, info, warn, error, fatal or 1 to 24, got {text:?}"
            )));
        }
    };
    Ok(n)
}

/// `GET /api/v1/logs?from=&to=&trace_id=&severity=&q=`: newest first;
/// `severity` is the lowest level listed, `q` text the body must contain.
#[utoipa::path(
    get, path = "/api/v1/logs", tag = "traces",
    params(crate::query::params::WindowParams, ("trace_id" = Option<String>, Query, description = "32 hex digits"), ("severity" = Option<String>, Query, description = "Lowest level listed: `trace`, `debug`, `info`, `warn`, `error`, `fatal` or 1 to 24"), ("q" = Option<String>, Query, description = "Text the body contains (ASCII case-insensitive)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most items per page (default 100)"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses(
        (status = 200, description = "Log records, newest first", body = crate::openapi::LogList),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.window()?;
    let limit = params.limit(100, 10_000)?;
    let trace_id = match params.get("trace_id") {
        None | Some("") => None,
        Some(id) => Some(trace_id_param(id)?),
    };
    let before = params.get("cursor").map(parse_cursor).transpose()?;
    let filter = LogFilter {
        project: params.project(),
        from_ns: from.saturating_mul(NS_PER_MS),
        to_ns: to.saturating_mul(NS_PER_MS),
        trace_id,
        min_severity: params.get("severity").map(min_severity).transpose()?.unwrap_or(0),
        contains: params.get("q").filter(|q| !q.is_empty()).map(str::to_owned),
        before,
        limit,
    };
    let logs = state.telemetry.list_logs(filter).await.map_err(storage_error)?;
    let next_cursor = (logs.len() == limit)
        .then(|| logs.last().map(|(seq, log)| format!("{}.{seq}", log.time_ns)))
        .flatten();
    let records: Vec<Value> = logs
        .iter()
        .map(|(_, log)| {
            let mut value = serde_json::to_value(log).expect("log records serialize");
            value.as_object_mut().expect("object").insert("time_ms".into(), json!(ms(log.time_ns)));
            value
        })
        .collect();
    Ok(Json(json!({
        "project": params.project(),
        "from": from,
        "to": to,
        "logs": records,
        "next_cursor": next_cursor,
    })))
}
