//! `tally prices [MODEL]`: which price applies, offline.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, Overrides};
use crate::pricing::PriceTable;

#[derive(Args)]
pub struct PricesArgs {
    /// Model name as reports carry it; without it, a count of known prices.
    model: Option<String>,
    /// Provider, for provider-prefixed catalog entries (e.g. azure).
    #[arg(long)]
    provider: Option<String>,
    /// Config file whose [[prices]] entries apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The instant to price at (RFC 3339 or unix ms) [default: now].
    #[arg(long)]
    at: Option<String>,
}

pub fn run(args: PricesArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::load(args.config.as_deref(), &env, &Overrides::default())?;
    let table = PriceTable::new(&config.prices)?;
    let Some(model) = args.model else {
        println!(
            "{} catalog prices (derived from LiteLLM's model_prices_and_context_window.json, MIT), {} from config",
            table.len(),
            config.prices.len()
        );
        return Ok(());
    };
    let at = match &args.at {
        Some(text) => crate::time::parse_instant(text).map_err(anyhow::Error::msg)?,
        None => crate::time::now_ms(),
    };
    let Some(found) = table.lookup(&model, args.provider.as_deref(), at) else {
        anyhow::bail!(
            "no price for model {model:?}: its calls are counted with cost 0 and listed as unpriced"
        );
    };
    let per_m = |x: f64| format!("${:.4}", x * 1e6);
    let opt = |x: Option<f64>| x.map(per_m).unwrap_or_else(|| "(input price)".into());
    println!("model        {model}");
    println!("price id     {}", found.price_id);
    println!("provider     {}", found.provider.unwrap_or("-"));
    println!("per 1M tokens:");
    println!("  input        {}", per_m(found.price.input));
    println!("  output       {}", per_m(found.price.output));
    println!("  cache read   {}", opt(found.price.cache_read));
    println!("  cache write  {}", opt(found.price.cache_write));
    println!(
        "  reasoning    {}",
        found.price.reasoning.map(per_m).unwrap_or_else(|| "(output price)".into())
    );
    Ok(())
}
