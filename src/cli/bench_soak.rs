//! `tally bench soak`: a reliability run. The bench starts `tally serve` on
//! a data dir and SIGKILLs and restarts it at random moments while
//! well-behaved clients send usage reports, OTLP spans and metric points and
//! query throughout, each keeping its own log of what the server
//! acknowledged; a hostile client sends malformed, oversized and extreme
//! requests and another holds slow connections. At the end the server's
//! totals are compared with the logs (nothing acknowledged lost or counted
//! twice), and latency, memory and CPU per record are printed. Every check
//! is a PASS or FAIL line; any FAIL makes the command fail.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use clap::Args;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::time::{MissedTickBehavior, sleep};

use super::bench::{Batches, Rng, Times, percentile, spawn_serve, terminate};
use super::bench_spans::{Exports, SPANS_PER_TRACE, Shape, trace_id};

#[derive(Args)]
pub struct SoakArgs {
    /// How long the load runs; the checks follow.
    #[arg(long, default_value = "10m", value_parser = duration_arg)]
    duration: Duration,
    /// Times the server is SIGKILLed and restarted, each at a random moment
    /// of its own slice of the run.
    #[arg(long, default_value_t = 10)]
    restarts: u32,
    /// Data dir for the server [default: a new temp dir]. What it holds
    /// already is read first and subtracted.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Clients sending usage reports (batches of 100 with random ids).
    #[arg(long, default_value_t = 3)]
    usage_clients: u64,
    /// Clients exporting agent traces over OTLP/HTTP (8 traces of 10 spans
    /// an export; even-numbered clients send protobuf, odd ones JSON).
    #[arg(long, default_value_t = 2)]
    span_clients: u64,
    /// Clients posting metric points (batches of 500, JSON and OTLP gauges
    /// in turn).
    #[arg(long, default_value_t = 2)]
    point_clients: u64,
    /// Clients querying usage summaries and series, trace lists and
    /// details, and metrics.
    #[arg(long, default_value_t = 2)]
    query_clients: u64,
    /// Requests per second of each well-behaved and hostile client.
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Slow connections held open at once (trickled heads and bodies, idle
    /// connections).
    #[arg(long, default_value_t = 16)]
    slow_connections: u64,
    /// The server's `ingest.max_body_bytes`: small, so that oversized bodies
    /// are cheap to send.
    #[arg(long, default_value_t = 256 * 1024)]
    max_body_bytes: u64,
    /// A well-behaved request slower than this, outside restarts, fails the
    /// run.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    latency_limit: Duration,
    /// Largest ratio of the last minute's peak RSS to the second minute's
    /// (checked on runs of 3 minutes or more).
    #[arg(long, default_value_t = 1.5)]
    max_rss_growth: f64,
    /// Extra environment for the server, KEY=VALUE (repeatable).
    #[arg(long = "server-env", value_parser = env_arg)]
    server_env: Vec<(String, String)>,
    /// Seed for the restart moments and the clients' choices [default: the
    /// clock].
    #[arg(long)]
    seed: Option<u64>,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    let ms = crate::time::parse_duration(text)?;
    Ok(Duration::from_millis(ms.max(0) as u64))
}

fn env_arg(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

const USAGE_BATCH: u64 = 100;
const TRACES_PER_EXPORT: u64 = 8;
const POINTS_BATCH: u64 = 500;
/// The project of the soak's spans (named on their resource), so that the
/// calls of their LLM spans stay out of the usage reports' totals.
const TRACE_PROJECT: &str = "soak-traces";
/// The metric name `bench_points` bodies carry.
const POINT_NAME: &str = "op_time";
/// The start of every window the checks read: where data can begin.
const EPOCH: &str = "2000-01-01T00:00:00Z";
/// How long after the load a client keeps resending a batch the server has
/// not acknowledged.
const GIVE_UP: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const BACKOFF: Duration = Duration::from_millis(50);
/// Requests that get no answer in this time count as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's default `header_read_timeout` and `body_read_timeout`: how
/// long a slow connection may be held, plus `SLOW_SLACK`.
const HEAD_BOUND: Duration = Duration::from_secs(10);
const BODY_BOUND: Duration = Duration::from_secs(60);
const SLOW_SLACK: Duration = Duration::from_secs(5);
/// Slow answers this soon after a restart are told apart in the figures.
const RECOVERY: Duration = Duration::from_secs(10);

/// What every client task reads: where the server is now, and when to stop.
struct Shared {
    url: RwLock<String>,
    load_end: Instant,
    /// Trace numbers whose spans the server acknowledged, for the query
    /// clients to look up.
    acked_traces: Mutex<Vec<u64>>,
}

impl Shared {
    fn url(&self) -> String {
        self.url.read().expect("url lock").clone()
    }
}

/// A client's own record of what it sent and what the server acknowledged.
#[derive(Default)]
struct Log {
    /// Answered requests: what was asked (method and path, without the
    /// query or a trace id), sent, answered.
    answered: Vec<(String, Instant, Instant)>,
    /// Requests without an answer: sent, failed, what happened.
    unanswered: Vec<(Instant, Instant, String)>,
    /// Answers a well-behaved request should never get.
    wrong: Vec<String>,
    /// 429 and 503 answers (the request went again).
    backpressure: u64,
    reports: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    /// Reports acknowledged as duplicates: sent again after an answer was
    /// lost, though the server had committed them.
    duplicates: u64,
    spans: u64,
    traces: Vec<u64>,
    points: u64,
    /// Points of requests that got no answer and were not sent again (points
    /// have no id, so a resend could count them twice).
    points_in_doubt: u64,
    queries: u64,
    /// Batches never acknowledged: refused, or no answer until `GIVE_UP`.
    unacknowledged: u64,
}

impl Log {
    fn merge(&mut self, other: Log) {
        self.answered.extend(other.answered);
        self.unanswered.extend(other.unanswered);
        self.wrong.extend(other.wrong);
        self.backpressure += other.backpressure;
        self.reports += other.reports;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.duplicates += other.duplicates;
        self.spans += other.spans;
        self.traces.extend(other.traces);
        self.points += other.points;
        self.points_in_doubt += other.points_in_doubt;
        self.queries += other.queries;
        self.unacknowledged += other.unacknowledged;
    }
}

enum Sent {
    Answered(u16, Bytes),
    /// No answer, and the request was not sent again.
    Unanswered,
    /// No answer until `GIVE_UP` after the load.
    GaveUp,
}

/// An error with its causes, for reqwest errors whose own text is vague.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends a request until it gets an answer that is not backpressure (429,
/// 503: nothing was taken, so the same request goes again). A request
/// without an answer goes again, to wherever the server listens by then,
/// when `resend` allows it or the connection was refused (nothing sent).
async fn send(
    shared: &Shared,
    client: &reqwest::Client,
    path: &str,
    body: Option<(&str, &Bytes)>,
    resend: bool,
    log: &mut Log,
) -> Sent {
    loop {
        if Instant::now() > shared.load_end + GIVE_UP {
            return Sent::GaveUp;
        }
        // Timed before the URL is read: a request that read the address of
        // a server just killed was sent before its successor listened.
        let sent = Instant::now();
        let url = format!("{}{path}", shared.url());
        let request = match body {
            Some((content_type, body)) => {
                client.post(&url).header("content-type", content_type).body(body.clone())
            }
            None => client.get(&url),
        };
        let (error, refused) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(answer) => {
                        log.answered.push((endpoint(body.is_some(), path), sent, Instant::now()));
                        if status == 429 || status == 503 {
                            log.backpressure += 1;
                            sleep(BACKOFF).await;
                            continue;
                        }
                        return Sent::Answered(status, answer);
                    }
                    Err(err) => (error_chain(&err), false),
                }
            }
            Err(err) => (error_chain(&err), err.is_connect()),
        };
        log.unanswered.push((sent, Instant::now(), format!("{path}: {error}")));
        if !resend && !refused {
            return Sent::Unanswered;
        }
        sleep(RETRY_PAUSE).await;
    }
}

