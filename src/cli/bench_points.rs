//! `tally bench points`: tagged metric points posted as JSON arrays from
//! concurrent clients; prints points/s (each batch durably acknowledged),
//! batch latency, the server's peak RSS, and the latency of a 24 h p99
//! query across 1,000 series.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use super::bench::{Rng, Server, Target, percentile, post_until_taken};

#[derive(Args)]
pub struct PointsArgs {
    #[command(flatten)]
    target: Target,
    /// Points to send in all.
    #[arg(long, default_value_t = 5_000_000)]
    points: u64,
    /// Points per request.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Queries timed after the load.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Point times are spread over this many seconds before now (live
    /// traffic: a minute; a backfill: a day).
    #[arg(long, default_value_t = 60)]
    spread_s: u64,
    /// Before timing `/metrics`, send usage reports for this many distinct
    /// LLM series (models), so the exposition has that many of each family.
    #[arg(long, default_value_t = 10_000)]
    llm_series: u64,
}

/// 1,000 series of one name (100 workers × 10 shards); times spread over
/// `spread_ms` before `now`.
fn batch_body(batch: u64, size: u64, now: i64, spread_ms: u64) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (batch + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut out = String::with_capacity(size as usize * 110);
    out.push('[');
    for i in 0..size {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"name":"op_time","value":{}.{},"tags":{{"worker":"w{}","shard":"s{}"}},"timestamp":{}}}"#,
            rng.below(2000),
            rng.below(1000),
            rng.below(100),
            rng.below(10),
            now - rng.below(spread_ms.max(1)) as i64,
        );
    }
    out.push(']');
    out
}

pub async fn points(args: PointsArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency as usize).build()?;
    let now = crate::time::now_ms();
    let batches = args.points.div_ceil(args.batch);
    println!(
        "points: {} points in JSON batches of {}, {} concurrent clients, 1,000 series, times over the last {} s",
        args.points, args.batch, args.concurrency, args.spread_s
    );
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, sent) = (client.clone(), next.clone(), sent.clone());
        let endpoint = format!("{}/api/v1/points", server.url);
        let (total, batch, spread_ms) = (args.points, args.batch, args.spread_s * 1000);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= batches {
                    break;
                }
                let size = batch.min(total - n * batch);
                let body = batch_body(n, size, now, spread_ms);
                let t0 = Instant::now();
                let (status, answer) =
                    post_until_taken(&client, &endpoint, "application/json", body).await?;
                let answer: serde_json::Value = serde_json::from_slice(&answer)?;
                if status != 200 || answer["accepted"].as_u64() != Some(size) {
                    bail!("batch {n}: {status} {answer}");
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                sent.fetch_add(size, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    latencies.sort_by(f64::total_cmp);
    println!("  throughput      {:.0} points/s (durably acknowledged)", sent as f64 / seconds);
    println!(
        "  batch latency   p50 {:.1} ms  p99 {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    // All 1,000 series merged into 100 groups (by worker), hourly p99: right
    // after the load (its last bins still open in memory), then once they
    // are flushed to the store.
    let query = format!(
        "{}/api/v1/metrics/query?name=op_time&since=24h&step=1h&agg=p99&group_by=worker",
        server.url
    );
    for moment in ["right after the load", "after a flush"] {
        if moment == "after a flush" {
            client.post(format!("{}/api/v1/admin/flush", server.url)).send().await?;
        }
        let mut times = Vec::new();
        for _ in 0..args.queries {
            let t0 = Instant::now();
            let body: serde_json::Value = client.get(&query).send().await?.json().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            if body["groups"].as_array().map(Vec::len) != Some(100) {
                bail!("query {query}: expected 100 groups, got {}", body["groups"]);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  24 h p99 by hour over 1,000 series (grouped by worker), {moment}: p50 {:.2} ms  p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    // LLM series for the exposition: one report per model, 1,000 a request.
    for first in (0..args.llm_series).step_by(1000) {
        let reports: Vec<serde_json::Value> = (first..(first + 1000).min(args.llm_series))
            .map(|i| {
                serde_json::json!({"model": format!("bench-model-{i}"), "input_tokens": 10,
                    "output_tokens": 2, "duration_ms": 800, "ttft_ms": 90, "user": format!("u{}", i % 500)})
            })
            .collect();
        let response =
            client.post(format!("{}/api/v1/usage", server.url)).json(&reports).send().await?;
        if !response.status().is_success() {
            bail!("usage reports for /metrics: {}", response.status());
        }
    }
    let mut renders = Vec::new();
    let mut lines = 0;
    for _ in 0..10 {
        let t0 = Instant::now();
        let text = client.get(format!("{}/metrics", server.url)).send().await?.text().await?;
        renders.push(t0.elapsed().as_secs_f64() * 1000.0);
        lines = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    renders.sort_by(f64::total_cmp);
    println!(
        "  /metrics        {} LLM series, {lines} sample lines: p50 {:.1} ms  max {:.1} ms",
        args.llm_series,
        percentile(&renders, 0.5),
        renders.last().copied().unwrap_or(f64::NAN)
    );
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    Ok(())
}
