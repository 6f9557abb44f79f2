//! Trace statistics over any window: the dashboard summary (trace count,
//! error rate, duration quantiles, cost per trace, span kinds) and the
//! latency breakdown by stage (kind, span name or model).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::QueryState;
use super::params::Params;
use crate::error::ApiError;
use crate::storage::{
    SpanDurations as Durations, SpanGroup, SpanTiming, TelemetryScope, TelemetryVisitor, TraceSums,
    TraceTiming,
};

fn scope(params: &Params) -> Result<TelemetryScope, ApiError> {
    let (from, to) = params.window()?;
    Ok(TelemetryScope {
        project: params.project(),
        from_ns: from.saturating_mul(1_000_000),
        to_ns: to.saturating_mul(1_000_000),
        service: params.get("service").filter(|s| !s.is_empty()).map(str::to_owned),
    })
}

/// Quantiles and mean of `d`.
fn durations_json(d: &Durations) -> Value {
    let count = d.sketch.count();
    json!({
        "avg": (count > 0).then(|| d.sketch.sum() / count as f64),
        "p50": d.sketch.quantile(0.5),
        "p95": d.sketch.quantile(0.95),
        "p99": d.sketch.quantile(0.99),
    })
}

#[derive(Default)]
struct Summary(TraceSums);

impl TelemetryVisitor for Summary {
    fn trace(&mut self, timing: TraceTiming) {
        self.0.add(&timing);
    }

    fn takes_trace_sums(&self) -> bool {
        true
    }

    fn summed_traces(&mut self, sums: &TraceSums) {
        self.0.merge(sums);
    }
}

fn scan_error(err: crate::storage::StorageError) -> ApiError {
    ApiError::internal("reading trace statistics failed", &err)
}

fn downcast<T: 'static>(visitor: Box<dyn TelemetryVisitor>) -> Box<T> {
    let visitor: Box<dyn std::any::Any> = visitor;
    visitor.downcast::<T>().expect("the store hands back our visitor")
}

