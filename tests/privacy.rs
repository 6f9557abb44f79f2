//! Content privacy against a real server: with `privacy.store_content =
//! false`, prompt and completion text sent through every convention Tally
//! reads (OpenTelemetry GenAI over gRPC, OpenLLMetry's legacy indexed
//! attributes over OTLP/HTTP protobuf, OpenInference and Traceloop over
//! OTLP/JSON, the real Langfuse SDK on its own endpoint, GenAI event logs
//! over HTTP and gRPC) is in no byte of the data dir after a clean stop,
//! while the same run with the defaults leaves every text there (so the
//! scan can see them); token counts and cost are kept either way.
//! `privacy.redact` masks an email in a stored attribute, a JSON message and
//! a log body, and projects override the global settings. The Langfuse run
//! needs tests/python/requirements.txt in `.venv` (scripts/test installs it).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    TestServer, assert_cost, catalog_price, client, expected_cost, get_ok, now_ms, summary, tokens,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
use prost::Message;
use serde_json::{Value, json};

const MS: u64 = 1_000_000;
/// An email in a plain attribute, in a GenAI message and in a log body.
const EMAIL: &str = "zora.quillfeather@vexmail.example";
const EMAIL_PATTERN: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}";

fn string(text: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(text.to_owned())) }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(string(value)), ..KeyValue::default() }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..KeyValue::default()
    }
}

/// Length of each text sent.
const TEXT_LEN: usize = 32;
/// The scan looks for every piece of a text this long: the store's pages
/// and WAL frames have headers that can cut a text in two, but a cut leaves
/// at least one side of 16 letters whole.
const PIECE_LEN: usize = 8;

/// Texts that stay readable in the store's LZ4-compressed span bodies: 32
/// capital letters each, no four of them in a row shared with another text
/// or repeated within one, so the compressor finds nothing to refer back
/// to and keeps them as literals.
struct Texts {
    taken: HashSet<[u8; 4]>,
    seed: u64,
    all: Vec<(String, String)>,
}

impl Texts {
    fn new(seed: u64) -> Texts {
        Texts { taken: HashSet::new(), seed, all: Vec::new() }
    }

    /// A new text for `what` (named in failures).
    fn make(&mut self, what: &str) -> String {
        loop {
            let mut letters = Vec::with_capacity(TEXT_LEN);
            while letters.len() < TEXT_LEN {
                // splitmix64
                self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                letters.push(b'A' + ((z ^ (z >> 31)) % 26) as u8);
            }
            let grams: Vec<[u8; 4]> =
                letters.windows(4).map(|w| w.try_into().expect("4 bytes")).collect();
            let unique: HashSet<_> = grams.iter().collect();
            if unique.len() != grams.len() || grams.iter().any(|g| self.taken.contains(g)) {
                continue;
            }
            self.taken.extend(grams);
            let text = String::from_utf8(letters).expect("ASCII");
            self.all.push((what.to_owned(), text.clone()));
            return text;
        }
    }
}

fn resource(project: &str, service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", service), text("tally.project", project)],
        ..Resource::default()
    })
}

fn trace_request(project: &str, service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(project, service),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// A span of trace `trace` (16 bytes of it), 400 ms long, ending a minute
/// ago.
fn span(trace: u8, id: u8, name: &str, attributes: Vec<KeyValue>) -> Span {
    let end = now_ms() as u64 - 60_000;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: (end - 400) * MS,
        end_time_unix_nano: end * MS,
        attributes,
        ..Span::default()
    }
}

async fn post(url: String, content_type: &str, body: Vec<u8>) {
    let response = client()
        .post(&url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let answer = response.bytes().await.unwrap();
    assert_eq!(status, 200, "POST {url}: {}", String::from_utf8_lossy(&answer));
    // A partial success would name rejected records.
    if content_type == "application/json" {
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer.get("partialSuccess"), None, "{answer}");
    }
}

/// The Langfuse SDK's run; returns its trace id.
fn langfuse(base: &str, public_key: &str, prompt: &str, completion: &str) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_langfuse_content.py");
    let output = Command::new(common::python())
        .arg(script)
        .args([base, public_key, prompt, completion])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "emit_langfuse_content.py failed:\n{stdout}\n{stderr}");
    let trace_id = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert_eq!(trace_id.len(), 32, "no trace id printed:\n{stdout}\n{stderr}");
    trace_id
}

/// What one run sent: the texts (by convention) and where to find it.
struct Sent {
    texts: Vec<(String, String)>,
    genai_trace: String,
    langfuse_trace: String,
}

