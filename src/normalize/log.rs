//! OTLP log records into `LogRecord`s: time, severity, body and the span a
//! record belongs to, with the same attribute conversion and envelope
//! (`SpanContext`) as spans. Pure: no I/O, no clock.

use opentelemetry_proto::tonic::logs::v1 as otlp;
use serde_json::Value;

use super::limits::Truncation;
use super::otlp_value::{StringBudget, any_value_to_json, key_values_to_json, mark_truncated};
use super::otlp_wire::{KeyValueRef, ValueRef};
use super::span::{SpanContext, id_hex, span_time};
use crate::model::LogRecord;

/// A log body is the record's payload, so it gets a whole attribute map's
/// budget rather than one attribute value's.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a log record was rejected. `Display` gives "field: what is wrong";
/// callers add the record's position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LogError {
    /// The OTLP field at fault, by its proto name.
    pub field: &'static str,
    pub message: String,
}

impl LogError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Validates one log record and maps it onto the record model; what the
/// caps cut is added to `cut` (and marked in the record's attributes).
pub fn normalize_log(
    record: &otlp::LogRecord,
    ctx: &SpanContext<'_>,
    cut: &mut Truncation,
) -> Result<LogRecord, LogError> {
    // OTLP's 0 is "unset": the observed time stands in for an unknown one.
    let time_ns = match (record.time_unix_nano, record.observed_time_unix_nano) {
        (0, 0) => return Err(LogError::new("time_unix_nano", "missing")),
        (0, observed) => span_time("observed_time_unix_nano", observed, ctx.now_ms),
        (time, _) => span_time("time_unix_nano", time, ctx.now_ms),
    }
    .map_err(|err| LogError::new(err.field, err.message))?;
    let trace_id = optional_id("trace_id", &record.trace_id, 16)?;
    let span_id = optional_id("span_id", &record.span_id, 8)?;

    let mut body_budget = StringBudget::new(MAX_BODY_BYTES, MAX_BODY_BYTES);
    let body = match &record.body {
        Some(body) => any_value_to_json(ValueRef::of(body), &mut body_budget),
        None => Value::Null,
    };
    let mut budget = StringBudget::for_attributes();
    let mut attributes =
        key_values_to_json(record.attributes.iter().map(KeyValueRef::of), &mut budget);
    let mut truncation = budget.cut;
    truncation.add(body_budget.cut);
    mark_truncated(&mut attributes, truncation, record.dropped_attributes_count);
    cut.add(truncation);
    // OTLP moved an event's name from the `event.name` attribute to a field
    // of its own; the record model keeps it where readers looked before.
    if !record.event_name.is_empty() {
        attributes.entry("event.name").or_insert_with(|| Value::String(record.event_name.clone()));
    }

    Ok(LogRecord {
        project: ctx.project(),
        time_ns,
        severity_number: record.severity_number,
        severity_text: Some(record.severity_text.trim())
            .filter(|text| !text.is_empty())
            .map(str::to_owned),
        body,
        attributes,
        trace_id,
        span_id,
        service: ctx.service(),
    })
}

