//! `tally demo`: a server with a week of made-up but realistic traffic and
//! more arriving live, so that the dashboard and the API have something to
//! show. It runs the same server as `tally serve` (on a temporary data dir
//! unless told otherwise) and feeds it only through the public endpoints,
//! over HTTP, as gateways and OpenTelemetry SDKs would: first the last 7
//! days, then live traffic at `--rate`, until Ctrl-C.

mod agents;
mod budgets;
mod calls;
mod cast;
mod feed;
mod gateway_metrics;
mod prose;
mod traffic;
mod world;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::{mpsc, watch};

use self::feed::{Feed, FeedError};
use self::traffic::{Bodies, Generator, Plan, Telemetry};
use self::world::World;
use crate::config::{Config, Overrides};
use crate::time::now_ms;

#[derive(Args)]
pub struct DemoArgs {
    /// HTTP listen address: API, OTLP/HTTP and the dashboard
    /// [default: 127.0.0.1:4318].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Data directory to keep the demo's data in [default: a temporary
    /// directory, removed when the demo stops].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model calls per second in the busiest hour of the day; quieter hours
    /// (and weekends) get fewer, in the week of history as in the live
    /// traffic.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// How far back the history goes.
const HISTORY_DAYS: i64 = 7;
/// Live traffic is generated and sent this often…
const TICK: Duration = Duration::from_secs(1);
/// …and the gateway's metrics and the retrieval service's points this often.
const TELEMETRY_EVERY_MS: i64 = 10_000;
/// Most live traffic made up in one tick after a stall, so that a slow
/// moment is never followed by a burst.
const MAX_TICK_MS: i64 = 5_000;
/// Stretches of history generated ahead of the sender.
const HISTORY_QUEUE: usize = 2;
/// Stretches of history sent at once.
const HISTORY_SENDERS: usize = 2;
const MAX_RATE: f64 = 200.0;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= MAX_RATE) {
        bail!("--rate: must be above 0 and at most {MAX_RATE}, got {}", args.rate);
    }
    let (data_dir, temporary) = match args.data_dir {
        Some(dir) => (dir, None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .context("cannot make a temporary data dir")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides {
        http: args.http,
        grpc: args.grpc,
        data_dir: Some(data_dir.clone()),
        ..Overrides::default()
    };
    let mut config = Config::load(None, &env, &overrides)?;
    // The demo's budgets alert a receiver the demo runs on loopback; only
    // this server, for the demo, may deliver there.
    config.alerts.allow_private_targets = true;

    let (stop_tx, stop) = watch::channel(false);
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let (hook, receiver) = budgets::start_receiver(secret.clone(), stop.clone()).await?;

    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let mut server_stop = stop.clone();
    let mut server = tokio::spawn(super::serve::serve(
        config,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
        move |bound| {
            let _ = ready_tx.send(bound);
        },
    ));
    let signal_stop = stop_tx.clone();
    tokio::spawn(async move {
        super::serve::shutdown_signal().await;
        let _ = signal_stop.send(true);
    });
    let Ok(bound) = ready.await else {
        // The server stopped before it listened: say why.
        let _ = stop_tx.send(true);
        let _ = receiver.await;
        return match server.await {
            Ok(Err(err)) => Err(err),
            _ => Err(anyhow::anyhow!("the server did not start")),
        };
    };
    let ip = match bound.http.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let url = format!("http://{}/", SocketAddr::new(ip, bound.http.port()));
    println!();
    println!("Tally demo: a week of LLM traffic, and more arriving live.");
    match &temporary {
        Some(_) => println!("  data dir   {} (removed when the demo stops)", data_dir.display()),
        None => println!("  data dir   {}", data_dir.display()),
    }
    println!("  dashboard  {url}");
    println!("  OTLP       {} (HTTP), {} (gRPC)", url.trim_end_matches('/'), bound.grpc);
    println!("  Ctrl-C stops the demo.");

    let feed = Feed::new(url.trim_end_matches('/').to_owned(), stop.clone())?;
    let mut driver = tokio::spawn(drive(feed, args.rate, hook, secret, url));
    // The driver ends only when the demo stops or its traffic fails; the
    // server only when the demo stops or it fails.
    let outcome = tokio::select! {
        served = &mut server => {
            let _ = stop_tx.send(true);
            let _ = (&mut driver).await;
            flatten(served)
        }
        driven = &mut driver => {
            let _ = stop_tx.send(true);
            let served = flatten(server.await);
            match driven {
                Ok(Err(err)) if !matches!(err.downcast_ref::<FeedError>(), Some(FeedError::Stopped)) => {
                    Err(err.context("the demo's traffic stopped"))
                }
                Err(err) => Err(anyhow::anyhow!("the demo's traffic failed: {err}")),
                _ => served,
            }
        }
    };
    let _ = receiver.await;
    drop(temporary);
    outcome
}

fn flatten(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match joined {
        Ok(result) => result,
        Err(err) => Err(anyhow::anyhow!("the server failed: {err}")),
    }
}

/// History, budgets, the tour, then live traffic until stopped.
async fn drive(
    feed: Feed,
    rate: f64,
    hook: String,
    secret: String,
    url: String,
) -> anyhow::Result<()> {
    let started = now_ms();
    let world = World::new(started);
    let seed = started as u64;
    let mut generator = Generator::new(world.clone(), rate, seed);
    let history = feed.get("/api/v1/usage/summary?since=7d").await?;
    if history["total"]["requests"].as_u64().unwrap_or(0) > 0 {
        println!("The data dir holds traffic already: no history is added.");
    } else {
        generator = backfill(&feed, generator, started).await?;
    }
    let (evals, engineering) = budgets::create(&feed, &hook, &secret).await?;
    println!(
        "Budgets: \"{}\" ({}) at {:.0} % of ${:.2}; \"{}\" ({}, enforced) at {:.0} % of ${:.2}, crossing 80 % in about {:.0} s.",
        engineering.name,
        engineering.period,
        engineering.percent(),
        engineering.limit,
        evals.budget.name,
        evals.budget.period,
        evals.budget.percent(),
        evals.budget.limit,
        budgets::CROSSING_AFTER_S,
    );
    print_tour(&feed, &url).await;
    let evals_feed = feed.clone();
    let evals_job = tokio::spawn(async move {
        if let Err(err) = budgets::run_evals(evals_feed, evals, world, seed ^ 0xE7A1).await
            && !matches!(err.downcast_ref::<FeedError>(), Some(FeedError::Stopped))
        {
            tracing::warn!("the eval job stopped: {err:#}");
        }
    });
    let live = live(&feed, &mut generator, started).await;
    evals_job.abort();
    live.map_err(anyhow::Error::from)
}

/// Sends the last `HISTORY_DAYS` days of traffic, an hour at a time: made
/// on a thread of its own, at most `HISTORY_QUEUE` hours ahead of the
/// `HISTORY_SENDERS` hours being sent.
async fn backfill(feed: &Feed, generator: Generator, now: i64) -> anyhow::Result<Generator> {
    println!("Adding the last {HISTORY_DAYS} days of history…");
    let clock = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Bodies>(HISTORY_QUEUE);
    let stop = feed.clone();
    let maker = tokio::task::spawn_blocking(move || {
        let mut generator = generator;
        let first = (now - HISTORY_DAYS * DAY_MS).div_euclid(HOUR_MS) * HOUR_MS;
        let mut from = now - HISTORY_DAYS * DAY_MS;
        while from < now && !stop.stopping() {
            let to = (first + ((from - first) / HOUR_MS + 1) * HOUR_MS).min(now);
            let age = now - to;
            // Every run of the last two hours is traced, some of the rest
            // of the day's, few before (head sampling keeps history light;
            // the gateway reports every call either way).
            let traced = match age {
                a if a < 2 * HOUR_MS => 1.0,
                a if a < DAY_MS => 0.3,
                _ => 0.05,
            };
            let interval = if age < 6 * HOUR_MS { 60_000 } else { 300_000 };
            let mut telemetry = Telemetry::new(interval);
            let mut bodies =
                generator.stretch(from, to, Plan { traced, nightly_evals: true }, &mut telemetry);
            bodies.extend(generator.telemetry_bodies(telemetry, from, to));
            if tx.blocking_send(bodies).is_err() {
                break;
            }
            from = to;
        }
        generator
    });
    let senders = std::sync::Arc::new(tokio::sync::Semaphore::new(HISTORY_SENDERS));
    let mut sending = tokio::task::JoinSet::new();
    let (mut calls, mut runs, mut traced) = (0, 0, 0);
    while let Some(bodies) = rx.recv().await {
        (calls, runs, traced) =
            (calls + bodies.calls, runs + bodies.runs, traced + bodies.traced_runs);
        let permit = senders.clone().acquire_owned().await.context("sender slots")?;
        let feed = feed.clone();
        sending.spawn(async move {
            let _permit = permit;
            feed.deliver(bodies).await
        });
        while let Some(done) = sending.try_join_next() {
            done.context("a history sender failed")??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done.context("a history sender failed")??;
    }
    let generator = maker.await.context("the history maker failed")?;
    if feed.stopping() {
        return Err(FeedError::Stopped.into());
    }
    println!(
        "History: {} model calls and {} agent runs ({} traced) over {HISTORY_DAYS} days, sent in {:.1} s.",
        thousands(calls),
        thousands(runs),
        thousands(traced),
        clock.elapsed().as_secs_f64()
    );
    Ok(generator)
}

/// Live traffic, a tick at a time, until stopped.
async fn live(feed: &Feed, generator: &mut Generator, since: i64) -> Result<(), FeedError> {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = since;
    let mut telemetry = Telemetry::new(TELEMETRY_EVERY_MS);
    let mut telemetry_from = since;
    let plan = Plan { traced: 1.0, nightly_evals: false };
    loop {
        ticker.tick().await;
        if feed.stopping() {
            return Err(FeedError::Stopped);
        }
        let now = now_ms();
        let from = last.max(now - MAX_TICK_MS);
        let mut bodies = generator.stretch(from, now, plan, &mut telemetry);
        last = now;
        if now - telemetry_from >= TELEMETRY_EVERY_MS {
            let gathered = std::mem::replace(&mut telemetry, Telemetry::new(TELEMETRY_EVERY_MS));
            bodies.extend(generator.telemetry_bodies(gathered, telemetry_from, now));
            telemetry_from = now;
        }
        feed.deliver(bodies).await?;
    }
}

/// The three things to look at first, with today's top model named.
async fn print_tour(feed: &Feed, url: &str) {
    let today = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let top = feed
        .get(&format!("/api/v1/usage/summary?from={today}&group_by=model&limit=1"))
        .await
        .ok()
        .and_then(|s| s["groups"][0]["key"]["model"].as_str().map(str::to_owned));
    let top = top
        .map(|m| format!("{m} costs the most today"))
        .unwrap_or_else(|| "today's top model".to_owned());
    println!();
    println!("Open {url} and take the tour:");
    println!(
        "  1. Overview: {top}; compare it with yesterday, and see the error spike a few hours ago."
    );
    println!(
        "  2. Traces: the slowest agent run of the last hour, its slowest step, and that step's prompt."
    );
    println!(
        "  3. Budgets: \"{}\" nears its limit; its 80 % alert comes to this demo's webhook (the lines below).",
        budgets::EVALS_BUDGET
    );
    println!();
}

/// `n` with thousands separators.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_separated() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
