//! The telemetry role: traces, spans, sessions and log records as the
//! query API lists, reads and scans them.

use std::collections::HashMap;

use async_trait::async_trait;

use super::StorageError;
use crate::aggregate::Sketch;
use crate::model::{LogRecord, SpanRecord};

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
#[derive(Debug, Clone, PartialEq)]
pub struct TraceTiming {
    pub duration_ns: i64,
    pub errors: u64,
    pub cost_usd: f64,
}

/// Receives spans or traces one at a time from a statistics scan.
pub trait TelemetryVisitor: std::any::Any + Send {
    fn span(&mut self, _timing: SpanTiming<'_>) {}
    fn trace(&mut self, _timing: TraceTiming) {}
    /// The grouping whose sums this visitor takes in place of the spans
    /// they sum (`summed`), if any. A store that keeps such sums hands them
    /// over where it can, and the other spans one by one.
    fn summed_by(&self) -> Option<SpanGroup> {
        None
    }
    /// The durations of the spans of group `key`, summed ahead by a store.
    fn summed(&mut self, _key: &str, _durations: &SpanDurations) {}
    /// Whether this visitor takes traces summed ahead (`summed_traces`) in
    /// place of the traces they sum. A store that keeps such sums hands
    /// them over where it can, and the other traces one by one.
    fn takes_trace_sums(&self) -> bool {
        false
    }
    /// Traces summed ahead by a store.
    fn summed_traces(&mut self, _sums: &TraceSums) {}
}

/// How spans are summed ahead: by kind, or by model (spans without one
/// are in no group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanGroup {
    Kind,
    Model,
}

/// Span durations (ms; the sketch keeps their exact count and sum), and
/// how many of the spans failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanDurations {
    pub sketch: Sketch,
    pub errors: u64,
}

impl SpanDurations {
    pub fn add(&mut self, duration_ns: i64, error: bool) {
        let ms = duration_ns.max(0) as f64 / 1e6;
        self.sketch.add(ms);
        self.errors += u64::from(error);
    }

    /// Takes back one duration added before; false (nothing changed) when
    /// the sketch holds none like it.
    pub fn remove(&mut self, duration_ns: i64, error: bool) -> bool {
        let ms = duration_ns.max(0) as f64 / 1e6;
        let removed = self.errors >= u64::from(error) && self.sketch.remove(ms);
        self.errors -= u64::from(error && removed);
        removed
    }

    pub fn merge(&mut self, other: &SpanDurations) {
        self.sketch.merge(&other.sketch);
        self.errors += other.errors;
    }
}

/// Traces summed: their durations (the errors counting traces with an
/// error span) and their cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSums {
    pub durations: SpanDurations,
    pub cost_usd: f64,
}

impl TraceSums {
    pub fn add(&mut self, timing: &TraceTiming) {
        self.durations.add(timing.duration_ns, timing.errors > 0);
        self.cost_usd += timing.cost_usd;
    }

    /// Takes back a trace added before (`SpanDurations::remove`).
    pub fn remove(&mut self, timing: &TraceTiming) -> bool {
        let removed = self.durations.remove(timing.duration_ns, timing.errors > 0);
        if removed {
            self.cost_usd -= timing.cost_usd;
        }
        removed
    }

    pub fn merge(&mut self, other: &TraceSums) {
        self.durations.merge(&other.durations);
        self.cost_usd += other.cost_usd;
    }
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

#[async_trait]
pub trait TelemetryStore: Send + Sync {
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
    async fn list_sessions(
        &self,
        project: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StorageError>;
    /// How many spans of `scope` there are of each kind. By default the
    /// spans are read one by one (`scan_spans`); a store that keeps counts
    /// answers from them.
    async fn count_span_kinds(
        &self,
        scope: TelemetryScope,
    ) -> Result<HashMap<String, u64>, StorageError> {
        let counted = self.scan_spans(scope, Box::new(KindCounts::default())).await?;
        let counted: Box<dyn std::any::Any> = counted;
        Ok(counted.downcast::<KindCounts>().expect("the store hands back our visitor").0)
    }
}

/// Counts spans by kind, as `count_span_kinds` reads them.
#[derive(Default)]
pub struct KindCounts(pub HashMap<String, u64>);

impl TelemetryVisitor for KindCounts {
    fn span(&mut self, timing: SpanTiming<'_>) {
        match self.0.get_mut(timing.kind) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(timing.kind.to_owned(), 1);
            }
        }
    }
}
