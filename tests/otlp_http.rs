//! OTLP/HTTP against a real server: protobuf and JSON, gzip, partial
//! success, bad bodies, and what arrives in the trace API and the ledger —
//! each LLM call counted once however often it is sent or reported.

mod common;

use common::{TestServer, client, get_ok, gzip, now_ms, summary};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};

const MS: u64 = 1_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: start_ms * MS,
        end_time_unix_nano: end_ms * MS,
        ..Span::default()
    }
}

/// An agent run: root agent span (0–1000 ms), an LLM call (100–600 ms), a
/// tool span (500–900 ms, overlapping it, failed).
fn agent_run(trace: u8, t0: u64, response_id: &str) -> Vec<Span> {
    let mut root = span(trace, 1, None, "invoke_agent support", t0, t0 + 1000);
    root.attributes = vec![
        text("gen_ai.operation.name", "invoke_agent"),
        text("gen_ai.conversation.id", "conv-1"),
        text("user.id", "alice"),
    ];
    let mut llm = span(trace, 2, Some(1), "chat gpt-4o", t0 + 100, t0 + 600);
    llm.attributes = vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.provider.name", "openai"),
        text("gen_ai.request.model", "gpt-4o"),
        text("gen_ai.response.id", response_id),
        int("gen_ai.usage.input_tokens", 1000),
        int("gen_ai.usage.cache_read.input_tokens", 400),
        int("gen_ai.usage.output_tokens", 200),
        text("user.id", "alice"),
    ];
    let mut tool = span(trace, 3, Some(1), "execute_tool search", t0 + 500, t0 + 900);
    tool.attributes = vec![text("gen_ai.tool.name", "search")];
    tool.status = Some(Status { code: 2, message: "timeout".into() });
    vec![root, llm, tool]
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "support-agent")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

struct Posted {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

async fn post(base: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Posted {
    let mut request = client().post(format!("{base}{path}")).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("POST");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    Posted {
        status: response.status().as_u16(),
        content_type,
        retry_after,
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn post_proto(base: &str, request: &ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let posted = post(
        base,
        "/v1/traces",
        request.encode_to_vec(),
        &[("content-type", "application/x-protobuf")],
    )
    .await;
    assert_eq!(posted.status, 200, "{}", String::from_utf8_lossy(&posted.body));
    assert_eq!(posted.content_type, "application/x-protobuf");
    ExportTraceServiceResponse::decode(&posted.body[..]).expect("protobuf response")
}

async fn post_json(base: &str, body: &Value, gzipped: bool) -> Value {
    let bytes = serde_json::to_vec(body).unwrap();
    let (bytes, headers): (Vec<u8>, &[(&str, &str)]) = if gzipped {
        (gzip(&bytes), &[("content-type", "application/json"), ("content-encoding", "gzip")])
    } else {
        (bytes, &[("content-type", "application/json")])
    };
    let posted = post(base, "/v1/traces", bytes, headers).await;
    assert_eq!(posted.status, 200, "{}", String::from_utf8_lossy(&posted.body));
    assert_eq!(posted.content_type, "application/json");
    serde_json::from_slice(&posted.body).expect("JSON response")
}

/// The same agent run in OTLP/JSON (hex ids, lowerCamelCase, string int64s).
fn agent_run_json(trace: &str, t0: u64, response_id: &str) -> Value {
    let ns = |ms: u64| (ms * MS).to_string();
    let attr = |k: &str, v: Value| json!({"key": k, "value": v});
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", json!({"stringValue": "support-agent"}))]},
        "scopeSpans": [{"spans": [
            {"traceId": trace, "spanId": "1111111111111111", "name": "invoke_agent support",
             "kind": 1, "startTimeUnixNano": ns(t0), "endTimeUnixNano": ns(t0 + 1000),
             "attributes": [attr("gen_ai.operation.name", json!({"stringValue": "invoke_agent"}))]},
            {"traceId": trace, "spanId": "2222222222222222", "parentSpanId": "1111111111111111",
             "name": "chat gpt-4o", "startTimeUnixNano": ns(t0 + 100), "endTimeUnixNano": ns(t0 + 600),
             "attributes": [
                attr("gen_ai.operation.name", json!({"stringValue": "chat"})),
                attr("gen_ai.request.model", json!({"stringValue": "gpt-4o"})),
                attr("gen_ai.response.id", json!({"stringValue": response_id})),
                attr("gen_ai.usage.input_tokens", json!({"intValue": "1000"})),
                attr("gen_ai.usage.cache_read.input_tokens", json!({"intValue": 400})),
                attr("gen_ai.usage.output_tokens", json!({"intValue": "200"})),
             ]},
        ]}],
    }]})
}

