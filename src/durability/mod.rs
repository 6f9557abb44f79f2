//! The durable append: group commit, idempotency, replay after a crash, and
//! the jobs that must be serialised with writes (rollup flush, retention,
//! re-pricing).
//!
//! Every write goes through one committer task. Requests queue their calls;
//! the committer takes everything queued as one group, appends it in one
//! store transaction, applies the new calls to the rollup engine and only
//! then answers each request. Under load the groups grow, so the cost of a
//! commit is shared by many requests.

mod committer;
mod reprice;
pub mod shared;

pub use committer::{
    CommitError, CommitObserver, Committer, CommitterConfig, Made, Outcome, Prepared, Records,
};
pub use reprice::RepriceReport;

use crate::aggregate::RollupEngine;
use crate::aggregate::metric::{MetricRegistry, decode_log};
use crate::storage::{LedgerStore, MetricStore, RollupStore, StorageError};

/// Rebuilds the rollup engine from the store: the series registry, and every
/// call past the rollup watermark applied to the open buckets again.
pub async fn recover<S: RollupStore + LedgerStore + ?Sized>(
    storage: &S,
) -> Result<(RollupEngine, u64), StorageError> {
    const REPLAY_PAGE: usize = 50_000;
    let series = storage.load_series().await?;
    let watermark = storage.rollup_watermark().await?;
    let engine = RollupEngine::new(series, watermark);
    let mut after = watermark;
    let mut replayed = 0u64;
    loop {
        let page = storage.calls_after(after, REPLAY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        replayed += page.len() as u64;
        engine.apply(page.iter().map(|c| (c.seq, c.series, &c.call)));
        if page.len() < REPLAY_PAGE {
            break;
        }
    }
    Ok((engine, replayed))
}

/// Rebuilds the metric registry from the store: its series, and the bins of
/// every metric commit logged after the last flush, open again.
pub async fn recover_metrics(
    storage: &dyn MetricStore,
    limits: crate::aggregate::metric::MetricLimits,
) -> Result<(MetricRegistry, u64), StorageError> {
    const REPLAY_PAGE: usize = 256;
    let watermark = storage.metric_watermark().await?;
    let series = storage.load_metric_series().await?;
    let registry = MetricRegistry::new(series, limits, watermark);
    let mut after = watermark;
    let mut replayed = 0u64;
    loop {
        let page = storage.metric_log_after(after, REPLAY_PAGE).await?;
        for (seq, bytes) in &page {
            let bins = decode_log(bytes)
                .map_err(|e| StorageError::Corrupt(format!("metric log entry {seq}: {e}")))?;
            registry.apply(&bins, *seq);
            after = *seq;
            replayed += 1;
        }
        if page.len() < REPLAY_PAGE {
            break;
        }
    }
    Ok((registry, replayed))
}
