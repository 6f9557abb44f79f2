//! A node's running totals, as it writes them to ClickHouse's totals
//! tables (`rollup_totals` for usage, `metric_totals` for metric bins): per
//! bucket, each series' total and the sequence number of the last record
//! counted in it, its row's version (ReplacingMergeTree). A shipped block
//! adds only records above a total's version, so a block sent again after a
//! crash cannot count a record twice; what is held changes only once
//! ClickHouse took the rows. Buckets not held are read back whole from
//! ClickHouse before a block adds to them (after a restart, or once
//! evicted); at most a configured number of totals are held past the
//! buckets the current block needs, those that closed longest ago dropped
//! first.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

use clickhouse::{RowOwned, RowRead};
use rustc_hash::FxHashMap;

use super::{ClickHouse, StorageError, backend};
use crate::aggregate::Tier;
use crate::aggregate::metric::MetricTier;

/// A series' total in one bucket and the sequence number of its last
/// record: records at or below it are already counted.
#[derive(Debug, Clone)]
pub struct Total<V> {
    pub value: V,
    pub version: i64,
}

/// One bucket's totals, by the series' stable id.
pub type Totals<V> = FxHashMap<u64, Total<V>>;

/// What totals are loaded and evicted by, whole: one bucket of one tier
/// of one project.
pub trait Bucket: Clone + Eq + Hash {
    /// When the bucket closes (its end, ms): the earliest go first.
    fn closes_at(&self) -> i64;
    /// Where its rows are: (project, tier code, bucket).
    fn place(&self) -> (&str, u8, i64);
    /// The bucket at a place `place` gave.
    fn at(project: &str, tier: u8, bucket: i64) -> Self;
}

/// The tiers of a totals table: usage rollups' or metric bins'.
pub trait TotalsTier: Copy + Eq + Hash {
    fn width_ms(self) -> i64;
    fn code(self) -> i64;
    fn from_code(code: i64) -> Option<Self>;
}

impl TotalsTier for Tier {
    fn width_ms(self) -> i64 {
        Tier::width_ms(self)
    }
    fn code(self) -> i64 {
        Tier::code(self)
    }
    fn from_code(code: i64) -> Option<Self> {
        Tier::from_code(code)
    }
}

impl TotalsTier for MetricTier {
    fn width_ms(self) -> i64 {
        MetricTier::width_ms(self)
    }
    fn code(self) -> i64 {
        MetricTier::code(self)
    }
    fn from_code(code: i64) -> Option<Self> {
        MetricTier::from_code(code)
    }
}

/// One bucket of one tier of one project: the `Bucket` of both tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketId<T> {
    pub project: String,
    pub tier: T,
    pub bucket: i64,
}

impl<T: TotalsTier> Bucket for BucketId<T> {
    fn closes_at(&self) -> i64 {
        self.bucket + self.tier.width_ms()
    }
    fn place(&self) -> (&str, u8, i64) {
        (&self.project, self.tier.code() as u8, self.bucket)
    }
    fn at(project: &str, tier: u8, bucket: i64) -> Self {
        let tier = T::from_code(i64::from(tier)).expect("a tier's own code");
        BucketId { project: project.to_owned(), tier, bucket }
    }
}

/// A row of a totals table, as it is read back.
pub trait TotalRow: RowOwned + RowRead {
    /// What a total of the table holds.
    type Sum;
    fn bucket(&self) -> i64;
    fn series(&self) -> u64;
    fn version(&self) -> i64;
    fn value(&self) -> Result<Self::Sum, StorageError>;
}

/// The totals a node holds, by bucket.
pub struct HeldTotals<B, V> {
    max_cells: usize,
    held: Mutex<HashMap<B, Totals<V>>>,
}

impl<B: Bucket, V: Clone + Default> HeldTotals<B, V> {
    pub fn new(max_cells: usize) -> Self {
        HeldTotals { max_cells, held: Mutex::default() }
    }

    /// Totals held now (for tests and the bound).
    pub fn cells(&self) -> usize {
        self.held.lock().expect("totals lock").values().map(|t| t.len()).sum()
    }

    /// Reads back from `table` node `node`'s rows of the buckets in
    /// `needed` not held, and holds them.
    pub async fn load_missing<R: TotalRow<Sum = V>>(
        &self,
        ch: &ClickHouse,
        (table, node): (&str, &str),
        needed: &HashSet<B>,
    ) -> Result<(), StorageError> {
        let mut missing: HashMap<(String, u8), Vec<i64>> = HashMap::new();
        {
            let held = self.held.lock().expect("totals lock");
            for at in needed.iter().filter(|at| !held.contains_key(*at)) {
                let (project, tier, bucket) = at.place();
                missing.entry((project.to_owned(), tier)).or_default().push(bucket);
            }
        }
        for ((project, tier), buckets) in missing {
            let list: Vec<String> = buckets.iter().map(i64::to_string).collect();
            let mut rows = ch
                .client()
                .query(&format!(
                    "SELECT ?fields FROM {}.{table} FINAL \
                     WHERE project = ? AND tier = ? AND bucket IN ({}) AND node = ?",
                    ch.database(),
                    list.join(", ")
                ))
                .bind(&project)
                .bind(tier)
                .bind(node)
                .fetch::<R>()
                .map_err(backend)?;
            let mut loaded: HashMap<i64, Totals<V>> =
                buckets.iter().map(|b| (*b, Totals::default())).collect();
            while let Some(row) = rows.next().await.map_err(backend)? {
                let total = Total { value: row.value()?, version: row.version() };
                loaded.entry(row.bucket()).or_default().insert(row.series(), total);
            }
            let loaded =
                loaded.into_iter().map(|(bucket, totals)| (B::at(&project, tier, bucket), totals));
            self.held.lock().expect("totals lock").extend(loaded);
        }
        Ok(())
    }

