//! OTLP spans into `SpanRecord`s: validation, the envelope a span came in
//! (`SpanContext`), the record's fields, and the facts (a span's attributes
//! by key, as sent) that the convention readers below take apart. Which
//! conventions Tally reads (OTel GenAI, OpenInference, OpenLLMetry,
//! Langfuse, Vercel AI SDK) is in semconv.md; `classify` says what a span
//! is, `usage` what it used, `call` the model call it describes. Pure: no
//! I/O, no clock.

use std::borrow::Cow;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use serde_json::Value;

use super::limits::{Truncation, check_time_ns};
use super::otlp_value::{
    AttributeSink, PackedMap, StringBudget, key_values_to_json, mark_truncated,
};
use super::otlp_wire::{KeyValueRef, SpanRef, ValueRef};
use super::usage_report::RawReport;
use super::values::MAX_COUNT;
use crate::model::{Attributes, SpanEvent, SpanRecord, ascii_lowercase};

mod call;
mod classify;
mod usage;

#[cfg(test)]
mod golden;
#[cfg(test)]
pub(super) mod testing;

/// Most events stored per span: OpenLLMetry sends one per streamed chunk.
pub const MAX_EVENTS: usize = 128;

// The field map (semconv.md) of the record's fields: for each, the
// attributes that carry it, the first one present wins. Vercel AI SDK names
// (`ai.*`) come last. Usage has its own (`usage`).
const REQUEST_MODEL_KEYS: &[&str] = &[
    "gen_ai.request.model",
    "llm.request.model_name",
    "llm.model_name",
    "embedding.model_name",
    "reranker.model_name",
    "langfuse.observation.model.name",
    "ai.model.id",
];
const RESPONSE_MODEL_KEYS: &[&str] =
    &["gen_ai.response.model", "llm.response.model_name", "ai.response.model"];
const USER_KEYS: &[&str] =
    &["user.id", "langfuse.user.id", "gen_ai.user", "traceloop.association.properties.user_id"];
const SESSION_KEYS: &[&str] = &[
    "gen_ai.conversation.id",
    "session.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
];

/// Why a span was rejected. `Display` gives "field: what is wrong"; callers
/// that reject a batch add the span's position themselves, e.g.
/// `span 3 (trace_id): must be 16 bytes, got 0`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpanError {
    /// The OTLP field at fault, by its proto name.
    pub field: &'static str,
    pub message: String,
}

impl SpanError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// What the envelope around a span says about it: the resource that sent
/// it and the project the request authenticated as. Log records use it too.
#[derive(Debug, Clone, Copy)]
pub struct SpanContext<'a> {
    /// The resource's attributes, converted once per `ResourceSpans` (see
    /// `resource_attributes`) and shared by its spans.
    pub resource: &'a Arc<Attributes>,
    /// The project named by the request's credentials (a Langfuse public
    /// key, say), if any. Resource attributes that name a project win.
    pub project_hint: Option<&'a str>,
    /// The server's clock (unix ms), which bounds how far ahead times may be.
    pub now_ms: i64,
}

impl SpanContext<'_> {
    /// `service.name`, else `unknown_service`.
    pub fn service(&self) -> String {
        resource_text(self.resource, "service.name").unwrap_or("unknown_service").to_owned()
    }

    /// `tally.project`, else OpenInference's `openinference.project.name`
    /// (set by the Phoenix client), else the hint, else `default`.
    pub fn project(&self) -> String {
        resource_text(self.resource, "tally.project")
            .or_else(|| resource_text(self.resource, "openinference.project.name"))
            .or_else(|| self.project_hint.map(str::trim).filter(|p| !p.is_empty()))
            .unwrap_or("default")
            .to_owned()
    }
}

fn resource_text<'a>(resource: &'a Attributes, key: &str) -> Option<&'a str> {
    resource.get(key)?.as_str().map(str::trim).filter(|text| !text.is_empty())
}

/// A span in the record model, and the model call it describes, if any.
#[derive(Debug)]
pub struct NormalizedSpan {
    /// Tokens and cost are 0 and `llm_call` false: the caller fills them
    /// from the `LlmCall` that `call` becomes after the accounting rules.
    pub span: SpanRecord,
    /// In Tally's canonical (inclusive) token form, not yet validated.
    pub call: Option<RawReport<'static>>,
    /// What the caps cut from the span (also marked in its attributes).
    pub truncation: Truncation,
}

