//! Tagged metric points (`POST /api/v1/points`) into `MetricPoint`s, with
//! errors that name the field.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::limits::{MAX_POINT_VALUE, check_time_ms, clip, clip_quoted, shown};
use super::values::{Instant, TagMap, TextRef};
use crate::model::{MetricKey, MetricPoint, PointKind, Tags};

/// Most tags one point may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag value.
pub const MAX_TAG_VALUE: usize = 256;
/// Longest tag name.
pub const MAX_TAG_NAME: usize = 64;
const MAX_NAME: usize = 200;

/// One point as sent; every field optional so that errors name it. Text
/// is borrowed from the body where it can be, and tags are kept as their
/// JSON text until a point of a new series needs them parsed.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPoint<'a> {
    #[serde(borrow)]
    pub name: Option<TextRef<'a>>,
    pub value: Option<Value>,
    #[serde(borrow)]
    pub tags: Option<&'a RawValue>,
    #[serde(alias = "time", alias = "ts")]
    pub timestamp: Option<Instant>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub project: Option<TextRef<'a>>,
}

/// The series keys of one batch by the text that named them (project, name
/// and tags as sent): the points of a series share one key, built and
/// checked once per batch.
#[derive(Default)]
pub struct PointKeys<'a> {
    keys: FxHashMap<(&'a str, &'a str, &'a str), Arc<MetricKey>>,
    /// The project of points that name none (`default` when empty).
    default_project: &'a str,
}

impl<'a> PointKeys<'a> {
    /// Keys of a batch whose points default to `project`.
    pub fn with_default_project(project: &'a str) -> Self {
        PointKeys { keys: FxHashMap::default(), default_project: project }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PointError {
    pub field: String,
    pub message: String,
}

/// `field` may come from the client (an unknown field, a tag): clipped.
fn error(field: &str, message: impl Into<String>) -> PointError {
    PointError { field: clip(field).into_owned(), message: message.into() }
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
pub fn normalize_point<'a>(
    json: &'a str,
    now_ms: i64,
    oldest_ms: i64,
    keys: &mut PointKeys<'a>,
) -> Result<MetricPoint, PointError> {
    validate_point(parse_point(json)?, now_ms, oldest_ms, keys)
}

/// Parses one point's JSON text; on failure the error names the field.
pub fn parse_point(json: &str) -> Result<RawPoint<'_>, PointError> {
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
                let inner = e.into_inner();
                if inner.to_string().starts_with("number out of range") {
                    return error(
                        "value",
                        "is too large (a number beyond the range of a 64-bit float)",
                    );
                }
                let message = clip_quoted(&inner.to_string()).into_owned();
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

/// Validates one parsed point; its series key comes from `keys` when an
/// earlier point of the batch named the same series the same way.
pub fn validate_point<'a>(
    raw: RawPoint<'a>,
    now_ms: i64,
    oldest_ms: i64,
    keys: &mut PointKeys<'a>,
) -> Result<MetricPoint, PointError> {
    let key = keys.key(&raw)?;
    let value = match raw.value {
        None => return Err(error("value", "is required")),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| error("value", format!("{:?} is not a number", clip(&s))))?,
        Some(other) => {
            let shown = clip(&other.to_string()).into_owned();
            return Err(error("value", format!("must be a number, got {shown}")));
        }
    };
    if !value.is_finite() {
        return Err(error("value", "must be a finite number (not NaN or infinity)"));
    }
    if value.abs() > MAX_POINT_VALUE {
        return Err(error(
            "value",
            format!("is too large: {} (at most ±{})", shown(value), shown(MAX_POINT_VALUE)),
        ));
    }
    let time_ms = raw.timestamp.and_then(|t| t.0).unwrap_or(now_ms);
    check_time_ms(time_ms, now_ms).map_err(|bound| error("timestamp", bound.to_string()))?;
    if time_ms < oldest_ms {
        return Err(error("timestamp", "is older than the longest metric retention"));
    }
    let kind = match raw.kind {
        None => PointKind::Gauge,
        Some(k) => PointKind::parse(k.0.trim()).ok_or_else(|| {
            error(
                "type",
                format!(
                    "unknown type {:?} (expected gauge, counter or histogram)",
                    clip(k.0.trim())
                ),
            )
        })?,
    };
    Ok(MetricPoint { key, value, time_ms, kind, distribution: None })
}

impl<'a> PointKeys<'a> {
    /// The key of `raw`'s series: shared when the same project, name and
    /// tags text came before in the batch, else built and checked.
    fn key(&mut self, raw: &RawPoint<'a>) -> Result<Arc<MetricKey>, PointError> {
        let text = |field: &Option<TextRef<'a>>| match field {
            None => Some(""),
            Some(text) => text.borrowed(),
        };
        let tags = raw.tags.map_or("", RawValue::get);
        let Some(memo) = text(&raw.project).zip(text(&raw.name)).map(|(p, n)| (p, n, tags)) else {
            return series_key(raw, self.default_project).map(Arc::new);
        };
        if let Some(key) = self.keys.get(&memo) {
            return Ok(key.clone());
        }
        let key = Arc::new(series_key(raw, self.default_project)?);
        self.keys.insert(memo, key.clone());
        Ok(key)
    }
}

