//! The time index of `span_chunks`: one `span_blocks` row per run of
//! consecutive chunk seqs of one append whose spans first start within one
//! slice of time (a minute, wider when the append's spans start over more
//! than a few minutes), instead of an index entry per span. Spans of an
//! export may start all over the last hour, so a per-span time index took a
//! random page write per span; an append now inserts its chunks by slice
//! and notes each run once. A block also counts its spans by kind and sums
//! their durations by kind and by model (those in tables of their own, a
//! row per block), so that statistics over a window take the blocks wholly
//! inside it from those, not span by span; and it keeps its spans' timings
//! (`span_timings`, a table of their own too), from which the spans of the
//! other blocks are read rather than from their chunks.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::span_chunks::EncodedChunk;
use super::span_timings;
use crate::aggregate::sketch::Encodings;
use crate::model::{SpanKind, SpanRecord, SpanStatus};
use crate::storage::{SpanDurations, SpanGroup, SpanTiming, StorageError};

/// The narrowest slice of start time one block's spans lie in.
pub const BLOCK_SPAN_NS: i64 = 60 * 1_000_000_000;

/// Most slices an append's starts are cut into: each makes a block (of
/// spans, and of each project's new traces), and every block an entry in
/// its table's time index, a random page write in each commit. An hour of
/// starts falls in 8 or 9 slices of 8 minutes, wherever it begins.
const MAX_SLICES: usize = 10;
/// The widest slice, in minutes.
const MAX_SLICE_MINUTES: i64 = 64;

/// How one append cuts start times into slices: by the minute, or by a
/// power of two minutes (up to `MAX_SLICE_MINUTES`) when its starts fall in
/// more than `MAX_SLICES` minutes. Queries read blocks by their own least
/// and greatest start, whatever slice they were cut by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slices {
    width_ns: i64,
}

impl Slices {
    pub const MINUTE: Slices = Slices { width_ns: BLOCK_SPAN_NS };

    /// The slices of an append of `chunks`: the narrowest that put their
    /// first starts in at most `MAX_SLICES` slices (or the widest). Counted
    /// rather than taken from the spread, so that a late span from long ago
    /// costs one more block and does not widen every other.
    fn of_chunks(chunks: &[EncodedChunk]) -> Slices {
        let mut starts: Vec<i64> = chunks.iter().map(|c| c.min_start).collect();
        starts.sort_unstable();
        let mut slices = Slices::MINUTE;
        while slices.width_ns < MAX_SLICE_MINUTES * BLOCK_SPAN_NS {
            // Sorted starts: a new slice is one unlike the one before.
            let cut = starts.windows(2).filter(|w| slices.of(w[0]) != slices.of(w[1])).count();
            if cut < MAX_SLICES {
                break;
            }
            slices.width_ns *= 2;
        }
        slices
    }

    /// The slice `start_ns` lies in.
    pub fn of(self, start_ns: i64) -> i64 {
        start_ns.div_euclid(self.width_ns)
    }
}

/// How an append's chunks go in: in `order` (indices into its chunks),
/// cut by `slices`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkOrder {
    pub order: Vec<usize>,
    pub slices: Slices,
}

/// The order to insert an append's chunks in: by the slice their spans
/// first start in, except that a chunk of a trace an earlier chunk of the
/// append also holds goes after all the others, in arrival order, so that
/// of a span sent twice the first sent is still the one kept.
pub fn insert_order(spans: &[&SpanRecord], chunks: &[EncodedChunk]) -> ChunkOrder {
    let slices = Slices::of_chunks(chunks);
    let mut seen: FxHashSet<(&str, &str)> = FxHashSet::default();
    let (mut first, mut repeated) = (Vec::with_capacity(chunks.len()), Vec::new());
    for (i, chunk) in chunks.iter().enumerate() {
        let Some(&s) = chunk.spans.first() else { continue };
        if seen.insert((&spans[s].project, &spans[s].trace_id)) {
            first.push(i);
        } else {
            repeated.push(i);
        }
    }
    first.sort_by_key(|&i| (slices.of(chunks[i].min_start), i));
    first.extend(repeated);
    ChunkOrder { order: first, slices }
}

/// Most kinds, and most models, over a block's projects and services,
/// whose durations the block sums; a block with more sums none of them,
/// and is read span by span for them (models are client data).
const MAX_TIMED_GROUPS: usize = 256;

/// What a block keeps of its spans of one project and service: their
/// number by kind, and their durations by kind and by model.
struct Scope<'a> {
    project: &'a str,
    service: &'a str,
    kinds: Vec<(SpanKind, u64, SpanDurations)>,
    models: Vec<(&'a str, SpanDurations)>,
}

impl<'s, 'a> Scope<'a> {
    /// Its durations by kind or by model.
    fn durations(&'s self, group: SpanGroup) -> Vec<(&'s str, &'s SpanDurations)> {
        match group {
            SpanGroup::Kind => self.kinds.iter().map(|k| (k.0.as_str(), &k.2)).collect(),
            SpanGroup::Model => self.models.iter().map(|m| (m.0, &m.1)).collect(),
        }
    }
}

/// How many groups of one grouping (kinds, or models) a block sums, and
/// whether it stopped.
#[derive(Default)]
struct Groups {
    count: usize,
    /// More than `MAX_TIMED_GROUPS`: no durations are kept of them.
    untimed: bool,
}

impl Groups {
    fn one_more(&mut self) {
        self.count += 1;
        self.untimed |= self.count > MAX_TIMED_GROUPS;
    }
}

/// What a block keeps of its spans, by project and service.
#[derive(Default)]
struct Sums<'a> {
    scopes: Vec<Scope<'a>>,
    /// Where each project and service is in `scopes`.
    by_scope: FxHashMap<(&'a str, &'a str), usize>,
    kinds: Groups,
    models: Groups,
}

