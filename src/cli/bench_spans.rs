//! `tally bench spans`: OTLP/HTTP protobuf exports of realistic agent traces
//! from concurrent clients; prints spans/s until every span is queryable,
//! export latency, the server's peak RSS, and then the latency of the trace
//! detail and trace list queries over what was stored, right after the load
//! and once the server has settled; last, for a server it started, the
//! bytes its data dir holds per span after a clean stop. The traces come in
//! two shapes (`Shape`): lean ones, with only the attributes usage needs,
//! and ones shaped as instrumented applications export them (`sdk`).

mod prose;
mod sdk;

use std::collections::HashMap;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::bench::{Rng, Server, Target, percentile, post_until_taken};

#[derive(Args)]
pub struct SpansArgs {
    #[command(flatten)]
    target: Target,
    /// What the traces look like.
    #[arg(long, value_enum, default_value_t = Shape::Lean)]
    shape: Shape,
    /// Spans to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Traces per export request [default: 80 lean traces (800 spans), or
    /// 64 SDK-shaped ones (512 spans, an OpenTelemetry SDK's batch)].
    #[arg(long)]
    traces_per_batch: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Trace-detail and trace-list queries timed after the load (twice: at
    /// once, and once the server has settled).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Trace starts are spread over this many seconds before the last
    /// minute (3600, the default, lands them all over the time indexes;
    /// live traffic, whose exports carry spans that just ended, is closer to
    /// 60).
    #[arg(long, default_value_t = 3600)]
    spread_s: u64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

/// The shape of the bench's traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum Shape {
    /// Agent runs of 10 spans with the few GenAI attributes usage needs
    /// (a few hundred bytes a span).
    Lean,
    /// Agent runs of 8 spans as OpenLLMetry, the OpenTelemetry GenAI
    /// instrumentations, OpenInference and the Langfuse SDK export them (a
    /// quarter each): 20-40 attributes a span, model calls with 1-4 KB of
    /// messages, tool calls with JSON arguments and results, resources of
    /// about a dozen attributes.
    Sdk,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Lean => "lean",
            Shape::Sdk => "SDK-shaped",
        }
    }

    pub(super) fn spans_per_trace(self) -> u64 {
        match self {
            Shape::Lean => SPANS_PER_TRACE,
            Shape::Sdk => sdk::SPANS_PER_TRACE,
        }
    }

    fn default_traces_per_batch(self) -> u64 {
        match self {
            Shape::Lean => 80,
            // 512 spans: the batch size of the OpenTelemetry SDKs' batch
            // span processors.
            Shape::Sdk => 512 / sdk::SPANS_PER_TRACE,
        }
    }
}

/// Spans of a lean trace.
pub(super) const SPANS_PER_TRACE: u64 = 10;
/// Digits of the trace (and session) numbers in response ids and sessions,
/// fixed so that `Exports` can write new ones over a template's.
const NUMBER_DIGITS: usize = 12;
/// Distinct exports made up front; batches reuse them with their own trace
/// numbers stamped in.
const TEMPLATES: u64 = 32;
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

/// The trace id of trace `n` of a run: 16 bytes that look random, as an
/// SDK's do (numbered ids would land every new trace at the end of the
/// store's indexes). The low half is a bijection of `n`, so ids never repeat
/// within a run, and each can be made again to be looked up.
pub(super) fn trace_id(run: u64, n: u64) -> Vec<u8> {
    let low = scramble(n.wrapping_add(run.rotate_left(32)));
    let mut id = scramble(low ^ run).to_be_bytes().to_vec();
    id.extend(low.to_be_bytes());
    id
}

