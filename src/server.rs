//! Assembles the server: `start` opens the store, recovers the rollups and
//! starts the committer; `router` wires the endpoints; `run` serves a bound
//! listener under its connection limits until shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::aggregate::RollupEngine;
use crate::config::{Config, retention_ms};
use crate::durability::{self, Committer, CommitterConfig};
use crate::ingest::{self, UsageIngest};
use crate::normalize::{AccountingRules, KeyFingerprinter};
use crate::pricing::PriceTable;
use crate::query::{self, QueryState};
use crate::storage::{self, RetentionCutoffs, Storage};
use crate::time::now_ms;

/// The running parts a router serves.
pub struct App {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    pub engine: Arc<RollupEngine>,
    pub committer: Committer,
    pub prices: Arc<PriceTable>,
    /// Resolves when the committer has stopped (after its final flush).
    committer_stopped: tokio::sync::oneshot::Receiver<()>,
    pub metrics: Arc<crate::exposition::Metrics>,
    pub metric_registry: Arc<crate::aggregate::metric::MetricRegistry>,
    pub budgets: Arc<crate::budgets::Budgets>,
    /// API keys, projects and the audit log.
    pub access: Arc<crate::access::Access>,
    /// The node's cluster, when its storage is ClickHouse.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Budgets shared with the cluster, and the task that keeps them so.
    shared_budgets: Option<Arc<crate::cluster::budgets::SharedBudgets>>,
    budget_sync: Option<tokio::task::JoinHandle<()>>,
    fingerprinter: Arc<KeyFingerprinter>,
    /// What the ingest endpoints (HTTP and gRPC) share, made once.
    ingest: std::sync::OnceLock<Arc<UsageIngest>>,
    /// Held for the life of the server: two processes on one data dir would
    /// hand out the same series ids.
    _data_dir_lock: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("data dir {0} is in use by another tally process")]
    DataDirInUse(String),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("cannot start the committer: {0}")]
    Committer(std::io::Error),
    #[error("cannot start the ingest threads: {0}")]
    Lanes(std::io::Error),
    #[error("prices: {0}")]
    Prices(#[from] crate::pricing::PricingError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Budgets(#[from] crate::budgets::BudgetError),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    ClusterAccess(#[from] crate::cluster::access::JoinError),
}

