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
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use tracing::warn;

use crate::model::{LlmCall, Operation, Status, Tags};
use crate::varint;

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

/// The projection whose series answer a query grouped by `dims` and
/// filtered by `filters` (per dimension the values it keeps, `""` for
/// none): when at most one dimension is involved, that dimension's (`""`
/// for the project's total), else none (every series is read).
pub fn serving_projection<'a>(
    dims: &'a [String],
    filters: &'a std::collections::BTreeMap<String, Vec<String>>,
) -> Option<&'a str> {
    let mut involved: Vec<&str> =
        dims.iter().map(String::as_str).chain(filters.keys().map(String::as_str)).collect();
    involved.sort_unstable();
    involved.dedup();
    match involved[..] {
        [] => Some(""),
        [dim] if PROJECTED.contains(&dim) => Some(dim),
        // A series lacking a tag has no projection for it, so tag
        // projections serve only queries that filter to given values.
        [dim]
            if dim.starts_with("tag.")
                && filters.get(dim).is_some_and(|values| values.iter().all(|v| !v.is_empty())) =>
        {
            Some(dim)
        }
        _ => None,
    }
}

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

/// `SeriesKey::stable_id` over the fixed dimensions (in order) and the tags.
pub fn stable_hash(fixed: &[Option<&str>], tags: &crate::model::Tags) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        None => hash.update([0u8]),
        Some(text) => {
            hash.update([1u8]);
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        }
    };
    for value in fixed {
        field(*value);
    }
    // Tags last, as many as there are, in key order.
    for (key, value) in tags {
        field(Some(key));
        field(Some(value));
    }
    let digest = hash.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

impl SeriesKey {
    /// The series' identity across nodes and releases: the first 8 bytes of
    /// SHA-256 over its dimensions, each written with its length (absent
    /// ones marked), so that no two keys write the same bytes. Node-local
    /// ids are minted per process; a shared store keys series by this.
    pub fn stable_id(&self) -> u64 {
        stable_hash(
            &[
                Some(&self.project),
                Some(&self.model),
                self.provider.as_deref(),
                Some(self.operation.as_str()),
                self.user.as_deref(),
                self.api_key.as_deref(),
                self.route.as_deref(),
                Some(self.status.as_str()),
                self.cluster.as_deref(),
                self.projection.as_deref(),
            ],
            &self.tags,
        )
    }

    /// `SeriesKey::of(call).stable_id()`, without making the key.
    pub fn stable_id_of(call: &LlmCall) -> u64 {
        stable_hash(
            &[
                Some(&call.project),
                Some(&call.model),
                call.provider.as_deref(),
                Some(call.operation.as_str()),
                call.user.as_deref(),
                call.api_key.as_deref(),
                call.route.as_deref(),
                Some(call.status.as_str()),
                call.cluster.as_deref(),
                None,
            ],
            &call.tags,
        )
    }

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
    /// dimensions only (each text is length-prefixed, absence marked). It is
    /// how the registry keeps a series (`SeriesView` reads it back): one
    /// small allocation per series, and a lookup compares one contiguous run
    /// of memory instead of following a pointer per field.
    fn flatten(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, text: &str) {
            varint::put(out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
        fn optional(out: &mut Vec<u8>, value: Option<&str>) {
            match value {
                None => out.push(0),
                Some(value) => {
                    varint::put(out, value.len() as u64 + 1);
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        out.clear();
        out.extend_from_slice(&[self.operation as u8, self.status as u8]);
        text(out, self.project);
        text(out, self.model);
        for field in [self.provider, self.user, self.api_key, self.route, self.cluster] {
            optional(out, field);
        }
        optional(out, self.projection);
        varint::put(out, self.tags.len() as u64);
        for (name, value) in self.tags {
            text(out, name);
            text(out, value);
        }
    }
}

/// A series as the registry keeps it: its dimensions flattened.
pub type FlatSeries = Box<[u8]>;

/// `key` flattened, as the registry keeps it.
pub fn flat_of(key: &SeriesKey) -> FlatSeries {
    let mut out = Vec::with_capacity(64);
    Dimensions::of_key(key).flatten(&mut out);
    out.into_boxed_slice()
}

/// A series' dimensions read from their flattened form, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    pub project: &'a str,
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub operation: Operation,
    pub user: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub route: Option<&'a str>,
    pub status: Status,
    pub cluster: Option<&'a str>,
    pub projection: Option<&'a str>,
    /// The tags, still flattened: (name, value) texts, `tag_count` of them.
    tags: &'a [u8],
    tag_count: usize,
}

/// Reads flattened dimensions in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> u64 {
        let (mut n, mut shift) = (0u64, 0);
        while let Some((&byte, rest)) = self.0.split_first() {
            self.0 = rest;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        n
    }

    fn bytes(&mut self, len: usize) -> &'a str {
        let (text, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        // Written from strings by `flatten`, so always UTF-8.
        std::str::from_utf8(text).unwrap_or_default()
    }

    fn text(&mut self) -> &'a str {
        let len = self.varint() as usize;
        self.bytes(len)
    }

    fn optional(&mut self) -> Option<&'a str> {
        match self.varint() {
            0 => None,
            n => Some(self.bytes(n as usize - 1)),
        }
    }
}

