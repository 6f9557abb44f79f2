//! Spans, trace summaries and log records in SQLite: appending them and the
//! trace and session queries.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};
use rustc_hash::FxHashMap;

use super::span_chunks::{self, EncodedChunk, SpanMatch};
use super::span_packing::SpanPacking;
use super::{StorageError, span_blocks};
use crate::model::{LogRecord, SpanRecord, SpanStatus};
use crate::storage::{
    LogFilter, SessionSummary, SpanTiming, StoredTrace, TelemetryScope, TelemetryVisitor,
    TraceBounds, TraceFilter, TraceSummary, TraceTiming,
};

/// Adds a new span to its trace's row. In `DO UPDATE`, `traces.*` are the
/// old values: the root is the parentless span, else the earliest one.
/// `?17` is the row a new trace takes (its chunks were written with it);
/// NULL for a trace already stored, which keeps its own.
const MERGE_TRACE: &str = "INSERT INTO traces (project, trace_id, has_root, root_name, \
    root_service, start_ns, end_ns, span_count, error_count, llm_calls, input_tokens, \
    output_tokens, cache_read_tokens, cost_usd, user, session, id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
    ON CONFLICT (project, trace_id) DO UPDATE SET \
    root_name = CASE WHEN excluded.has_root > traces.has_root OR (excluded.has_root = \
        traces.has_root AND excluded.start_ns < traces.start_ns) \
        THEN excluded.root_name ELSE traces.root_name END, \
    root_service = CASE WHEN excluded.has_root > traces.has_root OR (excluded.has_root = \
        traces.has_root AND excluded.start_ns < traces.start_ns) \
        THEN excluded.root_service ELSE traces.root_service END, \
    has_root = max(traces.has_root, excluded.has_root), \
    start_ns = min(traces.start_ns, excluded.start_ns), \
    end_ns = max(traces.end_ns, excluded.end_ns), \
    span_count = traces.span_count + excluded.span_count, \
    error_count = traces.error_count + excluded.error_count, \
    llm_calls = traces.llm_calls + excluded.llm_calls, \
    input_tokens = traces.input_tokens + excluded.input_tokens, \
    output_tokens = traces.output_tokens + excluded.output_tokens, \
    cache_read_tokens = traces.cache_read_tokens + excluded.cache_read_tokens, \
    cost_usd = traces.cost_usd + excluded.cost_usd, \
    user = coalesce(traces.user, excluded.user), \
    session = coalesce(traces.session, excluded.session)";

