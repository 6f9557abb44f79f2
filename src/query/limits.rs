//! What one query may make the server do: the window it can reach, how long
//! it may run, and how many groups, spans and log records it answers with.
//!
//! A query string is client input like any other: `from=0&to=9e18` would
//! otherwise walk every day of 285 million years, and a `group_by` over a
//! dimension with a million values would build and serialize a million
//! groups. Windows are clamped to where data can be, every query runs under
//! a deadline and stops when its client goes away, and results are capped
//! with the remainder summed, never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::storage::StorageError;
use crate::time::{DAY_MS, format_instant, parse_duration};

/// 2000-01-01T00:00:00Z: nothing older is accepted, so no data lies before.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// How far ahead of the server's clock a record may be stamped.
pub const FUTURE_ALLOWANCE_MS: i64 = DAY_MS;

/// Largest step of a series or metric query.
pub const MAX_STEP_MS: i64 = 366 * DAY_MS;

/// The `[query]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Longest a query may run; past it the client gets 503 and the work
    /// stops. A query also stops when its client disconnects.
    pub timeout: String,
    /// Most groups a usage summary or series, or a metrics query, answers
    /// with (the `limit` parameter can ask for fewer); the rest are summed
    /// into `other`.
    pub max_groups: usize,
    /// Most spans a trace's detail answers with (the earliest by start);
    /// the trace's totals still count every span.
    pub max_trace_spans: usize,
    /// Most log records a trace's detail answers with.
    pub max_trace_logs: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: "30s".to_owned(),
            max_groups: 1_000,
            max_trace_spans: 10_000,
            max_trace_logs: 1_000,
        }
    }
}

/// The `[query]` section, parsed.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub max_groups: usize,
    pub max_trace_spans: usize,
    pub max_trace_logs: usize,
}

impl QueryConfig {
    pub fn limits(&self) -> Result<QueryLimits, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Value { key: key.into(), message };
        let timeout = match parse_duration(&self.timeout) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms as u64),
            Ok(_) => return Err(invalid("query.timeout", "must be positive".into())),
            Err(message) => return Err(invalid("query.timeout", message)),
        };
        for (key, value) in [
            ("query.max_groups", self.max_groups),
            ("query.max_trace_spans", self.max_trace_spans),
            ("query.max_trace_logs", self.max_trace_logs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        Ok(QueryLimits {
            timeout,
            max_groups: self.max_groups,
            max_trace_spans: self.max_trace_spans,
            max_trace_logs: self.max_trace_logs,
        })
    }
}

/// `[from, to)` cut to where data can be: from 2000-01-01 to a day past
/// `now`. A window wholly outside is refused, saying where data can be.
pub fn clamp_window(from: i64, to: i64, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let latest = now_ms.saturating_add(FUTURE_ALLOWANCE_MS);
    let (clamped_from, clamped_to) = (from.max(EARLIEST_MS), to.min(latest));
    if clamped_from >= clamped_to {
        return Err(ApiError::bad_request(format!(
            "the window [{}, {}) holds no data: records are kept from {} to a day ahead of now; \
             move from/to into that range",
            format_instant(from),
            format_instant(to),
            format_instant(EARLIEST_MS),
        )));
    }
    Ok((clamped_from, clamped_to))
}

/// A step no larger than `MAX_STEP_MS`.
pub fn check_step(step_ms: i64, text: &str) -> Result<(), ApiError> {
    if step_ms > MAX_STEP_MS {
        return Err(ApiError::bad_request(format!(
            "step: {text:?} is longer than the longest step, 366d; use a shorter one"
        )));
    }
    Ok(())
}

/// Whether a query may go on: false once its deadline has passed or its
/// client has gone. Scans on blocking threads poll it, since dropping the
/// request's future does not stop them.
#[derive(Clone)]
pub struct Watch(Arc<WatchState>);

struct WatchState {
    deadline: Instant,
    abandoned: AtomicBool,
}

impl Watch {
    pub fn new(timeout: Duration) -> Watch {
        Watch(Arc::new(WatchState {
            deadline: Instant::now() + timeout,
            abandoned: AtomicBool::new(false),
        }))
    }

    /// A watch that never stops (work the server starts for itself).
    pub fn unbounded() -> Watch {
        Watch::new(Duration::from_secs(100 * 365 * 24 * 3600))
    }