impl<'a> SeriesView<'a> {
    pub fn of(flat: &'a [u8]) -> SeriesView<'a> {
        let (operation, status) = match flat {
            [o, s, ..] => (Operation::from_code(*o), Status::from_code(*s)),
            _ => (Operation::Other, Status::Ok),
        };
        let mut r = Reader(flat.get(2..).unwrap_or_default());
        let project = r.text();
        let model = r.text();
        let [provider, user, api_key, route, cluster, projection] =
            std::array::from_fn(|_| r.optional());
        let tag_count = r.varint() as usize;
        SeriesView {
            project,
            model,
            provider,
            operation,
            user,
            api_key,
            route,
            status,
            cluster,
            projection,
            tags: r.0,
            tag_count,
        }
    }

    /// The tags, (name, value), in name order.
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut r = Reader(self.tags);
        (0..self.tag_count).map(move |_| (r.text(), r.text()))
    }

    pub fn is_projection(&self) -> bool {
        self.projection.is_some()
    }

    /// Value of a dimension by its query name (`model`, `tag.team`, …).
    pub fn dimension(&self, name: &str) -> Option<&'a str> {
        match name {
            "project" => Some(self.project),
            "model" => Some(self.model),
            "provider" => self.provider,
            "operation" => Some(self.operation.as_str()),
            "user" => self.user,
            "api_key" => self.api_key,
            "route" => self.route,
            "status" => Some(self.status.as_str()),
            "cluster" => self.cluster,
            _ => {
                let tag = name.strip_prefix("tag.")?;
                self.tags().find(|(n, _)| *n == tag).map(|(_, v)| v)
            }
        }
    }

    /// The series as an owned key.
    pub fn to_key(&self) -> SeriesKey {
        let owned = |v: Option<&str>| v.map(str::to_owned);
        SeriesKey {
            project: self.project.to_owned(),
            model: self.model.to_owned(),
            provider: owned(self.provider),
            operation: self.operation,
            user: owned(self.user),
            api_key: owned(self.api_key),
            route: owned(self.route),
            status: self.status,
            cluster: owned(self.cluster),
            tags: self.tags().map(|(n, v)| (n.to_owned(), v.to_owned())).collect(),
            projection: owned(self.projection),
        }
    }
}

/// The value rollups count a dimension under once it has as many distinct
/// values as its cap allows (the call's own record keeps its real values).
pub const OVERFLOW: &str = "__other__";

/// The `[rollups]` section: how many series and distinct values the
/// registry keeps. Each is memory for as long as the server runs, and every
/// one of them comes from clients; a call that would pass a cap is counted
/// under `__other__` in place of the values beyond it (its own record keeps
/// them).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesLimits {
    /// Rollup series (not counting per-dimension totals) in the whole server.
    pub max_series: usize,
    /// Rollup series in one project.
    pub max_series_per_project: usize,
    /// Projects with rollups of their own.
    pub max_projects: usize,
    /// Distinct values of one dimension (model, provider, user, api_key,
    /// route, cluster, each tag) in one project.
    pub max_values_per_dimension: usize,
    /// Distinct tag names in one project.
    pub max_tag_names: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: 2_000_000,
            max_series_per_project: 1_000_000,
            max_projects: 1_000,
            max_values_per_dimension: 100_000,
            max_tag_names: 100,
        }
    }
}

/// What a capped call was counted under `OVERFLOW` for.
pub const OVERFLOW_KINDS: [&str; 9] =
    ["project", "model", "provider", "user", "api_key", "route", "cluster", "tag", "series"];

/// The dimensions whose values are capped, besides tags.
const CAPPED: [&str; 6] = ["model", "provider", "user", "api_key", "route", "cluster"];

/// Series and distinct values of one project.
#[derive(Default)]
struct ProjectCounts {
    series: usize,
    /// Distinct values (projection series) by dimension.
    values: FxHashMap<Box<str>, usize>,
    tag_names: usize,
    /// Dimensions whose cap was reported in the log (once each).
    logged: FxHashSet<Box<str>>,
}

/// The series of calls in one `assign`, and which of them carry dimensions
/// their series does not (some were counted under `OVERFLOW`): those calls
/// keep their own values in their records.
#[derive(Debug, Default, PartialEq)]
pub struct Assigned {
    pub ids: Vec<i64>,
    /// Indices into the calls, ascending.
    pub own_dimensions: Vec<usize>,
}

fn hash_flat(flat: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(flat);
    h.finish()
}

/// The flattened keys of the series, by id: ordinary ids are dense from 1,
/// projection ids dense from 1 within their dimension's code.
#[derive(Default)]
struct Keys {
    /// Ordinary series `id` at `id - 1` (empty: no such series).
    ordinary: Vec<FlatSeries>,
    /// Projections by dimension code, the n-th at `n - 1`.
    projections: FxHashMap<i64, Vec<FlatSeries>>,
}

impl Keys {
    fn flat(&self, id: i64) -> Option<&[u8]> {
        let flat = if id > 0 {
            self.ordinary.get(id as usize - 1)?
        } else {
            let (code, n) = ((-id) >> CODE_SHIFT, (-id) & N_MASK);
            self.projections.get(&code)?.get((n as usize).checked_sub(1)?)?
        };
        (!flat.is_empty()).then_some(&**flat)
    }

