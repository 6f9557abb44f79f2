//! OTLP over HTTP: `POST /v1/traces`, `/v1/logs` and the Langfuse path
//! `/api/public/otel/v1/traces`, in protobuf or JSON by Content-Type, with
//! the answer (or the error, as a `google.rpc.Status`) in the same encoding.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::otlp::{self, Failure, Problems, Signal};
use super::{UsageIngest, body};
use crate::access::Principal;
use crate::durability::Records;
use crate::error::ApiError;
use crate::normalize::otlp_metric::Staged;

/// The two encodings OTLP/HTTP speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {other:?} is not supported (use application/x-protobuf or application/json)"
                ),
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP error response.
#[derive(Clone, PartialEq, Message, Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The gRPC code that goes with an HTTP error status.
fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        404 => 5,             // NOT_FOUND
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// An error as OTLP/HTTP wants it: a `Status` in the request's encoding
/// (JSON also carries Tally's usual `error` object), and Retry-After when
/// the client should come back.
fn error_response(err: ApiError, encoding: Encoding) -> Response {
    let status = RpcStatus { code: grpc_code(err.status), message: err.message.clone() };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": status.code,
            "message": status.message,
            "error": {"code": err.code, "message": err.message},
        }))
        .expect("JSON values serialize"),
    };
    let mut response = (err.status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    if let Some(seconds) = err.retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn ok_response<M: Message + Serialize>(message: &M, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => {
            // An absent partial success is left out, not sent as null.
            let mut value = serde_json::to_value(message).expect("responses serialize");
            if let Some(object) = value.as_object_mut() {
                object.retain(|_, v| !v.is_null());
            }
            serde_json::to_vec(&value).expect("JSON values serialize")
        }
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

/// snake_case keys that OTLP/JSON spells in lowerCamelCase; a decoder that
/// ignores unknown fields would read a body using them as empty.
const SNAKE_CASE_KEYS: [&str; 9] = [
    "\"resource_metrics\"",
    "\"scope_metrics\"",
    "\"resource_spans\"",
    "\"scope_spans\"",
    "\"resource_logs\"",
    "\"scope_logs\"",
    "\"log_records\"",
    "\"trace_id\"",
    "\"span_id\"",
];

/// Decodes an export request (`what` names its message in errors).
pub fn decode<M: Message + Default + DeserializeOwned>(
    bytes: &[u8],
    encoding: Encoding,
    what: &str,
) -> Result<M, ApiError> {
    match encoding {
        Encoding::Protobuf => M::decode(bytes).map_err(|e| {
            ApiError::bad_request(format!("body is not a valid protobuf {what}: {e}"))
        }),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("body is not a valid OTLP/JSON {what}: {e}"))
        }),
    }
}

/// Refuses a JSON body that decoded to nothing (`items` spans, log records
/// or metrics) because its keys are snake_case (OTLP/JSON keys are
/// lowerCamelCase: `resourceSpans`).
pub fn check_not_snake_case(
    bytes: &[u8],
    items: usize,
    encoding: Encoding,
) -> Result<(), ApiError> {
    if encoding != Encoding::Json || items > 0 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(bytes);
    match SNAKE_CASE_KEYS.iter().find(|key| text.contains(*key)) {
        Some(key) => Err(ApiError::bad_request(format!(
            "body uses the snake_case key {key}; OTLP/JSON keys are lowerCamelCase \
             (resourceSpans, scopeSpans, traceId, …)"
        ))),
        None => Ok(()),
    }
}

fn hint(headers: &HeaderMap, principal: Option<&Principal>) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    otlp::default_project(principal, text("x-langfuse-public-key"), text("authorization"))
}

/// One export: read, decode, normalize, commit, answer.
async fn export<S: Signal + Send + 'static>(
    ingest: &Arc<UsageIngest>,
    principal: Option<Principal>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let encoding = match Encoding::of(&headers) {
        Ok(encoding) => encoding,
        Err(err) => return error_response(err, Encoding::Json),
    };
    let received =
        match body::read(&headers, request, ingest.max_body_bytes, &ingest.receiving).await {
            Ok(received) => received,
            Err(err) => return error_response(err, encoding),
        };
    let Ok(_permit) = ingest.in_flight.try_acquire() else {
        let err = ApiError::overloaded("too many ingest requests in flight; retry later");
        return error_response(err, encoding);
    };
    let hint = hint(&headers, principal.as_ref());
    let normalize =
        move |ingest: &UsageIngest| normalize::<S>(ingest, &headers, received, encoding, hint);
    let committed = otlp::normalize_and_commit(ingest, S::HTTP_ENDPOINT, principal, normalize);
    let problems = match committed.await {
        Ok(problems) => problems,
        Err(Failure::Request(err)) => return error_response(err, encoding),
        Err(Failure::Commit(err)) => return error_response(err.into(), encoding),
    };
    ok_response(&S::response(problems.partial()), encoding)
}

