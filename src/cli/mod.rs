//! The command line: `tally serve`, `tally usage`, `tally prices`,
//! `tally reprice`, `tally budgets`, `tally keys`, `tally audit`,
//! `tally bench`, `tally demo`.

mod bench;
mod bench_points;
mod bench_quota;
mod bench_series;
mod bench_soak;
mod bench_spans;
mod budgets;
mod demo;
mod keys;
mod prices;
mod reprice;
mod serve;
mod usage;
mod vacuum;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tally", version, about = "Observability and usage metering for LLM applications")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Print token, request and cost totals from a running server.
    Usage(usage::UsageArgs),
    /// Show the price that applies to a model (from the built-in catalog and
    /// the config file).
    Prices(prices::PricesArgs),
    /// Recompute stored costs in a window after a price change.
    Reprice(reprice::RepriceArgs),
    /// Print every budget's spend, limit, reservations and forecast from a
    /// running server.
    Budgets(budgets::BudgetsArgs),
    /// Create, list and revoke API keys (on a data dir, or through a
    /// running server with an admin key).
    Keys(keys::KeysArgs),
    /// Show the audit log of admin actions.
    Audit(keys::AuditArgs),
    /// Load a running server and print what it sustains.
    Bench(bench::BenchArgs),
    /// Run a server fed with a week of realistic traffic and more arriving
    /// live, to explore the dashboard and the API.
    Demo(demo::DemoArgs),
    /// Rewrite a stopped server's store: 16 KiB pages (for a store made
    /// with 8 KiB) and its free pages returned to the disk.
    Vacuum(vacuum::VacuumArgs),
}

/// Default server for client subcommands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:4318";

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(crate::config::LOG_ENV)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Usage(args) => usage::run(args).await,
            Command::Prices(args) => prices::run(args),
            Command::Reprice(args) => reprice::run(args).await,
            Command::Budgets(args) => budgets::run(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Audit(args) => keys::audit(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Vacuum(args) => vacuum::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// An HTTP client that sends `key` (else `TALLY_API_KEY`, when set) as a
/// bearer token with every request.
pub fn api_client(key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let from_env = std::env::var("TALLY_API_KEY").ok();
    let key = key.or(from_env.as_deref()).map(str::trim).filter(|k| !k.is_empty());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| anyhow::anyhow!("the API key has characters a header cannot carry"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}

/// Turns an HTTP error response into a readable error.
pub async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    anyhow::bail!("server answered {status}: {message}")
}

/// Prints `rows` (the first is the header) as aligned columns: the first
/// `left` left-aligned, the rest right-aligned.
pub fn print_rows(rows: &[Vec<String>], left: usize) {
    let Some(first) = rows.first() else { return };
    let widths: Vec<usize> =
        (0..first.len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(i, (cell, w))| {
                    if i < left { format!("{cell:<w$}") } else { format!("{cell:>w$}") }
                },
            )
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
