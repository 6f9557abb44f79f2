//! The embedded SQLite backend (the default).
//!
//! One write connection, used by one blocking task at a time (the committer
//! serialises writes anyway), and a small pool of read connections: WAL mode
//! lets reads run beside the writer. Durability: WAL with
//! `synchronous=NORMAL` survives a crash of the process (SIGKILL), `FULL`
//! also survives power loss.

mod budgets;
mod call_chunks;
mod call_columns;
mod key_runs;

use key_runs::KeyIndex;
use span_packing::SpanPacking;
mod metrics;
mod rows;
mod schema;
mod span_blocks;
mod span_chunks;
mod span_packing;
mod span_timings;
mod telemetry;
mod trace_blocks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::warn;

use super::{
    AlertFilter, AlertRecord, AppendBatch, Appended, CallFilter, DeliveryUpdate, DueDelivery,
    EncodedPart, LogFilter, MetricBinVisitor, NewAlert, RetentionCutoffs, RollupVisitor,
    SessionSummary, ShipWatermarks, StorageError, StoreStats, StoredBudget, StoredTrace,
    TelemetryScope, TelemetryVisitor, TraceBounds, TraceFilter, TraceSummary,
};
use super::{
    CallKey, ControlStore, LedgerStore, MetricStore, RollupStore, TelemetryStore, UpkeepStore,
};
use crate::aggregate::metric::{Bin, BinKey, MetricKey, MetricTier};
use crate::aggregate::rollup::SequencedCall;
use crate::aggregate::series::{self, FlatSeries};
use crate::aggregate::{Cell, CellKey, SeriesKey, Tier};
use crate::model::LlmCall;
use crate::model::{LogRecord, SpanRecord};

impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        StorageError::Backend { backend: "sqlite", message: err.to_string() }
    }
}

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a crash of the process (SIGKILL, panic, OOM kill); a power
    /// loss may drop the last commits.
    #[default]
    Normal,
    /// Also survives power loss, at one fsync per commit.
    Full,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Page cache per connection, in MiB.
    pub cache_mib: u32,
    /// Most read connections open at once; further reads wait for one.
    pub max_readers: usize,
    /// Spans a trace keeps; later ones are counted, not stored.
    pub max_spans_per_trace: usize,
    /// Call or trace keys held in memory before they are written as a run.
    pub key_run_keys: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            cache_mib: 64,
            max_readers: 8,
            max_spans_per_trace: 10_000,
            key_run_keys: key_runs::RUN_KEYS,
        }
    }
}

pub struct SqliteStorage {
    path: PathBuf,
    options: SqliteOptions,
    writer: Arc<Mutex<Connection>>,
    /// The index of the stored calls' keys (locked after the writer when
    /// both are).
    keys: Arc<Mutex<KeyIndex>>,
    /// The index of the stored traces' ids (locked after the call keys):
    /// read-locked for lookups, by the writer and by trace detail alike,
    /// and write-locked only to take a commit's new keys.
    trace_keys: Arc<RwLock<KeyIndex>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// One permit per read connection there may be: each connection holds
    /// its own page cache, so their number is bounded and reads queue.
    reader_slots: Arc<tokio::sync::Semaphore>,
    /// Bytes in the WAL as last seen by the background checkpointer.
    wal_bytes: Arc<AtomicU64>,
    /// The dictionaries span bodies are packed with.
    packing: Arc<SpanPacking>,
}

fn configure(conn: &Connection, options: &SqliteOptions) -> Result<(), rusqlite::Error> {
    let sync = match options.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000; \
         PRAGMA cache_size=-{}; PRAGMA temp_store=MEMORY;",
        options.cache_mib as i64 * 1024
    ))
}

/// The index of the stored calls' keys: its runs, and the keys of the
/// calls after them read back from the calls (written as runs as they
/// fill: a store from before the index gets it here, a run at a time).
pub(super) fn load_call_keys(conn: &Connection, run_keys: usize) -> Result<KeyIndex, StorageError> {
    let mut keys = KeyIndex::load(conn, &key_runs::CALLS, run_keys)?;
    let mut last = KeyIndex::through(conn, &key_runs::CALLS)?;
    call_chunks::each_key_after(conn, last, |page| {
        for &(hash, seq, time) in page {
            keys.add(hash, seq, time);
            last = last.max(seq);
        }
        // As holding the calls read so far: a page ends with a chunk.
        write_key_run(conn, &mut keys, |_| Ok(last))
    })?;
    Ok(keys)
}

