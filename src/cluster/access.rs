//! API keys on a node of a cluster: the node takes on the cluster's access
//! secret before it opens its access store (`join`), then every second
//! hands the keys made or revoked on it to PostgreSQL and takes on those
//! made or revoked on other nodes (`spawn`). A key made through any node
//! works on every node within about two seconds, and so does a revocation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::link::Link;
use crate::access::Access;
use crate::access::store::{adopt_secret, data_dir_secret};
use crate::storage::StorageError;

/// How often keys are exchanged.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Changes are read again this far back: nodes' clocks differ, and a key
/// written with an older time than one already read is not missed.
const CLOCK_SLACK_MS: i64 = 60_000;

/// Why a node could not take on the cluster's keys.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] crate::access::store::AccessStoreError),
    #[error("the cluster's access secret cannot be read: {0}")]
    Coordination(#[from] StorageError),
}

/// Makes the cluster's access secret this data dir's (this one's, when
/// the node is the first to start).
pub async fn join(link: &Link, data_dir: &Path) -> Result<(), JoinError> {
    let mine = data_dir_secret(data_dir)?;
    let mine = &mine;
    let cluster = link.run(|c| async move { c.access_secret(mine).await }).await?;
    Ok(adopt_secret(data_dir, &cluster)?)
}

/// What one exchange has seen so far: local changes after `pushed` went,
/// cluster changes after `pulled` came.
#[derive(Default)]
struct Seen {
    pushed: i64,
    pulled: i64,
}

/// One exchange: local changes out, the cluster's in, the keys reloaded.
async fn exchange(access: &Access, link: &Link, seen: &mut Seen) -> Result<(), StorageError> {
    let store = access.store();
    let local = |err: crate::access::store::AccessStoreError| StorageError::Backend {
        backend: "sqlite",
        message: err.to_string(),
    };
    let out = store.keys_changed_since(seen.pushed - CLOCK_SLACK_MS).map_err(local)?;
    let newest_out = out.iter().map(|k| k.changed_ms).max();
    let out = &out;
    let since = seen.pulled - CLOCK_SLACK_MS;
    let came = link
        .run(|c| async move {
            c.push_keys(out).await?;
            c.keys_changed_since(since).await
        })
        .await?;
    if let Some(newest) = newest_out {
        seen.pushed = seen.pushed.max(newest);
    }
    if let Some(newest) = came.iter().map(|k| k.changed_ms).max() {
        seen.pulled = seen.pulled.max(newest);
    }
    store.merge_keys(&came).map_err(local)?;
    access.reload().map_err(local)
}

/// Exchanges keys every second until the server stops.
pub fn spawn(access: Arc<Access>, link: Arc<Link>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut ticker = tokio::time::interval(SYNC_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // (The store's health logs when it fails and when it is back.)
            if let Err(err) = exchange(&access, &link, &mut seen).await {
                tracing::debug!(%err, "exchanging API keys with the cluster failed; retried next second");
            }
        }
    })
}
