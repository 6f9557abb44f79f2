//! Typed configuration, layered: defaults < TOML file < `TALLY_*`
//! environment < command-line flags, validated after loading.
//!
//! Environment variables name a key path with `__` between levels:
//! `TALLY_HTTP=0.0.0.0:4318`, `TALLY_INGEST__MAX_BODY_BYTES=1048576`,
//! `TALLY_RETENTION__RAW=14d`. Values are read as TOML scalars when they
//! parse as one (numbers, booleans), else as strings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pricing::UserPrice;
use crate::storage::sqlite::Synchronous;
use crate::time::parse_duration;

/// The log filter variable (`TALLY_LOG=debug`), read by the CLI, not a
/// config key.
pub const LOG_ENV: &str = "TALLY_LOG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("config: {0}")]
    Invalid(#[from] toml::de::Error),
    #[error("config key {key}: {message}")]
    Value { key: String, message: String },
}

/// Everything `tally serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP listener (API, OTLP/HTTP, /metrics).
    pub http: SocketAddr,
    /// Address of the OTLP/gRPC listener.
    pub grpc: SocketAddr,
    /// Directory for the embedded store and the server's secret.
    pub data_dir: PathBuf,
    /// Storage URL: empty for SQLite in the data dir, `sqlite://PATH`, or
    /// `clickhouse://[USER:PASS@]HOST[:PORT]/DATABASE` for a node of a
    /// cluster (which then needs `coordination`).
    pub storage: String,
    /// Coordination store of a cluster: `postgres://…`; empty for none.
    pub coordination: String,
    /// How the node runs in its cluster (with ClickHouse storage).
    pub cluster: crate::cluster::ClusterConfig,
    /// Secret for API-key fingerprints; empty: generated once and kept in
    /// `<data_dir>/secret`.
    pub api_key_secret: String,
    pub ingest: IngestConfig,
    pub accounting: AccountingConfig,
    pub sqlite: SqliteConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    pub budgets: BudgetsConfig,
    pub query: crate::query::limits::QueryConfig,
    pub rollups: crate::aggregate::series::SeriesLimits,
    pub alerts: AlertsConfig,
    /// Connection limits of both listeners.
    pub server: crate::listener::ServerConfig,
    /// API keys: when they are asked for, and each key's rate limits.
    pub auth: crate::access::AuthConfig,
    /// TLS on both listeners.
    pub tls: crate::tls::TlsConfig,
    /// Price overrides and additions, matched before (exact model) or after
    /// (patterns) the built-in catalog.
    pub prices: Vec<UserPrice>,
    /// Whether prompt and completion content is stored, and what is masked.
    pub privacy: crate::normalize::privacy::PrivacyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:4318".parse().expect("valid address"),
            grpc: "127.0.0.1:4317".parse().expect("valid address"),
            data_dir: PathBuf::from("./tally-data"),
            storage: String::new(),
            coordination: String::new(),
            cluster: Default::default(),
            api_key_secret: String::new(),
            ingest: IngestConfig::default(),
            accounting: AccountingConfig::default(),
            sqlite: SqliteConfig::default(),
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
            budgets: BudgetsConfig::default(),
            query: Default::default(),
            rollups: Default::default(),
            alerts: AlertsConfig::default(),
            server: crate::listener::ServerConfig::default(),
            auth: crate::access::AuthConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            prices: Vec::new(),
            privacy: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body accepted, in bytes, after decompression (413 above).
    pub max_body_bytes: usize,
    /// Most records waiting to be committed before requests get 503.
    pub max_queued_records: usize,
    /// Most records committed in one store transaction.
    pub max_group_records: usize,
    /// Most bytes of request bodies held at once while they arrive and are
    /// parsed (counted as they arrive, compressed as sent); a body that
    /// would pass it gets 429. Bounds the memory slow or many uploads take.
    pub max_receiving_bytes: usize,
    /// Spans one trace keeps; spans arriving once it holds this many are
    /// counted (`tally_ingest_truncated_total{what="spans"}` and the trace's
    /// `spans_dropped`), not stored.
    pub max_spans_per_trace: usize,
    /// Most ingest requests parsed and committed at once, counted from the
    /// moment a body has arrived in full (a slow upload holds none); more
    /// get 429. With `max_body_bytes` this bounds the memory parsed bodies
    /// take.
    pub max_concurrent_requests: usize,
    /// How often open rollup buckets are written to the store.
    pub rollup_flush_interval: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            max_queued_records: 400_000,
            max_group_records: 50_000,
            max_receiving_bytes: 512 * 1024 * 1024,
            max_spans_per_trace: 10_000,
            max_concurrent_requests: 128,
            rollup_flush_interval: "5s".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Users and API keys (across projects) with series of their own on
    /// `/metrics`, chosen by cost; the rest are summed as `__other__`.
    pub top_n: usize,
    /// Most series (tag sets) per metric name; points of further series go
    /// to the name's overflow series.
    pub max_series_per_name: usize,
    /// Most metric names per project; points of further names go to the
    /// project's `__overflow__` metric.
    pub max_names_per_project: usize,
    /// Most metric series in all; past it, points of new series go to an
    /// overflow series.
    pub max_series: usize,
    /// Most cumulative OTLP series whose last sample is kept (to turn the
    /// next into a delta); past it, samples of new cumulative series are
    /// rejected, once series silent for an hour have been let go.
    pub max_cumulative_series: usize,
    /// How long each metric tier's bins are kept (a duration or "forever").
    pub retention_10s: String,
    pub retention_1m: String,
    pub retention_15m: String,
    pub retention_1h: String,
}

