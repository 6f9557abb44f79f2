//! Request bodies: size limit (applied after decompression too, so a gzip
//! bomb is refused), gzip, and splitting a batch into its records.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body is larger than {limit} bytes (after decompression); split the batch"),
    )
}

/// Reads the whole body, decompressing gzip, refusing more than `limit` bytes
/// either way.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
            GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request(format!("body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported (use gzip or none)"),
        )),
    }
}

/// Is the body newline-delimited JSON (by Content-Type)?
pub fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/x-ndjson")
                || ct.starts_with("application/ndjson")
                || ct.starts_with("application/jsonl")
                || ct.starts_with("application/json-lines")
        })
        .unwrap_or(false)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Option<Vec<&'a RawValue>>,
}

/// The JSON text of each record in a batch: a JSON array, an object
/// `{"records": [...]}`, a single record object, or NDJSON (one per line;
/// blank lines skipped).
pub fn split_records(body: &[u8], ndjson: bool) -> Result<Vec<&str>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("body is not UTF-8 text: {e}")))?;
    if ndjson {
        return Ok(text.lines().map(str::trim).filter(|line| !line.is_empty()).collect());
    }
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("body is not a JSON array of records: {e}"))
            })?;
            Ok(items.into_iter().map(RawValue::get).collect())
        }
        Some(b'{') => {
            let envelope: Envelope<'_> = serde_json::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
            match envelope.records {
                Some(items) => Ok(items.into_iter().map(RawValue::get).collect()),
                None => Ok(vec![text]),
            }
        }
        Some(_) => Err(ApiError::bad_request(
            "body is not JSON: expected an array of records, {\"records\": [...]}, or NDJSON with Content-Type: application/x-ndjson",
        )),
        None => Err(ApiError::bad_request("body is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_batch_form() {
        assert_eq!(
            split_records(br#"[{"a":1}, {"b":2}]"#, false).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(split_records(br#"{"records":[{"a":1}]}"#, false).unwrap(), vec![r#"{"a":1}"#]);
        assert_eq!(split_records(br#"{"model":"x"}"#, false).unwrap(), vec![r#"{"model":"x"}"#]);
        assert_eq!(
            split_records(b"{\"a\":1}\n\n{\"b\":2}\n", true).unwrap(),
            vec!["{\"a\":1}", "{\"b\":2}"]
        );
        assert!(split_records(b"model=x", false).is_err());
        assert!(split_records(b"[{\"a\":1}", false).is_err());
        assert!(split_records(b"  ", false).is_err());
    }
}
