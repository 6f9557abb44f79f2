//! The control role: budgets, their alerts and the alerts' webhook
//! deliveries.

use async_trait::async_trait;

use super::StorageError;

/// A budget as stored: its checked definition as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBudget {
    pub id: String,
    pub project: String,
    pub name: String,
    /// `api` or `config`.
    pub origin: String,
    pub definition: String,
}

/// An alert to record, with one delivery per webhook URL.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub budget_id: String,
    pub threshold: f64,
    pub period_start: i64,
    pub crossed_ms: i64,
    /// The webhook body (JSON), signed once.
    pub body: String,
    pub signature: String,
    pub urls: Vec<String>,
}

/// A recorded alert and how its deliveries stand.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub budget_id: String,
    pub threshold: f64,
    pub period_start: i64,
    pub crossed_at: i64,
    /// The webhook body as sent.
    pub payload: serde_json::Value,
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRecord {
    pub url: String,
    /// `pending`, `delivered`, `failed` (given up after retries) or
    /// `refused` (the target may not be reached; never attempted).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub budget_id: Option<String>,
    /// Alerts of this project's budgets.
    pub project: Option<String>,
    /// Alerts with a delivery in this status.
    pub status: Option<String>,
    pub limit: usize,
}

/// A delivery whose next attempt is due.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub alert_id: i64,
    pub budget_id: String,
    pub period_start: i64,
    pub threshold: f64,
    pub url: String,
    pub body: String,
    pub signature: String,
    pub attempts: u32,
    /// When the alert was recorded: retries stop a while after it.
    pub crossed_ms: i64,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    Delivered {
        at_ms: i64,
    },
    Retry {
        next_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    /// The target may not be reached: final, and not counted as an attempt.
    Refused {
        error: String,
    },
}

#[async_trait]
pub trait ControlStore: Send + Sync {
    async fn load_budgets(&self) -> Result<Vec<StoredBudget>, StorageError>;
    /// Inserts or replaces the budget with this id.
    async fn save_budget(&self, budget: StoredBudget) -> Result<(), StorageError>;
    /// Deletes a budget (its alerts stay); false when there was none.
    async fn delete_budget(&self, id: &str) -> Result<bool, StorageError>;
    /// Records an alert and its deliveries; None when the same budget,
    /// period and threshold is already recorded.
    async fn insert_alert(&self, alert: NewAlert) -> Result<Option<i64>, StorageError>;
    /// (threshold, period start, crossed at) of a budget's alerts crossed at
    /// or after `since_ms`.
    async fn alerts_since(
        &self,
        budget_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(f64, i64, i64)>, StorageError>;
    /// Newest first.
    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<AlertRecord>, StorageError>;
    /// Pending deliveries due at `now_ms`, oldest first.
    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StorageError>;
    /// When the next pending delivery is due, if any.
    async fn next_delivery_ms(&self) -> Result<Option<i64>, StorageError>;
    async fn update_delivery(&self, id: i64, update: DeliveryUpdate) -> Result<(), StorageError>;
}
