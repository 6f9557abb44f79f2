//! Repeated queries are answered from cached per-bucket results; these tests
//! pin that a cached answer never hides what arrived later: late reports for
//! old buckets (before and after the rollup flush) and re-pricing.

mod common;

use std::time::Duration;

use common::{TestServer, chat, ingest, now_ms, summary, tokens};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

async fn requests_and_cost(base: &str, query: &[(&str, &str)]) -> (u64, f64) {
    let s = summary(base, query).await;
    (s["total"]["requests"].as_u64().unwrap(), s["total"]["cost_usd"].as_f64().unwrap())
}

#[tokio::test]
async fn late_reports_and_repricing_show_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "200ms")]);
    let base = server.url();
    let now = now_ms();
    // Spread over the last 20 hours so that minute, hour and day buckets are read.
    let first: Vec<Value> = (0..40)
        .map(|i| chat(&format!("a{i}"), "gpt-4o", tokens(100, 10), now - (i as i64) * HOUR / 2))
        .collect();
    ingest(base, &Value::Array(first)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let query = [("since", "24h"), ("group_by", "model")];
    let (requests, _) = requests_and_cost(base, &query).await;
    assert_eq!(requests, 40);
    let (again, _) = requests_and_cost(base, &query).await;
    assert_eq!(again, 40, "a cached answer equals the first");

    // A late report for a bucket already flushed and cached: seen at once
    // (from the open buckets) and still after it is flushed.
    ingest(base, &json!([chat("late", "gpt-4o", tokens(100, 10), now - 7 * HOUR - 5_000)])).await;
    assert_eq!(requests_and_cost(base, &query).await.0, 41);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(requests_and_cost(base, &query).await.0, 41);
    let series = common::series(base, &[("since", "24h"), ("step", "1h")]).await;
    let points: u64 = series["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(points, 41);

    // Re-pricing rewrites stored rollups: the cache must not keep old costs.
    let (_, cost_before) = requests_and_cost(base, &query).await;
    let reply = common::post_json_to(
        base,
        "/api/v1/usage/reprice",
        &json!({"from": now - 23 * HOUR, "to": now + 60_000}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (_, cost_after) = requests_and_cost(base, &query).await;
    assert!((cost_after - cost_before).abs() <= 1e-9 * cost_before, "same prices, same cost");
    assert!(cost_before > 0.0);
}
