//! Metric points into bins at 10 s, 1 min, 15 min and 1 h: per series (name
//! and tag set) count, sum, min, max, last and a quantile sketch, all
//! mergeable, so a late point merges into its bin and coarse bins equal the
//! fine ones merged. The series registry caps series per metric name and
//! sends points beyond the cap to an overflow series. Bins not yet flushed
//! to the store are kept open here; each commit logs its 10 s bins
//! (`encode_log`), from which the open bins are rebuilt after a crash.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::sketch::Sketch;
pub use crate::model::MetricKey;
use crate::model::{MetricPoint, Tags};

/// The tag that marks a name's overflow series.
pub const OVERFLOW_TAG: &str = "__overflow__";

/// Bin widths of the metric tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum MetricTier {
    S10,
    M1,
    M15,
    H1,
}

impl MetricTier {
    pub const ALL: [MetricTier; 4] =
        [MetricTier::S10, MetricTier::M1, MetricTier::M15, MetricTier::H1];

    pub fn width_ms(self) -> i64 {
        match self {
            MetricTier::S10 => 10_000,
            MetricTier::M1 => 60_000,
            MetricTier::M15 => 900_000,
            MetricTier::H1 => 3_600_000,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            MetricTier::S10 => 0,
            MetricTier::M1 => 1,
            MetricTier::M15 => 2,
            MetricTier::H1 => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<MetricTier> {
        MetricTier::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            MetricTier::S10 => "10s",
            MetricTier::M1 => "1m",
            MetricTier::M15 => "15m",
            MetricTier::H1 => "1h",
        }
    }

    pub fn bucket(self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.width_ms()) * self.width_ms()
    }

    /// The coarsest tier whose bins divide `step_ms`.
    pub fn for_step(step_ms: i64) -> Option<MetricTier> {
        MetricTier::ALL
            .into_iter()
            .rev()
            .find(|t| step_ms >= t.width_ms() && step_ms % t.width_ms() == 0)
    }
}

/// One series' points in one bin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bin {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value of the latest point (by its timestamp), and that timestamp.
    pub last: f64,
    pub last_ms: i64,
    /// Values, to 1 % relative error.
    pub sketch: Sketch,
}

impl Bin {
    pub fn add(&mut self, value: f64, time_ms: i64) {
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        if self.count == 0 || time_ms >= self.last_ms {
            (self.last, self.last_ms) = (value, time_ms);
        }
        self.count += 1;
        self.sum = super::saturating_add(self.sum, value);
        self.sketch.add(value);
    }

    /// A bin of pre-aggregated observations: count and sum exact, min and
    /// max as sent (else the outermost buckets'), the sketch from the
    /// buckets' representative values, `last` their mean.
    pub fn of_distribution(d: &crate::model::Distribution, mean: f64, time_ms: i64) -> Bin {
        let mut sketch = Sketch::new();
        for (value, count) in &d.buckets {
            if *count > 0 {
                sketch.add_n(*value, *count);
            }
        }
        let filled = || d.buckets.iter().filter(|(_, c)| *c > 0).map(|(v, _)| *v);
        Bin {
            count: d.count,
            sum: d.sum,
            min: d.min.or_else(|| filled().reduce(f64::min)).unwrap_or(mean),
            max: d.max.or_else(|| filled().reduce(f64::max)).unwrap_or(mean),
            last: mean,
            last_ms: time_ms,
            sketch,
        }
    }

    pub fn merge(&mut self, other: &Bin) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_ms >= self.last_ms {
            (self.last, self.last_ms) = (other.last, other.last_ms);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = super::saturating_add(self.sum, other.sum);
        self.sketch.merge(&other.sketch);
    }
}

/// Where a bin lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinKey {
    pub tier: MetricTier,
    pub bucket: i64,
    pub series: i64,
}

/// A point with its series resolved (`MetricRegistry::resolve`).
#[derive(Debug)]
pub struct SeriesPoint {
    pub series: i64,
    pub value: f64,
    pub time_ms: i64,
    pub distribution: Option<Box<crate::model::Distribution>>,
}

/// Series registered but not yet stored, with their ids.
pub type NewSeries = Vec<(i64, Arc<MetricKey>)>;

