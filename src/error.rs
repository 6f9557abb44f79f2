//! The one error shape every HTTP endpoint answers with:
//! `{"error": {"code": "...", "message": "..."}}`, plus `Retry-After` when the
//! client should come back later.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::durability::CommitError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_s: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 429 with Retry-After: the client should send the same request later.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "overloaded",
            message: message.into(),
            retry_after_s: Some(1),
        }
    }

    /// 503 with Retry-After: a store the answer needs did not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            retry_after_s: Some(5),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A server-side failure: logged here once, not leaked to the client.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        error!(%err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; see server log"),
        )
    }
}

impl From<CommitError> for ApiError {
    fn from(err: CommitError) -> Self {
        match err {
            CommitError::Overloaded { .. } => ApiError::overloaded(err.to_string()),
            CommitError::Backlog { retry_after_s, .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "backlog",
                message: err.to_string(),
                retry_after_s: Some(retry_after_s),
            },
            CommitError::Pending { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "pending",
                message: err.to_string(),
                retry_after_s: Some(1),
            },
            CommitError::Store(_) | CommitError::Stopped => {
                error!(%err, "commit failed");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the store could not commit this batch; nothing in it was acknowledged, retry later".into(),
                    retry_after_s: Some(5),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A path parameter (`/api/v1/budgets/{id}`) whose rejection — a segment
/// that is not UTF-8 once percent-decoded — answers in the error shape
/// above rather than as axum's plain text.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(PathParam(value))
    }
}
