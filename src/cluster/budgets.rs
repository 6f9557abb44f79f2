//! Budgets on a node of a cluster. Definitions, alerts and deliveries live
//! in the coordination store (`control`); each node counts the calls it
//! commits and shares its spend and reservations per budget there
//! (`coordination::shares`), reading the others' every sync. A reservation
//! runs under the budgets' locks in PostgreSQL, with the other nodes' shares
//! read fresh and this node's written before the locks go: two
//! reservations on two nodes cannot both take the last of a limit. A
//! reservation settled through another node is released by the node that
//! holds it at its next sync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::link::Link;
use crate::budgets::rule::Subject;
use crate::budgets::{Budget, Budgets, Decision, Estimate};
use crate::coordination::shares::{OtherShare, Share};
use crate::durability::Committer;
use crate::storage::{ControlStore, StorageError};
use crate::time::now_ms;

/// How often a node publishes its shares and reads the others' and the
/// definitions.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A node whose share is older than this is taken to be gone: its spend
/// still counts, its reservations no longer do.
const SHARE_STALE_MS: i64 = 30_000;
/// Word of a reservation settled elsewhere that no node took for this long
/// is dropped (the node that made it is gone, and its holds with it).
const RELEASE_KEEP_MS: i64 = 86_400_000;

pub struct SharedBudgets {
    budgets: Arc<Budgets>,
    control: Arc<dyn ControlStore>,
    /// Shares are read and written here.
    link: Arc<Link>,
    /// Reservations run in transactions, on a connection of their own, one
    /// at a time.
    reservations: tokio::sync::Mutex<Link>,
}

/// Other nodes' shares, per budget: (period key, spend, live reserved).
fn by_budget(others: Vec<OtherShare>, now: i64) -> HashMap<String, Vec<(i64, f64, f64)>> {
    let mut out: HashMap<String, Vec<(i64, f64, f64)>> = HashMap::new();
    for other in others {
        let live = other.updated_ms >= now - SHARE_STALE_MS;
        let share = other.share;
        let reserved = if live { share.reserved } else { 0.0 };
        out.entry(share.budget_id).or_default().push((share.period, share.spend, reserved));
    }
    out
}

fn shares(mine: Vec<(String, i64, f64, f64)>) -> Vec<Share> {
    mine.into_iter()
        .map(|(budget_id, period, spend, reserved)| Share { budget_id, period, spend, reserved })
        .collect()
}

impl SharedBudgets {
    pub fn new(
        budgets: Arc<Budgets>,
        control: Arc<dyn ControlStore>,
        link: Arc<Link>,
        reservations: Link,
    ) -> Self {
        Self { budgets, control, link, reservations: tokio::sync::Mutex::new(reservations) }
    }

    /// Takes on the definitions other nodes changed, publishes this node's
    /// shares and reads the others'.
    pub async fn sync(&self, committer: &Committer) -> Result<(), StorageError> {
        let stored = self.control.load_budgets().await?;
        // Per live budget: its definition as stored, and when it changed.
        let live: HashMap<String, (String, i64)> = {
            let book = self.budgets.lock();
            book.budgets()
                .map(|b| (b.id.clone(), (crate::budgets::stored(b).definition, b.updated_ms)))
                .collect()
        };
        for s in &stored {
            if live.get(&s.id).is_some_and(|(definition, _)| *definition == s.definition) {
                continue;
            }
            match serde_json::from_str::<Budget>(&s.definition) {
                // A change made here, not yet stored, is not undone.
                Ok(budget) if live.get(&s.id).is_some_and(|(_, at)| *at > budget.updated_ms) => {}
                Ok(budget) => {
                    if let Err(err) = self.budgets.adopt(committer, budget).await {
                        warn!(%err, budget = %s.id, "a budget another node stored cannot be taken on");
                    }
                }
                Err(err) => warn!(%err, budget = %s.id, "a stored budget cannot be read"),
            }
        }
        // Gone from the store: deleted on another node (a budget made here
        // in the last seconds may not be stored yet).
        let settled = now_ms() - 10_000;
        for (id, (_, at)) in &live {
            if *at < settled && !stored.iter().any(|s| &s.id == id) {
                self.budgets.forget(id);
            }
        }
        let now = now_ms();
        let boot = self.budgets.lock().boot().to_owned();
        let boot = &boot;
        let released = self
            .link
            .run(|c| async move { c.take_releases(boot, now - RELEASE_KEEP_MS).await })
            .await?;
        if !released.is_empty() {
            let mut book = self.budgets.lock();
            for id in &released {
                book.release_settled_elsewhere(id, now);
            }
        }
        let mine = shares(self.budgets.lock().shares(None, now));
        let others = self
            .link
            .run(|c| async move {
                c.publish_shares(&mine, now).await?;
                c.other_shares(None).await
            })
            .await?;
        let others = by_budget(others, now);
        let mut book = self.budgets.lock();
        let ids: Vec<String> = book.budgets().map(|b| b.id.clone()).collect();
        for id in ids {
            book.set_others(&id, others.get(&id).map_or(&[][..], Vec::as_slice), now);
        }
        Ok(())
    }

    /// After a settle of reservation `id` that another node made (or this
    /// one before a restart) recorded its usage here: leaves word for the
    /// node that holds it, which releases its hold at its next sync.
    pub async fn settled_elsewhere(&self, id: &str) -> Result<(), StorageError> {
        let Some(boot) = crate::budgets::reservation_boot(id) else { return Ok(()) };
        let now = now_ms();
        self.link.run(|c| async move { c.release_elsewhere(id, boot, now).await }).await
    }

    /// Decides a reservation for the whole cluster (see the module).
    pub async fn reserve(
        &self,
        subject: &Subject<'_>,
        estimate: Estimate,
        ttl_ms: i64,
    ) -> Result<Decision, StorageError> {
        let covering = self.budgets.lock().covering(subject);
        if covering.is_empty() {
            return Ok(self.budgets.lock().reserve(subject, estimate, ttl_ms, now_ms()));
        }
        let link = self.reservations.lock().await;
        let now = now_ms();
        let budgets = &self.budgets;
        let ids = &covering;
        link.run(|c| async move {
            c.under_budget_locks(ids, now, |others| {
                let others = by_budget(others, now);
                let mut book = budgets.lock();
                for id in ids {
                    book.set_others(id, others.get(id).map_or(&[][..], Vec::as_slice), now);
                }
                let decision = book.reserve(subject, estimate, ttl_ms, now);
                let mine = shares(book.shares(Some(ids), now));
                (decision, mine)
            })
            .await
        })
        .await
    }
}

/// Syncs every second until the server stops.
pub fn spawn(shared: Arc<SharedBudgets>, committer: Committer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SYNC_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // (The store's health logs when it fails and when it is back.)
            if let Err(err) = shared.sync(&committer).await {
                tracing::debug!(%err, "sharing budgets with the cluster failed; retried next second");
            }
        }
    })
}
