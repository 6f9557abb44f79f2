//! The SQLite schema. `call_chunks` is the audit trail, a run of calls to a
//! row, and `call_key_runs`/`call_key_blocks` the index of their keys. `series` names the rollup
//! keys; `rollups` holds flushed buckets of every tier. `span_chunks` keeps spans a trace's batch to a
//! row, `logs` keeps log records whole (as JSON), each with the columns they
//! are found by; `traces` sums each trace.

use rusqlite::OptionalExtension;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS series (
    id        INTEGER PRIMARY KEY,
    project   TEXT NOT NULL,
    model     TEXT NOT NULL,
    provider  TEXT,
    operation TEXT NOT NULL,
    user      TEXT,
    api_key   TEXT,
    route     TEXT,
    status    TEXT NOT NULL,
    cluster   TEXT,
    tags      TEXT NOT NULL,
    -- the dimension a projection series totals by ('' = project total)
    projection TEXT
);

-- calls, a run of an append's calls to a row (call_chunks.rs): one
-- project, consecutive seqs, times within one second unless the run is
-- sparse; found by time through the (max_time) index
CREATE TABLE IF NOT EXISTS call_chunks (
    first_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    project   TEXT NOT NULL,
    calls     INTEGER NOT NULL,
    min_time  INTEGER NOT NULL,
    max_time  INTEGER NOT NULL,
    -- each call's seq and time offsets, series, id, session and payload
    body      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS call_chunks_max_time ON call_chunks (max_time);

-- zstd dictionaries span bodies are packed with (span_packing.rs), in the
-- order they were trained; `id` is the one zstd writes into each frame
CREATE TABLE IF NOT EXISTS span_dictionaries (
    seq        INTEGER PRIMARY KEY,
    id         INTEGER NOT NULL UNIQUE,
    dictionary BLOB NOT NULL
);

-- the idempotency index in runs (key_runs.rs): each run the keys of the
-- calls stored between two flushes, as (hash, seq) sorted by hash in blocks
-- of about a thousand, with a filter of the hashes it holds
CREATE TABLE IF NOT EXISTS call_key_runs (
    id       INTEGER PRIMARY KEY,
    -- the latest time of a call in the run: retention drops the run after it
    max_time INTEGER NOT NULL,
    keys     INTEGER NOT NULL,
    filter   BLOB NOT NULL
);
-- (a rowid table: a block is larger than a page, and a table without
-- rowids compares whole rows, overflow and all, as a lookup searches it)
CREATE TABLE IF NOT EXISTS call_key_blocks (
    run        INTEGER NOT NULL,
    first_hash INTEGER NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (run, first_hash)
);

-- the index of stored traces, as call_key_runs: each run the (project,
-- trace id) hashes of traces first stored between two flushes, with their
-- rows; max_time is the highest row in the run
CREATE TABLE IF NOT EXISTS trace_key_runs (
    id       INTEGER PRIMARY KEY,
    max_time INTEGER NOT NULL,
    keys     INTEGER NOT NULL,
    filter   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trace_key_blocks (
    run        INTEGER NOT NULL,
    first_hash INTEGER NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (run, first_hash)
);

CREATE TABLE IF NOT EXISTS rollups (
    tier               INTEGER NOT NULL,
    bucket             INTEGER NOT NULL,
    series             INTEGER NOT NULL,
    requests           INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    total_tokens       INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    errors             INTEGER NOT NULL,
    estimated          INTEGER NOT NULL,
    unpriced           INTEGER NOT NULL,
    cost_usd           REAL NOT NULL,
    reported_cost_usd  REAL NOT NULL,
    latency            BLOB NOT NULL,
    ttft               BLOB NOT NULL,
    PRIMARY KEY (tier, bucket, series)
) WITHOUT ROWID;

-- one row per trace per append, holding that trace's new spans: `head`
-- the fields lists, filters and statistics read, `body` the rest
-- (span_chunks.rs); spans re-sent are found by reading their trace's heads
CREATE TABLE IF NOT EXISTS span_chunks (
    seq       INTEGER PRIMARY KEY,
    project   TEXT NOT NULL,
    trace_id  TEXT NOT NULL,
    -- the least and greatest start of its spans
    min_start INTEGER NOT NULL,
    max_start INTEGER NOT NULL,
    spans     INTEGER NOT NULL,
    head      BLOB NOT NULL,
    body      BLOB NOT NULL,
    -- the trace's row in `traces` (its id): trace ids are random, rowids
    -- grow, so a new trace's chunks go at the end of the index below
    -- rather than each on a page of its own
    trace     INTEGER
);
-- `spans` too, so that counting the spans stored reads the index
CREATE INDEX IF NOT EXISTS span_chunks_by_trace ON span_chunks (trace, spans);

-- span chunks are found by start time through blocks of consecutive seqs
-- (span_blocks.rs), not through an index entry per chunk
CREATE TABLE IF NOT EXISTS span_blocks (
    id        INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    min_start INTEGER NOT NULL,
    max_start INTEGER NOT NULL,
    -- the block's spans by project, service and kind (span_blocks.rs;
    -- NULL in blocks written before schema 14: read span by span)
    kinds     BLOB
);
CREATE INDEX IF NOT EXISTS span_blocks_max_start ON span_blocks (max_start);
-- the durations of a block's spans by project, service and kind, and by
-- project, service and model (span_blocks.rs), in tables of their own so
-- that reading blocks' times and counts does not read them too; no row
-- for a block written before schema 15, or of too many groups
CREATE TABLE IF NOT EXISTS span_block_kind_durations (
    block INTEGER PRIMARY KEY,
    sums  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS span_block_model_durations (
    block INTEGER PRIMARY KEY,
    sums  BLOB NOT NULL
);
-- what statistics read of each span of a block (span_timings.rs); no row
-- for a block written before schema 17: its chunks are read
CREATE TABLE IF NOT EXISTS span_block_timings (
    block   INTEGER PRIMARY KEY,
    timings BLOB NOT NULL
);

-- One row per trace, kept up to date as its spans arrive, so that listing
-- traces reads one row each.
CREATE TABLE IF NOT EXISTS traces (
    id           INTEGER PRIMARY KEY,
    project      TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    -- the root span (no parent) if it arrived, else the earliest span
    has_root     INTEGER NOT NULL,
    root_name    TEXT NOT NULL,
    root_service TEXT NOT NULL,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    error_count  INTEGER NOT NULL,
    llm_calls    INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cost_usd     REAL NOT NULL,
    user         TEXT,
    session      TEXT,
    -- spans that arrived once the trace held its cap, not kept
    dropped_spans INTEGER NOT NULL DEFAULT 0
);
-- a rowid table, numbered in arrival order (rows are never given again):
-- traces are found by id through trace_key_runs (key_runs.rs), by start
-- through blocks of consecutive rows (trace_blocks.rs), and a trace's
-- chunks by its row
CREATE INDEX IF NOT EXISTS traces_session ON traces (project, session) WHERE session IS NOT NULL;

-- runs of one project's trace rows whose starts lie in one minute (a
-- trace's start can later move back: min_start follows it)
CREATE TABLE IF NOT EXISTS trace_blocks (
    first_id  INTEGER PRIMARY KEY,
    last_id   INTEGER NOT NULL,
    project   TEXT NOT NULL,
    min_start INTEGER NOT NULL,
    max_start INTEGER NOT NULL,
    traces    INTEGER NOT NULL,
    -- the traces by root service: durations, error traces, cost (postcard;
    -- NULL in blocks written before schema 16, or cut by retention: read
    -- row by row)
    sums      BLOB
);
-- (holding every column lists and window reads need: the blocks' sums make
-- the table's rows several times larger)
CREATE INDEX IF NOT EXISTS trace_blocks_by_start
    ON trace_blocks (project, max_start, min_start, last_id);

CREATE TABLE IF NOT EXISTS metric_series (
    id      INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    name    TEXT NOT NULL,
    tags    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS metric_bins (
    tier    INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    series  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    sum     REAL NOT NULL,
    min     REAL NOT NULL,
    max     REAL NOT NULL,
    last    REAL NOT NULL,
    last_ms INTEGER NOT NULL,
    sketch  BLOB NOT NULL,
    PRIMARY KEY (tier, series, bucket)
) WITHOUT ROWID;

-- each commit's 10 s metric bins, until a flush has merged them into
-- metric_bins (the open bins are rebuilt from these after a crash); seqs
-- never repeat, even once a flush has emptied the table
CREATE TABLE IF NOT EXISTS metric_log (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    bins BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS logs (
    seq      INTEGER PRIMARY KEY,
    project  TEXT NOT NULL,
    time_ns  INTEGER NOT NULL,
    trace_id TEXT,
    severity INTEGER NOT NULL,
    -- the whole LogRecord as JSON
    record   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (project, trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_time ON logs (project, time_ns);

-- budgets: the checked definition as JSON (budgets/rule.rs)
CREATE TABLE IF NOT EXISTS budgets (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    name       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    definition TEXT NOT NULL
) WITHOUT ROWID;

-- one row per threshold crossed per period; the body and its signature are
-- fixed when the alert is recorded, so every delivery sends the same bytes
CREATE TABLE IF NOT EXISTS alerts (
    id           INTEGER PRIMARY KEY,
    budget_id    TEXT NOT NULL,
    threshold    REAL NOT NULL,
    period_start INTEGER NOT NULL,
    crossed_ms   INTEGER NOT NULL,
    body         TEXT NOT NULL,
    signature    TEXT NOT NULL,
    UNIQUE (budget_id, period_start, threshold)
);
CREATE INDEX IF NOT EXISTS alerts_crossed ON alerts (budget_id, crossed_ms);

-- one row per alert and webhook URL
CREATE TABLE IF NOT EXISTS deliveries (
    id           INTEGER PRIMARY KEY,
    alert_id     INTEGER NOT NULL,
    url          TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    next_ms      INTEGER,
    last_error   TEXT,
    delivered_ms INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries (alert_id);
"#;

/// Bumped on every incompatible change; a store of another version is
/// refused rather than misread.
pub const VERSION: i64 = 17;

/// Creates the schema in a new database, checks an existing one's version,
/// or migrates a store of schema 5 to 16 (in one transaction).
pub fn create_or_check(conn: &rusqlite::Connection) -> Result<(), super::StorageError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |row| {
            row.get(0)
        })?;
    if tables > 0 && version != VERSION && !(5..=16).contains(&version) {
        return Err(super::StorageError::SchemaVersion { found: version, needed: VERSION });
    }
    // Schema 14 needs only what schemas 15 to 17 change (below).
    let migrating = tables > 0 && version < 14;
    let tx = conn.unchecked_transaction()?;
    let key_blocks = set_key_blocks_aside(&tx)?;
    let span_blocks_aside = set_span_blocks_aside(&tx)?;
    // Schema 6 added span blocks over the rows of `spans`; the move into
    // chunks below rebuilds them for 5 and 6 alike.
    let old_traces = migrating && set_traces_aside(&tx)?;
    if migrating && has_table(&tx, "span_chunks")? && !has_column(&tx, "span_chunks", "trace")? {
        // Schema 13 finds a trace's chunks by its row (filled in below).
        tx.execute_batch("ALTER TABLE span_chunks ADD COLUMN trace INTEGER")?;
    }
    tx.execute_batch(SCHEMA)?;
    if !has_column(&tx, "span_blocks", "kinds")? {
        // Schema 14 counts a span block's spans by kind.
        tx.execute_batch("ALTER TABLE span_blocks ADD COLUMN kinds BLOB")?;
    }
    if span_blocks_aside {
        tx.execute_batch(
            "INSERT INTO span_blocks (id, first_seq, last_seq, min_start, max_start, kinds) \
             SELECT id, first_seq, last_seq, min_start, max_start, kinds FROM span_blocks_v16;
             INSERT INTO span_block_kind_durations (block, sums) \
             SELECT id, kind_durations FROM span_blocks_v16 WHERE kind_durations IS NOT NULL;
             INSERT INTO span_block_model_durations (block, sums) \
             SELECT id, model_durations FROM span_blocks_v16 WHERE model_durations IS NOT NULL;
             DROP TABLE span_blocks_v16;",
        )?;
    }
    for table in key_blocks {
        tx.execute_batch(&format!(
            "INSERT INTO {table} (run, first_hash, body) \
             SELECT run, first_hash, body FROM {table}_v15;
             DROP TABLE {table}_v15;"
        ))?;
    }
    if !has_column(&tx, "trace_blocks", "sums")? {
        // Schema 16 sums a trace block's traces, and its index on start
        // holds what lists and window reads need of a block.
        tx.execute_batch(
            "ALTER TABLE trace_blocks ADD COLUMN sums BLOB;
             DROP INDEX trace_blocks_by_start;
             CREATE INDEX trace_blocks_by_start \
             ON trace_blocks (project, max_start, min_start, last_id);",
        )?;
    }
    if migrating && !has_column(&tx, "traces", "dropped_spans")? {
        // Schema 10 counts the spans a trace did not keep.
        tx.execute_batch("ALTER TABLE traces ADD COLUMN dropped_spans INTEGER NOT NULL DEFAULT 0")?;
    }
    if migrating {
        // Schema 12 writes a chunk's calls as columns (`call_columns`); the
        // calls of schema 8 and before move straight into them.
        super::call_chunks::migrate_bodies(&tx)?;
        super::call_chunks::migrate_rows(&tx)?;
        // Schema 11 indexes call keys in runs, built from the calls when
        // the store opens (`key_runs`), not in a table of key texts.
        tx.execute_batch("DROP TABLE IF EXISTS call_keys")?;
    }
    if migrating && version <= 7 {
        super::span_chunks::migrate_from_7(&tx)?;
    }
    if old_traces {
        tx.execute_batch(&format!(
            "INSERT INTO traces ({TRACE_COLUMNS}) SELECT {TRACE_COLUMNS} FROM traces_v7;
             DROP TABLE traces_v7;"
        ))?;
    }
    if migrating {
        // (Through the id index stores before schema 14 have; made for
        // those before schema 8, dropped below.)
        tx.execute_batch(
            "CREATE INDEX IF NOT EXISTS traces_id ON traces (project, trace_id);
             UPDATE span_chunks SET trace = (SELECT t.id FROM traces t \
             WHERE t.project = span_chunks.project AND t.trace_id = span_chunks.trace_id) \
             WHERE trace IS NULL;
             DROP INDEX IF EXISTS span_chunks_trace;",
        )?;
        // Schema 14 finds traces by start through blocks of rows, and by
        // id through runs of keys (built when the store opens).
        if version <= 13 {
            tx.execute_batch(
                "DROP INDEX IF EXISTS traces_start; DROP INDEX IF EXISTS traces_id;
                 DELETE FROM trace_blocks;",
            )?;
            super::trace_blocks::build(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Whether the store has a table named `table`.
pub(super) fn has_table(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
) -> Result<bool, rusqlite::Error> {
    tx.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn has_column(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
) -> Result<bool, rusqlite::Error> {
    tx.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Renames the key block tables that have no rowids (before schema 16) to
/// `<table>_v15`, so that the schema makes the rowid tables their rows are
/// then copied into. Returns those it renamed.
fn set_key_blocks_aside(
    tx: &rusqlite::Transaction<'_>,
) -> Result<Vec<&'static str>, rusqlite::Error> {
    let mut aside = Vec::new();
    for table in ["call_key_blocks", "trace_key_blocks"] {
        if table_sql(tx, table)?.is_some_and(|sql| sql.contains("WITHOUT ROWID")) {
            tx.execute_batch(&format!("ALTER TABLE {table} RENAME TO {table}_v15"))?;
            aside.push(table);
        }
    }
    Ok(aside)
}

/// Renames a `span_blocks` table that keeps its blocks' durations in their
/// rows (schemas 15 and 16) to `span_blocks_v16` and drops its index, so
/// that the schema makes it anew without them (schema 17 keeps them in
/// tables of their own, and the blocks' rows narrow and packed: dropping
/// the columns in place would leave the table its old size).
fn set_span_blocks_aside(tx: &rusqlite::Transaction<'_>) -> Result<bool, rusqlite::Error> {
    if !has_column(tx, "span_blocks", "kind_durations")? {
        return Ok(false);
    }
    tx.execute_batch(
        "DROP INDEX span_blocks_max_start; ALTER TABLE span_blocks RENAME TO span_blocks_v16;",
    )?;
    Ok(true)
}

/// The statement that made `table`, if the store has it.
fn table_sql(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
) -> Result<Option<String>, rusqlite::Error> {
    tx.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
        r.get(0)
    })
    .optional()
}

/// The columns `traces` has had since schema 5.
const TRACE_COLUMNS: &str = "project, trace_id, has_root, root_name, root_service, start_ns, \
    end_ns, span_count, error_count, llm_calls, input_tokens, output_tokens, \
    cache_read_tokens, cost_usd, user, session";

/// Renames a `traces` table keyed by (project, trace id) (before schema 8)
/// to `traces_v7` and drops its indexes, so that the schema makes the rowid
/// table its rows are then copied into. Returns whether it did.
fn set_traces_aside(tx: &rusqlite::Transaction<'_>) -> Result<bool, rusqlite::Error> {
    if !table_sql(tx, "traces")?.is_some_and(|sql| sql.contains("WITHOUT ROWID")) {
        return Ok(false);
    }
    tx.execute_batch(
        "ALTER TABLE traces RENAME TO traces_v7;
         DROP INDEX IF EXISTS traces_start;
         DROP INDEX IF EXISTS traces_session;
         DROP INDEX IF EXISTS traces_id;",
    )?;
    Ok(true)
}

/// The spans table and its index as schema 7 had them (for tests that
/// build older stores).
#[cfg(test)]
pub const SPANS_V7: &str = "CREATE TABLE spans (
        seq INTEGER PRIMARY KEY, project TEXT NOT NULL, trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
        name TEXT NOT NULL, service TEXT NOT NULL, kind TEXT NOT NULL, model TEXT,
        error INTEGER NOT NULL, record TEXT NOT NULL);
    CREATE UNIQUE INDEX spans_id ON spans (project, trace_id, span_id);";

/// The calls table and its blocks as schema 8 had them (for tests that
/// build older stores).
#[cfg(test)]
pub const CALLS_V8: &str = "CREATE TABLE calls (
        seq INTEGER PRIMARY KEY, project TEXT NOT NULL, id TEXT, series INTEGER NOT NULL,
        time_ms INTEGER NOT NULL, session TEXT, span_ref TEXT, payload BLOB NOT NULL);
    CREATE UNIQUE INDEX calls_project_id ON calls (project, id) WHERE id IS NOT NULL;
    CREATE UNIQUE INDEX calls_project_span ON calls (project, span_ref)
        WHERE span_ref IS NOT NULL;
    CREATE TABLE call_blocks (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,
        calls INTEGER NOT NULL, min_time INTEGER NOT NULL, max_time INTEGER NOT NULL);";

pub const WATERMARK_KEY: &str = "rollup_watermark";
/// The meta key of the highest call seq ever used (kept when retention
/// deletes calls).
pub const CALL_SEQ_FLOOR_KEY: &str = "call_seq_floor";
/// The meta key of the highest trace row ever given (rows are not given
/// again, so that a key run's rows stay its own).
pub const TRACE_ROW_FLOOR_KEY: &str = "trace_row_floor";
/// The meta key of the last logged metric commit in `metric_bins`.
pub const METRIC_WATERMARK_KEY: &str = "metric_watermark";

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_schema_7_store_gets_its_traces_in_a_rowid_table() {
        let conn = Connection::open_in_memory().unwrap();
        create_or_check(&conn).unwrap();
        // Back to schema 7: a row per span, traces keyed by (project, trace id).
        conn.execute_batch(&format!(
            "DROP TABLE span_chunks; DROP TABLE traces; {SPANS_V7}
             CREATE TABLE traces (project TEXT NOT NULL, trace_id TEXT NOT NULL,
                 has_root INTEGER NOT NULL, root_name TEXT NOT NULL,
                 root_service TEXT NOT NULL, start_ns INTEGER NOT NULL,
                 end_ns INTEGER NOT NULL, span_count INTEGER NOT NULL,
                 error_count INTEGER NOT NULL, llm_calls INTEGER NOT NULL,
                 input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
                 cache_read_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, user TEXT,
                 session TEXT, PRIMARY KEY (project, trace_id)) WITHOUT ROWID;
             CREATE INDEX traces_start ON traces (project, start_ns);
             CREATE INDEX traces_session ON traces (project, session) WHERE session IS NOT NULL;
             INSERT INTO traces VALUES ('default', 'a1', 1, 'root', 'svc', 10, 20, 3, 1, 1, 5, 6,
                 2, 0.5, 'alice', 'chat-1');
             PRAGMA user_version = 7;"
        ))
        .unwrap();
        create_or_check(&conn).unwrap();
        let sql: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'traces'", [], |r| r.get(0))
            .unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        let row: (String, i64, f64, String) = conn
            .query_row(
                "SELECT root_name, span_count, cost_usd, session FROM traces \
                 WHERE project = 'default' AND trace_id = 'a1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("root".to_owned(), 3, 0.5, "chat-1".to_owned()));
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'traces' \
                 AND name IN ('traces_id', 'traces_start', 'traces_session')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Traces are found by start through blocks of rows now, and by id
        // through runs of keys.
        assert_eq!(indexes, 1);
        assert_eq!(super::super::trace_blocks::all(&conn), [(1, 1, "default".into(), 10, 10, 1)]);
        let old: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'traces_v7'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(old, 0);
    }

    #[test]
    fn a_schema_9_store_gets_the_dropped_spans_column() {
        let conn = Connection::open_in_memory().unwrap();
        create_or_check(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO traces (project, trace_id, has_root, root_name, root_service, start_ns,
                 end_ns, span_count, error_count, llm_calls, input_tokens, output_tokens,
                 cache_read_tokens, cost_usd) VALUES ('default', 'a1', 1, 'root', 'svc', 10, 20,
                 3, 0, 1, 5, 6, 0, 0.5);
             ALTER TABLE traces DROP COLUMN dropped_spans;
             PRAGMA user_version = 9;",
        )
        .unwrap();
        create_or_check(&conn).unwrap();
        let row: (i64, i64) = conn
            .query_row(
                "SELECT span_count, dropped_spans FROM traces WHERE trace_id = 'a1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(row, (3, 0));
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, VERSION);
    }
}
