//! The admin API of keys, projects and the audit log
//! (`/api/v1/admin/keys|projects|audit`), and `GET /api/v1/auth/whoami`.
//! A key acts within its own project; while auth is off, the `project`
//! parameter (or body field) names it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::guard::AuditTarget;
use super::{Access, CreateError, KeyRecord, NewKeyRequest, Principal, Scope};
use crate::error::ApiError;

type Shared = State<Arc<Access>>;
type Caller = Option<Extension<Principal>>;

fn store_error(err: impl std::fmt::Display) -> ApiError {
    ApiError::internal("access store", &err)
}

/// Runs `work` on the blocking pool: the access store is SQLite.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(store_error)?
}

/// The project a request acts in: its key's, else the one it names.
fn project_of(caller: &Caller, named: Option<&str>) -> Result<String, ApiError> {
    match caller {
        Some(Extension(p)) => match named {
            Some(named) if named != p.project => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "key {} belongs to project {:?}; it cannot reach project {named:?}",
                    p.key_id, p.project
                ),
            )),
            _ => Ok(p.project.clone()),
        },
        None => Ok(named.filter(|n| !n.is_empty()).unwrap_or("default").to_owned()),
    }
}

/// A key as the API shows it (never its text or hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub project: String,
    pub scope: Scope,
    pub name: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// When it was last used, to the minute.
    pub last_used_ms: Option<i64>,
    pub requests_per_second: Option<f64>,
    pub records_per_second: Option<f64>,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> Self {
        KeyView {
            id: k.id.clone(),
            project: k.project.clone(),
            scope: k.scope,
            name: k.name.clone(),
            created_ms: k.created_ms,
            expires_ms: k.expires_ms,
            revoked_ms: k.revoked_ms,
            last_used_ms: k.last_used_ms,
            requests_per_second: k.requests_per_second,
            records_per_second: k.records_per_second,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// The key's project (with a key: its own, the default).
    pub project: Option<String>,
    pub scope: Scope,
    pub name: Option<String>,
    /// Lifetime such as `90d` or `12h`; none for a key that does not expire.
    pub expires: Option<String>,
    pub requests_per_second: Option<f64>,
    pub records_per_second: Option<f64>,
}

fn make_key(access: &Access, request: NewKeyRequest) -> Result<(KeyRecord, String), ApiError> {
    access.create_key(request).map_err(|err| match err {
        CreateError::Invalid(message) => ApiError::bad_request(message),
        CreateError::Store(err) => store_error(err),
    })
}

fn created(record: &KeyRecord, text: String) -> Response {
    let mut view = serde_json::to_value(KeyView::from(record)).expect("keys serialize");
    view["key"] = Value::String(text);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response.extensions_mut().insert(AuditTarget(record.id.clone()));
    response
}

/// `POST /api/v1/admin/keys`
#[utoipa::path(
    post, path = "/api/v1/admin/keys", tag = "admin",
    request_body(content = CreateKeyBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its text in `key` (shown only here)", body = crate::openapi::CreatedKey),
        (status = 400, description = "A field is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key, or another project", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create_key(
    State(access): Shared,
    caller: Caller,
    body: Result<Json<CreateKeyBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let project = project_of(&caller, body.project.as_deref())?;
    let expires_in = body
        .expires
        .as_deref()
        .map(super::parse_lifetime)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("expires: {e}")))?;
    for (name, rate) in [
        ("requests_per_second", body.requests_per_second),
        ("records_per_second", body.records_per_second),
    ] {
        if rate.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
            return Err(ApiError::bad_request(format!(
                "{name}: a number of zero (no limit) or more"
            )));
        }
    }
    let request = NewKeyRequest {
        project,
        scope: body.scope,
        name: body.name,
        expires_in,
        requests_per_second: body.requests_per_second,
        records_per_second: body.records_per_second,
    };
    let (record, text) = blocking(move || make_key(&access, request)).await?;
    Ok(created(&record, text))
}

/// `GET /api/v1/admin/keys`
#[utoipa::path(
    get, path = "/api/v1/admin/keys", tag = "admin",
    params(("project" = Option<String>, Query, description = "The project (with a key: its own)")),
    responses(
        (status = 200, description = "The project's keys, revoked ones included", body = crate::openapi::KeyList),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key, or another project", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list_keys(
    State(access): Shared,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let project = project_of(&caller, params.get("project").map(String::as_str))?;
    let keys: Vec<KeyView> = access.list(Some(&project)).iter().map(KeyView::from).collect();
    Ok(Json(json!({ "project": project, "keys": keys })))
}

