//! Tagged metric points against a real server: seed 001's collector
//! measurements queried back per bin and tier with exact count, sum, min,
//! max and last and quantiles within the sketch's 1 %; late points merging
//! into their bins; durability across SIGKILL; each rejection rule; and a
//! cardinality explosion that ends in the overflow series.

mod common;

use common::{TestServer, get_ok, now_ms, post_json_to};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000;

/// Exact statistics of `values`.
struct Exact {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    sorted: Vec<f64>,
}

impl Exact {
    fn of(values: &[f64]) -> Exact {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Exact {
            count: values.len() as u64,
            sum: values.iter().sum(),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            sorted,
        }
    }

    /// The rank-q value, as DDSketch defines its quantile.
    fn quantile(&self, q: f64) -> f64 {
        self.sorted[((self.sorted.len() - 1) as f64 * q).floor() as usize]
    }
}

async fn send_points(base: &str, body: &Value) -> Value {
    let reply = post_json_to(base, "/api/v1/points", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["rejected"], json!([]), "{}", reply.text);
    reply.json
}

async fn query(base: &str, q: &[(&str, &str)]) -> Value {
    get_ok(base, "/api/v1/metrics/query", q).await
}

fn close(actual: f64, expected: f64, relative: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= relative * expected.abs().max(1e-12),
        "{what}: {actual} vs {expected}"
    );
}

/// Seed 001's collector: processing_time per operation and status, queue
/// size, error counts, vector operation time and count, system CPU — over
/// three minutes, several points per 10 s bin.
fn collector(t0: i64) -> (Vec<Value>, Vec<(i64, f64)>) {
    let mut body = Vec::new();
    let mut embed_ok = Vec::new();
    for i in 0..180i64 {
        let t = t0 + i * 1_000;
        let embed = 0.05 + (i % 17) as f64 * 0.013;
        body.push(
            json!({"name": "processing_time", "value": embed, "timestamp": t, "type": "histogram",
            "tags": {"operation": "embed", "status": "success"}}),
        );
        embed_ok.push((t, embed));
        body.push(json!({"name": "processing_time", "value": 1.0 + (i % 5) as f64, "timestamp": t,
            "tags": {"operation": "search", "status": if i % 9 == 0 { "error" } else { "success" }}}));
        body.push(json!({"name": "queue_size", "value": (i % 40) as f64, "timestamp": t}));
        if i % 30 == 0 {
            body.push(json!({"name": "error_count", "value": 1, "timestamp": t, "type": "counter",
                "tags": {"operation": "search"}}));
        }
        body.push(json!({"name": "vector_operation_time", "value": 0.002 * (1 + i % 7) as f64,
            "timestamp": t, "tags": {"operation": "upsert"}}));
        body.push(json!({"name": "vector_count", "value": 1000 + i, "timestamp": t}));
        body.push(
            json!({"name": "system_cpu", "value": 20.0 + (i % 60) as f64 / 2.0, "timestamp": t}),
        );
    }
    (body, embed_ok)
}

