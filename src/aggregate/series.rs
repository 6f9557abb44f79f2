//! Series: the distinct rollup keys, each given a small integer id so that
//! rollup rows and raw calls refer to it instead of repeating its strings.
//!
//! Besides the series calls land in, the registry keeps projection series:
//! the totals of one dimension's value over every other dimension (all calls
//! of model gpt-4o, of user alice, of tag team=search, and of the whole
//! project). A dashboard grouped by one dimension reads those few rows
//! instead of every series, which keeps it fast when nothing is cached.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHasher};

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
    /// For a projection series, the dimension it totals by (`model`,
    /// `tag.team`, … or `""` for the project's total); only that dimension
    /// is set. None for the series calls land in.
    pub projection: Option<String>,
}

/// The dimensions that get projection series (plus each tag name and the
/// project total).
pub const PROJECTED: [&str; 8] =
    ["model", "provider", "operation", "user", "api_key", "route", "status", "cluster"];

/// Ids of ordinary series: positive. Projection ids are negative and grouped
/// by dimension — the n-th projection of the dimension with code c has id
/// -(c·2³² + n) — so one dimension's rows sit together in each bucket of the
/// stored rollups, and a query reads just them.
pub const ORDINARY_IDS: (i64, i64) = (1, i64::MAX);
const CODE_SHIFT: u32 = 32;
const N_MASK: i64 = (1 << CODE_SHIFT) - 1;
/// Codes of tag dimensions start here; the fixed dimensions use 1 (the
/// total) and 2.. (PROJECTED, in order).
const FIRST_TAG_CODE: i64 = 16;

fn fixed_code(dimension: &str) -> Option<i64> {
    if dimension.is_empty() {
        return Some(1);
    }
    PROJECTED.iter().position(|d| *d == dimension).map(|i| i as i64 + 2)
}

/// The id range `[lo, hi)` of the projections with dimension code `code`.
fn code_range(code: i64) -> (i64, i64) {
    (-((code << CODE_SHIFT) + N_MASK), -(code << CODE_SHIFT) + 1)
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
            projection: None,
        }
    }

    /// The projection series totalling this series' value of `dimension`
    /// (`""`: the project total).
    pub fn projection(&self, dimension: &str) -> SeriesKey {
        let mut key = SeriesKey {
            project: self.project.clone(),
            model: String::new(),
            provider: None,
            operation: Operation::Other,
            user: None,
            api_key: None,
            route: None,
            status: Status::Ok,
            cluster: None,
            tags: Tags::new(),
            projection: Some(dimension.to_owned()),
        };
        match dimension {
            "" => {}
            "model" => key.model = self.model.clone(),
            "provider" => key.provider = self.provider.clone(),
            "operation" => key.operation = self.operation,
            "user" => key.user = self.user.clone(),
            "api_key" => key.api_key = self.api_key.clone(),
            "route" => key.route = self.route.clone(),
            "status" => key.status = self.status,
            "cluster" => key.cluster = self.cluster.clone(),
            _ => {
                let tag = dimension.strip_prefix("tag.").expect("projected dimension");
                if let Some(value) = self.tags.get(tag) {
                    key.tags.insert(tag.to_owned(), value.clone());
                }
            }
        }
        key
    }

    /// Every projection this series contributes to.
    pub fn projections(&self) -> Vec<SeriesKey> {
        let tags = self.tags.keys().map(|tag| format!("tag.{tag}"));
        std::iter::once(String::new())
            .chain(PROJECTED.iter().map(|d| (*d).to_owned()))
            .chain(tags)
            .map(|dimension| self.projection(&dimension))
            .collect()
    }

    pub fn is_projection(&self) -> bool {
        self.projection.is_some()
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
}

/// The dimensions of a series or of a call, borrowed.
struct Dimensions<'a> {
    project: &'a str,
    model: &'a str,
    provider: Option<&'a str>,
    operation: Operation,
    user: Option<&'a str>,
    api_key: Option<&'a str>,
    route: Option<&'a str>,
    status: Status,
    cluster: Option<&'a str>,
    tags: &'a Tags,
    projection: Option<&'a str>,
}

impl<'a> Dimensions<'a> {
    fn of_key(key: &'a SeriesKey) -> Self {
        Dimensions {
            project: &key.project,
            model: &key.model,
            provider: key.provider.as_deref(),
            operation: key.operation,
            user: key.user.as_deref(),
            api_key: key.api_key.as_deref(),
            route: key.route.as_deref(),
            status: key.status,
            cluster: key.cluster.as_deref(),
            tags: &key.tags,
            projection: key.projection.as_deref(),
        }
    }

