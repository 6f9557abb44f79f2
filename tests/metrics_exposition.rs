//! `GET /metrics` against a real server: `promtool check metrics` accepts
//! it, the LLM counters carry the ledger's exact totals, and a real
//! Prometheus server scraping Tally answers a PromQL query with them.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, client, ingest, now_ms, promtool_check, with};
use serde_json::{Value, json};

/// Usage with users, keys, streaming, latency and TTFT: 30 reports, 3 users.
fn reports() -> Value {
    let t = now_ms() - 5_000;
    let reports: Vec<Value> = (0..30)
        .map(|i| {
            let mut r = common::chat(&format!("m{i}"), "gpt-4o", common::tokens(100, 10), t);
            r = with(r, "user", json!(format!("user-{}", i % 3)));
            r = with(r, "api_key", json!(format!("sk-{}", i % 3)));
            r = with(r, "provider", json!("openai"));
            r = with(r, "streaming", json!(i % 2 == 0));
            r = with(r, "duration_ms", json!(300 + i * 100));
            r = with(r, "ttft_ms", json!(50 + i));
            if i % 10 == 0 {
                r = with(r, "status", json!("error"));
            }
            r
        })
        .collect();
    Value::Array(reports)
}

async fn scrape(base: &str) -> (String, String) {
    let response = client().get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn sum_of(text: &str, name: &str, must_contain: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(must_contain))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn promtool_accepts_the_exposition_and_counters_match_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[("TALLY_METRICS__TOP_N", "2")]);
    let base = server.url();
    // Before any traffic the exposition is already valid.
    let (content_type, empty) = scrape(base).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    promtool_check(&empty);

    ingest(base, &reports()).await;
    let reply =
        common::post_usage(base, &json!([{"id": "m0", "model": "gpt-4o"}, {"model": ""}])).await;
    assert_eq!(reply.json["duplicates"], 1);
    // A scrape picks the top spenders; later usage shows in their series.
    let _ = scrape(base).await;
    ingest(
        base,
        &json!([with(
            with(
                common::chat("late", "gpt-4o", common::tokens(100, 10), now_ms()),
                "user",
                json!("user-0")
            ),
            "api_key",
            json!("sk-0")
        )]),
    )
    .await;
    let (_, text) = scrape(base).await;
    promtool_check(&text);

    let model = "project=\"default\",model=\"gpt-4o\",provider=\"openai\"";
    // The late report has no provider: the catalog price it matched names one.
    assert_eq!(sum_of(&text, "tally_llm_requests_total{", model), 31.0);
    assert_eq!(sum_of(&text, "tally_llm_tokens_total{", "type=\"input\""), 3_100.0);
    assert_eq!(sum_of(&text, "tally_llm_tokens_total{", "type=\"output\""), 310.0);
    assert_eq!(sum_of(&text, "tally_llm_requests_total{", "status=\"error\""), 3.0);
    let usage = common::summary(base, &[("since", "1h")]).await;
    let cost = sum_of(&text, "tally_llm_cost_usd_total{", "");
    let expected = usage["total"]["cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() <= 1e-9 * expected, "{cost} vs {expected}");
    // Durations: 15 streaming and 15 not, all between 0.3 and 3.2 s.
    assert_eq!(
        sum_of(&text, "tally_llm_request_duration_seconds_count{", "streaming=\"true\""),
        15.0
    );
    assert_eq!(sum_of(&text, "tally_llm_request_duration_seconds_bucket{", "le=\"0.16\""), 0.0);
    assert_eq!(sum_of(&text, "tally_llm_request_duration_seconds_bucket{", "le=\"5.12\""), 30.0);
    assert_eq!(sum_of(&text, "tally_llm_time_to_first_token_seconds_count{", ""), 30.0);
    // Top 2 users by cost get series; the third is folded into __other__.
    let users = sum_of(&text, "tally_llm_user_requests_total{", "");
    assert_eq!(users, 31.0, "every request, once, across users and __other__");
    assert_eq!(
        value(&text, "tally_llm_user_requests_total{project=\"default\",user=\"__other__\"}"),
        30.0
    );
    assert!(text.contains("user=\"user-0\"") || text.contains("user=\"user-1\""));
    // Seed 000's gateway shape.
    assert_eq!(sum_of(&text, "tally_gateway_request_total{", ""), 31.0);
    assert_eq!(
        value(&text, "tally_gateway_request_total{type=\"streaming\",status=\"error\"}"),
        3.0
    );
    // Self-metrics.
    assert_eq!(
        value(&text, "tally_ingest_records_total{endpoint=\"usage\",outcome=\"accepted\"}"),
        31.0
    );
    assert_eq!(
        value(&text, "tally_ingest_records_total{endpoint=\"usage\",outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "tally_ingest_records_total{endpoint=\"usage\",outcome=\"rejected\"}"),
        1.0
    );
    assert!(value(&text, "tally_durable_append_seconds_count") >= 3.0);
    assert_eq!(value(&text, "tally_build_info{"), 1.0);
    assert!(text.contains("tally_store_rows{table=\"calls\"}"));
}

/// A Prometheus server scraping `target` every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port: bind one, let it go, hand it to Prometheus.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/test installs it)");
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_token_total() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();
    ingest(base, &reports()).await;
    let prometheus = Prometheus::start(base.trim_start_matches("http://"));
    let query = "sum(tally_llm_tokens_total{type=\"input\",model=\"gpt-4o\"})";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer: Option<Value> = match client()
            .get(format!("{}/api/v1/query", prometheus.url))
            .query(&[("query", query)])
            .send()
            .await
        {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let value = answer
            .as_ref()
            .and_then(|a| a["data"]["result"][0]["value"][1].as_str().map(str::to_owned));
        if value.as_deref() == Some("3000") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the total; last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
