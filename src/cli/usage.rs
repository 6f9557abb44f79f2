//! `tally usage`: the usage summary of a running server as a table, CSV or
//! JSON.

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{DEFAULT_SERVER, check};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct UsageArgs {
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
    /// Window ending now, e.g. 24h, 7d.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    since: Option<String>,
    /// Window start (RFC 3339 or unix ms).
    #[arg(long)]
    from: Option<String>,
    /// Window end (RFC 3339 or unix ms) [default: now].
    #[arg(long)]
    to: Option<String>,
    /// Group by these dimensions, e.g. model,user or tag.team.
    #[arg(long, default_value = "model")]
    by: String,
    /// Repeatable DIMENSION:VALUE filters.
    #[arg(long)]
    filter: Vec<String>,
    #[arg(long, default_value = "default")]
    project: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> =
        vec![("group_by", args.by.clone()), ("project", args.project.clone())];
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if let Some(from) = &args.from {
        query.push(("from", from.clone()));
    }
    if let Some(to) = &args.to {
        query.push(("to", to.clone()));
    }
    for f in &args.filter {
        query.push(("filter", f.clone()));
    }
    if matches!(args.format, Format::Csv) {
        query.push(("format", "csv".into()));
    }
    let url = format!("{}/api/v1/usage/summary", args.server.trim_end_matches('/'));
    let response = check(super::api_client(None)?.get(url).query(&query).send().await?).await?;
    match args.format {
        Format::Csv => print!("{}", response.text().await?),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&response.json::<Value>().await?)?)
        }
        Format::Table => print_table(&args.by, &response.json::<Value>().await?),
    }
    Ok(())
}

fn print_table(by: &str, summary: &Value) {
    let dims: Vec<&str> = by.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let mut header: Vec<String> = dims.iter().map(|d| d.to_uppercase()).collect();
    header.extend(
        ["REQUESTS", "INPUT", "OUTPUT", "CACHE_READ", "TOTAL", "ERRORS", "COST_USD"]
            .map(String::from),
    );
    let row = |key: Option<&Value>, g: &Value| -> Vec<String> {
        let mut cells: Vec<String> = dims
            .iter()
            .map(|d| match key {
                Some(k) => k[*d].as_str().unwrap_or("-").to_owned(),
                None => "TOTAL".to_owned(),
            })
            .collect();
        for field in [
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "total_tokens",
            "errors",
        ] {
            cells.push(g[field].to_string());
        }
        cells.push(format!("{:.6}", g["cost_usd"].as_f64().unwrap_or(0.0)));
        cells
    };
    let mut rows = vec![header];
    for group in summary["groups"].as_array().into_iter().flatten() {
        rows.push(row(Some(&group["key"]), group));
    }
    rows.push(row(None, &summary["total"]));
    super::print_rows(&rows, dims.len());
}
