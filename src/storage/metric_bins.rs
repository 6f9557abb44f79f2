//! The metric role: metric series, the log of metric commits and the
//! flushed metric bins.

use std::sync::Arc;

use async_trait::async_trait;

use super::StorageError;
use crate::aggregate::metric::{Bin, BinKey, MetricKey, MetricTier};

/// Receives stored metric bins one at a time; `counters` has an empty
/// sketch, `sketch` the stored bytes (`Sketch::merge_encoded` takes them).
pub trait MetricBinVisitor: std::any::Any + Send {
    fn visit(&mut self, key: BinKey, counters: Bin, sketch: &[u8]) -> Result<(), StorageError>;
}

#[async_trait]
pub trait MetricStore: Send + Sync {
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
    /// Which shipping the metric log waits for: with `Some(to)` (a node of
    /// a cluster, `to` as `LedgerStore::shipped` names it), logged commits
    /// are kept until shipped there as well as flushed; with `None`, until
    /// flushed. Forgets every other destination's shipping of them.
    async fn keep_metric_log_for(&self, to: Option<String>) -> Result<(), StorageError>;
    /// Merges open bins into the stored ones, records `watermark` and drops
    /// the logged commits up to it (and shipped, `keep_metric_log_for`), in
    /// one transaction.
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
}
