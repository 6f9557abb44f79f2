//! Slow and idle clients cannot hold what others need: uploads trickling one
//! byte a second, request heads sent a byte at a time (slowloris), HTTP/2
//! connections that say nothing after the preface, and more connections
//! than the cap. Each test runs a server with short limits set through the
//! environment and checks that honest clients are served meanwhile and that
//! the slow ones are cut off once their time is up.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, chat, client, now_ms, post_usage, tokens};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The time the issue allows an honest request while slow clients are
/// connected.
const HONEST: Duration = Duration::from_secs(2);

/// `host:port` of a `http://host:port` URL.
fn authority(url: &str) -> &str {
    url.strip_prefix("http://").expect("http URL")
}

/// Opens `count` connections to `addr`, each sending `opening` at once.
async fn open_many(addr: &str, count: usize, opening: &[u8]) -> Vec<TcpStream> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (addr, opening) = (addr.to_owned(), opening.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            stream.write_all(&opening).await.expect("send opening");
            stream
        }));
    }
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    streams
}

/// How a slow connection ended: what the server sent, and when it closed
/// (seconds after the trickle started), or `None` if it was still open at
/// `give_up`.
struct Ended {
    received: Vec<u8>,
    closed_after: Option<Duration>,
}

/// Sends `byte` once a second on each stream and reads whatever comes back,
/// until the server closes the connection or `give_up` passes.
fn trickle(streams: Vec<TcpStream>, byte: Option<u8>, give_up: Duration) -> Vec<JoinHandle<Ended>> {
    let start = Instant::now();
    streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0u8; 4096];
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    if start.elapsed() > give_up {
                        return Ended { received, closed_after: None };
                    }
                    tokio::select! {
                        read = stream.read(&mut buffer) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => received.extend_from_slice(&buffer[..n]),
                        },
                        _ = tick.tick() => {
                            if let Some(byte) = byte
                                && stream.write_all(&[byte]).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                Ended { received, closed_after: Some(start.elapsed()) }
            })
        })
        .collect()
}

async fn ended(tasks: Vec<JoinHandle<Ended>>) -> Vec<Ended> {
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    all
}

/// One usage report POSTed by an ordinary client: it must get 200 within
/// `HONEST`.
async fn honest_usage(base: &str, id: &str) {
    let started = Instant::now();
    let reply = post_usage(base, &json!([chat(id, "gpt-4o", tokens(10, 1), now_ms())])).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "honest POST /api/v1/usage: {}", reply.text);
    assert_eq!(reply.json["accepted"], 1, "{}", reply.text);
    assert!(took < HONEST, "honest POST /api/v1/usage took {took:?}");
}

async fn honest_healthz(base: &str) {
    let started = Instant::now();
    let response = client().get(format!("{base}/healthz")).send().await.expect("GET /healthz");
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(took < HONEST, "honest GET /healthz took {took:?}");
}

