//! The `rollups` table: each shipped block of calls, rolled up in every
//! tier by bucket and series, as one row per (tier, bucket, series) with
//! the series' dimensions and Tally's encoded sketches. Rows are keyed by
//! the node and the block's first sequence number, with the block's last
//! as their version (ReplacingMergeTree): a block sent again after a crash
//! starts at the same call and holds at least the calls it held before, so
//! its rows replace the earlier ones, and blocks of several nodes add up.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::{ClickHouse, StorageError, backend};
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::sketch::Sketch;
use crate::aggregate::{Cell, SeriesKey, Tier};
use crate::model::{Operation, Status};

/// The table's statement (a migration's).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    let zstd = ddl.codec("ZSTD");
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.rollups (
            project {lc},
            tier UInt8,
            bucket Int64,
            series UInt64,
            node {lc},
            block_first Int64,
            block_last Int64,
            model {lc},
            provider Nullable(String),
            operation {lc},
            user Nullable(String),
            api_key Nullable(String),
            route Nullable(String),
            status {lc},
            cluster Nullable(String),
            tag_keys Array(String),
            tag_values Array(String),
            requests UInt64,
            input_tokens UInt64,
            output_tokens UInt64,
            total_tokens UInt64,
            cache_read_tokens UInt64,
            cache_write_tokens UInt64,
            reasoning_tokens UInt64,
            errors UInt64,
            estimated UInt64,
            unpriced UInt64,
            cost_usd Float64,
            reported_cost_usd Float64,
            latency String{zstd},
            ttft String{zstd}
        ) ENGINE = ReplacingMergeTree(block_last)
        PARTITION BY (tier, intDiv(bucket, 2592000000))
        ORDER BY (project, tier, bucket, series, node, block_first)",
        db = ddl.database,
    )]
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
struct RollupRow {
    project: String,
    tier: u8,
    bucket: i64,
    series: u64,
    node: String,
    block_first: i64,
    block_last: i64,
    model: String,
    provider: Option<String>,
    operation: String,
    user: Option<String>,
    api_key: Option<String>,
    route: Option<String>,
    status: String,
    cluster: Option<String>,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    errors: u64,
    estimated: u64,
    unpriced: u64,
    cost_usd: f64,
    reported_cost_usd: f64,
    #[serde(with = "serde_bytes")]
    latency: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ttft: Vec<u8>,
}

/// The counters of a read row (`RollupRow`, `GroupRow`: their fields are
/// named alike) as a cell whose sketches are still empty.
macro_rules! counters {
    ($row:expr) => {
        Cell {
            requests: $row.requests,
            input_tokens: $row.input_tokens,
            output_tokens: $row.output_tokens,
            total_tokens: $row.total_tokens,
            cache_read_tokens: $row.cache_read_tokens,
            cache_write_tokens: $row.cache_write_tokens,
            reasoning_tokens: $row.reasoning_tokens,
            errors: $row.errors,
            estimated: $row.estimated,
            unpriced: $row.unpriced,
            cost_usd: $row.cost_usd,
            reported_cost_usd: $row.reported_cost_usd,
            ..Cell::default()
        }
    };
}