/// Lowercase hex of an id of `len` bytes (16 at most: a trace id); `None`
/// when all zeros, which OTLP defines as invalid (absent). The error says
/// what the length was.
pub(super) fn id_hex(bytes: &[u8], len: usize) -> Result<Option<String>, String> {
    if bytes.len() != len {
        return Err(format!("must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|byte| *byte == 0) {
        return Ok(None);
    }
    // Through a buffer on the stack: `hex::encode` builds its string a char
    // at a time, and a zeroed `Vec` costs more than the encoding.
    let mut text = [0; 2 * 16];
    let text = &mut text[..2 * len];
    hex::encode_to_slice(bytes, text).expect("the buffer is twice the id's length");
    Ok(Some(std::str::from_utf8(text).expect("hex digits are ASCII").to_owned()))
}

/// Validates one span and maps it onto the record model.
pub fn normalize_span(
    span: &SpanRef<'_>,
    ctx: &SpanContext<'_>,
) -> Result<NormalizedSpan, SpanError> {
    let trace_id = id_hex(span.trace_id, 16)
        .map_err(|message| SpanError::new("trace_id", message))?
        .ok_or_else(|| SpanError::new("trace_id", "must not be all zeros"))?;
    let span_id = id_hex(span.span_id, 8)
        .map_err(|message| SpanError::new("span_id", message))?
        .ok_or_else(|| SpanError::new("span_id", "must not be all zeros"))?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        id_hex(span.parent_span_id, 8).map_err(|_| {
            SpanError::new(
                "parent_span_id",
                format!("must be empty or 8 bytes, got {}", span.parent_span_id.len()),
            )
        })?
    };
    // OTLP's 0 is "unset"; a span must have started.
    if span.start_time_unix_nano == 0 {
        return Err(SpanError::new("start_time_unix_nano", "must be set"));
    }
    let start_ns = span_time("start_time_unix_nano", span.start_time_unix_nano, ctx.now_ms)?;
    let end_ns = match span.end_time_unix_nano {
        // An unset end is before any start: the error below says so.
        0 => 0,
        end => span_time("end_time_unix_nano", end, ctx.now_ms)?,
    };
    if end_ns < start_ns {
        return Err(SpanError::new(
            "end_time_unix_nano",
            format!("is before start_time_unix_nano ({end_ns} < {start_ns})"),
        ));
    }

    let facts = Facts::new(&span.attributes);
    let kind = classify::classify(&facts);
    let (status, status_message) = classify::span_status(span, &facts);
    // The events of a span share one map's text budget.
    let mut event_budget = StringBudget::for_attributes();
    let events = span
        .events
        .iter()
        .take(MAX_EVENTS)
        .map(|event| {
            let dropped_before = event_budget.cut.attributes;
            let mut attributes =
                key_values_to_json(event.attributes.iter().copied(), &mut event_budget);
            let dropped = event_budget.cut.attributes - dropped_before;
            if dropped > 0 || event.dropped_attributes_count > 0 {
                let cut = Truncation { attributes: dropped, ..Truncation::default() };
                mark_truncated(&mut attributes, cut, event.dropped_attributes_count);
            }
            SpanEvent {
                // Past the year 2262: clamped rather than failing the span.
                time_ns: i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX),
                name: event.name.to_owned(),
                attributes,
            }
        })
        .collect();
    let mut truncation = event_budget.cut;
    truncation.events = span.events.len().saturating_sub(MAX_EVENTS) as u64;

    let mut record = SpanRecord {
        project: ctx.project(),
        trace_id,
        span_id,
        parent_span_id,
        name: span.name.to_owned(),
        kind,
        service: ctx.service(),
        start_ns,
        end_ns,
        status,
        status_message,
        attributes: Attributes::new(),
        events,
        resource: ctx.resource.clone(),
        // The requested model, as the call is priced; the response model
        // (often a dated version) goes on the call as `response_model`.
        model: facts
            .first_text(REQUEST_MODEL_KEYS)
            .or_else(|| facts.first_text(RESPONSE_MODEL_KEYS)),
        provider: provider(&facts),
        user: facts.first_text(USER_KEYS),
        session: facts.first_text(SESSION_KEYS),
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cost_usd: 0.0,
        llm_call: false,
        packed: None,
    };
    let call = call::model_call(&facts, span, &record);
    let mut budget = StringBudget::for_attributes();
    // Packed straight from the span when no key repeats (as none does from
    // an SDK); a repeated key takes the map, where the last one wins.
    if facts.keys_distinct {
        let mut packed = PackedMap::of(&span.attributes, &mut budget);
        truncation.add(budget.cut);
        mark_span(&mut packed, truncation, span);
        record.packed = Some(packed.finish());
    } else {
        record.attributes = key_values_to_json(span.attributes.iter().copied(), &mut budget);
        truncation.add(budget.cut);
        mark_span(&mut record.attributes, truncation, span);
    }
    Ok(NormalizedSpan { span: record, call, truncation })
}

