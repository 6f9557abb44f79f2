//! The budgets HTTP API: `/api/v1/budgets` (CRUD and status), the quota
//! API for gateways (`/api/v1/quota/reserve`, `/api/v1/quota/settle`) and
//! the alert history (`/api/v1/alerts`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::book::{BudgetStatus, Decision, Estimate, SettleError, Ticket};
use super::rule::{Budget, BudgetSpec, Origin, Subject};
use super::{BudgetError, Budgets};
use crate::durability::Outcome;
use crate::error::{ApiError, PathParam};
use crate::ingest::{UsageIngest, body};
use crate::model::Tags;
use crate::normalize::normalize_json;
use crate::query::params::Params;
use crate::storage::AlertFilter;
use crate::time::now_ms;

/// What the budget endpoints share.
pub struct BudgetApi {
    pub budgets: Arc<Budgets>,
    /// The usage path: settled usage is recorded exactly as `/api/v1/usage`
    /// records it.
    pub usage: Arc<UsageIngest>,
    /// On a node of a cluster: reservations decided for the whole cluster.
    pub shared: Option<Arc<crate::cluster::budgets::SharedBudgets>>,
}

type Shared = State<Arc<BudgetApi>>;

/// Largest budget or quota request body.
const MAX_BODY: usize = 1 << 20;
/// Longest a reservation may be held.
const MAX_TTL_S: f64 = 86_400.0;
const DEFAULT_TTL_S: f64 = 300.0;
/// Most reservations open at once; beyond, reserve answers 429 (a gateway
/// that never settles must not grow the server without bound).
const MAX_OPEN_RESERVATIONS: usize = 1_000_000;

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

/// Parses a JSON body; errors name the field.
async fn json_body<T: DeserializeOwned>(
    api: &BudgetApi,
    headers: &HeaderMap,
    request: Body,
) -> Result<T, ApiError> {
    let received = body::read(headers, request, MAX_BODY, &api.usage.receiving).await?;
    let bytes = body::inflate(headers, &received.bytes, MAX_BODY)?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::bad_request(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

impl From<BudgetError> for ApiError {
    fn from(err: BudgetError) -> Self {
        match err {
            BudgetError::Commit(err) => err.into(),
            BudgetError::Conflict(message) => conflict(message),
            BudgetError::Gone(id) => ApiError::not_found(format!("no budget {id}")),
            other => ApiError::internal("budget change failed", &other),
        }
    }
}

type Caller = Option<axum::Extension<crate::access::Principal>>;

/// The project a key binds a request to (none while auth is off).
fn bound(caller: &Caller) -> Option<&str> {
    caller.as_ref().map(|axum::Extension(p)| p.project.as_str())
}

/// A project named in a body: the key's when none is named; another one
/// is refused.
fn named_project(caller: &Caller, named: &mut Option<String>) -> Result<(), ApiError> {
    let Some(own) = bound(caller) else { return Ok(()) };
    match named.as_deref() {
        Some(other) if other != own => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("project: this key belongs to project {own:?}, not {other:?}"),
        )),
        _ => {
            *named = Some(own.to_owned());
            Ok(())
        }
    }
}

/// 404 for a budget the caller's key may not see.
fn visible(caller: &Caller, id: &str, project: Option<&str>) -> Result<(), ApiError> {
    match (bound(caller), project) {
        (_, None) => Err(ApiError::not_found(format!("no budget {id}"))),
        (Some(own), Some(project)) if own != project => {
            Err(ApiError::not_found(format!("no budget {id}")))
        }
        _ => Ok(()),
    }
}

/// `POST /api/v1/budgets` → 201 with the budget, its id and webhook secret.
#[utoipa::path(
    post, path = "/api/v1/budgets", tag = "budgets",
    request_body(content = BudgetSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The budget, with its id and webhook secret (shown only here)", body = crate::openapi::BudgetView),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 409, description = "A budget of that name or id exists", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn create(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<axum::response::Response, ApiError> {
    let mut spec: BudgetSpec = json_body(&api, &headers, request).await?;
    named_project(&caller, &mut spec.project)?;
    let budget = Budget::from_spec(spec, Origin::Api, &api.budgets.rule_context())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let budget = api.budgets.install(&api.usage.committer, budget, false).await?;
    let mut response = (StatusCode::CREATED, Json(budget.to_json(true))).into_response();
    response.extensions_mut().insert(crate::access::guard::AuditTarget(budget.id.clone()));
    Ok(response)
}