#[derive(Default)]
struct Registry {
    by_key: FxHashMap<Arc<MetricKey>, i64>,
    by_id: FxHashMap<i64, Arc<MetricKey>>,
    per_name: FxHashMap<(String, String), usize>,
    /// Names with series of their own, per project.
    names: FxHashMap<String, usize>,
    next_id: i64,
    pending: Vec<i64>,
    overflow_points: u64,
    /// Bins at every tier not yet flushed to the store.
    open: FxHashMap<BinKey, Bin>,
    /// The last logged commit whose bins are in `open` (or flushed).
    applied: i64,
    /// Bins handed out to a flush the store has not confirmed yet, at every
    /// tier, and the last logged commit they hold.
    flushing: Option<(Arc<Bins>, i64)>,
    /// Flushes the store has taken, and the last to change each bucket of
    /// each tier (`flushed_floor` for buckets not listed): the versions
    /// cached query results are checked against.
    flushes: u64,
    flushed_at: FxHashMap<(MetricTier, i64), u64>,
    flushed_floor: u64,
}

/// Most buckets whose last flush is remembered one by one; beyond it every
/// bucket counts as flushed by the latest flush.
const MAX_FLUSHED_BUCKETS: usize = 1_000_000;

impl Registry {
    /// Every cached result is out of date from now on.
    fn forget_flushes(&mut self) {
        self.flushes += 1;
        self.flushed_floor = self.flushes;
        self.flushed_at.clear();
    }
}

/// Bins with their keys.
pub type Bins = Vec<(BinKey, Bin)>;

/// Every metric series, shared by the committer (which assigns ids) and the
/// query API, and the open bins.
pub struct MetricRegistry {
    state: Mutex<Registry>,
    limits: MetricLimits,
}

/// How many series client data may make (`[metrics]`).
#[derive(Debug, Clone, Copy)]
pub struct MetricLimits {
    /// Tag sets per metric name; further ones go to the name's overflow
    /// series.
    pub max_series_per_name: usize,
    /// Names per project; points of further names go to the project's
    /// `__overflow__` metric.
    pub max_names_per_project: usize,
    /// Series in all; past it a new series' points go to the first overflow
    /// series that exists: its name's, its project's, or the store-wide one
    /// (project `__other__`).
    pub max_series: usize,
}

impl Default for MetricLimits {
    fn default() -> Self {
        Self { max_series_per_name: 10_000, max_names_per_project: 10_000, max_series: 1_000_000 }
    }
}

/// The name of a project's metric that points of names past
/// `max_names_per_project` go to, and of the store-wide overflow series.
pub const OVERFLOW_NAME: &str = "__overflow__";