/// Marks a span's attributes with what the caps and the sender cut.
fn mark_span(attributes: &mut impl AttributeSink, truncation: Truncation, span: &SpanRef<'_>) {
    mark_truncated(attributes, truncation, span.dropped_attributes_count);
    let dropped_events = truncation.events + u64::from(span.dropped_events_count);
    if dropped_events > 0 {
        attributes.put("tally.dropped_events_count", Value::from(dropped_events));
    }
}

/// A span's time as the record model stores it, within the bounds of
/// `limits::check_time_ns`.
pub(super) fn span_time(field: &'static str, nanos: u64, now_ms: i64) -> Result<i64, SpanError> {
    check_time_ns(nanos, now_ms).map_err(|bound| SpanError::new(field, bound.to_string()))
}

/// The span's attributes by key, as sent. Facts are read from here, not
/// from the capped copy that is stored, so caps never change accounting.
struct Facts<'a> {
    /// Every key, with its last value (a key without one has none, unless
    /// it came with one too).
    by_key: FxHashMap<&'a str, Option<ValueRef<'a>>>,
    /// No key was sent twice.
    keys_distinct: bool,
}

impl<'a> Facts<'a> {
    fn new(kvs: &[KeyValueRef<'a>]) -> Self {
        let mut by_key = FxHashMap::with_capacity_and_hasher(kvs.len(), Default::default());
        for kv in kvs {
            match kv.value {
                None | Some(ValueRef::Empty) => {
                    by_key.entry(kv.key).or_insert(None);
                }
                value => {
                    by_key.insert(kv.key, value);
                }
            }
        }
        let keys_distinct = by_key.len() == kvs.len();
        Self { by_key, keys_distinct }
    }

    fn get(&self, key: &str) -> Option<ValueRef<'a>> {
        self.by_key.get(key).copied().flatten()
    }

    /// A non-empty trimmed string, borrowed from the span; integers count
    /// too (numeric user ids).
    fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        match self.get(key)? {
            ValueRef::Str(text) => {
                let text = text.trim();
                (!text.is_empty()).then_some(Cow::Borrowed(text))
            }
            ValueRef::Int(int) => Some(Cow::Owned(int.to_string())),
            _ => None,
        }
    }

    /// The first of `keys` with a text, owned (to be kept).
    fn first_text(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|key| self.text(key)).map(Cow::into_owned)
    }

    /// An enumerated value, compared case-insensitively (borrowed when it
    /// is lowercase already, as nearly every one is).
    fn lowercase(&self, key: &str) -> Option<Cow<'a, str>> {
        match self.get(key)? {
            ValueRef::Str(text) => {
                Some(ascii_lowercase(text.trim())).filter(|text| !text.is_empty())
            }
            ValueRef::Int(int) => Some(Cow::Owned(int.to_string())),
            _ => None,
        }
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            ValueRef::Bool(flag) => Some(flag),
            ValueRef::Str(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A non-negative finite number (a duration or a cost).
    fn amount(&self, key: &str) -> Option<f64> {
        Numeric::from_any(self.get(key)?).and_then(Numeric::amount)
    }

    /// The first of `keys` present, as a token count. An unreadable count
    /// is an error: it must not silently fall through to another key.
    fn first_count(&self, keys: &[&str]) -> Result<Option<u64>, String> {
        for key in keys {
            if let Some(value) = self.get(key) {
                let count = match Numeric::from_any(value) {
                    Some(number) => number.count(),
                    None => Err("must be a non-negative integer".to_owned()),
                };
                return count.map(Some).map_err(|message| format!("{key}: {message}"));
            }
        }
        Ok(None)
    }
}

