//! Tagged metric points (`POST /api/v1/points`) into `MetricPoint`s, with
//! errors that name the field.

use serde::Deserialize;
use serde_json::Value;

use super::values::{Instant, TagMap, Text};
use crate::model::{MetricKey, MetricPoint, PointKind};

/// Most tags one point may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag value.
pub const MAX_TAG_VALUE: usize = 256;
const MAX_NAME: usize = 200;
/// Points may be stamped at most this far ahead of the server's clock.
const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

/// One point as sent; every field optional so that errors name it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPoint {
    pub name: Option<Text>,
    pub value: Option<Value>,
    pub tags: Option<TagMap>,
    #[serde(alias = "time", alias = "ts")]
    pub timestamp: Option<Instant>,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub project: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PointError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> PointError {
    PointError { field: field.to_owned(), message: message.into() }
}

/// Metric names: a letter, `_` or `:` first, then letters, digits and
/// `_ : . - /` (dots are common in OpenTelemetry names).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_:.-/".contains(c))
}

/// Parses and validates one point; `oldest_ms` is the oldest instant any
/// tier still keeps.
pub fn normalize_point(json: &str, now_ms: i64, oldest_ms: i64) -> Result<MetricPoint, PointError> {
    validate_point(parse_point(json)?, now_ms, oldest_ms)
}

/// Parses one point's JSON text; on failure the error names the field.
pub fn parse_point(json: &str) -> Result<RawPoint, PointError> {
    if !json.trim_start().starts_with('{') {
        return Err(error("record", "must be a JSON object"));
    }
    // The fast path parses directly; only a failing point is parsed again
    // with path tracking, to name the field.
    match serde_json::from_str(json) {
        Ok(raw) => Ok(raw),
        Err(_) => {
            let mut deserializer = serde_json::Deserializer::from_str(json);
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                // An unknown field is reported at the record; name it instead.
                let unknown = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                let field = match unknown {
                    Some(name) => name,
                    None if path == "." => "record".to_owned(),
                    None => path,
                };
                error(&field, message)
            })
        }
    }
}

/// `text` without surrounding whitespace (copied only when it has some).
fn trimmed(text: String) -> String {
    if text.trim().len() == text.len() { text } else { text.trim().to_owned() }
}

/// Validates one parsed point.
pub fn validate_point(
    raw: RawPoint,
    now_ms: i64,
    oldest_ms: i64,
) -> Result<MetricPoint, PointError> {
    let name = raw.name.map(|t| trimmed(t.0)).unwrap_or_default();
    if name.is_empty() {
        return Err(error("name", "is required"));
    }
    if name.len() > MAX_NAME || !valid_name(&name) {
        return Err(error(
            "name",
            format!(
                "{name:?} is not a metric name (a letter, _ or : first, then letters, digits, _ : . - /; at most {MAX_NAME} bytes)"
            ),
        ));
    }
    let value = match raw.value {
        None => return Err(error("value", "is required")),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => {
            s.trim().parse::<f64>().map_err(|_| error("value", format!("{s:?} is not a number")))?
        }
        Some(other) => return Err(error("value", format!("must be a number, got {other}"))),
    };
    if !value.is_finite() {
        return Err(error("value", "must be a finite number (not NaN or infinity)"));
    }
    let tags = raw.tags.map(|t| t.0).unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(error("tags", format!("{} tags, at most {MAX_TAGS}", tags.len())));
    }
    for (key, value) in &tags {
        if key.is_empty() || key.len() > 64 || key.starts_with("__") {
            return Err(error(
                "tags",
                format!("tag name {key:?} must be 1 to 64 bytes and not start with __"),
            ));
        }
        if value.len() > MAX_TAG_VALUE {
            return Err(error(
                &format!("tags.{key}"),
                format!("{} bytes, at most {MAX_TAG_VALUE}", value.len()),
            ));
        }
    }
    let time_ms = raw.timestamp.and_then(|t| t.0).unwrap_or(now_ms);
    if time_ms > now_ms + MAX_FUTURE_MS {
        return Err(error("timestamp", "is more than 1 day in the future"));
    }
    if time_ms < oldest_ms {
        return Err(error("timestamp", "is older than the longest metric retention"));
    }
    let kind = match raw.kind.map(|t| t.0) {
        None => PointKind::Gauge,
        Some(k) => PointKind::parse(k.trim()).ok_or_else(|| {
            error("type", format!("unknown type {k:?} (expected gauge, counter or histogram)"))
        })?,
    };
    let project = raw
        .project
        .map(|t| trimmed(t.0))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let key = std::sync::Arc::new(MetricKey { project, name, tags });
    Ok(MetricPoint { key, value, time_ms, kind, distribution: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn field(json: &str) -> String {
        normalize_point(json, NOW, 0).unwrap_err().field
    }

    #[test]
    fn a_point_with_tags_and_time() {
        let p = normalize_point(
            r#"{"name":"processing_time","value":0.42,"tags":{"operation":"embed"},"timestamp":"2027-01-15T08:00:00Z","type":"histogram"}"#,
            NOW,
            0,
        )
        .unwrap();
        assert_eq!(
            (p.key.name.as_str(), p.value, p.kind),
            ("processing_time", 0.42, PointKind::Histogram)
        );
        assert_eq!(p.key.tags["operation"], "embed");
        assert_eq!(Ok(p.time_ms), crate::time::parse_instant("2027-01-15T08:00:00Z"));
        let defaulted = normalize_point(r#"{"name":"q","value":"3"}"#, NOW, 0).unwrap();
        assert_eq!(
            (defaulted.time_ms, defaulted.kind, defaulted.value),
            (NOW, PointKind::Gauge, 3.0)
        );
    }

    #[test]
    fn each_rejection_names_its_field() {
        assert_eq!(field(r#"{"value":1}"#), "name");
        assert_eq!(field(r#"{"name":"","value":1}"#), "name");
        assert_eq!(field(r#"{"name":"9lives","value":1}"#), "name");
        assert_eq!(field(r#"{"name":"a b","value":1}"#), "name");
        assert_eq!(field(r#"{"name":"x"}"#), "value");
        assert_eq!(field(r#"{"name":"x","value":"NaN"}"#), "value");
        assert_eq!(field(r#"{"name":"x","value":"inf"}"#), "value");
        assert_eq!(field(r#"{"name":"x","value":true}"#), "value");
        let many: Vec<String> = (0..17).map(|i| format!("\"t{i}\":\"v\"")).collect();
        assert_eq!(
            field(&format!(r#"{{"name":"x","value":1,"tags":{{{}}}}}"#, many.join(","))),
            "tags"
        );
        let long = "v".repeat(257);
        assert_eq!(
            field(&format!(r#"{{"name":"x","value":1,"tags":{{"k":"{long}"}}}}"#)),
            "tags.k"
        );
        assert_eq!(field(r#"{"name":"x","value":1,"timestamp":"yesterday"}"#), "timestamp");
        assert_eq!(
            field(&format!(r#"{{"name":"x","value":1,"timestamp":{}}}"#, NOW + 2 * 86_400_000)),
            "timestamp"
        );
        assert_eq!(
            normalize_point(r#"{"name":"x","value":1,"timestamp":5}"#, NOW, 10).unwrap_err().field,
            "timestamp"
        );
        assert_eq!(field(r#"{"name":"x","value":1,"type":"summary"}"#), "type");
        assert_eq!(field(r#"{"name":"x","value":1,"colour":"red"}"#), "colour");
        assert_eq!(field(r#"[1]"#), "record");
    }
}
