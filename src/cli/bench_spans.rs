//! `tally bench spans`: OTLP/HTTP protobuf exports of realistic agent traces
//! from concurrent clients; prints spans/s until every span is queryable,
//! export latency, the server's peak RSS, and then the latency of the trace
//! detail and trace list queries over what was stored, right after the load
//! and once the server has settled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
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
    /// Spans to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Traces per export request (10 spans each).
    #[arg(long, default_value_t = 80)]
    traces_per_batch: u64,
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

/// The trace id of trace `n` of a run.
pub(super) fn trace_id(run: u64, n: u64) -> Vec<u8> {
    let mut id = run.to_be_bytes().to_vec();
    id.extend(n.to_be_bytes());
    id
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

/// `project`, if given, is named on the resource (`tally.project`).
fn export_body(
    run: u64,
    first_trace: u64,
    traces: u64,
    now_ns: u64,
    spread_ms: u64,
    project: Option<&str>,
) -> Vec<u8> {
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

/// A number in a template export to write over: a trace number (the last 8
/// bytes of a trace id), the digits of one in a response id or of a session
/// number (a quarter of it), or a span's start or end time.
#[derive(Clone, Copy)]
enum Stamp {
    TraceId { at: usize, n: u64 },
    Digits { at: usize, n: u64, per: u64 },
    Time { at: usize, ns: u64 },
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

/// Export bodies made once, so that the load generator's CPU (on the same
/// machine as the server) goes to sending rather than to building and
/// encoding spans. A batch is a copy of a template with its own trace
/// numbers written over the template's: trace ids, response ids and
/// sessions are the batch's, the rest (times, users, models, token counts)
/// repeats every `TEMPLATES` batches.
pub(super) struct Exports {
    per_batch: u64,
    templates: Vec<(Vec<u8>, Vec<Stamp>)>,
}

impl Exports {
    pub(super) fn new(
        run: u64,
        per_batch: u64,
        now_ns: u64,
        spread_ms: u64,
        project: Option<&str>,
    ) -> Self {
        let templates = (0..TEMPLATES)
            .map(|t| {
                let body = export_body(run, t * per_batch, per_batch, now_ns, spread_ms, project);
                let mut stamps = Vec::new();
                // A trace id field: tag 1, length 16, then the run's 8 bytes.
                let trace_id = [&[0x0a, 0x10][..], &run.to_be_bytes()].concat();
                for at in ends_of(&body, &trace_id) {
                    let n = u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
                    stamps.push(Stamp::TraceId { at, n });
                }
                for (pattern, per) in [(format!("chatcmpl-{run}-"), 1), ("session-".into(), 4)] {
                    for at in ends_of(&body, pattern.as_bytes()) {
                        stamps.push(Stamp::Digits { at, n: digits_at(&body, at), per });
                    }
                }
                // Start and end times: fields 7 and 8, fixed64, whose value
                // falls in the hours before now (nothing else does).
                let earliest = now_ns - (spread_ms + 2 * 3_600_000) * MS;
                for at in ends_of(&body, &[0x39]).into_iter().chain(ends_of(&body, &[0x41])) {
                    let Some(bytes) = body.get(at..at + 8) else { continue };
                    let ns = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                    if (earliest..=now_ns).contains(&ns) {
                        stamps.push(Stamp::Time { at, ns });
                    }
                }
                (body, stamps)
            })
            .collect();
        Self { per_batch, templates }
    }

    /// Export `n` (its traces start at `n * per_batch`), of `per_batch`
    /// traces.
    pub(super) fn body(&self, n: u64) -> Vec<u8> {
        let (template, stamps) = &self.templates[(n % TEMPLATES) as usize];
        let shift = (n - n % TEMPLATES) * self.per_batch;
        let time_shift =
            Rng(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next() % TIME_SHIFT_MS * MS;
        let mut body = template.clone();
        for stamp in stamps {
            match *stamp {
                Stamp::TraceId { at, n } => {
                    body[at..at + 8].copy_from_slice(&(n + shift).to_be_bytes());
                }
                Stamp::Digits { at, n, per } => {
                    let digits = format!("{:0NUMBER_DIGITS$}", n + shift / per);
                    body[at..at + NUMBER_DIGITS].copy_from_slice(digits.as_bytes());
                }
                Stamp::Time { at, ns } => {
                    body[at..at + 8].copy_from_slice(&(ns - time_shift).to_le_bytes());
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
    count: usize,
}

impl Queries<'_> {
    async fn time(&self, when: &str) -> anyhow::Result<()> {
        let stored_traces = self.sent / SPANS_PER_TRACE;
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
    let traces = args.spans.div_ceil(SPANS_PER_TRACE);
    let batches = traces.div_ceil(args.traces_per_batch);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    println!(
        "spans: {} spans ({traces} agent traces of {SPANS_PER_TRACE}) in OTLP/HTTP protobuf exports of {} spans, {} concurrent clients, trace starts spread over {} s",
        traces * SPANS_PER_TRACE,
        args.traces_per_batch * SPANS_PER_TRACE,
        args.concurrency,
        args.spread_s
    );
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let spread_ms = args.spread_s.saturating_mul(1000);
    let exports = Arc::new(Exports::new(run, args.traces_per_batch, now_ns, spread_ms, None));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, sent) = (client.clone(), next.clone(), sent.clone());
        let exports = exports.clone();
        let endpoint = format!("{}/v1/traces", server.url);
        let per_batch = args.traces_per_batch;
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
                    export_body(run, first, count, now_ns, spread_ms, None)
                };
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
                sent.fetch_add(count * SPANS_PER_TRACE, Ordering::Relaxed);
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
            let id = hex::encode(trace_id(run, rng.below((sent / SPANS_PER_TRACE).max(1))));
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
    latencies.sort_by(f64::total_cmp);
    println!("  throughput      {:.0} spans/s (acknowledged and queryable)", sent as f64 / seconds);
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
    let queries = Queries { client: &client, url: &server.url, run, sent, count: args.queries };
    if args.queries > 0 {
        queries.time("right after the load").await?;
        tokio::time::sleep(SETTLE).await;
        queries.time("settled").await?;
    }
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span's trace id, response ids and sessions, and start and end.
    type Numbers = (Vec<u8>, Vec<String>, (u64, u64));

    /// The numbers of each span of an export.
    fn numbers(body: &[u8]) -> Vec<Numbers> {
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        spans
            .iter()
            .map(|span| {
                let texts = span
                    .attributes
                    .iter()
                    .filter(|kv| {
                        kv.key == "gen_ai.response.id" || kv.key == "gen_ai.conversation.id"
                    })
                    .map(|kv| match &kv.value.as_ref().unwrap().value {
                        Some(any_value::Value::StringValue(text)) => text.clone(),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                let times = (span.start_time_unix_nano, span.end_time_unix_nano);
                (span.trace_id.clone(), texts, times)
            })
            .collect()
    }

    #[test]
    fn stamped_exports_are_the_exports_of_their_own_traces() {
        let (run, per_batch, now_ns) = (1_800_000_000_000, 6, 1_800_000_000_000 * MS);
        let exports = Exports::new(run, per_batch, now_ns, 60_000, None);
        for n in [0, 5, TEMPLATES + 5, 3 * TEMPLATES + 1] {
            let stamped = numbers(&exports.body(n));
            let fresh = numbers(&export_body(run, n * per_batch, per_batch, now_ns, 60_000, None));
            assert_eq!(stamped.len(), (per_batch * SPANS_PER_TRACE) as usize);
            // The same ids as a batch built afresh (sessions are numbered
            // from the template's, shifted by a quarter of the traces), and
            // the template's times all moved back by one shift of under
            // TIME_SHIFT_MS.
            let template = numbers(&exports.templates[(n % TEMPLATES) as usize].0);
            let shift = template[0].2.0 - stamped[0].2.0;
            assert!(shift < TIME_SHIFT_MS * MS);
            for (((trace, texts, times), (fresh_trace, fresh_texts, _)), (_, _, template_times)) in
                stamped.iter().zip(&fresh).zip(&template)
            {
                assert_eq!(trace, fresh_trace);
                assert_eq!((times.0 + shift, times.1 + shift), *template_times);
                for (text, fresh_text) in texts.iter().zip(fresh_texts) {
                    if text.starts_with("chatcmpl-") {
                        assert_eq!(text, fresh_text);
                    } else {
                        assert!(text.starts_with("session-"), "{text}");
                    }
                }
            }
        }
    }
}
