//! Spans built for the tests of span normalization and its golden cases:
//! OTLP values, a valid span to put attributes on, and a span normalized and
//! its call accounted as ingest does, at a fixed clock.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
use prost::Message;

use super::{NormalizedSpan, SpanContext, SpanError, normalize_span};
use crate::model::{Attributes, LlmCall};
use crate::normalize::otlp_wire::{Part, SpanRef, read_spans};
use crate::normalize::usage_report::{NormalizeContext, RawReport, normalize_report};
use crate::normalize::{AccountingRules, KeyFingerprinter, ReportError};
use crate::pricing::PriceTable;

/// 2025-10-09T08:53:20Z.
pub const START: u64 = 1_760_000_000_000_000_000;
/// The server's clock: spans and calls are checked against it.
pub const NOW_MS: i64 = 1_800_000_000_000;
pub const TRACE_HEX: &str = "0102030405060708090a0b0c0d0e0f10";
pub const SPAN_HEX: &str = "0102030405060708";

pub trait IntoAny {
    fn into_any(self) -> any_value::Value;
}
impl IntoAny for &str {
    fn into_any(self) -> any_value::Value {
        any_value::Value::StringValue(self.to_owned())
    }
}
impl IntoAny for String {
    fn into_any(self) -> any_value::Value {
        any_value::Value::StringValue(self)
    }
}
impl IntoAny for i32 {
    fn into_any(self) -> any_value::Value {
        any_value::Value::IntValue(self.into())
    }
}
impl IntoAny for f64 {
    fn into_any(self) -> any_value::Value {
        any_value::Value::DoubleValue(self)
    }
}
impl IntoAny for bool {
    fn into_any(self) -> any_value::Value {
        any_value::Value::BoolValue(self)
    }
}
impl IntoAny for any_value::Value {
    fn into_any(self) -> any_value::Value {
        self
    }
}

pub fn any(value: impl IntoAny) -> AnyValue {
    AnyValue { value: Some(value.into_any()) }
}

pub fn kv(key: &str, value: impl IntoAny) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(any(value)), ..Default::default() }
}

pub fn event(name: &str, after_ms: u64) -> Event {
    Event {
        time_unix_nano: START + after_ms * 1_000_000,
        name: name.to_owned(),
        ..Default::default()
    }
}

/// A valid 2.5 s span with the given attributes.
pub fn span_with(attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        name: "test".to_owned(),
        start_time_unix_nano: START,
        end_time_unix_nano: START + 2_500_000_000,
        attributes,
        ..Default::default()
    }
}

/// The span normalized with an empty resource and no project hint; read
/// in place from its protobuf bytes, it normalizes the same.
pub fn try_normalize(span: &Span) -> Result<NormalizedSpan, SpanError> {
    let resource = Arc::new(Attributes::new());
    let context = SpanContext { resource: &resource, project_hint: None, now_ms: NOW_MS };
    let unpacked = |mut normalized: NormalizedSpan| {
        normalized.span.unpack_attributes();
        normalized
    };
    let decoded = normalize_span(&SpanRef::of(span), &context).map(unpacked);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span.clone()], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let mut in_place = None;
    read_spans(&request, |part| {
        if let Part::Span(span) = part {
            in_place = Some(normalize_span(span, &context).map(unpacked));
        }
    })
    .expect("an encoded span reads back");
    assert_eq!(
        format!("{:?}", in_place.expect("the span was read")),
        format!("{decoded:?}"),
        "read in place and decoded, the span normalizes alike"
    );
    decoded
}

pub fn normalize(span: &Span) -> NormalizedSpan {
    try_normalize(span).unwrap()
}

pub fn error_of(span: &Span) -> SpanError {
    try_normalize(span).unwrap_err()
}

/// The report through the accounting rules (built-in prices, default
/// rules), as the ingest path does.
pub fn try_account(report: RawReport) -> Result<LlmCall, ReportError> {
    let prices = PriceTable::builtin();
    let fingerprinter = KeyFingerprinter::new(b"test");
    let ctx = NormalizeContext {
        now_ms: NOW_MS,
        rules: AccountingRules::default(),
        prices: &prices,
        fingerprinter: &fingerprinter,
        default_project: "default",
    };
    normalize_report(report, &ctx)
}

pub fn call_of(span: &Span) -> LlmCall {
    try_account(normalize(span).call.expect("the span describes a model call")).unwrap()
}

/// (input, output, total, cache_read, cache_write, reasoning)
pub fn tokens(call: &LlmCall) -> (u64, u64, u64, u64, u64, u64) {
    (
        call.input_tokens,
        call.output_tokens,
        call.total_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.reasoning_tokens,
    )
}
