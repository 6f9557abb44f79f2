//! `tally bench series`: what many distinct users cost the server's memory.
//!
//! Sends usage reports that each carry their own user, API key, route and
//! two tag values (the shape of traffic from many distinct end users), so
//! that nearly every report makes new rollup series, and prints the series
//! made, resident memory per series, peak RSS, how the server answers a
//! summary grouped by user, and what a restart costs (time to listen and
//! memory after it).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::bench::{Server, Target, post_until_taken};

#[derive(Args)]
pub struct SeriesArgs {
    /// Reports to send, each with its own user, key, route and tag values.
    #[arg(long, default_value_t = 300_000)]
    reports: u64,
    /// Reports per request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Data dir for the server (kept, so the restart reads it back)
    /// [default: a new temp dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `VmRSS` or `VmHWM` of `pid`, in KiB.
fn proc_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
}

/// A gauge's value from the server's `/metrics`.
async fn gauge(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = client.get(format!("{url}/metrics")).send().await?.text().await?;
    let prefix = format!("{name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("no {name} on /metrics"))?;
    Ok(line[prefix.len()..].trim().parse()?)
}

/// One batch of reports, report `first` onwards, each of its own user.
fn batch_body(first: u64, size: u64, now: i64) -> String {
    let mut out = String::with_capacity(size as usize * 300);
    out.push('[');
    for n in first..first + size {
        if n > first {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"id":"s-{n}","model":"gpt-4o-mini","provider":"openai","user":"user-{n}","api_key":"sk-{n:016x}","route":"/v1/tenant/{n}/chat","tags":{{"team":"team-{n}","feature":"f-{n}"}},"input_tokens":120,"output_tokens":30,"completed_at":{}}}"#,
            now - (n % 60_000) as i64
        );
    }
    out.push(']');
    out
}

pub async fn series(args: SeriesArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let target = Target { server: None, data_dir: Some(dir.clone()) };
    let server = Server::start(&target).await?;
    let pid = server.pid().context("the bench starts its own server")?;
    let client = reqwest::Client::new();
    let url = server.url.clone();
    let series_before = gauge(&client, &url, "tally_series").await?;
    let rss_before = proc_kib(pid, "VmRSS:")?;

    let started = Instant::now();
    let now = crate::time::now_ms();
    let mut sent = 0;
    while sent < args.reports {
        let size = args.batch.min(args.reports - sent);
        let endpoint = format!("{url}/api/v1/usage");
        let (status, answer) =
            post_until_taken(&client, &endpoint, "application/json", batch_body(sent, size, now))
                .await?;
        if status != 200 {
            bail!("batch at {sent}: {status} {}", String::from_utf8_lossy(&answer));
        }
        sent += size;
    }
    let elapsed = started.elapsed().as_secs_f64();
    client.post(format!("{url}/api/v1/admin/flush")).send().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let series_after = gauge(&client, &url, "tally_series").await?;
    let rss_after = proc_kib(pid, "VmRSS:")?;
    let peak = proc_kib(pid, "VmHWM:")?;
    let made = (series_after - series_before).max(1.0);
    println!("reports                {sent} in {elapsed:.1} s ({:.0}/s)", sent as f64 / elapsed);
    println!("series made            {made:.0} ({:.1} per report)", made / sent as f64);
    println!(
        "resident memory        {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "bytes per series       {:.0} (resident growth / series made)",
        (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / made
    );
    for key in ["tally_usage_overflow_total", "tally_usage_overflow_series"] {
        if let Ok(value) = gauge(&client, &url, key).await {
            println!("{key:<23}{value}");
        }
    }

    let started = Instant::now();
    let response =
        client.get(format!("{url}/api/v1/usage/summary?since=2h&group_by=user")).send().await?;
    let status = response.status();
    let bytes = response.bytes().await?.len();
    println!(
        "summary by user        {status} in {:.0} ms, {bytes} bytes, peak RSS now {:.1} MiB",
        started.elapsed().as_secs_f64() * 1000.0,
        proc_kib(pid, "VmHWM:")? as f64 / 1024.0
    );
    server.stop().await;

    // After a restart the series are all that was loaded: resident memory
    // then, less an empty server's, is what the series cost (the growth
    // above also holds the store's page caches and what the allocator kept
    // of the ingest's transient memory).
    let started = Instant::now();
    let server = Server::start(&target).await?;
    let listening = started.elapsed().as_secs_f64();
    let pid = server.pid().context("own server")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = gauge(&client, &server.url, "tally_series").await?;
    let rss = proc_kib(pid, "VmRSS:")?;
    println!(
        "restart                listening after {listening:.2} s, resident {:.1} MiB, peak {:.1} MiB, series {loaded:.0}",
        rss as f64 / 1024.0,
        proc_kib(pid, "VmHWM:")? as f64 / 1024.0,
    );
    println!(
        "bytes per series kept  {:.0} (resident after restart less an empty server's, per series)",
        (rss.saturating_sub(rss_before) as f64 * 1024.0) / loaded.max(1.0)
    );
    server.stop().await;
    Ok(())
}