impl MetricRegistry {
    /// The registry of `stored` series, with nothing open; `watermark` is
    /// the last logged commit whose bins the store holds.
    pub fn new(stored: Vec<(i64, MetricKey)>, limits: MetricLimits, watermark: i64) -> Self {
        let mut registry = Registry { next_id: 1, applied: watermark, ..Registry::default() };
        for (id, key) in stored {
            registry.next_id = registry.next_id.max(id + 1);
            if !key.tags.contains_key(OVERFLOW_TAG) {
                registry.count(&key);
            }
            let key = Arc::new(key);
            registry.by_key.insert(key.clone(), id);
            registry.by_id.insert(id, key);
        }
        Self { state: Mutex::new(registry), limits }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives each point its series id (registering new series), under one
    /// lock for the batch. Request handlers call this, so that hashing tag
    /// sets and freeing the points' strings happen beside the committer.
    /// A point of a new series beyond the cap of its name goes to the name's
    /// overflow series.
    pub fn resolve(&self, points: Vec<MetricPoint>) -> Vec<SeriesPoint> {
        let mut state = self.lock();
        // Points sharing a key (one allocation) are looked up once. Each
        // entry holds its key, so no address is reused while it is listed.
        let mut seen: FxHashMap<*const MetricKey, (Arc<MetricKey>, i64, bool)> =
            FxHashMap::default();
        points
            .into_iter()
            .map(|point| {
                let series = match seen.get(&Arc::as_ptr(&point.key)) {
                    Some(&(_, id, overflowed)) => {
                        // Every point sent to an overflow series is counted.
                        state.overflow_points += u64::from(overflowed);
                        id
                    }
                    None => {
                        let (id, overflowed) = state.assign(&point.key, &self.limits);
                        // A key no other point holds is not listed.
                        if Arc::strong_count(&point.key) > 1 {
                            seen.insert(
                                Arc::as_ptr(&point.key),
                                (point.key.clone(), id, overflowed),
                            );
                        }
                        id
                    }
                };
                SeriesPoint {
                    series,
                    value: point.value,
                    time_ms: point.time_ms,
                    distribution: point.distribution,
                }
            })
            .collect()
    }

    /// The 10 s bins of `points`, summed per bin, and the series the store
    /// does not have yet. Coarser bins are merged from these later (a merge
    /// per 10 s bin rather than a sketch insert per point and tier).
    pub fn bin(&self, points: Vec<SeriesPoint>) -> (Vec<(BinKey, Bin)>, NewSeries) {
        let finest = MetricTier::ALL[0];
        let mut fine: FxHashMap<BinKey, Bin> = FxHashMap::default();
        for point in points {
            let key =
                BinKey { tier: finest, bucket: finest.bucket(point.time_ms), series: point.series };
            let bin = fine.entry(key).or_default();
            match point.distribution {
                Some(d) => bin.merge(&Bin::of_distribution(&d, point.value, point.time_ms)),
                None => bin.add(point.value, point.time_ms),
            }
        }
        let state = self.lock();
        let pending = state.pending.iter().map(|id| (*id, state.by_id[id].clone())).collect();
        (fine.into_iter().collect(), pending)
    }

    /// Merges a committed group's 10 s bins (logged as commit `seq`) into
    /// the open 10 s bins. Coarser open bins are merged from those when
    /// flushed or queried: once per open bin rather than once per commit.
    pub fn apply(&self, fine: &[(BinKey, Bin)], seq: i64) {
        let mut state = self.lock();
        for (key, bin) in fine {
            state.open.entry(*key).or_default().merge(bin);
        }
        state.applied = state.applied.max(seq);
    }

    /// Open 10 s bins.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// Hands out every open bin, at every tier, and the last commit they
    /// hold, for a flush. Until the flush is dropped, queries still find
    /// its bins here (`memory_bins`); `MetricFlush::abort` opens them again
    /// if the store did not take them.
    pub fn begin_flush(&self) -> MetricFlush<'_> {
        let mut state = self.lock();
        let mut bins: Vec<(BinKey, Bin)> = state.open.drain().collect();
        let coarse = roll_up(bins.iter().map(|(k, b)| (k, b)), &MetricTier::ALL[1..]);
        bins.extend(coarse);
        let bins = Arc::new(bins);
        state.flushing = Some((bins.clone(), state.applied));
        MetricFlush { registry: self, bins, watermark: state.applied, settled: false }
    }

    /// The version of the stored bins of `tier` in each step of `step` ms
    /// starting at `starts`: the last flush that changed any of them.
    pub fn versions(&self, tier: MetricTier, starts: &[i64], step: i64) -> Vec<u64> {
        let state = self.lock();
        let width = tier.width_ms();
        starts
            .iter()
            .map(|&t| {
                (t..t + step)
                    .step_by(width as usize)
                    .map(|b| {
                        state.flushed_at.get(&(tier, b)).copied().unwrap_or(state.flushed_floor)
                    })
                    .max()
                    .unwrap_or(state.flushed_floor)
            })
            .collect()
    }

    /// Stored bins may have changed anywhere (retention deleted some).
    pub fn forget_flushes(&self) {
        self.lock().forget_flushes();
    }

    /// The bins in memory of `tier` with a bucket in `[from, to)` of the
    /// series `keep` passes, in layers (those of a flush under way, the
    /// open ones), each with the last logged commit it holds: a store whose
    /// metric watermark has reached that commit holds the layer already.
    /// Taken under one lock, so that no bin is in two layers or none. The
    /// flush's layer is shared as it is, every tier: filter it again.
    pub fn memory_bins(
        &self,
        tier: MetricTier,
        from: i64,
        to: i64,
        keep: impl Fn(i64) -> bool,
    ) -> Vec<(i64, Arc<Bins>)> {
        let state = self.lock();
        let mut layers = Vec::with_capacity(2);
        if let Some((bins, holds)) = &state.flushing {
            layers.push((*holds, bins.clone()));
        }
        let wanted = |k: &BinKey| (from..to).contains(&tier.bucket(k.bucket)) && keep(k.series);
        let fine = state.open.iter().filter(|(k, _)| wanted(k));
        let open = if tier == MetricTier::ALL[0] {
            fine.map(|(k, b)| (*k, b.clone())).collect()
        } else {
            roll_up(fine, &[tier]).into_iter().collect()
        };
        layers.push((state.applied, Arc::new(open)));
        layers
    }

