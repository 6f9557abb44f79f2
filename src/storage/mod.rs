//! The storage trait and the factory that picks a backend from a URL.
//!
//! Backends keep raw calls (the audit trail and the idempotency truth), the
//! series registry and flushed rollups. They never see HTTP or protocols.

pub mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::aggregate::metric::{Bin, BinKey, MetricKey, MetricTier};
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::series::FlatSeries;
use crate::aggregate::{Cell, CellKey, SeriesKey, Tier};
use crate::model::{LlmCall, LogRecord, SpanRecord};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported storage URL {0:?} (expected sqlite://PATH)")]
    UnsupportedUrl(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

/// A budget as stored: its checked definition as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBudget {
    pub id: String,
    pub project: String,
    pub name: String,
    /// `api` or `config`.
    pub origin: String,
    pub definition: String,
}

/// An alert to record, with one delivery per webhook URL.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub budget_id: String,
    pub threshold: f64,
    pub period_start: i64,
    pub crossed_ms: i64,
    /// The webhook body (JSON), signed once.
    pub body: String,
    pub signature: String,
    pub urls: Vec<String>,
}

/// A recorded alert and how its deliveries stand.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub budget_id: String,
    pub threshold: f64,
    pub period_start: i64,
    pub crossed_at: i64,
    /// The webhook body as sent.
    pub payload: serde_json::Value,
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRecord {
    pub url: String,
    /// `pending`, `delivered`, `failed` (given up after retries) or
    /// `refused` (the target may not be reached; never attempted).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub budget_id: Option<String>,
    /// Alerts of this project's budgets.
    pub project: Option<String>,
    /// Alerts with a delivery in this status.
    pub status: Option<String>,
    pub limit: usize,
}

/// A delivery whose next attempt is due.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub alert_id: i64,
    pub budget_id: String,
    pub period_start: i64,
    pub threshold: f64,
    pub url: String,
    pub body: String,
    pub signature: String,
    pub attempts: u32,
    /// When the alert was recorded: retries stop a while after it.
    pub crossed_ms: i64,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    Delivered {
        at_ms: i64,
    },
    Retry {
        next_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    /// The target may not be reached: final, and not counted as an attempt.
    Refused {
        error: String,
    },
}

/// What to append in one transaction: the calls, their series ids (parallel
/// to `calls`), the series the store does not have yet, and spans and log
/// records (a span already stored is skipped).
pub struct AppendBatch {
    /// The calls, a part per request in the order they were gathered.
    pub calls: Vec<Vec<LlmCall>>,
    pub series_ids: Vec<i64>,
    pub new_series: Vec<(i64, Arc<SeriesKey>)>,
    /// The spans, a part per request in the order they were gathered.
    pub spans: Vec<Vec<SpanRecord>>,
    pub logs: Vec<LogRecord>,
    /// The group's 10 s metric bins as logged (`aggregate::metric::
    /// encode_log`), if it has points, and the metric series they need that
    /// the store does not have yet.
    pub metric_log: Option<Vec<u8>>,
    pub new_metric_series: Vec<(i64, Arc<MetricKey>)>,
    /// The records as `Storage::encode` encoded them, a part per request in
    /// the order their records were gathered; empty when the caller did not
    /// encode (the store then encodes every record itself).
    pub encoded: Vec<EncodedPart>,
}

impl AppendBatch {
    pub fn call_count(&self) -> usize {
        self.calls.iter().map(Vec::len).sum()
    }

    pub fn span_count(&self) -> usize {
        self.spans.iter().map(Vec::len).sum()
    }

    /// Every call, in order, across the parts.
    pub fn flat_calls(&self) -> Vec<&LlmCall> {
        self.calls.iter().flatten().collect()
    }

    /// Every span, in order, across the parts.
    pub fn flat_spans(&self) -> Vec<&SpanRecord> {
        self.spans.iter().flatten().collect()
    }
}

/// Records encoded for the store by `Storage::encode`, in its own form.
pub type EncodedPart = Box<dyn std::any::Any + Send>;

