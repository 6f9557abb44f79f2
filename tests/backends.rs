//! The database servers a scaled-out Tally runs over, started for real
//! (`tests/common/clickhouse.rs`, `tests/common/postgres.rs`): what the
//! ClickHouse storage and the PostgreSQL coordination rely on, proven on the
//! servers the tests use (Debian's ClickHouse 18.16 and PostgreSQL 15) through
//! the client crates Tally uses (`clickhouse`, `tokio-postgres`).
//!
//! ClickHouse: day partitions filled by `RowBinary` and `JSONEachRow` inserts
//! and read back typed; `ReplacingMergeTree` + `FINAL` counting a re-sent
//! block once; `AggregatingMergeTree` states and `SummingMergeTree` rows
//! written by two nodes adding up; `DROP PARTITION` for retention; and plain
//! `MergeTree` keeping both copies of an identical block. PostgreSQL: batched
//! `INSERT … ON CONFLICT DO NOTHING RETURNING` claims telling each of several
//! racing nodes which ids are its own, and `SELECT … FOR UPDATE` letting
//! exactly a budget's room through 64 racing reservations. Both servers
//! stop, crash and restart with their data, as the outage tests need.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::{Client, Row};
use common::clickhouse::{ClickHouse, merge_fully};
use common::postgres::Postgres;
use serde::{Deserialize, Serialize};

/// 2024-01-01 00:00:00 UTC.
const JAN_1: u32 = 1_704_067_200;
const DAY_S: u32 = 86_400;
/// 2024-01-01 as a ClickHouse `Date` (days since 1970-01-01).
const JAN_1_DAYS: u16 = 19_723;

/// The setting ClickHouse 18.16 needs on a `CREATE TABLE` with
/// `LowCardinality` columns; later servers removed it (LowCardinality is no
/// longer experimental) and reject unknown settings, so send it to 18.x only.
const LOW_CARDINALITY_18: (&str, &str) = ("allow_experimental_low_cardinality_type", "1");

