//! API keys end to end: keys made with `tally keys create --data-dir`, a
//! real server over HTTP and gRPC, two projects with data of their own.
//! Every route of the API description is asked with no key, a wrong key
//! and each scope of the other project: who gets 401, 403, 404 and 200,
//! and no answer to project B holds anything of project A. Then scopes,
//! expiry and revocation, the start-up refusal on a public address, the
//! real OpenTelemetry and Langfuse SDKs with their own auth settings,
//! per-key rate limits, and the audit log of every admin action.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, client, now_ms, tally_binary};
use serde_json::{Value, json};

type Key = common::ApiKey;

/// A key named after its project (the name is one of the project's markers).
fn make_key(dir: &Path, project: &str, scope: &str, extra: &[&str]) -> Key {
    let name = format!("key-secret-{project}");
    let args: Vec<&str> =
        ["--name", name.as_str()].into_iter().chain(extra.iter().copied()).collect();
    common::create_key(dir, project, scope, &args)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client().request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Answer { status, headers, text }
}

/// The keys of one project and the ids of what it stored.
struct Team {
    name: &'static str,
    ingest: Key,
    read: Key,
    admin: Key,
    trace_id: String,
    budget_id: String,
}

impl Team {
    fn keys(&self) -> [(&'static str, &Key); 3] {
        [("ingest", &self.ingest), ("read", &self.read), ("admin", &self.admin)]
    }

    /// Text that only this project's data holds.
    fn markers(&self) -> Vec<String> {
        let mut markers = vec![
            format!("secret-{}", self.name),
            format!("secret_{}", self.name),
            self.trace_id.clone(),
            self.budget_id.clone(),
        ];
        markers.extend(self.keys().iter().map(|(_, k)| k.id.clone()));
        markers
    }
}

fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn spans(p: &str, trace_id: &str) -> Value {
    let t0 = (now_ms() - 60_000) * 1_000_000;
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", &format!("svc-secret-{p}"))]},
        "scopeSpans": [{"spans": [
            {"traceId": trace_id, "spanId": "1111111111111111", "name": format!("step-secret-{p}"),
             "startTimeUnixNano": t0.to_string(), "endTimeUnixNano": (t0 + 1_000_000_000).to_string(),
             "attributes": [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.request.model", "gpt-4o"),
                attr("gen_ai.conversation.id", &format!("session-secret-{p}")),
                attr("user.id", &format!("user-secret-{p}")),
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
             ]},
        ]}],
    }]})
}

fn logs(p: &str, trace_id: &str) -> Value {
    json!({"resourceLogs": [{
        "resource": {"attributes": [attr("service.name", &format!("svc-secret-{p}"))]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": ((now_ms() - 30_000) * 1_000_000).to_string(),
            "severityNumber": 9, "body": {"stringValue": format!("log-secret-{p}")},
            "traceId": trace_id, "spanId": "1111111111111111",
        }]}],
    }]})
}

fn report(p: &str, id: &str) -> Value {
    json!({"id": id, "model": format!("model-secret-{p}"), "provider": "openai",
           "user": format!("user-secret-{p}"), "route": format!("/route-secret-{p}"),
           "input_tokens": 1000, "output_tokens": 100, "completed_at": now_ms() - 20_000})
}

fn budget(p: &str) -> Value {
    json!({"name": format!("budget-secret-{p}"), "scope": {"user": format!("user-secret-{p}")},
           "metric": "cost_usd", "limit": 100.0, "period": "month"})
}

/// Makes a project's keys on the data dir (before the server starts).
fn team_keys(dir: &Path, name: &'static str) -> (Key, Key, Key) {
    (
        make_key(dir, name, "ingest", &[]),
        make_key(dir, name, "read", &[]),
        make_key(dir, name, "admin", &[]),
    )
}