impl<'a> Sums<'a> {
    fn add(&mut self, s: &'a SpanRecord) {
        let (project, service) = (s.project.as_str(), s.service.as_str());
        // A run's spans mostly share the scope of the span before.
        let at = match self.scopes.last() {
            Some(last) if (last.project, last.service) == (project, service) => {
                self.scopes.len() - 1
            }
            _ => *self.by_scope.entry((project, service)).or_insert_with(|| {
                let scope = Scope { project, service, kinds: Vec::new(), models: Vec::new() };
                self.scopes.push(scope);
                self.scopes.len() - 1
            }),
        };
        let scope = &mut self.scopes[at];
        let (duration_ns, error) = (s.end_ns - s.start_ns, s.status == SpanStatus::Error);
        let kind = match scope.kinds.iter().position(|k| k.0 == s.kind) {
            Some(kind) => kind,
            None => {
                scope.kinds.push((s.kind, 0, SpanDurations::default()));
                self.kinds.one_more();
                scope.kinds.len() - 1
            }
        };
        scope.kinds[kind].1 += 1;
        if !self.kinds.untimed {
            scope.kinds[kind].2.add(duration_ns, error);
        }
        let Some(name) = s.model.as_deref().filter(|_| !self.models.untimed) else { return };
        let model = match scope.models.iter().position(|m| m.0 == name) {
            Some(model) => model,
            None => {
                scope.models.push((name, SpanDurations::default()));
                self.models.one_more();
                scope.models.len() - 1
            }
        };
        scope.models[model].1.add(duration_ns, error);
    }

    /// The counts as stored: by project and service, each with its spans
    /// by kind.
    fn encode_kinds(&self) -> Vec<u8> {
        let stored: StoredKinds<'_> = self
            .scopes
            .iter()
            .map(|c| (c.project, c.service, c.kinds.iter().map(|k| (k.0.as_str(), k.1)).collect()))
            .collect();
        postcard::to_allocvec(&stored).expect("writing to a Vec cannot fail")
    }

    /// The durations by kind or by model as stored (`None` past
    /// `MAX_TIMED_GROUPS` of them).
    fn encode_durations(&self, group: SpanGroup) -> Option<Vec<u8>> {
        let groups = match group {
            SpanGroup::Kind => &self.kinds,
            SpanGroup::Model => &self.models,
        };
        if groups.untimed {
            return None;
        }
        let of_scopes: Vec<_> = self.scopes.iter().map(|scope| scope.durations(group)).collect();
        let sketches = Encodings::of(of_scopes.iter().flatten().map(|(_, d)| &d.sketch));
        let mut parts = sketches.parts();
        let stored: StoredDurations<'_> = self
            .scopes
            .iter()
            .zip(&of_scopes)
            .map(|(scope, durations)| {
                let timed = durations
                    .iter()
                    .map(|(key, d)| Timed {
                        key,
                        errors: d.errors,
                        sketch: parts.next().expect("a sketch for each group"),
                    })
                    .collect();
                (scope.project, scope.service, timed)
            })
            .collect();
        Some(postcard::to_allocvec(&stored).expect("writing to a Vec cannot fail"))
    }
}

/// Counts as a block keeps them: by project and service, each with its
/// spans by kind.
type StoredKinds<'a> = Vec<(&'a str, &'a str, Vec<(&'a str, u64)>)>;

/// Durations by kind or by model as a block keeps them: by project and
/// service, each with its groups.
type StoredDurations<'a> = Vec<(&'a str, &'a str, Vec<Timed<'a>>)>;

/// The durations of one group (a kind or a model) of a block's spans.
#[derive(Serialize, Deserialize)]
struct Timed<'a> {
    key: &'a str,
    errors: u64,
    /// The durations (ms), `Sketch::encode`.
    #[serde(borrow, with = "serde_bytes")]
    sketch: &'a [u8],
}

/// The table of blocks' timings (`span_timings`), a row each.
const TIMINGS: &str = "span_block_timings";

/// The table of blocks' durations by `group`.
fn durations_table(group: SpanGroup) -> &'static str {
    match group {
        SpanGroup::Kind => "span_block_kind_durations",
        SpanGroup::Model => "span_block_model_durations",
    }
}

/// A chunk just inserted, as its block notes it: (seq, least start,
/// greatest start, its spans).
pub type Inserted<'a> = (i64, i64, i64, Vec<&'a SpanRecord>);

/// Notes chunks just inserted in `tx`, in insertion order: a block per run
/// of consecutive seqs whose least starts lie in one of `slices`, with its
/// spans counted by kind and their durations summed by kind and model (a
/// statistic over a window takes a block wholly inside it from these).
pub fn record<'a>(
    tx: &Transaction<'_>,
    slices: Slices,
    inserted: impl Iterator<Item = Inserted<'a>>,
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO span_blocks (first_seq, last_seq, min_start, max_start, kinds) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let insert_into = |table| tx.prepare_cached(&format!("INSERT INTO {table} VALUES (?1, ?2)"));
    let mut durations = [
        (SpanGroup::Kind, insert_into(durations_table(SpanGroup::Kind))?),
        (SpanGroup::Model, insert_into(durations_table(SpanGroup::Model))?),
    ];
    let mut timings = insert_into(TIMINGS)?;
    let mut write = |run: Run<'_>| {
        let sums = &run.sums;
        insert.execute(params![run.first, run.last, run.min, run.max, sums.encode_kinds()])?;
        let block = tx.last_insert_rowid();
        for (group, insert) in &mut durations {
            if let Some(encoded) = sums.encode_durations(*group) {
                insert.execute(params![block, encoded])?;
            }
        }
        timings.execute(params![block, run.timings.encode()])?;
        Ok::<_, rusqlite::Error>(())
    };
    let mut run: Option<Run<'_>> = None;
    for (seq, least, most, spans) in inserted {
        match &mut run {
            Some(open) if open.last + 1 == seq && slices.of(open.min) == slices.of(least) => {
                open.last = seq;
                open.min = open.min.min(least);
                open.max = open.max.max(most);
                open.add(spans);
                continue;
            }
            _ => {}
        }
        if let Some(done) = run.take() {
            write(done)?;
        }
        let mut open = Run {
            first: seq,
            last: seq,
            min: least,
            max: most,
            sums: Sums::default(),
            timings: span_timings::Builder::default(),
        };
        open.add(spans);
        run = Some(open);
    }
    if let Some(done) = run {
        write(done)?;
    }
    Ok(())
}

/// A block as `record` builds it from a run of chunks.
struct Run<'a> {
    first: i64,
    last: i64,
    min: i64,
    max: i64,
    sums: Sums<'a>,
    timings: span_timings::Builder<'a>,
}

impl<'a> Run<'a> {
    fn add(&mut self, spans: Vec<&'a SpanRecord>) {
        for span in spans {
            self.sums.add(span);
            self.timings.add(span);
        }
    }
}

