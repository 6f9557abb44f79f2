//! Series: the distinct rollup keys, each given a small integer id so that
//! rollup rows and raw calls refer to it instead of repeating its strings.

use std::collections::HashMap;
use std::sync::Arc;

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

    /// Does the call belong to this series? (Avoids building a key per call
    /// when consecutive calls share one.)
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

/// Every series known, by key and by id. New series are pending until the
/// store confirms it has them, and are written along with the calls that
/// introduced them.
#[derive(Default)]
pub struct SeriesRegistry {
    by_key: HashMap<Arc<SeriesKey>, i64>,
    by_id: HashMap<i64, Arc<SeriesKey>>,
    next_id: i64,
    pending: Vec<i64>,
}

impl SeriesRegistry {
    /// Loads series the store already has.
    pub fn from_stored(series: Vec<(i64, SeriesKey)>) -> Self {
        let mut registry = SeriesRegistry { next_id: 1, ..Default::default() };
        for (id, key) in series {
            let key = Arc::new(key);
            registry.next_id = registry.next_id.max(id + 1);
            registry.by_key.insert(key.clone(), id);
            registry.by_id.insert(id, key);
        }
        registry
    }

    /// The series id of each call, registering new series as pending.
    pub fn assign(&mut self, calls: &[LlmCall]) -> Vec<i64> {
        let mut ids = Vec::with_capacity(calls.len());
        let mut last: Option<(Arc<SeriesKey>, i64)> = None;
        for call in calls {
            if let Some((key, id)) = &last
                && key.matches(call)
            {
                ids.push(*id);
                continue;
            }
            let key = SeriesKey::of(call);
            let id = match self.by_key.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let key = Arc::new(key.clone());
                    self.by_key.insert(key.clone(), id);
                    self.by_id.insert(id, key);
                    self.pending.push(id);
                    id
                }
            };
            last = Some((self.by_id[&id].clone(), id));
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
        self.pending.retain(|id| !stored.contains(id));
    }

    pub fn get(&self, id: i64) -> Option<&Arc<SeriesKey>> {
        self.by_id.get(&id)
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