/// A request's method and path without its query, trace ids as `{id}`.
fn endpoint(post: bool, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let path = match path.strip_prefix("/api/v1/traces/") {
        Some(rest) if rest.len() == 32 => "/api/v1/traces/{id}",
        _ => path,
    };
    format!("{} {path}", if post { "POST" } else { "GET" })
}

fn paced(rate: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1) as u32);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

fn quote(answer: &[u8]) -> String {
    String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned()
}

/// Token totals of a batch of usage reports.
fn usage_totals(body: &str) -> (u64, u64, u64) {
    let reports: Vec<serde_json::Value> = serde_json::from_str(body).expect("batches are JSON");
    let sum = |field: &str| reports.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum();
    (sum("input_tokens"), sum("output_tokens"), sum("cache_read_tokens"))
}

/// Sends batch `first`, `first + stride`, … of usage reports; each batch
/// goes again (the same ids) until the server acknowledges it.
async fn usage_client(
    shared: Arc<Shared>,
    client: reqwest::Client,
    batches: Arc<Batches>,
    first: u64,
    stride: u64,
    rate: u64,
) -> Log {
    let mut log = Log::default();
    let mut tick = paced(rate);
    let mut n = first;
    loop {
        tick.tick().await;
        if Instant::now() >= shared.load_end {
            return log;
        }
        let body = batches.body(n, USAGE_BATCH);
        n += stride;
        let (input, output, cache_read) = usage_totals(&body);
        let body = Bytes::from(body);
        let json = Some(("application/json", &body));
        match send(&shared, &client, "/api/v1/usage", json, true, &mut log).await {
            Sent::Answered(200, answer) => {
                let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                let accepted = answer["accepted"].as_u64().unwrap_or(0);
                let duplicates = answer["duplicates"].as_u64().unwrap_or(0);
                let rejected = answer["rejected"].as_array().map_or(1, Vec::len);
                if accepted + duplicates != USAGE_BATCH || rejected != 0 {
                    log.wrong.push(format!("usage batch {n}: 200 {answer}"));
                    log.unacknowledged += 1;
                    continue;
                }
                log.reports += USAGE_BATCH;
                log.duplicates += duplicates;
                log.input_tokens += input;
                log.output_tokens += output;
                log.cache_read_tokens += cache_read;
            }
            Sent::Answered(status, answer) => {
                log.wrong.push(format!("usage batch {n}: {status} {}", quote(&answer)));
                log.unacknowledged += 1;
            }
            Sent::Unanswered | Sent::GaveUp => log.unacknowledged += 1,
        }
    }
}

/// How many items an OTLP answer says were rejected (JSON or protobuf).
fn otlp_rejected(answer: &[u8], json: bool, field: &str) -> Option<u64> {
    if answer.is_empty() {
        return Some(0);
    }
    if json {
        let answer: serde_json::Value = serde_json::from_slice(answer).ok()?;
        return match answer.pointer(&format!("/partialSuccess/{field}")) {
            None | Some(serde_json::Value::Null) => Some(0),
            Some(serde_json::Value::String(n)) => n.parse().ok(),
            Some(n) => n.as_u64(),
        };
    }
    match field {
        "rejectedSpans" => ExportTraceServiceResponse::decode(answer)
            .ok()
            .map(|a| a.partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64)),
        _ => ExportMetricsServiceResponse::decode(answer)
            .ok()
            .map(|a| a.partial_success.map_or(0, |p| p.rejected_data_points.max(0) as u64)),
    }
}

