//! Real SDKs pointed at Tally with no Tally-specific code: the OpenTelemetry
//! Python SDK over OTLP/HTTP (protobuf), OTLP/gRPC and OTLP/HTTP JSON (its own
//! encoder, sent as JSON by the test script), the same SDK carrying
//! OpenInference attributes as Phoenix instrumentations write them, and the
//! Langfuse Python SDK on its own endpoint. Needs the packages of
//! tests/python/requirements.txt in `.venv` (scripts/test installs them).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{TestServer, Tokens, assert_cost, catalog_price, expected_cost, get, get_ok, summary};
use serde_json::Value;

/// Runs a script of tests/python and returns the trace id it printed.
fn emit(script: &str, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let output = Command::new(common::python())
        .arg(path)
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let trace_id = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert_eq!(trace_id.len(), 32, "{script} printed no trace id:\n{stdout}\n{stderr}");
    trace_id
}

fn span_named<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|c| span_named(c, name))
}

async fn check_otel_run(base: &str, trace_id: &str, session: &str) {
    let detail = get_ok(base, &format!("/api/v1/traces/{trace_id}"), &[]).await;
    let roots = detail["spans"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{detail}");
    let root = &roots[0];
    assert_eq!(
        (root["kind"].as_str(), root["service"].as_str()),
        (Some("agent"), Some("support-agent"))
    );
    assert_eq!(root["children"].as_array().unwrap().len(), 3);
    let llm = span_named(root, "chat gpt-4o").unwrap();
    assert_eq!(llm["kind"], "llm");
    assert_eq!(
        (llm["input_tokens"].as_u64(), llm["cache_read_tokens"].as_u64()),
        (Some(1200), Some(200))
    );
    assert_eq!(llm["output_tokens"], 300);
    assert!(llm["cost_usd"].as_f64().unwrap() > 0.0);
    let tool = span_named(root, "execute_tool search").unwrap();
    assert_eq!((tool["kind"].as_str(), tool["status"].as_str()), (Some("tool"), Some("error")));
    let emb = span_named(root, "embeddings text-embedding-3-small").unwrap();
    assert_eq!(emb["kind"], "embedding");
    assert_eq!(root["subtree"]["llm_calls"], 2);
    assert_eq!(root["subtree"]["input_tokens"], 1264);
    // The log record written inside the LLM span is linked to it.
    let logs = detail["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{detail}");
    assert_eq!(logs[0]["body"], "model answered");
    assert_eq!(logs[0]["span_id"], llm["span_id"]);

    let list = get_ok(base, "/api/v1/traces", &[("since", "1h"), ("session", session)]).await;
    let trace = &list["traces"][0];
    assert_eq!(trace["trace_id"], trace_id);
    assert_eq!((trace["user"].as_str(), trace["error_count"].as_u64()), (Some("alice"), Some(1)));
}

#[tokio::test]
async fn opentelemetry_python_sdk_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();

    let over_http = emit("emit_otel.py", &["http", &base, "session-http"]);
    check_otel_run(&base, &over_http, "session-http").await;
    let grpc = server.grpc_url().to_owned();
    let over_grpc = emit("emit_otel.py", &["grpc", &grpc, "session-grpc"]);
    check_otel_run(&base, &over_grpc, "session-grpc").await;

    // Two runs, each with a chat call and an embedding call, in the ledger.
    let usage = summary(&base, &[("since", "1h"), ("group_by", "model")]).await;
    assert_eq!(usage["total"]["requests"], 4, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 2 * 1264);
    let chat = common::group(&usage, &serde_json::json!({"model": "gpt-4o"}));
    assert_eq!(
        chat["ttft_ms"]["p50"].as_f64().map(|v| (v - 250.0).abs() < 2.6),
        Some(true),
        "{chat}"
    );
    let sessions = get_ok(&base, "/api/v1/sessions", &[("since", "1h")]).await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn opentelemetry_python_sdk_over_http_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();

    let trace_id = emit("emit_otel.py", &["json", &base, "session-json"]);
    check_otel_run(&base, &trace_id, "session-json").await;

    // The chat call and the embedding call, in the ledger.
    let usage = summary(&base, &[("since", "1h"), ("group_by", "model")]).await;
    assert_eq!(usage["total"]["requests"], 2, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 1264);
    assert_eq!(usage["total"]["cache_read_tokens"], 200);
    assert_eq!(usage["total"]["output_tokens"], 300);
}

