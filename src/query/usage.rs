//! Usage queries: summary, series, raw records and unpriced models.
//!
//! Summary and series read rollups (stored plus open buckets), so their cost
//! depends on the number of series and buckets in the window, not on how many
//! calls were made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::QueryState;
use super::cache::{GroupKey, Grouped};
use super::limits::{Poll, Watch, check_step};
use super::params::{Filters, Params, ceil, floor, parse_cursor};
use crate::aggregate::series::ORDINARY_IDS;
use crate::aggregate::tier::cover;
use crate::aggregate::{Cell, CellKey, SeriesKey, Tier};
use crate::error::ApiError;
use crate::storage::{CallFilter, RollupVisitor, StorageError};

/// Quantiles of a sketch, in milliseconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Quantiles {
    fn of(sketch: &crate::aggregate::Sketch) -> Quantiles {
        Quantiles {
            p50: sketch.quantile(0.5),
            p95: sketch.quantile(0.95),
            p99: sketch.quantile(0.99),
        }
    }
}

/// The fields every summary group, total and series point carries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub errors: u64,
    pub estimated: u64,
    pub unpriced: u64,
    pub cost_usd: f64,
    pub reported_cost_usd: f64,
    pub latency_ms: Quantiles,
    pub ttft_ms: Quantiles,
}

impl From<&Cell> for Totals {
    fn from(c: &Cell) -> Totals {
        Totals {
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cache_read_tokens: c.cache_read_tokens,
            cache_write_tokens: c.cache_write_tokens,
            reasoning_tokens: c.reasoning_tokens,
            total_tokens: c.total_tokens,
            errors: c.errors,
            estimated: c.estimated,
            unpriced: c.unpriced,
            cost_usd: c.cost_usd,
            reported_cost_usd: c.reported_cost_usd,
            latency_ms: Quantiles::of(&c.latency_ms),
            ttft_ms: Quantiles::of(&c.ttft_ms),
        }
    }
}

/// Series of `project` passing `filters`.
fn select(state: &QueryState, project: &str, filters: &Filters) -> HashMap<i64, Arc<SeriesKey>> {
    state.engine.select_series(|key| key.project == project && filters.matches(key))
}

/// The series whose rows answer a grouped query, and the id range they lie
/// in: when the query involves at most one dimension, that dimension's
/// projection series (a few rows per bucket), else every series passing the
/// filters.
fn select_grouped(
    state: &QueryState,
    project: &str,
    dims: &[String],
    filters: &Filters,
) -> (HashMap<i64, Arc<SeriesKey>>, (i64, i64)) {
    let projection = crate::aggregate::series::serving_projection(dims, &filters.0);
    match projection {
        Some(dim) => {
            let selected = state
                .engine
                .select_projections(dim, |key| key.project == project && filters.matches(key));
            let range = state.engine.projection_range(dim).unwrap_or((0, 0));
            (selected, range)
        }
        None => (select(state, project, filters), ORDINARY_IDS),
    }
}

/// Stored and open cells of `tier` in `[from, to)` for the selected series.
async fn cells(
    state: &QueryState,
    pieces: &[(Tier, i64, i64)],
    series: &HashMap<i64, Arc<SeriesKey>>,
) -> Result<Vec<(CellKey, Cell)>, ApiError> {
    let wanted: HashSet<i64> = series.keys().copied().collect();
    let mut out = Vec::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let _gate = state.engine.read_gate().await;
    for &(tier, from, to) in pieces {
        let stored = state
            .storage
            .read_rollups(tier, from, to)
            .await
            .map_err(|e| state.failure("reading rollups failed", &e))?;
        out.extend(stored.into_iter().filter(|(k, _)| wanted.contains(&k.series)));
        out.extend(state.engine.open_cells(tier, from, to, &wanted));
    }
    Ok(out)
}

