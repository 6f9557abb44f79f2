//! Overload: when more reports wait for a commit than the server allows, it
//! answers 429 with Retry-After instead of buffering without bound, and what
//! it did acknowledge is counted exactly once.

mod common;

use common::{TestServer, chat, now_ms, post_usage, summary, tokens};
use serde_json::Value;

/// Floods the server from 24 clients, 6 batches of 1,000 each; returns
/// (reports accepted, batches refused with 429). Every 429 must carry the
/// error shape and a Retry-After.
async fn flood(base: &str) -> (u64, u64) {
    let t = now_ms() - 60_000;
    let mut clients = Vec::new();
    for client in 0..24 {
        let base = base.to_owned();
        clients.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (0u64, 0u64);
            for round in 0..6 {
                let batch: Vec<Value> = (0..1000)
                    .map(|i| chat(&format!("c{client}-r{round}-{i}"), "gpt-4o", tokens(10, 1), t))
                    .collect();
                let reply = post_usage(&base, &Value::Array(batch)).await;
                match reply.status {
                    200 => accepted += reply.json["accepted"].as_u64().unwrap(),
                    429 => {
                        reply.assert_error(429, Some("overloaded"));
                        let retry = reply.headers.get("retry-after").expect("Retry-After on 429");
                        assert!(retry.to_str().unwrap().parse::<u32>().unwrap() >= 1);
                        refused += 1;
                    }
                    other => panic!("unexpected status {other}: {}", reply.text),
                }
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for client in clients {
        let (a, r) = client.await.unwrap();
        accepted += a;
        refused += r;
    }
    (accepted, refused)
}

async fn assert_counted_exactly(base: &str, accepted: u64) {
    let total = summary(base, &[("since", "1h")]).await;
    assert_eq!(
        total["total"]["requests"].as_u64(),
        Some(accepted),
        "exactly the acknowledged reports"
    );
    assert_eq!(total["total"]["input_tokens"].as_u64(), Some(accepted * 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_commit_queue_is_refused_with_retry_after_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_QUEUED_RECORDS", "1500")]);
    let (accepted, refused) = flood(server.url()).await;
    assert!(
        refused > 0,
        "144 concurrent batches against a queue of 1500 reports must be refused at times"
    );
    assert!(accepted > 0);
    assert_counted_exactly(server.url(), accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_requests_in_flight_are_refused_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_CONCURRENT_REQUESTS", "1")]);
    let (accepted, refused) = flood(server.url()).await;
    assert!(
        refused > 0,
        "24 concurrent clients against 1 request in flight must be refused at times"
    );
    assert!(accepted > 0);
    assert_counted_exactly(server.url(), accepted).await;
}