/// Builds and checks the series key a point names.
fn series_key(raw: &RawPoint<'_>, default_project: &str) -> Result<MetricKey, PointError> {
    let name = raw.name.as_ref().map(|t| t.0.trim()).unwrap_or_default();
    if name.is_empty() {
        return Err(error("name", "is required"));
    }
    if name.len() > MAX_NAME || !valid_name(name) {
        return Err(error(
            "name",
            format!(
                "{:?} is not a metric name (a letter, _ or : first, then letters, digits, _ : . - /; at most {MAX_NAME} bytes)",
                clip(name)
            ),
        ));
    }
    let tags = match raw.tags {
        None => Tags::new(),
        Some(text) => parse_tags(text.get())?,
    };
    if tags.len() > MAX_TAGS {
        return Err(error("tags", format!("{} tags, at most {MAX_TAGS}", tags.len())));
    }
    for (key, value) in &tags {
        if key.is_empty() || key.len() > MAX_TAG_NAME || key.starts_with("__") {
            return Err(error(
                "tags",
                format!(
                    "tag name {:?} must be 1 to {MAX_TAG_NAME} bytes and not start with __",
                    clip(key)
                ),
            ));
        }
        if value.len() > MAX_TAG_VALUE {
            return Err(error(
                &format!("tags.{key}"),
                format!("{} bytes, at most {MAX_TAG_VALUE}", value.len()),
            ));
        }
    }
    let project = raw.project.as_ref().map(|t| t.0.trim()).filter(|p| !p.is_empty());
    let project =
        project.unwrap_or(if default_project.is_empty() { "default" } else { default_project });
    Ok(MetricKey { project: project.to_owned(), name: name.to_owned(), tags })
}

/// A point's tags from their JSON text; an error names the tag.
fn parse_tags(json: &str) -> Result<Tags, PointError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize::<_, TagMap>(&mut deserializer).map(|t| t.0).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "tags".to_owned() } else { format!("tags.{path}") };
        error(&field, clip_quoted(&e.into_inner().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn normalize(json: &str, oldest_ms: i64) -> Result<MetricPoint, PointError> {
        normalize_point(json, NOW, oldest_ms, &mut PointKeys::default())
    }

    fn field(json: &str) -> String {
        normalize(json, 0).unwrap_err().field
    }

    #[test]
    fn a_point_with_tags_and_time() {
        let p = normalize(
            r#"{"name":"processing_time","value":0.42,"tags":{"operation":"embed"},"timestamp":"2027-01-15T08:00:00Z","type":"histogram"}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            (p.key.name.as_str(), p.value, p.kind),
            ("processing_time", 0.42, PointKind::Histogram)
        );
        assert_eq!(p.key.tags["operation"], "embed");
        assert_eq!(Ok(p.time_ms), crate::time::parse_instant("2027-01-15T08:00:00Z"));
        let defaulted = normalize(r#"{"name":"q","value":"3"}"#, 0).unwrap();
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
            normalize(r#"{"name":"x","value":1,"timestamp":5}"#, 10).unwrap_err().field,
            "timestamp"
        );
        assert_eq!(field(r#"{"name":"x","value":1,"type":"summary"}"#), "type");
        assert_eq!(field(r#"{"name":"x","value":1,"colour":"red"}"#), "colour");
        assert_eq!(field(r#"[1]"#), "record");
    }

    #[test]
    fn points_naming_one_series_alike_share_its_key() {
        let batch = [
            r#"{"name":"q","value":1,"tags":{"a":"1","b":2}}"#,
            r#"{"name":"q","value":2,"tags":{"a":"1","b":2}}"#,
            r#"{"name":"q","value":3,"tags":{"b":"2","a":"1"}}"#,
            r#"{"name":"q","value":4,"tags":{"a":"1","b":2},"project":"p"}"#,
            r#"{"name":"\u0071","value":5,"tags":{"a":"1","b":2}}"#,
        ];
        let mut keys = PointKeys::default();
        let points: Vec<MetricPoint> =
            batch.iter().map(|json| normalize_point(json, NOW, 0, &mut keys).unwrap()).collect();
        assert!(Arc::ptr_eq(&points[0].key, &points[1].key));
        // Equal series sent differently get equal keys of their own.
        for other in &points[2..] {
            assert!(!Arc::ptr_eq(&points[0].key, &other.key));
        }
        assert_eq!(points[2].key, points[0].key);
        assert_eq!(points[4].key, points[0].key);
        assert_eq!(points[3].key.project, "p");
        assert_eq!(points[0].key.tags["b"], "2");
        assert_eq!(points.iter().map(|p| p.value).sum::<f64>(), 15.0);
    }

    #[test]
    fn a_bad_tag_is_named_even_in_a_known_series() {
        let mut keys = PointKeys::default();
        let ok = r#"{"name":"q","value":1,"tags":{"k":"v"}}"#;
        normalize_point(ok, NOW, 0, &mut keys).unwrap();
        let bad = r#"{"name":"q","value":1,"tags":{"k":[1]}}"#;
        assert_eq!(normalize_point(bad, NOW, 0, &mut keys).unwrap_err().field, "tags.k");
        assert_eq!(field(r#"{"name":"q","value":1,"tags":[1]}"#), "tags");
        // A known series does not excuse a bad value.
        let no_value = r#"{"name":"q","tags":{"k":"v"}}"#;
        assert_eq!(normalize_point(no_value, NOW, 0, &mut keys).unwrap_err().field, "value");
    }
}
