//! Usage ingest and queries end to end: deduplication (within a batch, across batches and
//! restarts), seed-003 aliases, stream estimation, cached tokens, embedding totals, errors, request
//! counts, unpriced models, grouping and filters, batch forms (NDJSON, envelope, gzip), series
//! buckets, record paging, CSV, projects and time anchoring.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

fn server() -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    (dir, server)
}

fn gpt_4o() -> Price {
    catalog_price("gpt-4o")
}

#[test]
fn catalog_reference_prices() {
    // The test's own reading of catalog.tsv agrees with the brief's figures.
    let p = gpt_4o();
    assert_eq!(p.input, 2.5e-6);
    assert_eq!(p.output, 1e-5);
    assert_eq!(p.cache_read, Some(1.25e-6));
    assert_eq!(p.cache_write, None);
}

/// One generated report of the grouping test: model, user, api key, team, tokens.
type Row<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Tokens);

#[tokio::test]
async fn duplicates_within_batches_across_batches_and_across_restart() {
    let (_dir, mut server) = server();
    let t0 = now_ms() - 30 * MINUTE_MS;
    let p = gpt_4o();
    let a1 = tokens(100, 10);
    let a2 = tokens(200, 20);
    let a3 = tokens(300, 30);
    let a4 = tokens(400, 40);

    // Within one batch: the first a1 counts, the second (different numbers) is
    // acknowledged as a duplicate and ignored.
    let reply = post_usage(
        server.url(),
        &json!([
            chat("a1", "gpt-4o", a1, t0),
            chat("a2", "gpt-4o", a2, t0),
            chat("a1", "gpt-4o", tokens(9999, 9999), t0),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({"accepted": 2, "duplicates": 1, "rejected": []}));

    // Across batches.
    let (accepted, duplicates) =
        ingest(server.url(), &json!([chat("a2", "gpt-4o", a2, t0), chat("a3", "gpt-4o", a3, t0)]))
            .await;
    assert_eq!((accepted, duplicates), (1, 1));

    // Across a SIGKILL and restart.
    server.kill_9();
    server.restart();
    let (accepted, duplicates) = ingest(
        server.url(),
        &json!([
            chat("a1", "gpt-4o", a1, t0),
            chat("a3", "gpt-4o", a3, t0),
            chat("a4", "gpt-4o", a4, t0),
        ]),
    )
    .await;
    assert_eq!((accepted, duplicates), (1, 2));

    // Reports without an id are counted every time they arrive.
    let no_id =
        json!({"model": "gpt-4o", "input_tokens": 7, "output_tokens": 1, "completed_at": t0});
    assert_eq!(ingest(server.url(), &no_id).await, (1, 0));
    assert_eq!(ingest(server.url(), &no_id).await, (1, 0));

    let expected = Expect::sum(&[
        Expect::call(Some(&p), a1, 1),
        Expect::call(Some(&p), a2, 1),
        Expect::call(Some(&p), a3, 1),
        Expect::call(Some(&p), a4, 1),
        Expect::call(Some(&p), tokens(7, 1), 1),
        Expect::call(Some(&p), tokens(7, 1), 1),
    ]);
    let s = summary(server.url(), &[]).await;
    expected.assert_matches(&s["total"], "total after duplicates");
    let records = all_records(server.url(), &[], 100).await;
    assert_eq!(records.len(), 6);
    let a1_record = records.iter().find(|r| r["id"] == "a1").unwrap();
    assert_eq!(a1_record["input_tokens"], 100, "first a1 of the batch wins");

    // And again after a clean restart.
    server.terminate();
    server.restart();
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "after SIGTERM restart");
}

/// A gateway's id: `chatcmpl-` and 24 characters that look random.
fn gateway_id(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("chatcmpl-");
    for _ in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id.push(alphabet[(x % 62) as usize] as char);
    }
    id
}

#[tokio::test]
async fn ids_sent_again_are_found_in_every_run_of_the_key_index_across_restarts_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    // Runs of 64 keys: 3,000 reports leave dozens of runs and keys in memory.
    let env = [("TALLY_SQLITE__KEY_RUN_KEYS", "64")];
    let mut server = TestServer::start(&dir.path().join("data"), &env);
    let t0 = now_ms() - 30 * MINUTE_MS;
    let batch = |ids: std::ops::Range<u64>| {
        Value::Array(
            ids.map(|n| chat(&gateway_id(n), "gpt-4o", tokens(10 + n % 7, 1), t0)).collect(),
        )
    };
    for start in (0..3_000).step_by(250) {
        assert_eq!(ingest(server.url(), &batch(start..start + 250)).await, (250, 0));
    }
    // Every id again, in batches that mix old and new ones.
    assert_eq!(ingest(server.url(), &batch(0..100)).await, (0, 100));
    assert_eq!(ingest(server.url(), &batch(2_950..3_050)).await, (50, 50));
    server.terminate();
    server.restart();
    assert_eq!(ingest(server.url(), &batch(0..3_050)).await, (0, 3_050), "after a clean stop");
    // Killed with keys in memory only: read back from the calls.
    assert_eq!(ingest(server.url(), &batch(3_050..3_100)).await, (50, 0));
    server.kill_9();
    server.restart();
    assert_eq!(ingest(server.url(), &batch(3_000..3_100)).await, (0, 100), "after a kill");
    assert_eq!(ingest(server.url(), &batch(1_000..1_001)).await, (0, 1));
    let expected: u64 = (0..3_100).map(|n| 10 + n % 7).sum();
    let total = &summary(server.url(), &[]).await["total"];
    assert_eq!(total["requests"], 3_100);
    assert_eq!(total["input_tokens"], expected);
}

