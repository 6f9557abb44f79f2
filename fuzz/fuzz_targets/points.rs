//! `POST /api/v1/points` bodies: batch splitting, point parsing and
//! validation (`tally::ingest::points::points_batch`).
//!
//! Input: the first byte's low bit says NDJSON, its second bit whether
//! metric points have a retention horizon; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::ingest::points::points_batch;
use tally::normalize::point::valid_name;

/// A fixed clock, so that a crash reproduces.
const NOW_MS: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let oldest = if flags & 2 == 0 { i64::MIN } else { NOW_MS - 90 * 86_400_000 };
    let Ok((points, rejected)) = points_batch(body, flags & 1 == 1, NOW_MS, oldest, "default")
    else {
        return;
    };
    let mut last = None;
    for rejection in &rejected {
        assert!(last < Some(rejection.index), "rejections out of order");
        last = Some(rejection.index);
    }
    for point in &points {
        assert!(point.value.is_finite(), "value {}", point.value);
        assert!(point.time_ms >= oldest);
        assert!(valid_name(&point.key.name), "name {:?}", point.key.name);
    }
});