    /// Runs `f` over what is held (to work out a block's changes).
    pub fn with<R>(&self, f: impl FnOnce(&HashMap<B, Totals<V>>) -> R) -> R {
        f(&self.held.lock().expect("totals lock"))
    }

    /// Holds the totals a block changed, once ClickHouse took them, then
    /// evicts past the bound (never a bucket in `needed`).
    pub fn commit(
        &self,
        changed: impl IntoIterator<Item = (B, u64, Total<V>)>,
        needed: &HashSet<B>,
    ) {
        let mut held = self.held.lock().expect("totals lock");
        for (at, id, total) in changed {
            held.entry(at).or_default().insert(id, total);
        }
        evict(&mut held, needed, self.max_cells);
    }
}

/// Adds a record numbered `seq` to the total `id` of one bucket's
/// `changed` totals, starting from what is `held` of it, unless the held
/// total already counts it.
pub fn add<V: Clone + Default>(
    changed: &mut Totals<V>,
    held: Option<&Totals<V>>,
    id: u64,
    seq: i64,
    add: impl FnOnce(&mut V),
) {
    let total = match changed.entry(id) {
        std::collections::hash_map::Entry::Occupied(total) => total.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let before = held.and_then(|held| held.get(&id));
            if before.is_some_and(|total| total.version >= seq) {
                return; // counted before a crash
            }
            slot.insert(before.cloned().unwrap_or(Total { value: V::default(), version: 0 }))
        }
    };
    if total.version >= seq {
        return;
    }
    add(&mut total.value);
    total.version = seq;
}

/// Drops whole buckets not in `needed`, those that closed longest ago
/// first, until at most `max_cells` totals are held.
fn evict<B: Bucket, V>(held: &mut HashMap<B, Totals<V>>, needed: &HashSet<B>, max_cells: usize) {
    let mut cells: usize = held.values().map(|t| t.len()).sum();
    if cells <= max_cells {
        return;
    }
    let mut spare: Vec<(i64, B)> = held
        .keys()
        .filter(|at| !needed.contains(*at))
        .map(|at| (at.closes_at(), at.clone()))
        .collect();
    spare.sort_unstable_by_key(|(end, _)| *end);
    for (_, at) in spare {
        if cells <= max_cells {
            break;
        }
        cells -= held.remove(&at).map_or(0, |totals| totals.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct At(i64, i64);

    impl Bucket for At {
        fn closes_at(&self) -> i64 {
            self.0 + self.1
        }
        fn place(&self) -> (&str, u8, i64) {
            ("p", 0, self.0)
        }
        fn at(_: &str, _: u8, bucket: i64) -> Self {
            At(bucket, 0)
        }
    }

    fn totals(n: u64) -> Totals<u64> {
        (0..n).map(|id| (id, Total { value: 0, version: 1 })).collect()
    }

    #[test]
    fn eviction_drops_the_buckets_that_closed_first_but_never_those_a_block_needs() {
        let (minute, hour, day) = (60, 3600, 86_400);
        let mut held = HashMap::from([
            (At(10 * hour, minute), totals(5)),
            (At(0, hour), totals(5)),
            (At(hour, hour), totals(5)),
            (At(0, day), totals(5)),
        ]);
        // The day bucket closes last; the first hour is needed now.
        let needed = HashSet::from([At(0, hour)]);
        evict(&mut held, &needed, 15);
        let mut left: Vec<_> = held.keys().cloned().collect();
        left.sort_by_key(|at| (at.1, at.0));
        assert_eq!(left, [At(10 * hour, minute), At(0, hour), At(0, day)]);
        // Past the bound with only needed buckets left: they stay.
        evict(&mut held, &HashSet::from([At(10 * hour, minute), At(0, hour), At(0, day)]), 1);
        assert_eq!(held.len(), 3);
        evict(&mut held, &needed, 1);
        assert_eq!(held.keys().collect::<Vec<_>>(), [&At(0, hour)]);
    }

    #[test]
    fn a_record_a_held_total_counts_is_skipped_and_one_counts_once() {
        let held: Totals<u64> = [(7, Total { value: 10, version: 5 })].into_iter().collect();
        let mut changed = Totals::default();
        for seq in [4, 5, 6, 6, 8] {
            add(&mut changed, Some(&held), 7, seq, |v| *v += 1);
            add(&mut changed, Some(&held), 9, seq, |v| *v += 1);
        }
        assert_eq!((changed[&7].value, changed[&7].version), (12, 8), "6 and 8 added to 10");
        assert_eq!(
            (changed[&9].value, changed[&9].version),
            (4, 8),
            "a new total counts 4, 5, 6, 8"
        );
        // A block all counted before changes nothing.
        let mut again = Totals::default();
        add(&mut again, Some(&held), 7, 5, |v| *v += 1);
        assert!(again.is_empty());
    }
}
