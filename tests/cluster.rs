//! Tally nodes running as a cluster (`tally serve --storage clickhouse://…
//! --coordination postgres://…`) over a real ClickHouse and a real
//! PostgreSQL, both started on free ports by tests/common: reports sent to
//! two nodes, overlapping, reach ClickHouse once each; a node keeps
//! acknowledging while ClickHouse is down and ships everything once it is
//! back, also after being SIGKILLed; while PostgreSQL is down a node
//! acknowledges nothing (it cannot tell a duplicate) and says why; past the
//! outbox bound it answers 503 and drops nothing; `/healthz` and `/metrics`
//! say what is wrong; every node answers usage queries as one SQLite node
//! given the same traffic does.

mod common;

use std::time::{Duration, Instant};

use common::clickhouse::ClickHouse;
use common::postgres::Postgres;
use common::{TestServer, chat, get, get_ok, now_ms, post_usage, tokens, with};
use serde_json::{Value, json};

/// The shared stores of one test, each in a fresh database.
struct Shared {
    clickhouse: ClickHouse,
    postgres: Postgres,
    database: String,
    storage: String,
    coordination: String,
    dir: tempfile::TempDir,
}

impl Shared {
    fn start() -> Shared {
        let clickhouse = ClickHouse::start();
        let postgres = Postgres::start();
        let coordination = postgres.fresh_database();
        let database = "tally_cluster".to_owned();
        let host = clickhouse.http_url().trim_start_matches("http://").to_owned();
        let storage = format!("clickhouse://{host}/{database}");
        let dir = tempfile::tempdir().unwrap();
        Shared { clickhouse, postgres, database, storage, coordination, dir }
    }

    /// A node on its own data dir, shipping every 200 ms unless `env` says
    /// otherwise.
    fn node(&self, name: &str, env: &[(&str, &str)]) -> TestServer {
        let mut defaults = vec![
            ("TALLY_CLUSTER__SHIP_INTERVAL", "200ms"),
            ("TALLY_CLUSTER__COORDINATION_TIMEOUT", "2s"),
            ("TALLY_CLUSTER__NODE", name),
        ];
        defaults.retain(|(k, _)| !env.iter().any(|(given, _)| given == k));
        let env: Vec<(&str, &str)> = defaults.into_iter().chain(env.iter().copied()).collect();
        let args = ["--storage", &self.storage, "--coordination", &self.coordination];
        TestServer::start_with_args(&self.dir.path().join(name), &env, &args)
    }

    /// (calls, input tokens) in ClickHouse, each call once.
    async fn shipped(&self) -> (u64, u64) {
        let sql = format!("SELECT count(), sum(input_tokens) FROM {}.calls FINAL", self.database);
        // (0, 0) before the first node created the table.
        self.clickhouse.client().query(&sql).fetch_one::<(u64, u64)>().await.unwrap_or_default()
    }

    /// Requests in the rollups' tier that has the fewest (shipped after
    /// their calls; one insert's tiers are parts of their own, which
    /// become visible one by one).
    async fn rolled_up(&self) -> u64 {
        let sql = format!(
            "SELECT sumIf(requests, tier = 0), sumIf(requests, tier = 1), sumIf(requests, tier = 2) \
             FROM {}.rollup_totals FINAL WHERE projection = ''",
            self.database
        );
        let tiers: (u64, u64, u64) =
            self.clickhouse.client().query(&sql).fetch_one().await.unwrap_or_default();
        tiers.0.min(tiers.1).min(tiers.2)
    }

