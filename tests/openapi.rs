//! The OpenAPI description served at `/api/v1/openapi.json`, and the API
//! held to it: Schemathesis (installed from tests/python/requirements.txt
//! into `.venv` by scripts/test) generates requests from the description
//! for every operation, side effects included, against a throwaway server,
//! and fails on any 5xx or any answer the description does not allow
//! (status, content type, headers, body schema).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/test, which installs tests/python/requirements.txt",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_description_is_served_as_openapi_3_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), &[]);
    let response = client()
        .get(format!("{}/api/v1/openapi.json", server.url()))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let doc: serde_json::Value = response.json().await.expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for path in ["/api/v1/usage", "/v1/traces", "/api/v1/budgets/{id}", "/metrics", "/healthz"] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    // Repeatable parameters are described as such.
    let params = doc["paths"]["/api/v1/usage/summary"]["get"]["parameters"]
        .as_array()
        .expect("summary parameters");
    let filter = params.iter().find(|p| p["name"] == "filter").expect("filter parameter");
    assert_eq!(filter["explode"], true);
    let kind = &filter["schema"]["type"];
    assert!(
        kind == "array" || kind.as_array().is_some_and(|t| t.contains(&"array".into())),
        "filter: {filter}"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

/// A path segment that is not UTF-8 once percent-decoded is answered in
/// the API's error shape, as described, not as axum's plain text.
#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_is_answered_in_the_error_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), &[]);
    for path in [
        "/api/v1/budgets/%FF",
        "/api/v1/budgets/%FF/status",
        "/api/v1/traces/%FF",
        "/api/v1/sessions/%FF",
    ] {
        let response =
            client().get(format!("{}{path}", server.url())).send().await.expect("request");
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Auth on, as a shared server runs: an admin key without a rate limit
    // (the run sends faster than the scope's default allows).
    let key = create_key(
        dir.path(),
        "default",
        "admin",
        &["--requests-per-second", "0", "--records-per-second", "0"],
    )
    .text;
    // Private webhook targets are refused either way; no alert is sent
    // anywhere while the run lasts (deliveries are retried later).
    let server = TestServer::start(dir.path(), &[]);
    // Some data, so that queries have something to group and page through.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let reports: Vec<_> = (0..20)
            .map(|i| json_with_user(chat(&format!("r{i}"), "gpt-4o", tokens(100, 20), now_ms()), i))
            .collect();
        let status = client()
            .post(format!("{}/api/v1/usage", server.url()))
            .bearer_auth(&key)
            .json(&reports)
            .send()
            .await
            .expect("usage")
            .status();
        assert_eq!(status, 200);
    });
    let report = dir.path().join("schemathesis.ndjson");
    let started = Instant::now();
    let output = Command::new(schemathesis())
        .current_dir(dir.path())
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", server.url()),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "25",
            "--max-time",
            "90",
            "--request-timeout",
            "10",
            "--workers",
            "2",
            "--seed",
            "20261204",
            "--generation-database",
            "none",
            "--header",
            &format!("Authorization: Bearer {key}"),
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
        ])
        .arg(&report)
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems (exit {:?}, after {:?}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status.code(),
        started.elapsed(),
        server.log()
    );
    assert!(started.elapsed() < Duration::from_secs(150), "the run took {:?}", started.elapsed());
    // The run really exercised the API, every operation of it.
    let events = std::fs::read_to_string(&report).expect("schemathesis report");
    for operation in
        ["GET /api/v1/usage/summary", "POST /api/v1/usage", "DELETE /api/v1/budgets/{id}"]
    {
        assert!(events.contains(operation), "{operation} was not exercised:\n{stdout}");
    }
    let count = |pattern: &str| -> Option<String> {
        regex::Regex::new(pattern).expect("valid regex").captures(&stdout).map(|c| c[1].to_owned())
    };
    let total = count(r"Selected: \d+/(\d+)");
    assert!(
        total.is_some() && count(r"Tested: (\d+)") == total,
        "not every operation was tested:\n{stdout}"
    );
}

fn json_with_user(report: serde_json::Value, i: usize) -> serde_json::Value {
    with(report, "user", serde_json::json!(format!("user-{}", i % 4)))
}
