//! The demo's two budgets and what they drive: a calm one (the engineering
//! team's week, under half spent) and one on the eval job's API key whose
//! limit is set so that the job's live calls take it past 80 % about half a
//! minute after live traffic starts. The eval job asks Tally before each
//! call (`/api/v1/quota/reserve`, then `settle`), so once the budget is
//! spent Tally denies it and the job waits. Alerts go to a webhook receiver
//! the demo runs on loopback, which checks each alert's signature and
//! prints it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

use super::cast;
use super::feed::Feed;
use super::traffic::eval_call;
use super::world::World;
use crate::time::now_ms;

/// The receiver's path.
const HOOK_PATH: &str = "/hooks/tally";
/// Largest alert body the receiver reads (Tally's are well under 1 KiB).
const MAX_ALERT_BYTES: usize = 64 * 1024;
/// When the eval budget crosses 80 %, counted from the start of live
/// traffic, and how long it then takes to reach 100 %.
pub const CROSSING_AFTER_S: f64 = 30.0;
const FULL_AFTER_S: f64 = 600.0;
/// Where the eval budget stands when live traffic starts, at least: a
/// budget with no history gets this limit.
const MIN_EVAL_LIMIT_USD: f64 = 5.0;
/// Most eval calls in one pacing step, so that a stall is not followed by a
/// burst.
const MAX_CALLS_PER_STEP: u32 = 10;

pub const EVALS_BUDGET: &str = "evals-key-24h";
pub const ENGINEERING_BUDGET: &str = "engineering-weekly";

/// The webhook receiver's state: the key alert signatures are made with.
#[derive(Clone)]
struct Receiver {
    secret: String,
}

/// Starts the webhook receiver on loopback; returns its URL and the task
/// serving it (which ends when `stop` turns true).
pub async fn start_receiver(
    secret: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot start the demo's webhook receiver")?;
    let url = format!("http://{}{HOOK_PATH}", listener.local_addr()?);
    let router = Router::new()
        .route(HOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_ALERT_BYTES))
        .with_state(Receiver { secret });
    let limits = crate::listener::ServerConfig::default().http_limits()?;
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(err) = crate::server::run(listener, router, limits, stopped).await {
            tracing::warn!(%err, "the demo's webhook receiver stopped");
        }
    });
    Ok((url, task))
}

/// Checks an alert's signature and prints it.
async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-tally-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok())
        .unwrap_or_default();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(receiver.secret.as_bytes()).expect("hmac takes any key");
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        println!("webhook: an alert arrived with a bad signature; refused");
        return StatusCode::UNAUTHORIZED;
    }
    let alert: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    println!(
        "webhook: budget \"{}\" crossed {} % (${:.2} of ${:.2}); signature verified",
        alert["budget_name"].as_str().unwrap_or("?"),
        alert["threshold"].as_f64().unwrap_or(0.0),
        alert["spend"].as_f64().unwrap_or(0.0),
        alert["limit"].as_f64().unwrap_or(0.0),
    );
    StatusCode::OK
}

/// A budget as the demo set it up.
#[derive(Debug, Clone)]
pub struct Budget {
    pub name: &'static str,
    pub period: &'static str,
    pub limit: f64,
    pub spend: f64,
}

impl Budget {
    pub fn percent(&self) -> f64 {
        if self.limit > 0.0 { self.spend / self.limit * 100.0 } else { 0.0 }
    }
}

/// The eval budget, with the pace at which the eval job spends.
#[derive(Debug, Clone)]
pub struct EvalBudget {
    pub budget: Budget,
    pub usd_per_s: f64,
}

/// `value` rounded up to three significant digits.
fn round_up_3(value: f64) -> f64 {
    if value <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(2 - value.log10().floor() as i32);
    (value * scale).ceil() / scale
}

/// A round limit a little above `value`: two significant digits, up.
fn round_up_2(value: f64) -> f64 {
    if value <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(1 - value.log10().floor() as i32);
    (value * scale).ceil() / scale
}

/// Creates the budget named in `spec`, or replaces the one of that name a
/// previous demo left in the data dir; returns its id.
async fn upsert(feed: &Feed, spec: &Value) -> anyhow::Result<String> {
    let listed = feed.get("/api/v1/budgets").await?;
    let existing = listed["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == spec["name"])
        .and_then(|b| b["id"].as_str().map(str::to_owned));
    let answer = match &existing {
        Some(id) => feed.json(Method::PUT, &format!("/api/v1/budgets/{id}"), Some(spec)).await?,
        None => feed.json(Method::POST, "/api/v1/budgets", Some(spec)).await?,
    };
    answer["id"].as_str().map(str::to_owned).context("the budget answer has no id")
}

/// The budget's spend, once Tally has read it.
async fn spend(feed: &Feed, id: &str) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = feed.get(&format!("/api/v1/budgets/{id}/status")).await?;
        if status["ready"] == true {
            return status["spend"].as_f64().context("the budget status has no spend");
        }
        if Instant::now() > deadline {
            bail!("budget {id}: its spend was not read within 30 s");
        }
        feed.pause(Duration::from_millis(200)).await?;
    }
}

