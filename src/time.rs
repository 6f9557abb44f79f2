//! Time syntax shared by reports, queries and config: instants as unix
//! milliseconds or RFC 3339, durations like `90s`, `15m`, `24h`, `7d`.

use chrono::DateTime;

pub const SECOND_MS: i64 = 1000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Shifts the clock of the whole process by this many milliseconds: for
/// tests that must see a period boundary (a day, a month) pass without
/// waiting for a real one. Not a config key; never set it in production.
pub const CLOCK_OFFSET_ENV: &str = "TALLY_CLOCK_OFFSET_MS";

/// Unix milliseconds now (shifted by `TALLY_CLOCK_OFFSET_MS` when set).
pub fn now_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var(CLOCK_OFFSET_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    });
    chrono::Utc::now().timestamp_millis() + offset
}

/// Parses unix milliseconds or RFC 3339.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
        format!(
            "{:?} is neither unix milliseconds nor RFC 3339 ({e})",
            crate::normalize::limits::clip(text)
        )
    })
}

/// Parses `<n><unit>` with unit ms, s, m, h, d or w, into milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (expected e.g. 90s, 15m, 24h, 7d)"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => {
            return Err(format!("{text:?} has an unknown unit (expected ms, s, m, h, d or w)"));
        }
    };
    n.checked_mul(unit_ms).ok_or_else(|| format!("{text:?} is too long"))
}

/// Formats unix milliseconds as RFC 3339 (UTC).
pub fn format_instant(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(15 * MINUTE_MS));
        assert_eq!(parse_duration("24h"), Ok(DAY_MS));
        assert_eq!(parse_duration("7d"), Ok(7 * DAY_MS));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000_000));
        assert!(parse_instant("yesterday").is_err());
        assert_eq!(format_instant(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