/// The index of the stored traces' ids, as `load_call_keys` (the traces
/// past its runs read back from their rows).
pub(super) fn load_trace_keys(
    conn: &Connection,
    run_keys: usize,
) -> Result<KeyIndex, StorageError> {
    let mut keys = KeyIndex::load(conn, &key_runs::TRACES, run_keys)?;
    let after = KeyIndex::through(conn, &key_runs::TRACES)?;
    telemetry::each_key_after(conn, after, |page| {
        let mut last = after;
        for &(hash, row) in page {
            keys.add(hash, row, row);
            last = row;
        }
        write_key_run(conn, &mut keys, |_| Ok(last))
    })?;
    Ok(keys)
}

/// Writes the index's recent keys as a run once it holds its run's worth,
/// as holding every row through the one `through` reads.
pub(super) fn write_key_run(
    conn: &Connection,
    keys: &mut KeyIndex,
    through: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<i64, StorageError>,
) -> Result<(), StorageError> {
    keys.settle_rebuild();
    if !keys.run_full() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let through = through(&tx)?;
    let Some(pending) = keys.write_run(&tx, through)? else { return Ok(()) };
    tx.commit()?;
    keys.written(conn, pending)
}

impl SqliteStorage {
    pub fn open(path: &Path, options: &SqliteOptions) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|source| StorageError::Io { path: dir.display().to_string(), source })?;
        }
        let conn = Connection::open(path)?;
        // Only takes effect when the database is created: a store keeps the
        // pages it was made with.
        conn.pragma_update(None, "page_size", PAGE_BYTES)?;
        configure(&conn, options)?;
        schema::create_or_check(&conn)?;
        rows::register_functions(&conn)?;
        call_chunks::register_modules(&conn)?;
        let keys = Arc::new(Mutex::new(load_call_keys(&conn, options.key_run_keys)?));
        let trace_keys = Arc::new(RwLock::new(load_trace_keys(&conn, options.key_run_keys)?));
        let packing = Arc::new(SpanPacking::load(&conn)?);
        // Checkpoints (copying the WAL into the database, with an fsync) run
        // on their own thread so that commits never wait for them.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", 256 * 1024 * 1024)?;
        let writer = Arc::new(Mutex::new(conn));
        let wal_bytes = Arc::new(AtomicU64::new(0));
        spawn_checkpointer(
            path.to_path_buf(),
            options.clone(),
            Arc::downgrade(&writer),
            wal_bytes.clone(),
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            options: options.clone(),
            writer,
            keys,
            trace_keys,
            readers: Arc::new(Mutex::new(Vec::new())),
            reader_slots: Arc::new(tokio::sync::Semaphore::new(options.max_readers.max(1))),
            wal_bytes,
            packing,
        })
    }

    /// Runs `work` on the write connection off the async runtime.
    async fn write<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let writer = self.writer.clone();
        let wal_bytes = self.wal_bytes.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            let result = work(&mut conn);
            // The background checkpointer copies the WAL into the database
            // but, with commits arriving all the time, rarely finishes, and
            // the WAL only starts over after a finished checkpoint. The
            // writer finishes one itself (cheap: most frames are already
            // copied) when the WAL has grown, so the WAL stays bounded.
            if wal_bytes.load(Ordering::Relaxed) >= WAL_RESET_BYTES {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) => wal_bytes.store(0, Ordering::Relaxed),
                    Err(err) => warn!(%err, "wal checkpoint on the writer failed"),
                }
            }
            result
        })
        .await
        .map_err(|_| StorageError::WorkerGone)?
    }

    /// Runs `work` on a pooled read connection off the async runtime.
    async fn read<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let options = self.options.clone();
        let slot = self.reader_slots.clone().acquire_owned().await.expect("never closed");
        let packing = self.packing.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&conn, &options)?;
                    span_chunks::register_functions(&conn, packing)?;
                    conn
                }
            };
            let result = work(&conn);
            readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|_| StorageError::WorkerGone)?
    }
}

/// The page size of a store made anew. 16 KiB rather than 8: a span chunk
/// (a trace's spans of one export, packed for speed: `span_packing`) is
/// often over 4 KiB, and a page of 8 KiB holds one such row and leaves the
/// rest empty (BENCHMARKS.md, session 25). Ids no longer go into B-trees at
/// random places (key runs), which had made larger pages cost more WAL per
/// commit.
pub const PAGE_BYTES: i64 = 16_384;

/// The page size of the store `conn` is open on.
fn page_size(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.pragma_query_value(None, "page_size", |row| row.get(0))
}

