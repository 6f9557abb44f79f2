//! The metrics query API: a metric's bins merged up to the step, filtered
//! and grouped by tags, with the statistic asked for; and the names and tag
//! values there are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use serde_json::{Map, Value, json};

use super::QueryState;
use super::limits::{Poll, Watch, check_step};
use super::params::{Params, ceil, floor};
use crate::aggregate::metric::{Bin, BinKey, MetricTier};
use crate::error::ApiError;
use crate::storage::{MetricBinVisitor, StorageError};

const AGGREGATES: [&str; 12] =
    ["avg", "sum", "min", "max", "count", "last", "p50", "p90", "p95", "p99", "rate", "all"];

fn statistic(bin: &Bin, agg: &str, step_ms: i64) -> Value {
    let number = |v: f64| json!(v);
    match agg {
        "avg" => number(bin.sum / bin.count as f64),
        "sum" => number(bin.sum),
        "min" => number(bin.min),
        "max" => number(bin.max),
        "count" => json!(bin.count),
        "last" => number(bin.last),
        // Per second, of the values summed over the step (counter deltas).
        "rate" => number(bin.sum / (step_ms as f64 / 1000.0)),
        quantile => {
            let q = quantile.trim_start_matches('p').parse::<f64>().unwrap_or(50.0) / 100.0;
            json!(bin.sketch.quantile(q))
        }
    }
}

/// Fewest series a parallel part of a query reads.
const MIN_SERIES_PER_PART: usize = 200;

/// A group's key: the values of the `group_by` tags.
type Group = Vec<Option<String>>;

/// Merges stored bins into their group and step as they stream out of the
/// store, sketches straight from their bytes.
struct Grouper {
    /// Each series' group, as an index into `groups`.
    group_of: Arc<HashMap<i64, usize>>,
    step: i64,
    /// Per group, bins by step start.
    groups: Vec<BTreeMap<i64, Bin>>,
    /// Stops the scan when the query does.
    poll: Poll,
}

impl MetricBinVisitor for Grouper {
    fn visit(&mut self, key: BinKey, counters: Bin, sketch: &[u8]) -> Result<(), StorageError> {
        self.poll.check()?;
        let Some(&group) = self.group_of.get(&key.series) else { return Ok(()) };
        let bin = self.groups[group].entry(floor(key.bucket, self.step)).or_default();
        bin.merge(&counters);
        bin.sketch
            .merge_encoded(sketch)
            .map_err(|e| StorageError::Corrupt(format!("metric sketch: {e}")))
    }
}

/// `filter=TAG:VALUE` pairs (values of one tag OR-ed, tags AND-ed).
fn tag_filters(params: &Params) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for value in params.all("filter") {
        let (tag, wanted) = value.split_once(':').ok_or_else(|| {
            ApiError::bad_request(format!(
                "filter {value:?}: expected TAG:VALUE, e.g. operation:embed"
            ))
        })?;
        filters.entry(tag.to_owned()).or_default().push(wanted.to_owned());
    }
    Ok(filters)
}

