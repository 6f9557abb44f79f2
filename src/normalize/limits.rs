//! The bounds every number and instant a client sends must keep, and how a
//! client's value is quoted in an error. The numeric bounds are chosen so
//! that no sum Tally keeps (costs, durations, metric bins) can leave the
//! finite range of an `f64` or the range of a `u64`/`i64` counter, however
//! many records are added: a sum that overflowed would be served as `null`.

use std::borrow::Cow;
use std::fmt;

use crate::time::DAY_MS;

/// 2000-01-01T00:00:00Z in unix milliseconds: nothing Tally meters is older,
/// and an instant before it is a unit mistake (seconds for milliseconds) or
/// a placeholder (`0001-01-01`, `i64::MIN`).
pub const MIN_TIME_MS: i64 = 946_684_800_000;
/// Instants may be at most this far ahead of the server's clock.
pub const MAX_FUTURE_MS: i64 = DAY_MS;
/// Largest cost one record may report: a million USD is far above any one
/// call (or one report's batch of `requests`).
pub const MAX_COST_USD: f64 = 1e6;
/// Longest duration or time to first token one call may report: 30 days.
pub const MAX_DURATION_MS: f64 = 30.0 * DAY_MS as f64;
/// Largest magnitude of a metric point's value (and of a histogram's sum):
/// 1e18 leaves any gauge or delta a real system produces (bytes, ns) whole,
/// while a sum of `u64::MAX` such values stays below `f64::MAX`.
pub const MAX_POINT_VALUE: f64 = 1e18;
/// Most characters of a client's value quoted in an error message.
pub const MAX_QUOTED_CHARS: usize = 40;

/// What the caps on stored attributes cut from records, summed per batch
/// for `tally_ingest_truncated_total`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Attributes dropped: past the count cap, with a key too long, or with
    /// no text budget left for their key.
    pub attributes: u64,
    /// String values and arrays cut short.
    pub values: u64,
    /// Span events past the cap.
    pub events: u64,
    /// Spans past their trace's cap (`ingest.max_spans_per_trace`).
    pub spans: u64,
}

impl Truncation {
    pub fn is_empty(&self) -> bool {
        *self == Truncation::default()
    }

    pub fn add(&mut self, other: Truncation) {
        self.attributes += other.attributes;
        self.values += other.values;
        self.events += other.events;
        self.spans += other.spans;
    }
}

/// Why an instant is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    TooOld,
    TooFarAhead,
}

impl fmt::Display for TimeBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeBound::TooOld => "is before 2000-01-01T00:00:00Z",
            TimeBound::TooFarAhead => "is more than 1 day in the future",
        })
    }
}

/// Checks unix milliseconds against `[MIN_TIME_MS, now + MAX_FUTURE_MS]`.
pub fn check_time_ms(ms: i64, now_ms: i64) -> Result<i64, TimeBound> {
    if ms < MIN_TIME_MS {
        Err(TimeBound::TooOld)
    } else if ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        Err(TimeBound::TooFarAhead)
    } else {
        Ok(ms)
    }
}

/// Checks unix nanoseconds as `check_time_ms` does (OTLP's `u64` times).
pub fn check_time_ns(ns: u64, now_ms: i64) -> Result<i64, TimeBound> {
    let ms = i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX);
    check_time_ms(ms, now_ms)?;
    Ok(ns as i64)
}

/// `text` cut to its first `MAX_QUOTED_CHARS` characters, marked with `…`:
/// an error names what was wrong without echoing a megabyte back.
pub fn clip(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// A client's number as an error shows it: plain when short, else in
/// scientific notation (`1e300`, not 301 digits).
pub fn shown(value: f64) -> String {
    if value.is_finite() && value.abs() < 1e15 { value.to_string() } else { format!("{value:e}") }
}

/// A serde error message with every quoted part (between `"` or backticks)
/// clipped as `clip` does: serde quotes unknown field names and invalid
/// strings whole.
pub fn clip_quoted(message: &str) -> Cow<'_, str> {
    if message.len() <= 2 * MAX_QUOTED_CHARS {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(4 * MAX_QUOTED_CHARS);
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..];
        match inside.find(quote) {
            Some(close) => {
                out.push_str(&clip(&inside[..close]));
                out.push(quote);
                rest = &inside[close + 1..];
            }
            None => {
                out.push_str(&clip(inside));
                return Cow::Owned(out);
            }
        }
    }
    out.push_str(&clip_long(rest));
    Cow::Owned(out)
}

/// Unquoted text is Tally's own words, but a number serde echoes is not
/// quoted: a long tail is cut too.
fn clip_long(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(4 * MAX_QUOTED_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn instants_between_2000_and_a_day_ahead() {
        assert_eq!(check_time_ms(1, NOW), Err(TimeBound::TooOld));
        assert_eq!(check_time_ms(i64::MIN, NOW), Err(TimeBound::TooOld));
        assert_eq!(check_time_ms(MIN_TIME_MS - 1, NOW), Err(TimeBound::TooOld));
        assert_eq!(check_time_ms(MIN_TIME_MS, NOW), Ok(MIN_TIME_MS));
        assert_eq!(check_time_ms(NOW + DAY_MS, NOW), Ok(NOW + DAY_MS));
        assert_eq!(check_time_ms(NOW + DAY_MS + 60_000, NOW), Err(TimeBound::TooFarAhead));
        assert_eq!(check_time_ms(i64::MAX, i64::MAX), Ok(i64::MAX));
        assert_eq!(check_time_ns(u64::MAX, NOW), Err(TimeBound::TooFarAhead));
        assert_eq!(check_time_ns(1, NOW), Err(TimeBound::TooOld));
    }

    #[test]
    fn quoted_values_are_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000);
        assert_eq!(clip(&long), format!("{}…", "é".repeat(40)));
        let message = format!("unknown field `{}`, expected one of `name`", "k".repeat(100_000));
        let clipped = clip_quoted(&message);
        assert_eq!(clipped, format!("unknown field `{}…`, expected one of `name`", "k".repeat(40)));
        assert_eq!(shown(1e300), "1e300");
        assert_eq!(shown(2.5), "2.5");
    }
}
