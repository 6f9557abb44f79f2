//! Prometheus `GET /metrics`: Tally's own health (ingest outcomes, commit
//! and flush latency, queue depth, rollup lag, store rows, build info) and
//! LLM usage from the ledger, in text format 0.0.4.

pub mod ledger;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::aggregate::RollupEngine;
use crate::durability::Committer;
use crate::normalize::limits::Truncation;
use crate::storage::{StoreStats, UpkeepStore};
use ledger::LedgerMetrics;
use text::{Exposition, Histogram, Kind};

/// Seconds buckets for commit and flush latency.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Row counts are refreshed at most this often (counting a large table
/// takes a while).
const STATS_MAX_AGE: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the server counts about itself and the ledger, shared by the
/// ingest endpoints, the committer and `/metrics`.
pub struct Metrics {
    ledger: Mutex<LedgerMetrics>,
    /// (endpoint, outcome) → records.
    ingest: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// What the attribute caps cut from accepted records.
    truncated: Mutex<Truncation>,
    append: Mutex<Histogram>,
    flush: Mutex<Histogram>,
    /// Unix ms of the last rollup flush (0: none yet).
    last_flush_ms: AtomicI64,
    started: Instant,
}

impl Metrics {
    /// `top_n`: users and API keys with series of their own.
    pub fn new(top_n: usize) -> Self {
        Self {
            ledger: Mutex::new(LedgerMetrics::new(top_n)),
            ingest: Mutex::new(BTreeMap::new()),
            truncated: Mutex::new(Truncation::default()),
            append: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
            flush: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
            last_flush_ms: AtomicI64::new(0),
            started: Instant::now(),
        }
    }

    /// Records of one request: accepted, duplicates and rejected.
    pub fn ingested(&self, endpoint: &'static str, accepted: u64, duplicates: u64, rejected: u64) {
        let mut ingest = lock(&self.ingest);
        for (outcome, n) in
            [("accepted", accepted), ("duplicate", duplicates), ("rejected", rejected)]
        {
            *ingest.entry((endpoint, outcome)).or_default() += n;
        }
    }

    /// What the caps cut from one request's records.
    pub fn truncated(&self, cut: &Truncation) {
        if !cut.is_empty() {
            lock(&self.truncated).add(*cut);
        }
    }

    pub fn appended(&self, took: Duration) {
        lock(&self.append).observe(took.as_secs_f64());
    }

    pub fn flushed(&self, took: Duration) {
        lock(&self.flush).observe(took.as_secs_f64());
        self.last_flush_ms.store(crate::time::now_ms(), Ordering::Relaxed);
    }
}

/// What `/metrics` reads.
pub struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub committer: Committer,
    pub engine: Arc<RollupEngine>,
    pub storage: Arc<dyn UpkeepStore>,
    pub metric_registry: Arc<crate::aggregate::metric::MetricRegistry>,
    pub budgets: Arc<crate::budgets::Budgets>,
    /// The node's cluster, if it is a node of one.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    stats: tokio::sync::Mutex<Option<(Instant, StoreStats)>>,
}

impl MetricsState {
    pub fn new(
        metrics: Arc<Metrics>,
        committer: Committer,
        engine: Arc<RollupEngine>,
        storage: Arc<dyn UpkeepStore>,
        metric_registry: Arc<crate::aggregate::metric::MetricRegistry>,
        budgets: Arc<crate::budgets::Budgets>,
    ) -> Self {
        let stats = tokio::sync::Mutex::new(None);
        let cluster = None;
        Self { metrics, committer, engine, storage, metric_registry, budgets, cluster, stats }
    }

    async fn store_stats(&self) -> Option<StoreStats> {
        let mut cached = self.stats.lock().await;
        if let Some((at, stats)) = cached.as_ref()
            && at.elapsed() < STATS_MAX_AGE
        {
            return Some(stats.clone());
        }
        match self.storage.stats().await {
            Ok(stats) => {
                *cached = Some((Instant::now(), stats.clone()));
                Some(stats)
            }
            Err(err) => {
                tracing::warn!(%err, "store row counts unavailable for /metrics");
                cached.as_ref().map(|(_, stats)| stats.clone())
            }
        }
    }
}

/// The LLM families count calls as they enter the ledger.
impl crate::durability::CommitObserver for Metrics {
    fn committed(&self, calls: &mut dyn Iterator<Item = (&crate::model::LlmCall, i64)>) {
        let mut ledger = lock(&self.ledger);
        for (call, series) in calls {
            ledger.record(call, series);
        }
    }

    fn forget_series(&self, series: &[i64]) {
        lock(&self.ledger).forget(series);
    }
}