const INSERT_LOG: &str = "INSERT INTO logs (project, time_ns, trace_id, severity, record) \
    VALUES (?1, ?2, ?3, ?4, ?5)";

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|e| StorageError::Corrupt(format!("stored record: {e}")))
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
    chunk_order: &[usize],
    logs: &[LogRecord],
    log_json: &[String],
    max_spans_per_trace: usize,
    packing: &Arc<SpanPacking>,
) -> Result<u64, StorageError> {
    let mut dropped_spans = 0;
    if !chunks.is_empty() {
        // What the new spans add to each trace, summed here so that a trace
        // gets one update per batch rather than one per span.
        let mut deltas: Vec<TraceDelta<'_>> = Vec::new();
        let mut by_trace: FxHashMap<(&str, &str), usize> = FxHashMap::default();
        let mut inserted = Vec::with_capacity(chunks.len());
        let mut dropped: FxHashMap<(&str, &str), u64> = FxHashMap::default();
        // A new trace's row is numbered here, past every row a chunk
        // names (a trace row that retention deleted leaves its newer chunks
        // until their block goes; its number is not given again).
        let mut next_row: i64 = tx.query_row(
            "SELECT max(coalesce((SELECT max(id) FROM traces), 0), \
             coalesce((SELECT max(trace) FROM span_chunks), 0)) + 1",
            [],
            |row| row.get(0),
        )?;
        let mut find =
            tx.prepare_cached("SELECT id FROM traces WHERE project = ?1 AND trace_id = ?2")?;
        for &c in chunk_order {
            let Some(&first) = chunks[c].spans.first() else { continue };
            let (project, trace_id) =
                (spans[first].project.as_str(), spans[first].trace_id.as_str());
            let (row, new) = match by_trace.get(&(project, trace_id)) {
                Some(&d) => (deltas[d].row, false),
                None => {
                    match find.query_row(params![project, trace_id], |r| r.get(0)).optional()? {
                        Some(row) => (row, false),
                        None => {
                            let row = next_row;
                            next_row += 1;
                            (row, true)
                        }
                    }
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
            inserted.push((seq, chunk.min_start, chunk.max_start));
            let d = *by_trace.entry((project, trace_id)).or_insert_with(|| {
                deltas.push(TraceDelta::new(row, new, spans[chunk.spans[0]]));
                deltas.len() - 1
            });
            for &i in &chunk.spans {
                deltas[d].add(spans[i]);
            }
        }
        span_blocks::record(tx, inserted.into_iter())?;
        let mut merge = tx.prepare_cached(MERGE_TRACE)?;
        for d in &deltas {
            merge.execute(params![
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
                d.new.then_some(d.row),
            ])?;
        }
        let mut mark = tx.prepare_cached(
            "UPDATE traces SET dropped_spans = dropped_spans + ?3 \
             WHERE project = ?1 AND trace_id = ?2",
        )?;
        for ((project, trace_id), n) in &dropped {
            mark.execute(params![project, trace_id, *n as i64])?;
            dropped_spans += n;
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
    Ok(dropped_spans)
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

pub fn list_traces(
    conn: &rusqlite::Connection,
    filter: &TraceFilter,
) -> Result<Vec<TraceSummary>, StorageError> {
    let mut sql = format!(
        "SELECT {TRACE_COLUMNS} FROM traces t WHERE t.project = ? AND t.start_ns >= ? \
         AND t.start_ns < ?"
    );
    let mut args: Vec<SqlValue> = vec![
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
    let rows = stmt.query_map(params_from_iter(args), trace_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every span of a trace (in start order) and its log records (by time).
pub fn trace(
    conn: &rusqlite::Connection,
    project: &str,
    trace_id: &str,
    bounds: TraceBounds,
    packing: &SpanPacking,
) -> Result<StoredTrace, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, head, body FROM span_chunks INDEXED BY span_chunks_by_trace \
         WHERE trace = (SELECT id FROM traces WHERE project = ?1 AND trace_id = ?2)",
    )?;
    let mut rows = stmt.query(params![project, trace_id])?;
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
    let sql = format!("SELECT {TRACE_COLUMNS} FROM traces t WHERE project = ?1 AND trace_id = ?2");
    let summary = conn
        .prepare_cached(&sql)?
        .query_row(params![project, trace_id], trace_from_row)
        .optional()?;
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
    let mut stmt = conn.prepare_cached(
        "SELECT session, count(*), min(start_ns), max(end_ns), sum(span_count), \
         sum(error_count), sum(llm_calls), sum(input_tokens), sum(output_tokens), \
         sum(cache_read_tokens), sum(cost_usd), max(user) \
         FROM traces WHERE project = ?1 AND session IS NOT NULL \
         AND start_ns >= ?2 AND start_ns < ?3 \
         GROUP BY session ORDER BY max(end_ns) DESC, session LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![project, from_ns, to_ns, limit as i64], |row| {
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

/// Deletes logs older than `cutoff_ns`, spans by whole minute blocks older
/// than it (`span_blocks::delete_before`), and the traces that ended before
/// it.
pub fn apply_retention(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<usize, StorageError> {
    let mut deleted = span_blocks::delete_before(tx, cutoff_ns)?;
    deleted += tx.execute("DELETE FROM logs WHERE time_ns < ?1", [cutoff_ns])?;
    deleted += tx.execute("DELETE FROM traces WHERE end_ns < ?1", [cutoff_ns])?;
    Ok(deleted)
}

/// Hands the timing of every span of `scope` to `visitor`.
pub fn scan_spans(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT head FROM span_chunks WHERE seq BETWEEN ?4 AND ?5 AND project = ?1 \
         AND max_start >= ?2 AND min_start < ?3",
    )?;
    for (first, last) in span_blocks::ranges(conn, scope.from_ns, scope.to_ns)? {
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

/// Hands the totals of every trace of `scope` (by start) to `visitor`.
pub fn scan_traces(
    conn: &rusqlite::Connection,
    scope: &TelemetryScope,
    visitor: &mut dyn TelemetryVisitor,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT end_ns - start_ns, error_count, cost_usd FROM traces \
         WHERE project = ?1 AND start_ns >= ?2 AND start_ns < ?3 \
         AND (?4 IS NULL OR root_service = ?4)",
    )?;
    let mut rows = stmt.query(params![scope.project, scope.from_ns, scope.to_ns, scope.service])?;
    while let Some(row) = rows.next()? {
        visitor.trace(TraceTiming {
            duration_ns: row.get(0)?,
            errors: row.get::<_, i64>(1)? as u64,
            cost_usd: row.get(2)?,
        });
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
