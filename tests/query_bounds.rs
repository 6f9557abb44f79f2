//! Queries a hostile client could make expensive, against a real server:
//! windows reaching from the year 0 to the end of time, steps of millions of
//! days, group-bys over many values and a trace of 200,000 spans. Each is
//! answered or refused quickly with memory flat, while a well-behaved client
//! keeps getting its answers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, get, get_ok, ingest, now_ms, proc_kib, summary};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

/// Asks for a summary of the last hour every 50 ms until stopped; returns
/// the slowest answer.
fn honest_client(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let reply = get(&base, "/api/v1/usage/summary", &[("since", "1h")]).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    })
}

/// A request: path, query and the status it must get.
type Case = (&'static str, Vec<(&'static str, &'static str)>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_windows_and_steps_are_cut_or_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let now = now_ms();
    let report = json!({"id": "r1", "model": "gpt-4o", "user": "alice", "input_tokens": 10,
                        "output_tokens": 5, "completed_at": now});
    ingest(&base, &json!([report])).await;
    let points = json!([{"name": "latency", "value": 1.5, "timestamp": now}]);
    assert_eq!(common::post_json_to(&base, "/api/v1/points", &points).await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let honest = honest_client(base.clone(), stop.clone());
    let hwm_before = proc_kib(server.pid(), "VmHWM");

    let cases: Vec<Case> = vec![
        ("/api/v1/usage/summary", vec![("from", "0"), ("to", "9000000000000000000")], 200),
        (
            "/api/v1/usage/summary",
            vec![("from", "-8640000000000000"), ("to", "8640000000000000"), ("group_by", "user")],
            200,
        ),
        ("/api/v1/usage/summary", vec![("since", "9000000000000000000ms")], 200),
        ("/api/v1/usage/summary", vec![("from", "0"), ("to", "1000")], 400),
        (
            "/api/v1/usage/series",
            vec![("from", "0"), ("to", "9000000000000000000"), ("step", "1000000000m")],
            400,
        ),
        (
            "/api/v1/usage/series",
            vec![("from", "0"), ("to", "9000000000000000000"), ("step", "366d")],
            200,
        ),
        (
            "/api/v1/usage/series",
            vec![("from", "0"), ("to", "9000000000000000000"), ("step", "1m")],
            400,
        ),
        (
            "/api/v1/metrics/query",
            vec![("name", "latency"), ("step", "100000000d"), ("from", "0")],
            400,
        ),
        (
            "/api/v1/metrics/query",
            vec![
                ("name", "latency"),
                ("step", "366d"),
                ("from", "0"),
                ("to", "9000000000000000000"),
            ],
            200,
        ),
        ("/api/v1/usage/records", vec![("from", "0"), ("to", "9000000000000000000")], 200),
        ("/api/v1/traces", vec![("from", "0"), ("to", "9000000000000000000")], 200),
        ("/api/v1/traces/latency", vec![("from", "0"), ("to", "9000000000000000000")], 200),
        ("/api/v1/logs", vec![("from", "0"), ("to", "9000000000000000000")], 200),
    ];
    for (path, query, status) in &cases {
        let started = Instant::now();
        let reply = get(&base, path, query).await;
        let took = started.elapsed();
        assert_eq!(reply.status, *status, "{path} {query:?}: {}", reply.text);
        if *status == 400 {
            reply.assert_error(400, Some("bad_request"));
        }
        assert!(took < Duration::from_secs(1), "{path} {query:?} took {took:?}");
    }
    // The whole-time summary holds the one report, over the window cut to
    // where data can be.
    let all = summary(&base, &[("from", "0"), ("to", "9000000000000000000")]).await;
    assert_eq!(all["total"]["requests"], 1, "{all}");
    assert_eq!(all["from"], 946_684_800_000_i64);
    assert!(all["to"].as_i64().unwrap() <= now_ms() + 86_400_000 + 60_000);
    let refused = get(&base, "/api/v1/usage/summary", &[("from", "0"), ("to", "1000")]).await;
    assert!(refused.json["error"]["message"].as_str().unwrap().contains("2000-01-01"));

    stop.store(true, Ordering::Relaxed);
    let slowest = honest.await.unwrap();
    assert!(slowest < Duration::from_secs(1), "the honest client waited {slowest:?}");
    let grown = proc_kib(server.pid(), "VmHWM").saturating_sub(hwm_before);
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_beyond_the_cap_are_summed_into_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_QUERY__MAX_GROUPS", "5")]);
    let base = server.url().to_owned();
    let now = now_ms();
    // 20 users; user-i makes i+1 calls of gpt-4o-mini.
    let mut reports = Vec::new();
    for user in 0..20 {
        for call in 0..=user {
            reports.push(json!({"id": format!("u{user}-{call}"), "model": "gpt-4o-mini",
                                "user": format!("user-{user:02}"), "input_tokens": 100,
                                "output_tokens": 10, "completed_at": now}));
        }
    }
    ingest(&base, &Value::Array(reports)).await;
    let total_requests: u64 = (1..=20).sum();

    let grouped = summary(&base, &[("since", "1h"), ("group_by", "user")]).await;
    let groups = grouped["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5, "{grouped}");
    assert_eq!(grouped["groups_total"], 20);
    assert_eq!(grouped["truncated"], true);
    // The five costliest: the users with the most calls.
    let users: Vec<&str> = groups.iter().map(|g| g["key"]["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["user-19", "user-18", "user-17", "user-16", "user-15"]);
    let kept: u64 = groups.iter().map(|g| g["requests"].as_u64().unwrap()).sum();
    assert_eq!(kept + grouped["other"]["requests"].as_u64().unwrap(), total_requests);
    assert_eq!(grouped["total"]["requests"], total_requests);

    let three = summary(&base, &[("since", "1h"), ("group_by", "user"), ("limit", "3")]).await;
    assert_eq!(three["groups"].as_array().unwrap().len(), 3);
    assert_eq!(three["other"]["requests"], total_requests - (20 + 19 + 18));
    let too_many = get(
        &base,
        "/api/v1/usage/summary",
        &[("since", "1h"), ("group_by", "user"), ("limit", "6")],
    )
    .await;
    too_many.assert_error(400, Some("bad_request"));
    let untruncated = summary(&base, &[("since", "1h"), ("group_by", "model")]).await;
    assert_eq!(
        (untruncated["truncated"].clone(), untruncated["other"].clone()),
        (json!(false), Value::Null)
    );

    // CSV ends with the remainder's row.
    let csv = get(
        &base,
        "/api/v1/usage/summary",
        &[("since", "1h"), ("group_by", "user"), ("format", "csv")],
    )
    .await;
    let rows = common::csv_maps(&csv.text);
    assert_eq!(rows.len(), 6, "{}", csv.text);
    assert_eq!(rows[5]["user"], "__other__");
    assert_eq!(common::csv_u64(&rows[5], "requests"), total_requests - (20 + 19 + 18 + 17 + 16));

    // Series: the same five, and the rest summed per point.
    let series =
        common::series(&base, &[("since", "1h"), ("group_by", "user"), ("step", "1h")]).await;
    assert_eq!(series["groups"].as_array().unwrap().len(), 5, "{series}");
    assert_eq!(series["groups_total"], 20);
    let point_sum = |points: &Value| -> u64 {
        points.as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()).sum()
    };
    let kept: u64 =
        series["groups"].as_array().unwrap().iter().map(|g| point_sum(&g["points"])).sum();
    assert_eq!(kept + point_sum(&series["other"]["points"]), total_requests);

    // Metrics: 8 tag values, the 5 with most samples kept.
    let points: Vec<Value> = (0..8)
        .flat_map(|op| {
            (0..=op).map(move |i| {
                json!({"name": "work_ms", "value": i, "timestamp": now,
                       "tags": {"op": format!("op-{op}")}})
            })
        })
        .collect();
    assert_eq!(
        common::post_json_to(&base, "/api/v1/points", &Value::Array(points)).await.status,
        200
    );
    let metrics = get_ok(
        &base,
        "/api/v1/metrics/query",
        &[
            ("name", "work_ms"),
            ("since", "1h"),
            ("step", "1h"),
            ("group_by", "op"),
            ("agg", "count"),
        ],
    )
    .await;
    assert_eq!(metrics["groups"].as_array().unwrap().len(), 5, "{metrics}");
    let ops: Vec<&str> = metrics["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"]["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["op-3", "op-4", "op-5", "op-6", "op-7"], "the five busiest, in key order");
    assert_eq!(metrics["truncated"], true);
    let count = |points: &Value| -> u64 {
        points.as_array().unwrap().iter().map(|p| p["value"].as_u64().unwrap()).sum()
    };
    let kept: u64 = metrics["groups"].as_array().unwrap().iter().map(|g| count(&g["points"])).sum();
    assert_eq!(kept + count(&metrics["other"]["points"]), (1..=8).sum::<u64>());

    // Latency by span name: 60 names (past even the 50 told apart): five
    // listed, the rest summed into other.
    let ns = |ms: i64| (ms * 1_000_000).to_string();
    let spans: Vec<Value> = (0..60i64)
        .map(|i| {
            json!({"traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1),
                   "name": format!("step-{i:02}"), "startTimeUnixNano": ns(now - 10_000),
                   "endTimeUnixNano": ns(now - 10_000 + 10 * (i + 1))})
        })
        .collect();
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]});
    assert_eq!(common::post_json_to(&base, "/v1/traces", &body).await.status, 200);
    let latency = get_ok(&base, "/api/v1/traces/latency", &[("since", "1h"), ("by", "name")]).await;
    // (Which 50 are told apart depends on the order spans are read in.)
    let totals: Vec<f64> = latency["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["total_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(totals.len(), 5, "{latency}");
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "most total time first: {totals:?}");
    assert_eq!(latency["truncated"], true);
    assert_eq!(latency["groups_total"], 50, "ten times query.max_groups are told apart");
    let kept: u64 =
        latency["groups"].as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(kept + latency["other"]["count"].as_u64().unwrap(), 60);
}

fn text_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..KeyValue::default()
    }
}