/// Rewrites the store at `path` in pages of `PAGE_BYTES`, returning its
/// free pages to the disk (SQLite's `VACUUM`, which needs as much free disk
/// as the store takes). Nothing else may have the store open. Returns the
/// page size before and the store's bytes before and after.
pub fn vacuum(path: &Path) -> Result<(i64, u64, u64), StorageError> {
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| StorageError::Io { path: path.display().to_string(), source })
    };
    // Opening would make an empty store where there is none.
    let before = size(path)?;
    let conn = Connection::open(path)?;
    let page = page_size(&conn)?;
    // A store in WAL mode keeps its page size through a VACUUM: it leaves
    // WAL mode (folding the log in) for the rewrite, and goes back to it.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = DELETE; PRAGMA page_size = {PAGE_BYTES}; VACUUM; \
         PRAGMA journal_mode = WAL;"
    ))?;
    drop(conn);
    Ok((page, before, size(path)?))
}

/// WAL size at which the writer finishes a checkpoint itself so that the
/// WAL can start over.
const WAL_RESET_BYTES: u64 = 128 << 20;

/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// How long the checkpoint at a stop waits for the log to be free (a
/// passive checkpoint of a large log takes seconds) before leaving the log
/// to the next start.
const STOP_CHECKPOINT_WAIT: Duration = Duration::from_secs(20);

/// Checkpoints the WAL in the background (PASSIVE: never blocks the writer or
/// readers). Stops when the database can no longer be opened.
fn spawn_checkpointer(
    path: PathBuf,
    options: SqliteOptions,
    writer: std::sync::Weak<Mutex<Connection>>,
    wal_bytes: Arc<AtomicU64>,
) -> Result<(), StorageError> {
    let conn = Connection::open(&path)?;
    configure(&conn, &options)?;
    let page = page_size(&conn)?;
    std::thread::Builder::new()
        .name("tally-checkpoint".into())
        .spawn(move || {
            // Runs as long as the storage (its write connection) exists.
            while writer.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                // Returns (busy, frames in the WAL, frames checkpointed).
                match conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1))
                {
                    Ok(frames) => wal_bytes.store((frames.max(0) * page) as u64, Ordering::Relaxed),
                    Err(err) => warn!(%err, "wal checkpoint failed"),
                }
            }
        })
        .map_err(|source| StorageError::Io { path: path.display().to_string(), source })?;
    Ok(())
}

/// Records encoded for a write, one part per request (`Storage::encode`).
#[derive(Default)]
struct EncodedRecords {
    calls: rows::EncodedCalls,
    /// The spans' chunks (indices into the append's spans once joined).
    chunks: Vec<span_chunks::EncodedChunk>,
    /// How many spans the chunks were made from.
    spans: usize,
    logs: Vec<String>,
}

impl EncodedRecords {
    fn of(
        calls: &[LlmCall],
        own_dimensions: &[usize],
        spans: &[SpanRecord],
        logs: &[LogRecord],
        packing: &Arc<SpanPacking>,
    ) -> Self {
        Self {
            calls: rows::EncodedCalls::of(calls, own_dimensions),
            chunks: span_chunks::chunks_of(spans, packing),
            spans: spans.len(),
            logs: logs.iter().map(telemetry::to_json).collect(),
        }
    }

    /// Encodes records, then drops from the spans and logs what is written
    /// only encoded and never read from the records again: their attribute
    /// maps, events and bodies, freed here on the request's thread (a span's
    /// resource is shared by its export's spans, so it stays).
    fn of_taking(
        calls: &[LlmCall],
        own_dimensions: &[usize],
        spans: &mut [SpanRecord],
        logs: &mut [LogRecord],
        packing: &Arc<SpanPacking>,
    ) -> Self {
        let encoded = Self::of(calls, own_dimensions, spans, logs, packing);
        for span in spans {
            drop(std::mem::take(&mut span.attributes));
            drop(span.packed.take());
            drop(std::mem::take(&mut span.events));
        }
        for log in logs {
            drop(std::mem::take(&mut log.attributes));
            drop(std::mem::take(&mut log.body));
        }
        encoded
    }

