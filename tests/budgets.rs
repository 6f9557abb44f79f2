//! Budgets end to end against a real server and a real webhook receiver:
//! atomic reservations under concurrency, thresholds firing once per period,
//! rolling windows ageing out, signed webhooks retried until delivered and
//! delivered once across a SIGKILL, config-file budgets, bad input, and the
//! `tally_budget_*` families on `/metrics`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;

const SECRET: &str = "test-secret-0123456789";

/// For servers that deliver to the receivers here: fast retries, so that
/// tests see several attempts in seconds, and webhooks allowed to reach
/// 127.0.0.1 (refused by default).
const HOOKS_ENV: [(&str, &str); 3] = [
    ("TALLY_BUDGETS__WEBHOOK_RETRY_INITIAL", "200ms"),
    ("TALLY_BUDGETS__WEBHOOK_RETRY_MAX", "1s"),
    ("TALLY_ALERTS__ALLOW_PRIVATE_TARGETS", "true"),
];

fn server(env: &[(&str, &str)]) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), env);
    (dir, server)
}

// ---------------------------------------------------------------------------
// A webhook receiver: a real HTTP server that can refuse attempts
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Hooks {
    attempts: AtomicUsize,
    /// Attempts to answer 500 before accepting.
    fail_first: AtomicUsize,
    /// While false every attempt gets 500.
    accepting: AtomicBool,
    /// Accepted deliveries: (signature header, alert id header, body).
    accepted: Mutex<Vec<(String, String, Value)>>,
}

struct Receiver {
    url: String,
    hooks: Arc<Hooks>,
}