impl MetricsConfig {
    pub fn limits(&self) -> crate::aggregate::metric::MetricLimits {
        crate::aggregate::metric::MetricLimits {
            max_series_per_name: self.max_series_per_name,
            max_names_per_project: self.max_names_per_project,
            max_series: self.max_series,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            top_n: 20,
            max_series_per_name: 10_000,
            max_names_per_project: 10_000,
            max_series: 1_000_000,
            max_cumulative_series: 100_000,
            retention_10s: "6h".to_owned(),
            retention_1m: "7d".to_owned(),
            retention_15m: "90d".to_owned(),
            retention_1h: "730d".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// IANA time zone of calendar periods (day, week, month) for budgets that
    /// do not name their own.
    pub timezone: String,
    /// Wait after a failed webhook delivery; doubled after each further
    /// failure, up to `webhook_retry_max`.
    pub webhook_retry_initial: String,
    pub webhook_retry_max: String,
    /// A delivery still failing this long after the threshold was crossed is
    /// marked failed.
    pub webhook_retry_for: String,
    /// Time allowed for one webhook attempt: resolving the host,
    /// connecting, sending the alert and receiving the answer's status.
    pub webhook_timeout: String,
    /// Time allowed to open the connection of a webhook attempt.
    pub webhook_connect_timeout: String,
    /// Budgets defined in the config file (`[[budgets.define]]`, the same
    /// fields as `POST /api/v1/budgets`); the API cannot change or delete
    /// them, and they are kept in step with the file at every start.
    pub define: Vec<crate::budgets::BudgetSpec>,
}

/// The budgets settings, parsed.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    pub timezone: chrono_tz::Tz,
    pub retry: crate::budgets::alerts::RetryPolicy,
    pub webhook_timeout: std::time::Duration,
    pub webhook_connect_timeout: std::time::Duration,
}

impl BudgetsConfig {
    pub fn settings(&self) -> Result<BudgetSettings, ConfigError> {
        let timezone = crate::budgets::period::parse_tz(&self.timezone)
            .map_err(|message| ConfigError::Value { key: "budgets.timezone".into(), message })?;
        let ms = |key: &str, value: &str| match parse_duration(value) {
            Ok(ms) if ms > 0 => Ok(ms),
            Ok(_) => {
                Err(ConfigError::Value { key: key.into(), message: "must be positive".into() })
            }
            Err(message) => Err(ConfigError::Value { key: key.into(), message }),
        };
        Ok(BudgetSettings {
            timezone,
            retry: crate::budgets::alerts::RetryPolicy {
                initial_ms: ms("budgets.webhook_retry_initial", &self.webhook_retry_initial)?,
                max_ms: ms("budgets.webhook_retry_max", &self.webhook_retry_max)?,
                give_up_after_ms: ms("budgets.webhook_retry_for", &self.webhook_retry_for)?,
            },
            webhook_timeout: std::time::Duration::from_millis(ms(
                "budgets.webhook_timeout",
                &self.webhook_timeout,
            )? as u64),
            webhook_connect_timeout: std::time::Duration::from_millis(ms(
                "budgets.webhook_connect_timeout",
                &self.webhook_connect_timeout,
            )? as u64),
        })
    }
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            timezone: "UTC".to_owned(),
            webhook_retry_initial: "5s".to_owned(),
            webhook_retry_max: "1h".to_owned(),
            webhook_retry_for: "25h".to_owned(),
            webhook_timeout: "10s".to_owned(),
            webhook_connect_timeout: "5s".to_owned(),
            define: Vec::new(),
        }
    }
}