#[tokio::test]
async fn openinference_attributes_as_phoenix_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let trace_id = emit("emit_openinference.py", &[&base, "oi-session"]);

    // The resource attribute `openinference.project.name` names the project.
    let project = [("project", "phoenix-demo")];
    let detail = get_ok(&base, &format!("/api/v1/traces/{trace_id}"), &project).await;
    assert_eq!(detail["project"], "phoenix-demo", "{detail}");
    let in_default = get(&base, &format!("/api/v1/traces/{trace_id}"), &[]).await;
    assert_eq!(in_default.status, 404, "{}", in_default.text);

    let roots = detail["spans"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{detail}");
    let root = &roots[0];
    let kinds = [
        ("support-agent", "agent"),
        ("answer-question", "chain"),
        ("retrieve-docs", "retrieval"),
        ("embed-query", "embedding"),
        ("ChatCompletion", "llm"),
        ("lookup-order", "tool"),
    ];
    for (name, kind) in kinds {
        let span = span_named(root, name).unwrap_or_else(|| panic!("no span {name}: {detail}"));
        assert_eq!(span["kind"], kind, "{name}");
    }

    // `llm.token_count.prompt` includes the cache reads, as OpenAI counts.
    let llm = span_named(root, "ChatCompletion").unwrap();
    assert_eq!(
        (llm["model"].as_str(), llm["provider"].as_str()),
        (Some("gpt-4o-mini"), Some("openai"))
    );
    assert_eq!(
        (llm["input_tokens"].as_u64(), llm["cache_read_tokens"].as_u64()),
        (Some(500), Some(100)),
        "{llm}"
    );
    assert_eq!(llm["output_tokens"], 120);
    let tokens = Tokens { input: 500, output: 120, cache_read: 100, ..Tokens::default() };
    let cost = llm["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);
    assert_cost(cost, expected_cost(&catalog_price("gpt-4o-mini"), &tokens), "gpt-4o-mini call");

    // The embedding span keeps its text but not its 1536-float vector.
    let emb = span_named(root, "embed-query").unwrap();
    assert_eq!(
        (emb["model"].as_str(), emb["input_tokens"].as_u64()),
        (Some("text-embedding-3-small"), Some(32)),
        "{emb}"
    );
    let attributes = emb["attributes"].as_object().unwrap();
    assert!(
        !attributes.contains_key("embedding.embeddings.0.embedding.vector"),
        "vector stored: {attributes:?}"
    );
    assert_eq!(attributes["embedding.embeddings.0.embedding.text"], "Where is my order 1234?");

    let list = get_ok(
        &base,
        "/api/v1/traces",
        &[("since", "1h"), ("project", "phoenix-demo"), ("session", "oi-session")],
    )
    .await;
    let trace = &list["traces"][0];
    assert_eq!(trace["trace_id"], trace_id, "{list}");
    assert_eq!(trace["user"], "carol");

    // The chat call and the embedding call, in the project's ledger only.
    let usage = summary(&base, &[("since", "1h"), ("group_by", "model"), project[0]]).await;
    assert_eq!(usage["total"]["requests"], 2, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 500 + 32);
    assert_eq!(usage["total"]["cache_read_tokens"], 100);
    assert_eq!(usage["total"]["output_tokens"], 120);
    let default = summary(&base, &[("since", "1h")]).await;
    assert_eq!(default["total"]["requests"], 0, "{default}");
}

#[tokio::test]
async fn langfuse_python_sdk_on_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let trace_id = emit("emit_langfuse.py", &[&base, "lf-session"]);

    // The public key names the project.
    let query = [("project", "pk-lf-tally")];
    let detail = get_ok(&base, &format!("/api/v1/traces/{trace_id}"), &query).await;
    let root = &detail["spans"][0];
    assert_eq!((root["name"].as_str(), root["kind"].as_str()), (Some("planner"), Some("agent")));
    let generation = span_named(root, "draft answer").unwrap();
    assert_eq!(generation["kind"], "llm");
    // Langfuse's exclusive usage made inclusive.
    assert_eq!(generation["input_tokens"], 1000, "{generation}");
    assert_eq!(generation["cache_read_tokens"], 300);
    assert_eq!(generation["output_tokens"], 200);
    let tool = span_named(root, "lookup").unwrap();
    assert_eq!(tool["status"], "error");

    let usage = summary(&base, &[("since", "1h"), ("project", "pk-lf-tally")]).await;
    assert_eq!(usage["total"]["requests"], 1, "{usage}");
    assert_eq!(usage["total"]["reasoning_tokens"], 50);
    let ttft = usage["total"]["ttft_ms"]["p50"].as_f64().unwrap();
    assert!((ttft - 120.0).abs() < 2.0, "TTFT from completion_start_time: {ttft}");

    let session = get_ok(&base, "/api/v1/sessions/lf-session", &query).await;
    assert_eq!(session["traces"][0]["trace_id"], trace_id);
    assert_eq!(session["traces"][0]["user"], "bob");
}

