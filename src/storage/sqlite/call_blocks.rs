//! The time index of `calls`: one `call_blocks` row per run of consecutive
//! seqs, holding the least and greatest call time in it, instead of an index
//! entry per call. Calls arrive in roughly time order, so a window touches few
//! blocks; an index entry per call cost more than half of an insert, because
//! calls stamped over the last minute land all over a per-call time index.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rustc_hash::FxHashSet;

use super::rows;
use crate::aggregate::rollup::SequencedCall;
use crate::model::LlmCall;
use crate::storage::{CallFilter, StorageError};

/// Calls a block holds before the next append starts a new one.
pub const BLOCK_CALLS: i64 = 4096;
/// A block's calls lie in one such slice of time: an append writes its
/// calls in time order (`insert_order`), so that a window's first page reads
/// the blocks of its first moments only, however many calls arrive at once
/// or however late they are stamped.
pub const BLOCK_SPAN_MS: i64 = 1000;
/// A block holding fewer calls than this takes calls of later slices too:
/// calls stamped far apart (those of spans, which start all over the last
/// hour) would otherwise get a block each, and a block row and its time
/// index entry cost about as much to write as the call. Reading a few more
/// calls than a window needs costs little.
pub const SPARSE_CALLS: i64 = 64;

/// One block as read back for a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    first_seq: i64,
    last_seq: i64,
    min_time: i64,
}

/// A run of calls of one append that goes into one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: i64,
    last: i64,
    min: i64,
    max: i64,
    count: i64,
}

fn slice(time_ms: i64) -> i64 {
    time_ms.div_euclid(BLOCK_SPAN_MS)
}

/// Whether a call at `time` may join a block of `calls` calls whose least
/// time is `min`.
fn joins(min: i64, calls: i64, time: i64) -> bool {
    slice(min) == slice(time) || calls < SPARSE_CALLS
}

/// The order to insert an append's calls in: by time, except that a call
/// sharing an id or span with an earlier call of the append goes after all
/// the others, in arrival order, so that of two calls with one key the
/// earlier one is still the one kept. `span_refs` are the calls' span keys.
pub fn insert_order(calls: &[LlmCall], span_refs: &[Option<&str>]) -> Vec<usize> {
    let mut ids: FxHashSet<(&str, &str)> = FxHashSet::default();
    let mut spans: FxHashSet<(&str, &str)> = FxHashSet::default();
    let (mut first, mut repeated) = (Vec::with_capacity(calls.len()), Vec::new());
    for (i, (call, span_ref)) in calls.iter().zip(span_refs).enumerate() {
        let project = call.project.as_str();
        let id_seen = call.id.as_deref().is_some_and(|id| !ids.insert((project, id)));
        let span_seen = span_ref.is_some_and(|r| !spans.insert((project, r)));
        if id_seen || span_seen { repeated.push(i) } else { first.push(i) }
    }
    first.sort_by_key(|&i| (calls[i].time_ms, i));
    first.extend(repeated);
    first
}

/// Splits calls just inserted, as (seq, time_ms) in insertion order, into
/// runs of consecutive seqs within one time slice (or of fewer than
/// `SPARSE_CALLS` calls).
fn runs(inserted: impl Iterator<Item = (i64, i64)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (seq, time) in inserted {
        match runs.last_mut() {
            Some(run) if joins(run.min, run.count, time) && run.last < seq => {
                run.last = seq;
                run.min = run.min.min(time);
                run.max = run.max.max(time);
                run.count += 1;
            }
            _ => runs.push(Run { first: seq, last: seq, min: time, max: time, count: 1 }),
        }
    }
    runs
}

/// Notes calls just inserted in `tx`, as (seq, time_ms) in insertion order:
/// the first run may extend the newest block, the others start blocks.
pub fn record(
    tx: &Transaction<'_>,
    inserted: impl Iterator<Item = (i64, i64)>,
) -> Result<(), rusqlite::Error> {
    let runs = runs(inserted);
    let Some(head) = runs.first() else { return Ok(()) };
    let newest: Option<(i64, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT first_seq, last_seq, calls, min_time FROM call_blocks \
             ORDER BY first_seq DESC LIMIT 1",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .optional()?;
    let extends = matches!(newest, Some((_, last, calls, min_time))
        if calls < BLOCK_CALLS && last < head.first && joins(min_time, calls, head.min));
    let mut insert = tx.prepare_cached(
        "INSERT INTO call_blocks (first_seq, last_seq, calls, min_time, max_time) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, run) in runs.iter().enumerate() {
        match newest {
            Some((block, ..)) if i == 0 && extends => {
                tx.prepare_cached(
                    "UPDATE call_blocks SET last_seq = ?2, calls = calls + ?3, \
                     min_time = min(min_time, ?4), max_time = max(max_time, ?5) \
                     WHERE first_seq = ?1",
                )?
                .execute(params![block, run.last, run.count, run.min, run.max])?;
            }
            _ => {
                insert.execute(params![run.first, run.last, run.count, run.min, run.max])?;
            }
        }
    }
    Ok(())
}

/// Blocks that may hold calls with time in `[from, to)`, least time first.
fn overlapping(conn: &Connection, from: i64, to: i64) -> Result<Vec<Block>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, min_time FROM call_blocks \
         WHERE max_time >= ?1 AND min_time < ?2 ORDER BY min_time, first_seq",
    )?;
    let rows = stmt.query_map(params![from, to], |row| {
        Ok(Block { first_seq: row.get(0)?, last_seq: row.get(1)?, min_time: row.get(2)? })
    })?;
    rows.collect()
}