/// LLM calls of one run: GenAI, legacy GenAI, OpenInference, Langfuse and
/// Traceloop, each on gpt-4o.
const INPUT_TOKENS: u64 = 1000 + 300 + 500 + 400 + 200;
const OUTPUT_TOKENS: u64 = 200 + 50 + 80 + 60 + 20;

/// Sends a prompt and a completion through every convention into
/// `project`, with `trace_base` keeping its trace ids apart from other
/// runs'. Over gRPC, OTLP/HTTP protobuf and JSON, and the Langfuse SDK.
async fn send_every_convention(server: &TestServer, project: &str, trace_base: u8) -> Sent {
    let mut texts = Texts::new(u64::from(trace_base));
    let base = server.url().to_owned();
    let grpc = server.grpc_url().to_owned();

    // OpenTelemetry GenAI (current): messages as JSON, over gRPC, with a
    // message event on the span.
    let prompt = texts.make("GenAI gen_ai.input.messages");
    let completion = texts.make("GenAI gen_ai.output.messages");
    let system = texts.make("GenAI gen_ai.system_instructions");
    let event = texts.make("GenAI gen_ai.user.message span event");
    let mut genai = span(
        trace_base,
        1,
        "chat gpt-4o",
        vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", "gpt-4o"),
            int("gen_ai.usage.input_tokens", 1000),
            int("gen_ai.usage.output_tokens", 200),
            text(
                "gen_ai.input.messages",
                &json!([{"role": "user", "parts": [{"type": "text",
                         "content": format!("{prompt}, reply to {EMAIL}")}]}])
                .to_string(),
            ),
            text(
                "gen_ai.output.messages",
                &json!([{"role": "assistant", "parts": [{"type": "text", "content": completion}],
                         "finish_reason": "stop"}])
                .to_string(),
            ),
            text(
                "gen_ai.system_instructions",
                &json!([{"type": "text", "content": system}]).to_string(),
            ),
            text("app.customer", &format!("contact {EMAIL} today")),
        ],
    );
    genai.events = vec![Event {
        time_unix_nano: genai.start_time_unix_nano + 10 * MS,
        name: "gen_ai.user.message".into(),
        attributes: vec![text("content", &event), text("role", "user")],
        ..Event::default()
    }];
    let genai_trace = hex(&genai.trace_id);
    let mut traces = TraceServiceClient::connect(grpc.clone()).await.expect("connect gRPC");
    let answer =
        traces.export(trace_request(project, "genai-app", vec![genai])).await.expect("export");
    assert_eq!(answer.into_inner().partial_success, None);

    // OpenLLMetry's legacy indexed attributes, over OTLP/HTTP protobuf, and
    // its prompt event.
    let prompt = texts.make("legacy gen_ai.prompt.0.content");
    let completion = texts.make("legacy gen_ai.completion.0.content");
    let event = texts.make("legacy gen_ai.content.prompt event");
    let mut legacy = span(
        trace_base + 1,
        1,
        "openai.chat",
        vec![
            text("llm.request.type", "chat"),
            text("gen_ai.system", "openai"),
            text("gen_ai.request.model", "gpt-4o"),
            int("gen_ai.usage.prompt_tokens", 300),
            int("gen_ai.usage.completion_tokens", 50),
            text("gen_ai.prompt.0.role", "user"),
            text("gen_ai.prompt.0.content", &prompt),
            text("gen_ai.completion.0.role", "assistant"),
            text("gen_ai.completion.0.content", &completion),
        ],
    );
    legacy.events = vec![Event {
        time_unix_nano: legacy.start_time_unix_nano,
        name: "gen_ai.content.prompt".into(),
        attributes: vec![text("gen_ai.prompt", &event)],
        ..Event::default()
    }];
    let request = trace_request(project, "legacy-app", vec![legacy]);
    post(format!("{base}/v1/traces"), "application/x-protobuf", request.encode_to_vec()).await;

    // OpenInference, over OTLP/JSON.
    let prompt = texts.make("OpenInference llm.input_messages");
    let completion = texts.make("OpenInference llm.output_messages");
    let input = texts.make("OpenInference input.value");
    let output = texts.make("OpenInference output.value");
    let openinference = span(
        trace_base + 2,
        1,
        "ChatCompletion",
        vec![
            text("openinference.span.kind", "LLM"),
            text("llm.system", "openai"),
            text("llm.model_name", "gpt-4o"),
            int("llm.token_count.prompt", 500),
            int("llm.token_count.completion", 80),
            text("llm.input_messages.0.message.role", "user"),
            text("llm.input_messages.0.message.content", &prompt),
            text("llm.output_messages.0.message.role", "assistant"),
            text("llm.output_messages.0.message.content", &completion),
            text("input.value", &json!({"messages": [{"content": input}]}).to_string()),
            text("input.mime_type", "application/json"),
            text("output.value", &output),
        ],
    );
    let request = trace_request(project, "openinference-app", vec![openinference]);
    post(format!("{base}/v1/traces"), "application/json", serde_json::to_vec(&request).unwrap())
        .await;

    // Traceloop: a workflow span with the entity's input and output, and
    // the LLM call inside it, over OTLP/JSON.
    let input = texts.make("Traceloop traceloop.entity.input");
    let output = texts.make("Traceloop traceloop.entity.output");
    let workflow = span(
        trace_base + 3,
        1,
        "answer.workflow",
        vec![
            text("traceloop.span.kind", "workflow"),
            text("traceloop.entity.name", "answer"),
            text(
                "traceloop.entity.input",
                &json!({"inputs": {"question": input}, "args": [], "kwargs": {}}).to_string(),
            ),
            text("traceloop.entity.output", &json!({"outputs": output}).to_string()),
        ],
    );
    let mut call = span(
        trace_base + 3,
        2,
        "openai.chat",
        vec![
            text("llm.request.type", "chat"),
            text("gen_ai.system", "openai"),
            text("gen_ai.request.model", "gpt-4o"),
            int("gen_ai.usage.input_tokens", 200),
            int("gen_ai.usage.output_tokens", 20),
        ],
    );
    call.parent_span_id = vec![1; 8];
    let request = trace_request(project, "traceloop-app", vec![workflow, call]);
    post(format!("{base}/v1/traces"), "application/json", serde_json::to_vec(&request).unwrap())
        .await;

    // GenAI events as log records: a user message over OTLP/JSON (body a
    // map, as the SDKs send it, with the email), the model's choice over
    // gRPC (the event name in its own field).
    let prompt = texts.make("GenAI gen_ai.user.message log body");
    let completion = texts.make("GenAI gen_ai.choice log body");
    let time = (now_ms() as u64 - 60_000) * MS;
    let message = LogRecord {
        time_unix_nano: time,
        attributes: vec![
            text("event.name", "gen_ai.user.message"),
            text("gen_ai.system", "openai"),
        ],
        body: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![text("content", &format!("{prompt}, write to {EMAIL}"))],
            })),
        }),
        trace_id: vec![trace_base; 16],
        span_id: vec![1; 8],
        ..LogRecord::default()
    };
    let choice = LogRecord {
        time_unix_nano: time + MS,
        event_name: "gen_ai.choice".into(),
        body: Some(string(&completion)),
        trace_id: vec![trace_base; 16],
        span_id: vec![1; 8],
        ..LogRecord::default()
    };
    let logs = |records: Vec<LogRecord>| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(project, "genai-app"),
            scope_logs: vec![ScopeLogs { log_records: records, ..ScopeLogs::default() }],
            ..ResourceLogs::default()
        }],
    };
    post(
        format!("{base}/v1/logs"),
        "application/json",
        serde_json::to_vec(&logs(vec![message])).unwrap(),
    )
    .await;
    let mut log_client = LogsServiceClient::connect(grpc).await.expect("connect gRPC");
    let answer = log_client.export(logs(vec![choice])).await.expect("export logs");
    assert_eq!(answer.into_inner().partial_success, None);

    // Langfuse, through its own SDK on its own endpoint: the public key
    // names the project.
    let prompt = texts.make("Langfuse langfuse.observation.input");
    let completion = texts.make("Langfuse langfuse.observation.output");
    let langfuse_trace = langfuse(&base, project, &prompt, &completion);

    Sent { texts: texts.all, genai_trace, langfuse_trace }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    assert!(!found.is_empty(), "nothing in {}", dir.display());
    let stores: Vec<PathBuf> =
        found.iter().map(|(path, _)| path.clone()).filter(|p| p.ends_with("tally.db")).collect();
    for store in stores {
        found.extend(unpacked(&store));
    }
    found
}