#[tokio::test]
async fn collector_measurements_come_back_exact_per_bin_and_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let t0 = (now_ms() / (15 * MINUTE) - 1) * 15 * MINUTE; // a 15-minute boundary
    let (body, embed) = collector(t0);
    let accepted = send_points(&base, &Value::Array(body.clone())).await;
    assert_eq!(accepted["accepted"].as_u64(), Some(body.len() as u64));

    let window = [("from", t0.to_string()), ("to", (t0 + 3 * MINUTE).to_string())];
    let q = |extra: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> =
            window.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    };
    let run = |pairs: Vec<(String, String)>| {
        let base = base.clone();
        async move {
            let pairs: Vec<(&str, &str)> =
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            query(&base, &pairs).await
        }
    };

    // Per minute, all statistics, embed/success only.
    let minutes = run(q(&[
        ("name", "processing_time"),
        ("step", "1m"),
        ("agg", "all"),
        ("filter", "operation:embed"),
        ("filter", "status:success"),
    ]))
    .await;
    assert_eq!(minutes["tier"], "1m");
    let points = minutes["groups"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for (m, point) in points.iter().enumerate() {
        let start = t0 + m as i64 * MINUTE;
        let values: Vec<f64> = embed
            .iter()
            .filter(|(t, _)| *t >= start && *t < start + MINUTE)
            .map(|(_, v)| *v)
            .collect();
        let exact = Exact::of(&values);
        assert_eq!(point["t"], start);
        assert_eq!(point["count"].as_u64(), Some(exact.count));
        close(point["sum"].as_f64().unwrap(), exact.sum, 1e-9, "sum");
        assert_eq!(point["min"].as_f64(), Some(exact.min));
        assert_eq!(point["max"].as_f64(), Some(exact.max));
        assert_eq!(point["last"].as_f64(), Some(*values.last().unwrap()));
        for q in [0.5, 0.9, 0.95, 0.99] {
            let got = point[&format!("p{}", (q * 100.0) as u32)].as_f64().unwrap();
            close(got, exact.quantile(q), 0.0101, &format!("p{q} of minute {m}"));
        }
    }

    // 10 s bins (the finest tier) and a 15 min step (its own tier) agree.
    let tens = run(q(&[
        ("name", "processing_time"),
        ("step", "10s"),
        ("agg", "count"),
        ("filter", "operation:embed"),
    ]))
    .await;
    assert_eq!(tens["tier"], "10s");
    let counts: Vec<u64> = tens["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![10; 18]);
    let quarter = run(q(&[
        ("name", "processing_time"),
        ("step", "15m"),
        ("agg", "avg"),
        ("filter", "operation:embed"),
    ]))
    .await;
    assert_eq!(quarter["tier"], "15m");
    let exact = Exact::of(&embed.iter().map(|(_, v)| *v).collect::<Vec<_>>());
    close(
        quarter["groups"][0]["points"][0]["value"].as_f64().unwrap(),
        exact.sum / exact.count as f64,
        1e-9,
        "15 min avg",
    );

    // Grouped by a tag.
    let by_status = run(q(&[
        ("name", "processing_time"),
        ("step", "3m"),
        ("agg", "count"),
        ("group_by", "status"),
        ("filter", "operation:search"),
    ]))
    .await;
    let groups = by_status["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["key"], json!({"status": "error"}));
    assert_eq!(groups[0]["points"][0]["value"], 20);
    assert_eq!(groups[1]["points"][0]["value"], 160);

    // Counters: sum and rate per second.
    let errors = run(q(&[("name", "error_count"), ("step", "3m"), ("agg", "rate")])).await;
    close(errors["groups"][0]["points"][0]["value"].as_f64().unwrap(), 6.0 / 180.0, 1e-12, "rate");

    // Names and tags.
    let names = get_ok(&base, "/api/v1/metrics/names", &[]).await;
    let listed: Vec<&str> =
        names["names"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        listed,
        [
            "error_count",
            "processing_time",
            "queue_size",
            "system_cpu",
            "vector_count",
            "vector_operation_time"
        ]
    );
    let tags = get_ok(&base, "/api/v1/metrics/tags", &[("name", "processing_time")]).await;
    assert_eq!(tags["tags"]["operation"], json!(["embed", "search"]));

    // A late point merges into its (old) bin: one more, not a second row.
    send_points(&base, &json!([{"name": "queue_size", "value": 1000, "timestamp": t0 + 5_000}]))
        .await;
    let late = run(q(&[("name", "queue_size"), ("step", "10s"), ("agg", "all")])).await;
    let first = &late["groups"][0]["points"][0];
    assert_eq!((first["count"].as_u64(), first["max"].as_f64()), (Some(11), Some(1000.0)));

    // Acknowledged points survive SIGKILL.
    server.restart();
    let base = server.url().to_owned();
    let after = query(
        &base,
        &[
            ("name", "queue_size"),
            ("step", "3m"),
            ("agg", "count"),
            ("from", &t0.to_string()),
            ("to", &(t0 + 3 * MINUTE).to_string()),
        ],
    )
    .await;
    assert_eq!(after["groups"][0]["points"][0]["value"], 181);
}

#[tokio::test]
async fn bad_points_are_rejected_by_index_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let now = now_ms();
    let many_tags: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("t{i}"), json!("v"))).collect();
    let body = json!([
        {"name": "ok", "value": 1},
        {"value": 1},
        {"name": "9bad", "value": 1},
        {"name": "x", "value": "NaN"},
        {"name": "x", "value": 1, "tags": many_tags},
        {"name": "x", "value": 1, "tags": {"k": "v".repeat(300)}},
        {"name": "x", "value": 1, "timestamp": now + 3 * 86_400_000},
        {"name": "x", "value": 1, "timestamp": "1999-01-01T00:00:00Z"},
        {"name": "x", "value": 1, "type": "summary"},
    ]);
    let reply = post_json_to(base, "/api/v1/points", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 1);
    let rejected = reply.json["rejected"].as_array().unwrap();
    let fields: Vec<String> = rejected
        .iter()
        .map(|r| r["error"].as_str().unwrap().split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        ["name", "name", "value", "tags", "tags.k", "timestamp", "timestamp", "type"]
    );
    let indexes: Vec<u64> = rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5, 6, 7, 8]);
    let all_bad = post_json_to(base, "/api/v1/points", &json!([{"value": 1}])).await;
    assert_eq!(all_bad.status, 400);
    let q =
        get_ok(base, "/api/v1/metrics/query", &[("name", "ok"), ("since", "1h"), ("agg", "count")])
            .await;
    assert_eq!(q["groups"][0]["points"][0]["value"], 1);
    common::get(base, "/api/v1/metrics/query", &[("name", "ok"), ("step", "15s")])
        .await
        .assert_error(400, None);
    common::get(base, "/api/v1/metrics/query", &[("name", "ok"), ("agg", "median")])
        .await
        .assert_error(400, None);
    common::get(base, "/api/v1/metrics/query", &[]).await.assert_error(400, None);
}

