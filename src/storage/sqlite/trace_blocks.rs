//! The time index of `traces`: one `trace_blocks` row per run of a
//! project's trace rows whose starts lie in one slice of time (a minute, or
//! wider for an append whose traces start over more than a few minutes:
//! `span_blocks::Slices`), instead of an index entry per trace. Trace rows
//! are numbered in arrival order, and an append numbers its new traces by
//! project and slice, so a run is a range of row numbers holding only its
//! project's traces. Trace starts come in any
//! order, so an index on them took a random page write per new trace in
//! every commit, more as the store grew; a block is written once per run.
//! A block also sums its traces by root service (durations, error traces,
//! cost), kept true as later spans change them, so that the trace summary
//! takes the blocks wholly inside its window from those, not row by row.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::schema::TRACE_ROW_FLOOR_KEY;
use super::span_blocks::{Slices, access};
use crate::aggregate::sketch::{Encodings, Sketch};
use crate::storage::{SpanDurations, StorageError, TraceSums, TraceTiming};

/// Most traces in one block: a block is read whole (by row range) when its
/// times meet a query's window.
pub const BLOCK_TRACES: i64 = 1024;

/// The blocks of `?1` (a project) whose traces may start in `[?2, ?3)`, as
/// (first row, last row), the latest `max_start` first.
pub const NEWEST_FIRST: &str = "SELECT first_id, last_id, max_start FROM trace_blocks \
    INDEXED BY trace_blocks_by_start \
    WHERE project = ?1 AND max_start >= ?2 AND min_start < ?3 ORDER BY max_start DESC";

/// A `WITH` clause naming `b` the row ranges (first_id, last_id) of the
/// parameter `param` (as `ranges_json` writes them); join traces with `b
/// CROSS JOIN traces t NOT INDEXED ON t.id BETWEEN b.first_id AND
/// b.last_id` (read by row ranges) and filter by project and start again.
pub fn in_ranges(param: &str) -> String {
    format!(
        "WITH b AS (SELECT value ->> 0 AS first_id, value ->> 1 AS last_id \
         FROM json_each({param}))"
    )
}

/// Rows closer than this to the end of a range are read through rather
/// than seeking anew: blocks of one append lie side by side.
const READ_THROUGH: i64 = 256;

/// Disjoint row ranges, in row order, as JSON (for `in_ranges`), holding
/// every trace of `project` that starts in `[from_ns, to_ns)` (and others:
/// filter again).
pub fn ranges(
    conn: &Connection,
    project: &str,
    from_ns: i64,
    to_ns: i64,
) -> Result<String, rusqlite::Error> {
    let mut found = Vec::new();
    meeting(conn, project, (from_ns, to_ns), false, |r| {
        found.push((r.get(0)?, r.get(1)?));
        Ok(())
    })?;
    Ok(ranges_json(found, READ_THROUGH))
}

/// Calls `each` with (first row, last row, least start, greatest start,
/// sums if `with_sums`, else NULL) of each block of `project` whose traces
/// may start in `[from_ns, to_ns)`. The index on start holds all but the
/// sums: without them it is read alone.
fn meeting(
    conn: &Connection,
    project: &str,
    (from_ns, to_ns): (i64, i64),
    with_sums: bool,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<(), rusqlite::Error> {
    const INDEX: &str = "INDEXED BY trace_blocks_by_start";
    let (column, how) = if !with_sums {
        ("NULL", INDEX)
    } else {
        let how = access(
            conn,
            "SELECT (SELECT min(max_start) FROM trace_blocks WHERE project = ?1), \
             (SELECT max(max_start) FROM trace_blocks WHERE project = ?1)",
            [project],
            (from_ns, to_ns),
            INDEX,
        )?;
        ("sums", how)
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT first_id, last_id, min_start, max_start, {column} FROM trace_blocks {how} \
         WHERE project = ?1 AND max_start >= ?2 AND min_start < ?3"
    ))?;
    let mut rows = stmt.query(params![project, from_ns, to_ns])?;
    while let Some(row) = rows.next()? {
        each(row)?;
    }
    Ok(())
}

/// Traces of `project` (and root `service`) starting in `[from_ns, to_ns)`,
/// as summed by the blocks wholly inside the window, and the row ranges of
/// the other blocks that may hold some (as JSON for `in_ranges`), to be
/// read row by row. A block without sums (written before blocks had them,
/// past `MAX_SUMMED_SERVICES`, or cut by retention) is read.
pub fn summed(
    conn: &Connection,
    project: &str,
    (from_ns, to_ns): (i64, i64),
    service: Option<&str>,
) -> Result<(TraceSums, String), StorageError> {
    let (mut sums, mut read) = (TraceSums::default(), Vec::new());
    let mut failed = None;
    meeting(conn, project, (from_ns, to_ns), true, |r| {
        let (first, last, min, max): (i64, i64, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let stored = r.get_ref(4)?.as_blob_or_null().map_err(rusqlite::Error::from)?;
        match stored.filter(|_| min >= from_ns && max < to_ns) {
            Some(bytes) => {
                if let Err(err) = add_stored(&mut sums, bytes, service) {
                    failed.get_or_insert(StorageError::Corrupt(format!(
                        "sums of the trace block of rows {first}..={last}: {err}"
                    )));
                }
            }
            None => read.push((first, last)),
        }
        Ok(())
    })?;
    // Ranges are not read through past a summed block: its rows would
    // count twice.
    match failed {
        Some(err) => Err(err),
        None => Ok((sums, ranges_json(read, 1))),
    }
}

/// Most root services a block sums its traces by; a block with more sums
/// none of them and is read row by row (services are client data).
const MAX_SUMMED_SERVICES: usize = 256;

/// A block's traces summed by root service; `None` once they are not
/// (past `MAX_SUMMED_SERVICES`, or a trace that could not be taken back).
type Sums = Option<Vec<(String, TraceSums)>>;

/// The sums of one root service's traces as a block keeps them.
#[derive(Serialize, Deserialize)]
struct StoredSums<'a> {
    service: &'a str,
    errors: u64,
    cost_usd: f64,
    /// The durations (ms), `Sketch::encode`.
    #[serde(borrow, with = "serde_bytes")]
    sketch: &'a [u8],
}