/// A bijection of u64 that spreads its input's bits (SplitMix64's finish).
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One agent run: an agent span, three LLM calls, three tool calls, two
/// retrievals and an embedding, with GenAI attributes as instrumented apps
/// send them.
fn agent_trace(run: u64, n: u64, now_ns: u64, spread_ms: u64, rng: &mut Rng) -> Vec<Span> {
    let trace = trace_id(run, n);
    let t0 = now_ns - rng.below(spread_ms.max(1)) * MS - 60_000 * MS;
    let user = format!("user-{}", rng.below(500));
    let session = format!("session-{:0NUMBER_DIGITS$}", n / 4);
    let span = |id: u8, parent: Option<u8>, name: String, start: u64, len: u64| Span {
        trace_id: trace.clone(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name,
        kind: 1,
        start_time_unix_nano: t0 + start * MS,
        end_time_unix_nano: t0 + (start + len) * MS,
        ..Span::default()
    };
    let mut root = span(1, None, "invoke_agent support".into(), 0, 4_000);
    root.attributes = vec![
        text("gen_ai.operation.name", "invoke_agent"),
        text("gen_ai.agent.name", "support"),
        text("gen_ai.conversation.id", &session),
        text("user.id", &user),
    ];
    let mut spans = vec![root];
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20240620"];
    for i in 0..3u8 {
        let model = models[rng.below(3) as usize];
        let input = 200 + rng.below(3000) as i64;
        let start = 100 + u64::from(i) * 1_200;
        let mut llm = span(2 + i, Some(1), format!("chat {model}"), start, 300 + rng.below(800));
        llm.attributes = vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", model),
            text("gen_ai.response.id", &format!("chatcmpl-{run}-{n:0NUMBER_DIGITS$}-{i}")),
            int("gen_ai.usage.input_tokens", input),
            int("gen_ai.usage.cache_read.input_tokens", input / 4),
            int("gen_ai.usage.output_tokens", 20 + rng.below(400) as i64),
            text("user.id", &user),
        ];
        spans.push(llm);
        let mut tool = span(5 + i, Some(1), "execute_tool search".into(), start + 900, 200);
        tool.attributes =
            vec![text("gen_ai.operation.name", "execute_tool"), text("gen_ai.tool.name", "search")];
        if rng.below(20) == 0 {
            tool.status = Some(Status { code: 2, message: "timeout".into() });
        }
        spans.push(tool);
    }
    for i in 0..2u8 {
        let mut retrieval = span(8 + i, Some(1), "retrieval docs".into(), 50 + u64::from(i), 40);
        retrieval.attributes = vec![text("gen_ai.operation.name", "retrieval")];
        spans.push(retrieval);
    }
    let mut embedding = span(10, Some(8), "embeddings text-embedding-3-small".into(), 51, 20);
    embedding.attributes = vec![
        text("gen_ai.operation.name", "embeddings"),
        text("gen_ai.request.model", "text-embedding-3-small"),
        int("gen_ai.usage.input_tokens", 16 + rng.below(64) as i64),
    ];
    spans.push(embedding);
    spans
}

