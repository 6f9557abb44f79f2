//! Spans, trace summaries and log records in SQLite: appending them and the
//! trace and session queries.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;

use super::key_runs::{KeyIndex, key_hash};
use super::span_chunks::{self, EncodedChunk, SpanMatch};
use super::span_packing::SpanPacking;
use super::{StorageError, span_blocks, trace_blocks};
use crate::model::{LogRecord, SpanRecord, SpanStatus};
use crate::storage::telemetry::KindCounts;
use crate::storage::{
    LogFilter, SessionSummary, SpanTiming, StoredTrace, TelemetryScope, TelemetryVisitor,
    TraceBounds, TraceFilter, TraceSummary, TraceTiming,
};

/// A new trace's row: `?17` is the row it takes (its chunks were written
/// with it).
const INSERT_TRACE: &str = "INSERT INTO traces (project, trace_id, has_root, root_name, \
    root_service, start_ns, end_ns, span_count, error_count, llm_calls, input_tokens, \
    output_tokens, cache_read_tokens, cost_usd, user, session, id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// Adds new spans to a stored trace's row `?17` (the parameters as
/// `INSERT_TRACE`'s; the right-hand sides read the old values): the root is
/// the parentless span, else the earliest one. Returns the trace's start.
const MERGE_TRACE: &str = "UPDATE traces SET \
    root_name = CASE WHEN ?3 > has_root OR (?3 = has_root AND ?6 < start_ns) \
        THEN ?4 ELSE root_name END, \
    root_service = CASE WHEN ?3 > has_root OR (?3 = has_root AND ?6 < start_ns) \
        THEN ?5 ELSE root_service END, \
    has_root = max(has_root, ?3), \
    start_ns = min(start_ns, ?6), \
    end_ns = max(end_ns, ?7), \
    span_count = span_count + ?8, \
    error_count = error_count + ?9, \
    llm_calls = llm_calls + ?10, \
    input_tokens = input_tokens + ?11, \
    output_tokens = output_tokens + ?12, \
    cache_read_tokens = cache_read_tokens + ?13, \
    cost_usd = cost_usd + ?14, \
    user = coalesce(user, ?15), \
    session = coalesce(session, ?16) \
    WHERE id = ?17 AND ?1 IS project AND ?2 IS trace_id \
    RETURNING start_ns, root_service, end_ns - start_ns, error_count, cost_usd";

/// What the trace summary reads of a trace row `?1`: its root service and
/// timing (as `MERGE_TRACE` returns them after its start).
const TRACE_TIMING: &str =
    "SELECT root_service, end_ns - start_ns, error_count, cost_usd FROM traces WHERE id = ?1";

/// A trace row's root service and timing, from columns `at..at + 4`.
fn trace_timing(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(String, TraceTiming)> {
    Ok((r.get(at)?, timing_at(r, at + 1)?))
}

/// A trace row's timing from columns `at..at + 3` (its duration, errors
/// and cost).
fn timing_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<TraceTiming> {
    Ok(TraceTiming {
        duration_ns: r.get(at)?,
        errors: r.get::<_, i64>(at + 1)? as u64,
        cost_usd: r.get(at + 2)?,
    })
}

const INSERT_LOG: &str = "INSERT INTO logs (project, time_ns, trace_id, severity, record) \
    VALUES (?1, ?2, ?3, ?4, ?5)";

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|e| StorageError::Corrupt(format!("stored record: {e}")))
}

/// The row of a trace an append adds to: stored, or new (numbered once
/// every chunk's trace is known); `least` is the earliest start of its
/// new spans.
struct TraceRow {
    row: i64,
    new: bool,
    least: i64,
}

/// New spans' contribution to one trace's row.
struct TraceDelta<'a> {
    /// The trace's row in `traces`, and whether this append makes it.
    row: i64,
    new: bool,
    /// The parentless span, else the earliest (as `MERGE_TRACE` chooses).
    root: &'a SpanRecord,
    start_ns: i64,
    end_ns: i64,
    spans: u64,
    errors: u64,
    llm_calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cost_usd: f64,
    user: Option<&'a str>,
    session: Option<&'a str>,
}

impl<'a> TraceDelta<'a> {
    /// Nothing added yet; `span` is the root until a better one is added.
    fn new(row: i64, new: bool, span: &'a SpanRecord) -> Self {
        TraceDelta {
            row,
            new,
            root: span,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            spans: 0,
            errors: 0,
            llm_calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cost_usd: 0.0,
            user: None,
            session: None,
        }
    }