/// Inserts the rollup of one block of a node's calls (`calls` in sequence
/// order, as shipped), every tier. Each call is rolled up under its series
/// in the node's registry (`registered`, by the call's series id), whose
/// dimensions are capped (`[rollups]`, values past a cap counted under
/// `__other__`), so what the cluster's rollups hold is bounded as the
/// node's own are; a call whose series the registry no longer knows is
/// rolled up under its own dimensions.
pub async fn insert_block(
    ch: &ClickHouse,
    node: &str,
    calls: &[SequencedCall],
    registered: &HashMap<i64, Arc<SeriesKey>>,
) -> Result<(), StorageError> {
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else { return Ok(()) };
    // Series by stable id, each key made once; stable ids by local id.
    let mut series: HashMap<u64, SeriesKey> = HashMap::new();
    let mut stable: HashMap<i64, u64> = HashMap::new();
    let mut cells: HashMap<(Tier, i64, u64), Cell> = HashMap::new();
    for stored in calls {
        let id = match registered.get(&stored.series) {
            Some(key) => *stable.entry(stored.series).or_insert_with(|| {
                let id = key.stable_id();
                series.entry(id).or_insert_with(|| SeriesKey::clone(key));
                id
            }),
            None => {
                let id = SeriesKey::stable_id_of(&stored.call);
                series.entry(id).or_insert_with(|| SeriesKey::of(&stored.call));
                id
            }
        };
        for tier in Tier::ALL {
            let bucket = tier.bucket(stored.call.time_ms);
            cells.entry((tier, bucket, id)).or_default().add_call(&stored.call);
        }
    }
    let client = ch.client().clone().with_database(ch.database());
    let mut insert = client.insert::<RollupRow>("rollups").await.map_err(backend)?;
    for ((tier, bucket, id), cell) in cells {
        let key = series[&id].clone();
        let row = RollupRow {
            series: id,
            project: key.project,
            tier: tier.code() as u8,
            bucket,
            node: node.to_owned(),
            block_first: first.seq,
            block_last: last.seq,
            model: key.model,
            provider: key.provider,
            operation: key.operation.as_str().to_owned(),
            user: key.user,
            api_key: key.api_key,
            route: key.route,
            status: key.status.as_str().to_owned(),
            cluster: key.cluster,
            tag_keys: key.tags.keys().cloned().collect(),
            tag_values: key.tags.into_values().collect(),
            requests: cell.requests,
            input_tokens: cell.input_tokens,
            output_tokens: cell.output_tokens,
            total_tokens: cell.total_tokens,
            cache_read_tokens: cell.cache_read_tokens,
            cache_write_tokens: cell.cache_write_tokens,
            reasoning_tokens: cell.reasoning_tokens,
            errors: cell.errors,
            estimated: cell.estimated,
            unpriced: cell.unpriced,
            cost_usd: cell.cost_usd,
            reported_cost_usd: cell.reported_cost_usd,
            latency: cell.latency_ms.to_bytes(),
            ttft: cell.ttft_ms.to_bytes(),
        };
        insert.write(&row).await.map_err(backend)?;
    }
    insert.end().await.map_err(backend)
}

/// The rolled-up cells of `project` in `tier` with buckets in `[from, to)`,
/// every node's blocks added up, by (bucket, series). Rows stream in and
/// merge as they come: what is held is one cell per (bucket, series), and
/// the series are the nodes' capped ones (`insert_block`).
pub async fn read(
    ch: &ClickHouse,
    project: &str,
    tier: Tier,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, SeriesKey, Cell)>, StorageError> {
    let mut rows = ch
        .client()
        .query(&format!(
            "SELECT ?fields FROM {}.rollups FINAL \
             WHERE project = ? AND tier = ? AND bucket >= ? AND bucket < ?",
            ch.database()
        ))
        .bind(project)
        .bind(tier.code() as u8)
        .bind(from)
        .bind(to)
        .fetch::<RollupRow>()
        .map_err(backend)?;
    let mut cells: HashMap<(i64, u64), (SeriesKey, Cell)> = HashMap::new();
    while let Some(row) = rows.next().await.map_err(backend)? {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!("rollups row {}/{}: {what}", row.node, row.block_first))
        };
        let mut cell = counters!(row);
        cell.latency_ms = Sketch::decode(&row.latency).map_err(|_| corrupt("latency"))?;
        cell.ttft_ms = Sketch::decode(&row.ttft).map_err(|_| corrupt("ttft"))?;
        match cells.entry((row.bucket, row.series)) {
            Entry::Occupied(mut held) => held.get_mut().1.merge(&cell),
            Entry::Vacant(slot) => {
                let key = SeriesKey {
                    operation: Operation::parse(&row.operation)
                        .ok_or_else(|| corrupt("operation"))?,
                    status: Status::parse(&row.status).ok_or_else(|| corrupt("status"))?,
                    tags: row.tag_keys.into_iter().zip(row.tag_values).collect(),
                    project: row.project,
                    model: row.model,
                    provider: row.provider,
                    user: row.user,
                    api_key: row.api_key,
                    route: row.route,
                    cluster: row.cluster,
                    projection: None,
                };
                slot.insert((key, cell));
            }
        }
    }
    // In bucket and series order (the stored series id is the key's
    // stable id: no key is hashed again).
    let mut out: Vec<((i64, u64), (SeriesKey, Cell))> = cells.into_iter().collect();
    out.sort_unstable_by_key(|(at, _)| *at);
    Ok(out.into_iter().map(|((bucket, _), (key, cell))| (bucket, key, cell)).collect())
}