/// Where alert webhooks may be delivered. Loopback and private networks are
/// refused unless allowed here; link-local addresses (169.254.0.0/16,
/// fe80::/10), cloud metadata services, unspecified, multicast, broadcast
/// and reserved addresses are refused always.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Let webhooks reach loopback (127.0.0.0/8, ::1) and private networks
    /// (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10), for
    /// receivers on the same host or network as Tally.
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountingConfig {
    /// Request bytes per estimated input token, for streams cut off before
    /// their usage was reported.
    pub bytes_per_input_token: u64,
    /// Estimated output tokens per streamed chunk, for the same streams.
    pub tokens_per_output_chunk: u64,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self { bytes_per_input_token: 4, tokens_per_output_chunk: 1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// `normal`: a commit survives a crash of the process (SIGKILL); `full`:
    /// it also survives power loss (one fsync per commit).
    pub synchronous: Synchronous,
    /// Page cache per connection, in MiB.
    pub cache_mib: u32,
    /// Most read connections open at once (each with its own page cache);
    /// further queries wait for one, within their deadline.
    pub max_readers: usize,
    /// Keys of stored calls (ids, span keys), and apart those of stored
    /// traces, held in memory before they are written to their key index as
    /// one run.
    pub key_run_keys: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            cache_mib: 64,
            max_readers: 8,
            key_run_keys: 1 << 20,
        }
    }
}

/// How long each kind of data is kept: a duration (`30d`) or `forever`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw per-call rows (the audit trail; also how long ids are remembered
    /// for idempotency, and how far back re-pricing can reach).
    pub raw: String,
    /// 1-minute rollups.
    pub minute: String,
    /// 1-hour rollups.
    pub hour: String,
    /// 1-day rollups.
    pub day: String,
    /// How often data past its retention is deleted.
    pub check_interval: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw: "30d".to_owned(),
            minute: "7d".to_owned(),
            hour: "90d".to_owned(),
            day: "forever".to_owned(),
            check_interval: "10m".to_owned(),
        }
    }
}

/// A retention as milliseconds, None for forever.
pub fn retention_ms(key: &str, value: &str) -> Result<Option<i64>, ConfigError> {
    if value.trim() == "forever" {
        return Ok(None);
    }
    parse_duration(value)
        .map(Some)
        .map_err(|message| ConfigError::Value { key: key.to_owned(), message })
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub storage: Option<String>,
    pub coordination: Option<String>,
}

