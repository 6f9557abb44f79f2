//! The `metric_bins` table: each shipped block of a node's metric commits
//! (its logged 10 s bins) rolled up in every metric tier, one row per
//! (tier, bucket, series) with the series' name and tags and the bin's
//! count, sum, min, max, last value and encoded sketch. Keyed like the
//! usage rollups: by node and the block's first commit, its last as the
//! version (ReplacingMergeTree), so that a block sent again after a crash
//! replaces its earlier rows and blocks of several nodes add up.
//! Partitioned by tier and day (10 s and 1 min bins, kept for hours and
//! days) or 30 days (15 min and 1 h bins), for retention to drop.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::{ClickHouse, StorageError, backend};
use crate::aggregate::metric::{self, Bin, BinKey, MetricKey, MetricTier};
use crate::aggregate::sketch::Sketch;

/// The table's statement (a migration's).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    let zstd = ddl.codec("ZSTD");
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
            tag_keys Array(String),
            tag_values Array(String),
            count UInt64,
            sum Float64,
            min Float64,
            max Float64,
            last Float64,
            last_ms Int64,
            sketch String{zstd}
        ) ENGINE = ReplacingMergeTree(block_last)
        PARTITION BY (tier, intDiv(bucket, if(tier <= 1, 86400000, 2592000000)))
        ORDER BY (project, name, tier, bucket, series, node, block_first)",
        db = ddl.database,
    )]
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
struct BinRow {
    project: String,
    name: String,
    tier: u8,
    bucket: i64,
    series: u64,
    node: String,
    block_first: i64,
    block_last: i64,
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

/// Inserts one block of a node's logged metric commits `first..=last`:
/// their 10 s bins (`fine`, by the node's series ids) rolled up in every
/// tier, each series named by its key in `keys`. Bins of series `keys`
/// does not hold are left out and counted in the answer.
pub async fn insert_block(
    ch: &ClickHouse,
    node: &str,
    (first, last): (i64, i64),
    fine: &[(BinKey, Bin)],
    keys: &HashMap<i64, Arc<MetricKey>>,
) -> Result<usize, StorageError> {
    let mut merged: HashMap<BinKey, Bin> = HashMap::new();
    for (key, bin) in fine {
        merged.entry(*key).or_default().merge(bin);
    }
    let coarse = metric::roll_up(merged.iter(), &MetricTier::ALL[1..]);
    merged.extend(coarse);
    let client = ch.client().clone().with_database(ch.database());
    let mut insert = client.insert::<BinRow>("metric_bins").await.map_err(backend)?;
    let mut unknown = 0;
    let mut ids: HashMap<i64, u64> = HashMap::new();
    for (at, bin) in merged {
        let Some(key) = keys.get(&at.series) else {
            unknown += 1;
            continue;
        };
        let series = *ids.entry(at.series).or_insert_with(|| metric::stable_id(key));
        let row = BinRow {
            project: key.project.clone(),
            name: key.name.clone(),
            tier: at.tier.code() as u8,
            bucket: at.bucket,
            series,
            node: node.to_owned(),
            block_first: first,
            block_last: last,
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
    Ok(unknown)
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
            "SELECT ?fields FROM {}.metric_bins FINAL \
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
        let sketch = Sketch::decode(&row.sketch).map_err(|_| {
            StorageError::Corrupt(format!(
                "metric_bins row {}/{}: sketch",
                row.node, row.block_first
            ))
        })?;
        let tags: Vec<(String, String)> = row.tag_keys.into_iter().zip(row.tag_values).collect();
        let bin = Bin {
            count: row.count,
            sum: row.sum,
            min: row.min,
            max: row.max,
            last: row.last,
            last_ms: row.last_ms,
            sketch,
        };
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
            "SELECT name, uniqExact(series) FROM {}.metric_bins \
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
             FROM {}.metric_bins ARRAY JOIN tag_keys AS tag, tag_values AS tag_value \
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
