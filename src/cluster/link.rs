//! A node's connection to the coordination store (PostgreSQL), made on
//! first use and again after the server went away, with the store's health
//! kept up to date on every use.

use std::sync::Arc;

use super::{Health, Part};
use crate::coordination::Coordination;
use crate::storage::StorageError;

pub struct Link {
    url: String,
    node: String,
    timeout: std::time::Duration,
    connection: tokio::sync::Mutex<Option<Arc<Coordination>>>,
    health: Arc<Health>,
}

impl Link {
    pub fn new(url: &str, node: &str, timeout: std::time::Duration, health: Arc<Health>) -> Self {
        Self {
            url: url.to_owned(),
            node: node.to_owned(),
            timeout,
            connection: tokio::sync::Mutex::new(None),
            health,
        }
    }

    /// The live connection, connecting (and migrating) when there is none.
    pub async fn get(&self) -> Result<Arc<Coordination>, StorageError> {
        let mut connection = self.connection.lock().await;
        if let Some(live) = connection.as_ref().filter(|c| !c.is_closed()) {
            return Ok(live.clone());
        }
        *connection = None;
        let made = Coordination::connect(&self.url, &self.node, self.timeout).await;
        let made = Arc::new(made.map_err(|err| self.failed(err))?);
        *connection = Some(made.clone());
        Ok(made)
    }

    /// Runs `work` on the connection, keeping the store's health: an error
    /// marks it failing (and the next use connects afresh if the
    /// connection ended), an answer marks it well.
    pub async fn run<T, E, F>(
        &self,
        work: impl FnOnce(Arc<Coordination>) -> F,
    ) -> Result<T, StorageError>
    where
        E: std::fmt::Display,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let coordination = self.get().await?;
        match work(coordination).await {
            Ok(answer) => {
                self.answered();
                Ok(answer)
            }
            Err(err) => Err(self.failed(err)),
        }
    }

    /// Marks the store well: it answered.
    pub fn answered(&self) {
        self.health.ok(Part::Coordination);
    }

    /// Marks the store failing with `err`, as an error for the caller.
    pub fn failed(&self, err: impl std::fmt::Display) -> StorageError {
        self.health.failing(Part::Coordination, &err.to_string());
        StorageError::Backend { backend: "postgresql", message: err.to_string() }
    }
}
