//! `tally reprice --from --to`: ask the server to recompute stored costs.

use clap::Args;
use serde_json::json;

use super::{DEFAULT_SERVER, check};

#[derive(Args)]
pub struct RepriceArgs {
    /// Start of the window (RFC 3339 or unix ms).
    #[arg(long)]
    from: String,
    /// End of the window, exclusive (RFC 3339 or unix ms).
    #[arg(long)]
    to: String,
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
}

pub async fn run(args: RepriceArgs) -> anyhow::Result<()> {
    let from = crate::time::parse_instant(&args.from).map_err(anyhow::Error::msg)?;
    let to = crate::time::parse_instant(&args.to).map_err(anyhow::Error::msg)?;
    let url = format!("{}/api/v1/usage/reprice", args.server.trim_end_matches('/'));
    let response =
        super::api_client(None)?.post(url).json(&json!({"from": from, "to": to})).send().await?;
    let report: serde_json::Value = check(response).await?.json().await?;
    println!(
        "repriced {} calls ({} changed): ${:.6} -> ${:.6}",
        report["calls"],
        report["changed"],
        report["cost_before_usd"].as_f64().unwrap_or(0.0),
        report["cost_after_usd"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}
