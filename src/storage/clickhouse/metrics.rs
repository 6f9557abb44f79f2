//! The `metric_totals` table: what each node's logged metric commits (their
//! 10 s bins) add up to in every metric tier, one row per (tier, bucket,
//! series, node) with the series' name and tags and the bin's count, sum,
//! min, max, last value and encoded sketch: the node's running total
//! (`totals`), versioned by the last commit counted, so a block sent again
//! after a crash counts nothing twice and merges leave one row per key and
//! node, however many blocks added to it; the nodes' rows add up.
//! Partitioned by tier and day (10 s and 1 min bins, kept for hours and
//! days) or 30 days (15 min and 1 h bins), for retention to drop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::totals::{self, HeldTotals, TotalRow, Totals};
use super::{ClickHouse, StorageError, backend};
use crate::aggregate::metric::{self, Bin, BinKey, MetricKey, MetricTier};
use crate::aggregate::sketch::Sketch;

/// The columns of both tables, after their keys.
fn bin_columns(zstd: &str) -> String {
    format!(
        "tag_keys Array(String),
            tag_values Array(String),
            count UInt64,
            sum Float64,
            min Float64,
            max Float64,
            last Float64,
            last_ms Int64,
            sketch String{zstd}"
    )
}

/// Migration 4: bins as one row per shipped block and series (replaced by
/// migration 6: their number grew with the blocks shipped).
pub fn create_blocks(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.metric_bins (
            project {lc},
            name {lc},
            tier UInt8,
            bucket Int64,
            series UInt64,
            node {lc},
            block_first Int64,
            block_last Int64,
            {columns}
        ) ENGINE = ReplacingMergeTree(block_last)
        PARTITION BY (tier, intDiv(bucket, if(tier <= 1, 86400000, 2592000000)))
        ORDER BY (project, name, tier, bucket, series, node, block_first)",
        db = ddl.database,
        columns = bin_columns(&ddl.codec("ZSTD")),
    )]
}

/// Migration 6: each node's running totals. The per-block bins of migration
/// 4 are dropped (the cluster backend was not released with them).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    vec![
        format!("DROP TABLE IF EXISTS {}.metric_bins", ddl.database),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.metric_totals (
            project {lc},
            name {lc},
            tier UInt8,
            bucket Int64,
            series UInt64,
            node {lc},
            version Int64,
            {columns}
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY (tier, intDiv(bucket, if(tier <= 1, 86400000, 2592000000)))
        ORDER BY (project, name, tier, bucket, series, node)",
            db = ddl.database,
            columns = bin_columns(&ddl.codec("ZSTD")),
        ),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
struct BinRow {
    project: String,
    name: String,
    tier: u8,
    bucket: i64,
    series: u64,
    node: String,
    version: i64,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ms: i64,
    #[serde(with = "serde_bytes")]
    sketch: Vec<u8>,
}

impl BinRow {
    fn bin(&self) -> Result<Bin, StorageError> {
        let sketch = Sketch::decode(&self.sketch).map_err(|_| {
            StorageError::Corrupt(format!(
                "metric_totals row of node {} (tier {}, bucket {}, series {}): sketch",
                self.node, self.tier, self.bucket, self.series
            ))
        })?;
        Ok(Bin {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            last: self.last,
            last_ms: self.last_ms,
            sketch,
        })
    }
}

/// A bucket of `metric_totals`.
type BucketId = totals::BucketId<MetricTier>;

