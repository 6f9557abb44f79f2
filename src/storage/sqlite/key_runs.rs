//! An index of stored keys in sorted runs: each key as a 40-bit hash with
//! the number of the row holding it (a call chunk's seq for a call's id or
//! span key; a trace's row for its trace id). A hash only names
//! candidates: the caller reads each candidate's stored key back and
//! compares, so the index is exact however hashes collide, and a candidate
//! whose row retention deleted is no longer one. Keys stored since the last
//! run are held in memory (`recent`), rebuilt from the rows themselves
//! after a restart or crash (the rows are their log); past `RUN_KEYS` they
//! are written as one run, sorted by hash in blocks, with a binary fuse
//! filter telling which runs may hold a hash. A blocked Bloom filter over
//! every run's hashes answers most lookups of a new key with one memory
//! access, so a random id costs no index write on its commit and no read at
//! all. When the Bloom filter fills, a bigger one is built from the runs on
//! a thread of its own while the full one goes on answering (a little less
//! sharply) and taking the new runs' hashes: commits never wait for the
//! rebuild. A clean stop saves the Bloom filter beside the database, and
//! the next open takes it back (once: the file is deleted as it is read);
//! after a crash it is built on that thread while lookups ask each run's
//! filter. Calls and traces each have an index of their own (`KeySpace`).

use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use fastbloom::BloomFilter;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rustc_hash::FxHashMap;
use serde::Serialize;
use xorf::{BinaryFuse16, Filter};

use crate::storage::StorageError;
use tracing::{info, warn};

/// Keys held in memory before they are written as a run, unless the store
/// is told otherwise (`sqlite.key_run_keys`).
pub const RUN_KEYS: usize = 1 << 20;
/// Entries per block of a run: a lookup reads one block, decoding its
/// entries up to the hash it looks for. With a thousand, that decoding was
/// a third of what a re-sent id cost, and the 6 KB rows filled their pages
/// three quarters; blocks of 128 (about 750 bytes) halve what a re-sent id
/// costs and take less room, for an index entry and 8 bytes of memory per
/// 128 keys.
const BLOCK_KEYS: usize = 128;
/// The Bloom filter's false positive rate while it holds no more keys than
/// it was sized for.
const SEEN_FALSE_POSITIVES: f64 = 0.001;
/// The least number of keys the Bloom filter is sized for.
const MIN_SEEN_KEYS: usize = 1 << 20;

/// Where an index keeps its runs, and what it is called in messages.
pub struct KeySpace {
    /// What the keys are of: "call", "trace".
    pub what: &'static str,
    /// The tables of its runs and their blocks.
    runs: &'static str,
    blocks: &'static str,
    /// The meta key of the row through which every key is in a run.
    through: &'static str,
    /// The extension of the file a clean stop saves its Bloom filter in.
    saved: &'static str,
}

/// The idempotency index of stored calls: ids and span keys, by seq.
pub const CALLS: KeySpace = KeySpace {
    what: "call",
    runs: "call_key_runs",
    blocks: "call_key_blocks",
    through: "call_keys_through",
    saved: "keyfilter",
};

/// The traces stored, by (project, trace id), with their rows.
pub const TRACES: KeySpace = KeySpace {
    what: "trace",
    runs: "trace_key_runs",
    blocks: "trace_key_blocks",
    through: "trace_keys_through",
    saved: "tracefilter",
};

/// The hash a key of `project` is indexed under, the key given in `parts`
/// (as `call_chunks` forms it: `i` and the id, or `s`, the trace id and the
/// span id): the top 40 bits of the xxh3 of the project and the parts (a
/// specified algorithm, so stored hashes stay valid across versions). 40
/// bits make sorted hashes cheap to store (a run of a million differs by
/// about 2^20 from one to the next) while two keys of a hundred million
/// share one about once in ten thousand lookups: a candidate more to read
/// back, never a wrong answer.
pub fn key_hash(project: &str, parts: &[&str]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(project.as_bytes());
    // Never in UTF-8 text: `ab` + `c` and `a` + `bc` hash apart.
    hasher.update(&[0xff]);
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.digest() >> 24
}

/// Hands the filters the key hashes as they are: they are hashes already.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prehashed;

pub struct PassThrough(u64);

