//! The node's side of the cluster's claims: each commit's call keys claimed
//! in the coordination store as one batch before the local commit, the
//! batch confirmed with the next round trip once committed (or given back
//! when the commit failed), and, at start, the batches a crash left
//! unconfirmed settled against the local store.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Health;
use crate::coordination::Coordination;
use crate::coordination::claims::Claim;
use crate::durability::shared::{SharedClaims, Verdict};
use crate::model::LlmCall;
use crate::storage::{CallKey, LedgerStore, StorageError};

pub struct ClusterClaims {
    link: super::link::Link,
    /// The batch of the commit in flight, until it is committed or not.
    in_flight: Mutex<Option<i64>>,
    /// Batches committed here, to confirm with the next round trip.
    committed: Mutex<Vec<i64>>,
    /// Batches whose commit failed, to give back.
    failed: Mutex<Vec<i64>>,
    /// The local store, where batches left unconfirmed are looked up.
    local: std::sync::OnceLock<Arc<dyn LedgerStore>>,
    /// Whether those were settled: before that, nothing is claimed (a
    /// claim of this run could be taken for one a crash left).
    settled: tokio::sync::Mutex<bool>,
}

fn keys_of(call: &LlmCall) -> impl Iterator<Item = (String, String)> + '_ {
    CallKey::of(call).into_iter().map(|key| (call.project.clone(), key.text()))
}

fn take(list: &Mutex<Vec<i64>>) -> Vec<i64> {
    std::mem::take(&mut *list.lock().expect("unpoisoned"))
}

impl ClusterClaims {
    pub fn new(url: &str, node: &str, timeout: std::time::Duration, health: Arc<Health>) -> Self {
        Self {
            link: super::link::Link::new(url, node, timeout, health),
            in_flight: Mutex::new(None),
            committed: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            local: std::sync::OnceLock::new(),
            settled: tokio::sync::Mutex::new(false),
        }
    }

    /// Gives the claims the local store (once, at start).
    pub fn set_local(&self, local: Arc<dyn LedgerStore>) {
        let _ = self.local.set(local);
    }

    /// The live connection, connecting (and migrating) when there is none,
    /// with the batches a crash left settled first.
    async fn coordination(&self) -> Result<Arc<Coordination>, StorageError> {
        let coordination = self.link.get().await?;
        let mut settled = self.settled.lock().await;
        if !*settled {
            let local = self.local.get().ok_or_else(|| self.link.failed("no local store"))?;
            let n = self.settle(&coordination, &**local).await?;
            if n > 0 {
                tracing::info!(batches = n, "claims left unconfirmed by a crash settled");
            }
            *settled = true;
        }
        Ok(coordination)
    }

    /// Confirms the batches committed and gives back those that failed;
    /// the first time, settles what a crash left. (The shipper calls this
    /// every pass, so that other nodes need not wait for this node's next
    /// commit to hear of its last.)
    pub async fn confirm_waiting(&self) -> Result<(), StorageError> {
        if !*self.settled.lock().await {
            // At start: what a crash left is settled before anything else.
            self.coordination().await?;
        }
        let (committed, failed) = (take(&self.committed), take(&self.failed));
        if committed.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let result = async {
            let coordination = self.coordination().await?;
            coordination.confirm(&committed).await.map_err(|e| self.link.failed(e))?;
            coordination.release(&failed).await.map_err(|e| self.link.failed(e))?;
            self.link.answered();
            Ok(())
        }
        .await;
        if result.is_err() {
            self.committed.lock().expect("unpoisoned").extend(committed);
            self.failed.lock().expect("unpoisoned").extend(failed);
        }
        result
    }

    /// Settles the batches this node left unconfirmed: a batch's calls
    /// were committed in one local transaction, so a batch whose keys the
    /// local store holds is confirmed, and one whose keys it lacks is
    /// given back. Returns how many it settled.
    async fn settle(
        &self,
        coordination: &Coordination,
        local: &dyn LedgerStore,
    ) -> Result<u64, StorageError> {
        let mut settled = 0u64;
        loop {
            let open = coordination.unconfirmed(1_000).await.map_err(|e| self.link.failed(e))?;
            if open.is_empty() {
                return Ok(settled);
            }
            let (mut confirm, mut give_back) = (Vec::new(), Vec::new());
            for (batch, keys) in open {
                let parsed: Vec<(String, CallKey)> = keys
                    .iter()
                    .filter_map(|(p, k)| CallKey::parse(k).map(|key| (p.clone(), key)))
                    .collect();
                let held = local.holds(parsed).await?;
                if held.contains(&true) { confirm.push(batch) } else { give_back.push(batch) }
            }
            settled += (confirm.len() + give_back.len()) as u64;
            coordination.confirm(&confirm).await.map_err(|e| self.link.failed(e))?;
            coordination.release(&give_back).await.map_err(|e| self.link.failed(e))?;
        }
    }
}

#[async_trait]
impl SharedClaims for ClusterClaims {
    async fn claim(&self, calls: &[&LlmCall]) -> Result<Vec<Verdict>, StorageError> {
        let per_call: Vec<Vec<(String, String)>> =
            calls.iter().map(|call| keys_of(call).collect()).collect();
        let keys: Vec<(String, String)> = per_call.iter().flatten().cloned().collect();
        if keys.is_empty() {
            return Ok(vec![Verdict::Count; calls.len()]);
        }
        let coordination = self.coordination().await?;
        let confirm = take(&self.committed);
        let claimed = match coordination.claim(&keys, &confirm).await {
            Ok(claimed) => {
                self.link.answered();
                claimed
            }
            Err(err) => {
                // Sent again with the next round trip.
                self.committed.lock().expect("unpoisoned").extend(confirm);
                return Err(self.link.failed(err));
            }
        };
        *self.in_flight.lock().expect("unpoisoned") = Some(claimed.batch);
        let mut claims = claimed.claims.into_iter();
        Ok(per_call
            .iter()
            .map(|keys| {
                let mut verdict = Verdict::Count;
                for claim in claims.by_ref().take(keys.len()) {
                    match claim {
                        Claim::Taken | Claim::Ours => {}
                        Claim::Theirs { committed: true, .. } => {
                            if verdict == Verdict::Count {
                                verdict = Verdict::Duplicate;
                            }
                        }
                        Claim::Theirs { node, committed: false } => {
                            verdict = Verdict::Pending(node);
                        }
                    }
                }
                verdict
            })
            .collect())
    }

    fn committed(&self) {
        if let Some(batch) = self.in_flight.lock().expect("unpoisoned").take() {
            self.committed.lock().expect("unpoisoned").push(batch);
        }
    }

    fn abandoned(&self) {
        if let Some(batch) = self.in_flight.lock().expect("unpoisoned").take() {
            self.failed.lock().expect("unpoisoned").push(batch);
        }
    }
}
