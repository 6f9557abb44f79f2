//! `tally bench`: drives a real server over HTTP and prints what it sustains.
//!
//! `tally bench ingest` posts batches of usage reports from concurrent
//! clients and prints records/s (end to end, each batch durably
//! acknowledged), client-observed batch latency and the server's peak RSS.
//! `tally bench quota` (bench_quota.rs) times gateways' reserve + settle.
//! `tally bench series` (bench_series.rs) measures memory per rollup series.
//! `tally bench query` loads a server step by step (e.g. to 1 M then 10 M
//! calls over 24 h) and times the 24 h summary grouped by model at each step.
//! Without `--server`, both start their own `tally serve` on a temporary data
//! dir, so the server's memory can be read from /proc.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Ingest throughput and latency.
    Ingest(IngestArgs),
    /// Summary-query latency as the store grows.
    Query(QueryArgs),
    /// OTLP span ingest and trace query latency.
    Spans(super::bench_spans::SpansArgs),
    /// Metric point ingest and metric query latency.
    Points(super::bench_points::PointsArgs),
    /// Quota reserve + settle round trips with budgets defined.
    Quota(super::bench_quota::QuotaArgs),
    /// Memory per rollup series, with reports from many distinct users.
    Series(super::bench_series::SeriesArgs),
    /// A reliability run: mixed load, hostile clients and SIGKILL restarts,
    /// then every acknowledged record checked against the server.
    Soak(super::bench_soak::SoakArgs),
}

#[derive(Args, Clone)]
pub(super) struct Target {
    /// Use this running server instead of starting one.
    #[arg(long)]
    pub(super) server: Option<String>,
    /// Data dir for the server the bench starts [default: a new temp dir].
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct IngestArgs {
    #[command(flatten)]
    target: Target,
    /// Reports to send in all.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Reports per request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Stop after this many seconds even if not all reports were sent.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Budgets to define before the run (over the reports' users, teams,
    /// keys and models), to measure what evaluating them costs.
    #[arg(long, default_value_t = 0)]
    budgets: u64,
    /// Random report ids (as UUIDs are) instead of ids numbered by batch.
    #[arg(long)]
    random_ids: bool,
    /// After the run, send its first this many reports again (same ids,
    /// later times): every one must be acknowledged as a duplicate, however
    /// long ago its first copy was stored.
    #[arg(long, default_value_t = 0)]
    resend_first: u64,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    target: Target,
    /// Store sizes (in calls) at which to time the query, comma separated.
    #[arg(long, default_value = "1000000,10000000", value_delimiter = ',')]
    steps: Vec<u64>,
    /// Queries timed per step.
    #[arg(long, default_value_t = 200)]
    queries: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchKind::Ingest(args) => ingest(args).await,
        BenchKind::Query(args) => query(args).await,
        BenchKind::Spans(args) => super::bench_spans::spans(args).await,
        BenchKind::Points(args) => super::bench_points::points(args).await,
        BenchKind::Quota(args) => super::bench_quota::quota(args).await,
        BenchKind::Series(args) => super::bench_series::series(args).await,
        BenchKind::Soak(args) => super::bench_soak::soak(args).await,
    }
}

/// The server under test: one we started (and can measure) or a URL.
pub(super) struct Server {
    pub(super) url: String,
    child: Option<Child>,
    /// The data dir of a server we started.
    data_dir: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    pub(super) async fn start(target: &Target) -> anyhow::Result<Server> {
        if let Some(url) = &target.server {
            return Ok(Server {
                url: url.trim_end_matches('/').to_owned(),
                child: None,
                data_dir: None,
                _temp: None,
            });
        }
        let (dir, temp) = match &target.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let (child, url) = spawn_serve(&dir, &[]).await?;
        Ok(Server { url, child: Some(child), data_dir: Some(dir), _temp: temp })
    }

    /// The process id of a server we started.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// CPU time a server we started has used so far, in ns (its threads'
    /// schedstat, which swings less than wall-clock throughput).
    pub(super) fn cpu_ns(&self) -> Option<u64> {
        cpu_ns(self.pid()?)
    }