    pub fn confirm(&self, stored: &[i64]) {
        if !stored.is_empty() {
            self.lock().pending.retain(|id| !stored.contains(id));
        }
    }

    /// Series of `project` and `name` passing `keep`.
    pub fn select(
        &self,
        project: &str,
        name: &str,
        keep: impl Fn(&MetricKey) -> bool,
    ) -> HashMap<i64, Arc<MetricKey>> {
        let state = self.lock();
        state
            .by_id
            .iter()
            .filter(|(_, k)| k.project == project && k.name == name && keep(k))
            .map(|(id, k)| (*id, k.clone()))
            .collect()
    }

    /// The keys of the series `ids` (unknown ids are left out).
    pub fn keys(&self, ids: &[i64]) -> HashMap<i64, Arc<MetricKey>> {
        let state = self.lock();
        ids.iter().filter_map(|id| Some((*id, state.by_id.get(id)?.clone()))).collect()
    }

    /// Every series of a project.
    pub fn all(&self, project: &str) -> Vec<Arc<MetricKey>> {
        let state = self.lock();
        state.by_id.values().filter(|k| k.project == project).cloned().collect()
    }

    /// Points sent to overflow series, and how many overflow series exist.
    pub fn overflow(&self) -> (u64, usize) {
        let state = self.lock();
        let series = state.by_id.values().filter(|k| k.tags.contains_key(OVERFLOW_TAG)).count();
        (state.overflow_points, series)
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A metric series' identity across nodes and releases (as
/// `SeriesKey::stable_id` for usage series): a hash of its project, name
/// and tags.
pub fn stable_id(key: &MetricKey) -> u64 {
    super::series::stable_hash(&[Some("metric"), Some(&key.project), Some(&key.name)], &key.tags)
}

/// `fine` (10 s) bins merged into their bins at each of `tiers`.
pub fn roll_up<'a>(
    fine: impl Iterator<Item = (&'a BinKey, &'a Bin)>,
    tiers: &[MetricTier],
) -> FxHashMap<BinKey, Bin> {
    let mut coarse: FxHashMap<BinKey, Bin> = FxHashMap::default();
    for (key, bin) in fine {
        for tier in tiers {
            let key = BinKey { tier: *tier, bucket: tier.bucket(key.bucket), series: key.series };
            coarse.entry(key).or_default().merge(bin);
        }
    }
    coarse
}

/// Open bins handed out for a flush (`MetricRegistry::begin_flush`), to be
/// settled: `stored` or `abort`.
pub struct MetricFlush<'a> {
    registry: &'a MetricRegistry,
    pub bins: Arc<Vec<(BinKey, Bin)>>,
    /// The last logged commit the bins hold.
    pub watermark: i64,
    /// Stored or aborted.
    settled: bool,
}

impl MetricFlush<'_> {
    /// The store took the bins: they leave memory, and their buckets'
    /// versions move on.
    pub fn stored(mut self) {
        // Many bins share a bucket: the buckets are found before the lock.
        let buckets: FxHashSet<(MetricTier, i64)> =
            self.bins.iter().map(|(key, _)| (key.tier, key.bucket)).collect();
        let mut state = self.registry.lock();
        state.flushes += 1;
        let flush = state.flushes;
        state.flushed_at.extend(buckets.into_iter().map(|bucket| (bucket, flush)));
        if state.flushed_at.len() > MAX_FLUSHED_BUCKETS {
            state.flushed_floor = flush;
            state.flushed_at.clear();
        }
        state.flushing = None;
        self.settled = true;
    }

    /// The store did not take the bins: open their 10 s bins again (merged
    /// with any applied meanwhile; coarser bins are merged from them again).
    pub fn abort(mut self) {
        let mut state = self.registry.lock();
        let finest = MetricTier::ALL[0];
        for (key, bin) in self.bins.iter().filter(|(k, _)| k.tier == finest) {
            state.open.entry(*key).or_default().merge(bin);
        }
        state.flushing = None;
        self.settled = true;
    }
}

