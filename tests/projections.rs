//! Queries over one dimension are answered from projection series (each
//! dimension value's totals); these tests pin that they give exactly what
//! grouping every series gives — before the flush, after it, after a restart
//! and after re-pricing.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, chat, ingest, now_ms, summary, tokens, with};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;
const DIMENSIONS: [&str; 8] =
    ["model", "provider", "operation", "user", "api_key", "route", "status", "cluster"];
const COUNTERS: [&str; 9] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "total_tokens",
    "errors",
    "estimated",
    "unpriced",
    "cost_usd",
];

fn reports(now: i64, round: usize) -> Value {
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20240620", "no-such-model"];
    let reports: Vec<Value> = (0..120)
        .map(|i| {
            let mut r = chat(
                &format!("r{round}-{i}"),
                models[i % 4],
                tokens(100 + i as u64, 10 + i as u64 % 7),
                now - (i as i64 % 20) * HOUR - (i as i64 * 7_919) % HOUR,
            );
            r = with(r, "duration_ms", json!(50 + (i * 37) % 900));
            r = with(r, "user", json!(format!("user{}", i % 5)));
            if i % 3 != 0 {
                r = with(r, "route", json!(format!("route{}", i % 2)));
                r = with(r, "tags", json!({"team": format!("team{}", i % 3)}));
            }
            if i % 4 == 1 {
                r = with(r, "provider", json!("openai"));
                r = with(r, "api_key", json!(format!("sk-{}", i % 3)));
            }
            if i % 11 == 0 {
                r = with(r, "status", json!("error"));
            }
            if i % 6 == 0 {
                r = with(r, "operation", json!("embedding"));
                r = with(r, "cluster", json!("eu"));
            }
            r
        })
        .collect();
    Value::Array(reports)
}

fn counters(group: &Value) -> Vec<String> {
    // Costs are summed in different orders on the two paths: compare them to
    // 1e-9 relative by rounding to 9 significant digits.
    COUNTERS.iter().map(|f| format!("{f}={:.9e}", group[*f].as_f64().unwrap())).collect()
}

/// A total with its costs rounded to 9 significant digits (sums in another
/// order differ in the last bits).
fn rounded(total: &Value) -> Value {
    let mut total = total.clone();
    for field in ["cost_usd", "reported_cost_usd"] {
        let value = total[field].as_f64().unwrap();
        total[field] = json!(format!("{value:.9e}"));
    }
    total
}

/// Folds the groups of a two-dimension summary onto its first dimension.
fn folded(two: &Value, dim: &str) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for group in two["groups"].as_array().unwrap() {
        let sums = out.entry(group["key"][dim].to_string()).or_insert(vec![0.0; COUNTERS.len()]);
        for (sum, field) in sums.iter_mut().zip(COUNTERS) {
            *sum += group[field].as_f64().unwrap();
        }
    }
    out
}

async fn assert_projections_agree(base: &str, when: &str) {
    for dim in DIMENSIONS {
        let one = summary(base, &[("since", "24h"), ("group_by", dim)]).await;
        let other = if dim == "model" { "user" } else { "model" };
        let two = summary(base, &[("since", "24h"), ("group_by", &format!("{dim},{other}"))]).await;
        let expected: BTreeMap<String, Vec<String>> = folded(&two, dim)
            .into_iter()
            .map(|(key, sums)| {
                let group: Value =
                    COUNTERS.iter().zip(&sums).map(|(f, v)| (f.to_string(), json!(v))).collect();
                (key, counters(&group))
            })
            .collect();
        let actual: BTreeMap<String, Vec<String>> = one["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["key"][dim].to_string(), counters(g)))
            .collect();
        assert_eq!(actual, expected, "{when}: group_by={dim}");
        assert!(actual.len() > 1 || dim == "cluster" || dim == "status", "{when}: {dim} varied");
        // Totals, latency quantiles included, are equal too.
        assert_eq!(
            rounded(&one["total"]),
            rounded(&two["total"]),
            "{when}: totals of group_by={dim}"
        );
    }
    let total = summary(base, &[("since", "24h")]).await;
    let all = summary(base, &[("since", "24h"), ("group_by", "user,route")]).await;
    assert_eq!(rounded(&total["total"]), rounded(&all["total"]), "{when}: ungrouped total");
    assert_eq!(total["total"]["requests"], json!(240));

    // Tag projections answer queries filtered to given values.
    let team =
        summary(base, &[("since", "24h"), ("group_by", "tag.team"), ("filter", "tag.team:team1")])
            .await;
    let by_model =
        summary(base, &[("since", "24h"), ("group_by", "model"), ("filter", "tag.team:team1")])
            .await;
    assert_eq!(rounded(&team["total"]), rounded(&by_model["total"]), "{when}: tag.team filter");
    assert!(team["total"]["requests"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn one_dimension_queries_match_grouping_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        TestServer::start(dir.path(), &[("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "1h")]);
    let now = now_ms();
    ingest(server.url(), &reports(now, 0)).await;
    ingest(server.url(), &reports(now, 1)).await;
    assert_projections_agree(server.url(), "open buckets only").await;

    server.terminate();
    server.restart();
    assert_projections_agree(server.url(), "flushed at shutdown, after restart").await;

    let reply = common::post_json_to(
        server.url(),
        "/api/v1/usage/reprice",
        &json!({"from": now - 23 * HOUR, "to": now + 60_000}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_projections_agree(server.url(), "after re-pricing").await;

    // New data on top of flushed projections: open and stored rows combine.
    ingest(server.url(), &reports(now, 2)).await;
    let total = summary(server.url(), &[("since", "24h"), ("group_by", "model")]).await;
    assert_eq!(total["total"]["requests"], json!(360));
}