async fn exec(client: &Client, sql: &str) {
    client.query(sql).execute().await.unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// A started server and a client on a new database `tally`.
async fn clickhouse_with_database() -> (ClickHouse, Client) {
    let server = ClickHouse::start();
    let client = server.client();
    exec(&client, "CREATE DATABASE IF NOT EXISTS tally").await;
    (server, client.with_database("tally"))
}

/// The active parts' rows per partition of `table` in `tally`.
async fn rows_per_partition(client: &Client, table: &str) -> Vec<(String, u64)> {
    client
        .query(
            "SELECT partition, sum(rows) FROM system.parts \
             WHERE database = 'tally' AND table = ? AND active \
             GROUP BY partition ORDER BY partition",
        )
        .bind(table)
        .fetch_all::<(String, u64)>()
        .await
        .expect("read system.parts")
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct Call {
    /// `DateTime`: seconds since the epoch.
    time: u32,
    project: String,
    id: String,
    tokens: u64,
    cost_micros: i64,
}

fn call(time: u32, project: &str, id: &str, tokens: u64) -> Call {
    Call { time, project: project.into(), id: id.into(), tokens, cost_micros: tokens as i64 * 3 }
}

async fn create_calls(client: &Client, engine: &str) {
    let ddl = format!(
        "CREATE TABLE calls (
            time DateTime,
            project LowCardinality(String),
            id String,
            tokens UInt64,
            cost_micros Int64
        ) ENGINE = {engine}
        PARTITION BY toYYYYMMDD(time)
        ORDER BY (project, time, id)"
    );
    client
        .query(&ddl)
        .with_setting(LOW_CARDINALITY_18.0, LOW_CARDINALITY_18.1)
        .execute()
        .await
        .unwrap_or_else(|err| panic!("{ddl}: {err}"));
}

async fn insert_calls(client: &Client, rows: &[Call]) {
    let mut insert = client.insert::<Call>("calls").await.expect("start insert");
    for row in rows {
        insert.write(row).await.expect("write row");
    }
    insert.end().await.expect("end insert");
}

async fn all_calls(client: &Client) -> Vec<Call> {
    client
        .query("SELECT ?fields FROM calls ORDER BY time, id")
        .fetch_all::<Call>()
        .await
        .expect("read calls")
}

#[tokio::test]
async fn day_partitions_take_row_binary_and_json_each_row_and_read_back_typed() {
    let (_server, client) = clickhouse_with_database().await;
    create_calls(&client, "MergeTree").await;

    // RowBinary through the crate's insert (LZ4-compressed, `decompress=1`).
    let binary = vec![
        call(JAN_1 + 10, "web", "a", 100),
        call(JAN_1 + 20, "batch", "b", 200),
        call(JAN_1 + DAY_S, "web", "c", 300),
    ];
    insert_calls(&client, &binary).await;

    // JSONEachRow, with `DateTime` as epoch seconds.
    let json =
        vec![call(JAN_1 + DAY_S + 5, "web", "d", 400), call(JAN_1 + 2 * DAY_S, "batch", "e", 500)];
    let body: String =
        json.iter().map(|row| serde_json::to_string(row).expect("json") + "\n").collect();
    let mut insert = client.insert_formatted_with("INSERT INTO calls FORMAT JSONEachRow");
    insert.send(body.into()).await.expect("send JSONEachRow");
    insert.end().await.expect("end JSONEachRow insert");

    let mut expected = [binary, json].concat();
    expected.sort_by_key(|row| (row.time, row.id.clone()));
    assert_eq!(all_calls(&client).await, expected);
    assert_eq!(
        rows_per_partition(&client, "calls").await,
        [("20240101".to_owned(), 2), ("20240102".to_owned(), 2), ("20240103".to_owned(), 1)]
    );

    // A typed aggregate over the LowCardinality column.
    let per_project = client
        .query("SELECT project, sum(tokens), count() FROM calls GROUP BY project ORDER BY project")
        .fetch_all::<(String, u64, u64)>()
        .await
        .expect("aggregate");
    assert_eq!(per_project, [("batch".to_owned(), 700, 2), ("web".to_owned(), 800, 3)]);
}

#[tokio::test]
async fn replacing_merge_tree_counts_a_resent_block_once_with_final() {
    let (_server, client) = clickhouse_with_database().await;
    // The idempotency key is the sorting key: (node, sequence) in Tally.
    exec(
        &client,
        "CREATE TABLE shipped (node String, seq UInt64, tokens UInt64)
         ENGINE = ReplacingMergeTree PARTITION BY tuple() ORDER BY (node, seq)",
    )
    .await;
    #[derive(Row, Serialize, Deserialize)]
    struct Shipped {
        node: String,
        seq: u64,
        tokens: u64,
    }
    let block = |seqs: std::ops::Range<u64>| -> Vec<Shipped> {
        seqs.map(|seq| Shipped { node: "node-a".into(), seq, tokens: seq * 10 }).collect()
    };
    let insert = |rows: Vec<Shipped>| {
        let client = client.clone();
        async move {
            let mut insert = client.insert::<Shipped>("shipped").await.expect("start insert");
            for row in &rows {
                insert.write(row).await.expect("write");
            }
            insert.end().await.expect("end insert");
        }
    };
    // Shipped, then shipped again after a crash before the local mark,
    // together with newer records.
    insert(block(0..100)).await;
    insert(block(0..150)).await;

    let expected_tokens: u64 = (0..150).map(|seq| seq * 10).sum();
    let totals = |modifier: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(&format!("SELECT count(), sum(tokens) FROM shipped {modifier}"))
                .fetch_one::<(u64, u64)>()
                .await
                .expect("totals")
        }
    };
    assert_eq!(totals("FINAL").await, (150, expected_tokens));

    // A merge keeps one row per key, so plain reads agree once merged.
    merge_fully(&client, "tally", "shipped").await;
    assert_eq!(totals("").await, (150, expected_tokens));
}