/// What the blocks tell of a window's spans by kind.
pub struct WindowKinds {
    /// The spans of the blocks wholly inside the window, by kind.
    pub counted: HashMap<String, u64>,
    /// The other blocks that may hold spans of it, to be read span by span.
    pub read: ToRead,
}

/// Spans of `project` (and `service`) starting in `[from_ns, to_ns)` by
/// kind, as counted by the blocks wholly inside the window, and where the
/// others are. A block without counts (written before blocks had them) or
/// overlapping another is read.
pub fn kinds(
    conn: &Connection,
    project: &str,
    service: Option<&str>,
    from_ns: i64,
    to_ns: i64,
) -> Result<WindowKinds, StorageError> {
    let mut counted: HashMap<String, u64> = HashMap::new();
    let read = sums_in_window(conn, Kept::Kinds, (from_ns, to_ns), |bytes| {
        let Ok(kinds) = postcard::from_bytes::<StoredKinds<'_>>(bytes) else { return Ok(false) };
        let of_scope =
            kinds.into_iter().filter(|k| k.0 == project && service.is_none_or(|s| s == k.1));
        for (kind, n) in of_scope.flat_map(|k| k.2) {
            match counted.get_mut(kind) {
                Some(total) => *total += n,
                None => {
                    counted.insert(kind.to_owned(), n);
                }
            }
        }
        Ok(true)
    })?;
    Ok(WindowKinds { counted, read })
}

/// Most groups a read of blocks' durations sums at once before handing
/// them over (a window's blocks can name any number of models).
const MAX_SUMMED_GROUPS: usize = 1024;

/// Durations of the spans of `project` (and `service`) starting in
/// `[from_ns, to_ns)` by `group`, as summed by the blocks wholly inside the
/// window (handed to `take` a group at a time, in key order, once every
/// `MAX_SUMMED_GROUPS` groups and at the end: a group can come more than
/// once), and the others, to be read span by span. A block without sums
/// (written before blocks had them, or with too many groups) or overlapping
/// another is read.
pub fn durations(
    conn: &Connection,
    project: &str,
    service: Option<&str>,
    (from_ns, to_ns): (i64, i64),
    group: SpanGroup,
    mut take: impl FnMut(&str, &SpanDurations),
) -> Result<ToRead, StorageError> {
    // Stored sketches merged straight into one per group, without a
    // sketch of their own each (a window can hold a hundred thousand
    // blocks).
    let mut summed: FxHashMap<String, SpanDurations> = FxHashMap::default();
    let mut hand_over = |summed: &mut FxHashMap<String, SpanDurations>| {
        let mut groups: Vec<(String, SpanDurations)> = summed.drain().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, durations) in &groups {
            take(key, durations);
        }
    };
    let read = sums_in_window(conn, Kept::Durations(group), (from_ns, to_ns), |bytes| {
        let Ok(stored) = postcard::from_bytes::<StoredDurations<'_>>(bytes) else {
            return Ok(false);
        };
        if summed.len() >= MAX_SUMMED_GROUPS {
            hand_over(&mut summed);
        }
        let of_scope =
            stored.into_iter().filter(|s| s.0 == project && service.is_none_or(|v| v == s.1));
        for timed in of_scope.flat_map(|s| s.2) {
            let durations = match summed.get_mut(timed.key) {
                Some(durations) => durations,
                None => summed.entry(timed.key.to_owned()).or_default(),
            };
            durations.sketch.merge_encoded(timed.sketch).map_err(|e| {
                StorageError::Corrupt(format!(
                    "stored span block durations of {:?}: {e}",
                    timed.key
                ))
            })?;
            durations.errors += timed.errors;
        }
        Ok(true)
    })?;
    hand_over(&mut summed);
    Ok(read)
}

/// Where blocks keep one kind of sums.
#[derive(Debug, Clone, Copy)]
enum Kept {
    /// Their counts by kind, in their own rows.
    Kinds,
    /// Their durations by kind or model, a row each in a table of their own.
    Durations(SpanGroup),
}

/// A block meeting a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Met {
    first: i64,
    last: i64,
    id: i64,
    inside: bool,
    /// Whether its seqs meet no other block's (they can, where retention
    /// emptied the top of the chunks and SQLite handed their seqs out
    /// again): only then do its sums and timings stand for its chunks.
    alone: bool,
}

/// Blocks whose spans a statistic reads one by one: from their timings, or
/// from their chunks (blocks without timings, and blocks whose seqs meet
/// another's, whose chunks are read once for both).
#[derive(Debug)]
pub struct ToRead(Vec<Met>);

impl ToRead {
    /// Their seq ranges (disjoint, in seq order).
    #[cfg(test)]
    pub fn ranges(&self) -> Vec<(i64, i64)> {
        merge_ranges(self.0.iter().map(|b| (b.first, b.last)).collect())
    }
}

/// The blocks meeting `[from_ns, to_ns)`, in seq order, read through `how`
/// (`span_access`).
fn blocks_meeting(
    conn: &Connection,
    how: &str,
    (from_ns, to_ns): (i64, i64),
) -> Result<Vec<Met>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT first_seq, last_seq, id, min_start >= ?1 AND max_start < ?2 \
         FROM span_blocks {how} WHERE max_start >= ?1 AND min_start < ?2"
    ))?;
    let mut blocks: Vec<Met> = stmt
        .query_map(params![from_ns, to_ns], |r| {
            let (first, last, id, inside) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            Ok(Met { first, last, id, inside, alone: true })
        })?
        .collect::<Result<_, _>>()?;
    blocks.sort_unstable();
    let mut reach = i64::MIN;
    for i in 0..blocks.len() {
        let overlaps_next = blocks.get(i + 1).is_some_and(|next| next.first <= blocks[i].last);
        if blocks[i].first <= reach || overlaps_next {
            blocks[i].alone = false;
        }
        reach = reach.max(blocks[i].last);
    }
    Ok(blocks)
}

/// Every block meeting `[from_ns, to_ns)`, to be read span by span (for
/// statistics no block sums).
pub fn meeting(conn: &Connection, window: (i64, i64)) -> Result<ToRead, StorageError> {
    let how = span_access(conn, window.0, window.1)?;
    Ok(ToRead(blocks_meeting(conn, how, window)?))
}