/// A number as the conventions send it: an integer, a double, or a string
/// of digits (OTLP/JSON, Langfuse's JSON-encoded values).
#[derive(Clone, Copy)]
enum Numeric<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl<'a> Numeric<'a> {
    fn from_any(value: ValueRef<'a>) -> Option<Self> {
        match value {
            ValueRef::Int(int) => Some(Numeric::Int(int)),
            ValueRef::Double(double) => Some(Numeric::Float(double)),
            ValueRef::Str(text) => Some(Numeric::Text(text)),
            _ => None,
        }
    }

    fn from_json(value: &'a Value) -> Option<Self> {
        match value {
            Value::Number(number) => match number.as_i64() {
                Some(int) => Some(Numeric::Int(int)),
                None => number.as_f64().map(Numeric::Float),
            },
            Value::String(text) => Some(Numeric::Text(text)),
            _ => None,
        }
    }

    /// A whole, non-negative count up to `MAX_COUNT`.
    fn count(self) -> Result<u64, String> {
        let whole = |double: f64| -> Option<u64> {
            (double.fract() == 0.0 && (0.0..=MAX_COUNT as f64).contains(&double))
                .then_some(double as u64)
        };
        let count = match self {
            Numeric::Int(int) => u64::try_from(int).ok(),
            Numeric::Float(double) => whole(double),
            Numeric::Text(text) => {
                let text = text.trim();
                text.parse::<u64>().ok().or_else(|| text.parse::<f64>().ok().and_then(whole))
            }
        };
        match count {
            Some(count) if count <= MAX_COUNT => Ok(count),
            _ => Err(format!("must be a non-negative integer up to {MAX_COUNT}, got {self}")),
        }
    }

    fn amount(self) -> Option<f64> {
        let amount = match self {
            Numeric::Int(int) => int as f64,
            Numeric::Float(double) => double,
            Numeric::Text(text) => text.trim().parse().ok()?,
        };
        (amount.is_finite() && amount >= 0.0).then_some(amount)
    }
}

impl std::fmt::Display for Numeric<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Numeric::Int(int) => write!(f, "{int}"),
            Numeric::Float(double) => write!(f, "{double}"),
            Numeric::Text(text) => write!(f, "{text:?}"),
        }
    }
}

