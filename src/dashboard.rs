//! Serves the web dashboard embedded at build time (`build.rs` builds `ui/`
//! and lists its files): the router's fallback, so every path no endpoint
//! claims lands here. Client-side routes (`/traces/<id>`) get `index.html`;
//! paths under the API's own prefixes (`/api/`, `/v1/`, `/metrics`,
//! `/healthz`) keep their meaning and answer 404 in the API's error shape.
//!
//! Fingerprinted files (`/assets/NAME-HASH.js`) are cached for good;
//! `index.html` is revalidated on every load, so a new binary's dashboard
//! shows at the next reload. Each compressible file has a gzip copy made at
//! build time, sent to clients that accept gzip.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One file of the built dashboard.
pub struct Asset {
    /// Relative to the dashboard root, without a leading `/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    /// Fingerprinted by the bundler: its content never changes under this name.
    pub immutable: bool,
}

// `BUILT`: the files, or why the build had none.
include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Whether this binary carries the dashboard (else `/` explains how to get it).
pub fn embedded() -> bool {
    BUILT.is_ok()
}

/// Paths that belong to the API and the protocols, never to the dashboard
/// (each with everything under it): an unknown one is a client error, not a
/// page.
const API_PATHS: [&str; 4] = ["/api", "/v1", "/metrics", "/healthz"];

fn is_api_path(path: &str) -> bool {
    API_PATHS
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The policy the dashboard's pages run under: only its own scripts, styles
/// and API; inline style attributes are allowed for the charts' layout.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// The router's fallback.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if is_api_path(path) {
        return ApiError::not_found(format!("no endpoint {method} {path}")).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} {path}: the dashboard answers GET and HEAD only"),
        )
        .into_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let assets = match BUILT {
        Ok(assets) => assets,
        Err(reason) => return without_dashboard(reason),
    };
    let wanted = path.trim_start_matches('/');
    if let Some(asset) = assets.iter().find(|a| a.path == wanted && a.path != "index.html") {
        return serve(asset, &headers, method == Method::HEAD);
    }
    // A missing file (a name with an extension, or anything under /assets/)
    // is a 404: answering the app there would hide a stale reference.
    let last = wanted.rsplit('/').next().unwrap_or("");
    if wanted.starts_with("assets/") || last.contains('.') {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response();
    }
    match assets.iter().find(|a| a.path == "index.html") {
        Some(index) => serve(index, &headers, method == Method::HEAD),
        None => without_dashboard("its build produced no index.html"),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                matches!(p.trim().replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000")
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn serve(asset: &Asset, headers: &HeaderMap, head: bool) -> Response {
    let (body, gzip) = match asset.gzip {
        Some(packed) if accepts_gzip(headers) => (packed, true),
        _ => (asset.body, false),
    };
    let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::CACHE_CONTROL, cache)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if asset.gzip.is_some() {
        builder = builder.header(header::VARY, "accept-encoding");
    }
    if gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
    }
    if asset.content_type.starts_with("text/html") {
        builder = builder
            .header(header::CONTENT_SECURITY_POLICY, CSP)
            .header(header::REFERRER_POLICY, "no-referrer");
    }
    let body = if head { Body::empty() } else { Body::from(body) };
    builder.body(body).expect("valid static response")
}

/// The page a binary built without the dashboard serves instead.
fn without_dashboard(reason: &str) -> Response {
    let reason = reason.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tally</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}code{{background:#8882;padding:0 .2em}}@media(prefers-color-scheme:dark){{body{{background:#111;color:#eee}}}}</style>
</head><body>
<h1>Tally is running</h1>
<p>This <code>tally</code> binary was built without its web dashboard: {reason}.</p>
<p>To get the dashboard, install Node.js 20 or newer (with npm) and build Tally again from its source
(<code>cargo build --release</code>): the build runs <code>npm ci</code> and <code>npm run build</code> in <code>ui/</code>
and embeds the result.</p>
<p>Everything the dashboard shows is also in the HTTP API, described at
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>, and on the command line (<code>tally usage</code>, <code>tally budgets</code>).</p>
</body></html>
"#
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept).expect("valid"));
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("br, deflate")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("gzip; q=0.000")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    async fn get(path: &str) -> Response {
        fallback(Method::GET, path.parse().expect("valid uri"), HeaderMap::new()).await
    }

    #[tokio::test]
    async fn a_binary_without_the_dashboard_says_how_to_get_it() {
        let response = without_dashboard("npm was not found <here>");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let page = String::from_utf8(body.to_vec()).expect("UTF-8");
        assert!(page.contains("built without its web dashboard: npm was not found &lt;here&gt;."));
        assert!(page.contains("install Node.js 20 or newer"));
        assert!(page.contains("/api/v1/openapi.json"));
    }

    #[tokio::test]
    async fn api_prefixes_answer_404_in_the_error_shape() {
        for path in ["/api/v1/nope", "/api", "/api/", "/v1/nope", "/metrics/x", "/healthz/x"] {
            let response = get(path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json", "{path}");
        }
    }

    #[tokio::test]
    async fn other_methods_are_refused_outside_the_api() {
        let response =
            fallback(Method::POST, "/traces".parse().expect("uri"), HeaderMap::new()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn client_routes_get_the_app_and_missing_files_a_404() {
        let root = get("/").await;
        assert_eq!(root.status(), StatusCode::OK);
        assert_eq!(root.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(root.headers()[header::CACHE_CONTROL], "no-cache");
        // Pages whose names only begin like an API path are pages.
        for page in ["/metrics-charts", "/apis", "/v1x"] {
            assert_eq!(get(page).await.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        }
        let deep = get("/traces/5b8efff798038103d269b633813fc60c").await;
        assert_eq!(deep.status(), StatusCode::OK);
        assert_eq!(deep.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        if embedded() {
            assert_eq!(get("/assets/gone-1234.js").await.status(), StatusCode::NOT_FOUND);
            assert_eq!(get("/favicon-gone.png").await.status(), StatusCode::NOT_FOUND);
        }
    }

    #[tokio::test]
    async fn fingerprinted_assets_are_immutable_and_gzipped() {
        let Ok(assets) = BUILT else { return };
        let script = assets
            .iter()
            .find(|a| a.path.starts_with("assets/") && a.path.ends_with(".js"))
            .expect("the build has a script under assets/");
        let plain = get(&format!("/{}", script.path)).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(plain.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let packed = fallback(
            Method::GET,
            format!("/{}", script.path).parse().expect("uri"),
            headers("gzip"),
        )
        .await;
        assert_eq!(packed.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(packed.headers()[header::VARY], "accept-encoding");
    }
}
