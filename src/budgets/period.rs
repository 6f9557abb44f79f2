//! Budget periods: calendar days, weeks and months in a time zone, or a
//! rolling window, and where an instant falls in them.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};

/// How a budget's spend is windowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar day, starting at local midnight.
    Day,
    /// Calendar week, starting Monday at local midnight.
    Week,
    /// Calendar month, starting on the 1st at local midnight.
    Month,
    /// The last `window_ms` before now.
    Rolling { window_ms: i64 },
}

/// Shortest rolling window.
pub const MIN_ROLLING_MS: i64 = MINUTE_MS;
/// Longest rolling window (a year and a bit); longer windows are a calendar
/// period's job.
pub const MAX_ROLLING_MS: i64 = 400 * DAY_MS;

impl Period {
    /// `day`, `week`, `month`, or a rolling duration as `24h`,
    /// `rolling 24h` or `rolling:24h`.
    pub fn parse(text: &str) -> Result<Period, String> {
        let text = text.trim();
        match text {
            "day" | "daily" => return Ok(Period::Day),
            "week" | "weekly" => return Ok(Period::Week),
            "month" | "monthly" => return Ok(Period::Month),
            _ => {}
        }
        let duration = text
            .strip_prefix("rolling")
            .map(|rest| rest.trim_start_matches([' ', ':']))
            .unwrap_or(text);
        let window_ms = crate::time::parse_duration(duration).map_err(|_| {
            format!(
                "{text:?} is not a period (expected day, week, month or a rolling duration such as \"rolling 24h\")"
            )
        })?;
        if !(MIN_ROLLING_MS..=MAX_ROLLING_MS).contains(&window_ms) {
            return Err(format!("a rolling window must be between 1m and 400d, got {text:?}"));
        }
        Ok(Period::Rolling { window_ms })
    }

    pub fn is_rolling(self) -> bool {
        matches!(self, Period::Rolling { .. })
    }

    /// The calendar period `[start, end)` holding `t_ms` (unix ms) in `tz`;
    /// None for rolling windows.
    pub fn bounds(self, tz: Tz, t_ms: i64) -> Option<(i64, i64)> {
        let local = tz.timestamp_millis_opt(t_ms).single()?.naive_local().date();
        let (first, next) = match self {
            Period::Day => (local, local.succ_opt()?),
            Period::Week => {
                let monday = local - Duration::days(local.weekday().num_days_from_monday() as i64);
                (monday, monday + Duration::days(7))
            }
            Period::Month => {
                let first = local.with_day(1)?;
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
                };
                (first, next)
            }
            Period::Rolling { .. } => return None,
        };
        Some((local_midnight(tz, first)?, local_midnight(tz, next)?))
    }

    /// For a rolling window, its length and the width of the buckets its
    /// spend is kept in: about 1/1440 of the window, at least a second.
    /// Spend leaves the window at most one bucket late, never early.
    pub fn rolling(self) -> Option<(i64, i64)> {
        match self {
            Period::Rolling { window_ms } => {
                let width = (window_ms / 1440).max(SECOND_MS);
                Some((window_ms, (width + SECOND_MS - 1) / SECOND_MS * SECOND_MS))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Day => f.write_str("day"),
            Period::Week => f.write_str("week"),
            Period::Month => f.write_str("month"),
            Period::Rolling { window_ms } => write!(f, "rolling {}", duration_text(*window_ms)),
        }
    }
}

/// The shortest exact text for a whole number of seconds or more.
fn duration_text(ms: i64) -> String {
    for (unit, width) in [("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", SECOND_MS)] {
        if ms % width == 0 {
            return format!("{}{unit}", ms / width);
        }
    }
    format!("{ms}ms")
}

/// Unix ms of local midnight on `date` in `tz`; where midnight does not exist
/// (a DST jump at midnight), the first instant after the gap.
fn local_midnight(tz: Tz, date: NaiveDate) -> Option<i64> {
    let midnight: NaiveDateTime = date.and_hms_opt(0, 0, 0)?;
    let mut probe = midnight;
    for _ in 0..4 {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return Some(t.timestamp_millis());
            }
            LocalResult::None => probe += Duration::minutes(30),
        }
    }
    None
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| format!("{name:?} is not an IANA time zone name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        crate::time::parse_instant(text).unwrap()
    }

    #[test]
    fn parses_calendar_and_rolling() {
        assert_eq!(Period::parse("month"), Ok(Period::Month));
        assert_eq!(Period::parse("rolling 24h"), Ok(Period::Rolling { window_ms: DAY_MS }));
        assert_eq!(Period::parse("rolling:90m"), Ok(Period::Rolling { window_ms: 90 * MINUTE_MS }));
        assert_eq!(Period::parse("7d"), Ok(Period::Rolling { window_ms: 7 * DAY_MS }));
        assert!(Period::parse("fortnight").is_err());
        assert!(Period::parse("10s").is_err());
        assert_eq!(Period::parse("rolling 24h").unwrap().to_string(), "rolling 1d");
        assert_eq!(Period::Rolling { window_ms: 90 * MINUTE_MS }.to_string(), "rolling 90m");
    }

    #[test]
    fn calendar_bounds_in_utc() {
        let t = ms("2026-11-22T10:40:00Z");
        assert_eq!(
            Period::Day.bounds(Tz::UTC, t),
            Some((ms("2026-11-22T00:00:00Z"), ms("2026-11-23T00:00:00Z")))
        );
        // 2026-11-22 is a Sunday: the week began on Monday the 16th.
        assert_eq!(
            Period::Week.bounds(Tz::UTC, t),
            Some((ms("2026-11-16T00:00:00Z"), ms("2026-11-23T00:00:00Z")))
        );
        assert_eq!(
            Period::Month.bounds(Tz::UTC, ms("2026-12-31T23:59:59Z")),
            Some((ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z")))
        );
        assert_eq!(Period::Rolling { window_ms: DAY_MS }.bounds(Tz::UTC, t), None);
    }

    #[test]
    fn calendar_bounds_follow_the_zone_and_dst() {
        let berlin = parse_tz("Europe/Berlin").unwrap();
        // 23:30 UTC on Nov 22 is already Nov 23 in Berlin (UTC+1).
        assert_eq!(
            Period::Day.bounds(berlin, ms("2026-11-22T23:30:00Z")),
            Some((ms("2026-11-22T23:00:00Z"), ms("2026-11-23T23:00:00Z")))
        );
        // March 2026 loses an hour on the 29th: the month is 31 days minus 1 h.
        let (start, end) = Period::Month.bounds(berlin, ms("2026-03-15T12:00:00Z")).unwrap();
        assert_eq!(start, ms("2026-02-28T23:00:00Z"));
        assert_eq!(end, ms("2026-03-31T22:00:00Z"));
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn rolling_buckets() {
        assert_eq!(Period::Rolling { window_ms: DAY_MS }.rolling(), Some((DAY_MS, MINUTE_MS)));
        assert_eq!(
            Period::Rolling { window_ms: MINUTE_MS }.rolling(),
            Some((MINUTE_MS, SECOND_MS))
        );
        assert_eq!(Period::Month.rolling(), None);
    }
}