/// Span `i` of one trace: a tree with ten children per span.
fn tree_span(i: u64, t0_ns: u64) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: (i + 1).to_be_bytes().to_vec(),
        parent_span_id: if i == 0 { Vec::new() } else { (i / 10 + 1).to_be_bytes().to_vec() },
        name: format!("step-{}", i % 7),
        start_time_unix_nano: t0_ns + i * 1_000,
        end_time_unix_nano: t0_ns + i * 1_000 + 500_000,
        attributes: vec![text_kv("tool.name", "search"), text_kv("input.value", "some text here")],
        ..Span::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_trace_is_served_bounded_with_exact_totals() {
    const SPANS: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    // The whole trace is kept (ingest.max_spans_per_trace is 10,000 by
    // default), so that reads are what is bounded here.
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_SPANS_PER_TRACE", "200000")]);
    let base = server.url().to_owned();
    let t0_ns = (now_ms() as u64 - 60_000) * 1_000_000;
    let client = common::client();
    for batch in 0..(SPANS / 20_000) {
        let spans = (batch * 20_000..(batch + 1) * 20_000).map(|i| tree_span(i, t0_ns)).collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text_kv("service.name", "big")],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        };
        let response = client
            .post(format!("{base}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let trace_id = "ab".repeat(16);
    let path = format!("/api/v1/traces/{trace_id}");

    let stop = Arc::new(AtomicBool::new(false));
    let honest = honest_client(base.clone(), stop.clone());
    let hwm_before = proc_kib(server.pid(), "VmHWM");
    let started = Instant::now();
    let detail = get(&base, &path, &[]).await;
    let took = started.elapsed();
    assert_eq!(detail.status, 200, "{}", &detail.text[..detail.text.len().min(500)]);
    let d = &detail.json;
    assert_eq!(d["span_count"], SPANS);
    assert_eq!(d["totals"]["spans"], SPANS);
    assert_eq!(d["spans_returned"], 10_000);
    assert_eq!(d["spans_left_out"], SPANS - 10_000);
    assert_eq!(d["truncated"], true);
    assert_eq!(d["spans"][0]["span_id"], format!("{:016x}", 1), "the earliest span, the root");
    assert!(detail.text.len() < 16 * 1024 * 1024, "{} bytes", detail.text.len());
    // Seconds, not minutes, even in a debug build on a loaded machine (its
    // speed is measured by `tally bench spans`, not here).
    assert!(took < Duration::from_secs(30), "detail took {took:?}");
    // Four at once stay bounded too.
    let four: Vec<_> = (0..4)
        .map(|_| {
            let (base, path) = (base.clone(), path.clone());
            tokio::spawn(async move { get(&base, &path, &[]).await.status })
        })
        .collect();
    for one in four {
        assert_eq!(one.await.unwrap(), 200);
    }
    let grown = proc_kib(server.pid(), "VmHWM").saturating_sub(hwm_before);
    assert!(grown < 300 * 1024, "peak RSS grew by {grown} KiB for four detail reads");
    stop.store(true, Ordering::Relaxed);
    let slowest = honest.await.unwrap();
    assert!(slowest < Duration::from_secs(2), "the honest client waited {slowest:?}");

    // A deadline shorter than the read: 503 with what to narrow, and the
    // server goes on serving.
    drop(server);
    let mut server = TestServer::start(dir.path(), &[("TALLY_QUERY__TIMEOUT", "1ms")]);
    let base = server.url().to_owned();
    let late = get(&base, &path, &[]).await;
    late.assert_error(503, Some("query_timeout"));
    assert!(late.json["error"]["message"].as_str().unwrap().contains("query.timeout"));
    assert_eq!(get(&base, "/healthz", &[]).await.status, 200);
    server.kill_9();
}