/// The blocks meeting `[from_ns, to_ns)`: of each wholly inside it, the
/// sums `kept` go to `take` (which says whether it could read them); the
/// others and those without such sums, to be read span by span, are
/// returned.
fn sums_in_window(
    conn: &Connection,
    kept: Kept,
    (from_ns, to_ns): (i64, i64),
    mut take: impl FnMut(&[u8]) -> Result<bool, StorageError>,
) -> Result<ToRead, StorageError> {
    let how = span_access(conn, from_ns, to_ns)?;
    let blocks = blocks_meeting(conn, how, (from_ns, to_ns))?;
    // The sums of those that stand, without holding them all.
    let mut standing: Vec<i64> =
        blocks.iter().filter(|b| b.inside && b.alone).map(|b| b.id).collect();
    standing.sort_unstable();
    let mut taken = FxHashSet::default();
    let mut offer = |id: i64, bytes: &[u8]| -> Result<(), StorageError> {
        // Sums that cannot be read: the block is read instead.
        if take(bytes)? {
            taken.insert(id);
        }
        Ok(())
    };
    match kept {
        Kept::Kinds if !standing.is_empty() => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, kinds FROM span_blocks {how} WHERE max_start >= ?1 \
                 AND min_start < ?2 AND min_start >= ?1 AND max_start < ?2 AND kinds IS NOT NULL"
            ))?;
            let mut rows = stmt.query(params![from_ns, to_ns])?;
            while let Some(row) = rows.next()? {
                let id = row.get(0)?;
                if standing.binary_search(&id).is_ok() {
                    offer(id, row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?;
                }
            }
        }
        Kept::Kinds => {}
        Kept::Durations(group) => rows_of(conn, durations_table(group), "sums", &standing, offer)?,
    }
    let read = blocks.into_iter().filter(|b| !(b.inside && b.alone && taken.contains(&b.id)));
    Ok(ToRead(read.collect()))
}

/// Hands the rows of `table` (keyed by `block`) of the blocks `ids` (in
/// order) that have one to `each`, with their `column`: looked up one by
/// one, or all rows between the least and the greatest read in one pass
/// when `ids` are at least a quarter of those.
fn rows_of(
    conn: &Connection,
    table: &str,
    column: &str,
    ids: &[i64],
    mut each: impl FnMut(i64, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let (Some(&least), Some(&most)) = (ids.first(), ids.last()) else { return Ok(()) };
    let scan = (ids.len() as i128) * 4 >= (most as i128 - least as i128 + 1);
    let mut stmt = conn.prepare_cached(&if scan {
        format!("SELECT block, {column} FROM {table} WHERE block BETWEEN ?1 AND ?2")
    } else {
        format!("SELECT block, {column} FROM {table} WHERE block = ?1")
    })?;
    let mut read = |args: &[i64]| -> Result<(), StorageError> {
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            let id = row.get(0)?;
            if !scan || ids.binary_search(&id).is_ok() {
                each(id, row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?;
            }
        }
        Ok(())
    };
    if scan { read(&[least, most]) } else { ids.iter().try_for_each(|&id| read(&[id])) }
}

/// Hands each span of the blocks `read` of `project` (and `service`) that
/// starts in `[from_ns, to_ns)` to `each`, from the blocks' timings; returns
/// the seq ranges of the blocks to be read from their chunks instead (those
/// without timings, and those whose seqs meet another block's), disjoint,
/// in seq order.
pub fn read_timings(
    conn: &Connection,
    read: ToRead,
    scope: (&str, Option<&str>),
    window: (i64, i64),
    mut each: impl FnMut(SpanTiming<'_>),
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut ids: Vec<i64> = read.0.iter().filter(|b| b.alone).map(|b| b.id).collect();
    ids.sort_unstable();
    let mut found = FxHashSet::default();
    rows_of(conn, TIMINGS, "timings", &ids, |id, timings| {
        span_timings::each_span(timings, scope, window, &mut each)
            .map_err(|e| StorageError::Corrupt(format!("span block {id}: {e}")))?;
        found.insert(id);
        Ok(())
    })?;
    let chunks = read.0.into_iter().filter(|b| !b.alone || !found.contains(&b.id));
    Ok(merge_ranges(chunks.map(|b| (b.first, b.last)).collect()))
}

/// How a query over `[from_ns, to_ns)` reads a table of blocks: through
/// its time index, or (`NOT INDEXED`) the whole table in row order when the
/// window spans at least a quarter of the times the blocks reach (the
/// least and greatest `max_start`, which `bounds` reads from the index).
/// Blocks come about evenly over time, so such a window meets a quarter of
/// them or more, and one pass over the table is then the faster (three
/// times, over 500,000 blocks).
pub(super) fn access(
    conn: &Connection,
    bounds: &str,
    args: impl rusqlite::Params,
    (from_ns, to_ns): (i64, i64),
    index: &'static str,
) -> Result<&'static str, rusqlite::Error> {
    let (lo, hi): (Option<i64>, Option<i64>) =
        conn.prepare_cached(bounds)?.query_row(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(index) };
    let met = (to_ns.min(hi) as i128 - from_ns.max(lo) as i128).max(0);
    Ok(if met * 4 >= (hi as i128 - lo as i128 + 1) { "NOT INDEXED" } else { index })
}

/// How a query over a window reads `span_blocks` (`access`).
fn span_access(
    conn: &Connection,
    from_ns: i64,
    to_ns: i64,
) -> Result<&'static str, rusqlite::Error> {
    access(
        conn,
        "SELECT (SELECT min(max_start) FROM span_blocks), (SELECT max(max_start) FROM span_blocks)",
        [],
        (from_ns, to_ns),
        "INDEXED BY span_blocks_max_start",
    )
}

/// Seq ranges (first, last) merged into disjoint ones, in seq order (a
/// block's range can overlap a later one's when retention emptied the top
/// of the table and SQLite handed its seqs out again).
fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
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

