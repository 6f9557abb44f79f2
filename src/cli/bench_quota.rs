//! `tally bench quota`: gateways' reserve + settle round trips against a
//! server with many budgets defined, and `tally bench ingest --budgets N`'s
//! budget set-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::bench::{Rng, Server, Target, percentile, post_until_taken};

#[derive(Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    target: Target,
    /// Budgets defined before the run (one per user, all enforced).
    #[arg(long, default_value_t = 100)]
    budgets: u64,
    /// Reserve + settle round trips in all.
    #[arg(long, default_value_t = 300_000)]
    round_trips: u64,
    /// Concurrent gateway clients.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Stop after this many seconds even if not all round trips were made.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
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
        let response = client.post(format!("{url}/api/v1/budgets")).json(&spec).send().await?;
        if response.status() != 201 {
            bail!("creating budget {i}: {}", response.text().await?);
        }
    }
    Ok(())
}

pub async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency as usize).build()?;
    for i in 0..args.budgets {
        let spec = json!({"name": format!("user-{i}-monthly"), "scope": {"user": format!("user-{i}")},
                          "metric": "cost_usd", "limit": 1e9, "period": "month",
                          "mode": "enforce", "fail": "closed"});
        let response =
            client.post(format!("{}/api/v1/budgets", server.url)).json(&spec).send().await?;
        if response.status() != 201 {
            bail!("creating budget {i}: {}", response.text().await?);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (client, next, url) = (client.clone(), next.clone(), server.url.clone());
        let (total, users) = (args.round_trips, args.budgets.max(1));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B ^ (worker + 1).wrapping_mul(0x9E37_79B9));
            let (mut reserves, mut settles, mut trips) = (Vec::new(), Vec::new(), Vec::new());
            let reserve_url = format!("{url}/api/v1/quota/reserve");
            let settle_url = format!("{url}/api/v1/quota/settle");
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || Instant::now() > deadline {
                    break;
                }
                let user = format!("user-{}", rng.below(users));
                let t0 = Instant::now();
                let ask = json!({"user": user, "model": "gpt-4o", "estimated_cost_usd": 0.01, "ttl_s": 60});
                let (status, answer) =
                    post_until_taken(&client, &reserve_url, "application/json", ask.to_string()).await?;
                let decision: serde_json::Value = serde_json::from_slice(&answer)?;
                if status != 200 || decision["allowed"] != true {
                    bail!("reserve {n}: {status} {decision}");
                }
                let t1 = Instant::now();
                let settle = json!({"reservation_id": decision["reservation_id"],
                    "usage": {"model": "gpt-4o", "user": user, "input_tokens": 500 + rng.below(2000),
                              "output_tokens": 1 + rng.below(500)}});
                let (status, answer) =
                    post_until_taken(&client, &settle_url, "application/json", settle.to_string()).await?;
                if status != 200 {
                    bail!("settle {n}: {status} {}", String::from_utf8_lossy(&answer));
                }
                let t2 = Instant::now();
                reserves.push((t1 - t0).as_secs_f64() * 1000.0);
                settles.push((t2 - t1).as_secs_f64() * 1000.0);
                trips.push((t2 - t0).as_secs_f64() * 1000.0);
            }
            anyhow::Ok((reserves, settles, trips))
        }));
    }
    let (mut reserves, mut settles, mut trips) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (r, s, t) = task.await??;
        reserves.extend(r);
        settles.extend(s);
        trips.extend(t);
    }
    let seconds = started.elapsed().as_secs_f64();
    for v in [&mut reserves, &mut settles, &mut trips] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "quota: {} reserve + settle round trips, {} budgets, {} concurrent clients",
        trips.len(),
        args.budgets,
        args.concurrency
    );
    println!("  throughput      {:.0} round trips/s", trips.len() as f64 / seconds);
    for (what, v) in [("reserve", &reserves), ("settle", &settles), ("round trip", &trips)] {
        println!(
            "  {what:<15} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    server.stop().await;
    Ok(())
}