/// Exports agent traces (OTLP/HTTP, protobuf or JSON); each export goes
/// again until acknowledged (the server stores a span once by trace and
/// span id).
async fn span_client(
    shared: Arc<Shared>,
    client: reqwest::Client,
    exports: Arc<Exports>,
    first: u64,
    stride: u64,
    json: bool,
    rate: u64,
) -> Log {
    let mut log = Log::default();
    let mut tick = paced(rate);
    let mut n = first;
    loop {
        tick.tick().await;
        if Instant::now() >= shared.load_end {
            return log;
        }
        let protobuf = exports.body(n);
        let (body, content_type) = if json {
            let request =
                ExportTraceServiceRequest::decode(&protobuf[..]).expect("exports are protobuf");
            (serde_json::to_vec(&request).expect("OTLP JSON"), "application/json")
        } else {
            (protobuf, "application/x-protobuf")
        };
        let export = n;
        n += stride;
        let body = Bytes::from(body);
        match send(&shared, &client, "/v1/traces", Some((content_type, &body)), true, &mut log)
            .await
        {
            Sent::Answered(200, answer)
                if otlp_rejected(&answer, json, "rejectedSpans") == Some(0) =>
            {
                let traces: Vec<u64> =
                    (export * TRACES_PER_EXPORT..(export + 1) * TRACES_PER_EXPORT).collect();
                log.spans += TRACES_PER_EXPORT * SPANS_PER_TRACE;
                shared.acked_traces.lock().expect("traces lock").extend(&traces);
                log.traces.extend(traces);
            }
            Sent::Answered(status, answer) => {
                log.wrong.push(format!("trace export {export}: {status} {}", quote(&answer)));
                log.unacknowledged += 1;
            }
            Sent::Unanswered | Sent::GaveUp => log.unacknowledged += 1,
        }
    }
}

/// Posts metric points, JSON and OTLP gauges in turn. A request without an
/// answer is not sent again unless its connection was refused: points have
/// no id, so a resend of a committed batch would count twice.
async fn point_client(
    shared: Arc<Shared>,
    client: reqwest::Client,
    first: u64,
    stride: u64,
    rate: u64,
) -> Log {
    let mut log = Log::default();
    let mut tick = paced(rate);
    let mut n = first;
    loop {
        tick.tick().await;
        if Instant::now() >= shared.load_end {
            return log;
        }
        let now = crate::time::now_ms();
        let otlp = n % 2 == 1;
        let (path, content_type, body) = if otlp {
            let body = super::bench_points::otlp_body(n, POINTS_BATCH, now, 60_000);
            ("/v1/metrics", "application/x-protobuf", body)
        } else {
            let body = super::bench_points::batch_body(n, POINTS_BATCH, now, 60_000);
            ("/api/v1/points", "application/json", body.into_bytes())
        };
        let batch = n;
        n += stride;
        let body = Bytes::from(body);
        match send(&shared, &client, path, Some((content_type, &body)), false, &mut log).await {
            Sent::Answered(200, answer) => {
                let taken = if otlp {
                    otlp_rejected(&answer, false, "rejectedDataPoints") == Some(0)
                } else {
                    serde_json::from_slice::<serde_json::Value>(&answer)
                        .is_ok_and(|a| a["accepted"].as_u64() == Some(POINTS_BATCH))
                };
                if taken {
                    log.points += POINTS_BATCH;
                } else {
                    log.wrong.push(format!("points batch {batch}: 200 {}", quote(&answer)));
                    log.unacknowledged += 1;
                }
            }
            Sent::Answered(status, answer) => {
                log.wrong.push(format!("points batch {batch}: {status} {}", quote(&answer)));
                log.unacknowledged += 1;
            }
            Sent::Unanswered => log.points_in_doubt += POINTS_BATCH,
            Sent::GaveUp => log.unacknowledged += 1,
        }
    }
}

/// Queries in turn what a dashboard shows; a trace the server acknowledged
/// must be found whole (`run` is the number its trace ids carry).
async fn query_client(
    shared: Arc<Shared>,
    client: reqwest::Client,
    run: u64,
    seed: u64,
    rate: u64,
) -> Log {
    let mut log = Log::default();
    let mut rng = Rng(seed | 1);
    let mut tick = paced(rate);
    for turn in 0u64.. {
        tick.tick().await;
        if Instant::now() >= shared.load_end {
            break;
        }
        let trace = if turn % 5 == 3 {
            let acked = shared.acked_traces.lock().expect("traces lock");
            (!acked.is_empty()).then(|| acked[rng.below(acked.len() as u64) as usize])
        } else {
            None
        };
        let path = match (turn % 5, trace) {
            (0, _) | (3, None) => "/api/v1/usage/summary?since=1h&group_by=model".to_owned(),
            (1, _) => "/api/v1/usage/series?since=1h&step=1m&group_by=model".to_owned(),
            (2, _) => format!("/api/v1/traces?project={TRACE_PROJECT}&since=3h&limit=50"),
            (3, Some(trace)) => format!(
                "/api/v1/traces/{}?project={TRACE_PROJECT}",
                hex::encode(trace_id(run, trace))
            ),
            _ => format!(
                "/api/v1/metrics/query?name={POINT_NAME}&since=1h&step=1m&agg=p99&group_by=worker"
            ),
        };
        match send(&shared, &client, &path, None, true, &mut log).await {
            Sent::Answered(200, answer) => {
                log.queries += 1;
                if trace.is_some() {
                    let detail: serde_json::Value =
                        serde_json::from_slice(&answer).unwrap_or_default();
                    if detail["span_count"].as_u64() != Some(SPANS_PER_TRACE) {
                        log.wrong.push(format!(
                            "{path}: an acknowledged trace has {} spans",
                            detail["span_count"]
                        ));
                    }
                }
            }
            Sent::Answered(status, answer) => {
                log.wrong.push(format!("{path}: {status} {}", quote(&answer)));
            }
            Sent::Unanswered | Sent::GaveUp => {}
        }
    }
    log
}

/// One malformed, oversized or extreme request and the answers it may get.
struct Hostile {
    name: &'static str,
    path: String,
    /// Content type, content encoding and body of a POST.
    body: Option<(&'static str, Option<&'static str>, Bytes)>,
    expect: &'static [u16],
    /// The server may close the connection before reading all of it.
    oversized: bool,
}

