//! Reads budgets' spend so far from the rollups (stored and open), when the
//! server starts or a budget is created; from then on the book counts calls
//! as they commit. Call it with nothing committing meanwhile (before the
//! committer starts, or as a committer exclusive job), or calls may be
//! counted twice or not at all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::book::Spend;
use super::period::Period;
use super::rule::{Budget, Metric, Subject};
use crate::aggregate::series::ORDINARY_IDS;
use crate::aggregate::tier::cover;
use crate::aggregate::{Cell, CellKey, RollupEngine, Tier};
use crate::storage::{RollupStore, RollupVisitor, StorageError};
use crate::time::{DAY_MS, MINUTE_MS};

/// How far ahead calls can be stamped (reports more than a day in the future
/// are refused).
const AHEAD_MS: i64 = DAY_MS + MINUTE_MS;

/// A stretch of rollups to read: tier, and bucket range `[from, to)`.
type Piece = (Tier, i64, i64);

fn floor_minute(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

fn ceil_minute(ms: i64) -> i64 {
    floor_minute(ms + MINUTE_MS - 1)
}

/// The rollup pieces holding `budget`'s spend at `now`.
fn pieces(budget: &Budget, now: i64) -> Vec<Piece> {
    let until = ceil_minute(now + AHEAD_MS);
    match budget.period {
        Period::Rolling { window_ms } => {
            let tier = if window_ms <= DAY_MS {
                Tier::Minute
            } else if window_ms <= 60 * DAY_MS {
                Tier::Hour
            } else {
                Tier::Day
            };
            let width = tier.width_ms();
            let to = until.div_euclid(width) * width + width;
            vec![(tier, tier.bucket(now - window_ms), to)]
        }
        _ => {
            let mut out = Vec::new();
            let mut at = now;
            while let Some((start, end)) = budget.period.bounds(budget.timezone, at) {
                out.extend(cover(floor_minute(start), ceil_minute(end.min(until))));
                if end >= until {
                    break;
                }
                at = end;
            }
            out
        }
    }
}

/// Rows of the wanted series, as they stream out of the store.
struct Collect {
    wanted: Arc<HashSet<i64>>,
    rows: Vec<(CellKey, f64, u64)>,
}

impl RollupVisitor for Collect {
    fn visit(&mut self, key: CellKey, c: Cell, _: &[u8], _: &[u8]) -> Result<(), StorageError> {
        if self.wanted.contains(&key.series) {
            self.rows.push((key, c.cost_usd, c.total_tokens));
        }
        Ok(())
    }
}

/// The spend of each of `budgets` at `now`, in order.
pub async fn spend(
    storage: &dyn RollupStore,
    engine: &RollupEngine,
    budgets: &[Arc<Budget>],
    now: i64,
) -> Result<Vec<Spend>, StorageError> {
    let mut spends: Vec<Spend> = budgets.iter().map(|b| Spend::new(b)).collect();
    // Which budgets each series counts for.
    let series = engine.select_series(|view| {
        let key = view.to_key();
        let subject = Subject::from(&key);
        budgets.iter().any(|b| b.covers(&subject))
    });
    let mut budgets_of: HashMap<i64, Vec<usize>> = HashMap::new();
    for (id, key) in &series {
        let subject = Subject::from(&**key);
        let of: Vec<usize> = (0..budgets.len()).filter(|i| budgets[*i].covers(&subject)).collect();
        budgets_of.insert(*id, of);
    }
    if budgets_of.is_empty() {
        return Ok(spends);
    }
    let wanted: Arc<HashSet<i64>> = Arc::new(budgets_of.keys().copied().collect());
    // Each distinct piece is read once for all the budgets that need it.
    let mut readers: HashMap<Piece, Vec<usize>> = HashMap::new();
    for (i, b) in budgets.iter().enumerate() {
        for piece in pieces(b, now) {
            readers.entry(piece).or_default().push(i);
        }
    }
    for ((tier, from, to), readers) in readers {
        let visitor = Collect { wanted: wanted.clone(), rows: Vec::new() };
        let visitor = storage.scan_rollups(tier, from, to, ORDINARY_IDS, Box::new(visitor)).await?;
        let visitor: Box<dyn std::any::Any> = visitor;
        let mut rows =
            visitor.downcast::<Collect>().expect("the store hands back our visitor").rows;
        rows.extend(
            engine
                .open_cells(tier, from, to, &wanted)
                .into_iter()
                .map(|(key, c)| (key, c.cost_usd, c.total_tokens)),
        );
        for (key, cost, tokens) in rows {
            for i in &budgets_of[&key.series] {
                if !readers.contains(i) {
                    continue;
                }
                let b = &budgets[*i];
                let amount = match b.metric {
                    Metric::CostUsd => cost,
                    Metric::Tokens => tokens as f64,
                };
                let at = if b.period.is_rolling() {
                    key.bucket + tier.width_ms() - 1
                } else {
                    key.bucket
                };
                spends[*i].add(b, at, amount);
            }
        }
    }
    Ok(spends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR_MS, parse_instant};

    fn budget(period: &str, tz: &str) -> Budget {
        let f = crate::normalize::KeyFingerprinter::new(b"s");
        let spec = serde_json::from_value(serde_json::json!({
            "name": "b", "metric": "cost_usd", "limit": 1.0, "period": period, "timezone": tz
        }))
        .unwrap();
        let context = super::super::rule::RuleContext {
            default_timezone: chrono_tz::Tz::UTC,
            fingerprinter: &f,
            allow_private_targets: false,
            now_ms: 0,
        };
        Budget::from_spec(spec, super::super::rule::Origin::Api, &context).unwrap()
    }

    #[test]
    fn calendar_pieces_cover_this_period_and_what_may_be_stamped_ahead() {
        let now = parse_instant("2026-11-22T10:40:30Z").unwrap();
        let day = budget("day", "UTC");
        let covered: Vec<(i64, i64)> = pieces(&day, now).iter().map(|p| (p.1, p.2)).collect();
        let start = parse_instant("2026-11-22T00:00:00Z").unwrap();
        assert_eq!(covered.first().unwrap().0, start);
        // Today, then tomorrow up to a day (and a minute) from now.
        let total: i64 = covered.iter().map(|(a, b)| b - a).sum();
        assert_eq!(start + total, parse_instant("2026-11-23T10:42:00Z").unwrap());
        let berlin = budget("month", "Europe/Berlin");
        let first = pieces(&berlin, now)[0];
        assert_eq!(first.1, parse_instant("2026-10-31T23:00:00Z").unwrap());
    }

    #[test]
    fn rolling_pieces_use_one_tier_over_the_window() {
        let now = 1_000 * HOUR_MS + 123;
        let ps = pieces(&budget("rolling 24h", "UTC"), now);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].0, Tier::Minute);
        assert!(ps[0].1 <= now - DAY_MS && ps[0].1 > now - DAY_MS - MINUTE_MS);
        assert_eq!(pieces(&budget("rolling 7d", "UTC"), now)[0].0, Tier::Hour);
    }
}