#[tokio::test]
async fn concurrent_posts_of_the_same_ids_count_once() {
    let (_dir, server) = server();
    let t0 = now_ms() - 5 * MINUTE_MS;
    // 8 clients each send ids 0..40 at once (overlapping).
    let batch: Vec<Value> =
        (0..40).map(|i| chat(&format!("c{i}"), "gpt-4o", tokens(10 + i, 1), t0)).collect();
    let body = Value::Array(batch);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let url = server.url().to_owned();
        let body = body.clone();
        handles.push(tokio::spawn(async move { ingest(&url, &body).await }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for h in handles {
        let (a, d) = h.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted, 40);
    assert_eq!(duplicates, 7 * 40);
    let expected = Expect::sum(
        &(0..40).map(|i| Expect::call(Some(&gpt_4o()), tokens(10 + i, 1), 1)).collect::<Vec<_>>(),
    );
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "total");
}

#[tokio::test]
async fn seed_003_aliases() {
    let (_dir, server) = server();
    let t0 = now_ms() - 20 * MINUTE_MS;
    let raw_key = "sk-live-SEED003-do-not-leak-4242";
    let report = json!({
        "id": "seed-1",
        "model": "gpt-4o",
        "model_id": 7,
        "provider_type": "openai",
        "provider_id": 3,
        "operation": "chat_completion",
        "user_id": 42,
        "access_key": raw_key,
        "model_route_id": 11,
        "cluster_id": "c-eu",
        "input_token": 1000,
        "output_token": 200,
        "total_token": 1200,
        "input_cached_token": 400,
        "request_count": 3,
        "output_chunk_count": 50,
        "request_content_bytes": 5000,
        "completed_at": t0,
    });
    // Provider falls back name → type → id.
    let by_name = json!({"id": "seed-2", "model": "gpt-4o", "provider_name": "acme-east",
        "provider_type": "acme", "provider_id": 9, "input_token": 10, "completed_at": t0});
    let by_type = json!({"id": "seed-3", "model": "gpt-4o", "provider_type": "acme",
        "provider_id": 9, "input_token": 20, "completed_at": t0});
    let by_id = json!({"id": "seed-4", "model": "gpt-4o", "provider_id": 9,
        "input_token": 30, "completed_at": t0});
    let (accepted, _) = ingest(server.url(), &json!([report, by_name, by_type, by_id])).await;
    assert_eq!(accepted, 4);

    let records = all_records(server.url(), &[], 100).await;
    let rec = |id: &str| records.iter().find(|r| r["id"] == id).unwrap().clone();
    let r = rec("seed-1");
    assert_eq!(r["user"], "42");
    assert_eq!(r["route"], "11");
    assert_eq!(r["cluster"], "c-eu");
    assert_eq!(r["provider"], "openai");
    assert_eq!(r["operation"], "chat");
    assert_eq!(r["tags"]["model_id"], "7");
    assert_eq!(r["requests"], 3);
    assert_eq!(r["input_tokens"], 1000);
    assert_eq!(r["output_tokens"], 200);
    assert_eq!(r["total_tokens"], 1200);
    assert_eq!(r["cache_read_tokens"], 400);
    assert_eq!(r["output_chunks"], 50);
    assert_eq!(r["request_bytes"], 5000);
    let fingerprint = r["api_key"].as_str().unwrap().to_owned();
    assert!(
        fingerprint.len() == 14
            && fingerprint.starts_with("k_")
            && fingerprint[2..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "api_key must be k_ + 12 hex, got {fingerprint}"
    );
    assert_eq!(rec("seed-2")["provider"], "acme-east");
    assert_eq!(rec("seed-3")["provider"], "acme");
    assert_eq!(rec("seed-4")["provider"], "9");

    let p = gpt_4o();
    let main = Expect::call(
        Some(&p),
        Tokens { input: 1000, output: 200, cache_read: 400, ..Tokens::default() },
        3,
    );
    let expected = Expect::sum(&[
        main.clone(),
        Expect::call(Some(&p), tokens(10, 0), 1),
        Expect::call(Some(&p), tokens(20, 0), 1),
        Expect::call(Some(&p), tokens(30, 0), 1),
    ]);
    let s = summary(server.url(), &[("group_by", "route,cluster,user")]).await;
    expected.assert_matches(&s["total"], "total");
    main.assert_matches(
        group(&s, &json!({"route": "11", "cluster": "c-eu", "user": "42"})),
        "seed-1 group",
    );
    let by_tag = summary(server.url(), &[("group_by", "tag.model_id")]).await;
    main.assert_matches(group(&by_tag, &json!({"tag.model_id": "7"})), "tag.model_id");

    // The raw key appears in no response.
    let mut texts = vec![
        get(server.url(), "/api/v1/usage/records", &[]).await.text,
        get(server.url(), "/api/v1/usage/records", &[("format", "csv")]).await.text,
    ];
    for format in ["json", "csv"] {
        texts.push(
            get(
                server.url(),
                "/api/v1/usage/summary",
                &[("group_by", "api_key"), ("format", format)],
            )
            .await
            .text,
        );
    }
    texts.push(
        get(server.url(), "/api/v1/usage/series", &[("group_by", "api_key"), ("step", "1m")])
            .await
            .text,
    );
    for text in &texts {
        assert!(!text.contains(raw_key), "raw API key leaked: {text}");
        assert!(!text.contains("SEED003"), "part of the raw API key leaked");
    }
    assert!(texts[0].contains(&fingerprint));
}

#[tokio::test]
async fn incomplete_streams_are_estimated_without_overwriting_carried_values() {
    let (_dir, server) = server();
    let t0 = now_ms() - 10 * MINUTE_MS;
    let reports = json!([
        // Nothing carried: input = 4001 / 4 = 1000, output = 37 chunks.
        {"id": "s1", "model": "gpt-4o", "completed": false, "request_bytes": 4001,
         "output_chunks": 37, "completed_at": t0},
        // Tiny request: at least 1 input token; no chunks, output stays 0.
        {"id": "s2", "model": "gpt-4o", "completed": false, "request_bytes": 3,
         "completed_at": t0},
        // Input carried (kept), output missing (estimated from chunks).
        {"id": "s3", "model": "gpt-4o", "completed": false, "input_tokens": 500,
         "output_tokens": 0, "output_chunks": 20, "request_bytes": 40000, "completed_at": t0},
        // Both carried: nothing estimated.
        {"id": "s4", "model": "gpt-4o", "completed": false, "input_tokens": 300,
         "output_tokens": 40, "output_chunks": 99, "request_bytes": 99999, "completed_at": t0},
        // Completed streams are never estimated.
        {"id": "s5", "model": "gpt-4o", "completed": true, "request_bytes": 800,
         "output_chunks": 9, "completed_at": t0},
        // input 0 means missing: estimated; output carried.
        {"id": "s6", "model": "gpt-4o", "completed": false, "input_tokens": 0,
         "output_tokens": 5, "output_chunks": 70, "request_bytes": 800, "completed_at": t0},
        // Seed-003 spellings, two requests.
        {"id": "s7", "model": "gpt-4o", "completed": false, "request_content_bytes": 400,
         "output_chunk_count": 8, "request_count": 2, "completed_at": t0},
    ]);
    let (accepted, _) = ingest(server.url(), &reports).await;
    assert_eq!(accepted, 7);

    let want: BTreeMap<&str, (u64, u64, bool)> = [
        ("s1", (1000, 37, true)),
        ("s2", (1, 0, true)),
        ("s3", (500, 20, true)),
        ("s4", (300, 40, false)),
        ("s5", (0, 0, false)),
        ("s6", (200, 5, true)),
        ("s7", (100, 8, true)),
    ]
    .into_iter()
    .collect();
    let records = all_records(server.url(), &[], 100).await;
    assert_eq!(records.len(), want.len());
    let p = gpt_4o();
    let mut expected = Expect::default();
    for r in &records {
        let id = r["id"].as_str().unwrap();
        let (input, output, estimated) = want[id];
        assert_eq!(r["input_tokens"], input, "{id} input");
        assert_eq!(r["output_tokens"], output, "{id} output");
        assert_eq!(r["total_tokens"], input + output, "{id} total");
        assert_eq!(r["estimated"], estimated, "{id} estimated");
        let requests = if id == "s7" { 2 } else { 1 };
        let mut e = Expect::call(Some(&p), tokens(input, output), requests);
        if estimated {
            e.estimated = requests;
        }
        assert_cost(r["cost_usd"].as_f64().unwrap(), e.cost_usd, &format!("{id} cost"));
        expected.add(&e);
    }
    assert_eq!(expected.estimated, 6);
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "total");
}

#[tokio::test]
async fn estimation_ratios_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("TALLY_ACCOUNTING__BYTES_PER_INPUT_TOKEN", "3"),
            ("TALLY_ACCOUNTING__TOKENS_PER_OUTPUT_CHUNK", "2"),
        ],
    );
    let report = json!({"id": "r", "model": "gpt-4o", "completed": false,
        "request_bytes": 3000, "output_chunks": 21, "completed_at": now_ms() - MINUTE_MS});
    ingest(server.url(), &report).await;
    let mut e = Expect::call(Some(&gpt_4o()), tokens(1000, 42), 1);
    e.estimated = 1;
    e.assert_matches(&summary(server.url(), &[]).await["total"], "total");
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_priced_per_the_accounting_rules() {
    let (_dir, server) = server();
    let t0 = now_ms() - 15 * MINUTE_MS;
    // (model, tokens): a model with both cache prices, one without a
    // cache-write price, one with no cache price at all, one that prices
    // reasoning apart, and gpt-4o with reasoning charged as output.
    let cases: Vec<(&str, Tokens)> = vec![
        (
            "claude-sonnet-4-5",
            Tokens {
                input: 10_000,
                output: 500,
                cache_read: 6_000,
                cache_write: 1_000,
                reasoning: 0,
            },
        ),
        (
            "gpt-4o",
            Tokens {
                input: 2_000,
                output: 100,
                cache_read: 1_200,
                cache_write: 300,
                reasoning: 40,
            },
        ),
        (
            "gpt-3.5-turbo",
            Tokens { input: 3_000, output: 70, cache_read: 2_500, cache_write: 0, reasoning: 0 },
        ),
        (
            "dashscope/qwen-plus-2025-04-28",
            Tokens { input: 100, output: 1_000, cache_read: 0, cache_write: 0, reasoning: 400 },
        ),
    ];
    // Sanity: the catalog rows have the shapes the cases are about.
    assert!(catalog_price("claude-sonnet-4-5").cache_write.is_some());
    assert!(catalog_price("gpt-3.5-turbo").cache_read.is_none());
    assert!(catalog_price("dashscope/qwen-plus-2025-04-28").reasoning.is_some());

    let reports: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (model, t))| chat(&format!("c{i}"), model, *t, t0))
        .collect();
    ingest(server.url(), &Value::Array(reports)).await;

    let s = summary(server.url(), &[("group_by", "model")]).await;
    let mut total = Expect::default();
    for (model, t) in &cases {
        let e = Expect::call(Some(&catalog_price(model)), *t, 1);
        e.assert_matches(group(&s, &json!({ "model": model })), model);
        total.add(&e);
    }
    total.assert_matches(&s["total"], "total");
    // Input counts cached tokens once (they are part of input, not added).
    assert_eq!(s["total"]["input_tokens"], 15_100);
    // Spot-check one cost by hand: claude-sonnet-4-5 =
    // 3000×3e-6 + 6000×3e-7 + 1000×3.75e-6 + 500×1.5e-5.
    assert_cost(
        group(&s, &json!({"model": "claude-sonnet-4-5"}))["cost_usd"].as_f64().unwrap(),
        3000.0 * 3e-6 + 6000.0 * 3e-7 + 1000.0 * 3.75e-6 + 500.0 * 1.5e-5,
        "claude by hand",
    );
}

