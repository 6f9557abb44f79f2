//! Query-string parsing for the query API (`tally::query::params::Params`:
//! window, group_by, filters, limit, format, step), with the window clamp,
//! the step check and the time syntax under them, in the order the
//! handlers use them.
//!
//! Input: the query string (bytes as sent; percent-decoding may yield
//! anything).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::aggregate::Tier;
use tally::aggregate::metric::MetricTier;
use tally::query::limits::{EARLIEST_MS, check_step};
use tally::query::params::{Params, ceil, floor, parse_cursor};
use tally::time::{now_ms, parse_duration, parse_instant};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let params = Params::parse(Some(&query));
    let _ = params.project();
    let _ = params.csv();
    let _ = params.limit(100, 1000).map(|n| assert!((1..=1000).contains(&n)));
    for allow_session in [false, true] {
        let _ = params.group_by(allow_session);
        let _ = params.filters(allow_session);
    }
    if let Some(cursor) = params.get("cursor") {
        let _ = parse_cursor(cursor);
    }
    for (_, value) in params.pairs() {
        let _ = parse_instant(value);
        let _ = parse_duration(value);
    }

    let window = params.window();
    if let Ok((from, to)) = window {
        assert!(from < to, "empty window [{from}, {to})");
        assert!(from >= EARLIEST_MS);
        // A day ahead of the clock at most (read again, so it may have moved).
        assert!(to <= now_ms() + 86_400_000 + 1);
        let (minute_from, minute_to) = params.minute_window().expect("the window was valid");
        assert!(minute_from <= minute_to);
    }

    // `/api/v1/usage/series` and `/api/v1/metrics/query`: the step, then the
    // window cut to whole steps.
    let step_text = params.get("step").unwrap_or("1h");
    let Ok(step) = parse_duration(step_text) else {
        return;
    };
    if check_step(step, step_text).is_err() {
        return;
    }
    let fits = Tier::coarsest_fitting(step).is_some() || MetricTier::for_step(step).is_some();
    if let (true, Ok((from, to))) = (fits, window) {
        let (from, to) = (floor(from, step), ceil(to, step));
        assert!(from < to);
        let _ = (to - from) / step;
    }
});