/// Stored and open cells over `pieces`, grouped by `dims`, per bucket: the
/// stored part of each bucket from the cache when it is still current, else
/// read and cached; open cells grouped fresh. One bucket may appear twice
/// (stored and open); callers merge.
async fn grouped(
    state: &QueryState,
    pieces: &[(Tier, i64, i64)],
    (series, id_range): &(HashMap<i64, Arc<SeriesKey>>, (i64, i64)),
    dims: &[String],
    signature: &Arc<str>,
    watch: &Watch,
) -> Result<Vec<(i64, Grouped)>, ApiError> {
    let wanted: HashSet<i64> = series.keys().copied().collect();
    let mut out = Vec::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    // Each series' group, computed once rather than per row.
    let group_of: Arc<HashMap<i64, GroupKey>> =
        Arc::new(series.iter().map(|(id, key)| (*id, group_key(key, dims))).collect());
    let add = |groups: &mut BTreeMap<GroupKey, Cell>, series: i64, cell: &Cell| {
        let key = &group_of[&series];
        match groups.get_mut(key) {
            Some(group) => group.merge(cell),
            None => {
                groups.insert(key.clone(), cell.clone());
            }
        }
    };
    let _gate = state.engine.read_gate().await;
    for &(tier, from, to) in pieces {
        let width = tier.width_ms();
        // Buckets whose cached result is current, and runs of those that are not.
        let mut missing: Vec<(i64, i64)> = Vec::new();
        let mut versions: HashMap<i64, (u64, u64)> = HashMap::new();
        let mut bucket = from;
        while bucket < to {
            if watch.stopped() {
                return Err(state.failure("reading rollups failed", &StorageError::Stopped));
            }
            let version = state.engine.bucket_version(tier, bucket);
            match state.cache.get(signature, tier, bucket, version) {
                Some(groups) => out.push((bucket, groups)),
                None => {
                    versions.insert(bucket, version);
                    match missing.last_mut() {
                        Some((_, end)) if *end == bucket => *end = bucket + width,
                        _ => missing.push((bucket, bucket + width)),
                    }
                }
            }
            bucket += width;
        }
        for (start, end) in missing {
            let grouper = Grouper {
                group_of: group_of.clone(),
                out: BTreeMap::new(),
                poll: Poll::new(watch.clone()),
            };
            let visitor = state
                .storage
                .scan_rollups(tier, start, end, *id_range, Box::new(grouper))
                .await
                .map_err(|e| state.failure("reading rollups failed", &e))?;
            let visitor: Box<dyn std::any::Any> = visitor;
            let mut by_bucket =
                visitor.downcast::<Grouper>().expect("the store hands back our visitor").out;
            let mut bucket = start;
            while bucket < end {
                let groups = Arc::new(by_bucket.remove(&bucket).unwrap_or_default());
                state.cache.put(signature, tier, bucket, versions[&bucket], groups.clone());
                out.push((bucket, groups));
                bucket += width;
            }
        }
        let mut open: BTreeMap<i64, BTreeMap<GroupKey, Cell>> = BTreeMap::new();
        for (key, cell) in state.engine.open_cells(tier, from, to, &wanted) {
            add(open.entry(key.bucket).or_default(), key.series, &cell);
        }
        out.extend(open.into_iter().map(|(bucket, groups)| (bucket, Arc::new(groups))));
    }
    Ok(out)
}

/// Per bucket, the groups by `dims` of the series of `project` passing
/// `filters` over `pieces`: on a node of a cluster, every node's usage as
/// shipped to ClickHouse (by piece rather than bucket unless `per_bucket`);
/// otherwise stored and open cells (`grouped`). One bucket may appear
/// twice; callers merge.
async fn bucket_groups(
    state: &QueryState,
    project: &str,
    (dims, per_bucket): (&[String], bool),
    filters: &Filters,
    pieces: &[(Tier, i64, i64)],
    watch: &Watch,
) -> Result<Vec<(i64, Grouped)>, ApiError> {
    let Some(shared) = &state.shared else {
        let selected = select_grouped(state, project, dims, filters);
        let signature = signature(project, dims, filters);
        return grouped(state, pieces, &selected, dims, &signature, watch).await;
    };
    // Session filters are not series dimensions (as `Filters::matches`).
    let mut filters = filters.0.clone();
    filters.remove("session");
    let cells = shared
        .grouped(project, pieces, (dims, per_bucket), &filters)
        .await
        .map_err(|e| state.failure("reading rollups from ClickHouse failed", &e))?;
    let mut buckets: BTreeMap<i64, BTreeMap<GroupKey, Cell>> = BTreeMap::new();
    for (bucket, group, cell) in cells {
        buckets.entry(bucket).or_default().entry(group).or_default().merge(&cell);
    }
    Ok(buckets.into_iter().map(|(bucket, groups)| (bucket, Arc::new(groups))).collect())
}