    /// The parts joined: every record of `batch` encoded when there are
    /// none (a caller that did not encode), else exactly as the parts say.
    fn joined(
        mut parts: Vec<EncodedPart>,
        batch: &AppendBatch,
        packing: &Arc<SpanPacking>,
    ) -> Result<Self, StorageError> {
        if parts.is_empty() {
            // Each kind's records join in order, whatever parts they are in.
            let calls = batch.calls.iter().map(|calls| Self::of(calls, &[], &[], &[], packing));
            let spans = batch.spans.iter().map(|spans| Self::of(&[], &[], spans, &[], packing));
            let logs = std::iter::once(Self::of(&[], &[], &[], &batch.logs, packing));
            parts = calls.chain(spans).chain(logs).map(|p| Box::new(p) as EncodedPart).collect();
        }
        let parts = parts
            .into_iter()
            .map(|part| part.downcast::<EncodedRecords>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                StorageError::Corrupt("an append part was not encoded by this store".into())
            })?;
        let mut all = EncodedRecords {
            calls: rows::EncodedCalls::default(),
            chunks: Vec::with_capacity(parts.iter().map(|p| p.chunks.len()).sum()),
            spans: 0,
            logs: Vec::with_capacity(parts.iter().map(|p| p.logs.len()).sum()),
        };
        let calls = parts.iter().map(|p| p.calls.len()).sum();
        let mut call_parts = Vec::with_capacity(parts.len());
        for mut part in parts {
            call_parts.push(std::mem::take(&mut part.calls));
            for mut chunk in part.chunks {
                chunk.spans.iter_mut().for_each(|i| *i += all.spans);
                all.chunks.push(chunk);
            }
            all.spans += part.spans;
            all.logs.append(&mut part.logs);
        }
        all.calls = rows::EncodedCalls::joined(call_parts.into_iter(), calls);
        let lengths = (all.calls.len(), all.spans, all.logs.len());
        if lengths != (batch.call_count(), batch.span_count(), batch.logs.len()) {
            return Err(StorageError::Corrupt(format!(
                "encoded records {lengths:?} do not match the append's ({}, {}, {})",
                batch.call_count(),
                batch.span_count(),
                batch.logs.len()
            )));
        }
        Ok(all)
    }
}

/// The encoded form of what an append writes, made before the write.
struct Encoded {
    records: EncodedRecords,
    /// The order to insert the calls in (`call_chunks::insert_order`).
    call_order: call_chunks::InsertOrder,
    /// The order to insert the span chunks in (`span_blocks::insert_order`).
    chunk_order: span_blocks::ChunkOrder,
}

impl Encoded {
    /// The batch's records as the request handlers encoded them (or encoded
    /// here when they did not), and the order of its calls and spans.
    fn of(batch: &mut AppendBatch, packing: &Arc<SpanPacking>) -> Result<Self, StorageError> {
        let parts = std::mem::take(&mut batch.encoded);
        let records = EncodedRecords::joined(parts, batch, packing)?;
        let call_order = call_chunks::insert_order(&batch.flat_calls());
        let chunk_order = span_blocks::insert_order(&batch.flat_spans(), &records.chunks);
        Ok(Self { records, call_order, chunk_order })
    }
}

/// Keeps a number in `meta`.
fn set_meta(conn: &Connection, key: &str, value: i64) -> Result<(), StorageError> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

/// A number kept in `meta`, 0 when absent.
fn meta_value(conn: &Connection, key: &str) -> Result<i64, StorageError> {
    let value = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    Ok(value.unwrap_or(0))
}

/// Longest bucket list a rollup scan names (beyond it, a range).
const MAX_LISTED_BUCKETS: i64 = 5_000;

/// Stores series the store may not have yet (known ones are skipped).
fn write_series(
    tx: &rusqlite::Transaction<'_>,
    series: &[(i64, Arc<SeriesKey>)],
) -> Result<(), StorageError> {
    let mut stmt = tx.prepare_cached(rows::INSERT_SERIES)?;
    for (id, key) in series {
        rows::insert_series(&mut stmt, *id, key)?;
    }
    Ok(())
}

