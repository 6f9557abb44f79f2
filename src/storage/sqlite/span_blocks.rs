//! The time index of `spans`: one `span_blocks` row per run of consecutive
//! seqs of one append within one minute of span start, instead of an index
//! entry per span. Spans of an export start all over the last hour, so a
//! per-span time index took a random page write per span; an append now
//! inserts its spans by minute and notes each minute's run once.

use rusqlite::{Connection, Transaction, params};
use rustc_hash::FxHashSet;

use super::call_blocks;
use crate::model::SpanRecord;

/// The slice of start time one block's spans lie in.
pub const BLOCK_SPAN_NS: i64 = 60 * 1_000_000_000;

fn slice(start_ns: i64) -> i64 {
    start_ns.div_euclid(BLOCK_SPAN_NS)
}

/// The order to insert an append's spans in: by start minute, except that a
/// span sent twice in the append goes after all the others, in arrival
/// order, so that the first sent is still the one kept.
pub fn insert_order(spans: &[SpanRecord]) -> Vec<usize> {
    let mut seen: FxHashSet<(&str, &str, &str)> = FxHashSet::default();
    let (mut first, mut repeated) = (Vec::with_capacity(spans.len()), Vec::new());
    for (i, span) in spans.iter().enumerate() {
        if seen.insert((&span.project, &span.trace_id, &span.span_id)) {
            first.push(i);
        } else {
            repeated.push(i);
        }
    }
    first.sort_by_key(|&i| (slice(spans[i].start_ns), i));
    first.extend(repeated);
    first
}

/// Notes spans just inserted in `tx`, as (seq, start_ns) in insertion
/// order: a block per run of consecutive seqs within one minute.
pub fn record(
    tx: &Transaction<'_>,
    inserted: impl Iterator<Item = (i64, i64)>,
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO span_blocks (first_seq, last_seq, min_start, max_start) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut run: Option<(i64, i64, i64, i64)> = None;
    for (seq, start) in inserted {
        run = match run {
            Some((first, last, min, max)) if last + 1 == seq && slice(min) == slice(start) => {
                Some((first, seq, min.min(start), max.max(start)))
            }
            Some((first, last, min, max)) => {
                insert.execute(params![first, last, min, max])?;
                Some((seq, seq, start, start))
            }
            None => Some((seq, seq, start, start)),
        };
    }
    if let Some((first, last, min, max)) = run {
        insert.execute(params![first, last, min, max])?;
    }
    Ok(())
}

/// Disjoint seq ranges, in seq order, holding every span that starts in
/// `[from_ns, to_ns)` (and others: filter by start again).
pub fn ranges(
    conn: &Connection,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<(i64, i64)>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq FROM span_blocks WHERE max_start >= ?1 AND min_start < ?2",
    )?;
    let rows = stmt.query_map(params![from_ns, to_ns], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(call_blocks::merge_ranges(rows.collect::<Result<_, _>>()?))
}

/// Deletes the spans of every block that ends before `cutoff_ns`, and those
/// blocks; a block reaching past it waits until it is wholly older.
pub fn delete_before(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<usize, rusqlite::Error> {
    let old: Vec<(i64, i64)> = tx
        .prepare("SELECT first_seq, last_seq FROM span_blocks WHERE max_start < ?1")?
        .query_map([cutoff_ns], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delete =
        tx.prepare("DELETE FROM spans WHERE seq BETWEEN ?1 AND ?2 AND start_ns < ?3")?;
    let mut deleted = 0;
    for (first, last) in old {
        deleted += delete.execute(params![first, last, cutoff_ns])?;
    }
    tx.execute("DELETE FROM span_blocks WHERE max_start < ?1", [cutoff_ns])?;
    Ok(deleted)
}

/// Builds blocks for a store written before they existed (schema 6) from
/// its spans, and drops the per-span time index they replace. Runs before
/// the schema is applied, which creates the blocks' own index.
pub fn migrate_from_6(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.execute_batch(
        "CREATE TABLE span_blocks (
             id        INTEGER PRIMARY KEY,
             first_seq INTEGER NOT NULL,
             last_seq  INTEGER NOT NULL,
             min_start INTEGER NOT NULL,
             max_start INTEGER NOT NULL
         );
         INSERT INTO span_blocks (first_seq, last_seq, min_start, max_start)
             SELECT min(seq), max(seq), min(start_ns), max(start_ns) FROM spans
             GROUP BY seq / 4096;
         DROP INDEX IF EXISTS spans_start;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::schema;

    fn span(span_id: &str, start_ns: i64) -> SpanRecord {
        SpanRecord { span_id: span_id.to_owned(), start_ns, ..SpanRecord::example() }
    }

    #[test]
    fn spans_insert_by_minute_with_repeats_last_in_arrival_order() {
        let minute = BLOCK_SPAN_NS;
        let spans = [
            span("a", 3 * minute),
            span("b", minute + 5),
            span("a", 0),
            span("c", minute),
            span("d", 10),
        ];
        assert_eq!(insert_order(&spans), vec![4, 1, 3, 0, 2]);
    }

    fn blocks(conn: &Connection) -> Vec<(i64, i64, i64, i64)> {
        conn.prepare(
            "SELECT first_seq, last_seq, min_start, max_start FROM span_blocks ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn runs_break_at_minutes_and_gaps_and_ranges_come_out_disjoint() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        let m = BLOCK_SPAN_NS;
        let tx = conn.transaction().unwrap();
        let inserted = [(1, 10), (2, 20), (3, m), (4, m + 1), (6, m + 2), (7, 5)];
        record(&tx, inserted.into_iter()).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            blocks(&conn),
            vec![(1, 2, 10, 20), (3, 4, m, m + 1), (6, 6, m + 2, m + 2), (7, 7, 5, 5)]
        );
        assert_eq!(ranges(&conn, 0, m).unwrap(), vec![(1, 2), (7, 7)]);
        assert_eq!(ranges(&conn, 0, 2 * m).unwrap(), vec![(1, 4), (6, 7)]);
        let tx = conn.transaction().unwrap();
        delete_before(&tx, 21).unwrap();
        tx.commit().unwrap();
        assert_eq!(blocks(&conn), vec![(3, 4, m, m + 1), (6, 6, m + 2, m + 2)]);
    }

    #[test]
    fn a_schema_6_store_gets_blocks_for_its_spans() {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        conn.execute_batch(
            "DROP TABLE span_blocks; CREATE INDEX spans_start ON spans (project, start_ns);
             PRAGMA user_version = 6;",
        )
        .unwrap();
        for seq in 1..=5_000_i64 {
            conn.execute(
                "INSERT INTO spans (seq, project, trace_id, span_id, start_ns, end_ns, name, \
                 service, kind, error, record) \
                 VALUES (?1, 'default', 't', ?1, ?2, ?2, 'n', 's', 'llm', 0, '{}')",
                params![seq, 90_000 - seq],
            )
            .unwrap();
        }
        schema::create_or_check(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
        assert_eq!(
            blocks(&conn),
            vec![(1, 4095, 90_000 - 4095, 89_999), (4096, 5000, 85_000, 85_904)]
        );
        let index: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'spans_start'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(index, 0);
    }
}
