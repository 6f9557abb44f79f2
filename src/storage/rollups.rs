//! The rollup role: the series registry as stored, flushed rollup cells,
//! and the watermark of the calls already folded into them.

use std::sync::Arc;

use async_trait::async_trait;

use super::StorageError;
use crate::aggregate::series::FlatSeries;
use crate::aggregate::{Cell, CellKey, SeriesKey, Tier};

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

#[async_trait]
pub trait RollupStore: Send + Sync {
    /// Every rollup series, flattened as the registry keeps them.
    async fn load_series(&self) -> Result<Vec<(i64, FlatSeries)>, StorageError>;
    /// Deletes rollup series the registry let go (no data of theirs is
    /// left), so that start-up does not load them again.
    async fn forget_series(&self, ids: Vec<i64>) -> Result<(), StorageError>;
    /// Sequence number of the last call folded into stored rollups.
    async fn rollup_watermark(&self) -> Result<i64, StorageError>;
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
}
