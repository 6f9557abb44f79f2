//! The `rollup_totals` table: what each node counted, rolled up in every
//! tier by bucket and series, as one row per (tier, bucket, series, node)
//! holding the node's running total with the series' dimensions and
//! Tally's encoded sketches. Each row's version is the sequence number of
//! the node's last call in it (ReplacingMergeTree): a node adds a shipped
//! block's calls to the totals it holds (`NodeRollups`), skipping those a
//! total already counts, so a block sent again after a crash replaces rows
//! with equal or larger ones and never counts a call twice. Merges leave one
//! row per key and node whatever the number of blocks, and the nodes' rows
//! add up. Besides each call's own series, the totals of its projections
//! are kept (per value of one dimension, and the project's total, as the
//! node's registry keeps them), marked in `projection`: a query grouped by
//! one dimension reads a few rows per bucket rather than every series.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use super::schema::Ddl;
use super::totals::{self, HeldTotals, Total, TotalRow, Totals};
use super::{ClickHouse, StorageError, backend};
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::sketch::Sketch;
use crate::aggregate::{Cell, SeriesKey, Tier};
use crate::model::{Operation, Status};

/// The columns naming a series, shared by the tables of migrations 3 and 5.
fn series_columns(lc: &str) -> String {
    format!(
        "model {lc},
            provider Nullable(String),
            operation {lc},
            user Nullable(String),
            api_key Nullable(String),
            route Nullable(String),
            status {lc},
            cluster Nullable(String),
            tag_keys Array(String),
            tag_values Array(String)"
    )
}

/// The names of a rolled-up cell's columns: twelve counters, two sketches.
const CELL_COLUMNS: [&str; 14] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "errors",
    "estimated",
    "unpriced",
    "cost_usd",
    "reported_cost_usd",
    "latency",
    "ttft",
];

/// The columns of a rolled-up cell, shared by the tables of migrations 3 and 5.
fn cell_columns(zstd: &str) -> String {
    let types = |i: usize| match i {
        0..10 => "UInt64".to_owned(),
        10..12 => "Float64".to_owned(),
        _ => format!("String{zstd}"),
    };
    let columns: Vec<String> =
        CELL_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} {}", types(i))).collect();
    columns.join(",\n            ")
}

/// Migration 3: rollups as one row per shipped block and series (replaced
/// by migration 5: their number grew with the calls shipped).
pub fn create_blocks(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.rollups (
            project {lc},
            tier UInt8,
            bucket Int64,
            series UInt64,
            node {lc},
            block_first Int64,
            block_last Int64,
            {series},
            {cells}
        ) ENGINE = ReplacingMergeTree(block_last)
        PARTITION BY (tier, intDiv(bucket, 2592000000))
        ORDER BY (project, tier, bucket, series, node, block_first)",
        db = ddl.database,
        series = series_columns(&lc),
        cells = cell_columns(&ddl.codec("ZSTD")),
    )]
}