fn hostile_requests(max_body: u64) -> Vec<Hostile> {
    let post = |name, path: &str, content_type, body: Vec<u8>, expect| Hostile {
        name,
        path: path.to_owned(),
        body: Some((content_type, None, Bytes::from(body))),
        expect,
        oversized: false,
    };
    let get =
        |name, path: String, expect| Hostile { name, path, body: None, expect, oversized: false };
    let mut padded = b"[".to_vec();
    padded.resize(max_body as usize + 1024, b' ');
    padded.push(b']');
    // 64 MiB of whitespace in a JSON array, gzipped to about 64 KiB.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(b"[").expect("gzip");
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..64 {
        bomb.write_all(&spaces).expect("gzip");
    }
    bomb.write_all(b"]").expect("gzip");
    let bomb = bomb.finish().expect("gzip");
    let mut garbage = vec![0xff; 64];
    garbage.extend(b"not protobuf at all");
    vec![
        post(
            "usage: bad JSON",
            "/api/v1/usage",
            "application/json",
            br#"[{"id":"x","model":"#.to_vec(),
            &[400],
        ),
        post(
            "usage: wrong types",
            "/api/v1/usage",
            "application/json",
            br#"[{"id":7,"model":["gpt-4o"],"input_tokens":"many"}]"#.to_vec(),
            &[400],
        ),
        post(
            "usage: deep nesting",
            "/api/v1/usage",
            "application/json",
            vec![b'['; 100_000],
            &[400],
        ),
        post("usage: text/plain", "/api/v1/usage", "text/plain", b"hello".to_vec(), &[400, 415]),
        Hostile {
            oversized: true,
            ..post("usage: oversized", "/api/v1/usage", "application/json", padded.clone(), &[413])
        },
        Hostile {
            name: "usage: gzip bomb",
            path: "/api/v1/usage".into(),
            body: Some(("application/json", Some("gzip"), Bytes::from(bomb))),
            expect: &[413],
            oversized: true,
        },
        post(
            "points: wrong types",
            "/api/v1/points",
            "application/json",
            br#"[{"name":5,"value":"x"}]"#.to_vec(),
            &[400],
        ),
        Hostile {
            oversized: true,
            ..post("points: oversized", "/api/v1/points", "application/json", padded, &[413])
        },
        post(
            "traces: invalid protobuf",
            "/v1/traces",
            "application/x-protobuf",
            garbage.clone(),
            &[400],
        ),
        post("metrics: invalid protobuf", "/v1/metrics", "application/x-protobuf", garbage, &[400]),
        post(
            "traces: JSON of the wrong shape",
            "/v1/traces",
            "application/json",
            br#"{"resourceSpans":"nope"}"#.to_vec(),
            &[400],
        ),
        get("summary: from=0&to=9e18", "/api/v1/usage/summary?from=0&to=9e18".into(), &[200, 400]),
        get(
            "series: step=100000000d",
            "/api/v1/usage/series?since=24h&step=100000000d".into(),
            &[400],
        ),
        get(
            "series: from=0&to=9e18&step=1m",
            "/api/v1/usage/series?from=0&to=9e18&step=1m".into(),
            &[400],
        ),
        get(
            "metrics: from=0&to=9e18&step=10s",
            format!("/api/v1/metrics/query?name={POINT_NAME}&from=0&to=9e18&step=10s"),
            &[400],
        ),
        get("traces: from=0&to=9e18", "/api/v1/traces?from=0&to=9e18".into(), &[200, 400]),
        get("records: limit=10^9", "/api/v1/usage/records?limit=1000000000".into(), &[400]),
    ]
}

/// What the hostile client saw: answers per request, and answers it should
/// not have got.
#[derive(Default)]
struct HostileLog {
    answers: BTreeMap<&'static str, BTreeMap<String, u64>>,
    unexpected: Vec<String>,
    /// Requests (not oversized) that got no answer: sent, failed, what.
    unanswered: Vec<(Instant, Instant, String)>,
    slowest: f64,
}

async fn hostile_client(
    shared: Arc<Shared>,
    client: reqwest::Client,
    max_body: u64,
    rate: u64,
) -> HostileLog {
    let requests = hostile_requests(max_body);
    let mut log = HostileLog::default();
    let mut tick = paced(rate);
    for turn in 0.. {
        tick.tick().await;
        if Instant::now() >= shared.load_end {
            break;
        }
        let hostile = &requests[turn % requests.len()];
        let sent = Instant::now();
        let url = format!("{}{}", shared.url(), hostile.path);
        let request = match &hostile.body {
            Some((content_type, encoding, body)) => {
                let request = client.post(&url).header("content-type", *content_type);
                let request = match encoding {
                    Some(encoding) => request.header("content-encoding", *encoding),
                    None => request,
                };
                request.body(body.clone())
            }
            None => client.get(&url),
        };
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|answer| (status, answer))
            }
            Err(err) => Err(err),
        };
        log.slowest = log.slowest.max(sent.elapsed().as_secs_f64());
        let seen = match result {
            Ok((status, answer)) => {
                if !hostile.expect.contains(&status) {
                    log.unexpected.push(format!("{}: {status} {}", hostile.name, quote(&answer)));
                }
                status.to_string()
            }
            Err(err) if hostile.oversized => {
                let _ = err;
                "closed early".to_owned()
            }
            Err(err) => {
                let what = format!("{}: {}", hostile.name, error_chain(&err));
                log.unanswered.push((sent, Instant::now(), what));
                "no answer".to_owned()
            }
        };
        *log.answers.entry(hostile.name).or_default().entry(seen).or_default() += 1;
    }
    log
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Idle,
    /// Sends a request head a byte a second.
    Head,
    /// Sends a head at once, then a body a byte a second.
    Body,
}

impl Slow {
    fn bound(self) -> Duration {
        match self {
            Slow::Idle | Slow::Head => HEAD_BOUND,
            Slow::Body => HEAD_BOUND + BODY_BOUND,
        }
    }
}

/// One slow connection: its kind, when it opened, when it ended (the server
/// closed it, or it was still open past its bound), whether it outlived its
/// bound, and the answer's status line, if any.
struct SlowConnection {
    kind: Slow,
    opened: Instant,
    ended: Instant,
    over_bound: bool,
    answer: String,
}

