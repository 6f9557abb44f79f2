//! The control role on a node of a cluster: budgets, their alerts and
//! deliveries in the coordination store, shared by every node, over a link
//! that connects again after PostgreSQL went away.

use std::sync::Arc;

use async_trait::async_trait;

use super::link::Link;
use crate::storage::{
    AlertFilter, AlertRecord, ControlStore, DeliveryUpdate, DueDelivery, NewAlert, StorageError,
    StoredBudget,
};

pub struct SharedControl {
    link: Arc<Link>,
}

impl SharedControl {
    pub fn new(link: Arc<Link>) -> Self {
        Self { link }
    }
}

#[async_trait]
impl ControlStore for SharedControl {
    async fn load_budgets(&self) -> Result<Vec<StoredBudget>, StorageError> {
        self.link.run(|c| async move { c.load_budgets().await }).await
    }

    async fn save_budget(&self, budget: StoredBudget) -> Result<(), StorageError> {
        self.link.run(|c| async move { c.save_budget(budget).await }).await
    }

    async fn delete_budget(&self, id: &str) -> Result<bool, StorageError> {
        self.link.run(|c| async move { c.delete_budget(id).await }).await
    }

    async fn insert_alert(&self, alert: NewAlert) -> Result<Option<i64>, StorageError> {
        self.link.run(|c| async move { c.insert_alert(alert).await }).await
    }

    async fn alerts_since(
        &self,
        budget_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(f64, i64, i64)>, StorageError> {
        self.link.run(|c| async move { c.alerts_since(budget_id, since_ms).await }).await
    }

    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<AlertRecord>, StorageError> {
        self.link.run(|c| async move { c.list_alerts(filter).await }).await
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StorageError> {
        self.link.run(|c| async move { c.due_deliveries(now_ms, limit).await }).await
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, StorageError> {
        self.link.run(|c| async move { c.next_delivery_ms().await }).await
    }

    async fn update_delivery(&self, id: i64, update: DeliveryUpdate) -> Result<(), StorageError> {
        self.link.run(|c| async move { c.update_delivery(id, update).await }).await
    }
}