/// Regression: 200 uploads declaring a large body and sending a byte a
/// second held every ingest slot, and honest reports got 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_uploads_neither_block_honest_reports_nor_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            ("TALLY_SERVER__BODY_READ_TIMEOUT", "3s"),
            ("TALLY_INGEST__MAX_CONCURRENT_REQUESTS", "8"),
        ],
    );
    let base = server.url().to_owned();
    let head = "POST /api/v1/usage HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000\r\n\r\n[";
    let slow = open_many(authority(&base), 200, head.as_bytes()).await;
    let slow = trickle(slow, Some(b' '), Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        honest_usage(&base, &format!("honest-{i}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, upload) in ended(slow).await.into_iter().enumerate() {
        let closed =
            upload.closed_after.unwrap_or_else(|| panic!("upload {i} still open after 20s"));
        let text = String::from_utf8_lossy(&upload.received);
        assert!(text.starts_with("HTTP/1.1 408"), "upload {i} got: {text}");
        assert!(text.contains("request_timeout"), "upload {i} got: {text}");
        // 3 s of body time, plus the time the connections took to open.
        assert!(closed < Duration::from_secs(10), "upload {i} closed after {closed:?}");
    }
    honest_usage(&base, "honest-after").await;
}

/// Bodies still arriving hold their bytes, never more than
/// `ingest.max_receiving_bytes` in all: uploads that have sent much and
/// stall take the budget, the next large body gets 429 (not memory), and
/// once they are cut off the budget is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_being_received_are_bounded() {
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let receiving = (3 * MIB).to_string();
    let server = TestServer::start(
        dir.path(),
        &[
            ("TALLY_SERVER__BODY_READ_TIMEOUT", "3s"),
            ("TALLY_INGEST__MAX_BODY_BYTES", "2097152"),
            ("TALLY_INGEST__MAX_RECEIVING_BYTES", &receiving),
        ],
    );
    let base = server.url().to_owned();
    // Two uploads send 1.4 MiB of a 2 MiB body each, then stall.
    let head = format!(
        "POST /api/v1/usage HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n[{}",
        2 * MIB,
        " ".repeat(1400 * 1024)
    );
    let stalled = open_many(authority(&base), 2, head.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A third large body would pass the budget: 429, told why.
    let big = format!("[{}]", " ".repeat(MIB));
    let reply =
        common::post_usage_bytes(&base, big.into_bytes(), &[("content-type", "application/json")])
            .await;
    reply.assert_error(429, Some("overloaded"));
    assert!(reply.text.contains("max_receiving_bytes"), "{}", reply.text);
    // Once the stalled uploads are cut off (408), the budget is free again.
    let stalled = trickle(stalled, None, Duration::from_secs(10));
    for upload in ended(stalled).await {
        assert!(upload.closed_after.is_some(), "a stalled upload stayed open");
    }
    honest_usage(&base, "after-the-stall").await;
    let big = format!("[{}]", " ".repeat(MIB));
    let reply =
        common::post_usage_bytes(&base, big.into_bytes(), &[("content-type", "application/json")])
            .await;
    assert!(
        reply.status != 429 && reply.status != 413,
        "a MiB body is taken again once the budget is free: {} {}",
        reply.status,
        reply.text
    );
}

/// Regression: connections sending their request head a byte a second were
/// held indefinitely, until the server ran out of file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_heads_are_cut_off_and_honest_requests_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_SERVER__HEADER_READ_TIMEOUT", "3s")]);
    let base = server.url().to_owned();
    let slow =
        open_many(authority(&base), 1000, b"GET /healthz HTTP/1.1\r\nHost: tally\r\nX-A: ").await;
    let slow = trickle(slow, Some(b'a'), Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        honest_healthz(&base).await;
        honest_usage(&base, &format!("honest-{i}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, connection) in ended(slow).await.into_iter().enumerate() {
        let closed = connection
            .closed_after
            .unwrap_or_else(|| panic!("connection {i} still open after 20s"));
        // 3 s for the head, at most 3 s more to close, plus opening time.
        assert!(closed < Duration::from_secs(12), "connection {i} closed after {closed:?}");
        let text = String::from_utf8_lossy(&connection.received);
        assert!(!text.contains(" 200 "), "connection {i} was answered: {text}");
    }
    honest_healthz(&base).await;
}

/// The HTTP/2 client preface and an empty SETTINGS frame, then silence.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn one_span(trace: u8) -> ExportTraceServiceRequest {
    let now = now_ms() as u64 * 1_000_000;
    let span = Span {
        trace_id: vec![trace; 16],
        span_id: vec![1; 8],
        name: "chat gpt-4o".into(),
        start_time_unix_nano: now - 1_000_000_000,
        end_time_unix_nano: now,
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// Regression: 3,000 HTTP/2 connections that sent the preface and nothing
/// else were held on the gRPC port with no idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_grpc_connections_are_closed_and_exports_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            ("TALLY_SERVER__GRPC_IDLE_TIMEOUT", "3s"),
            ("TALLY_SERVER__GRPC_KEEPALIVE_TIMEOUT", "1s"),
        ],
    );
    let grpc = server.grpc_url().to_owned();
    let idle = open_many(authority(&grpc), 1000, H2_PREFACE_AND_SETTINGS).await;
    let idle = trickle(idle, None, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for trace in 1..=3u8 {
        let started = Instant::now();
        let mut exporter = TraceServiceClient::connect(grpc.clone()).await.expect("connect");
        let response = exporter.export(one_span(trace)).await.expect("honest export");
        let took = started.elapsed();
        assert_eq!(response.into_inner().partial_success, None);
        assert!(took < HONEST, "honest OTLP/gRPC export took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, connection) in ended(idle).await.into_iter().enumerate() {
        let closed = connection
            .closed_after
            .unwrap_or_else(|| panic!("connection {i} still open after 20s"));
        // 3 s idle, at most 1 s to close after the GOAWAY, plus opening time.
        assert!(closed < Duration::from_secs(10), "connection {i} closed after {closed:?}");
    }
    let traces = common::get_ok(server.url(), "/api/v1/traces/summary", &[("since", "1h")]).await;
    assert_eq!(traces["traces"], 3, "{traces}");
}

/// Reads from `stream` until an HTTP status line has arrived or `wait`
/// passes; returns what arrived.
async fn response_within(stream: &mut TcpStream, wait: Duration) -> String {
    String::from_utf8_lossy(&common::read_head(stream, wait).await).into_owned()
}

/// Past `max_connections`, a new connection waits (it is not served) until
/// one closes; then it is served, and so is /healthz.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[("TALLY_SERVER__MAX_CONNECTIONS", "50"), ("TALLY_SERVER__HEADER_READ_TIMEOUT", "60s")],
    );
    let base = server.url().to_owned();
    let addr = authority(&base);
    let mut idle = open_many(addr, 50, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n";
    let mut waiting = TcpStream::connect(addr).await.expect("the backlog takes the connection");
    waiting.write_all(request).await.unwrap();
    let early = response_within(&mut waiting, Duration::from_secs(2)).await;
    assert_eq!(early, "", "the 51st connection was served while 50 were open");
    drop(idle.pop());
    let served = response_within(&mut waiting, HONEST).await;
    assert!(served.starts_with("HTTP/1.1 200"), "once a slot freed: {served:?}");
    drop(waiting);
    honest_healthz(&base).await;
    drop(idle);
    honest_usage(&base, "after-the-cap").await;
}
