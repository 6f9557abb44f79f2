//! Rollup tiers: the bucket widths usage is aggregated at.

use serde::Serialize;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Minute,
    Hour,
    Day,
}

impl Tier {
    /// Finest first.
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    pub fn width_ms(self) -> i64 {
        match self {
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
            Tier::Day => DAY_MS,
        }
    }

    /// Stored as a small integer.
    pub fn code(self) -> i64 {
        match self {
            Tier::Minute => 0,
            Tier::Hour => 1,
            Tier::Day => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Minute => "1m",
            Tier::Hour => "1h",
            Tier::Day => "1d",
        }
    }

    /// Start of the bucket holding `ms` (UTC, floor for negative times too).
    pub fn bucket(self, ms: i64) -> i64 {
        ms.div_euclid(self.width_ms()) * self.width_ms()
    }

    /// The coarsest tier whose buckets divide `step_ms` (None when the step is
    /// finer than a minute or not a whole number of minutes).
    pub fn coarsest_fitting(step_ms: i64) -> Option<Tier> {
        Tier::ALL.into_iter().rev().find(|t| step_ms >= t.width_ms() && step_ms % t.width_ms() == 0)
    }
}

/// Splits `[from, to)` (minute aligned) into the fewest tier-aligned pieces:
/// whole days from the day tier, whole hours at the edges from the hour tier,
/// minutes at the edges of those. Rollup reads then scale with the number of
/// series, not the number of minutes in the window.
pub fn cover(from: i64, to: i64) -> Vec<(Tier, i64, i64)> {
    debug_assert_eq!(from % MINUTE_MS, 0);
    debug_assert_eq!(to % MINUTE_MS, 0);
    let mut pieces = Vec::new();
    cover_into(from, to, Tier::Day, &mut pieces);
    pieces
}

fn cover_into(from: i64, to: i64, tier: Tier, pieces: &mut Vec<(Tier, i64, i64)>) {
    if from >= to {
        return;
    }
    let width = tier.width_ms();
    let inner_from =
        from.div_euclid(width) * width + if from.rem_euclid(width) == 0 { 0 } else { width };
    let inner_to = to.div_euclid(width) * width;
    let finer = match tier {
        Tier::Day => Some(Tier::Hour),
        Tier::Hour => Some(Tier::Minute),
        Tier::Minute => None,
    };
    if inner_from >= inner_to {
        match finer {
            Some(finer) => cover_into(from, to, finer, pieces),
            None => pieces.push((tier, from, to)),
        }
        return;
    }
    if let Some(finer) = finer {
        cover_into(from, inner_from, finer, pieces);
    }
    pieces.push((tier, inner_from, inner_to));
    if let Some(finer) = finer {
        cover_into(inner_to, to, finer, pieces);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_uses_coarsest_pieces_and_is_exact() {
        let from = 3 * DAY_MS + 5 * HOUR_MS + 7 * MINUTE_MS;
        let to = 6 * DAY_MS + 2 * HOUR_MS + 3 * MINUTE_MS;
        let pieces = cover(from, to);
        assert_eq!(
            pieces,
            vec![
                (Tier::Minute, from, 3 * DAY_MS + 6 * HOUR_MS),
                (Tier::Hour, 3 * DAY_MS + 6 * HOUR_MS, 4 * DAY_MS),
                (Tier::Day, 4 * DAY_MS, 6 * DAY_MS),
                (Tier::Hour, 6 * DAY_MS, 6 * DAY_MS + 2 * HOUR_MS),
                (Tier::Minute, 6 * DAY_MS + 2 * HOUR_MS, to),
            ]
        );
        let covered: i64 = pieces.iter().map(|(_, a, b)| b - a).sum();
        assert_eq!(covered, to - from);
    }

    #[test]
    fn cover_of_short_window_is_minutes() {
        assert_eq!(cover(MINUTE_MS, 5 * MINUTE_MS), vec![(Tier::Minute, MINUTE_MS, 5 * MINUTE_MS)]);
        assert!(cover(MINUTE_MS, MINUTE_MS).is_empty());
    }

    #[test]
    fn step_picks_coarsest_tier() {
        assert_eq!(Tier::coarsest_fitting(HOUR_MS), Some(Tier::Hour));
        assert_eq!(Tier::coarsest_fitting(15 * MINUTE_MS), Some(Tier::Minute));
        assert_eq!(Tier::coarsest_fitting(7 * DAY_MS), Some(Tier::Day));
        assert_eq!(Tier::coarsest_fitting(90 * MINUTE_MS), Some(Tier::Minute));
        assert_eq!(Tier::coarsest_fitting(30_000), None);
    }
}