fn find<'a>(node: &'a Value, span_id: &str) -> Option<&'a Value> {
    if node["span_id"] == span_id {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|child| find(child, span_id))
}

#[tokio::test]
async fn spans_become_trace_trees_and_calls_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let t0 = now_ms() as u64 - 60_000;

    // Protobuf, then the same spans again (an exporter retry).
    let response = post_proto(base, &request(agent_run(0xaa, t0, "chatcmpl-a"))).await;
    assert_eq!(response.partial_success, None);
    post_proto(base, &request(agent_run(0xaa, t0, "chatcmpl-a"))).await;
    // JSON, gzipped.
    let trace_b = "bb".repeat(16);
    let response = post_json(base, &agent_run_json(&trace_b, t0 + 5_000, "chatcmpl-b"), true).await;
    assert_eq!(response, json!({}), "no partial success");

    // The ledger holds each LLM call once: 2 calls, 1000 input tokens each.
    let usage = summary(base, &[("since", "1h"), ("group_by", "model")]).await;
    assert_eq!(usage["total"]["requests"], 2, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 2000);
    assert_eq!(usage["total"]["cache_read_tokens"], 800);
    assert_eq!(usage["total"]["output_tokens"], 400);
    let cost = usage["total"]["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);

    // A gateway's usage report for the same calls counts nothing more:
    // one by the response id, one by the span it carries.
    let reply = common::post_usage(
        base,
        &json!([
            {"id": "chatcmpl-a", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200},
            {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200,
             "trace_id": trace_b, "span_id": "2222222222222222"},
        ]),
    )
    .await;
    assert_eq!(reply.json["duplicates"], 2, "{}", reply.text);
    let records = common::all_records(base, &[("since", "1h")], 100).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["source"] == "span"));

    // Trace list: newest first, with totals.
    let list = get_ok(base, "/api/v1/traces", &[("since", "1h")]).await;
    let traces = list["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2, "{list}");
    assert_eq!(traces[0]["trace_id"], trace_b);
    let a = &traces[1];
    assert_eq!(a["trace_id"], "aa".repeat(16));
    assert_eq!(a["root_name"], "invoke_agent support");
    assert_eq!(a["service"], "support-agent");
    assert_eq!(a["duration_ms"], 1000.0);
    assert_eq!((a["span_count"].as_u64(), a["error_count"].as_u64()), (Some(3), Some(1)));
    assert_eq!((a["llm_calls"].as_u64(), a["input_tokens"].as_u64()), (Some(1), Some(1000)));
    assert_eq!((a["user"].as_str(), a["session"].as_str()), (Some("alice"), Some("conv-1")));

    // Filters.
    let ids = |list: Value| -> Vec<String> {
        list["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let only_a = vec!["aa".repeat(16)];
    assert_eq!(
        ids(get_ok(base, "/api/v1/traces", &[("since", "1h"), ("status", "error")]).await),
        only_a
    );
    assert_eq!(
        ids(get_ok(base, "/api/v1/traces", &[("since", "1h"), ("kind", "tool")]).await),
        only_a
    );
    assert_eq!(
        ids(get_ok(base, "/api/v1/traces", &[("since", "1h"), ("user", "alice")]).await),
        only_a
    );
    assert_eq!(
        ids(get_ok(
            base,
            "/api/v1/traces",
            &[("since", "1h"), ("attr.gen_ai.tool.name", "search")]
        )
        .await),
        only_a
    );
    assert_eq!(
        ids(get_ok(base, "/api/v1/traces", &[("since", "1h"), ("model", "gpt-4o")]).await).len(),
        2
    );
    assert_eq!(
        ids(get_ok(base, "/api/v1/traces", &[("since", "1h"), ("min_duration_ms", "1001")]).await)
            .len(),
        0
    );
    let page = get_ok(base, "/api/v1/traces", &[("since", "1h"), ("limit", "1")]).await;
    assert_eq!(ids(page.clone()), vec![trace_b.clone()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next =
        get_ok(base, "/api/v1/traces", &[("since", "1h"), ("limit", "1"), ("cursor", cursor)])
            .await;
    assert_eq!(ids(next), only_a);
    let bad = common::get(base, "/api/v1/traces", &[("kind", "robot")]).await;
    bad.assert_error(400, Some("bad_request"));

    // The tree: offsets, self time (the tool overlaps the LLM call: the
    // root's children cover 100–900 ms, so 200 ms of its own), subtotals.
    let detail = get_ok(base, &format!("/api/v1/traces/{}", "aa".repeat(16)), &[]).await;
    let roots = detail["spans"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    let root = &roots[0];
    assert_eq!(root["kind"], "agent");
    assert_eq!(root["duration_ms"], 1000.0);
    assert_eq!(root["self_ms"], 200.0);
    assert_eq!(root["subtree"]["input_tokens"], 1000);
    assert_eq!(root["subtree"]["llm_calls"], 1);
    assert_eq!(root["children"].as_array().unwrap().len(), 2);
    let llm = find(root, &"02".repeat(8)).expect("llm span in the tree");
    assert_eq!((llm["kind"].as_str(), llm["model"].as_str()), (Some("llm"), Some("gpt-4o")));
    assert_eq!((llm["offset_ms"].as_f64(), llm["self_ms"].as_f64()), (Some(100.0), Some(500.0)));
    assert_eq!(
        (llm["input_tokens"].as_u64(), llm["cache_read_tokens"].as_u64()),
        (Some(1000), Some(400))
    );
    let tool = find(root, &"03".repeat(8)).unwrap();
    assert_eq!(tool["status"], "error");
    assert_eq!(detail["totals"]["spans"], 3);

    let missing = common::get(base, &format!("/api/v1/traces/{}", "cc".repeat(16)), &[]).await;
    missing.assert_error(404, Some("not_found"));
    common::get(base, "/api/v1/traces/xyz", &[]).await.assert_error(400, Some("bad_request"));

    // The dashboard summary and where time goes.
    let stats = get_ok(base, "/api/v1/traces/summary", &[("since", "1h")]).await;
    assert_eq!((stats["traces"].as_u64(), stats["error_traces"].as_u64()), (Some(2), Some(1)));
    assert_eq!(stats["error_rate"], 0.5);
    assert_eq!(stats["duration_ms"]["avg"], 1000.0);
    let p50 = stats["duration_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - 1000.0).abs() <= 10.0, "p50 within the sketch's 1 %: {p50}");
    assert!((stats["cost_usd"]["total"].as_f64().unwrap() - cost).abs() <= 1e-9 * cost);
    assert_eq!(stats["spans"], 5);
    assert_eq!(stats["span_kinds"][0], json!({"kind": "agent", "spans": 2, "share": 0.4}));
    let none =
        get_ok(base, "/api/v1/traces/summary", &[("since", "1h"), ("service", "other")]).await;
    assert_eq!(none["traces"], 0);
    let by_kind = get_ok(base, "/api/v1/traces/latency", &[("since", "1h"), ("by", "kind")]).await;
    let groups = by_kind["groups"].as_array().unwrap();
    assert_eq!(groups[0]["key"], "agent", "most total time first: {by_kind}");
    assert_eq!(
        (groups[0]["count"].as_u64(), groups[0]["total_ms"].as_f64()),
        (Some(2), Some(2000.0))
    );
    let llm_stage = groups.iter().find(|g| g["key"] == "llm").unwrap();
    assert_eq!((llm_stage["count"].as_u64(), llm_stage["avg_ms"].as_f64()), (Some(2), Some(500.0)));
    let tool_stage = groups.iter().find(|g| g["key"] == "tool").unwrap();
    assert_eq!(tool_stage["errors"], 1);
    let by_model =
        get_ok(base, "/api/v1/traces/latency", &[("since", "1h"), ("by", "model")]).await;
    assert_eq!(by_model["groups"].as_array().unwrap().len(), 1, "{by_model}");
    assert_eq!(by_model["groups"][0]["key"], "gpt-4o");
    let by_name = get_ok(base, "/api/v1/traces/latency", &[("since", "1h"), ("by", "name")]).await;
    assert_eq!(by_name["groups"].as_array().unwrap().len(), 3);
    common::get(base, "/api/v1/traces/latency", &[("by", "colour")]).await.assert_error(400, None);

    // Sessions.
    let sessions = get_ok(base, "/api/v1/sessions", &[("since", "1h")]).await;
    assert_eq!(sessions["sessions"][0]["session"], "conv-1", "{sessions}");
    assert_eq!(sessions["sessions"][0]["traces"], 1);
    let session = get_ok(base, "/api/v1/sessions/conv-1", &[]).await;
    assert_eq!(session["traces"][0]["trace_id"], "aa".repeat(16));
    assert_eq!(session["totals"]["input_tokens"], 1000);
    common::get(base, "/api/v1/sessions/nope", &[]).await.assert_error(404, None);
}

#[tokio::test]
async fn an_orphan_is_a_root_until_its_parent_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let t0 = now_ms() as u64 - 1_000;
    let orphan = span(0xdd, 7, Some(9), "late child", t0, t0 + 10);
    let child = span(0xdd, 8, Some(7), "grandchild", t0 + 2, t0 + 4);
    post_proto(base, &request(vec![orphan, child])).await;
    let detail = get_ok(base, &format!("/api/v1/traces/{}", "dd".repeat(16)), &[]).await;
    let roots = detail["spans"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0]["name"], "late child");
    assert_eq!(roots[0]["parent_span_id"], "09".repeat(8));
    assert_eq!(roots[0]["children"][0]["name"], "grandchild");
    let list = get_ok(base, "/api/v1/traces", &[("since", "1h")]).await;
    assert_eq!(list["traces"][0]["root_name"], "late child");

    // The parent arrives late, in another request: the tree is whole.
    post_proto(base, &request(vec![span(0xdd, 9, None, "the real root", t0 - 5, t0 + 20)])).await;
    let detail = get_ok(base, &format!("/api/v1/traces/{}", "dd".repeat(16)), &[]).await;
    let roots = detail["spans"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{detail}");
    assert_eq!(roots[0]["name"], "the real root");
    assert_eq!(roots[0]["children"][0]["children"][0]["name"], "grandchild");
    assert_eq!(roots[0]["subtree"]["spans"], 3);
    let list = get_ok(base, "/api/v1/traces", &[("since", "1h")]).await;
    assert_eq!(list["traces"][0]["root_name"], "the real root");
    assert_eq!(list["traces"][0]["duration_ms"], 25.0);
}

#[tokio::test]
async fn invalid_spans_are_rejected_by_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let t0 = now_ms() as u64 - 1_000;
    let good = span(0xee, 1, None, "good", t0, t0 + 5);
    let mut short_trace = span(0xee, 2, None, "short trace id", t0, t0 + 5);
    short_trace.trace_id = vec![1; 8];
    let mut zero_span = span(0xee, 3, None, "zero span id", t0, t0 + 5);
    zero_span.span_id = vec![0; 8];
    let backwards = span(0xee, 4, None, "ends before it starts", t0 + 5, t0);
    let response = post_proto(base, &request(vec![short_trace, good, zero_span, backwards])).await;
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    for expected in ["span 0 (trace_id)", "span 2 (span_id)", "span 3 (end_time_unix_nano)"] {
        assert!(partial.error_message.contains(expected), "{}", partial.error_message);
    }
    let list = get_ok(base, "/api/v1/traces", &[("since", "1h")]).await;
    assert_eq!(list["traces"][0]["span_count"], 1, "the valid span is kept");

    // The same over JSON: camelCase fields in the answer.
    let json_body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "abcd", "spanId": "1111111111111111", "name": "x",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]});
    let answer = post_json(base, &json_body, false).await;
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], json!(1), "{answer}");
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_in_the_request_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_BODY_BYTES", "65536")]);
    let base = server.url();

    let posted =
        post(base, "/v1/traces", b"hello".to_vec(), &[("content-type", "text/plain")]).await;
    assert_eq!(posted.status, 415);

    // Undecodable protobuf: a google.rpc.Status in protobuf.
    let posted = post(
        base,
        "/v1/traces",
        vec![0xff, 0xff, 0xff, 0xff],
        &[("content-type", "application/x-protobuf")],
    )
    .await;
    assert_eq!(posted.status, 400);
    assert_eq!(posted.content_type, "application/x-protobuf");
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = RpcStatus::decode(&posted.body[..]).expect("a Status message");
    assert_eq!(status.code, 3);
    assert!(status.message.contains("ExportTraceServiceRequest"), "{}", status.message);

    // Malformed JSON: a Status in JSON, saying where.
    let posted = post(
        base,
        "/v1/traces",
        b"{\"resourceSpans\": [".to_vec(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(posted.status, 400);
    let body: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(body["code"], 3);
    assert!(body["message"].as_str().unwrap().contains("line 1"), "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    // snake_case keys would decode to an empty request: refused.
    let snake = json!({"resource_spans": [{"scope_spans": [{"spans": [{"trace_id": "ab"}]}]}]});
    let posted = post(
        base,
        "/v1/traces",
        serde_json::to_vec(&snake).unwrap(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(posted.status, 400);
    let body: Value = serde_json::from_slice(&posted.body).unwrap();
    assert!(body["message"].as_str().unwrap().contains("lowerCamelCase"), "{body}");

    // Over the limit, plain or as a gzip bomb.
    let big = request(
        (0..2_000u32)
            .map(|i| span(0x11, (i % 250) as u8 + 1, None, &"n".repeat(64), 1, 2))
            .collect(),
    )
    .encode_to_vec();
    assert!(big.len() > 65_536);
    let posted =
        post(base, "/v1/traces", big.clone(), &[("content-type", "application/x-protobuf")]).await;
    assert_eq!(posted.status, 413);
    let posted = post(
        base,
        "/v1/traces",
        gzip(&big),
        &[("content-type", "application/x-protobuf"), ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(posted.status, 413);
    assert!(posted.retry_after.is_none());

    // Nothing was stored by any of these.
    let list = get_ok(base, "/api/v1/traces", &[("since", "30d")]).await;
    assert_eq!(list["traces"], json!([]));
}

#[tokio::test]
async fn logs_are_linked_to_their_trace_and_langfuse_auth_names_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let t0 = now_ms() as u64 - 1_000;
    let trace = "ab".repeat(16);

    // Spans via the Langfuse path with Basic auth: the public key is the project.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(b"pk-lf-123:sk-lf-456");
    let basic = format!("Basic {encoded}");
    let body = request(vec![span(0xab, 1, None, "root", t0, t0 + 50)]).encode_to_vec();
    let posted = post(
        base,
        "/api/public/otel/v1/traces",
        body,
        &[("content-type", "application/x-protobuf"), ("authorization", &basic)],
    )
    .await;
    assert_eq!(posted.status, 200);
    let logs = json!({"resourceLogs": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
    "scopeLogs": [{"logRecords": [
        {"timeUnixNano": ((t0 + 10) * MS).to_string(), "severityNumber": 9, "severityText": "INFO",
         "body": {"stringValue": "retrieved 3 documents"}, "traceId": trace, "spanId": "0101010101010101"},
        {"timeUnixNano": ((t0 + 20) * MS).to_string(), "body": {"stringValue": "bad"}, "traceId": "abcd"},
    ]}]}]});
    let posted = post(
        base,
        "/v1/logs",
        serde_json::to_vec(&logs).unwrap(),
        &[("content-type", "application/json"), ("x-langfuse-public-key", "pk-lf-123")],
    )
    .await;
    assert_eq!(posted.status, 200);
    let answer: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], json!(1), "{answer}");

    assert!(
        get_ok(base, "/api/v1/traces", &[("since", "1h")]).await["traces"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let detail =
        get_ok(base, &format!("/api/v1/traces/{trace}"), &[("project", "pk-lf-123")]).await;
    assert_eq!(detail["spans"][0]["name"], "root");
    assert_eq!(detail["logs"].as_array().unwrap().len(), 1);
    assert_eq!(detail["logs"][0]["body"], "retrieved 3 documents");
    assert_eq!(detail["logs"][0]["offset_ms"], 10.0);

    // The log search.
    let project = ("project", "pk-lf-123");
    let logs = |query: Vec<(&'static str, String)>| {
        let mut query = query;
        query.push(("project", project.1.to_owned()));
        query.push(("since", "1h".to_owned()));
        async move {
            let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            get_ok(base, "/api/v1/logs", &pairs).await["logs"].as_array().unwrap().len()
        }
    };
    assert_eq!(logs(vec![]).await, 1);
    assert_eq!(logs(vec![("q", "3 DOCUMENTS".into())]).await, 1);
    assert_eq!(logs(vec![("q", "nothing like it".into())]).await, 0);
    assert_eq!(logs(vec![("severity", "info".into())]).await, 1);
    assert_eq!(logs(vec![("severity", "error".into())]).await, 0);
    assert_eq!(logs(vec![("trace_id", trace.clone())]).await, 1);
    assert_eq!(logs(vec![("trace_id", "cd".repeat(16))]).await, 0);
    common::get(base, "/api/v1/logs", &[("severity", "loud")]).await.assert_error(400, None);
}

/// Sends `batches` exports of 100 three-span traces from `clients` clients;
/// returns (exports accepted, exports refused). Every refusal must be a
/// retryable answer: 429 with Retry-After and a Status saying so.
async fn flood(base: &str, clients: u8, batches: u8) -> (u64, u64) {
    let t0 = now_ms() as u64 - 60_000;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (0, 0);
            for batch in 0..batches {
                let spans: Vec<Span> = (0..100u8)
                    .flat_map(|i| {
                        let mut spans = agent_run(0, t0, &format!("chatcmpl-{client}-{batch}-{i}"));
                        for span in &mut spans {
                            span.trace_id =
                                vec![client, batch, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
                        }
                        spans
                    })
                    .collect();
                let body = request(spans).encode_to_vec();
                let posted =
                    post(&base, "/v1/traces", body, &[("content-type", "application/x-protobuf")])
                        .await;
                match posted.status {
                    200 => accepted += 1,
                    429 => {
                        assert!(posted.retry_after.is_some(), "Retry-After on 429");
                        assert_eq!(posted.content_type, "application/x-protobuf");
                        refused += 1;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for task in tasks {
        let (a, r) = task.await.unwrap();
        accepted += a;
        refused += r;
    }
    (accepted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_with_retry_after_and_what_was_acknowledged_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_QUEUED_RECORDS", "600")]);
    let base = server.url();
    let (accepted, refused) = flood(base, 16, 4).await;
    assert!(
        refused > 0,
        "64 exports of 400 records against a queue of 600 must be refused at times"
    );
    assert!(accepted > 0);
    let stats = get_ok(base, "/api/v1/traces/summary", &[("since", "1h")]).await;
    assert_eq!(stats["traces"].as_u64(), Some(accepted * 100), "every acknowledged trace, once");
    let usage = summary(base, &[("since", "1h")]).await;
    assert_eq!(usage["total"]["requests"].as_u64(), Some(accepted * 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_overload_is_resource_exhausted() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_INGEST__MAX_CONCURRENT_REQUESTS", "1")]);
    let endpoint = server.grpc_url().to_owned();
    let t0 = now_ms() as u64 - 60_000;
    let mut tasks = Vec::new();
    for client in 0..16u8 {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut grpc = TraceServiceClient::connect(endpoint).await.expect("connect");
            let (mut accepted, mut exhausted) = (0u64, 0u64);
            for batch in 0..4u8 {
                // Trace ids: never all zeros (client 0, batch 0).
                let mut spans = agent_run(client + 1, t0, &format!("g-{client}-{batch}"));
                for span in &mut spans {
                    span.trace_id[0] = batch;
                }
                match grpc.export(request(spans)).await {
                    Ok(response) => {
                        assert_eq!(response.into_inner().partial_success, None);
                        accepted += 1;
                    }
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                        exhausted += 1;
                    }
                }
            }
            (accepted, exhausted)
        }));
    }
    let (mut accepted, mut exhausted) = (0, 0);
    for task in tasks {
        let (a, e) = task.await.unwrap();
        accepted += a;
        exhausted += e;
    }
    assert!(accepted > 0);
    assert!(exhausted > 0, "16 clients against 1 request in flight must be refused at times");
    let stats = get_ok(server.url(), "/api/v1/traces/summary", &[("since", "1h")]).await;
    assert_eq!(stats["traces"].as_u64(), Some(accepted));
}

#[tokio::test]
async fn otlp_metrics_over_json_and_grpc() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::metrics::v1::{
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    let now_ns = (now_ms() as u64 - 5_000) * MS;

    // OTLP/JSON: a gauge, and a metric whose name is invalid.
    let body = json!({"resourceMetrics": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
    "scopeMetrics": [{"metrics": [
        {"name": "queue_size", "gauge": {"dataPoints": [
            {"asInt": "7", "timeUnixNano": now_ns.to_string(),
             "attributes": [{"key": "queue", "value": {"stringValue": "embed"}}]}]}},
        {"name": "9lives", "gauge": {"dataPoints": [{"asDouble": 1.0, "timeUnixNano": now_ns.to_string()}]}},
    ]}]}]});
    let posted = post(
        base,
        "/v1/metrics",
        serde_json::to_vec(&body).unwrap(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(posted.status, 200);
    let answer: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedDataPoints"], json!(1), "{answer}");
    assert!(answer["partialSuccess"]["errorMessage"].as_str().unwrap().contains("9lives"));
    let gauge = get_ok(
        base,
        "/api/v1/metrics/query",
        &[
            ("name", "queue_size"),
            ("since", "1h"),
            ("step", "1h"),
            ("agg", "last"),
            ("group_by", "service"),
        ],
    )
    .await;
    assert_eq!(gauge["groups"][0]["key"], json!({"service": "worker"}));
    assert_eq!(gauge["groups"][0]["points"][0]["value"], 7.0);

    // gRPC: a delta counter sent twice counts both.
    let mut grpc = MetricsServiceClient::connect(server.grpc_url().to_owned()).await.unwrap();
    for value in [3, 4] {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "jobs_total".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: now_ns,
                                value: Some(number_data_point::Value::AsInt(value)),
                                ..NumberDataPoint::default()
                            }],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        let response = grpc.export(request).await.unwrap().into_inner();
        assert_eq!(response.partial_success, None);
    }
    let jobs = get_ok(
        base,
        "/api/v1/metrics/query",
        &[("name", "jobs_total"), ("since", "1h"), ("step", "1h"), ("agg", "sum")],
    )
    .await;
    assert_eq!(jobs["groups"][0]["points"][0]["value"], 7.0);
}

/// Regression: samples of a cumulative series left the shared state while
/// their commit was pending, so a concurrent export of the same series took
/// its delta from an older sample and counted an increase twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cumulative_exports_count_the_true_increase() {
    const EXPORTS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url().to_owned();
    // The series starts after the server, so it counts from zero: the true
    // increase is the last value.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let start_ns = now_ms() as u64 * MS;
    let export = |i: u64| {
        json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "tokens_total", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
             "dataPoints": [{"asInt": (10 * i).to_string(),
                             "startTimeUnixNano": start_ns.to_string(),
                             "timeUnixNano": (start_ns + i * 1_000 * MS).to_string(),
                             "attributes": [{"key": "model", "value": {"stringValue": "gpt-4o"}}]}]}}
        ]}]}]})
    };
    let mut rounds = Vec::new();
    for round in 0..3u64 {
        // Each round's exports go out at once, in no particular order.
        let sends: Vec<_> = (1..=EXPORTS / 3)
            .map(|n| {
                let (base, body) = (base.clone(), export(round * EXPORTS / 3 + n));
                tokio::spawn(async move {
                    let bytes = serde_json::to_vec(&body).unwrap();
                    post(&base, "/v1/metrics", bytes, &[("content-type", "application/json")])
                        .await
                        .status
                })
            })
            .collect();
        for send in sends {
            rounds.push(send.await.unwrap());
        }
    }
    assert!(rounds.iter().all(|status| *status == 200), "{rounds:?}");
    // The points lie up to a minute ahead of now: a window ending at now
    // would miss those past an hour boundary, so it is named around them.
    let start_ms = start_ns / MS;
    let (from, to) = ((start_ms - 3_600_000).to_string(), (start_ms + 3_600_000).to_string());
    let total = get_ok(
        &base,
        "/api/v1/metrics/query",
        &[("name", "tokens_total"), ("from", &from), ("to", &to), ("step", "1h"), ("agg", "sum")],
    )
    .await;
    let stored: f64 = total["groups"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .sum();
    assert_eq!(stored, (10 * EXPORTS) as f64, "{total}");
}