#[tokio::test]
async fn aggregate_states_written_by_two_nodes_merge_into_the_exact_totals() {
    let (_server, client) = clickhouse_with_database().await;
    exec(
        &client,
        "CREATE TABLE spans (time DateTime, model String, duration_ms Float64, tokens UInt64)
         ENGINE = MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (model, time)",
    )
    .await;
    exec(
        &client,
        "CREATE TABLE spans_hourly (
            bucket DateTime,
            model String,
            calls AggregateFunction(count),
            tokens AggregateFunction(sum, UInt64),
            latency AggregateFunction(quantiles(0.5, 0.99), Float64)
        ) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMMDD(bucket) ORDER BY (model, bucket)",
    )
    .await;
    // Each insert into `spans` writes its own partial states for the buckets
    // it touches, as each node's shipped block would.
    exec(
        &client,
        "CREATE MATERIALIZED VIEW spans_hourly_mv TO spans_hourly AS
         SELECT toStartOfHour(time) AS bucket, model, countState() AS calls,
                sumState(tokens) AS tokens, quantilesState(0.5, 0.99)(duration_ms) AS latency
         FROM spans GROUP BY bucket, model",
    )
    .await;

    #[derive(Row, Serialize, Deserialize)]
    struct Span {
        time: u32,
        model: String,
        duration_ms: f64,
        tokens: u64,
    }
    let node_block = |node: u64| -> Vec<Span> {
        (0..300)
            .map(|i| Span {
                time: JAN_1 + (i as u32 * 37 + node as u32 * 11) % (3 * 3600),
                model: ["gpt-4o", "claude"][(i % 2) as usize].into(),
                duration_ms: ((i * 7919 + node * 104_729) % 1000) as f64 + 0.25,
                tokens: i + node * 1000,
            })
            .collect()
    };
    let mut expected: BTreeMap<(u32, String), (u64, u64)> = BTreeMap::new();
    for node in [1, 2] {
        let rows = node_block(node);
        for row in &rows {
            let entry = expected.entry((row.time / 3600 * 3600, row.model.clone())).or_default();
            entry.0 += 1;
            entry.1 += row.tokens;
        }
        let mut insert = client.insert::<Span>("spans").await.expect("start insert");
        for row in &rows {
            insert.write(row).await.expect("write");
        }
        insert.end().await.expect("end insert");
    }

    #[derive(Debug, PartialEq, Row, Deserialize)]
    struct Rolled {
        bucket: u32,
        model: String,
        calls: u64,
        tokens: u64,
        latency: Vec<f64>,
    }
    let merged_sql = "SELECT bucket, model, countMerge(calls), sumMerge(tokens), \
                      quantilesMerge(0.5, 0.99)(latency) \
                      FROM spans_hourly GROUP BY bucket, model ORDER BY bucket, model";
    let merged = client.query(merged_sql).fetch_all::<Rolled>().await.expect("merge states");
    // The same figures computed from the raw rows in one pass.
    let raw = client
        .query(
            "SELECT toStartOfHour(time) AS bucket, model, count(), sum(tokens), \
             quantiles(0.5, 0.99)(duration_ms) \
             FROM spans GROUP BY bucket, model ORDER BY bucket, model",
        )
        .fetch_all::<Rolled>()
        .await
        .expect("raw aggregate");
    assert_eq!(merged.len(), expected.len());
    for (row, ((bucket, model), (calls, tokens))) in merged.iter().zip(&expected) {
        assert_eq!(
            (row.bucket, &row.model, row.calls, row.tokens),
            (*bucket, model, *calls, *tokens)
        );
    }
    assert_eq!(
        merged, raw,
        "quantiles merged from two nodes' states equal one pass over the raw rows"
    );

    // The engine's own merge folds the partial rows into one per key and
    // keeps the same answer.
    merge_fully(&client, "tally", "spans_hourly").await;
    let rows =
        client.query("SELECT count() FROM spans_hourly").fetch_one::<u64>().await.expect("count");
    assert_eq!(rows as usize, expected.len());
    assert_eq!(client.query(merged_sql).fetch_all::<Rolled>().await.expect("merge states"), raw);
}

#[tokio::test]
async fn summing_merge_tree_adds_partial_rows_from_two_nodes() {
    let (_server, client) = clickhouse_with_database().await;
    exec(
        &client,
        "CREATE TABLE usage_daily (day Date, project String, calls UInt64, tokens UInt64)
         ENGINE = SummingMergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, project)",
    )
    .await;
    #[derive(Debug, PartialEq, Row, Serialize, Deserialize)]
    struct Usage {
        /// `Date`: days since 1970-01-01.
        day: u16,
        project: String,
        calls: u64,
        tokens: u64,
    }
    let usage = |day: u16, project: &str, calls: u64, tokens: u64| Usage {
        day: JAN_1_DAYS + day,
        project: project.into(),
        calls,
        tokens,
    };
    let node_a = [usage(0, "web", 3, 300), usage(0, "batch", 1, 50), usage(1, "web", 2, 20)];
    let node_b = [usage(0, "web", 4, 400), usage(1, "web", 5, 50), usage(1, "batch", 7, 70)];
    for block in [&node_a, &node_b] {
        let mut insert = client.insert::<Usage>("usage_daily").await.expect("start insert");
        for row in block {
            insert.write(row).await.expect("write");
        }
        insert.end().await.expect("end insert");
    }
    let expected = vec![
        usage(0, "batch", 1, 50),
        usage(0, "web", 7, 700),
        usage(1, "batch", 7, 70),
        usage(1, "web", 7, 70),
    ];
    let summed = client
        .query(
            "SELECT day, project, sum(calls) AS calls, sum(tokens) AS tokens \
             FROM usage_daily GROUP BY day, project ORDER BY day, project",
        )
        .fetch_all::<Usage>()
        .await
        .expect("sum");
    assert_eq!(summed, expected);

    merge_fully(&client, "tally", "usage_daily").await;
    let merged = client
        .query("SELECT ?fields FROM usage_daily ORDER BY day, project")
        .fetch_all::<Usage>()
        .await
        .expect("read merged rows");
    assert_eq!(merged, expected, "after a merge, one row per key holds the sums");
}

