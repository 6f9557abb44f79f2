//! What the server keeps, by role, and the factory that picks a backend from
//! a URL. Each role is a trait of its own (`LedgerStore`, `RollupStore`,
//! `TelemetryStore`, `MetricStore`, `ControlStore`, `UpkeepStore`), so that
//! a role can live in a backend of its own; `Storage` is a store of every
//! role, as the embedded SQLite store is.
//!
//! Backends keep raw calls (the audit trail and the idempotency truth), the
//! series registry and flushed rollups. They never see HTTP or protocols.

pub mod clickhouse;
pub mod control;
pub mod ledger;
pub mod metric_bins;
pub mod rollups;
pub mod sqlite;
#[doc(hidden)]
pub mod suite;
pub mod telemetry;

pub use control::*;
pub use ledger::*;
pub use metric_bins::*;
pub use rollups::*;
pub use telemetry::*;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported storage URL {0:?} (expected sqlite://PATH)")]
    UnsupportedUrl(String),
    /// The backend failed (its own message, named by backend).
    #[error("{backend}: {message}")]
    Backend { backend: &'static str, message: String },
    #[error("storage I/O at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the database has schema version {found}, this Tally needs {needed}; it was made by \
         another development version: move it aside and start again"
    )]
    SchemaVersion { found: i64, needed: i64 },
    #[error("storage worker stopped")]
    WorkerGone,
    /// A scan given up because the query behind it passed its deadline or
    /// lost its client.
    #[error("scan stopped: the query passed its deadline or its client went away")]
    Stopped,
}

/// Row counts, for self-metrics and the CLI.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreStats {
    pub calls: u64,
    pub series: u64,
    pub rollup_rows: u64,
    pub spans: u64,
    pub logs: u64,
}

/// Oldest instant kept per kind of data (unix ms); None keeps everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionCutoffs {
    pub raw: Option<i64>,
    pub minute: Option<i64>,
    pub hour: Option<i64>,
    pub day: Option<i64>,
    /// Per metric tier (10 s, 1 min, 15 min, 1 h).
    pub metric: [Option<i64>; 4],
}

#[async_trait]
pub trait UpkeepStore: Send + Sync {
    /// Makes everything written durable in the store's main form (SQLite:
    /// the write-ahead log folded into the database and truncated); called
    /// at a clean stop, once nothing writes.
    async fn checkpoint(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Deletes data older than the cutoffs; returns rows deleted.
    async fn apply_retention(&self, cutoffs: RetentionCutoffs) -> Result<u64, StorageError>;
    async fn stats(&self) -> Result<StoreStats, StorageError>;
}

/// A store of every role (the embedded SQLite store is one).
pub trait Storage:
    LedgerStore + RollupStore + TelemetryStore + MetricStore + ControlStore + UpkeepStore
{
}

impl<T> Storage for T where
    T: LedgerStore + RollupStore + TelemetryStore + MetricStore + ControlStore + UpkeepStore
{
}

/// What opening a store needs, whichever backend its URL names.
pub struct OpenOptions<'a> {
    /// Empty or `sqlite://PATH` (a relative PATH is under `data_dir`).
    pub url: &'a str,
    pub data_dir: &'a Path,
    /// Spans a trace keeps; later ones are counted, not stored.
    pub max_spans_per_trace: usize,
    /// The embedded store's settings, used when it is the one opened.
    pub sqlite: &'a crate::config::SqliteConfig,
}

/// Opens the backend `options.url` names. Empty means the default: SQLite
/// in the data dir.
pub fn open(options: &OpenOptions<'_>) -> Result<Arc<dyn Storage>, StorageError> {
    let sqlite = sqlite::SqliteOptions {
        synchronous: options.sqlite.synchronous,
        cache_mib: options.sqlite.cache_mib,
        max_readers: options.sqlite.max_readers,
        max_spans_per_trace: options.max_spans_per_trace,
        key_run_keys: options.sqlite.key_run_keys,
    };
    let (url, data_dir) = (options.url, options.data_dir);
    if url.is_empty() {
        let path = data_dir.join("tally.db");
        return Ok(Arc::new(sqlite::SqliteStorage::open(&path, &sqlite)?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = Path::new(path);
        let path = if path.is_absolute() { path.to_path_buf() } else { data_dir.join(path) };
        return Ok(Arc::new(sqlite::SqliteStorage::open(&path, &sqlite)?));
    }
    Err(StorageError::UnsupportedUrl(url.to_owned()))
}