/// `GET /api/v1/metrics/query`
#[utoipa::path(
    get, path = "/api/v1/metrics/query", tag = "metrics",
    params(("name" = String, Query, description = "The metric"), crate::query::params::WindowParams, ("step" = Option<String>, Query, description = "A multiple of 10s (default `1m`)"), ("agg" = Option<String>, Query, description = "`avg` (default), `sum`, `min`, `max`, `count`, `last`, `p50`, `p90`, `p95`, `p99`, `rate` or `all`"), ("group_by" = Option<Vec<String>>, Query, style = Form, explode, description = "Tags to group by, comma-separated and/or repeated"), ("filter" = Option<Vec<String>>, Query, style = Form, explode, description = "`TAG:VALUE`, repeatable"), ("limit" = Option<u32>, Query, minimum = 1, description = "Most groups listed (default and largest: query.max_groups)")),
    responses(
        (status = 200, description = "Points per group", body = crate::openapi::MetricQuery),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn query(
    State(state): State<Arc<QueryState>>,
    Extension(watch): Extension<Watch>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let name = params
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name: required (see /api/v1/metrics/names)"))?
        .to_owned();
    let step_text = params.get("step").unwrap_or("1m");
    let step = crate::time::parse_duration(step_text)
        .map_err(|e| ApiError::bad_request(format!("step: {e}")))?;
    check_step(step, step_text)?;
    let tier = MetricTier::for_step(step).ok_or_else(|| {
        ApiError::bad_request(format!("step: {step_text:?} must be a multiple of 10s"))
    })?;
    let agg = params.get("agg").unwrap_or("avg");
    if !AGGREGATES.contains(&agg) {
        return Err(ApiError::bad_request(format!(
            "agg: expected one of {}, got {agg:?}",
            AGGREGATES.join(", ")
        )));
    }
    let (from, to) = params.window()?;
    let (from, to) = (floor(from, step), ceil(to, step));
    if (to - from) / step > 10_000 {
        return Err(ApiError::bad_request(
            "window/step gives more than 10000 points; use a larger step",
        ));
    }
    let group_by: Vec<String> = params
        .all("group_by")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let filters = tag_filters(&params)?;
    let project = params.project();
    let limit = params.limit(state.limits.max_groups, state.limits.max_groups)?;
    let window = Window { tier, step, from, to };
    let asked = (project.as_str(), name.as_str(), &filters, group_by.as_slice());
    let (keys, groups) = match &state.shared {
        Some(shared) => shared_groups(shared, asked, window, &watch)
            .await
            .map_err(|e| state.failure("reading metric bins from ClickHouse failed", &e))?,
        None => local_groups(&state, asked, window, watch).await?,
    };
    // The groups with the most samples keep their own series; the rest are
    // merged per step into `other`.
    let mut ranked: Vec<(u64, &Group, BTreeMap<i64, Bin>)> = keys
        .iter()
        .zip(groups)
        .filter(|(_, points)| !points.is_empty())
        .map(|(group, points)| (points.values().map(|b| b.count).sum(), group, points))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let groups_total = ranked.len();
    let mut other: Option<BTreeMap<i64, Bin>> = None;
    if ranked.len() > limit {
        let sums = other.get_or_insert_default();
        for (_, _, points) in ranked.drain(limit..) {
            for (t, bin) in points {
                sums.entry(t).or_default().merge(&bin);
            }
        }
    }
    // The groups kept are listed in key order.
    ranked.sort_by(|a, b| a.1.cmp(b.1));
    let points_json = |points: &BTreeMap<i64, Bin>| -> Vec<Value> {
        points
            .iter()
            .map(|(t, bin)| {
                if agg == "all" {
                    let mut point = json!({"t": t});
                    for stat in AGGREGATES.iter().filter(|a| **a != "all") {
                        point[*stat] = statistic(bin, stat, step);
                    }
                    point
                } else {
                    json!({"t": t, "value": statistic(bin, agg, step)})
                }
            })
            .collect()
    };
    let groups: Vec<Value> = ranked
        .iter()
        .map(|(_, group, points)| {
            let key: Map<String, Value> = group_by
                .iter()
                .zip(group.iter())
                .map(|(t, v)| (t.clone(), v.clone().map(Value::String).unwrap_or(Value::Null)))
                .collect();
            json!({"key": key, "points": points_json(points)})
        })
        .collect();
    Ok(Json(json!({
        "project": project,
        "name": name,
        "from": from,
        "to": to,
        "step_ms": step,
        "tier": tier.name(),
        "agg": agg,
        "groups": groups,
        "groups_total": groups_total,
        "truncated": other.is_some(),
        "other": other.map(|points| json!({"points": points_json(&points)})),
    })))
}

/// A metric query's window: the tier read, the step and `[from, to)`.
#[derive(Clone, Copy)]
struct Window {
    tier: MetricTier,
    step: i64,
    from: i64,
    to: i64,
}

/// What a metric query reads: project, name, tag filters and `group_by`.
type Asked<'a> = (&'a str, &'a str, &'a BTreeMap<String, Vec<String>>, &'a [String]);

/// Whether a series' tags pass the query's filters.
fn passes<'a>(
    filters: &BTreeMap<String, Vec<String>>,
    tag: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    filters.iter().all(|(name, wanted)| {
        let value = tag(name).unwrap_or("");
        wanted.iter().any(|w| w == value)
    })
}