impl Drop for MetricFlush<'_> {
    /// A flush dropped unsettled (a panic): whether the store took it is
    /// unknown, so no cached result is trusted.
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.registry.lock();
            state.flushing = None;
            state.forget_flushes();
        }
    }
}

/// One logged 10 s bin.
#[derive(Serialize, Deserialize)]
struct LoggedBin {
    bucket: i64,
    series: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ms: i64,
    sketch: Vec<u8>,
}

/// A commit's 10 s bins, as logged with it.
pub fn encode_log(fine: &[(BinKey, Bin)]) -> Vec<u8> {
    let logged: Vec<LoggedBin> = fine
        .iter()
        .map(|(key, bin)| LoggedBin {
            bucket: key.bucket,
            series: key.series,
            count: bin.count,
            sum: bin.sum,
            min: bin.min,
            max: bin.max,
            last: bin.last,
            last_ms: bin.last_ms,
            sketch: bin.sketch.to_bytes(),
        })
        .collect();
    postcard::to_allocvec(&logged).expect("writing to a Vec cannot fail")
}

/// The 10 s bins of one logged commit.
pub fn decode_log(bytes: &[u8]) -> Result<Vec<(BinKey, Bin)>, String> {
    let logged: Vec<LoggedBin> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let tier = MetricTier::ALL[0];
    logged
        .into_iter()
        .map(|l| {
            let sketch = Sketch::decode(&l.sketch).map_err(|e| e.to_string())?;
            let bin = Bin {
                count: l.count,
                sum: l.sum,
                min: l.min,
                max: l.max,
                last: l.last,
                last_ms: l.last_ms,
                sketch,
            };
            Ok((BinKey { tier, bucket: l.bucket, series: l.series }, bin))
        })
        .collect()
}

impl Registry {
    /// Counts a series of `key`'s own.
    fn count(&mut self, key: &MetricKey) {
        let count = self.per_name.entry((key.project.clone(), key.name.clone())).or_default();
        if *count == 0 {
            *self.names.entry(key.project.clone()).or_default() += 1;
        }
        *count += 1;
    }

    /// The series id of `key`, registering it if new, and whether the point
    /// went to an overflow series instead (counted here).
    fn assign(&mut self, key: &Arc<MetricKey>, limits: &MetricLimits) -> (i64, bool) {
        if let Some(id) = self.by_key.get(key) {
            return (*id, false);
        }
        let overflow = |project: &str, name: &str| MetricKey {
            project: project.to_owned(),
            name: name.to_owned(),
            tags: Tags::from([(OVERFLOW_TAG.to_owned(), "true".to_owned())]),
        };
        let own = self.per_name.get(&(key.project.clone(), key.name.clone())).copied();
        let names = self.names.get(&key.project).copied().unwrap_or(0);
        let target = if self.by_key.len() >= limits.max_series {
            let of_name = overflow(&key.project, &key.name);
            let of_project = overflow(&key.project, OVERFLOW_NAME);
            [of_name, of_project]
                .into_iter()
                .find(|k| self.by_key.contains_key(k))
                .unwrap_or_else(|| overflow("__other__", OVERFLOW_NAME))
        } else if own.is_none() && names >= limits.max_names_per_project {
            overflow(&key.project, OVERFLOW_NAME)
        } else if own.unwrap_or(0) >= limits.max_series_per_name {
            overflow(&key.project, &key.name)
        } else {
            self.count(key);
            return (self.register(key.clone()), false);
        };
        self.overflow_points += 1;
        if let Some(id) = self.by_key.get(&target) {
            return (*id, true);
        }
        (self.register(Arc::new(target)), true)
    }

