//! Input limits against a real server: numbers that would break sums,
//! instants out of bounds, oversized numbers and long values in errors, and
//! the span attribute caps (count, key length, text), marked and counted.
//! Each case is a fault found against a release binary.

mod common;

use common::{
    MINUTE_MS, TestServer, client, get_ok, now_ms, post_json_to, post_usage, post_usage_bytes,
    summary,
};
use serde_json::{Value, json};

/// Every `null` in `value` at a key that holds a sum, a cost, a rate or a
/// quantile: none may be (an overflowed sum serializes as `null`).
fn null_sums(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let at = format!("{path}.{key}");
                let summed = ["cost", "sum", "rate", "value", "tokens", "p50", "p95", "p99"]
                    .iter()
                    .any(|part| key.contains(part));
                if child.is_null() && summed {
                    found.push(at.clone());
                }
                null_sums(child, &at, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                null_sums(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn assert_no_null_sums(value: &Value, what: &str) {
    let mut found = Vec::new();
    null_sums(value, "", &mut found);
    assert!(found.is_empty(), "{what}: null sums at {found:?} in {value}");
}

/// The one rejection of a single-report body, as "field: message".
async fn rejection_of_raw(base: &str, body: &str) -> String {
    let reply =
        post_usage_bytes(base, body.as_bytes().to_vec(), &[("content-type", "application/json")])
            .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    reply.json["rejected"][0]["error"].as_str().expect("a rejection").to_owned()
}

#[tokio::test]
async fn usage_numbers_and_instants_out_of_bounds_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let now = now_ms();

    // Two costs of 1e308 made the reported cost sum infinite (served null).
    let huge = json!({"model": "m", "input_tokens": 1, "cost_usd": 1e308});
    let reply = post_usage(base, &json!([huge, huge, {"model": "m", "cost_usd": 0.5}])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 1);
    let errors: Vec<&str> = reply.json["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2);
    for error in errors {
        assert!(error.starts_with("cost_usd: is too large"), "{error}");
    }

    // A duration of 1e300 skewed the group's quantiles to 1.65e282.
    let reply = post_usage(base, &json!({"model": "m", "duration_ms": 1e300})).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = reply.json["rejected"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("duration_ms: is too large: 1e300"), "{error}");
    let reply = post_usage(base, &json!({"model": "m", "ttft_ms": 31.0 * 86_400_000.0})).await;
    assert!(reply.json["rejected"][0]["error"].as_str().unwrap().starts_with("ttft_ms:"));
    let reply = post_usage(
        base,
        &json!({"model": "m", "duration_ms": 1200, "ttft_ms": 100, "cost_usd": 2}),
    )
    .await;
    assert_eq!(reply.json["accepted"], 1, "{}", reply.text);

    // Instants before 2000 or more than a day ahead.
    for (started_at, message) in [
        (json!(1), "started_at: is before 2000-01-01T00:00:00Z"),
        (json!("0001-01-01T00:00:00Z"), "started_at: is before 2000-01-01T00:00:00Z"),
        (json!(i64::MIN), "started_at: is before 2000-01-01T00:00:00Z"),
        (json!(now + 86_400_000 + MINUTE_MS), "started_at: is more than 1 day in the future"),
    ] {
        let reply = post_usage(base, &json!({"model": "m", "started_at": started_at})).await;
        assert_eq!(reply.status, 400, "{started_at}: {}", reply.text);
        assert_eq!(reply.json["rejected"][0]["error"], message, "{started_at}");
    }
    let reply =
        post_usage(base, &json!({"model": "m", "completed_at": now + 86_400_000 + MINUTE_MS}))
            .await;
    assert_eq!(
        reply.json["rejected"][0]["error"],
        "completed_at: is more than 1 day in the future"
    );

    // A number no f64 holds is too large, not "given more than once" —
    // alone and inside a batch whose other record is fine.
    let error = rejection_of_raw(base, r#"{"model":"m","input_tokens":1e1000}"#).await;
    assert!(error.starts_with("input_tokens: is too large"), "{error}");
    let reply = post_usage_bytes(
        base,
        br#"[{"model":"m","input_tokens":3},{"model":"m","input_tokens":1e1000}]"#.to_vec(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(reply.json["accepted"], 1, "{}", reply.text);
    assert_eq!(reply.json["rejected"][0]["index"], 1);
    let error = reply.json["rejected"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("input_tokens: is too large"), "{error}");

    // 300 digits: too large, and not echoed.
    let digits = "9".repeat(300);
    for field in ["input_tokens", "cost_usd", "duration_ms", "started_at"] {
        let body = format!(r#"{{"model":"m","{field}":{digits}}}"#);
        let error = rejection_of_raw(base, &body).await;
        assert!(error.starts_with(&format!("{field}: is ")), "{error}");
        assert!(!error.contains(&"9".repeat(41)), "echoes the number: {error}");
    }
    // Long client text is quoted clipped, with an ellipsis.
    let long = "x".repeat(300);
    for body in [
        json!({"model": "m", "operation": long}),
        json!({"model": "m", "status": long}),
        json!({"model": "m", "started_at": long}),
        json!({"model": "m", "input_tokens": long}),
        json!({"model": "m", "tags": {long.clone(): "v"}}),
    ] {
        let reply = post_usage(base, &body).await;
        let error = reply.json["rejected"][0]["error"].as_str().unwrap();
        assert!(!error.contains(&"x".repeat(41)), "echoes the value: {error}");
        assert!(error.contains("x…"), "marks the cut: {error}");
    }

    // No sum anywhere became null.
    for query in [vec![("since", "1h")], vec![("since", "1h"), ("group_by", "model")]] {
        let s = summary(base, &query).await;
        assert_no_null_sums(&s, "usage summary");
        assert_eq!(s["total"]["reported_cost_usd"], 2.5, "{s}");
    }
    let series = get_ok(base, "/api/v1/usage/series", &[("since", "1h"), ("step", "1h")]).await;
    assert_no_null_sums(&series, "usage series");
}

#[tokio::test]
async fn metric_values_that_would_overflow_sums_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let now = now_ms();

    // Two counter points of 1e308 made sum and rate null.
    let point = json!({"name": "big", "value": 1e308, "type": "counter"});
    let reply = post_json_to(
        base,
        "/api/v1/points",
        &json!([point, point, {"name": "big", "value": 5, "type": "counter"}]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 1);
    for rejection in reply.json["rejected"].as_array().unwrap() {
        let error = rejection["error"].as_str().unwrap();
        assert!(error.starts_with("value: is too large: 1e308"), "{error}");
    }
    let reply = post_json_to(
        base,
        "/api/v1/points",
        &json!([{"name": "big", "value": 1e18, "type": "counter"},
                {"name": "big", "value": -1e18, "type": "counter"}]),
    )
    .await;
    assert_eq!(reply.json["accepted"], 2, "the bound itself is a value: {}", reply.text);
    let reply = post_json_to(
        base,
        "/api/v1/points",
        &json!([
            {"name": "t", "value": 1, "timestamp": 1},
            {"name": "t", "value": 1, "timestamp": now + 86_400_000 + MINUTE_MS},
            {"name": "t", "value": format!("{}", "9".repeat(300))},
        ]),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let errors: Vec<&str> = reply.json["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors[0], "timestamp: is before 2000-01-01T00:00:00Z");
    assert_eq!(errors[1], "timestamp: is more than 1 day in the future");
    assert!(errors[2].starts_with("value: is too large") && errors[2].len() < 100, "{}", errors[2]);
    let reply = client()
        .post(format!("{base}/api/v1/points"))
        .header("content-type", "application/json")
        .body(r#"[{"name":"t","value":1e1000}]"#)
        .send()
        .await
        .unwrap();
    let body: Value = reply.json().await.unwrap();
    let error = body["rejected"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("value: is too large"), "{error}");

    // The same over OTLP metrics: a monotonic delta sum of two 1e308 points.
    let ns = (now * 1_000_000).to_string();
    let data_point = json!({"asDouble": 1e308, "timeUnixNano": ns, "startTimeUnixNano": ns});
    let metric = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "otlp_big", "sum": {"isMonotonic": true, "aggregationTemporality": 1,
         "dataPoints": [data_point, data_point,
                        {"asDouble": 7.0, "timeUnixNano": ns, "startTimeUnixNano": ns},
                        {"asDouble": 7.0, "timeUnixNano": "1", "startTimeUnixNano": "1"}]}}]}]}]});
    let reply = post_json_to(base, "/v1/metrics", &metric).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let partial = &reply.json["partialSuccess"];
    assert_eq!(partial["rejectedDataPoints"], json!(3), "{partial}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("otlp_big data point 0: value is too large"), "{message}");
    assert!(message.contains("data point 3 (time_unix_nano): is before 2000"), "{message}");

    for (name, total) in [("big", 5.0), ("otlp_big", 7.0)] {
        for agg in ["sum", "rate", "all"] {
            let q = get_ok(
                base,
                "/api/v1/metrics/query",
                &[("name", name), ("since", "1h"), ("step", "1h"), ("agg", agg)],
            )
            .await;
            assert_no_null_sums(&q, &format!("{name} {agg}"));
            if agg == "sum" {
                let sum: f64 = q["groups"][0]["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["value"].as_f64().unwrap())
                    .sum();
                assert_eq!(sum, total, "{q}");
            }
        }
    }
}

#[tokio::test]
async fn span_attribute_caps_are_enforced_marked_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let now = now_ms();
    let ns = |ms: i64| (ms * 1_000_000).to_string();

    // 200,000 attributes and a 1 MB key were stored whole (3.3 MB).
    let mut attributes =
        vec![json!({"key": "k".repeat(1 << 20), "value": {"stringValue": "big key"}})];
    attributes.extend(
        (0..200_000).map(|i| json!({"key": format!("attr.{i}"), "value": {"stringValue": "v"}})),
    );
    let trace_id = "ab".repeat(16);
    let span = |span_id: &str, start: String, end: String, attributes: Vec<Value>| {
        json!({"traceId": trace_id, "spanId": span_id, "name": "wide",
               "startTimeUnixNano": start, "endTimeUnixNano": end, "attributes": attributes})
    };
    let ahead = now + 86_400_000 + MINUTE_MS;
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        span(&"01".repeat(8), ns(now - 1000), ns(now), attributes),
        span(&"02".repeat(8), "1".to_owned(), "2".to_owned(), vec![]),
        span(&"03".repeat(8), ns(now - 1000), ns(ahead), vec![]),
        span(&"04".repeat(8), ns(ahead), ns(ahead), vec![]),
    ]}]}]});
    let reply = post_json_to(base, "/v1/traces", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let partial = &reply.json["partialSuccess"];
    assert_eq!(partial["rejectedSpans"], json!(3), "{partial}");
    let message = partial["errorMessage"].as_str().unwrap();
    for expected in [
        "span 1 (start_time_unix_nano): is before 2000-01-01T00:00:00Z",
        "span 2 (end_time_unix_nano): is more than 1 day in the future",
        "span 3 (start_time_unix_nano): is more than 1 day in the future",
    ] {
        assert!(message.contains(expected), "{message}");
    }

    let detail = get_ok(base, &format!("/api/v1/traces/{trace_id}"), &[]).await;
    let stored = &detail["spans"][0]["attributes"];
    let map = stored.as_object().expect("attributes");
    assert!(map.len() <= 128 + 3, "{} attributes stored", map.len());
    assert!(map.keys().all(|k| k.len() <= 256), "a long key was kept");
    assert!(serde_json::to_string(stored).unwrap().len() <= 64 * 1024 + 4096);
    assert_eq!(map["tally.truncated"], true);
    assert_eq!(map["tally.dropped_attributes_count"], 200_001 - 128);
    assert_eq!(map["attr.0"], "v", "the first attributes are kept");

    let counted =
        common::metric_sample(base, "tally_ingest_truncated_total{what=\"attributes\"}").await;
    assert_eq!(counted, (200_001 - 128) as f64);
}

