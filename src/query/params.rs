//! Query-string parameters shared by the usage endpoints: window, project,
//! `group_by` and repeated `filter=DIM:VALUE`.

use std::collections::BTreeMap;

use super::limits::clamp_window;
use crate::aggregate::series::SeriesView;
use crate::error::ApiError;
use crate::time::{DAY_MS, MINUTE_MS, now_ms, parse_duration, parse_instant};

/// Dimensions usage can be grouped and filtered by (besides `tag.NAME`).
pub const DIMENSIONS: [&str; 9] =
    ["model", "provider", "operation", "user", "api_key", "route", "status", "cluster", "session"];

/// The raw query string as (key, value) pairs, in order, repeats kept.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every (key, value) pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn project(&self) -> String {
        self.get("project").filter(|p| !p.is_empty()).unwrap_or("default").to_owned()
    }

    /// `[from, to)` in unix ms: `from`/`to` (RFC 3339 or unix ms), or
    /// `since=24h` (relative to now); default the last 24 hours. Cut to where
    /// data can be (`limits::clamp_window`), so that no window costs more
    /// than the data it can hold.
    pub fn window(&self) -> Result<(i64, i64), ApiError> {
        let instant = |key: &str| -> Result<Option<i64>, ApiError> {
            self.get(key)
                .map(|v| parse_instant(v).map_err(|e| ApiError::bad_request(format!("{key}: {e}"))))
                .transpose()
        };
        let now = now_ms();
        // `to` is exclusive; by default the window reaches the present
        // millisecond, so that what was stamped just now is in it.
        let to = instant("to")?.unwrap_or(now + 1);
        let from = match (instant("from")?, self.get("since")) {
            (Some(from), _) => from,
            (None, Some(since)) => to.saturating_sub(
                parse_duration(since).map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
            ),
            (None, None) => to.saturating_sub(DAY_MS),
        };
        if from >= to {
            return Err(ApiError::bad_request(format!("from ({from}) must be before to ({to})")));
        }
        clamp_window(from, to, now)
    }

    /// The window widened to whole minutes, the finest rollup: `from` rounds
    /// down, `to` rounds up.
    pub fn minute_window(&self) -> Result<(i64, i64), ApiError> {
        let (from, to) = self.window()?;
        Ok((floor(from, MINUTE_MS), ceil(to, MINUTE_MS)))
    }

    /// `group_by=model,user` (also repeatable), validated.
    pub fn group_by(&self, allow_session: bool) -> Result<Vec<String>, ApiError> {
        let mut dims = Vec::new();
        for value in self.all("group_by") {
            for dim in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                check_dimension("group_by", dim, allow_session)?;
                if !dims.iter().any(|d: &String| d == dim) {
                    dims.push(dim.to_owned());
                }
            }
        }
        Ok(dims)
    }

    /// `filter=DIM:VALUE`, repeatable; values of one dimension are OR-ed,
    /// different dimensions AND-ed.
    pub fn filters(&self, allow_session: bool) -> Result<Filters, ApiError> {
        let mut filters = Filters::default();
        for value in self.all("filter") {
            let (dim, wanted) = value.split_once(':').ok_or_else(|| {
                ApiError::bad_request(format!(
                    "filter {value:?}: expected DIMENSION:VALUE, e.g. provider:openai"
                ))
            })?;
            check_dimension("filter", dim, allow_session)?;
            filters.0.entry(dim.to_owned()).or_default().push(wanted.to_owned());
        }
        Ok(filters)
    }

    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 && n <= max => Ok(n),
                _ => Err(ApiError::bad_request(format!("limit: expected 1 to {max}, got {v:?}"))),
            },
        }
    }

    pub fn csv(&self) -> Result<bool, ApiError> {
        match self.get("format") {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(other) => {
                Err(ApiError::bad_request(format!("format: expected json or csv, got {other:?}")))
            }
        }
    }
}

fn check_dimension(param: &str, dim: &str, allow_session: bool) -> Result<(), ApiError> {
    if dim == "session" && !allow_session {
        return Err(ApiError::bad_request(format!(
            "{param}: session is only available on /api/v1/usage/records (rollups are not kept per session)"
        )));
    }
    if DIMENSIONS.contains(&dim) || dim.strip_prefix("tag.").is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{param}: unknown dimension {dim:?} (expected one of {}, or tag.NAME)",
        DIMENSIONS.join(", ")
    )))
}

/// Filters by dimension.
#[derive(Debug, Default)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Does the series pass every filter except `session` (not a series
    /// dimension)?
    pub fn matches(&self, key: &SeriesView<'_>) -> bool {
        self.0.iter().filter(|(dim, _)| *dim != "session").all(|(dim, wanted)| {
            let value = key.dimension(dim).unwrap_or("");
            wanted.iter().any(|w| w == value)
        })
    }

    pub fn has_series_filters(&self) -> bool {
        self.0.keys().any(|dim| dim != "session")
    }

    pub fn session(&self) -> Option<&[String]> {
        self.0.get("session").map(Vec::as_slice)
    }
}

pub fn floor(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

pub fn ceil(ms: i64, step: i64) -> i64 {
    let f = floor(ms, step);
    if f == ms { f } else { f + step }
}

/// A `time.seq` paging cursor, as the list endpoints hand out.
pub fn parse_cursor(text: &str) -> Result<(i64, i64), ApiError> {
    text.split_once('.').and_then(|(t, s)| Some((t.parse().ok()?, s.parse().ok()?))).ok_or_else(
        || ApiError::bad_request(format!("cursor: {text:?} is not a cursor from a previous page")),
    )
}

/// `project=` and the window, as `Params::project` and `Params::window` read
/// them: the API description's shared query parameters.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WindowParams {
    /// The project (default `default`).
    project: Option<String>,
    /// Start of the window: RFC 3339 or unix ms.
    from: Option<String>,
    /// End of the window (exclusive): RFC 3339 or unix ms; default now.
    to: Option<String>,
    /// A duration ending at `to` (e.g. `1h`, `24h`, `7d`) when `from` is not
    /// given; default `24h`.
    since: Option<String>,
}

/// `group_by` and `filter`, as `Params::group_by` and `Params::filters`
/// read them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SliceParams {
    /// Dimensions to group by, comma-separated and/or repeated: `model`,
    /// `provider`, `operation`, `user`, `api_key`, `route`, `status`,
    /// `cluster`, `tag.NAME`.
    #[param(style = Form, explode)]
    group_by: Option<Vec<String>>,
    /// `DIMENSION:VALUE`, repeatable; values of one dimension are OR-ed,
    /// different dimensions AND-ed.
    #[param(style = Form, explode)]
    filter: Option<Vec<String>>,
}

/// `format=json|csv`, as `Params::csv` reads it.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Format {
    Json,
    Csv,
}
