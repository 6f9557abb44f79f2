//! Budget webhooks cannot be turned against the network Tally runs in:
//! unsafe URLs are refused when a budget is created (400 naming the field)
//! or defined in the config file; loopback targets, literal or behind a
//! name, are refused at delivery unless `alerts.allow_private_targets` is
//! set, and nothing reaches them; redirects are not followed; receivers that
//! never answer or answer without end cost one timeout and a bounded read.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "test-secret-0123456789";
const ALLOW_PRIVATE: (&str, &str) = ("TALLY_ALERTS__ALLOW_PRIVATE_TARGETS", "true");

fn start(env: &[(&str, &str)]) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), env);
    (dir, server)
}

// ---------------------------------------------------------------------------
// Receivers: real HTTP servers on 127.0.0.1 that count what reaches them
// ---------------------------------------------------------------------------

struct Receiver {
    /// `http://127.0.0.1:PORT/hook`
    url: String,
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    /// Answers every POST to /hook with `status` and `headers`.
    async fn start(status: StatusCode, headers: Vec<(header::HeaderName, String)>) -> Receiver {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |_: HeaderMap, _: String| {
                let (hits, headers) = (counted.clone(), headers.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let mut map = HeaderMap::new();
                    for (name, value) in headers {
                        map.insert(name, value.parse().unwrap());
                    }
                    (status, map)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url: format!("http://127.0.0.1:{port}/hook"), port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A raw TCP receiver: reads the request head, then either answers `status`
/// with a chunked body that never ends (`endless`) or says nothing at all.
struct RawReceiver {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Body bytes written, across connections.
    written: Arc<AtomicUsize>,
}

impl RawReceiver {
    async fn start(answer: Option<u16>) -> RawReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let (conns, bytes) = (connections.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                conns.fetch_add(1, Ordering::SeqCst);
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let head = read_head(&mut socket, Duration::from_secs(60)).await;
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                    let Some(status) = answer else {
                        // Hold the connection open, answering nothing.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        drop(socket);
                        return;
                    };
                    let start = format!(
                        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\n\
                         transfer-encoding: chunked\r\n\r\n"
                    );
                    if socket.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = [b'x'; 65_536];
                    // Until the client hangs up (or 4 GiB, whichever first).
                    for _ in 0..65_536 {
                        let ok = socket.write_all(b"10000\r\n").await.is_ok()
                            && socket.write_all(&chunk).await.is_ok()
                            && socket.write_all(b"\r\n").await.is_ok();
                        if !ok {
                            return;
                        }
                        bytes.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                });
            }
        });
        RawReceiver { url, connections, written }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn budget(name: &str, webhooks: &[&str]) -> Value {
    json!({"name": name, "scope": {"user": name}, "metric": "tokens", "limit": 10,
           "period": "day", "thresholds": [100], "webhooks": webhooks, "secret": SECRET})
}

async fn create(base: &str, spec: &Value) -> String {
    let reply = post_json_to(base, "/api/v1/budgets", spec).await;
    assert_eq!(reply.status, 201, "create budget: {}", reply.text);
    reply.json["id"].as_str().unwrap().to_owned()
}

/// Spends 20 tokens for the user the budget `name` covers: past its limit.
async fn cross(base: &str, name: &str) {
    let call = json!({"model": "gpt-4o", "user": name, "input_tokens": 20, "output_tokens": 0});
    ingest(base, &json!([call])).await;
}

/// The deliveries of the budget's (only) alert once `done` holds for them.
async fn deliveries_when(
    base: &str,
    budget_id: &str,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let alerts = get_ok(base, "/api/v1/alerts", &[("budget_id", budget_id)]).await;
        let deliveries = alerts["alerts"][0]["deliveries"].as_array().cloned().unwrap_or_default();
        if !deliveries.is_empty() && done(&deliveries) {
            return deliveries;
        }
        assert!(Instant::now() < deadline, "deliveries of {budget_id} never settled: {alerts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_refused_at_creation(base: &str, spec: &Value, needle: &str) {
    let reply = post_json_to(base, "/api/v1/budgets", spec).await;
    reply.assert_error(400, Some("bad_request"));
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} should contain {needle:?}");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unsafe_webhook_urls_are_refused_when_a_budget_is_created_or_replaced() {
    let receiver = Receiver::start(StatusCode::OK, vec![]).await;
    let (_dir, server) = start(&[]);
    let base = server.url();
    let port = receiver.port;
    let userinfo = format!("http://user:pass@127.0.0.1:{port}/hook");
    for (webhooks, needle) in [
        (
            vec!["http://169.254.169.254/latest".to_owned()],
            "webhooks[0]: 169.254.169.254 is a cloud metadata address; webhooks may never reach it"
                .to_owned(),
        ),
        (
            vec!["http://hooks.example.com/".to_owned(), "ftp://hooks.example.com/x".to_owned()],
            "webhooks[1]: scheme \"ftp\" is not allowed".to_owned(),
        ),
        (vec![userinfo.clone()], "webhooks[0]: must not carry a user name or password".to_owned()),
        (
            vec![receiver.url.clone()],
            "webhooks[0]: 127.0.0.1 is a loopback address; webhooks may reach it only when \
             alerts.allow_private_targets is set"
                .to_owned(),
        ),
        (
            vec![format!("http://[::ffff:127.0.0.1]:{port}/hook")],
            "webhooks[0]: ::ffff:127.0.0.1 is a loopback address".to_owned(),
        ),
        (vec!["http://[fe80::1]/".to_owned()], "webhooks[0]: fe80::1 is a link-local".to_owned()),
        (vec!["http://0.0.0.0:9/".to_owned()], "webhooks[0]: 0.0.0.0 is an unspecified".to_owned()),
        (vec!["http://10.1.2.3/".to_owned()], "webhooks[0]: 10.1.2.3 is a private".to_owned()),
    ] {
        let refs: Vec<&str> = webhooks.iter().map(String::as_str).collect();
        assert_refused_at_creation(base, &budget("b", &refs), &needle).await;
    }
    // A replacement is checked as a creation is.
    let id = create(base, &budget("b", &["http://hooks.example.com/"])).await;
    let put = client()
        .put(format!("{base}/api/v1/budgets/{id}"))
        .json(&budget("b", &["http://169.254.169.254/latest/meta-data/"]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 400);
    let text = put.text().await.unwrap();
    assert!(text.contains("webhooks[0]: 169.254.169.254 is a cloud metadata address"), "{text}");
    // Nothing was delivered anywhere.
    assert_eq!(receiver.hits(), 0);

    // With private targets allowed, loopback is accepted; metadata,
    // link-local and user names still are not.
    let (_allowing_dir, allowing) = start(&[ALLOW_PRIVATE]);
    let base = allowing.url();
    create(base, &budget("local", &[&receiver.url])).await;
    for (url, needle) in [
        (
            "http://169.254.169.254/latest",
            "webhooks[0]: 169.254.169.254 is a cloud metadata address; webhooks may never",
        ),
        ("http://[fd00:ec2::254]/latest", "webhooks[0]: fd00:ec2::254 is a cloud metadata address"),
        ("http://100.100.100.200/", "webhooks[0]: 100.100.100.200 is a cloud metadata address"),
        ("http://169.254.10.10/", "webhooks[0]: 169.254.10.10 is a link-local address"),
        (&userinfo, "webhooks[0]: must not carry a user name or password"),
    ] {
        assert_refused_at_creation(base, &budget("b", &[url]), needle).await;
    }
}

#[tokio::test]
async fn config_file_budgets_with_unsafe_webhooks_stop_the_server_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "tally.toml",
        r#"
[[budgets.define]]
name = "hooked"
metric = "tokens"
limit = 10
period = "day"
secret = "a-long-shared-secret-for-signatures"
webhooks = ["http://hooks.example.com/", "http://169.254.169.254/latest"]
"#,
    );
    let data = dir.path().join("data").display().to_string();
    let out = run_tally(
        &[
            "serve",
            "--config",
            &config,
            "--data-dir",
            &data,
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
        ],
        &[(ALLOW_PRIVATE.0, ALLOW_PRIVATE.1)],
    )
    .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains(
            "budgets.define[0] (\"hooked\"): webhooks[1]: 169.254.169.254 is a cloud metadata address"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn loopback_targets_are_refused_at_delivery_and_receive_nothing() {
    let receiver = Receiver::start(StatusCode::OK, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A budget whose literal loopback webhook was accepted while private
    // targets were allowed…
    let literal = {
        let allowing = TestServer::start(&data, &[ALLOW_PRIVATE]);
        create(allowing.url(), &budget("literal", &[&receiver.url])).await
    };
    // …is kept, but not delivered to, once they are not.
    let server = TestServer::start(&data, &[]);
    let base = server.url();
    // A name is resolved only at delivery: `localhost` is accepted now and
    // refused then (it resolves to loopback only).
    let named_url = format!("http://localhost:{}/hook", receiver.port);
    let named = create(base, &budget("named", &[&named_url])).await;
    cross(base, "literal").await;
    cross(base, "named").await;
    let refused = |ds: &[Value]| ds.iter().all(|d| d["status"] == "refused");
    let literal_deliveries =
        deliveries_when(base, &literal, Duration::from_secs(20), refused).await;
    let named_deliveries = deliveries_when(base, &named, Duration::from_secs(20), refused).await;
    let error = |ds: &[Value]| ds[0]["last_error"].as_str().unwrap().to_owned();
    assert_eq!(
        error(&literal_deliveries),
        "refused: 127.0.0.1 is a loopback address; webhooks may reach it only when \
         alerts.allow_private_targets is set"
    );
    let named_error = error(&named_deliveries);
    assert!(
        named_error.starts_with("refused: localhost resolves to no address webhooks may reach: ")
            && named_error.contains("is a loopback address"),
        "{named_error}"
    );
    for d in literal_deliveries.iter().chain(&named_deliveries) {
        assert_eq!((d["attempts"].as_u64(), &d["delivered_at"]), (Some(0), &Value::Null), "{d}");
        assert!(d["next_attempt_at"].is_null(), "a refusal is final: {d}");
    }
    let only_refused = get_ok(base, "/api/v1/alerts", &[("status", "refused")]).await;
    assert_eq!(only_refused["alerts"].as_array().unwrap().len(), 2, "{only_refused}");
    // Refusals are final: nothing arrives later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.hits(), 0);
    let metrics =
        client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("tally_budget_webhook_deliveries_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tally_budget_webhook_deliveries_total{outcome=\"delivered\"} 0"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::start(StatusCode::OK, vec![]).await;
    let redirecting = Receiver::start(
        StatusCode::TEMPORARY_REDIRECT,
        vec![(header::LOCATION, target.url.clone())],
    )
    .await;
    let (_dir, server) = start(&[
        ALLOW_PRIVATE,
        ("TALLY_BUDGETS__WEBHOOK_RETRY_INITIAL", "200ms"),
        ("TALLY_BUDGETS__WEBHOOK_RETRY_MAX", "500ms"),
    ]);
    let base = server.url();
    let id = create(base, &budget("redirected", &[&redirecting.url])).await;
    cross(base, "redirected").await;
    // A few attempts, each one a failure that names the redirect.
    let deliveries = deliveries_when(base, &id, Duration::from_secs(20), |ds| {
        ds[0]["attempts"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    let d = &deliveries[0];
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(
        d["last_error"].as_str().unwrap(),
        format!("HTTP 307 Temporary Redirect: redirect to {} not followed", target.url)
    );
    assert!(redirecting.hits() >= 3);
    assert_eq!(target.hits(), 0, "the body was re-POSTed to the redirect's target");
}

#[tokio::test]
async fn silent_and_endless_receivers_fail_within_the_timeout_and_the_server_carries_on() {
    let silent = RawReceiver::start(None).await;
    let endless_error = RawReceiver::start(Some(500)).await;
    let endless_ok = RawReceiver::start(Some(200)).await;
    let (_dir, server) = start(&[
        ALLOW_PRIVATE,
        ("TALLY_BUDGETS__WEBHOOK_TIMEOUT", "2s"),
        ("TALLY_BUDGETS__WEBHOOK_CONNECT_TIMEOUT", "1s"),
        // One attempt each within the test.
        ("TALLY_BUDGETS__WEBHOOK_RETRY_INITIAL", "1h"),
    ]);
    let base = server.url();
    let id =
        create(base, &budget("hostile", &[&silent.url, &endless_error.url, &endless_ok.url])).await;
    cross(base, "hostile").await;
    let deliveries = deliveries_when(base, &id, Duration::from_secs(30), |ds| {
        ds.iter().all(|d| d["attempts"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let by_url = |url: &str| deliveries.iter().find(|d| d["url"] == url).unwrap().clone();
    let d = by_url(&silent.url);
    assert_eq!(
        (d["status"].as_str(), d["last_error"].as_str()),
        (Some("pending"), Some("no answer within 2s")),
        "{d}"
    );
    let d = by_url(&endless_error.url);
    assert_eq!(d["status"], "pending", "{d}");
    assert!(d["last_error"].as_str().unwrap().starts_with("HTTP 500"), "{d}");
    // A 2xx is a delivery whatever follows it.
    assert_eq!(by_url(&endless_ok.url)["status"], "delivered");
    assert_eq!(
        (
            silent.connections.load(Ordering::SeqCst),
            endless_error.connections.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    // The endless bodies were read up to a small cap and the connection
    // dropped: what the receivers managed to write is what socket buffers
    // hold, far below what 2 s of reading on loopback would take.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in [&endless_error, &endless_ok] {
        let written = r.written.load(Ordering::SeqCst);
        assert!(written < 64 << 20, "{written} bytes of an endless body were taken");
    }
    // The server is fine: it answers and counts.
    assert_eq!(get_ok(base, "/healthz", &[]).await["status"], "ok");
    cross(base, "hostile").await;
    let s = get_ok(base, &format!("/api/v1/budgets/{id}/status"), &[]).await;
    assert_eq!(s["spend"], 40.0);
}