    fn add(&mut self, span: &'a SpanRecord) {
        let rank = |s: &SpanRecord| (s.parent_span_id.is_none(), std::cmp::Reverse(s.start_ns));
        if rank(span) > rank(self.root) {
            self.root = span;
        }
        self.start_ns = self.start_ns.min(span.start_ns);
        self.end_ns = self.end_ns.max(span.end_ns);
        self.spans += 1;
        self.errors += (span.status == SpanStatus::Error) as u64;
        self.llm_calls += span.llm_call as u64;
        self.input_tokens = self.input_tokens.saturating_add(span.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(span.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(span.cache_read_tokens);
        self.cost_usd += span.cost_usd;
        self.user = self.user.or(span.user.as_deref());
        self.session = self.session.or(span.session.as_deref());
    }

    /// A new trace's timing, as the summary reads its row.
    fn timing(&self) -> TraceTiming {
        TraceTiming {
            duration_ns: self.end_ns - self.start_ns,
            errors: self.errors,
            cost_usd: self.cost_usd,
        }
    }
}

/// Appends spans, a chunk per trace (`span_chunks`; spans already stored
/// are left out and leave their trace's totals alone), and log records with
/// their JSON (`to_json`). Both were encoded by the caller, off the writer
/// thread; `chunk_order` is `span_blocks::insert_order`. A trace keeps its
/// first `max_spans_per_trace` spans; returns how many new spans it did not
/// keep (each trace row counts its own in `dropped_spans`).
#[allow(clippy::too_many_arguments)]
pub fn append(
    tx: &Transaction<'_>,
    spans: &[&SpanRecord],
    chunks: &[EncodedChunk],
    chunk_order: &span_blocks::ChunkOrder,
    logs: &[LogRecord],
    log_json: &[String],
    max_spans_per_trace: usize,
    packing: &Arc<SpanPacking>,
    trace_keys: &KeyIndex,
) -> Result<SpansAppended, StorageError> {
    let mut appended = SpansAppended::default();
    if !chunks.is_empty() {
        // What the new spans add to each trace, summed here so that a trace
        // gets one update per batch rather than one per span.
        let mut deltas: Vec<TraceDelta<'_>> = Vec::new();
        let mut by_trace: FxHashMap<(&str, &str), usize> = FxHashMap::default();
        let mut inserted = Vec::with_capacity(chunks.len());
        let mut dropped: FxHashMap<(&str, &str), u64> = FxHashMap::default();
        // Each chunk's trace: its stored row, or a new one. New traces are
        // numbered past every row ever given (`trace_blocks::next_row`), by
        // project and the slice they start in, so that the time index takes
        // a block per run rather than an entry per trace.
        let slices = chunk_order.slices;
        let mut rows: FxHashMap<(&str, &str), TraceRow> = FxHashMap::default();
        for &c in &chunk_order.order {
            let Some(&first) = chunks[c].spans.first() else { continue };
            let key = (spans[first].project.as_str(), spans[first].trace_id.as_str());
            let least = chunks[c].min_start;
            match rows.entry(key) {
                Entry::Occupied(mut e) => e.get_mut().least = e.get().least.min(least),
                Entry::Vacant(e) => {
                    let row = trace_row(tx, trace_keys, key.0, key.1)?;
                    e.insert(TraceRow { row: row.unwrap_or(0), new: row.is_none(), least });
                }
            }
        }
        let mut new_traces: Vec<((&str, &str), i64)> =
            rows.iter().filter(|(_, r)| r.new).map(|(&key, r)| (key, r.least)).collect();
        if !new_traces.is_empty() {
            new_traces.sort_unstable_by_key(|&((project, trace_id), least)| {
                (project, slices.of(least), trace_id)
            });
            let mut next_row = trace_blocks::next_row(tx)?;
            for (key, _) in new_traces {
                rows.get_mut(&key).expect("listed above").row = next_row;
                next_row += 1;
            }
            trace_blocks::given(tx, next_row - 1)?;
        }
        for &c in &chunk_order.order {
            let Some(&first) = chunks[c].spans.first() else { continue };
            let (project, trace_id) =
                (spans[first].project.as_str(), spans[first].trace_id.as_str());
            // Only the first chunk of a new trace finds nothing stored.
            let (row, new) = match by_trace.get(&(project, trace_id)) {
                Some(&d) => (deltas[d].row, false),
                None => {
                    let r = &rows[&(project, trace_id)];
                    (r.row, r.new)
                }
            };
            // A trace first seen by this append has nothing stored yet.
            let (chunk, stored) = if new {
                (Some(Cow::Borrowed(&chunks[c])), 0)
            } else {
                span_chunks::unstored(tx, (project, trace_id), row, &chunks[c], spans, packing)?
            };
            let Some(mut chunk) = chunk else { continue };
            // A trace keeps its first `max_spans_per_trace` spans.
            let room = max_spans_per_trace.saturating_sub(stored);
            if chunk.spans.len() > room {
                let cut = (chunk.spans.len() - room) as u64;
                *dropped.entry((project, trace_id)).or_default() += cut;
                match span_chunks::first(project, trace_id, &chunk, room, packing)? {
                    Some(first) => chunk = Cow::Owned(first),
                    None => continue,
                }
            }
            let seq = span_chunks::insert(tx, (project, trace_id), Some(row), &chunk)?;
            let of_chunk = chunk.spans.iter().map(|&i| spans[i]).collect();
            inserted.push((seq, chunk.min_start, chunk.max_start, of_chunk));
            let d = *by_trace.entry((project, trace_id)).or_insert_with(|| {
                deltas.push(TraceDelta::new(row, new, spans[chunk.spans[0]]));
                deltas.len() - 1
            });
            for &i in &chunk.spans {
                deltas[d].add(spans[i]);
            }
        }
        span_blocks::record(tx, slices, inserted.into_iter())?;
        let mut insert = tx.prepare_cached(INSERT_TRACE)?;
        let mut merge = tx.prepare_cached(MERGE_TRACE)?;
        let mut before = tx.prepare_cached(TRACE_TIMING)?;
        let mut changed = Vec::new();
        for d in &deltas {
            let values = params![
                d.root.project,
                d.root.trace_id,
                d.root.parent_span_id.is_none(),
                d.root.name,
                d.root.service,
                d.start_ns,
                d.end_ns,
                d.spans as i64,
                d.errors as i64,
                d.llm_calls as i64,
                d.input_tokens as i64,
                d.output_tokens as i64,
                d.cache_read_tokens as i64,
                d.cost_usd,
                d.user,
                d.session,
                d.row,
            ];
            if d.new {
                insert.execute(values)?;
                let hash = key_hash(&d.root.project, &[&d.root.trace_id]);
                appended.trace_keys.push((hash, d.row));
                continue;
            }
            let was = before.query_row([d.row], |r| trace_timing(r, 0))?;
            let (start_ns, is) =
                merge.query_row(values, |r| Ok((r.get(0)?, trace_timing(r, 1)?)))?;
            // A stored trace's start moved back: so does its block's.
            if start_ns == d.start_ns {
                trace_blocks::widen(tx, &d.root.project, d.row, start_ns)?;
            }
            changed.push(trace_blocks::Changed { row: d.row, before: was, after: is });
        }
        // Its block's sums follow a stored trace's change.
        trace_blocks::adjust(tx, &changed)?;
        let mut new_rows: Vec<trace_blocks::NewTrace<'_>> = deltas
            .iter()
            .filter(|d| d.new)
            .map(|d| trace_blocks::NewTrace {
                project: &d.root.project,
                row: d.row,
                start: d.start_ns,
                summed: Some((&d.root.service, d.timing())),
            })
            .collect();
        new_rows.sort_unstable_by_key(|t| t.row);
        trace_blocks::record(tx, slices, new_rows)?;
        let mut mark = tx
            .prepare_cached("UPDATE traces SET dropped_spans = dropped_spans + ?2 WHERE id = ?1")?;
        for (key, n) in &dropped {
            mark.execute(params![rows[key].row, *n as i64])?;
            appended.dropped_spans += n;
        }
    }
    if !logs.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_LOG)?;
        for (log, json) in logs.iter().zip(log_json) {
            insert.execute(params![
                log.project,
                log.time_ns,
                log.trace_id,
                log.severity_number,
                json
            ])?;
        }
    }
    Ok(appended)
}

