//! The ledger role: raw calls, appended durably in commits (with the
//! spans, log records and metric log of the same commit) and deduplicated
//! by id, listed by time or by sequence, and re-priced.

use std::sync::Arc;

use async_trait::async_trait;

use super::StorageError;
use crate::aggregate::metric::MetricKey;
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::{Cell, CellKey, SeriesKey};
use crate::model::{LlmCall, LogRecord, SpanRecord};

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
    /// Calls (by index across the parts) another node of the cluster has
    /// counted: skipped like calls already stored. Empty: none.
    pub refused: Vec<bool>,
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

/// A key by which calls are deduplicated: a call's id, or the span it was
/// made from (trace id, span id); both under the call's project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKey {
    Id(String),
    Span { trace: String, span: String },
}

impl CallKey {
    /// Every key of `call`: its id, then its span, when it has them.
    pub fn of(call: &LlmCall) -> Vec<CallKey> {
        let mut keys = Vec::new();
        if let Some(id) = &call.id {
            keys.push(CallKey::Id(id.clone()));
        }
        if let (Some(trace), Some(span)) = (&call.trace_id, &call.span_id) {
            keys.push(CallKey::Span { trace: trace.clone(), span: span.clone() });
        }
        keys
    }

    /// The key as text, told apart by its first letter (`i` or `s`).
    pub fn text(&self) -> String {
        match self {
            CallKey::Id(id) => format!("i{id}"),
            CallKey::Span { trace, span } => format!("s{trace}/{span}"),
        }
    }

    /// The key `text` gives back.
    pub fn parse(text: &str) -> Option<CallKey> {
        match text.split_at_checked(1)? {
            ("i", id) => Some(CallKey::Id(id.to_owned())),
            ("s", rest) => {
                let (trace, span) = rest.split_once('/')?;
                Some(CallKey::Span { trace: trace.to_owned(), span: span.to_owned() })
            }
            _ => None,
        }
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

/// The last record of each kind shipped: calls, spans and log records by
/// their sequence numbers, metric commits by their logged sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipWatermarks {
    pub calls: i64,
    pub spans: i64,
    pub logs: i64,
    pub metric_commits: i64,
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// The sequence number of the last record of a kind shipped to a
    /// shared store the node copies its records into (`to` names both, e.g.
    /// `calls http://ch:8123/tally`), 0 before any.
    async fn shipped(&self, to: &str) -> Result<i64, StorageError>;
    /// Records of each kind committed after the given sequence numbers
    /// (as `shipped` records them; metric commits count one each): what
    /// waits to be shipped.
    async fn committed_after(&self, after: ShipWatermarks) -> Result<u64, StorageError>;
    /// Records that the records up to `seq` reached `to`.
    async fn mark_shipped(&self, to: &str, seq: i64) -> Result<(), StorageError>;
    /// Spans committed after `seq` (the chunk sequence of the append that
    /// stored them), in order, whole chunks up to about `limit` spans; each
    /// with its chunk's sequence number.
    async fn spans_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, SpanRecord)>, StorageError>;
    /// Log records committed after `seq`, in order, at most `limit`.
    async fn logs_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogRecord)>, StorageError>;
    /// Whether a call with each key ((project, key)) is stored.
    async fn holds(&self, keys: Vec<(String, CallKey)>) -> Result<Vec<bool>, StorageError>;
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
}