fn provider(facts: &Facts<'_>) -> Option<String> {
    facts
        .text("gen_ai.provider.name")
        .map(Cow::into_owned)
        // The Vercel AI SDK names `<provider>.<api>` (`openai.chat`), in
        // `gen_ai.system` too: keep the provider.
        .or_else(|| {
            let vercel = facts.text("ai.model.provider")?;
            let provider = vercel.split('.').next().unwrap_or_default().trim();
            (!provider.is_empty()).then(|| provider.to_owned())
        })
        .or_else(|| facts.first_text(&["gen_ai.system", "llm.provider", "llm.system"]))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use opentelemetry_proto::tonic::trace::v1::span::Event;

    use super::testing::*;
    use super::*;
    use crate::normalize::otlp_value::{
        MAX_ATTRIBUTES, MAX_KEY_BYTES, attributes_to_json, resource_attributes,
    };
    use crate::normalize::otlp_wire::ResourceRef;

    #[test]
    fn validation_names_the_field() {
        let check = |span: Span, display: &str| {
            assert_eq!(error_of(&span).to_string(), display);
        };
        check(Span { trace_id: vec![], ..span_with(vec![]) }, "trace_id: must be 16 bytes, got 0");
        check(
            Span { trace_id: vec![1; 8], ..span_with(vec![]) },
            "trace_id: must be 16 bytes, got 8",
        );
        check(
            Span { trace_id: vec![0; 16], ..span_with(vec![]) },
            "trace_id: must not be all zeros",
        );
        check(Span { span_id: vec![0; 8], ..span_with(vec![]) }, "span_id: must not be all zeros");
        check(
            Span { span_id: vec![1; 16], ..span_with(vec![]) },
            "span_id: must be 8 bytes, got 16",
        );
        check(
            Span { parent_span_id: vec![1; 4], ..span_with(vec![]) },
            "parent_span_id: must be empty or 8 bytes, got 4",
        );
        check(
            Span { start_time_unix_nano: 0, end_time_unix_nano: 0, ..span_with(vec![]) },
            "start_time_unix_nano: must be set",
        );
        check(
            Span { end_time_unix_nano: START - 1, ..span_with(vec![]) },
            &format!(
                "end_time_unix_nano: is before start_time_unix_nano ({} < {START})",
                START - 1
            ),
        );
        check(
            Span { start_time_unix_nano: u64::MAX, ..span_with(vec![]) },
            "start_time_unix_nano: is more than 1 day in the future",
        );
        let err = error_of(&Span { trace_id: vec![], ..span_with(vec![]) });
        assert_eq!(err.field, "trace_id");

        // Accepted edge cases: an all-zero parent is no parent, an empty
        // name stays empty, a zero-length span is fine.
        let span = Span {
            parent_span_id: vec![0; 8],
            name: String::new(),
            end_time_unix_nano: START,
            ..span_with(vec![])
        };
        let record = normalize(&span).span;
        assert_eq!((record.parent_span_id, record.name.as_str()), (None, ""));
        assert_eq!((record.trace_id.as_str(), record.span_id.as_str()), (TRACE_HEX, SPAN_HEX));
        let record = normalize(&Span { parent_span_id: vec![0xab; 8], ..span_with(vec![]) }).span;
        assert_eq!(record.parent_span_id.as_deref(), Some("abababababababab"));
    }

    #[test]
    fn project_and_service_precedence() {
        let project_of = |resource: &[KeyValue], hint: Option<&str>| {
            let resource = Arc::new(attributes_to_json(resource));
            let span = span_with(vec![
                kv("gen_ai.request.model", "gpt-4o"),
                kv("gen_ai.usage.input_tokens", 1),
            ]);
            let normalized = normalize_span(
                &SpanRef::of(&span),
                &SpanContext { resource: &resource, project_hint: hint, now_ms: NOW_MS },
            )
            .unwrap();
            let call_project = normalized.call.unwrap().project.unwrap().0.into_owned();
            assert_eq!(normalized.span.project, call_project);
            (call_project, normalized.span.service)
        };
        let tally = kv("tally.project", "billing");
        let phoenix = kv("openinference.project.name", "phoenix-proj");
        let service = kv("service.name", "checkout");
        assert_eq!(
            project_of(&[tally.clone(), phoenix.clone(), service.clone()], Some("from-key")),
            ("billing".to_owned(), "checkout".to_owned())
        );
        assert_eq!(project_of(&[phoenix, service], Some("from-key")).0, "phoenix-proj");
        assert_eq!(
            project_of(&[kv("tally.project", " ")], Some("from-key")),
            ("from-key".to_owned(), "unknown_service".to_owned())
        );
        assert_eq!(project_of(&[], None).0, "default");
        let resource = Resource { attributes: vec![tally], ..Default::default() };
        assert_eq!(
            resource_attributes(Some(&ResourceRef::of(&resource)), &mut Truncation::default())["tally.project"],
            "billing"
        );
        assert!(resource_attributes(None, &mut Truncation::default()).is_empty());
    }

    #[test]
    fn span_times_are_bounded() {
        let at = |start: u64, end: u64| {
            let mut span = span_with(vec![]);
            (span.start_time_unix_nano, span.end_time_unix_nano) = (start, end);
            error_of(&span)
        };
        assert_eq!(at(1, 2).to_string(), "start_time_unix_nano: is before 2000-01-01T00:00:00Z");
        assert_eq!(at(0, START).field, "start_time_unix_nano");
        let ahead = (NOW_MS as u64 + 86_400_000 + 60_000) * 1_000_000;
        assert_eq!(
            at(START, ahead).to_string(),
            "end_time_unix_nano: is more than 1 day in the future"
        );
        assert_eq!(at(ahead, ahead).field, "start_time_unix_nano");
        assert_eq!(at(START, 0).field, "end_time_unix_nano");
    }

    #[test]
    fn attributes_are_packed_unless_a_key_repeats_where_the_last_one_wins() {
        let context = |resource| SpanContext { resource, project_hint: None, now_ms: NOW_MS };
        let resource = Arc::new(Attributes::new());
        let span = span_with(vec![kv("a", 1), kv("b", "x")]);
        let normalized = normalize_span(&SpanRef::of(&span), &context(&resource)).unwrap();
        assert!(normalized.span.attributes.is_empty());
        let packed = normalized.span.packed.as_ref().unwrap().unpack();
        assert_eq!(Value::Object(packed), serde_json::json!({"a": 1, "b": "x"}));

        let span = span_with(vec![
            kv("user.id", "first"),
            kv("user.id", "last"),
            KeyValue { key: "user.id".into(), value: None, ..Default::default() },
        ]);
        let normalized = normalize_span(&SpanRef::of(&span), &context(&resource)).unwrap();
        assert!(normalized.span.packed.is_none());
        assert_eq!(normalized.span.attributes["user.id"], Value::Null);
        // Facts keep the last value sent.
        assert_eq!(normalized.span.user.as_deref(), Some("last"));
    }

    #[test]
    fn facts_ignore_storage_caps() {
        // Prompts that use up the stored map's budget do not hide a long
        // usage attribute from accounting.
        let mut kvs: Vec<KeyValue> =
            (0..9).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        let details = format!(r#"{{"input":10,"output":5,"padding":"{}"}}"#, "y".repeat(400));
        kvs.push(kv("langfuse.observation.type", "generation"));
        kvs.push(kv("langfuse.observation.model.name", "gpt-4o"));
        kvs.push(kv("langfuse.observation.usage_details", details));
        let span = span_with(kvs);
        assert_eq!(tokens(&call_of(&span)), (10, 5, 15, 0, 0, 0));
    }

    #[test]
    fn events_convert() {
        let mut span = span_with(vec![]);
        span.events = vec![Event {
            time_unix_nano: START + 5,
            name: "exception".to_owned(),
            attributes: vec![kv("exception.type", "ValueError")],
            ..Default::default()
        }];
        let events = normalize(&span).span.events;
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].time_ns, events[0].name.as_str()), (START as i64 + 5, "exception"));
        assert_eq!(events[0].attributes["exception.type"], "ValueError");
    }

    #[test]
    fn span_events_are_capped() {
        let mut span = span_with(vec![]);
        span.events = (0..200).map(|i| event("gen_ai.content.completion.chunk", i)).collect();
        assert_eq!(normalize(&span).span.events.len(), MAX_EVENTS);
    }

    #[test]
    fn span_attribute_counts_and_keys_are_capped_and_marked() {
        // Hardening: 200,000 attributes and a 1 MB key were stored whole.
        let mut kvs: Vec<KeyValue> =
            (0..200_000).map(|i| kv(&format!("attr.{i}"), "value")).collect();
        kvs.insert(0, kv(&"k".repeat(1 << 20), "big key"));
        let mut span = span_with(kvs);
        span.dropped_attributes_count = 3;
        span.events = (0..200).map(|i| event("chunk", i)).collect();
        let normalized = normalize(&span);
        let attributes = &normalized.span.attributes;
        assert!(attributes.keys().all(|k| k.len() <= MAX_KEY_BYTES));
        // 128 kept, plus the marks.
        assert_eq!(attributes.len(), MAX_ATTRIBUTES + 3);
        assert_eq!(attributes["tally.truncated"], true);
        assert_eq!(attributes["tally.dropped_attributes_count"], 200_001 - 128 + 3);
        assert_eq!(attributes["tally.dropped_events_count"], 72);
        assert_eq!(
            normalized.truncation,
            Truncation { attributes: 200_001 - 128, values: 0, events: 72, spans: 0 }
        );
    }
}