/// The outcome of an append: per call, its sequence number, or None when its
/// id was already stored (a duplicate). The calls are handed back.
pub struct Appended {
    /// The calls and spans as they came, a part per request.
    pub calls: Vec<Vec<LlmCall>>,
    pub spans: Vec<Vec<SpanRecord>>,
    pub series_ids: Vec<i64>,
    pub seqs: Vec<Option<i64>>,
    /// The sequence number of the logged metric bins, if any.
    pub metric_seq: Option<i64>,
    /// New spans not kept: their trace already held its cap.
    pub spans_dropped: u64,
}

/// Which raw calls to list.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub project: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only calls of these series (None: all).
    pub series: Option<Vec<i64>>,
    pub session: Option<String>,
    /// Resume after this (time_ms, seq).
    pub after: Option<(i64, i64)>,
    pub limit: usize,
}

/// Which traces to list, newest first. Span conditions (service, kind,
/// model, attributes) must all hold for one span of the trace.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub project: String,
    /// Trace start in `[from_ns, to_ns)`.
    pub from_ns: i64,
    pub to_ns: i64,
    pub service: Option<String>,
    pub kind: Option<String>,
    pub model: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub errors_only: bool,
    pub user: Option<String>,
    pub session: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    /// Resume after this (start_ns, trace_id), going back in time.
    pub before: Option<(i64, String)>,
    pub limit: usize,
}

/// One trace's totals, as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_name: String,
    pub service: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub span_count: u64,
    pub error_count: u64,
    pub llm_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    pub user: Option<String>,
    pub session: Option<String>,
    /// Spans that arrived once the trace held `ingest.max_spans_per_trace`
    /// and were not kept (counted at each arrival).
    pub dropped_spans: u64,
}

/// How much of one trace a read may hold.
#[derive(Debug, Clone, Copy)]
pub struct TraceBounds {
    pub max_spans: usize,
    pub max_logs: usize,
}

/// One trace as read within its bounds.
#[derive(Debug)]
pub struct StoredTrace {
    /// The earliest spans by start, in order of start.
    pub spans: Vec<SpanRecord>,
    /// Stored spans beyond `max_spans`, not read into `spans`.
    pub spans_left_out: u64,
    /// The trace's row: totals over every stored span, and the spans it did
    /// not keep.
    pub summary: Option<TraceSummary>,
    pub logs: Vec<LogRecord>,
    /// More log records are linked than `max_logs`.
    pub logs_cut: bool,
}

/// Which spans or traces a statistics scan reads: those starting in
/// `[from_ns, to_ns)`, of one service (for traces, the root's) if given.
#[derive(Debug, Clone, Default)]
pub struct TelemetryScope {
    pub project: String,
    pub from_ns: i64,
    pub to_ns: i64,
    pub service: Option<String>,
}

/// One span's timing, as statistics read it.
pub struct SpanTiming<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub model: Option<&'a str>,
    pub duration_ns: i64,
    pub error: bool,
}

/// One trace's timing and cost, as statistics read them.
pub struct TraceTiming {
    pub duration_ns: i64,
    pub errors: u64,
    pub cost_usd: f64,
}

/// Receives spans or traces one at a time from a statistics scan.
pub trait TelemetryVisitor: std::any::Any + Send {
    fn span(&mut self, _timing: SpanTiming<'_>) {}
    fn trace(&mut self, _timing: TraceTiming) {}
}

/// Which log records to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub project: String,
    pub from_ns: i64,
    pub to_ns: i64,
    pub trace_id: Option<String>,
    /// Lowest severity number listed (OTLP: 9 INFO, 13 WARN, 17 ERROR).
    pub min_severity: i32,
    /// Only records whose body contains this text.
    pub contains: Option<String>,
    /// Resume after this (time_ns, seq).
    pub before: Option<(i64, i64)>,
    pub limit: usize,
}

/// One session's totals over its traces.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionSummary {
    pub session: String,
    pub traces: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub span_count: u64,
    pub error_count: u64,
    pub llm_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    pub user: Option<String>,
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