    fn register(&mut self, key: Arc<MetricKey>) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(key.clone(), id);
        self.by_id.insert(id, key);
        self.pending.push(id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PointKind;
    use proptest::prelude::*;

    fn limits(max_series_per_name: usize) -> MetricLimits {
        MetricLimits { max_series_per_name, ..MetricLimits::default() }
    }

    fn point(name: &str, tag: &str, value: f64, time_ms: i64) -> MetricPoint {
        MetricPoint {
            key: Arc::new(MetricKey {
                project: "default".into(),
                name: name.into(),
                tags: Tags::from([("k".to_owned(), tag.to_owned())]),
            }),
            value,
            time_ms,
            kind: PointKind::Gauge,
            distribution: None,
        }
    }

    #[test]
    fn tiers_pick_the_coarsest_dividing_bin() {
        assert_eq!(MetricTier::for_step(10_000), Some(MetricTier::S10));
        assert_eq!(MetricTier::for_step(30_000), Some(MetricTier::S10));
        assert_eq!(MetricTier::for_step(300_000), Some(MetricTier::M1));
        assert_eq!(MetricTier::for_step(1_800_000), Some(MetricTier::M15));
        assert_eq!(MetricTier::for_step(86_400_000), Some(MetricTier::H1));
        assert_eq!(MetricTier::for_step(5_000), None);
    }

    #[test]
    fn series_beyond_the_cap_overflow() {
        let registry = MetricRegistry::new(Vec::new(), limits(3), 0);
        let points: Vec<MetricPoint> =
            (0..10).map(|i| point("m", &i.to_string(), 1.0, 0)).collect();
        let (bins, new) = registry.bin(registry.resolve(points));
        assert_eq!(new.len(), 4, "3 series and the overflow series");
        assert_eq!(registry.overflow(), (7, 1));
        let overflow_id = new.iter().find(|(_, k)| k.tags.contains_key(OVERFLOW_TAG)).unwrap().0;
        let overflowed = bins
            .iter()
            .find(|(k, _)| k.series == overflow_id && k.tier == MetricTier::S10)
            .unwrap();
        assert_eq!(overflowed.1.count, 7);
        // Another name has its own cap.
        let (_, new) = registry.bin(registry.resolve(vec![point("other", "0", 1.0, 0)]));
        assert_eq!(new.len(), 5);
    }

    #[test]
    fn names_past_the_project_cap_and_series_past_the_total_cap_overflow() {
        let limits =
            MetricLimits { max_series_per_name: 2, max_names_per_project: 2, max_series: 8 };
        let registry = MetricRegistry::new(Vec::new(), limits, 0);
        let names = |registry: &MetricRegistry, points: Vec<MetricPoint>| {
            let (_, new) = registry.bin(registry.resolve(points));
            let mut keys: Vec<String> =
                new.iter().map(|(_, k)| format!("{}/{}/{:?}", k.project, k.name, k.tags)).collect();
            keys.sort();
            keys
        };
        // Names a and b have series of their own; c and d go to the
        // project's __overflow__ metric.
        let points = ["a", "b", "c", "d"].map(|name| point(name, "0", 1.0, 0)).to_vec();
        let keys = names(&registry, points);
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys[0].starts_with("default/__overflow__/"), "{keys:?}");
        assert_eq!(registry.overflow().0, 2);
        // Up to 8 series in all (a's own overflow series among them); past
        // that, new series go to an existing overflow series of their own
        // name or project, or the store-wide one.
        let more: Vec<MetricPoint> = (1..4).map(|i| point("a", &i.to_string(), 1.0, 0)).collect();
        names(&registry, more);
        let elsewhere: Vec<MetricPoint> = (0..50)
            .map(|i| {
                let mut p = point("x", "0", 1.0, 0);
                p.key = Arc::new(MetricKey {
                    project: format!("p{i}"),
                    name: format!("n{i}"),
                    tags: Tags::new(),
                });
                p
            })
            .collect();
        names(&registry, elsewhere);
        let total = registry.lock().by_key.len();
        assert!(total <= 8 + 1, "{total} series");
        let store_wide = MetricKey {
            project: "__other__".into(),
            name: OVERFLOW_NAME.into(),
            tags: Tags::from([(OVERFLOW_TAG.to_owned(), "true".to_owned())]),
        };
        assert!(registry.lock().by_key.contains_key(&store_wide));
    }

    /// Every bin in memory of `tier`, whatever layer holds it.
    fn in_memory(registry: &MetricRegistry, tier: MetricTier) -> Vec<(BinKey, Bin)> {
        let layers = registry.memory_bins(tier, i64::MIN, i64::MAX, |_| true);
        let bins = layers.iter().flat_map(|(_, bins)| bins.iter());
        bins.filter(|(k, _)| k.tier == tier).cloned().collect()
    }