/// Log records need not belong to a span: an empty or all-zero id is none.
fn optional_id(field: &'static str, bytes: &[u8], len: usize) -> Result<Option<String>, LogError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    id_hex(bytes, len).map_err(|_| {
        LogError::new(field, format!("must be empty or {len} bytes, got {}", bytes.len()))
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};

    use super::*;
    use crate::model::Attributes;

    const TIME: u64 = 1_760_000_000_000_000_000;
    const NOW_MS: i64 = 1_800_000_000_000;

    fn string(text: &str) -> AnyValue {
        AnyValue { value: Some(any_value::Value::StringValue(text.to_owned())) }
    }

    fn kv(key: &str, text: &str) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(string(text)), ..Default::default() }
    }

    fn record() -> otlp::LogRecord {
        otlp::LogRecord {
            time_unix_nano: TIME,
            observed_time_unix_nano: TIME + 7,
            severity_number: 17,
            severity_text: "ERROR".to_owned(),
            body: Some(string("upstream timed out")),
            attributes: vec![kv("http.route", "/v1/chat")],
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            ..Default::default()
        }
    }

    fn normalize(record: &otlp::LogRecord) -> Result<LogRecord, LogError> {
        let resource = std::sync::Arc::new(crate::normalize::attributes_to_json(&[
            kv("service.name", "gateway"),
            kv("openinference.project.name", "phoenix-proj"),
        ]));
        let ctx = SpanContext { resource: &resource, project_hint: Some("hint"), now_ms: NOW_MS };
        normalize_log(record, &ctx, &mut Truncation::default())
    }

    #[test]
    fn golden_record() {
        let log = normalize(&record()).unwrap();
        let mut attributes = Attributes::new();
        attributes.insert("http.route".to_owned(), "/v1/chat".into());
        assert_eq!(
            log,
            LogRecord {
                project: "phoenix-proj".to_owned(),
                time_ns: TIME as i64,
                severity_number: 17,
                severity_text: Some("ERROR".to_owned()),
                body: "upstream timed out".into(),
                attributes,
                trace_id: Some("0102030405060708090a0b0c0d0e0f10".to_owned()),
                span_id: Some("0102030405060708".to_owned()),
                service: "gateway".to_owned(),
            }
        );
    }

    #[test]
    fn time_falls_back_to_observed() {
        let log = normalize(&otlp::LogRecord { time_unix_nano: 0, ..record() }).unwrap();
        assert_eq!(log.time_ns, TIME as i64 + 7);
        let err = normalize(&otlp::LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            ..record()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "time_unix_nano: missing");
        let err = normalize(&otlp::LogRecord { time_unix_nano: u64::MAX, ..record() }).unwrap_err();
        assert_eq!(err.field, "time_unix_nano");
    }

    #[test]
    fn times_before_2000_or_a_day_ahead_are_refused() {
        let err = normalize(&otlp::LogRecord { time_unix_nano: 1, ..record() }).unwrap_err();
        assert_eq!(err.to_string(), "time_unix_nano: is before 2000-01-01T00:00:00Z");
        let ahead = (NOW_MS as u64 + 86_400_000 + 60_000) * 1_000_000;
        let err = normalize(&otlp::LogRecord { time_unix_nano: ahead, ..record() }).unwrap_err();
        assert_eq!(err.to_string(), "time_unix_nano: is more than 1 day in the future");
        let err = normalize(&otlp::LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: 5,
            ..record()
        })
        .unwrap_err();
        assert_eq!(err.field, "observed_time_unix_nano");
    }

    #[test]
    fn attribute_caps_are_marked_and_counted() {
        let attributes = (0..300).map(|i| kv(&format!("k{i}"), "v")).collect();
        let resource = std::sync::Arc::new(Attributes::new());
        let ctx = SpanContext { resource: &resource, project_hint: None, now_ms: NOW_MS };
        let mut cut = Truncation::default();
        let log =
            normalize_log(&otlp::LogRecord { attributes, ..record() }, &ctx, &mut cut).unwrap();
        assert_eq!(cut.attributes, 172);
        assert_eq!(log.attributes["tally.dropped_attributes_count"], 172);
        assert_eq!(log.attributes["tally.truncated"], true);
        assert_eq!(log.attributes.len(), 128 + 2);
    }

    #[test]
    fn ids_are_optional_but_checked() {
        let log = normalize(&otlp::LogRecord { trace_id: vec![], span_id: vec![0; 8], ..record() })
            .unwrap();
        assert_eq!((log.trace_id, log.span_id), (None, None));
        let err = normalize(&otlp::LogRecord { trace_id: vec![1; 8], ..record() }).unwrap_err();
        assert_eq!(err.to_string(), "trace_id: must be empty or 16 bytes, got 8");
        let err = normalize(&otlp::LogRecord { span_id: vec![1; 3], ..record() }).unwrap_err();
        assert_eq!(err.to_string(), "span_id: must be empty or 8 bytes, got 3");
    }

    #[test]
    fn body_severity_and_event_name() {
        let body = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("message", "hi"), kv("level", "info")],
            })),
        };
        let log = normalize(&otlp::LogRecord {
            body: Some(body),
            severity_text: String::new(),
            event_name: "gen_ai.choice".to_owned(),
            ..record()
        })
        .unwrap();
        assert_eq!(log.body, serde_json::json!({"message": "hi", "level": "info"}));
        assert_eq!(log.severity_text, None);
        assert_eq!(log.attributes["event.name"], "gen_ai.choice");

        let log = normalize(&otlp::LogRecord { body: None, ..record() }).unwrap();
        assert_eq!(log.body, Value::Null);

        // A body gets a whole map's budget: 20 KB of text is kept.
        let long = "z".repeat(20_000);
        let log = normalize(&otlp::LogRecord { body: Some(string(&long)), ..record() }).unwrap();
        assert_eq!(log.body.as_str().map(str::len), Some(20_000));
    }

    #[test]
    fn project_falls_back_like_spans() {
        let resource = std::sync::Arc::new(Attributes::new());
        let ctx = SpanContext { resource: &resource, project_hint: None, now_ms: NOW_MS };
        let log = normalize_log(&record(), &ctx, &mut Truncation::default()).unwrap();
        assert_eq!((log.project.as_str(), log.service.as_str()), ("default", "unknown_service"));
    }
}