/// Migration 5: each node's running totals. The per-block rollups of
/// migration 3 are dropped (the cluster backend was not released with them).
pub fn create(ddl: &Ddl<'_>) -> Vec<String> {
    let lc = ddl.low_cardinality("String");
    vec![
        format!("DROP TABLE IF EXISTS {}.rollups", ddl.database),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.rollup_totals (
            project {lc},
            tier UInt8,
            bucket Int64,
            series UInt64,
            projection String,
            node {lc},
            version Int64,
            {series},
            {cells}
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY (tier, intDiv(bucket, 2592000000))
        ORDER BY (project, tier, bucket, projection, series, node)",
            db = ddl.database,
            series = series_columns(&lc),
            cells = cell_columns(&ddl.codec("ZSTD")),
        ),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
struct RollupRow {
    project: String,
    tier: u8,
    bucket: i64,
    series: u64,
    projection: String,
    node: String,
    version: i64,
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

/// The `projection` column of a series: empty for the series calls land in,
/// else the dimension its projection totals by (`total` for the project's).
fn projection_column(key: &SeriesKey) -> String {
    match key.projection.as_deref() {
        None => String::new(),
        Some("") => "total".to_owned(),
        Some(dimension) => dimension.to_owned(),
    }
}

/// A bucket of `rollup_totals`.
type BucketId = totals::BucketId<Tier>;

impl TotalRow for RollupRow {
    type Sum = Cell;
    fn bucket(&self) -> i64 {
        self.bucket
    }
    fn series(&self) -> u64 {
        self.series
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn value(&self) -> Result<Cell, StorageError> {
        cell_of(self)
    }
}

/// The usage totals a node has written to `rollup_totals`, for the buckets
/// its recent blocks touched (`HeldTotals`).
pub struct NodeRollups {
    node: String,
    held: HeldTotals<BucketId, Cell>,
}

/// A block's calls under their series: for each call the stable ids of its
/// series and of that series' projections, and the keys by id.
struct Resolved<'a> {
    calls: Vec<(Arc<[u64]>, &'a SequencedCall)>,
    keys: HashMap<u64, SeriesKey>,
}

impl NodeRollups {
    pub fn new(node: &str, max_cells: usize) -> NodeRollups {
        NodeRollups { node: node.to_owned(), held: HeldTotals::new(max_cells) }
    }

    /// The node whose totals these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Totals held now (for tests and the bound).
    pub fn held_cells(&self) -> usize {
        self.held.cells()
    }

    /// Adds one block of the node's calls (`calls` in sequence order, as
    /// shipped) to its totals in every tier and writes the totals it
    /// changed. Each call is rolled up under its series in the node's
    /// registry (`registered`, by the call's series id), whose dimensions
    /// are capped (`[rollups]`, values past a cap counted under
    /// `__other__`), so the cluster's rollups are bounded as the node's own
    /// are; a call whose series the registry no longer knows is rolled up
    /// under its own dimensions.
    pub async fn insert_block(
        &self,
        ch: &ClickHouse,
        calls: &[SequencedCall],
        registered: &HashMap<i64, Arc<SeriesKey>>,
    ) -> Result<(), StorageError> {
        let resolved = resolve(calls, registered);
        let mut touched: HashSet<(&str, Tier, i64)> = HashSet::new();
        for (ids, stored) in &resolved.calls {
            let project = resolved.keys[&ids[0]].project.as_str();
            for tier in Tier::ALL {
                touched.insert((project, tier, tier.bucket(stored.call.time_ms)));
            }
        }
        let needed: HashSet<BucketId> = touched
            .into_iter()
            .map(|(project, tier, bucket)| BucketId { project: project.to_owned(), tier, bucket })
            .collect();
        self.held.load_missing::<RollupRow>(ch, ("rollup_totals", &self.node), &needed).await?;
        let changed = self.changes(&resolved);
        if changed.is_empty() {
            return Ok(());
        }
        let client = ch.client().clone().with_database(ch.database());
        let mut insert = client.insert::<RollupRow>("rollup_totals").await.map_err(backend)?;
        for (at, id, total) in &changed {
            insert
                .write(&row(&self.node, at, *id, &resolved.keys[id], total))
                .await
                .map_err(backend)?;
        }
        insert.end().await.map_err(backend)?;
        self.held.commit(changed, &needed);
        Ok(())
    }

    /// The totals a block changes: each touched total with the block's
    /// calls it does not count yet added, and their last sequence number as
    /// its version. Every bucket the block touches is held (`load_missing`).
    fn changes(&self, resolved: &Resolved<'_>) -> Vec<(BucketId, u64, Total<Cell>)> {
        self.held.with(|held| {
            // Keys borrow the calls' projects: nothing is allocated per
            // call, and a call looks its bucket up once per tier.
            type Changing<'h> = (Option<&'h Totals<Cell>>, Totals<Cell>);
            let mut buckets: FxHashMap<(&str, Tier, i64), Changing<'_>> = FxHashMap::default();
            for (ids, stored) in &resolved.calls {
                let project = resolved.keys[&ids[0]].project.as_str();
                for tier in Tier::ALL {
                    let bucket = tier.bucket(stored.call.time_ms);
                    let (before, changed) =
                        buckets.entry((project, tier, bucket)).or_insert_with(|| {
                            let at = BucketId { project: project.to_owned(), tier, bucket };
                            (held.get(&at), Totals::default())
                        });
                    for id in ids.iter() {
                        totals::add(changed, *before, *id, stored.seq, |cell| {
                            cell.add_call(&stored.call)
                        });
                    }
                }
            }
            let mut out = Vec::new();
            for ((project, tier, bucket), (_, changed)) in buckets {
                let at = BucketId { project: project.to_owned(), tier, bucket };
                out.extend(changed.into_iter().map(|(id, total)| (at.clone(), id, total)));
            }
            out
        })
    }
}

fn corrupt_row(row: &RollupRow, what: &str) -> StorageError {
    StorageError::Corrupt(format!(
        "rollup_totals row of node {} (tier {}, bucket {}, series {}): {what}",
        row.node, row.tier, row.bucket, row.series
    ))
}

/// A stored row's cell, sketches decoded.
fn cell_of(row: &RollupRow) -> Result<Cell, StorageError> {
    let mut cell = counters!(row);
    cell.latency_ms = Sketch::decode(&row.latency).map_err(|_| corrupt_row(row, "latency"))?;
    cell.ttft_ms = Sketch::decode(&row.ttft).map_err(|_| corrupt_row(row, "ttft"))?;
    Ok(cell)
}

/// Each call's series (its registered one, else its own dimensions) and
/// that series' projections.
fn resolve<'a>(
    calls: &'a [SequencedCall],
    registered: &HashMap<i64, Arc<SeriesKey>>,
) -> Resolved<'a> {
    let mut keys: HashMap<u64, SeriesKey> = HashMap::new();
    let mut with_projections = |key: SeriesKey| -> Arc<[u64]> {
        let mut ids = vec![key.stable_id()];
        for projection in key.projections() {
            let id = projection.stable_id();
            ids.push(id);
            keys.entry(id).or_insert(projection);
        }
        keys.entry(ids[0]).or_insert(key);
        ids.into()
    };
    let mut by_local: HashMap<i64, Arc<[u64]>> = HashMap::new();
    let mut by_stable: HashMap<u64, Arc<[u64]>> = HashMap::new();
    let mut out = Vec::with_capacity(calls.len());
    for stored in calls {
        let ids = match registered.get(&stored.series) {
            Some(key) => by_local
                .entry(stored.series)
                .or_insert_with(|| with_projections(SeriesKey::clone(key)))
                .clone(),
            None => by_stable
                .entry(SeriesKey::stable_id_of(&stored.call))
                .or_insert_with(|| with_projections(SeriesKey::of(&stored.call)))
                .clone(),
        };
        out.push((ids, stored));
    }
    Resolved { calls: out, keys }
}

/// The row of one total.
fn row(node: &str, at: &BucketId, series: u64, key: &SeriesKey, total: &Total<Cell>) -> RollupRow {
    let cell = &total.value;
    RollupRow {
        project: at.project.clone(),
        tier: at.tier.code() as u8,
        bucket: at.bucket,
        series,
        projection: projection_column(key),
        node: node.to_owned(),
        version: total.version,
        model: key.model.clone(),
        provider: key.provider.clone(),
        operation: key.operation.as_str().to_owned(),
        user: key.user.clone(),
        api_key: key.api_key.clone(),
        route: key.route.clone(),
        status: key.status.as_str().to_owned(),
        cluster: key.cluster.clone(),
        tag_keys: key.tags.keys().cloned().collect(),
        tag_values: key.tags.values().cloned().collect(),
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
    }
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
            "SELECT ?fields FROM {}.rollup_totals FINAL \
             WHERE project = ? AND tier = ? AND bucket >= ? AND bucket < ? AND projection = ''",
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
        let corrupt = |what: &str| corrupt_row(&row, what);
        let cell = cell_of(&row)?;
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
/// for none), summed in ClickHouse by bucket (unless `per_bucket` is
/// false: then by group alone, each under `from`) and the values of `dims`
/// (the sketches merged here), from the projection rows of the one
/// dimension involved if there is one (`serving_projection`): what a query
/// holds is one cell per bucket and group, whatever the number of series
/// or shipped blocks.
pub async fn grouped(
    ch: &ClickHouse,
    project: &str,
    (tier, from, to): (Tier, i64, i64),
    (dims, per_bucket): (&[String], bool),
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
    // One dimension's projection rows when they answer the query.
    let projection = match crate::aggregate::series::serving_projection(dims, filters) {
        Some("") => "total",
        Some(dimension) => dimension,
        None => "",
    };
    filter_args.push(projection.to_owned());
    conditions.push_str(" AND projection = ?");
    // Each node's latest total per key (what FINAL would read, but FINAL on
    // 18.16 reads the whole key range, not only the projection's rows),
    // then summed by group. Aliases are not column names: an alias would
    // stand for its column in WHERE too.
    let at = if per_bucket { "b".to_owned() } else { format!("toInt64({from})") };
    let latest = CELL_COLUMNS
        .iter()
        .map(|c| format!("argMax({c}, version) AS v_{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sums = CELL_COLUMNS[..12].iter().map(|c| format!("sum(v_{c})")).collect::<Vec<_>>();
    let sql = format!(
        "SELECT {at} AS at, group_key, {sums}, groupArray(v_latency), groupArray(v_ttft) \
         FROM (SELECT bucket AS b, argMax([{group}], version) AS group_key, {latest} \
               FROM {db}.rollup_totals \
               WHERE project = ? AND tier = ? AND bucket >= ? AND bucket < ?{conditions} \
               GROUP BY bucket, series, node) \
         GROUP BY at, group_key ORDER BY at",
        sums = sums.join(", "),
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
