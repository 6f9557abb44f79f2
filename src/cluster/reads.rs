//! What a node of a cluster reads from ClickHouse rather than its own
//! store, so that every node answers alike: usage rolled up from every
//! node's shipped calls, raw calls, metric bins, and traces, sessions and
//! log records (the telemetry role). What a node committed shows once it is shipped
//! (within `cluster.ship_interval`, while ClickHouse is reachable).

use std::collections::BTreeMap;

use crate::aggregate::metric::MetricTier;
use crate::aggregate::{Cell, SeriesKey, Tier};
use crate::model::{LlmCall, LogRecord};
use crate::storage::RetentionCutoffs;
use crate::storage::clickhouse::calls::{self, CallPage};
use crate::storage::clickhouse::{ClickHouse, ClickHouseUrl, metrics, retention, rollups};
use crate::storage::{
    LogFilter, SessionSummary, StorageError, StoredTrace, TelemetryScope, TelemetryStore,
    TelemetryVisitor, TraceBounds, TraceFilter, TraceSummary,
};

pub struct SharedReads {
    url: ClickHouseUrl,
    /// Made on first use, and again after a failed read.
    connection: tokio::sync::Mutex<Option<ClickHouse>>,
}

impl SharedReads {
    pub fn new(url: ClickHouseUrl) -> Self {
        Self { url, connection: tokio::sync::Mutex::new(None) }
    }

    async fn clickhouse(&self) -> Result<ClickHouse, StorageError> {
        let mut connection = self.connection.lock().await;
        if let Some(ch) = connection.as_ref() {
            return Ok(ch.clone());
        }
        let ch = ClickHouse::connect(&self.url).await?;
        *connection = Some(ch.clone());
        Ok(ch)
    }

    /// Runs `read` on the connection; a failed read drops the connection,
    /// so the next read connects afresh.
    async fn with<T, F>(&self, read: impl FnOnce(ClickHouse) -> F) -> Result<T, StorageError>
    where
        F: std::future::Future<Output = Result<T, StorageError>>,
    {
        let ch = self.clickhouse().await?;
        let result = read(ch).await;
        if result.is_err() {
            *self.connection.lock().await = None;
        }
        result
    }

    /// A page of raw calls, every node's, with the node and sequence
    /// number of each (the page's order after time).
    pub async fn calls(
        &self,
        page: &CallPage,
    ) -> Result<Vec<(String, i64, LlmCall)>, StorageError> {
        self.with(|ch| async move { calls::page(&ch, page).await }).await
    }

    /// Drops the partitions past retention (`clickhouse::retention`).
    pub async fn retention(&self, cutoffs: &RetentionCutoffs) -> Result<u64, StorageError> {
        self.with(|ch| async move { retention::apply(&ch, cutoffs).await }).await
    }

    /// Streams every node's bins of metric `name` of `project` in `tier`
    /// over `window` to `visit` (`clickhouse::metrics::scan`).
    pub async fn metric_bins(
        &self,
        key: (&str, &str),
        tier: MetricTier,
        window: (i64, i64),
        visit: impl FnMut(metrics::ReadBin<'_>) -> Result<(), StorageError> + Send,
    ) -> Result<(), StorageError> {
        self.with(|ch| async move { metrics::scan(&ch, key, tier, window, visit).await }).await
    }

    /// Metric names of `project` with their series counts, at most `limit`.
    pub async fn metric_names(
        &self,
        project: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        self.with(|ch| async move { metrics::names(&ch, project, limit).await }).await
    }

    /// The tags of metric `name` of `project`, at most `values` values each.
    pub async fn metric_tags(
        &self,
        key: (&str, &str),
        tags: usize,
        values: usize,
    ) -> Result<Vec<(String, Vec<String>)>, StorageError> {
        self.with(|ch| async move { metrics::tags(&ch, key, tags, values).await }).await
    }

    /// Every node's rolled-up cells of `project` over `pieces` (tier, from,
    /// to) passing `filters`, by bucket (unless `per_bucket` is false: by
    /// piece) and the values of `dims` (`rollups::grouped`).
    pub async fn grouped(
        &self,
        project: &str,
        pieces: &[(Tier, i64, i64)],
        grouping: (&[String], bool),
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<(i64, Vec<Option<String>>, Cell)>, StorageError> {
        // The pieces at once: ClickHouse reads each on its own threads.
        self.with(|ch| async move {
            let ch = &ch;
            let reads =
                pieces.iter().map(|&piece| rollups::grouped(ch, project, piece, grouping, filters));
            let pieces = futures_util::future::try_join_all(reads).await?;
            Ok(pieces.into_iter().flatten().collect())
        })
        .await
    }

    /// Every node's rolled-up cells of `project` over `pieces` (tier, from,
    /// to), by bucket and series.
    pub async fn cells(
        &self,
        project: &str,
        pieces: &[(Tier, i64, i64)],
    ) -> Result<Vec<(i64, SeriesKey, Cell)>, StorageError> {
        self.with(|ch| async move {
            let mut out = Vec::new();
            for &(tier, from, to) in pieces {
                out.extend(rollups::read(&ch, project, tier, from, to).await?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait::async_trait]
impl TelemetryStore for SharedReads {
    async fn list_traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StorageError> {
        self.with(|ch| async move { ch.list_traces(filter).await }).await
    }

    async fn trace(
        &self,
        project: &str,
        trace_id: &str,
        bounds: TraceBounds,
    ) -> Result<StoredTrace, StorageError> {
        self.with(|ch| async move { ch.trace(project, trace_id, bounds).await }).await
    }

    async fn scan_spans(
        &self,
        scope: TelemetryScope,
        visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        self.with(|ch| async move { ch.scan_spans(scope, visitor).await }).await
    }

    async fn scan_traces(
        &self,
        scope: TelemetryScope,
        visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        self.with(|ch| async move { ch.scan_traces(scope, visitor).await }).await
    }

    async fn list_logs(&self, filter: LogFilter) -> Result<Vec<(i64, LogRecord)>, StorageError> {
        self.with(|ch| async move { ch.list_logs(filter).await }).await
    }

    async fn list_sessions(
        &self,
        project: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StorageError> {
        self.with(|ch| async move { ch.list_sessions(project, from_ns, to_ns, limit).await }).await
    }
}