#[tokio::test]
async fn a_cardinality_explosion_ends_in_the_overflow_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_METRICS__MAX_SERIES_PER_NAME", "1000")]);
    let base = server.url();
    let t = now_ms() - 30_000;
    // 100,000 distinct request ids as a tag: a classic mistake.
    for batch in 0..20 {
        let body: Vec<Value> = (0..5_000)
            .map(|i| json!({"name": "latency", "value": 1.0, "timestamp": t, "tags": {"request_id": format!("r{}", batch * 5_000 + i)}}))
            .collect();
        send_points(base, &Value::Array(body)).await;
    }
    let total = get_ok(
        base,
        "/api/v1/metrics/query",
        &[("name", "latency"), ("since", "1h"), ("step", "1h"), ("agg", "count")],
    )
    .await;
    let counted: u64 = total["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["points"][0]["value"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 100_000, "no point silently dropped");
    let overflow = get_ok(
        base,
        "/api/v1/metrics/query",
        &[
            ("name", "latency"),
            ("since", "1h"),
            ("step", "1h"),
            ("agg", "count"),
            ("filter", "__overflow__:true"),
        ],
    )
    .await;
    assert_eq!(overflow["groups"][0]["points"][0]["value"], 99_000);
    let names = get_ok(base, "/api/v1/metrics/names", &[]).await;
    assert_eq!(names["names"][0]["series"], 1001);
    let text =
        common::client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\ntally_metric_overflow_series 1\n"), "{text}");
    assert!(text.contains("\ntally_metric_overflow_points_total 99000\n"));
    // Memory stays bounded: the overflowing tag sets are not kept.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss_kib < 400 * 1024, "server RSS {rss_kib} KiB");
}

/// Counts, sums and extremes of `name` over `[from, to)` at one step.
async fn totals(base: &str, name: &str, from: i64, to: i64, step: &str) -> Vec<Value> {
    let got = query(
        base,
        &[
            ("name", name),
            ("step", step),
            ("agg", "all"),
            ("from", &from.to_string()),
            ("to", &to.to_string()),
        ],
    )
    .await;
    got["groups"][0]["points"].as_array().cloned().unwrap_or_default()
}

