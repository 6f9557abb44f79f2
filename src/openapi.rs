//! The OpenAPI 3.1 description of the whole HTTP API, served at
//! `/api/v1/openapi.json`. Each handler carries its own `#[utoipa::path]`
//! (method, path, parameters, bodies, statuses); this module gathers them
//! into one document and holds the schemas of the answers that handlers
//! build as JSON values rather than from a typed struct.
//!
//! The description and the router must name the same routes: a test in
//! `server.rs` walks the router and compares.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::OpenApi as Document;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Observability and usage metering for LLM applications: the usage \
                       ledger, OTLP/HTTP ingest, metric points, the query API, budgets and \
                       quota checks. Every error answer is `{\"error\": {\"code\", \"message\"}}` \
                       (OTLP endpoints: a `google.rpc.Status` in the request's encoding).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        healthz,
        openapi_json,
        crate::ingest::usage::post_usage,
        crate::ingest::usage::post_reprice,
        crate::ingest::usage::post_flush,
        crate::ingest::points::post_points,
        crate::ingest::otlp_http::post_traces,
        crate::ingest::otlp_http::post_langfuse_traces,
        crate::ingest::otlp_http::post_logs,
        crate::ingest::otlp_http::post_metrics,
        crate::query::usage::summary,
        crate::query::usage::series,
        crate::query::usage::records,
        crate::query::usage::unpriced,
        crate::query::usage::prices,
        crate::query::traces::list,
        crate::query::traces::detail,
        crate::query::trace_stats::summary,
        crate::query::trace_stats::latency,
        crate::query::traces::sessions,
        crate::query::traces::session,
        crate::query::traces::logs,
        crate::query::metrics::query,
        crate::query::metrics::names,
        crate::query::metrics::tags,
        crate::budgets::api::list,
        crate::budgets::api::create,
        crate::budgets::api::statuses,
        crate::budgets::api::get,
        crate::budgets::api::replace,
        crate::budgets::api::delete,
        crate::budgets::api::status,
        crate::budgets::api::reserve,
        crate::budgets::api::settle,
        crate::budgets::api::alerts,
        crate::exposition::handler,
        crate::access::api::create_key,
        crate::access::api::list_keys,
        crate::access::api::revoke_key,
        crate::access::api::list_projects,
        crate::access::api::create_project,
        crate::access::api::audit,
        crate::access::api::whoami,
    ),
    tags(
        (name = "ingest", description = "Usage reports, metric points, OTLP/HTTP"),
        (name = "usage", description = "The usage ledger's queries"),
        (name = "traces", description = "Traces, sessions and logs"),
        (name = "metrics", description = "Metric point queries"),
        (name = "budgets", description = "Budgets, quota checks and alerts"),
        (name = "admin", description = "Health, flush, the description itself, Prometheus, API keys, projects and the audit log"),
    )
)]
struct ApiDoc;

/// The description, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        name_operations(&mut doc);
        describe_access_answers(&mut doc);
        doc
    })
}

/// The answers of the access guard, which every route but `/healthz` may
/// give once keys exist: 401, 403 and 429 (where a route does not describe
/// its own).
fn describe_access_answers(doc: &mut Document) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let answer = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build(),
        )
    };
    let answers = [
        (
            "401",
            "No API key, or one that is not live (unknown, revoked, expired); the message says what was expected",
        ),
        (
            "403",
            "The key lacks the scope this needs (the message names it), or names another project than its own",
        ),
        (
            "429",
            "The key is over its requests or records per second; Retry-After says when to come back",
        ),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == "/healthz" {
            continue;
        }
        let operations =
            [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            for (status, description) in answers {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| answer(description));
            }
        }
    }
}

/// Operation ids from method and path (`get_api_v1_usage_summary`): unique,
/// where handler names are not (`summary` answers two paths).
fn name_operations(doc: &mut Document) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("delete", &mut item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                let words: Vec<&str> = path
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                operation.operation_id = Some(format!("{method}_{}", words.join("_")));
            }
        }
    }
}

/// A created budget's id feeds the operations on `/api/v1/budgets/{id}`, so
/// that clients (and stateful testing) can follow them. Written into the
/// JSON: utoipa 5 spells a link's `operationId` in snake case.
fn link_budget_operations(doc: &mut Value) {
    let Some(created) = doc.pointer_mut("/paths/~1api~1v1~1budgets/post/responses/201") else {
        return;
    };
    let links: serde_json::Map<String, Value> = [
        "get_api_v1_budgets_id",
        "put_api_v1_budgets_id",
        "delete_api_v1_budgets_id",
        "get_api_v1_budgets_id_status",
    ]
    .into_iter()
    .map(|operation| {
        let link = serde_json::json!({
            "operationId": operation,
            "parameters": {"id": "$response.body#/id"},
        });
        (operation.to_owned(), link)
    })
    .collect();
    created["links"] = Value::Object(links);
}