/// Sets a budget up with a limit that depends on its spend: first with a
/// limit no spend reaches (so nothing alerts), then with `limit_of(spend)`.
async fn set_up(
    feed: &Feed,
    mut spec: Value,
    limit_of: impl Fn(f64) -> f64,
) -> anyhow::Result<(f64, f64)> {
    spec["limit"] = json!(1e12);
    let id = upsert(feed, &spec).await?;
    let spent = spend(feed, &id).await?;
    let limit = limit_of(spent);
    spec["limit"] = json!(limit);
    feed.json(Method::PUT, &format!("/api/v1/budgets/{id}"), Some(&spec)).await?;
    Ok((spent, limit))
}

/// Creates (or updates) both budgets, their webhooks pointing at `hook`.
pub async fn create(feed: &Feed, hook: &str, secret: &str) -> anyhow::Result<(EvalBudget, Budget)> {
    let engineering = json!({
        "name": ENGINEERING_BUDGET,
        "scope": {"tag.team": "engineering"},
        "metric": "cost_usd",
        "period": "rolling 7d",
        "thresholds": [50, 80, 100],
        "webhooks": [hook],
        "secret": secret,
        "mode": "observe",
    });
    // The engineering team has spent a little under half of its week.
    let (spent, limit) = set_up(feed, engineering, |s| round_up_2(s / 0.45).max(10.0)).await?;
    let engineering =
        Budget { name: ENGINEERING_BUDGET, period: "rolling 7d", limit, spend: spent };

    let evals = json!({
        "name": EVALS_BUDGET,
        "scope": {"api_key": cast::EVALS.key},
        "metric": "cost_usd",
        "period": "rolling 24h",
        "thresholds": [50, 80, 100],
        "webhooks": [hook],
        "secret": secret,
        "mode": "enforce",
        "fail": "open",
    });
    // Spend s, pace r: s + r·CROSSING_AFTER = 0.8·limit, and r·FULL_AFTER
    // = 0.2·limit, so limit = s / (0.8 − 0.2·CROSSING_AFTER/FULL_AFTER).
    let limit_of = |s: f64| {
        round_up_3(s / (0.8 - 0.2 * CROSSING_AFTER_S / FULL_AFTER_S)).max(MIN_EVAL_LIMIT_USD)
    };
    let (spent, limit) = set_up(feed, evals, limit_of).await?;
    let usd_per_s = ((0.8 * limit - spent) / CROSSING_AFTER_S).max(0.2 * limit / FULL_AFTER_S);
    let evals = EvalBudget {
        budget: Budget { name: EVALS_BUDGET, period: "rolling 24h", limit, spend: spent },
        usd_per_s,
    };
    Ok((evals, engineering))
}

/// The eval job: spends at `budget.usd_per_s` from now on, asking Tally
/// before every call; when Tally denies, it waits and asks again later.
pub async fn run_evals(
    feed: Feed,
    budget: EvalBudget,
    world: World,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut spent = 0.0;
    // What a call costs, learnt from the answers to settle.
    let mut cost_per_call = 0.03;
    let mut denied_before = false;
    loop {
        feed.pause(Duration::from_millis(250)).await?;
        let due = budget.usd_per_s * started.elapsed().as_secs_f64();
        let mut calls = 0;
        while spent < due && calls < MAX_CALLS_PER_STEP {
            calls += 1;
            let reserve = json!({
                "api_key": cast::EVALS.key,
                "model": cast::GPT_41.name,
                "provider": cast::GPT_41.provider,
                "route": cast::BATCH,
                "tags": {"team": "research"},
                "estimated_cost_usd": cost_per_call,
                "ttl_s": 120,
            });
            let decision = feed.json(Method::POST, "/api/v1/quota/reserve", Some(&reserve)).await?;
            if decision["allowed"] != true {
                if !denied_before {
                    println!(
                        "quota: budget \"{}\" is spent; Tally now denies the eval job's calls, and the job waits",
                        budget.budget.name
                    );
                    denied_before = true;
                }
                // Wait for the rolling window to free some room.
                feed.pause(Duration::from_secs(30)).await?;
                spent = budget.usd_per_s * started.elapsed().as_secs_f64();
                break;
            }
            let now = now_ms();
            let outcome = world.outcome(&cast::GPT_41, now, &mut rng);
            let mut call = eval_call(now, outcome, &mut rng);
            // The call has just finished.
            call.start_ms -= call.duration_ms.round() as i64;
            let settle = json!({
                "reservation_id": decision["reservation_id"],
                "usage": call.report(),
            });
            let settled = feed.json(Method::POST, "/api/v1/quota/settle", Some(&settle)).await?;
            let cost = settled["cost_usd"].as_f64().unwrap_or(0.0);
            if cost > 0.0 {
                cost_per_call = 0.8 * cost_per_call + 0.2 * cost;
            }
            spent += cost.max(cost_per_call * 0.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_up() {
        assert_eq!(round_up_3(41.234), 41.3);
        assert_eq!(round_up_3(0.98761), 0.988);
        assert_eq!(round_up_2(1234.0), 1300.0);
        assert_eq!(round_up_2(0.0), 0.0);
    }
}