impl BuildHasher for Prehashed {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        // Spread the 40 bits over 64: the Bloom filter picks its block by
        // the top bits.
        self.0 = value.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Seen = BloomFilter<Prehashed>;

fn seen_for(keys: usize) -> Seen {
    BloomFilter::with_false_pos(SEEN_FALSE_POSITIVES)
        .hasher(Prehashed)
        .expected_items(keys.max(MIN_SEEN_KEYS))
}

/// One written run: which hashes it may hold, and the first hash of each of
/// its blocks (sorted), to find the one block a hash can be in.
struct Run {
    id: i64,
    max_time: i64,
    filter: BinaryFuse16,
    blocks: Vec<u64>,
}

impl Run {
    /// The block that holds `hash` if any run block does.
    fn block_of(&self, hash: u64) -> Option<u64> {
        let after = self.blocks.partition_point(|&first| first <= hash);
        after.checked_sub(1).map(|i| self.blocks[i])
    }
}

/// A block of a run as stored: its hashes ascending, as differences from
/// the one before (the first from the block's first hash), each with its
/// call's seq as the difference from the block's least.
#[derive(Serialize)]
struct Block {
    least_seq: i64,
    entries: Vec<(u64, u64)>,
}

/// The in-memory part of the index, with what it knows of the written runs.
pub struct KeyIndex {
    space: &'static KeySpace,
    /// Keys of calls stored since the last run: hash → the first seq.
    recent: FxHashMap<u64, i64>,
    /// Further seqs of a recent hash: keys whose hashes collide, or a key
    /// stored again after its call was deleted (rare: a map apart, so that
    /// the common key costs no allocation of its own).
    recent_more: FxHashMap<u64, Vec<i64>>,
    /// The latest time of a call in `recent`.
    recent_max_time: i64,
    /// Recent keys past which they are written as a run.
    run_keys: usize,
    runs: Vec<Run>,
    /// Every hash in a run (and a few deleted with their runs: rebuilt when
    /// it holds twice what it was sized for).
    seen: Seen,
    /// Whether `seen` holds every run's hashes: not while the first build
    /// after an open without a saved filter runs, when lookups ask every
    /// run's own filter instead.
    seen_complete: bool,
    seen_capacity: usize,
    seen_keys: usize,
    /// The least capacity of a Bloom filter (`MIN_SEEN_KEYS`; tests lower it).
    min_seen: usize,
    /// A bigger Bloom filter being built on its own thread.
    rebuilding: Option<Rebuild>,
}

/// A Bloom filter being built from the runs there were when it started,
/// and the hashes of the runs written since, to add once it is done.
struct Rebuild {
    /// (In a mutex only so that the index can be shared for lookups.)
    built: std::sync::Mutex<mpsc::Receiver<Result<(Seen, usize), String>>>,
    capacity: usize,
    since: Vec<u64>,
}

impl KeyIndex {
    /// Loads the runs of `conn`; the keys of the calls stored after them
    /// (after `through(conn)`) are to be `add`ed, as `call_chunks` reads
    /// them back. A run is written past `run_keys` recent keys. The Bloom
    /// filter is the one saved at the last clean stop if it is there and
    /// whole, else built on a thread of its own.
    pub fn load(
        conn: &Connection,
        space: &'static KeySpace,
        run_keys: usize,
    ) -> Result<KeyIndex, StorageError> {
        let mut keys = KeyIndex {
            space,
            recent: FxHashMap::default(),
            recent_more: FxHashMap::default(),
            recent_max_time: i64::MIN,
            run_keys,
            runs: Vec::new(),
            seen: seen_for(0),
            seen_complete: true,
            seen_capacity: MIN_SEEN_KEYS,
            seen_keys: 0,
            min_seen: MIN_SEEN_KEYS,
            rebuilding: None,
        };
        let mut stmt =
            conn.prepare(&format!("SELECT id, max_time, filter FROM {} ORDER BY id", space.runs))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (id, max_time, filter): (i64, i64, Vec<u8>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            let filter = decode_filter(&filter).ok_or_else(|| {
                StorageError::Corrupt(format!("{} key run {id}: filter", space.what))
            })?;
            keys.runs.push(Run { id, max_time, filter, blocks: Vec::new() });
        }
        drop(rows);
        // Each block's first hash, from the blocks' keys alone.
        let mut stmt =
            conn.prepare(&format!("SELECT run, first_hash FROM {} ORDER BY run", space.blocks))?;
        let mut rows = stmt.query([])?;
        let mut at = 0;
        while let Some(row) = rows.next()? {
            let (run, first): (i64, i64) = (row.get(0)?, row.get(1)?);
            while at < keys.runs.len() && keys.runs[at].id < run {
                at += 1;
            }
            match keys.runs.get_mut(at) {
                Some(found) if found.id == run => found.blocks.push(first as u64),
                _ => {
                    let what = space.what;
                    return Err(StorageError::Corrupt(format!("{what} key block of no run {run}")));
                }
            }
        }
        for run in &mut keys.runs {
            // Stored as i64: negative first hashes sort before the others.
            run.blocks.sort_unstable();
        }
        if keys.runs.is_empty() {
            // A filter saved when there were runs (retention has dropped
            // them all since) is of no use: not left lying around.
            if let Some(path) = saved_path(conn, space) {
                let _ = std::fs::remove_file(path);
            }
            return Ok(keys);
        }
        let identity = SavedIdentity::of(conn, space)?;
        match saved_path(conn, space).map(|path| take_saved(&path, &identity)) {
            Some(Ok(Some((seen, capacity, seen_keys)))) => {
                let what = space.what;
                info!(what, keys = seen_keys, "key Bloom filter taken back from the last stop");
                (keys.seen, keys.seen_capacity, keys.seen_keys) = (seen, capacity, seen_keys);
            }
            found => {
                if let Some(Err(err)) = found {
                    let what = space.what;
                    warn!(what, %err, "the saved key Bloom filter could not be read; building it");
                }
                keys.seen_complete = false;
                keys.start_rebuild(conn, identity.keys as usize)?;
            }
        }
        Ok(keys)
    }