/// `GET /api/v1/openapi.json`
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "admin",
    responses((status = 200, description = "This description (OpenAPI 3.1)", body = Object))
)]
pub async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(document()).expect("the description serializes");
        link_budget_operations(&mut doc);
        doc.to_string()
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

/// `GET /healthz`
#[utoipa::path(
    get, path = "/healthz", tag = "admin",
    responses((status = 200, description = "The server is up: `ok`, or `degraded` (with the reasons) while a node of a cluster cannot reach ClickHouse or PostgreSQL; it then still takes what its outbox bound allows", body = Health))
)]
pub async fn healthz(
    axum::Extension(cluster): axum::Extension<Option<std::sync::Arc<crate::cluster::Cluster>>>,
) -> axum::Json<Value> {
    let problems = cluster.map(|c| c.health.problems()).unwrap_or_default();
    if problems.is_empty() {
        return axum::Json(serde_json::json!({"status": "ok"}));
    }
    let reasons: Vec<Value> = problems
        .into_iter()
        .map(|(part, reason, since_ms)| {
            serde_json::json!({"store": part.name(), "reason": reason, "since_ms": since_ms})
        })
        .collect();
    axum::Json(serde_json::json!({"status": "degraded", "reasons": reasons}))
}

// ---------------------------------------------------------------------------
// Schemas of answers built as JSON values. Fields are never read: they only
// describe what the handlers write.
// ---------------------------------------------------------------------------

/// A usage batch refused: every report rejected (listed), or an error.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum UsageRefused {
    Rejected(crate::ingest::usage::UsageResponse),
    Error(ErrorBody),
}

/// A points batch refused: every point rejected (listed), or an error.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum PointsRefused {
    Rejected(crate::ingest::points::PointsResponse),
    Error(ErrorBody),
}

/// Every error answer (`src/error.rs`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `not_found`, `payload_too_large`,
    /// `unsupported_media_type`, `overloaded`, `unavailable`,
    /// `query_timeout`, `request_timeout`, `conflict`, `too_deep`, …
    code: String,
    /// What was wrong and where.
    message: String,
}