    /// Waits until ClickHouse holds `calls` calls and their rollups, then
    /// checks it holds no more and the tokens add up.
    async fn wait_shipped(&self, calls: u64, input_tokens: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.shipped().await;
            let done = got.0 >= calls && self.rolled_up().await >= calls;
            if done || Instant::now() > deadline {
                assert_eq!(got, (calls, input_tokens), "calls and input tokens in ClickHouse");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reports `ids`, each with 10 × its number as input tokens.
fn reports(ids: std::ops::Range<u64>) -> Value {
    let t = now_ms() - 60_000;
    Value::Array(ids.map(|i| chat(&format!("r-{i}"), "gpt-4o", tokens(10 * i, 1), t)).collect())
}

fn tokens_of(ids: std::ops::Range<u64>) -> u64 {
    ids.map(|i| 10 * i).sum()
}

/// Posts `body`, retrying (as a client does) while the node answers 503
/// because another node has claimed a report and not yet said it committed
/// it; returns (accepted, duplicates).
async fn post_retrying(base: &str, body: &Value) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = post_usage(base, body).await;
        if reply.status == 503 && reply.json["error"]["code"] == "pending" {
            assert!(Instant::now() < deadline, "still pending: {}", reply.text);
            assert!(reply.headers.contains_key("retry-after"), "{:?}", reply.headers);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
        let n = |k: &str| reply.json[k].as_u64().unwrap();
        return (n("accepted"), n("duplicates"));
    }
}

/// Waits until `/healthz` of `base` says `status`; returns the answer.
async fn health(base: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get_ok(base, "/healthz", &[]).await;
        if answer["status"] == status || Instant::now() > deadline {
            assert_eq!(answer["status"], status, "{answer}");
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_sent_to_two_nodes_reach_clickhouse_once_each() {
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    let b = shared.node("node-b", &[]);
    // 0..200 to node a, 100..300 to node b: 100 sent to both.
    assert_eq!(post_retrying(a.url(), &reports(0..200)).await, (200, 0));
    assert_eq!(post_retrying(b.url(), &reports(100..300)).await, (100, 100));
    // The same again, to the other nodes: all duplicates.
    assert_eq!(post_retrying(b.url(), &reports(0..100)).await, (0, 100));
    assert_eq!(post_retrying(a.url(), &reports(250..300)).await, (0, 50));
    shared.wait_shipped(300, tokens_of(0..300)).await;
    for node in [&a, &b] {
        health(node.url(), "ok").await;
        let metrics = get(node.url(), "/metrics", &[]).await.text;
        assert_eq!(gauge(&metrics, "tally_outbox_records"), 0.0);
        assert!(metrics.contains("tally_shared_store_up{store=\"clickhouse\"} 1"), "{metrics}");
    }
    let metrics = get(a.url(), "/metrics", &[]).await.text;
    assert_eq!(gauge(&metrics, "tally_shipped_records_total"), 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_acknowledges_while_clickhouse_is_down_and_ships_it_all_when_it_is_back() {
    let mut shared = Shared::start();
    let mut a = shared.node("node-a", &[]);
    assert_eq!(post_retrying(a.url(), &reports(0..50)).await, (50, 0));
    shared.wait_shipped(50, tokens_of(0..50)).await;
    shared.clickhouse.stop();
    assert_eq!(post_retrying(a.url(), &reports(50..150)).await, (100, 0));
    let degraded = health(a.url(), "degraded").await;
    assert_eq!(degraded["reasons"][0]["store"], "clickhouse", "{degraded}");
    let metrics = get(a.url(), "/metrics", &[]).await.text;
    assert_eq!(gauge(&metrics, "tally_outbox_records"), 100.0);
    assert!(metrics.contains("tally_shared_store_up{store=\"clickhouse\"} 0"), "{metrics}");
    // SIGKILLed with all of it unshipped, and started again.
    a.kill_9();
    a.restart();
    // What waits is counted again at start, against the outbox bound.
    let metrics = get(a.url(), "/metrics", &[]).await.text;
    assert_eq!(gauge(&metrics, "tally_outbox_records"), 100.0);
    assert_eq!(post_retrying(a.url(), &reports(150..160)).await, (10, 0));
    // What node a committed before the SIGKILL is settled as its own at
    // restart: another node hears those reports are duplicates.
    let b = shared.node("node-b", &[]);
    assert_eq!(post_retrying(b.url(), &reports(100..160)).await, (0, 60));
    shared.clickhouse.restart();
    shared.wait_shipped(160, tokens_of(0..160)).await;
    health(a.url(), "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_down_a_node_acknowledges_nothing_and_says_why() {
    let mut shared = Shared::start();
    let a = shared.node("node-a", &[]);
    assert_eq!(post_retrying(a.url(), &reports(0..20)).await, (20, 0));
    shared.postgres.stop();
    let reply = post_usage(a.url(), &reports(20..40)).await;
    reply.assert_error(503, Some("unavailable"));
    assert!(reply.headers.contains_key("retry-after"), "{:?}", reply.headers);
    let degraded = health(a.url(), "degraded").await;
    assert_eq!(degraded["reasons"][0]["store"], "coordination", "{degraded}");
    shared.postgres.restart();
    // The refused batch, sent again, counts once; the first is duplicates.
    assert_eq!(post_retrying(a.url(), &reports(0..40)).await, (20, 20));
    shared.wait_shipped(40, tokens_of(0..40)).await;
    health(a.url(), "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_outbox_bound_a_node_answers_503_and_drops_nothing() {
    let mut shared = Shared::start();
    let a = shared.node("node-a", &[("TALLY_CLUSTER__MAX_OUTBOX_RECORDS", "60")]);
    assert_eq!(post_retrying(a.url(), &reports(0..10)).await, (10, 0));
    shared.wait_shipped(10, tokens_of(0..10)).await;
    shared.clickhouse.stop();
    assert_eq!(post_retrying(a.url(), &reports(10..70)).await, (60, 0));
    let reply = post_usage(a.url(), &reports(70..80)).await;
    reply.assert_error(503, Some("backlog"));
    assert!(reply.json["error"]["message"].as_str().unwrap().contains("max_outbox_records"));
    assert!(reply.headers.contains_key("retry-after"), "{:?}", reply.headers);
    shared.clickhouse.restart();
    shared.wait_shipped(70, tokens_of(0..70)).await;
    // Shipped: taken again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = post_usage(a.url(), &reports(70..80)).await;
        if reply.status == 200 {
            assert_eq!(reply.json["accepted"], 10, "{}", reply.text);
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.wait_shipped(80, tokens_of(0..80)).await;
}

#[test]
fn clickhouse_storage_needs_a_coordination_store_and_the_other_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::tally_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let alone = run(&["--storage", "clickhouse://127.0.0.1:1/tally"]);
    assert!(alone.contains("coordination") && alone.contains("postgres://"), "{alone}");
    let without = run(&["--coordination", "postgres://127.0.0.1:1/tally"]);
    assert!(without.contains("clickhouse://"), "{without}");
    let bad = run(&["--storage", "clickhouse://h/bad-name", "--coordination", "postgres://h/t"]);
    assert!(bad.contains("storage"), "{bad}");
}

/// Varied reports: three models (one with no price), users, statuses,
/// latencies, over the last two hours.
fn varied(ids: std::ops::Range<u64>, t0: i64) -> Value {
    let models = ["gpt-4o", "claude-3-5-sonnet-20241022", "in-house-model"];
    Value::Array(
        ids.map(|i| {
            let report = chat(
                &format!("v-{i}"),
                models[i as usize % 3],
                tokens(100 + i, 7 * i),
                t0 - i as i64 * 20_000,
            );
            let report = with(report, "user", json!(format!("user-{}", i % 4)));
            let report = with(report, "duration_ms", json!(100 + (i * 37) % 900));
            let report = if i % 5 == 0 {
                report
            } else {
                with(report, "tags", json!({"team": format!("t{}", i % 3)}))
            };
            with(report, "status", json!(if i % 10 == 0 { "error" } else { "ok" }))
        })
        .collect(),
    )
}

/// `a` and `b` equal, numbers within a relative 1e-9 (sums taken in
/// another order).
fn assert_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0), "{at}: {x} != {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}: keys");
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_usage_as_one_sqlite_node_does_for_the_same_traffic() {
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    let b = shared.node("node-b", &[]);
    let single = TestServer::start(&shared.dir.path().join("single"), &[]);
    let t0 = now_ms() - 60_000;
    // 0..200 to node a and 100..300 to node b; the single node gets both.
    for (node, ids) in [(&a, 0..200), (&b, 100..300)] {
        post_retrying(node.url(), &varied(ids.clone(), t0)).await;
        post_retrying(single.url(), &varied(ids, t0)).await;
    }
    let input: u64 = (0..300).map(|i| 100 + i).sum();
    shared.wait_shipped(300, input).await;
    let (from, to) = ((t0 - 3 * 3_600_000).to_string(), (t0 + 120_000).to_string());
    let window = [("from", from.as_str()), ("to", to.as_str())];
    let queries: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v1/usage/summary", vec![("group_by", "model")]),
        ("/api/v1/usage/summary", vec![("group_by", "user,status"), ("filter", "model:gpt-4o")]),
        ("/api/v1/usage/summary", vec![("group_by", "model"), ("limit", "1")]),
        ("/api/v1/usage/summary", vec![("group_by", "tag.team,provider")]),
        ("/api/v1/usage/summary", vec![("group_by", "model"), ("filter", "tag.team:t1")]),
        ("/api/v1/usage/summary", vec![("group_by", "route"), ("filter", "tag.team:")]),
        ("/api/v1/usage/series", vec![("group_by", "model"), ("step", "10m")]),
        ("/api/v1/usage/series", vec![("step", "1m"), ("filter", "user:user-1")]),
        ("/api/v1/usage/unpriced", vec![]),
        ("/api/v1/usage/prices", vec![]),
    ];
    for (path, query) in queries {
        let query: Vec<(&str, &str)> = window.iter().copied().chain(query).collect();
        let want = get_ok(single.url(), path, &query).await;
        let rows = ["groups", "models"].iter().find_map(|k| want[k].as_array());
        assert!(rows.is_some_and(|rows| !rows.is_empty()), "{path} {query:?}: {want}");
        for node in [&a, &b] {
            let got = get_ok(node.url(), path, &query).await;
            assert_close(&got, &want, &format!("{path} {query:?}"));
        }
    }
    // Raw records, paged (the cursors differ: a cluster's names the node).
    let filters: [&[(&str, &str)]; 3] = [
        &[],
        &[("filter", "model:gpt-4o")],
        &[("filter", "user:user-2"), ("filter", "status:error")],
    ];
    for filter in filters {
        let query: Vec<(&str, &str)> =
            window.iter().copied().chain(filter.iter().copied()).collect();
        let want = common::all_records(single.url(), &query, 40).await;
        assert!(!want.is_empty(), "{query:?}");
        for node in [&a, &b] {
            let got = common::all_records(node.url(), &query, 40).await;
            assert_close(
                &Value::Array(got),
                &Value::Array(want.clone()),
                &format!("records {query:?}"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_rollups_keep_each_nodes_caps_on_distinct_values() {
    let shared = Shared::start();
    let cap = [("TALLY_ROLLUPS__MAX_VALUES_PER_DIMENSION", "3")];
    let a = shared.node("node-a", &cap);
    let single = TestServer::start(&shared.dir.path().join("single"), &cap);
    // 30 distinct users: past the cap of 3, rollups count them as __other__.
    let t0 = now_ms() - 60_000;
    let body = Value::Array(
        (0..30)
            .map(|i| {
                let report = chat(&format!("u-{i}"), "gpt-4o", tokens(100 + i, 1), t0);
                with(report, "user", json!(format!("user-{i}")))
            })
            .collect(),
    );
    post_retrying(a.url(), &body).await;
    post_retrying(single.url(), &body).await;
    shared.wait_shipped(30, (0..30).map(|i| 100 + i).sum()).await;
    let (from, to) = ((t0 - 3_600_000).to_string(), (t0 + 120_000).to_string());
    let query = [("from", from.as_str()), ("to", to.as_str()), ("group_by", "user")];
    let want = get_ok(single.url(), "/api/v1/usage/summary", &query).await;
    let got = get_ok(a.url(), "/api/v1/usage/summary", &query).await;
    let groups = got["groups"].as_array().unwrap();
    assert!(groups.len() <= 4, "3 users and __other__: {got}");
    assert!(groups.iter().any(|g| g["key"]["user"] == "__other__"), "{got}");
    assert_close(&got, &want, "summary by user");
    // The records keep every user.
    let users: std::collections::HashSet<String> =
        common::all_records(a.url(), &[("from", from.as_str()), ("to", to.as_str())], 50)
            .await
            .iter()
            .map(|r| r["user"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(users.len(), 30);
}

/// Metric points over three minutes: a histogram-like latency per
/// operation and status, a gauge and a counter, several per 10 s bin.
fn points(range: std::ops::Range<i64>, t0: i64) -> Value {
    let mut body = Vec::new();
    for i in range {
        let t = t0 + i * 1_000;
        let status = if i % 9 == 0 { "error" } else { "ok" };
        let operation = ["embed", "search", "upsert"][i as usize % 3];
        body.push(json!({"name": "op_seconds", "value": 0.05 + (i % 17) as f64 * 0.013,
            "timestamp": t, "tags": {"operation": operation, "status": status}}));
        body.push(json!({"name": "queue_size", "value": (i % 40) as f64, "timestamp": t}));
        if i % 4 == 0 {
            body.push(json!({"name": "errors_total", "value": 1, "timestamp": t,
                "type": "counter", "tags": {"operation": operation}}));
        }
    }
    Value::Array(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_metric_queries_as_one_sqlite_node_does() {
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    // Node b flushes its bins long before it ships them: its metric log
    // must wait for the shipping.
    let b = shared.node(
        "node-b",
        &[("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "50ms"), ("TALLY_CLUSTER__SHIP_INTERVAL", "3s")],
    );
    let single = TestServer::start(&shared.dir.path().join("single"), &[]);
    let t0 = now_ms() - 10 * 60_000;
    // Interleaved: both nodes have points in the same bins.
    let all = points(0..180, t0).as_array().unwrap().clone();
    let half = |parity: usize| {
        Value::Array(
            all.iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == parity)
                .map(|(_, p)| p.clone())
                .collect(),
        )
    };
    let sent = all.len() as u64;
    for (node, body) in [(&a, half(0)), (&b, half(1))] {
        for base in [node.url(), single.url()] {
            let reply = common::post_json_to(base, "/api/v1/points", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    }
    // Every point's hour bin in ClickHouse, once.
    let sql = format!(
        "SELECT toUInt64(sum(count)) FROM {}.metric_totals FINAL WHERE tier = 3",
        shared.database
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: u64 = shared.clickhouse.client().query(&sql).fetch_one().await.unwrap_or_default();
        if got >= sent || Instant::now() > deadline {
            assert_eq!(got, sent, "points in ClickHouse's hour bins");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (from, to) = ((t0 - 60_000).to_string(), (t0 + 240_000).to_string());
    let window = [("from", from.as_str()), ("to", to.as_str())];
    let queries: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v1/metrics/query", vec![("name", "op_seconds"), ("agg", "all"), ("step", "10s")]),
        (
            "/api/v1/metrics/query",
            vec![("name", "op_seconds"), ("group_by", "operation,status"), ("step", "1m")],
        ),
        (
            "/api/v1/metrics/query",
            vec![("name", "op_seconds"), ("filter", "status:error"), ("agg", "p95")],
        ),
        ("/api/v1/metrics/query", vec![("name", "queue_size"), ("agg", "last"), ("step", "30s")]),
        (
            "/api/v1/metrics/query",
            vec![
                ("name", "errors_total"),
                ("group_by", "operation"),
                ("agg", "rate"),
                ("limit", "2"),
            ],
        ),
        ("/api/v1/metrics/names", vec![]),
        ("/api/v1/metrics/tags", vec![("name", "op_seconds")]),
    ];
    for (path, query) in queries {
        let query: Vec<(&str, &str)> = window.iter().copied().chain(query).collect();
        let want = get_ok(single.url(), path, &query).await;
        let rows = ["groups", "names"].iter().find_map(|k| want[k].as_array());
        assert!(rows.is_none_or(|rows| !rows.is_empty()), "{path} {query:?}: {want}");
        for node in [&a, &b] {
            let got = common::get(node.url(), path, &query).await;
            assert_eq!(got.status, 200, "{path}: {}\n{}", got.text, node.log());
            assert_close(&got.json, &want, &format!("{path} {query:?}"));
        }
    }
}

/// Agent runs in OTLP/JSON: trace `i` has a root agent span and two chat
/// spans (one failing every fourth trace), with a user and a session, and a
/// log record linked to the first chat span.
fn runs(ids: std::ops::Range<u64>, t0: u64) -> (Value, Value) {
    let ns = |ms: u64| (ms * 1_000_000).to_string();
    let attr = |k: &str, v: Value| json!({"key": k, "value": v});
    let text = |k: &str, v: &str| attr(k, json!({"stringValue": v}));
    let mut spans = Vec::new();
    let mut logs = Vec::new();
    for i in ids {
        let trace = format!("{:032x}", 0x00c0_ffee_0000 + i);
        let start = t0 + i * 1_000;
        let span = |n: u64| format!("{:016x}", i * 16 + n);
        let common = [
            text("user.id", &format!("user-{}", i % 3)),
            text("session.id", &format!("s-{}", i % 5)),
        ];
        spans.push(json!({"traceId": trace, "spanId": span(1), "name": "invoke_agent support",
            "startTimeUnixNano": ns(start), "endTimeUnixNano": ns(start + 900),
            "attributes": [text("gen_ai.operation.name", "invoke_agent"), common[0].clone(), common[1].clone()]}));
        for (n, model) in [(2, "gpt-4o"), (3, "claude-3-5-sonnet-20241022")] {
            let failed = n == 3 && i % 4 == 0;
            spans.push(json!({"traceId": trace, "spanId": span(n), "parentSpanId": span(1),
            "name": format!("chat {model}"), "startTimeUnixNano": ns(start + 100 * n),
            "endTimeUnixNano": ns(start + 100 * n + 50 + i * 20),
            "status": {"code": if failed { 2 } else { 1 }},
            "attributes": [
                text("gen_ai.operation.name", "chat"), text("gen_ai.request.model", model),
                text("gen_ai.response.id", &format!("resp-{i}-{n}")),
                attr("gen_ai.usage.input_tokens", json!({"intValue": (100 + i).to_string()})),
                attr("gen_ai.usage.output_tokens", json!({"intValue": 20 + n})),
                common[0].clone(), common[1].clone(),
            ]}));
        }
        logs.push(json!({"timeUnixNano": ns(start + 150), "severityNumber": if i % 2 == 0 { 9 } else { 17 },
            "body": {"stringValue": format!("retrieved {i} documents")}, "traceId": trace, "spanId": span(2)}));
    }
    let resource = json!({"attributes": [text("service.name", "support-agent")]});
    (
        json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}),
        json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": logs}]}]}),
    )
}

/// Posts an OTLP/JSON export to `path`, retrying while a claim is pending.
async fn post_otlp(base: &str, path: &str, body: &Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = common::post_json_to(base, path, body).await;
        if reply.status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_traces_sessions_and_logs_as_one_sqlite_node_does() {
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    let b = shared.node("node-b", &[]);
    let single = TestServer::start(&shared.dir.path().join("single"), &[]);
    let t0 = now_ms() as u64 - 120_000;
    // Traces 0..30 to node a and 20..50 to node b: ten sent to both.
    for (node, ids) in [(&a, 0..30), (&b, 20..50)] {
        let (traces, logs) = runs(ids, t0);
        for base in [node.url(), single.url()] {
            post_otlp(base, "/v1/traces", &traces).await;
            post_otlp(base, "/v1/logs", &logs).await;
        }
    }
    // Every chat span is a call: 100, once each.
    let input: u64 = (0..50).map(|i| 2 * (100 + i)).sum();
    shared.wait_shipped(100, input).await;
    let spans = format!(
        "SELECT count() FROM (SELECT trace_id FROM {}.spans FINAL LIMIT 1 BY trace_id, span_id)",
        shared.database
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.clickhouse.client().query(&spans).fetch_one::<u64>().await.unwrap_or(0) < 150 {
        assert!(Instant::now() < deadline, "spans not shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Log records are not deduplicated (they carry no id): the ten traces
    // sent to both nodes have theirs twice, on the single node too.
    let logs = format!("SELECT count() FROM {}.logs FINAL", shared.database);
    while shared.clickhouse.client().query(&logs).fetch_one::<u64>().await.unwrap_or(0) < 60 {
        assert!(Instant::now() < deadline, "log records not shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = [("since", "1h")];
    let first = format!("/api/v1/traces/{:032x}", 0x00c0_ffee_0000_u64);
    let shared_trace = format!("/api/v1/traces/{:032x}", 0x00c0_ffee_0000_u64 + 25);
    let queries: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v1/traces", vec![]),
        ("/api/v1/traces", vec![("limit", "7")]),
        ("/api/v1/traces", vec![("status", "error")]),
        ("/api/v1/traces", vec![("model", "gpt-4o"), ("user", "user-1")]),
        ("/api/v1/traces", vec![("session", "s-2"), ("min_duration_ms", "950")]),
        ("/api/v1/traces/summary", vec![]),
        ("/api/v1/traces/latency", vec![]),
        ("/api/v1/sessions", vec![]),
        ("/api/v1/sessions/s-3", vec![]),
        ("/api/v1/logs", vec![("limit", "1000")]),
        ("/api/v1/logs", vec![("severity", "error"), ("q", "DOCUMENTS")]),
        (first.as_str(), vec![]),
        (shared_trace.as_str(), vec![]),
    ];
    for (path, query) in queries {
        let query: Vec<(&str, &str)> = window.iter().copied().chain(query).collect();
        let mut want = get_ok(single.url(), path, &query).await;
        // Something to compare: a list that is not empty.
        let lists = want.as_object().unwrap().values().filter_map(Value::as_array);
        assert!(lists.into_iter().any(|list| !list.is_empty()), "{path} {query:?}: {want}");
        for node in [&a, &b] {
            let reply = get(node.url(), path, &query).await;
            assert_eq!(reply.status, 200, "{path} {query:?}: {}\n{}", reply.text, node.log());
            let mut got = reply.json;
            if path == "/api/v1/logs" {
                // The cursors differ: a cluster's orders records by node too.
                got["next_cursor"] = Value::Null;
                want["next_cursor"] = Value::Null;
            }
            assert_close(&got, &want, &format!("{path} {query:?}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_before_confirming_its_claims_settles_them_when_it_starts_again() {
    let shared = Shared::start();
    // Node a confirms its claims only with its next commit or pass: an
    // hour away, so the SIGKILL finds them unconfirmed.
    let mut a = shared.node("node-a", &[("TALLY_CLUSTER__SHIP_INTERVAL", "1h")]);
    let b = shared.node("node-b", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post_retrying(a.url(), &reports(0..30)).await, (30, 0));
    let undecided = post_usage(b.url(), &reports(0..30)).await;
    undecided.assert_error(503, Some("pending"));
    assert!(undecided.text.contains("node-a"), "{}", undecided.text);
    a.kill_9();
    // Started again, node a settles its claims against its own store
    // before anything else: node b then hears the reports are duplicates.
    a.restart();
    assert_eq!(post_retrying(b.url(), &reports(0..40)).await, (10, 30));
    shared.wait_shipped(40, tokens_of(0..40)).await;
}

/// Polls `check` every 100 ms until it holds (at most 20 s).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_the_clusters_spend_reservations_and_alerts_alike_on_every_node() {
    use common::post_json_to;
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    let b = shared.node("node-b", &[]);
    let spec = json!({"name": "alice-daily", "scope": {"user": "alice"}, "metric": "tokens",
                      "limit": 1000, "period": "day", "thresholds": [50, 100], "mode": "enforce"});
    let created = post_json_to(a.url(), "/api/v1/budgets", &spec).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let status = |node: &TestServer| {
        let path = format!("/api/v1/budgets/{id}/status");
        let base = node.url().to_owned();
        async move { get(&base, &path, &[]).await }
    };
    eventually("node b takes on the budget", || async { status(&b).await.status == 200 }).await;
    // 300 tokens through each node: every node counts 600.
    let alice =
        |id: &str| with(chat(id, "gpt-4o", tokens(300, 0), now_ms()), "user", json!("alice"));
    post_retrying(a.url(), &json!([alice("a-1")])).await;
    post_retrying(b.url(), &json!([alice("b-1")])).await;
    for node in [&a, &b] {
        eventually("both nodes' spend counted on each", || async {
            status(node).await.json["spend"].as_f64() == Some(600.0)
        })
        .await;
    }
    // A hold taken on node b is seen on node a at once.
    let reserve = |node: &TestServer, tokens: u64| {
        let base = node.url().to_owned();
        async move {
            let body = json!({"user": "alice", "estimated_tokens": tokens, "ttl_s": 60});
            let reply = post_json_to(&base, "/api/v1/quota/reserve", &body).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.json
        }
    };
    let held = reserve(&b, 300).await;
    assert_eq!(held["allowed"], true);
    let denied = reserve(&a, 200).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(denied["reason"].as_str().unwrap().contains("300 reserved"), "{denied}");
    assert_eq!(reserve(&a, 100).await["allowed"], true, "exactly the rest fits");
    // Node b's reservation settled through node a: the usage (50 tokens)
    // counts, and node b lets its hold go within its next sync, long
    // before the reservation's 60 s.
    let usage = with(chat("settled-1", "gpt-4o", tokens(50, 0), now_ms()), "user", json!("alice"));
    let settle = json!({"reservation_id": held["reservation_id"], "usage": usage});
    let settled = post_json_to(a.url(), "/api/v1/quota/settle", &settle).await;
    assert_eq!(settled.status, 200, "{}", settled.text);
    assert_eq!(settled.json["reservation"], "elsewhere", "{}", settled.text);
    let started = Instant::now();
    eventually("node b releases the hold it made", || async {
        // 1000 - 650 spent - 100 held by node a.
        let body = json!({"user": "alice", "estimated_tokens": 250, "ttl_s": 1});
        post_json_to(b.url(), "/api/v1/quota/reserve", &body).await.json["allowed"] == true
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The 50 % threshold was crossed on both nodes; the cluster records it once.
    for node in [&a, &b] {
        eventually("the alert listed on each node", || async {
            let alerts = get_ok(node.url(), "/api/v1/alerts", &[]).await;
            alerts["alerts"].as_array().is_some_and(|list| list.len() == 1)
        })
        .await;
    }
    // Deleted on node b, gone on node a.
    let deleted = common::client().delete(format!("{}/api/v1/budgets/{id}", b.url())).send().await;
    assert!(deleted.unwrap().status().is_success());
    eventually("node a lets the budget go", || async { status(&a).await.status == 404 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_racing_on_two_nodes_take_exactly_the_room_and_one_webhook_is_sent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A webhook receiver counting what reaches it.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let shared = Shared::start();
    let env = [("TALLY_ALERTS__ALLOW_PRIVATE_TARGETS", "true")];
    let a = shared.node("node-a", &env);
    let b = shared.node("node-b", &env);
    let spec = json!({"name": "alice-daily", "scope": {"user": "alice"}, "metric": "tokens",
                      "limit": 1000, "period": "day", "thresholds": [90], "mode": "enforce",
                      "webhooks": [hook], "secret": "cluster-test-secret-0123456789"});
    let created = common::post_json_to(a.url(), "/api/v1/budgets", &spec).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/budgets/{id}/status");
    eventually("node b takes on the budget", || async {
        get(b.url(), &path, &[]).await.status == 200
    })
    .await;
    // 64 reservations of 100 tokens, half through each node, at once:
    // room for exactly 10.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let base = if i % 2 == 0 { a.url() } else { b.url() }.to_owned();
            tokio::spawn(async move {
                let body = json!({"user": "alice", "estimated_tokens": 100, "ttl_s": 60});
                let reply = common::post_json_to(&base, "/api/v1/quota/reserve", &body).await;
                assert_eq!(reply.status, 200, "{}", reply.text);
                reply.json["allowed"] == true
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap() as usize;
    }
    assert_eq!(allowed, 10, "reservations allowed across both nodes");
    // 950 tokens through both nodes cross 90 %: one alert, one webhook.
    let alice =
        |id: &str, n: u64| with(chat(id, "gpt-4o", tokens(n, 0), now_ms()), "user", json!("alice"));
    post_retrying(a.url(), &json!([alice("a-1", 500)])).await;
    post_retrying(b.url(), &json!([alice("b-1", 450)])).await;
    eventually("the webhook delivered", || async { received.load(Ordering::SeqCst) >= 1 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.load(Ordering::SeqCst), 1, "one webhook for the cluster");
    for node in [&a, &b] {
        let alerts = get_ok(node.url(), "/api/v1/alerts", &[]).await;
        let list = alerts["alerts"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{alerts}");
        assert_eq!(list[0]["deliveries"][0]["status"], "delivered", "{alerts}");
    }
}

/// Status of `method path` on `base` with `key` as bearer (and `body`).
async fn with_key(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = common::client().request(method, format!("{base}{path}")).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_made_or_revoked_through_one_node_hold_on_every_node() {
    let shared = Shared::start();
    let a = shared.node("node-a", &[]);
    let b = shared.node("node-b", &[]);
    // An admin key made in node a's data dir while it runs (the CLI): both
    // nodes hash keys under the secret the first of them left in
    // PostgreSQL, so node b takes it on.
    let admin = common::create_key(&shared.dir.path().join("node-a"), "default", "admin", &[]);
    let summary = "/api/v1/usage/summary";
    // (Until a node knows a key, it asks for none.)
    eventually("node b takes the admin key on", || async {
        get(b.url(), summary, &[]).await.status == 401
    })
    .await;
    assert_eq!(with_key(b.url(), "GET", summary, &admin.text, None).await.0, 200);
    assert_eq!(with_key(b.url(), "GET", summary, "tally_read_000000000000_x", None).await.0, 401);
    // A read key made through node b's API works on node a; revoked through
    // node a, node b refuses it.
    let (status, made) = with_key(
        b.url(),
        "POST",
        "/api/v1/admin/keys",
        &admin.text,
        Some(json!({"scope": "read", "name": "made-on-b"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let read = made["key"].as_str().unwrap().to_owned();
    eventually("node a takes the read key on", || async {
        with_key(a.url(), "GET", summary, &read, None).await.0 == 200
    })
    .await;
    let listed = with_key(a.url(), "GET", "/api/v1/admin/keys", &admin.text, None).await.1;
    assert!(listed.to_string().contains("made-on-b"), "{listed}");
    let path = format!("/api/v1/admin/keys/{}", made["id"].as_str().unwrap());
    assert_eq!(with_key(a.url(), "DELETE", &path, &admin.text, None).await.0, 204);
    let started = Instant::now();
    eventually("node b refuses the revoked key", || async {
        with_key(b.url(), "GET", summary, &read, None).await.0 == 401
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(with_key(b.url(), "GET", summary, &admin.text, None).await.0, 200);
}