/// Stores a project's data through its own keys.
async fn seed(base: &str, name: &'static str, (ingest, read, admin): (Key, Key, Key)) -> Team {
    let trace_id = if name == "a" { "a".repeat(32) } else { "b".repeat(32) };
    let k = Some(ingest.text.as_str());
    for (path, body) in [
        (
            "/api/v1/usage",
            json!([
                report(name, &format!("call-secret-{name}-1")),
                report(name, &format!("call-secret-{name}-2"))
            ]),
        ),
        (
            "/api/v1/points",
            json!({"name": format!("metric_secret_{name}"), "value": 1.5, "tags": {"t": format!("tag-secret-{name}")}}),
        ),
        ("/v1/traces", spans(name, &trace_id)),
        ("/v1/logs", logs(name, &trace_id)),
    ] {
        let answer = send(base, "POST", path, k, Some(&body)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        assert!(!answer.text.contains("rejected\":[{"), "{path}: {}", answer.text);
    }
    let made = send(base, "POST", "/api/v1/budgets", Some(&admin.text), Some(&budget(name))).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let budget_id = made.json()["id"].as_str().unwrap().to_owned();
    Team { name, ingest, read, admin, trace_id, budget_id }
}

/// The scope a route needs, as the README documents it (written out here,
/// not taken from the server).
fn needed(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("GET", "/healthz") => None,
        ("GET", "/api/v1/openapi.json" | "/api/v1/auth/whoami") => Some("any"),
        (_, p) if p.starts_with("/api/v1/admin/") => Some("admin"),
        ("POST", "/api/v1/usage/reprice") => Some("admin"),
        ("POST" | "PUT" | "DELETE", p) if p.starts_with("/api/v1/budgets") => Some("admin"),
        (
            "POST",
            "/api/v1/usage" | "/api/v1/points" | "/api/v1/quota/reserve" | "/api/v1/quota/settle",
        ) => Some("ingest"),
        ("POST", p) if p.starts_with("/v1/") || p.starts_with("/api/public/") => Some("ingest"),
        ("GET", _) => Some("read"),
        other => panic!("no scope written down for {other:?}: add it to the README and here"),
    }
}

fn allows(scope: &str, needed: &str) -> bool {
    needed == "any" || scope == needed || scope == "admin"
}

/// A body the route takes (from project B's side: no project named).
fn body_for(method: &str, path: &str, n: usize) -> Option<Value> {
    let body = match (method, path) {
        ("POST", "/api/v1/usage") => json!([report("b", &format!("call-secret-b-route-{n}"))]),
        ("POST", "/api/v1/points") => json!({"name": "metric_secret_b", "value": 2.0}),
        ("POST", "/v1/traces" | "/api/public/otel/v1/traces") => spans("b", &"b".repeat(32)),
        ("POST", "/v1/logs") => logs("b", &"b".repeat(32)),
        ("POST", "/v1/metrics") => json!({"resourceMetrics": []}),
        ("POST", "/api/v1/budgets") => {
            json!({"name": format!("budget-secret-b-{n}"), "metric": "cost_usd", "limit": 5.0, "period": "day"})
        }
        ("PUT", _) => budget("b"),
        ("POST", "/api/v1/usage/reprice") => json!({"from": now_ms() - 3_600_000, "to": now_ms()}),
        ("POST", "/api/v1/quota/reserve") => json!({"estimated_cost_usd": 0.01}),
        ("POST", "/api/v1/quota/settle") => {
            json!({"reservation_id": "no-such-reservation", "usage": report("b", &format!("settle-secret-b-{n}"))})
        }
        ("POST", "/api/v1/admin/keys") => json!({"scope": "read", "name": "made-by-b"}),
        ("POST", "/api/v1/admin/projects") => json!({"name": format!("project-made-{n}")}),
        _ => return None,
    };
    Some(body)
}

/// No marker of `of` in the answer, except those the request itself sent
/// (a 404 may name the id it was asked for).
fn assert_no_markers(answer: &Answer, of: &Team, what: &str) {
    for marker in of.markers().into_iter().filter(|m| !what.contains(m.as_str())) {
        assert!(
            !answer.text.contains(&marker),
            "{what}: the answer to project b holds {marker:?} of project {}:\n{}",
            of.name,
            answer.text
        );
    }
}