    fn slot(&mut self, id: i64) -> &mut FlatSeries {
        let (slots, index) = if id > 0 {
            (&mut self.ordinary, id as usize - 1)
        } else {
            let (code, n) = ((-id) >> CODE_SHIFT, (-id) & N_MASK);
            (self.projections.entry(code).or_default(), n as usize - 1)
        };
        if slots.len() <= index {
            slots.resize_with(index + 1, FlatSeries::default);
        }
        &mut slots[index]
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> {
        let ordinary = self.ordinary.iter().enumerate().map(|(i, f)| (i as i64 + 1, &**f));
        let projections = self.projections.iter().flat_map(|(code, slots)| {
            slots
                .iter()
                .enumerate()
                .map(move |(i, f)| (-((code << CODE_SHIFT) + i as i64 + 1), &**f))
        });
        ordinary.chain(projections).filter(|(_, f)| !f.is_empty())
    }
}

/// Which series `SeriesRegistry::scan` reads.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// The series calls land in.
    Ordinary,
    /// The per-value totals of one dimension (`""` for the project total).
    Projections(&'a str),
}

/// Every series known, by key and by id. Calls are looked up by their
/// fields directly, so a known series costs no allocation; each series is
/// kept as its flattened dimensions only (`SeriesView` reads them), a few
/// dozen bytes. New series are pending until the store confirms it has
/// them, and are written along with the calls that introduced them.
#[derive(Default)]
pub struct SeriesRegistry {
    keys: Keys,
    /// Series ids, found by their flattened dimensions.
    table: HashTable<i64>,
    /// The flattened dimensions being looked up.
    scratch: Vec<u8>,
    count: usize,
    next_id: i64,
    pending: Vec<i64>,
    /// The projection series of each ordinary series (at `id - 1`), found
    /// once.
    projections: Vec<Option<Box<[i64]>>>,
    /// Projection id codes by dimension, and the next number per code.
    codes: HashMap<String, i64>,
    next_in_code: HashMap<i64, i64>,
    limits: SeriesLimits,
    projects: FxHashMap<Box<str>, ProjectCounts>,
    /// Series that are not projections, in every project.
    ordinary: usize,
    /// Calls counted under `OVERFLOW`, by `OVERFLOW_KINDS`.
    overflowed: [u64; OVERFLOW_KINDS.len()],
    /// The day (since the epoch) of the newest call of each ordinary series
    /// (at `id - 1`), or of its loading: series whose newest call is older
    /// than every retention are let go (`evict`).
    last_day: Vec<u16>,
}

/// Days since the epoch of `time_ms`, as kept in `last_day`.
fn day_of(time_ms: i64) -> u16 {
    (time_ms.max(0) / 86_400_000).min(u16::MAX as i64) as u16
}

impl SeriesRegistry {
    /// Loads series the store already has.
    pub fn from_stored(series: Vec<(i64, FlatSeries)>) -> Self {
        let mut registry = SeriesRegistry { next_id: 1, ..Default::default() };
        registry.limits = SeriesLimits::default();
        for (id, flat) in series {
            if id > 0 {
                registry.next_id = registry.next_id.max(id + 1);
            } else {
                let view = SeriesView::of(&flat);
                let dimension = view.projection.unwrap_or_default();
                let (code, n) = ((-id) >> CODE_SHIFT, (-id) & N_MASK);
                if !registry.codes.contains_key(dimension) {
                    registry.codes.insert(dimension.to_owned(), code);
                }
                let next = registry.next_in_code.entry(code).or_insert(1);
                *next = (*next).max(n + 1);
            }
            registry.insert(id, flat);
        }
        let today = day_of(crate::time::now_ms());
        registry.last_day = vec![today; registry.keys.ordinary.len()];
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

    fn insert(&mut self, id: i64, flat: FlatSeries) {
        let view = SeriesView::of(&flat);
        let counts = self.projects.entry(Box::from(view.project)).or_default();
        match view.projection {
            None => {
                counts.series += 1;
                self.ordinary += 1;
            }
            Some(dimension) => {
                let values = counts.values.entry(Box::from(dimension)).or_default();
                *values += 1;
                if *values == 1 && dimension.starts_with("tag.") {
                    counts.tag_names += 1;
                }
            }
        }
        let hash = hash_flat(&flat);
        *self.keys.slot(id) = flat;
        let keys = &self.keys;
        self.table.insert_unique(hash, id, |id| hash_flat(keys.flat(*id).unwrap_or_default()));
        self.count += 1;
    }

    /// The id of the series with the dimensions in `scratch`.
    fn find_scratch(&self) -> Option<i64> {
        let flat = self.scratch.as_slice();
        self.table.find(hash_flat(flat), |id| self.keys.flat(*id) == Some(flat)).copied()
    }

    /// The series id of each call, registering new series as pending; a
    /// call whose series would pass a cap goes to one with `OVERFLOW` in
    /// place of the values beyond it.
    pub fn assign(&mut self, calls: &[LlmCall]) -> Assigned {
        let mut assigned =
            Assigned { ids: Vec::with_capacity(calls.len()), own_dimensions: Vec::new() };
        for (index, call) in calls.iter().enumerate() {
            Dimensions::of_call(call).flatten(&mut self.scratch);
            let id = match self.find_scratch() {
                Some(id) => id,
                None => {
                    let mut key = SeriesKey::of(call);
                    let capped = self.cap(&mut key);
                    if capped {
                        assigned.own_dimensions.push(index);
                    }
                    Dimensions::of_key(&key).flatten(&mut self.scratch);
                    match self.find_scratch() {
                        Some(id) => id,
                        None => {
                            let id = self.next_id;
                            self.next_id += 1;
                            self.insert(id, self.scratch.clone().into_boxed_slice());
                            self.pending.push(id);
                            // Its projections exist (and are stored) with
                            // it, so a projection query finds the series'
                            // open cells too.
                            self.projections_of(id);
                            id
                        }
                    }
                }
            };
            if id > 0 {
                let index = id as usize - 1;
                if self.last_day.len() <= index {
                    self.last_day.resize(index + 1, 0);
                }
                self.last_day[index] = self.last_day[index].max(day_of(call.time_ms));
            }
            assigned.ids.push(id);
        }
        assigned
    }

    /// Lets go of the series whose newest call is from before `before_ms`
    /// (every retention has deleted their data), and of the projections
    /// only they contributed to; returns their ids, for the store to forget.
    /// Pending series are kept. An evicted series seen again gets a new id.
    /// (`RollupEngine::evict_series` runs the same steps, letting ingest at
    /// the registry between chunks of the scan for live projections.)
    pub fn evict(&mut self, before_ms: i64) -> Vec<i64> {
        let (mut evicted, candidates) = self.evict_ordinary(before_ms);
        let mut live = FxHashSet::default();
        self.live_projections(1..self.ordinary_end(), &mut live);
        evicted.extend(self.remove_orphans(&candidates, &live));
        evicted
    }

    /// The first step of `evict`: removes the ordinary series; returns them
    /// and their projections, which may now be orphans.
    pub fn evict_ordinary(&mut self, before_ms: i64) -> (Vec<i64>, FxHashSet<i64>) {
        let before = day_of(before_ms);
        let pending: FxHashSet<i64> = self.pending.iter().copied().collect();
        let evicted: Vec<i64> = (1..=self.last_day.len() as i64)
            .filter(|&id| self.last_day[id as usize - 1] < before && !pending.contains(&id))
            .filter(|&id| self.keys.flat(id).is_some())
            .collect();
        let mut candidates = FxHashSet::default();
        for &id in &evicted {
            candidates.extend(self.projections_of(id).iter().copied());
            self.remove(id);
            self.projections[id as usize - 1] = None;
        }
        (evicted, candidates)
    }

    /// One past the highest ordinary series id.
    pub fn ordinary_end(&self) -> i64 {
        self.keys.ordinary.len() as i64 + 1
    }

    /// Adds to `live` the projections the ordinary series `ids` feed.
    pub fn live_projections(&mut self, ids: std::ops::Range<i64>, live: &mut FxHashSet<i64>) {
        for id in ids {
            match self.projections.get(id as usize - 1) {
                Some(Some(known)) => live.extend(known.iter().copied()),
                _ => {
                    let Some(key) = self.get(id) else { continue };
                    for projection in key.projections() {
                        Dimensions::of_key(&projection).flatten(&mut self.scratch);
                        live.extend(self.find_scratch());
                    }
                }
            }
        }
    }

    /// The last step of `evict`: removes the `candidates` not in `live`
    /// (nor pending); returns them.
    pub fn remove_orphans(
        &mut self,
        candidates: &FxHashSet<i64>,
        live: &FxHashSet<i64>,
    ) -> Vec<i64> {
        let pending: FxHashSet<i64> = self.pending.iter().copied().collect();
        let orphans: Vec<i64> = candidates
            .iter()
            .copied()
            .filter(|id| {
                !live.contains(id) && !pending.contains(id) && self.keys.flat(*id).is_some()
            })
            .collect();
        for &id in &orphans {
            self.remove(id);
        }
        self.projects
            .retain(|_, counts| counts.series > 0 || counts.values.values().any(|n| *n > 0));
        orphans
    }

    /// Removes series `id` (known) from the keys, the table and the counts.
    fn remove(&mut self, id: i64) {
        let flat = std::mem::take(self.keys.slot(id));
        let view = SeriesView::of(&flat);
        if let Some(counts) = self.projects.get_mut(view.project) {
            match view.projection {
                None => {
                    counts.series -= 1;
                    self.ordinary -= 1;
                }
                Some(dimension) => {
                    if let Some(values) = counts.values.get_mut(dimension) {
                        *values -= 1;
                        if *values == 0 {
                            counts.values.remove(dimension);
                            if dimension.starts_with("tag.") {
                                counts.tag_names -= 1;
                            }
                        }
                    }
                }
            }
        }
        if let Ok(entry) = self.table.find_entry(hash_flat(&flat), |found| *found == id) {
            entry.remove();
        }
        self.count -= 1;
    }

    /// Puts `OVERFLOW` in place of each value of `key` (a series not yet
    /// known) that would pass a cap; true when any was.
    fn cap(&mut self, key: &mut SeriesKey) -> bool {
        let limits = self.limits;
        let mut capped = [false; OVERFLOW_KINDS.len()];
        let kind = |name: &str| OVERFLOW_KINDS.iter().position(|k| *k == name).expect("a kind");
        if !self.projects.contains_key(key.project.as_str())
            && self.projects.len() >= limits.max_projects
        {
            key.project = OVERFLOW.to_owned();
            capped[kind("project")] = true;
        }
        let values = |registry: &Self, project: &str, dimension: &str| {
            registry
                .projects
                .get(project)
                .and_then(|c| c.values.get(dimension).copied())
                .unwrap_or(0)
        };
        for dimension in CAPPED {
            let Some(value) = key.dimension(dimension) else { continue };
            if value == OVERFLOW
                || self.has_projection(key, dimension)
                || values(self, &key.project, dimension) < limits.max_values_per_dimension
            {
                continue;
            }
            match dimension {
                "model" => key.model = OVERFLOW.to_owned(),
                "provider" => key.provider = Some(OVERFLOW.to_owned()),
                "user" => key.user = Some(OVERFLOW.to_owned()),
                "api_key" => key.api_key = Some(OVERFLOW.to_owned()),
                "route" => key.route = Some(OVERFLOW.to_owned()),
                _ => key.cluster = Some(OVERFLOW.to_owned()),
            }
            capped[kind(dimension)] = true;
            self.log_cap(&key.project, dimension, limits.max_values_per_dimension);
        }
        let tag_names = self.projects.get(key.project.as_str()).map_or(0, |c| c.tag_names);
        let mut tags = crate::model::Tags::new();
        for (name, value) in std::mem::take(&mut key.tags) {
            let dimension = format!("tag.{name}");
            let known_name = values(self, &key.project, &dimension) > 0;
            if !known_name && name != OVERFLOW && tag_names >= limits.max_tag_names {
                tags.insert(OVERFLOW.to_owned(), OVERFLOW.to_owned());
                capped[kind("tag")] = true;
                self.log_cap(&key.project, "tag names", limits.max_tag_names);
                continue;
            }
            let probe = SeriesKey {
                tags: crate::model::Tags::from([(name.clone(), value.clone())]),
                ..key.projection("")
            };
            if value != OVERFLOW
                && !self.has_projection(&probe, &dimension)
                && values(self, &key.project, &dimension) >= limits.max_values_per_dimension
            {
                tags.insert(name, OVERFLOW.to_owned());
                capped[kind("tag")] = true;
                self.log_cap(&key.project, &dimension, limits.max_values_per_dimension);
                continue;
            }
            tags.insert(name, value);
        }
        key.tags = tags;
        // A series beyond the series caps counts under every dimension's
        // overflow value at once, so that such series stay a handful.
        Dimensions::of_key(key).flatten(&mut self.scratch);
        let project_series = self.projects.get(key.project.as_str()).map_or(0, |c| c.series);
        if self.find_scratch().is_none()
            && (project_series >= limits.max_series_per_project
                || self.ordinary >= limits.max_series)
        {
            let other = || Some(OVERFLOW.to_owned());
            key.model = OVERFLOW.to_owned();
            key.provider = key.provider.as_ref().and(other());
            key.user = key.user.as_ref().and(other());
            key.api_key = key.api_key.as_ref().and(other());
            key.route = key.route.as_ref().and(other());
            key.cluster = key.cluster.as_ref().and(other());
            if !key.tags.is_empty() {
                key.tags = crate::model::Tags::from([(OVERFLOW.to_owned(), OVERFLOW.to_owned())]);
            }
            capped[kind("series")] = true;
            let cap = limits.max_series_per_project.min(limits.max_series);
            self.log_cap(&key.project.clone(), "series", cap);
        }
        for (count, hit) in self.overflowed.iter_mut().zip(capped) {
            *count += u64::from(hit);
        }
        capped.contains(&true)
    }

    /// Is there a projection of `key`'s value of `dimension` (has that value
    /// been seen in the project)?
    fn has_projection(&mut self, key: &SeriesKey, dimension: &str) -> bool {
        let projection = key.projection(dimension);
        Dimensions::of_key(&projection).flatten(&mut self.scratch);
        self.find_scratch().is_some()
    }

    /// Says once per project and dimension that its cap was reached.
    fn log_cap(&mut self, project: &str, dimension: &str, cap: usize) {
        let counts = self.projects.entry(Box::from(project)).or_default();
        if counts.logged.insert(Box::from(dimension)) {
            warn!(
                project,
                dimension,
                cap,
                "rollup cap reached: calls with new values are counted as __other__ \
                 (their records keep the values)"
            );
        }
    }

    /// Calls counted under `OVERFLOW`, by `OVERFLOW_KINDS`.
    pub fn overflowed(&self) -> [u64; OVERFLOW_KINDS.len()] {
        self.overflowed
    }

    pub fn set_limits(&mut self, limits: SeriesLimits) {
        self.limits = limits;
    }

    /// The id of `key`, registering it as pending when new.
    fn assign_key(&mut self, key: SeriesKey) -> i64 {
        Dimensions::of_key(&key).flatten(&mut self.scratch);
        if let Some(id) = self.find_scratch() {
            return id;
        }
        let id = match &key.projection {
            Some(dimension) => self.projection_id(dimension),
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        };
        self.insert(id, self.scratch.clone().into_boxed_slice());
        self.pending.push(id);
        id
    }

    /// The projection series `series` contributes to (registering new ones
    /// as pending); empty for a projection itself.
    pub fn projections_of(&mut self, series: i64) -> &[i64] {
        if series <= 0 {
            return &[];
        }
        let index = series as usize - 1;
        if self.projections.get(index).is_none_or(Option::is_none) {
            let Some(flat) = self.keys.flat(series) else { return &[] };
            let key = SeriesView::of(flat).to_key();
            let ids: Box<[i64]> =
                key.projections().into_iter().map(|p| self.assign_key(p)).collect();
            if self.projections.len() <= index {
                self.projections.resize_with(index + 1, || None);
            }
            self.projections[index] = Some(ids);
        }
        self.projections[index].as_deref().unwrap_or_default()
    }

    /// Series registered but not yet confirmed stored.
    pub fn pending(&self) -> Vec<(i64, Arc<SeriesKey>)> {
        self.pending.iter().filter_map(|id| Some((*id, Arc::new(self.get(*id)?)))).collect()
    }

    /// The store now has these series.
    pub fn confirm(&mut self, stored: &[i64]) {
        if !stored.is_empty() {
            let stored: FxHashSet<i64> = stored.iter().copied().collect();
            self.pending.retain(|id| !stored.contains(id));
        }
    }

    /// The key of series `id`, decoded.
    pub fn get(&self, id: i64) -> Option<SeriesKey> {
        self.view(id).map(|view| view.to_key())
    }

    /// The dimensions of series `id`, borrowed.
    pub fn view(&self, id: i64) -> Option<SeriesView<'_>> {
        self.keys.flat(id).map(SeriesView::of)
    }