/// `POST /v1/traces`
#[utoipa::path(
    post, path = "/v1/traces", tag = "ingest",
    request_body(description = "An OTLP Export…ServiceRequest, protobuf or OTLP/JSON; `Content-Encoding: gzip` accepted", content(("application/x-protobuf"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Durable. An empty Export…ServiceResponse, or a partial success naming each rejected span", content(("application/x-protobuf"), (Object = "application/json"))),
        (status = 400, description = "The body does not decode", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 408, description = "The body did not arrive within server.body_read_timeout (answered by the listener, always as JSON)", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over ingest.max_body_bytes (also after decompression)", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 415, description = "Content-Type is neither application/x-protobuf nor application/json, or the Content-Encoding is unsupported", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 429, description = "Overloaded", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_traces(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    export::<ExportTraceServiceRequest>(&ingest, principal, headers, request).await
}

/// `POST /api/public/otel/v1/traces`: the Langfuse SDK's path for traces.
#[utoipa::path(
    post, path = "/api/public/otel/v1/traces", tag = "ingest",
    request_body(description = "An OTLP Export…ServiceRequest, protobuf or OTLP/JSON; `Content-Encoding: gzip` accepted", content(("application/x-protobuf"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Durable. An empty Export…ServiceResponse, or a partial success naming each rejected span", content(("application/x-protobuf"), (Object = "application/json"))),
        (status = 400, description = "The body does not decode", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 408, description = "The body did not arrive within server.body_read_timeout (answered by the listener, always as JSON)", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over ingest.max_body_bytes (also after decompression)", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 415, description = "Content-Type is neither application/x-protobuf nor application/json, or the Content-Encoding is unsupported", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 429, description = "Overloaded", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_langfuse_traces(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    export::<ExportTraceServiceRequest>(&ingest, principal, headers, request).await
}

/// `POST /v1/logs`
#[utoipa::path(
    post, path = "/v1/logs", tag = "ingest",
    request_body(description = "An OTLP Export…ServiceRequest, protobuf or OTLP/JSON; `Content-Encoding: gzip` accepted", content(("application/x-protobuf"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Durable. An empty Export…ServiceResponse, or a partial success naming each rejected log record", content(("application/x-protobuf"), (Object = "application/json"))),
        (status = 400, description = "The body does not decode", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 408, description = "The body did not arrive within server.body_read_timeout (answered by the listener, always as JSON)", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over ingest.max_body_bytes (also after decompression)", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 415, description = "Content-Type is neither application/x-protobuf nor application/json, or the Content-Encoding is unsupported", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 429, description = "Overloaded", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_logs(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    export::<ExportLogsServiceRequest>(&ingest, principal, headers, request).await
}

/// `POST /v1/metrics`
#[utoipa::path(
    post, path = "/v1/metrics", tag = "ingest",
    request_body(description = "An OTLP Export…ServiceRequest, protobuf or OTLP/JSON; `Content-Encoding: gzip` accepted", content(("application/x-protobuf"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Durable. An empty Export…ServiceResponse, or a partial success naming each rejected data point", content(("application/x-protobuf"), (Object = "application/json"))),
        (status = 400, description = "The body does not decode", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 408, description = "The body did not arrive within server.body_read_timeout (answered by the listener, always as JSON)", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over ingest.max_body_bytes (also after decompression)", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 415, description = "Content-Type is neither application/x-protobuf nor application/json, or the Content-Encoding is unsupported", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json"))),
        (status = 429, description = "Overloaded", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit", content(("application/x-protobuf"), (crate::openapi::OtlpJsonError = "application/json")), headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_metrics(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    export::<ExportMetricsServiceRequest>(&ingest, principal, headers, request).await
}

/// Decompresses, decodes and normalizes one export.
fn normalize<S: Signal>(
    ingest: &UsageIngest,
    headers: &HeaderMap,
    received: body::Received,
    encoding: Encoding,
    hint: Option<String>,
) -> Result<(Records, Problems, Option<Staged>), ApiError> {
    let bytes = body::inflate(headers, &received.bytes, ingest.max_body_bytes)?;
    drop(received);
    if encoding == Encoding::Protobuf {
        return S::protobuf_records(&bytes, ingest, hint.as_deref()).map_err(|e| {
            ApiError::bad_request(format!("body is not a valid protobuf {}: {e}", S::NAME))
        });
    }
    let mut message: S = decode(&bytes, encoding, S::NAME)?;
    check_not_snake_case(&bytes, message.items(), encoding)?;
    drop(bytes);
    Ok(message.records(ingest, hint.as_deref()))
}
