//! Calls, stored a run of an append's calls to a row. A `call_chunks` row
//! holds calls of one project with consecutive seqs whose times lie in one
//! second (or further apart, for sparse runs); the calls' ids and span keys
//! are the idempotency truth, found through the index of `key_runs` and
//! read back from here. A row per call, with its index entries, cost more
//! to write than the call's own bytes; queries by time read a chunk whole,
//! as they read a block of rows before.

use std::rc::Rc;

use rusqlite::{CachedStatement, Connection, OptionalExtension, Transaction, params};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

use super::call_columns::{self, CallRow};
use super::key_runs::{KeyIndex, key_hash};
use super::rows::{self, EncodedCalls};
use crate::aggregate::SeriesKey;
use crate::aggregate::rollup::SequencedCall;
use crate::model::LlmCall;
use crate::storage::{CallFilter, StorageError};

/// Calls a chunk holds at most.
pub const CHUNK_CALLS: usize = 4096;
/// A chunk's calls lie in one such slice of time: an append writes its
/// calls in time order (`insert_order`), so that a window's first page reads
/// the chunks of its first moments only, however many calls arrive at once
/// or however late they are stamped.
pub const CHUNK_SPAN_MS: i64 = 1000;
/// A chunk holding fewer calls than this takes calls of later slices too:
/// calls stamped far apart (those of spans, which start all over the last
/// hour) would otherwise get a row each. Reading a few more calls than a
/// window needs costs little.
pub const SPARSE_CALLS: usize = 64;

fn slice(time_ms: i64) -> i64 {
    time_ms.div_euclid(CHUNK_SPAN_MS)
}

/// Whether a call at `time` may join a chunk of `calls` calls whose least
/// time is `min`.
fn joins(min: i64, calls: usize, time: i64) -> bool {
    slice(min) == slice(time) || calls < SPARSE_CALLS
}

/// A call's span key (trace id, span id), when it has one.
fn span_key(call: &LlmCall) -> Option<(&str, &str)> {
    call.trace_id.as_deref().zip(call.span_id.as_deref())
}

/// The order to insert an append's calls in: by project and time, except
/// that a call sharing an id or span with an earlier call of the append
/// goes after all the others, in arrival order, so that of two calls with
/// one key the earlier one is still the one kept.
pub struct InsertOrder {
    pub calls: Vec<usize>,
}

pub fn insert_order(calls: &[&LlmCall]) -> InsertOrder {
    let mut ids: FxHashSet<(&str, &str)> = FxHashSet::default();
    let mut spans: FxHashSet<(&str, &str, &str)> = FxHashSet::default();
    ids.reserve(calls.len());
    // Projects ranked in name order, so that the sort compares numbers.
    let mut projects: Vec<&str> = calls.iter().map(|c| c.project.as_str()).collect();
    projects.sort_unstable();
    projects.dedup();
    let rank = |project: &str| projects.binary_search(&project).unwrap_or(0);
    let (mut first, mut repeated) = (Vec::with_capacity(calls.len()), Vec::new());
    for (i, call) in calls.iter().enumerate() {
        let project = call.project.as_str();
        let id_seen = call.id.as_deref().is_some_and(|id| !ids.insert((project, id)));
        let span_seen = span_key(call).is_some_and(|(t, s)| !spans.insert((project, t, s)));
        if id_seen || span_seen {
            repeated.push(i);
        } else {
            let rank = if projects.len() == 1 { 0 } else { rank(project) };
            first.push((rank, call.time_ms, i));
        }
    }
    first.sort_unstable();
    let mut order: Vec<usize> = Vec::with_capacity(calls.len());
    order.extend(first.iter().map(|&(_, _, i)| i));
    order.extend(repeated);
    InsertOrder { calls: order }
}

/// Splits calls (indices into `calls`, in insertion order) into the runs
/// that become chunks: one project, at most `CHUNK_CALLS`, within one time
/// slice unless sparse.
fn runs<'k>(calls: &[&LlmCall], kept: &'k [usize]) -> Vec<&'k [usize]> {
    let mut runs = Vec::new();
    let (mut start, mut min) = (0, i64::MAX);
    for (k, &i) in kept.iter().enumerate() {
        let call = &calls[i];
        let len = k - start;
        if len > 0
            && (len >= CHUNK_CALLS
                || call.project != calls[kept[start]].project
                || !joins(min, len, call.time_ms))
        {
            runs.push(&kept[start..k]);
            (start, min) = (k, i64::MAX);
        }
        min = min.min(call.time_ms);
    }
    if start < kept.len() {
        runs.push(&kept[start..]);
    }
    runs
}

/// Registers what appends use on the write connection: `rarray`, the
/// table of a bound array.
pub fn register_modules(conn: &Connection) -> Result<(), rusqlite::Error> {
    rusqlite::vtab::array::load_module(conn)
}

/// A key of a call as the index knows it, borrowed from the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Id(&'a str),
    Span(&'a str, &'a str),
}