/// An export of `traces` traces of `shape`, numbered from `first_trace`.
/// `project`, if given, is named on the resource (`tally.project`).
fn export_body(
    shape: Shape,
    run: u64,
    first_trace: u64,
    traces: u64,
    now_ns: u64,
    spread_ms: u64,
    project: Option<&str>,
) -> Vec<u8> {
    if shape == Shape::Sdk {
        return sdk::export(run, first_trace, traces, now_ns, spread_ms, project).encode_to_vec();
    }
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (first_trace + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let spans: Vec<Span> = (first_trace..first_trace + traces)
        .flat_map(|n| agent_trace(run, n, now_ns, spread_ms, &mut rng))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: std::iter::once(text("service.name", "support-agent"))
                    .chain(project.map(|p| text("tally.project", p)))
                    .collect(),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// A place in a template export to write over: a trace id (of trace
/// number `n`), the digits of one in a response id or of a session
/// number (a quarter of it), a span's start or end time, or a run of prose
/// (whose letters each cycle of the templates substitutes).
#[derive(Clone, Copy)]
enum Stamp {
    TraceId { at: usize, n: u64 },
    Digits { at: usize, n: u64, per: u64 },
    Time { at: usize, ns: u64 },
    Prose { at: usize, len: usize },
}

/// Each batch's times move back by up to this much, so that copies of one
/// template do not start at the same instants (the time fields stay within
/// the spread, which ends a minute before now).
const TIME_SHIFT_MS: u64 = 60_000;

/// Every place in `body` where `pattern` ends.
fn ends_of(body: &[u8], pattern: &[u8]) -> Vec<usize> {
    (0..body.len().saturating_sub(pattern.len()))
        .filter(|&i| body[i..].starts_with(pattern))
        .map(|i| i + pattern.len())
        .collect()
}

fn digits_at(body: &[u8], at: usize) -> u64 {
    let digits = std::str::from_utf8(&body[at..at + NUMBER_DIGITS]).expect("ASCII digits");
    digits.parse().expect("a number")
}

/// Protobuf wire types this reader tells apart.
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;

/// A field of an encoded message: its number, wire type, and where its
/// value is (a length-delimited field's bytes, a fixed64's 8 bytes).
struct Field {
    number: u64,
    wire: u64,
    at: Range<usize>,
}

fn varint(body: &[u8], at: &mut usize) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = body[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    value
}

/// The fields of the message encoded in `body[within]`, which the bench
/// encoded itself (a malformed message panics).
fn fields(body: &[u8], within: Range<usize>) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut at = within.start;
    while at < within.end {
        let key = varint(body, &mut at);
        let (number, wire) = (key >> 3, key & 7);
        let len = match wire {
            0 => {
                varint(body, &mut at);
                0
            }
            FIXED64 => 8,
            LENGTH_DELIMITED => varint(body, &mut at) as usize,
            5 => 4,
            other => panic!("wire type {other} at {at}"),
        };
        fields.push(Field { number, wire, at: at..at + len });
        at += len;
    }
    fields
}

/// The length-delimited fields numbered `number` of the message in
/// `body[within]`: a repeated message field's items.
fn items(body: &[u8], within: Range<usize>, number: u64) -> Vec<Range<usize>> {
    fields(body, within)
        .into_iter()
        .filter(|field| field.number == number && field.wire == LENGTH_DELIMITED)
        .map(|field| field.at)
        .collect()
}

/// Where each span of an encoded `ExportTraceServiceRequest` is
/// (`resource_spans` 1, `scope_spans` 2, `spans` 2).
fn spans_in(body: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    for resource_spans in items(body, 0..body.len(), 1) {
        for scope_spans in items(body, resource_spans, 2) {
            spans.extend(items(body, scope_spans, 2));
        }
    }
    spans
}

/// The stamps of one span: its trace id (field 1; `numbers` gives its
/// trace number), start and end (fields 7 and 8) and, if `prose`, the runs
/// of prose in its string attributes (`attributes` 9, `value` 2,
/// `string_value` 1).
fn span_stamps(
    body: &[u8],
    span: Range<usize>,
    prose: bool,
    numbers: &HashMap<Vec<u8>, u64>,
    stamps: &mut Vec<Stamp>,
) {
    for field in fields(body, span) {
        match (field.number, field.wire) {
            (1, LENGTH_DELIMITED) => {
                let n = numbers[&body[field.at.clone()]];
                stamps.push(Stamp::TraceId { at: field.at.start, n });
            }
            (7 | 8, FIXED64) => {
                let ns = u64::from_le_bytes(body[field.at.clone()].try_into().expect("8 bytes"));
                stamps.push(Stamp::Time { at: field.at.start, ns });
            }
            (9, LENGTH_DELIMITED) if prose => {
                for value in items(body, field.at, 2) {
                    for string in items(body, value, 1) {
                        for (start, len) in prose::runs(&body[string.clone()]) {
                            stamps.push(Stamp::Prose { at: string.start + start, len });
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Export bodies made once, so that the load generator's CPU (on the same
/// machine as the server) goes to sending rather than to building and
/// encoding spans. A batch is a copy of a template with its own trace
/// numbers written over the template's: trace ids, response ids and
/// sessions are the batch's, times move back by up to `TIME_SHIFT_MS`, and
/// (SDK-shaped traces) each cycle of `TEMPLATES` batches substitutes the
/// letters of the prose, so that copies of a template share no text a
/// compressor could find; the rest (users, models, token counts, the
/// shape of the text) repeats every `TEMPLATES` batches.
pub(super) struct Exports {
    run: u64,
    per_batch: u64,
    spans_per_trace: u64,
    templates: Vec<(Vec<u8>, Vec<Stamp>)>,
}

impl Exports {
    pub(super) fn new(
        shape: Shape,
        run: u64,
        per_batch: u64,
        now_ns: u64,
        spread_ms: u64,
        project: Option<&str>,
    ) -> Self {
        let templates = (0..TEMPLATES)
            .map(|t| {
                let body =
                    export_body(shape, run, t * per_batch, per_batch, now_ns, spread_ms, project);
                let numbers: HashMap<Vec<u8>, u64> =
                    (t * per_batch..(t + 1) * per_batch).map(|n| (trace_id(run, n), n)).collect();
                let mut stamps = Vec::new();
                for span in spans_in(&body) {
                    span_stamps(&body, span, shape == Shape::Sdk, &numbers, &mut stamps);
                }
                // Response ids end in `{run}-{trace number}-{call}`.
                for (pattern, per) in [(format!("{run}-"), 1), ("session-".into(), 4)] {
                    for at in ends_of(&body, pattern.as_bytes()) {
                        stamps.push(Stamp::Digits { at, n: digits_at(&body, at), per });
                    }
                }
                (body, stamps)
            })
            .collect();
        Self { run, per_batch, spans_per_trace: shape.spans_per_trace(), templates }
    }

    /// The average size of a span in the exports, in OTLP protobuf bytes.
    pub(super) fn bytes_per_span(&self) -> f64 {
        let bytes: usize = self.templates.iter().map(|(body, _)| body.len()).sum();
        let spans = self.templates.len() as u64 * self.per_batch * self.spans_per_trace;
        bytes as f64 / spans as f64
    }

    /// What gzip makes of the first export, per span: how far a general
    /// compressor gets with the repetition within an export (requests
    /// resending a conversation, documents in prompts and retrievals).
    pub(super) fn gzip_bytes_per_span(&self) -> f64 {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&self.templates[0].0).expect("writing to memory");
        let bytes = gzip.finish().expect("writing to memory").len();
        bytes as f64 / (self.per_batch * self.spans_per_trace) as f64
    }

    /// Export `n` (its traces start at `n * per_batch`), of `per_batch`
    /// traces.
    pub(super) fn body(&self, n: u64) -> Vec<u8> {
        let (template, stamps) = &self.templates[(n % TEMPLATES) as usize];
        let shift = (n - n % TEMPLATES) * self.per_batch;
        let time_shift =
            Rng(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next() % TIME_SHIFT_MS * MS;
        let letters = prose::letter_substitution(n / TEMPLATES);
        let mut body = template.clone();
        for stamp in stamps {
            match *stamp {
                Stamp::TraceId { at, n } => {
                    body[at..at + 16].copy_from_slice(&trace_id(self.run, n + shift));
                }
                Stamp::Digits { at, n, per } => {
                    let digits = format!("{:0NUMBER_DIGITS$}", n + shift / per);
                    body[at..at + NUMBER_DIGITS].copy_from_slice(digits.as_bytes());
                }
                Stamp::Time { at, ns } => {
                    body[at..at + 8].copy_from_slice(&(ns - time_shift).to_le_bytes());
                }
                Stamp::Prose { at, len } => {
                    for byte in &mut body[at..at + len] {
                        *byte = letters[usize::from(*byte)];
                    }
                }
            }
        }
        body
    }
}

/// How long the bench lets the server settle before timing queries again:
/// past the default rollup flush interval (5 s).
const SETTLE: Duration = Duration::from_secs(6);

/// Longest the bench waits for acknowledged spans to be queryable (a node
/// of a cluster shows them once shipped).
const QUERYABLE_WAIT: Duration = Duration::from_secs(60);

/// Times trace-detail and trace-list queries over the traces a run stored.
struct Queries<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    run: u64,
    sent: u64,
    spans_per_trace: u64,
    count: usize,
}

impl Queries<'_> {
    async fn time(&self, when: &str) -> anyhow::Result<()> {
        let stored_traces = self.sent / self.spans_per_trace;
        let mut rng = Rng(self.run | 1);
        let mut detail = Vec::new();
        for _ in 0..self.count {
            let id = hex::encode(trace_id(self.run, rng.below(stored_traces.max(1))));
            let t0 = Instant::now();
            let response =
                self.client.get(format!("{}/api/v1/traces/{id}", self.url)).send().await?;
            let status = response.status();
            let _ = response.bytes().await?;
            detail.push(t0.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                bail!("trace {id}: {status}");
            }
        }
        let mut list = Vec::new();
        for i in 0..self.count.min(100) {
            let query = if i % 2 == 0 {
                "since=3h&limit=50"
            } else {
                "since=3h&limit=50&model=gpt-4o&status=error"
            };
            let t0 = Instant::now();
            let response =
                self.client.get(format!("{}/api/v1/traces?{query}", self.url)).send().await?;
            let _ = response.bytes().await?;
            list.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        detail.sort_by(f64::total_cmp);
        list.sort_by(f64::total_cmp);
        println!(
            "  trace detail    over {} stored spans, {when}: p50 {:.2} ms  p99 {:.2} ms",
            self.sent,
            percentile(&detail, 0.5),
            percentile(&detail, 0.99)
        );
        println!(
            "  trace list      (50 newest; and filtered by model and errors), {when}: p50 {:.2} ms  p99 {:.2} ms",
            percentile(&list, 0.5),
            percentile(&list, 0.99)
        );
        Ok(())
    }
}

pub async fn spans(args: SpansArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency as usize).build()?;
    let run = crate::time::now_ms() as u64;
    let now_ns = run * MS;
    let shape = args.shape;
    let spans_per_trace = shape.spans_per_trace();
    let per_batch = args.traces_per_batch.unwrap_or(shape.default_traces_per_batch()).max(1);
    let traces = args.spans.div_ceil(spans_per_trace);
    let batches = traces.div_ceil(per_batch);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let spread_ms = args.spread_s.saturating_mul(1000);
    let exports = Arc::new(Exports::new(shape, run, per_batch, now_ns, spread_ms, None));
    println!(
        "spans: {} spans ({traces} {} agent traces of {spans_per_trace}) in OTLP/HTTP protobuf exports of {} spans, {} concurrent clients, trace starts spread over {} s",
        traces * spans_per_trace,
        shape.name(),
        per_batch * spans_per_trace,
        args.concurrency,
        args.spread_s
    );
    println!(
        "  OTLP protobuf   {:.0} bytes per span in the exports (gzip of one export: {:.0})",
        exports.bytes_per_span(),
        exports.gzip_bytes_per_span()
    );
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_ns();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, sent) = (client.clone(), next.clone(), sent.clone());
        let sent_bytes = sent_bytes.clone();
        let exports = exports.clone();
        let endpoint = format!("{}/v1/traces", server.url);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= batches || Instant::now() > deadline {
                    break;
                }
                let first = n * per_batch;
                let count = per_batch.min(traces - first);
                let body = if count == per_batch {
                    exports.body(n)
                } else {
                    export_body(shape, run, first, count, now_ns, spread_ms, None)
                };
                let body_bytes = body.len() as u64;
                let t0 = Instant::now();
                let (status, bytes) =
                    post_until_taken(&client, &endpoint, "application/x-protobuf", body).await?;
                if status != 200 || !bytes.is_empty() {
                    bail!(
                        "export {n}: {status} (a partial success or error: {} bytes)",
                        bytes.len()
                    );
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                sent.fetch_add(count * spans_per_trace, Ordering::Relaxed);
                sent_bytes.fetch_add(body_bytes, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    // Acknowledged means committed; wait until the store answers with all
    // of it (at once on one node; on a node of a cluster once shipped).
    let sent = sent.load(Ordering::Relaxed);
    let acknowledged = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + QUERYABLE_WAIT;
    loop {
        let summary: serde_json::Value = client
            .get(format!("{}/api/v1/traces/summary?since=3h", server.url))
            .send()
            .await?
            .json()
            .await?;
        // Other runs may share the project: this run's traces are looked up too.
        let mut rng = Rng(run.rotate_left(7) | 1);
        let mut found = summary["spans"].as_u64() >= Some(sent);
        for _ in 0..20 {
            if !found {
                break;
            }
            let id = hex::encode(trace_id(run, rng.below((sent / spans_per_trace).max(1))));
            let url = format!("{}/api/v1/traces/{id}", server.url);
            found = client.get(url).send().await?.status().is_success();
        }
        if found {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {sent} spans are queryable", summary["spans"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_ns().zip(cpu_before).map(|(after, before)| after - before);
    latencies.sort_by(f64::total_cmp);
    println!("  throughput      {:.0} spans/s (acknowledged and queryable)", sent as f64 / seconds);
    if let Some(cpu) = cpu {
        println!(
            "  server CPU      {:.2} µs per span (schedstat)",
            cpu as f64 / 1e3 / sent.max(1) as f64
        );
    }
    println!("  queryable       {:.2} s after the last acknowledgement", seconds - acknowledged);
    println!(
        "  export latency  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // Query latency over what is stored: right after the load, while the
    // server still flushes rollups and checkpoints the WAL, and again once
    // it has settled (a rollup flush interval later).
    let queries = Queries {
        client: &client,
        url: &server.url,
        run,
        sent,
        spans_per_trace,
        count: args.queries,
    };
    if args.queries > 0 {
        queries.time("right after the load").await?;
        tokio::time::sleep(SETTLE).await;
        queries.time("settled").await?;
    }
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    // What the store keeps per span, against what the exports carried.
    let otlp_per_span = sent_bytes.load(Ordering::Relaxed) as f64 / sent.max(1) as f64;
    match server.stop_and_measure().await {
        Some(bytes) => {
            let per_span = bytes as f64 / sent.max(1) as f64;
            println!(
                "  on disk         {per_span:.0} bytes per span after a clean stop ({:.2}x the {otlp_per_span:.0} OTLP protobuf bytes per span sent; {:.1} MiB in all)",
                per_span / otlp_per_span,
                bytes as f64 / (1024.0 * 1024.0)
            );
        }
        None => println!("  on disk         unknown (external server, or it did not stop)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::model::SpanKind;

    /// Keys whose values are response ids or sessions, by convention (a
    /// Langfuse metadata value is JSON-encoded).
    const NUMBERED_KEYS: [&str; 5] = [
        "gen_ai.response.id",
        "gen_ai.conversation.id",
        "session.id",
        "traceloop.association.properties.session_id",
        "langfuse.observation.metadata.response_id",
    ];

    fn all_spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
        request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
    }

    fn string_value(kv: &KeyValue) -> Option<&str> {
        match &kv.value.as_ref()?.value {
            Some(any_value::Value::StringValue(text)) => Some(text),
            _ => None,
        }
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
        span.attributes.iter().find(|kv| kv.key == key).and_then(string_value)
    }

    /// A span's trace id, response ids and sessions, and start and end.
    type Numbers = (Vec<u8>, Vec<String>, (u64, u64));

    /// The numbers of each span of an export.
    fn numbers(body: &[u8]) -> Vec<Numbers> {
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        all_spans(&request)
            .map(|span| {
                let texts = span
                    .attributes
                    .iter()
                    .filter(|kv| NUMBERED_KEYS.contains(&kv.key.as_str()))
                    .map(|kv| string_value(kv).unwrap().trim_matches('"').to_owned())
                    .collect();
                let times = (span.start_time_unix_nano, span.end_time_unix_nano);
                (span.trace_id.clone(), texts, times)
            })
            .collect()
    }

    /// Stamped copies of templates carry the ids of a batch built afresh
    /// (sessions are numbered from the template's, shifted by a quarter of
    /// the traces), and the template's times all moved back by one shift of
    /// under TIME_SHIFT_MS.
    fn check_stamps(shape: Shape, per_batch: u64) {
        let (run, now_ns) = (1_800_000_000_000, 1_800_000_000_000 * MS);
        let exports = Exports::new(shape, run, per_batch, now_ns, 60_000, None);
        let run_dash = format!("{run}-");
        for n in [0, 5, TEMPLATES + 5, 3 * TEMPLATES + 1] {
            let stamped = numbers(&exports.body(n));
            let fresh = export_body(shape, run, n * per_batch, per_batch, now_ns, 60_000, None);
            let fresh = numbers(&fresh);
            assert_eq!(stamped.len(), (per_batch * shape.spans_per_trace()) as usize);
            let template = numbers(&exports.templates[(n % TEMPLATES) as usize].0);
            let shift = template[0].2.0 - stamped[0].2.0;
            assert!(shift < TIME_SHIFT_MS * MS);
            for (((trace, texts, times), (fresh_trace, fresh_texts, _)), (_, _, template_times)) in
                stamped.iter().zip(&fresh).zip(&template)
            {
                assert_eq!(trace, fresh_trace);
                assert_eq!((times.0 + shift, times.1 + shift), *template_times);
                assert_eq!(texts.len(), fresh_texts.len());
                for (text, fresh_text) in texts.iter().zip(fresh_texts) {
                    if text.starts_with("session-") {
                        assert!(fresh_text.starts_with("session-"), "{fresh_text}");
                    } else {
                        // The same numbers (the prefix names the provider,
                        // which the fresh batch draws anew).
                        let numbers = |id: &str| id.split_once(&run_dash).unwrap().1.to_owned();
                        assert_eq!(numbers(text), numbers(fresh_text), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn stamped_exports_are_the_exports_of_their_own_traces() {
        check_stamps(Shape::Lean, 6);
    }

    #[test]
    fn stamped_sdk_exports_are_the_exports_of_their_own_traces() {
        check_stamps(Shape::Sdk, 8);
    }

    const RUN: u64 = 1_800_000_000_000;

    /// An SDK-shaped export of the default size, as the bench sends it.
    fn sdk_export() -> ExportTraceServiceRequest {
        let per_batch = Shape::Sdk.default_traces_per_batch();
        let body = export_body(Shape::Sdk, RUN, 0, per_batch, RUN * MS, 3_600_000, None);
        ExportTraceServiceRequest::decode(&body[..]).unwrap()
    }

    /// Whether a span is a chat model call, by convention.
    fn is_llm(span: &Span) -> bool {
        attribute(span, "gen_ai.operation.name") == Some("chat")
            || attribute(span, "llm.request.type") == Some("chat")
            || attribute(span, "openinference.span.kind") == Some("LLM")
            || attribute(span, "langfuse.observation.type") == Some("generation")
    }

    /// The message content of a model call span, as each convention
    /// carries it (OpenInference's `input.value` and `output.value`, which
    /// repeat it in the request and response, not counted).
    fn message_content(span: &Span) -> String {
        const WHOLE: [&str; 5] = [
            "gen_ai.system_instructions",
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "langfuse.observation.input",
            "langfuse.observation.output",
        ];
        let flattened = |key: &str| {
            ["gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages."]
                .iter()
                .any(|prefix| key.starts_with(prefix))
                && (key.ends_with(".content") || key.ends_with(".arguments"))
        };
        span.attributes
            .iter()
            .filter(|kv| WHOLE.contains(&kv.key.as_str()) || flattened(&kv.key))
            .filter_map(string_value)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn an_sdk_export_is_512_spans_of_20_to_40_attributes_from_four_sdks() {
        let request = sdk_export();
        assert_eq!(all_spans(&request).count(), 512);
        let mut wrong = Vec::new();
        for span in all_spans(&request) {
            if !(20..=40).contains(&span.attributes.len()) {
                wrong.push(format!("{} ({})", span.name, span.attributes.len()));
            }
        }
        assert!(wrong.is_empty(), "spans without 20-40 attributes: {wrong:?}");
        assert_eq!(request.resource_spans.len(), 4);
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref().unwrap();
            let keys: HashSet<&str> =
                resource.attributes.iter().map(|kv| kv.key.as_str()).collect();
            assert!((12..=16).contains(&keys.len()), "{keys:?}");
            for key in ["service.name", "telemetry.sdk.language", "host.name", "process.pid"] {
                assert!(keys.contains(key), "{key} missing from {keys:?}");
            }
            // A quarter of the traces each.
            assert_eq!(resource_spans.scope_spans[0].spans.len(), 128);
        }
    }

    #[test]
    fn sdk_model_calls_carry_1_to_4_kb_of_prose_that_does_not_repeat_itself() {
        let request = sdk_export();
        let mut calls = 0;
        for span in all_spans(&request).filter(|span| is_llm(span)) {
            calls += 1;
            let content = message_content(span);
            assert!(
                (1024..=4096).contains(&content.len()),
                "{}: {} bytes",
                span.name,
                content.len()
            );
            let words: Vec<&str> = content
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|word| !word.is_empty())
                .collect();
            let distinct: HashSet<String> = words.iter().map(|w| w.to_lowercase()).collect();
            assert!(distinct.len() >= 80, "{}: {} distinct words", span.name, distinct.len());
            // Text compresses 2-3x with deflate; a repeated sentence or
            // character would compress tens of times.
            let mut deflate =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            deflate.write_all(content.as_bytes()).unwrap();
            let ratio = content.len() as f64 / deflate.finish().unwrap().len() as f64;
            assert!(ratio < 3.5, "{}: deflate ratio {ratio:.2}", span.name);
        }
        assert_eq!(calls, 3 * 64);
    }

    #[test]
    fn stamped_sdk_prose_changes_per_cycle_and_stays_consistent_within_a_trace() {
        let per_batch = 8;
        let exports = Exports::new(Shape::Sdk, RUN, per_batch, RUN * MS, 60_000, None);
        let question = |n: u64| {
            let request = ExportTraceServiceRequest::decode(&exports.body(n)[..]).unwrap();
            let questions: Vec<String> = all_spans(&request)
                .filter_map(|span| attribute(span, "llm.input_messages.1.message.content"))
                .map(str::to_owned)
                .collect();
            // Three model calls in each of the two OpenInference traces;
            // the plan and answer calls of one send the same question.
            assert_eq!(questions.len(), 3 * 2);
            assert_eq!(questions[0], questions[1]);
            for span in all_spans(&request) {
                for key in ["gen_ai.input.messages", "langfuse.observation.input", "input.value"] {
                    if let Some(json) = attribute(span, key).filter(|v| v.starts_with(['[', '{'])) {
                        serde_json::from_str::<serde_json::Value>(json).unwrap();
                    }
                }
            }
            questions[0].clone()
        };
        let (first, again) = (question(3), question(3 + TEMPLATES));
        assert_eq!(first.len(), again.len());
        assert_ne!(first, again);
        // Punctuation and spaces stay where they were.
        let shape = |text: &str| text.replace(|c: char| c.is_ascii_alphabetic(), "a");
        assert_eq!(shape(&first), shape(&again));
    }

    #[test]
    fn tallys_normalizer_takes_sdk_spans_and_counts_every_model_call() {
        let per_batch = Shape::Sdk.default_traces_per_batch();
        let exports = Exports::new(Shape::Sdk, RUN, per_batch, RUN * MS, 3_600_000, None);
        let body = exports.body(TEMPLATES + 1);
        let prices = crate::pricing::PriceTable::builtin();
        let fingerprinter = crate::normalize::KeyFingerprinter::new(b"bench");
        let accounting = crate::normalize::usage_report::NormalizeContext {
            now_ms: RUN as i64,
            rules: crate::normalize::AccountingRules::default(),
            prices: &prices,
            fingerprinter: &fingerprinter,
            default_project: "default",
        };
        // Read in place, as the server reads a protobuf export.
        let (records, problems) =
            crate::ingest::otlp::trace_records_in_place(&accounting, &body, None).unwrap();
        assert!(problems.is_empty(), "{}", problems.message());
        assert_eq!(records.spans.len() as u64, per_batch * sdk::SPANS_PER_TRACE);
        // Three chat calls and an embedding a trace, every one priced.
        assert_eq!(records.calls.len() as u64, per_batch * 4);
        for call in &records.calls {
            assert!(call.input_tokens > 0 && call.cost_usd > 0.0, "{call:?}");
        }
        let chats = records.calls.iter().filter(|call| call.output_tokens > 0).count() as u64;
        assert_eq!(chats, per_batch * 3);
        let cached = records.calls.iter().filter(|call| call.cache_read_tokens > 0).count();
        assert!(cached > 0);
        for span in &records.spans {
            assert_eq!(span.project, "default");
            assert_eq!(span.llm_call, matches!(span.kind, SpanKind::Llm | SpanKind::Embedding));
            if span.llm_call {
                assert!(span.model.is_some() && span.input_tokens > 0, "{span:?}");
            }
        }
        let kinds = |kind: SpanKind| records.spans.iter().filter(|s| s.kind == kind).count() as u64;
        assert_eq!(kinds(SpanKind::Llm), per_batch * 3);
        assert_eq!(kinds(SpanKind::Agent), per_batch);
        assert_eq!(kinds(SpanKind::Tool), per_batch * 2);
    }
}