/// A dimension's value in a row, by its query name (`model`, `tag.team`,
/// as `SeriesKey::dimension`), as a `Nullable(String)` expression; `None`
/// for a name no row has. Tag names are bound (`args`), never spliced.
fn dimension_sql(name: &str, args: &mut Vec<String>) -> Option<String> {
    let column = match name {
        "project" | "model" | "operation" | "status" => {
            return Some(format!("toNullable(toString({name}))"));
        }
        "provider" | "user" | "api_key" | "route" | "cluster" => name,
        _ => {
            let tag = name.strip_prefix("tag.")?;
            args.push(tag.to_owned());
            args.push(tag.to_owned());
            return Some(
                "if(has(tag_keys, ?), toNullable(tag_values[indexOf(tag_keys, ?)]), NULL)".into(),
            );
        }
    };
    Some(column.to_owned())
}

#[derive(Deserialize, clickhouse::Row)]
struct GroupRow<'a> {
    bucket: i64,
    group: Vec<Option<String>>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    errors: u64,
    estimated: u64,
    unpriced: u64,
    cost_usd: f64,
    reported_cost_usd: f64,
    /// Sketches borrowed from the read buffer (a `Vec<u8>` each would be
    /// read byte by byte, and allocated).
    #[serde(borrow)]
    latency: Vec<&'a serde_bytes::Bytes>,
    #[serde(borrow)]
    ttft: Vec<&'a serde_bytes::Bytes>,
}

/// The rolled-up cells of `project` in `tier` with buckets in `[from, to)`
/// whose dimensions pass `filters` (per dimension one of its values, `""`
/// for none), summed in ClickHouse by bucket and the values of `dims` (the
/// sketches merged here): what a query holds is one cell per bucket and
/// group, whatever the number of series or shipped blocks.
pub async fn grouped(
    ch: &ClickHouse,
    project: &str,
    (tier, from, to): (Tier, i64, i64),
    dims: &[String],
    filters: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Vec<(i64, Vec<Option<String>>, Cell)>, StorageError> {
    let mut group_args = Vec::new();
    let mut group = Vec::new();
    for dim in dims {
        group.push(dimension_sql(dim, &mut group_args).unwrap_or_else(|| "NULL".into()));
    }
    let mut filter_args = Vec::new();
    let mut conditions = String::new();
    for (dim, wanted) in filters {
        let Some(value) = dimension_sql(dim, &mut filter_args) else {
            // A dimension no row has: only `""` passes.
            if !wanted.iter().any(String::is_empty) {
                return Ok(Vec::new());
            }
            continue;
        };
        let marks = vec!["?"; wanted.len()].join(", ");
        conditions.push_str(&format!(" AND ifNull({value}, '') IN ({marks})"));
        filter_args.extend(wanted.iter().cloned());
    }
    let sql = format!(
        "SELECT bucket, [{group}] AS group_key, sum(requests), sum(input_tokens), sum(output_tokens), \
         sum(total_tokens), sum(cache_read_tokens), sum(cache_write_tokens), \
         sum(reasoning_tokens), sum(errors), sum(estimated), sum(unpriced), sum(cost_usd), \
         sum(reported_cost_usd), groupArray(latency), groupArray(ttft) \
         FROM {db}.rollups FINAL \
         WHERE project = ? AND tier = ? AND bucket >= ? AND bucket < ?{conditions} \
         GROUP BY bucket, group_key ORDER BY bucket",
        group = group.join(", "),
        db = ch.database(),
    );
    let mut query = ch.client().query(&sql);
    for arg in group_args {
        query = query.bind(arg);
    }
    query = query.bind(project).bind(tier.code() as u8).bind(from).bind(to);
    for arg in filter_args {
        query = query.bind(arg);
    }
    let mut rows = query.fetch::<GroupRow<'_>>().map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.map_err(backend)? {
        let mut cell = counters!(row);
        let corrupt = |what: &str| StorageError::Corrupt(format!("rollups {what} sketch"));
        for bytes in row.latency {
            cell.latency_ms.merge_encoded(bytes).map_err(|_| corrupt("latency"))?;
        }
        for bytes in row.ttft {
            cell.ttft_ms.merge_encoded(bytes).map_err(|_| corrupt("ttft"))?;
        }
        out.push((row.bucket, row.group, cell));
    }
    Ok(out)
}