/// What `append` did beyond storing: the spans not kept, and the keys of
/// the traces it stored first, as (hash, row), for the trace index once
/// the transaction commits.
#[derive(Default)]
pub struct SpansAppended {
    pub dropped_spans: u64,
    pub trace_keys: Vec<(u64, i64)>,
}

/// The row of the trace `trace_id` of `project`, if one is stored: a
/// candidate of the index whose row holds that trace.
pub fn trace_row(
    conn: &rusqlite::Connection,
    keys: &KeyIndex,
    project: &str,
    trace_id: &str,
) -> Result<Option<i64>, StorageError> {
    let candidates = keys.candidates(conn, key_hash(project, &[trace_id]))?;
    if candidates.is_empty() {
        // Most new traces: the Bloom filter answered, nothing to read.
        return Ok(None);
    }
    let mut check = conn
        .prepare_cached("SELECT 1 FROM traces WHERE id = ?1 AND project = ?2 AND trace_id = ?3")?;
    for row in candidates {
        if check.exists(params![row, project, trace_id])? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// Deletes the runs of trace keys none of whose rows is left (a run holds
/// the rows past the run before's highest, through its own), for
/// `KeyIndex::forget` once `tx` commits. Rows are never given again, so a
/// run left whole while one of its traces lives stays exact.
pub fn drop_key_runs(tx: &Transaction<'_>, keys: &KeyIndex) -> Result<Vec<i64>, StorageError> {
    let mut left = tx.prepare_cached("SELECT 1 FROM traces WHERE id > ?1 AND id <= ?2")?;
    keys.drop_runs(tx, |after, last| Ok(!left.exists(params![after.unwrap_or(i64::MIN), last])?))
}

/// Reads the keys of the traces past row `after` back, a page at a time,
/// as (hash, row), in row order: the trace index takes them after a
/// restart.
pub fn each_key_after(
    conn: &rusqlite::Connection,
    mut after: i64,
    mut page: impl FnMut(&[(u64, i64)]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    const PAGE: i64 = 1 << 16;
    let mut stmt = conn
        .prepare("SELECT id, project, trace_id FROM traces WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    loop {
        let mut keys = Vec::new();
        let mut rows = stmt.query(params![after, PAGE])?;
        while let Some(row) = rows.next()? {
            let (id, project, trace_id): (i64, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            keys.push((key_hash(&project, &[&trace_id]), id));
            after = id;
        }
        if keys.is_empty() {
            return Ok(());
        }
        page(&keys)?;
    }
}

/// Appends `spans` as the committer does (for tests); returns the spans
/// not kept.
#[cfg(test)]
pub fn append_as_committer(
    conn: &mut rusqlite::Connection,
    spans: &[SpanRecord],
    packing: &Arc<SpanPacking>,
) -> u64 {
    let chunks = span_chunks::chunks_of(spans, packing);
    let refs: Vec<&SpanRecord> = spans.iter().collect();
    let order = span_blocks::insert_order(&refs, &chunks);
    // The trace index as an open builds it, from the rows.
    let keys = super::load_trace_keys(conn, super::key_runs::RUN_KEYS).unwrap();
    let tx = conn.transaction().unwrap();
    let appended =
        append(&tx, &refs, &chunks, &order, &[], &[], usize::MAX, packing, &keys).unwrap();
    tx.commit().unwrap();
    appended.dropped_spans
}

/// `trace` with the trace index an open builds (for tests).
#[cfg(test)]
pub fn trace_of(
    conn: &rusqlite::Connection,
    project: &str,
    trace_id: &str,
    bounds: TraceBounds,
    packing: &SpanPacking,
) -> StoredTrace {
    let keys = super::load_trace_keys(conn, super::key_runs::RUN_KEYS).unwrap();
    let row = trace_row(conn, &keys, project, trace_id).unwrap();
    trace(conn, project, trace_id, bounds, packing, row).unwrap()
}

const TRACE_COLUMNS: &str = "t.trace_id, t.root_name, t.root_service, t.start_ns, t.end_ns, \
    t.span_count, t.error_count, t.llm_calls, t.input_tokens, t.output_tokens, \
    t.cache_read_tokens, t.cost_usd, t.user, t.session, t.dropped_spans";

fn trace_from_row(row: &Row<'_>) -> Result<TraceSummary, rusqlite::Error> {
    Ok(TraceSummary {
        trace_id: row.get(0)?,
        root_name: row.get(1)?,
        service: row.get(2)?,
        start_ns: row.get(3)?,
        end_ns: row.get(4)?,
        span_count: row.get::<_, i64>(5)? as u64,
        error_count: row.get::<_, i64>(6)? as u64,
        llm_calls: row.get::<_, i64>(7)? as u64,
        input_tokens: row.get::<_, i64>(8)? as u64,
        output_tokens: row.get::<_, i64>(9)? as u64,
        cache_read_tokens: row.get::<_, i64>(10)? as u64,
        cost_usd: row.get(11)?,
        user: row.get(12)?,
        session: row.get(13)?,
        dropped_spans: row.get::<_, i64>(14)? as u64,
    })
}

/// Most trace blocks a list reads in one pass.
const MAX_LIST_BATCH: usize = 4096;

pub fn list_traces(
    conn: &rusqlite::Connection,
    filter: &TraceFilter,
) -> Result<Vec<TraceSummary>, StorageError> {
    // Asked of blocks in turn (their row ranges first, as JSON), newest
    // first.
    let mut sql = format!(
        "{} SELECT {TRACE_COLUMNS} FROM b CROSS JOIN traces t NOT INDEXED \
         ON t.id BETWEEN b.first_id AND b.last_id WHERE t.project = ?2 \
         AND t.start_ns >= ?3 AND t.start_ns < ?4",
        trace_blocks::in_ranges("?1")
    );
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Null,
        SqlValue::Text(filter.project.clone()),
        SqlValue::Integer(filter.from_ns),
        SqlValue::Integer(filter.to_ns),
    ];
    let mut add = |clause: &str, values: Vec<SqlValue>, sql: &mut String| {
        sql.push_str(clause);
        args.extend(values);
    };
    if filter.errors_only {
        add(" AND t.error_count > 0", vec![], &mut sql);
    }
    if let Some(user) = &filter.user {
        add(" AND t.user = ?", vec![SqlValue::Text(user.clone())], &mut sql);
    }
    if let Some(session) = &filter.session {
        add(" AND t.session = ?", vec![SqlValue::Text(session.clone())], &mut sql);
    }
    if let Some(min) = filter.min_duration_ns {
        add(" AND t.end_ns - t.start_ns >= ?", vec![SqlValue::Integer(min)], &mut sql);
    }
    if let Some(max) = filter.max_duration_ns {
        add(" AND t.end_ns - t.start_ns <= ?", vec![SqlValue::Integer(max)], &mut sql);
    }
    // Conditions on spans: one span of the trace must meet them all.
    let span_match = SpanMatch {
        service: filter.service.clone(),
        kind: filter.kind.clone(),
        model: filter.model.clone(),
        attributes: filter
            .attributes
            .iter()
            .map(|(key, value)| {
                // Values compare as text, booleans as 1 and 0.
                let value = match value.as_str() {
                    "true" => "1",
                    "false" => "0",
                    other => other,
                };
                (key.clone(), value.to_owned())
            })
            .collect(),
    };
    if !span_match.is_empty() {
        add(
            " AND EXISTS (SELECT 1 FROM span_chunks s WHERE s.trace = t.id \
             AND span_chunk_match(s.head, s.body, ?))",
            vec![SqlValue::Text(to_json(&span_match))],
            &mut sql,
        );
    }
    if let Some((start, trace_id)) = &filter.before {
        add(
            " AND (t.start_ns, t.trace_id) < (?, ?)",
            vec![SqlValue::Integer(*start), SqlValue::Text(trace_id.clone())],
            &mut sql,
        );
    }
    sql.push_str(" ORDER BY t.start_ns DESC, t.trace_id DESC LIMIT ?");
    args.push(SqlValue::Integer(filter.limit as i64));
    let mut stmt = conn.prepare(&sql)?;
    // Blocks come by their latest start; once `limit` traces are found,
    // a block whose latest start is before the last of them has none to add.
    let to_ns = match &filter.before {
        Some((start, _)) => filter.to_ns.min(start.saturating_add(1)),
        None => filter.to_ns,
    };
    let mut blocks = conn.prepare_cached(trace_blocks::NEWEST_FIRST)?;
    let mut blocks = blocks.query(params![filter.project, filter.from_ns, to_ns])?;
    let newest_first = |a: &TraceSummary, b: &TraceSummary| {
        (b.start_ns, &b.trace_id).cmp(&(a.start_ns, &a.trace_id))
    };
    // Blocks are read a batch at a time, the batch doubling each time (up
    // to `MAX_LIST_BATCH`): most lists end within the first block or two,
    // and one whose filters match little reads the window in a few passes.
    let mut found: Vec<TraceSummary> = Vec::new();
    let mut batch: Vec<(i64, i64)> = Vec::new();
    let mut size = 1;
    // (first row, last row, latest start) of the next block
    let mut take = || -> Result<Option<(i64, i64, i64)>, rusqlite::Error> {
        blocks.next()?.map(|b| Ok((b.get(0)?, b.get(1)?, b.get(2)?))).transpose()
    };
    let mut next = take()?;
    loop {
        while let Some((first, last, max_start)) = next {
            let done =
                found.len() >= filter.limit && found.last().is_some_and(|t| max_start < t.start_ns);
            if done || batch.len() >= size {
                break;
            }
            batch.push((first, last));
            next = take()?;
        }
        if batch.is_empty() {
            break;
        }
        args[0] = SqlValue::Text(trace_blocks::ranges_json(std::mem::take(&mut batch), 0));
        let rows = stmt.query_map(params_from_iter(args.iter()), trace_from_row)?;
        for row in rows {
            found.push(row?);
        }
        found.sort_unstable_by(newest_first);
        found.truncate(filter.limit);
        size = (size * 2).min(MAX_LIST_BATCH);
    }
    Ok(found)
}

/// Every span of a trace (in start order) and its log records (by time);
/// `row` is its `traces` row (`trace_row`), if it has one.
pub fn trace(
    conn: &rusqlite::Connection,
    project: &str,
    trace_id: &str,
    bounds: TraceBounds,
    packing: &SpanPacking,
    row: Option<i64>,
) -> Result<StoredTrace, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, head, body FROM span_chunks INDEXED BY span_chunks_by_trace \
         WHERE trace = ?1",
    )?;
    let mut rows = stmt.query([row])?;
    // The earliest `max_spans` by start are kept; the set is cut back
    // whenever it holds twice that, so at most two caps' worth of spans and
    // one chunk are decoded at once, whatever the trace's size.
    let keep = bounds.max_spans;
    let mut placed = Vec::new();
    let mut seen = 0u64;
    let cut = |placed: &mut Vec<((i64, i64, usize), SpanRecord)>| {
        if placed.len() > keep {
            placed.select_nth_unstable_by_key(keep, |(order, _)| *order);
            placed.truncate(keep);
        }
    };
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let head = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let body = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        let chunk = span_chunks::decode(project, trace_id, (head, body), packing)
            .map_err(StorageError::Corrupt)?;
        seen += chunk.len() as u64;
        placed
            .extend(chunk.into_iter().enumerate().map(|(i, span)| ((span.start_ns, seq, i), span)));
        if placed.len() >= keep.saturating_mul(2) {
            cut(&mut placed);
        }
    }
    cut(&mut placed);
    placed.sort_by_key(|(order, _)| *order);
    let spans: Vec<SpanRecord> = placed.into_iter().map(|(_, span)| span).collect();
    let spans_left_out = seen - spans.len() as u64;
    let sql = format!("SELECT {TRACE_COLUMNS} FROM traces t WHERE id = ?1");
    let summary = conn.prepare_cached(&sql)?.query_row([row], trace_from_row).optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM logs INDEXED BY logs_trace WHERE project = ?1 AND trace_id = ?2 \
         ORDER BY time_ns, seq LIMIT ?3",
    )?;
    let texts = stmt
        .query_map(params![project, trace_id, bounds.max_logs.saturating_add(1) as i64], |row| {
            row.get::<_, String>(0)
        })?;
    let mut logs = Vec::new();
    for text in texts {
        logs.push(from_json(&text?)?);
    }
    let logs_cut = logs.len() > bounds.max_logs;
    logs.truncate(bounds.max_logs);
    Ok(StoredTrace { spans, spans_left_out, summary, logs, logs_cut })
}