    /// Hands `visit` the series of `part` from slot `from` on, at most
    /// `limit` slots; returns the slot to go on from, None at the end. A
    /// caller can so read every series in chunks, letting others at the
    /// registry in between (slots never move, so none is seen twice).
    pub fn scan(
        &self,
        part: Part<'_>,
        from: usize,
        limit: usize,
        mut visit: impl FnMut(i64, SeriesView<'_>),
    ) -> Option<usize> {
        let (slots, id_of): (&[FlatSeries], Box<dyn Fn(usize) -> i64>) = match part {
            Part::Ordinary => (&self.keys.ordinary, Box::new(|slot| slot as i64 + 1)),
            Part::Projections(dimension) => {
                let code = *self.codes.get(dimension)?;
                let slots = self.keys.projections.get(&code)?;
                (slots, Box::new(move |slot| -((code << CODE_SHIFT) + slot as i64 + 1)))
            }
        };
        let end = slots.len().min(from.saturating_add(limit));
        for (slot, flat) in slots.iter().enumerate().take(end).skip(from) {
            if !flat.is_empty() {
                visit(id_of(slot), SeriesView::of(flat));
            }
        }
        (end < slots.len()).then_some(end)
    }

    /// Every series, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = (i64, SeriesView<'_>)> {
        self.keys.iter().map(|(id, flat)| (id, SeriesView::of(flat)))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stable_id` of the explicit key in its test, as first released.
    const PINNED: u64 = 6_301_621_714_738_796_330;

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
    fn stable_ids_tell_every_dimension_apart_and_never_change() {
        let base = SeriesKey::of(&call("gpt-4o", Some("alice"), "search"));
        assert_eq!(base.stable_id(), base.clone().stable_id());
        let variants = [
            SeriesKey { project: "q".into(), ..base.clone() },
            SeriesKey { model: "gpt-4o-mini".into(), ..base.clone() },
            SeriesKey { user: None, ..base.clone() },
            SeriesKey { user: Some(String::new()), ..base.clone() },
            SeriesKey { route: Some("/v1".into()), ..base.clone() },
            SeriesKey { status: Status::Error, ..base.clone() },
            SeriesKey { operation: Operation::Embedding, ..base.clone() },
            SeriesKey { tags: Tags::new(), ..base.clone() },
            SeriesKey { tags: Tags::from([("team".into(), "searc".into())]), ..base.clone() },
            base.clone().projection("model"),
            base.clone().projection(""),
        ];
        // The id of a call's key, made without the key, is the key's.
        let made = call("gpt-4o", Some("alice"), "search");
        assert_eq!(SeriesKey::stable_id_of(&made), base.stable_id());
        let mut seen = std::collections::HashSet::from([base.stable_id()]);
        for key in &variants {
            assert!(seen.insert(key.stable_id()), "{key:?} has the id of another key");
        }
        // Moving text between neighbouring fields changes the id.
        let a = SeriesKey { user: Some("ab".into()), api_key: Some("c".into()), ..base.clone() };
        let b = SeriesKey { user: Some("a".into()), api_key: Some("bc".into()), ..base.clone() };
        assert_ne!(a.stable_id(), b.stable_id());
        // Shared stores keep these ids: a release must not change them.
        let pinned = SeriesKey {
            project: "default".into(),
            model: "gpt-4o".into(),
            provider: Some("openai".into()),
            operation: Operation::Chat,
            user: Some("alice".into()),
            api_key: None,
            route: Some("/v1/chat/completions".into()),
            status: Status::Ok,
            cluster: None,
            tags: Tags::from([("team".into(), "search".into())]),
            projection: None,
        };
        assert_eq!(pinned.stable_id(), PINNED);
    }

    #[test]
    fn flattened_keys_read_back_whole() {
        let long = "r".repeat(300);
        let keys = [
            SeriesKey {
                route: Some(long.clone()),
                cluster: Some(String::new()),
                tags: Tags::from([("team".into(), "é".into()), ("x".into(), String::new())]),
                status: Status::Cancelled,
                operation: Operation::Embedding,
                ..SeriesKey::of(&call("gpt-4o", Some("u"), "t"))
            },
            SeriesKey::of(&call("m", None, "t")).projection("tag.team"),
            SeriesKey::of(&call("m", None, "t")).projection(""),
        ];
        for key in keys {
            let flat = flat_of(&key);
            let view = SeriesView::of(&flat);
            assert_eq!(view.to_key(), key);
            assert_eq!(view.dimension("tag.team"), key.dimension("tag.team"));
            assert_eq!(view.dimension("route"), key.dimension("route"));
        }
        // None and "" are told apart.
        let empty = SeriesKey { user: Some(String::new()), ..SeriesKey::of(&call("m", None, "t")) };
        assert_ne!(flat_of(&empty), flat_of(&SeriesKey::of(&call("m", None, "t"))));
    }

    #[test]
    fn values_beyond_a_cap_are_counted_as_other_and_keep_their_own() {
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        registry.set_limits(SeriesLimits {
            max_values_per_dimension: 2,
            max_tag_names: 1,
            ..SeriesLimits::default()
        });
        let users = ["u1", "u2", "u3", "u4"];
        let calls: Vec<LlmCall> = users.iter().map(|u| call("a", Some(u), "t1")).collect();
        let assigned = registry.assign(&calls);
        // Two users keep their own series; the third and fourth share the
        // overflow one, and keep their values in their records.
        assert_eq!(assigned.own_dimensions, vec![2, 3]);
        assert_eq!(assigned.ids[2], assigned.ids[3]);
        let other = registry.get(assigned.ids[2]).unwrap().clone();
        assert_eq!(other.user.as_deref(), Some(OVERFLOW));
        assert_eq!(registry.overflowed()[3], 2, "counted under user");
        // Known values stay their own, also after a reload.
        let again = registry.assign(&[call("a", Some("u2"), "t1"), call("a", Some("u9"), "t1")]);
        assert_eq!((again.ids[0], again.ids[1]), (assigned.ids[1], assigned.ids[2]));
        // A second tag name is past its cap: counted under the overflow tag.
        let mut tagged = call("a", Some("u1"), "t1");
        tagged.tags.insert("region".into(), "eu".into());
        let [id] = registry.assign(&[tagged]).ids[..] else { panic!() };
        let key = registry.get(id).unwrap();
        assert_eq!(key.tags.get(OVERFLOW).map(String::as_str), Some(OVERFLOW));
        assert_eq!(key.tags.get("team").map(String::as_str), Some("t1"));
        let stored: Vec<(i64, FlatSeries)> =
            registry.iter().map(|(id, key)| (id, flat_of(&key.to_key()))).collect();
        let mut reloaded = SeriesRegistry::from_stored(stored);
        reloaded.set_limits(registry.limits);
        let after = reloaded.assign(&[call("a", Some("u5"), "t1"), call("a", Some("u1"), "t1")]);
        assert_eq!(after.ids, vec![assigned.ids[2], assigned.ids[0]]);
        assert_eq!(after.own_dimensions, vec![0]);
    }

    #[test]
    fn series_with_no_recent_calls_are_let_go_with_their_own_projections() {
        const DAY: i64 = 86_400_000;
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        registry
            .set_limits(SeriesLimits { max_values_per_dimension: 2, ..SeriesLimits::default() });
        let at = |mut c: LlmCall, day: i64| {
            c.time_ms = day * DAY + 1_000;
            c
        };
        let old = registry.assign(&[at(call("a", Some("gone"), "t"), 100)]).ids[0];
        let kept = registry.assign(&[at(call("a", Some("stays"), "t"), 100)]).ids[0];
        registry.assign(&[at(call("a", Some("stays"), "t"), 120)]);
        registry.confirm(&registry.pending().iter().map(|(id, _)| *id).collect::<Vec<_>>());
        // Users are at their cap of 2: a third is counted under OVERFLOW.
        let mut probe = SeriesRegistry::from_stored(
            registry.iter().map(|(id, key)| (id, flat_of(&key.to_key()))).collect(),
        );
        probe.set_limits(registry.limits);
        assert_eq!(probe.assign(&[call("a", Some("third"), "t")]).own_dimensions, vec![0]);
        let before = registry.len();
        let evicted = registry.evict(110 * DAY);
        let user_of = |registry: &SeriesRegistry, id: i64| {
            registry.get(id).and_then(|k| k.projection.is_some().then(|| k.user.clone()).flatten())
        };
        assert!(evicted.contains(&old), "{evicted:?}");
        assert!(registry.get(old).is_none() && registry.get(kept).is_some());
        // Its user's projection went with it; shared ones (model, team,
        // project) stay.
        assert_eq!(evicted.len(), 2, "the series and its user projection: {evicted:?}");
        assert!(evicted.iter().filter(|id| **id < 0).all(|id| user_of(&registry, *id).is_none()));
        assert_eq!(registry.len(), before - 2);
        // The user value freed a place under the cap, and the same
        // dimensions seen again get a new series.
        let back = registry.assign(&[at(call("a", Some("gone"), "t"), 121)]);
        assert!(back.own_dimensions.is_empty());
        assert!(back.ids[0] > kept && back.ids[0] != old);
        assert!(registry.evict(110 * DAY).is_empty(), "pending series are kept");
    }

    #[test]
    fn series_beyond_the_cap_share_one_overflow_series() {
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        registry.set_limits(SeriesLimits { max_series_per_project: 3, ..SeriesLimits::default() });
        let calls: Vec<LlmCall> =
            (0..10).map(|i| call(&format!("m{i}"), Some(&format!("u{i}")), "t")).collect();
        let assigned = registry.assign(&calls);
        let distinct: std::collections::BTreeSet<i64> = assigned.ids.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "three series and the overflow one");
        assert_eq!(assigned.own_dimensions, (3..10).collect::<Vec<_>>());
        let other = registry.get(assigned.ids[9]).unwrap();
        assert_eq!((other.model.as_str(), other.user.as_deref()), (OVERFLOW, Some(OVERFLOW)));
        assert_eq!(registry.overflowed()[8], 7, "counted under series");
        // A second project has room of its own.
        let mut elsewhere = call("m0", Some("u0"), "t");
        elsewhere.project = "q".into();
        assert!(registry.assign(&[elsewhere]).own_dimensions.is_empty());
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
        let ids = registry.assign(&calls).ids;
        assert_eq!(ids[0], ids[3]);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        // The three series and their projections await the store.
        let pending: Vec<i64> = registry.pending().iter().map(|(id, _)| *id).collect();
        assert!(ids.iter().all(|id| pending.contains(id)));
        registry.confirm(&ids[..2]);
        assert_eq!(registry.pending().len(), pending.len() - 2);
        let stored: Vec<(i64, FlatSeries)> =
            registry.iter().map(|(id, key)| (id, flat_of(&key.to_key()))).collect();
        let mut reloaded = SeriesRegistry::from_stored(stored);
        assert_eq!(reloaded.assign(&calls).ids, ids);
        assert!(reloaded.pending().is_empty(), "projections were stored with their series");
        let [new] = reloaded.assign(&[call("b", None, "t1")]).ids[..] else { panic!() };
        assert!(!ids.contains(&new));
    }

    #[test]
    fn projections_are_shared_by_the_series_with_that_value() {
        let mut registry = SeriesRegistry::from_stored(Vec::new());
        let ids = registry.assign(&[call("a", Some("u"), "t1"), call("a", Some("v"), "t1")]).ids;
        // Both series and their 11 distinct projections.
        assert_eq!(registry.pending().len(), 13);
        let pending: Vec<i64> = registry.pending().iter().map(|(id, _)| *id).collect();
        registry.confirm(&pending);
        let first = registry.projections_of(ids[0]).to_vec();
        let second = registry.projections_of(ids[1]).to_vec();
        // total, 8 dimensions, tag.team
        assert_eq!(first.len(), 10);
        let by_dimension = |ids: &[i64], registry: &SeriesRegistry, dimension: &str| {
            ids.iter()
                .copied()
                .find(|id| registry.view(*id).unwrap().projection == Some(dimension))
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
        assert_eq!(registry.view(user).unwrap().dimension("user"), Some("v"));
        // Each dimension's projections have ids in their own range.
        for dimension in ["", "model", "user", "tag.team"] {
            let (lo, hi) = registry.projection_range(dimension).unwrap();
            let inside: Vec<i64> =
                registry.iter().map(|(id, _)| id).filter(|id| (lo..hi).contains(id)).collect();
            assert!(
                inside.iter().all(|id| registry.view(*id).unwrap().projection == Some(dimension))
            );
            assert_eq!(inside.len(), if dimension == "user" { 2 } else { 1 }, "{dimension}");
        }
        assert_eq!(registry.projection_range("tag.other"), None);
        assert_eq!(registry.projections_of(user).len(), 0);
        // A call never lands in a projection series, even one with its values.
        let projected_model = registry.get(by_dimension(&first, &registry, "model")).unwrap();
        let lookalike = LlmCall {
            project: "p".into(),
            model: "a".into(),
            operation: projected_model.operation,
            ..LlmCall::example()
        };
        let [id] = registry.assign(&[lookalike]).ids[..] else { panic!() };
        assert!(!registry.view(id).unwrap().is_projection());
        assert!(registry.pending().iter().any(|(pending, _)| *pending == id));
    }
}
