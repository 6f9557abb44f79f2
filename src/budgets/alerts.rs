//! Alerts: each crossed threshold is recorded once in the store, then POSTed
//! to the budget's webhooks with an HMAC-SHA256 signature, and retried with
//! exponential backoff until delivered or given up on; a webhook whose
//! target may not be reached (`target`) is marked refused at once. One
//! background task does both; because it works from the store, a restart
//! resumes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::book::Crossing;
use super::webhook::{self, DeliveryConfig, Outcome};
use crate::storage::{ControlStore, DeliveryUpdate, DueDelivery, NewAlert, StorageError};
use crate::time::now_ms;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-tally-signature";
/// The header carrying the alert's stable id, for receivers to dedupe on.
pub const ALERT_ID_HEADER: &str = "x-tally-alert-id";

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt; doubled after each further one.
    pub initial_ms: i64,
    /// Longest wait between attempts.
    pub max_ms: i64,
    /// A delivery still failing this long after the crossing is given up.
    pub give_up_after_ms: i64,
}

impl RetryPolicy {
    /// Wait before the attempt following `attempts` failed ones.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let doubled = self.initial_ms.saturating_mul(1i64 << attempts.saturating_sub(1).min(40));
        doubled.min(self.max_ms)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub recorded: AtomicU64,
    pub delivered: AtomicU64,
    pub attempts_failed: AtomicU64,
    pub given_up: AtomicU64,
    /// Deliveries not attempted: their target may not be reached.
    pub refused: AtomicU64,
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An alert's stable id: its budget, period and threshold (what makes it
/// unique in the store), the same on every delivery attempt.
pub fn alert_key(budget_id: &str, period_start: i64, threshold: f64) -> String {
    format!("{budget_id}/{period_start}/{threshold}")
}

/// The stored alert (and its webhook body) for a crossing.
pub fn new_alert(c: &Crossing) -> NewAlert {
    let b = &c.budget;
    let alert_id = alert_key(&b.id, c.period_start, c.threshold);
    let body = json!({
        "alert_id": alert_id,
        "budget_id": b.id,
        "budget_name": b.name,
        "project": b.project,
        "metric": b.metric.as_str(),
        "threshold": c.threshold,
        "spend": c.spend,
        "limit": b.limit,
        "period": b.period.to_string(),
        "period_start": c.period_start,
        "period_end": c.period_end,
        "crossed_at": c.crossed_ms,
    })
    .to_string();
    NewAlert {
        budget_id: b.id.clone(),
        threshold: c.threshold,
        period_start: c.period_start,
        crossed_ms: c.crossed_ms,
        signature: sign(&b.secret, body.as_bytes()),
        body,
        urls: b.webhooks.clone(),
    }
}

/// Hands crossings to the alert task.
#[derive(Clone)]
pub struct AlertSender {
    crossings: mpsc::UnboundedSender<Crossing>,
    pub stats: Arc<AlertStats>,
}

impl AlertSender {
    pub fn send(&self, crossings: Vec<Crossing>) {
        for c in crossings {
            info!(budget = %c.budget.id, threshold = c.threshold, spend = c.spend, "budget threshold crossed");
            // The task only stops with the runtime; a crossing lost then is
            // found again at the next start (the book re-evaluates).
            let _ = self.crossings.send(c);
        }
    }
}

/// Starts the alert task.
pub fn start(
    storage: Arc<dyn ControlStore>,
    policy: RetryPolicy,
    delivery: DeliveryConfig,
) -> AlertSender {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(AlertStats::default());
    tokio::spawn(run(storage, policy, delivery, rx, stats.clone()));
    AlertSender { crossings: tx, stats }
}

/// Most deliveries attempted at once.
const PARALLEL: usize = 16;
/// Longest sleep between looks at the store.
const IDLE: Duration = Duration::from_secs(30);

async fn run(
    storage: Arc<dyn ControlStore>,
    policy: RetryPolicy,
    delivery: DeliveryConfig,
    mut crossings: mpsc::UnboundedReceiver<Crossing>,
    stats: Arc<AlertStats>,
) {
    let mut open = true;
    loop {
        while let Ok(c) = crossings.try_recv() {
            record(&*storage, &c, &stats).await;
        }
        deliver_due(&storage, &policy, &delivery, &stats).await;
        let wait = match storage.next_delivery_ms().await {
            Ok(Some(next)) => Duration::from_millis((next - now_ms()).clamp(0, 30_000) as u64),
            Ok(None) => IDLE,
            // The store has shut down: so is the server.
            Err(StorageError::WorkerGone) => return,
            Err(err) => {
                warn!(%err, "cannot read pending webhook deliveries; retrying");
                Duration::from_secs(1)
            }
        };
        if !open {
            tokio::time::sleep(wait).await;
            continue;
        }
        tokio::select! {
            c = crossings.recv() => match c {
                Some(c) => record(&*storage, &c, &stats).await,
                None => open = false,
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Records a crossing, retrying while the store refuses (a crossing must not
/// be lost while the server runs).
async fn record(storage: &dyn ControlStore, c: &Crossing, stats: &AlertStats) {
    let alert = new_alert(c);
    loop {
        match storage.insert_alert(alert.clone()).await {
            Ok(Some(_)) => {
                stats.recorded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(None) => return,
            Err(err) => {
                warn!(%err, budget = %c.budget.id, "cannot record alert; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn deliver_due(
    storage: &Arc<dyn ControlStore>,
    policy: &RetryPolicy,
    delivery: &DeliveryConfig,
    stats: &Arc<AlertStats>,
) {
    let due = match storage.due_deliveries(now_ms(), PARALLEL).await {
        Ok(due) => due,
        Err(StorageError::WorkerGone) => return,
        Err(err) => {
            warn!(%err, "cannot read due webhook deliveries");
            return;
        }
    };
    let mut attempts = tokio::task::JoinSet::new();
    for d in due {
        let (storage, policy, delivery, stats) =
            (storage.clone(), policy.clone(), delivery.clone(), stats.clone());
        attempts.spawn(async move {
            let update = attempt(&delivery, &policy, &d, &stats).await;
            if let Err(err) = storage.update_delivery(d.id, update).await {
                warn!(%err, delivery = d.id, "cannot record webhook delivery outcome");
            }
        });
    }
    while attempts.join_next().await.is_some() {}
}

async fn attempt(
    delivery: &DeliveryConfig,
    policy: &RetryPolicy,
    d: &DueDelivery,
    stats: &AlertStats,
) -> DeliveryUpdate {
    let headers = [
        (SIGNATURE_HEADER, d.signature.clone()),
        (ALERT_ID_HEADER, alert_key(&d.budget_id, d.period_start, d.threshold)),
    ];
    let error = match webhook::post(delivery, &d.url, &headers, d.body.clone()).await {
        Outcome::Delivered => {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            info!(url = %d.url, alert = d.alert_id, "alert delivered");
            return DeliveryUpdate::Delivered { at_ms: now_ms() };
        }
        Outcome::Refused(why) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let error = format!("refused: {why}");
            warn!(url = %d.url, alert = d.alert_id, %error, "alert delivery refused");
            return DeliveryUpdate::Refused { error };
        }
        Outcome::Failed(error) => error,
    };
    stats.attempts_failed.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let attempts = d.attempts + 1;
    if now - d.crossed_ms >= policy.give_up_after_ms {
        stats.given_up.fetch_add(1, Ordering::Relaxed);
        warn!(url = %d.url, alert = d.alert_id, attempts, %error, "alert delivery given up");
        return DeliveryUpdate::Failed { error };
    }
    let next_ms = now + policy.backoff_ms(attempts);
    warn!(url = %d.url, alert = d.alert_id, attempts, %error, "alert delivery failed; will retry");
    DeliveryUpdate::Retry { next_ms, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy =
            RetryPolicy { initial_ms: 1_000, max_ms: 3_600_000, give_up_after_ms: 86_400_000 };
        let waits: Vec<i64> = (1..=5).map(|n| policy.backoff_ms(n)).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(policy.backoff_ms(30), 3_600_000);
        assert_eq!(policy.backoff_ms(u32::MAX), 3_600_000);
    }
}