/// The sums as stored (`None`: not kept).
fn encode(sums: &Sums) -> Option<Vec<u8>> {
    let sums = sums.as_ref()?;
    let sketches = Encodings::of(sums.iter().map(|(_, s)| &s.durations.sketch));
    let stored: Vec<StoredSums<'_>> = sums
        .iter()
        .zip(sketches.parts())
        .map(|((service, s), sketch)| StoredSums {
            service,
            errors: s.durations.errors,
            cost_usd: s.cost_usd,
            sketch,
        })
        .collect();
    Some(postcard::to_allocvec(&stored).expect("writing to a Vec cannot fail"))
}

fn decode(bytes: Option<&[u8]>) -> Result<Sums, String> {
    let Some(bytes) = bytes else { return Ok(None) };
    let stored: Vec<StoredSums<'_>> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|s| {
            let sketch = Sketch::decode(s.sketch).map_err(|e| e.to_string())?;
            let durations = SpanDurations { sketch, errors: s.errors };
            Ok((s.service.to_owned(), TraceSums { durations, cost_usd: s.cost_usd }))
        })
        .collect::<Result<_, String>>()
        .map(Some)
}

/// Merges a block's stored sums (of `service`'s traces, or all) into `sums`.
fn add_stored(sums: &mut TraceSums, bytes: &[u8], service: Option<&str>) -> Result<(), String> {
    let stored: Vec<StoredSums<'_>> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    for s in stored.iter().filter(|s| service.is_none_or(|service| s.service == service)) {
        sums.durations.sketch.merge_encoded(s.sketch).map_err(|e| e.to_string())?;
        sums.durations.errors += s.errors;
        sums.cost_usd += s.cost_usd;
    }
    Ok(())
}

/// Adds a trace of root `service` to `sums` (which stop past
/// `MAX_SUMMED_SERVICES` services).
fn add_to(sums: &mut Sums, service: &str, timing: &TraceTiming) {
    let Some(by_service) = sums else { return };
    let at = match by_service.iter().position(|(s, _)| s == service) {
        Some(at) => at,
        None if by_service.len() < MAX_SUMMED_SERVICES => {
            by_service.push((service.to_owned(), TraceSums::default()));
            by_service.len() - 1
        }
        None => return *sums = None,
    };
    by_service[at].1.add(timing);
}

/// Takes a trace of root `service` back from `sums`; they stop being kept
/// if it is not there (which would mean they were wrong).
fn take_from(sums: &mut Sums, service: &str, timing: &TraceTiming) {
    let Some(by_service) = sums else { return };
    let found = by_service.iter_mut().find(|(s, _)| s == service);
    if !found.is_some_and(|(_, s)| s.remove(timing)) {
        *sums = None;
    }
}

/// A stored trace an append changed: its row, and its root service and
/// timing before and after.
pub struct Changed {
    pub row: i64,
    pub before: (String, TraceTiming),
    pub after: (String, TraceTiming),
}

/// Moves each changed trace's part of its block's sums from what it was to
/// what it is.
pub fn adjust(tx: &Transaction<'_>, changed: &[Changed]) -> Result<(), rusqlite::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let mut block_of = tx.prepare_cached(
        "SELECT first_id, sums FROM trace_blocks WHERE first_id <= ?1 \
         ORDER BY first_id DESC LIMIT 1",
    )?;
    let mut blocks: FxHashMap<i64, Sums> = FxHashMap::default();
    for c in changed {
        let found: Option<(i64, Option<Vec<u8>>)> =
            block_of.query_row([c.row], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let Some((first, stored)) = found else { continue };
        // Sums that cannot be read are dropped: the block is read row by
        // row from then on.
        let sums = blocks.entry(first).or_insert_with(|| decode(stored.as_deref()).unwrap_or(None));
        take_from(sums, &c.before.0, &c.before.1);
        add_to(sums, &c.after.0, &c.after.1);
    }
    let mut update = tx.prepare_cached("UPDATE trace_blocks SET sums = ?2 WHERE first_id = ?1")?;
    for (first, sums) in &blocks {
        update.execute(params![first, encode(sums)])?;
    }
    Ok(())
}

