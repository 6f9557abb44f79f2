//! Time buckets, rollups and quantile sketches.
//!
//! The rollup engine keeps the open (not yet flushed) buckets in memory and
//! knows every series; storage keeps what has been flushed. Queries merge both.

pub mod metric;
pub mod rollup;
pub mod series;
pub mod sketch;
pub mod tier;

pub use rollup::{Cell, CellKey, RollupEngine};
pub use series::{SeriesKey, SeriesRegistry};
pub use sketch::Sketch;
pub use tier::Tier;

/// `a + b`, held at `±f64::MAX` instead of becoming infinite (which JSON
/// serves as `null`). Ingest bounds every value (`normalize::limits`) so
/// that this never triggers in practice; it is the last guard for the float
/// sums that rollups, metric bins and sketches keep.
#[inline]
pub fn saturating_add(a: f64, b: f64) -> f64 {
    (a + b).clamp(-f64::MAX, f64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn float_sums_saturate() {
        assert_eq!(super::saturating_add(f64::MAX, f64::MAX), f64::MAX);
        assert_eq!(super::saturating_add(-f64::MAX, -1e308), -f64::MAX);
        assert_eq!(super::saturating_add(1.5, 2.0), 3.5);
    }
}