impl TotalRow for BinRow {
    type Sum = Bin;
    fn bucket(&self) -> i64 {
        self.bucket
    }
    fn series(&self) -> u64 {
        self.series
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn value(&self) -> Result<Bin, StorageError> {
        self.bin()
    }
}

/// The metric totals a node has written to `metric_totals`, for the
/// buckets its recent blocks touched (`HeldTotals`).
pub struct NodeMetricBins {
    node: String,
    held: HeldTotals<BucketId, Bin>,
}

/// A commit's bin in one tier, under its bucket and its series' stable id.
type Rolled = (BucketId, u64, Bin);

/// Logged metric commits as shipped: each commit's sequence number and
/// its 10 s bins.
pub type Commits = [(i64, Vec<(BinKey, Bin)>)];

impl NodeMetricBins {
    pub fn new(node: &str, max_cells: usize) -> NodeMetricBins {
        NodeMetricBins { node: node.to_owned(), held: HeldTotals::new(max_cells) }
    }

    /// Totals held now (for tests and the bound).
    pub fn held_cells(&self) -> usize {
        self.held.cells()
    }

    /// Adds one block of the node's logged metric commits (in sequence
    /// order) to its totals in every tier and writes the totals it changed,
    /// each series named by its key in `keys`. Bins of series `keys` does
    /// not hold are left out and counted in the answer.
    pub async fn insert_block(
        &self,
        ch: &ClickHouse,
        commits: &Commits,
        keys: &HashMap<i64, Arc<MetricKey>>,
    ) -> Result<usize, StorageError> {
        let mut unknown = 0;
        // Each commit's bins in every tier, under the series' stable ids.
        let mut ids: HashMap<i64, u64> = HashMap::new();
        let mut rolled: Vec<(i64, Vec<Rolled>)> = Vec::with_capacity(commits.len());
        for (seq, fine) in commits {
            let mut known = Vec::with_capacity(fine.len());
            for (at, bin) in fine {
                if keys.contains_key(&at.series) {
                    known.push((*at, bin));
                } else {
                    unknown += 1;
                }
            }
            let mut bins =
                metric::roll_up(known.iter().map(|(k, b)| (k, *b)), &MetricTier::ALL[1..]);
            for (at, bin) in known {
                bins.entry(at).or_default().merge(bin);
            }
            let bins = bins
                .into_iter()
                .map(|(at, bin)| {
                    let key = &keys[&at.series];
                    let id = *ids.entry(at.series).or_insert_with(|| metric::stable_id(key));
                    let bucket =
                        BucketId { project: key.project.clone(), tier: at.tier, bucket: at.bucket };
                    (bucket, id, bin)
                })
                .collect();
            rolled.push((*seq, bins));
        }
        let needed: HashSet<BucketId> =
            rolled.iter().flat_map(|(_, bins)| bins.iter().map(|(at, _, _)| at.clone())).collect();
        self.held.load_missing::<BinRow>(ch, ("metric_totals", &self.node), &needed).await?;
        let changed = self.held.with(|held| {
            let mut buckets: HashMap<&BucketId, Totals<Bin>> = HashMap::new();
            for (seq, bins) in &rolled {
                for (at, id, bin) in bins {
                    let changed = buckets.entry(at).or_default();
                    totals::add(changed, held.get(at), *id, *seq, |total| total.merge(bin));
                }
            }
            let mut out = Vec::new();
            for (at, changed) in buckets {
                out.extend(changed.into_iter().map(|(id, total)| (at.clone(), id, total)));
            }
            out
        });
        if changed.is_empty() {
            return Ok(unknown);
        }
        let by_id: HashMap<u64, &MetricKey> =
            keys.iter().filter_map(|(local, key)| Some((*ids.get(local)?, &**key))).collect();
        let client = ch.client().clone().with_database(ch.database());
        let mut insert = client.insert::<BinRow>("metric_totals").await.map_err(backend)?;
        for (at, id, total) in &changed {
            let key = by_id[id];
            let bin = &total.value;
            let row = BinRow {
                project: key.project.clone(),
                name: key.name.clone(),
                tier: at.tier.code() as u8,
                bucket: at.bucket,
                series: *id,
                node: self.node.clone(),
                version: total.version,
                tag_keys: key.tags.keys().cloned().collect(),
                tag_values: key.tags.values().cloned().collect(),
                count: bin.count,
                sum: bin.sum,
                min: bin.min,
                max: bin.max,
                last: bin.last,
                last_ms: bin.last_ms,
                sketch: bin.sketch.to_bytes(),
            };
            insert.write(&row).await.map_err(backend)?;
        }
        insert.end().await.map_err(backend)?;
        self.held.commit(changed, &needed);
        Ok(unknown)
    }
}

/// One series' bin as read: its tags and the bin, every node's blocks of
/// the row's bucket merged by the caller.
pub struct ReadBin<'a> {
    pub tags: &'a [(String, String)],
    pub bucket: i64,
    pub bin: Bin,
}