/// Row ranges sorted and merged into disjoint ones, as JSON (for
/// `in_ranges`): ranges overlapping, or `gap` rows or fewer apart, become
/// one.
pub fn ranges_json(mut found: Vec<(i64, i64)>, gap: i64) -> String {
    found.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(found.len());
    for (first, last) in found {
        match merged.last_mut() {
            Some((_, end)) if first <= end.saturating_add(gap) => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    serde_json::to_string(&merged).expect("numbers serialize")
}

/// The row a new trace takes: past every row ever given (kept in `meta`;
/// a store from before that starts past every row its traces, chunks and
/// blocks name). A deleted trace's row is not given again, so that the
/// rows of a run of trace keys stay that run's.
pub fn next_row(tx: &Transaction<'_>) -> Result<i64, rusqlite::Error> {
    tx.prepare_cached(
        "SELECT coalesce((SELECT value FROM meta WHERE key = ?1), max( \
         coalesce((SELECT max(id) FROM traces), 0), \
         coalesce((SELECT max(trace) FROM span_chunks), 0), \
         coalesce((SELECT last_id FROM trace_blocks ORDER BY first_id DESC LIMIT 1), 0))) + 1",
    )?
    .query_row([TRACE_ROW_FLOOR_KEY], |row| row.get(0))
}

/// Notes that rows through `last` are given.
pub fn given(tx: &Transaction<'_>, last: i64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![TRACE_ROW_FLOOR_KEY, last])?;
    Ok(())
}

/// A block being built: its project, row range, start times, traces and
/// their sums.
struct Run<'a> {
    project: &'a str,
    first: i64,
    last: i64,
    min: i64,
    max: i64,
    traces: i64,
    sums: Sums,
    /// For the newest stored block, the traces it held when read.
    stored: Option<i64>,
}

/// A new trace row: its project, row and start, and its root service and
/// timing (`None` for a row whose block is to keep no sums).
pub struct NewTrace<'a> {
    pub project: &'a str,
    pub row: i64,
    pub start: i64,
    pub summed: Option<(&'a str, TraceTiming)>,
}

impl Run<'_> {
    fn takes(&self, slices: Slices, project: &str, start: i64) -> bool {
        self.project == project
            && slices.of(self.max) == slices.of(start)
            && self.traces < BLOCK_TRACES
    }
}

/// Notes new trace rows, in row order: each joins the run before it if
/// that is its project's, of its start's slice and not full, else starts a
/// block. The first may join the newest stored block: every row past that
/// block's is new, so its range stays one project's.
pub fn record<'a>(
    tx: &Transaction<'_>,
    slices: Slices,
    rows: impl IntoIterator<Item = NewTrace<'a>>,
) -> Result<(), rusqlite::Error> {
    type Newest = (String, i64, i64, i64, i64, i64, Option<Vec<u8>>);
    let newest: Option<Newest> = tx
        .prepare_cached(
            "SELECT project, first_id, last_id, min_start, max_start, traces, sums \
             FROM trace_blocks ORDER BY first_id DESC LIMIT 1",
        )?
        .query_row([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .optional()?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO trace_blocks (first_id, last_id, project, min_start, max_start, traces, \
         sums) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE trace_blocks SET last_id = ?2, min_start = ?3, max_start = ?4, traces = ?5, \
         sums = ?6 WHERE first_id = ?1",
    )?;
    let mut write = |run: &Run<'_>| -> Result<(), rusqlite::Error> {
        let sums = encode(&run.sums);
        match run.stored {
            None => insert.execute(params![
                run.first,
                run.last,
                run.project,
                run.min,
                run.max,
                run.traces,
                sums
            ]),
            Some(held) if run.traces > held => {
                update.execute(params![run.first, run.last, run.min, run.max, run.traces, sums])
            }
            Some(_) => return Ok(()),
        }
        .map(|_| ())
    };
    let mut run = newest.as_ref().map(|(project, first, last, min, max, traces, sums)| Run {
        project,
        first: *first,
        last: *last,
        min: *min,
        max: *max,
        traces: *traces,
        // Sums that cannot be read are dropped (the block is read row by row).
        sums: decode(sums.as_deref()).unwrap_or(None),
        stored: Some(*traces),
    });
    for NewTrace { project, row, start, summed } in rows {
        let run = match &mut run {
            Some(r) if r.takes(slices, project, start) => {
                r.last = row;
                r.min = r.min.min(start);
                r.max = r.max.max(start);
                r.traces += 1;
                r
            }
            _ => {
                if let Some(done) = &run {
                    write(done)?;
                }
                let sums = Some(Vec::new());
                let first = Run {
                    project,
                    first: row,
                    last: row,
                    min: start,
                    max: start,
                    traces: 1,
                    sums,
                    stored: None,
                };
                run.insert(first)
            }
        };
        match &summed {
            Some((service, timing)) => add_to(&mut run.sums, service, timing),
            None => run.sums = None,
        }
    }
    if let Some(r) = &run {
        write(r)?;
    }
    Ok(())
}

/// Notes that the trace in `row` of `project` now starts at `start_ns`
/// (earlier than before: a trace's start only moves back).
pub fn widen(
    tx: &Transaction<'_>,
    project: &str,
    row: i64,
    start_ns: i64,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE trace_blocks SET min_start = ?3 WHERE first_id = \
         (SELECT first_id FROM trace_blocks WHERE first_id <= ?2 ORDER BY first_id DESC LIMIT 1) \
         AND project = ?1 AND min_start > ?3",
    )?
    .execute(params![project, row, start_ns])?;
    Ok(())
}

/// Builds the blocks of every trace row (a store from before blocks), a
/// page of rows at a time.
pub fn build(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    let mut page = tx.prepare(
        "SELECT project, id, start_ns FROM traces WHERE id > ?1 ORDER BY id LIMIT 65536",
    )?;
    // (Without sums: stores this old are read row by row.)
    let mut after = i64::MIN;
    loop {
        let rows: Vec<(String, i64, i64)> = page
            .query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = last.1;
        let rows = rows.iter().map(|(project, row, start)| NewTrace {
            project,
            row: *row,
            start: *start,
            summed: None,
        });
        record(tx, Slices::MINUTE, rows)?;
    }
}

