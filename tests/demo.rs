//! `tally demo` end to end: the real binary on port 0 and a temporary data
//! dir of its own, for about a minute. Through the public API: the ledger
//! has today's traffic and a week of history with the promised cast, a
//! trace of each agent opens with its LLM spans carrying their messages,
//! the gateway's metrics and the retrieval service's points arrived, the
//! eval budget crossed 80 % and its alert was delivered to the demo's own
//! webhook receiver (which printed it). Then in headless Chromium
//! (`ui/e2e/demo.mjs`): the Overview shows the traffic and a trace of each
//! agent opens with its LLM span's messages. Ctrl-C then stops the demo
//! cleanly and removes its data dir.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DAY_MS, get_ok, tally_binary};
use serde_json::Value;

/// Everything must be seen within this long after the demo starts.
const DEADLINE: Duration = Duration::from_secs(100);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const AGENTS: [&str; 3] = ["support", "research", "coding"];
const EVALS_BUDGET: &str = "evals-key-24h";

/// A running `tally demo`; SIGKILLed (and its data dir removed) if the
/// test ends early.
struct Demo {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Demo {
    fn start(rate: &str) -> Demo {
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = log_dir.path().join("demo.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(tally_binary());
        command.args(["demo", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--rate", rate]);
        for (name, _) in std::env::vars() {
            if name.starts_with("TALLY_") {
                command.env_remove(name);
            }
        }
        command.env("TALLY_LOG", "warn");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tally demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Demo { child: Some(child), lines, log, _log_dir: log_dir }
    }

    fn stdout(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first stdout line starting with `prefix`, without it.
    fn line(&self, prefix: &str) -> Option<String> {
        self.stdout().iter().find_map(|l| l.trim_start().strip_prefix(prefix).map(str::to_owned))
    }

    /// The data dir the demo printed.
    fn data_dir(&self) -> Option<PathBuf> {
        let line = self.line("data dir")?;
        let path = line.trim().split(" (").next()?.trim();
        Some(PathBuf::from(path))
    }

    fn report(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout().join("\n"), self.stderr())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(dir) = self.data_dir() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// What is still missing, or `None` when the demo shows everything.
async fn missing(base: &str, demo: &Demo) -> Option<String> {
    let now = common::now_ms();
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let week_ago = now - 7 * DAY_MS;

    // Today's traffic, and the week of history.
    let today_text = today.to_string();
    let summary = get_ok(base, "/api/v1/usage/summary", &[("from", &today_text)]).await;
    if summary["total"]["requests"].as_u64().unwrap_or(0) == 0 {
        return Some("no usage today".into());
    }
    let week = week_ago.to_string();
    let series = get_ok(base, "/api/v1/usage/series", &[("from", &week), ("step", "1d")]).await;
    let days_with_traffic = series["groups"][0]["points"]
        .as_array()
        .map(|points| points.iter().filter(|p| p["requests"].as_u64().unwrap_or(0) > 0).count())
        .unwrap_or(0);
    if days_with_traffic < 7 {
        return Some(format!("usage on {days_with_traffic} of the last 7 days: {series}"));
    }
    let earlier =
        get_ok(base, "/api/v1/usage/summary", &[("from", &week), ("to", &today_text)]).await;
    if earlier["total"]["requests"].as_u64().unwrap_or(0) == 0 {
        return Some("no usage before today".into());
    }

    // The cast: models, providers, users, API keys, teams, routes.
    for (dimension, at_least) in
        [("model", 6), ("provider", 3), ("user", 20), ("api_key", 5), ("tag.team", 3), ("route", 2)]
    {
        let grouped =
            get_ok(base, "/api/v1/usage/summary", &[("from", &week), ("group_by", dimension)])
                .await;
        let groups = grouped["groups"].as_array().map_or(0, Vec::len);
        if groups < at_least {
            return Some(format!("{groups} values of {dimension}, want {at_least}"));
        }
    }
    let totals = &earlier["total"];
    for field in
        ["cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "errors", "estimated"]
    {
        if totals[field].as_f64().unwrap_or(0.0) <= 0.0 {
            return Some(format!("no {field} in the week's totals: {totals}"));
        }
    }
    let error_share = totals["errors"].as_f64().unwrap() / totals["requests"].as_f64().unwrap();
    assert!((0.01..0.08).contains(&error_share), "error share {error_share}: {totals}");
    if totals["ttft_ms"]["p50"].as_f64().unwrap_or(0.0) <= 0.0 {
        return Some(format!("no time to first token: {totals}"));
    }

    // A trace of each agent, with LLM spans carrying their messages.
    let mut kinds = BTreeSet::new();
    for agent in AGENTS {
        let filter = format!("attr.gen_ai.agent.name={agent}");
        let (key, value) = filter.split_once('=').unwrap();
        let list =
            get_ok(base, "/api/v1/traces", &[("since", "24h"), (key, value), ("limit", "5")]).await;
        let Some(id) = list["traces"][0]["trace_id"].as_str() else {
            return Some(format!("no {agent} trace"));
        };
        let trace = get_ok(base, &format!("/api/v1/traces/{id}"), &[]).await;
        let mut spans = Vec::new();
        collect(&trace["spans"], &mut spans);
        kinds.extend(spans.iter().filter_map(|s| s["kind"].as_str().map(str::to_owned)));
        let answered = spans
            .iter()
            .filter(|s| s["kind"] == "llm" && s["status"] != "error")
            .map(|s| check_messages(agent, s))
            .collect::<Vec<_>>();
        assert!(!answered.is_empty(), "{agent} trace {id} has no answered LLM span: {trace}");
        assert!(
            spans
                .iter()
                .any(|s| s["kind"] == "agent" && s["attributes"]["gen_ai.agent.name"] == agent),
            "{agent} trace {id} has no agent span"
        );
    }
    for kind in ["agent", "llm", "tool", "retrieval", "embedding", "memory"] {
        assert!(kinds.contains(kind), "no {kind} span in the agents' traces: {kinds:?}");
    }

    // The gateway's metrics and the retrieval service's points.
    let names = get_ok(base, "/api/v1/metrics/names", &[]).await;
    let names: BTreeSet<&str> = names["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    for name in [
        "request_total",
        "streaming_request_duration_seconds",
        "concurrency_slots_in_use",
        "processing_time",
    ] {
        if !names.contains(name) {
            return Some(format!("no metric {name}: {names:?}"));
        }
    }

    // The eval budget crossed 80 %, and the alert reached the receiver.
    let budgets = get_ok(base, "/api/v1/budgets", &[]).await;
    let Some(budget) =
        budgets["budgets"].as_array().into_iter().flatten().find(|b| b["name"] == EVALS_BUDGET)
    else {
        return Some("no eval budget yet".into());
    };
    let budget_id = budget["id"].as_str().expect("budget id");
    let alerts = get_ok(base, "/api/v1/alerts", &[("budget_id", budget_id)]).await;
    let crossed = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["threshold"].as_f64() == Some(80.0));
    let Some(crossed) = crossed else {
        return Some(format!("the eval budget has not crossed 80 %: {alerts}"));
    };
    if crossed["deliveries"][0]["status"] != "delivered" {
        return Some(format!("the 80 % alert is not delivered yet: {crossed}"));
    }
    let printed = format!("budget \"{EVALS_BUDGET}\" crossed 80 %");
    if !demo.stdout().iter().any(|l| l.starts_with("webhook:") && l.contains(&printed)) {
        return Some("the receiver has not printed the 80 % alert".into());
    }
    assert!(
        demo.stdout().iter().all(|l| !l.contains("bad signature")),
        "an alert failed its signature check:\n{}",
        demo.report()
    );
    None
}

/// The Overview and each agent's trace in headless Chromium.
fn in_the_browser(base: &str) {
    let ui = common::browser_ui_dir();
    let output = Command::new("node")
        .current_dir(&ui)
        .args(["e2e/demo.mjs", "--url", base, "--agents", &AGENTS.join(",")])
        .stdin(Stdio::null())
        .output()
        .expect("run node (Node.js 20 or newer)");
    let out = String::from_utf8_lossy(&output.stdout);
    println!("{out}");
    assert!(
        output.status.success(),
        "the demo in Chromium failed ({}):\n{out}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every span of a trace detail's tree, depth first.
fn collect(spans: &Value, out: &mut Vec<Value>) {
    for span in spans.as_array().into_iter().flatten() {
        out.push(span.clone());
        collect(&span["children"], out);
    }
}

/// The span carries GenAI input and output messages whose text reads as
/// prose (several distinct words), not filler.
fn check_messages(agent: &str, span: &Value) {
    let attributes = &span["attributes"];
    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
        let text =
            attributes[key].as_str().unwrap_or_else(|| panic!("{agent}: {key} missing: {span}"));
        let messages: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{agent}: {key}: {e}"));
        let messages =
            messages.as_array().unwrap_or_else(|| panic!("{agent}: {key} is not a list"));
        assert!(!messages.is_empty(), "{agent}: {key} is empty");
        for message in messages {
            assert!(
                message["role"].is_string(),
                "{agent}: {key}: a message without a role: {message}"
            );
            let parts = message["parts"].as_array().expect("parts");
            let words: Vec<&str> = parts
                .iter()
                .filter_map(|p| p["content"].as_str())
                .flat_map(str::split_whitespace)
                .collect();
            if parts.iter().all(|p| p["type"] == "text") {
                let distinct: BTreeSet<&str> = words.iter().copied().collect();
                assert!(
                    words.len() >= 6 && distinct.len() * 2 >= words.len().min(40),
                    "{agent}: {key}: not prose: {message}"
                );
            }
        }
    }
    assert!(
        span["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{agent}: an LLM span without tokens: {span}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_history_live_traces_and_a_budget_alert() {
    let started = Instant::now();
    let mut demo = Demo::start("0.2");
    let base = loop {
        if let Some(url) = demo.line("tally listening on http://") {
            break format!("http://{url}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo did not start:\n{}",
            demo.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let data_dir = loop {
        if let Some(dir) = demo.data_dir() {
            break dir;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no data dir printed:\n{}",
            demo.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(data_dir.is_dir(), "the printed data dir {} does not exist", data_dir.display());
    let dashboard = demo.line("dashboard").expect("the dashboard URL is printed");
    assert_eq!(dashboard.trim(), format!("{base}/"));

    // Wait for the history, then poll until everything is there.
    let mut last = String::new();
    loop {
        if demo.line("History:").is_some() {
            match missing(&base, &demo).await {
                None => break,
                Some(what) => last = what,
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "within {DEADLINE:?} the demo did not show everything; last missing: {last}\n{}",
            demo.report()
        );
        if let Some(child) = demo.child.as_mut() {
            assert!(child.try_wait().unwrap().is_none(), "the demo exited:\n{}", demo.report());
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    in_the_browser(&base);
    let tour: Vec<String> =
        demo.stdout().into_iter().filter(|l| l.trim_start().starts_with(['1', '2', '3'])).collect();
    assert_eq!(tour.len(), 3, "a three-line tour:\n{}", demo.report());

    // Ctrl-C stops it cleanly and takes its temporary data dir away.
    let mut child = demo.child.take().expect("running");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stop = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if stop.elapsed() > STOP_TIMEOUT {
            let _ = child.kill();
            panic!("the demo did not stop within {STOP_TIMEOUT:?} of SIGINT:\n{}", demo.report());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "the demo exited with {exit}:\n{}", demo.report());
    assert!(!data_dir.exists(), "the temporary data dir {} is still there", data_dir.display());
    assert!(
        !demo.stderr().contains("rejected") && !demo.stderr().contains("refused"),
        "Tally refused some of the demo's data:\n{}",
        demo.stderr()
    );
}