/// A trace keeps its first `ingest.max_spans_per_trace` spans; later ones
/// are counted on the trace and on /metrics, and a re-sent kept span is
/// still a duplicate.
#[tokio::test]
async fn a_trace_keeps_its_first_spans_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_SPANS_PER_TRACE", "50")]);
    let base = server.url();
    let now = now_ms();
    let ns = |ms: i64| (ms * 1_000_000).to_string();
    let export = |trace_id: &str, spans: std::ops::Range<usize>| {
        let spans: Vec<Value> = spans
            .map(|i| {
                json!({"traceId": trace_id, "spanId": format!("{:016x}", i + 1), "name": format!("step {i}"),
                       "startTimeUnixNano": ns(now - 10_000 + i as i64), "endTimeUnixNano": ns(now)})
            })
            .collect();
        json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    };
    let big = "cd".repeat(16);
    let small = "ef".repeat(16);
    // 40 kept; then 10 of 40 kept and 30 not; then 11 kept spans sent
    // again (duplicates, not counted) and 29 more not kept.
    for (trace_id, spans) in [(&big, 0..40), (&big, 40..80), (&big, 39..79), (&small, 0..5)] {
        let reply = post_json_to(base, "/v1/traces", &export(trace_id, spans)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    let detail = get_ok(base, &format!("/api/v1/traces/{big}"), &[]).await;
    assert_eq!(detail["span_count"], 50, "{}", detail["span_count"]);
    assert_eq!(detail["spans_returned"], 50);
    assert_eq!(detail["spans_dropped"], 30 + 29);
    assert_eq!(detail["truncated"], true);
    let mut kept: Vec<String> = Vec::new();
    fn walk(nodes: &Value, out: &mut Vec<String>) {
        for node in nodes.as_array().unwrap() {
            out.push(node["name"].as_str().unwrap().to_owned());
            walk(&node["children"], out);
        }
    }
    walk(&detail["spans"], &mut kept);
    kept.sort_by_key(|name| name[5..].parse::<usize>().unwrap());
    let first: Vec<String> = (0..50).map(|i| format!("step {i}")).collect();
    assert_eq!(kept, first, "the first spans are the ones kept");

    let other = get_ok(base, &format!("/api/v1/traces/{small}"), &[]).await;
    assert_eq!((other["span_count"].as_u64(), other["spans_dropped"].as_u64()), (Some(5), Some(0)));
    assert_eq!(other["truncated"], false);
    let list = get_ok(base, "/api/v1/traces", &[]).await;
    let listed = list["traces"].as_array().unwrap().iter().find(|t| t["trace_id"] == big.as_str());
    assert_eq!(listed.expect("listed")["spans_dropped"], 59, "{list}");

    let spans = common::metric_sample(base, "tally_ingest_truncated_total{what=\"spans\"}").await;
    assert_eq!(spans, 59.0);
}

/// Metric names past the project's cap go to its `__overflow__` metric, and
/// cumulative series past the tracked cap are refused by name.
#[tokio::test]
async fn metric_names_and_cumulative_series_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TALLY_METRICS__MAX_NAMES_PER_PROJECT", "3"),
        ("TALLY_METRICS__MAX_CUMULATIVE_SERIES", "2"),
    ];
    let server = TestServer::start(dir.path(), &env);
    let base = server.url();
    let now_ns = (now_ms() as u64 * 1_000_000).to_string();
    let gauge = |name: String| json!({"name": name, "gauge": {"dataPoints": [{"asDouble": 1.0, "timeUnixNano": now_ns}]}});
    let metrics: Vec<Value> = (0..10).map(|i| gauge(format!("name_{i}"))).collect();
    let body = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]});
    let reply = post_json_to(base, "/v1/metrics", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let names = get_ok(base, "/api/v1/metrics/names", &[]).await;
    let listed: Vec<&str> =
        names["names"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 4, "three names and the overflow metric: {names}");
    assert!(listed.contains(&"__overflow__"), "{names}");
    let overflowed = get_ok(
        base,
        "/api/v1/metrics/query",
        &[("name", "__overflow__"), ("since", "1h"), ("step", "1h"), ("agg", "count")],
    )
    .await;
    let points = overflowed["groups"][0]["points"].as_array().expect("points");
    let count: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(count, 7.0, "{overflowed}");

    // Three cumulative series: the third is refused, by name.
    let cumulative = |model: &str| {
        json!({"name": "tokens_total", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
               "dataPoints": [{"asInt": "5", "startTimeUnixNano": now_ns, "timeUnixNano": now_ns,
                 "attributes": [{"key": "model", "value": {"stringValue": model}}]}]}})
    };
    let metrics: Vec<Value> = ["a", "b", "c"].map(cumulative).to_vec();
    let body = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]});
    let reply = post_json_to(base, "/v1/metrics", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let partial = &reply.json["partialSuccess"];
    assert_eq!(partial["rejectedDataPoints"], json!(1), "{partial}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("metrics.max_cumulative_series"), "{message}");
}
