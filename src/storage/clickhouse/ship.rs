//! What a node sends to ClickHouse: the calls (and its running totals of
//! them), spans, log records and logged metric commits (as running totals)
//! it committed locally, each kind after the last one recorded as shipped,
//! in blocks. A block is inserted, then recorded in the local store; a
//! crash between the two sends the block again, and the tables (keyed by
//! node and sequence number, or versioned by it) read it once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{ClickHouse, StorageError, calls, metrics, rollups, telemetry};
use crate::aggregate::SeriesKey;
use crate::aggregate::metric::{MetricKey, decode_log};
use crate::storage::{ShipWatermarks, Storage};

/// What the local store waits to ship to `destination`
/// (`ClickHouseUrl::destination`), as `ship` keeps its watermarks.
pub async fn waiting(local: &dyn Storage, destination: &str) -> Result<u64, StorageError> {
    let shipped = |kind: &str| watermark(kind, destination);
    let after = ShipWatermarks {
        calls: local.shipped(&shipped("calls")).await?,
        spans: local.shipped(&shipped("spans")).await?,
        logs: local.shipped(&shipped("logs")).await?,
        metric_commits: local.shipped(&shipped("metrics")).await?,
    };
    local.committed_after(after).await
}

/// Tells the local store which destination its metric log waits for
/// (`None`: a single node, whose log waits for nothing but its flushes).
pub async fn keep_metric_log(
    local: &dyn Storage,
    destination: Option<&str>,
) -> Result<(), StorageError> {
    local.keep_metric_log_for(destination.map(|d| watermark("metrics", d))).await
}

/// The name the local store keeps a kind's shipping watermark under.
fn watermark(kind: &str, destination: &str) -> String {
    format!("{kind} {destination}")
}

/// Records per block, unless the caller says otherwise.
pub const BLOCK_RECORDS: usize = 50_000;

/// How many records of each kind a pass shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shipped {
    pub calls: u64,
    pub spans: u64,
    pub logs: u64,
    pub metric_commits: u64,
}

type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Ships the records of one kind after the last shipped, `block` at a time:
/// `read(after)` gives the next block with each record's sequence number,
/// `insert` sends it.
async fn ship_kind<'a, T: 'a>(
    local: &'a dyn Storage,
    to: String,
    block: usize,
    read: impl Fn(i64) -> Step<'a, Vec<(i64, T)>>,
    insert: impl Fn(Vec<(i64, T)>) -> Step<'a, ()>,
) -> Result<u64, StorageError> {
    let mut after = local.shipped(&to).await?;
    let mut shipped = 0u64;
    loop {
        let page = read(after).await?;
        let Some(last) = page.last().map(|(seq, _)| *seq) else { return Ok(shipped) };
        let n = page.len();
        insert(page).await?;
        local.mark_shipped(&to, last).await?;
        shipped += n as u64;
        after = last;
        if n < block {
            return Ok(shipped);
        }
    }
}

/// The node's registries as the shipper reads them: the keys of the usage
/// and metric series ids given (ids they no longer know left out).
pub trait Registered: Sync {
    fn series(&self, ids: &[i64]) -> HashMap<i64, Arc<SeriesKey>>;
    fn metric_series(&self, ids: &[i64]) -> HashMap<i64, Arc<MetricKey>>;
}

/// Logged metric commits per block: each holds one commit's bins.
pub const METRIC_BLOCK_COMMITS: usize = 1_000;

/// A node's running totals in ClickHouse: its usage rollups and metric
/// bins, each holding at most `max_cells` totals past what a block needs.
pub struct NodeTotals {
    pub rollups: rollups::NodeRollups,
    pub metrics: metrics::NodeMetricBins,
}

impl NodeTotals {
    pub fn new(node: &str, max_cells: usize) -> NodeTotals {
        NodeTotals {
            rollups: rollups::NodeRollups::new(node, max_cells),
            metrics: metrics::NodeMetricBins::new(node, max_cells),
        }
    }
}

/// Ships every call, span and log record committed after the last shipped
/// ones, `block` records at a time, and the logged metric commits, as the
/// node whose running totals `totals` holds; calls and metric bins go under
/// their series in `registered`.
pub async fn ship(
    local: &dyn Storage,
    ch: &ClickHouse,
    totals: &NodeTotals,
    block: usize,
    registered: &dyn Registered,
) -> Result<Shipped, StorageError> {
    let (rollups, node) = (&totals.rollups, totals.rollups.node());
    let dest = ch.destination();
    let calls = ship_kind(
        local,
        watermark("calls", &dest),
        block,
        |after| {
            Box::pin(async move {
                let page = local.calls_after(after, block).await?;
                Ok(page.into_iter().map(|c| (c.seq, c)).collect())
            })
        },
        |page| {
            Box::pin(async move {
                let page: Vec<_> = page.into_iter().map(|(_, c)| c).collect();
                let mut ids: Vec<i64> = page.iter().map(|c| c.series).collect();
                ids.sort_unstable();
                ids.dedup();
                let keys = registered.series(&ids);
                calls::insert(ch, node, &page).await?;
                rollups.insert_block(ch, &page, &keys).await
            })
        },
    )
    .await?;
    let spans = ship_kind(
        local,
        watermark("spans", &dest),
        block,
        |after| local.spans_after(after, block),
        |page| Box::pin(async move { telemetry::insert_spans(ch, node, &page).await }),
    )
    .await?;
    let logs = ship_kind(
        local,
        watermark("logs", &dest),
        block,
        |after| local.logs_after(after, block),
        |page| Box::pin(async move { telemetry::insert_logs(ch, node, &page).await }),
    )
    .await?;
    let metric_commits = ship_kind(
        local,
        watermark("metrics", &dest),
        METRIC_BLOCK_COMMITS,
        |after| local.metric_log_after(after, METRIC_BLOCK_COMMITS),
        |page| Box::pin(insert_metric_commits(ch, &totals.metrics, page, registered)),
    )
    .await?;
    Ok(Shipped { calls, spans, logs, metric_commits })
}

/// Adds logged metric commits (each its encoded 10 s bins) to the node's
/// metric totals, as one block.
async fn insert_metric_commits(
    ch: &ClickHouse,
    totals: &metrics::NodeMetricBins,
    page: Vec<(i64, Vec<u8>)>,
    registered: &dyn Registered,
) -> Result<(), StorageError> {
    let mut commits = Vec::with_capacity(page.len());
    for (seq, bytes) in &page {
        let bins = decode_log(bytes)
            .map_err(|e| StorageError::Corrupt(format!("metric log commit {seq}: {e}")))?;
        commits.push((*seq, bins));
    }
    let mut ids: Vec<i64> =
        commits.iter().flat_map(|(_, bins)| bins.iter().map(|(key, _)| key.series)).collect();
    ids.sort_unstable();
    ids.dedup();
    let keys = registered.metric_series(&ids);
    let unknown = totals.insert_block(ch, &commits, &keys).await?;
    if unknown > 0 {
        // Series are stored with the commit that made them and never
        // forgotten: this is a store that lost its series table.
        let first = page.first().map_or(0, |(seq, _)| *seq);
        tracing::warn!(unknown, first, "metric bins of unknown series not shipped");
    }
    Ok(())
}