    /// Saves the Bloom filter beside the database for the next open to take
    /// back (a clean stop, once nothing writes); nothing for a store in
    /// memory or while the filter is not yet whole.
    pub fn save(&self, conn: &Connection) -> Result<(), StorageError> {
        let Some(path) = saved_path(conn, self.space) else { return Ok(()) };
        if !self.seen_complete || self.runs.is_empty() {
            return Ok(());
        }
        let identity = SavedIdentity::of(conn, self.space)?;
        let io = |source| StorageError::Io { path: path.display().to_string(), source };
        let partial = path.with_extension(format!("{}-partial", self.space.saved));
        write_saved(&partial, &identity, self).map_err(io)?;
        std::fs::rename(&partial, &path).map_err(io)?;
        let what = self.space.what;
        info!(what, keys = self.seen_keys, path = %path.display(), "key Bloom filter saved");
        Ok(())
    }

    /// The row through which every key of `space` is in a run.
    pub fn through(conn: &Connection, space: &KeySpace) -> Result<i64, rusqlite::Error> {
        let value: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [space.through], |row| row.get(0))
            .optional()?;
        Ok(value.unwrap_or(0))
    }

    /// Rebuilds the Bloom filter from the written runs here, sized for
    /// twice what they hold (a store in memory, which no other connection
    /// can read).
    fn reseen(&mut self, conn: &Connection) -> Result<(), StorageError> {
        let total = self.runs_keys(conn)?;
        self.seen_capacity = (2 * total).max(self.min_seen);
        let runs: Vec<i64> = self.runs.iter().map(|run| run.id).collect();
        (self.seen, self.seen_keys) = fill_seen(conn, self.space, &runs, self.seen_capacity)?;
        self.seen_complete = true;
        Ok(())
    }

    /// Keys held in memory, not yet in a run.
    #[cfg(test)]
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Whether the recent keys are a run's worth.
    pub fn run_full(&self) -> bool {
        self.recent.len() >= self.run_keys
    }

