//! Metric series and bins in SQLite: bins merge into stored ones (counts and
//! sums add, min and max combine, the later `last` wins, sketches merge).

use rusqlite::{Transaction, params};

use super::StorageError;
use crate::aggregate::Sketch;
use crate::aggregate::metric::{Bin, BinKey, MetricKey, MetricTier};
use crate::storage::MetricBinVisitor;

const INSERT_SERIES: &str =
    "INSERT OR IGNORE INTO metric_series (id, project, name, tags) VALUES (?1, ?2, ?3, ?4)";

const MERGE_BIN: &str = "INSERT INTO metric_bins (tier, bucket, series, count, sum, min, max, \
    last, last_ms, sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (tier, series, bucket) DO UPDATE SET \
    count = count + excluded.count, \
    sum = sum + excluded.sum, \
    min = min(min, excluded.min), \
    max = max(max, excluded.max), \
    last = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last ELSE last END, \
    last_ms = max(last_ms, excluded.last_ms), \
    sketch = sketch_merge(sketch, excluded.sketch)";

/// Stores new series and logs a commit's 10 s bins; returns the log's seq.
pub fn append(
    tx: &Transaction<'_>,
    series: &[(i64, std::sync::Arc<MetricKey>)],
    log: Option<&[u8]>,
) -> Result<Option<i64>, StorageError> {
    if !series.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_SERIES)?;
        for (id, key) in series {
            let tags = serde_json::to_string(&key.tags).expect("string maps serialize");
            insert.execute(params![id, key.project, key.name, tags])?;
        }
    }
    let Some(log) = log else { return Ok(None) };
    tx.prepare_cached("INSERT INTO metric_log (bins) VALUES (?1)")?.execute([log])?;
    Ok(Some(tx.last_insert_rowid()))
}

/// Merges `bins` (with their sketches encoded by the caller, off the writer
/// thread) into the stored ones.
pub fn flush(
    tx: &Transaction<'_>,
    bins: &[(BinKey, Bin)],
    sketches: &[Vec<u8>],
) -> Result<(), StorageError> {
    if !bins.is_empty() {
        let mut merge = tx.prepare_cached(MERGE_BIN)?;
        for ((key, bin), sketch) in bins.iter().zip(sketches) {
            merge.execute(params![
                key.tier.code(),
                key.bucket,
                key.series,
                bin.count as i64,
                bin.sum,
                bin.min,
                bin.max,
                bin.last,
                bin.last_ms,
                sketch,
            ])?;
        }
    }
    Ok(())
}

pub fn load_series(conn: &rusqlite::Connection) -> Result<Vec<(i64, MetricKey)>, StorageError> {
    let mut stmt = conn.prepare("SELECT id, project, name, tags FROM metric_series")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, project, name, tags) = row?;
        let tags = serde_json::from_str(&tags)
            .map_err(|e| StorageError::Corrupt(format!("metric series {id} tags: {e}")))?;
        out.push((id, MetricKey { project, name, tags }));
    }
    Ok(out)
}

/// Streams bins to `visitor` without decoding their sketches.
pub fn scan_bins(
    conn: &rusqlite::Connection,
    tier: MetricTier,
    from: i64,
    to: i64,
    series: &[i64],
    visitor: &mut dyn MetricBinVisitor,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT bucket, count, sum, min, max, last, last_ms, sketch FROM metric_bins \
         WHERE tier = ?1 AND series = ?2 AND bucket >= ?3 AND bucket < ?4",
    )?;
    for &id in series {
        let mut rows = stmt.query(params![tier.code(), id, from, to])?;
        while let Some(row) = rows.next()? {
            let counters = Bin {
                count: row.get::<_, i64>(1)? as u64,
                sum: row.get(2)?,
                min: row.get(3)?,
                max: row.get(4)?,
                last: row.get(5)?,
                last_ms: row.get(6)?,
                sketch: Sketch::default(),
            };
            let key = BinKey { tier, bucket: row.get(0)?, series: id };
            let sketch = row.get_ref(7)?.as_blob().map_err(rusqlite::Error::from)?;
            visitor.visit(key, counters, sketch)?;
        }
    }
    Ok(())
}

pub fn apply_retention(
    tx: &Transaction<'_>,
    cutoffs: &[Option<i64>; 4],
) -> Result<usize, StorageError> {
    let mut deleted = 0;
    for (tier, cutoff) in MetricTier::ALL.iter().zip(cutoffs) {
        if let Some(cutoff) = cutoff {
            deleted += tx.execute(
                "DELETE FROM metric_bins WHERE tier = ?1 AND bucket < ?2",
                params![tier.code(), cutoff],
            )?;
        }
    }
    Ok(deleted)
}