#[tokio::test]
async fn drop_partition_removes_exactly_one_day() {
    let (_server, client) = clickhouse_with_database().await;
    create_calls(&client, "MergeTree").await;
    let rows: Vec<Call> = (0..3u32)
        .flat_map(|day| {
            (0..4u32)
                .map(move |i| call(JAN_1 + day * DAY_S + i * 60, "web", &format!("{day}-{i}"), 1))
        })
        .collect();
    insert_calls(&client, &rows).await;

    exec(&client, "ALTER TABLE calls DROP PARTITION 20240102").await;
    // Dropping a partition that holds nothing is not an error, so retention
    // may repeat a drop after a crash.
    exec(&client, "ALTER TABLE calls DROP PARTITION 20240102").await;
    exec(&client, "ALTER TABLE calls DROP PARTITION 20231231").await;

    assert_eq!(
        rows_per_partition(&client, "calls").await,
        [("20240101".to_owned(), 4), ("20240103".to_owned(), 4)]
    );
    let left: Vec<Call> = rows
        .into_iter()
        .filter(|row| !(JAN_1 + DAY_S..JAN_1 + 2 * DAY_S).contains(&row.time))
        .collect();
    assert_eq!(all_calls(&client).await, left);
}

#[tokio::test]
async fn plain_merge_tree_keeps_both_copies_of_an_identical_block() {
    // `insert_deduplicate` only applies to Replicated* tables, and 18.16 has no
    // `non_replicated_deduplication_window`: re-sending a block to a plain
    // MergeTree doubles it. Exactly-once shipping needs an idempotent key and
    // a replacing engine (or FINAL / argMax reads), not block deduplication.
    let (_server, client) = clickhouse_with_database().await;
    create_calls(&client, "MergeTree").await;
    let block = vec![call(JAN_1, "web", "a", 1), call(JAN_1 + 1, "web", "b", 2)];
    insert_calls(&client, &block).await;
    let resend = client.clone().with_setting("insert_deduplicate", "1");
    insert_calls(&resend, &block).await;

    let ids: Vec<String> = all_calls(&client).await.into_iter().map(|row| row.id).collect();
    assert_eq!(ids, ["a", "a", "b", "b"]);
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"));
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("postgres connection: {err}");
        }
    });
    client
}

/// Claims `ids` for `node` in one statement; returns the ids this call
/// claimed first. Ids are sorted so racing batches lock rows in one order.
async fn claim(client: &tokio_postgres::Client, node: &str, ids: &[String]) -> BTreeSet<String> {
    let mut sorted = ids.to_vec();
    sorted.sort();
    client
        .query(
            "INSERT INTO claims (report_id, node)
             SELECT id, $2 FROM unnest($1::text[]) AS id
             ON CONFLICT (report_id) DO NOTHING
             RETURNING report_id",
            &[&sorted, &node],
        )
        .await
        .expect("claim")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn report_ids(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("report-{n:05}")).collect()
}

#[tokio::test]
async fn batched_claims_tell_racing_nodes_which_ids_are_new() {
    let server = Postgres::start();
    let url = server.fresh_database();
    let setup = connect(&url).await;
    setup
        .batch_execute(
            "CREATE TABLE claims (
                report_id text PRIMARY KEY,
                node text NOT NULL,
                claimed_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .expect("create claims");

    let first = claim(&setup, "node-0", &report_ids(0..100)).await;
    assert_eq!(first, report_ids(0..100).into_iter().collect());
    // A repeated id inside one batch is claimed once; old ids are not new.
    let mut repeated = report_ids(95..105);
    repeated.extend(report_ids(100..102));
    assert_eq!(
        claim(&setup, "node-0", &repeated).await,
        report_ids(100..105).into_iter().collect()
    );

    // Four nodes race overlapping batches, each on its own connection.
    let ranges = [(1, 50..300), (2, 200..400), (3, 0..450), (4, 380..500)];
    let mut tasks = Vec::new();
    for (node, range) in ranges {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let ids = report_ids(range);
            (format!("node-{node}"), claim(&client, &format!("node-{node}"), &ids).await)
        }));
    }
    let mut claimed_by: BTreeMap<String, String> = BTreeMap::new();
    for task in tasks {
        let (node, ids) = task.await.expect("claim task");
        for id in ids {
            if let Some(other) = claimed_by.insert(id.clone(), node.clone()) {
                panic!("{id} claimed by both {other} and {node}");
            }
        }
    }
    assert_eq!(claimed_by.keys().cloned().collect::<Vec<_>>(), report_ids(105..500));

    // The table agrees with what each node was told.
    let rows = setup
        .query("SELECT report_id, node FROM claims WHERE report_id >= $1", &[&"report-00105"])
        .await
        .expect("read");
    let stored: BTreeMap<String, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(stored, claimed_by);
}