pub fn list_sessions(
    conn: &rusqlite::Connection,
    project: &str,
    from_ns: i64,
    to_ns: i64,
    limit: usize,
) -> Result<Vec<SessionSummary>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{} SELECT session, count(*), min(start_ns), max(end_ns), sum(span_count), \
         sum(error_count), sum(llm_calls), sum(input_tokens), sum(output_tokens), \
         sum(cache_read_tokens), sum(cost_usd), max(user) \
         FROM b CROSS JOIN traces t NOT INDEXED ON t.id BETWEEN b.first_id AND b.last_id \
         WHERE project = ?1 AND session IS NOT NULL AND start_ns >= ?2 AND start_ns < ?3 \
         GROUP BY session ORDER BY max(end_ns) DESC, session LIMIT ?4",
        trace_blocks::in_ranges("?5")
    ))?;
    let ranges = trace_blocks::ranges(conn, project, from_ns, to_ns)?;
    let rows = stmt.query_map(params![project, from_ns, to_ns, limit as i64, ranges], |row| {
        Ok(SessionSummary {
            session: row.get(0)?,
            traces: row.get::<_, i64>(1)? as u64,
            start_ns: row.get(2)?,
            end_ns: row.get(3)?,
            span_count: row.get::<_, i64>(4)? as u64,
            error_count: row.get::<_, i64>(5)? as u64,
            llm_calls: row.get::<_, i64>(6)? as u64,
            input_tokens: row.get::<_, i64>(7)? as u64,
            output_tokens: row.get::<_, i64>(8)? as u64,
            cache_read_tokens: row.get::<_, i64>(9)? as u64,
            cost_usd: row.get(10)?,
            user: row.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Deletes logs older than `cutoff_ns`, spans by whole blocks older
/// than it (`span_blocks::delete_before`), and the traces that ended before
/// it (`trace_blocks::delete_before`).
pub fn apply_retention(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<usize, StorageError> {
    let mut deleted = span_blocks::delete_before(tx, cutoff_ns)?;
    deleted += tx.execute("DELETE FROM logs WHERE time_ns < ?1", [cutoff_ns])?;
    deleted += trace_blocks::delete_before(tx, cutoff_ns)?;
    Ok(deleted)
}

/// Hands the timing of every span of `scope` to `visitor`.
pub fn scan_spans(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let window = (scope.from_ns, scope.to_ns);
    let read = match visitor.summed_by() {
        // Blocks wholly inside the window hand over their sums.
        Some(group) => span_blocks::durations(
            conn,
            &scope.project,
            scope.service.as_deref(),
            window,
            group,
            |key, durations| visitor.summed(key, durations),
        )?,
        None => span_blocks::meeting(conn, window)?,
    };
    scan_blocks(conn, scope, read, visitor)
}

/// How many spans of `scope` there are of each kind: the counts of the
/// blocks wholly inside its window, and the spans of the others one by one.
pub fn count_span_kinds(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
) -> Result<HashMap<String, u64>, StorageError> {
    let found = span_blocks::kinds(
        conn,
        &scope.project,
        scope.service.as_deref(),
        scope.from_ns,
        scope.to_ns,
    )?;
    let mut counts = KindCounts(found.counted);
    scan_blocks(conn, scope, found.read, &mut counts)?;
    Ok(counts.0)
}

/// Hands the timing of every span of `scope` in the blocks `read` to
/// `visitor`: from the blocks' timings, or from their chunks.
fn scan_blocks(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    read: span_blocks::ToRead,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let ranges = span_blocks::read_timings(
        conn,
        read,
        (&scope.project, scope.service.as_deref()),
        (scope.from_ns, scope.to_ns),
        |timing| visitor.span(timing),
    )?;
    scan_ranges(conn, scope, ranges, visitor)
}

/// Hands the timing of every span of `scope` to `visitor`, read from every
/// chunk, as no statistic reads them (what tests compare statistics with).
#[cfg(test)]
pub fn scan_chunks(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    scan_ranges(conn, scope, vec![(i64::MIN, i64::MAX)], visitor)
}

/// Hands the timing of every span of `scope` in the chunks of the seq
/// `ranges` (disjoint) to `visitor`.
fn scan_ranges(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    ranges: Vec<(i64, i64)>,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT head FROM span_chunks WHERE seq BETWEEN ?4 AND ?5 AND project = ?1 \
         AND max_start >= ?2 AND min_start < ?3",
    )?;
    for (first, last) in ranges {
        let mut rows =
            stmt.query(params![scope.project, scope.from_ns, scope.to_ns, first, last])?;
        while let Some(row) = rows.next()? {
            let head = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            for h in span_chunks::heads(head).map_err(StorageError::Corrupt)? {
                let in_scope = h.start_ns >= scope.from_ns
                    && h.start_ns < scope.to_ns
                    && scope.service.as_deref().is_none_or(|s| s == h.service);
                if in_scope {
                    visitor.span(SpanTiming {
                        kind: h.kind.as_str(),
                        name: h.name,
                        model: h.model,
                        duration_ns: h.end_ns - h.start_ns,
                        error: h.status == SpanStatus::Error,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Hands the totals of every trace of `scope` (by start) to `visitor`: as
/// the blocks wholly inside the window sum them if it takes such sums, and
/// the other traces one by one.
pub fn scan_traces(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{} SELECT end_ns - start_ns, error_count, cost_usd \
         FROM b CROSS JOIN traces t NOT INDEXED ON t.id BETWEEN b.first_id AND b.last_id \
         WHERE project = ?1 AND start_ns >= ?2 AND start_ns < ?3 \
         AND (?4 IS NULL OR root_service = ?4)",
        trace_blocks::in_ranges("?5")
    ))?;
    let (project, from_ns, to_ns) = (&scope.project, scope.from_ns, scope.to_ns);
    let ranges = if visitor.takes_trace_sums() {
        let service = scope.service.as_deref();
        let (sums, ranges) = trace_blocks::summed(conn, project, (from_ns, to_ns), service)?;
        visitor.summed_traces(&sums);
        ranges
    } else {
        trace_blocks::ranges(conn, project, from_ns, to_ns)?
    };
    let mut rows = stmt.query(params![project, from_ns, to_ns, scope.service, ranges])?;
    while let Some(row) = rows.next()? {
        visitor.trace(timing_at(row, 0)?);
    }
    Ok(())
}

/// Log records of `filter`, newest first.
pub fn list_logs(
    conn: &rusqlite::Connection,
    filter: &LogFilter,
) -> Result<Vec<(i64, LogRecord)>, StorageError> {
    let mut sql = String::from(
        "SELECT seq, record FROM logs WHERE project = ? AND time_ns >= ? AND time_ns < ? \
         AND severity >= ?",
    );
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Text(filter.project.clone()),
        SqlValue::Integer(filter.from_ns),
        SqlValue::Integer(filter.to_ns),
        SqlValue::Integer(filter.min_severity as i64),
    ];
    if let Some(trace_id) = &filter.trace_id {
        sql.push_str(" AND trace_id = ?");
        args.push(SqlValue::Text(trace_id.clone()));
    }
    if let Some(text) = &filter.contains {
        // The body, as text, contains the words (case-insensitively for ASCII).
        sql.push_str(
            " AND instr(lower(CAST(json_extract(record, '$.body') AS TEXT)), lower(?)) > 0",
        );
        args.push(SqlValue::Text(text.clone()));
    }
    if let Some((time, seq)) = filter.before {
        sql.push_str(" AND (time_ns, seq) < (?, ?)");
        args.push(SqlValue::Integer(time));
        args.push(SqlValue::Integer(seq));
    }
    sql.push_str(" ORDER BY time_ns DESC, seq DESC LIMIT ?");
    args.push(SqlValue::Integer(filter.limit as i64));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, text) = row?;
        out.push((seq, from_json(&text)?));
    }
    Ok(out)
}

/// Spans of the chunks after `seq`, whole chunks until about `limit` spans,
/// each with its chunk's sequence number.
pub fn spans_after(
    conn: &rusqlite::Connection,
    seq: i64,
    limit: usize,
    packing: &SpanPacking,
) -> Result<Vec<(i64, SpanRecord)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, project, trace_id, head, body FROM span_chunks WHERE seq > ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([seq])?;
    let mut out = Vec::new();
    while out.len() < limit
        && let Some(row) = rows.next()?
    {
        let (seq, project, trace_id): (i64, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let head = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
        let body = row.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?;
        let spans = span_chunks::decode(&project, &trace_id, (head, body), packing)
            .map_err(StorageError::Corrupt)?;
        out.extend(spans.into_iter().map(|span| (seq, span)));
    }
    Ok(out)
}

/// Log records after `seq`, in order, at most `limit`.
pub fn logs_after(
    conn: &rusqlite::Connection,
    seq: i64,
    limit: usize,
) -> Result<Vec<(i64, LogRecord)>, StorageError> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, record FROM logs WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = stmt.query_map(params![seq, limit as i64], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, text) = row?;
        out.push((seq, from_json(&text)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::storage::sqlite::{load_trace_keys, schema, write_key_run};

    /// Appends as the store does: the new traces' keys join the index once
    /// the transaction commits, and a run is written when it is full.
    fn append_with(conn: &mut Connection, keys: &mut KeyIndex, spans: &[SpanRecord]) {
        let packing = Arc::new(SpanPacking::default());
        let chunks = span_chunks::chunks_of(spans, &packing);
        let refs: Vec<&SpanRecord> = spans.iter().collect();
        let order = span_blocks::insert_order(&refs, &chunks);
        let tx = conn.transaction().unwrap();
        let appended =
            append(&tx, &refs, &chunks, &order, &[], &[], usize::MAX, &packing, keys).unwrap();
        tx.commit().unwrap();
        for &(hash, row) in &appended.trace_keys {
            keys.add(hash, row, row);
        }
        write_key_run(conn, keys, |tx| Ok(trace_blocks::next_row(tx)? - 1)).unwrap();
    }

    fn span(trace: usize, span_id: &str, start_s: i64) -> SpanRecord {
        SpanRecord {
            trace_id: format!("{trace:032x}"),
            span_id: span_id.to_owned(),
            start_ns: start_s * 1_000_000_000,
            end_ns: start_s * 1_000_000_000 + 1,
            ..SpanRecord::example()
        }
    }

    /// Retention as the store runs it, at `cutoff_s`; returns the runs of
    /// trace keys it dropped.
    fn retire(conn: &mut Connection, keys: &mut KeyIndex, cutoff_s: i64) -> Vec<i64> {
        let tx = conn.transaction().unwrap();
        apply_retention(&tx, cutoff_s * 1_000_000_000).unwrap();
        let dropped = drop_key_runs(&tx, keys).unwrap();
        tx.commit().unwrap();
        keys.forget(&dropped);
        dropped
    }

    fn rows_of(conn: &Connection, trace: usize) -> Vec<(i64, i64)> {
        conn.prepare("SELECT id, span_count FROM traces WHERE trace_id = ?1")
            .unwrap()
            .query_map([format!("{trace:032x}")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn traces_are_found_through_key_runs_after_a_restart_and_a_run_stays_while_a_row_lives() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        let mut keys = load_trace_keys(&conn, 4).unwrap();
        // Ten traces, the n-th starting at 1,000 n s, in three appends.
        for part in [0..4, 4..8, 8..10] {
            let spans: Vec<SpanRecord> = part.map(|n| span(n, "a", 1_000 * n as i64)).collect();
            append_with(&mut conn, &mut keys, &spans);
        }
        let runs = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM trace_key_runs", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(runs(&conn), 2);
        // Found from memory and from runs; then as an open finds them.
        for keys in [&keys, &load_trace_keys(&conn, 4).unwrap()] {
            for n in 0..10 {
                let id = format!("{n:032x}");
                assert_eq!(trace_row(&conn, keys, "default", &id).unwrap(), Some(n as i64 + 1));
            }
            assert_eq!(trace_row(&conn, keys, "default", &"f".repeat(32)).unwrap(), None);
            assert_eq!(trace_row(&conn, keys, "other", &format!("{:032x}", 1)).unwrap(), None);
        }
        // Trace 1 lives on (a late span); the others of the first run end
        // before the cutoff.
        append_with(&mut conn, &mut keys, &[span(1, "b", 5_000)]);
        let dropped = retire(&mut conn, &mut keys, 4_500);
        assert!(dropped.is_empty(), "the first run holds trace 1's row");
        append_with(&mut conn, &mut keys, &[span(1, "c", 5_001)]);
        assert_eq!(rows_of(&conn, 1), [(2, 3)]);
        // Once trace 1 is gone too, its run goes; the second (rows 5..8)
        // keeps traces 5 to 7.
        assert_eq!(retire(&mut conn, &mut keys, 5_500).len(), 1);
        assert_eq!(runs(&conn), 1);
        // A trace whose row retention deleted starts a row of its own, never
        // one given before.
        append_with(&mut conn, &mut keys, &[span(0, "z", 9_000)]);
        assert_eq!(rows_of(&conn, 0), [(11, 1)]);
        for n in 6..10 {
            let id = format!("{n:032x}");
            assert_eq!(trace_row(&conn, &keys, "default", &id).unwrap(), Some(n as i64 + 1));
        }
    }
}