    /// The seqs of the stored calls whose keys hash to `hash`: those of the
    /// recent calls, then those in the runs that may hold it (newest first).
    pub fn candidates(&self, conn: &Connection, hash: u64) -> Result<Vec<i64>, StorageError> {
        let mut out: Vec<i64> = self.recent.get(&hash).copied().into_iter().collect();
        if let Some(more) = self.recent_more.get(&hash) {
            out.extend(more);
        }
        if self.seen_complete && !self.seen.contains(&hash) {
            return Ok(out);
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT body FROM {} WHERE run = ?1 AND first_hash = ?2",
            self.space.blocks
        ))?;
        for run in self.runs.iter().rev() {
            if !run.filter.contains(&hash) {
                continue;
            }
            let Some(first) = run.block_of(hash) else { continue };
            let mut rows = stmt.query(params![run.id, first as i64])?;
            let Some(row) = rows.next()? else { continue };
            let body = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            // Hashes ascend: read up to the first past this one.
            each_entry(self.space, run.id, first, body, |found, seq| {
                if found == hash {
                    out.push(seq);
                }
                found <= hash
            })?;
        }
        Ok(out)
    }

    /// Takes the key `hash` of the call `seq` at `time`, once its commit is
    /// done.
    pub fn add(&mut self, hash: u64, seq: i64, time: i64) {
        if self.recent.capacity() == 0 {
            self.recent.reserve(self.run_keys.min(1 << 24));
        }
        match self.recent.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            Entry::Occupied(first) if *first.get() != seq => {
                let more = self.recent_more.entry(hash).or_default();
                if !more.contains(&seq) {
                    more.push(seq);
                }
            }
            Entry::Occupied(_) => {}
        }
        self.recent_max_time = self.recent_max_time.max(time);
    }

    /// Writes the recent keys as a run, as holding every call through
    /// `through`, in `tx`, to be committed by the caller before `written` is
    /// called; nothing when there are none.
    pub fn write_run(
        &self,
        tx: &Transaction<'_>,
        through: i64,
    ) -> Result<Option<PendingRun>, StorageError> {
        if self.recent.is_empty() {
            return Ok(None);
        }
        let mut entries: Vec<(u64, i64)> = self.recent.iter().map(|(h, seq)| (*h, *seq)).collect();
        entries.extend(
            self.recent_more
                .iter()
                .flat_map(|(hash, seqs)| seqs.iter().map(move |seq| (*hash, *seq))),
        );
        entries.sort_unstable();
        let mut hashes: Vec<u64> = entries.iter().map(|(hash, _)| *hash).collect();
        hashes.dedup();
        let filter = BinaryFuse16::try_from(&hashes)
            .map_err(|e| StorageError::Corrupt(format!("{} key filter: {e}", self.space.what)))?;
        let filter_bytes = encode_filter(&filter);
        tx.execute(
            &format!(
                "INSERT INTO {} (max_time, keys, filter) VALUES (?1, ?2, ?3)",
                self.space.runs
            ),
            params![self.recent_max_time, entries.len() as i64, filter_bytes],
        )?;
        let id = tx.last_insert_rowid();
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO {} (run, first_hash, body) VALUES (?1, ?2, ?3)",
            self.space.blocks
        ))?;
        let mut blocks = Vec::new();
        let mut rest = &entries[..];
        while !rest.is_empty() {
            // A block never splits the entries of one hash.
            let mut end = rest.len().min(BLOCK_KEYS);
            while end < rest.len() && rest[end].0 == rest[end - 1].0 {
                end += 1;
            }
            let (block, after) = rest.split_at(end);
            let first = block[0].0;
            insert.execute(params![id, first as i64, encode_block(first, block)])?;
            blocks.push(first);
            rest = after;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![self.space.through, through],
        )?;
        let run = Run { id, max_time: self.recent_max_time, filter, blocks };
        Ok(Some(PendingRun { run, hashes }))
    }

    /// A run `write_run` made is committed: its keys leave memory. Starts
    /// a bigger Bloom filter's build when this one is full.
    pub fn written(&mut self, conn: &Connection, pending: PendingRun) -> Result<(), StorageError> {
        self.recent.clear();
        self.recent_more.clear();
        self.recent_max_time = i64::MIN;
        self.runs.push(pending.run);
        for hash in &pending.hashes {
            self.seen.insert(hash);
        }
        self.seen_keys += pending.hashes.len();
        if let Some(rebuild) = &mut self.rebuilding {
            rebuild.since.extend_from_slice(&pending.hashes);
        } else if !self.seen_complete || self.seen_keys > self.seen_capacity {
            // Full, or a first build failed: the runs hold every key.
            let keys = self.runs_keys(conn)?;
            self.start_rebuild(conn, keys)?;
        }
        Ok(())
    }

    /// Keys in the written runs.
    fn runs_keys(&self, conn: &Connection) -> Result<usize, StorageError> {
        let sql = format!("SELECT coalesce(sum(keys), 0) FROM {}", self.space.runs);
        let total: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
        Ok(total as usize)
    }

    /// Builds a Bloom filter for twice the `keys` of every run on a thread
    /// of its own, reading the runs through a connection of its own; a
    /// store in memory (tests) has none to open and builds it here.
    fn start_rebuild(&mut self, conn: &Connection, keys: usize) -> Result<(), StorageError> {
        let Some(path) = store_path(conn) else { return self.reseen(conn) };
        let capacity = (2 * keys).max(self.min_seen);
        let runs: Vec<i64> = self.runs.iter().map(|run| run.id).collect();
        let (done, built) = mpsc::sync_channel(1);
        let what = self.space.what;
        let space = self.space;
        info!(what, keys, capacity, "building the key Bloom filter");
        std::thread::Builder::new()
            .name("tally-key-filter".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let result = build_seen(&path, space, &runs, capacity).map_err(|e| e.to_string());
                if let Ok((_, keys)) = &result {
                    let seconds = started.elapsed().as_secs_f64();
                    info!(
                        what,
                        keys, seconds, "key Bloom filter built; taken in at the next write"
                    );
                }
                let _ = done.send(result);
            })
            .map_err(|source| StorageError::Io { path: "key filter thread".into(), source })?;
        let built = std::sync::Mutex::new(built);
        self.rebuilding = Some(Rebuild { built, capacity, since: Vec::new() });
        Ok(())
    }

    /// Takes a finished Bloom filter build in, with the hashes of the runs
    /// written since it began.
    pub fn settle_rebuild(&mut self) {
        let Some(rebuild) = &self.rebuilding else { return };
        let received = rebuild.built.lock().unwrap_or_else(|p| p.into_inner()).try_recv();
        let result = match received {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err("the build's thread ended".into()),
        };
        let Rebuild { capacity, since, .. } = self.rebuilding.take().expect("checked above");
        match result {
            Ok((mut seen, keys)) => {
                for hash in &since {
                    seen.insert(hash);
                }
                (self.seen, self.seen_capacity) = (seen, capacity);
                self.seen_keys = keys + since.len();
                self.seen_complete = true;
                let what = self.space.what;
                info!(what, keys = self.seen_keys, capacity, "key Bloom filter rebuilt");
            }
            // The full filter answers on; the next run tries again.
            Err(err) => warn!(what = self.space.what, %err, "key Bloom filter rebuild failed"),
        }
    }

    /// Deletes the runs `gone` picks in `tx`: it is asked of each run in
    /// order with the `max_time` of the run before (none for the first) and
    /// its own (for calls, the latest time of one; for traces, the highest
    /// row). Returns them, for `forget` once `tx` commits. The Bloom filter
    /// keeps their hashes until it is rebuilt.
    pub fn drop_runs(
        &self,
        tx: &Transaction<'_>,
        mut gone: impl FnMut(Option<i64>, i64) -> Result<bool, StorageError>,
    ) -> Result<Vec<i64>, StorageError> {
        let mut old = Vec::new();
        let mut before = None;
        for run in &self.runs {
            if gone(before, run.max_time)? {
                old.push(run.id);
            }
            before = Some(run.max_time);
        }
        for id in &old {
            tx.execute(&format!("DELETE FROM {} WHERE run = ?1", self.space.blocks), [id])?;
            tx.execute(&format!("DELETE FROM {} WHERE id = ?1", self.space.runs), [id])?;
        }
        Ok(old)
    }

    /// Forgets runs `drop_runs` deleted, once that is committed.
    pub fn forget(&mut self, dropped: &[i64]) {
        self.runs.retain(|run| !dropped.contains(&run.id));
    }
}

