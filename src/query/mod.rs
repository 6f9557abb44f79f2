//! The HTTP query API. It talks only to storage and the rollup engine.

mod cache;
pub mod limits;
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
    /// Where traces, sessions and logs are read: the store, or on a node
    /// of a cluster, ClickHouse.
    pub telemetry: Arc<dyn crate::storage::TelemetryStore>,
    pub engine: Arc<RollupEngine>,
    pub metrics: Arc<MetricRegistry>,
    pub limits: limits::QueryLimits,
    pub cache: cache::BucketCache,
    /// Metric query results per step (`metrics::grouped_bins`).
    pub metric_cache: cache::BucketCache<MetricTier, metrics::StepGroups>,
    /// On a node of a cluster: where usage is read from (ClickHouse), so
    /// that every node answers alike.
    pub shared: Option<Arc<crate::cluster::reads::SharedReads>>,
}

impl QueryState {
    pub fn new(
        storage: Arc<dyn Storage>,
        engine: Arc<RollupEngine>,
        metrics: Arc<MetricRegistry>,
        limits: limits::QueryLimits,
    ) -> Self {
        Self {
            telemetry: storage.clone(),
            storage,
            engine,
            metrics,
            limits,
            cache: cache::BucketCache::default(),
            metric_cache: cache::BucketCache::default(),
            shared: None,
        }
    }

    /// A storage error as the client sees it (`limits::storage_failure`).
    pub fn failure(
        &self,
        context: &str,
        err: &crate::storage::StorageError,
    ) -> crate::error::ApiError {
        limits::storage_failure(&self.limits, context, err)
    }
}
