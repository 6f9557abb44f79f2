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