/// Streams the bins of metric `name` in `project` and `tier` with buckets
/// in `[from, to)` to `visit`, every node's rows, one at a time (the
/// caller merges them: rows of one series and bucket from several blocks
/// or nodes add up).
pub async fn scan(
    ch: &ClickHouse,
    (project, name): (&str, &str),
    tier: MetricTier,
    (from, to): (i64, i64),
    mut visit: impl FnMut(ReadBin<'_>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut rows = ch
        .client()
        .query(&format!(
            "SELECT ?fields FROM {}.metric_totals FINAL \
             WHERE project = ? AND name = ? AND tier = ? AND bucket >= ? AND bucket < ?",
            ch.database()
        ))
        .bind(project)
        .bind(name)
        .bind(tier.code() as u8)
        .bind(from)
        .bind(to)
        .fetch::<BinRow>()
        .map_err(backend)?;
    while let Some(row) = rows.next().await.map_err(backend)? {
        let bin = row.bin()?;
        let tags: Vec<(String, String)> = row.tag_keys.into_iter().zip(row.tag_values).collect();
        visit(ReadBin { tags: &tags, bucket: row.bucket, bin })?;
    }
    Ok(())
}

/// The coarsest tier, whose rows every series with points has: names and
/// tags are listed from it.
const LISTING_TIER: MetricTier = MetricTier::H1;

/// Metric names of `project` with their series counts, at most `limit`.
pub async fn names(
    ch: &ClickHouse,
    project: &str,
    limit: usize,
) -> Result<Vec<(String, u64)>, StorageError> {
    ch.client()
        .query(&format!(
            "SELECT name, uniqExact(series) FROM {}.metric_totals \
             WHERE project = ? AND tier = ? GROUP BY name ORDER BY name LIMIT ?",
            ch.database()
        ))
        .bind(project)
        .bind(LISTING_TIER.code() as u8)
        .bind(limit as u64)
        .fetch_all()
        .await
        .map_err(backend)
}

/// Each tag of metric `name` in `project` with at most `values` of its
/// values, at most `tags` tags (18.16 has no `groupUniqArray(N)`: the
/// values are cut after gathering, as many as the metric's series).
pub async fn tags(
    ch: &ClickHouse,
    (project, name): (&str, &str),
    tags: usize,
    values: usize,
) -> Result<Vec<(String, Vec<String>)>, StorageError> {
    #[derive(Deserialize, clickhouse::Row)]
    struct TagRow {
        tag: String,
        values: Vec<String>,
    }
    let rows: Vec<TagRow> = ch
        .client()
        .query(&format!(
            "SELECT tag, arraySlice(groupUniqArray(tag_value), 1, {values}) AS listed \
             FROM {}.metric_totals ARRAY JOIN tag_keys AS tag, tag_values AS tag_value \
             WHERE project = ? AND name = ? AND tier = ? GROUP BY tag ORDER BY tag LIMIT ?",
            ch.database()
        ))
        .bind(project)
        .bind(name)
        .bind(LISTING_TIER.code() as u8)
        .bind(tags as u64)
        .fetch_all()
        .await
        .map_err(backend)?;
    Ok(rows.into_iter().map(|row| (row.tag, row.values)).collect())
}