impl Receiver {
    async fn start(fail_first: usize, accepting: bool) -> Receiver {
        let hooks = Arc::new(Hooks::default());
        hooks.fail_first.store(fail_first, Ordering::SeqCst);
        hooks.accepting.store(accepting, Ordering::SeqCst);
        let state = hooks.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let hooks = state.clone();
                async move {
                    let n = hooks.attempts.fetch_add(1, Ordering::SeqCst) + 1;
                    if !hooks.accepting.load(Ordering::SeqCst)
                        || n <= hooks.fail_first.load(Ordering::SeqCst)
                    {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let header = |name: &str| {
                        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
                    };
                    // The signature is checked over the bytes as received.
                    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                    mac.update(body.as_bytes());
                    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    assert_eq!(header("x-tally-signature"), expected, "signature of {body}");
                    let json: Value = serde_json::from_str(&body).unwrap();
                    hooks.accepted.lock().unwrap().push((
                        header("x-tally-signature"),
                        header("x-tally-alert-id"),
                        json,
                    ));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, hooks }
    }

    fn accepted(&self) -> Vec<Value> {
        self.hooks.accepted.lock().unwrap().iter().map(|(_, _, body)| body.clone()).collect()
    }

    /// Thresholds of the accepted deliveries, in arrival order.
    fn thresholds(&self) -> Vec<f64> {
        self.accepted().iter().map(|b| b["threshold"].as_f64().unwrap()).collect()
    }

    async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.accepted().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhooks arrived within {within:?}",
                self.accepted().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn create(base: &str, spec: Value) -> Value {
    let reply = post_json_to(base, "/api/v1/budgets", &spec).await;
    assert_eq!(reply.status, 201, "create budget: {}", reply.text);
    reply.json
}

async fn status(base: &str, id: &str) -> Value {
    get_ok(base, &format!("/api/v1/budgets/{id}/status"), &[]).await
}

async fn spend(base: &str, id: &str) -> f64 {
    status(base, id).await["spend"].as_f64().unwrap()
}

/// One usage report of `tokens` total tokens for `user`, at `at_ms`.
fn usage(user: &str, tokens: u64, at_ms: i64) -> Value {
    json!({"model": "gpt-4o", "user": user, "input_tokens": tokens, "output_tokens": 0,
           "completed_at": at_ms})
}

async fn reserve(base: &str, body: &Value) -> Value {
    let reply = post_json_to(base, "/api/v1/quota/reserve", body).await;
    assert_eq!(reply.status, 200, "reserve: {}", reply.text);
    reply.json
}

async fn alerts(base: &str, query: &[(&str, &str)]) -> Vec<Value> {
    get_ok(base, "/api/v1/alerts", query).await["alerts"].as_array().unwrap().clone()
}

/// Waits until the server has recorded `n` of the budget's alerts as
/// delivered: a receiver's 2xx is recorded a moment after it is sent, and a
/// kill in between means a second delivery (at least once, same alert id).
async fn wait_recorded_delivered(base: &str, budget_id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let delivered = alerts(base, &[("budget_id", budget_id)])
            .await
            .iter()
            .filter(|a| a["deliveries"][0]["status"] == "delivered")
            .count();
        if delivered >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{delivered} of {n} alerts recorded as delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sixty_four_concurrent_reservations_with_room_for_ten_allow_exactly_ten() {
    let (_dir, server) = server(&[]);
    let base = server.url().to_owned();
    let budget = create(
        &base,
        json!({"name": "alice-monthly", "scope": {"user": "alice"}, "metric": "cost_usd",
               "limit": 10.0, "period": "month", "mode": "enforce", "fail": "closed"}),
    )
    .await;
    let id = budget["id"].as_str().unwrap().to_owned();
    let requests = (0..64).map(|_| {
        let base = base.clone();
        tokio::spawn(async move {
            reserve(
                &base,
                &json!({"user": "alice", "model": "gpt-4o", "estimated_cost_usd": 1.0, "ttl_s": 60}),
            )
            .await
        })
    });
    let decisions: Vec<Value> =
        futures_join(requests.collect()).await.into_iter().map(Result::unwrap).collect();
    let allowed: Vec<&Value> = decisions.iter().filter(|d| d["allowed"] == true).collect();
    assert_eq!(allowed.len(), 10, "exactly the room of the budget is handed out");
    for denied in decisions.iter().filter(|d| d["allowed"] == false) {
        assert!(denied["reservation_id"].is_null());
        assert!(denied["reason"].as_str().unwrap().contains("alice-monthly"), "{denied}");
    }
    let s = status(&base, &id).await;
    assert_eq!((s["spend"].as_f64(), s["reserved"].as_f64()), (Some(0.0), Some(10.0)));
    assert_eq!(s["remaining"].as_f64(), Some(0.0));
    // Other users are not covered by the budget.
    let bob = reserve(&base, &json!({"user": "bob", "estimated_cost_usd": 5.0})).await;
    assert_eq!(
        (bob["allowed"].as_bool(), bob["budgets"].as_array().unwrap().len()),
        (Some(true), 0)
    );

    // Settling records the usage (priced like any report) and frees the hold.
    let reservation = allowed[0]["reservation_id"].as_str().unwrap();
    let settled = post_json_to(
        &base,
        "/api/v1/quota/settle",
        &json!({"reservation_id": reservation, "usage": {"id": "settled-1", "model": "gpt-4o",
                "user": "alice", "input_tokens": 100000, "output_tokens": 10000}}),
    )
    .await;
    assert_eq!(settled.status, 200, "{}", settled.text);
    let cost = expected_cost(&catalog_price("gpt-4o"), &tokens(100_000, 10_000));
    assert_eq!(settled.json["reservation"], "released");
    assert_cost(settled.json["cost_usd"].as_f64().unwrap(), cost, "settled cost");
    let s = status(&base, &id).await;
    assert_cost(s["spend"].as_f64().unwrap(), cost, "spend after settle");
    assert_eq!(s["reserved"].as_f64(), Some(9.0));
    let summary = summary(&base, &[("group_by", "user"), ("since", "1h")]).await;
    assert_eq!(group(&summary, &json!({"user": "alice"}))["requests"], 1);
    // Freed room is handed out again, never more than the limit.
    let again = reserve(&base, &json!({"user": "alice", "estimated_cost_usd": 1.0 - cost})).await;
    assert_eq!(again["allowed"], true, "{again}");
    let over = reserve(&base, &json!({"user": "alice", "estimated_cost_usd": 0.01})).await;
    assert_eq!(over["allowed"], false, "{over}");
}

/// Joins spawned tasks in order.
async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<Result<T, String>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.map_err(|e| e.to_string()));
    }
    out
}