/// The cells of `project` over `pieces` summed by (model, provider); with
/// `unpriced_only`, only cells holding unpriced calls.
async fn by_model(
    state: &QueryState,
    project: &str,
    pieces: &[(Tier, i64, i64)],
    unpriced_only: bool,
) -> Result<BTreeMap<(String, Option<String>), Cell>, ApiError> {
    let mut by_model: BTreeMap<(String, Option<String>), Cell> = BTreeMap::new();
    let keep = |cell: &Cell| !unpriced_only || cell.unpriced > 0;
    if let Some(shared) = &state.shared {
        let cells = shared
            .cells(project, pieces)
            .await
            .map_err(|e| state.failure("reading rollups from ClickHouse failed", &e))?;
        for (_, key, cell) in cells.iter().filter(|(_, _, c)| keep(c)) {
            by_model.entry((key.model.clone(), key.provider.clone())).or_default().merge(cell);
        }
        return Ok(by_model);
    }
    let series = select(state, project, &Filters::default());
    let cells = cells(state, pieces, &series).await?;
    for (key, cell) in cells.iter().filter(|(_, c)| keep(c)) {
        let s = &series[&key.series];
        by_model.entry((s.model.clone(), s.provider.clone())).or_default().merge(cell);
    }
    Ok(by_model)
}

/// Groups stored rollup rows per bucket as they stream out of the store,
/// merging their sketches straight from the stored bytes.
struct Grouper {
    /// The group of every selected series; rows of other series are skipped.
    group_of: Arc<HashMap<i64, GroupKey>>,
    out: BTreeMap<i64, BTreeMap<GroupKey, Cell>>,
    /// Stops the scan when the query does.
    poll: Poll,
}

impl RollupVisitor for Grouper {
    fn visit(
        &mut self,
        key: CellKey,
        counters: Cell,
        latency: &[u8],
        ttft: &[u8],
    ) -> Result<(), StorageError> {
        self.poll.check()?;
        let Some(group) = self.group_of.get(&key.series) else { return Ok(()) };
        let groups = self.out.entry(key.bucket).or_default();
        if !groups.contains_key(group) {
            groups.insert(group.clone(), Cell::default());
        }
        let cell = groups.get_mut(group).expect("just inserted");
        cell.merge(&counters);
        let corrupt = |e: crate::aggregate::sketch::SketchError| {
            StorageError::Corrupt(format!("sketch: {e}"))
        };
        cell.latency_ms.merge_encoded(latency).map_err(corrupt)?;
        cell.ttft_ms.merge_encoded(ttft).map_err(corrupt)?;
        Ok(())
    }
}

/// What a grouped query asks, as a cache key.
fn signature(project: &str, dims: &[String], filters: &Filters) -> Arc<str> {
    Arc::from(format!("{project}\u{1f}{dims:?}\u{1f}{:?}", filters.0))
}

fn group_key(key: &SeriesKey, dims: &[String]) -> Vec<Option<String>> {
    dims.iter().map(|d| key.dimension(d).map(str::to_owned)).collect()
}

fn key_json(dims: &[String], values: &[Option<String>]) -> Value {
    let map: Map<String, Value> = dims
        .iter()
        .zip(values)
        .map(|(d, v)| (d.clone(), v.clone().map(Value::String).unwrap_or(Value::Null)))
        .collect();
    Value::Object(map)
}

