//! The HTTP query API. It talks only to storage and the rollup engine.

mod cache;
pub mod metrics;
pub mod params;
pub mod trace_stats;
pub mod trace_tree;
pub mod traces;
pub mod usage;

use std::sync::Arc;

use crate::aggregate::RollupEngine;
use crate::aggregate::metric::{MetricRegistry, MetricTier};
use crate::storage::Storage;

/// What the query endpoints need.
pub struct QueryState {
    pub storage: Arc<dyn Storage>,
    pub engine: Arc<RollupEngine>,
    pub metrics: Arc<MetricRegistry>,
    pub cache: cache::BucketCache,
    /// Metric query results per step (`metrics::grouped_bins`).
    pub metric_cache: cache::BucketCache<MetricTier, metrics::StepGroups>,
}

impl QueryState {
    pub fn new(
        storage: Arc<dyn Storage>,
        engine: Arc<RollupEngine>,
        metrics: Arc<MetricRegistry>,
    ) -> Self {
        Self {
            storage,
            engine,
            metrics,
            cache: cache::BucketCache::default(),
            metric_cache: cache::BucketCache::default(),
        }
    }
}