/// Deletes the traces that ended before `cutoff_ns` (found through the
/// blocks that reach back past it), and the blocks they leave empty.
/// Returns the traces deleted.
pub fn delete_before(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<usize, rusqlite::Error> {
    let old: Vec<(i64, i64)> = tx
        .prepare("SELECT first_id, last_id FROM trace_blocks WHERE min_start < ?1")?
        .query_map([cutoff_ns], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delete = tx.prepare("DELETE FROM traces WHERE id BETWEEN ?1 AND ?2 AND end_ns < ?3")?;
    // A block that keeps some of its traces no longer sums them.
    let mut unsum = tx.prepare("UPDATE trace_blocks SET sums = NULL WHERE first_id = ?1")?;
    let mut deleted = 0;
    for (first, last) in old {
        let gone = delete.execute(params![first, last, cutoff_ns])?;
        if gone > 0 {
            unsum.execute([first])?;
        }
        deleted += gone;
    }
    tx.execute(
        "DELETE FROM trace_blocks WHERE min_start < ?1 AND NOT EXISTS \
         (SELECT 1 FROM traces t WHERE t.id BETWEEN trace_blocks.first_id AND trace_blocks.last_id)",
        [cutoff_ns],
    )?;
    Ok(deleted)
}

/// Every trace row's block, for tests: (first, last, project, min, max, traces).
#[cfg(test)]
pub fn all(conn: &Connection) -> Vec<(i64, i64, String, i64, i64, i64)> {
    conn.prepare(
        "SELECT first_id, last_id, project, min_start, max_start, traces FROM trace_blocks \
         ORDER BY first_id",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::SpanRecord;
    use crate::storage::sqlite::schema;
    use crate::storage::sqlite::span_blocks::BLOCK_SPAN_NS;
    use crate::storage::sqlite::span_packing::SpanPacking;
    use crate::storage::sqlite::telemetry;
    use crate::storage::{
        KindCounts, SpanDurations, SpanGroup, SpanTiming, TelemetryScope, TelemetryVisitor,
        TraceFilter, TraceSums, TraceTiming,
    };

    const M: i64 = BLOCK_SPAN_NS;

    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        conn
    }

    /// New rows as (project, row, start), without sums.
    fn unsummed<'a>(
        rows: impl IntoIterator<Item = (&'a str, i64, i64)>,
    ) -> impl Iterator<Item = NewTrace<'a>> {
        rows.into_iter().map(|(project, row, start)| NewTrace { project, row, start, summed: None })
    }

    #[test]
    fn runs_break_at_projects_minutes_and_the_cap_and_the_newest_block_is_extended() {
        let mut conn = store();
        let tx = conn.transaction().unwrap();
        let rows = [("a", 1, 10), ("a", 2, 5), ("b", 3, 7), ("a", 4, M), ("a", 6, M + 3)];
        record(&tx, Slices::MINUTE, unsummed(rows)).unwrap();
        // The next append's first rows join the newest block if they can.
        record(&tx, Slices::MINUTE, unsummed([("a", 7, M + 1), ("a", 8, 2 * M)])).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            all(&conn),
            vec![
                (1, 2, "a".into(), 5, 10, 2),
                (3, 3, "b".into(), 7, 7, 1),
                (4, 7, "a".into(), M, M + 3, 3),
                (8, 8, "a".into(), 2 * M, 2 * M, 1),
            ]
        );
        let tx = conn.transaction().unwrap();
        let rows: Vec<(&str, i64, i64)> =
            (0..BLOCK_TRACES + 1).map(|i| ("b", 100 + i, 3 * M)).collect();
        record(&tx, Slices::MINUTE, unsummed(rows)).unwrap();
        tx.commit().unwrap();
        let blocks = all(&conn);
        assert_eq!(
            blocks[4],
            (100, 100 + BLOCK_TRACES - 1, "b".into(), 3 * M, 3 * M, BLOCK_TRACES)
        );
        assert_eq!(blocks[5].0, 100 + BLOCK_TRACES);
        assert_eq!(blocks.len(), 6);
    }

    #[test]
    fn an_earlier_start_widens_only_its_own_block() {
        let mut conn = store();
        let tx = conn.transaction().unwrap();
        record(&tx, Slices::MINUTE, unsummed([("a", 1, M), ("a", 2, M + 1), ("b", 3, M)])).unwrap();
        widen(&tx, "a", 2, 5).unwrap();
        // Not a's block: left alone.
        widen(&tx, "a", 3, 1).unwrap();
        widen(&tx, "b", 3, M + 9).unwrap();
        tx.commit().unwrap();
        assert_eq!(all(&conn), vec![(1, 2, "a".into(), 5, M + 1, 2), (3, 3, "b".into(), M, M, 1)]);
    }

    /// Spans of three projects (one far busier than the others) over two
    /// hours, in 30 appends: new traces and more spans of earlier ones,
    /// some starting before them.
    fn traffic() -> Vec<Vec<SpanRecord>> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut traces: Vec<(String, String, i64)> = Vec::new();
        let mut appends = Vec::new();
        for a in 0..30 {
            let mut spans = Vec::new();
            for i in 0..80 {
                let (project, trace_id, start) = if traces.is_empty() || next(4) > 0 {
                    let project = ["a", "a", "a", "a", "a", "a", "b", "c"][next(8) as usize];
                    let trace = (project.to_owned(), format!("{:032x}", next(u64::MAX)), 0);
                    traces.push((trace.0, trace.1, (next(7_200) as i64) * 1_000_000_000));
                    traces.last().unwrap().clone()
                } else {
                    traces[next(traces.len() as u64) as usize].clone()
                };
                // A later span of a trace can start before it.
                let start = start + next(120) as i64 * 1_000_000_000 - 60_000_000_000;
                let mut span = SpanRecord {
                    project,
                    trace_id,
                    span_id: format!("{a:04x}{i:012x}"),
                    start_ns: start,
                    end_ns: start + next(90) as i64 * 1_000_000_000,
                    session: (next(3) == 0).then(|| format!("s{}", next(5))),
                    ..SpanRecord::example()
                };
                span.status =
                    if next(5) == 0 { crate::model::SpanStatus::Error } else { span.status };
                use crate::model::SpanKind;
                span.kind = [SpanKind::Llm, SpanKind::Tool, SpanKind::Chain][next(3) as usize];
                span.model = [None, Some("m1"), Some("m2")][next(3) as usize].map(String::from);
                span.service = ["svc", "api"][next(2) as usize].to_owned();
                spans.push(span);
            }
            appends.push(spans);
        }
        appends
    }

    /// Every trace row lies in exactly one block of its project, whose
    /// times hold its start.
    fn assert_covered(conn: &Connection) {
        let strays: i64 = conn
            .query_row(
                "SELECT count(*) FROM traces t WHERE (SELECT count(*) FROM trace_blocks b \
                 WHERE t.id BETWEEN b.first_id AND b.last_id AND b.project = t.project \
                 AND t.start_ns BETWEEN b.min_start AND b.max_start) != 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(strays, 0);
    }

    #[test]
    fn lists_pages_sessions_and_totals_through_blocks_match_a_scan_of_every_trace() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        for spans in traffic() {
            telemetry::append_as_committer(&mut conn, &spans, &packing);
        }
        assert_covered(&conn);
        assert_sums_match_rows(&conn);
        // Each append's traces start over two hours: cut into 16-minute
        // slices, at most 10 blocks a project (a minute each would be ~60).
        let blocks = all(&conn).len();
        assert!(blocks <= 30 * 3 * 10, "{blocks} blocks");
        let widened: i64 = conn
            .query_row("SELECT count(*) FROM trace_blocks WHERE min_start < max_start", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(widened > 0);
        let s = 1_000_000_000;
        for project in ["a", "b", "c"] {
            for (from, to) in
                [(-100 * s, 9_000 * s), (1_000 * s, 1_600 * s), (7_000 * s, 7_001 * s)]
            {
                // What a scan of every row finds, newest first.
                let all: Vec<(i64, String)> = conn
                    .prepare(
                        "SELECT start_ns, trace_id FROM traces NOT INDEXED WHERE project = ?1 \
                         AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns DESC, trace_id DESC",
                    )
                    .unwrap()
                    .query_map(params![project, from, to], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let mut paged = Vec::new();
                let mut filter = TraceFilter {
                    project: project.into(),
                    from_ns: from,
                    to_ns: to,
                    limit: 7,
                    ..TraceFilter::default()
                };
                loop {
                    let page = telemetry::list_traces(&conn, &filter).unwrap();
                    let Some(last) = page.last() else { break };
                    filter.before = Some((last.start_ns, last.trace_id.clone()));
                    paged.extend(page.into_iter().map(|t| (t.start_ns, t.trace_id)));
                }
                assert_eq!(paged, all, "{project} {from}..{to}");
                let scope = TelemetryScope {
                    project: project.into(),
                    from_ns: from,
                    to_ns: to,
                    service: None,
                };
                let mut count = Count(0);
                telemetry::scan_traces(&conn, &scope, &mut count).unwrap();
                assert_eq!(count.0, all.len());
                // The summary from the blocks' sums, as read row by row.
                for service in [None, Some("api")] {
                    let scope =
                        TelemetryScope { service: service.map(String::from), ..scope.clone() };
                    let summed = Totals::scan(&conn, &scope, true);
                    Totals::scan(&conn, &scope, false).assert_same(&summed);
                    if (from, to) == (-100 * s, 9_000 * s) {
                        let total = summed.found.durations.sketch.count() as usize;
                        assert!(summed.traces < total, "the whole window takes blocks' sums");
                    }
                }
                // Spans from the blocks' counts, sums and timings, as read
                // from every chunk.
                for service in [None, Some("api")] {
                    let scope =
                        TelemetryScope { service: service.map(String::from), ..scope.clone() };
                    let summed = assert_spans_match_chunks(&conn, &scope);
                    if (from, to) == (-100 * s, 9_000 * s) {
                        assert!(summed > 0, "the whole window takes blocks' sums");
                    }
                }
                let sessions = telemetry::list_sessions(&conn, project, from, to, 100).unwrap();
                let expected: Vec<(String, u64)> = conn
                    .prepare(
                        "SELECT session, count(*) FROM traces NOT INDEXED WHERE project = ?1 \
                         AND session IS NOT NULL AND start_ns >= ?2 AND start_ns < ?3 \
                         GROUP BY session ORDER BY max(end_ns) DESC, session",
                    )
                    .unwrap()
                    .query_map(params![project, from, to], |r| {
                        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let got: Vec<(String, u64)> =
                    sessions.into_iter().map(|x| (x.session, x.traces)).collect();
                assert_eq!(got, expected);
            }
        }
        // Span blocks written before blocks kept their spans' timings
        // (schema 16 and before) are read from their chunks.
        let untimed = conn.execute("DELETE FROM span_block_timings WHERE block % 2 = 0", []);
        assert!(untimed.unwrap() > 10);
        for project in ["a", "b", "c"] {
            for (from, to) in [(-100 * s, 9_000 * s), (1_000 * s, 1_600 * s)] {
                let scope = TelemetryScope {
                    project: project.into(),
                    from_ns: from,
                    to_ns: to,
                    service: None,
                };
                assert_spans_match_chunks(&conn, &scope);
            }
        }
        // Later spans moved traces' durations, errors and root services:
        // each block's sums still match its rows.
        let changed: i64 = conn
            .query_row("SELECT count(*) FROM traces WHERE span_count > 1", [], |r| r.get(0))
            .unwrap();
        assert!(changed > 100, "{changed}");
        assert_sums_match_rows(&conn);
        // Retention takes the traces that ended before the cutoff, and the
        // blocks it empties; the rest stay found.
        let cutoff = 3_000 * s;
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM traces WHERE end_ns >= ?1", [cutoff], |r| r.get(0))
            .unwrap();
        let before: i64 = conn.query_row("SELECT count(*) FROM traces", [], |r| r.get(0)).unwrap();
        let blocks = all(&conn).len();
        let tx = conn.transaction().unwrap();
        assert_eq!(delete_before(&tx, cutoff).unwrap() as i64, before - kept);
        tx.commit().unwrap();
        let after: i64 = conn.query_row("SELECT count(*) FROM traces", [], |r| r.get(0)).unwrap();
        assert_eq!(after, kept);
        assert!(all(&conn).len() < blocks);
        assert_covered(&conn);
        // A block retention took some traces of keeps no sums.
        let unsummed: i64 = conn
            .query_row("SELECT count(*) FROM trace_blocks WHERE sums IS NULL", [], |r| r.get(0))
            .unwrap();
        assert!(unsummed > 0);
        assert_sums_match_rows(&conn);
        for project in ["a", "b", "c"] {
            let scope = TelemetryScope {
                project: project.into(),
                from_ns: 0,
                to_ns: 9_000 * s,
                service: None,
            };
            Totals::scan(&conn, &scope, false).assert_same(&Totals::scan(&conn, &scope, true));
        }
        let empty: i64 = conn
            .query_row(
                "SELECT count(*) FROM trace_blocks b WHERE max_start < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM traces t WHERE t.id BETWEEN b.first_id AND b.last_id)",
                [cutoff],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(empty, 0);
    }

    struct Count(usize);

    /// Every block that keeps sums sums exactly its rows, by root service:
    /// trace counts, error traces and duration bins (a sketch's bins do
    /// not depend on the order of adds, merges and removals), cost up to
    /// rounding.
    /// Spans of `scope` by kind from the blocks' counts and timings, and
    /// their durations by kind and by model from the blocks' sums and
    /// timings, each as read from every chunk; returns how many sums the
    /// durations took.
    fn assert_spans_match_chunks(conn: &Connection, scope: &TelemetryScope) -> usize {
        let mut each = KindCounts::default();
        telemetry::scan_chunks(conn, scope, &mut each).unwrap();
        assert!(!each.0.is_empty() || scope.from_ns > 0, "the whole window has spans");
        let mut timed = KindCounts::default();
        telemetry::scan_spans(conn, scope, &mut timed).unwrap();
        assert_eq!(timed.0, each.0);
        assert_eq!(telemetry::count_span_kinds(conn, scope).unwrap(), each.0);
        let mut sums = 0;
        for group in [SpanGroup::Kind, SpanGroup::Model] {
            let mut each = ByGroup::new(group, false);
            telemetry::scan_chunks(conn, scope, &mut each).unwrap();
            let mut timed = ByGroup::new(group, false);
            telemetry::scan_spans(conn, scope, &mut timed).unwrap();
            each.assert_same(&timed);
            let mut summed = ByGroup::new(group, true);
            telemetry::scan_spans(conn, scope, &mut summed).unwrap();
            each.assert_same(&summed);
            sums += summed.sums;
        }
        sums
    }

    fn assert_sums_match_rows(conn: &Connection) {
        let blocks: Vec<(i64, i64, Vec<u8>)> = conn
            .prepare("SELECT first_id, last_id, sums FROM trace_blocks WHERE sums IS NOT NULL")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!blocks.is_empty());
        for (first, last, stored) in blocks {
            let mut kept = decode(Some(&stored)).unwrap().unwrap();
            kept.sort_by(|a, b| a.0.cmp(&b.0));
            let mut rows: Vec<(String, TraceSums)> = Vec::new();
            let mut stmt = conn
                .prepare(
                    "SELECT root_service, end_ns - start_ns, error_count, cost_usd FROM traces \
                     WHERE id BETWEEN ?1 AND ?2 ORDER BY root_service",
                )
                .unwrap();
            let mut found = stmt.query([first, last]).unwrap();
            while let Some(r) = found.next().unwrap() {
                let (service, timing) = (
                    r.get::<_, String>(0).unwrap(),
                    TraceTiming {
                        duration_ns: r.get(1).unwrap(),
                        errors: r.get::<_, i64>(2).unwrap() as u64,
                        cost_usd: r.get(3).unwrap(),
                    },
                );
                if rows.last().is_none_or(|(s, _)| *s != service) {
                    rows.push((service, TraceSums::default()));
                }
                rows.last_mut().unwrap().1.add(&timing);
            }
            // A service whose traces all moved away keeps empty sums.
            kept.retain(|(_, s)| !s.durations.sketch.is_empty());
            let services = |v: &[(String, TraceSums)]| -> Vec<String> {
                v.iter().map(|(s, _)| s.clone()).collect()
            };
            assert_eq!(services(&kept), services(&rows), "block {first}..={last}");
            for ((service, k), (_, r)) in kept.iter().zip(&rows) {
                let (k, r) = (&k.durations, &r.durations);
                assert_eq!((k.sketch.count(), k.errors), (r.sketch.count(), r.errors), "{service}");
                let (a, b) = (k.sketch.sum(), r.sketch.sum());
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{service} {first}..={last}: {a} {b} kept {k:?} rows {r:?}"
                );
                for q in [0.25, 0.5, 0.75] {
                    let (a, b) = (k.sketch.quantile(q).unwrap(), r.sketch.quantile(q).unwrap());
                    assert!((a - b).abs() <= 0.02 * b.abs(), "{service} q{q}: {a} {b}");
                }
            }
        }
    }

    /// The trace summary's totals, from the blocks' sums when `sums`.
    #[derive(Default)]
    struct Totals {
        use_sums: bool,
        found: TraceSums,
        /// Traces handed over one by one.
        traces: usize,
    }

    impl Totals {
        fn scan(conn: &Connection, scope: &TelemetryScope, use_sums: bool) -> Totals {
            let mut totals = Totals { use_sums, ..Totals::default() };
            telemetry::scan_traces(conn, scope, &mut totals).unwrap();
            totals
        }

        /// The same traces: counts and errors exactly, quantiles within
        /// the sketch's accuracy (a trace a later span changed leaves its
        /// old duration in the bounds of its block's sketch), cost up to
        /// rounding.
        fn assert_same(&self, other: &Totals) {
            let (a, b) = (&self.found, &other.found);
            assert_eq!(a.durations.sketch.count(), b.durations.sketch.count());
            assert_eq!(a.durations.errors, b.durations.errors);
            assert!((a.cost_usd - b.cost_usd).abs() <= 1e-9 * a.cost_usd.abs().max(1.0));
            let sum = a.durations.sketch.sum();
            let other = b.durations.sketch.sum();
            assert!((sum - other).abs() <= 1e-9 * sum.abs().max(1.0), "{sum} {other}");
            for q in [0.5, 0.95, 0.99] {
                let (x, y) = (a.durations.sketch.quantile(q), b.durations.sketch.quantile(q));
                match (x, y) {
                    (Some(x), Some(y)) => assert!((x - y).abs() <= 0.02 * x.abs(), "q{q}: {x} {y}"),
                    (x, y) => assert_eq!(x, y),
                }
            }
        }
    }

    impl TelemetryVisitor for Totals {
        fn trace(&mut self, timing: TraceTiming) {
            self.found.add(&timing);
            self.traces += 1;
        }

        fn takes_trace_sums(&self) -> bool {
            self.use_sums
        }

        fn summed_traces(&mut self, sums: &TraceSums) {
            self.found.merge(sums);
        }
    }

    /// Span durations by kind or model, from the blocks' sums when `sums`.
    struct ByGroup {
        group: SpanGroup,
        use_sums: bool,
        found: std::collections::BTreeMap<String, SpanDurations>,
        /// Sums handed over.
        sums: usize,
    }

    impl ByGroup {
        fn new(group: SpanGroup, use_sums: bool) -> Self {
            ByGroup { group, use_sums, found: Default::default(), sums: 0 }
        }

        /// The same spans in each group: counts, errors and quantiles
        /// exactly (a sketch's bins do not depend on the order of merges),
        /// the sum up to rounding.
        fn assert_same(&self, other: &ByGroup) {
            let keys: Vec<&String> = self.found.keys().collect();
            assert_eq!(keys, other.found.keys().collect::<Vec<_>>());
            for (key, d) in &self.found {
                let o = &other.found[key];
                assert_eq!((d.sketch.count(), d.errors), (o.sketch.count(), o.errors), "{key}");
                for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                    assert_eq!(d.sketch.quantile(q), o.sketch.quantile(q), "{key} {q}");
                }
                let (sum, other_sum) = (d.sketch.sum(), o.sketch.sum());
                assert!((sum - other_sum).abs() <= 1e-6 * sum.max(1.0), "{key}");
            }
        }
    }

    impl TelemetryVisitor for ByGroup {
        fn span(&mut self, timing: SpanTiming<'_>) {
            let key = match self.group {
                SpanGroup::Kind => Some(timing.kind),
                SpanGroup::Model => timing.model,
            };
            if let Some(key) = key {
                self.found.entry(key.to_owned()).or_default().add(timing.duration_ns, timing.error);
            }
        }

        fn summed_by(&self) -> Option<SpanGroup> {
            self.use_sums.then_some(self.group)
        }

        fn summed(&mut self, key: &str, durations: &SpanDurations) {
            self.sums += 1;
            self.found.entry(key.to_owned()).or_default().merge(durations);
        }
    }

    impl TelemetryVisitor for Count {
        fn trace(&mut self, _timing: TraceTiming) {
            self.0 += 1;
        }
    }

    #[test]
    fn a_schema_14_store_reads_its_blocks_without_sums_span_by_span_and_row_by_row() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let mut traffic = traffic().into_iter();
        for spans in traffic.by_ref().take(5) {
            telemetry::append_as_committer(&mut conn, &spans, &packing);
        }
        conn.execute_batch(
            "DROP TABLE span_block_kind_durations; DROP TABLE span_block_model_durations;
             DROP TABLE span_block_timings;
             ALTER TABLE trace_blocks DROP COLUMN sums; PRAGMA user_version = 14;",
        )
        .unwrap();
        schema::create_or_check(&conn).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("PRAGMA user_version"), schema::VERSION);
        assert!(count("SELECT count(*) FROM span_blocks") > 0);
        let timed = "SELECT (SELECT count(*) FROM span_block_kind_durations) \
                     + (SELECT count(*) FROM span_block_model_durations) \
                     + (SELECT count(*) FROM span_block_timings)";
        assert_eq!(count(timed), 0);
        // Nothing else of the older migrations runs again.
        assert_eq!(count("SELECT count(*) FROM sqlite_master WHERE name = 'traces_id'"), 0);
        let s = 1_000_000_000;
        let scope = TelemetryScope {
            project: "a".into(),
            from_ns: -100 * s,
            to_ns: 9_000 * s,
            service: None,
        };
        let compare = |conn: &Connection| {
            let mut each = ByGroup::new(SpanGroup::Kind, false);
            telemetry::scan_spans(conn, &scope, &mut each).unwrap();
            let mut summed = ByGroup::new(SpanGroup::Kind, true);
            telemetry::scan_spans(conn, &scope, &mut summed).unwrap();
            each.assert_same(&summed);
            summed.sums
        };
        assert_eq!(compare(&conn), 0);
        // Nor their traces: those are read row by row.
        let summary = |conn: &Connection| {
            let summed = Totals::scan(conn, &scope, true);
            Totals::scan(conn, &scope, false).assert_same(&summed);
            (summed.traces, summed.found.durations.sketch.count() as usize)
        };
        let (read, traces) = summary(&conn);
        assert_eq!(read, traces);
        // Blocks written from now on sum their spans and traces.
        telemetry::append_as_committer(&mut conn, &traffic.next().unwrap(), &packing);
        assert!(compare(&conn) > 0);
        let (read, traces) = summary(&conn);
        assert!(read < traces, "{read} of {traces} read row by row");
    }

    #[test]
    fn a_block_of_too_many_root_services_keeps_no_sums_and_is_read_row_by_row() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let spans: Vec<SpanRecord> = (0..MAX_SUMMED_SERVICES as i64 + 1)
            .map(|i| SpanRecord {
                project: "a".into(),
                trace_id: format!("{i:032x}"),
                span_id: format!("{i:016x}"),
                service: format!("svc-{i}"),
                start_ns: M + i,
                end_ns: M + i + 1_000_000 * (i + 1),
                ..SpanRecord::example()
            })
            .collect();
        telemetry::append_as_committer(&mut conn, &spans[..10], &packing);
        telemetry::append_as_committer(&mut conn, &spans[10..], &packing);
        // The rows of the second append joined the first's block.
        let blocks: Vec<Option<Vec<u8>>> = conn
            .prepare("SELECT sums FROM trace_blocks")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(blocks, [None]);
        for service in [None, Some("svc-3")] {
            let scope = TelemetryScope {
                project: "a".into(),
                from_ns: 0,
                to_ns: 9 * M,
                service: service.map(String::from),
            };
            let summed = Totals::scan(&conn, &scope, true);
            let count = summed.found.durations.sketch.count() as usize;
            assert_eq!(count, if service.is_some() { 1 } else { spans.len() });
            assert_eq!(summed.traces, count, "read row by row");
            Totals::scan(&conn, &scope, false).assert_same(&summed);
        }
    }

    #[test]
    fn unreadable_sums_fail_the_summary_and_are_dropped_when_their_block_changes() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let mut traffic = traffic().into_iter();
        telemetry::append_as_committer(&mut conn, &traffic.next().unwrap(), &packing);
        let newest: i64 = conn
            .query_row("SELECT max(first_id) FROM trace_blocks WHERE project = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        conn.execute("UPDATE trace_blocks SET sums = x'ff00ff' WHERE first_id = ?1", [newest])
            .unwrap();
        let scope = TelemetryScope {
            project: "a".into(),
            from_ns: -100 * 1_000_000_000,
            to_ns: 9_000 * 1_000_000_000,
            service: None,
        };
        let mut totals = Totals { use_sums: true, ..Totals::default() };
        let err = telemetry::scan_traces(&conn, &scope, &mut totals).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
        // The rows stay readable one by one.
        let mut count = Count(0);
        telemetry::scan_traces(&conn, &scope, &mut count).unwrap();
        assert!(count.0 > 0);
        // More traces of the block: it keeps no sums from then on.
        telemetry::append_as_committer(&mut conn, &traffic.next().unwrap(), &packing);
        let sums: Option<Vec<u8>> = conn
            .query_row("SELECT sums FROM trace_blocks WHERE first_id = ?1", [newest], |r| r.get(0))
            .unwrap();
        assert_eq!(sums, None);
        Totals::scan(&conn, &scope, false).assert_same(&Totals::scan(&conn, &scope, true));
    }

    #[test]
    fn a_store_from_before_blocks_gets_them_built_and_a_new_trace_is_numbered_past_them() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        for spans in traffic().into_iter().take(5) {
            telemetry::append_as_committer(&mut conn, &spans, &packing);
        }
        let traces: i64 = conn.query_row("SELECT count(*) FROM traces", [], |r| r.get(0)).unwrap();
        // As schema 13 kept them: a time index, no blocks.
        conn.execute_batch(
            "DROP TABLE trace_blocks; CREATE INDEX traces_start ON traces (project, start_ns);
             PRAGMA user_version = 13;",
        )
        .unwrap();
        schema::create_or_check(&conn).unwrap();
        assert_covered(&conn);
        let in_blocks: i64 =
            conn.query_row("SELECT sum(traces) FROM trace_blocks", [], |r| r.get(0)).unwrap();
        assert_eq!(in_blocks, traces);
        let index: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'traces_start'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(index, 0);
        // Rows of deleted traces are not given again.
        let top: i64 = conn.query_row("SELECT max(id) FROM traces", [], |r| r.get(0)).unwrap();
        conn.execute("DELETE FROM traces WHERE id = ?1", [top]).unwrap();
        conn.execute("DELETE FROM span_chunks WHERE trace = ?1", [top]).unwrap();
        let new = SpanRecord { trace_id: "f".repeat(32), start_ns: 5, ..SpanRecord::example() };
        telemetry::append_as_committer(&mut conn, &[new], &packing);
        let row: i64 = conn
            .query_row("SELECT id FROM traces WHERE trace_id = ?1", ["f".repeat(32)], |r| r.get(0))
            .unwrap();
        assert_eq!(row, top + 1);
        assert_covered(&conn);
    }
}