/// The groups (in key order) and their bins per step, from this node's
/// store and open bins.
async fn local_groups(
    state: &QueryState,
    (project, name, filters, group_by): Asked<'_>,
    Window { tier, step, from, to }: Window,
    watch: Watch,
) -> Result<(Vec<Group>, Vec<BTreeMap<i64, Bin>>), ApiError> {
    let series = state
        .metrics
        .select(project, name, |key| passes(filters, |t| key.tags.get(t).map(String::as_str)));
    // Groups are numbered (in key order) so that each bin finds its group
    // by the series id alone.
    let key_of: HashMap<i64, Group> = series
        .iter()
        .map(|(id, key)| (*id, group_by.iter().map(|t| key.tags.get(t).cloned()).collect()))
        .collect();
    let keys: Vec<Group> =
        key_of.values().cloned().collect::<BTreeSet<Group>>().into_iter().collect();
    let group_of: Arc<HashMap<i64, usize>> = Arc::new(
        key_of
            .iter()
            .map(|(id, key)| (*id, keys.binary_search(key).expect("every key is listed")))
            .collect(),
    );
    let mut ids: Vec<i64> = series.keys().copied().collect();
    ids.sort_unstable();
    let signature = format!("{project}\u{1}{name}\u{1}{filters:?}\u{1}{group_by:?}\u{1}{step}");
    let question = Question {
        signature: signature.into(),
        tier,
        step,
        from,
        to,
        keys: &keys,
        group_of,
        ids,
        watch,
    };
    let groups = grouped_bins(state, question).await?;
    Ok((keys, groups))
}

/// The groups (in key order) and their bins per step, on a node of a
/// cluster: every node's bins as shipped to ClickHouse, streamed and
/// merged as they come (what is held is one bin per group and step).
async fn shared_groups(
    shared: &crate::cluster::reads::SharedReads,
    (project, name, filters, group_by): Asked<'_>,
    Window { tier, step, from, to }: Window,
    watch: &Watch,
) -> Result<(Vec<Group>, Vec<BTreeMap<i64, Bin>>), StorageError> {
    let mut by_group: BTreeMap<Group, BTreeMap<i64, Bin>> = BTreeMap::new();
    let mut poll = Poll::new(watch.clone());
    shared
        .metric_bins((project, name), tier, (from, to), |read| {
            poll.check()?;
            let tag = |t: &str| read.tags.iter().find(|(k, _)| k == t).map(|(_, v)| v.as_str());
            if !passes(filters, tag) {
                return Ok(());
            }
            let group: Group = group_by.iter().map(|t| tag(t).map(str::to_owned)).collect();
            let steps = by_group.entry(group).or_default();
            steps.entry(floor(read.bucket, step)).or_default().merge(&read.bin);
            Ok(())
        })
        .await?;
    Ok(by_group.into_iter().unzip())
}

/// One step's stored bins by group, and the metric watermark of the store
/// state they were read from.
pub type StepGroups = Arc<(i64, BTreeMap<Group, Bin>)>;

/// A metric query's bins to read: series, their groups, tier and window.
struct Question<'a> {
    /// What the query asks, as a cache key.
    signature: Arc<str>,
    tier: MetricTier,
    step: i64,
    from: i64,
    to: i64,
    keys: &'a [Group],
    group_of: Arc<HashMap<i64, usize>>,
    ids: Vec<i64>,
    watch: Watch,
}