/// The secret behind API-key fingerprints: from config, else the one kept in
/// the data dir, else a new one written there.
fn fingerprint_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    if !config.api_key_secret.is_empty() {
        return Ok(config.api_key_secret.as_bytes().to_vec());
    }
    let path = config.data_dir.join("secret");
    let io = |source| StartError::DataDir { path: path.display().to_string(), source };
    match std::fs::read(&path) {
        Ok(secret) if !secret.is_empty() => Ok(secret),
        _ => {
            let secret = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
            write_private(&path, &secret).map_err(io)?;
            Ok(secret)
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Takes the data dir's lock (held until the file is dropped), or says
/// that another tally process holds it.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let path = dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::DataDir { path: path.display().to_string(), source })?;
    if lock.try_lock().is_err() {
        return Err(StartError::DataDirInUse(dir.display().to_string()));
    }
    Ok(lock)
}

impl App {
    pub async fn start(config: Config) -> Result<App, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let lock = lock_data_dir(&config.data_dir)?;
        let cluster = crate::cluster::Cluster::configure(
            &config.storage,
            &config.coordination,
            &config.cluster,
            &config.data_dir,
        )?
        .map(Arc::new);
        // A node of a cluster checks API keys under the cluster's secret,
        // and keeps its copy of the cluster's keys up to date.
        if let Some(cluster) = &cluster {
            crate::cluster::access::join(&cluster.link, &config.data_dir).await?;
        }
        let access = Arc::new(crate::access::Access::open(
            &config.data_dir,
            config.auth.clone(),
            &[config.http, config.grpc],
        )?);
        if let Some(cluster) = &cluster {
            crate::cluster::access::spawn(access.clone(), cluster.link.clone());
        }
        // A node of a cluster commits to SQLite in its data dir, which is
        // also the queue its records are shipped from.
        let local_url = if cluster.is_some() { "" } else { config.storage.as_str() };
        let storage = storage::open(&storage::OpenOptions {
            url: local_url,
            data_dir: &config.data_dir,
            max_spans_per_trace: config.ingest.max_spans_per_trace,
            sqlite: &config.sqlite,
        })?;
        if let Some(cluster) = &cluster {
            if let Some(claims) = &cluster.claims {
                claims.set_local(storage.clone());
            }
            // What an earlier run left unshipped counts against the outbox
            // bound (its age from now: commit times are not kept).
            let destination = cluster.clickhouse.destination();
            let waiting = storage::clickhouse::ship::waiting(&*storage, &destination).await?;
            cluster.outbox.found(waiting, (waiting > 0).then(now_ms));
        }
        // The metric log waits for shipping on a node of a cluster only.
        let destination = cluster.as_ref().map(|c| c.clickhouse.destination());
        storage::clickhouse::ship::keep_metric_log(&*storage, destination.as_deref()).await?;
        let (engine, replayed) = durability::recover(&*storage).await?;
        let (metric_registry, metric_commits_replayed) =
            durability::recover_metrics(&*storage, config.metrics.limits()).await?;
        let metric_registry = Arc::new(metric_registry);
        info!(
            replayed,
            metric_commits_replayed,
            series = engine.series_count(),
            synchronous = ?config.sqlite.synchronous,
            "store opened"
        );
        engine.set_series_limits(config.rollups);
        let engine = Arc::new(engine);
        let flush_interval = crate::time::parse_duration(&config.ingest.rollup_flush_interval)
            .map_err(|message| crate::config::ConfigError::Value {
                key: "ingest.rollup_flush_interval".into(),
                message,
            })?;
        let metrics = Arc::new(crate::exposition::Metrics::new(config.metrics.top_n));
        let fingerprinter = Arc::new(KeyFingerprinter::new(&fingerprint_secret(&config)?));
        // Budgets read their spend so far before anything commits. On a
        // node of a cluster their definitions, alerts and deliveries are
        // the cluster's, in the coordination store.
        let control: Arc<dyn storage::ControlStore> = match &cluster {
            Some(cluster) => {
                Arc::new(crate::cluster::control::SharedControl::new(cluster.link.clone()))
            }
            None => storage.clone(),
        };
        let budgets = crate::budgets::Budgets::open(
            control.clone(),
            storage.clone(),
            engine.clone(),
            &config.budgets,
            &config.alerts,
            fingerprinter.clone(),
        )
        .await?;
        let (committer, committer_stopped) = Committer::start(
            storage.clone(),
            engine.clone(),
            CommitterConfig {
                max_group_records: config.ingest.max_group_records,
                max_queued_records: config.ingest.max_queued_records,
                flush_interval: Duration::from_millis(flush_interval as u64),
                ..CommitterConfig::default()
            },
            metrics.clone(),
            metric_registry.clone(),
            vec![metrics.clone(), budgets.clone()],
            cluster.as_ref().map(|c| c.shared()).unwrap_or_default(),
        )
        .map_err(StartError::Committer)?;
        let prices = Arc::new(PriceTable::new(&config.prices)?);
        let shared_budgets = cluster.as_ref().map(|cluster| {
            Arc::new(crate::cluster::budgets::SharedBudgets::new(
                budgets.clone(),
                control.clone(),
                cluster.link.clone(),
                cluster.new_link(),
            ))
        });
        let budget_sync = shared_budgets
            .clone()
            .map(|shared| crate::cluster::budgets::spawn(shared, committer.clone()));
        Ok(App {
            shared_budgets,
            budget_sync,
            config,
            storage,
            engine,
            committer,
            prices,
            committer_stopped,
            metrics,
            metric_registry,
            budgets,
            access,
            cluster,
            fingerprinter,
            ingest: std::sync::OnceLock::new(),
            _data_dir_lock: lock,
        })
    }

    /// The state the ingest endpoints share (HTTP and gRPC alike).
    pub fn ingest(&self) -> Result<Arc<UsageIngest>, StartError> {
        if let Some(ingest) = self.ingest.get() {
            return Ok(ingest.clone());
        }
        let ingest = Arc::new(UsageIngest {
            committer: self.committer.clone(),
            prices: self.prices.clone(),
            fingerprinter: self.fingerprinter.clone(),
            rules: AccountingRules {
                bytes_per_input_token: self.config.accounting.bytes_per_input_token,
                tokens_per_output_chunk: self.config.accounting.tokens_per_output_chunk,
            },
            max_body_bytes: self.config.ingest.max_body_bytes,
            raw_retention_ms: retention_ms("retention.raw", &self.config.retention.raw)?,
            in_flight: tokio::sync::Semaphore::new(self.config.ingest.max_concurrent_requests),
            receiving: Arc::new(tokio::sync::Semaphore::new(
                self.config.ingest.max_receiving_bytes,
            )),
            metrics: self.metrics.clone(),
            metric_horizon_ms: retention_ms(
                "metrics.retention_1h",
                &self.config.metrics.retention_1h,
            )?,
            cumulative: std::sync::Mutex::new(crate::normalize::otlp_metric::CumulativeState::new(
                now_ms() as u64 * 1_000_000,
                self.config.metrics.max_cumulative_series,
            )),
            lanes: crate::blocking::Lanes::start(
                std::thread::available_parallelism().map_or(2, usize::from),
            )
            .map_err(StartError::Lanes)?,
            access: self.access.clone(),
            privacy: self.config.privacy.compile()?,
        });
        Ok(self.ingest.get_or_init(|| ingest).clone())
    }

    pub fn router(&self) -> Result<Router, StartError> {
        let usage = self.ingest()?;
        let query_limits = self.config.query.limits()?;
        let mut queries = QueryState::new(
            self.storage.clone(),
            self.engine.clone(),
            self.metric_registry.clone(),
            query_limits,
        );
        if let Some(cluster) = &self.cluster {
            queries.telemetry = cluster.reads.clone();
            queries.shared = Some(cluster.reads.clone());
        }
        let queries = Arc::new(queries);
        let ingest_routes = Router::new()
            .route("/api/v1/usage", post(ingest::usage::post_usage))
            .route("/api/v1/usage/reprice", post(ingest::usage::post_reprice))
            .route("/api/v1/admin/flush", post(ingest::usage::post_flush))
            .route("/api/v1/points", post(ingest::points::post_points))
            .route("/v1/traces", post(ingest::otlp_http::post_traces))
            .route("/api/public/otel/v1/traces", post(ingest::otlp_http::post_langfuse_traces))
            .route("/v1/logs", post(ingest::otlp_http::post_logs))
            .route("/v1/metrics", post(ingest::otlp_http::post_metrics))
            .with_state(usage.clone());
        let query_routes = Router::new()
            .route("/api/v1/usage/summary", get(query::usage::summary))
            .route("/api/v1/usage/series", get(query::usage::series))
            .route("/api/v1/usage/records", get(query::usage::records))
            .route("/api/v1/usage/unpriced", get(query::usage::unpriced))
            .route(
                "/api/v1/usage/prices",
                get(query::usage::prices).layer(axum::Extension(self.prices.clone())),
            )
            .route("/api/v1/traces", get(query::traces::list))
            .route("/api/v1/traces/summary", get(query::trace_stats::summary))
            .route("/api/v1/traces/latency", get(query::trace_stats::latency))
            .route("/api/v1/logs", get(query::traces::logs))
            .route("/api/v1/metrics/query", get(query::metrics::query))
            .route("/api/v1/metrics/names", get(query::metrics::names))
            .route("/api/v1/metrics/tags", get(query::metrics::tags))
            .route("/api/v1/traces/{trace_id}", get(query::traces::detail))
            .route("/api/v1/sessions", get(query::traces::sessions))
            .route("/api/v1/sessions/{session_id}", get(query::traces::session))
            .with_state(queries)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(query_limits),
                query::limits::bound,
            ));
        let budget_api = Arc::new(crate::budgets::api::BudgetApi {
            budgets: self.budgets.clone(),
            usage: usage.clone(),
            shared: self.shared_budgets.clone(),
        });
        let budget_routes = {
            use crate::budgets::api;
            Router::new()
                .route("/api/v1/budgets", get(api::list).post(api::create))
                .route("/api/v1/budgets/status", get(api::statuses))
                .route("/api/v1/budgets/{id}", get(api::get).put(api::replace).delete(api::delete))
                .route("/api/v1/budgets/{id}/status", get(api::status))
                .route("/api/v1/quota/reserve", post(api::reserve))
                .route("/api/v1/quota/settle", post(api::settle))
                .route("/api/v1/alerts", get(api::alerts))
                .with_state(budget_api)
        };
        let mut metrics_state = crate::exposition::MetricsState::new(
            self.metrics.clone(),
            self.committer.clone(),
            self.engine.clone(),
            self.storage.clone(),
            self.metric_registry.clone(),
            self.budgets.clone(),
        );
        metrics_state.cluster = self.cluster.clone();
        let metrics_state = Arc::new(metrics_state);
        let metrics_routes = Router::new()
            .route("/metrics", get(crate::exposition::handler))
            .with_state(metrics_state);
        let access_routes = {
            use crate::access::api;
            Router::new()
                .route("/api/v1/admin/keys", get(api::list_keys).post(api::create_key))
                .route("/api/v1/admin/keys/{id}", axum::routing::delete(api::revoke_key))
                .route("/api/v1/admin/projects", get(api::list_projects).post(api::create_project))
                .route("/api/v1/admin/audit", get(api::audit))
                .route("/api/v1/auth/whoami", get(api::whoami))
                .with_state(self.access.clone())
        };
        Ok(Router::new()
            .route(
                "/healthz",
                get(crate::openapi::healthz).layer(axum::Extension(self.cluster.clone())),
            )
            .route("/api/v1/openapi.json", get(crate::openapi::openapi_json))
            .merge(ingest_routes)
            .merge(query_routes)
            .merge(budget_routes)
            .merge(metrics_routes)
            .merge(access_routes)
            // Every other path: the web dashboard (unknown API paths: 404 JSON).
            .fallback(crate::dashboard::fallback)
            .layer(axum::middleware::from_fn_with_state(
                self.access.clone(),
                crate::access::guard::guard,
            ))
            // Bodies are limited by the handlers themselves, after decompression.
            .layer(DefaultBodyLimit::disable()))
    }

    /// Deletes data past its retention every `retention.check_interval`,
    /// starting now.
    pub fn spawn_retention(&self) -> Result<tokio::task::JoinHandle<()>, StartError> {
        let r = &self.config.retention;
        let every = crate::time::parse_duration(&r.check_interval).map_err(|message| {
            crate::config::ConfigError::Value { key: "retention.check_interval".into(), message }
        })?;
        let every = Duration::from_millis(every as u64);
        let raw = retention_ms("retention.raw", &r.raw)?;
        let minute = retention_ms("retention.minute", &r.minute)?;
        let hour = retention_ms("retention.hour", &r.hour)?;
        let day = retention_ms("retention.day", &r.day)?;
        let m = &self.config.metrics;
        let metric = [
            retention_ms("metrics.retention_10s", &m.retention_10s)?,
            retention_ms("metrics.retention_1m", &m.retention_1m)?,
            retention_ms("metrics.retention_15m", &m.retention_15m)?,
            retention_ms("metrics.retention_1h", &m.retention_1h)?,
        ];
        let committer = self.committer.clone();
        let cluster = self.cluster.clone();
        Ok(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                let now = now_ms();
                let cutoffs = RetentionCutoffs {
                    raw: raw.map(|d| now - d),
                    minute: minute.map(|d| now - d),
                    hour: hour.map(|d| now - d),
                    day: day.map(|d| now - d),
                    metric: metric.map(|keep| keep.map(|d| now - d)),
                };
                match committer.retention(cutoffs).await {
                    Ok(0) => {}
                    Ok(deleted) => info!(deleted, "retention applied"),
                    Err(err) => warn!(%err, "retention failed; will retry"),
                }
                // Every node drops what is past retention in ClickHouse;
                // dropping a partition already gone changes nothing.
                if let Some(cluster) = &cluster {
                    let deadline = Duration::from_secs(300);
                    let dropped = tokio::time::timeout(deadline, cluster.reads.retention(&cutoffs));
                    match dropped.await.unwrap_or_else(|_| {
                        Err(storage::StorageError::Backend {
                            backend: "clickhouse",
                            message: format!("no answer within {deadline:?}"),
                        })
                    }) {
                        Ok(0) => {}
                        Ok(partitions) => info!(partitions, "ClickHouse retention applied"),
                        Err(err) => warn!(%err, "ClickHouse retention failed; will retry"),
                    }
                }
            }
        }))
    }

    /// Ships what the node commits to its cluster's ClickHouse, when it is
    /// a node of one.
    pub fn spawn_shipper(&self) -> Option<tokio::task::JoinHandle<()>> {
        let cluster = self.cluster.clone()?;
        let local: Arc<dyn storage::Storage> = self.storage.clone();
        let registries = crate::cluster::shipper::Registries {
            engine: self.engine.clone(),
            metrics: self.metric_registry.clone(),
        };
        Some(tokio::spawn(crate::cluster::shipper::run(
            cluster,
            local,
            registries,
            std::future::pending(),
        )))
    }

    /// Flushes rollups and stops the committer.
    pub async fn shutdown(self) {
        // The budget sync holds a committer handle: stopped first.
        if let Some(sync) = &self.budget_sync {
            sync.abort();
        }
        if let Err(err) = self.committer.flush().await {
            warn!(%err, "flush at shutdown failed; rollups will be rebuilt at next start");
        }
        // The committer stops once every handle is gone, the ingest state's
        // included (request handlers have dropped theirs by now).
        drop(self.committer);
        drop(self.ingest);
        let _ = self.committer_stopped.await;
        // Nothing writes any more: fold the write-ahead log into the store,
        // so that a clean stop leaves no large log beside it.
        if let Err(err) = self.storage.checkpoint().await {
            warn!(%err, "checkpoint at shutdown failed; the next start reads the log");
        }
    }
}

