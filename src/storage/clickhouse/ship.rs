//! What a node sends to ClickHouse: the calls (and each block's rollup),
//! spans and log records it committed locally, each kind after the last one
//! recorded as shipped, in blocks. A block is inserted, then recorded in the local store; a crash
//! between the two sends the block again, and the tables (keyed by node and
//! sequence number) read it once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{ClickHouse, StorageError, calls, rollups, telemetry};
use crate::aggregate::SeriesKey;
use crate::storage::LedgerStore;

/// What the local store waits to ship to `destination`
/// (`ClickHouseUrl::destination`), as `ship` keeps its watermarks.
pub async fn waiting(local: &dyn LedgerStore, destination: &str) -> Result<u64, StorageError> {
    let mut after = [0i64; 3];
    for (seq, kind) in after.iter_mut().zip(["calls", "spans", "logs"]) {
        *seq = local.shipped(&watermark(kind, destination)).await?;
    }
    local.committed_after(after[0], after[1], after[2]).await
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
}

type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Ships the records of one kind after the last shipped, `block` at a time:
/// `read(after)` gives the next block with each record's sequence number,
/// `insert` sends it.
async fn ship_kind<'a, T: 'a>(
    local: &'a dyn LedgerStore,
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

/// The node's series registry as the shipper reads it: the keys of the
/// series ids given (ids it no longer knows left out).
pub type Registered<'a> = &'a (dyn Fn(&[i64]) -> HashMap<i64, Arc<SeriesKey>> + Sync);

/// Ships every call, span and log record committed after the last shipped
/// ones, `block` records at a time, as `node`; calls are rolled up under
/// their series in `registered`.
pub async fn ship(
    local: &dyn LedgerStore,
    ch: &ClickHouse,
    node: &str,
    block: usize,
    registered: Registered<'_>,
) -> Result<Shipped, StorageError> {
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
                let keys = registered(&ids);
                calls::insert(ch, node, &page).await?;
                rollups::insert_block(ch, node, &page, &keys).await
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
    Ok(Shipped { calls, spans, logs })
}