/// Per group, the bins of the question's series merged per step: stored
/// bins (from the cache for each step no flush has changed since it was
/// cached, else read) and the bins in memory.
async fn grouped_bins(
    state: &QueryState,
    q: Question<'_>,
) -> Result<Vec<BTreeMap<i64, Bin>>, ApiError> {
    let Question { signature, tier, step, from, to, keys, group_of, ids, watch } = q;
    // The bins in memory are taken first, then the steps' versions; each
    // part's scan says which flushes its snapshot of the store holds, so
    // that a flush finishing meanwhile is counted once (queries never wait
    // for a flush).
    let memory = state.metrics.memory_bins(tier, from, to, |s| group_of.contains_key(&s));
    let starts: Vec<i64> = (from..to).step_by(step as usize).collect();
    let versions = state.metrics.versions(tier, &starts, step);
    let mut cached: BTreeMap<i64, StepGroups> = BTreeMap::new();
    let mut missing: Vec<(i64, u64)> = Vec::new();
    for (&t, &version) in starts.iter().zip(&versions) {
        match state.metric_cache.get(&signature, tier, t, (version, 0)) {
            Some(groups) => drop(cached.insert(t, groups)),
            None => missing.push((t, version)),
        }
    }
    // Steps not cached are read in one range, by parallel parts (one reader
    // and core each) over the series.
    let (lo, hi) = match (missing.first(), missing.last()) {
        (Some((first, _)), Some((last, _))) => (*first, last + step),
        _ => (from, from),
    };
    let mut groups: Vec<BTreeMap<i64, Bin>> = vec![BTreeMap::new(); keys.len()];
    let mut stored_up_to: HashMap<i64, i64> = HashMap::with_capacity(ids.len());
    let mut watermarks = BTreeSet::new();
    if lo < hi && !ids.is_empty() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = cores.min(ids.len().div_ceil(MIN_SERIES_PER_PART)).max(1);
        let mut scans = tokio::task::JoinSet::new();
        for chunk in ids.chunks(ids.len().div_ceil(parts)) {
            let storage = state.storage.clone();
            let groups = vec![BTreeMap::new(); keys.len()];
            let grouper = Grouper {
                group_of: group_of.clone(),
                step,
                groups,
                poll: Poll::new(watch.clone()),
            };
            let chunk = chunk.to_vec();
            scans.spawn(async move {
                let (visitor, watermark) = storage
                    .scan_metric_bins(tier, lo, hi, chunk.clone(), Box::new(grouper))
                    .await?;
                let visitor: Box<dyn std::any::Any + Send> = visitor;
                let grouper = visitor.downcast::<Grouper>().expect("the store hands back ours");
                Ok::<_, StorageError>((grouper.groups, chunk, watermark))
            });
        }
        while let Some(part) = scans.join_next().await {
            let (part, chunk, watermark) = part
                .map_err(|e| ApiError::internal("a metric scan stopped", &e))?
                .map_err(|e| state.failure("reading metric bins failed", &e))?;
            for (into, points) in groups.iter_mut().zip(part) {
                for (t, bin) in points {
                    into.entry(t).or_default().merge(&bin);
                }
            }
            stored_up_to.extend(chunk.into_iter().map(|id| (id, watermark)));
            watermarks.insert(watermark);
        }
    }
    // Steps read are cached when every part read the same store state.
    if let (1, Some(&watermark)) = (watermarks.len(), watermarks.first()) {
        for &(t, version) in &missing {
            let stored: BTreeMap<Group, Bin> = keys
                .iter()
                .zip(&groups)
                .filter_map(|(key, points)| Some((key.clone(), points.get(&t)?.clone())))
                .collect();
            state.metric_cache.put(
                &signature,
                tier,
                t,
                (version, 0),
                Arc::new((watermark, stored)),
            );
        }
    }
    // Cached steps outside the range read.
    for (t, entry) in cached.range(..lo).chain(cached.range(hi..)) {
        for (key, bin) in &entry.1 {
            if let Ok(group) = keys.binary_search(key) {
                groups[group].entry(*t).or_default().merge(bin);
            }
        }
    }
    for (holds, bins) in memory {
        let wanted = |k: &BinKey| k.tier == tier && (from..to).contains(&k.bucket);
        for (key, bin) in bins.iter().filter(|(k, _)| wanted(k) && group_of.contains_key(&k.series))
        {
            let t = floor(key.bucket, step);
            let stored = match cached.get(&t).filter(|_| t < lo || t >= hi) {
                Some(entry) => entry.0,
                None => stored_up_to.get(&key.series).copied().unwrap_or(i64::MAX),
            };
            if holds > stored {
                groups[group_of[&key.series]].entry(t).or_default().merge(bin);
            }
        }
    }
    Ok(groups)
}