/// Serves `router` on `listener` under the connection limits of `limits`
/// until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: crate::listener::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::listener::serve(listener, router, limits, shutdown).await
}

#[cfg(test)]
mod tests {
    //! The router and the OpenAPI description name the same routes: each
    //! (method, path) the router serves is described, and each described
    //! one is served. README's endpoints are described too.

    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    /// A route with its path parameters unnamed: `/api/v1/budgets/{}`.
    type Route = (String, String);

    fn unnamed(path: &str) -> String {
        regex::Regex::new(r"\{[^}]*\}").expect("valid regex").replace_all(path, "{}").into_owned()
    }

    /// Methods a route may be given; HEAD comes with GET.
    const METHODS: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
    ];

    /// Every (method, path) the router serves: the paths from its debug form
    /// (axum keeps no other list of them), the methods by asking each path
    /// with each method — a method the path lacks is answered 405.
    async fn served(router: &Router) -> BTreeSet<Route> {
        let debug = format!("{router:?}");
        let routed = debug.split("fallback_router").next().expect("split yields one part");
        let path_re = regex::Regex::new(r#"RouteId\(\d+\): "([^"]+)""#).expect("valid regex");
        let paths: BTreeSet<String> = path_re
            .captures_iter(routed)
            .map(|c| c[1].to_owned())
            .filter(|p| !p.contains("__private__"))
            .collect();
        assert!(
            paths.len() >= 10,
            "found only {paths:?} in the router's debug form; has axum changed it? {debug}"
        );
        let mut routes = BTreeSet::new();
        let param = regex::Regex::new(r"\{[^}]*\}").expect("valid regex");
        for path in paths {
            let uri = param.replace_all(&path, "0");
            for method in METHODS {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(uri.as_ref())
                    .body(Body::empty())
                    .expect("valid request");
                let response =
                    tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
                        .await
                        .unwrap_or_else(|_| panic!("{method} {uri} did not answer within 10 s"))
                        .expect("infallible");
                if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                    routes.insert((method.to_string(), unnamed(&path)));
                }
            }
        }
        routes
    }

    fn described() -> BTreeSet<Route> {
        let mut routes = BTreeSet::new();
        for (path, item) in &crate::openapi::document().paths.paths {
            let operations = [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
                ("HEAD", &item.head),
            ];
            for (method, operation) in operations {
                if operation.is_some() {
                    routes.insert((method.to_owned(), unnamed(path)));
                }
            }
        }
        routes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_is_described_and_every_description_is_routed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let app = App::start(config).await.expect("app starts");
        let router = app.router().expect("router");
        let served = served(&router).await;
        let described = described();
        let undescribed: Vec<_> = served.difference(&described).collect();
        let unserved: Vec<_> = described.difference(&served).collect();
        assert!(
            undescribed.is_empty() && unserved.is_empty(),
            "routes without a description: {undescribed:?}; described but not routed: {unserved:?}"
        );
        // The router holds committer handles; shutdown waits for them all.
        drop(router);
        app.shutdown().await;
    }

    /// Each `METHOD /path` README names (`GET|PUT /path` for several) is
    /// described.
    #[test]
    fn readme_endpoints_are_described() {
        let readme = include_str!("../README.md");
        let endpoint = regex::Regex::new(
            r"\b((?:GET|POST|PUT|DELETE|PATCH)(?:\|(?:GET|POST|PUT|DELETE|PATCH))*) (/[A-Za-z0-9_./{}-]*)",
        )
        .expect("valid regex");
        let described = described();
        let mut named = 0;
        let mut missing = Vec::new();
        for found in endpoint.captures_iter(readme) {
            for method in found[1].split('|') {
                named += 1;
                let route = (method.to_owned(), unnamed(&found[2]));
                if !described.contains(&route) {
                    missing.push(route);
                }
            }
        }
        assert!(named >= 20, "README names only {named} endpoints; is the pattern still right?");
        assert!(missing.is_empty(), "README names endpoints the description lacks: {missing:?}");
    }
}