/// Holds slow connections one after another until the load ends.
async fn slow_client(shared: Arc<Shared>, seed: u64) -> Vec<SlowConnection> {
    let mut rng = Rng(seed | 1);
    let mut seen = Vec::new();
    while Instant::now() < shared.load_end {
        let url = shared.url();
        let address = url.trim_start_matches("http://").to_owned();
        let Ok(stream) = tokio::net::TcpStream::connect(&address).await else {
            sleep(RETRY_PAUSE).await;
            continue;
        };
        let kind = [Slow::Idle, Slow::Head, Slow::Body][rng.below(3) as usize];
        let head =
            "POST /api/v1/usage HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n";
        let (at_once, trickle) = match kind {
            Slow::Idle => (String::new(), Vec::new()),
            Slow::Head => {
                (String::new(), format!("{head}content-length: 2\r\n\r\n[]").into_bytes())
            }
            Slow::Body => (format!("{head}content-length: 1000000\r\n\r\n"), vec![b' '; 1_000_000]),
        };
        let opened = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        if writer.write_all(at_once.as_bytes()).await.is_err() {
            continue;
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let mut written = 0;
        let mut next_byte = tokio::time::Instant::now();
        let over_bound = loop {
            if Instant::now() >= shared.load_end {
                return seen;
            }
            if opened.elapsed() > kind.bound() + SLOW_SLACK {
                break true;
            }
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep_until(next_byte) => {
                    next_byte += Duration::from_secs(1);
                    if written < trickle.len() {
                        if writer.write_all(&trickle[written..written + 1]).await.is_err() {
                            break false;
                        }
                        written += 1;
                    }
                }
            }
        };
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.lines().next().unwrap_or("").to_owned();
        seen.push(SlowConnection {
            kind,
            opened,
            ended: Instant::now(),
            over_bound,
            answer: status,
        });
    }
    seen
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the supervisor saw of the server's lives.
struct Supervision {
    child: Child,
    /// A kill (or a crash noticed) and the moment the server listened again.
    outages: Vec<(Instant, Instant)>,
    crashes: Vec<String>,
    /// Kill to listening again, in seconds.
    restart_s: Vec<f64>,
    /// RSS each second: seconds since the start, KiB.
    rss: Vec<(f64, u64)>,
    /// CPU of the lives that ended, in ns.
    cpu_ns: u64,
    /// CPU of the running life as last read, in ns: its threads' counters
    /// go when the process does.
    running_cpu_ns: u64,
}

impl Supervision {
    /// CPU of every life, the running one included.
    fn total_cpu_ns(&self) -> u64 {
        let now = self.child.id().and_then(super::bench::cpu_ns).unwrap_or(0);
        self.cpu_ns + now.max(self.running_cpu_ns)
    }
}

/// Samples the server every second and SIGKILLs and restarts it at each
/// of `kills`; restarts it too if it dies on its own (a crash).
async fn supervise(
    shared: Arc<Shared>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    child: Child,
    started: Instant,
    kills: Vec<Instant>,
) -> anyhow::Result<Supervision> {
    let mut seen = Supervision {
        child,
        outages: Vec::new(),
        crashes: Vec::new(),
        restart_s: Vec::new(),
        rss: Vec::new(),
        cpu_ns: 0,
        running_cpu_ns: 0,
    };
    let mut kills = kills.into_iter().peekable();
    let mut tick = paced(1);
    let mut life_cpu = 0;
    let mut last_alive = Instant::now();
    while Instant::now() < shared.load_end {
        tick.tick().await;
        let down = if let Some(status) = seen.child.try_wait()? {
            seen.crashes.push(format!("{:.0} s in: {status}", started.elapsed().as_secs_f64()));
            Some(last_alive)
        } else if kills.peek().is_some_and(|at| Instant::now() >= *at) {
            kills.next();
            if let Some(cpu) = seen.child.id().and_then(super::bench::cpu_ns) {
                life_cpu = life_cpu.max(cpu);
            }
            let killed = Instant::now();
            seen.child.start_kill()?;
            seen.child.wait().await?;
            Some(killed)
        } else {
            None
        };
        if let Some(down) = down {
            seen.cpu_ns += life_cpu;
            life_cpu = 0;
            let (child, url) = spawn_serve(&dir, &env).await?;
            // The outage lasts until clients can know the new address.
            *shared.url.write().expect("url lock") = url;
            let listening = Instant::now();
            seen.child = child;
            seen.outages.push((down, listening));
            seen.restart_s.push((listening - down).as_secs_f64());
        }
        last_alive = Instant::now();
        if let Some(pid) = seen.child.id() {
            if let Some(kib) = rss_kib(pid) {
                seen.rss.push((started.elapsed().as_secs_f64(), kib));
            }
            if let Some(cpu) = super::bench::cpu_ns(pid) {
                life_cpu = life_cpu.max(cpu);
            }
        }
    }
    seen.running_cpu_ns = life_cpu;
    Ok(seen)
}

/// The server's totals the checks compare: usage over all time, spans of
/// the soak's project, and the count of points in the run's window.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    spans: u64,
    points: u64,
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let response = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let response = super::check(response).await.with_context(|| format!("GET {url}"))?;
    Ok(response.json().await?)
}