/// A Bloom filter of `capacity` over every hash of `runs`, read through a
/// connection of its own to the store at `path`; and how many it holds.
fn build_seen(
    path: &Path,
    space: &KeySpace,
    runs: &[i64],
    capacity: usize,
) -> Result<(Seen, usize), StorageError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    fill_seen(&conn, space, runs, capacity)
}

/// A Bloom filter of `capacity` over every hash of `runs` in `conn`; and
/// how many it holds.
fn fill_seen(
    conn: &Connection,
    space: &KeySpace,
    runs: &[i64],
    capacity: usize,
) -> Result<(Seen, usize), StorageError> {
    let mut seen = seen_for(capacity);
    let mut keys = 0;
    let mut stmt = conn
        .prepare_cached(&format!("SELECT first_hash, body FROM {} WHERE run = ?1", space.blocks))?;
    for &run in runs {
        let mut rows = stmt.query([run])?;
        while let Some(row) = rows.next()? {
            let first = row.get::<_, i64>(0)? as u64;
            let body = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            each_entry(space, run, first, body, |hash, _| {
                seen.insert(&hash);
                keys += 1;
                true
            })?;
        }
    }
    Ok((seen, keys))
}

/// The file of a store's database: none in memory.
fn store_path(conn: &Connection) -> Option<PathBuf> {
    conn.path().filter(|path| !path.is_empty()).map(PathBuf::from)
}

/// Where a clean stop saves the Bloom filter: beside the database.
fn saved_path(conn: &Connection, space: &KeySpace) -> Option<PathBuf> {
    store_path(conn).map(|path| path.with_extension(space.saved))
}

/// The first bytes of a saved Bloom filter.
const SAVED_MAGIC: &[u8; 8] = b"TALLYKF1";

/// The runs a saved Bloom filter was made from: it is taken back only by a
/// store holding the same (a copy of the database from another time, or
/// one written after the save, does not match).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SavedIdentity {
    runs: i64,
    last_run: i64,
    keys: i64,
    through: i64,
}

impl SavedIdentity {
    fn of(conn: &Connection, space: &KeySpace) -> Result<Self, StorageError> {
        let (runs, last_run, keys) = conn.query_row(
            &format!(
                "SELECT count(*), coalesce(max(id), 0), coalesce(sum(keys), 0) FROM {}",
                space.runs
            ),
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        Ok(SavedIdentity { runs, last_run, keys, through: KeyIndex::through(conn, space)? })
    }

    fn words(&self) -> [i64; 4] {
        [self.runs, self.last_run, self.keys, self.through]
    }
}

/// Writes the Bloom filter of `keys` to `path`: the magic, the identity,
/// capacity, keys held, hash count and word count, the words, then their
/// xxh3 (all little-endian).
fn write_saved(path: &Path, identity: &SavedIdentity, keys: &KeyIndex) -> std::io::Result<()> {
    let words = keys.seen.as_slice();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(SAVED_MAGIC)?;
    let header = [
        keys.seen_capacity as u64,
        keys.seen_keys as u64,
        u64::from(keys.seen.num_hashes()),
        words.len() as u64,
    ];
    for word in identity.words().map(|w| w as u64).into_iter().chain(header) {
        out.write_all(&word.to_le_bytes())?;
    }
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let mut bytes = Vec::with_capacity(1 << 19);
    for chunk in words.chunks(1 << 16) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|w| w.to_le_bytes()));
        checksum.update(&bytes);
        out.write_all(&bytes)?;
    }
    out.write_all(&checksum.digest().to_le_bytes())?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The Bloom filter saved at `path` (its capacity and keys held) when it
/// is there, whole and of the runs `identity` names; the file is deleted
/// either way, so that no later open takes back a filter older than the
/// runs written after this one.
fn take_saved(
    path: &Path,
    identity: &SavedIdentity,
) -> std::io::Result<Option<(Seen, usize, usize)>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    std::fs::remove_file(path)?;
    let file_bytes = file.metadata()?.len();
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut word = || -> std::io::Result<u64> {
        let mut bytes = [0u8; 8];
        input.read_exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    };
    let magic = word()?.to_le_bytes();
    let saved = [word()?, word()?, word()?, word()?].map(|w| w as i64);
    let [capacity, seen_keys, hashes, count] = [word()?, word()?, word()?, word()?];
    if &magic != SAVED_MAGIC || saved != identity.words() {
        return Ok(None);
    }
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    // The magic and eight header words, the words, the checksum: a count
    // the file's size does not bear out is never allocated.
    if count == 0 || file_bytes != 8 * (count + 10) || hashes == 0 || hashes > 64 {
        return Err(bad("bad header"));
    }
    let mut words = Vec::with_capacity(count as usize);
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let mut bytes = vec![0u8; 1 << 19];
    let mut left = count as usize;
    while left > 0 {
        let take = left.min(bytes.len() / 8);
        let part = &mut bytes[..take * 8];
        input.read_exact(part)?;
        checksum.update(part);
        words.extend(
            part.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))),
        );
        left -= take;
    }
    let mut trailer = [0u8; 8];
    input.read_exact(&mut trailer)?;
    if checksum.digest() != u64::from_le_bytes(trailer) {
        return Err(bad("checksum mismatch"));
    }
    let seen = BloomFilter::from_vec(words).hasher(Prehashed).hashes(hashes as u32);
    Ok(Some((seen, capacity as usize, seen_keys as usize)))
}

