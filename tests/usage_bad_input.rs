//! Bad input to the usage API: every per-record rejection rule (error names the field and the
//! index), mixed and all-bad batches, malformed bodies, unsupported encodings, oversized bodies and
//! gzip bombs, absurd numbers, bad query parameters — and after each, the data accepted before is
//! still counted exactly.

mod common;

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Small enough to test the limit cheaply.
const LIMIT: usize = 65_536;
const LIMIT_TEXT: &str = "65536";

/// A server with a 64 KiB body limit and a known baseline already ingested.
struct Fixture {
    _dir: TempDir,
    server: TestServer,
    baseline: Expect,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(
            &dir.path().join("data"),
            &[("TALLY_INGEST__MAX_BODY_BYTES", LIMIT_TEXT)],
        );
        let t0 = now_ms() - 30 * MINUTE_MS;
        let p = catalog_price("gpt-4o");
        let reports: Vec<Value> = (0..20)
            .map(|i| chat(&format!("base-{i}"), "gpt-4o", tokens(100 + i, 10 + i), t0))
            .collect();
        let (accepted, _) = ingest(server.url(), &Value::Array(reports)).await;
        assert_eq!(accepted, 20);
        let baseline = Expect::sum(
            &(0..20)
                .map(|i| Expect::call(Some(&p), tokens(100 + i, 10 + i), 1))
                .collect::<Vec<_>>(),
        );
        Fixture { _dir: dir, server, baseline }
    }

    fn url(&self) -> &str {
        self.server.url()
    }

    /// The baseline (plus `extra`) is still counted exactly, the server still
    /// takes new data, and all of it survives a SIGKILL.
    async fn assert_intact(&mut self, extra: &Expect) {
        let mut want = self.baseline.clone();
        want.add(extra);
        want.assert_matches(&summary(self.url(), &[]).await["total"], "after bad input");
        assert_eq!(
            all_records(self.url(), &[], 1000).await.len() as u64,
            want.requests,
            "record count"
        );
        let probe =
            chat(&format!("probe-{}", now_ms()), "gpt-4o", tokens(1, 1), now_ms() - MINUTE_MS);
        assert_eq!(ingest(self.url(), &probe).await, (1, 0));
        want.add(&Expect::call(Some(&catalog_price("gpt-4o")), tokens(1, 1), 1));
        self.server.kill_9();
        self.server.restart();
        want.assert_matches(
            &summary(self.url(), &[]).await["total"],
            "after bad input and a restart",
        );
        self.baseline = want;
    }
}