    /// Peak resident memory of a server we started, in MiB.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub(super) async fn stop(mut self) {
        if let Some(child) = &mut self.child {
            terminate(child).await;
        }
    }

    /// Stops a server we started as `stop` does and weighs its data dir
    /// once it has exited (its shutdown checkpoints what it holds): the
    /// bytes of every file in it. `None` for an external server, or one
    /// that has not exited.
    pub(super) async fn stop_and_measure(mut self) -> Option<u64> {
        let child = self.child.as_mut()?;
        terminate(child).await;
        // Still running after the wait: its files may be mid-write.
        child.try_wait().ok().flatten()?;
        dir_bytes(self.data_dir.as_deref()?).ok()
    }
}

/// The bytes of every file under `dir`, in subdirectories too.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Sends SIGTERM to a server we started and waits (up to 30 s) for it to
/// exit.
pub(super) async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

/// Starts `tally serve` on `dir` (both listeners on port 0) with extra
/// environment, and returns it with its HTTP URL once it listens. Its
/// stdout is read to the end in the background, so that nothing it prints
/// later meets a closed pipe.
pub(super) async fn spawn_serve(
    dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("TALLY_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start tally serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next_line().await? {
            Some(line) => {
                if let Some(url) = line.strip_prefix("tally listening on http://") {
                    break format!("http://{url}");
                }
            }
            None => bail!("tally serve exited before listening"),
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

pub(super) const MODELS: [&str; 8] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet-20241022",
    "text-embedding-3-small",
    "o1",
    "gemini-1.5-pro",
    "llama-3-70b-internal",
    "mistral-large-latest",
];

/// A cheap deterministic generator, so runs are repeatable.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Digits of the batch number in a numbered report id.
const BATCH_DIGITS: usize = 12;
/// Hex digits of a random report id.
const RANDOM_ID_DIGITS: usize = 32;
/// Distinct batch bodies the load generator makes up front; batches reuse
/// them with their own ids stamped in.
const TEMPLATES: u64 = 64;

/// One batch of realistic reports as a JSON array.
struct Template {
    json: String,
    /// Where each report's id value starts.
    ids: Vec<usize>,
    /// Where each report's `started_at` and `completed_at` values start
    /// (two per report, each `TIME_DIGITS` long).
    times: Vec<usize>,
}

/// Digits of a time in ms since the epoch (until the year 2286).
const TIME_DIGITS: usize = 13;

/// Ids are `b{run}-{batch}-{i}` (the batch number zero-padded to
/// `BATCH_DIGITS`) or random hex; times are spread over `spread_ms` before
/// `now`.
fn batch_body(
    run: u64,
    batch: u64,
    size: u64,
    now: i64,
    spread_ms: i64,
    random_ids: bool,
) -> Template {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (batch.wrapping_mul(0x2545_F491_4F6C_DD1D) + 1));
    let mut out = String::with_capacity(size as usize * 330);
    let mut ids = Vec::with_capacity(size as usize);
    let mut times = Vec::with_capacity(2 * size as usize);
    out.push('[');
    for i in 0..size {
        if i > 0 {
            out.push(',');
        }
        let model = MODELS[rng.below(MODELS.len() as u64) as usize];
        // A user always calls with the same key and belongs to one team, as
        // in a real deployment (200 users, 50 keys, 5 teams).
        let user = rng.below(200);
        let input = 50 + rng.below(4000);
        let cached = if rng.below(3) == 0 { rng.below(input) } else { 0 };
        let output = 1 + rng.below(800);
        let completed = now - rng.below(spread_ms.max(1) as u64) as i64;
        let duration = 200 + rng.below(5000);
        out.push_str(r#"{"id":""#);
        ids.push(out.len());
        // Ids a gateway numbers (close together in key order) or random
        // ones, as UUIDs are (each lands anywhere in the id index).
        if random_ids {
            let _ = write!(out, "{:016x}{:016x}", rng.next(), rng.next());
        } else {
            let _ = write!(out, "b{run}-{batch:0BATCH_DIGITS$}-{i}");
        }
        let _ = write!(
            out,
            r#"","model":"{model}","provider":"openai","operation":"chat","user":"user-{}","api_key":"sk-test-{}","route":"/v1/chat/completions","tags":{{"team":"team-{}"}},"input_tokens":{input},"output_tokens":{output},"cache_read_tokens":{cached},"started_at":"#,
            user,
            user % 50,
            user % 5,
        );
        times.push(out.len());
        let _ = write!(out, r#"{},"completed_at":"#, completed - duration as i64);
        times.push(out.len());
        let _ = write!(
            out,
            r#"{completed},"ttft_ms":{},"streaming":true,"status":"{}"}}"#,
            rng.below(duration),
            if rng.below(50) == 0 { "error" } else { "ok" },
        );
    }
    out.push(']');
    Template { json: out, ids, times }
}

/// Batch bodies made once, so that the load generator's CPU (on the same
/// machine as the server) goes to sending rather than to formatting JSON.
/// Each batch is a copy of one with its own ids written over the template's.
pub(super) struct Batches {
    run: u64,
    random_ids: bool,
    times: Times,
    /// The `now` the templates' times were made from.
    made_at: i64,
    templates: Vec<Template>,
}

/// When a batch's reports happened.
#[derive(Clone, Copy)]
pub(super) enum Times {
    /// Spread over the same span before the moment the load began, for
    /// every batch (to fill a query window ahead of the queries).
    Fixed,
    /// Spread over the span before the batch is sent, as a gateway reports
    /// calls shortly after they complete.
    Live,
}

impl Batches {
    pub(super) fn new(
        run: u64,
        batch: u64,
        now: i64,
        spread_ms: i64,
        random_ids: bool,
        times: Times,
    ) -> Self {
        let templates =
            (0..TEMPLATES).map(|t| batch_body(run, t, batch, now, spread_ms, random_ids)).collect();
        Self { run, random_ids, times, made_at: now, templates }
    }

    /// Batch `n` of `size` reports (the template's first `size`).
    pub(super) fn body(&self, n: u64, size: u64) -> String {
        let Template { json: template, ids, times } = &self.templates[(n % TEMPLATES) as usize];
        let size = size as usize;
        let end = ids.get(size).map_or(template.len(), |next| next - r#",{"id":""#.len());
        let mut body = String::with_capacity(end + 1);
        body.push_str(&template[..end]);
        if size < ids.len() {
            body.push(']');
        }
        let mut bytes = body.into_bytes();
        if self.random_ids {
            // Seeded by the run too: two runs (or two benches against two
            // nodes of a cluster) send ids of their own.
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ n.wrapping_add(1) ^ self.run.rotate_left(32));
            for &at in &ids[..size] {
                let id = &mut bytes[at..at + RANDOM_ID_DIGITS];
                for half in id.chunks_mut(RANDOM_ID_DIGITS / 2) {
                    half.copy_from_slice(format!("{:016x}", rng.next()).as_bytes());
                }
            }
        } else {
            let digits = format!("{n:0BATCH_DIGITS$}");
            let skip = format!("b{}-", self.run).len();
            for &at in &ids[..size] {
                bytes[at + skip..at + skip + BATCH_DIGITS].copy_from_slice(digits.as_bytes());
            }
        }
        if let Times::Live = self.times {
            let shift_ms = crate::time::now_ms() - self.made_at;
            for &at in &times[..2 * size] {
                let time = &mut bytes[at..at + TIME_DIGITS];
                let was: i64 =
                    std::str::from_utf8(time).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
                time.copy_from_slice(format!("{:0TIME_DIGITS$}", was + shift_ms).as_bytes());
            }
        }
        String::from_utf8(bytes).expect("ids and times are ASCII")
    }
}

struct LoadResult {
    records: u64,
    seconds: f64,
    latencies_ms: Vec<f64>,
}

/// What one load phase sends.
struct LoadPlan {
    /// Run id, part of every report id.
    run: u64,
    /// Batch number to start at (ids continue across phases).
    first_batch: u64,
    records: u64,
    batch: u64,
    concurrency: u64,
    /// Report times are spread over this long before now.
    spread_ms: i64,
    times: Times,
    random_ids: bool,
    /// Whether the reports were sent before (and are to be acknowledged as
    /// duplicates) or are new (to be accepted).
    resent: bool,
    deadline: Instant,
}

/// Sends the plan's reports in batches from concurrent clients.
async fn load(url: &str, plan: LoadPlan) -> anyhow::Result<LoadResult> {
    let LoadPlan {
        run,
        first_batch,
        records,
        batch,
        concurrency,
        spread_ms,
        times,
        random_ids,
        resent,
        deadline,
    } = plan;
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency as usize).build()?;
    let batches = records.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let now = crate::time::now_ms();
    let bodies = Arc::new(Batches::new(run, batch, now, spread_ms, random_ids, times));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, sent) = (client.clone(), next.clone(), sent.clone());
        let bodies = bodies.clone();
        let endpoint = format!("{url}/api/v1/usage");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= batches || Instant::now() > deadline {
                    break;
                }
                let size = batch.min(records - n * batch);
                let body = bodies.body(first_batch + n, size);
                let t0 = Instant::now();
                let (status, answer) =
                    post_until_taken(&client, &endpoint, "application/json", body).await?;
                let answer: serde_json::Value = serde_json::from_slice(&answer)?;
                let (taken, expected) = match resent {
                    false => ("accepted", answer["accepted"].as_u64()),
                    true => ("duplicates", answer["duplicates"].as_u64()),
                };
                if status != 200 || expected != Some(size) {
                    bail!("batch {n}: {status} {answer} (expected all {size} {taken})");
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                sent.fetch_add(size, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies_ms = Vec::new();
    for task in tasks {
        latencies_ms.extend(task.await??);
    }
    Ok(LoadResult {
        records: sent.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        latencies_ms,
    })
}

/// POSTs `body` until the server takes it: 429 and 503 are backpressure
/// (nothing was taken), so the same body goes again. Returns the status and
/// body of the answer that was not backpressure.
pub(super) async fn post_until_taken(
    client: &reqwest::Client,
    endpoint: &str,
    content_type: &str,
    body: impl Into<reqwest::Body> + Clone,
) -> anyhow::Result<(u16, axum::body::Bytes)> {
    loop {
        let response = client
            .post(endpoint)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await?;
        let status = response.status().as_u16();
        let answer = response.bytes().await?;
        if status != 429 && status != 503 {
            return Ok((status, answer));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    super::bench_quota::define_budgets(&server.url, args.budgets).await?;
    let run = crate::time::now_ms() as u64;
    let plan = LoadPlan {
        run,
        first_batch: 0,
        records: args.records,
        batch: args.batch,
        concurrency: args.concurrency,
        // A gateway reports calls in the seconds after they complete.
        spread_ms: 10_000,
        times: Times::Live,
        random_ids: args.random_ids,
        resent: false,
        deadline: Instant::now() + Duration::from_secs(args.max_seconds),
    };
    let cpu_before = server.cpu_ns();
    let mut result = load(&server.url, plan).await?;
    let cpu = server.cpu_ns().zip(cpu_before).map(|(after, before)| after - before);
    result.latencies_ms.sort_by(f64::total_cmp);
    println!(
        "ingest: {} reports in batches of {}, {} concurrent clients, {} budgets{}",
        result.records,
        args.batch,
        args.concurrency,
        args.budgets,
        if args.random_ids { ", random ids" } else { "" }
    );
    println!(
        "  throughput      {:.0} reports/s (durably acknowledged)",
        result.records as f64 / result.seconds
    );
    println!(
        "  batch latency   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&result.latencies_ms, 0.5),
        percentile(&result.latencies_ms, 0.99),
        percentile(&result.latencies_ms, 1.0)
    );
    if let Some(cpu) = cpu {
        println!(
            "  server CPU      {:.2} µs per report (schedstat)",
            cpu as f64 / 1e3 / result.records.max(1) as f64
        );
    }
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    if args.resend_first > 0 {
        resend_first(&server.url, &args, run, result.records).await?;
    }
    if let Some(bytes) = server.stop_and_measure().await {
        println!(
            "  on disk         {:.1} bytes per report after a clean stop ({:.1} MiB in all)",
            bytes as f64 / result.records.max(1) as f64,
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

/// Sends the first `args.resend_first` of the `stored` reports of `run`
/// again and prints how fast every one was found to be a duplicate (the
/// load fails on any that is not).
async fn resend_first(url: &str, args: &IngestArgs, run: u64, stored: u64) -> anyhow::Result<()> {
    let records = args.resend_first.min(stored);
    let plan = LoadPlan {
        run,
        first_batch: 0,
        records,
        batch: args.batch,
        concurrency: args.concurrency,
        spread_ms: 10_000,
        times: Times::Live,
        random_ids: args.random_ids,
        resent: true,
        deadline: Instant::now() + Duration::from_secs(args.max_seconds),
    };
    let mut result = load(url, plan).await?;
    if result.records < records {
        bail!("resend: only {} of {records} reports sent before the deadline", result.records);
    }
    result.latencies_ms.sort_by(f64::total_cmp);
    println!(
        "  resent          the first {records} reports after the {stored}th: all {records} acknowledged as duplicates, {:.0} reports/s, batch p99 {:.1} ms",
        records as f64 / result.seconds,
        percentile(&result.latencies_ms, 0.99)
    );
    Ok(())
}

/// A process's CPU time so far, in ns: the first field of
/// `/proc/PID/task/*/schedstat`, summed over its threads.
pub(super) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client = reqwest::Client::new();
    let run = crate::time::now_ms() as u64;
    let mut loaded = 0u64;
    let mut next_batch = 0u64;
    for step in args.steps {
        if step > loaded {
            let plan = LoadPlan {
                run,
                first_batch: next_batch,
                records: step - loaded,
                batch: 1000,
                concurrency: 16,
                spread_ms: 23 * 3_600_000,
                times: Times::Fixed,
                random_ids: false,
                resent: false,
                deadline: Instant::now() + Duration::from_secs(3600),
            };
            let result = load(&server.url, plan).await?;
            next_batch += (step - loaded).div_ceil(1000);
            loaded += result.records;
            println!(
                "loaded {loaded} calls ({:.0} reports/s)",
                result.records as f64 / result.seconds
            );
        }
        // Let the load's open buckets reach the store first: a backfill
        // spread over 23 hours leaves open cells all over the window, which
        // every query would merge.
        let flushed = client.post(format!("{}/api/v1/admin/flush", server.url)).send().await?;
        if !flushed.status().is_success() {
            bail!("flush failed: {}", flushed.text().await?);
        }
        let url = format!("{}/api/v1/usage/summary?since=24h&group_by=model", server.url);
        let mut times = Vec::new();
        for _ in 0..args.queries {
            let t0 = Instant::now();
            let response = client.get(&url).send().await?;
            let body: serde_json::Value = response.json().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            if body["total"]["requests"].as_u64() != Some(loaded) {
                bail!("summary saw {} requests, expected {loaded}", body["total"]["requests"]);
            }
        }
        let cold = times[0];
        times.sort_by(f64::total_cmp);
        println!(
            "summary 24h by model over {loaded} calls: first (cold cache) {cold:.2} ms; \
             over {} queries p50 {:.2} ms  p99 {:.2} ms",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    if let Some(mib) = server.peak_rss_mib() {
        println!("server peak RSS {mib:.0} MiB");
    }
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids_of(body: &str) -> Vec<String> {
        let reports: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        reports.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn stamped_batches_are_json_with_ids_of_their_own() {
        for random_ids in [false, true] {
            let batches = Batches::new(7, 100, 1_800_000_000_000, 60_000, random_ids, Times::Fixed);
            let mut seen = std::collections::HashSet::new();
            // Batches 3 and 3 + TEMPLATES share a template.
            for n in [3, 3 + TEMPLATES, 12_345_678] {
                let ids = ids_of(&batches.body(n, 100));
                assert_eq!(ids.len(), 100);
                for id in ids {
                    if !random_ids {
                        assert!(id.starts_with(&format!("b7-{n:0BATCH_DIGITS$}-")), "{id}");
                    }
                    assert!(seen.insert(id), "an id repeats");
                }
            }
            // A last batch smaller than the rest.
            let ids = ids_of(&batches.body(99, 37));
            assert_eq!(ids.len(), 37);
            assert!(ids.iter().all(|id| seen.insert(id.clone())));
        }
    }

    #[test]
    fn live_batches_carry_the_time_they_are_sent() {
        let made = 1_800_000_000_000;
        let live = Batches::new(7, 50, made, 10_000, true, Times::Live);
        let fixed = Batches::new(7, 50, made, 10_000, true, Times::Fixed);
        let now = crate::time::now_ms();
        let completed = |body: &str| -> Vec<i64> {
            let reports: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
            reports.iter().map(|r| r["completed_at"].as_i64().unwrap()).collect()
        };
        let (live, fixed) = (completed(&live.body(5, 50)), completed(&fixed.body(5, 50)));
        assert!(fixed.iter().all(|t| (made - 10_000..=made).contains(t)), "{fixed:?}");
        // The same spread, moved to the moment of sending.
        let shift = live[0] - fixed[0];
        assert!(shift >= now - made && shift <= crate::time::now_ms() - made, "{shift}");
        assert!(live.iter().zip(&fixed).all(|(l, f)| l - f == shift));
    }
}
