//! What a node sends to ClickHouse: the calls it committed locally, after
//! the last one recorded as shipped, in blocks. A block is inserted, then
//! recorded in the local store; a crash between the two sends the block
//! again, and the calls table (keyed by node and sequence number) reads it
//! once.

use super::{ClickHouse, StorageError, calls};
use crate::storage::LedgerStore;

/// Calls per block, unless the caller says otherwise.
pub const BLOCK_CALLS: usize = 50_000;

/// Ships every call committed after the last shipped one, `block` calls at
/// a time, as `node`; returns how many were shipped.
pub async fn ship_calls(
    local: &dyn LedgerStore,
    ch: &ClickHouse,
    node: &str,
    block: usize,
) -> Result<u64, StorageError> {
    let to = ch.destination();
    let mut after = local.shipped(&to).await?;
    let mut shipped = 0u64;
    loop {
        let page = local.calls_after(after, block).await?;
        let Some(last) = page.last().map(|c| c.seq) else { return Ok(shipped) };
        calls::insert(ch, node, &page).await?;
        local.mark_shipped(&to, last).await?;
        shipped += page.len() as u64;
        after = last;
        if page.len() < block {
            return Ok(shipped);
        }
    }
}