/// A run written in a transaction not yet committed.
pub struct PendingRun {
    run: Run,
    hashes: Vec<u64>,
}

/// A filter as stored: its descriptor, then its fingerprints, little-endian.
fn encode_filter(filter: &BinaryFuse16) -> Vec<u8> {
    let d = &filter.descriptor;
    let mut out = Vec::with_capacity(20 + 2 * filter.fingerprints.len());
    out.extend(d.seed.to_le_bytes());
    for n in [d.segment_length, d.segment_length_mask, d.segment_count_length] {
        out.extend(n.to_le_bytes());
    }
    for f in &filter.fingerprints {
        out.extend(f.to_le_bytes());
    }
    out
}

fn decode_filter(bytes: &[u8]) -> Option<BinaryFuse16> {
    let (seed, rest) = bytes.split_first_chunk::<8>()?;
    let (lengths, fingerprints) = rest.split_first_chunk::<12>()?;
    let word =
        |i: usize| u32::from_le_bytes(lengths[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if fingerprints.len() % 2 != 0 {
        return None;
    }
    Some(BinaryFuse16 {
        descriptor: xorf::Descriptor {
            seed: u64::from_le_bytes(*seed),
            segment_length: word(0),
            segment_length_mask: word(1),
            segment_count_length: word(2),
        },
        fingerprints: fingerprints
            .chunks_exact(2)
            .map(|f| u16::from_le_bytes([f[0], f[1]]))
            .collect(),
    })
}

fn encode_block(first: u64, entries: &[(u64, i64)]) -> Vec<u8> {
    let least_seq = entries.iter().map(|(_, seq)| *seq).min().unwrap_or(0);
    let mut previous = first;
    let block = Block {
        least_seq,
        entries: entries
            .iter()
            .map(|&(hash, seq)| {
                let delta = hash - previous;
                previous = hash;
                (delta, (seq - least_seq) as u64)
            })
            .collect(),
    };
    postcard::to_allocvec(&block).expect("writing to a Vec cannot fail")
}

/// Calls `f` with each (hash, seq) of a stored block, in order, until it
/// returns false. Read in place (a `Block` as postcard writes it: the
/// least seq zigzagged, the entry count, then each entry's two varints),
/// as a lookup reads one block per key it checks.
fn each_entry(
    space: &KeySpace,
    run: i64,
    first: u64,
    mut body: &[u8],
    mut f: impl FnMut(u64, i64) -> bool,
) -> Result<(), StorageError> {
    let corrupt = || StorageError::Corrupt(format!("{} key run {run} block", space.what));
    let least_seq = crate::varint::unzigzag(crate::varint::take(&mut body).ok_or_else(corrupt)?);
    let entries = crate::varint::take(&mut body).ok_or_else(corrupt)?;
    let mut hash = first;
    for _ in 0..entries {
        let delta = crate::varint::take(&mut body).ok_or_else(corrupt)?;
        let offset = crate::varint::take(&mut body).ok_or_else(corrupt)?;
        hash = hash.wrapping_add(delta);
        if !f(hash, least_seq.wrapping_add(offset as i64)) {
            return Ok(());
        }
    }
    if body.is_empty() { Ok(()) } else { Err(corrupt()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::sqlite::schema::SCHEMA).unwrap();
        conn
    }

    #[test]
    fn keys_are_found_in_memory_in_runs_and_after_a_reload() {
        let mut conn = store();
        let mut keys = KeyIndex::load(&conn, &CALLS, RUN_KEYS).unwrap();
        let hash = |i: u64| key_hash("p", &["i", &i.to_string()]);
        for i in 0..3_000u64 {
            keys.add(hash(i), i as i64 + 1, 1_000 + i as i64);
        }
        assert_eq!(keys.candidates(&conn, hash(7)).unwrap(), [8]);
        let tx = conn.transaction().unwrap();
        let pending = keys.write_run(&tx, 3_000).unwrap().unwrap();
        tx.commit().unwrap();
        keys.written(&conn, pending).unwrap();
        assert_eq!(keys.recent_len(), 0);
        for i in (0..3_000u64).step_by(97) {
            assert_eq!(keys.candidates(&conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
        }
        // A second run, and a reload with recent keys of the calls after it.
        for i in 3_000..4_000u64 {
            keys.add(hash(i), i as i64 + 1, 5_000);
        }
        let tx = conn.transaction().unwrap();
        let pending = keys.write_run(&tx, 4_000).unwrap().unwrap();
        tx.commit().unwrap();
        keys.written(&conn, pending).unwrap();
        assert_eq!(KeyIndex::through(&conn, &CALLS).unwrap(), 4_000);
        let mut reloaded = KeyIndex::load(&conn, &CALLS, RUN_KEYS).unwrap();
        reloaded.add(hash(4_000), 4_001, 6_000);
        for i in [0, 1_234, 2_999, 3_000, 3_999, 4_000] {
            assert_eq!(reloaded.candidates(&conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
        }
        // Keys never stored have no candidates (a false positive of both
        // filters would name a block without the hash: still none).
        let absent = (10_000..20_000u64)
            .filter(|&i| !reloaded.candidates(&conn, hash(i)).unwrap().is_empty())
            .count();
        assert_eq!(absent, 0);
    }

    #[test]
    fn a_schema_15_store_gets_its_key_blocks_in_rowid_tables_with_every_key_found() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::sqlite::schema::create_or_check(&conn).unwrap();
        let hash = |i: u64| key_hash("p", &["i", &i.to_string()]);
        for (space, n) in [(&CALLS, 5_000u64), (&TRACES, 3_000)] {
            let mut keys = KeyIndex::load(&conn, space, RUN_KEYS).unwrap();
            (0..n).for_each(|i| keys.add(hash(i), i as i64 + 1, 1_000));
            let tx = conn.transaction().unwrap();
            let pending = keys.write_run(&tx, n as i64).unwrap().unwrap();
            tx.commit().unwrap();
            keys.written(&conn, pending).unwrap();
        }
        // Schema 15 kept the blocks in tables without rowids.
        for table in ["call_key_blocks", "trace_key_blocks"] {
            conn.execute_batch(&format!(
                "CREATE TABLE old ({}) WITHOUT ROWID; INSERT INTO old SELECT * FROM {table};
                 DROP TABLE {table}; ALTER TABLE old RENAME TO {table};",
                "run INTEGER NOT NULL, first_hash INTEGER NOT NULL, body BLOB NOT NULL, \
                 PRIMARY KEY (run, first_hash)"
            ))
            .unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 15").unwrap();
        crate::storage::sqlite::schema::create_or_check(&conn).unwrap();
        let sql = |what: &str| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("SELECT sql FROM sqlite_master {what}")).unwrap();
            stmt.query_map([], |r| r.get::<_, Option<String>>(0))
                .unwrap()
                .filter_map(|r| r.unwrap())
                .collect()
        };
        let blocks = sql("WHERE name IN ('call_key_blocks', 'trace_key_blocks')");
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().all(|sql| !sql.contains("WITHOUT ROWID")), "{blocks:?}");
        assert!(sql("WHERE name LIKE '%_v15%'").is_empty());
        for (space, n) in [(&CALLS, 5_000u64), (&TRACES, 3_000)] {
            let keys = KeyIndex::load(&conn, space, RUN_KEYS).unwrap();
            for i in 0..n {
                assert_eq!(keys.candidates(&conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
            }
            assert!(keys.candidates(&conn, hash(n)).unwrap().is_empty());
        }
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, crate::storage::sqlite::schema::VERSION);
    }

    #[test]
    fn a_full_bloom_filter_is_rebuilt_on_its_own_thread_and_every_key_is_found_throughout() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("keys.db")).unwrap();
        conn.execute_batch(crate::storage::sqlite::schema::SCHEMA).unwrap();
        let mut keys = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        keys.min_seen = 256;
        keys.reseen(&conn).unwrap();
        let hash = |i: u64| key_hash("p", &["i", &i.to_string()]);
        let mut rebuilds = 0;
        for run in 0..40u64 {
            for i in run * 100..(run + 1) * 100 {
                keys.add(hash(i), i as i64 + 1, 1_000);
            }
            let tx = conn.transaction().unwrap();
            let pending = keys.write_run(&tx, (run + 1) as i64 * 100).unwrap().unwrap();
            tx.commit().unwrap();
            keys.written(&conn, pending).unwrap();
            rebuilds += usize::from(keys.rebuilding.is_some());
            // Whether or not a rebuild is under way or done, every key is found.
            for i in (0..(run + 1) * 100).step_by(37) {
                assert_eq!(keys.candidates(&conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
            }
            if run % 3 == 0 {
                // Let the build finish now and then (commits never wait for it).
                while keys.rebuilding.is_some() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    keys.settle_rebuild();
                }
            }
        }
        assert!(rebuilds > 0, "the filter never filled");
        while keys.rebuilding.is_some() {
            std::thread::sleep(std::time::Duration::from_millis(5));
            keys.settle_rebuild();
        }
        assert_eq!(keys.seen_keys, 4_000);
        assert!(keys.seen_capacity >= 4_000);
        for i in (0..4_000u64).step_by(13) {
            assert_eq!(keys.candidates(&conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
        }
    }

    /// Writes the keys of calls `first..end` (call `i` has seq `i + 1`) as
    /// one run.
    fn write_run_of(conn: &mut Connection, keys: &mut KeyIndex, first: u64, end: u64) {
        for i in first..end {
            keys.add(key_hash("p", &["i", &i.to_string()]), i as i64 + 1, 1_000);
        }
        let tx = conn.transaction().unwrap();
        let pending = keys.write_run(&tx, end as i64).unwrap().unwrap();
        tx.commit().unwrap();
        keys.written(conn, pending).unwrap();
    }

    fn settle(keys: &mut KeyIndex) {
        while keys.rebuilding.is_some() {
            std::thread::sleep(std::time::Duration::from_millis(5));
            keys.settle_rebuild();
        }
    }

    #[test]
    fn the_filter_saved_at_a_stop_is_taken_back_once_and_never_a_stale_or_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("keys.db")).unwrap();
        conn.execute_batch(crate::storage::sqlite::schema::SCHEMA).unwrap();
        let hash = |i: u64| key_hash("p", &["i", &i.to_string()]);
        let found = |keys: &KeyIndex, conn: &Connection, end: u64| {
            for i in 0..end {
                assert_eq!(keys.candidates(conn, hash(i)).unwrap(), [i as i64 + 1], "key {i}");
            }
        };
        let saved = dir.path().join("keys.keyfilter");
        let mut keys = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        for run in 0..3 {
            write_run_of(&mut conn, &mut keys, run * 100, (run + 1) * 100);
        }
        keys.save(&conn).unwrap();
        assert!(saved.exists());

        // Taken back whole, with no build, and the file is gone.
        let back = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        assert!(back.seen_complete && back.rebuilding.is_none());
        assert!(!saved.exists(), "a saved filter is taken back once");
        assert_eq!(back.seen_keys, 300);
        assert!((0..300).all(|i| back.seen.contains(&hash(i))));
        found(&back, &conn, 300);
        // Without the file, the next open builds it, and keys are found
        // from the runs' own filters until it is done.
        let mut built = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        assert!(!built.seen_complete && built.rebuilding.is_some());
        found(&built, &conn, 300);
        settle(&mut built);
        assert!(built.seen_complete);
        assert_eq!(built.seen_keys, 300);
        found(&built, &conn, 300);

        // Stale: saved, then a run written after it. The file names runs the
        // store has moved past and is not taken back.
        keys.save(&conn).unwrap();
        write_run_of(&mut conn, &mut keys, 300, 400);
        let mut stale = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        assert!(!stale.seen_complete, "a filter without the last run's keys was taken back");
        assert!(!saved.exists());
        found(&stale, &conn, 400);
        settle(&mut stale);
        found(&stale, &conn, 400);

        // Cut short: fewer words than its header says.
        keys.save(&conn).unwrap();
        let bytes = std::fs::read(&saved).unwrap();
        std::fs::write(&saved, &bytes[..bytes.len() - 16]).unwrap();
        let short = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        assert!(!short.seen_complete, "a filter cut short was taken back");
        assert!(!saved.exists());

        // Torn: one bit of the saved words flipped.
        keys.save(&conn).unwrap();
        let mut bytes = std::fs::read(&saved).unwrap();
        bytes[100] ^= 0x10;
        std::fs::write(&saved, bytes).unwrap();
        let torn = KeyIndex::load(&conn, &CALLS, 100).unwrap();
        assert!(!torn.seen_complete, "a torn filter was taken back");
        found(&torn, &conn, 400);
    }

    #[test]
    fn a_block_is_read_in_place_as_it_was_written() {
        let first = u64::MAX - 1_000_000;
        let entries: Vec<(u64, i64)> = (0..1024u64)
            .map(|i| (first + i * 977, 5_000_000_000 + (i * 7 % 1024) as i64))
            .collect();
        let body = encode_block(first, &entries);
        let mut read = Vec::new();
        each_entry(&CALLS, 1, first, &body, |hash, seq| {
            read.push((hash, seq));
            true
        })
        .unwrap();
        assert_eq!(read, entries);
        // Stopped where asked, and a body cut short is corrupt.
        let mut seen = 0;
        each_entry(&CALLS, 1, first, &body, |hash, _| {
            seen += 1;
            hash < first + 10 * 977
        })
        .unwrap();
        assert_eq!(seen, 11);
        assert!(each_entry(&CALLS, 1, first, &body[..body.len() - 1], |_, _| true).is_err());
    }

    #[test]
    fn colliding_hashes_name_every_call_and_retention_drops_whole_runs() {
        let mut conn = store();
        let mut keys = KeyIndex::load(&conn, &CALLS, RUN_KEYS).unwrap();
        // Two calls under one hash (as two keys whose hashes collide would be).
        keys.add(42, 1, 100);
        keys.add(42, 2, 100);
        keys.add(43, 3, 100);
        assert_eq!(keys.candidates(&conn, 42).unwrap(), [1, 2]);
        let tx = conn.transaction().unwrap();
        let pending = keys.write_run(&tx, 3).unwrap().unwrap();
        tx.commit().unwrap();
        keys.written(&conn, pending).unwrap();
        assert_eq!(keys.candidates(&conn, 42).unwrap(), [1, 2]);
        keys.add(42, 4, 900);
        let tx = conn.transaction().unwrap();
        let pending = keys.write_run(&tx, 4).unwrap().unwrap();
        tx.commit().unwrap();
        keys.written(&conn, pending).unwrap();
        assert_eq!(keys.candidates(&conn, 42).unwrap(), [4, 1, 2], "newest run first");
        let tx = conn.transaction().unwrap();
        let dropped = keys.drop_runs(&tx, |_, max_time| Ok(max_time < 500)).unwrap();
        tx.commit().unwrap();
        assert_eq!(dropped.len(), 1);
        keys.forget(&dropped);
        assert_eq!(keys.candidates(&conn, 42).unwrap(), [4]);
        assert!(keys.candidates(&conn, 43).unwrap().is_empty());
        let blocks: i64 =
            conn.query_row("SELECT count(*) FROM call_key_blocks", [], |r| r.get(0)).unwrap();
        assert_eq!(blocks, 1);
    }
}