impl Config {
    /// Loads the layers. `env` is passed in (not read here) so that loading is
    /// testable.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let Some(path) = file else {
            return Config::layered(toml::Table::new(), env, overrides);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_toml_str(&path.display().to_string(), &text, env, overrides)
    }

    /// Loads the layers with the config file's text given in place of the
    /// file; `path` names it in errors.
    pub fn from_toml_str(
        path: &str,
        text: &str,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let tree = toml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        Config::layered(tree, env, overrides)
    }

    /// The environment and `overrides` over the file's `tree`, validated.
    fn layered(
        mut tree: toml::Table,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut names: Vec<&String> = env
            .keys()
            .filter(|k| {
                k.starts_with("TALLY_") && *k != LOG_ENV && *k != crate::time::CLOCK_OFFSET_ENV
            })
            .collect();
        names.sort();
        for name in names {
            let path: Vec<String> =
                name["TALLY_".len()..].split("__").map(|part| part.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    name: name.clone(),
                    message: "empty key segment".into(),
                });
            }
            set_path(&mut tree, &path, scalar(&env[name]))
                .map_err(|message| ConfigError::Env { name: name.clone(), message })?;
        }
        let mut config: Config = tree.try_into()?;
        if let Some(http) = overrides.http {
            config.http = http;
        }
        if let Some(grpc) = overrides.grpc {
            config.grpc = grpc;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(storage) = &overrides.storage {
            config.storage = storage.clone();
        }
        if let Some(coordination) = &overrides.coordination {
            config.coordination = coordination.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Value {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.accounting.bytes_per_input_token == 0 {
            return Err(invalid("accounting.bytes_per_input_token", "must be at least 1"));
        }
        if self.sqlite.max_readers == 0 {
            return Err(invalid("sqlite.max_readers", "must be at least 1"));
        }
        if self.sqlite.key_run_keys == 0 {
            return Err(invalid("sqlite.key_run_keys", "must be at least 1"));
        }
        for (key, value) in [
            ("metrics.max_series_per_name", self.metrics.max_series_per_name),
            ("metrics.max_names_per_project", self.metrics.max_names_per_project),
            ("metrics.max_series", self.metrics.max_series),
            ("metrics.max_cumulative_series", self.metrics.max_cumulative_series),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.ingest.max_spans_per_trace == 0 {
            return Err(invalid("ingest.max_spans_per_trace", "must be at least 1"));
        }
        if self.ingest.max_receiving_bytes < self.ingest.max_body_bytes
            || self.ingest.max_receiving_bytes > u32::MAX as usize
        {
            return Err(invalid(
                "ingest.max_receiving_bytes",
                "must be at least ingest.max_body_bytes and at most 4 GiB",
            ));
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        if self.ingest.max_group_records == 0
            || self.ingest.max_queued_records == 0
            || self.ingest.max_concurrent_requests == 0
        {
            return Err(invalid(
                "ingest",
                "max_group_records, max_queued_records and max_concurrent_requests must be positive",
            ));
        }
        parse_duration(&self.ingest.rollup_flush_interval).map_err(|message| {
            ConfigError::Value { key: "ingest.rollup_flush_interval".into(), message }
        })?;
        let r = &self.retention;
        for (key, value) in [
            ("retention.raw", &r.raw),
            ("retention.minute", &r.minute),
            ("retention.hour", &r.hour),
            ("retention.day", &r.day),
        ] {
            retention_ms(key, value)?;
        }
        match parse_duration(&r.check_interval) {
            Ok(ms) if ms >= 1000 => {}
            Ok(_) => return Err(invalid("retention.check_interval", "must be at least 1s")),
            Err(message) => {
                return Err(ConfigError::Value { key: "retention.check_interval".into(), message });
            }
        }
        self.budgets.settings()?;
        self.query.limits()?;
        self.server.validate()?;
        self.privacy.compile()?;
        self.tls.validate()?;
        crate::pricing::PriceTable::new(&self.prices)
            .map_err(|e| ConfigError::Value { key: "prices".into(), message: e.to_string() })?;
        Ok(())
    }
}

/// Reads an environment value as a TOML scalar when it is one.
fn scalar(raw: &str) -> toml::Value {
    if let Ok(n) = raw.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    if let Ok(x) = raw.parse::<f64>()
        && raw.contains('.')
    {
        return toml::Value::Float(x);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("path has at least one segment");
    let mut current = table;
    for part in parents {
        let entry =
            current.entry(part.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
        current = entry.as_table_mut().ok_or_else(|| format!("{part} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tally.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n[ingest]\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        let env = env(&[
            ("TALLY_DATA_DIR", "/from/env"),
            ("TALLY_INGEST__MAX_QUEUED_RECORDS", "77"),
            ("OTHER", "x"),
        ]);
        let overrides =
            Overrides { http: Some("127.0.0.1:9100".parse().unwrap()), ..Default::default() };
        let config = Config::load(Some(&file), &env, &overrides).unwrap();
        assert_eq!(config.http.port(), 9100);
        assert_eq!(config.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.ingest.max_body_bytes, 2048);
        assert_eq!(config.ingest.max_queued_records, 77);
        assert_eq!(config.retention.raw, "30d");
    }

    #[test]
    fn config_text_loads_like_a_file_and_errors_name_it() {
        let env = env(&[("TALLY_INGEST__MAX_QUEUED_RECORDS", "77")]);
        let text = "[ingest]\nmax_body_bytes = 2048\n";
        let config =
            Config::from_toml_str("inline.toml", text, &env, &Overrides::default()).unwrap();
        assert_eq!(config.ingest.max_body_bytes, 2048);
        assert_eq!(config.ingest.max_queued_records, 77);
        let err = Config::from_toml_str("inline.toml", "http = ", &env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config file inline.toml:"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::load(None, &env(&[("TALLY_INGEST__NOPE", "1")]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err =
            Config::load(None, &env(&[("TALLY_RETENTION__RAW", "soon")]), &Overrides::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("retention.raw"), "{err}");
    }

    #[test]
    fn server_limits_come_from_the_environment() {
        let env = env(&[
            ("TALLY_SERVER__HEADER_READ_TIMEOUT", "5s"),
            ("TALLY_SERVER__GRPC_MAX_CONNECTIONS", "64"),
        ]);
        let config = Config::load(None, &env, &Overrides::default()).unwrap();
        let http = config.server.http_limits().unwrap();
        assert_eq!(http.header_read_timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(config.server.grpc_limits().unwrap().max_connections, 64);
        let err = Config::load(
            None,
            &[("TALLY_SERVER__BODY_READ_TIMEOUT".to_owned(), "0s".to_owned())].into(),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.body_read_timeout"), "{err}");
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tally.example.toml");
        Config::load(Some(&path), &HashMap::new(), &Overrides::default()).unwrap();
    }

    #[test]
    fn example_budget_block_is_a_valid_budget() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tally.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != "# [[budgets.define]]")
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start().to_owned() + "\n")
            .collect();
        assert!(block.contains("limit"), "{block}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("budget.toml");
        std::fs::write(&file, &block).unwrap();
        let config = Config::load(Some(&file), &HashMap::new(), &Overrides::default()).unwrap();
        let spec = config.budgets.define[0].clone();
        let f = crate::normalize::KeyFingerprinter::new(b"s");
        let context = crate::budgets::rule::RuleContext {
            default_timezone: chrono_tz::Tz::UTC,
            fingerprinter: &f,
            allow_private_targets: false,
            now_ms: 0,
        };
        let budget =
            crate::budgets::Budget::from_spec(spec, crate::budgets::Origin::Config, &context)
                .unwrap();
        assert_eq!(budget.scope.tags["team"], "search");
    }
}