#[tokio::test]
async fn embedding_and_rerank_totals() {
    let (_dir, server) = server();
    let t0 = now_ms() - 15 * MINUTE_MS;
    let reports = json!([
        {"id": "e1", "model": "text-embedding-3-small", "operation": "embeddings",
         "total_tokens": 1234, "completed_at": t0},
        {"id": "e2", "model": "text-embedding-3-small", "operation": "embedding",
         "total_token": 66, "completed_at": t0},
        {"id": "r1", "model": "amazon.rerank-v1:0", "operation": "rerank",
         "total_tokens": 500, "output_tokens": 0, "completed_at": t0},
        // A chat with only a total keeps input 0; the total is kept.
        {"id": "c1", "model": "gpt-4o", "total_tokens": 900, "completed_at": t0},
        // A total below input + output is raised to input + output.
        {"id": "c2", "model": "gpt-4o", "input_tokens": 50, "output_tokens": 30,
         "total_tokens": 10, "completed_at": t0},
    ]);
    ingest(server.url(), &reports).await;
    let records = all_records(server.url(), &[], 100).await;
    let rec = |id: &str| records.iter().find(|r| r["id"] == id).unwrap().clone();
    for (id, input, output, total, op) in [
        ("e1", 1234, 0, 1234, "embedding"),
        ("e2", 66, 0, 66, "embedding"),
        ("r1", 500, 0, 500, "rerank"),
        ("c1", 0, 0, 900, "chat"),
        ("c2", 50, 30, 80, "chat"),
    ] {
        let r = rec(id);
        assert_eq!(r["input_tokens"], input, "{id} input");
        assert_eq!(r["output_tokens"], output, "{id} output");
        assert_eq!(r["total_tokens"], total, "{id} total");
        assert_eq!(r["operation"], op, "{id} operation");
    }
    let emb = catalog_price("text-embedding-3-small");
    let s = summary(server.url(), &[("group_by", "operation")]).await;
    let emb_expect = Expect::sum(&[
        Expect::call(Some(&emb), tokens(1234, 0), 1),
        Expect::call(Some(&emb), tokens(66, 0), 1),
    ]);
    emb_expect.assert_matches(group(&s, &json!({"operation": "embedding"})), "embedding");
    Expect::call(Some(&catalog_price("amazon.rerank-v1:0")), tokens(500, 0), 1)
        .assert_matches(group(&s, &json!({"operation": "rerank"})), "rerank");
    let mut c1 = Expect::call(Some(&gpt_4o()), tokens(0, 0), 1);
    c1.total_tokens = 900;
    let chat = Expect::sum(&[c1, Expect::call(Some(&gpt_4o()), tokens(50, 30), 1)]);
    chat.assert_matches(group(&s, &json!({"operation": "chat"})), "chat");
}