async fn totals(
    client: &reqwest::Client,
    url: &str,
    to_ms: i64,
    points_window: (i64, i64),
) -> anyhow::Result<Totals> {
    let summary =
        get_json(client, &format!("{url}/api/v1/usage/summary?from={EPOCH}&to={to_ms}")).await?;
    let traces = get_json(
        client,
        &format!("{url}/api/v1/traces/summary?project={TRACE_PROJECT}&from={EPOCH}&to={to_ms}"),
    )
    .await?;
    let (from, to) = points_window;
    let metrics = get_json(
        client,
        &format!(
            "{url}/api/v1/metrics/query?name={POINT_NAME}&from={from}&to={to}&step=1h&agg=count"
        ),
    )
    .await?;
    let points = metrics["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["points"].as_array().into_iter().flatten())
        .map(|p| p["value"].as_f64().unwrap_or(0.0))
        .sum::<f64>();
    let total = &summary["total"];
    let field = |name: &str| total[name].as_u64().unwrap_or(0);
    Ok(Totals {
        requests: field("requests"),
        input_tokens: field("input_tokens"),
        output_tokens: field("output_tokens"),
        cache_read_tokens: field("cache_read_tokens"),
        spans: traces["spans"].as_u64().unwrap_or(0),
        points: points.round() as u64,
    })
}

/// Every trace of the soak's project and its span count, from the trace
/// list paged to the end.
async fn listed_traces(
    client: &reqwest::Client,
    url: &str,
    to_ms: i64,
) -> anyhow::Result<HashMap<String, u64>> {
    let mut traces = HashMap::new();
    let first =
        format!("{url}/api/v1/traces?project={TRACE_PROJECT}&from={EPOCH}&to={to_ms}&limit=1000");
    let mut page_url = first.clone();
    loop {
        let page = get_json(client, &page_url).await?;
        for trace in page["traces"].as_array().into_iter().flatten() {
            let id = trace["trace_id"].as_str().unwrap_or_default().to_owned();
            traces.insert(id, trace["span_count"].as_u64().unwrap_or(0));
        }
        match page["next_cursor"].as_str() {
            Some(next) => page_url = format!("{first}&cursor={next}"),
            None => return Ok(traces),
        }
    }
}

/// When a request went out and how long until it failed, beside the
/// restarts nearest to it: what tells a server's fault from a client's.
fn when(
    started: Instant,
    outages: &[(Instant, Instant)],
    sent: Instant,
    failed: Instant,
) -> String {
    let s = |a: Instant, b: Instant| a.saturating_duration_since(b).as_secs_f64();
    let mut text = format!("{:.2} s in, failed {:.2} s later", s(sent, started), s(failed, sent));
    if let Some(&(_, up)) = outages.iter().rev().find(|&&(_, up)| up <= sent) {
        text += &format!(", {:.2} s after a restart listened", s(sent, up));
    }
    if let Some(&(down, _)) = outages.iter().find(|&&(down, _)| down >= failed) {
        text += &format!(", {:.2} s before the next kill", s(down, failed));
    }
    text
}

/// Whether `[from, to]` overlaps an outage.
fn in_outage(outages: &[(Instant, Instant)], from: Instant, to: Instant) -> bool {
    outages.iter().any(|&(down, up)| from <= up && to >= down)
}

/// PASS and FAIL lines, counted.
#[derive(Default)]
struct Verdicts {
    failed: usize,
}

impl Verdicts {
    fn check(&mut self, pass: bool, what: String) {
        if !pass {
            self.failed += 1;
        }
        println!("{} {what}", if pass { "PASS" } else { "FAIL" });
    }
}

/// Restart moments: one at a random point of each of `restarts` equal
/// slices of the run's middle 90 %.
fn kill_moments(start: Instant, duration: Duration, restarts: u32, rng: &mut Rng) -> Vec<Instant> {
    let (first, span) = (duration.mul_f64(0.05), duration.mul_f64(0.9));
    let slice = span / restarts.max(1);
    (0..restarts)
        .map(|i| {
            let offset = rng.below(slice.as_millis().max(1) as u64);
            start + first + slice * i + Duration::from_millis(offset)
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let (dir, _temp) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let mut env =
        vec![("TALLY_INGEST__MAX_BODY_BYTES".to_owned(), args.max_body_bytes.to_string())];
    env.extend(args.server_env.iter().cloned());
    let run = crate::time::now_ms() as u64;
    let seed = args.seed.unwrap_or(run);
    let mut rng = Rng(seed | 1);
    println!(
        "soak: {} s, {} SIGKILL restarts, clients at {} requests/s each: {} usage (batches of {USAGE_BATCH}, random ids), {} span (exports of {} spans, protobuf and JSON), {} point (batches of {POINTS_BATCH}, JSON and OTLP), {} query; 1 hostile; {} slow connections; ingest.max_body_bytes {}; seed {seed}",
        args.duration.as_secs(),
        args.restarts,
        args.rate,
        args.usage_clients,
        args.span_clients,
        TRACES_PER_EXPORT * SPANS_PER_TRACE,
        args.point_clients,
        args.query_clients,
        args.slow_connections,
        args.max_body_bytes,
    );
    let (child, url) = spawn_serve(&dir, &env).await?;
    // Pooled connections are dropped before the server would close them
    // (it closes an HTTP/1 connection idle for `server.header_read_timeout`,
    // 10 s): a request sent on one it is closing at that moment fails with
    // a broken pipe, which no server can prevent.
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let start_ms = crate::time::now_ms();
    let end_ms = start_ms + args.duration.as_millis() as i64 + 3_600_000;
    let points_window = (start_ms - 2 * 3_600_000, end_ms);
    let before = totals(&client, &url, end_ms, points_window).await?;

    let started = Instant::now();
    let shared = Arc::new(Shared {
        url: RwLock::new(url),
        load_end: started + args.duration,
        acked_traces: Mutex::new(Vec::new()),
    });
    let kills = kill_moments(started, args.duration, args.restarts, &mut rng);
    let supervisor =
        tokio::spawn(supervise(shared.clone(), dir.clone(), env, child, started, kills));

    let now_ns = start_ms as u64 * 1_000_000;
    // Ids of batches from other runs on the same data dir never meet: the
    // batch numbers (the seeds of the random ids) start at the run's.
    let first_batch = run << 20;
    let batches = Arc::new(Batches::new(run, USAGE_BATCH, start_ms, 60_000, true, Times::Fixed));
    let exports = Arc::new(Exports::new(
        Shape::Lean,
        run,
        TRACES_PER_EXPORT,
        now_ns,
        60_000,
        Some(TRACE_PROJECT),
    ));
    let mut clients = Vec::new();
    for c in 0..args.usage_clients {
        let task = usage_client(
            shared.clone(),
            client.clone(),
            batches.clone(),
            first_batch + c,
            args.usage_clients,
            args.rate,
        );
        clients.push(tokio::spawn(task));
    }
    for c in 0..args.span_clients {
        let task = span_client(
            shared.clone(),
            client.clone(),
            exports.clone(),
            c,
            args.span_clients,
            c % 2 == 1,
            args.rate,
        );
        clients.push(tokio::spawn(task));
    }
    for c in 0..args.point_clients {
        let task = point_client(shared.clone(), client.clone(), c, args.point_clients, args.rate);
        clients.push(tokio::spawn(task));
    }
    for c in 0..args.query_clients {
        let task = query_client(shared.clone(), client.clone(), run, rng.next() ^ c, args.rate);
        clients.push(tokio::spawn(task));
    }
    let hostile = tokio::spawn(hostile_client(
        shared.clone(),
        client.clone(),
        args.max_body_bytes,
        args.rate,
    ));
    let slow: Vec<_> = (0..args.slow_connections)
        .map(|_| tokio::spawn(slow_client(shared.clone(), rng.next())))
        .collect();

    let mut log = Log::default();
    for task in clients {
        log.merge(task.await?);
    }
    let load_s = started.elapsed().as_secs_f64();
    let hostile = hostile.await?;
    let mut slow_seen = Vec::new();
    for task in slow {
        slow_seen.extend(task.await?);
    }
    let mut supervision = supervisor.await??;
    let cpu_ns = supervision.total_cpu_ns();
    let url = shared.url();
    let after = totals(&client, &url, end_ms, points_window).await?;
    let listed = listed_traces(&client, &url, end_ms).await?;
    let outages = supervision.outages.clone();

    // Figures.
    let records = log.reports + log.spans + log.points;
    println!(
        "  acknowledged    {} usage reports ({:.0}/s), {} spans ({:.0}/s), {} metric points ({:.0}/s); {:.0} records/s in all",
        log.reports,
        log.reports as f64 / load_s,
        log.spans,
        log.spans as f64 / load_s,
        log.points,
        log.points as f64 / load_s,
        records as f64 / load_s
    );
    println!(
        "  resends         {} reports acknowledged as duplicates (committed before a kill, answer lost); {} points in doubt (no answer, not resent); {} backpressure answers (429/503)",
        log.duplicates, log.points_in_doubt, log.backpressure
    );
    let mut restart_s = supervision.restart_s.clone();
    restart_s.sort_by(f64::total_cmp);
    println!(
        "  restarts        {} (SIGKILL to listening again: p50 {:.2} s, max {:.2} s); {} crashes",
        restart_s.len(),
        percentile(&restart_s, 0.5),
        restart_s.last().copied().unwrap_or(f64::NAN),
        supervision.crashes.len()
    );
    let limit_ms = args.latency_limit.as_secs_f64() * 1000.0;
    let mut by_endpoint: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut latencies = Vec::new();
    // Slow answers in the first 10 s after a restart listened: a server
    // recovering, rather than one under steady load.
    let mut slow_after_restart = 0;
    for (endpoint, sent, answered) in &log.answered {
        if in_outage(&outages, *sent, *answered) {
            continue;
        }
        let ms = (*answered - *sent).as_secs_f64() * 1000.0;
        let recovering = outages.iter().any(|&(_, up)| *sent >= up && *sent < up + RECOVERY);
        if ms > limit_ms && recovering {
            slow_after_restart += 1;
        }
        latencies.push(ms);
        by_endpoint.entry(endpoint).or_default().push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    let slow_answers = latencies.iter().filter(|&&ms| ms > limit_ms).count();
    println!(
        "  latency         {} well-behaved requests answered outside restarts ({} during): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; {slow_answers} over {limit_ms:.0} ms ({slow_after_restart} of them sent in the {} s after a restart listened)",
        latencies.len(),
        log.answered.len() - latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        RECOVERY.as_secs(),
    );
    for (endpoint, times) in &mut by_endpoint {
        times.sort_by(f64::total_cmp);
        println!(
            "    {endpoint:<34} {:>6} requests  p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms  over {limit_ms:.0} ms: {}",
            times.len(),
            percentile(times, 0.5),
            percentile(times, 0.99),
            times.last().copied().unwrap_or(f64::NAN),
            times.iter().filter(|&&ms| ms > limit_ms).count()
        );
    }
    let unanswered_outside: Vec<String> = log
        .unanswered
        .iter()
        .chain(&hostile.unanswered)
        .filter(|(sent, failed, _)| !in_outage(&outages, *sent, *failed))
        .map(|(sent, failed, what)| {
            format!("{what} (sent {})", when(started, &outages, *sent, *failed))
        })
        .collect();
    println!(
        "  no answer       {} requests during restarts, {} outside",
        log.unanswered.len() + hostile.unanswered.len() - unanswered_outside.len(),
        unanswered_outside.len()
    );
    println!(
        "  server CPU      {:.1} s over all lives, {:.1} µs per acknowledged record (schedstat of live threads, read each second)",
        cpu_ns as f64 / 1e9,
        cpu_ns as f64 / 1e3 / records.max(1) as f64
    );
    let minutes = (args.duration.as_secs_f64() / 60.0).ceil() as usize;
    let mut per_minute = vec![0u64; minutes.max(1)];
    for &(at, kib) in &supervision.rss {
        let minute = ((at / 60.0) as usize).min(per_minute.len() - 1);
        per_minute[minute] = per_minute[minute].max(kib);
    }
    let rows: Vec<String> = per_minute
        .iter()
        .enumerate()
        .map(|(i, kib)| format!("{}: {:.0}", i + 1, mib(*kib)))
        .collect();
    println!("  RSS per minute  (max MiB) {}", rows.join("  "));
    println!("  hostile client  answers per request (slowest {:.2} s):", hostile.slowest);
    for (name, answers) in &hostile.answers {
        let answers: Vec<String> = answers.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
        println!("    {name:<36} {}", answers.join(", "));
    }
    let mut by_kind: BTreeMap<Slow, (u64, u64, f64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut slow_over = Vec::new();
    for seen in &slow_seen {
        let entry = by_kind.entry(seen.kind).or_default();
        if in_outage(&outages, seen.opened, seen.ended) {
            entry.1 += 1;
            continue;
        }
        entry.0 += 1;
        let held = (seen.ended - seen.opened).as_secs_f64();
        entry.2 = entry.2.max(held);
        *entry.3.entry(seen.answer.clone()).or_default() += 1;
        if seen.over_bound {
            slow_over.push(format!("{:?} connection still open after {held:.0} s", seen.kind));
        }
    }
    for (kind, (closed, by_restart, longest, answers)) in &by_kind {
        let answers: Vec<String> = answers
            .iter()
            .map(|(a, n)| format!("{} ×{n}", if a.is_empty() { "closed, no answer" } else { a }))
            .collect();
        println!(
            "  slow {:<10} {closed} ended by the server (longest held {longest:.1} s; {}), {by_restart} by a restart",
            format!("{kind:?}").to_lowercase(),
            answers.join(", ")
        );
    }

    // Checks.
    let mut verdicts = Verdicts::default();
    let usage_seen = (
        after.requests - before.requests,
        after.input_tokens - before.input_tokens,
        after.output_tokens - before.output_tokens,
        after.cache_read_tokens - before.cache_read_tokens,
    );
    let usage_acked = (log.reports, log.input_tokens, log.output_tokens, log.cache_read_tokens);
    verdicts.check(
        usage_seen == usage_acked,
        format!(
            "usage: the summary counts {usage_seen:?} (requests, input, output, cache-read tokens); acknowledged {usage_acked:?}"
        ),
    );
    let spans_seen = after.spans - before.spans;
    verdicts.check(
        spans_seen == log.spans,
        format!("spans: the trace summary counts {spans_seen}; acknowledged {}", log.spans),
    );
    let (mut missing, mut wrong_count) = (0, 0);
    for &trace in &log.traces {
        match listed.get(&hex::encode(trace_id(run, trace))) {
            None => missing += 1,
            Some(&count) if count != SPANS_PER_TRACE => wrong_count += 1,
            Some(_) => {}
        }
    }
    verdicts.check(
        missing == 0 && wrong_count == 0,
        format!(
            "traces: of {} acknowledged traces, {missing} not listed and {wrong_count} listed with a span count other than {SPANS_PER_TRACE} ({} listed in all)",
            log.traces.len(),
            listed.len()
        ),
    );
    let points_seen = after.points - before.points;
    verdicts.check(
        (log.points..=log.points + log.points_in_doubt).contains(&points_seen),
        format!(
            "points: the metrics query counts {points_seen}; acknowledged {} (+ up to {} in doubt)",
            log.points, log.points_in_doubt
        ),
    );
    verdicts.check(
        log.unacknowledged == 0,
        format!("every batch acknowledged in the end: {} not", log.unacknowledged),
    );
    verdicts.check(
        log.wrong.is_empty(),
        format!(
            "well-behaved requests answered as they should: {} not{}",
            log.wrong.len(),
            first_few(&log.wrong)
        ),
    );
    verdicts.check(
        slow_answers == 0,
        format!(
            "no well-behaved answer slower than {limit_ms:.0} ms outside restarts: {slow_answers}"
        ),
    );
    verdicts.check(
        unanswered_outside.is_empty(),
        format!(
            "every request answered outside restarts: {} not{}",
            unanswered_outside.len(),
            first_few(&unanswered_outside)
        ),
    );
    verdicts.check(
        supervision.crashes.is_empty(),
        format!("no crash: {}{}", supervision.crashes.len(), first_few(&supervision.crashes)),
    );
    verdicts.check(
        hostile.unexpected.is_empty(),
        format!(
            "hostile requests refused as documented: {} answered otherwise{}",
            hostile.unexpected.len(),
            first_few(&hostile.unexpected)
        ),
    );
    verdicts.check(
        slow_over.is_empty(),
        format!(
            "slow connections closed within their timeouts (+{} s): {} not{}",
            SLOW_SLACK.as_secs(),
            slow_over.len(),
            first_few(&slow_over)
        ),
    );
    if per_minute.len() >= 3 && per_minute[1] > 0 {
        let growth = *per_minute.last().expect("minutes") as f64 / per_minute[1] as f64;
        verdicts.check(
            growth <= args.max_rss_growth,
            format!(
                "memory flat after the first minute: last minute's peak RSS / second minute's = {growth:.2} (at most {})",
                args.max_rss_growth
            ),
        );
    } else {
        println!("SKIP memory flatness: the run is shorter than 3 minutes");
    }

    terminate(&mut supervision.child).await;
    if verdicts.failed > 0 {
        bail!("{} checks failed", verdicts.failed);
    }
    Ok(())
}

fn first_few(items: &[impl std::fmt::Display]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = items.iter().take(5).map(ToString::to_string).collect();
    format!(" — {}", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_moments_fall_one_in_each_slice_of_the_run() {
        let start = Instant::now();
        let moments = kill_moments(start, Duration::from_secs(600), 10, &mut Rng(7));
        assert_eq!(moments.len(), 10);
        for (i, at) in moments.iter().enumerate() {
            let offset = (*at - start).as_secs_f64();
            let slice = 30.0 + 54.0 * i as f64;
            assert!((slice..slice + 54.0).contains(&offset), "{i}: {offset}");
        }
    }

    #[test]
    fn outages_cover_requests_that_overlap_them() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let outages = [(t + s(10), t + s(12))];
        assert!(in_outage(&outages, t + s(9), t + s(10)));
        assert!(in_outage(&outages, t + s(11), t + s(11)));
        assert!(in_outage(&outages, t + s(12), t + s(13)));
        assert!(!in_outage(&outages, t + s(12) + Duration::from_millis(1), t + s(14)));
        assert!(!in_outage(&outages, t, t + s(9)));
    }
}
