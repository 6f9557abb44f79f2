//! The coordination store nodes share when they run over ClickHouse: a
//! PostgreSQL database holding what must be decided once for the whole
//! cluster: the claims on report ids and span keys (`claims`), so that a
//! call sent to two nodes counts once; budgets with their alerts and
//! deliveries (`control`, the control role of the store); and each node's
//! share of every budget's spend (`shares`); and the API keys (`access`).

pub mod access;
pub mod claims;
pub mod control;
pub mod shares;

/// Why the coordination store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("coordination store (PostgreSQL): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("coordination store (PostgreSQL) did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// A connection to the coordination database.
pub struct Coordination {
    client: tokio_postgres::Client,
    /// This node's name, recorded with what it claims.
    node: String,
    /// Longest wait for one round trip before the caller is told.
    timeout: std::time::Duration,
}

impl Coordination {
    /// Connects to `url` (`postgres://…`) as `node` and brings the schema
    /// up to date (under an advisory lock, so nodes starting at once do not
    /// race to create it).
    pub async fn connect(
        url: &str,
        node: &str,
        timeout: std::time::Duration,
    ) -> Result<Coordination, CoordinationError> {
        let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let (mut client, connection) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| CoordinationError::Timeout(timeout))??;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(%err, "coordination store connection ended");
            }
        });
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('tally schema'))", &[]).await?;
        tx.batch_execute(claims::SCHEMA).await?;
        tx.batch_execute(control::SCHEMA).await?;
        tx.batch_execute(shares::SCHEMA).await?;
        tx.batch_execute(access::SCHEMA).await?;
        tx.commit().await?;
        Ok(Coordination { client, node: node.to_owned(), timeout })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `work` within the round-trip deadline.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, CoordinationError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CoordinationError::Timeout(self.timeout)),
        }
    }
}
