//! Crash safety: a client streams batches while the server is SIGKILLed and restarted several times
//! (every acknowledged report counted exactly once, retried batches not doubled), and rollup totals
//! survive a kill right after a large acknowledged batch (replay past the rollup watermark).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const BATCH: u64 = 20;
/// Concurrent client streams.
const CLIENTS: u64 = 3;
/// Each client sends at least this many batches, at most `MAX_BATCHES`.
const MIN_BATCHES: u64 = 10;
const MAX_BATCHES: u64 = 1_000;
const KILLS: usize = 4;

const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"];

/// Report `i` of batch `b`: deterministic, unique id, in the last few hours.
fn report(base: i64, b: u64, i: u64) -> (Value, Expect) {
    let model = MODELS[((b + i) % 3) as usize];
    let input = 100 + (b * 7 + i * 13) % 900;
    let t = Tokens {
        input,
        output: 10 + (b * 3 + i * 5) % 90,
        cache_read: if i.is_multiple_of(4) { input / 4 } else { 0 },
        cache_write: if model == "claude-sonnet-4-5" && i.is_multiple_of(5) {
            input / 8
        } else {
            0
        },
        reasoning: 0,
    };
    let requests = 1 + (i % 3);
    let at = base + ((b % 180) as i64) * MINUTE_MS + (i as i64) * 997;
    let mut value = chat(&format!("crash-{b}-{i}"), model, t, at);
    value = with(value, "request_count", json!(requests));
    value = with(value, "user", json!(format!("u{}", b % 5)));
    let expect = Expect::call(Some(&catalog_price(model)), t, requests);
    (value, expect)
}

fn batch(base: i64, b: u64) -> (Value, Expect) {
    let mut reports = Vec::new();
    let mut expect = Expect::default();
    for i in 0..BATCH {
        let (v, e) = report(base, b, i);
        reports.push(v);
        expect.add(&e);
    }
    (Value::Array(reports), expect)
}

/// What a client saw for one batch.
#[derive(Debug)]
struct Sent {
    batch: u64,
    accepted: u64,
    duplicates: u64,
    attempts: u32,
}

