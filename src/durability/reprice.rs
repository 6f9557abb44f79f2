//! Re-pricing: new costs for stored calls after a price change, and the
//! rollups that contain them rebuilt from the calls.

use std::collections::HashMap;

use serde::Serialize;

use crate::aggregate::{Cell, CellKey, RollupEngine, Tier};
use crate::model::LlmCall;
use crate::pricing::{PriceTable, TokenCounts, cost};
use crate::storage::{LedgerStore, StorageError};

const PAGE: usize = 100_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepriceReport {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Calls in the window.
    pub calls: u64,
    /// Calls whose cost or price changed.
    pub changed: u64,
    pub cost_before_usd: f64,
    pub cost_after_usd: f64,
    /// The whole days whose rollups were rebuilt.
    pub rebuilt_from_ms: i64,
    pub rebuilt_to_ms: i64,
}

fn price(call: &LlmCall, prices: &PriceTable) -> (f64, Option<String>) {
    let tokens = TokenCounts {
        input: call.input_tokens,
        output: call.output_tokens,
        cache_read: call.cache_read_tokens,
        cache_write: call.cache_write_tokens,
        reasoning: call.reasoning_tokens,
    };
    match prices.lookup(&call.model, call.provider.as_deref(), call.time_ms) {
        Some(found) => (cost(found.price, &tokens), Some(found.price_id.to_owned())),
        None => (0.0, None),
    }
}

/// The calls to re-price: those of `[from, to)`, of `project` only when
/// given.
pub struct Window<'a> {
    pub from: i64,
    pub to: i64,
    pub project: Option<&'a str>,
}

/// Must run on the committer, right after a flush, so no write interleaves.
/// Rollups are rebuilt for whole days, the widest bucket, so every tier's
/// buckets are rebuilt whole.
pub async fn run(
    storage: &dyn LedgerStore,
    engine: &RollupEngine,
    window: Window<'_>,
    prices: &PriceTable,
) -> Result<RepriceReport, StorageError> {
    let Window { from, to, project } = window;
    let _exclusive = engine.exclusive().await;
    let day = Tier::Day.width_ms();
    let rebuilt_from = Tier::Day.bucket(from);
    let rebuilt_to = Tier::Day.bucket(to - 1) + day;
    let mut report = RepriceReport {
        from_ms: from,
        to_ms: to,
        calls: 0,
        changed: 0,
        cost_before_usd: 0.0,
        cost_after_usd: 0.0,
        rebuilt_from_ms: rebuilt_from,
        rebuilt_to_ms: rebuilt_to,
    };
    let mut repriced = Vec::new();
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    let mut after = 0;
    loop {
        let page = storage.calls_between(rebuilt_from, rebuilt_to, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full_page = page.len() == PAGE;
        for mut stored in page {
            let call = &mut stored.call;
            if call.time_ms >= from
                && call.time_ms < to
                && project.is_none_or(|p| call.project == p)
            {
                report.calls += 1;
                report.cost_before_usd += call.cost_usd;
                let (new_cost, new_price) = price(call, prices);
                if new_cost != call.cost_usd || new_price != call.price_id {
                    report.changed += 1;
                    call.cost_usd = new_cost;
                    call.price_id = new_price;
                    repriced.push((stored.seq, call.clone()));
                }
                report.cost_after_usd += call.cost_usd;
            }
            for tier in Tier::ALL {
                let key =
                    CellKey { tier, bucket: tier.bucket(call.time_ms), series: stored.series };
                cells.entry(key).or_default().add_call(call);
            }
        }
        if !full_page {
            break;
        }
    }
    let mut cells: Vec<(CellKey, Cell)> = cells.into_iter().collect();
    let new_series = engine.with_projections(&mut cells);
    let new_ids: Vec<i64> = new_series.iter().map(|(id, _)| *id).collect();
    storage.replace_window(repriced, rebuilt_from, rebuilt_to, cells, new_series).await?;
    engine.confirm_series(&new_ids);
    Ok(report)
}