    pub fn stopped(&self) -> bool {
        self.0.abandoned.load(Ordering::Relaxed) || Instant::now() >= self.0.deadline
    }

    /// `Err(StorageError::Stopped)` once the query should stop.
    pub fn check(&self) -> Result<(), StorageError> {
        if self.stopped() { Err(StorageError::Stopped) } else { Ok(()) }
    }
}

/// Marks the watch abandoned when the request's future is dropped (its
/// client went away, or the deadline cut it off).
struct AbandonOnDrop(Watch);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.0.abandoned.store(true, Ordering::Relaxed);
    }
}

/// Polls a watch every `EVERY` calls, so that a per-row check costs a
/// counter increment.
pub struct Poll {
    watch: Watch,
    calls: u32,
}

impl Poll {
    const EVERY: u32 = 1024;

    pub fn new(watch: Watch) -> Poll {
        Poll { watch, calls: 0 }
    }

    #[inline]
    pub fn check(&mut self) -> Result<(), StorageError> {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(Self::EVERY) { self.watch.check() } else { Ok(()) }
    }
}

fn timed_out(limits: &QueryLimits) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "query_timeout",
        message: format!(
            "the query did not finish within {:?} (query.timeout); narrow the window, the filters \
             or group_by",
            limits.timeout
        ),
        retry_after_s: None,
    }
}

/// A storage error as the client sees it: a stopped scan is the deadline's
/// answer, anything else is internal.
pub fn storage_failure(limits: &QueryLimits, context: &str, err: &StorageError) -> ApiError {
    match err {
        StorageError::Stopped => timed_out(limits),
        other => ApiError::internal(context, other),
    }
}

/// Middleware for the query routes: a `Watch` for the handler (as a request
/// extension), the deadline, and the watch abandoned when the request ends
/// early.
pub async fn bound(
    State(limits): State<Arc<QueryLimits>>,
    mut request: Request,
    next: Next,
) -> Response {
    let watch = Watch::new(limits.timeout);
    request.extensions_mut().insert(watch.clone());
    let _abandon = AbandonOnDrop(watch);
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(&limits).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn windows_are_cut_to_where_data_can_be() {
        assert_eq!(clamp_window(0, i64::MAX, NOW).unwrap(), (EARLIEST_MS, NOW + DAY_MS));
        assert_eq!(clamp_window(i64::MIN, NOW, NOW).unwrap(), (EARLIEST_MS, NOW));
        assert_eq!(clamp_window(NOW - DAY_MS, NOW, NOW).unwrap(), (NOW - DAY_MS, NOW));
        let before = clamp_window(0, 1_000, NOW).unwrap_err();
        assert_eq!(before.status, StatusCode::BAD_REQUEST);
        assert!(before.message.contains("2000-01-01"), "{}", before.message);
        assert!(clamp_window(NOW + 2 * DAY_MS, NOW + 3 * DAY_MS, NOW).is_err());
    }

    #[test]
    fn steps_longer_than_a_leap_year_are_refused() {
        assert!(check_step(366 * DAY_MS, "366d").is_ok());
        let err = check_step(367 * DAY_MS, "367d").unwrap_err();
        assert!(err.message.contains("367d"), "{}", err.message);
    }

    #[test]
    fn a_watch_stops_at_its_deadline_or_when_abandoned() {
        let watch = Watch::new(Duration::from_secs(60));
        assert!(!watch.stopped());
        drop(AbandonOnDrop(watch.clone()));
        assert!(watch.stopped());
        assert!(matches!(watch.check(), Err(StorageError::Stopped)));
        assert!(Watch::new(Duration::ZERO).stopped());
        let mut poll = Poll::new(Watch::new(Duration::ZERO));
        let stops = (0..Poll::EVERY).filter(|_| poll.check().is_err()).count();
        assert_eq!(stops, 1, "checked once every {} calls", Poll::EVERY);
    }

    #[test]
    fn config_is_checked() {
        let limits = QueryConfig::default().limits().unwrap();
        assert_eq!(limits.timeout, Duration::from_secs(30));
        let zero = QueryConfig { max_groups: 0, ..QueryConfig::default() };
        assert!(zero.limits().unwrap_err().to_string().contains("query.max_groups"));
        let bad = QueryConfig { timeout: "soon".into(), ..QueryConfig::default() };
        assert!(bad.limits().unwrap_err().to_string().contains("query.timeout"));
    }
}