#[tokio::test]
async fn select_for_update_lets_exactly_the_budgets_room_through() {
    const ROOM: i64 = 10;
    const CONNECTIONS: usize = 16;
    const ATTEMPTS_EACH: usize = 4;

    let server = Postgres::start();
    let url = server.fresh_database();
    let setup = connect(&url).await;
    setup
        .batch_execute(
            "CREATE TABLE budgets (id text PRIMARY KEY, remaining bigint NOT NULL);
             CREATE TABLE reservations (id bigserial PRIMARY KEY, budget text NOT NULL, holder text NOT NULL);",
        )
        .await
        .expect("create tables");
    setup
        .execute("INSERT INTO budgets VALUES ('monthly', $1)", &[&ROOM])
        .await
        .expect("insert budget");

    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            let mut allowed = 0;
            for attempt in 0..ATTEMPTS_EACH {
                let transaction = client.transaction().await.expect("begin");
                let remaining: i64 = transaction
                    .query_one("SELECT remaining FROM budgets WHERE id = 'monthly' FOR UPDATE", &[])
                    .await
                    .expect("lock budget")
                    .get(0);
                if remaining < 1 {
                    transaction.rollback().await.expect("rollback");
                    continue;
                }
                transaction
                    .execute(
                        "UPDATE budgets SET remaining = remaining - 1 WHERE id = 'monthly'",
                        &[],
                    )
                    .await
                    .expect("reserve");
                transaction
                    .execute(
                        "INSERT INTO reservations (budget, holder) VALUES ('monthly', $1)",
                        &[&format!("{connection}-{attempt}")],
                    )
                    .await
                    .expect("record reservation");
                transaction.commit().await.expect("commit");
                allowed += 1;
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.expect("reservation task");
    }
    assert_eq!(
        allowed,
        ROOM,
        "{} reservations raced for room for {ROOM}",
        CONNECTIONS * ATTEMPTS_EACH
    );
    let remaining: i64 = setup
        .query_one("SELECT remaining FROM budgets WHERE id = 'monthly'", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(remaining, 0);
    let recorded: i64 =
        setup.query_one("SELECT count(*) FROM reservations", &[]).await.expect("count").get(0);
    assert_eq!(recorded, ROOM);
}

#[tokio::test]
async fn both_servers_stop_crash_and_restart_with_their_data() {
    let (mut clickhouse, client) = clickhouse_with_database().await;
    create_calls(&client, "MergeTree").await;
    let kept = [call(JAN_1, "web", "a", 1)];
    insert_calls(&client, &kept).await;

    clickhouse.stop();
    assert!(
        client.query("SELECT 1").fetch_one::<u8>().await.is_err(),
        "a stopped ClickHouse answered"
    );
    clickhouse.restart();
    // A client's pooled connections to the old process are dead, and the
    // first request on one fails (`IncompleteMessage`): a new client here,
    // a retry of the idempotent request in Tally.
    let client = clickhouse.client().with_database("tally");
    assert_eq!(all_calls(&client).await, kept);
    clickhouse.kill();
    clickhouse.restart();
    let client = clickhouse.client().with_database("tally");
    assert_eq!(all_calls(&client).await, kept, "an acknowledged insert survives SIGKILL");

    let mut postgres = Postgres::start();
    let url = postgres.fresh_database();
    connect(&url)
        .await
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7);")
        .await
        .expect("write");
    postgres.stop();
    assert!(
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(),
        "a stopped PostgreSQL answered"
    );
    postgres.restart();
    postgres.crash();
    postgres.restart();
    let id: i32 =
        connect(&url).await.query_one("SELECT id FROM kept", &[]).await.expect("read").get(0);
    assert_eq!(id, 7, "a committed row survives a crash");
}