/// `PUT /api/v1/budgets/{id}`: replaces a budget's definition (its spend is
/// read again; the secret stays unless a new one is given).
#[utoipa::path(
    put, path = "/api/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "The budget id")),
    request_body(content = BudgetSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "The budget as replaced", body = crate::openapi::BudgetView),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such budget", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 409, description = "The budget is defined in the config file, or the name is taken", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn replace(
    State(api): Shared,
    caller: Caller,
    PathParam(id): PathParam,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Value>, ApiError> {
    let mut spec: BudgetSpec = json_body(&api, &headers, request).await?;
    let old = api.budgets.lock().get(&id).cloned();
    visible(&caller, &id, old.as_ref().map(|b| b.project.as_str()))?;
    let Some(old) = old else { return Err(ApiError::not_found(format!("no budget {id}"))) };
    named_project(&caller, &mut spec.project)?;
    if old.origin == Origin::Config {
        return Err(conflict(format!(
            "budget {id} is defined in the config file; change it there"
        )));
    }
    if spec.id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::bad_request(format!("id: the body names another budget than {id}")));
    }
    spec.id = Some(id);
    let keep_secret = spec.secret.is_none();
    let mut budget = Budget::from_spec(spec, Origin::Api, &api.budgets.rule_context())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if keep_secret {
        budget.secret = old.secret.clone();
    }
    budget.created_ms = old.created_ms;
    let budget = api.budgets.install(&api.usage.committer, budget, true).await?;
    Ok(Json(budget.to_json(false)))
}

/// `DELETE /api/v1/budgets/{id}` → 204.
#[utoipa::path(
    delete, path = "/api/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "The budget id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not UTF-8 once percent-decoded", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such budget", body = crate::openapi::ErrorBody),
        (status = 409, description = "The budget is defined in the config file", body = crate::openapi::ErrorBody),
    )
)]
pub async fn delete(
    State(api): Shared,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    let found = api.budgets.lock().get(&id).map(|b| (b.origin, b.project.clone()));
    visible(&caller, &id, found.as_ref().map(|(_, p)| p.as_str()))?;
    let origin = found.map(|(origin, _)| origin);
    match origin {
        None => Err(ApiError::not_found(format!("no budget {id}"))),
        Some(Origin::Config) => {
            Err(conflict(format!("budget {id} is defined in the config file; remove it there")))
        }
        Some(Origin::Api) => {
            api.budgets
                .remove(&id)
                .await
                .map_err(|e| ApiError::internal("deleting the budget failed", &e))?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// `GET /api/v1/budgets?project=`
#[utoipa::path(
    get, path = "/api/v1/budgets", tag = "budgets",
    params(("project" = Option<String>, Query, description = "The project (default `default`)")),
    responses(
        (status = 200, description = "Every budget (of the project, when given)", body = crate::openapi::BudgetList),
    )
)]
pub async fn list(State(api): Shared, RawQuery(query): RawQuery) -> Json<Value> {
    let params = Params::parse(query.as_deref());
    let project = params.get("project");
    let book = api.budgets.lock();
    let mut budgets: Vec<&Arc<Budget>> =
        book.budgets().filter(|b| project.is_none_or(|p| b.project == p)).collect();
    budgets.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
    Json(json!({"budgets": budgets.iter().map(|b| b.to_json(false)).collect::<Vec<_>>()}))
}

/// `GET /api/v1/budgets/{id}`
#[utoipa::path(
    get, path = "/api/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "The budget id")),
    responses(
        (status = 200, description = "The budget", body = crate::openapi::BudgetView),
        (status = 400, description = "The id is not UTF-8 once percent-decoded", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such budget", body = crate::openapi::ErrorBody),
    )
)]
pub async fn get(
    State(api): Shared,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    let book = api.budgets.lock();
    let budget = book.get(&id).ok_or_else(|| ApiError::not_found(format!("no budget {id}")))?;
    visible(&caller, &id, Some(&budget.project))?;
    Ok(Json(budget.to_json(false)))
}