    #[test]
    fn an_aborted_flush_leaves_its_bins_open() {
        let registry = MetricRegistry::new(Vec::new(), limits(10), 0);
        let points = vec![point("m", "a", 1.0, 5_000), point("m", "a", 3.0, 65_000)];
        let (bins, _) = registry.bin(registry.resolve(points));
        registry.apply(&bins, 7);
        let flush = registry.begin_flush();
        assert_eq!(flush.watermark, 7);
        let hours: Vec<_> = flush.bins.iter().filter(|(k, _)| k.tier == MetricTier::H1).collect();
        assert_eq!((hours.len(), hours[0].1.count), (1, 2));
        assert_eq!(registry.open_count(), 0);
        // Queries still find the bins while the flush is under way: in the
        // flush's layer, which says which commit it holds.
        let layers = registry.memory_bins(MetricTier::H1, 0, 3_600_000, |_| true);
        let counts: Vec<(i64, u64)> = layers
            .iter()
            .map(|(holds, bins)| {
                let hours = bins.iter().filter(|(k, _)| k.tier == MetricTier::H1);
                (*holds, hours.map(|(_, b)| b.count).sum())
            })
            .collect();
        assert_eq!(counts, vec![(7, 2), (7, 0)]);
        flush.abort();
        let hour = in_memory(&registry, MetricTier::H1);
        assert_eq!((hour.len(), hour[0].1.count), (1, 2));
        assert_eq!(registry.open_count(), 2);
        // A flush the store took leaves nothing in memory.
        registry.begin_flush().stored();
        assert_eq!(registry.open_count(), 0);
        assert!(in_memory(&registry, MetricTier::S10).is_empty());
    }

    proptest! {
        #[test]
        fn fine_bins_merged_equal_coarse_bins(values in prop::collection::vec((-1e6f64..1e6, 0i64..3_600_000), 1..200), split in 0usize..200) {
            let registry = MetricRegistry::new(Vec::new(), limits(100), 0);
            let points: Vec<MetricPoint> = values.iter().map(|(v, t)| point("m", "a", *v, *t)).collect();
            // Points binned at 10 s, applied (merged up to 1 min, 15 min and
            // 1 h), the 10 s bins logged and read back.
            let (bins, _) = registry.bin(registry.resolve(points.clone()));
            let logged = decode_log(&encode_log(&bins)).unwrap();
            prop_assert_eq!(logged.len(), bins.len());
            registry.apply(&logged, 1);
            let at = |tier: MetricTier| -> Vec<(i64, Bin)> {
                let mut v: Vec<(i64, Bin)> = in_memory(&registry, tier).into_iter().map(|(k, b)| (k.bucket, b)).collect();
                v.sort_by_key(|(b, _)| *b);
                v
            };
            // The 1 h bin rolled up from the 10 s bins equals the points
            // binned at 1 h directly, in the order they came.
            let hours = at(MetricTier::H1);
            prop_assert_eq!(hours.len(), 1);
            let hour = &hours[0].1;
            let mut direct = Bin::default();
            for p in &points { direct.add(p.value, p.time_ms); }
            let direct = &direct;
            let fine: u64 = at(MetricTier::S10).iter().map(|(_, b)| b.count).sum();
            prop_assert_eq!(fine, direct.count);
            prop_assert_eq!(hour.count, direct.count);
            prop_assert_eq!((hour.min, hour.max), (direct.min, direct.max));
            prop_assert_eq!(hour.last_ms, direct.last_ms);
            prop_assert!((hour.sum - direct.sum).abs() <= 1e-6 * direct.sum.abs().max(1.0));
            // Sketch buckets add exactly (only their float sums may differ
            // in the last bits), so every quantile is the same.
            for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
                prop_assert_eq!(hour.sketch.quantile(q), direct.sketch.quantile(q));
            }
            // Merging in any order gives the same bin.
            let split = split.min(points.len());
            let (mut a, mut b) = (Bin::default(), Bin::default());
            for p in &points[..split] { a.add(p.value, p.time_ms); }
            for p in &points[split..] { b.add(p.value, p.time_ms); }
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!((ab.count, ab.min, ab.max), (ba.count, ba.min, ba.max));
            for q in [0.0, 0.5, 0.99, 1.0] {
                prop_assert_eq!(ab.sketch.quantile(q), ba.sketch.quantile(q));
            }
            prop_assert_eq!(ab.count, direct.count);
        }
    }
}