/// DESIGN.md: "Embedding and reranker calls that report only a total:
/// input = total − output." A report that does carry input_tokens is not one
/// of those, and carried values are never overwritten.
#[tokio::test]
async fn embedding_with_carried_input_keeps_it() {
    let (_dir, server) = server();
    let report = json!({"id": "e", "model": "text-embedding-3-small", "operation": "embedding",
        "input_tokens": 100, "total_tokens": 150, "completed_at": now_ms() - MINUTE_MS});
    ingest(server.url(), &report).await;
    let records = all_records(server.url(), &[], 10).await;
    assert_eq!(records[0]["total_tokens"], 150);
    assert_eq!(records[0]["input_tokens"], 100, "carried input_tokens replaced by total − output");
}

#[tokio::test]
async fn errors_statuses_and_request_counts() {
    let (_dir, server) = server();
    let t0 = now_ms() - 12 * MINUTE_MS;
    let p = gpt_4o();
    let reports = json!([
        {"id": "ok1", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10,
         "status": "ok", "completed_at": t0},
        {"id": "ok5", "model": "gpt-4o", "input_tokens": 500, "output_tokens": 50,
         "request_count": 5, "completed_at": t0},
        {"id": "err1", "model": "gpt-4o", "input_tokens": 20, "status": "error",
         "error_type": "rate_limit", "completed_at": t0},
        {"id": "err3", "model": "gpt-4o", "input_tokens": 30, "status": "error",
         "requests": 3, "completed_at": t0},
        {"id": "can1", "model": "gpt-4o", "input_tokens": 40, "output_tokens": 4,
         "status": "cancelled", "completed_at": t0},
    ]);
    ingest(server.url(), &reports).await;
    let s = summary(server.url(), &[("group_by", "status")]).await;
    let ok = Expect::sum(&[
        Expect::call(Some(&p), tokens(100, 10), 1),
        Expect::call(Some(&p), tokens(500, 50), 5),
    ]);
    let mut err = Expect::sum(&[
        Expect::call(Some(&p), tokens(20, 0), 1),
        Expect::call(Some(&p), tokens(30, 0), 3),
    ]);
    err.errors = 4;
    let cancelled = Expect::call(Some(&p), tokens(40, 4), 1);
    ok.assert_matches(group(&s, &json!({"status": "ok"})), "ok");
    err.assert_matches(group(&s, &json!({"status": "error"})), "error");
    cancelled.assert_matches(group(&s, &json!({"status": "cancelled"})), "cancelled");
    Expect::sum(&[ok, err, cancelled]).assert_matches(&s["total"], "total");
    assert_eq!(s["total"]["requests"], 11);
    assert_eq!(s["total"]["errors"], 4);
}

#[tokio::test]
async fn unpriced_models_are_counted_with_cost_zero_and_listed() {
    let (_dir, server) = server();
    let t0 = now_ms() - 8 * MINUTE_MS;
    let reports = json!([
        {"id": "u1", "model": "my-private-llm-xyz", "provider": "acme", "input_tokens": 1000,
         "output_tokens": 100, "request_count": 2, "cost_usd": 0.5, "completed_at": t0},
        {"id": "u2", "model": "my-private-llm-xyz", "provider": "acme", "input_tokens": 10,
         "output_tokens": 1, "completed_at": t0},
        {"id": "p1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1,
         "completed_at": t0},
    ]);
    ingest(server.url(), &reports).await;
    let s = summary(server.url(), &[("group_by", "model")]).await;
    let unpriced = Expect::sum(&[
        Expect::call(None, tokens(1000, 100), 2),
        Expect::call(None, tokens(10, 1), 1),
    ]);
    let g = group(&s, &json!({"model": "my-private-llm-xyz"}));
    unpriced.assert_matches(g, "unpriced model");
    assert_cost(g["reported_cost_usd"].as_f64().unwrap(), 0.5, "reported cost kept");
    assert_eq!(s["total"]["unpriced"], 3);
    let list = get_ok(server.url(), "/api/v1/usage/unpriced", &[]).await;
    assert_eq!(
        list["models"],
        json!([{"model": "my-private-llm-xyz", "provider": "acme", "requests": 3,
                "input_tokens": 1010, "output_tokens": 101}]),
        "{list}"
    );
    let records = all_records(server.url(), &[("filter", "model:my-private-llm-xyz")], 10).await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["cost_usd"], 0.0);
        assert_eq!(r["price_id"], Value::Null);
    }
}

/// Data for the grouping tests: (model, user, key, team, tokens).
fn grouping_data() -> Vec<(&'static str, &'static str, &'static str, Option<&'static str>, Tokens)>
{
    vec![
        ("gpt-4o", "alice", "sk-A-secret-111", Some("search"), tokens(1000, 100)),
        ("gpt-4o", "bob", "sk-B-secret-222", Some("ads"), tokens(2000, 200)),
        ("gpt-4o-mini", "alice", "sk-A-secret-111", Some("search"), tokens(3000, 300)),
        ("gpt-4o-mini", "bob", "sk-B-secret-222", None, tokens(4000, 400)),
        ("gpt-4o-mini", "carol", "sk-A-secret-111", Some("ads"), tokens(5000, 500)),
    ]
}

