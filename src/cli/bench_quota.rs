//! `tally bench quota`: gateways' reserve + settle round trips against a
//! server with many budgets defined, and `tally bench ingest --budgets N`'s
//! budget set-up.

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::bench::{Server, Target};

#[derive(Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    target: Target,
    /// Budgets defined before the run (one per user, all enforced).
    #[arg(long, default_value_t = 100)]
    budgets: u64,
    /// Concurrent gateway connections.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of the same load before the measured run (not counted).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
}

/// The load generator's script (wrk: a C client, so that the client takes
/// little of the machine the server runs on).
const WRK_SCRIPT: &str = include_str!("../../benches/quota.lua");

async fn create_budget(
    client: &reqwest::Client,
    url: &str,
    spec: &serde_json::Value,
) -> anyhow::Result<()> {
    let response = client.post(format!("{url}/api/v1/budgets")).json(spec).send().await?;
    if response.status() != 201 {
        bail!("creating budget {}: {}", spec["name"], response.text().await?);
    }
    Ok(())
}

/// Defines `n` budgets over the dimensions the ingest bench's reports
/// carry, as a deployment would: the whole project, each model, team, key
/// and user, and the rest on (user, model) pairs — so that a report counts
/// against about five of them.
pub(super) async fn define_budgets(url: &str, n: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let models = super::bench::MODELS;
    let mut scopes: Vec<(serde_json::Value, &str, &str)> = vec![(json!({}), "cost_usd", "month")];
    scopes.extend(models.iter().map(|m| (json!({"model": m}), "cost_usd", "week")));
    scopes.extend((0..5).map(|t| (json!({"tag.team": format!("team-{t}")}), "tokens", "day")));
    scopes.extend(
        (0..50).map(|k| (json!({"api_key": format!("sk-test-{k}")}), "tokens", "rolling 24h")),
    );
    scopes.extend((0..200).map(|u| (json!({"user": format!("user-{u}")}), "cost_usd", "month")));
    let mut pair = 0u64;
    while (scopes.len() as u64) < n {
        let scope = json!({"user": format!("user-{}", pair % 200),
                           "model": models[(pair / 200 % models.len() as u64) as usize]});
        scopes.push((scope, "cost_usd", "rolling 7d"));
        pair += 1;
    }
    for (i, (scope, metric, period)) in scopes.into_iter().take(n as usize).enumerate() {
        let spec = json!({"name": format!("bench-{i}"), "scope": scope, "metric": metric,
                          "limit": 1e12, "period": period, "mode": "observe"});
        create_budget(&client, url, &spec).await?;
    }
    Ok(())
}

pub async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client = reqwest::Client::new();
    for i in 0..args.budgets {
        let spec = json!({"name": format!("user-{i}-monthly"), "scope": {"user": format!("user-{i}")},
                          "metric": "cost_usd", "limit": 1e9, "period": "month",
                          "mode": "enforce", "fail": "closed"});
        create_budget(&client, &server.url, &spec).await?;
    }
    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(script.path(), WRK_SCRIPT)?;
    let wrk = |seconds: u64| {
        tokio::process::Command::new("wrk")
            .args(["-t2", &format!("-c{}", args.concurrency), &format!("-d{seconds}s")])
            .args(["--timeout", "10s", "--latency", "-s"])
            .arg(script.path())
            .arg(&server.url)
            .env("TALLY_BENCH_USERS", args.budgets.max(1).to_string())
            .output()
    };
    if args.warmup > 0 {
        wrk(args.warmup).await.context("cannot run wrk (Debian package wrk)")?;
    }
    let output = wrk(args.seconds).await.context("cannot run wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    }
    let mut figures = std::collections::HashMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("tally: ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.chunks(2) {
            if let [key, value] = pair {
                figures.insert(key.to_string(), value.parse::<f64>().unwrap_or(f64::NAN));
            }
        }
    }
    let figure = |k: &str| figures.get(k).copied().unwrap_or(f64::NAN);
    if figure("failed") > 0.0 || figure("denied") > 0.0 {
        bail!(
            "{} requests failed and {} reservations were denied:\n{text}",
            figure("failed"),
            figure("denied")
        );
    }
    println!(
        "quota: reserve + settle with {} budgets, {} connections (wrk), {} s after {} s of warm-up",
        args.budgets, args.concurrency, args.seconds, args.warmup
    );
    println!("  throughput      {:.0} round trips/s", figure("settles") / figure("seconds"));
    println!(
        "  per request     p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        figure("p50"),
        figure("p90"),
        figure("p99"),
        figure("p99.9")
    );
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    server.stop().await;
    Ok(())
}
