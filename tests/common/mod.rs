//! Shared helpers for the black-box tests: a guard that runs `tally serve` on
//! a data dir, HTTP helpers (JSON, NDJSON, gzip, summary, paged records), a
//! CSV reader, the price catalog for computing expected costs independently,
//! and running the `tally` CLI.
#![allow(dead_code)]

pub mod clickhouse;
pub mod db_server;
pub mod postgres;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");
/// Names another binary to test instead of `TALLY`: builds that share a
/// target directory overwrite the one at `TALLY`'s path.
pub const TALLY_BINARY_ENV: &str = "TALLY_TEST_BINARY";

/// The binary the tests run: `TALLY_TEST_BINARY` when set, else `TALLY`.
pub fn tally_binary() -> String {
    std::env::var(TALLY_BINARY_ENV).unwrap_or_else(|_| TALLY.to_owned())
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The server guard
// ---------------------------------------------------------------------------

/// A `tally serve` process on a data dir; SIGKILLed when dropped.
pub struct TestServer {
    child: Option<Child>,
    url: String,
    grpc_url: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    log_path: PathBuf,
}

impl TestServer {
    /// Starts a server on `dir` with extra `TALLY_*` environment.
    pub fn start(dir: &Path, extra_env: &[(&str, &str)]) -> TestServer {
        TestServer::start_with_args(dir, extra_env, &[])
    }

    /// Starts a server with extra command-line arguments (e.g. `--config`).
    pub fn start_with_args(dir: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> TestServer {
        std::fs::create_dir_all(dir).expect("create data dir");
        let mut server = TestServer {
            child: None,
            url: String::new(),
            grpc_url: String::new(),
            dir: dir.to_path_buf(),
            env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            log_path: dir.join("test-server.log"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let mut command = Command::new(tally_binary());
        command
            .arg("serve")
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--grpc")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args);
        // Only what the test chooses: no TALLY_* from the outer environment.
        for (name, _) in std::env::vars() {
            if name.starts_with("TALLY_") {
                command.env_remove(name);
            }
        }
        command.env("TALLY_LOG", "warn");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tally serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout until the process exits.
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            let mut grpc = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = line.trim();
                        if let Some(addr) = line.strip_prefix("tally listening on grpc://") {
                            grpc = format!("http://{addr}");
                        } else if let Some(addr) = line.strip_prefix("tally listening on grpcs://")
                        {
                            grpc = format!("https://{addr}");
                        } else if !sent && let Some(url) = line.strip_prefix("tally listening on ")
                        {
                            let _ = tx.send((url.to_owned(), grpc.clone()));
                            sent = true;
                        }
                    }
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((url, grpc_url)) => {
                self.url = url;
                self.grpc_url = grpc_url;
                self.child = Some(child);
            }
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tally serve did not print its listening line ({err:?}); log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// The OTLP/gRPC endpoint, e.g. `http://127.0.0.1:40124` (`https://`
    /// with TLS on).
    #[allow(dead_code)]
    pub fn grpc_url(&self) -> &str {
        &self.grpc_url
    }

    /// Base URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS on).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGKILL, then reap.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data dir, env and arguments
    /// (a new port: read `url()` again).
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_9();
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Reads from `stream` until an HTTP head (request or response, through
/// its blank line) has arrived, the stream ends or fails, or `wait` passes;
/// returns what arrived (the whole head, perhaps some body after it).
pub async fn read_head<S>(stream: &mut S, wait: Duration) -> Vec<u8>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
    received
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("reqwest client")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, `Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, json }
    }

    /// Asserts the documented error shape `{"error":{"code","message"}}`.
    pub fn assert_error(&self, status: u16, code: Option<&str>) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        let error = &self.json["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "error body must be {{\"error\":{{\"code\",\"message\"}}}}, got {}",
            self.text
        );
        if let Some(code) = code {
            assert_eq!(error["code"], code, "error code; body: {}", self.text);
        }
    }
}

fn usage_url(base: &str) -> String {
    format!("{base}/api/v1/usage")
}

/// POSTs raw bytes to `/api/v1/usage` with the given headers.
pub async fn post_usage_bytes(base: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().post(usage_url(base)).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    Reply::read(request.send().await.expect("POST /api/v1/usage")).await
}

/// POSTs a JSON body (array, envelope or single object).
pub async fn post_usage(base: &str, body: &Value) -> Reply {
    post_usage_bytes(
        base,
        serde_json::to_vec(body).unwrap(),
        &[("content-type", "application/json")],
    )
    .await
}

pub fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|v| v.to_string() + "\n").collect::<String>()
}

/// POSTs a JSON body gzip-compressed.
pub async fn post_gzip(base: &str, body: &Value) -> Reply {
    post_usage_bytes(
        base,
        gzip(&serde_json::to_vec(body).unwrap()),
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await
}

/// POSTs and asserts 200 with no rejection; returns (accepted, duplicates).
pub async fn ingest(base: &str, body: &Value) -> (u64, u64) {
    let reply = post_usage(base, body).await;
    assert_eq!(reply.status, 200, "ingest failed: {}", reply.text);
    assert_eq!(reply.json["rejected"], json!([]), "unexpected rejections: {}", reply.text);
    (
        reply.json["accepted"].as_u64().expect("accepted"),
        reply.json["duplicates"].as_u64().expect("duplicates"),
    )
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// POSTs a JSON body to any path.
pub async fn post_json_to(base: &str, path: &str, body: &Value) -> Reply {
    let response = client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    Reply::read(response).await
}

/// GET `path` with query pairs (repeats allowed).
pub async fn get(base: &str, path: &str, query: &[(&str, &str)]) -> Reply {
    let response = client()
        .get(format!("{base}{path}"))
        .query(query)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    Reply::read(response).await
}

/// GET a JSON endpoint, asserting 200.
pub async fn get_ok(base: &str, path: &str, query: &[(&str, &str)]) -> Value {
    let reply = get(base, path, query).await;
    assert_eq!(reply.status, 200, "GET {path} {query:?} failed: {}", reply.text);
    reply.json
}

/// `GET /api/v1/usage/summary`.
pub async fn summary(base: &str, query: &[(&str, &str)]) -> Value {
    get_ok(base, "/api/v1/usage/summary", query).await
}

/// `GET /api/v1/usage/series`.
pub async fn series(base: &str, query: &[(&str, &str)]) -> Value {
    get_ok(base, "/api/v1/usage/series", query).await
}

/// Every record `GET /api/v1/usage/records` returns for `query`, following
/// `next_cursor` page by page (at most `max_pages`).
pub async fn all_records(base: &str, query: &[(&str, &str)], limit: usize) -> Vec<Value> {
    let limit_text = limit.to_string();
    let mut cursor: Option<String> = None;
    let mut out = Vec::new();
    for _page in 0..10_000 {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", &limit_text));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = get_ok(base, "/api/v1/usage/records", &q).await;
        let records = page["records"].as_array().expect("records array");
        assert!(records.len() <= limit, "page larger than limit");
        out.extend(records.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
    panic!("records paging did not end");
}

/// The group of a summary whose key has `dim` = `value` (None: null).
pub fn group<'a>(summary: &'a Value, key: &Value) -> &'a Value {
    summary["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| &g["key"] == key)
        .unwrap_or_else(|| panic!("no group with key {key} in {summary}"))
}

// ---------------------------------------------------------------------------
// Expected totals
// ---------------------------------------------------------------------------

/// A price row of the built-in catalog (USD per token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
}

const CATALOG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/pricing/catalog.tsv"));

/// The catalog row for exactly `model`; panics when there is none.
pub fn catalog_price(model: &str) -> Price {
    static TABLE: std::sync::OnceLock<HashMap<&'static str, Price>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let cell = |s: &str| -> Option<f64> {
            (!s.is_empty()).then(|| s.parse().expect("catalog price is a number"))
        };
        CATALOG
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("model\t"))
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let price = Price {
                    input: cell(fields[3]).unwrap_or(0.0),
                    output: cell(fields[4]).unwrap_or(0.0),
                    cache_read: cell(fields[5]),
                    cache_write: cell(fields[6]),
                    reasoning: fields.get(7).and_then(|f| cell(f)),
                };
                (fields[0], price)
            })
            .collect()
    });
    *table.get(model).unwrap_or_else(|| panic!("{model} is not in catalog.tsv"))
}

/// Token counts of one call in Tally's canonical form (input includes
/// cached, output includes reasoning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

pub fn tokens(input: u64, output: u64) -> Tokens {
    Tokens { input, output, ..Tokens::default() }
}

/// DESIGN.md's cost rule, written out independently of the server.
pub fn expected_cost(p: &Price, t: &Tokens) -> f64 {
    let uncached = (t.input - t.cache_read - t.cache_write) as f64;
    let input = uncached * p.input
        + t.cache_read as f64 * p.cache_read.unwrap_or(p.input)
        + t.cache_write as f64 * p.cache_write.unwrap_or(p.input);
    let output = match p.reasoning {
        Some(r) => (t.output - t.reasoning) as f64 * p.output + t.reasoning as f64 * r,
        None => t.output as f64 * p.output,
    };
    input + output
}

/// Relative 1e-9 (absolute 1e-15 near zero).
pub fn assert_cost(actual: f64, expected: f64, what: &str) {
    let tolerance = (expected.abs() * 1e-9).max(1e-15);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: cost {actual:e} != expected {expected:e}"
    );
}

/// What a summary group, total or series point should add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub errors: u64,
    pub estimated: u64,
    pub unpriced: u64,
    pub cost_usd: f64,
}

impl Expect {
    /// One ok, completed, priced call of `requests` requests, with
    /// total = input + output.
    pub fn call(price: Option<&Price>, t: Tokens, requests: u64) -> Expect {
        Expect {
            requests,
            input_tokens: t.input,
            output_tokens: t.output,
            cache_read_tokens: t.cache_read,
            cache_write_tokens: t.cache_write,
            reasoning_tokens: t.reasoning,
            total_tokens: t.input + t.output,
            errors: 0,
            estimated: 0,
            unpriced: if price.is_none() { requests } else { 0 },
            cost_usd: price.map(|p| expected_cost(p, &t)).unwrap_or(0.0),
        }
    }

    pub fn add(&mut self, o: &Expect) {
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.total_tokens += o.total_tokens;
        self.errors += o.errors;
        self.estimated += o.estimated;
        self.unpriced += o.unpriced;
        self.cost_usd += o.cost_usd;
    }

    pub fn sum<'a>(items: impl IntoIterator<Item = &'a Expect>) -> Expect {
        let mut total = Expect::default();
        for e in items {
            total.add(e);
        }
        total
    }

    /// Compares every counter exactly and the cost to 1e-9 relative.
    pub fn assert_matches(&self, actual: &Value, what: &str) {
        let fields: [(&str, u64); 10] = [
            ("requests", self.requests),
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_write_tokens", self.cache_write_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
            ("total_tokens", self.total_tokens),
            ("errors", self.errors),
            ("estimated", self.estimated),
            ("unpriced", self.unpriced),
        ];
        for (field, want) in fields {
            assert_eq!(actual[field].as_u64(), Some(want), "{what}: {field} (got {actual})");
        }
        assert_cost(actual["cost_usd"].as_f64().expect("cost_usd"), self.cost_usd, what);
    }
}

// ---------------------------------------------------------------------------
// Reports and time
// ---------------------------------------------------------------------------

/// A completed chat report.
pub fn chat(id: &str, model: &str, t: Tokens, completed_at_ms: i64) -> Value {
    json!({
        "id": id,
        "model": model,
        "input_tokens": t.input,
        "output_tokens": t.output,
        "cache_read_tokens": t.cache_read,
        "cache_write_tokens": t.cache_write,
        "reasoning_tokens": t.reasoning,
        "completed_at": completed_at_ms,
    })
}

/// Sets `key` on a report object.
pub fn with(mut report: Value, key: &str, value: Value) -> Value {
    report.as_object_mut().expect("report object").insert(key.to_owned(), value);
    report
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn floor_to(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("valid instant")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// RFC 3339 with a +02:00 offset.
pub fn rfc3339_plus2(ms: i64) -> String {
    let offset = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("valid instant")
        .with_timezone(&offset)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// A fixed hour start a few hours back, so that a test's minute offsets all
/// lie in the past and inside the default 24 h window.
pub fn hours_ago_aligned(hours: i64) -> i64 {
    floor_to(now_ms() - hours * HOUR_MS, HOUR_MS)
}

/// A small deterministic pseudo-random sequence.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// In `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// RFC 4180 rows (quoted fields, doubled quotes, embedded newlines).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    assert!(!quoted, "unterminated quoted CSV field");
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// CSV rows as maps by header; asserts every row has the header's width.
pub fn csv_maps(text: &str) -> Vec<HashMap<String, String>> {
    let rows = parse_csv(text);
    let (header, body) = rows.split_first().expect("CSV has a header line");
    body.iter()
        .map(|row| {
            assert_eq!(row.len(), header.len(), "CSV row width: {row:?}");
            header.iter().cloned().zip(row.iter().cloned()).collect()
        })
        .collect()
}

pub fn csv_u64(row: &HashMap<String, String>, field: &str) -> u64 {
    row[field]
        .parse()
        .unwrap_or_else(|_| panic!("CSV {field} = {:?} is not an integer", row[field]))
}

pub fn csv_f64(row: &HashMap<String, String>, field: &str) -> f64 {
    row[field].parse().unwrap_or_else(|_| panic!("CSV {field} = {:?} is not a number", row[field]))
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tally ARGS` (60 s at most), with no TALLY_* environment but `env`.
pub async fn run_tally(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut command = tokio::process::Command::new(tally_binary());
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") {
            command.env_remove(name);
        }
    }
    command.env("TALLY_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("tally {args:?} did not finish in 60 s"))
        .expect("run tally");
    CliOutput {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// Asserts that `promtool check metrics` accepts `text`.
/// The value of the sample whose line in `/metrics` text starts with
/// `line_start` (a name, with its labels if any).
pub fn sample_in(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
}

/// The value of one sample of the server's `/metrics` (see `sample_in`).
pub async fn metric_sample(base: &str, line_start: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    sample_in(&text, line_start)
}

pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let prefix = format!("{field}:");
    status
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The Python of `.venv`, with the real SDKs of tests/python/requirements.txt.
#[allow(dead_code)]
pub fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run ./scripts/test, which installs tests/python/requirements.txt",
        venv.display()
    );
    venv
}

/// An API key made with `tally keys create --data-dir` (its text is the
/// last word printed), and its id.
#[allow(dead_code)]
pub struct ApiKey {
    pub id: String,
    pub text: String,
}

/// Makes a key of `scope` for `project` on the data dir; `extra` are more
/// arguments (`--name`, `--expires`, rate limits).
#[allow(dead_code)]
pub fn create_key(dir: &Path, project: &str, scope: &str, extra: &[&str]) -> ApiKey {
    let output = Command::new(tally_binary())
        .args(["keys", "create", "--data-dir"])
        .arg(dir)
        .args(["--project", project, "--scope", scope])
        .args(extra)
        .output()
        .expect("run tally keys create");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tally keys create failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout.split_whitespace().last().expect("a key printed").to_owned();
    assert!(text.starts_with(&format!("tally_{scope}_")), "not a {scope} key: {stdout}");
    let id = text.split('_').nth(2).expect("an id").to_owned();
    ApiKey { id, text }
}

/// `ui/`, once the browser tests' parts are there: `ui/node_modules` with
/// playwright-core, and Chromium (`DASHBOARD_CHROMIUM`, else Debian's).
#[allow(dead_code)]
pub fn browser_ui_dir() -> PathBuf {
    let ui = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "ui/node_modules lacks playwright-core: run `npm ci` in ui/ (./scripts/test does)"
    );
    let chromium =
        std::env::var("DASHBOARD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (./scripts/test does)"
    );
    ui
}