/// What the store keeps compressed, unpacked, as if each were a file of its
/// own: span bodies (zstd, with the store's dictionaries) and call chunks
/// (a format byte and a length before a zstd frame). Text that reaches the
/// disk compressed is on the disk all the same.
fn unpacked(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let blobs = |sql: &str| -> Vec<Vec<u8>> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let dictionaries: Vec<(i64, Vec<u8>)> = {
        let mut stmt = conn.prepare("SELECT id, dictionary FROM span_dictionaries").unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let unzstd = |frame: &[u8]| -> Vec<u8> {
        let id = zstd::zstd_safe::get_dict_id_from_frame(frame).map_or(0, |id| i64::from(id.get()));
        let mut decoder = match dictionaries.iter().find(|(known, _)| *known == id) {
            Some((_, dictionary)) => zstd::bulk::Decompressor::with_dictionary(dictionary),
            None => zstd::bulk::Decompressor::new(),
        }
        .unwrap();
        decoder.decompress(frame, 64 << 20).unwrap()
    };
    let mut out = Vec::new();
    for body in blobs("SELECT body FROM span_chunks") {
        if body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            out.push((store.with_extension("db#span_chunks"), unzstd(&body)));
        }
    }
    for body in blobs("SELECT body FROM call_chunks") {
        // The format byte, then the unpacked length as a varint.
        let frame = body.iter().skip(1).position(|b| b & 0x80 == 0).map(|at| &body[at + 2..]);
        out.push((store.with_extension("db#call_chunks"), unzstd(frame.unwrap())));
    }
    out
}

