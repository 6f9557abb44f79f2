//! The rollup engine: open buckets in memory, flushed to storage in batches.
//!
//! Calls are applied here right after they are durable and before they are
//! acknowledged, so they are queryable the moment the client hears "ok". A
//! flush writes the open buckets and the sequence number of the last call they
//! contain (the watermark) in one store transaction; after a crash the calls
//! past the watermark are applied again, so no count is lost or doubled.

use std::collections::{HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::RwLock;

use super::series::{
    Assigned, FlatSeries, Part, SeriesKey, SeriesLimits, SeriesRegistry, SeriesView,
};
use super::sketch::Sketch;
use super::tier::Tier;
use crate::model::LlmCall;

/// Where a cell lives: tier, bucket start (unix ms) and series id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellKey {
    pub tier: Tier,
    pub bucket: i64,
    pub series: i64,
}

/// Usage of one series in one bucket. Every field merges by addition (the
/// sketches by their own merge), so cells combine in any order. Counters
/// saturate rather than wrap (reports cap each count, so this is a guard).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cell {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub errors: u64,
    pub estimated: u64,
    pub unpriced: u64,
    pub cost_usd: f64,
    pub reported_cost_usd: f64,
    #[serde(skip)]
    pub latency_ms: Sketch,
    #[serde(skip)]
    pub ttft_ms: Sketch,
}