impl Key<'_> {
    /// Its hash in the index: of `i` and the id, or `s` and the trace and
    /// span ids (`key_runs::key_hash`).
    fn hash(&self, project: &str) -> u64 {
        match self {
            Key::Id(id) => key_hash(project, &["i", id]),
            Key::Span(trace, span) => key_hash(project, &["s", trace, span]),
        }
    }
}

/// A stored call's seq, id and (trace id, span id), as read back.
type StoredKeys = (i64, Option<String>, Option<(String, String)>);

/// The keys of one stored chunk's calls, by seq, as read back to tell a
/// candidate of the index from the key looked up.
struct ChunkKeys {
    project: String,
    calls: Vec<StoredKeys>,
}

/// Tells which keys are stored: the index's candidates for a key's hash,
/// each read back from its call (the chunks read kept for the next keys).
pub struct Verifier<'k> {
    keys: &'k KeyIndex,
    chunks: FxHashMap<i64, Rc<ChunkKeys>>,
}

impl<'k> Verifier<'k> {
    pub fn new(keys: &'k KeyIndex) -> Self {
        Verifier { keys, chunks: FxHashMap::default() }
    }

    /// Whether a stored call of `project` has the key `key` (its `hash`).
    fn stored(
        &mut self,
        conn: &Connection,
        project: &str,
        (key, hash): (Key<'_>, u64),
    ) -> Result<bool, StorageError> {
        for seq in self.keys.candidates(conn, hash)? {
            if self.key_of(conn, seq, project, key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the stored call `seq` is of `project` and has the key `key`
    /// (false when no call has that seq any more).
    fn key_of(
        &mut self,
        conn: &Connection,
        seq: i64,
        project: &str,
        key: Key<'_>,
    ) -> Result<bool, StorageError> {
        let found = self.chunks.iter().find(|(first, chunk)| {
            **first <= seq && chunk.calls.last().is_some_and(|(last, _, _)| *last >= seq)
        });
        let chunk = match found {
            Some((_, chunk)) => chunk.clone(),
            None => {
                let row: Option<(i64, i64, String, Vec<u8>)> = conn
                    .prepare_cached(
                        "SELECT first_seq, last_seq, project, body FROM call_chunks \
                         WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
                    )?
                    .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                let Some((first, last, chunk_project, body)) = row else { return Ok(false) };
                if last < seq {
                    return Ok(false);
                }
                let unpacked = call_columns::unpack(&body)?;
                let owned = |(seq, id, span): call_columns::RowKeys<'_>| {
                    let span = span.map(|(t, s)| (t.to_owned(), s.to_owned()));
                    (seq, id.map(str::to_owned), span)
                };
                let calls = unpacked.keys(first)?.into_iter().map(owned).collect();
                let chunk = Rc::new(ChunkKeys { project: chunk_project, calls });
                self.chunks.insert(first, chunk.clone());
                chunk
            }
        };
        if chunk.project != project {
            return Ok(false);
        }
        let Ok(at) = chunk.calls.binary_search_by_key(&seq, |(s, _, _)| *s) else {
            return Ok(false);
        };
        let (_, id, span) = &chunk.calls[at];
        Ok(match key {
            Key::Id(key) => id.as_deref() == Some(key),
            Key::Span(trace, key) => span.as_ref().is_some_and(|(t, s)| t == trace && s == key),
        })
    }
}

/// The keys an append claims: checked against the stored calls' and the
/// append's own, kept (with their hash and call) for the index once the
/// append commits. Borrowed from the calls: nothing is allocated per key.
struct Claims<'k, 'c> {
    verifier: Verifier<'k>,
    ours: FxHashMap<(&'c str, Key<'c>), (u64, usize)>,
}

impl<'k, 'c> Claims<'k, 'c> {
    /// Claims `key` of `project` for call `call`; false when a stored call
    /// or an earlier call of the append has it.
    fn claim(
        &mut self,
        conn: &Connection,
        project: &'c str,
        key: Key<'c>,
        call: usize,
    ) -> Result<bool, StorageError> {
        if self.ours.contains_key(&(project, key)) {
            return Ok(false);
        }
        let hash = key.hash(project);
        if self.verifier.stored(conn, project, (key, hash))? {
            return Ok(false);
        }
        self.ours.insert((project, key), (hash, call));
        Ok(true)
    }

    /// Gives back the keys `call` claimed.
    fn release(&mut self, call: usize) {
        self.ours.retain(|_, (_, c)| *c != call);
    }
}

/// Claims the keys of an append's calls (ids, then span keys), in `order`
/// (`insert_order`), so that of two calls with one key the one kept is the
/// earlier; a call whose span is stored claims no id. Returns the calls
/// that are new, in insertion order, and what they claimed.
fn claim_all<'k, 'c>(
    conn: &Connection,
    keys: &'k KeyIndex,
    calls: &[&'c LlmCall],
    order: &InsertOrder,
    refused: &[bool],
) -> Result<(Vec<usize>, Claims<'k, 'c>), StorageError> {
    let mut claims = Claims { verifier: Verifier::new(keys), ours: FxHashMap::default() };
    claims.ours.reserve(calls.len());
    let mut kept = Vec::with_capacity(order.calls.len());
    for &i in &order.calls {
        if refused.get(i).copied().unwrap_or(false) {
            continue; // another node counted it
        }
        let call = calls[i];
        let project = call.project.as_str();
        if let Some(id) = &call.id
            && !claims.claim(conn, project, Key::Id(id), i)?
        {
            continue;
        }
        if let Some((trace, span)) = span_key(call)
            && !claims.claim(conn, project, Key::Span(trace, span), i)?
        {
            claims.release(i);
            continue;
        }
        kept.push(i);
    }
    Ok((kept, claims))
}

/// Whether stored calls hold each key.
pub fn holds(
    conn: &Connection,
    index: &KeyIndex,
    keys: &[(String, crate::storage::CallKey)],
) -> Result<Vec<bool>, StorageError> {
    use crate::storage::CallKey;
    let mut verifier = Verifier::new(index);
    keys.iter()
        .map(|(project, key)| {
            let key = match key {
                CallKey::Id(id) => Key::Id(id),
                CallKey::Span { trace, span } => Key::Span(trace, span),
            };
            verifier.stored(conn, project, (key, key.hash(project)))
        })
        .collect()
}

/// Every key of the calls stored after `seq` (hash, seq, time), as the
/// index takes them back after a restart, to `each`, a page of chunks at a
/// time; `each` may write between pages.
pub fn each_key_after(
    conn: &Connection,
    mut seq: i64,
    mut each: impl FnMut(&[(u64, i64, i64)]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut page = Vec::new();
    loop {
        page.clear();
        let mut chunks = 0;
        {
            let mut stmt = conn.prepare_cached(
                "SELECT first_seq, project, max_time, body FROM call_chunks \
                 WHERE first_seq > ?1 ORDER BY first_seq LIMIT 256",
            )?;
            let mut rows = stmt.query([seq])?;
            while let Some(row) = rows.next()? {
                let (first, project, max): (i64, String, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let body = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
                // A run is dropped once its newest key's call is past the
                // retention: the chunk's newest time stands for its calls'.
                for (at, id, span) in call_columns::unpack(body)?.keys(first)? {
                    if let Some(id) = id {
                        page.push((Key::Id(id).hash(&project), at, max));
                    }
                    if let Some((trace, span)) = span {
                        page.push((Key::Span(trace, span).hash(&project), at, max));
                    }
                }
                (seq, chunks) = (first, chunks + 1);
            }
        }
        if chunks == 0 {
            return Ok(());
        }
        each(&page)?;
    }
}

/// The seq the next call takes: past every stored one and past `floor`,
/// the highest seq ever used (retention deletes calls, and seqs never
/// repeat, as the rollup watermark and the replay after a crash count on).
fn next_seq(tx: &Transaction<'_>, floor: i64) -> Result<i64, rusqlite::Error> {
    Ok(stored_seq(tx)?.max(floor) + 1)
}

/// The highest call seq stored (0 when none): the last seq of the newest
/// chunk, as seqs grow with chunks.
pub fn stored_seq(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM call_chunks ORDER BY first_seq DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(last.unwrap_or(0))
}

/// An append's calls as stored: each call's seq (None when skipped) and
/// the keys the stored ones claimed (hash, seq, time), for the index once
/// the append commits.
pub struct Stored {
    pub seqs: Vec<Option<i64>>,
    pub keys: Vec<(u64, i64, i64)>,
}

/// Stores an append's calls in `order` (`insert_order`), skipping those
/// whose id or span key is stored already (in `keys`, the index, or earlier
/// in the append). `series` and `encoded` go with `calls` by index; `floor`
/// is the highest seq ever used.
#[allow(clippy::too_many_arguments)]
pub fn append(
    tx: &Transaction<'_>,
    keys: &KeyIndex,
    calls: &[&LlmCall],
    series: &[i64],
    encoded: &EncodedCalls,
    order: &InsertOrder,
    refused: &[bool],
    floor: i64,
) -> Result<Stored, StorageError> {
    let mut next = next_seq(tx, floor)?;
    let (kept, claims) = claim_all(tx, keys, calls, order, refused)?;
    let mut seqs = vec![None; calls.len()];
    let mut insert = tx.prepare_cached(
        "INSERT INTO call_chunks (first_seq, last_seq, project, calls, min_time, max_time, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let (mut body, mut chunk) = (Vec::new(), Vec::new());
    for run in runs(calls, &kept) {
        let min = run.iter().map(|&i| calls[i].time_ms).min().unwrap_or(0);
        let max = run.iter().map(|&i| calls[i].time_ms).max().unwrap_or(0);
        chunk.clear();
        for (k, &i) in run.iter().enumerate() {
            let seq = next + k as i64;
            seqs[i] = Some(seq);
            chunk.push(CallRow::of(calls[i], seq, series[i], encoded.own_dimensions(i)));
        }
        call_columns::pack(&chunk, next, min, &mut body);
        let last = next + run.len() as i64 - 1;
        let project = &calls[run[0]].project;
        insert.execute(params![next, last, project, run.len() as i64, min, max, body])?;
        next = last + 1;
    }
    let claimed = claims
        .ours
        .into_values()
        .filter_map(|(hash, i)| seqs[i].map(|seq| (hash, seq, calls[i].time_ms)))
        .collect();
    Ok(Stored { seqs, keys: claimed })
}

/// Where a chunk is, as read back for a query.
struct Head {
    first_seq: i64,
    last_seq: i64,
    project: String,
    min_time: i64,
}

/// Series keys by id, read from `series` as calls name them.
struct SeriesKeys<'c> {
    stmt: CachedStatement<'c>,
    keys: FxHashMap<i64, SeriesKey>,
}

impl<'c> SeriesKeys<'c> {
    fn new(conn: &'c Connection) -> Result<Self, rusqlite::Error> {
        let stmt = conn.prepare_cached(&format!("{} WHERE id = ?1", rows::SELECT_SERIES))?;
        Ok(Self { stmt, keys: FxHashMap::default() })
    }

    /// The call `row` of the chunk at `head`, put back together.
    fn call(&mut self, head: &Head, row: &CallRow<'_>) -> Result<SequencedCall, StorageError> {
        if !self.keys.contains_key(&row.series) {
            let (_, key) =
                self.stmt.query_row([row.series], rows::series_from_row).optional()?.ok_or_else(
                    || StorageError::Corrupt(format!("call of unknown series {}", row.series)),
                )?;
            self.keys.insert(row.series, key);
        }
        rows::decode_call(row, &head.project, &self.keys[&row.series])
    }
}

fn head_from_row(row: &rusqlite::Row<'_>) -> Result<Head, rusqlite::Error> {
    Ok(Head {
        first_seq: row.get(0)?,
        last_seq: row.get(1)?,
        project: row.get(2)?,
        min_time: row.get(3)?,
    })
}

/// Chunks that may hold calls of `project` (any, when None) with time in
/// `[from, to)`, least time first.
fn overlapping(
    conn: &Connection,
    project: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Vec<Head>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, project, min_time FROM call_chunks \
         WHERE max_time >= ?1 AND min_time < ?2 AND (?3 IS NULL OR project = ?3) \
         ORDER BY min_time, first_seq",
    )?;
    let rows = stmt.query_map(params![from, to, project], head_from_row)?;
    rows.collect()
}

fn body(conn: &Connection, first_seq: i64) -> Result<Vec<u8>, rusqlite::Error> {
    conn.prepare_cached("SELECT body FROM call_chunks WHERE first_seq = ?1")?
        .query_row([first_seq], |row| row.get(0))
}

/// Sorts calls by (time, seq) and keeps the first `limit`.
fn settle_page(found: &mut Vec<SequencedCall>, limit: usize) {
    found.sort_unstable_by_key(|c| (c.call.time_ms, c.seq));
    found.truncate(limit);
}

/// A page of calls in (time, seq) order. Chunks are read least time first,
/// and reading stops once `limit` calls are found that no later chunk can
/// come before.
pub fn list(conn: &Connection, filter: &CallFilter) -> Result<Vec<SequencedCall>, StorageError> {
    let series: Option<FxHashSet<i64>> =
        filter.series.as_ref().map(|series| series.iter().copied().collect());
    if series.as_ref().is_some_and(FxHashSet::is_empty) {
        return Ok(Vec::new());
    }
    let after = filter.after.unwrap_or((i64::MIN, i64::MIN));
    let heads =
        overlapping(conn, Some(&filter.project), filter.from_ms.max(after.0), filter.to_ms)?;
    let mut keys = SeriesKeys::new(conn)?;
    let mut found: Vec<SequencedCall> = Vec::new();
    // Once a page is full, only calls before its last can still enter it.
    let mut before = (i64::MAX, i64::MAX);
    for head in &heads {
        if found.len() >= filter.limit {
            settle_page(&mut found, filter.limit);
            let last = &found[filter.limit - 1];
            before = (last.call.time_ms, last.seq);
            if head.min_time > before.0 {
                break;
            }
        }
        let unpacked = call_columns::unpack(&body(conn, head.first_seq)?)?;
        for row in unpacked.rows(head.first_seq, head.min_time)? {
            let at = (row.time_ms, row.seq);
            let wanted = at.0 >= filter.from_ms
                && at.0 < filter.to_ms
                && at > after
                && at < before
                && filter.session.as_ref().is_none_or(|s| row.session == Some(s.as_str()))
                && series.as_ref().is_none_or(|set| set.contains(&row.series));
            if wanted {
                found.push(keys.call(head, &row)?);
            }
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
    let mut heads = overlapping(conn, None, from, to)?;
    heads.sort_unstable_by_key(|head| head.first_seq);
    let mut keys = SeriesKeys::new(conn)?;
    let mut found = Vec::new();
    for head in heads.iter().filter(|head| head.last_seq > after_seq) {
        let unpacked = call_columns::unpack(&body(conn, head.first_seq)?)?;
        for row in unpacked.rows(head.first_seq, head.min_time)? {
            if found.len() >= limit {
                return Ok(found);
            }
            if row.seq > after_seq && row.time_ms >= from && row.time_ms < to {
                found.push(keys.call(head, &row)?);
            }
        }
    }
    Ok(found)
}

/// Calls with seq above `seq`, in seq order, at most `limit`.
pub fn after(
    conn: &Connection,
    seq: i64,
    limit: usize,
) -> Result<Vec<SequencedCall>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, project, min_time, body FROM call_chunks \
         WHERE first_seq >= coalesce( \
             (SELECT max(first_seq) FROM call_chunks WHERE first_seq <= ?1), 0) \
         ORDER BY first_seq",
    )?;
    let mut rows = stmt.query([seq])?;
    let mut keys = SeriesKeys::new(conn)?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()?
        && found.len() < limit
    {
        let head = head_from_row(row)?;
        let body = row.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?;
        let unpacked = call_columns::unpack(body)?;
        for row in unpacked.rows(head.first_seq, head.min_time)? {
            if row.seq > seq && found.len() < limit {
                found.push(keys.call(&head, &row)?);
            }
        }
    }
    Ok(found)
}

/// Writes the payloads of calls whose cost changed, (seq, call) each.
pub fn replace_payloads(
    tx: &Transaction<'_>,
    repriced: &[(i64, LlmCall)],
) -> Result<(), StorageError> {
    let mut order: Vec<&(i64, LlmCall)> = repriced.iter().collect();
    order.sort_unstable_by_key(|(seq, _)| *seq);
    let mut find = tx.prepare_cached(
        "SELECT first_seq, last_seq, min_time, body FROM call_chunks WHERE first_seq <= ?1 \
         ORDER BY first_seq DESC LIMIT 1",
    )?;
    let mut update = tx.prepare_cached("UPDATE call_chunks SET body = ?2 WHERE first_seq = ?1")?;
    let mut out = Vec::new();
    let mut k = 0;
    while k < order.len() {
        let found: Option<(i64, i64, i64, Vec<u8>)> = find
            .query_row([order[k].0], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .optional()?;
        let Some((first, last, min, body)) = found else {
            k += 1;
            continue;
        };
        let end = k + order[k..].iter().take_while(|(seq, _)| *seq <= last).count();
        let calls: FxHashMap<i64, &LlmCall> =
            order[k..end].iter().map(|(seq, call)| (*seq, call)).collect();
        let unpacked = call_columns::unpack(&body)?;
        let mut chunk = unpacked.rows(first, min)?;
        // A re-priced call keeps its series and own dimensions, which
        // re-pricing does not change.
        for row in &mut chunk {
            if let Some(call) = calls.get(&row.seq) {
                *row = CallRow::of(call, row.seq, row.series, row.own);
            }
        }
        call_columns::pack(&chunk, first, min, &mut out);
        update.execute(params![first, out])?;
        k = end.max(k + 1);
    }
    Ok(())
}

/// Deletes calls with time before `cutoff` (their keys with them: the
/// index's candidates are read back from here); a chunk left with calls
/// keeps them. Returns the calls deleted.
pub fn delete_before(tx: &Transaction<'_>, cutoff: i64) -> Result<usize, StorageError> {
    let firsts: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT first_seq FROM call_chunks WHERE min_time < ?1")?;
        let rows = stmt.query_map([cutoff], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut read = tx.prepare("SELECT min_time, body FROM call_chunks WHERE first_seq = ?1")?;
    let mut delete = tx.prepare("DELETE FROM call_chunks WHERE first_seq = ?1")?;
    let mut update = tx.prepare(
        "UPDATE call_chunks SET calls = ?2, min_time = ?3, body = ?4 WHERE first_seq = ?1",
    )?;
    let (mut deleted, mut out) = (0, Vec::new());
    for first in firsts {
        let (min, body): (i64, Vec<u8>) =
            read.query_row([first], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let unpacked = call_columns::unpack(&body)?;
        let (old, kept): (Vec<CallRow<'_>>, Vec<CallRow<'_>>) =
            unpacked.rows(first, min)?.into_iter().partition(|row| row.time_ms < cutoff);
        deleted += old.len();
        let Some(new_min) = kept.iter().map(|row| row.time_ms).min() else {
            delete.execute([first])?;
            continue;
        };
        call_columns::pack(&kept, first, new_min, &mut out);
        update.execute(params![first, kept.len() as i64, new_min, out])?;
    }
    Ok(deleted)
}

/// One call of a row-per-call store, read for the move into chunks.
struct OldCall {
    seq: i64,
    project: String,
    id: Option<String>,
    series: i64,
    time_ms: i64,
    session: Option<String>,
    payload: Vec<u8>,
}

/// Writes moved calls as one chunk.
fn write_moved(tx: &Transaction<'_>, calls: &[OldCall]) -> Result<(), StorageError> {
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else { return Ok(()) };
    let min = calls.iter().map(|c| c.time_ms).min().unwrap_or(0);
    let max = calls.iter().map(|c| c.time_ms).max().unwrap_or(0);
    let chunk = calls
        .iter()
        .map(|c| {
            let at = (c.seq, c.series, c.time_ms);
            rows::legacy_row(at, c.id.as_deref(), c.session.as_deref(), &c.payload)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = Vec::new();
    call_columns::pack(&chunk, first.seq, min, &mut body);
    tx.prepare_cached(
        "INSERT INTO call_chunks (first_seq, last_seq, project, calls, min_time, max_time, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        first.seq,
        last.seq,
        first.project,
        calls.len() as i64,
        min,
        max,
        body
    ])?;
    Ok(())
}

/// Moves the calls of a store that kept a row per call (schema 8 and
/// before) into chunks (the index takes their keys from there), then drops
/// the old tables. Does nothing for a store without them.
pub fn migrate_rows(tx: &Transaction<'_>) -> Result<(), StorageError> {
    if !super::schema::has_table(tx, "calls")? {
        return Ok(());
    }
    let mut stmt = tx.prepare(
        "SELECT seq, project, id, series, time_ms, session, payload FROM calls ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let (mut pending, mut min): (Vec<OldCall>, i64) = (Vec::new(), i64::MAX);
    while let Some(row) = rows.next()? {
        let call = OldCall {
            seq: row.get(0)?,
            project: row.get(1)?,
            id: row.get(2)?,
            series: row.get(3)?,
            time_ms: row.get(4)?,
            session: row.get(5)?,
            payload: row.get(6)?,
        };
        let breaks = pending.first().is_some_and(|first| {
            pending.len() >= CHUNK_CALLS
                || first.project != call.project
                || !joins(min, pending.len(), call.time_ms)
        });
        if breaks {
            write_moved(tx, &pending)?;
            (pending, min) = (Vec::new(), i64::MAX);
        }
        min = min.min(call.time_ms);
        pending.push(call);
    }
    write_moved(tx, &pending)?;
    drop(rows);
    drop(stmt);
    tx.execute_batch("DROP TABLE calls; DROP TABLE IF EXISTS call_blocks;")?;
    Ok(())
}

/// A call in a chunk body as schemas 9 to 11 wrote it (a postcard record
/// each, seq and time as offsets from the chunk's first seq and least
/// time), read only to rewrite old chunks as columns.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct LegacyEntry<'a> {
    seq: u64,
    time: u64,
    series: i64,
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow)]
    session: Option<&'a str>,
    #[serde(borrow)]
    payload: &'a [u8],
}

/// Rewrites the chunks of a store of schema 9 to 11 as columns
/// (`call_columns`), a page of chunks at a time.
pub fn migrate_bodies(tx: &Transaction<'_>) -> Result<(), StorageError> {
    let mut read = tx.prepare(
        "SELECT first_seq, min_time, body FROM call_chunks WHERE first_seq > ?1 \
         ORDER BY first_seq LIMIT 256",
    )?;
    let mut update = tx.prepare("UPDATE call_chunks SET body = ?2 WHERE first_seq = ?1")?;
    let (mut after, mut out) = (i64::MIN, Vec::new());
    loop {
        let page = read
            .query_map([after], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<Vec<(i64, i64, Vec<u8>)>, _>>()?;
        let Some(&(last, _, _)) = page.last() else { return Ok(()) };
        for (first, min, body) in page {
            let entries: Vec<LegacyEntry<'_>> = postcard::from_bytes(&body)
                .map_err(|e| StorageError::Corrupt(format!("call chunk {first}: {e}")))?;
            let rows = entries
                .iter()
                .map(|e| {
                    let at = (first + e.seq as i64, e.series, min + e.time as i64);
                    rows::legacy_row(at, e.id, e.session, e.payload)
                })
                .collect::<Result<Vec<_>, _>>()?;
            call_columns::pack(&rows, first, min, &mut out);
            update.execute(params![first, out])?;
        }
        after = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::schema;

    fn call(id: Option<&str>, time_ms: i64) -> LlmCall {
        LlmCall { id: id.map(str::to_owned), time_ms, ..LlmCall::example() }
    }

    #[test]
    fn calls_insert_by_time_with_repeated_keys_last_in_arrival_order() {
        let span =
            |c: LlmCall| LlmCall { trace_id: Some("t1".into()), span_id: Some("s1".into()), ..c };
        let calls = [
            call(Some("a"), 30),
            call(None, 10),
            call(Some("b"), 20),
            call(Some("a"), 5),
            span(call(Some("c"), 1)),
            call(None, 10),
        ];
        assert_eq!(insert_order(&refs(&calls)).calls, vec![4, 1, 5, 2, 0, 3]);
        // A span key shared with an earlier call repeats too, and a key of a
        // repeated call still counts as seen for the calls after it.
        let calls = [span(call(Some("a"), 30)), span(call(Some("b"), 20)), call(Some("b"), 10)];
        assert_eq!(insert_order(&refs(&calls)).calls, vec![0, 1, 2]);
        // Projects apart, each in time order.
        let other = LlmCall { project: "a-first".into(), ..call(None, 50) };
        assert_eq!(insert_order(&[&call(None, 10), &other]).calls, vec![1, 0]);
    }

    #[test]
    fn full_runs_break_at_time_slices_projects_and_size_and_sparse_runs_span_slices() {
        // Dense: the run breaks at the slice once it holds SPARSE_CALLS calls.
        let mut calls: Vec<LlmCall> =
            (0..SPARSE_CALLS as i64).map(|s| call(None, 10 + s)).collect();
        calls.extend([call(None, 1_000), call(None, 1_500), call(None, 200), call(None, 90_000)]);
        let kept: Vec<usize> = (0..calls.len()).collect();
        let lengths = |runs: Vec<&[usize]>| runs.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(lengths(runs(&refs(&calls), &kept)), vec![SPARSE_CALLS, 4]);
        // Another project starts a run; so does a full chunk.
        calls[2].project = "other".into();
        // (the run after it is sparse until it holds SPARSE_CALLS calls)
        assert_eq!(lengths(runs(&refs(&calls), &kept)), vec![2, 1, SPARSE_CALLS, 1]);
        let many: Vec<LlmCall> = (0..CHUNK_CALLS + 1).map(|_| call(None, 5)).collect();
        let kept: Vec<usize> = (0..many.len()).collect();
        assert_eq!(lengths(runs(&refs(&many), &kept)), vec![CHUNK_CALLS, 1]);
    }

    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        register_modules(&conn).unwrap();
        conn.execute(
            "INSERT INTO series (id, project, model, operation, status, tags) \
             VALUES (1, 'default', 'gpt-4o', 'chat', 'ok', '{}')",
            [],
        )
        .unwrap();
        conn
    }

    fn refs(calls: &[LlmCall]) -> Vec<&LlmCall> {
        calls.iter().collect()
    }

    /// Appends `calls` as a store does, its index loaded afresh from the
    /// calls stored before (as after a restart).
    fn append_calls(conn: &mut Connection, calls: &[LlmCall]) -> Vec<Option<i64>> {
        let keys = super::super::load_call_keys(conn, 2).unwrap();
        let tx = conn.transaction().unwrap();
        let encoded = EncodedCalls::of(calls, &[]);
        let series = vec![1; calls.len()];
        let calls = refs(calls);
        let order = insert_order(&calls);
        let stored = append(&tx, &keys, &calls, &series, &encoded, &order, &[], 0).unwrap();
        tx.commit().unwrap();
        stored.seqs
    }

    #[test]
    fn a_run_of_claims_tells_stored_keys_from_new_ones() {
        let mut conn = store();
        let ids = |ids: &[&str]| ids.iter().map(|id| call(Some(id), 5)).collect::<Vec<_>>();
        assert_eq!(append_calls(&mut conn, &ids(&["b", "d"])), vec![Some(1), Some(2)]);
        // Two of five stored already, and a repeat within the append.
        assert_eq!(
            append_calls(&mut conn, &ids(&["a", "b", "c", "d", "e", "a"])),
            vec![Some(3), None, Some(4), None, Some(5), None]
        );
        let other = LlmCall { project: "other".into(), ..call(Some("a"), 5) };
        assert_eq!(append_calls(&mut conn, &[other, call(Some("f"), 5)]), vec![Some(7), Some(6)]);
    }

    #[test]
    fn retention_rewrites_a_straddling_row_and_frees_the_ids_it_deletes() {
        let mut conn = store();
        let spanned =
            LlmCall { trace_id: Some("t".into()), span_id: Some("s".into()), ..call(None, 500) };
        // Sparse, so one row from 500 to 9,000 ms.
        let calls = [spanned.clone(), call(Some("old"), 900), call(Some("kept"), 9_000)];
        assert_eq!(append_calls(&mut conn, &calls), vec![Some(1), Some(2), Some(3)]);
        let tx = conn.transaction().unwrap();
        assert_eq!(delete_before(&tx, 5_000).unwrap(), 2);
        tx.commit().unwrap();
        let left = after(&conn, 0, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].seq, left[0].call.time_ms), (3, 9_000));
        assert_eq!(left[0].call.id.as_deref(), Some("kept"));
        let row: (i64, i64, i64) = conn
            .query_row("SELECT calls, min_time, max_time FROM call_chunks", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(row, (1, 9_000, 9_000));
        // The deleted calls' id and span key are free again; the kept one's is not.
        let again = [spanned, call(Some("old"), 9_500), call(Some("kept"), 9_500)];
        assert_eq!(append_calls(&mut conn, &again), vec![Some(4), Some(5), None]);
        // A row left without calls goes.
        let tx = conn.transaction().unwrap();
        assert_eq!(delete_before(&tx, 20_000).unwrap(), 3);
        tx.commit().unwrap();
        let rows: i64 =
            conn.query_row("SELECT count(*) FROM call_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn a_call_whose_span_is_stored_claims_no_id() {
        let mut conn = store();
        let spanned = |id: &str, span: &str| LlmCall {
            trace_id: Some("t".into()),
            span_id: Some(span.into()),
            ..call(Some(id), 5)
        };
        assert_eq!(append_calls(&mut conn, &[spanned("a", "s1")]), vec![Some(1)]);
        // Same span, new id: a repeat, and its id stays free.
        assert_eq!(append_calls(&mut conn, &[spanned("b", "s1")]), vec![None]);
        assert_eq!(append_calls(&mut conn, &[call(Some("b"), 5)]), vec![Some(2)]);
    }

    #[test]
    fn a_store_of_schema_11_has_its_chunks_rewritten_as_columns() {
        let mut conn = store();
        let calls: Vec<LlmCall> = (0..3)
            .map(|i| LlmCall {
                input_tokens: 100 + i,
                cost_usd: 0.001 * i as f64,
                started_at_ms: Some(1_000 + i as i64),
                session: (i == 1).then(|| "chat-1".into()),
                trace_id: (i == 2).then(|| "t2".into()),
                span_id: (i == 2).then(|| "s2".into()),
                ..call(Some(&format!("old-{i}")), 2_000 + i as i64)
            })
            .collect();
        // The chunk as schema 11 wrote it: a postcard record per call.
        let payloads: Vec<Vec<u8>> = calls
            .iter()
            .map(|c| {
                let mut payload = Vec::new();
                rows::legacy_payload(c, &mut payload);
                payload
            })
            .collect();
        let entries: Vec<LegacyEntry<'_>> = calls
            .iter()
            .zip(&payloads)
            .enumerate()
            .map(|(i, (c, payload))| LegacyEntry {
                seq: i as u64,
                time: i as u64,
                series: 1,
                id: c.id.as_deref(),
                session: c.session.as_deref(),
                payload,
            })
            .collect();
        let body = postcard::to_allocvec(&entries).unwrap();
        conn.execute(
            "INSERT INTO call_chunks (first_seq, last_seq, project, calls, min_time, max_time, body) \
             VALUES (1, 3, 'default', 3, 2000, 2002, ?1)",
            [body],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 11).unwrap();
        schema::create_or_check(&conn).unwrap();
        let read: Vec<LlmCall> = after(&conn, 0, 10).unwrap().into_iter().map(|c| c.call).collect();
        assert_eq!(read, calls);
        // And the ids are still found, from the rewritten chunk.
        assert_eq!(append_calls(&mut conn, &[call(Some("old-1"), 5)]), vec![None]);
    }

    #[test]
    fn a_store_with_a_row_per_call_moves_its_calls_into_chunks() {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        // Back to schema 8: a row per call, its blocks, its unique indexes.
        conn.execute_batch(&format!(
            "DROP TABLE call_chunks; {}
             INSERT INTO series (id, project, model, operation, status, tags)
                 VALUES (1, 'default', 'gpt-4o', 'chat', 'ok', '{{}}');
             PRAGMA user_version = 8;",
            schema::CALLS_V8
        ))
        .unwrap();
        let mut payload = Vec::new();
        for seq in 1..=10_000_i64 {
            let mut c = call(Some(&format!("r{seq}")), 50_000 - seq);
            c.input_tokens = seq as u64;
            let span_ref = (seq % 10 == 0).then(|| format!("t{seq}s{seq}"));
            if span_ref.is_some() {
                (c.trace_id, c.span_id) = (Some(format!("t{seq}")), Some(format!("s{seq}")));
            }
            rows::legacy_payload(&c, &mut payload);
            conn.execute(
                "INSERT INTO calls (seq, project, id, series, time_ms, session, span_ref, payload) \
                 VALUES (?1, 'default', ?2, 1, ?3, ?4, ?5, ?6)",
                params![seq, c.id, c.time_ms, (seq == 7).then_some("chat-7"), span_ref, payload],
            )
            .unwrap();
        }
        schema::create_or_check(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
        let gone: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('calls', 'call_blocks')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        // Every call, in seq order, with its fields.
        let all = after(&conn, 0, 20_000).unwrap();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().enumerate().all(|(i, c)| c.seq == i as i64 + 1
            && c.call.input_tokens == c.seq as u64
            && c.call.time_ms == 50_000 - c.seq
            && c.call.id.as_deref() == Some(format!("r{}", c.seq).as_str())));
        assert_eq!(all[6].call.session.as_deref(), Some("chat-7"));
        assert_eq!(all[9].call.span_id.as_deref(), Some("s10"));
        assert_eq!(
            after(&conn, 9_990, 5).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![9_991, 9_992, 9_993, 9_994, 9_995]
        );
        // Their ids and span keys are stored: each repeats.
        use crate::storage::CallKey;
        let keys = super::super::load_call_keys(&conn, 1_000).unwrap();
        let key = |key: CallKey| ("default".to_owned(), key);
        let span = CallKey::Span { trace: "t20".into(), span: "s20".into() };
        let asked = [key(CallKey::Id("r5".into())), key(span), key(CallKey::Id("r10001".into()))];
        assert_eq!(holds(&conn, &keys, &asked).unwrap(), [true, true, false]);
    }
}