/// The exposition without the samples of other projects than `project`
/// (a key sees its own project's series, and the server's own).
fn own_project_only(text: &str, project: &str) -> String {
    let mut own = String::with_capacity(8);
    own.push_str("project=\"");
    text::escape_label(project, &mut own);
    own.push('"');
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let foreign = !line.starts_with('#')
            && line.contains("project=\"")
            && !line.contains(&format!("{{{own}"))
            && !line.contains(&format!(",{own}"));
        if !foreign {
            out.push_str(line);
        }
    }
    out
}

/// `GET /metrics`
#[utoipa::path(
    get, path = "/metrics", tag = "admin",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content(("text/plain; version=0.0.4"))),
    )
)]
pub async fn handler(
    State(state): State<Arc<MetricsState>>,
    caller: Option<axum::Extension<crate::access::Principal>>,
) -> Response {
    let stats = state.store_stats().await;
    let m = &state.metrics;
    let mut e = Exposition::default();
    e.family("tally_build_info", Kind::Gauge, "Tally's version; always 1.");
    e.sample("tally_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    e.family("tally_uptime_seconds", Kind::Gauge, "Seconds since the server started.");
    e.sample("tally_uptime_seconds", &[], m.started.elapsed().as_secs_f64());
    e.family(
        "tally_ingest_records_total",
        Kind::Counter,
        "Records received by endpoint and outcome (accepted, duplicate, rejected).",
    );
    for ((endpoint, outcome), n) in lock(&m.ingest).iter() {
        e.sample(
            "tally_ingest_records_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
            *n as f64,
        );
    }
    e.family(
        "tally_ingest_truncated_total",
        Kind::Counter,
        "What the input caps cut from accepted spans and logs: attributes dropped, \
         values (strings, arrays) cut short, span events dropped, spans not kept \
         because their trace held ingest.max_spans_per_trace.",
    );
    let truncated = *lock(&m.truncated);
    for (what, n) in [
        ("attributes", truncated.attributes),
        ("values", truncated.values),
        ("events", truncated.events),
        ("spans", truncated.spans),
    ] {
        e.sample("tally_ingest_truncated_total", &[("what", what)], n as f64);
    }
    e.family(
        "tally_durable_append_seconds",
        Kind::Histogram,
        "Time to durably append one group commit.",
    );
    e.histogram("tally_durable_append_seconds", &[], &lock(&m.append));
    e.family(
        "tally_store_write_seconds",
        Kind::Histogram,
        "Time to write one rollup flush to the store.",
    );
    e.histogram("tally_store_write_seconds", &[], &lock(&m.flush));
    e.family("tally_ingest_queue_records", Kind::Gauge, "Records waiting for a commit.");
    e.sample("tally_ingest_queue_records", &[], state.committer.queued() as f64);
    e.family("tally_rollup_open_cells", Kind::Gauge, "Rollup cells in memory, not yet flushed.");
    e.sample("tally_rollup_open_cells", &[], state.engine.open_cell_count() as f64);
    e.family(
        "tally_rollup_lag_seconds",
        Kind::Gauge,
        "Seconds since open rollup buckets were last flushed to the store.",
    );
    let last = m.last_flush_ms.load(Ordering::Relaxed);
    let lag = if last == 0 {
        m.started.elapsed().as_secs_f64()
    } else {
        (crate::time::now_ms() - last).max(0) as f64 / 1000.0
    };
    e.sample("tally_rollup_lag_seconds", &[], lag);
    e.family("tally_series", Kind::Gauge, "Rollup series known (projections included).");
    e.sample("tally_series", &[], state.engine.series_count() as f64);
    e.family(
        "tally_rollup_overflow_calls_total",
        Kind::Counter,
        "Calls whose rollup series would have passed a [rollups] cap, counted under __other__, \
         by what was capped.",
    );
    let overflowed = state.engine.overflowed();
    for (kind, count) in crate::aggregate::series::OVERFLOW_KINDS.iter().zip(overflowed) {
        e.sample("tally_rollup_overflow_calls_total", &[("dimension", kind)], count as f64);
    }
    let (overflow_points, overflow_series) = state.metric_registry.overflow();
    e.family(
        "tally_metric_series",
        Kind::Gauge,
        "Metric series (name and tag set) known, overflow series included.",
    );
    e.sample("tally_metric_series", &[], state.metric_registry.len() as f64);
    e.family(
        "tally_metric_overflow_series",
        Kind::Gauge,
        "Overflow series: metric names that reached metrics.max_series_per_name.",
    );
    e.sample("tally_metric_overflow_series", &[], overflow_series as f64);
    e.family(
        "tally_metric_overflow_points_total",
        Kind::Counter,
        "Points of new series beyond a name's cap, counted in its overflow series.",
    );
    e.sample("tally_metric_overflow_points_total", &[], overflow_points as f64);
    if let Some(stats) = stats {
        e.family(
            "tally_store_rows",
            Kind::Gauge,
            "Rows in the store by table (refreshed every 30 s).",
        );
        for (table, n) in [
            ("calls", stats.calls),
            ("series", stats.series),
            ("rollups", stats.rollup_rows),
            ("spans", stats.spans),
            ("logs", stats.logs),
        ] {
            e.sample("tally_store_rows", &[("table", table)], n as f64);
        }
    }
    budget_families(&mut e, &state.budgets);
    if let Some(cluster) = &state.cluster {
        cluster_families(&mut e, cluster);
    }
    let ids = lock(&m.ledger).series_ids();
    let keys = state.engine.series_keys(&ids);
    lock(&m.ledger).render(&mut e, &keys);
    let mut text = e.finish();
    if let Some(axum::Extension(principal)) = caller {
        text = own_project_only(&text, &principal.project);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `tally_budget_*`: each budget's spend, limit, reservations and remaining
/// share, and the alert pipeline's counters.
fn budget_families(e: &mut Exposition, budgets: &crate::budgets::Budgets) {
    use std::sync::atomic::Ordering::Relaxed;
    let (statuses, open) = {
        let mut book = budgets.lock();
        (book.statuses(None, crate::time::now_ms()), book.open_reservations())
    };
    type Gauge = (&'static str, &'static str, fn(&crate::budgets::BudgetStatus) -> f64);
    let gauges: [Gauge; 4] = [
        (
            "tally_budget_spend",
            "Spend in the budget's current period (USD or tokens, see metric).",
            |s| s.spend,
        ),
        ("tally_budget_limit", "The budget's limit per period.", |s| s.limit),
        ("tally_budget_reserved", "Held by open quota reservations.", |s| s.reserved),
        (
            "tally_budget_remaining_ratio",
            "Share of the limit left after spend and reservations (0 to 1).",
            |s| s.remaining / s.limit,
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, Kind::Gauge, help);
        for s in &statuses {
            let labels = [
                ("budget_id", s.id.as_str()),
                ("budget", s.name.as_str()),
                ("project", s.project.as_str()),
                ("metric", s.metric.as_str()),
            ];
            e.sample(name, &labels, value(s));
        }
    }
    e.family(
        "tally_quota_reservations_open",
        Kind::Gauge,
        "Quota reservations not yet settled or expired.",
    );
    e.sample("tally_quota_reservations_open", &[], open as f64);
    let stats = &budgets.alerts.stats;
    e.family(
        "tally_budget_alerts_total",
        Kind::Counter,
        "Budget thresholds crossed and recorded as alerts.",
    );
    e.sample("tally_budget_alerts_total", &[], stats.recorded.load(Relaxed) as f64);
    e.family(
        "tally_budget_webhook_deliveries_total",
        Kind::Counter,
        "Alert webhook attempts by outcome (delivered, error, given_up, refused).",
    );
    for (outcome, n) in [
        ("delivered", &stats.delivered),
        ("error", &stats.attempts_failed),
        ("given_up", &stats.given_up),
        ("refused", &stats.refused),
    ] {
        e.sample(
            "tally_budget_webhook_deliveries_total",
            &[("outcome", outcome)],
            n.load(Relaxed) as f64,
        );
    }
}

/// The outbox to ClickHouse and the links to the shared stores, on a node
/// of a cluster.
fn cluster_families(e: &mut Exposition, cluster: &crate::cluster::Cluster) {
    let outbox = cluster.outbox.state();
    e.family(
        "tally_outbox_records",
        Kind::Gauge,
        "Records committed here and not yet shipped to ClickHouse.",
    );
    e.sample("tally_outbox_records", &[], outbox.records as f64);
    e.family(
        "tally_outbox_age_seconds",
        Kind::Gauge,
        "Seconds the oldest record waiting to be shipped to ClickHouse has waited.",
    );
    e.sample("tally_outbox_age_seconds", &[], outbox.age_ms as f64 / 1000.0);
    e.family(
        "tally_shipped_records_total",
        Kind::Counter,
        "Records shipped to ClickHouse since the start (calls, spans, log records).",
    );
    e.sample("tally_shipped_records_total", &[], outbox.shipped as f64);
    e.family(
        "tally_shared_store_up",
        Kind::Gauge,
        "Whether the last round trip to a shared store (clickhouse, coordination) succeeded.",
    );
    let problems = cluster.health.problems();
    for part in [crate::cluster::Part::ClickHouse, crate::cluster::Part::Coordination] {
        let up = !problems.iter().any(|(p, _, _)| *p == part);
        e.sample("tally_shared_store_up", &[("store", part.name())], if up { 1.0 } else { 0.0 });
    }
}
