//! The shipper: a task that copies what the node committed to ClickHouse,
//! a pass every `cluster.ship_interval`, connecting (and migrating the
//! schema) when it has no connection, and sends the claims' waiting
//! confirmations when ingest is quiet. What fails is retried next pass; the
//! local store keeps everything until it is shipped.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::{Cluster, Part};
use std::collections::HashMap;

use crate::aggregate::SeriesKey;
use crate::aggregate::metric::{MetricKey, MetricRegistry};
use crate::aggregate::rollup::RollupEngine;
use crate::storage::Storage;
use crate::storage::clickhouse::ship::NodeTotals;
use crate::storage::clickhouse::{ClickHouse, schema, ship};
use crate::time::now_ms;

/// Connects to ClickHouse and brings its schema up to date.
async fn connect(cluster: &Cluster) -> Result<ClickHouse, crate::storage::StorageError> {
    let ch = ClickHouse::connect(&cluster.clickhouse).await?;
    let applied = schema::migrate(&ch, schema::MIGRATIONS).await?;
    if !applied.is_empty() {
        info!(?applied, database = ch.database(), "ClickHouse schema migrated");
    }
    Ok(ch)
}

/// Longest a connection attempt may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// Longest one pass may ship for: a pass cut short keeps the blocks it
/// recorded as shipped, and the next pass goes on from there, on a new
/// connection (a server that stopped answering holds none).
const SHIP_DEADLINE: Duration = Duration::from_secs(120);

/// The node's usage and metric series registries, which the shipper names
/// shipped rollups and metric bins by.
pub struct Registries {
    pub engine: Arc<RollupEngine>,
    pub metrics: Arc<MetricRegistry>,
}

impl ship::Registered for Registries {
    fn series(&self, ids: &[i64]) -> HashMap<i64, Arc<SeriesKey>> {
        self.engine.series_keys(ids)
    }

    fn metric_series(&self, ids: &[i64]) -> HashMap<i64, Arc<MetricKey>> {
        self.metrics.keys(ids)
    }
}

/// One pass: confirms claims, then ships everything committed so far,
/// named by the node's `registries`, its calls and metric bins added to its
/// running `totals`.
pub async fn pass(
    cluster: &Cluster,
    local: &dyn Storage,
    registries: &Registries,
    totals: &NodeTotals,
    ch: &mut Option<ClickHouse>,
) {
    // First, whatever ClickHouse's state: other nodes wait on these.
    if let Some(claims) = &cluster.claims
        && let Err(err) = claims.confirm_waiting().await
    {
        tracing::debug!(%err, "confirming claims failed; retried with the next round trip");
    }
    if ch.is_none() {
        match tokio::time::timeout(CONNECT_DEADLINE, connect(cluster)).await {
            Ok(Ok(connected)) => *ch = Some(connected),
            Ok(Err(err)) => {
                cluster.health.failing(Part::ClickHouse, &err.to_string());
                return;
            }
            Err(_) => {
                let reason = format!("no answer within {CONNECT_DEADLINE:?}");
                cluster.health.failing(Part::ClickHouse, &reason);
                return;
            }
        }
    }
    let connected = ch.as_ref().expect("connected above");
    let started = now_ms();
    let shipping = ship::ship(local, connected, totals, cluster.settings.block_records, registries);
    match tokio::time::timeout(SHIP_DEADLINE, shipping).await.unwrap_or_else(|_| {
        Err(crate::storage::StorageError::Backend {
            backend: "clickhouse",
            message: format!("shipping did not finish within {SHIP_DEADLINE:?}"),
        })
    }) {
        Ok(shipped) => {
            cluster.health.ok(Part::ClickHouse);
            let records = shipped.calls + shipped.spans + shipped.logs + shipped.metric_commits;
            cluster.outbox.shipped(records, true, started);
        }
        Err(err) => {
            // Logged by the health when it starts failing, not every pass.
            cluster.health.failing(Part::ClickHouse, &err.to_string());
            *ch = None;
        }
    }
}

/// Runs passes until `stop` resolves.
pub async fn run(
    cluster: Arc<Cluster>,
    local: Arc<dyn Storage>,
    registries: Registries,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut ch = None;
    let totals = NodeTotals::new(&cluster.node, cluster.settings.rollup_cache_cells);
    let mut ticker = tokio::time::interval(cluster.settings.ship_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => pass(&cluster, &*local, &registries, &totals, &mut ch).await,
        }
    }
}