#[tokio::test]
async fn group_by_and_filters() {
    let (_dir, server) = server();
    let t0 = now_ms() - 25 * MINUTE_MS;
    let data = grouping_data();
    let reports: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, (model, user, key, team, t))| {
            let mut r = chat(&format!("g{i}"), model, *t, t0);
            r = with(r, "user", json!(user));
            r = with(r, "api_key", json!(key));
            if let Some(team) = team {
                r = with(r, "tags", json!({ "team": team, "env": "prod" }));
            }
            r
        })
        .collect();
    ingest(server.url(), &Value::Array(reports)).await;
    let expect_of = |keep: &dyn Fn(&Row) -> bool| {
        Expect::sum(
            &data
                .iter()
                .filter(|d| keep(d))
                .map(|d| Expect::call(Some(&catalog_price(d.0)), d.4, 1))
                .collect::<Vec<_>>(),
        )
    };
    let mut texts = Vec::new();

    // group_by=model
    let s = summary(server.url(), &[("group_by", "model")]).await;
    assert_eq!(s["groups"].as_array().unwrap().len(), 2);
    for model in ["gpt-4o", "gpt-4o-mini"] {
        expect_of(&|d| d.0 == model).assert_matches(group(&s, &json!({ "model": model })), model);
    }
    expect_of(&|_| true).assert_matches(&s["total"], "total");
    texts.push(s.to_string());

    // group_by=user
    let s = summary(server.url(), &[("group_by", "user")]).await;
    assert_eq!(s["groups"].as_array().unwrap().len(), 3);
    for user in ["alice", "bob", "carol"] {
        expect_of(&|d| d.1 == user).assert_matches(group(&s, &json!({ "user": user })), user);
    }

    // group_by=api_key: fingerprints, two of them, never the raw keys.
    let s = summary(server.url(), &[("group_by", "api_key")]).await;
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let records = all_records(server.url(), &[], 100).await;
    let fp_of = |user: &str| -> String {
        records.iter().find(|r| r["user"] == user && r["model"] == "gpt-4o").unwrap()["api_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (fp_a, fp_b) = (fp_of("alice"), fp_of("bob"));
    assert_ne!(fp_a, fp_b);
    expect_of(&|d| d.2 == "sk-A-secret-111")
        .assert_matches(group(&s, &json!({ "api_key": fp_a })), "key A");
    expect_of(&|d| d.2 == "sk-B-secret-222")
        .assert_matches(group(&s, &json!({ "api_key": fp_b })), "key B");
    texts.push(s.to_string());
    texts.push(json!(records).to_string());

    // group_by=tag.team: the untagged record has a null key.
    let s = summary(server.url(), &[("group_by", "tag.team")]).await;
    assert_eq!(s["groups"].as_array().unwrap().len(), 3);
    for team in ["search", "ads"] {
        expect_of(&|d| d.3 == Some(team))
            .assert_matches(group(&s, &json!({ "tag.team": team })), team);
    }
    expect_of(&|d| d.3.is_none()).assert_matches(group(&s, &json!({"tag.team": null})), "no team");

    // Two dimensions, repeated group_by accepted too.
    let s = summary(server.url(), &[("group_by", "model"), ("group_by", "user")]).await;
    assert_eq!(s["groups"].as_array().unwrap().len(), 5);
    expect_of(&|d| d.0 == "gpt-4o-mini" && d.1 == "bob")
        .assert_matches(group(&s, &json!({"model": "gpt-4o-mini", "user": "bob"})), "mini/bob");

    // Filters: one value, OR within a dimension, AND across dimensions.
    let total = |s: &Value| s["total"].clone();
    let s = summary(server.url(), &[("filter", "user:alice")]).await;
    expect_of(&|d| d.1 == "alice").assert_matches(&total(&s), "user:alice");
    let s = summary(server.url(), &[("filter", "user:alice"), ("filter", "user:carol")]).await;
    expect_of(&|d| d.1 == "alice" || d.1 == "carol").assert_matches(&total(&s), "alice|carol");
    let s =
        summary(server.url(), &[("filter", "model:gpt-4o-mini"), ("filter", "user:alice")]).await;
    expect_of(&|d| d.0 == "gpt-4o-mini" && d.1 == "alice").assert_matches(&total(&s), "AND");
    let s = summary(server.url(), &[("filter", "tag.team:ads")]).await;
    expect_of(&|d| d.3 == Some("ads")).assert_matches(&total(&s), "tag.team:ads");
    let filter = format!("api_key:{fp_b}");
    let s = summary(server.url(), &[("filter", &filter), ("group_by", "user")]).await;
    expect_of(&|d| d.2 == "sk-B-secret-222").assert_matches(&total(&s), "api_key filter");
    assert_eq!(s["groups"].as_array().unwrap().len(), 1);
    let s = summary(server.url(), &[("filter", "user:nobody")]).await;
    Expect::default().assert_matches(&total(&s), "no match");
    assert_eq!(s["groups"], json!([]));
    // Filters apply to records and series as well.
    let recs = all_records(server.url(), &[("filter", "tag.team:search")], 100).await;
    assert_eq!(recs.len(), 2);
    let ser =
        series(server.url(), &[("filter", "user:bob"), ("step", "1h"), ("group_by", "model")])
            .await;
    let points: u64 = ser["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["points"].as_array().unwrap())
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(points, 2);

    // Unknown dimensions and session on rollups are refused with JSON errors.
    for (k, v) in [
        ("group_by", "colour"),
        ("filter", "colour:red"),
        ("group_by", "session"),
        ("filter", "nocolon"),
        ("group_by", "tag."),
    ] {
        let reply = get(server.url(), "/api/v1/usage/summary", &[(k, v)]).await;
        reply.assert_error(400, Some("bad_request"));
        assert!(
            reply.json["error"]["message"].as_str().unwrap().contains(k),
            "message names the parameter: {}",
            reply.text
        );
    }
    for text in &texts {
        assert!(!text.contains("secret"), "raw API key leaked: {text}");
    }
}

#[tokio::test]
async fn batch_forms_ndjson_envelope_single_object_and_gzip() {
    let (_dir, server) = server();
    let t0 = now_ms() - 3 * MINUTE_MS;
    let p = gpt_4o();
    let mut expected = Expect::default();
    let mut report = |id: &str, n: u64| {
        expected.add(&Expect::call(Some(&p), tokens(n, n / 10), 1));
        chat(id, "gpt-4o", tokens(n, n / 10), t0)
    };

    // NDJSON, with blank lines and CRLF.
    let body =
        format!("{}\r\n\n{}\n   \n{}", report("n1", 100), report("n2", 200), report("n3", 300));
    let reply = post_usage_bytes(
        server.url(),
        body.into_bytes(),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 3);

    // {"records": [...]} and the empty envelope.
    let env = json!({"records": [report("e1", 400), report("e2", 500)]});
    assert_eq!(ingest(server.url(), &env).await, (2, 0));
    let reply = post_usage(server.url(), &json!({"records": []})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({"accepted": 0, "duplicates": 0, "rejected": []}));

    // A single object.
    assert_eq!(ingest(server.url(), &report("o1", 600)).await, (1, 0));

    // Gzip: JSON array and NDJSON.
    let reply = post_gzip(server.url(), &json!([report("z1", 700), report("z2", 800)])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 2);
    let lines = vec![report("z3", 900), report("z4", 1000)];
    let reply = post_usage_bytes(
        server.url(),
        gzip(ndjson(&lines).as_bytes()),
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 2);

    // A bad NDJSON line is rejected alone, by index.
    let body = format!("{}\nnot json\n{}\n", report("b1", 1100), report("b2", 1200));
    let reply = post_usage_bytes(
        server.url(),
        body.into_bytes(),
        &[("content-type", "application/x-ndjson; charset=utf-8")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 2);
    let rejected = reply.json["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["index"], 1);

    expected.assert_matches(&summary(server.url(), &[]).await["total"], "total");
    assert_eq!(all_records(server.url(), &[], 1000).await.len(), 12);
}

/// Reports at chosen minute offsets from an hour start `base` a few hours
/// back: (offset ms, model, tokens).
fn series_layout() -> Vec<(i64, &'static str, Tokens)> {
    vec![
        (5 * MINUTE_MS + 10_000, "gpt-4o", tokens(100, 10)),
        (5 * MINUTE_MS + 50_000, "gpt-4o", tokens(200, 20)),
        (7 * MINUTE_MS, "gpt-4o-mini", tokens(300, 30)),
        (60 * MINUTE_MS - 1, "gpt-4o", tokens(400, 40)),
        (60 * MINUTE_MS, "gpt-4o-mini", tokens(500, 50)),
        (125 * MINUTE_MS + 1, "gpt-4o", tokens(600, 60)),
    ]
}

/// Expected points of a series: bucket start → totals.
fn expected_points(base: i64, step: i64, model: Option<&str>) -> BTreeMap<i64, Expect> {
    let mut points: BTreeMap<i64, Expect> = BTreeMap::new();
    for (offset, m, t) in series_layout() {
        if model.is_some_and(|want| want != m) {
            continue;
        }
        points.entry(floor_to(base + offset, step)).or_default().add(&Expect::call(
            Some(&catalog_price(m)),
            t,
            1,
        ));
    }
    points
}

fn assert_points(actual: &Value, expected: &BTreeMap<i64, Expect>, what: &str) {
    let points = actual.as_array().expect("points");
    let ts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    let want: Vec<i64> = expected.keys().copied().collect();
    assert_eq!(ts, want, "{what}: bucket starts");
    for p in points {
        let t = p["t"].as_i64().unwrap();
        expected[&t].assert_matches(p, &format!("{what} t={t}"));
    }
}

#[tokio::test]
async fn series_buckets_at_1m_1h_and_coarser_steps() {
    let (_dir, server) = server();
    let base = hours_ago_aligned(4);
    let reports: Vec<Value> = series_layout()
        .iter()
        .enumerate()
        .map(|(i, (offset, model, t))| chat(&format!("s{i}"), model, *t, base + offset))
        .collect();
    ingest(server.url(), &Value::Array(reports)).await;
    let from = base.to_string();
    let to = (base + 3 * HOUR_MS).to_string();
    let window = [("from", from.as_str()), ("to", to.as_str())];

    for (step_text, step, tier) in [
        ("1m", MINUTE_MS, "1m"),
        ("5m", 5 * MINUTE_MS, "1m"),
        ("1h", HOUR_MS, "1h"),
        ("2h", 2 * HOUR_MS, "1h"),
        ("1d", DAY_MS, "1d"),
    ] {
        let mut q = window.to_vec();
        q.push(("step", step_text));
        let s = series(server.url(), &q).await;
        assert_eq!(s["tier"], tier, "step {step_text}");
        let groups = s["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "step {step_text}: one group without group_by");
        assert_eq!(groups[0]["key"], json!({}));
        for p in groups[0]["points"].as_array().unwrap() {
            assert_eq!(
                p["t"].as_i64().unwrap().rem_euclid(step),
                0,
                "step {step_text}: bucket aligned to the step"
            );
        }
        assert_points(
            &groups[0]["points"],
            &expected_points(base, step, None),
            &format!("step {step_text}"),
        );
    }
    // Hand-written expectations for the two main steps.
    let s = series(server.url(), &[window[0], window[1], ("step", "1m")]).await;
    let ts: Vec<i64> = s["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["t"].as_i64().unwrap() - base)
        .collect();
    assert_eq!(
        ts,
        vec![5 * MINUTE_MS, 7 * MINUTE_MS, 59 * MINUTE_MS, 60 * MINUTE_MS, 125 * MINUTE_MS]
    );
    assert_eq!(s["groups"][0]["points"][0]["requests"], 2);
    let s = series(server.url(), &[window[0], window[1], ("step", "1h")]).await;
    let requests: Vec<u64> = s["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, vec![4, 1, 1]);

    // Grouped by model.
    let s =
        series(server.url(), &[window[0], window[1], ("step", "1h"), ("group_by", "model")]).await;
    for model in ["gpt-4o", "gpt-4o-mini"] {
        let g = s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == json!({ "model": model }))
            .unwrap();
        assert_points(&g["points"], &expected_points(base, HOUR_MS, Some(model)), model);
    }

    // The summary agrees whichever tiers cover the window.
    let all = Expect::sum(expected_points(base, DAY_MS, None).values());
    for q in [vec![], vec![("since", "6h")], vec![("since", "3d")], vec![window[0], window[1]]] {
        all.assert_matches(&summary(server.url(), &q).await["total"], &format!("{q:?}"));
    }
    // A window of one minute (widened to whole minutes) holds what that minute holds.
    let from = (base + 5 * MINUTE_MS + 20_000).to_string();
    let to = (base + 5 * MINUTE_MS + 30_000).to_string();
    let s = summary(server.url(), &[("from", &from), ("to", &to)]).await;
    expected_points(base, MINUTE_MS, None)[&(base + 5 * MINUTE_MS)]
        .assert_matches(&s["total"], "one minute");

    // Steps finer than a minute or not whole minutes are refused.
    for step in ["30s", "90s", "soon"] {
        get(server.url(), "/api/v1/usage/series", &[("step", step)])
            .await
            .assert_error(400, Some("bad_request"));
    }
}

#[tokio::test]
async fn records_paging_with_cursor_until_exhausted() {
    let (_dir, server) = server();
    let base = hours_ago_aligned(2);
    // 250 reports; pairs share a timestamp so the cursor must break ties.
    let all: Vec<Value> = (0..250)
        .map(|i: i64| {
            let r = chat(
                &format!("p{i:03}"),
                "gpt-4o",
                tokens(10 + i as u64, 1),
                base + (i / 2) * 1000,
            );
            with(r, "session", json!(if i % 5 == 0 { "sess-5" } else { "other" }))
        })
        .collect();
    for chunk in all.chunks(50) {
        ingest(server.url(), &Value::Array(chunk.to_vec())).await;
    }
    let want: BTreeSet<String> = (0..250).map(|i| format!("p{i:03}")).collect();

    for limit in [37, 50, 1000] {
        let records = all_records(server.url(), &[], limit).await;
        assert_eq!(records.len(), 250, "limit {limit}");
        let ids: BTreeSet<String> =
            records.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, want, "limit {limit}: every record exactly once");
        let times: Vec<i64> = records.iter().map(|r| r["time_ms"].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "ordered by time");
    }

    // CSV pages, following X-Next-Cursor.
    let mut cursor: Option<String> = None;
    let mut ids = Vec::new();
    for _ in 0..100 {
        let mut q = vec![("format", "csv"), ("limit", "64")];
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let reply = get(server.url(), "/api/v1/usage/records", &q).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        for row in csv_maps(&reply.text) {
            ids.push(row["id"].clone());
        }
        match reply.headers.get("x-next-cursor") {
            Some(v) => cursor = Some(v.to_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 250);
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), want);

    // Session filter works on records.
    let sess = all_records(server.url(), &[("filter", "session:sess-5")], 7).await;
    assert_eq!(sess.len(), 50);
    assert!(sess.iter().all(|r| r["session"] == "sess-5"));

    // Bad paging parameters.
    for q in [
        ("limit", "0"),
        ("limit", "100001"),
        ("limit", "many"),
        ("cursor", "garbage"),
        ("format", "xml"),
    ] {
        get(server.url(), "/api/v1/usage/records", &[q])
            .await
            .assert_error(400, Some("bad_request"));
    }
}

#[tokio::test]
async fn csv_outputs_parse_and_match_json() {
    let (_dir, server) = server();
    let t0 = now_ms() - 40 * MINUTE_MS;
    let reports = json!([
        {"id": "q1", "model": "gpt-4o", "user": "doe, jane", "input_tokens": 1000,
         "output_tokens": 100, "cache_read_tokens": 200, "duration_ms": 850,
         "tags": {"note": "say \"hi\", then leave", "team": "x"}, "completed_at": t0},
        {"id": "q2", "model": "gpt-4o-mini", "user": "plain", "input_tokens": 2000,
         "output_tokens": 20, "completed_at": t0},
        {"id": "q3", "model": "gpt-4o-mini", "user": "doe, jane", "input_tokens": 3000,
         "output_tokens": 30, "status": "error", "completed_at": t0},
    ]);
    ingest(server.url(), &reports).await;

    let q = [("group_by", "model,user")];
    let json_summary = summary(server.url(), &q).await;
    let reply = get(server.url(), "/api/v1/usage/summary", &[q[0], ("format", "csv")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let rows = csv_maps(&reply.text);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let g = group(&json_summary, &json!({"model": row["model"], "user": row["user"]}));
        for field in [
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "total_tokens",
            "errors",
            "unpriced",
        ] {
            assert_eq!(Some(csv_u64(row, field)), g[field].as_u64(), "{field}");
        }
        assert_cost(csv_f64(row, "cost_usd"), g["cost_usd"].as_f64().unwrap(), "CSV cost");
    }
    assert!(rows.iter().any(|r| r["user"] == "doe, jane"));

    // Records CSV: every record, quoted fields intact, tags as JSON.
    let reply = get(server.url(), "/api/v1/usage/records", &[("format", "csv")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let rows = csv_maps(&reply.text);
    let records = all_records(server.url(), &[], 100).await;
    assert_eq!(rows.len(), records.len());
    for row in &rows {
        let r = records.iter().find(|r| r["id"] == row["id"].as_str()).unwrap();
        assert_eq!(row["user"], r["user"].as_str().unwrap());
        assert_eq!(row["model"], r["model"].as_str().unwrap());
        assert_eq!(csv_u64(row, "input_tokens"), r["input_tokens"].as_u64().unwrap());
        assert_eq!(csv_u64(row, "time_ms"), r["time_ms"].as_u64().unwrap());
        let tags: Value = serde_json::from_str(&row["tags"]).expect("tags column is JSON");
        assert_eq!(tags, r["tags"]);
        assert_cost(csv_f64(row, "cost_usd"), r["cost_usd"].as_f64().unwrap(), "record CSV cost");
    }
    let q1 = rows.iter().find(|r| r["id"] == "q1").unwrap();
    assert_eq!(q1["user"], "doe, jane");
    assert_eq!(
        serde_json::from_str::<Value>(&q1["tags"]).unwrap()["note"],
        "say \"hi\", then leave"
    );
    assert!(q1["price_id"].starts_with("catalog:"));
}

#[tokio::test]
async fn projects_are_scoped() {
    let (_dir, server) = server();
    let t0 = now_ms() - 6 * MINUTE_MS;
    let reports = json!([
        {"id": "a1", "project": "alpha", "model": "gpt-4o", "input_tokens": 100,
         "completed_at": t0},
        {"id": "a2", "project": "alpha", "model": "mystery-model-q", "input_tokens": 200,
         "completed_at": t0},
        {"id": "b1", "project": "beta", "model": "gpt-4o", "input_tokens": 300, "completed_at": t0},
        {"id": "d1", "model": "gpt-4o", "input_tokens": 400, "completed_at": t0},
    ]);
    ingest(server.url(), &reports).await;
    let p = gpt_4o();
    let alpha = Expect::sum(&[
        Expect::call(Some(&p), tokens(100, 0), 1),
        Expect::call(None, tokens(200, 0), 1),
    ]);
    let beta = Expect::call(Some(&p), tokens(300, 0), 1);
    let default = Expect::call(Some(&p), tokens(400, 0), 1);

    alpha.assert_matches(&summary(server.url(), &[("project", "alpha")]).await["total"], "alpha");
    beta.assert_matches(&summary(server.url(), &[("project", "beta")]).await["total"], "beta");
    default.assert_matches(&summary(server.url(), &[]).await["total"], "default");
    default.assert_matches(
        &summary(server.url(), &[("project", "default")]).await["total"],
        "default explicit",
    );
    Expect::default().assert_matches(
        &summary(server.url(), &[("project", "nope")]).await["total"],
        "unknown project",
    );

    let recs = all_records(server.url(), &[("project", "alpha")], 10).await;
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["project"] == "alpha"));
    let recs = all_records(server.url(), &[], 10).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["id"], "d1");

    let unpriced = get_ok(server.url(), "/api/v1/usage/unpriced", &[("project", "alpha")]).await;
    assert_eq!(unpriced["models"].as_array().unwrap().len(), 1);
    let unpriced = get_ok(server.url(), "/api/v1/usage/unpriced", &[]).await;
    assert_eq!(unpriced["models"], json!([]));

    let s = series(server.url(), &[("project", "beta"), ("step", "1h")]).await;
    let requests: u64 = s["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn time_anchoring_completed_then_started_then_arrival() {
    let (_dir, server) = server();
    let base = hours_ago_aligned(3);
    let t_completed = base + 10 * MINUTE_MS + 1_500;
    let t_started = base + 20 * MINUTE_MS + 2_500;
    let t_both_start = base + 9 * MINUTE_MS + 500;
    let t_offset = base + 40 * MINUTE_MS + 999;
    let t_zero = base + 50 * MINUTE_MS;
    let old = now_ms() - 2 * DAY_MS;

    let before = now_ms();
    let reports = json!([
        // completed_at wins over started_at; RFC 3339.
        {"id": "both", "model": "gpt-4o", "input_tokens": 1, "started_at": rfc3339(t_both_start),
         "completed_at": rfc3339(t_completed)},
        // started_at alone, unix ms.
        {"id": "start", "model": "gpt-4o", "input_tokens": 2, "started_at": t_started},
        // Neither: arrival time.
        {"id": "none", "model": "gpt-4o", "input_tokens": 4},
        // An offset timestamp.
        {"id": "offset", "model": "gpt-4o", "input_tokens": 8,
         "completed_at": rfc3339_plus2(t_offset)},
        // completed_at 0 is absent: started_at applies.
        {"id": "zero", "model": "gpt-4o", "input_tokens": 16, "completed_at": 0,
         "started_at": t_zero},
        // Two days back: outside the default 24 h window.
        {"id": "old", "model": "gpt-4o", "input_tokens": 64, "completed_at": old},
        // Negative is before 2000-01-01: refused, the field named.
        {"id": "negative", "model": "gpt-4o", "input_tokens": 32, "completed_at": -5},
    ]);
    let reply = post_usage(server.url(), &reports).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 6);
    assert_eq!(reply.json["rejected"][0]["index"], 6);
    assert!(reply.json["rejected"][0]["error"].as_str().unwrap().starts_with("completed_at:"));
    let after = now_ms();

    let since = (old - HOUR_MS).to_string();
    let records = all_records(server.url(), &[("from", &since)], 100).await;
    assert_eq!(records.len(), 6);
    let time =
        |id: &str| records.iter().find(|r| r["id"] == id).unwrap()["time_ms"].as_i64().unwrap();
    assert_eq!(time("both"), t_completed);
    assert_eq!(time("start"), t_started);
    assert_eq!(time("offset"), t_offset);
    assert_eq!(time("zero"), t_zero);
    assert_eq!(time("old"), old);
    assert!(
        (before..=after).contains(&time("none")),
        "none: arrival time {} not in [{before}, {after}]",
        time("none")
    );
    let both = records.iter().find(|r| r["id"] == "both").unwrap();
    assert_eq!(both["started_at_ms"], t_both_start);
    assert_eq!(both["completed_at_ms"], t_completed);
    assert_eq!(both["duration_ms"], (t_completed - t_both_start) as f64);
    let zero = records.iter().find(|r| r["id"] == "zero").unwrap();
    assert_eq!(zero["completed_at_ms"], Value::Null);

    // The 1-minute series puts each record in its minute.
    let from = base.to_string();
    let to = (base + HOUR_MS).to_string();
    let s = series(server.url(), &[("from", &from), ("to", &to), ("step", "1m")]).await;
    let points: BTreeMap<i64, u64> = s["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["t"].as_i64().unwrap() - base, p["input_tokens"].as_u64().unwrap()))
        .collect();
    let want: BTreeMap<i64, u64> =
        [(10 * MINUTE_MS, 1), (20 * MINUTE_MS, 2), (40 * MINUTE_MS, 8), (50 * MINUTE_MS, 16)]
            .into_iter()
            .collect();
    assert_eq!(points, want);

    // Default window: everything but the old one.
    assert_eq!(summary(server.url(), &[]).await["total"]["input_tokens"], 1 + 2 + 4 + 8 + 16);
    // A window around the old one.
    let from = (old - MINUTE_MS).to_string();
    let to = (old + MINUTE_MS).to_string();
    assert_eq!(
        summary(server.url(), &[("from", &from), ("to", &to)]).await["total"]["input_tokens"],
        64
    );
    assert_eq!(summary(server.url(), &[("since", "3d")]).await["total"]["input_tokens"], 95);
}