/// Bins not yet flushed are rebuilt from the commits' log after SIGKILL,
/// bins flushed are not counted again, and a restart with nothing new
/// changes nothing — at every tier.
#[tokio::test]
async fn open_bins_survive_sigkill_before_and_after_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    // No timed flush: only the explicit one below moves bins to the store.
    let mut server =
        TestServer::start(dir.path(), &[("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "1h")]);
    let t0 = (now_ms() / (15 * MINUTE) - 1) * 15 * MINUTE;
    let batch = |from: usize, to: usize| -> Vec<(i64, f64)> {
        (from..to).map(|i| (t0 + (i as i64 % 180) * 1_000, 0.5 + (i % 23) as f64 * 0.25)).collect()
    };
    let send = |points: Vec<(i64, f64)>, base: String| async move {
        let body: Vec<Value> = points
            .iter()
            .map(|(t, v)| json!({"name": "stage_time", "value": v, "timestamp": t, "tags": {"stage": "parse"}}))
            .collect();
        send_points(&base, &Value::Array(body)).await;
    };
    let check = |sent: Vec<(i64, f64)>, base: String| async move {
        let values: Vec<f64> = sent.iter().map(|(_, v)| *v).collect();
        let exact = Exact::of(&values);
        for step in ["10s", "1m", "15m", "1h"] {
            let width = match step {
                "10s" => 10_000,
                "1m" => MINUTE,
                "15m" => 15 * MINUTE,
                _ => 60 * MINUTE,
            };
            let from = t0.div_euclid(width) * width;
            let points = totals(&base, "stage_time", from, t0 + 15 * MINUTE, step).await;
            let count: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
            let sum: f64 = points.iter().map(|p| p["sum"].as_f64().unwrap()).sum();
            let max = points.iter().map(|p| p["max"].as_f64().unwrap()).fold(f64::MIN, f64::max);
            let min = points.iter().map(|p| p["min"].as_f64().unwrap()).fold(f64::MAX, f64::min);
            assert_eq!(count, exact.count, "count at {step}");
            close(sum, exact.sum, 1e-9, &format!("sum at {step}"));
            assert_eq!((min, max), (exact.min, exact.max), "min and max at {step}");
        }
    };

    let first = batch(0, 900);
    send(first.clone(), server.url().to_owned()).await;
    server.restart();
    check(first.clone(), server.url().to_owned()).await;

    // Flush (the replayed bins go to the store), then more points, then kill.
    let flushed = post_json_to(server.url(), "/api/v1/admin/flush", &json!({})).await;
    assert_eq!(flushed.status, 200, "{}", flushed.text);
    let second = batch(900, 1_500);
    send(second.clone(), server.url().to_owned()).await;
    server.restart();
    let both: Vec<(i64, f64)> = first.iter().chain(&second).copied().collect();
    check(both.clone(), server.url().to_owned()).await;
    server.restart();
    check(both, server.url().to_owned()).await;
}

/// Queries running while flushes move bins into the store (a timed flush
/// every 20 ms, and explicit ones) see every acknowledged point once: never
/// fewer than were acknowledged before the query, never more than were sent
/// by its end — at the 10 s tier and merged up to hours.
#[tokio::test]
async fn queries_during_flushes_count_every_point_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "20ms")]);
    let base = server.url().to_owned();
    let t0 = now_ms() - 30 * MINUTE;
    let (started, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    const BATCHES: u64 = 120;
    const PER_BATCH: u64 = 400;
    let sender = {
        let (base, started, acked) = (base.clone(), started.clone(), acked.clone());
        tokio::spawn(async move {
            for b in 0..BATCHES {
                let body: Vec<Value> = (0..PER_BATCH)
                    .map(|i| {
                        let t = t0 + ((b * PER_BATCH + i) as i64 * 997) % (29 * MINUTE);
                        json!({"name": "flush_race", "value": 1.0, "timestamp": t,
                            "tags": {"shard": (i % 200).to_string()}})
                    })
                    .collect();
                started.fetch_add(PER_BATCH, SeqCst);
                send_points(&base, &Value::Array(body)).await;
                acked.fetch_add(PER_BATCH, SeqCst);
                if b % 10 == 0 {
                    post_json_to(&base, "/api/v1/admin/flush", &json!({})).await;
                }
            }
        })
    };
    let count = |step: &'static str| {
        let base = base.clone();
        async move {
            let from = (t0 / 3_600_000) * 3_600_000;
            let points = totals(&base, "flush_race", from, now_ms() + 3_600_000, step).await;
            points.iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>()
        }
    };
    let mut checked = 0;
    while !sender.is_finished() {
        for step in ["10s", "1h"] {
            let low = acked.load(SeqCst);
            let seen = count(step).await;
            let high = started.load(SeqCst);
            assert!(
                low <= seen && seen <= high,
                "step {step}: saw {seen}, acked {low}, sent {high}"
            );
            checked += 1;
        }
    }
    sender.await.unwrap();
    assert!(checked > 10, "only {checked} queries ran during the load");
    for step in ["10s", "1h"] {
        assert_eq!(count(step).await, BATCHES * PER_BATCH, "step {step}");
    }
}