async fn two_teams() -> (tempfile::TempDir, TestServer, Team, Team) {
    let dir = tempfile::tempdir().unwrap();
    let a = team_keys(dir.path(), "a");
    let b = team_keys(dir.path(), "b");
    let server = TestServer::start(dir.path(), &[]);
    let a = seed(server.url(), "a", a).await;
    let b = seed(server.url(), "b", b).await;
    send(server.url(), "POST", "/api/v1/admin/flush", Some(&a.admin.text), None).await;
    (dir, server, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_key_by_its_scope_and_project() {
    let (_dir, server, a, b) = two_teams().await;
    let base = server.url();
    let doc = send(base, "GET", "/api/v1/openapi.json", Some(&a.read.text), None).await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    let doc = doc.json();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 40, "{routes:?}");
    let wrong = format!("tally_read_{}_{}", a.read.id, "x".repeat(43));
    let mut n = 0;
    for (method, template) in &routes {
        let path = template
            .replace("{trace_id}", &a.trace_id)
            .replace("{session_id}", "session-secret-a")
            .replace("{id}", if template.contains("/keys/") { &a.read.id } else { &a.budget_id });
        let ids_of_a = path != *template;
        let Some(need) = needed(method, template) else {
            let answer = send(base, method, &path, None, None).await;
            assert_eq!(answer.status, 200, "{method} {path} is open: {}", answer.text);
            continue;
        };
        n += 1;
        let body = body_for(method, template, n);
        for (who, key) in [("no key", None), ("a wrong key", Some(wrong.as_str()))] {
            let answer = send(base, method, &path, key, body.as_ref()).await;
            assert_eq!(answer.status, 401, "{method} {path} with {who}: {}", answer.text);
            let message = answer.json()["error"]["message"].as_str().unwrap_or("").to_owned();
            assert!(message.contains("key"), "a 401 says what was expected: {message}");
            assert_eq!(answer.headers["www-authenticate"], "Bearer realm=\"tally\"");
        }
        for (scope, key) in b.keys() {
            n += 1;
            let body = body_for(method, template, n);
            let answer = send(base, method, &path, Some(&key.text), body.as_ref()).await;
            let what = format!("{method} {path} with b's {scope} key");
            if !allows(scope, need) {
                assert_eq!(answer.status, 403, "{what}: {}", answer.text);
                let message = answer.json()["error"]["message"].as_str().unwrap_or("").to_owned();
                assert!(message.contains(need), "{what}: a 403 names the scope: {message}");
                continue;
            }
            assert!(
                ![401, 403].contains(&answer.status),
                "{what}: {} {}",
                answer.status,
                answer.text
            );
            if ids_of_a {
                assert_eq!(
                    answer.status, 404,
                    "{what}: an id of project a is not found: {}",
                    answer.text
                );
            } else {
                assert!(answer.status < 500, "{what}: {} {}", answer.status, answer.text);
            }
            assert_no_markers(&answer, &a, &what);
        }
    }
    // Naming project a is refused to b's keys; CSV and /metrics hold none
    // of a's data; a's data, budget and keys are untouched.
    for path in
        ["/api/v1/usage/summary?project=a", "/api/v1/traces?project=a", "/api/v1/budgets?project=a"]
    {
        let answer = send(base, "GET", path, Some(&b.read.text), None).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
    }
    let csv = send(
        base,
        "GET",
        "/api/v1/usage/summary?group_by=user&format=csv",
        Some(&b.read.text),
        None,
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.text.contains("user-secret-b"), "{}", csv.text);
    assert_no_markers(&csv, &a, "CSV");
    let metrics = send(base, "GET", "/metrics", Some(&b.read.text), None).await;
    assert!(metrics.text.contains("project=\"b\""), "{}", metrics.text);
    assert_no_markers(&metrics, &a, "/metrics");
    let own = send(base, "GET", "/metrics", Some(&a.read.text), None).await;
    assert!(own.text.contains("secret-a") || own.text.contains("project=\"a\""), "{}", own.text);
    let summary =
        send(base, "GET", "/api/v1/usage/summary?group_by=user", Some(&a.read.text), None).await;
    assert_eq!(summary.status, 200, "{}", summary.text);
    // Two usage reports and the LLM span.
    assert_eq!(summary.json()["total"]["requests"], 3, "{}", summary.text);
    let kept =
        send(base, "GET", &format!("/api/v1/budgets/{}", a.budget_id), Some(&a.read.text), None)
            .await;
    assert_eq!(kept.status, 200, "{}", kept.text);
    let trace =
        send(base, "GET", &format!("/api/v1/traces/{}", a.trace_id), Some(&a.read.text), None)
            .await;
    assert_eq!(trace.status, 200, "{}", trace.text);
    assert!(trace.text.contains("step-secret-a"));
    // b's records that named project a were refused whole.
    let foreign = json!([{"id": "x", "model": "gpt-4o", "project": "a", "input_tokens": 1, "output_tokens": 1}]);
    let answer = send(base, "POST", "/api/v1/usage", Some(&b.ingest.text), Some(&foreign)).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    let mut otlp = spans("b", &"c".repeat(32));
    otlp["resourceSpans"][0]["resource"]["attributes"]
        .as_array_mut()
        .unwrap()
        .push(attr("tally.project", "a"));
    let answer = send(base, "POST", "/v1/traces", Some(&b.ingest.text), Some(&otlp)).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    let summary = send(base, "GET", "/api/v1/usage/summary", Some(&a.read.text), None).await;
    assert_eq!(summary.json()["total"]["requests"], 3, "{}", summary.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exports_need_an_ingest_key_of_the_project() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let (_dir, server, a, b) = two_teams().await;
    let request: ExportTraceServiceRequest =
        serde_json::from_value(spans("b", &"d".repeat(32))).expect("OTLP/JSON decodes");
    let mut grpc = TraceServiceClient::connect(server.grpc_url().to_owned()).await.unwrap();
    let with = |key: Option<&str>| {
        let mut r = tonic::Request::new(request.clone());
        if let Some(key) = key {
            r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        r
    };
    let err = grpc.export(with(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = grpc.export(with(Some(&b.read.text))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("ingest"), "{err:?}");
    grpc.export(with(Some(&b.ingest.text))).await.expect("b's ingest key exports");
    let trace = send(
        server.url(),
        "GET",
        &format!("/api/v1/traces/{}", "d".repeat(32)),
        Some(&b.read.text),
        None,
    )
    .await;
    assert_eq!(trace.status, 200, "{}", trace.text);
    let hidden = send(
        server.url(),
        "GET",
        &format!("/api/v1/traces/{}", "d".repeat(32)),
        Some(&a.read.text),
        None,
    )
    .await;
    assert_eq!(hidden.status, 404, "{}", hidden.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_and_revocation_takes_effect_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let admin = make_key(dir.path(), "a", "admin", &[]);
    let short = make_key(dir.path(), "a", "read", &["--expires", "3s"]);
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    assert_eq!(send(base, "GET", "/api/v1/traces", Some(&short.text), None).await.status, 200);
    // Through the API.
    let made = send(
        base,
        "POST",
        "/api/v1/admin/keys",
        Some(&admin.text),
        Some(&json!({"scope": "read"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let made = made.json();
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tally_read_"), "{made}");
    assert_eq!(made["project"], "a");
    assert_eq!(send(base, "GET", "/api/v1/traces", Some(&key), None).await.status, 200);
    let listed = send(base, "GET", "/api/v1/admin/keys", Some(&admin.text), None).await;
    assert!(!listed.text.contains(&key), "a key's text is shown once only");
    assert!(!listed.text.contains("hash"), "{}", listed.text);
    let revoked = send(
        base,
        "DELETE",
        &format!("/api/v1/admin/keys/{}", made["id"].as_str().unwrap()),
        Some(&admin.text),
        None,
    )
    .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let gone = send(base, "GET", "/api/v1/traces", Some(&key), None).await;
    assert_eq!(gone.status, 401, "{}", gone.text);
    assert!(gone.text.contains("revoked"), "{}", gone.text);
    // On the data dir, with the server running: refused within a second.
    let other = make_key(dir.path(), "a", "read", &[]);
    let deadline = Instant::now() + Duration::from_millis(1500);
    while send(base, "GET", "/api/v1/traces", Some(&other.text), None).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "a key made on the data dir was not taken within a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new(tally_binary())
        .args(["keys", "revoke", "--data-dir"])
        .arg(dir.path())
        .arg(&other.id)
        .status()
        .unwrap();
    assert!(status.success());
    let revoked_at = Instant::now();
    while send(base, "GET", "/api/v1/traces", Some(&other.text), None).await.status != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "revocation took over a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Expiry.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let expired = send(base, "GET", "/api/v1/traces", Some(&short.text), None).await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    assert!(expired.text.contains("expired"), "{}", expired.text);
    // `tally keys list` through the server shows every key, none's text.
    let output = Command::new(tally_binary())
        .args(["keys", "list", "--server", base, "--json"])
        .env("TALLY_API_KEY", &admin.text)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&short.text));
}

#[test]
fn a_public_address_with_no_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before anything binds: the address is never listened on.
    let output = Command::new(tally_binary())
        .args(["serve", "--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TALLY_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tally keys create"), "{stderr}");
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
}

fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let output = Command::new(common::python())
        .arg(path)
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().unwrap_or("").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdks_send_with_their_own_auth_settings() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = make_key(dir.path(), "team-a", "ingest", &[]);
    let read = make_key(dir.path(), "team-a", "read", &[]);
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let headers = format!("authorization=Bearer%20{}", ingest.text);
    let env = [("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str())];
    let over_http = run_python("emit_otel.py", &["http", &base, "session-http"], &env);
    let over_grpc = run_python("emit_otel.py", &["grpc", server.grpc_url(), "session-grpc"], &env);
    let langfuse = run_python(
        "emit_langfuse.py",
        &[&base, "lf-session"],
        &[("LANGFUSE_PUBLIC_KEY", "team-a"), ("LANGFUSE_SECRET_KEY", &ingest.text)],
    );
    for trace_id in [&over_http, &over_grpc, &langfuse] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer =
                send(&base, "GET", &format!("/api/v1/traces/{trace_id}"), Some(&read.text), None)
                    .await;
            if answer.status == 200 {
                assert_eq!(answer.json()["project"], "team-a", "{}", answer.text);
                break;
            }
            assert!(Instant::now() < deadline, "trace {trace_id} did not arrive: {}", answer.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Phoenix's client sends its key in an `api_key` header.
    let phoenix = client()
        .get(format!("{base}/api/v1/traces"))
        .header("api_key", &read.text)
        .send()
        .await
        .unwrap();
    assert_eq!(phoenix.status(), 200);
    // A Langfuse public key naming another project is refused.
    let other = run_python_status(
        "emit_langfuse.py",
        &[&base, "lf-other"],
        &[("LANGFUSE_PUBLIC_KEY", "team-b"), ("LANGFUSE_SECRET_KEY", &ingest.text)],
    );
    let traces =
        send(&base, "GET", "/api/v1/traces?since=1h&limit=100", Some(&read.text), None).await;
    assert!(!traces.text.contains(&other), "a trace sent as team-b was stored: {}", traces.text);
}

/// Runs a script whose exports may be refused; its printed trace id.
fn run_python_status(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let output = Command::new(common::python())
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or("").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_is_limited_while_another_keeps_its_pace() {
    let dir = tempfile::tempdir().unwrap();
    let flood = make_key(dir.path(), "a", "read", &["--requests-per-second", "20"]);
    let calm = make_key(dir.path(), "b", "read", &[]);
    let records = make_key(dir.path(), "a", "ingest", &["--records-per-second", "50"]);
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    // The flood asks who it is (cheap, so that even a loaded machine sends
    // it faster than its limit); the other key asks for summaries.
    let timed = move |(key, path): (String, &'static str)| {
        let base = base.clone();
        async move {
            let t0 = Instant::now();
            let answer = send(&base, "GET", path, Some(&key), None).await;
            (answer, t0.elapsed())
        }
    };
    let (summary, whoami) = ("/api/v1/usage/summary", "/api/v1/auth/whoami");
    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(timed((calm.text.clone(), summary)).await.1);
    }
    // Three clients at once on the flooding key, 100 requests each, 10 ms
    // apart: well over its 20 a second, without taking the machine's CPU.
    let flood_started = Instant::now();
    let flooders: Vec<_> = (0..3)
        .map(|_| {
            let timed = timed.clone();
            let key = flood.text.clone();
            tokio::spawn(async move {
                let mut limited = 0;
                let mut retry_after = None;
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let (answer, _) = timed((key.clone(), whoami)).await;
                    if answer.status == 429 {
                        limited += 1;
                        retry_after = answer.headers.get("retry-after").cloned();
                    } else {
                        assert_eq!(answer.status, 200, "{}", answer.text);
                    }
                }
                (limited, retry_after)
            })
        })
        .collect();
    let flooding = tokio::spawn(async move {
        let (mut limited, mut retry_after) = (0, None);
        for flooder in flooders {
            let (n, after) = flooder.await.unwrap();
            limited += n;
            retry_after = retry_after.or(after);
        }
        (limited, retry_after)
    });
    let mut during = Vec::new();
    for _ in 0..20 {
        let (answer, took) = timed((calm.text.clone(), summary)).await;
        assert_eq!(answer.status, 200, "the other key was limited: {}", answer.text);
        during.push(took);
    }
    let (limited, retry_after) = flooding.await.unwrap();
    // The key's bucket holds a second's worth (20) and refills at 20 a
    // second: however fast this machine answers, no more got through.
    let seconds = flood_started.elapsed().as_secs_f64();
    let allowed = 300 - limited;
    assert!(
        limited > 0 && f64::from(allowed) <= 20.0 * seconds + 20.0 + 2.0,
        "{allowed} of 300 flooding requests got through in {seconds:.1} s at 20 a second"
    );
    assert!(retry_after.is_some_and(|v| v.to_str().unwrap().parse::<u32>().unwrap() >= 1));
    before.sort();
    during.sort();
    let (p50_before, p50_during) = (before[10], during[10]);
    assert!(
        p50_during < p50_before * 5 + Duration::from_millis(50),
        "the other key slowed: median {p50_before:?} before, {p50_during:?} during the flood"
    );
    // Records per second: of two batches of 40 sent at once against a rate
    // of 50, one is taken and the other waits (sent together, so that how
    // long a commit takes on this machine does not refill the bucket).
    let batch = |from: usize| -> Value {
        json!((from..from + 40).map(|i| report("a", &format!("rate-{i}"))).collect::<Vec<_>>())
    };
    let (one, two) = (batch(0), batch(40));
    let (one, two) = tokio::join!(
        send(server.url(), "POST", "/api/v1/usage", Some(&records.text), Some(&one)),
        send(server.url(), "POST", "/api/v1/usage", Some(&records.text), Some(&two)),
    );
    let mut statuses = [one.status, two.status];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "{} / {}", one.text, two.text);
    let refused = if one.status == 429 { &one } else { &two };
    assert!(refused.text.contains("records_per_second"), "{}", refused.text);
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_is_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let admin = make_key(dir.path(), "a", "admin", &[]);
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let k = Some(admin.text.as_str());
    let made =
        send(base, "POST", "/api/v1/admin/keys", k, Some(&json!({"scope": "ingest"}))).await.json();
    let key_id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        send(base, "DELETE", &format!("/api/v1/admin/keys/{key_id}"), k, None).await.status,
        204
    );
    let project =
        send(base, "POST", "/api/v1/admin/projects", k, Some(&json!({"name": "c"}))).await;
    assert_eq!(project.status, 201, "{}", project.text);
    assert_eq!(project.json()["project"], "c");
    let listed = send(base, "GET", "/api/v1/admin/projects", k, None).await.json();
    assert_eq!(
        listed["projects"].as_array().unwrap().len(),
        1,
        "a key sees its own project: {listed}"
    );
    let budget_id = send(base, "POST", "/api/v1/budgets", k, Some(&budget("a"))).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let replaced =
        send(base, "PUT", &format!("/api/v1/budgets/{budget_id}"), k, Some(&budget("a"))).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(
        send(base, "DELETE", &format!("/api/v1/budgets/{budget_id}"), k, None).await.status,
        204
    );
    let window = json!({"from": now_ms() - 3_600_000, "to": now_ms()});
    assert_eq!(send(base, "POST", "/api/v1/usage/reprice", k, Some(&window)).await.status, 200);
    assert_eq!(send(base, "POST", "/api/v1/admin/flush", k, None).await.status, 200);
    // A failed action is not an action.
    assert_eq!(send(base, "DELETE", "/api/v1/budgets/nope", k, None).await.status, 404);

    let audit = send(base, "GET", "/api/v1/admin/audit", k, None).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    let expected = [
        ("flush", ""),
        ("usage.reprice", ""),
        ("budgets.delete", budget_id.as_str()),
        ("budgets.replace", budget_id.as_str()),
        ("budgets.create", budget_id.as_str()),
        ("projects.create", "c"),
        ("keys.revoke", key_id.as_str()),
        ("keys.create", key_id.as_str()),
        ("keys.create", admin.id.as_str()),
    ];
    assert_eq!(actions, expected, "{}", audit.text);
    for entry in &entries[..entries.len() - 1] {
        assert_eq!(entry["key_id"], admin.id.as_str(), "{entry}");
        assert!(entry["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{entry}");
        assert!(entry["time_ms"].as_i64().unwrap() > now_ms() - 60_000);
    }
    // `tally audit` shows the same.
    let output = Command::new(tally_binary())
        .args(["audit", "--server", base, "--json"])
        .env("TALLY_API_KEY", &admin.text)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed.as_array().unwrap().len(), expected.len());
    // A read key may not read the audit log.
    let read =
        send(base, "POST", "/api/v1/admin/keys", k, Some(&json!({"scope": "read"}))).await.json();
    let denied = send(base, "GET", "/api/v1/admin/audit", read["key"].as_str(), None).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.text.contains("admin"), "{}", denied.text);
}