/// `GET /api/v1/budgets/{id}/status`
#[utoipa::path(
    get, path = "/api/v1/budgets/{id}/status", tag = "budgets",
    params(("id" = String, Path, description = "The budget id")),
    responses(
        (status = 200, description = "The budget's current period", body = BudgetStatus),
        (status = 400, description = "The id is not UTF-8 once percent-decoded", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such budget", body = crate::openapi::ErrorBody),
    )
)]
pub async fn status(
    State(api): Shared,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Json<BudgetStatus>, ApiError> {
    let project = api.budgets.lock().get(&id).map(|b| b.project.clone());
    visible(&caller, &id, project.as_deref())?;
    let status = api.budgets.lock().status(&id, now_ms());
    status.map(Json).ok_or_else(|| ApiError::not_found(format!("no budget {id}")))
}

/// `GET /api/v1/budgets/status?project=`
#[utoipa::path(
    get, path = "/api/v1/budgets/status", tag = "budgets",
    params(("project" = Option<String>, Query, description = "The project (default `default`)")),
    responses(
        (status = 200, description = "Every budget's current period", body = crate::openapi::BudgetStatuses),
    )
)]
pub async fn statuses(State(api): Shared, RawQuery(query): RawQuery) -> Json<Value> {
    let params = Params::parse(query.as_deref());
    let statuses = api.budgets.lock().statuses(params.get("project"), now_ms());
    Json(json!({"budgets": statuses}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// The raw key, fingerprinted here as usage reports' keys are.
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    estimated_cost_usd: Option<f64>,
    #[serde(default)]
    estimated_tokens: Option<f64>,
    #[serde(default)]
    ttl_s: Option<f64>,
}

fn estimate_field(name: &str, value: Option<f64>) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => {
            Err(ApiError::bad_request(format!("{name}: must be a number at or above 0, got {v}")))
        }
        other => Ok(other),
    }
}

/// `POST /api/v1/quota/reserve`: may this call proceed? If so its estimate
/// is held on every budget covering it until settled or expired.
#[utoipa::path(
    post, path = "/api/v1/quota/reserve", tag = "budgets",
    request_body(content = crate::openapi::ReserveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Allowed (the estimate is held) or denied, with the budgets checked", body = Decision),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "A node of a cluster could not reach the coordination store to check the cluster's budgets; nothing was reserved", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn reserve(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Decision>, ApiError> {
    let mut r: ReserveRequest = json_body(&api, &headers, request).await?;
    named_project(&caller, &mut r.project)?;
    let estimate = Estimate {
        cost_usd: estimate_field("estimated_cost_usd", r.estimated_cost_usd)?,
        tokens: estimate_field("estimated_tokens", r.estimated_tokens)?,
    };
    if estimate.cost_usd.is_none() && estimate.tokens.is_none() {
        return Err(ApiError::bad_request("estimated_cost_usd or estimated_tokens is required"));
    }
    let ttl_s = r.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(ttl_s > 0.0 && ttl_s <= MAX_TTL_S) {
        return Err(ApiError::bad_request(format!(
            "ttl_s: must be above 0 and at most {MAX_TTL_S}, got {ttl_s}"
        )));
    }
    let api_key = r.api_key.as_deref().map(|k| api.budgets.fingerprinter.fingerprint(k));
    let project = r.project.unwrap_or_else(|| "default".to_owned());
    let subject = Subject {
        project: &project,
        model: r.model.as_deref(),
        provider: r.provider.as_deref(),
        user: r.user.as_deref(),
        api_key: api_key.as_deref(),
        route: r.route.as_deref(),
        tags: &r.tags,
    };
    if api.budgets.lock().open_reservations() >= MAX_OPEN_RESERVATIONS {
        return Err(ApiError::overloaded(format!(
            "{MAX_OPEN_RESERVATIONS} reservations are open; settle or let them expire first"
        )));
    }
    let ttl_ms = (ttl_s * 1000.0) as i64;
    let decision = match &api.shared {
        Some(shared) => shared.reserve(&subject, estimate, ttl_ms).await.map_err(|err| {
            ApiError::unavailable(format!(
                "the cluster's budgets cannot be checked ({err}); nothing was reserved, retry later"
            ))
        })?,
        None => api.budgets.lock().reserve(&subject, estimate, ttl_ms, now_ms()),
    };
    Ok(Json(decision))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    reservation_id: String,
    /// A usage report, as `POST /api/v1/usage` takes it.
    usage: Box<serde_json::value::RawValue>,
}