/// Writes cells with `sql` (merging into or replacing stored rows).
fn write_cells(
    tx: &rusqlite::Transaction<'_>,
    cells: &[(CellKey, Cell)],
    sql: &str,
) -> Result<(), StorageError> {
    let mut stmt = tx.prepare_cached(sql)?;
    for (key, cell) in cells {
        rows::write_rollup(&mut stmt, key, cell)?;
    }
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteStorage {
    async fn spans_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, SpanRecord)>, StorageError> {
        let packing = self.packing.clone();
        self.read(move |conn| telemetry::spans_after(conn, seq, limit, &packing)).await
    }

    async fn logs_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogRecord)>, StorageError> {
        self.read(move |conn| telemetry::logs_after(conn, seq, limit)).await
    }

    async fn shipped(&self, to: &str) -> Result<i64, StorageError> {
        let key = format!("shipped:{to}");
        self.read(move |conn| meta_value(conn, &key)).await
    }

    async fn committed_after(&self, after: ShipWatermarks) -> Result<u64, StorageError> {
        self.read(move |conn| {
            let count = |sql: &str, after: i64| -> Result<i64, rusqlite::Error> {
                conn.prepare_cached(sql)?.query_row([after], |row| row.get(0))
            };
            let calls = (call_chunks::stored_seq(conn)? - after.calls).max(0);
            let spans = count(
                "SELECT coalesce(sum(spans), 0) FROM span_chunks WHERE seq > ?1",
                after.spans,
            )?;
            let logs = count("SELECT count(*) FROM logs WHERE seq > ?1", after.logs)?;
            let metric_commits =
                count("SELECT count(*) FROM metric_log WHERE seq > ?1", after.metric_commits)?;
            Ok((calls + spans + logs + metric_commits) as u64)
        })
        .await
    }

    async fn mark_shipped(&self, to: &str, seq: i64) -> Result<(), StorageError> {
        let key = format!("shipped:{to}");
        self.write(move |conn| set_meta(conn, &key, seq)).await
    }

    async fn holds(&self, keys: Vec<(String, CallKey)>) -> Result<Vec<bool>, StorageError> {
        let index = self.keys.clone();
        self.read(move |conn| {
            let index = index.lock().unwrap_or_else(|p| p.into_inner());
            call_chunks::holds(conn, &index, &keys)
        })
        .await
    }

    async fn calls_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<SequencedCall>, StorageError> {
        self.read(move |conn| call_chunks::after(conn, seq, limit)).await
    }

    fn encode(
        &self,
        calls: &[LlmCall],
        own_dimensions: &[usize],
        spans: &mut [SpanRecord],
        logs: &mut [LogRecord],
    ) -> EncodedPart {
        Box::new(EncodedRecords::of_taking(calls, own_dimensions, spans, logs, &self.packing))
    }

    async fn append(&self, mut batch: AppendBatch) -> Result<Appended, StorageError> {
        // Records come encoded (by the request handlers) and are dropped
        // here after the write: the writer thread only binds and inserts.
        let encoded = Encoded::of(&mut batch, &self.packing)?;
        let max_spans_per_trace = self.options.max_spans_per_trace;
        let packing = self.packing.clone();
        let index = self.keys.clone();
        let trace_index = self.trace_keys.clone();
        let (appended, spent) = self
            .write(move |conn| {
                let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
                let AppendBatch {
                    calls,
                    series_ids,
                    new_series,
                    spans,
                    logs,
                    metric_log,
                    new_metric_series,
                    encoded: _,
                    refused,
                } = batch;
                let tx = conn.transaction()?;
                {
                    let mut insert_series = tx.prepare_cached(rows::INSERT_SERIES)?;
                    for (id, key) in &new_series {
                        rows::insert_series(&mut insert_series, *id, key)?;
                    }
                }
                let floor = meta_value(&tx, schema::CALL_SEQ_FLOOR_KEY)?;
                let stored = call_chunks::append(
                    &tx,
                    &index,
                    &calls.iter().flatten().collect::<Vec<_>>(),
                    &series_ids,
                    &encoded.records.calls,
                    &encoded.call_order,
                    &refused,
                    floor,
                )?;
                let spans_appended = telemetry::append(
                    &tx,
                    &spans.iter().flatten().collect::<Vec<_>>(),
                    &encoded.records.chunks,
                    &encoded.chunk_order,
                    &logs,
                    &encoded.records.logs,
                    max_spans_per_trace,
                    &packing,
                    &trace_index.read().unwrap_or_else(|p| p.into_inner()),
                )?;
                let metric_seq = metrics::append(&tx, &new_metric_series, metric_log.as_deref())?;
                tx.commit()?;
                for &(hash, seq, time) in &stored.keys {
                    index.add(hash, seq, time);
                }
                write_key_run(conn, &mut index, |tx| Ok(call_chunks::stored_seq(tx)?))?;
                if !spans_appended.trace_keys.is_empty() {
                    let mut trace_keys = trace_index.write().unwrap_or_else(|p| p.into_inner());
                    for &(hash, row) in &spans_appended.trace_keys {
                        trace_keys.add(hash, row, row);
                    }
                    write_key_run(conn, &mut trace_keys, |tx| Ok(trace_blocks::next_row(tx)? - 1))?;
                }
                let spans_dropped = spans_appended.dropped_spans;
                let seqs = stored.seqs;
                let spent = (logs, metric_log, new_series, new_metric_series, encoded);
                let appended =
                    Appended { calls, spans, series_ids, seqs, metric_seq, spans_dropped };
                Ok((appended, spent))
            })
            .await?;
        drop(spent);
        Ok(appended)
    }

    async fn list_calls(&self, filter: CallFilter) -> Result<Vec<SequencedCall>, StorageError> {
        self.read(move |conn| call_chunks::list(conn, &filter)).await
    }

    async fn calls_between(
        &self,
        from: i64,
        to: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<SequencedCall>, StorageError> {
        self.read(move |conn| call_chunks::between(conn, from, to, after_seq, limit)).await
    }

    async fn replace_window(
        &self,
        repriced: Vec<(i64, LlmCall)>,
        from: i64,
        to: i64,
        cells: Vec<(CellKey, Cell)>,
        new_series: Vec<(i64, Arc<SeriesKey>)>,
    ) -> Result<(), StorageError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            write_series(&tx, &new_series)?;
            call_chunks::replace_payloads(&tx, &repriced)?;
            tx.execute(
                "DELETE FROM rollups WHERE bucket >= ?1 AND bucket < ?2",
                params![from, to],
            )?;
            write_cells(&tx, &cells, rows::MERGE_ROLLUP)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl RollupStore for SqliteStorage {
    async fn forget_series(&self, ids: Vec<i64>) -> Result<(), StorageError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM series WHERE id = ?1")?;
                for id in ids {
                    delete.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn load_series(&self) -> Result<Vec<(i64, FlatSeries)>, StorageError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(rows::SELECT_SERIES)?;
            // Flattened row by row, so that loading holds one key at a time.
            let rows = stmt.query_map([], |row| {
                rows::series_from_row(row).map(|(id, key)| (id, series::flat_of(&key)))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn rollup_watermark(&self) -> Result<i64, StorageError> {
        self.read(|conn| meta_value(conn, schema::WATERMARK_KEY)).await
    }

    async fn flush_rollups(
        &self,
        cells: Arc<Vec<(CellKey, Cell)>>,
        watermark: i64,
        new_series: Vec<(i64, Arc<SeriesKey>)>,
    ) -> Result<(), StorageError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            write_series(&tx, &new_series)?;
            write_cells(&tx, &cells, rows::MERGE_ROLLUP)?;
            set_meta(&tx, schema::WATERMARK_KEY, watermark)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn read_rollups(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
    ) -> Result<Vec<(CellKey, Cell)>, StorageError> {
        self.read(move |conn| {
            let sql =
                format!("{} WHERE tier = ?1 AND bucket >= ?2 AND bucket < ?3", rows::SELECT_ROLLUP);
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![tier.code(), from, to], rows::rollup_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn scan_rollups(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
        (first, end): (i64, i64),
        mut visitor: Box<dyn RollupVisitor>,
    ) -> Result<Box<dyn RollupVisitor>, StorageError> {
        self.read(move |conn| {
            // Listing the buckets lets SQLite seek to the series range in each
            // (tier, bucket) instead of stepping over every row of the bucket.
            let width = tier.width_ms();
            let first_bucket = tier.bucket(from) + if tier.bucket(from) < from { width } else { 0 };
            let buckets = (to - first_bucket).max(0) / width + 1;
            let bucket_clause = if buckets <= MAX_LISTED_BUCKETS {
                let listed: Vec<String> = (0..buckets)
                    .map(|i| first_bucket + i * width)
                    .filter(|b| *b < to)
                    .map(|b| b.to_string())
                    .collect();
                format!("bucket IN ({})", listed.join(","))
            } else {
                format!("bucket >= {from} AND bucket < {to}")
            };
            let sql = format!(
                "{} WHERE tier = ?1 AND {bucket_clause} AND series >= ?2 AND series < ?3",
                rows::SELECT_ROLLUP
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params![tier.code(), first, end])?;
            while let Some(row) = rows.next()? {
                let (key, counters) = rows::rollup_counters_from_row(row)?;
                let latency = row.get_ref(15)?.as_blob().map_err(rusqlite::Error::from)?;
                let ttft = row.get_ref(16)?.as_blob().map_err(rusqlite::Error::from)?;
                visitor.visit(key, counters, latency, ttft)?;
            }
            drop(rows);
            Ok(visitor)
        })
        .await
    }
}

#[async_trait]
impl TelemetryStore for SqliteStorage {
    async fn list_traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StorageError> {
        self.read(move |conn| telemetry::list_traces(conn, &filter)).await
    }

    async fn trace(
        &self,
        project: &str,
        trace_id: &str,
        bounds: TraceBounds,
    ) -> Result<StoredTrace, StorageError> {
        let (project, trace_id) = (project.to_owned(), trace_id.to_owned());
        let packing = self.packing.clone();
        let index = self.trace_keys.clone();
        self.read(move |conn| {
            // The index only for the lookup: a commit's new keys wait for it.
            let row = {
                let keys = index.read().unwrap_or_else(|p| p.into_inner());
                telemetry::trace_row(conn, &keys, &project, &trace_id)?
            };
            telemetry::trace(conn, &project, &trace_id, bounds, &packing, row)
        })
        .await
    }

    async fn scan_spans(
        &self,
        scope: TelemetryScope,
        mut visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        self.read(move |conn| {
            telemetry::scan_spans(conn, &scope, visitor.as_mut())?;
            Ok(visitor)
        })
        .await
    }

    async fn count_span_kinds(
        &self,
        scope: TelemetryScope,
    ) -> Result<std::collections::HashMap<String, u64>, StorageError> {
        self.read(move |conn| telemetry::count_span_kinds(conn, &scope)).await
    }

    async fn scan_traces(
        &self,
        scope: TelemetryScope,
        mut visitor: Box<dyn TelemetryVisitor>,
    ) -> Result<Box<dyn TelemetryVisitor>, StorageError> {
        self.read(move |conn| {
            telemetry::scan_traces(conn, &scope, visitor.as_mut())?;
            Ok(visitor)
        })
        .await
    }

    async fn list_logs(&self, filter: LogFilter) -> Result<Vec<(i64, LogRecord)>, StorageError> {
        self.read(move |conn| telemetry::list_logs(conn, &filter)).await
    }

    async fn list_sessions(
        &self,
        project: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StorageError> {
        let project = project.to_owned();
        self.read(move |conn| telemetry::list_sessions(conn, &project, from_ns, to_ns, limit)).await
    }
}

#[async_trait]
impl MetricStore for SqliteStorage {
    async fn load_metric_series(&self) -> Result<Vec<(i64, MetricKey)>, StorageError> {
        self.read(metrics::load_series).await
    }

    async fn metric_watermark(&self) -> Result<i64, StorageError> {
        self.read(|conn| meta_value(conn, schema::METRIC_WATERMARK_KEY)).await
    }

    async fn metric_log_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StorageError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, bins FROM metric_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![seq, limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn keep_metric_log_for(&self, to: Option<String>) -> Result<(), StorageError> {
        self.write(move |conn| {
            let key = to.map(|to| format!("shipped:{to}"));
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM meta WHERE key LIKE 'shipped:metrics %' AND key IS NOT ?1",
                [&key],
            )?;
            if let Some(key) = &key {
                tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, 0)", [key])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn flush_metric_bins(
        &self,
        bins: Arc<Vec<(BinKey, Bin)>>,
        watermark: i64,
    ) -> Result<(), StorageError> {
        // Sketches are encoded here, off the writer thread.
        let sketches: Vec<Vec<u8>> = bins.iter().map(|(_, bin)| bin.sketch.to_bytes()).collect();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            metrics::flush(&tx, &bins, &sketches)?;
            set_meta(&tx, schema::METRIC_WATERMARK_KEY, watermark)?;
            // Kept until shipped too, on a node of a cluster.
            tx.execute(
                "DELETE FROM metric_log WHERE seq <= ?1 AND seq <= (SELECT coalesce(min(value), ?1) \
                 FROM meta WHERE key LIKE 'shipped:metrics %')",
                [watermark],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn scan_metric_bins(
        &self,
        tier: MetricTier,
        from: i64,
        to: i64,
        series: Vec<i64>,
        mut visitor: Box<dyn MetricBinVisitor>,
    ) -> Result<(Box<dyn MetricBinVisitor>, i64), StorageError> {
        self.read(move |conn| {
            // One read transaction: the watermark and the bins of one state.
            let tx = conn.unchecked_transaction()?;
            let watermark = meta_value(&tx, schema::METRIC_WATERMARK_KEY)?;
            metrics::scan_bins(&tx, tier, from, to, &series, visitor.as_mut())?;
            tx.finish()?;
            Ok((visitor, watermark))
        })
        .await
    }
}

#[async_trait]
impl ControlStore for SqliteStorage {
    async fn load_budgets(&self) -> Result<Vec<StoredBudget>, StorageError> {
        self.read(budgets::load_budgets).await
    }

    async fn save_budget(&self, budget: StoredBudget) -> Result<(), StorageError> {
        self.write(move |conn| budgets::save_budget(conn, &budget)).await
    }

    async fn delete_budget(&self, id: &str) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.write(move |conn| budgets::delete_budget(conn, &id)).await
    }

    async fn insert_alert(&self, alert: NewAlert) -> Result<Option<i64>, StorageError> {
        self.write(move |conn| budgets::insert_alert(conn, &alert)).await
    }

    async fn alerts_since(
        &self,
        budget_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(f64, i64, i64)>, StorageError> {
        let id = budget_id.to_owned();
        self.read(move |conn| budgets::alerts_since(conn, &id, since_ms)).await
    }

    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<AlertRecord>, StorageError> {
        self.read(move |conn| budgets::list_alerts(conn, &filter)).await
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StorageError> {
        self.read(move |conn| budgets::due_deliveries(conn, now_ms, limit)).await
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>, StorageError> {
        self.read(budgets::next_delivery_ms).await
    }

    async fn update_delivery(&self, id: i64, update: DeliveryUpdate) -> Result<(), StorageError> {
        self.write(move |conn| budgets::update_delivery(conn, id, &update)).await
    }
}

#[async_trait]
impl UpkeepStore for SqliteStorage {
    async fn checkpoint(&self) -> Result<(), StorageError> {
        let index = self.keys.clone();
        let trace_index = self.trace_keys.clone();
        self.write(move |conn| {
            // Saved for the next open to take back rather than rebuild.
            if let Err(err) = index.lock().unwrap_or_else(|p| p.into_inner()).save(conn) {
                warn!(%err, "could not save the call key Bloom filter; the next start builds it");
            }
            if let Err(err) = trace_index.read().unwrap_or_else(|p| p.into_inner()).save(conn) {
                warn!(%err, "could not save the trace key Bloom filter; the next start builds it");
            }
            // (busy, frames in the log, frames checkpointed); busy means a
            // reader or the background checkpoint (which may be midway
            // through a large log) held on: tried again for a while, then
            // the log stays for the next start.
            let deadline = Instant::now() + STOP_CHECKPOINT_WAIT;
            loop {
                let busy: i64 =
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
                if busy == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    warn!(
                        "a reader held the store at the stop; its log is folded in at the next start"
                    );
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
    }

    async fn apply_retention(&self, cutoffs: RetentionCutoffs) -> Result<u64, StorageError> {
        let index = self.keys.clone();
        let trace_index = self.trace_keys.clone();
        self.write(move |conn| {
            let mut keys = index.lock().unwrap_or_else(|p| p.into_inner());
            let mut trace_keys = trace_index.write().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            let (mut deleted, mut dropped, mut traces_dropped) = (0, Vec::new(), Vec::new());
            if let Some(cutoff) = cutoffs.raw {
                // Deleted seqs are never handed out again.
                let stored = call_chunks::stored_seq(&tx)?;
                let floor = stored.max(meta_value(&tx, schema::CALL_SEQ_FLOOR_KEY)?);
                set_meta(&tx, schema::CALL_SEQ_FLOOR_KEY, floor)?;
                deleted += call_chunks::delete_before(&tx, cutoff)?;
                dropped = keys.drop_runs(&tx, |_, max_time| Ok(max_time < cutoff))?;
                deleted += telemetry::apply_retention(&tx, cutoff.saturating_mul(1_000_000))?;
                traces_dropped = telemetry::drop_key_runs(&tx, &trace_keys)?;
            }
            deleted += metrics::apply_retention(&tx, &cutoffs.metric)?;
            for (tier, cutoff) in [
                (Tier::Minute, cutoffs.minute),
                (Tier::Hour, cutoffs.hour),
                (Tier::Day, cutoffs.day),
            ] {
                if let Some(cutoff) = cutoff {
                    deleted += tx.execute(
                        "DELETE FROM rollups WHERE tier = ?1 AND bucket < ?2",
                        params![tier.code(), cutoff],
                    )?;
                }
            }
            tx.commit()?;
            keys.forget(&dropped);
            trace_keys.forget(&traces_dropped);
            Ok(deleted as u64)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.read(|conn| {
            let count = |sql: &str| -> Result<u64, rusqlite::Error> {
                conn.query_row(sql, [], |row| row.get::<_, i64>(0)).map(|n| n as u64)
            };
            Ok(StoreStats {
                calls: count("SELECT coalesce(sum(calls), 0) FROM call_chunks")?,
                series: count("SELECT COUNT(*) FROM series")?,
                rollup_rows: count("SELECT COUNT(*) FROM rollups")?,
                spans: count("SELECT coalesce(sum(spans), 0) FROM span_chunks")?,
                logs: count("SELECT COUNT(*) FROM logs")?,
            })
        })
        .await
    }
}