/// `GET /api/v1/usage/summary`
#[utoipa::path(
    get, path = "/api/v1/usage/summary", tag = "usage",
    params(crate::query::params::WindowParams, crate::query::params::SliceParams, ("limit" = Option<u32>, Query, minimum = 1, description = "Most groups listed (default and largest: query.max_groups)"), ("format" = inline(Option<crate::query::params::Format>), Query, description = "`json` (default) or `csv`")),
    responses(
        (status = 200, description = "Totals by group, ordered by cost then requests", content((crate::openapi::UsageSummary = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn summary(
    State(state): State<Arc<QueryState>>,
    Extension(watch): Extension<Watch>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.minute_window()?;
    let dims = params.group_by(false)?;
    let filters = params.filters(false)?;
    let limit = params.limit(state.limits.max_groups, state.limits.max_groups)?;
    let csv = params.csv()?;
    let project = params.project();
    let buckets =
        bucket_groups(&state, &project, (&dims, false), &filters, &cover(from, to), &watch).await?;

    let mut groups: BTreeMap<GroupKey, Cell> = BTreeMap::new();
    let mut total = Cell::default();
    for (_, bucket_groups) in &buckets {
        for (key, cell) in bucket_groups.iter() {
            total.merge(cell);
            match groups.get_mut(key) {
                Some(group) => group.merge(cell),
                None => {
                    groups.insert(key.clone(), cell.clone());
                }
            }
        }
    }
    drop(buckets);
    let mut groups: Vec<(Vec<Option<String>>, Cell)> = groups.into_iter().collect();
    groups.sort_by(|a, b| {
        cost_rank(b.1.cost_usd).cmp(&cost_rank(a.1.cost_usd)).then(b.1.requests.cmp(&a.1.requests))
    });
    let groups_total = groups.len();
    let other = fold_rest(&mut groups, limit, |(_, cell)| cell);

    if csv {
        let mut out = String::new();
        let header: Vec<String> =
            dims.iter().cloned().chain(CSV_FIELDS.iter().map(|f| f.to_string())).collect();
        out.push_str(&csv_line(header.iter().map(String::as_str)));
        let other_key = vec![Some(OTHER.to_owned()); dims.len()];
        let other_row = other.as_ref().map(|cell| (&other_key, cell));
        for (key, cell) in groups.iter().map(|(k, c)| (k, c)).chain(other_row) {
            let mut fields: Vec<String> =
                key.iter().map(|v| v.clone().unwrap_or_default()).collect();
            fields.extend(csv_cell_fields(cell));
            out.push_str(&csv_line(fields.iter().map(String::as_str)));
        }
        return Ok(csv_response(out));
    }

    let groups: Vec<Value> =
        groups.iter().map(|(key, cell)| with_key(key_json(&dims, key), cell)).collect();
    let other = other.map(|cell| {
        let mut value = with_key(Value::Null, &cell);
        value.as_object_mut().expect("object").remove("key");
        value
    });
    Ok(Json(json!({
        "project": params.project(),
        "from": from,
        "to": to,
        "groups": groups,
        "groups_total": groups_total,
        "truncated": other.is_some(),
        "other": other,
        "total": Totals::from(&total),
    }))
    .into_response())
}

/// A cost as groups are ranked by it: in tenths of a nano-dollar, so that
/// two sums of the same costs taken in another order (on another node, or
/// in ClickHouse), which may differ in their last bits, rank alike and
/// their groups keep their key order rather than swap.
fn cost_rank(cost_usd: f64) -> i64 {
    (cost_usd * 1e10).round() as i64
}

/// The key value a CSV row of the summed remainder carries.
const OTHER: &str = "__other__";

/// Keeps the first `limit` groups and sums the rest into one cell (None when
/// nothing was cut).
fn fold_rest<T>(groups: &mut Vec<T>, limit: usize, cell: impl Fn(&T) -> &Cell) -> Option<Cell> {
    if groups.len() <= limit {
        return None;
    }
    let mut other = Cell::default();
    for rest in groups.drain(limit..) {
        other.merge(cell(&rest));
    }
    Some(other)
}

fn with_key(key: Value, cell: &Cell) -> Value {
    let mut value = serde_json::to_value(Totals::from(cell)).expect("totals serialize");
    value.as_object_mut().expect("object").insert("key".into(), key);
    value
}

/// `GET /api/v1/usage/series`
#[utoipa::path(
    get, path = "/api/v1/usage/series", tag = "usage",
    params(crate::query::params::WindowParams, crate::query::params::SliceParams, ("step" = Option<String>, Query, description = "A whole number of minutes (default `1h`, at most `366d`, at most 10,000 points in the window)"), ("limit" = Option<u32>, Query, minimum = 1, description = "Most groups listed (default and largest: query.max_groups)")),
    responses(
        (status = 200, description = "Points per group, aligned to multiples of the step", body = crate::openapi::UsageSeries),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn series(
    State(state): State<Arc<QueryState>>,
    Extension(watch): Extension<Watch>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let step_text = params.get("step").unwrap_or("1h");
    let step = crate::time::parse_duration(step_text)
        .map_err(|e| ApiError::bad_request(format!("step: {e}")))?;
    check_step(step, step_text)?;
    let tier = Tier::coarsest_fitting(step).ok_or_else(|| {
        ApiError::bad_request(format!(
            "step: {step_text:?} must be a whole number of minutes (at least 1m)"
        ))
    })?;
    let (from, to) = params.window()?;
    let (from, to) = (floor(from, step), ceil(to, step));
    if (to - from) / step > 10_000 {
        return Err(ApiError::bad_request(
            "window/step gives more than 10000 points; use a larger step",
        ));
    }
    let dims = params.group_by(false)?;
    let filters = params.filters(false)?;
    let limit = params.limit(state.limits.max_groups, state.limits.max_groups)?;
    let project = params.project();
    let pieces = [(tier, from, to)];
    let buckets = bucket_groups(&state, &project, (&dims, true), &filters, &pieces, &watch).await?;

    let mut groups: BTreeMap<GroupKey, BTreeMap<i64, Cell>> = BTreeMap::new();
    for (bucket, bucket_groups) in &buckets {
        let point = floor(*bucket, step);
        for (key, cell) in bucket_groups.iter() {
            groups.entry(key.clone()).or_default().entry(point).or_default().merge(cell);
        }
    }
    drop(buckets);
    // The groups that cost most over the window keep their series; the
    // rest are summed per point into `other`.
    let mut ranked: Vec<(f64, u64, GroupKey, BTreeMap<i64, Cell>)> = groups
        .into_iter()
        .map(|(key, points)| {
            let cost = points.values().map(|c| c.cost_usd).sum();
            let requests = points.values().map(|c| c.requests).sum();
            (cost, requests, key, points)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then_with(|| a.2.cmp(&b.2)));
    let groups_total = ranked.len();
    let mut other: Option<BTreeMap<i64, Cell>> = None;
    if ranked.len() > limit {
        let sums = other.get_or_insert_default();
        for (_, _, _, points) in ranked.drain(limit..) {
            for (t, cell) in points {
                sums.entry(t).or_default().merge(&cell);
            }
        }
    }
    let points_json = |points: &BTreeMap<i64, Cell>| -> Vec<Value> {
        points
            .iter()
            .map(|(t, cell)| {
                let mut v = serde_json::to_value(Totals::from(cell)).expect("totals serialize");
                v.as_object_mut().expect("object").insert("t".into(), json!(t));
                v
            })
            .collect()
    };
    let groups: Vec<Value> = ranked
        .iter()
        .map(|(_, _, key, points)| json!({"key": key_json(&dims, key), "points": points_json(points)}))
        .collect();
    Ok(Json(json!({
        "project": params.project(),
        "from": from,
        "to": to,
        "step_ms": step,
        "tier": tier.name(),
        "groups": groups,
        "groups_total": groups_total,
        "truncated": other.is_some(),
        "other": other.map(|points| json!({"points": points_json(&points)})),
    }))
    .into_response())
}

/// `GET /api/v1/usage/records`
#[utoipa::path(
    get, path = "/api/v1/usage/records", tag = "usage",
    params(crate::query::params::WindowParams, ("filter" = Option<Vec<String>>, Query, style = Form, explode, description = "`DIMENSION:VALUE`, repeatable (`session` too, at most once)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most items per page (default 100)"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"), ("format" = inline(Option<crate::query::params::Format>), Query, description = "`json` (default) or `csv`")),
    responses(
        (status = 200, description = "The raw calls, oldest first (CSV: the cursor in `X-Next-Cursor`)", content((crate::openapi::UsageRecords = "application/json"), (String = "text/csv")), headers(("X-Next-Cursor" = String, description = "CSV only: the next page's cursor"))),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn records(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.window()?;
    let filters = params.filters(true)?;
    let limit = params.limit(100, 10_000)?;
    let project = params.project();
    let session = match filters.session() {
        None => None,
        Some([one]) => Some(one.clone()),
        Some(_) => return Err(ApiError::bad_request("filter: give at most one session")),
    };
    let cursor = params.get("cursor");
    let (rows, next_cursor) = match &state.shared {
        None => {
            let series_ids = filters
                .has_series_filters()
                .then(|| select(&state, &project, &filters).into_keys().collect::<Vec<_>>());
            let after = cursor.map(parse_cursor).transpose()?;
            let filter = CallFilter {
                project,
                from_ms: from,
                to_ms: to,
                series: series_ids,
                session,
                after,
                limit,
            };
            let rows = state
                .storage
                .list_calls(filter)
                .await
                .map_err(|e| state.failure("listing records failed", &e))?;
            let next = rows.last().map(|r| format!("{}.{}", r.call.time_ms, r.seq));
            let rows: Vec<crate::model::LlmCall> = rows.into_iter().map(|r| r.call).collect();
            (rows, next)
        }
        Some(shared) => {
            let page = crate::storage::clickhouse::calls::CallPage {
                project,
                from_ms: from,
                to_ms: to,
                filters: filters
                    .0
                    .iter()
                    .filter(|(dim, _)| *dim != "session")
                    .map(|(dim, values)| (dim.clone(), values.clone()))
                    .collect(),
                session,
                after: cursor.map(parse_node_cursor).transpose()?,
                limit,
            };
            let rows = shared
                .calls(&page)
                .await
                .map_err(|e| state.failure("listing records from ClickHouse failed", &e))?;
            let next =
                rows.last().map(|(node, seq, call)| format!("{}.{node}.{seq}", call.time_ms));
            (rows.into_iter().map(|(_, _, call)| call).collect(), next)
        }
    };
    let next_cursor = next_cursor.filter(|_| rows.len() == limit);

    if params.csv()? {
        let mut out = csv_line(RECORD_FIELDS.iter().copied());
        for call in &rows {
            let value = serde_json::to_value(call).expect("calls serialize");
            let fields: Vec<String> = RECORD_FIELDS
                .iter()
                .map(|f| match (f, &value[*f]) {
                    (&"tags", tags) => tags.to_string(),
                    (_, Value::Null) => String::new(),
                    (_, Value::String(s)) => s.clone(),
                    (_, other) => other.to_string(),
                })
                .collect();
            out.push_str(&csv_line(fields.iter().map(String::as_str)));
        }
        let mut response = csv_response(out);
        if let Some(cursor) = next_cursor
            && let Ok(value) = cursor.parse()
        {
            response.headers_mut().insert("x-next-cursor", value);
        }
        return Ok(response);
    }
    Ok(Json(json!({"records": rows, "next_cursor": next_cursor})).into_response())
}

/// A records cursor of a node of a cluster: `time.node.seq` (a node's
/// name may hold dots; time and seq do not).
fn parse_node_cursor(text: &str) -> Result<(i64, String, i64), ApiError> {
    let parsed = text.split_once('.').and_then(|(time, rest)| {
        let (node, seq) = rest.rsplit_once('.')?;
        Some((time.parse().ok()?, node.to_owned(), seq.parse().ok()?))
    });
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!("cursor: {text:?} is not a cursor from a previous page"))
    })
}

/// `GET /api/v1/usage/unpriced`: models counted with cost 0 because no price
/// matched them.
#[utoipa::path(
    get, path = "/api/v1/usage/unpriced", tag = "usage",
    params(crate::query::params::WindowParams),
    responses(
        (status = 200, description = "Models counted with cost 0 because no price matched them", body = crate::openapi::Unpriced),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn unpriced(
    State(state): State<Arc<QueryState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.minute_window()?;
    let by_model = by_model(&state, &params.project(), &cover(from, to), true).await?;
    let models: Vec<Value> = by_model
        .iter()
        .map(|((model, provider), cell)| {
            json!({
                "model": model,
                "provider": provider,
                "requests": cell.unpriced,
                "input_tokens": cell.input_tokens,
                "output_tokens": cell.output_tokens,
            })
        })
        .collect();
    Ok(Json(json!({"from": from, "to": to, "models": models})).into_response())
}

/// `GET /api/v1/usage/prices`: each model in use in the window (by model and
/// provider, from the rollups) with its usage and the price a call to it
/// matches at the window's end, or `null` when none does.
#[utoipa::path(
    get, path = "/api/v1/usage/prices", tag = "usage",
    params(crate::query::params::WindowParams),
    responses(
        (status = 200, description = "The models in use with the price each matches", body = crate::openapi::ModelPrices),
        (status = 400, description = "A parameter is invalid (or the window lies wholly outside 2000-01-01 .. now + 1 day); the message names it", body = crate::openapi::ErrorBody),
        (status = 503, description = "The query did not finish within query.timeout (`query_timeout`)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn prices(
    State(state): State<Arc<QueryState>>,
    Extension(table): Extension<Arc<crate::pricing::PriceTable>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let (from, to) = params.minute_window()?;
    let by_model = by_model(&state, &params.project(), &cover(from, to), false).await?;
    // A bounded answer: the rollups cap distinct models and providers per project.
    let models: Vec<Value> = by_model
        .iter()
        .map(|((model, provider), cell)| {
            let price = table.lookup(model, provider.as_deref(), to).map(|found| {
                let source = found.price_id.split(':').next().unwrap_or("catalog");
                json!({
                    "price_id": found.price_id,
                    "source": source,
                    "provider": found.provider,
                    "input_per_token": found.price.input,
                    "output_per_token": found.price.output,
                    "cache_read_per_token": found.price.cache_read,
                    "cache_write_per_token": found.price.cache_write,
                    "reasoning_per_token": found.price.reasoning,
                })
            });
            json!({
                "model": model,
                "provider": provider,
                "requests": cell.requests,
                "unpriced_requests": cell.unpriced,
                "input_tokens": cell.input_tokens,
                "output_tokens": cell.output_tokens,
                "cost_usd": cell.cost_usd,
                "price": price,
            })
        })
        .collect();
    Ok(Json(json!({"from": from, "to": to, "models": models})).into_response())
}

const CSV_FIELDS: [&str; 14] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
    "errors",
    "estimated",
    "unpriced",
    "cost_usd",
    "reported_cost_usd",
    "latency_p50_ms",
    "latency_p99_ms",
];

fn csv_cell_fields(c: &Cell) -> Vec<String> {
    let q = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    vec![
        c.requests.to_string(),
        c.input_tokens.to_string(),
        c.output_tokens.to_string(),
        c.cache_read_tokens.to_string(),
        c.cache_write_tokens.to_string(),
        c.reasoning_tokens.to_string(),
        c.total_tokens.to_string(),
        c.errors.to_string(),
        c.estimated.to_string(),
        c.unpriced.to_string(),
        c.cost_usd.to_string(),
        c.reported_cost_usd.to_string(),
        q(c.latency_ms.quantile(0.5)),
        q(c.latency_ms.quantile(0.99)),
    ]
}

const RECORD_FIELDS: [&str; 33] = [
    "id",
    "project",
    "time_ms",
    "started_at_ms",
    "completed_at_ms",
    "model",
    "response_model",
    "provider",
    "operation",
    "user",
    "api_key",
    "session",
    "route",
    "cluster",
    "tags",
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "completed",
    "estimated",
    "streaming",
    "ttft_ms",
    "duration_ms",
    "status",
    "error_type",
    "cost_usd",
    "price_id",
    "reported_cost_usd",
    "source",
];

/// One CSV line (RFC 4180 quoting).
fn csv_line<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            let _ = write!(line, "\"{}\"", field.replace('"', "\"\""));
        } else {
            line.push_str(field);
        }
    }
    line.push('\n');
    line
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}
