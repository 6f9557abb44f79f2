//! `tally budgets`: every budget's status from a running server, as a table
//! or JSON.

use clap::Args;
use serde_json::Value;

use super::{DEFAULT_SERVER, check, print_rows};

#[derive(Args)]
pub struct BudgetsArgs {
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
    /// Only this project's budgets.
    #[arg(long)]
    project: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BudgetsArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/budgets/status", args.server.trim_end_matches('/'));
    let mut request = super::api_client(None)?.get(url);
    if let Some(project) = &args.project {
        request = request.query(&[("project", project)]);
    }
    let body: Value = check(request.send().await?).await?.json().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let header = [
        "ID",
        "NAME",
        "PROJECT",
        "METRIC",
        "MODE",
        "SPEND",
        "LIMIT",
        "PERCENT",
        "RESERVED",
        "REMAINING",
        "FORECAST",
        "PERIOD_END",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for b in body["budgets"].as_array().into_iter().flatten() {
        let text = |k: &str| b[k].as_str().unwrap_or("-").to_owned();
        let number = |k: &str| format!("{:.4}", b[k].as_f64().unwrap_or(0.0));
        rows.push(vec![
            text("id"),
            text("name"),
            text("project"),
            text("metric"),
            text("mode"),
            number("spend"),
            number("limit"),
            format!("{:.1}%", b["percent"].as_f64().unwrap_or(0.0)),
            number("reserved"),
            number("remaining"),
            number("forecast"),
            b["period_end"].as_i64().map(crate::time::format_instant).unwrap_or_default(),
        ]);
    }
    print_rows(&rows, 5);
    Ok(())
}