#[tokio::test]
async fn thresholds_fire_once_each_per_period_signed_and_retried() {
    let receiver = Receiver::start(2, true).await;
    let (_dir, server) = server(&HOOKS_ENV);
    let base = server.url();
    let budget = create(
        base,
        json!({"name": "team-search-daily", "scope": {"tag.team": "search"}, "metric": "tokens",
               "limit": 1000, "period": "day", "thresholds": [50, 80, 100],
               "webhooks": [receiver.url], "secret": SECRET, "mode": "observe"}),
    )
    .await;
    let id = budget["id"].as_str().unwrap();
    let now = now_ms();
    let team = |tokens: u64| with(usage("carol", tokens, now), "tags", json!({"team": "search"}));
    // Spend stamped yesterday belongs to yesterday's period.
    ingest(base, &json!([with(team(5000), "completed_at", json!(now - DAY_MS - HOUR_MS))])).await;
    assert_eq!(spend(base, id).await, 0.0);
    ingest(base, &json!([team(400)])).await;
    ingest(base, &json!([usage("carol", 900, now)])).await; // not in scope
    assert!(alerts(base, &[]).await.is_empty());
    ingest(base, &json!([team(100)])).await; // 50 %
    ingest(base, &json!([team(100)])).await;
    ingest(base, &json!([team(250)])).await; // 85 %: 80 %
    ingest(base, &json!([team(150), team(200)])).await; // 120 %: 100 %
    ingest(base, &json!([team(300)])).await;
    // Each threshold arrives once, after two refused attempts in all.
    receiver.wait_for(3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut thresholds = receiver.thresholds();
    thresholds.sort_by(f64::total_cmp);
    assert_eq!(thresholds, [50.0, 80.0, 100.0]);
    assert_eq!(receiver.hooks.attempts.load(Ordering::SeqCst), 5);
    let accepted = receiver.accepted();
    let first = accepted.iter().find(|b| b["threshold"] == 50.0).unwrap();
    assert_eq!(first["budget_id"], id);
    assert_eq!(first["budget_name"], "team-search-daily");
    assert_eq!(first["limit"], 1000.0);
    assert_eq!(first["spend"], 500.0);
    let s = status(base, id).await;
    assert_eq!((s["spend"].as_f64(), s["percent"].as_f64()), (Some(1500.0), Some(150.0)));
    assert_eq!(first["period_start"], s["period_start"]);
    assert_eq!(first["period_end"], s["period_end"]);
    assert_eq!(s["period_end"].as_i64().unwrap() - s["period_start"].as_i64().unwrap(), DAY_MS);
    assert!(s["forecast"].as_f64().unwrap() >= 1500.0);
    let history = alerts(base, &[("budget_id", id)]).await;
    assert_eq!(history.len(), 3);
    for alert in &history {
        let delivery = &alert["deliveries"][0];
        assert_eq!(delivery["status"], "delivered", "{alert}");
    }
    let attempts: u64 =
        history.iter().map(|a| a["deliveries"][0]["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 5);
    assert!(alerts(base, &[("status", "pending")]).await.is_empty());
    // Spend stamped tomorrow waits for tomorrow.
    ingest(base, &json!([with(team(700), "completed_at", json!(now + DAY_MS - MINUTE_MS))])).await;
    assert!(spend(base, id).await <= 1500.0);
}

#[tokio::test]
async fn rolling_windows_age_spend_out_and_fire_again() {
    let receiver = Receiver::start(0, true).await;
    let (_dir, mut server) = server(&HOOKS_ENV);
    let base = server.url().to_owned();
    let budget = create(
        &base,
        json!({"name": "alice-rolling", "scope": {"user": "alice"}, "metric": "tokens",
               "limit": 100, "period": "rolling 1m", "thresholds": [100],
               "webhooks": [receiver.url], "secret": SECRET}),
    )
    .await;
    let id = budget["id"].as_str().unwrap().to_owned();
    // 60 tokens 50 s ago and 60 now: 120 % of the window.
    let t0 = now_ms();
    ingest(&base, &json!([usage("alice", 60, t0 - 50_000), usage("alice", 60, t0)])).await;
    assert_eq!(spend(&base, &id).await, 120.0);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let denied = reserve(&base, &json!({"user": "alice", "estimated_tokens": 1})).await;
    assert_eq!(denied["allowed"], false);
    // The older call leaves the window (a second late at most), and the
    // threshold re-arms: crossing it again alerts again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = spend(&base, &id).await;
        if s == 60.0 {
            break;
        }
        assert_eq!(s, 120.0);
        assert!(Instant::now() < deadline, "spend stayed at {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now_ms() - (t0 - 50_000) >= 60_000, "aged out early");
    let allowed = reserve(&base, &json!({"user": "alice", "estimated_tokens": 30})).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    ingest(&base, &json!([usage("alice", 45, now_ms())])).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    wait_recorded_delivered(&base, &id, 2).await;
    // After a restart the window is read back from minute rollups: never
    // less than what is in it (a minute's worth more at most), and the
    // threshold that fired within the window does not fire again.
    server.kill_9();
    server.restart();
    let base = server.url().to_owned();
    let after_restart = spend(&base, &id).await;
    assert!((105.0..=165.0).contains(&after_restart), "{after_restart}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.thresholds(),
        [100.0, 100.0],
        "{:#?}\n{}",
        receiver.accepted(),
        server.log()
    );
}

#[tokio::test]
async fn an_alert_crossed_before_a_sigkill_arrives_exactly_once_after_restart() {
    // The receiver refuses everything until the server has been killed.
    let receiver = Receiver::start(0, false).await;
    let (_dir, mut server) = server(&HOOKS_ENV);
    let base = server.url().to_owned();
    let budget = create(
        &base,
        json!({"name": "k-daily", "scope": {"api_key": "sk-live-123"}, "metric": "tokens",
               "limit": 1000, "period": "day", "thresholds": [50, 100],
               "webhooks": [receiver.url], "secret": SECRET}),
    )
    .await;
    let id = budget["id"].as_str().unwrap().to_owned();
    assert!(budget["scope"]["api_key"].as_str().unwrap().starts_with("k_"), "{budget}");
    let key = |tokens: u64| with(usage("dave", tokens, now_ms()), "api_key", json!("sk-live-123"));
    // 50 % is crossed and recorded; the receiver refuses it; then kill.
    ingest(&base, &json!([key(600)])).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.hooks.attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_9();
    receiver.hooks.accepting.store(true, Ordering::SeqCst);
    server.restart();
    let base = server.url().to_owned();
    receiver.wait_for(1, Duration::from_secs(15)).await;
    wait_recorded_delivered(&base, &id, 1).await;
    // 100 % crossed, then killed at once: whether or not the alert was
    // written, it arrives after the restart, as one alert. Delivery is at
    // least once: a kill right after the receiver's 2xx, before the server
    // marked the delivery, sends it again with the same alert id.
    ingest(&base, &json!([key(500)])).await;
    server.kill_9();
    server.restart();
    let base = server.url().to_owned();
    receiver.wait_for(2, Duration::from_secs(15)).await;
    // Nothing more arrives, and the history holds each threshold once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut by_id: Vec<(String, f64)> = Vec::new();
    for (_, alert_id, body) in receiver.hooks.accepted.lock().unwrap().iter() {
        let threshold = body["threshold"].as_f64().unwrap();
        match by_id.iter().find(|(seen, _)| seen == alert_id) {
            Some((_, first)) => assert_eq!(*first, threshold, "one id, one alert"),
            None => by_id.push((alert_id.clone(), threshold)),
        }
    }
    let thresholds: Vec<f64> = by_id.iter().map(|(_, t)| *t).collect();
    assert_eq!(thresholds, [50.0, 100.0], "{by_id:?}");
    assert!(by_id[0].0.starts_with(&id));
    let history = alerts(&base, &[("budget_id", &id)]).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(spend(&base, &id).await, 1100.0);
}

#[tokio::test]
async fn span_derived_calls_count_against_budgets() {
    let (_dir, server) = server(&[]);
    let base = server.url();
    let budget = create(
        base,
        json!({"name": "gpt-4o-tokens", "scope": {"model": "gpt-4o"}, "metric": "tokens",
               "limit": 100000, "period": "week"}),
    )
    .await;
    let id = budget["id"].as_str().unwrap();
    let ns = |ms: i64| (ms * 1_000_000).to_string();
    let t0 = now_ms() - 1000;
    let attr = |k: &str, v: Value| json!({"key": k, "value": v});
    let trace = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
    "name": "chat gpt-4o", "startTimeUnixNano": ns(t0), "endTimeUnixNano": ns(t0 + 500),
    "attributes": [
        attr("gen_ai.operation.name", json!({"stringValue": "chat"})),
        attr("gen_ai.request.model", json!({"stringValue": "gpt-4o"})),
        attr("gen_ai.usage.input_tokens", json!({"intValue": "1000"})),
        attr("gen_ai.usage.output_tokens", json!({"intValue": "234"})),
    ]}]}]}]});
    let reply = post_json_to(base, "/v1/traces", &trace).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(spend(base, id).await, 1234.0);
    // The same span again is a duplicate and does not count twice.
    post_json_to(base, "/v1/traces", &trace).await;
    assert_eq!(spend(base, id).await, 1234.0);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let (_dir, server) = server(&[]);
    let base = server.url();
    let spec = |patch: Value| {
        let mut base = json!({"name": "b", "metric": "cost_usd", "limit": 1.0, "period": "day"});
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    for (patch, needle) in [
        (json!({"scope": {"colour": "red"}}), "scope.colour: unknown scope field"),
        (json!({"limit": -5}), "limit: must be a number above 0"),
        (json!({"thresholds": [80, 50]}), "thresholds[1]: 50 is not above 80"),
        (json!({"period": "fortnight"}), "period:"),
        (json!({"webhooks": ["not a url"]}), "webhooks[0]:"),
        (json!({"colour": "red"}), "unknown field `colour`"),
        (json!({"limit": "ten"}), "limit:"),
    ] {
        let reply = post_json_to(base, "/api/v1/budgets", &spec(patch)).await;
        reply.assert_error(400, Some("bad_request"));
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
    let garbage =
        client().post(format!("{base}/api/v1/budgets")).body("{not json").send().await.unwrap();
    assert_eq!(garbage.status(), 400);

    let b = create(base, spec(json!({"name": "dup"}))).await;
    let id = b["id"].as_str().unwrap();
    post_json_to(base, "/api/v1/budgets", &spec(json!({"name": "dup"})))
        .await
        .assert_error(409, Some("conflict"));
    get(base, "/api/v1/budgets/nope/status", &[]).await.assert_error(404, Some("not_found"));
    // Concurrent creations of one name: one wins, the rest are told why.
    let racers = (0..8).map(|_| {
        let (base, spec) = (base.to_owned(), spec(json!({"name": "raced"})));
        tokio::spawn(async move { post_json_to(&base, "/api/v1/budgets", &spec).await.status })
    });
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    post_json_to(base, "/api/v1/budgets", &spec(json!({"name": "other", "id": id})))
        .await
        .assert_error(409, Some("conflict"));

    let settle = |id: &str| json!({"reservation_id": id, "usage": {"model": "gpt-4o"}});
    let unknown = post_json_to(base, "/api/v1/quota/settle", &settle("r_nonsense")).await;
    unknown.assert_error(404, Some("not_found"));
    assert!(unknown.text.contains("unknown reservation"), "{}", unknown.text);
    post_json_to(base, "/api/v1/quota/reserve", &json!({"user": "alice"}))
        .await
        .assert_error(400, Some("bad_request"));
    post_json_to(base, "/api/v1/quota/reserve", &json!({"estimated_cost_usd": -1}))
        .await
        .assert_error(400, Some("bad_request"));
    post_json_to(base, "/api/v1/quota/reserve", &json!({"estimated_cost_usd": 1, "ttl_s": 0}))
        .await
        .assert_error(400, Some("bad_request"));
    // A settle whose usage is invalid keeps the reservation for a retry.
    let r = reserve(base, &json!({"estimated_cost_usd": 0.1})).await;
    let rid = r["reservation_id"].as_str().unwrap();
    let bad = post_json_to(
        base,
        "/api/v1/quota/settle",
        &json!({"reservation_id": rid, "usage": {"input_tokens": 5}}),
    )
    .await;
    bad.assert_error(400, Some("bad_request"));
    assert!(bad.text.contains("usage.model"), "{}", bad.text);
    assert_eq!(post_json_to(base, "/api/v1/quota/settle", &settle(rid)).await.status, 200);
    post_json_to(base, "/api/v1/quota/settle", &settle(rid))
        .await
        .assert_error(409, Some("conflict"));
    get(base, "/api/v1/alerts", &[("status", "lost")]).await.assert_error(400, Some("bad_request"));
    let deleted = client().delete(format!("{base}/api/v1/budgets/{id}")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    get(base, &format!("/api/v1/budgets/{id}"), &[]).await.assert_error(404, Some("not_found"));
}

#[tokio::test]
async fn config_budgets_api_budgets_restarts_cli_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "tally.toml",
        r#"
[budgets]
timezone = "Europe/Berlin"

[[budgets.define]]
name = "project-gpt-4o"
scope = { model = "gpt-4o" }
metric = "cost_usd"
limit = 10000.0
period = "month"
"#,
    );
    let mut server =
        TestServer::start_with_args(&dir.path().join("data"), &[], &["--config", &config]);
    let base = server.url().to_owned();
    let listed = get_ok(&base, "/api/v1/budgets", &[]).await;
    let from_config = &listed["budgets"][0];
    assert_eq!(from_config["id"], "project-gpt-4o");
    assert_eq!(
        (from_config["source"].as_str(), from_config["timezone"].as_str()),
        (Some("config"), Some("Europe/Berlin"))
    );
    client()
        .delete(format!("{base}/api/v1/budgets/project-gpt-4o"))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), 409))
        .unwrap();
    let api = create(
        &base,
        json!({"id": "alice-20", "name": "alice-20", "scope": {"user": "alice"}, "metric": "cost_usd",
               "limit": 20.0, "period": "rolling 24h"}),
    )
    .await;
    assert_eq!(api["period"], "rolling 1d");
    ingest(&base, &json!([usage("alice", 200_000, now_ms() - HOUR_MS)])).await;
    let cost = expected_cost(&catalog_price("gpt-4o"), &tokens(200_000, 0));
    let before = get_ok(&base, "/api/v1/budgets/status", &[]).await;
    // Both budgets count the call; the status survives a restart.
    server.kill_9();
    server.restart();
    let base = server.url().to_owned();
    let after = get_ok(&base, "/api/v1/budgets/status", &[]).await;
    for (b, a) in
        before["budgets"].as_array().unwrap().iter().zip(after["budgets"].as_array().unwrap())
    {
        assert_cost(a["spend"].as_f64().unwrap(), cost, "spend after restart");
        assert_cost(b["spend"].as_f64().unwrap(), cost, "spend before restart");
    }
    // PUT changes an API budget (and keeps its spend, read again).
    let put = client()
        .put(format!("{base}/api/v1/budgets/alice-20"))
        .json(&json!({"name": "alice-20", "scope": {"user": "alice"}, "metric": "cost_usd",
                      "limit": 40.0, "period": "rolling 24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let s = status(&base, "alice-20").await;
    assert_eq!(s["limit"], 40.0);
    assert_cost(s["spend"].as_f64().unwrap(), cost, "spend after PUT");

    let cli = run_tally(&["budgets", "--server", &base], &[]).await;
    assert!(cli.success, "{}", cli.stderr);
    assert!(
        cli.stdout.contains("project-gpt-4o") && cli.stdout.contains("alice-20"),
        "{}",
        cli.stdout
    );
    assert!(cli.stdout.lines().next().unwrap().contains("REMAINING"));

    let metrics =
        client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    promtool_check(&metrics);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tally_budget_limit{budget_id=\"alice-20\""))
        .unwrap_or_else(|| panic!("no alice-20 limit in\n{metrics}"));
    assert!(line.ends_with(" 40"), "{line}");
    assert!(metrics.contains("tally_budget_remaining_ratio{budget_id=\"project-gpt-4o\""));
}

#[tokio::test]
async fn a_config_budget_with_webhooks_needs_a_secret() {
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
webhooks = ["http://127.0.0.1:9/hook"]
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
        &[],
    )
    .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("budgets.define[0]") && out.stderr.contains("secret: required"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_new_day_starts_from_zero_and_fires_its_thresholds_again() {
    // The server's clock is shifted to 12 s before a UTC midnight.
    let now = now_ms();
    let midnight = (now / DAY_MS + 1) * DAY_MS;
    let offset = (midnight - 12_000 - now).to_string();
    let receiver = Receiver::start(0, true).await;
    let mut env = HOOKS_ENV.to_vec();
    env.push(("TALLY_CLOCK_OFFSET_MS", &offset));
    let (_dir, server) = server(&env);
    let base = server.url();
    let budget = create(
        base,
        json!({"name": "daily", "scope": {"user": "erin"}, "metric": "tokens", "limit": 100,
               "period": "day", "thresholds": [50], "webhooks": [receiver.url], "secret": SECRET}),
    )
    .await;
    let id = budget["id"].as_str().unwrap();
    let report = json!({"model": "gpt-4o", "user": "erin", "input_tokens": 60, "output_tokens": 0});
    ingest(base, &json!([report])).await;
    let before = status(base, id).await;
    assert_eq!(before["period_end"].as_i64(), Some(midnight), "{before}");
    assert_eq!(before["spend"], 60.0);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    // Past midnight (server time): a new period, empty, armed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = status(base, id).await;
        if s["period_start"].as_i64() == Some(midnight) {
            break s;
        }
        assert!(Instant::now() < deadline, "no rollover: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (after["spend"].as_f64(), after["period_end"].as_i64()),
        (Some(0.0), Some(midnight + DAY_MS))
    );
    ingest(base, &json!([report])).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let periods: Vec<i64> =
        receiver.accepted().iter().map(|b| b["period_start"].as_i64().unwrap()).collect();
    assert_eq!(periods, [midnight - DAY_MS, midnight]);
    assert_eq!(alerts(base, &[("budget_id", id)]).await.len(), 2);
}
