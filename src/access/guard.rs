//! The guard every request passes (both listeners): which scope a route
//! needs, the key the request carries (Bearer, Langfuse's Basic pair,
//! Phoenix's `api_key`), the project it may name, its rate, and the audit
//! entry of an admin action that succeeded.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::{Access, AuditEntry, Denied, Principal, Scope};
use crate::error::ApiError;

/// What a route asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: `/healthz` and the dashboard's own files (no data in them).
    Nothing,
    /// A key of any scope.
    AnyKey,
    Scope(Scope),
}

/// What `method path` needs; everything on the gRPC listener is ingest.
pub fn need(method: &Method, path: &str, grpc: bool) -> Need {
    if grpc {
        return Need::Scope(Scope::Ingest);
    }
    let read_only = method == Method::GET || method == Method::HEAD;
    if path == "/healthz" {
        Need::Nothing
    } else if path == "/api/v1/auth/whoami" || path == "/api/v1/openapi.json" {
        Need::AnyKey
    } else if path.starts_with("/api/v1/admin/")
        || path == "/api/v1/usage/reprice"
        || (path.starts_with("/api/v1/budgets") && !read_only)
    {
        Need::Scope(Scope::Admin)
    } else if (!read_only
        && matches!(
            path,
            "/api/v1/usage" | "/api/v1/points" | "/api/v1/quota/reserve" | "/api/v1/quota/settle"
        ))
        || path.starts_with("/v1/")
        || path.starts_with("/api/public/")
    {
        Need::Scope(Scope::Ingest)
    } else if path.starts_with("/api/") || path == "/metrics" {
        Need::Scope(Scope::Read)
    } else {
        Need::Nothing
    }
}

/// The key a request carries, however its client sends one.
fn credential(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::trim);
    if let Some(auth) = text(header::AUTHORIZATION.as_str()) {
        let (kind, value) = auth.split_once(' ').unwrap_or((auth, ""));
        if kind.eq_ignore_ascii_case("bearer") {
            return Some(value.trim().to_owned());
        }
        if kind.eq_ignore_ascii_case("basic") {
            // Langfuse: public_key:secret_key; the secret is the key (or
            // either, when only one looks like a Tally key).
            let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
            let pair = String::from_utf8(decoded).ok()?;
            let (user, secret) = pair.split_once(':').unwrap_or((&pair, ""));
            let chosen = if super::key::looks_like_key(user) && !super::key::looks_like_key(secret)
            {
                user
            } else {
                secret
            };
            return Some(chosen.trim().to_owned());
        }
    }
    text("api_key").or_else(|| text("x-api-key")).map(str::to_owned)
}

/// The project the Langfuse public key names, when it is not itself a key.
fn langfuse_project(headers: &HeaderMap) -> Option<String> {
    if let Some(public) = headers.get("x-langfuse-public-key").and_then(|v| v.to_str().ok()) {
        let public = public.trim();
        return (!public.is_empty() && !super::key::looks_like_key(public))
            .then(|| public.to_owned());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = auth.trim().strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let user = pair.split(':').next()?.trim();
    (!user.is_empty() && !super::key::looks_like_key(user)).then(|| user.to_owned())
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// A denial as the client's protocol says it.
fn denial(denied: Denied, grpc: bool) -> Response {
    let (status, code, message, retry) = match denied {
        Denied::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m, None),
        Denied::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, None),
        Denied::Limited { message, retry_after_s } => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, Some(retry_after_s))
        }
    };
    if grpc {
        let status = match status {
            StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(message),
            StatusCode::FORBIDDEN => tonic::Status::permission_denied(message),
            _ => tonic::Status::resource_exhausted(message),
        };
        return status.into_http();
    }
    let mut err = ApiError::new(status, code, message);
    err.retry_after_s = retry;
    let mut response = err.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tally\""));
    }
    response
}

/// Checks the `project` of the query string against the key's; when none
/// is named, the key's is added.
fn scope_query(request: &mut Request, principal: &Principal) -> Result<(), Denied> {
    let query = request.uri().query().unwrap_or("");
    let mut named = false;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "project" {
            named = true;
            if value != principal.project {
                return Err(Denied::Forbidden(format!(
                    "key {} belongs to project {:?}; it cannot reach project {value:?}",
                    principal.key_id, principal.project
                )));
            }
        }
    }
    if !named {
        let mut with = form_urlencoded::Serializer::new(query.to_owned());
        with.append_pair("project", &principal.project);
        let path_and_query = format!("{}?{}", request.uri().path(), with.finish());
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    Ok(())
}

/// The admin action a successful request was, for the audit log.
fn action(method: &Method, path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/")?;
    let (what, target) = match rest.split_once('/') {
        Some((what, target)) => (what, target),
        None => (rest, ""),
    };
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "replace",
        Method::DELETE => "delete",
        _ => return None,
    };
    Some(match (what, target) {
        ("admin", "flush") => ("flush".into(), String::new()),
        ("admin", target) => {
            let (kind, id) = target.split_once('/').unwrap_or((target, ""));
            let verb = if kind == "keys" && verb == "delete" { "revoke" } else { verb };
            (format!("{kind}.{verb}"), id.to_owned())
        }
        ("usage", "reprice") => ("usage.reprice".into(), String::new()),
        ("budgets", id) => (format!("budgets.{verb}"), id.to_owned()),
        _ => return None,
    })
}

