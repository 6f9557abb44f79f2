//! `POST /api/v1/points`: tagged metric points, as a JSON array, an object
//! `{"records": [...]}`, a single object or NDJSON; the same acceptance and
//! rejection contract as usage reports.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::body;
use super::usage::{Rejection, UsageIngest};
use crate::durability::Records;
use crate::error::ApiError;
use crate::model::MetricPoint;
use crate::normalize::point::{PointKeys, normalize_point, validate_point};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PointsResponse {
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
}

/// Parses and validates a points batch body (any form `body::each_record`
/// reads) as of `now_ms`, refusing points older than `oldest_ms`: the
/// points and the records rejected. An error only when the body as a whole
/// is not a batch.
pub fn points_batch(
    bytes: &[u8],
    ndjson: bool,
    now_ms: i64,
    oldest_ms: i64,
    default_project: &str,
) -> Result<(Vec<MetricPoint>, Vec<Rejection>), ApiError> {
    let mut keys = PointKeys::with_default_project(default_project);
    let mut points = Vec::with_capacity(body::max_records(bytes));
    let mut rejected = Vec::new();
    body::each_record(bytes, ndjson, |index, record| {
        let point = match record {
            body::Record::Parsed(raw) => validate_point(raw, now_ms, oldest_ms, &mut keys),
            body::Record::Text(json) => normalize_point(json, now_ms, oldest_ms, &mut keys),
        };
        match point {
            Ok(point) => points.push(point),
            Err(err) => rejected.push(Rejection { index, error: err.to_string() }),
        }
    })?;
    Ok((points, rejected))
}

/// Decompresses and parses a body of metric points (`points_batch`) as of
/// now: the points and those refused.
fn parse_points(
    ingest: &UsageIngest,
    headers: &HeaderMap,
    raw: &axum::body::Bytes,
    default_project: &str,
) -> Result<(Vec<MetricPoint>, Vec<Rejection>), ApiError> {
    let bytes = body::inflate(headers, raw, ingest.max_body_bytes)?;
    let now = crate::time::now_ms();
    let oldest = ingest.metric_horizon_ms.map_or(i64::MIN, |keep| now - keep);
    points_batch(&bytes, body::is_ndjson(headers), now, oldest, default_project)
}

#[utoipa::path(
    post, path = "/api/v1/points", tag = "ingest",
    request_body(description = "Metric points: a JSON array, `{\"records\": [...]}`, one point, or NDJSON; `Content-Encoding: gzip` accepted", content((crate::openapi::PointsBody = "application/json"), ("application/x-ndjson"))),
    responses(
        (status = 200, description = "Durable: some points were accepted; the rest are listed in `rejected`", body = PointsResponse),
        (status = 400, description = "Every point was rejected (the answer lists them), or the body is not JSON (an error)", body = crate::openapi::PointsRefused),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_points(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<axum::Extension<crate::access::Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Result<(StatusCode, Json<PointsResponse>), ApiError> {
    let principal = principal.map(|axum::Extension(p)| p);
    let received = body::read(&headers, request, ingest.max_body_bytes, &ingest.receiving).await?;
    let Ok(_permit) = ingest.in_flight.try_acquire() else {
        return Err(ApiError::overloaded("too many ingest requests in flight; retry later"));
    };
    let lane = ingest.lanes.lane();
    let parse = {
        let ingest = ingest.clone();
        move || {
            let project = principal.as_ref().map_or("", |p| p.project.as_str());
            let (points, rejected) = parse_points(&ingest, &headers, &received.bytes, project)?;
            let accepted = points.len();
            let points = Records { points, ..Records::default() };
            ingest.access.bind_records(principal.as_ref(), &points)?;
            let prepared = ingest.committer.prepare(points);
            Ok((prepared, accepted, rejected))
        }
    };
    let (prepared, accepted, rejected) = lane.run(parse).await?;
    let (_, made) = ingest.committer.commit_prepared(prepared).await?;
    lane.free(made);
    ingest.metrics.ingested("points", accepted as u64, 0, rejected.len() as u64);
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PointsResponse { accepted, rejected })))
}