/// The seq ranges of `blocks` as disjoint ranges in seq order (a block's
/// range can overlap a later one's when retention emptied the top of it and
/// SQLite handed its seqs out again).
fn disjoint(blocks: &[Block]) -> Vec<(i64, i64)> {
    merge_ranges(blocks.iter().map(|b| (b.first_seq, b.last_seq)).collect())
}

/// Seq ranges (first, last) merged into disjoint ones, in seq order.
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some((_, end)) if first <= *end + 1 => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Sorts calls by (time, seq), drops repeats and keeps the first `limit`.
fn settle_page(found: &mut Vec<SequencedCall>, limit: usize) {
    found.sort_unstable_by_key(|c| (c.call.time_ms, c.seq));
    found.dedup_by_key(|c| c.seq);
    found.truncate(limit);
}

/// A page of calls in (time, seq) order. Blocks are read least time first,
/// and reading stops once `limit` calls are found that no later block can
/// come before.
pub fn list(conn: &Connection, filter: &CallFilter) -> Result<Vec<SequencedCall>, StorageError> {
    let series = match &filter.series {
        Some(series) if series.is_empty() => return Ok(Vec::new()),
        Some(series) => {
            let ids: Vec<String> = series.iter().map(i64::to_string).collect();
            format!(" AND c.series IN ({})", ids.join(","))
        }
        None => String::new(),
    };
    let (after_time, after_seq) = filter.after.unwrap_or((i64::MIN, i64::MIN));
    let blocks = overlapping(conn, filter.from_ms.max(after_time), filter.to_ms)?;
    let sql = format!(
        "{} WHERE c.seq BETWEEN ?1 AND ?2 AND c.project = ?3 AND c.time_ms >= ?4 \
         AND c.time_ms < ?5 AND (c.time_ms, c.seq) > (?6, ?7) \
         AND (c.time_ms, c.seq) < (?9, ?10) AND (?8 IS NULL OR c.session = ?8){series}",
        rows::SELECT_CALL
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut found: Vec<SequencedCall> = Vec::new();
    // Once a page is full, only calls before its last can still enter it.
    let mut before = (i64::MAX, i64::MAX);
    for block in &blocks {
        if found.len() >= filter.limit {
            settle_page(&mut found, filter.limit);
            let last = &found[filter.limit - 1];
            before = (last.call.time_ms, last.seq);
            if block.min_time > before.0 {
                break;
            }
        }
        let rows = stmt.query_map(
            params![
                block.first_seq,
                block.last_seq,
                filter.project,
                filter.from_ms,
                filter.to_ms,
                after_time,
                after_seq,
                filter.session,
                before.0,
                before.1
            ],
            rows::call_from_row,
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    settle_page(&mut found, filter.limit);
    Ok(found)
}

/// Calls with time in `[from, to)` and seq above `after_seq`, in seq order,
/// at most `limit`.
pub fn between(
    conn: &Connection,
    from: i64,
    to: i64,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<SequencedCall>, StorageError> {
    let sql = format!(
        "{} WHERE c.seq BETWEEN ?1 AND ?2 AND c.time_ms >= ?3 AND c.time_ms < ?4 \
         ORDER BY c.seq LIMIT ?5",
        rows::SELECT_CALL
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut found = Vec::new();
    for (first, last) in disjoint(&overlapping(conn, from, to)?) {
        if found.len() >= limit {
            break;
        }
        if last <= after_seq {
            continue;
        }
        let remaining = (limit - found.len()) as i64;
        let rows = stmt.query_map(
            params![first.max(after_seq + 1), last, from, to, remaining],
            rows::call_from_row,
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    Ok(found)
}

/// Deletes calls with time before `cutoff`, and the blocks left without any.
pub fn delete_before(tx: &Transaction<'_>, cutoff: i64) -> Result<usize, rusqlite::Error> {
    let ranges: Vec<(i64, i64)> = {
        let mut stmt =
            tx.prepare("SELECT first_seq, last_seq FROM call_blocks WHERE min_time < ?1")?;
        let rows = stmt.query_map([cutoff], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut deleted = 0;
    let mut delete =
        tx.prepare("DELETE FROM calls WHERE seq BETWEEN ?1 AND ?2 AND time_ms < ?3")?;
    for (first, last) in ranges {
        deleted += delete.execute(params![first, last, cutoff])?;
    }
    tx.execute("DELETE FROM call_blocks WHERE max_time < ?1", [cutoff])?;
    Ok(deleted)
}

/// Builds blocks for a store written before they existed (schema 5) from
/// its calls, and drops the per-call time index they replace. Runs before
/// the schema is applied, which creates the blocks' own index.
pub fn migrate_from_5(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.execute_batch(&format!(
        "CREATE TABLE call_blocks (
             first_seq INTEGER PRIMARY KEY,
             last_seq  INTEGER NOT NULL,
             calls     INTEGER NOT NULL,
             min_time  INTEGER NOT NULL,
             max_time  INTEGER NOT NULL
         );
         INSERT INTO call_blocks (first_seq, last_seq, calls, min_time, max_time)
             SELECT min(seq), max(seq), count(*), min(time_ms), max(time_ms) FROM calls
             GROUP BY seq / {BLOCK_CALLS};
         DROP INDEX IF EXISTS calls_time;"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::schema;

    #[test]
    fn a_schema_5_store_gets_blocks_for_its_calls() {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        // Back to schema 5: no blocks, a time index, 10,000 calls.
        conn.execute_batch(&format!(
            "DROP TABLE call_blocks; CREATE INDEX calls_time ON calls (time_ms);
             DROP TABLE span_blocks; DROP TABLE span_chunks; {}
             CREATE INDEX spans_start ON spans (project, start_ns);
             PRAGMA user_version = 5;",
            schema::SPANS_V7
        ))
        .unwrap();
        for seq in 1..=10_000_i64 {
            conn.execute(
                "INSERT INTO calls (seq, project, series, time_ms, payload) \
                 VALUES (?1, 'default', 1, ?2, x'')",
                params![seq, 50_000 - seq],
            )
            .unwrap();
        }
        schema::create_or_check(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
        let blocks: Vec<(i64, i64, i64, i64, i64)> = conn
            .prepare("SELECT first_seq, last_seq, calls, min_time, max_time FROM call_blocks")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks.iter().map(|b| b.2).sum::<i64>(), 10_000);
        assert_eq!(blocks[0], (1, 4095, 4095, 50_000 - 4095, 49_999));
        let time_index: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'calls_time'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(time_index, 0);
    }

    fn call(id: Option<&str>, time_ms: i64) -> LlmCall {
        LlmCall { id: id.map(str::to_owned), time_ms, ..LlmCall::example() }
    }

    #[test]
    fn calls_insert_by_time_with_repeated_keys_last_in_arrival_order() {
        let calls = [
            call(Some("a"), 30),
            call(None, 10),
            call(Some("b"), 20),
            call(Some("a"), 5),
            call(Some("c"), 1),
            call(None, 10),
        ];
        let spans = [None, None, None, None, Some("t1s1"), None];
        assert_eq!(insert_order(&calls, &spans), vec![4, 1, 5, 2, 0, 3]);
        // A span key shared with an earlier call repeats too, and a key of a
        // repeated call still counts as seen for the calls after it.
        let calls = [call(Some("a"), 30), call(Some("b"), 20), call(Some("b"), 10)];
        let spans = [Some("t1s1"), Some("t1s1"), None];
        assert_eq!(insert_order(&calls, &spans), vec![0, 1, 2]);
    }

    #[test]
    fn full_runs_break_at_time_slices_and_sparse_runs_span_them() {
        // Dense: the run breaks at the slice once it holds SPARSE_CALLS calls.
        let mut inserted: Vec<(i64, i64)> = (1..=SPARSE_CALLS).map(|s| (s, 10 + s)).collect();
        inserted.extend([(65, 1_000), (67, 1_500), (68, 200), (69, 90_000)]);
        assert_eq!(
            runs(inserted.into_iter()),
            vec![
                Run { first: 1, last: 64, min: 11, max: 74, count: 64 },
                Run { first: 65, last: 69, min: 200, max: 90_000, count: 4 },
            ]
        );
        // A run breaks at a gap the other way (seqs going back) too.
        let back = [(5, 100), (3, 100)];
        assert_eq!(runs(back.into_iter()).len(), 2);
    }

    #[test]
    fn overlapping_ranges_merge_into_disjoint_ones() {
        let block = |first_seq, last_seq| Block { first_seq, last_seq, min_time: 0 };
        assert_eq!(
            disjoint(&[block(10, 20), block(1, 5), block(15, 30), block(6, 8), block(40, 41)]),
            vec![(1, 8), (10, 30), (40, 41)]
        );
        assert!(disjoint(&[]).is_empty());
    }
}