/// What an admin handler tells the audit log it acted on (e.g. the id it
/// made), as a response extension.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The client's address, as the listener saw it (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

pub async fn guard(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let grpc = is_grpc(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let need = need(&method, &path, grpc);
    if need == Need::Nothing {
        return next.run(request).await;
    }
    let principal = if access.enabled() {
        match admit(&access, &mut request, need) {
            Ok(principal) => Some(principal),
            Err(denied) => return denial(denied, grpc),
        }
    } else {
        None
    };
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0.to_string());
    let project_named = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "project")
        .map(|(_, v)| v.into_owned());
    let audited = need == Need::Scope(Scope::Admin);
    let mut response = next.run(request).await;
    if audited
        && response.status().is_success()
        && let Some((action, path_target)) = action(&method, &path)
    {
        let target = response.extensions_mut().remove::<AuditTarget>().map_or(path_target, |t| t.0);
        let project = principal
            .as_ref()
            .map(|p| p.project.clone())
            .or(project_named)
            .unwrap_or_else(|| "default".into());
        let entry = AuditEntry {
            time_ms: crate::time::now_ms(),
            key_id: principal.map(|p| p.key_id),
            project,
            action,
            target,
            client,
        };
        let access = access.clone();
        let _ = tokio::task::spawn_blocking(move || access.audit(entry)).await;
    }
    response
}

/// The principal of a request that may go on, or why it may not.
fn admit(access: &Access, request: &mut Request, need: Need) -> Result<Principal, Denied> {
    let Some(text) = credential(request.headers()) else {
        return Err(Denied::Unauthenticated(
            "this server needs an API key: send Authorization: Bearer <key> (OTLP: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>; Langfuse: the key as LANGFUSE_SECRET_KEY)".into(),
        ));
    };
    let principal = access.authenticate(&text)?;
    if let Need::Scope(needed) = need
        && !principal.scope.allows(needed)
    {
        return Err(Denied::Forbidden(format!(
            "this needs a key of scope {} (or admin); key {} has scope {}",
            needed.as_str(),
            principal.key_id,
            principal.scope.as_str()
        )));
    }
    if let Some(named) = langfuse_project(request.headers())
        && named != principal.project
    {
        return Err(Denied::Forbidden(format!(
            "the Langfuse public key names project {named:?}, but key {} belongs to project {:?}: set LANGFUSE_PUBLIC_KEY={:?}",
            principal.key_id, principal.project, principal.project
        )));
    }
    // Ingest names its project in records, checked against the key's there.
    if need != Need::Scope(Scope::Ingest) {
        scope_query(request, &principal)?;
    }
    access.admit(&principal, 0)?;
    request.extensions_mut().insert(principal.clone());
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        let get = Method::GET;
        let post = Method::POST;
        let cases = [
            (&get, "/healthz", Need::Nothing),
            (&get, "/", Need::Nothing),
            (&get, "/traces/abc", Need::Nothing),
            (&get, "/assets/index.js", Need::Nothing),
            (&get, "/api/v1/usage/summary", Need::Scope(Scope::Read)),
            (&get, "/metrics", Need::Scope(Scope::Read)),
            (&get, "/api/v1/budgets", Need::Scope(Scope::Read)),
            (&post, "/api/v1/budgets", Need::Scope(Scope::Admin)),
            (&Method::DELETE, "/api/v1/budgets/x", Need::Scope(Scope::Admin)),
            (&post, "/api/v1/usage", Need::Scope(Scope::Ingest)),
            (&post, "/v1/traces", Need::Scope(Scope::Ingest)),
            (&post, "/api/public/otel/v1/traces", Need::Scope(Scope::Ingest)),
            (&post, "/api/v1/quota/reserve", Need::Scope(Scope::Ingest)),
            (&post, "/api/v1/usage/reprice", Need::Scope(Scope::Admin)),
            (&get, "/api/v1/admin/keys", Need::Scope(Scope::Admin)),
            (&get, "/api/v1/auth/whoami", Need::AnyKey),
            (&get, "/api/v1/nonexistent", Need::Scope(Scope::Read)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(need(method, path, false), expected, "{method} {path}");
        }
        assert_eq!(need(&post, "/anything", true), Need::Scope(Scope::Ingest));
    }

    #[test]
    fn credentials_from_each_client() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tally_read_x"));
        assert_eq!(credential(&h).as_deref(), Some("tally_read_x"));
        let basic = base64::engine::general_purpose::STANDARD.encode("team-a:tally_ingest_y");
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
        assert_eq!(credential(&h).as_deref(), Some("tally_ingest_y"));
        assert_eq!(langfuse_project(&h).as_deref(), Some("team-a"));
        let mut h = HeaderMap::new();
        h.insert("api_key", HeaderValue::from_static("tally_read_z"));
        assert_eq!(credential(&h).as_deref(), Some("tally_read_z"));
        assert_eq!(credential(&HeaderMap::new()), None);
    }

    #[test]
    fn admin_actions_are_named() {
        assert_eq!(
            action(&Method::DELETE, "/api/v1/admin/keys/abc"),
            Some(("keys.revoke".into(), "abc".into()))
        );
        assert_eq!(
            action(&Method::POST, "/api/v1/budgets"),
            Some(("budgets.create".into(), "".into()))
        );
        assert_eq!(action(&Method::POST, "/api/v1/admin/flush"), Some(("flush".into(), "".into())));
        assert_eq!(action(&Method::GET, "/api/v1/budgets"), None);
    }
}