/// Receives stored rollup rows one at a time with their sketches still
/// encoded, so a reader can merge them (`Sketch::merge_encoded`) without
/// decoding each into an allocation of its own.
pub trait RollupVisitor: std::any::Any + Send {
    /// `counters` carries every field but the sketches, which are empty.
    fn visit(
        &mut self,
        key: CellKey,
        counters: Cell,
        latency: &[u8],
        ttft: &[u8],
    ) -> Result<(), StorageError>;
}

/// Receives stored metric bins one at a time; `counters` has an empty
/// sketch, `sketch` the stored bytes (`Sketch::merge_encoded` takes them).
pub trait MetricBinVisitor: std::any::Any + Send {
    fn visit(&mut self, key: BinKey, counters: Bin, sketch: &[u8]) -> Result<(), StorageError>;
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Every rollup series, flattened as the registry keeps them.
    async fn load_series(&self) -> Result<Vec<(i64, FlatSeries)>, StorageError>;
    /// Deletes rollup series the registry let go (no data of theirs is
    /// left), so that start-up does not load them again.
    async fn forget_series(&self, ids: Vec<i64>) -> Result<(), StorageError>;
    /// Sequence number of the last call folded into stored rollups.
    async fn rollup_watermark(&self) -> Result<i64, StorageError>;
    /// Calls with sequence numbers above `seq`, in order, at most `limit`.
    async fn calls_after(&self, seq: i64, limit: usize)
    -> Result<Vec<SequencedCall>, StorageError>;
    /// Encodes records the way `append` writes them. Request handlers call
    /// it, so that encoding runs on many threads and off the committer's. A
    /// store may take from the spans and logs what it has encoded and does
    /// not read again (their attribute maps, say), so that they are freed
    /// on the request's thread; `append` must then be given this part.
    /// `own_dimensions` (ascending indices into `calls`) are the calls whose
    /// series does not hold their dimensions (`series::OVERFLOW`): their
    /// records keep their own.
    fn encode(
        &self,
        _calls: &[LlmCall],
        _own_dimensions: &[usize],
        _spans: &mut [SpanRecord],
        _logs: &mut [LogRecord],
    ) -> EncodedPart {
        Box::new(())
    }
    /// Durably appends calls (one transaction), skipping ids already stored.
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StorageError>;
    /// Stores `new_series`, merges cells into stored rollups and records the
    /// watermark, atomically.
    async fn flush_rollups(
        &self,
        cells: Arc<Vec<(CellKey, Cell)>>,
        watermark: i64,
        new_series: Vec<(i64, Arc<SeriesKey>)>,
    ) -> Result<(), StorageError>;
    /// Stored rollup cells of `tier` with buckets in `[from, to)`.
    async fn read_rollups(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
    ) -> Result<Vec<(CellKey, Cell)>, StorageError>;
    /// Hands every stored rollup row of `tier` with a bucket in `[from, to)`
    /// and a series id in `[series.0, series.1)` to `visitor`, and gives the
    /// visitor back.
    async fn scan_rollups(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
        series: (i64, i64),
        visitor: Box<dyn RollupVisitor>,
    ) -> Result<Box<dyn RollupVisitor>, StorageError>;
    /// Raw calls, ordered by (time, seq).
    async fn list_calls(&self, filter: CallFilter) -> Result<Vec<SequencedCall>, StorageError>;
    /// Calls with time in `[from, to)` and seq above `after_seq` (for
    /// re-pricing), ordered by seq, at most `limit`.
    async fn calls_between(
        &self,
        from: i64,
        to: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<SequencedCall>, StorageError>;
    /// Stores the re-priced calls (by seq), deletes every rollup row with a
    /// bucket in `[from, to)` and writes `cells` instead (storing
    /// `new_series` first), in one transaction.
    async fn replace_window(
        &self,
        repriced: Vec<(i64, LlmCall)>,
        from: i64,
        to: i64,
        cells: Vec<(CellKey, Cell)>,
        new_series: Vec<(i64, Arc<SeriesKey>)>,
    ) -> Result<(), StorageError>;
    /// Deletes data older than the cutoffs; returns rows deleted.
    async fn apply_retention(&self, cutoffs: RetentionCutoffs) -> Result<u64, StorageError>;
    async fn stats(&self) -> Result<StoreStats, StorageError>;
    /// Every stored metric series.
    async fn load_metric_series(&self) -> Result<Vec<(i64, MetricKey)>, StorageError>;
    /// The last logged metric commit whose bins are in the stored bins.
    async fn metric_watermark(&self) -> Result<i64, StorageError>;
    /// Logged metric commits after `seq`, in order, at most `limit`.
    async fn metric_log_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StorageError>;
    /// Merges open bins into the stored ones, records `watermark` and drops
    /// the logged commits up to it, in one transaction.
    async fn flush_metric_bins(
        &self,
        bins: Arc<Vec<(BinKey, Bin)>>,
        watermark: i64,
    ) -> Result<(), StorageError>;
    /// Hands the stored bins of `tier` with buckets in `[from, to)` of
    /// `series` to `visitor`, sketches still encoded, and gives it back with
    /// the metric watermark of the state it read (one snapshot).
    async fn scan_metric_bins(
        &self,
        tier: MetricTier,
        from: i64,
        to: i64,
        series: Vec<i64>,
        visitor: Box<dyn MetricBinVisitor>,
    ) -> Result<(Box<dyn MetricBinVisitor>, i64), StorageError>;
    /// Trace summaries passing `filter`, newest first.
    async fn list_traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StorageError>;
    /// A trace's spans (the earliest `bounds.max_spans` by start) and the log
    /// records linked to it (the first `bounds.max_logs` by time).
    async fn trace(
        &self,
        project: &str,
        trace_id: &str,
        bounds: TraceBounds,
    ) -> Result<StoredTrace, StorageError>;
    /// Hands every span of `scope` to `visitor`, and gives it back.
    async fn scan_spans(
        &self,
        scope: TelemetryScope,
        visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError>;
    /// Hands every trace of `scope` to `visitor`, and gives it back.
    async fn scan_traces(
        &self,
        scope: TelemetryScope,
        visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError>;
    /// Log records passing `filter` with their sequence numbers (for paging).
    async fn list_logs(&self, filter: LogFilter) -> Result<Vec<(i64, LogRecord)>, StorageError>;
    /// Sessions with a trace starting in `[from_ns, to_ns)`, most recently
    /// active first.
    async fn load_budgets(&self) -> Result<Vec<StoredBudget>, StorageError>;
    /// Inserts or replaces the budget with this id.
    async fn save_budget(&self, budget: StoredBudget) -> Result<(), StorageError>;
    /// Deletes a budget (its alerts stay); false when there was none.
    async fn delete_budget(&self, id: &str) -> Result<bool, StorageError>;
    /// Records an alert and its deliveries; None when the same budget,
    /// period and threshold is already recorded.
    async fn insert_alert(&self, alert: NewAlert) -> Result<Option<i64>, StorageError>;
    /// (threshold, period start, crossed at) of a budget's alerts crossed at
    /// or after `since_ms`.
    async fn alerts_since(
        &self,
        budget_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(f64, i64, i64)>, StorageError>;
    /// Newest first.
    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<AlertRecord>, StorageError>;
    /// Pending deliveries due at `now_ms`, oldest first.
    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StorageError>;
    /// When the next pending delivery is due, if any.
    async fn next_delivery_ms(&self) -> Result<Option<i64>, StorageError>;
    async fn update_delivery(&self, id: i64, update: DeliveryUpdate) -> Result<(), StorageError>;
    async fn list_sessions(
        &self,
        project: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StorageError>;
}

/// Opens the backend named by `url` (`sqlite://PATH`; a relative PATH is
/// under `data_dir`). Empty means the default: SQLite in the data dir.
pub fn open(
    url: &str,
    data_dir: &Path,
    options: &sqlite::SqliteOptions,
) -> Result<Arc<dyn Storage>, StorageError> {
    if url.is_empty() {
        let path = data_dir.join("tally.db");
        return Ok(Arc::new(sqlite::SqliteStorage::open(&path, options)?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = Path::new(path);
        let path = if path.is_absolute() { path.to_path_buf() } else { data_dir.join(path) };
        return Ok(Arc::new(sqlite::SqliteStorage::open(&path, options)?));
    }
    Err(StorageError::UnsupportedUrl(url.to_owned()))
}