/// Deletes the chunks of every block that ends before `cutoff_ns` (those
/// whose spans all started before it), and those blocks; a block reaching
/// past it waits until it is wholly older. Returns the spans deleted.
pub fn delete_before(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<usize, rusqlite::Error> {
    let old: Vec<(i64, i64)> = tx
        .prepare("SELECT first_seq, last_seq FROM span_blocks WHERE max_start < ?1")?
        .query_map([cutoff_ns], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut count = tx.prepare(
        "SELECT coalesce(sum(spans), 0) FROM span_chunks \
         WHERE seq BETWEEN ?1 AND ?2 AND max_start < ?3",
    )?;
    let mut delete =
        tx.prepare("DELETE FROM span_chunks WHERE seq BETWEEN ?1 AND ?2 AND max_start < ?3")?;
    let mut deleted = 0;
    for (first, last) in old {
        deleted += count.query_row(params![first, last, cutoff_ns], |r| r.get::<_, i64>(0))?;
        delete.execute(params![first, last, cutoff_ns])?;
    }
    let beside = [durations_table(SpanGroup::Kind), durations_table(SpanGroup::Model), TIMINGS];
    for table in beside {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE block IN (SELECT id FROM span_blocks WHERE max_start < ?1)"
            ),
            [cutoff_ns],
        )?;
    }
    tx.execute("DELETE FROM span_blocks WHERE max_start < ?1", [cutoff_ns])?;
    Ok(deleted as usize)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::sqlite::span_packing::SpanPacking;
    use crate::storage::sqlite::{schema, span_chunks, telemetry};

    #[test]
    fn overlapping_ranges_merge_into_disjoint_ones() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (1, 5), (15, 30), (6, 8), (40, 41)]),
            vec![(1, 8), (10, 30), (40, 41)]
        );
        assert!(merge_ranges(Vec::new()).is_empty());
    }

    /// A new store in memory.
    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        schema::create_or_check(&conn).unwrap();
        conn
    }

    fn span(trace_id: &str, span_id: &str, start_ns: i64) -> SpanRecord {
        SpanRecord {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            start_ns,
            ..SpanRecord::example()
        }
    }

    #[test]
    fn chunks_insert_by_minute_with_repeated_traces_last_in_arrival_order() {
        let minute = BLOCK_SPAN_NS;
        let packing = std::sync::Arc::new(SpanPacking::default());
        // As the committer joins them: one request's chunks after another's.
        let mut spans = vec![span("t1", "a", 3 * minute), span("t2", "b", minute + 5)];
        let mut chunks = span_chunks::chunks_of(&spans, &packing);
        let later = [span("t1", "a", 0), span("t3", "c", minute), span("t4", "d", 10)];
        for mut chunk in span_chunks::chunks_of(&later, &packing) {
            chunk.spans.iter_mut().for_each(|i| *i += spans.len());
            chunks.push(chunk);
        }
        spans.extend(later);
        let order = insert_order(&spans.iter().collect::<Vec<_>>(), &chunks);
        assert_eq!(order, ChunkOrder { order: vec![4, 1, 3, 0, 2], slices: Slices::MINUTE });
    }

    #[test]
    fn an_append_is_cut_by_the_minute_or_into_at_most_ten_wider_slices() {
        let packing = std::sync::Arc::new(SpanPacking::default());
        let minute = BLOCK_SPAN_NS;
        let slices_of = |starts: &[i64]| {
            let spans: Vec<SpanRecord> = starts
                .iter()
                .enumerate()
                .map(|(i, &start)| span(&format!("t{i}"), "a", start))
                .collect();
            let chunks = span_chunks::chunks_of(&spans, &packing);
            let slices = Slices::of_chunks(&chunks);
            let cut: FxHashSet<i64> = chunks.iter().map(|c| slices.of(c.min_start)).collect();
            (slices, cut.len())
        };
        // Starts within a few minutes: a slice a minute.
        assert_eq!(slices_of(&[0, 3 * minute, 7 * minute + 59]), (Slices::MINUTE, 3));
        // Over an hour: 8-minute slices, 8 of them, or 9 where the hour
        // does not begin with one.
        let hour: Vec<i64> = (0..60).map(|m| m * minute + 17).collect();
        let (slices, cut) = slices_of(&hour);
        assert_eq!((slices.width_ns, cut), (8 * minute, 8));
        let later: Vec<i64> = hour.iter().map(|start| start + 5 * minute).collect();
        let (slices, cut) = slices_of(&later);
        assert_eq!((slices.width_ns, cut), (8 * minute, 9));
        // A few stragglers from long ago cost a block each, no wider slices.
        let late = [
            vec![-3 * 24 * 60 * minute, -2 * 24 * 60 * minute],
            (0..5).map(|s| s * minute).collect(),
        ];
        assert_eq!(slices_of(&late.concat()), (Slices::MINUTE, 7));
        // Over days, minute after minute: the widest slice, however many that makes.
        let days: Vec<i64> = (0..10 * 24).map(|h| h * 60 * minute).collect();
        let (slices, _) = slices_of(&days);
        assert_eq!(slices.width_ns, MAX_SLICE_MINUTES * minute);
        assert_eq!(slices_of(&[]).0, Slices::MINUTE);
    }

    /// Every row `sql` selects, as `row` reads it.
    fn all<T>(
        conn: &Connection,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], row).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn blocks(conn: &Connection) -> Vec<(i64, i64, i64, i64)> {
        let sql = "SELECT first_seq, last_seq, min_start, max_start FROM span_blocks ORDER BY id";
        all(conn, sql, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
    }

    #[test]
    fn runs_break_at_minutes_and_gaps_and_ranges_come_out_disjoint() {
        let mut conn = store();
        let m = BLOCK_SPAN_NS;
        let tx = conn.transaction().unwrap();
        let inserted = [
            (1, 10, 10),
            (2, 20, 2 * m),
            (3, m, m),
            (4, m + 1, m + 1),
            (6, m + 2, m + 2),
            (7, 5, 5),
        ];
        // Each chunk of one span, an LLM call of project "p" but the last,
        // lasting as many ms as its seq (an error when even).
        let spans: Vec<SpanRecord> = inserted
            .iter()
            .map(|&(seq, _, _)| SpanRecord {
                project: if seq == 7 { "q" } else { "p" }.to_owned(),
                service: "svc".to_owned(),
                kind: crate::model::SpanKind::Llm,
                model: (seq != 4).then(|| "m".to_owned()),
                start_ns: 0,
                end_ns: seq * 1_000_000,
                status: if seq % 2 == 0 { SpanStatus::Error } else { SpanStatus::Ok },
                ..SpanRecord::example()
            })
            .collect();
        record(
            &tx,
            Slices::MINUTE,
            inserted.iter().zip(&spans).map(|(&(seq, min, max), span)| (seq, min, max, vec![span])),
        )
        .unwrap();
        tx.commit().unwrap();
        // Durations summed by blocks wholly inside a window; the others read.
        let timed = |group, from, to| {
            let mut found = Vec::new();
            let read = durations(&conn, "p", None, (from, to), group, |key, d| {
                found.push((key.to_owned(), d.sketch.count(), d.sketch.sum(), d.errors));
            })
            .unwrap();
            (found, read.ranges())
        };
        let key = |n, sum, errors| ("llm".to_owned(), n, sum, errors);
        // Blocks (1, 2), (3, 4) and 6 of "p": 1 + 2, 3 + 4 and 6 ms.
        assert_eq!(timed(SpanGroup::Kind, 0, 3 * m), (vec![key(5, 16.0, 3)], vec![]));
        assert_eq!(timed(SpanGroup::Kind, 11, 3 * m), (vec![key(3, 13.0, 2)], vec![(1, 2)]));
        // Seq 4 names no model.
        let model = ("m".to_owned(), 2, 9.0, 1);
        assert_eq!(timed(SpanGroup::Model, m, 3 * m).0, vec![model]);
        // Blocks wholly inside a window are counted; the others are read.
        let counted = |from, to| {
            let found = super::kinds(&conn, "p", None, from, to).unwrap();
            (found.counted.get("llm").copied().unwrap_or(0), found.read.ranges())
        };
        assert_eq!(counted(0, 3 * m), (5, vec![]));
        assert_eq!(counted(11, 3 * m), (3, vec![(1, 2)]));
        assert_eq!(counted(m, m + 2), (2, vec![(1, 2)]));
        // A block from before blocks had counts (or sums) is read.
        conn.execute("UPDATE span_blocks SET kinds = NULL WHERE first_seq = 3", []).unwrap();
        assert_eq!(counted(0, 3 * m), (3, vec![(3, 4)]));
        conn.execute(
            "DELETE FROM span_block_kind_durations \
             WHERE block = (SELECT id FROM span_blocks WHERE first_seq = 6)",
            [],
        )
        .unwrap();
        assert_eq!(timed(SpanGroup::Kind, m, 3 * m), (vec![key(2, 7.0, 1)], vec![(1, 2), (6, 6)]));
        // Sums that cannot be read at all: the block is read instead; a
        // stored sketch that cannot be read is an error, never skipped.
        let set = |sums: Vec<u8>| {
            conn.execute(
                "UPDATE span_block_kind_durations SET sums = ?1 \
                 WHERE block = (SELECT id FROM span_blocks WHERE first_seq = 3)",
                [sums],
            )
            .unwrap()
        };
        set(vec![0xff; 3]);
        assert_eq!(timed(SpanGroup::Kind, m, 3 * m), (vec![], vec![(1, 4), (6, 6)]));
        let bad = Timed { key: "llm", errors: 0, sketch: &[0xff, 1] };
        set(postcard::to_allocvec(&vec![("p", "svc", vec![bad])]).unwrap());
        let found = super::durations(&conn, "p", None, (m, 3 * m), SpanGroup::Kind, |_, _| {});
        assert!(matches!(found, Err(StorageError::Corrupt(_))), "{found:?}");
        assert_eq!(
            super::kinds(&conn, "p", Some("other"), 0, 3 * m).unwrap().counted.get("llm"),
            None
        );
        assert_eq!(
            blocks(&conn),
            vec![(1, 2, 10, 2 * m), (3, 4, m, m + 1), (6, 6, m + 2, m + 2), (7, 7, 5, 5)]
        );
        assert_eq!(meeting(&conn, (0, m)).unwrap().ranges(), vec![(1, 2), (7, 7)]);
        assert_eq!(meeting(&conn, (m + 2, m + 3)).unwrap().ranges(), vec![(1, 2), (6, 6)]);
        assert_eq!(meeting(&conn, (0, 2 * m)).unwrap().ranges(), vec![(1, 4), (6, 7)]);
        let by_model = |conn: &Connection| -> Vec<i64> {
            let sql = "SELECT first_seq FROM span_block_model_durations d \
                       LEFT JOIN span_blocks b ON b.id = d.block ORDER BY first_seq";
            all(conn, sql, |r| r.get::<_, Option<i64>>(0).map(|f| f.unwrap_or(-1)))
        };
        assert_eq!(by_model(&conn), [1, 3, 6, 7]);
        let tx = conn.transaction().unwrap();
        delete_before(&tx, 21).unwrap();
        tx.commit().unwrap();
        assert_eq!(blocks(&conn), vec![(1, 2, 10, 2 * m), (3, 4, m, m + 1), (6, 6, m + 2, m + 2)]);
        // The durations and timings of a block go with it.
        assert_eq!(by_model(&conn), [1, 3, 6]);
        let orphans: i64 = conn
            .query_row(
                "SELECT count(*) FROM span_block_timings WHERE block NOT IN \
                 (SELECT id FROM span_blocks)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let timed: i64 =
            conn.query_row("SELECT count(*) FROM span_block_timings", [], |r| r.get(0)).unwrap();
        assert_eq!((orphans, timed), (0, 3));
    }

    #[test]
    fn a_block_of_too_many_models_keeps_no_durations_by_model_and_is_read_span_by_span() {
        let mut conn = store();
        let spans: Vec<SpanRecord> = (0..=MAX_TIMED_GROUPS)
            .map(|i| SpanRecord { model: Some(format!("m{i}")), ..SpanRecord::example() })
            .collect();
        let start = spans[0].start_ns;
        let tx = conn.transaction().unwrap();
        // One model past the bound.
        record(&tx, Slices::MINUTE, [(1, start, start, spans.iter().collect())].into_iter())
            .unwrap();
        tx.commit().unwrap();
        let rows = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
        };
        assert_eq!(rows("span_block_kind_durations"), 1);
        assert_eq!(rows("span_block_model_durations"), 0);
        let project = &spans[0].project;
        let window = (start, start + 1);
        let mut handed = 0;
        let read = durations(&conn, project, None, window, SpanGroup::Model, |_, _| handed += 1);
        assert_eq!((read.unwrap().ranges(), handed), (vec![(1, 1)], 0));
        // By kind, the block's sums stand.
        let mut handed = Vec::new();
        let read = durations(&conn, project, None, window, SpanGroup::Kind, |key, d| {
            handed.push((key.to_owned(), d.sketch.count()));
        });
        let all = spans.len() as u64;
        assert_eq!(
            (read.unwrap().ranges(), handed),
            (vec![], vec![(spans[0].kind.as_str().to_owned(), all)])
        );
    }

    #[test]
    fn a_read_of_many_models_hands_them_over_a_thousand_at_a_time() {
        let mut conn = store();
        // Six blocks of 255 models each and one they share.
        let spans: Vec<Vec<SpanRecord>> = (0..6)
            .map(|b| {
                (0..=255)
                    .map(|i| {
                        let model = if i == 0 { "shared".to_owned() } else { format!("m{b}.{i}") };
                        SpanRecord { model: Some(model), ..SpanRecord::example() }
                    })
                    .collect()
            })
            .collect();
        let start = spans[0][0].start_ns;
        let tx = conn.transaction().unwrap();
        // Blocks two seqs apart: one each.
        let inserted = spans
            .iter()
            .enumerate()
            .map(|(b, spans)| (2 * b as i64 + 1, start, start, spans.iter().collect::<Vec<_>>()));
        record(&tx, Slices::MINUTE, inserted).unwrap();
        tx.commit().unwrap();
        let mut handed: HashMap<String, (usize, u64)> = HashMap::new();
        let project = &spans[0][0].project;
        let window = (start, start + 1);
        let read = durations(&conn, project, None, window, SpanGroup::Model, |key, d| {
            let seen = handed.entry(key.to_owned()).or_default();
            *seen = (seen.0 + 1, seen.1 + d.sketch.count());
        })
        .unwrap();
        assert!(read.ranges().is_empty());
        // Every model, each span once; the shared one handed over again
        // after the first thousand.
        assert_eq!(handed.len(), 1 + 6 * 255);
        assert_eq!(handed["shared"], (2, 6));
        assert!(handed.iter().all(|(key, n)| key == "shared" || *n == (1, 1)));
    }

    #[test]
    fn durations_are_read_block_by_block_or_in_one_pass_and_a_block_without_them_is_read() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let m = BLOCK_SPAN_NS;
        // Each append a span in each of five far-apart hours: its blocks'
        // ids interleave with the other appends'.
        for append in 0..20_i64 {
            let spans: Vec<SpanRecord> = (1..=5_i64)
                .map(|hour| {
                    let start = hour * 60 * m + append * m;
                    SpanRecord {
                        end_ns: start + (append + 1) * 1_000_000,
                        ..span(&format!("{append}-{hour}"), "a", start)
                    }
                })
                .collect();
            telemetry::append_as_committer(&mut conn, &spans, &packing);
        }
        let project = SpanRecord::example().project;
        let timed = |conn: &Connection, window| {
            let mut found = Vec::new();
            let read = durations(conn, &project, None, window, SpanGroup::Kind, |key, d| {
                found.push((key.to_owned(), d.sketch.count(), d.sketch.sum()));
            })
            .unwrap();
            (found, read.ranges())
        };
        let kind = SpanRecord::example().kind.as_str().to_owned();
        // The first hour's 20 blocks, a fifth of the ids they lie between:
        // read one by one; every hour's, in one pass.
        assert_eq!(timed(&conn, (60 * m, 120 * m)), (vec![(kind.clone(), 20, 210.0)], vec![]));
        assert_eq!(timed(&conn, (0, 360 * m)), (vec![(kind.clone(), 100, 1050.0)], vec![]));
        // A block without durations is read span by span, either way.
        let seq: i64 = conn
            .query_row(
                "DELETE FROM span_block_kind_durations WHERE block = \
                 (SELECT id FROM span_blocks WHERE min_start = ?1) RETURNING \
                 (SELECT first_seq FROM span_blocks WHERE min_start = ?1)",
                [60 * m + 4 * m],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            timed(&conn, (60 * m, 120 * m)),
            (vec![(kind.clone(), 19, 205.0)], vec![(seq, seq)])
        );
        assert_eq!(timed(&conn, (0, 360 * m)), (vec![(kind, 99, 1045.0)], vec![(seq, seq)]));
    }

    #[test]
    fn a_schema_16_store_gets_its_blocks_durations_moved_into_their_own_tables() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let m = BLOCK_SPAN_NS;
        for append in 0..4_i64 {
            let spans: Vec<SpanRecord> = (0..40_i64)
                .map(|i| SpanRecord {
                    kind: [SpanKind::Llm, SpanKind::Tool, SpanKind::Chain][i as usize % 3],
                    model: (i % 3 == 0).then(|| format!("model-{}", i % 2)),
                    end_ns: append * m + i * m / 10 + (i + 1) * 1_000_000,
                    status: if i % 7 == 0 { SpanStatus::Error } else { SpanStatus::Ok },
                    ..span(&format!("{append}-{}", i / 4), &format!("{i}"), append * m + i * m / 10)
                })
                .collect();
            telemetry::append_as_committer(&mut conn, &spans, &packing);
        }
        let stored = |conn: &Connection, table: &str| -> Vec<(i64, Vec<u8>)> {
            let sql = format!("SELECT block, sums FROM {table} ORDER BY block");
            all(conn, &sql, |r| Ok((r.get(0)?, r.get(1)?)))
        };
        let project = SpanRecord::example().project;
        let window = (0, 10 * m);
        let timed = |conn: &Connection, group| {
            let mut found = Vec::new();
            let read = durations(conn, &project, None, window, group, |key, d| {
                found.push((key.to_owned(), d.sketch.count(), d.errors));
            })
            .unwrap();
            (found, read.ranges())
        };
        let tables = ["span_block_kind_durations", "span_block_model_durations"];
        let before = tables.map(|table| stored(&conn, table));
        let sums_before = [SpanGroup::Kind, SpanGroup::Model].map(|group| timed(&conn, group));
        assert!(before.iter().all(|rows| rows.len() > 3), "{before:?}");
        assert!(sums_before.iter().all(|(found, read)| !found.is_empty() && read.is_empty()));
        // As schema 16 kept them: in the blocks' rows.
        conn.execute_batch(
            "ALTER TABLE span_blocks ADD COLUMN kind_durations BLOB;
             ALTER TABLE span_blocks ADD COLUMN model_durations BLOB;
             UPDATE span_blocks SET
               kind_durations = (SELECT sums FROM span_block_kind_durations WHERE block = id),
               model_durations = (SELECT sums FROM span_block_model_durations WHERE block = id);
             DROP TABLE span_block_kind_durations; DROP TABLE span_block_model_durations;
             PRAGMA user_version = 16;",
        )
        .unwrap();
        schema::create_or_check(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
        let columns: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('span_blocks') \
                 WHERE name IN ('kind_durations', 'model_durations')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(columns, 0);
        // The table made anew, its index with it.
        let sql = "SELECT name, tbl_name FROM sqlite_master WHERE name LIKE 'span_blocks%'";
        let names: Vec<(String, String)> = all(&conn, sql, |r| Ok((r.get(0)?, r.get(1)?)));
        let expected = [("span_blocks", "span_blocks"), ("span_blocks_max_start", "span_blocks")];
        assert_eq!(names, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
        assert_eq!(tables.map(|table| stored(&conn, table)), before);
        // The blocks keep their ids, so their timings still name them.
        let with_timings: i64 = conn
            .query_row(
                "SELECT count(*) FROM span_block_timings t JOIN span_blocks b ON b.id = t.block",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(with_timings as usize, before[0].len());
        assert_eq!(
            [SpanGroup::Kind, SpanGroup::Model].map(|group| timed(&conn, group)),
            sums_before
        );
    }

    #[test]
    fn a_schema_6_store_gets_its_spans_in_chunks_with_blocks() {
        let conn = store();
        conn.execute_batch(&format!(
            "DROP TABLE span_chunks; DROP TABLE span_blocks; {}
             CREATE INDEX spans_start ON spans (project, start_ns);
             PRAGMA user_version = 6;",
            schema::SPANS_V7
        ))
        .unwrap();
        let mut sent = Vec::new();
        for seq in 1..=3_000_i64 {
            let trace = format!("{:032x}", seq % 700);
            let s = span(&trace, &format!("{seq:016x}"), 90_000 * m_ns() - seq * m_ns() / 50);
            conn.execute(
                "INSERT INTO spans (seq, project, trace_id, span_id, start_ns, end_ns, name, \
                 service, kind, error, record) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'n', 's', 'chain', 0, ?7)",
                params![
                    seq,
                    s.project,
                    s.trace_id,
                    s.span_id,
                    s.start_ns,
                    s.end_ns,
                    telemetry::to_json(&s)
                ],
            )
            .unwrap();
            sent.push(s);
        }
        // Such a store had a row per trace too.
        conn.execute_batch(
            "INSERT INTO traces (project, trace_id, has_root, root_name, root_service, start_ns, \
             end_ns, span_count, error_count, llm_calls, input_tokens, output_tokens, \
             cache_read_tokens, cost_usd) SELECT project, trace_id, 0, 'n', 's', min(start_ns), \
             max(end_ns), count(*), 0, 0, 0, 0, 0, 0 FROM spans GROUP BY project, trace_id",
        )
        .unwrap();
        schema::create_or_check(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
        let gone: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('spans', 'spans_start')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        for trace in ["00000000000000000000000000000000", &format!("{:032x}", 699)] {
            let whole = crate::storage::TraceBounds { max_spans: usize::MAX, max_logs: 0 };
            let mut back =
                telemetry::trace_of(&conn, "default", trace, whole, &SpanPacking::default()).spans;
            let mut expected: Vec<SpanRecord> =
                sent.iter().filter(|s| s.trace_id == trace).cloned().collect();
            expected.sort_by_key(|s| s.start_ns);
            back.sort_by_key(|s| s.start_ns);
            assert_eq!(back, expected);
        }
        // Every span is found through the blocks by its start.
        let (from, to) = (sent[2999].start_ns, sent[0].start_ns + 1);
        let ranges = meeting(&conn, (from, to)).unwrap().ranges();
        let chunks: i64 =
            conn.query_row("SELECT count(*) FROM span_chunks", [], |r| r.get(0)).unwrap();
        let covered: i64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!((chunks, covered), (700, 700));
    }

    #[test]
    fn a_schema_12_store_finds_its_chunks_by_trace_row_after_the_move() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        let t1 = "0af7651916cd43dd8448eb211c80319c";
        let t2 = "4bf92f3577b34da6a3ce929d0e0e4736";
        telemetry::append_as_committer(
            &mut conn,
            &[span(t1, "a", 10), span(t2, "b", 20), span(t1, "c", 30)],
            &packing,
        );
        // As schema 12 kept them: chunks found by (project, trace id).
        conn.execute_batch(
            "DROP INDEX span_chunks_by_trace; ALTER TABLE span_chunks DROP COLUMN trace;
             CREATE INDEX span_chunks_trace ON span_chunks (project, trace_id, spans);
             PRAGMA user_version = 12;",
        )
        .unwrap();
        schema::create_or_check(&conn).unwrap();
        let sql = "SELECT name FROM sqlite_master WHERE name LIKE 'span_chunks_%'";
        let names: Vec<String> = all(&conn, sql, |r| r.get(0));
        assert_eq!(names, ["span_chunks_by_trace"]);
        // A span sent again is known; a new one joins its trace's row.
        telemetry::append_as_committer(
            &mut conn,
            &[span(t1, "a", 10), span(t1, "d", 40)],
            &packing,
        );
        let whole = crate::storage::TraceBounds { max_spans: usize::MAX, max_logs: 0 };
        let ids = |trace: &str| {
            let stored = telemetry::trace_of(&conn, "default", trace, whole, &packing);
            let mut ids: Vec<String> = stored.spans.into_iter().map(|s| s.span_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(t1), ["a", "c", "d"]);
        assert_eq!(ids(t2), ["b"]);
        let sql = "SELECT trace_id, span_count FROM traces ORDER BY id";
        let counts: Vec<(String, i64)> = all(&conn, sql, |r| Ok((r.get(0)?, r.get(1)?)));
        assert_eq!(counts, [(t1.to_owned(), 3), (t2.to_owned(), 1)]);
    }

    #[test]
    fn a_trace_row_number_is_not_given_again_while_a_chunk_names_it() {
        let mut conn = store();
        let packing = Arc::new(SpanPacking::default());
        telemetry::append_as_committer(&mut conn, &[span("t1", "a", 10)], &packing);
        // Retention can take a trace's row before its chunk's block.
        conn.execute("DELETE FROM traces", []).unwrap();
        telemetry::append_as_committer(&mut conn, &[span("t2", "b", 20)], &packing);
        let whole = crate::storage::TraceBounds { max_spans: usize::MAX, max_logs: 0 };
        let stored = telemetry::trace_of(&conn, "default", "t2", whole, &packing);
        let ids: Vec<String> = stored.spans.into_iter().map(|s| s.span_id).collect();
        assert_eq!(ids, ["b"]);
    }

    fn m_ns() -> i64 {
        BLOCK_SPAN_NS
    }
}
