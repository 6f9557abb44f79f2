//! `POST /api/v1/usage`: usage reports from gateways.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;

use super::body;
use crate::access::Principal;
use crate::durability::{Committer, Outcome, Records};
use crate::error::ApiError;
use crate::model::LlmCall;
use crate::normalize::usage_report::{NormalizeContext, normalize_report};
use crate::normalize::{AccountingRules, KeyFingerprinter, normalize_json};
use crate::pricing::PriceTable;

/// What the usage endpoint needs.
pub struct UsageIngest {
    pub committer: Committer,
    pub prices: Arc<PriceTable>,
    pub fingerprinter: Arc<KeyFingerprinter>,
    pub rules: AccountingRules,
    pub max_body_bytes: usize,
    /// Raw retention, which bounds how far back re-pricing can reach.
    pub raw_retention_ms: Option<i64>,
    /// Requests being parsed and committed, taken once a body has arrived
    /// in full so that a slow upload never holds one; bounds the memory that
    /// parsed bodies take (each up to `max_body_bytes`). Bodies still
    /// arriving are bounded by the listener's connection cap and body read
    /// timeout instead.
    pub in_flight: tokio::sync::Semaphore,
    /// Bytes of request bodies being received and processed, a permit per
    /// byte taken as it arrives (`ingest.max_receiving_bytes`).
    pub receiving: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<crate::exposition::Metrics>,
    /// How far back metric points are kept (the coarsest tier's retention).
    pub metric_horizon_ms: Option<i64>,
    /// The last sample of each cumulative OTLP metric series.
    pub cumulative: std::sync::Mutex<crate::normalize::otlp_metric::CumulativeState>,
    /// Where OTLP exports are decoded, normalized and freed.
    pub lanes: crate::blocking::Lanes,
    /// Keys: the project and rate of each request's records.
    pub access: Arc<crate::access::Access>,
    /// What of spans' and logs' content is stored (`[privacy]`).
    pub privacy: crate::normalize::privacy::Privacy,
}