    fn of_call(call: &'a LlmCall) -> Self {
        Dimensions {
            project: &call.project,
            model: &call.model,
            provider: call.provider.as_deref(),
            operation: call.operation,
            user: call.user.as_deref(),
            api_key: call.api_key.as_deref(),
            route: call.route.as_deref(),
            status: call.status,
            cluster: call.cluster.as_deref(),
            tags: &call.tags,
            projection: None,
        }
    }

    /// Writes the dimensions as one byte string, equal for equal
    /// dimensions only (each text is length-prefixed, absence marked), so
    /// that a lookup compares one contiguous run of memory instead of
    /// following a pointer per field.
    fn flatten(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, text: Option<&str>) {
            match text {
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(text) => {
                    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out.clear();
        out.extend_from_slice(&[self.operation as u8, self.status as u8]);
        for field in [Some(self.project), Some(self.model), self.provider, self.user] {
            text(out, field);
        }
        for field in [self.api_key, self.route, self.cluster, self.projection] {
            text(out, field);
        }
        out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        for (name, value) in self.tags {
            text(out, Some(name));
            text(out, Some(value));
        }
    }
}

fn hash_flat(flat: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(flat);
    h.finish()
}

/// Every series known, by key and by id. Calls are looked up by their
/// fields directly, so a known series costs no allocation. New series are
/// pending until the store confirms it has them, and are written along with
/// the calls that introduced them.
#[derive(Default)]
pub struct SeriesRegistry {
    /// Series ids by their dimensions flattened (`Dimensions::flatten`).
    table: HashTable<(i64, Box<[u8]>)>,
    /// The flattened dimensions being looked up.
    scratch: Vec<u8>,
    by_id: FxHashMap<i64, Arc<SeriesKey>>,
    next_id: i64,
    pending: Vec<i64>,
    /// The projection series of each series, found once.
    projections: HashMap<i64, Arc<[i64]>>,
    /// Projection id codes by dimension, and the next number per code.
    codes: HashMap<String, i64>,
    next_in_code: HashMap<i64, i64>,
}

impl SeriesRegistry {
    /// Loads series the store already has.
    pub fn from_stored(series: Vec<(i64, SeriesKey)>) -> Self {
        let mut registry = SeriesRegistry { next_id: 1, ..Default::default() };
        for (id, key) in series {
            match &key.projection {
                None => registry.next_id = registry.next_id.max(id + 1),
                Some(dimension) => {
                    let (code, n) = ((-id) >> CODE_SHIFT, (-id) & N_MASK);
                    registry.codes.insert(dimension.clone(), code);
                    let next = registry.next_in_code.entry(code).or_insert(1);
                    *next = (*next).max(n + 1);
                }
            }
            registry.insert(id, Arc::new(key));
        }
        registry
    }

    /// A new id for a projection by `dimension`.
    fn projection_id(&mut self, dimension: &str) -> i64 {
        let code = match self.codes.get(dimension) {
            Some(code) => *code,
            None => {
                let code = fixed_code(dimension).unwrap_or_else(|| {
                    self.codes
                        .values()
                        .copied()
                        .filter(|c| *c >= FIRST_TAG_CODE)
                        .max()
                        .map_or(FIRST_TAG_CODE, |max| max + 1)
                });
                self.codes.insert(dimension.to_owned(), code);
                code
            }
        };
        let next = self.next_in_code.entry(code).or_insert(1);
        let n = *next;
        assert!(n <= N_MASK, "more than 2^32 projections of one dimension");
        *next += 1;
        -((code << CODE_SHIFT) + n)
    }

    /// The id range `[lo, hi)` of the projections by `dimension`; None when
    /// there are none.
    pub fn projection_range(&self, dimension: &str) -> Option<(i64, i64)> {
        self.codes.get(dimension).map(|code| code_range(*code))
    }

    fn insert(&mut self, id: i64, key: Arc<SeriesKey>) {
        Dimensions::of_key(&key).flatten(&mut self.scratch);
        let flat = Box::<[u8]>::from(self.scratch.as_slice());
        self.table.insert_unique(hash_flat(&flat), (id, flat), |(_, flat)| hash_flat(flat));
        self.by_id.insert(id, key);
    }

    /// The id of the series with the dimensions in `scratch`.
    fn find_scratch(&self) -> Option<i64> {
        let flat = self.scratch.as_slice();
        self.table.find(hash_flat(flat), |(_, stored)| **stored == *flat).map(|(id, _)| *id)
    }

    /// The series id of each call, registering new series as pending.
    pub fn assign(&mut self, calls: &[LlmCall]) -> Vec<i64> {
        let mut ids = Vec::with_capacity(calls.len());
        for call in calls {
            Dimensions::of_call(call).flatten(&mut self.scratch);
            let id = match self.find_scratch() {
                Some(id) => id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.insert(id, Arc::new(SeriesKey::of(call)));
                    self.pending.push(id);
                    // Its projections exist (and are stored) with it, so a
                    // projection query finds the series' open cells too.
                    self.projections_of(id);
                    id
                }
            };
            ids.push(id);
        }
        ids
    }

    /// The id of `key`, registering it as pending when new.
    fn assign_key(&mut self, key: SeriesKey) -> i64 {
        Dimensions::of_key(&key).flatten(&mut self.scratch);
        if let Some(id) = self.find_scratch() {
            return id;
        }
        let id = match &key.projection {
            Some(dimension) => self.projection_id(&dimension.clone()),
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        };
        self.insert(id, Arc::new(key));
        self.pending.push(id);
        id
    }

    /// The projection series `series` contributes to (registering new ones
    /// as pending); empty for a projection itself.
    pub fn projections_of(&mut self, series: i64) -> Arc<[i64]> {
        if let Some(ids) = self.projections.get(&series) {
            return ids.clone();
        }
        let Some(key) = self.by_id.get(&series).cloned() else { return Arc::from([]) };
        let ids: Arc<[i64]> = if key.is_projection() {
            Arc::from([])
        } else {
            key.projections().into_iter().map(|p| self.assign_key(p)).collect()
        };
        self.projections.insert(series, ids.clone());
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
        assert_eq!(ids[0], ids[3]);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        // The three series and their projections await the store.
        let pending: Vec<i64> = registry.pending().iter().map(|(id, _)| *id).collect();
        assert!(ids.iter().all(|id| pending.contains(id)));
        registry.confirm(&ids[..2]);
        assert_eq!(registry.pending().len(), pending.len() - 2);
        let stored: Vec<(i64, SeriesKey)> =
            registry.iter().map(|(id, key)| (id, (**key).clone())).collect();
        let mut reloaded = SeriesRegistry::from_stored(stored);
        assert_eq!(reloaded.assign(&calls), ids);
        assert!(reloaded.pending().is_empty(), "projections were stored with their series");
        let [new] = reloaded.assign(&[call("b", None, "t1")])[..] else { panic!() };
        assert!(!ids.contains(&new));
    }

    #[test]
    fn projections_are_shared_by_the_series_with_that_value() {
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        let ids = registry.assign(&[call("a", Some("u"), "t1"), call("a", Some("v"), "t1")]);
        // Both series and their 11 distinct projections.
        assert_eq!(registry.pending().len(), 13);
        let pending: Vec<i64> = registry.pending().iter().map(|(id, _)| *id).collect();
        registry.confirm(&pending);
        let first = registry.projections_of(ids[0]);
        let second = registry.projections_of(ids[1]);
        // total, 8 dimensions, tag.team
        assert_eq!(first.len(), 10);
        let by_dimension = |ids: &[i64], registry: &SeriesRegistry, dimension: &str| {
            ids.iter()
                .copied()
                .find(|id| registry.by_id[id].projection.as_deref() == Some(dimension))
                .unwrap()
        };
        for shared in ["", "model", "tag.team", "route"] {
            assert_eq!(
                by_dimension(&first, &registry, shared),
                by_dimension(&second, &registry, shared)
            );
        }
        assert_ne!(
            by_dimension(&first, &registry, "user"),
            by_dimension(&second, &registry, "user")
        );
        let user = by_dimension(&second, &registry, "user");
        assert_eq!(registry.by_id[&user].dimension("user"), Some("v"));
        // Each dimension's projections have ids in their own range.
        for dimension in ["", "model", "user", "tag.team"] {
            let (lo, hi) = registry.projection_range(dimension).unwrap();
            let inside: Vec<i64> =
                registry.iter().map(|(id, _)| id).filter(|id| (lo..hi).contains(id)).collect();
            assert!(
                inside.iter().all(|id| registry.by_id[id].projection.as_deref() == Some(dimension))
            );
            assert_eq!(inside.len(), if dimension == "user" { 2 } else { 1 }, "{dimension}");
        }
        assert_eq!(registry.projection_range("tag.other"), None);
        assert_eq!(registry.projections_of(user).len(), 0);
        // A call never lands in a projection series, even one with its values.
        let projected_model = registry.by_id[&by_dimension(&first, &registry, "model")].clone();
        let lookalike = LlmCall {
            project: "p".into(),
            model: "a".into(),
            operation: projected_model.operation,
            ..LlmCall::example()
        };
        let [id] = registry.assign(&[lookalike])[..] else { panic!() };
        assert!(!registry.by_id[&id].is_projection());
        assert!(registry.pending().iter().any(|(pending, _)| *pending == id));
    }
}