/// Client `c` of `CLIENTS` sends batches c, c + CLIENTS, … to whatever URL
/// `url` holds, retrying each until it is acknowledged, until `stop`.
async fn stream(c: u64, base: i64, url: Arc<RwLock<String>>, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut sent: Vec<Sent> = Vec::new();
    for n in 0..MAX_BATCHES {
        if n >= MIN_BATCHES && stop.load(Ordering::SeqCst) {
            break;
        }
        let b = n * CLIENTS + c;
        let (body, _) = batch(base, b);
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 1_000, "batch {b} never acknowledged");
            let target = format!("{}/api/v1/usage", url.read().unwrap());
            match http.post(&target).json(&body).send().await {
                Ok(response) if response.status() == 200 => {
                    // A body cut off by the kill is retried like an error.
                    if let Ok(reply) = response.json::<Value>().await {
                        assert_eq!(reply["rejected"], json!([]));
                        sent.push(Sent {
                            batch: b,
                            accepted: reply["accepted"].as_u64().unwrap(),
                            duplicates: reply["duplicates"].as_u64().unwrap(),
                            attempts,
                        });
                        break;
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    assert!(
                        status.is_server_error() || status == 429,
                        "batch {b}: unexpected {status}"
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Pace the stream so the kills land mid-stream.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_reports_survive_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // Keys written to the index in runs of 50: kills land between runs.
    let env = [("TALLY_SQLITE__KEY_RUN_KEYS", "50")];
    let mut server = TestServer::start(&dir.path().join("data"), &env);
    let base = hours_ago_aligned(4);
    let url = Arc::new(RwLock::new(server.url().to_owned()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..CLIENTS).map(|c| tokio::spawn(stream(c, base, url.clone(), stop.clone()))).collect();

    let mut lcg = Lcg::new(0x5eed_2026);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(lcg.range(100, 700))).await;
        tokio::task::block_in_place(|| {
            server.kill_9();
            server.restart();
        });
        *url.write().unwrap() = server.url().to_owned();
    }
    stop.store(true, Ordering::SeqCst);
    let mut sent: Vec<Sent> = Vec::new();
    for client in clients {
        sent.extend(client.await.expect("client task"));
    }
    sent.sort_by_key(|s| s.batch);

    let batches: Vec<u64> = sent.iter().map(|s| s.batch).collect();
    let distinct: std::collections::BTreeSet<u64> = batches.iter().copied().collect();
    assert_eq!(distinct.len(), batches.len(), "each batch acknowledged once");
    let retried = sent.iter().filter(|s| s.attempts > 1).count();
    eprintln!(
        "{} batches of {BATCH}; {retried} needed a retry; {} duplicates acknowledged",
        batches.len(),
        sent.iter().map(|s| s.duplicates).sum::<u64>()
    );
    for s in &sent {
        assert_eq!(s.accepted + s.duplicates, BATCH, "{s:?}");
        if s.attempts == 1 {
            assert_eq!(s.duplicates, 0, "batch was new on its first attempt: {s:?}");
        }
    }
    let reports = batches.len() as u64 * BATCH;
    let accepted: u64 = sent.iter().map(|s| s.accepted).sum();
    assert!(accepted <= reports);

    let expected = Expect::sum(&batches.iter().map(|b| batch(base, *b).1).collect::<Vec<_>>());
    let per_model: Vec<Expect> = MODELS
        .iter()
        .map(|m| {
            Expect::sum(
                &batches
                    .iter()
                    .flat_map(|b| (0..BATCH).map(move |i| (*b, i)))
                    .filter(|(b, i)| MODELS[((b + i) % 3) as usize] == *m)
                    .map(|(b, i)| report(base, b, i).1)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let check = |what: &'static str, url: String| {
        let expected = expected.clone();
        let per_model = per_model.clone();
        async move {
            let s = summary(&url, &[("group_by", "model")]).await;
            expected.assert_matches(&s["total"], what);
            for (m, e) in MODELS.iter().zip(&per_model) {
                e.assert_matches(group(&s, &json!({ "model": m })), m);
            }
            for window in [[("since", "3d")], [("since", "6h")]] {
                expected.assert_matches(&summary(&url, &window).await["total"], what);
            }
            let records = all_records(&url, &[], 10_000).await;
            assert_eq!(records.len() as u64, reports, "{what}: record count");
            let unique: std::collections::HashSet<&str> =
                records.iter().map(|r| r["id"].as_str().unwrap()).collect();
            assert_eq!(unique.len() as u64, reports, "{what}: distinct ids");
        }
    };
    check("after the kills", server.url().to_owned()).await;

    // Once more without traffic: a kill, then a clean stop.
    tokio::task::block_in_place(|| {
        server.kill_9();
        server.restart();
    });
    check("after a quiet kill", server.url().to_owned()).await;
    tokio::task::block_in_place(|| {
        assert!(server.terminate().success());
        server.restart();
    });
    check("after SIGTERM", server.url().to_owned()).await;

    // Re-sending everything now only yields duplicates.
    for b in &batches {
        let (accepted, duplicates) = ingest(server.url(), &batch(base, *b).0).await;
        assert_eq!((accepted, duplicates), (0, BATCH), "batch {b} re-sent");
    }
    check("after re-sending", server.url().to_owned()).await;
}

/// Totals, 1-minute series and 1-hour series, for comparing across restarts.
async fn snapshot(url: &str) -> (Value, Value, Value) {
    let s = summary(url, &[("group_by", "model,user"), ("since", "6h")]).await;
    let m = series(url, &[("step", "1m"), ("since", "6h"), ("group_by", "model")]).await;
    let h = series(url, &[("step", "1h"), ("since", "6h")]).await;
    (s, m, h)
}

/// Every integer equal, every float equal to 1e-9 relative; keys and
/// array lengths identical.
fn assert_same(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            assert_eq!(kx, ky, "{path}: keys");
            for (k, v) in x {
                if matches!(k.as_str(), "from" | "to" | "latency_ms" | "ttft_ms") {
                    continue;
                }
                assert_same(v, &y[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: length");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_same(v, w, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            assert_cost(x.as_f64().unwrap(), y.as_f64().unwrap(), path);
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// Sorts groups by key so that two snapshots compare position by position.
fn canonical(mut v: Value) -> Value {
    if let Some(groups) = v.get_mut("groups").and_then(Value::as_array_mut) {
        groups.sort_by_key(|g| g["key"].to_string());
    }
    v
}

async fn assert_snapshot(url: &str, want: &(Value, Value, Value), what: &str) {
    let got = snapshot(url).await;
    assert_same(&canonical(got.0), &canonical(want.0.clone()), &format!("{what} summary"));
    assert_same(&canonical(got.1), &canonical(want.1.clone()), &format!("{what} 1m series"));
    assert_same(&canonical(got.2), &canonical(want.2.clone()), &format!("{what} 1h series"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_survive_a_kill_right_after_a_large_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Rollups are never flushed on their own: everything after the start
    // lives only in open buckets (and in the durable calls).
    let env = [("TALLY_INGEST__ROLLUP_FLUSH_INTERVAL", "1h")];
    let mut server = TestServer::start(&dir.path().join("data"), &env);
    let base = hours_ago_aligned(4);

    // 5,000 reports in one batch, spread over three hours.
    let big = |first: u64, n: u64| -> (Value, Expect) {
        let mut reports = Vec::new();
        let mut expect = Expect::default();
        for k in first..first + n {
            let (v, e) = report(base, k / BATCH, k % BATCH);
            reports.push(v);
            expect.add(&e);
        }
        (Value::Array(reports), expect)
    };
    let (body, mut expected) = big(0, 5_000);
    let (accepted, _) = ingest(server.url(), &body).await;
    assert_eq!(accepted, 5_000);
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "before the kill");
    let before = snapshot(server.url()).await;

    tokio::task::block_in_place(|| {
        server.kill_9();
        server.restart();
    });
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "after the kill");
    assert_snapshot(server.url(), &before, "after the kill").await;

    // More data on the recovered server, then another kill.
    let (body, more) = big(5_000, 3_000);
    assert_eq!(ingest(server.url(), &body).await, (3_000, 0));
    expected.add(&more);
    let before = snapshot(server.url()).await;
    tokio::task::block_in_place(|| {
        server.kill_9();
        server.restart();
    });
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "second kill");
    assert_snapshot(server.url(), &before, "second kill").await;

    // A clean stop flushes the rollups and moves the watermark; neither the
    // flush nor a kill right after the restart may count anything twice.
    tokio::task::block_in_place(|| {
        assert!(server.terminate().success());
        server.restart();
    });
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "after SIGTERM");
    assert_snapshot(server.url(), &before, "after SIGTERM").await;
    tokio::task::block_in_place(|| {
        server.kill_9();
        server.restart();
    });
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "kill after SIGTERM");
    assert_snapshot(server.url(), &before, "kill after SIGTERM").await;
    assert_eq!(all_records(server.url(), &[], 10_000).await.len(), 8_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_and_open_rollups_both_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    // Default flush interval (1 s): part of the data is flushed, part open.
    let mut server = TestServer::start(&dir.path().join("data"), &[]);
    let base = hours_ago_aligned(4);
    let mut expected = Expect::default();
    for b in 0..6 {
        let (body, e) = batch(base, b);
        ingest(server.url(), &body).await;
        expected.add(&e);
        if b == 2 {
            // Let at least one flush happen.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
    }
    let before = snapshot(server.url()).await;
    tokio::task::block_in_place(|| {
        server.kill_9();
        server.restart();
    });
    expected.assert_matches(&summary(server.url(), &[]).await["total"], "after the kill");
    assert_snapshot(server.url(), &before, "after the kill").await;
}
