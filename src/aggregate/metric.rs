//! Metric points into bins at 10 s, 1 min, 15 min and 1 h: per series (name
//! and tag set) count, sum, min, max, last and a quantile sketch, all
//! mergeable, so a late point merges into its bin and coarse bins equal the
//! fine ones merged. The series registry caps series per metric name and
//! sends points beyond the cap to an overflow series.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::sketch::Sketch;
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
        self.sum += value;
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
        self.count += other.count;
        self.sum += other.sum;
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

/// Series registered but not yet stored, with their ids.
pub type NewSeries = Vec<(i64, Arc<MetricKey>)>;

/// A metric series: project, name and tag set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MetricKey {
    pub project: String,
    pub name: String,
    pub tags: Tags,
}

#[derive(Default)]
struct Registry {
    by_key: FxHashMap<Arc<MetricKey>, i64>,
    by_id: FxHashMap<i64, Arc<MetricKey>>,
    per_name: FxHashMap<(String, String), usize>,
    next_id: i64,
    pending: Vec<i64>,
    overflow_points: u64,
}

/// Every metric series, shared by the committer (which assigns ids) and the
/// query API.
pub struct MetricRegistry {
    state: Mutex<Registry>,
    max_series_per_name: usize,
}

impl MetricRegistry {
    pub fn new(stored: Vec<(i64, MetricKey)>, max_series_per_name: usize) -> Self {
        let mut registry = Registry { next_id: 1, ..Registry::default() };
        for (id, key) in stored {
            registry.next_id = registry.next_id.max(id + 1);
            if !key.tags.contains_key(OVERFLOW_TAG) {
                *registry.per_name.entry((key.project.clone(), key.name.clone())).or_default() += 1;
            }
            let key = Arc::new(key);
            registry.by_key.insert(key.clone(), id);
            registry.by_id.insert(id, key);
        }
        Self { state: Mutex::new(registry), max_series_per_name }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bins of `points` at every tier, summed per bin, and the series
    /// the store does not have yet. A point of a new series beyond the cap
    /// of its name lands in the name's overflow series. Points go into the
    /// finest tier's bins only; each coarser tier's bins are merged from
    /// those (the tiers nest), which costs a merge per fine bin rather than
    /// a sketch insert per point and tier.
    pub fn bin(&self, points: Vec<MetricPoint>) -> (Vec<(BinKey, Bin)>, NewSeries) {
        let mut state = self.lock();
        let finest = MetricTier::ALL[0];
        let mut fine: FxHashMap<BinKey, Bin> = FxHashMap::default();
        for mut point in points {
            let (value, time_ms) = (point.value, point.time_ms);
            let distribution = point.distribution.take();
            let series = state.assign(point, self.max_series_per_name);
            let bin = fine.entry(BinKey { tier: finest, bucket: finest.bucket(time_ms), series });
            match distribution {
                Some(d) => bin.or_default().merge(&Bin::of_distribution(&d, value, time_ms)),
                None => bin.or_default().add(value, time_ms),
            }
        }
        let mut coarse: FxHashMap<BinKey, Bin> = FxHashMap::default();
        for (key, bin) in &fine {
            for tier in &MetricTier::ALL[1..] {
                let key =
                    BinKey { tier: *tier, bucket: tier.bucket(key.bucket), series: key.series };
                coarse.entry(key).or_default().merge(bin);
            }
        }
        let pending = state.pending.iter().map(|id| (*id, state.by_id[id].clone())).collect();
        (fine.into_iter().chain(coarse).collect(), pending)
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

impl Registry {
    fn assign(&mut self, point: MetricPoint, cap: usize) -> i64 {
        let key = MetricKey { project: point.project, name: point.name, tags: point.tags };
        if let Some(id) = self.by_key.get(&key) {
            return *id;
        }
        let count = self.per_name.entry((key.project.clone(), key.name.clone())).or_default();
        let key = if *count >= cap {
            self.overflow_points += 1;
            let overflow = MetricKey {
                project: key.project,
                name: key.name,
                tags: Tags::from([(OVERFLOW_TAG.to_owned(), "true".to_owned())]),
            };
            if let Some(id) = self.by_key.get(&overflow) {
                return *id;
            }
            overflow
        } else {
            *count += 1;
            key
        };
        let id = self.next_id;
        self.next_id += 1;
        let key = Arc::new(key);
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

    fn point(name: &str, tag: &str, value: f64, time_ms: i64) -> MetricPoint {
        MetricPoint {
            project: "default".into(),
            name: name.into(),
            tags: Tags::from([("k".to_owned(), tag.to_owned())]),
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
        let registry = MetricRegistry::new(Vec::new(), 3);
        let points: Vec<MetricPoint> =
            (0..10).map(|i| point("m", &i.to_string(), 1.0, 0)).collect();
        let (bins, new) = registry.bin(points);
        assert_eq!(new.len(), 4, "3 series and the overflow series");
        assert_eq!(registry.overflow(), (7, 1));
        let overflow_id = new.iter().find(|(_, k)| k.tags.contains_key(OVERFLOW_TAG)).unwrap().0;
        let overflowed = bins
            .iter()
            .find(|(k, _)| k.series == overflow_id && k.tier == MetricTier::S10)
            .unwrap();
        assert_eq!(overflowed.1.count, 7);
        // Another name has its own cap.
        let (_, new) = registry.bin(vec![point("other", "0", 1.0, 0)]);
        assert_eq!(new.len(), 5);
    }

    proptest! {
        #[test]
        fn fine_bins_merged_equal_coarse_bins(values in prop::collection::vec((-1e6f64..1e6, 0i64..3_600_000), 1..200), split in 0usize..200) {
            let registry = MetricRegistry::new(Vec::new(), 100);
            let points: Vec<MetricPoint> = values.iter().map(|(v, t)| point("m", "a", *v, *t)).collect();
            let (bins, _) = registry.bin(points.clone());
            let at = |tier: MetricTier| -> Vec<(i64, Bin)> {
                let mut v: Vec<(i64, Bin)> = bins.iter().filter(|(k, _)| k.tier == tier).map(|(k, b)| (k.bucket, b.clone())).collect();
                v.sort_by_key(|(b, _)| *b);
                v
            };
            // Rolling the 10 s bins up to 1 h equals binning the points at 1 h.
            let mut hour = Bin::default();
            for (_, bin) in at(MetricTier::S10) {
                hour.merge(&bin);
            }
            let direct = at(MetricTier::H1);
            prop_assert_eq!(direct.len(), 1);
            let direct = &direct[0].1;
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
