//! The HTTP query API. It talks only to storage and the rollup engine.

mod cache;
mod params;
pub mod trace_stats;
pub mod trace_tree;
pub mod traces;
pub mod usage;

use std::sync::Arc;

use crate::aggregate::RollupEngine;
use crate::storage::Storage;

/// What the query endpoints need.
pub struct QueryState {
    pub storage: Arc<dyn Storage>,
    pub engine: Arc<RollupEngine>,
    pub cache: cache::BucketCache,
}

impl QueryState {
    pub fn new(storage: Arc<dyn Storage>, engine: Arc<RollupEngine>) -> Self {
        Self { storage, engine, cache: cache::BucketCache::default() }
    }
}
