//! Budgets, their alerts and the alerts' webhook deliveries in SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::StorageError;
use crate::storage::{
    AlertFilter, AlertRecord, DeliveryRecord, DeliveryUpdate, DueDelivery, NewAlert, StoredBudget,
};

pub fn load_budgets(conn: &Connection) -> Result<Vec<StoredBudget>, StorageError> {
    let mut stmt =
        conn.prepare("SELECT id, project, name, origin, definition FROM budgets ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredBudget {
            id: r.get(0)?,
            project: r.get(1)?,
            name: r.get(2)?,
            origin: r.get(3)?,
            definition: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn save_budget(conn: &Connection, b: &StoredBudget) -> Result<(), StorageError> {
    conn.execute(
        "INSERT OR REPLACE INTO budgets (id, project, name, origin, definition) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![b.id, b.project, b.name, b.origin, b.definition],
    )?;
    Ok(())
}

pub fn delete_budget(conn: &Connection, id: &str) -> Result<bool, StorageError> {
    Ok(conn.execute("DELETE FROM budgets WHERE id = ?1", [id])? > 0)
}

pub fn insert_alert(conn: &mut Connection, a: &NewAlert) -> Result<Option<i64>, StorageError> {
    let tx = conn.transaction()?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO alerts (budget_id, threshold, period_start, crossed_ms, body, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![a.budget_id, a.threshold, a.period_start, a.crossed_ms, a.body, a.signature],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = tx.last_insert_rowid();
    {
        let mut insert = tx.prepare(
            "INSERT INTO deliveries (alert_id, url, status, attempts, next_ms) \
             VALUES (?1, ?2, 'pending', 0, ?3)",
        )?;
        for url in &a.urls {
            insert.execute(params![id, url, a.crossed_ms])?;
        }
    }
    tx.commit()?;
    Ok(Some(id))
}

pub fn alerts_since(
    conn: &Connection,
    budget_id: &str,
    since_ms: i64,
) -> Result<Vec<(f64, i64, i64)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT threshold, period_start, crossed_ms FROM alerts \
         WHERE budget_id = ?1 AND crossed_ms >= ?2",
    )?;
    let rows =
        stmt.query_map(params![budget_id, since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn list_alerts(conn: &Connection, f: &AlertFilter) -> Result<Vec<AlertRecord>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT id, budget_id, threshold, period_start, crossed_ms, body FROM alerts a \
         WHERE (?1 IS NULL OR budget_id = ?1) \
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.status = ?2)) \
           AND (?4 IS NULL OR json_extract(body, '$.project') = ?4) \
         ORDER BY crossed_ms DESC, id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![f.budget_id, f.status, f.limit as i64, f.project], |r| {
        let body: String = r.get(5)?;
        Ok(AlertRecord {
            id: r.get(0)?,
            budget_id: r.get(1)?,
            threshold: r.get(2)?,
            period_start: r.get(3)?,
            crossed_at: r.get(4)?,
            payload: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            deliveries: Vec::new(),
        })
    })?;
    let mut alerts: Vec<AlertRecord> = rows.collect::<Result<_, _>>()?;
    let mut deliveries = conn.prepare_cached(
        "SELECT url, status, attempts, next_ms, last_error, delivered_ms FROM deliveries \
         WHERE alert_id = ?1 ORDER BY id",
    )?;
    for alert in &mut alerts {
        let rows = deliveries.query_map([alert.id], |r| {
            Ok(DeliveryRecord {
                url: r.get(0)?,
                status: r.get(1)?,
                attempts: r.get(2)?,
                next_attempt_at: r.get(3)?,
                last_error: r.get(4)?,
                delivered_at: r.get(5)?,
            })
        })?;
        alert.deliveries = rows.collect::<Result<_, _>>()?;
    }
    Ok(alerts)
}

pub fn due_deliveries(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<DueDelivery>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.alert_id, d.url, a.body, a.signature, d.attempts, a.crossed_ms, \
                a.budget_id, a.period_start, a.threshold \
         FROM deliveries d JOIN alerts a ON a.id = d.alert_id \
         WHERE d.status = 'pending' AND d.next_ms <= ?1 ORDER BY d.next_ms, d.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
        Ok(DueDelivery {
            id: r.get(0)?,
            alert_id: r.get(1)?,
            url: r.get(2)?,
            body: r.get(3)?,
            signature: r.get(4)?,
            attempts: r.get(5)?,
            crossed_ms: r.get(6)?,
            budget_id: r.get(7)?,
            period_start: r.get(8)?,
            threshold: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn next_delivery_ms(conn: &Connection) -> Result<Option<i64>, StorageError> {
    Ok(conn
        .query_row("SELECT min(next_ms) FROM deliveries WHERE status = 'pending'", [], |r| r.get(0))
        .optional()?
        .flatten())
}

pub fn update_delivery(
    conn: &Connection,
    id: i64,
    update: &DeliveryUpdate,
) -> Result<(), StorageError> {
    match update {
        DeliveryUpdate::Delivered { at_ms } => conn.execute(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, next_ms = NULL, \
             delivered_ms = ?2 WHERE id = ?1",
            params![id, at_ms],
        )?,
        DeliveryUpdate::Retry { next_ms, error } => conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 \
             WHERE id = ?1",
            params![id, next_ms, error],
        )?,
        DeliveryUpdate::Failed { error } => conn.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, next_ms = NULL, \
             last_error = ?2 WHERE id = ?1",
            params![id, error],
        )?,
        DeliveryUpdate::Refused { error } => conn.execute(
            "UPDATE deliveries SET status = 'refused', next_ms = NULL, last_error = ?2 \
             WHERE id = ?1",
            params![id, error],
        )?,
    };
    Ok(())
}
