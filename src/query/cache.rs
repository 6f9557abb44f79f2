//! Per-bucket results of rollup queries, kept for the next query.
//!
//! Dashboards ask the same questions again and again over windows that move
//! by a few minutes. Each stored bucket's rows, filtered and grouped for one
//! question (the signature: project, group_by, filters), are kept here with
//! the bucket's version; a flush that changes a bucket bumps its version, so
//! a cached result is used only while it is still exactly what the store
//! holds. Open (unflushed) cells are never cached.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::aggregate::{Cell, Tier};

/// A group's dimension values, in `group_by` order.
pub type GroupKey = Vec<Option<String>>;

/// One bucket's stored rows, grouped.
pub type Grouped = Arc<BTreeMap<GroupKey, Cell>>;

/// Most cached bucket results; the cache starts over when it is full.
const MAX_ENTRIES: usize = 20_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct EntryKey<T> {
    signature: Arc<str>,
    tier: T,
    bucket: i64,
}

struct Entry<V> {
    version: (u64, u64),
    value: V,
}

/// Results per (question, tier, bucket), each kept with the version of the
/// bucket it was computed at; `T` is the tier kind, `V` the result.
pub struct BucketCache<T = Tier, V = Grouped> {
    entries: Mutex<HashMap<EntryKey<T>, Entry<V>>>,
}

impl<T, V> Default for BucketCache<T, V> {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }
}

impl<T: Copy + Eq + Hash, V: Clone> BucketCache<T, V> {
    /// The cached result of a bucket, if computed at `version`.
    pub fn get(
        &self,
        signature: &Arc<str>,
        tier: T,
        bucket: i64,
        version: (u64, u64),
    ) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = EntryKey { signature: signature.clone(), tier, bucket };
        entries.get(&key).filter(|e| e.version == version).map(|e| e.value.clone())
    }

    pub fn put(&self, signature: &Arc<str>, tier: T, bucket: i64, version: (u64, u64), value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            EntryKey { signature: signature.clone(), tier, bucket },
            Entry { version, value },
        );
    }
}