impl UsageIngest {
    /// What normalizing a record needs, as of now.
    pub fn context(&self) -> NormalizeContext<'_> {
        NormalizeContext {
            now_ms: crate::time::now_ms(),
            rules: self.rules,
            prices: &self.prices,
            fingerprinter: &self.fingerprinter,
            default_project: "default",
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    pub index: usize,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejection>,
}

/// A usage batch body read into calls, and the records rejected.
#[derive(Debug)]
pub struct UsageBatch {
    pub calls: Vec<LlmCall>,
    pub rejected: Vec<Rejection>,
    /// Records in the body, accepted or not.
    pub records: usize,
}

/// Parses and normalizes a usage batch body (any form `body::each_record`
/// reads); an error only when the body as a whole is not a batch.
pub fn usage_batch(
    bytes: &[u8],
    ndjson: bool,
    context: &NormalizeContext<'_>,
) -> Result<UsageBatch, ApiError> {
    let mut calls = Vec::with_capacity(body::max_records(bytes));
    let mut rejected = Vec::new();
    let records = body::each_record(bytes, ndjson, |index, record| {
        let call = match record {
            body::Record::Parsed(raw) => normalize_report(raw, context),
            body::Record::Text(json) => normalize_json(json, context),
        };
        match call {
            Ok(call) => calls.push(call),
            Err(err) => rejected.push(Rejection { index, error: err.to_string() }),
        }
    })?;
    Ok(UsageBatch { calls, rejected, records })
}

#[utoipa::path(
    post, path = "/api/v1/usage", tag = "ingest",
    request_body(description = "Usage reports: a JSON array, `{\"records\": [...]}`, one report, or NDJSON (one report per line); `Content-Encoding: gzip` accepted", content((crate::openapi::UsageBody = "application/json"), ("application/x-ndjson"))),
    responses(
        (status = 200, description = "Durable: some reports were accepted or were duplicates; the rest are listed in `rejected`", body = UsageResponse),
        (status = 400, description = "Every report was rejected (the answer lists them), or the body is not JSON (an error)", body = crate::openapi::UsageRefused),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_usage(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: Body,
) -> Result<(StatusCode, Json<UsageResponse>), ApiError> {
    let principal = principal.map(|Extension(p)| p);
    let received = body::read(&headers, request, ingest.max_body_bytes, &ingest.receiving).await?;
    let Ok(_permit) = ingest.in_flight.try_acquire() else {
        return Err(ApiError::overloaded("too many ingest requests in flight; retry later"));
    };
    // Parsed and prepared on a lane, and freed there after the commit.
    let lane = ingest.lanes.lane();
    let parse = {
        let ingest = ingest.clone();
        move || {
            let UsageBatch { calls, rejected, records } =
                parse_reports(&ingest, &headers, &received.bytes, principal.as_ref())?;
            let calls = Records { calls, ..Records::default() };
            ingest.access.bind_records(principal.as_ref(), &calls)?;
            let prepared = ingest.committer.prepare(calls);
            Ok((prepared, rejected, records))
        }
    };
    let (prepared, rejected, count) = lane.run(parse).await?;
    let parsed = std::time::Instant::now();
    let (outcomes, made) = ingest.committer.commit_prepared(prepared).await?;
    lane.free(made);
    tracing::debug!(
        records = count,
        commit_ms = parsed.elapsed().as_millis() as u64,
        "usage batch"
    );
    let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    let response = UsageResponse { accepted, duplicates: outcomes.len() - accepted, rejected };
    ingest.metrics.ingested(
        "usage",
        response.accepted as u64,
        response.duplicates as u64,
        response.rejected.len() as u64,
    );
    let status = if outcomes.is_empty() && !response.rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}

/// Decompresses a body of usage reports and reads it (`usage_batch`) as of
/// now.
fn parse_reports(
    ingest: &UsageIngest,
    headers: &HeaderMap,
    raw: &axum::body::Bytes,
    principal: Option<&Principal>,
) -> Result<UsageBatch, ApiError> {
    let bytes = body::inflate(headers, raw, ingest.max_body_bytes)?;
    let mut context = ingest.context();
    if let Some(principal) = principal {
        context.default_project = &principal.project;
    }
    usage_batch(&bytes, body::is_ndjson(headers), &context)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepriceRequest {
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

fn instant_field(name: &str, value: &serde_json::Value) -> Result<i64, ApiError> {
    let parsed = match value {
        serde_json::Value::Number(n) => {
            n.as_i64().ok_or_else(|| format!("{n} is not unix milliseconds"))
        }
        serde_json::Value::String(s) => crate::time::parse_instant(s),
        other => Err(format!("expected unix milliseconds or RFC 3339, got {other}")),
    };
    parsed.map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

/// `POST /api/v1/admin/flush`: write the open rollup buckets to the store
/// now (benchmarks and tests use it to reach a settled store).
#[utoipa::path(
    post, path = "/api/v1/admin/flush", tag = "admin",
    responses(
        (status = 200, description = "The open rollup buckets are written to the store", body = crate::openapi::Flushed),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_flush(
    State(ingest): State<Arc<UsageIngest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    ingest.committer.flush().await?;
    Ok(Json(serde_json::json!({"flushed": true})))
}

/// `POST /api/v1/usage/reprice` `{"from": ..., "to": ...}`: recompute stored
/// costs in the window with the server's current prices, and the rollups.
#[utoipa::path(
    post, path = "/api/v1/usage/reprice", tag = "usage",
    request_body(content = crate::openapi::RepriceBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What changed", body = crate::durability::RepriceReport),
        (status = 400, description = "A parameter or the body is invalid; the message names it", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within server.body_read_timeout", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over its limit (ingest.max_body_bytes for ingest, 1 MiB for budgets), also after decompression", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 429, description = "Overloaded: too many records queued, requests parsed or bytes received at once", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
        (status = 503, description = "The store could not commit; nothing was acknowledged", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before sending the same request again"))),
    )
)]
pub async fn post_reprice(
    State(ingest): State<Arc<UsageIngest>>,
    principal: Option<Extension<Principal>>,
    request: Result<Json<RepriceRequest>, JsonRejection>,
) -> Result<Json<crate::durability::RepriceReport>, ApiError> {
    // axum's own rejection is plain text; every answer here is the API's
    // error shape.
    let Json(request) = request.map_err(|rejection| match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ),
        other => ApiError::bad_request(other.body_text()),
    })?;
    let from = instant_field("from", &request.from)?;
    let to = instant_field("to", &request.to)?;
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    if let Some(raw_ms) = ingest.raw_retention_ms {
        let oldest = crate::aggregate::Tier::Day.bucket(crate::time::now_ms() - raw_ms)
            + crate::aggregate::Tier::Day.width_ms();
        if from < oldest {
            return Err(ApiError::bad_request(format!(
                "from: raw calls are kept for the raw retention only; re-pricing can start at {} at the earliest",
                crate::time::format_instant(oldest)
            )));
        }
    }
    // A key re-prices its own project's calls; with auth off, every call.
    let project = principal.map(|Extension(p)| p.project);
    let report = ingest.committer.reprice(from, to, project, ingest.prices.clone()).await?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_third_report_is_rejected_by_index_and_the_others_counted_once() {
        let prices = PriceTable::builtin();
        let fingerprinter = KeyFingerprinter::new(b"test");
        let context = NormalizeContext {
            now_ms: 1_800_000_000_000,
            rules: AccountingRules::default(),
            prices: &prices,
            fingerprinter: &fingerprinter,
            default_project: "default",
        };
        let report = |id: &str, tokens: &str| {
            format!(r#"{{"id":"{id}","model":"gpt-4o","input_tokens":{tokens}}}"#)
        };
        let records =
            [report("a", "1"), report("b", "2"), report("c", "\"lots\""), report("d", "4")];
        let array = format!("[{}]", records.join(","));
        let envelope = format!(r#"{{"records":{array}}}"#);
        let ndjson = records.join("\n");
        for (body, is_ndjson) in [(&array, false), (&envelope, false), (&ndjson, true)] {
            let batch = usage_batch(body.as_bytes(), is_ndjson, &context).unwrap();
            let ids: Vec<_> = batch.calls.iter().map(|call| call.id.as_deref().unwrap()).collect();
            assert_eq!(ids, ["a", "b", "d"], "{body}");
            assert_eq!(batch.rejected.len(), 1, "{body}");
            assert_eq!(batch.rejected[0].index, 2, "{body}");
            assert!(batch.rejected[0].error.starts_with("input_tokens: "), "{:?}", batch.rejected);
            assert_eq!(batch.records, 4);
        }
    }
}