/// (what, record, accepted first words of the error: the field).
fn rejection_cases() -> Vec<(&'static str, Value, &'static [&'static str])> {
    let now = now_ms();
    let future = now + 2 * DAY_MS;
    vec![
        ("missing model", json!({"id": "x", "input_tokens": 1}), &["model"]),
        ("blank model", json!({"model": "   "}), &["model"]),
        ("null model", json!({"model": null}), &["model"]),
        ("model too long", json!({"model": "m".repeat(600)}), &["model"]),
        ("negative input", json!({"model": "gpt-4o", "input_tokens": -5}), &["input_tokens"]),
        (
            "negative output (alias)",
            json!({"model": "gpt-4o", "output_token": -1}),
            &["output_token", "output_tokens"],
        ),
        (
            "fractional output",
            json!({"model": "gpt-4o", "output_tokens": 12.5}),
            &["output_tokens"],
        ),
        ("text tokens", json!({"model": "gpt-4o", "input_tokens": "lots"}), &["input_tokens"]),
        ("boolean tokens", json!({"model": "gpt-4o", "total_tokens": true}), &["total_tokens"]),
        (
            "negative cache read",
            json!({"model": "gpt-4o", "input_tokens": 5, "cache_read_tokens": -1}),
            &["cache_read_tokens"],
        ),
        (
            "cache read above input",
            json!({"model": "gpt-4o", "input_tokens": 10, "cache_read_tokens": 11}),
            &["cache_read_tokens"],
        ),
        (
            "cache read + write above input",
            json!({"model": "gpt-4o", "input_tokens": 10, "cache_read_tokens": 6,
                   "cache_write_tokens": 5}),
            &["cache_write_tokens", "cache_read_tokens"],
        ),
        (
            "seed-003 cached above input",
            json!({"model": "gpt-4o", "input_token": 3, "input_cached_token": 4}),
            &["cache_read_tokens", "input_cached_token"],
        ),
        (
            "reasoning above output",
            json!({"model": "gpt-4o", "output_tokens": 10, "reasoning_tokens": 11}),
            &["reasoning_tokens"],
        ),
        (
            "unparseable started_at",
            json!({"model": "gpt-4o", "started_at": "yesterday"}),
            &["started_at"],
        ),
        (
            "unparseable completed_at",
            json!({"model": "gpt-4o", "completed_at": "2024-13-45T99:00:00Z"}),
            &["completed_at"],
        ),
        (
            "completed_at of the wrong type",
            json!({"model": "gpt-4o", "completed_at": {"ms": 1}}),
            &["completed_at"],
        ),
        (
            "completed_at 2 days ahead",
            json!({"model": "gpt-4o", "completed_at": future}),
            &["completed_at"],
        ),
        (
            "started_at 2 days ahead (RFC 3339)",
            json!({"model": "gpt-4o", "started_at": rfc3339(future)}),
            &["started_at"],
        ),
        ("unknown operation", json!({"model": "gpt-4o", "operation": "summarize"}), &["operation"]),
        ("unknown status", json!({"model": "gpt-4o", "status": "maybe"}), &["status"]),
        (
            "zero requests",
            json!({"model": "gpt-4o", "request_count": 0}),
            &["requests", "request_count"],
        ),
        ("negative cost", json!({"model": "gpt-4o", "cost_usd": -1}), &["cost_usd"]),
        ("tags not an object", json!({"model": "gpt-4o", "tags": "team=x"}), &["tags"]),
        ("tag value an object", json!({"model": "gpt-4o", "tags": {"team": {"a": 1}}}), &["tags"]),
        ("number record", json!(42), &["record"]),
        ("string record", json!("gpt-4o"), &["record"]),
        ("null record", json!(null), &["record"]),
        ("empty array record", json!([]), &["record"]),
        (
            // Positional fields must not be read as id, project, model.
            "array record",
            json!(["arr-1", "default", "gpt-4o"]),
            &["record"],
        ),
    ]
}

fn error_names_field(error: &str, fields: &[&str]) -> bool {
    fields.iter().any(|f| {
        error.strip_prefix(f).is_some_and(|rest| rest.starts_with(':') || rest.starts_with('.'))
    })
}

#[tokio::test]
async fn each_rejection_rule_alone_is_a_400_naming_the_field() {
    let mut f = Fixture::start().await;
    let mut failures = Vec::new();
    for (what, record, fields) in rejection_cases() {
        let reply = post_usage(f.url(), &json!([record])).await;
        let ok = reply.status == 400
            && reply.json["accepted"] == 0
            && reply.json["duplicates"] == 0
            && reply.json["rejected"].as_array().is_some_and(|r| r.len() == 1)
            && reply.json["rejected"][0]["index"] == 0
            && reply.json["rejected"][0]["error"]
                .as_str()
                .is_some_and(|e| error_names_field(e, fields));
        if !ok {
            failures.push(format!("{what}: {record} -> {} {}", reply.status, reply.text));
        }
    }
    assert!(failures.is_empty(), "rejections not as specified:\n{}", failures.join("\n"));
    f.assert_intact(&Expect::default()).await;
}

#[tokio::test]
async fn a_mixed_batch_keeps_the_valid_records_and_names_each_bad_index() {
    let mut f = Fixture::start().await;
    let cases = rejection_cases();
    let t0 = now_ms() - 20 * MINUTE_MS;
    let p = catalog_price("gpt-4o");
    // Good records at even indexes, one bad record after each.
    let mut batch = Vec::new();
    let mut extra = Expect::default();
    let mut bad_at = Vec::new();
    for (i, (_, record, _)) in cases.iter().enumerate() {
        let t = tokens(1000 + i as u64, 7);
        batch.push(chat(&format!("mix-{i}"), "gpt-4o", t, t0));
        extra.add(&Expect::call(Some(&p), t, 1));
        bad_at.push(batch.len());
        batch.push(record.clone());
    }
    let reply = post_usage(f.url(), &Value::Array(batch)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["accepted"], cases.len(), "{}", reply.text);
    let rejected = reply.json["rejected"].as_array().unwrap();
    let mut failures = Vec::new();
    for ((what, _, fields), index) in cases.iter().zip(&bad_at) {
        match rejected.iter().find(|r| r["index"] == *index) {
            Some(r) if error_names_field(r["error"].as_str().unwrap_or(""), fields) => {}
            Some(r) => failures.push(format!("{what} (index {index}): {r}")),
            None => failures.push(format!("{what} (index {index}): not rejected")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(rejected.len(), cases.len());
    f.assert_intact(&extra).await;
}

#[tokio::test]
async fn an_all_bad_batch_is_a_400_and_stores_nothing() {
    let mut f = Fixture::start().await;
    let batch = json!([
        {"id": "bad-1", "input_tokens": 1},
        {"id": "bad-2", "model": "gpt-4o", "status": "weird"},
        {"id": "bad-3", "model": "gpt-4o", "input_tokens": -1},
    ]);
    let reply = post_usage(f.url(), &batch).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json["accepted"], 0);
    let indexes: Vec<u64> = reply.json["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![0, 1, 2]);
    // Duplicates of stored ids are not "bad": a batch of only duplicates is a 200.
    let dup = chat("base-0", "gpt-4o", tokens(100, 10), now_ms() - 30 * MINUTE_MS);
    let reply = post_usage(f.url(), &json!([dup, {"model": ""}])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["duplicates"], 1);
    f.assert_intact(&Expect::default()).await;
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_json_error_shape() {
    let mut f = Fixture::start().await;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated array", br#"[{"model":"gpt-4o"}"#.to_vec()),
        ("not json", b"{not json".to_vec()),
        ("form data", b"model=gpt-4o&input_tokens=3".to_vec()),
        ("empty", Vec::new()),
        ("whitespace", b"  \n ".to_vec()),
        ("records not an array", br#"{"records": 5}"#.to_vec()),
        ("invalid utf-8", b"[{\"model\":\"gpt-4o\xff\"}]".to_vec()),
        ("trailing garbage", br#"[{"model":"gpt-4o"}] trailing"#.to_vec()),
    ];
    for (what, body) in bodies {
        let reply = post_usage_bytes(f.url(), body, &[("content-type", "application/json")]).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        reply.assert_error(400, Some("bad_request"));
    }
    // NDJSON whose every line is bad is an all-bad batch.
    let reply = post_usage_bytes(
        f.url(),
        b"nope\n{\"model\":1.5e999}\n".to_vec(),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    f.assert_intact(&Expect::default()).await;
}

#[tokio::test]
async fn unsupported_or_wrong_content_encoding() {
    let mut f = Fixture::start().await;
    let body =
        serde_json::to_vec(&json!([chat("enc-1", "gpt-4o", tokens(5, 5), now_ms() - MINUTE_MS)]))
            .unwrap();
    for encoding in ["br", "deflate", "zstd", "compress"] {
        let reply = post_usage_bytes(
            f.url(),
            body.clone(),
            &[("content-type", "application/json"), ("content-encoding", encoding)],
        )
        .await;
        reply.assert_error(415, Some("unsupported_encoding"));
    }
    // Says gzip, is not gzip.
    let reply = post_usage_bytes(
        f.url(),
        body.clone(),
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await;
    reply.assert_error(400, Some("bad_request"));
    // A truncated gzip stream.
    let mut truncated = gzip(&body);
    truncated.truncate(truncated.len() / 2);
    let reply = post_usage_bytes(
        f.url(),
        truncated,
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await;
    reply.assert_error(400, Some("bad_request"));
    f.assert_intact(&Expect::default()).await;
}

/// A JSON array of reports padded with spaces to exactly `len` bytes.
fn padded_body(len: usize, id: &str) -> Vec<u8> {
    let record = chat(id, "gpt-4o", tokens(3, 3), now_ms() - MINUTE_MS).to_string();
    let mut body = format!("[{record}");
    assert!(body.len() < len);
    body.push_str(&" ".repeat(len - body.len() - 1));
    body.push(']');
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[tokio::test]
async fn oversized_bodies_are_413_at_the_configured_limit() {
    let mut f = Fixture::start().await;
    let json_headers = [("content-type", "application/json")];
    // Exactly the limit is accepted, one byte more is not.
    let reply = post_usage_bytes(f.url(), padded_body(LIMIT, "at-limit"), &json_headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = post_usage_bytes(f.url(), padded_body(LIMIT + 1, "over-1"), &json_headers).await;
    reply.assert_error(413, Some("payload_too_large"));
    // Well over: many real records.
    let big: Vec<Value> = (0..1000)
        .map(|i| chat(&format!("big-{i}"), "gpt-4o", tokens(1, 1), now_ms() - MINUTE_MS))
        .collect();
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > LIMIT);
    post_usage_bytes(f.url(), body, &json_headers)
        .await
        .assert_error(413, Some("payload_too_large"));
    let extra = Expect::call(Some(&catalog_price("gpt-4o")), tokens(3, 3), 1);
    f.assert_intact(&extra).await;
}

/// The response head to one HTTP/1.1 request written whole on a new
/// connection, lowercased.
async fn response_head(url: &str, head: &str, body: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before it has read all of it.
    let _ = stream.write_all(body).await;
    let received = read_head(&mut stream, std::time::Duration::from_secs(30)).await;
    String::from_utf8_lossy(&received).to_ascii_lowercase()
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_and_says_so() {
    let f = Fixture::start().await;
    let head = |len: usize| {
        format!(
            "POST /api/v1/usage HTTP/1.1\r\nhost: tally\r\ncontent-type: application/json\r\n\
             content-length: {len}\r\n\r\n"
        )
    };
    // Refused before its body is read: the client must not reuse the
    // connection, which the server closes.
    let body = padded_body(LIMIT + 1, "unread");
    let refused = response_head(f.url(), &head(body.len()), &body).await;
    assert!(refused.starts_with("http/1.1 413"), "{refused}");
    assert!(refused.contains("connection: close"), "{refused}");
    // Read whole: the connection stays open for the next request.
    let body = padded_body(LIMIT, "read");
    let accepted = response_head(f.url(), &head(body.len()), &body).await;
    assert!(accepted.starts_with("http/1.1 200"), "{accepted}");
    assert!(!accepted.contains("connection: close"), "{accepted}");
}

#[tokio::test]
async fn gzip_bombs_are_413_and_small_gzip_under_the_limit_is_fine() {
    let mut f = Fixture::start().await;
    let headers = [("content-type", "application/json"), ("content-encoding", "gzip")];
    // 8 MiB of JSON whitespace compresses to a few KiB.
    let mut bomb = b"[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 8 << 20));
    bomb.extend(b"]");
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 64 * 1024, "the bomb itself is small");
    post_usage_bytes(f.url(), compressed, &headers)
        .await
        .assert_error(413, Some("payload_too_large"));
    // One byte over the limit once inflated.
    post_usage_bytes(f.url(), gzip(&padded_body(LIMIT + 1, "gz-over")), &headers)
        .await
        .assert_error(413, Some("payload_too_large"));
    // Exactly the limit once inflated.
    let reply = post_usage_bytes(f.url(), gzip(&padded_body(LIMIT, "gz-at")), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A gzip body already over the limit on the wire (incompressible bytes).
    let mut lcg = Lcg::new(7);
    let noise: Vec<u8> = (0..LIMIT * 2).map(|_| lcg.next() as u8).collect();
    post_usage_bytes(f.url(), gzip(&noise), &headers)
        .await
        .assert_error(413, Some("payload_too_large"));
    let extra = Expect::call(Some(&catalog_price("gpt-4o")), tokens(3, 3), 1);
    f.assert_intact(&extra).await;
}

/// Token counts near the top of u64 must neither take the server down nor
/// disturb other data: each is either rejected (naming the field) or
/// accepted, and the server keeps serving and restarts.
#[tokio::test]
async fn absurd_token_counts_do_not_break_the_server() {
    let mut f = Fixture::start().await;
    let t0 = now_ms() - 5 * MINUTE_MS;
    let huge = 10_000_000_000_000_000_000u64; // > i64::MAX, < u64::MAX
    let batch = json!([
        {"id": "huge-1", "project": "huge", "model": "gpt-4o", "input_tokens": huge,
         "completed_at": t0},
        {"id": "huge-2", "project": "huge", "model": "gpt-4o", "input_tokens": huge,
         "completed_at": t0},
        {"id": "huge-3", "project": "huge", "model": "gpt-4o", "request_count": huge,
         "completed_at": t0},
        {"id": "huge-4", "project": "huge", "model": "gpt-4o", "request_count": huge,
         "completed_at": t0},
        {"id": "fine", "project": "huge", "model": "gpt-4o", "input_tokens": 1, "completed_at": t0},
    ]);
    let reply = post_usage(f.url(), &batch).await;
    assert_eq!(
        reply.status, 200,
        "the valid record must be kept; got {} {}",
        reply.status, reply.text
    );
    for r in reply.json["rejected"].as_array().unwrap() {
        let error = r["error"].as_str().unwrap();
        assert!(error_names_field(error, &["input_tokens", "requests", "request_count"]), "{r}");
    }
    let health = get(f.url(), "/healthz", &[]).await;
    assert_eq!(health.status, 200);
    let summary_reply = get(f.url(), "/api/v1/usage/summary", &[("project", "huge")]).await;
    assert_eq!(summary_reply.status, 200, "{}", summary_reply.text);
    f.assert_intact(&Expect::default()).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400_with_the_json_error_shape() {
    let mut f = Fixture::start().await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v1/usage/summary", vec![("from", "yesterday")]),
        ("/api/v1/usage/summary", vec![("to", "2024-99-01")]),
        ("/api/v1/usage/summary", vec![("since", "7 days")]),
        ("/api/v1/usage/summary", vec![("from", "1700000060000"), ("to", "1700000000000")]),
        ("/api/v1/usage/summary", vec![("format", "xml")]),
        ("/api/v1/usage/summary", vec![("group_by", "colour")]),
        ("/api/v1/usage/summary", vec![("filter", "colour:red")]),
        ("/api/v1/usage/series", vec![("step", "0m")]),
        ("/api/v1/usage/series", vec![("step", "1m"), ("since", "30d")]),
        ("/api/v1/usage/series", vec![("group_by", "session")]),
        ("/api/v1/usage/records", vec![("cursor", "1.x")]),
        ("/api/v1/usage/records", vec![("limit", "-1")]),
        ("/api/v1/usage/records", vec![("filter", "session:a"), ("filter", "session:b")]),
        ("/api/v1/usage/unpriced", vec![("since", "forever")]),
    ];
    for (path, query) in cases {
        let reply = get(f.url(), path, &query).await;
        assert_eq!(reply.status, 400, "{path} {query:?}: {}", reply.text);
        reply.assert_error(400, Some("bad_request"));
    }
    // Reprice with a bad window.
    let reply =
        post_json_to(f.url(), "/api/v1/usage/reprice", &json!({"from": 2000, "to": 1000})).await;
    reply.assert_error(400, Some("bad_request"));
    f.assert_intact(&Expect::default()).await;
}