impl Cell {
    pub fn add_call(&mut self, call: &LlmCall) {
        self.requests = self.requests.saturating_add(call.requests);
        self.input_tokens = self.input_tokens.saturating_add(call.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(call.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(call.total_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(call.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(call.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(call.reasoning_tokens);
        if call.is_error() {
            self.errors = self.errors.saturating_add(call.requests);
        }
        if call.estimated {
            self.estimated = self.estimated.saturating_add(call.requests);
        }
        if call.is_unpriced() {
            self.unpriced = self.unpriced.saturating_add(call.requests);
        }
        self.cost_usd = super::saturating_add(self.cost_usd, call.cost_usd);
        self.reported_cost_usd =
            super::saturating_add(self.reported_cost_usd, call.reported_cost_usd.unwrap_or(0.0));
        if let Some(ms) = call.duration_ms {
            self.latency_ms.add(ms);
        }
        if let Some(ms) = call.ttft_ms {
            self.ttft_ms.add(ms);
        }
    }

    pub fn merge(&mut self, other: &Cell) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(other.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.errors = self.errors.saturating_add(other.errors);
        self.estimated = self.estimated.saturating_add(other.estimated);
        self.unpriced = self.unpriced.saturating_add(other.unpriced);
        self.cost_usd = super::saturating_add(self.cost_usd, other.cost_usd);
        self.reported_cost_usd =
            super::saturating_add(self.reported_cost_usd, other.reported_cost_usd);
        self.latency_ms.merge(&other.latency_ms);
        self.ttft_ms.merge(&other.ttft_ms);
    }
}

/// A call as stored: its sequence number (insertion order, the watermark's
/// unit) and its series id.
#[derive(Debug, Clone)]
pub struct SequencedCall {
    pub seq: i64,
    pub series: i64,
    pub call: LlmCall,
}

/// Open minute cells, by minute and then series, so that a query reads
/// only the minutes of its window, one at a time.
#[derive(Default)]
struct OpenCells {
    minutes: std::collections::BTreeMap<i64, FxHashMap<i64, Cell>>,
    len: usize,
}

impl OpenCells {
    fn entry(&mut self, minute: i64, series: i64) -> &mut Cell {
        let cells = self.minutes.entry(minute).or_default();
        cells.entry(series).or_insert_with(|| {
            self.len += 1;
            Cell::default()
        })
    }

    fn drain(&mut self) -> Vec<(CellKey, Cell)> {
        self.len = 0;
        let minutes = std::mem::take(&mut self.minutes);
        let tier = Tier::Minute;
        let cells = minutes.into_iter().flat_map(|(bucket, cells)| {
            cells.into_iter().map(move |(series, cell)| (CellKey { tier, bucket, series }, cell))
        });
        cells.collect()
    }
}

struct EngineState {
    series: SeriesRegistry,
    /// Bumped for a (tier, bucket) each time a flush changes its stored rows,
    /// so query caches know what went stale.
    bucket_versions: FxHashMap<(Tier, i64), u64>,
    /// Bumped when stored rollups change wholesale (re-pricing, retention).
    epoch: u64,
    open: OpenCells,
    /// Highest sequence number applied to `open` (or flushed before it).
    applied_seq: i64,
}

/// Open buckets and the series registry, shared by the committer (writes)
/// and the query API (reads).
pub struct RollupEngine {
    state: Mutex<EngineState>,
    /// Read-held while a query combines stored rollups with open buckets,
    /// write-held while a flush moves buckets from memory to the store, so a
    /// query never sees a bucket twice or not at all.
    flush_gate: RwLock<()>,
}

impl RollupEngine {
    pub fn new(series: Vec<(i64, FlatSeries)>, watermark: i64) -> Self {
        Self {
            state: Mutex::new(EngineState {
                series: SeriesRegistry::from_stored(series),
                bucket_versions: FxHashMap::default(),
                epoch: 0,
                open: OpenCells::default(),
                applied_seq: watermark,
            }),
            flush_gate: RwLock::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, EngineState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Each call's series id, registering new series (pending until the
    /// store confirms them).
    pub fn assign(&self, calls: &[LlmCall]) -> Assigned {
        self.lock().series.assign(calls)
    }

    /// Caps on the series the registry keeps (`SeriesLimits`).
    pub fn set_series_limits(&self, limits: SeriesLimits) {
        self.lock().series.set_limits(limits);
    }

    /// Calls counted under the overflow value, by `series::OVERFLOW_KINDS`.
    pub fn overflowed(&self) -> [u64; super::series::OVERFLOW_KINDS.len()] {
        self.lock().series.overflowed()
    }

    /// Series the store may not have yet: every append writes them.
    pub fn pending_series(&self) -> Vec<(i64, Arc<SeriesKey>)> {
        self.lock().series.pending()
    }

    /// Lets go of the series whose newest call is from before `before_ms`
    /// (`SeriesRegistry::evict`); returns their ids.
    /// The scan for projections still fed goes a chunk at a time, letting
    /// ingest at the registry in between: series made meanwhile have higher
    /// ids and are read at the end, and existing series never change their
    /// projections.
    pub fn evict_series(&self, before_ms: i64) -> Vec<i64> {
        const CHUNK: i64 = 16_384;
        let (mut evicted, candidates) = self.lock().series.evict_ordinary(before_ms);
        if candidates.is_empty() {
            return evicted;
        }
        let mut live = rustc_hash::FxHashSet::default();
        let end = self.lock().series.ordinary_end();
        let mut from = 1;
        while from < end {
            let to = (from + CHUNK).min(end);
            self.lock().series.live_projections(from..to, &mut live);
            from = to;
        }
        let mut state = self.lock();
        let now_end = state.series.ordinary_end();
        state.series.live_projections(end..now_end, &mut live);
        evicted.extend(state.series.remove_orphans(&candidates, &live));
        evicted
    }

    pub fn confirm_series(&self, stored: &[i64]) {
        self.lock().series.confirm(stored);
    }

    /// Adds durable calls to the open minute buckets. Open hour and day
    /// buckets are not kept apart: they are the open minutes merged, at flush
    /// and query time, which makes each call a third of the work.
    pub fn apply<'a>(&self, calls: impl IntoIterator<Item = (i64, i64, &'a LlmCall)>) {
        let mut state = self.lock();
        let mut max_seq = state.applied_seq;
        for (seq, series, call) in calls {
            state.open.entry(Tier::Minute.bucket(call.time_ms), series).add_call(call);
            max_seq = max_seq.max(seq);
        }
        state.applied_seq = max_seq;
    }

    pub fn open_cell_count(&self) -> usize {
        self.lock().open.len
    }

    /// Starts a flush: waits out running queries, then hands over the open
    /// cells and the watermark they reach. Finish with `end_flush`.
    pub async fn begin_flush(&self) -> Flush<'_> {
        let gate = self.flush_gate.write().await;
        let mut state = self.lock();
        let mut minutes: Vec<(CellKey, Cell)> = state.open.drain();
        let watermark = state.applied_seq;
        add_projections(&mut state.series, &mut minutes);
        let new_series = state.series.pending();
        drop(state);
        let mut coarser: FxHashMap<CellKey, Cell> = FxHashMap::default();
        for (key, cell) in &minutes {
            for tier in [Tier::Hour, Tier::Day] {
                let coarse = CellKey { tier, bucket: tier.bucket(key.bucket), series: key.series };
                coarser.entry(coarse).or_default().merge(cell);
            }
        }
        let mut cells = minutes;
        cells.extend(coarser);
        let mut state = self.lock();
        for (key, _) in &cells {
            *state.bucket_versions.entry((key.tier, key.bucket)).or_default() += 1;
        }
        drop(state);
        Flush { engine: self, _gate: gate, cells, watermark, new_series }
    }

    /// Adds the projection cells of `cells` (any tiers) and returns the
    /// series the store does not have yet, to be written with them.
    pub fn with_projections(&self, cells: &mut Vec<(CellKey, Cell)>) -> Vec<(i64, Arc<SeriesKey>)> {
        let mut state = self.lock();
        add_projections(&mut state.series, cells);
        state.series.pending()
    }

    /// Holds off queries (and flushes) for a job that rewrites stored
    /// rollups; call right after a flush so no cell is open.
    pub async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        let gate = self.flush_gate.write().await;
        self.invalidate_all();
        gate
    }

    /// Stored rollups are about to change wholesale (re-pricing, retention).
    pub fn invalidate_all(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.bucket_versions.clear();
    }

    /// The version of a bucket's stored rows: (epoch, bucket version). Equal
    /// versions mean equal stored rows.
    pub fn bucket_version(&self, tier: Tier, bucket: i64) -> (u64, u64) {
        let state = self.lock();
        (state.epoch, state.bucket_versions.get(&(tier, bucket)).copied().unwrap_or(0))
    }

    /// Holds off flushes while a query reads storage and open cells.
    pub async fn read_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.flush_gate.read().await
    }

    /// Open cells of `tier` with buckets in `[from, to)` whose series, or one
    /// of whose projections, is in `keep` (for hour and day, one per open
    /// minute: callers merge); call while holding `read_gate`. Reads a
    /// minute at a time, letting ingest (which takes the same lock) in
    /// between.
    pub fn open_cells(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
        keep: &HashSet<i64>,
    ) -> Vec<(CellKey, Cell)> {
        let in_window = |minute: i64| (from..to).contains(&tier.bucket(minute));
        let minutes: Vec<i64> = {
            let state = self.lock();
            // A window's minutes start at its first bucket's first minute.
            state.open.minutes.range(from..).map(|(m, _)| *m).filter(|m| in_window(*m)).collect()
        };
        let mut out = Vec::new();
        for minute in minutes {
            let mut state = self.lock();
            let state = &mut *state;
            let Some(cells) = state.open.minutes.get(&minute) else { continue };
            let bucket = tier.bucket(minute);
            for (&series, cell) in cells {
                let series = if keep.contains(&series) {
                    series
                } else {
                    match state.series.projections_of(series).iter().find(|p| keep.contains(p)) {
                        Some(projection) => *projection,
                        None => continue,
                    }
                };
                out.push((CellKey { tier, bucket, series }, cell.clone()));
            }
        }
        out
    }

    /// Series (not projections) whose key passes `keep`, with their keys.
    pub fn select_series(
        &self,
        keep: impl Fn(&SeriesView<'_>) -> bool,
    ) -> HashMap<i64, Arc<SeriesKey>> {
        self.select(Part::Ordinary, keep)
    }

    /// Projection series by `dimension` whose key passes `keep`.
    pub fn select_projections(
        &self,
        dimension: &str,
        keep: impl Fn(&SeriesView<'_>) -> bool,
    ) -> HashMap<i64, Arc<SeriesKey>> {
        self.select(Part::Projections(dimension), keep)
    }

    /// The series of `part` passing `keep`, read a chunk at a time so that
    /// ingest (which takes the same lock) never waits for a whole scan.
    fn select(
        &self,
        part: Part<'_>,
        keep: impl Fn(&SeriesView<'_>) -> bool,
    ) -> HashMap<i64, Arc<SeriesKey>> {
        const CHUNK: usize = 16_384;
        let mut selected = HashMap::new();
        let mut from = Some(0);
        while let Some(start) = from {
            let state = self.lock();
            from = state.series.scan(part, start, CHUNK, |id, view| {
                if keep(&view) {
                    selected.insert(id, Arc::new(view.to_key()));
                }
            });
        }
        selected
    }

    /// The keys of the series `ids` (unknown ids are left out).
    pub fn series_keys(&self, ids: &[i64]) -> HashMap<i64, Arc<SeriesKey>> {
        let state = self.lock();
        ids.iter().filter_map(|id| Some((*id, Arc::new(state.series.get(*id)?)))).collect()
    }

    /// The id range of the projections by `dimension` (None: there are none).
    pub fn projection_range(&self, dimension: &str) -> Option<(i64, i64)> {
        self.lock().series.projection_range(dimension)
    }

    pub fn series_count(&self) -> usize {
        self.lock().series.len()
    }
}

/// Merges each cell into the projection series of its series, appending the
/// projection cells to `cells`.
fn add_projections(series: &mut SeriesRegistry, cells: &mut Vec<(CellKey, Cell)>) {
    let mut projected: FxHashMap<CellKey, Cell> = FxHashMap::default();
    for (key, cell) in cells.iter() {
        for &projection in series.projections_of(key.series).iter() {
            projected.entry(CellKey { series: projection, ..*key }).or_default().merge(cell);
        }
    }
    cells.extend(projected);
}

/// An in-progress flush; queries wait until it is dropped.
pub struct Flush<'a> {
    engine: &'a RollupEngine,
    _gate: tokio::sync::RwLockWriteGuard<'a, ()>,
    /// Minute, hour and day cells, projections included.
    pub cells: Vec<(CellKey, Cell)>,
    pub watermark: i64,
    /// Series (projections, mostly) to store with the cells.
    pub new_series: Vec<(i64, Arc<SeriesKey>)>,
}

impl Flush<'_> {
    /// The store did not take the cells: put them back so nothing is lost
    /// (the minutes of ordinary series; projections and hour and day cells
    /// are derived from them again).
    pub fn abort(self, cells: Vec<(CellKey, Cell)>) {
        let mut state = self.engine.lock();
        let state = &mut *state;
        for (key, cell) in cells.into_iter().filter(|(key, _)| key.tier == Tier::Minute) {
            if state.series.view(key.series).is_some_and(|s| !s.is_projection()) {
                state.open.entry(key.bucket, key.series).merge(&cell);
            }
        }
    }
}