/// An OTLP/JSON error: a `google.rpc.Status` that also carries Tally's
/// `error` object.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OtlpJsonError {
    /// The gRPC code.
    code: i32,
    message: String,
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok` or `degraded`.
    status: String,
    /// Why it is degraded: one entry per shared store not answering.
    reasons: Option<Vec<HealthReason>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HealthReason {
    /// `clickhouse` or `coordination`.
    store: String,
    reason: String,
    /// Since when (ms since the epoch).
    since_ms: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Flushed {
    flushed: bool,
}

/// A group's key: one entry per `group_by` dimension, `null` where the
/// dimension is absent.
type GroupKey = BTreeMap<String, Option<String>>;

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageGroup {
    key: GroupKey,
    #[serde(flatten)]
    totals: crate::query::usage::Totals,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageSummary {
    project: String,
    /// The window read (unix ms), widened to whole minutes.
    from: i64,
    to: i64,
    /// By cost, then requests; at most `limit`.
    groups: Vec<UsageGroup>,
    /// Groups there were before `limit`.
    groups_total: u64,
    truncated: bool,
    /// The groups past `limit`, summed; `null` when nothing was cut.
    other: Option<crate::query::usage::Totals>,
    total: crate::query::usage::Totals,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsagePoint {
    /// Bucket start, unix ms.
    t: i64,
    #[serde(flatten)]
    totals: crate::query::usage::Totals,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageSeriesGroup {
    key: GroupKey,
    points: Vec<UsagePoint>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsagePoints {
    points: Vec<UsagePoint>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageSeries {
    project: String,
    from: i64,
    to: i64,
    step_ms: i64,
    /// The rollup tier read: `1m`, `1h` or `1d`.
    tier: String,
    groups: Vec<UsageSeriesGroup>,
    groups_total: u64,
    truncated: bool,
    other: Option<UsagePoints>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageRecords {
    /// The raw calls, oldest first.
    records: Vec<Object>,
    /// Pass back as `cursor` for the next page; `null` at the end.
    next_cursor: Option<String>,
}

/// A JSON object with the fields the README lists for it.
type Object = BTreeMap<String, Value>;

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UnpricedModel {
    model: String,
    provider: Option<String>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Unpriced {
    from: i64,
    to: i64,
    models: Vec<UnpricedModel>,
}

/// The price a model matches (USD per token); `source` is `catalog` or
/// `config` (a `[[prices]]` entry).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MatchedPrice {
    price_id: String,
    source: String,
    provider: Option<String>,
    input_per_token: f64,
    output_per_token: f64,
    cache_read_per_token: Option<f64>,
    cache_write_per_token: Option<f64>,
    reasoning_per_token: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelPrice {
    model: String,
    provider: Option<String>,
    requests: u64,
    /// Requests counted with cost 0 because no price matched when they arrived.
    unpriced_requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    /// The price a call matches at the window's end; `null`: none does.
    price: Option<MatchedPrice>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelPrices {
    from: i64,
    to: i64,
    models: Vec<ModelPrice>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraceRow {
    trace_id: String,
    root_name: Option<String>,
    service: Option<String>,
    start_ms: f64,
    /// RFC 3339.
    start: String,
    duration_ms: f64,
    span_count: u64,
    error_count: u64,
    llm_calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cost_usd: f64,
    user: Option<String>,
    session: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraceList {
    project: String,
    from: i64,
    to: i64,
    /// Newest first.
    traces: Vec<TraceRow>,
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraceDetail {
    trace_id: String,
    project: String,
    start_ms: f64,
    duration_ms: f64,
    span_count: u64,
    error_count: u64,
    totals: Object,
    spans_returned: u64,
    spans_left_out: u64,
    /// Spans that arrived once the trace held `ingest.max_spans_per_trace`,
    /// not kept.
    spans_dropped: u64,
    truncated: bool,
    /// The root spans, each with its `children`.
    spans: Vec<Object>,
    logs: Vec<Object>,
    logs_truncated: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DurationStats {
    avg: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CostStats {
    total: f64,
    avg_per_trace: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SpanKindShare {
    kind: String,
    spans: u64,
    share: f64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraceStats {
    project: String,
    from: i64,
    to: i64,
    service: Option<String>,
    traces: u64,
    error_traces: u64,
    error_rate: Option<f64>,
    duration_ms: DurationStats,
    cost_usd: CostStats,
    spans: u64,
    span_kinds: Vec<SpanKindShare>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LatencyGroup {
    key: Option<String>,
    count: u64,
    errors: u64,
    total_ms: f64,
    avg_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraceLatency {
    project: String,
    from: i64,
    to: i64,
    /// `kind`, `name` or `model`.
    by: String,
    /// At most `query.max_groups`, the most total time first.
    groups: Vec<LatencyGroup>,
    /// The stages past `query.max_groups`, summed; null when none.
    other: Option<LatencyGroup>,
    truncated: bool,
    /// Stages told apart (at most ten times `query.max_groups`; spans of
    /// further stages are counted in `other`).
    groups_total: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SessionList {
    project: String,
    from: i64,
    to: i64,
    /// Most recently active first.
    sessions: Vec<Object>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SessionDetail {
    project: String,
    session: String,
    /// Oldest first.
    traces: Vec<TraceRow>,
    totals: Object,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LogList {
    project: String,
    from: i64,
    to: i64,
    /// Newest first.
    logs: Vec<Object>,
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricPointsGroup {
    key: GroupKey,
    /// `{"t": <bin start, unix ms>, "value": x}`, or every statistic as a
    /// field with `agg=all`.
    points: Vec<Object>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricPointsOther {
    points: Vec<Object>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricQuery {
    project: String,
    name: String,
    from: i64,
    to: i64,
    step_ms: i64,
    /// The bin tier read: `10s`, `1m`, `15m` or `1h`.
    tier: String,
    agg: String,
    groups: Vec<MetricPointsGroup>,
    groups_total: u64,
    truncated: bool,
    other: Option<MetricPointsOther>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricName {
    name: String,
    series: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricNames {
    project: String,
    names: Vec<MetricName>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricTags {
    project: String,
    name: String,
    /// Each tag with its values (at most 1,000 each).
    tags: BTreeMap<String, Vec<String>>,
}

/// A budget as the API shows it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BudgetView {
    id: String,
    name: String,
    project: String,
    scope: BTreeMap<String, String>,
    metric: String,
    limit: f64,
    period: String,
    timezone: String,
    thresholds: Vec<f64>,
    webhooks: Vec<String>,
    mode: String,
    fail: String,
    /// `api` or `config`.
    source: String,
    created_at: i64,
    updated_at: i64,
    /// Only in the answer to its creation.
    #[schema(required = false)]
    secret: String,
}

/// A key as made: its fields, and its text (shown only here).
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct CreatedKey {
    #[serde(flatten)]
    view: crate::access::api::KeyView,
    /// The key itself, `tally_<scope>_<id>_<secret>`.
    key: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KeyList {
    project: String,
    keys: Vec<crate::access::api::KeyView>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProjectList {
    projects: Vec<crate::access::Project>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditList {
    project: String,
    entries: Vec<crate::access::AuditEntry>,
    /// The `before` of the next page; null on the last.
    next_before: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WhoAmI {
    /// `on` or `off`.
    auth: String,
    key_id: Option<String>,
    project: Option<String>,
    scope: Option<crate::access::Scope>,
    name: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BudgetList {
    budgets: Vec<BudgetView>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BudgetStatuses {
    budgets: Vec<crate::budgets::BudgetStatus>,
}

/// `POST /api/v1/quota/reserve`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReserveBody {
    project: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    user: Option<String>,
    /// The raw key; Tally fingerprints it.
    api_key: Option<String>,
    route: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    estimated_cost_usd: Option<f64>,
    estimated_tokens: Option<f64>,
    /// Default 300, at most 86400.
    ttl_s: Option<f64>,
}

/// `POST /api/v1/quota/settle`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SettleBody {
    reservation_id: String,
    /// A usage report, as `POST /api/v1/usage` takes it.
    usage: UsageReport,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Settled {
    reservation_id: String,
    /// `released`, `expired`, `before_restart`, or on a node of a cluster
    /// `elsewhere` (made by another node, which releases its hold).
    reservation: String,
    accepted: u32,
    duplicates: u32,
    cost_usd: f64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlertList {
    /// Each alert with its payload and its deliveries.
    alerts: Vec<Object>,
}

/// One usage report (README, "Usage reports"); the seed collector's field
/// aliases are accepted too.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageReport {
    /// Idempotency key.
    id: Option<String>,
    project: Option<String>,
    model: String,
    provider: Option<String>,
    /// `chat` (default), `completion`, `embedding`, `rerank`, `image`,
    /// `audio`, `other`.
    operation: Option<String>,
    user: Option<String>,
    session: Option<String>,
    route: Option<String>,
    cluster: Option<String>,
    /// Never stored: Tally keeps a keyed fingerprint.
    api_key: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    input_tokens: Option<u64>,
    cache_read_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    output_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    total_tokens: Option<u64>,
    requests: Option<u64>,
    completed: Option<bool>,
    request_bytes: Option<u64>,
    output_chunks: Option<u64>,
    /// Unix ms or RFC 3339.
    started_at: Option<Value>,
    /// Unix ms or RFC 3339.
    completed_at: Option<Value>,
    duration_ms: Option<f64>,
    ttft_ms: Option<f64>,
    streaming: Option<bool>,
    /// `ok` (default), `error`, `cancelled`.
    status: Option<String>,
    error_type: Option<String>,
    cost_usd: Option<f64>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

/// `{"records": [...]}`, as the ingest endpoints take it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageRecordsBody {
    records: Vec<UsageReport>,
}

/// A usage body: an array of reports, `{"records": [...]}` or one report.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum UsageBody {
    Many(Vec<UsageReport>),
    Records(UsageRecordsBody),
    One(Box<UsageReport>),
}

/// One metric point (README, "Metric points").
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PointBody {
    name: String,
    /// A finite number (or a numeric string), at most ±10^18.
    value: Value,
    tags: Option<BTreeMap<String, String>>,
    /// Unix ms or RFC 3339; default now.
    timestamp: Option<Value>,
    /// `gauge` (default), `counter` or `histogram`.
    #[serde(rename = "type")]
    kind: Option<String>,
    project: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PointRecordsBody {
    records: Vec<PointBody>,
}

/// A points body: an array of points, `{"records": [...]}` or one point.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum PointsBody {
    Many(Vec<PointBody>),
    Records(PointRecordsBody),
    One(PointBody),
}

/// `POST /api/v1/usage/reprice`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RepriceBody {
    /// Unix ms or RFC 3339.
    from: Value,
    /// Unix ms or RFC 3339.
    to: Value,
}
