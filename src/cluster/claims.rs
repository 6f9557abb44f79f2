//! The node's side of the cluster's claims: each commit's call keys
//! claimed in the coordination store before the local commit, the
//! confirmations of committed calls sent with the next claim, and, at
//! start, claims a crash left unconfirmed settled against the local store.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Health, Part};
use crate::coordination::Coordination;
use crate::coordination::claims::Claim;
use crate::durability::shared::{SharedClaims, Verdict};
use crate::model::LlmCall;
use crate::storage::{CallKey, LedgerStore, StorageError};

/// Most confirmations sent in one round trip; more wait for the next.
const CONFIRM_BATCH: usize = 100_000;

pub struct ClusterClaims {
    url: String,
    node: String,
    timeout: std::time::Duration,
    /// The connection, made again after the server went away.
    connection: tokio::sync::Mutex<Option<Arc<Coordination>>>,
    /// Keys of calls committed here, to confirm with the next round trip.
    unconfirmed: Mutex<Vec<(String, String)>>,
    health: Arc<Health>,
    /// The local store, where claims left unconfirmed are looked up.
    local: std::sync::OnceLock<Arc<dyn LedgerStore>>,
    /// Whether those were settled: before that, nothing is claimed (a
    /// claim of this run could be taken for one a crash left).
    settled: tokio::sync::Mutex<bool>,
}

fn unavailable(err: impl std::fmt::Display) -> StorageError {
    StorageError::Backend { backend: "postgresql", message: err.to_string() }
}

fn keys_of(call: &LlmCall) -> impl Iterator<Item = (String, String)> + '_ {
    CallKey::of(call).into_iter().map(|key| (call.project.clone(), key.text()))
}

impl ClusterClaims {
    pub fn new(url: &str, node: &str, timeout: std::time::Duration, health: Arc<Health>) -> Self {
        Self {
            url: url.to_owned(),
            node: node.to_owned(),
            timeout,
            connection: tokio::sync::Mutex::new(None),
            unconfirmed: Mutex::new(Vec::new()),
            health,
            local: std::sync::OnceLock::new(),
            settled: tokio::sync::Mutex::new(false),
        }
    }

    /// Gives the claims the local store (once, at start).
    pub fn set_local(&self, local: Arc<dyn LedgerStore>) {
        let _ = self.local.set(local);
    }

    /// The live connection, connecting (and migrating) when there is none.
    async fn coordination(&self) -> Result<Arc<Coordination>, StorageError> {
        let mut connection = self.connection.lock().await;
        if let Some(live) = connection.as_ref().filter(|c| !c.is_closed()) {
            return Ok(live.clone());
        }
        *connection = None;
        match Coordination::connect(&self.url, &self.node, self.timeout).await {
            Ok(made) => {
                let made = Arc::new(made);
                *connection = Some(made.clone());
                Ok(made)
            }
            Err(err) => {
                self.health.failing(Part::Coordination, &err.to_string());
                Err(unavailable(err))
            }
        }
    }

    /// Runs one round trip, keeping the health of the store up to date.
    async fn round_trip(&self, keys: &[(String, String)]) -> Result<Vec<Claim>, StorageError> {
        let coordination = self.coordination().await?;
        {
            let mut settled = self.settled.lock().await;
            if !*settled {
                let local = self.local.get().ok_or_else(|| unavailable("no local store"))?;
                let n = self.settle(&coordination, &**local).await?;
                if n > 0 {
                    tracing::info!(claims = n, "claims left unconfirmed by a crash settled");
                }
                *settled = true;
            }
        }
        let confirm: Vec<(String, String)> = {
            let mut waiting = self.unconfirmed.lock().expect("unpoisoned");
            let n = waiting.len().min(CONFIRM_BATCH);
            waiting.drain(..n).collect()
        };
        match coordination.claim(keys, &confirm).await {
            Ok(claims) => {
                self.health.ok(Part::Coordination);
                Ok(claims)
            }
            Err(err) => {
                // Sent again with the next round trip.
                self.unconfirmed.lock().expect("unpoisoned").extend(confirm);
                self.health.failing(Part::Coordination, &err.to_string());
                Err(unavailable(err))
            }
        }
    }

    /// Sends the confirmations waiting (the shipper calls this when ingest
    /// is quiet, so that other nodes need not wait for this node's next
    /// commit).
    pub async fn confirm_waiting(&self) -> Result<(), StorageError> {
        if self.unconfirmed.lock().expect("unpoisoned").is_empty() {
            return Ok(());
        }
        self.round_trip(&[]).await.map(drop)
    }

    /// Settles the claims this node left unconfirmed (a crash between a
    /// claim and its confirmation): those of calls in the local store are
    /// confirmed, the others given back.
    async fn settle(
        &self,
        coordination: &Coordination,
        local: &dyn LedgerStore,
    ) -> Result<u64, StorageError> {
        let mut settled = 0u64;
        loop {
            let open = coordination.unconfirmed(10_000).await.map_err(unavailable)?;
            if open.is_empty() {
                return Ok(settled);
            }
            let parsed: Vec<(String, CallKey)> = open
                .iter()
                .filter_map(|(p, k)| CallKey::parse(k).map(|key| (p.clone(), key)))
                .collect();
            let held = local.holds(parsed).await?;
            let (mut confirm, mut give_back) = (Vec::new(), Vec::new());
            for (key, held) in open.into_iter().zip(held) {
                if held { confirm.push(key) } else { give_back.push(key) }
            }
            settled += (confirm.len() + give_back.len()) as u64;
            coordination.claim(&[], &confirm).await.map_err(unavailable)?;
            coordination.release(&give_back).await.map_err(unavailable)?;
        }
    }
}

#[async_trait]
impl SharedClaims for ClusterClaims {
    async fn claim(&self, calls: &[&LlmCall]) -> Result<Vec<Verdict>, StorageError> {
        let per_call: Vec<Vec<(String, String)>> =
            calls.iter().map(|call| keys_of(call).collect()).collect();
        let keys: Vec<(String, String)> = per_call.iter().flatten().cloned().collect();
        if keys.is_empty() && self.unconfirmed.lock().expect("unpoisoned").is_empty() {
            return Ok(vec![Verdict::Count; calls.len()]);
        }
        let claims = self.round_trip(&keys).await?;
        let mut claims = claims.into_iter();
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

    fn committed(&self, calls: &[&LlmCall]) {
        let keys: Vec<(String, String)> = calls.iter().flat_map(|c| keys_of(c)).collect();
        if !keys.is_empty() {
            self.unconfirmed.lock().expect("unpoisoned").extend(keys);
        }
    }
}
