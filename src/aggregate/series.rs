//! Series: the distinct rollup keys, each given a small integer id so that
//! rollup rows and raw calls refer to it instead of repeating its strings.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::model::{LlmCall, Operation, Status, Tags};

/// The dimensions usage is rolled up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub project: String,
    pub model: String,
    pub provider: Option<String>,
    pub operation: Operation,
    pub user: Option<String>,
    pub api_key: Option<String>,
    pub route: Option<String>,
    pub status: Status,
    pub cluster: Option<String>,
    pub tags: Tags,
}

impl SeriesKey {
    pub fn of(call: &LlmCall) -> SeriesKey {
        SeriesKey {
            project: call.project.clone(),
            model: call.model.clone(),
            provider: call.provider.clone(),
            operation: call.operation,
            user: call.user.clone(),
            api_key: call.api_key.clone(),
            route: call.route.clone(),
            status: call.status,
            cluster: call.cluster.clone(),
            tags: call.tags.clone(),
        }
    }

    /// Value of a dimension by its query name (`model`, `tag.team`, …).
    pub fn dimension(&self, name: &str) -> Option<&str> {
        match name {
            "project" => Some(&self.project),
            "model" => Some(&self.model),
            "provider" => self.provider.as_deref(),
            "operation" => Some(self.operation.as_str()),
            "user" => self.user.as_deref(),
            "api_key" => self.api_key.as_deref(),
            "route" => self.route.as_deref(),
            "status" => Some(self.status.as_str()),
            "cluster" => self.cluster.as_deref(),
            _ => name.strip_prefix("tag.").and_then(|tag| self.tags.get(tag)).map(String::as_str),
        }
    }

    /// Does the call belong to this series?
    fn matches(&self, call: &LlmCall) -> bool {
        self.model == call.model
            && self.project == call.project
            && self.user == call.user
            && self.api_key == call.api_key
            && self.operation == call.operation
            && self.status == call.status
            && self.provider == call.provider
            && self.route == call.route
            && self.cluster == call.cluster
            && self.tags == call.tags
    }
}

/// Hashes the dimensions of a series, from a key or from a call alike.
#[allow(clippy::too_many_arguments)]
fn hash_dimensions(
    project: &str,
    model: &str,
    provider: Option<&str>,
    operation: Operation,
    user: Option<&str>,
    api_key: Option<&str>,
    route: Option<&str>,
    status: Status,
    cluster: Option<&str>,
    tags: &Tags,
) -> u64 {
    let mut h = FxHasher::default();
    (project, model, provider, operation, user, api_key).hash(&mut h);
    (route, status, cluster, tags).hash(&mut h);
    h.finish()
}

fn hash_key(key: &SeriesKey) -> u64 {
    hash_dimensions(
        &key.project,
        &key.model,
        key.provider.as_deref(),
        key.operation,
        key.user.as_deref(),
        key.api_key.as_deref(),
        key.route.as_deref(),
        key.status,
        key.cluster.as_deref(),
        &key.tags,
    )
}

fn hash_call(call: &LlmCall) -> u64 {
    hash_dimensions(
        &call.project,
        &call.model,
        call.provider.as_deref(),
        call.operation,
        call.user.as_deref(),
        call.api_key.as_deref(),
        call.route.as_deref(),
        call.status,
        call.cluster.as_deref(),
        &call.tags,
    )
}

/// Every series known, by key and by id. Calls are looked up by their
/// fields directly, so a known series costs no allocation. New series are
/// pending until the store confirms it has them, and are written along with
/// the calls that introduced them.
#[derive(Default)]
pub struct SeriesRegistry {
    /// Series ids, hashed by their dimensions.
    table: HashTable<i64>,
    by_id: HashMap<i64, Arc<SeriesKey>>,
    next_id: i64,
    pending: Vec<i64>,
}

impl SeriesRegistry {
    /// Loads series the store already has.
    pub fn from_stored(series: Vec<(i64, SeriesKey)>) -> Self {
        let mut registry = SeriesRegistry { next_id: 1, ..Default::default() };
        for (id, key) in series {
            registry.next_id = registry.next_id.max(id + 1);
            registry.insert(id, Arc::new(key));
        }
        registry
    }

    fn insert(&mut self, id: i64, key: Arc<SeriesKey>) {
        let by_id = &self.by_id;
        self.table.insert_unique(hash_key(&key), id, |id| hash_key(&by_id[id]));
        self.by_id.insert(id, key);
    }

    /// The series id of each call, registering new series as pending.
    pub fn assign(&mut self, calls: &[LlmCall]) -> Vec<i64> {
        let mut ids = Vec::with_capacity(calls.len());
        for call in calls {
            let hash = hash_call(call);
            let by_id = &self.by_id;
            let found = self.table.find(hash, |id| by_id[id].matches(call)).copied();
            let id = match found {
                Some(id) => id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.insert(id, Arc::new(SeriesKey::of(call)));
                    self.pending.push(id);
                    id
                }
            };
            ids.push(id);
        }
        ids
    }

    /// Series registered but not yet confirmed stored.
    pub fn pending(&self) -> Vec<(i64, Arc<SeriesKey>)> {
        self.pending.iter().map(|id| (*id, self.by_id[id].clone())).collect()
    }

    /// The store now has these series.
    pub fn confirm(&mut self, stored: &[i64]) {
        if !stored.is_empty() {
            self.pending.retain(|id| !stored.contains(id));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &Arc<SeriesKey>)> {
        self.by_id.iter().map(|(id, key)| (*id, key))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, user: Option<&str>, team: &str) -> LlmCall {
        LlmCall {
            project: "p".into(),
            model: model.into(),
            user: user.map(str::to_owned),
            tags: Tags::from([("team".to_owned(), team.to_owned())]),
            ..LlmCall::example()
        }
    }

    #[test]
    fn same_dimensions_same_series_across_reloads() {
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        let calls = [
            call("a", Some("u"), "t1"),
            call("a", Some("u"), "t2"),
            call("a", None, "t1"),
            call("a", Some("u"), "t1"),
        ];
        let ids = registry.assign(&calls);
        assert_eq!(ids, vec![1, 2, 3, 1]);
        assert_eq!(registry.pending().len(), 3);
        registry.confirm(&[1, 2]);
        assert_eq!(registry.pending().len(), 1);
        let stored: Vec<(i64, SeriesKey)> =
            registry.iter().map(|(id, key)| (id, (**key).clone())).collect();
        let mut reloaded = SeriesRegistry::from_stored(stored);
        assert_eq!(reloaded.assign(&calls), vec![1, 2, 3, 1]);
        assert_eq!(reloaded.assign(&[call("b", None, "t1")]), vec![4]);
    }
}