/// `POST /api/v1/quota/settle`: records the call's actual usage (as
/// `/api/v1/usage` does) and then releases the reservation.
#[utoipa::path(
    post, path = "/api/v1/quota/settle", tag = "budgets",
    request_body(content = crate::openapi::SettleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The usage is recorded and the hold released", body = crate::openapi::Settled),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such reservation (nothing recorded)", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 409, description = "The reservation is settled already", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn settle(
    State(api): Shared,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Value>, ApiError> {
    let s: SettleRequest = json_body(&api, &headers, request).await?;
    let usage = &api.usage;
    // The usage is checked before the reservation is claimed, so that a bad
    // report leaves the reservation as it was.
    let mut context = usage.context();
    if let Some(own) = bound(&caller) {
        context.default_project = own;
    }
    let call = normalize_json(s.usage.get(), &context).map_err(|err| {
        usage.metrics.ingested("settle", 0, 0, 1);
        ApiError::bad_request(format!("usage.{err}"))
    })?;
    let records = crate::durability::Records { calls: vec![call], ..Default::default() };
    let principal = caller.as_ref().map(|axum::Extension(p)| p);
    usage.access.bind_records(principal, &records)?;
    let call = records.calls.into_iter().next().expect("one call");
    let id = s.reservation_id;
    let ticket = api.budgets.lock().begin_settle(&id, now_ms()).map_err(|e| match e {
        SettleError::Unknown(_) => ApiError::not_found(e.to_string()),
        SettleError::AlreadySettled(_) | SettleError::InProgress(_) => conflict(e.to_string()),
    })?;
    let cost_usd = call.cost_usd;
    let outcome = usage.committer.submit(vec![call]).await;
    api.budgets.lock().finish_settle(&id, outcome.is_ok(), now_ms());
    let accepted = outcome?.first() == Some(&Outcome::Accepted);
    usage.metrics.ingested("settle", accepted as u64, !accepted as u64, 0);
    let reservation = match (ticket, &api.shared) {
        (Ticket::Open, _) => "released",
        (Ticket::Expired, _) => "expired",
        (Ticket::BeforeRestart, None) => "before_restart",
        // Made by another node of the cluster (or this one before a restart).
        (Ticket::BeforeRestart, Some(shared)) => {
            if let Err(err) = shared.settled_elsewhere(&id).await {
                // The usage is recorded; the hold lasts until its ttl_s.
                tracing::warn!(%err, reservation = %id, "the node holding a settled reservation cannot be told");
            }
            "elsewhere"
        }
    };
    Ok(Json(json!({
        "reservation_id": id,
        "reservation": reservation,
        "accepted": accepted as u32,
        "duplicates": !accepted as u32,
        "cost_usd": cost_usd,
    })))
}

/// `GET /api/v1/alerts?budget_id=&status=pending|delivered|failed|refused&limit=`
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "budgets",
    params(("budget_id" = Option<String>, Query, description = "Only this budget's alerts"), ("status" = Option<String>, Query, description = "`pending`, `delivered`, `failed` or `refused`"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most items per page (default 100)")),
    responses(
        (status = 200, description = "Alerts, each with its payload and deliveries", body = crate::openapi::AlertList),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
    )
)]
pub async fn alerts(
    State(api): Shared,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let status = params.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !matches!(s.as_str(), "pending" | "delivered" | "failed" | "refused")
    {
        return Err(ApiError::bad_request(format!(
            "status: {s:?} is not pending, delivered, failed or refused"
        )));
    }
    let filter = AlertFilter {
        budget_id: params.get("budget_id").map(str::to_owned),
        project: bound(&caller).map(str::to_owned),
        status,
        limit: params.limit(100, 10_000)?,
    };
    let alerts = api
        .budgets
        .storage()
        .list_alerts(filter)
        .await
        .map_err(|e| ApiError::internal("reading alerts failed", &e))?;
    Ok(Json(json!({"alerts": alerts})))
}
