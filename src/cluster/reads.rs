//! What a node of a cluster reads from ClickHouse rather than its own
//! store, so that every node answers alike: usage rolled up from every
//! node's shipped calls. What a node committed shows once it is shipped
//! (within `cluster.ship_interval`, while ClickHouse is reachable).

use crate::aggregate::{Cell, SeriesKey, Tier};
use crate::storage::StorageError;
use crate::storage::clickhouse::{ClickHouse, ClickHouseUrl, rollups};

pub struct SharedReads {
    url: ClickHouseUrl,
    /// Made on first use, and again after a failed read.
    connection: tokio::sync::Mutex<Option<ClickHouse>>,
}

impl SharedReads {
    pub fn new(url: ClickHouseUrl) -> Self {
        Self { url, connection: tokio::sync::Mutex::new(None) }
    }

    async fn clickhouse(&self) -> Result<ClickHouse, StorageError> {
        let mut connection = self.connection.lock().await;
        if let Some(ch) = connection.as_ref() {
            return Ok(ch.clone());
        }
        let ch = ClickHouse::connect(&self.url).await?;
        *connection = Some(ch.clone());
        Ok(ch)
    }

    /// Every node's rolled-up cells of `project` over `pieces` (tier, from,
    /// to), by bucket and series.
    pub async fn cells(
        &self,
        project: &str,
        pieces: &[(Tier, i64, i64)],
    ) -> Result<Vec<(i64, SeriesKey, Cell)>, StorageError> {
        let ch = self.clickhouse().await?;
        let mut out = Vec::new();
        for &(tier, from, to) in pieces {
            match rollups::read(&ch, project, tier, from, to).await {
                Ok(cells) => out.extend(cells),
                Err(err) => {
                    *self.connection.lock().await = None;
                    return Err(err);
                }
            }
        }
        Ok(out)
    }
}
