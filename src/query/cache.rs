//! Per-bucket results of rollup queries, kept for the next query.
//!
//! Dashboards ask the same questions again and again over windows that move
//! by a few minutes. Each stored bucket's rows, filtered and grouped for one
//! question (the signature: project, group_by, filters), are kept here with
//! the bucket's version; a flush that changes a bucket bumps its version, so
//! a cached result is used only while it is still exactly what the store
//! holds. Open (unflushed) cells are never cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::aggregate::{Cell, Tier};

/// A group's dimension values, in `group_by` order.
pub type GroupKey = Vec<Option<String>>;

/// One bucket's stored rows, grouped.
pub type Grouped = Arc<BTreeMap<GroupKey, Cell>>;

/// Most cached bucket results; the cache starts over when it is full.
const MAX_ENTRIES: usize = 20_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    signature: Arc<str>,
    tier: Tier,
    bucket: i64,
}

struct Entry {
    version: (u64, u64),
    groups: Grouped,
}

#[derive(Default)]
pub struct BucketCache {
    entries: Mutex<HashMap<EntryKey, Entry>>,
}

impl BucketCache {
    /// The cached groups of a bucket, if computed at `version`.
    pub fn get(
        &self,
        signature: &Arc<str>,
        tier: Tier,
        bucket: i64,
        version: (u64, u64),
    ) -> Option<Grouped> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = EntryKey { signature: signature.clone(), tier, bucket };
        entries.get(&key).filter(|e| e.version == version).map(|e| e.groups.clone())
    }

    pub fn put(
        &self,
        signature: &Arc<str>,
        tier: Tier,
        bucket: i64,
        version: (u64, u64),
        groups: Grouped,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            EntryKey { signature: signature.clone(), tier, bucket },
            Entry { version, groups },
        );
    }
}