/// The files of `files` that contain `needle`.
fn holding<'a>(files: &'a [(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<&'a Path> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.as_path())
        .collect()
}

/// The pieces of `text` (every `PIECE_LEN` letters in a row) found in
/// `files`, with where.
fn pieces_found<'a>(files: &'a [(PathBuf, Vec<u8>)], text: &str) -> Vec<(String, Vec<&'a Path>)> {
    text.as_bytes()
        .windows(PIECE_LEN)
        .filter_map(|piece| {
            let found = holding(files, piece);
            (!found.is_empty()).then(|| (String::from_utf8_lossy(piece).into_owned(), found))
        })
        .collect()
}

/// Asserts that no piece of any text is in `files`.
fn assert_none_stored(files: &[(PathBuf, Vec<u8>)], texts: &[(String, String)]) {
    for (what, text) in texts {
        let found = pieces_found(files, text);
        assert!(
            found.is_empty(),
            "{what} ({text}) is stored: {} of its pieces, {:?} first",
            found.len(),
            found[0]
        );
    }
}

/// Asserts that every text is in `files` (a piece of it at least).
fn assert_all_stored(files: &[(PathBuf, Vec<u8>)], texts: &[(String, String)]) {
    for (what, text) in texts {
        assert!(!pieces_found(files, text).is_empty(), "{what} ({text}) is not stored");
    }
}

/// SIGTERM, a clean exit, then every file of the data dir.
fn stop_and_read(server: &mut TestServer) -> Vec<(PathBuf, Vec<u8>)> {
    let status = server.terminate();
    assert!(status.success(), "tally serve exited with {status}; log:\n{}", server.log());
    files(server.dir())
}

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn find_span<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|c| find_span(c, name))
}

/// The run's calls, token counts and cost, from the ledger.
async fn assert_usage_kept(base: &str, project: &str) {
    let usage = summary(base, &[("since", "1h"), ("project", project)]).await;
    assert_eq!(usage["total"]["requests"], 5, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], INPUT_TOKENS, "{usage}");
    assert_eq!(usage["total"]["output_tokens"], OUTPUT_TOKENS, "{usage}");
    let expected = expected_cost(&catalog_price("gpt-4o"), &tokens(INPUT_TOKENS, OUTPUT_TOKENS));
    assert_cost(usage["total"]["cost_usd"].as_f64().unwrap(), expected, "cost of the run");
}