#[tokio::test]
async fn gateway_metrics_from_the_python_sdk_come_out_right() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_gateway_metrics.py");
    let output = Command::new(common::python()).arg(path).arg(&base).output().expect("run python");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let total =
        |name: &'static str, agg: &'static str, extra: Vec<(&'static str, &'static str)>| {
            let base = base.clone();
            async move {
                let mut query = vec![("name", name), ("since", "1h"), ("step", "1h"), ("agg", agg)];
                query.extend(extra);
                let answer = get_ok(&base, "/api/v1/metrics/query", &query).await;
                let groups = answer["groups"].as_array().unwrap_or_else(|| panic!("{answer}"));
                // Sum each group's hour points (a run may straddle an hour).
                groups
                    .iter()
                    .flat_map(|g| g["points"].as_array().unwrap().iter())
                    .map(|p| p["value"].as_f64().unwrap())
                    .sum::<f64>()
            }
        };
    // Cycles of 10 and 20: counters add up to what was recorded, not to
    // the cumulative values summed.
    assert_eq!(total("request_total", "sum", vec![]).await, 30.0 + 3.0);
    assert_eq!(total("request_total", "sum", vec![("filter", "status:error")]).await, 3.0);
    assert_eq!(total("concurrency_slot_release_total", "sum", vec![]).await, 30.0);
    assert_eq!(total("model_alias_resolution_total", "sum", vec![]).await, 30.0);
    assert_eq!(total("model_alias_conflict_total", "sum", vec![]).await, 2.0);
    // Histograms: exact count and sum of the observations.
    assert_eq!(total("streaming_request_duration_seconds", "count", vec![]).await, 30.0);
    let streaming_sum =
        (0..10).map(|i| 2.0 + i as f64).sum::<f64>() + (0..20).map(|i| 2.0 + i as f64).sum::<f64>();
    assert_eq!(total("streaming_request_duration_seconds", "sum", vec![]).await, streaming_sum);
    assert_eq!(total("concurrency_slot_duration_seconds", "count", vec![]).await, 30.0);
    assert_eq!(total("model_alias_resolution_duration_seconds", "count", vec![]).await, 30.0);
    let tokens = (0..10).map(|i| 100.0 + i as f64).sum::<f64>()
        + (0..20).map(|i| 100.0 + i as f64).sum::<f64>();
    assert_eq!(
        total("gen_ai.client.token.usage", "sum", vec![("filter", "gen_ai.token.type:input")])
            .await,
        tokens
    );
    assert_eq!(total("gen_ai.client.operation.duration", "count", vec![]).await, 30.0);
    // Gauges (the up-down counter is not monotonic): the last value.
    assert_eq!(total("health_open_circuits", "last", vec![]).await, 2.0);
    assert_eq!(total("concurrency_slots_in_use", "last", vec![]).await, 9.0);
    // Resource service and data-point attributes are tags.
    let tags = get_ok(&base, "/api/v1/metrics/tags", &[("name", "request_total")]).await;
    assert_eq!(tags["tags"]["service"], serde_json::json!(["gateway"]));
    assert_eq!(tags["tags"]["type"], serde_json::json!(["non-streaming", "streaming"]));
}