/// `DELETE /api/v1/admin/keys/{id}`
#[utoipa::path(
    delete, path = "/api/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key id")),
    responses(
        (status = 204, description = "Revoked: no listener takes it a second from now"),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such key in the project", body = crate::openapi::ErrorBody),
    )
)]
pub async fn revoke_key(
    State(access): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let project = caller.as_ref().map(|Extension(p)| p.project.clone());
    let revoked = {
        let id = id.clone();
        blocking(move || access.revoke(&id, project.as_deref()).map_err(store_error)).await?
    };
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no key {id}")))
    }
}

/// `GET /api/v1/admin/projects`
#[utoipa::path(
    get, path = "/api/v1/admin/projects", tag = "admin",
    responses(
        (status = 200, description = "The projects this caller may see: a key's own; all while auth is off", body = crate::openapi::ProjectList),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list_projects(State(access): Shared, caller: Caller) -> Result<Json<Value>, ApiError> {
    let own = caller.map(|Extension(p)| p.project);
    let projects = blocking(move || access.store().projects().map_err(store_error)).await?;
    let projects: Vec<_> =
        projects.into_iter().filter(|p| own.as_ref().is_none_or(|own| &p.name == own)).collect();
    Ok(Json(json!({ "projects": projects })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectBody {
    pub name: String,
}

/// `POST /api/v1/admin/projects`: a new project and its first admin key.
/// The caller's key does not reach it: the new key does.
#[utoipa::path(
    post, path = "/api/v1/admin/projects", tag = "admin",
    request_body(content = CreateProjectBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new project's first admin key, its text in `key` (shown only here)", body = crate::openapi::CreatedKey),
        (status = 400, description = "The name is invalid", body = crate::openapi::ErrorBody),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key", body = crate::openapi::ErrorBody),
        (status = 409, description = "The project exists", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create_project(
    State(access): Shared,
    body: Result<Json<CreateProjectBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = body.name.trim().to_owned();
    let made = blocking(move || {
        if access.store().project_exists(&name).map_err(store_error)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("project {name:?} exists; its admins make its keys"),
            ));
        }
        make_key(
            &access,
            NewKeyRequest {
                project: name,
                scope: Scope::Admin,
                name: Some("first admin key".into()),
                expires_in: None,
                requests_per_second: None,
                records_per_second: None,
            },
        )
    })
    .await?;
    let mut response = created(&made.0, made.1);
    response.extensions_mut().insert(AuditTarget(made.0.project.clone()));
    Ok(response)
}

/// `GET /api/v1/admin/audit?limit=&before=`
#[utoipa::path(
    get, path = "/api/v1/admin/audit", tag = "admin",
    params(
        ("project" = Option<String>, Query, description = "The project (with a key: its own)"),
        ("limit" = Option<usize>, Query, description = "Entries per page, 1 to 1000 (default 100)"),
        ("before" = Option<i64>, Query, description = "Entries older than this entry id (the previous page's `next_before`)"),
    ),
    responses(
        (status = 200, description = "The project's admin actions, newest first", body = crate::openapi::AuditList),
        (status = 400, description = "A parameter is invalid", body = crate::openapi::ErrorBody),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an admin key, or another project", body = crate::openapi::ErrorBody),
    )
)]
pub async fn audit(
    State(access): Shared,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let project = project_of(&caller, params.get("project").map(String::as_str))?;
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{name}: not an integer: {v:?}")))
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let before = number("before")?;
    let page = {
        let project = project.clone();
        blocking(move || {
            access.store().audit(Some(&project), before, limit as usize).map_err(store_error)
        })
        .await?
    };
    let next_before =
        (page.len() == limit as usize).then(|| page.last().map(|(id, _)| *id)).flatten();
    let entries: Vec<Value> = page
        .into_iter()
        .map(|(id, e)| {
            let mut v = serde_json::to_value(e).expect("entries serialize");
            v["id"] = json!(id);
            v
        })
        .collect();
    Ok(Json(json!({ "project": project, "entries": entries, "next_before": next_before })))
}

/// `GET /api/v1/auth/whoami`: the key a request carries (the dashboard
/// shows it), or that auth is off.
#[utoipa::path(
    get, path = "/api/v1/auth/whoami", tag = "admin",
    responses(
        (status = 200, description = "`auth` (on or off); with a key, its id, project, scope and name", body = crate::openapi::WhoAmI),
        (status = 401, description = "No key, or not a live one", body = crate::openapi::ErrorBody),
    )
)]
pub async fn whoami(State(access): Shared, caller: Caller) -> Json<Value> {
    match caller {
        Some(Extension(p)) => {
            let name = access
                .list(Some(&p.project))
                .into_iter()
                .find(|k| k.id == p.key_id)
                .map(|k| k.name);
            Json(json!({
                "auth": "on",
                "key_id": p.key_id,
                "project": p.project,
                "scope": p.scope,
                "name": name,
            }))
        }
        None => Json(json!({ "auth": "off" })),
    }
}