#[tokio::test]
async fn content_sent_through_every_convention_never_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = config(dir.path(), "[privacy]\nstore_content = false\n");
    let mut server = TestServer::start_with_args(&data, &[], &["--config", &file]);
    let base = server.url().to_owned();
    let sent = send_every_convention(&server, "shop", 10).await;

    // What the API serves: counts and names, no content, marked.
    assert_usage_kept(&base, "shop").await;
    let query = [("project", "shop")];
    let detail = get_ok(&base, &format!("/api/v1/traces/{}", sent.genai_trace), &query).await;
    let llm = &detail["spans"][0];
    assert_eq!(
        (llm["input_tokens"].as_u64(), llm["output_tokens"].as_u64()),
        (Some(1000), Some(200))
    );
    assert!(llm["cost_usd"].as_f64().unwrap() > 0.0, "{llm}");
    let attributes = &llm["attributes"];
    assert_eq!(attributes["tally.content_dropped"], true, "{attributes}");
    assert_eq!(attributes["gen_ai.request.model"], "gpt-4o");
    assert_eq!(attributes.get("gen_ai.input.messages"), None, "{attributes}");
    assert_eq!(llm["events"][0]["name"], "gen_ai.user.message");
    assert_eq!(llm["events"][0]["attributes"], json!({"role": "user"}));
    let logs = detail["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{detail}");
    for log in logs {
        assert_eq!(log["body"], Value::Null, "{log}");
        assert_eq!(log["attributes"]["tally.content_dropped"], true, "{log}");
    }
    let langfuse = get_ok(&base, &format!("/api/v1/traces/{}", sent.langfuse_trace), &query).await;
    let generation = find_span(&langfuse["spans"][0], "answer").expect("generation span");
    assert_eq!(generation["input_tokens"], 400, "{generation}");
    assert_eq!(generation["attributes"].get("langfuse.observation.input"), None);

    let files = stop_and_read(&mut server);
    assert_none_stored(&files, &sent.texts);
    assert_eq!(sent.texts.len(), 17);
}

#[tokio::test]
async fn with_the_defaults_the_same_scan_finds_every_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(&dir.path().join("data"), &[]);
    let base = server.url().to_owned();
    let sent = send_every_convention(&server, "shop", 20).await;
    assert_usage_kept(&base, "shop").await;
    let detail =
        get_ok(&base, &format!("/api/v1/traces/{}", sent.genai_trace), &[("project", "shop")])
            .await;
    assert_eq!(detail["spans"][0]["attributes"].get("tally.content_dropped"), None);

    let files = stop_and_read(&mut server);
    assert_all_stored(&files, &sent.texts);
    assert_all_stored(&files, &[("the email".into(), EMAIL.into())]);
}

#[tokio::test]
async fn redaction_masks_an_email_in_attributes_messages_and_log_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = config(dir.path(), &format!("[privacy]\nredact = ['{EMAIL_PATTERN}']\n"));
    let mut server = TestServer::start_with_args(&data, &[], &["--config", &file]);
    let base = server.url().to_owned();
    let sent = send_every_convention(&server, "shop", 30).await;
    assert_usage_kept(&base, "shop").await;

    let query = [("project", "shop")];
    let detail = get_ok(&base, &format!("/api/v1/traces/{}", sent.genai_trace), &query).await;
    let attributes = &detail["spans"][0]["attributes"];
    assert_eq!(attributes["app.customer"], "contact [REDACTED] today", "{attributes}");
    // The message is still JSON, masked inside, the rest of it kept.
    let messages: Value =
        serde_json::from_str(attributes["gen_ai.input.messages"].as_str().unwrap()).unwrap();
    let content = messages[0]["parts"][0]["content"].as_str().unwrap();
    assert!(content.ends_with(", reply to [REDACTED]"), "{content}");
    let prompt = &sent.texts[0];
    assert_eq!(prompt.0, "GenAI gen_ai.input.messages");
    assert_eq!(content, format!("{}, reply to [REDACTED]", prompt.1));
    let logs = detail["logs"].as_array().unwrap();
    let message = logs.iter().find(|log| log["attributes"]["event.name"] == "gen_ai.user.message");
    let body = &message.expect("the user message log")["body"];
    assert!(
        body["content"].as_str().is_some_and(|text| text.ends_with(", write to [REDACTED]")),
        "{body}"
    );

    let files = stop_and_read(&mut server);
    assert_none_stored(&files, &[("the email".into(), EMAIL.into())]);
    // Only the email: the prompts are all there.
    assert_all_stored(&files, &sent.texts);
}

#[tokio::test]
async fn each_project_keeps_or_drops_content_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = config(
        dir.path(),
        "[privacy]\nstore_content = true\n[privacy.projects.team-a]\nstore_content = false\n",
    );
    let mut server = TestServer::start_with_args(&data, &[], &["--config", &file]);
    let base = server.url().to_owned();
    let dropped = send_every_convention(&server, "team-a", 40).await;
    let kept = send_every_convention(&server, "team-b", 50).await;
    assert_usage_kept(&base, "team-a").await;
    assert_usage_kept(&base, "team-b").await;

    let files = stop_and_read(&mut server);
    assert_none_stored(&files, &dropped.texts);
    assert_all_stored(&files, &kept.texts);
}
