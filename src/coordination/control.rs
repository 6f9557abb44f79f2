//! Budgets, their alerts and the alerts' webhook deliveries in PostgreSQL:
//! the control role shared by every node. An alert is recorded once per
//! budget, period and threshold in the whole cluster (a unique key), with
//! its deliveries, in one statement; a due delivery is leased to the node
//! that takes it, so that one node delivers it.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::Coordination;
use crate::storage::{
    AlertFilter, AlertRecord, ControlStore, DeliveryRecord, DeliveryUpdate, DueDelivery, NewAlert,
    StorageError, StoredBudget,
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally_budgets (
    id         text PRIMARY KEY,
    project    text NOT NULL,
    name       text NOT NULL,
    origin     text NOT NULL,
    definition text NOT NULL
);
CREATE TABLE IF NOT EXISTS tally_alerts (
    id           bigserial PRIMARY KEY,
    budget_id    text NOT NULL,
    threshold    double precision NOT NULL,
    period_start bigint NOT NULL,
    crossed_ms   bigint NOT NULL,
    body         text NOT NULL,
    signature    text NOT NULL,
    UNIQUE (budget_id, period_start, threshold)
);
CREATE TABLE IF NOT EXISTS tally_deliveries (
    id           bigserial PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES tally_alerts (id),
    url          text NOT NULL,
    status       text NOT NULL,
    attempts     integer NOT NULL,
    next_ms      bigint,
    last_error   text,
    delivered_ms bigint
);
CREATE INDEX IF NOT EXISTS tally_deliveries_due ON tally_deliveries (next_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS tally_deliveries_alert ON tally_deliveries (alert_id);
";

/// How long a node holds the deliveries it took before another may take
/// them: longer than any attempt (`budgets.webhook_timeout`, at most a
/// few minutes).
const DELIVERY_LEASE_MS: i64 = 600_000;

fn backend(err: impl std::fmt::Display) -> StorageError {
    StorageError::Backend { backend: "postgresql", message: err.to_string() }
}

impl Coordination {
    async fn rows(
        &self,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StorageError> {
        self.bounded(self.client.query(sql, args)).await.map_err(backend)
    }
}

#[async_trait]
impl ControlStore for Coordination {
    async fn load_budgets(&self) -> Result<Vec<StoredBudget>, StorageError> {
        let rows = self
            .rows(
                "SELECT id, project, name, origin, definition FROM tally_budgets ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredBudget {
                id: r.get(0),
                project: r.get(1),
                name: r.get(2),
                origin: r.get(3),
                definition: r.get(4),
            })
            .collect())
    }

    async fn save_budget(&self, b: StoredBudget) -> Result<(), StorageError> {
        self.rows(
            "INSERT INTO tally_budgets (id, project, name, origin, definition) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             project = EXCLUDED.project, name = EXCLUDED.name, origin = EXCLUDED.origin, \
             definition = EXCLUDED.definition",
            &[&b.id, &b.project, &b.name, &b.origin, &b.definition],
        )
        .await?;
        Ok(())
    }

    async fn delete_budget(&self, id: &str) -> Result<bool, StorageError> {
        let rows =
            self.rows("DELETE FROM tally_budgets WHERE id = $1 RETURNING id", &[&id]).await?;
        Ok(!rows.is_empty())
    }

    async fn insert_alert(&self, a: NewAlert) -> Result<Option<i64>, StorageError> {
        let rows = self
            .rows(
                "WITH alert AS (
                     INSERT INTO tally_alerts (budget_id, threshold, period_start, crossed_ms, body, signature)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT DO NOTHING
                     RETURNING id
                 ), delivery AS (
                     INSERT INTO tally_deliveries (alert_id, url, status, attempts, next_ms)
                     SELECT alert.id, url, 'pending', 0, $4 FROM alert, unnest($7::text[]) AS url
                 )
                 SELECT id FROM alert",
                &[
                    &a.budget_id,
                    &a.threshold,
                    &a.period_start,
                    &a.crossed_ms,
                    &a.body,
                    &a.signature,
                    &a.urls,
                ],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn alerts_since(
        &self,
        budget_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(f64, i64, i64)>, StorageError> {
        let rows = self
            .rows(
                "SELECT threshold, period_start, crossed_ms FROM tally_alerts \
                 WHERE budget_id = $1 AND crossed_ms >= $2",
                &[&budget_id, &since_ms],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn list_alerts(&self, f: AlertFilter) -> Result<Vec<AlertRecord>, StorageError> {
        let limit = f.limit as i64;
        let rows = self
            .rows(
                "SELECT id, budget_id, threshold, period_start, crossed_ms, body FROM tally_alerts a \
                 WHERE ($1::text IS NULL OR budget_id = $1) \
                   AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM tally_deliveries d \
                        WHERE d.alert_id = a.id AND d.status = $2)) \
                   AND ($3::text IS NULL OR (body::json ->> 'project') = $3) \
                 ORDER BY crossed_ms DESC, id DESC LIMIT $4",
                &[&f.budget_id, &f.status, &f.project, &limit],
            )
            .await?;
        let mut alerts: Vec<AlertRecord> = rows
            .iter()
            .map(|r| {
                let body: String = r.get(5);
                AlertRecord {
                    id: r.get(0),
                    budget_id: r.get(1),
                    threshold: r.get(2),
                    period_start: r.get(3),
                    crossed_at: r.get(4),
                    payload: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                    deliveries: Vec::new(),
                }
            })
            .collect();
        let ids: Vec<i64> = alerts.iter().map(|a| a.id).collect();
        let deliveries = self
            .rows(
                "SELECT alert_id, url, status, attempts, next_ms, last_error, delivered_ms \
                 FROM tally_deliveries WHERE alert_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await?;
        for d in &deliveries {
            let alert_id: i64 = d.get(0);
            if let Some(alert) = alerts.iter_mut().find(|a| a.id == alert_id) {
                alert.deliveries.push(DeliveryRecord {
                    url: d.get(1),
                    status: d.get(2),
                    attempts: d.get::<_, i32>(3) as u32,
                    next_attempt_at: d.get(4),
                    last_error: d.get(5),
                    delivered_at: d.get(6),
                });
            }
        }
        Ok(alerts)
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StorageError> {
        // Leased: taken rows are not due again for DELIVERY_LEASE_MS, so
        // one node delivers each; if it dies, another takes over then.
        let limit = limit as i64;
        let rows = self
            .rows(
                "WITH due AS (
                     SELECT id, next_ms FROM tally_deliveries
                     WHERE status = 'pending' AND next_ms <= $1
                     ORDER BY next_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED
                 ), leased AS (
                     UPDATE tally_deliveries d SET next_ms = $1 + $3 FROM due
                     WHERE d.id = due.id
                     RETURNING d.id, d.alert_id, d.url, d.attempts, due.next_ms AS was
                 )
                 SELECT l.id, l.alert_id, l.url, a.body, a.signature, l.attempts, a.crossed_ms, \
                        a.budget_id, a.period_start, a.threshold \
                 FROM leased l JOIN tally_alerts a ON a.id = l.alert_id ORDER BY l.was, l.id",
                &[&now_ms, &limit, &DELIVERY_LEASE_MS],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DueDelivery {
                id: r.get(0),
                alert_id: r.get(1),
                url: r.get(2),
                body: r.get(3),
                signature: r.get(4),
                attempts: r.get::<_, i32>(5) as u32,
                crossed_ms: r.get(6),
                budget_id: r.get(7),
                period_start: r.get(8),
                threshold: r.get(9),
            })
            .collect())
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, StorageError> {
        let rows = self
            .rows("SELECT min(next_ms) FROM tally_deliveries WHERE status = 'pending'", &[])
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    async fn update_delivery(&self, id: i64, update: DeliveryUpdate) -> Result<(), StorageError> {
        match update {
            DeliveryUpdate::Delivered { at_ms } => {
                self.rows(
                    "UPDATE tally_deliveries SET status = 'delivered', attempts = attempts + 1, \
                     next_ms = NULL, delivered_ms = $2 WHERE id = $1",
                    &[&id, &at_ms],
                )
                .await?
            }
            DeliveryUpdate::Retry { next_ms, error } => {
                self.rows(
                    "UPDATE tally_deliveries SET attempts = attempts + 1, next_ms = $2, \
                     last_error = $3 WHERE id = $1",
                    &[&id, &next_ms, &error],
                )
                .await?
            }
            DeliveryUpdate::Failed { error } => {
                self.rows(
                    "UPDATE tally_deliveries SET status = 'failed', attempts = attempts + 1, \
                     next_ms = NULL, last_error = $2 WHERE id = $1",
                    &[&id, &error],
                )
                .await?
            }
            DeliveryUpdate::Refused { error } => {
                self.rows(
                    "UPDATE tally_deliveries SET status = 'refused', next_ms = NULL, \
                     last_error = $2 WHERE id = $1",
                    &[&id, &error],
                )
                .await?
            }
        };
        Ok(())
    }
}