/// `GET /api/v1/traces/summary`
#[utoipa::path(
    get, path = "/api/v1/traces/summary", tag = "traces",
    params(crate::query::params::WindowParams, ("service" = Option<String>, Query, description = "Only spans of this service")),
    responses(
        (status = 200, description = "Statistics over every trace of the window", body = crate::openapi::TraceStats),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn summary(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let scope = scope(&params)?;
    let visitor = state
        .telemetry
        .scan_traces(scope.clone(), Box::new(Summary::default()))
        .await
        .map_err(scan_error)?;
    let Summary(summary) = *downcast::<Summary>(visitor);
    let counts = state.telemetry.count_span_kinds(scope.clone()).await.map_err(scan_error)?;
    let traces = summary.durations.sketch.count();
    let spans: u64 = counts.values().sum();
    let mut kinds: Vec<(&String, &u64)> = counts.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<Value> = kinds
        .into_iter()
        .map(|(kind, n)| json!({"kind": kind, "spans": n, "share": *n as f64 / spans as f64}))
        .collect();
    Ok(Json(json!({
        "project": scope.project,
        "from": scope.from_ns / 1_000_000,
        "to": scope.to_ns / 1_000_000,
        "service": scope.service,
        "traces": traces,
        "error_traces": summary.durations.errors,
        "error_rate": (traces > 0).then(|| summary.durations.errors as f64 / traces as f64),
        "duration_ms": durations_json(&summary.durations),
        "cost_usd": {
            "total": summary.cost_usd,
            "avg_per_trace": (traces > 0).then(|| summary.cost_usd / traces as f64),
        },
        "spans": spans,
        "span_kinds": kinds,
    })))
}

/// How the latency breakdown groups spans.
#[derive(Clone, Copy)]
enum Stage {
    Kind,
    Name,
    Model,
}

struct Latency {
    by: Stage,
    groups: rustc_hash::FxHashMap<Box<str>, Durations>,
    /// Most distinct stages tracked; spans of further ones are summed into
    /// `other` (a span name is client data).
    max_tracked: usize,
    other: Durations,
}

/// A stage's statistics as the answer lists them.
fn latency_json(key: Option<&str>, d: &Durations) -> Value {
    let stats = durations_json(d);
    json!({
        "key": key,
        "count": d.sketch.count(),
        "errors": d.errors,
        "total_ms": d.sketch.sum(),
        "avg_ms": stats["avg"],
        "p50_ms": stats["p50"],
        "p95_ms": stats["p95"],
        "p99_ms": stats["p99"],
    })
}

impl Latency {
    /// Adds to the durations of stage `key` (to `other` once `max_tracked`
    /// stages are).
    fn add_to(&mut self, key: &str, add: impl FnOnce(&mut Durations)) {
        if let Some(group) = self.groups.get_mut(key) {
            add(group);
        } else if self.groups.len() < self.max_tracked {
            add(self.groups.entry(Box::from(key)).or_default());
        } else {
            add(&mut self.other);
        }
    }
}

impl TelemetryVisitor for Latency {
    fn span(&mut self, timing: SpanTiming<'_>) {
        let key = match self.by {
            Stage::Kind => timing.kind,
            Stage::Name => timing.name,
            // Only spans that name a model take part in a per-model breakdown.
            Stage::Model => match timing.model {
                Some(model) => model,
                None => return,
            },
        };
        self.add_to(key, |group| group.add(timing.duration_ns, timing.error));
    }

    fn summed_by(&self) -> Option<SpanGroup> {
        match self.by {
            Stage::Kind => Some(SpanGroup::Kind),
            Stage::Model => Some(SpanGroup::Model),
            // Span names are client data: no store sums by them.
            Stage::Name => None,
        }
    }

    fn summed(&mut self, key: &str, durations: &Durations) {
        self.add_to(key, |group| group.merge(durations));
    }
}

/// `GET /api/v1/traces/latency?by=kind|name|model`: where time goes, stage
/// by stage, the stage with the most total time first.
#[utoipa::path(
    get, path = "/api/v1/traces/latency", tag = "traces",
    params(crate::query::params::WindowParams, ("by" = Option<String>, Query, description = "`kind` (default), `name` or `model`"), ("service" = Option<String>, Query, description = "Only spans of this service")),
    responses(
        (status = 200, description = "Where time goes, the stage with the most total time first", body = crate::openapi::TraceLatency),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn latency(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let scope = scope(&params)?;
    let (by, by_name) = match params.get("by").unwrap_or("kind") {
        "kind" => (Stage::Kind, "kind"),
        "name" => (Stage::Name, "name"),
        "model" => (Stage::Model, "model"),
        other => {
            return Err(ApiError::bad_request(format!(
                "by: expected kind, name or model, got {other:?}"
            )));
        }
    };
    let max_groups = state.limits.max_groups;
    let latency = Latency {
        by,
        groups: Default::default(),
        max_tracked: max_groups.saturating_mul(10),
        other: Durations::default(),
    };
    let visitor =
        state.telemetry.scan_spans(scope.clone(), Box::new(latency)).await.map_err(scan_error)?;
    let Latency { groups, mut other, .. } = *downcast::<Latency>(visitor);
    let groups_total = groups.len();
    let mut groups: Vec<(Box<str>, Durations)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.sketch.sum().total_cmp(&a.1.sketch.sum()).then(a.0.cmp(&b.0)));
    // The stages past `query.max_groups` are summed into `other`.
    for (_, rest) in groups.drain(groups.len().min(max_groups)..) {
        other.merge(&rest);
    }
    let truncated = other.sketch.count() > 0;
    let groups: Vec<Value> = groups.iter().map(|(key, d)| latency_json(Some(key), d)).collect();
    Ok(Json(json!({
        "project": scope.project,
        "from": scope.from_ns / 1_000_000,
        "to": scope.to_ns / 1_000_000,
        "by": by_name,
        "groups": groups,
        "other": truncated.then(|| latency_json(None, &other)),
        "truncated": truncated,
        "groups_total": groups_total,
    })))
}