/// `GET /api/v1/metrics/names` → names with their series counts.
#[utoipa::path(
    get, path = "/api/v1/metrics/names", tag = "metrics",
    params(("project" = Option<String>, Query, description = "The project (default `default`)")),
    responses(
        (status = 200, description = "Metric names with their series counts", body = crate::openapi::MetricNames),
        (status = 503, description = "On a node of a cluster: ClickHouse did not answer", body = crate::openapi::ErrorBody),
    )
)]
pub async fn names(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let project = params.project();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    match &state.shared {
        Some(shared) => counts.extend(
            shared
                .metric_names(&project, MAX_LISTED_NAMES)
                .await
                .map_err(|e| state.failure("listing metric names in ClickHouse failed", &e))?,
        ),
        None => {
            for key in state.metrics.all(&project) {
                *counts.entry(key.name.clone()).or_default() += 1;
            }
        }
    }
    let names: Vec<Value> =
        counts.into_iter().map(|(name, series)| json!({"name": name, "series": series})).collect();
    Ok(Json(json!({"project": project, "names": names})))
}

/// Most names listed on a node of a cluster (a node lists every name its
/// registry holds, which `metrics.max_names_per_project` bounds).
const MAX_LISTED_NAMES: usize = 100_000;

/// Most tags listed per metric on a node of a cluster.
const MAX_LISTED_TAGS: usize = 1_000;

/// Most values listed per tag.
const MAX_TAG_VALUES: usize = 1_000;

/// `GET /api/v1/metrics/tags?name=` → each tag of the metric with its values.
#[utoipa::path(
    get, path = "/api/v1/metrics/tags", tag = "metrics",
    params(("name" = String, Query, description = "The metric"), ("project" = Option<String>, Query, description = "The project (default `default`)")),
    responses(
        (status = 200, description = "Each tag of the metric with its values", body = crate::openapi::MetricTags),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "On a node of a cluster: ClickHouse did not answer", body = crate::openapi::ErrorBody),
    )
)]
pub async fn tags(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let project = params.project();
    let name = params
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name: required"))?
        .to_owned();
    if let Some(shared) = &state.shared {
        let listed = shared
            .metric_tags((&project, &name), MAX_LISTED_TAGS, MAX_TAG_VALUES)
            .await
            .map_err(|e| state.failure("listing metric tags in ClickHouse failed", &e))?;
        let tags: BTreeMap<String, BTreeSet<String>> =
            listed.into_iter().map(|(tag, values)| (tag, values.into_iter().collect())).collect();
        return Ok(Json(json!({"project": project, "name": name, "tags": tags})));
    }
    let mut tags: HashMap<String, BTreeSet<String>> = HashMap::new();
    for key in state.metrics.select(&project, &name, |_| true).values() {
        for (tag, value) in &key.tags {
            let values = tags.entry(tag.clone()).or_default();
            if values.len() < MAX_TAG_VALUES {
                values.insert(value.clone());
            }
        }
    }
    let tags: BTreeMap<String, BTreeSet<String>> = tags.into_iter().collect();
    Ok(Json(json!({"project": project, "name": name, "tags": tags})))
}
