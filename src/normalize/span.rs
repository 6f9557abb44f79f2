//! OTLP spans into `SpanRecord`s, and the model call a span describes into a
//! `RawReport` for the accounting rules: span kinds, the field map of every
//! LLM telemetry convention Tally reads (OTel GenAI, OpenInference,
//! OpenLLMetry, Langfuse, Vercel AI SDK; see semconv.md) and the caps on
//! stored attribute sizes. Pure: no I/O, no clock.

use std::borrow::Cow;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use chrono::{DateTime, NaiveDateTime};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde_json::{Map, Number, Value};

use super::limits::{Truncation, check_time_ns};
use super::usage_report::RawReport;
use super::values::{Amount, Count, Instant, MAX_COUNT, TextRef};
use crate::model::{
    Attributes, Operation, SpanEvent, SpanKind, SpanRecord, SpanStatus, ascii_lowercase,
};

/// Longest string value an attribute map stores whole; prompts and
/// completions can be megabytes.
const MAX_VALUE_BYTES: usize = 8 * 1024;
/// String content one attribute map stores in total.
const MAX_MAP_BYTES: usize = 64 * 1024;
/// Strings up to this length are never cut by the map's total, so that ids
/// and model names survive in a map whose prompts used up the budget.
const SHORT_STRING_BYTES: usize = 256;
/// What long strings leave of a map's text for short strings and keys.
const SHORT_RESERVE_BYTES: usize = 8 * 1024;
/// Longest array an attribute value keeps.
const MAX_ARRAY_ITEMS: usize = 1024;
/// Most events stored per span: OpenLLMetry sends one per streamed chunk.
pub const MAX_EVENTS: usize = 128;
/// Most attributes one map keeps (a span's, a resource's, an event's, a log
/// record's, and each nested key-value list), as the OpenTelemetry SDKs'
/// default span limits.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest attribute key kept; an attribute with a longer key is dropped
/// (a cut key could collide with another).
pub const MAX_KEY_BYTES: usize = 256;
/// What a value that is not a string (a number, a boolean, null, an array
/// or list itself) costs of the map's text budget, so that the budget
/// bounds every map, not only its strings.
const SCALAR_BYTES: usize = 8;

/// Event names that mark the first streamed token: OpenInference's, the
/// per-chunk event of OpenLLMetry (its first one) and the Vercel AI SDK's.
/// Compared in lowercase.
const FIRST_TOKEN_EVENTS: [&str; 3] =
    ["first token stream event", "gen_ai.content.completion.chunk", "ai.stream.firstchunk"];

// The field map (semconv.md): for each fact, the attributes that carry it,
// the first one present wins. Vercel AI SDK names (`ai.*`) come last.
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
const INPUT_KEYS: &[&str] = &[
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
];
const OUTPUT_KEYS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
];
const TOTAL_KEYS: &[&str] = &[
    "gen_ai.usage.total_tokens",
    "llm.usage.total_tokens",
    "llm.token_count.total",
    "ai.usage.totalTokens",
];
const CACHE_READ_KEYS: &[&str] = &[
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "ai.usage.cachedInputTokens",
];
const CACHE_WRITE_KEYS: &[&str] = &[
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
];
const REASONING_KEYS: &[&str] = &[
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.reasoningTokens",
];
const STREAMING_KEYS: &[&str] =
    &["gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming"];
const LANGFUSE_USAGE: &str = "langfuse.observation.usage_details";
const LANGFUSE_COST: &str = "langfuse.observation.cost_details";

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

/// A resource's attributes, converted as `attributes_to_json` does and
/// marked (`mark_truncated`) when cut; what was cut is added to `cut`.
pub fn resource_attributes(resource: Option<&Resource>, cut: &mut Truncation) -> Attributes {
    let Some(resource) = resource else {
        return Attributes::new();
    };
    let mut budget = StringBudget::for_attributes();
    let mut attributes = key_values_to_json(&resource.attributes, &mut budget);
    mark_truncated(&mut attributes, budget.cut, resource.dropped_attributes_count);
    cut.add(budget.cut);
    attributes
}

/// OTLP attributes as stored: ints stay JSON integers, non-finite doubles
/// become strings, bytes lowercase hex, arrays arrays and key-value lists
/// objects. A map keeps 128 attributes and 64 KiB of text (keys and
/// strings, nested ones included; other values count 8 bytes each); an
/// attribute whose key is over 256 bytes, or that finds no budget left for
/// its key, is dropped. Strings longer than 8 KiB are cut, and long strings
/// stop 8 KiB short of the map's budget, keeping at least their first 256
/// bytes while it lasts, so that short values after them survive; a cut
/// string ends in `…[truncated N bytes]`. Arrays keep 1024 items (fewer once
/// the budget is spent). Embedding vectors are dropped.
pub fn attributes_to_json(kvs: &[KeyValue]) -> Attributes {
    key_values_to_json(kvs, &mut StringBudget::for_attributes())
}

/// Marks a map that lost something to the caps: `tally.truncated` when Tally
/// cut anything, `tally.dropped_attributes_count` counting the attributes
/// dropped here and those the sender dropped (`dropped_by_sender`).
pub(super) fn mark_truncated(attributes: &mut Attributes, cut: Truncation, dropped_by_sender: u32) {
    let dropped = cut.attributes + u64::from(dropped_by_sender);
    if dropped > 0 {
        attributes.insert("tally.dropped_attributes_count".to_owned(), Value::from(dropped));
    }
    if !cut.is_empty() {
        attributes.insert("tally.truncated".to_owned(), Value::Bool(true));
    }
}

/// `attributes_to_json`, moving the keys and string values instead of
/// copying them.
fn attributes_into_json(kvs: Vec<KeyValue>, budget: &mut StringBudget) -> Attributes {
    let mut map = Map::new();
    for kv in kvs {
        if is_dropped(&kv.key) {
            continue;
        }
        if map.len() >= MAX_ATTRIBUTES || !budget.admit(&kv.key) {
            budget.cut.attributes += 1;
            continue;
        }
        let value = match kv.value.and_then(|value| value.value) {
            None => Value::Null,
            Some(any_value::Value::StringValue(text)) => Value::String(budget.keep_owned(text)),
            Some(other) => any_value_to_json(&AnyValue { value: Some(other) }, budget),
        };
        map.insert(kv.key, value);
    }
    map
}

/// OpenInference sends whole embedding vectors as attributes
/// (`embedding.embeddings.N.embedding.vector`): thousands of doubles per
/// input that nobody reads from a trace view.
fn is_dropped(key: &str) -> bool {
    key.starts_with("embedding.embeddings.") && key.contains(".vector")
}

/// One OTLP value as JSON, its strings capped by `budget`.
pub(super) fn any_value_to_json(value: &AnyValue, budget: &mut StringBudget) -> Value {
    let Some(value) = &value.value else {
        budget.charge(SCALAR_BYTES);
        return Value::Null;
    };
    match value {
        any_value::Value::StringValue(text) => Value::String(budget.keep(text)),
        any_value::Value::BoolValue(flag) => {
            budget.charge(SCALAR_BYTES);
            Value::Bool(*flag)
        }
        any_value::Value::IntValue(int) => {
            budget.charge(SCALAR_BYTES);
            Value::from(*int)
        }
        any_value::Value::DoubleValue(double) => {
            budget.charge(SCALAR_BYTES);
            Number::from_f64(*double)
                .map_or_else(|| Value::String(double.to_string()), Value::Number)
        }
        any_value::Value::BytesValue(bytes) => Value::String(budget.keep(&hex::encode(bytes))),
        any_value::Value::ArrayValue(array) => {
            budget.charge(SCALAR_BYTES);
            let mut items = Vec::with_capacity(array.values.len().min(MAX_ARRAY_ITEMS));
            for item in &array.values {
                if items.len() == MAX_ARRAY_ITEMS || budget.is_spent() {
                    break;
                }
                items.push(any_value_to_json(item, budget));
            }
            let dropped = array.values.len() - items.len();
            if dropped > 0 {
                budget.cut.values += 1;
                items.push(Value::String(format!("…[truncated {dropped} items]")));
            }
            Value::Array(items)
        }
        any_value::Value::KvlistValue(list) => {
            budget.charge(SCALAR_BYTES);
            Value::Object(key_values_to_json(&list.values, budget))
        }
        // Meaningful only in the profiles signal, which says to treat it as
        // absent everywhere else.
        any_value::Value::StringValueStrindex(_) => Value::Null,
    }
}

pub(super) fn key_values_to_json(
    kvs: &[KeyValue],
    budget: &mut StringBudget,
) -> Map<String, Value> {
    let mut map = Map::new();
    for kv in kvs {
        if is_dropped(&kv.key) {
            continue;
        }
        if map.len() >= MAX_ATTRIBUTES || !budget.admit(&kv.key) {
            budget.cut.attributes += 1;
            continue;
        }
        let value = kv.value.as_ref().map_or(Value::Null, |value| any_value_to_json(value, budget));
        map.insert(kv.key.clone(), value);
    }
    map
}

/// How much text a conversion may still store, and what it cut.
pub(super) struct StringBudget {
    per_value: usize,
    remaining: usize,
    /// Left to short strings and keys: long strings stop this far short.
    reserve: usize,
    pub(super) cut: Truncation,
}

impl StringBudget {
    pub(super) fn new(per_value: usize, total: usize) -> Self {
        Self { per_value, remaining: total, reserve: 0, cut: Truncation::default() }
    }

    /// The budget of one attribute map (or of all the events of a span).
    pub(super) fn for_attributes() -> Self {
        Self { reserve: SHORT_RESERVE_BYTES, ..Self::new(MAX_VALUE_BYTES, MAX_MAP_BYTES) }
    }

    /// Charges an attribute's key; false when the attribute must be dropped
    /// (the key is too long, or no budget is left for it).
    fn admit(&mut self, key: &str) -> bool {
        if key.len() > MAX_KEY_BYTES || key.len() >= self.remaining {
            return false;
        }
        self.remaining -= key.len();
        true
    }

    fn charge(&mut self, bytes: usize) {
        self.remaining = self.remaining.saturating_sub(bytes);
    }

    fn is_spent(&self) -> bool {
        self.remaining == 0
    }

    /// How much of a text of `len` bytes to keep, charged to the budget.
    fn take(&mut self, len: usize) -> usize {
        let limit = if len <= SHORT_STRING_BYTES {
            len.min(self.remaining)
        } else {
            let beyond_reserve = self.remaining.saturating_sub(self.reserve);
            self.per_value.min(beyond_reserve.max(SHORT_STRING_BYTES.min(self.remaining)))
        };
        let kept = len.min(limit);
        if kept < len {
            self.cut.values += 1;
        }
        self.remaining -= kept;
        limit
    }

    fn keep(&mut self, text: &str) -> String {
        let limit = self.take(text.len());
        if text.len() <= limit { text.to_owned() } else { truncated(text, limit) }
    }

    fn keep_owned(&mut self, text: String) -> String {
        let limit = self.take(text.len());
        if text.len() <= limit { text } else { truncated(&text, limit) }
    }
}

/// The first `limit` bytes of `text` (back to a character boundary), and
/// how much was cut.
fn truncated(text: &str, limit: usize) -> String {
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated {} bytes]", &text[..cut], text.len() - cut)
}

/// Lowercase hex of an id of `len` bytes; `None` when all zeros, which OTLP
/// defines as invalid (absent). The error says what the length was.
pub(super) fn id_hex(bytes: &[u8], len: usize) -> Result<Option<String>, String> {
    if bytes.len() != len {
        return Err(format!("must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|byte| *byte == 0) {
        return Ok(None);
    }
    // Through a slice: `hex::encode` builds its string a char at a time.
    let mut text = vec![0; 2 * len];
    hex::encode_to_slice(bytes, &mut text).expect("the slice is twice the id's length");
    Ok(Some(String::from_utf8(text).expect("hex digits are ASCII")))
}

/// Validates one span and maps it onto the record model.
/// The span's attributes are moved out of it (into the record).
pub fn normalize_span(span: &mut Span, ctx: &SpanContext<'_>) -> Result<NormalizedSpan, SpanError> {
    let trace_id = id_hex(&span.trace_id, 16)
        .map_err(|message| SpanError::new("trace_id", message))?
        .ok_or_else(|| SpanError::new("trace_id", "must not be all zeros"))?;
    let span_id = id_hex(&span.span_id, 8)
        .map_err(|message| SpanError::new("span_id", message))?
        .ok_or_else(|| SpanError::new("span_id", "must not be all zeros"))?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        id_hex(&span.parent_span_id, 8).map_err(|_| {
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
    let kind = classify(&facts);
    let (status, status_message) = span_status(span, &facts);
    // The events of a span share one map's text budget.
    let mut event_budget = StringBudget::for_attributes();
    let events = span
        .events
        .iter()
        .take(MAX_EVENTS)
        .map(|event| {
            let dropped_before = event_budget.cut.attributes;
            let mut attributes = key_values_to_json(&event.attributes, &mut event_budget);
            let dropped = event_budget.cut.attributes - dropped_before;
            if dropped > 0 || event.dropped_attributes_count > 0 {
                let cut = Truncation { attributes: dropped, ..Truncation::default() };
                mark_truncated(&mut attributes, cut, event.dropped_attributes_count);
            }
            SpanEvent {
                // Past the year 2262: clamped rather than failing the span.
                time_ns: i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX),
                name: event.name.clone(),
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
        name: span.name.clone(),
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
    };
    let call = model_call(&facts, span, &record);
    let mut budget = StringBudget::for_attributes();
    record.attributes = attributes_into_json(std::mem::take(&mut span.attributes), &mut budget);
    truncation.add(budget.cut);
    mark_truncated(&mut record.attributes, truncation, span.dropped_attributes_count);
    let dropped_events = truncation.events + u64::from(span.dropped_events_count);
    if dropped_events > 0 {
        record
            .attributes
            .insert("tally.dropped_events_count".to_owned(), Value::from(dropped_events));
    }
    Ok(NormalizedSpan { span: record, call, truncation })
}

/// A span's time as the record model stores it, within the bounds of
/// `limits::check_time_ns`.
pub(super) fn span_time(field: &'static str, nanos: u64, now_ms: i64) -> Result<i64, SpanError> {
    check_time_ns(nanos, now_ms).map_err(|bound| SpanError::new(field, bound.to_string()))
}

/// The span's attributes by key, as sent. Facts are read from here, not
/// from the capped copy that is stored, so caps never change accounting.
struct Facts<'a> {
    by_key: FxHashMap<&'a str, &'a any_value::Value>,
}

impl<'a> Facts<'a> {
    fn new(kvs: &'a [KeyValue]) -> Self {
        let mut by_key = FxHashMap::with_capacity_and_hasher(kvs.len(), Default::default());
        by_key.extend(
            kvs.iter().filter_map(|kv| Some((kv.key.as_str(), kv.value.as_ref()?.value.as_ref()?))),
        );
        Self { by_key }
    }

    fn get(&self, key: &str) -> Option<&'a any_value::Value> {
        self.by_key.get(key).copied()
    }

    /// A non-empty trimmed string; integers count too (numeric user ids).
    fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            any_value::Value::StringValue(text) => {
                let text = text.trim();
                (!text.is_empty()).then(|| text.to_owned())
            }
            any_value::Value::IntValue(int) => Some(int.to_string()),
            _ => None,
        }
    }

    fn first_text(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|key| self.text(key))
    }

    /// An enumerated value, compared case-insensitively (borrowed when it
    /// is lowercase already, as nearly every one is).
    fn lowercase(&self, key: &str) -> Option<Cow<'a, str>> {
        match self.get(key)? {
            any_value::Value::StringValue(text) => {
                Some(ascii_lowercase(text.trim())).filter(|text| !text.is_empty())
            }
            any_value::Value::IntValue(int) => Some(Cow::Owned(int.to_string())),
            _ => None,
        }
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            any_value::Value::BoolValue(flag) => Some(*flag),
            any_value::Value::StringValue(text) => {
                match text.trim().to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            }
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
    fn from_any(value: &'a any_value::Value) -> Option<Self> {
        match value {
            any_value::Value::IntValue(int) => Some(Numeric::Int(*int)),
            any_value::Value::DoubleValue(double) => Some(Numeric::Float(*double)),
            any_value::Value::StringValue(text) => Some(Numeric::Text(text)),
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

/// Classifies in the order of semconv.md "Span kinds"; the first convention
/// whose value Tally recognizes decides. Values are case-insensitive.
///
/// Two fallbacks follow the list, consulted only when it decides nothing:
/// OpenLLMetry's legacy `llm.request.type` and the Vercel AI SDK's
/// `ai.operationId`. Langfuse's generic types do not decide: a Langfuse
/// `span` that nothing else classifies is a chain, an `event` unknown.
fn classify(facts: &Facts<'_>) -> SpanKind {
    let langfuse_type = facts.lowercase("langfuse.observation.type");
    let decided = langfuse_type
        .as_deref()
        .and_then(langfuse_kind)
        .or_else(|| {
            facts.lowercase("openinference.span.kind").as_deref().and_then(openinference_kind)
        })
        .or_else(|| facts.lowercase("gen_ai.operation.name").as_deref().and_then(gen_ai_kind))
        .or_else(|| facts.lowercase("traceloop.span.kind").as_deref().and_then(traceloop_kind))
        .or_else(|| facts.text("gen_ai.tool.name").map(|_| SpanKind::Tool))
        .or_else(|| facts.lowercase("tally.span.kind").as_deref().and_then(SpanKind::parse))
        .or_else(|| facts.lowercase("llm.request.type").as_deref().and_then(request_type_kind))
        .or_else(|| facts.text("ai.operationId").as_deref().and_then(vercel_kind));
    match decided {
        Some(kind) => kind,
        None if langfuse_type.as_deref() == Some("span") => SpanKind::Chain,
        None => SpanKind::Unknown,
    }
}

/// Langfuse observation types. `span` and `event` are generic and left to
/// the other conventions (see `classify`).
fn langfuse_kind(value: &str) -> Option<SpanKind> {
    let kind = match value {
        "generation" => SpanKind::Llm,
        "embedding" => SpanKind::Embedding,
        "agent" => SpanKind::Agent,
        "tool" => SpanKind::Tool,
        "chain" => SpanKind::Chain,
        "retriever" => SpanKind::Retrieval,
        "evaluator" => SpanKind::Evaluator,
        "guardrail" => SpanKind::Guardrail,
        _ => return None,
    };
    Some(kind)
}

fn openinference_kind(value: &str) -> Option<SpanKind> {
    let kind = match value {
        "llm" => SpanKind::Llm,
        "embedding" => SpanKind::Embedding,
        "chain" | "prompt" => SpanKind::Chain,
        "retriever" => SpanKind::Retrieval,
        "reranker" => SpanKind::Reranker,
        "tool" => SpanKind::Tool,
        "agent" => SpanKind::Agent,
        "guardrail" => SpanKind::Guardrail,
        "evaluator" => SpanKind::Evaluator,
        _ => return None,
    };
    Some(kind)
}

fn gen_ai_kind(value: &str) -> Option<SpanKind> {
    let kind = match value {
        "chat" | "text_completion" | "generate_content" => SpanKind::Llm,
        "embeddings" => SpanKind::Embedding,
        "retrieval" => SpanKind::Retrieval,
        "execute_tool" => SpanKind::Tool,
        "invoke_agent" | "create_agent" => SpanKind::Agent,
        "invoke_workflow" => SpanKind::Workflow,
        _ => return None,
    };
    Some(kind)
}

fn traceloop_kind(value: &str) -> Option<SpanKind> {
    let kind = match value {
        "workflow" => SpanKind::Workflow,
        "task" => SpanKind::Chain,
        "agent" => SpanKind::Agent,
        "tool" => SpanKind::Tool,
        "llm" => SpanKind::Llm,
        _ => return None,
    };
    Some(kind)
}

fn request_type_kind(value: &str) -> Option<SpanKind> {
    let kind = match value {
        "chat" | "completion" => SpanKind::Llm,
        "embedding" => SpanKind::Embedding,
        "rerank" => SpanKind::Reranker,
        _ => return None,
    };
    Some(kind)
}

/// The Vercel AI SDK's `ai.generateText.doGenerate`-style spans are the
/// provider calls; `ai.generateText` and the like wrap them (and repeat
/// their usage summed over steps), so they are chains.
fn vercel_kind(operation: &str) -> Option<SpanKind> {
    if !operation.starts_with("ai.") {
        return None;
    }
    let kind = if operation.ends_with(".doGenerate") || operation.ends_with(".doStream") {
        SpanKind::Llm
    } else if operation.ends_with(".doEmbed") {
        SpanKind::Embedding
    } else if operation == "ai.toolCall" {
        SpanKind::Tool
    } else {
        SpanKind::Chain
    };
    Some(kind)
}

fn provider(facts: &Facts<'_>) -> Option<String> {
    facts
        .text("gen_ai.provider.name")
        // The Vercel AI SDK names `<provider>.<api>` (`openai.chat`), in
        // `gen_ai.system` too: keep the provider.
        .or_else(|| {
            let vercel = facts.text("ai.model.provider")?;
            let provider = vercel.split('.').next().unwrap_or_default().trim();
            (!provider.is_empty()).then(|| provider.to_owned())
        })
        .or_else(|| facts.first_text(&["gen_ai.system", "llm.provider", "llm.system"]))
}

/// The OTLP status, turned to an error by Langfuse's `level` = ERROR.
fn span_status(span: &Span, facts: &Facts<'_>) -> (SpanStatus, Option<String>) {
    let (code, message) =
        span.status.as_ref().map_or((0, ""), |status| (status.code, status.message.as_str()));
    let mut status = match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => SpanStatus::Ok,
        Ok(StatusCode::Error) => SpanStatus::Error,
        Ok(StatusCode::Unset) | Err(_) => SpanStatus::Unset,
    };
    let mut message = Some(message.trim()).filter(|m| !m.is_empty()).map(str::to_owned);
    if facts.lowercase("langfuse.observation.level").as_deref() == Some("error") {
        status = SpanStatus::Error;
        if message.is_none() {
            message = facts.text("langfuse.observation.status_message");
        }
    }
    (status, message)
}

/// Token counts as one convention reported them, made inclusive.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    input: Option<u64>,
    output: Option<u64>,
    total: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    reasoning: Option<u64>,
}

impl Usage {
    fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Langfuse's usage (one JSON attribute) when present, taken whole: its
/// counts are exclusive and must not mix with other conventions'. Else
/// every other convention, field by field.
fn read_usage(facts: &Facts<'_>) -> Result<Usage, String> {
    if let Some(details) = facts.get(LANGFUSE_USAGE) {
        return langfuse_usage(details).map_err(|message| format!("{LANGFUSE_USAGE}{message}"));
    }
    Ok(Usage {
        input: facts.first_count(INPUT_KEYS)?,
        output: facts.first_count(OUTPUT_KEYS)?,
        total: facts.first_count(TOTAL_KEYS)?,
        cache_read: facts.first_count(CACHE_READ_KEYS)?,
        cache_write: facts.first_count(CACHE_WRITE_KEYS)?,
        reasoning: facts.first_count(REASONING_KEYS)?,
    })
}

/// A JSON object sent as a string attribute (or, rarely, as a kvlist).
fn json_object(value: &any_value::Value) -> Option<Map<String, Value>> {
    match value {
        any_value::Value::StringValue(text) => serde_json::from_str(text).ok(),
        any_value::Value::KvlistValue(list) => Some(attributes_to_json(&list.values)),
        _ => None,
    }
}

/// Langfuse's `usage_details` are exclusive: `input` leaves out cached
/// reads and writes, `output` leaves out reasoning. They are added back so
/// that the report is in Tally's inclusive form. Errors start with the key
/// (".input: …"), for the caller to prefix with the attribute name.
fn langfuse_usage(value: &any_value::Value) -> Result<Usage, String> {
    let details = json_object(value).ok_or(": must be a JSON object")?;
    let first = |keys: &[&str]| -> Result<Option<u64>, String> {
        for key in keys {
            match details.get(*key) {
                None | Some(Value::Null) => continue,
                Some(value) => {
                    let count = match Numeric::from_json(value) {
                        Some(number) => number.count(),
                        None => Err("must be a non-negative integer".to_owned()),
                    };
                    return count.map(Some).map_err(|message| format!(".{key}: {message}"));
                }
            }
        }
        Ok(None)
    };
    let input = first(&["input"])?;
    let output = first(&["output"])?;
    let total = first(&["total"])?;
    let cache_read =
        first(&["input_cached_tokens", "cache_read_input_tokens", "input_cache_read"])?;
    let cache_write = first(&["input_cache_creation", "cache_creation_input_tokens"])?;
    let reasoning = first(&["output_reasoning_tokens", "output_reasoning"])?;

    let inclusive = |parts: &[Option<u64>]| -> Result<Option<u64>, String> {
        if parts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let sum: u64 = parts.iter().flatten().sum();
        if sum > MAX_COUNT {
            return Err(format!(": token counts add up to more than {MAX_COUNT}"));
        }
        Ok(Some(sum))
    };
    Ok(Usage {
        input: inclusive(&[input, cache_read, cache_write])?,
        output: inclusive(&[output, reasoning])?,
        total,
        cache_read,
        cache_write,
        reasoning,
    })
}

/// A cost the SDK reported: OpenInference's, Langfuse's (`total`, else the
/// sum of its parts), or `gen_ai.usage.cost`. An unreadable cost is dropped.
fn reported_cost(facts: &Facts<'_>) -> Option<f64> {
    if let Some(cost) = facts.amount("llm.cost.total") {
        return Some(cost);
    }
    if let Some(details) = facts.get(LANGFUSE_COST).and_then(json_object) {
        let amount = |value: &Value| Numeric::from_json(value).and_then(Numeric::amount);
        let cost = match details.get("total") {
            Some(total) => amount(total),
            None if details.is_empty() => None,
            None => details.values().map(amount).sum::<Option<f64>>(),
        };
        if cost.is_some() {
            return cost;
        }
    }
    facts.amount("gen_ai.usage.cost")
}

/// Time to first token in ms: GenAI's seconds attribute, the Vercel AI
/// SDK's milliseconds, Langfuse's completion start instant, else the
/// earliest first-token event.
fn time_to_first_token_ms(facts: &Facts<'_>, span: &Span, start_ns: i64) -> Option<f64> {
    if let Some(seconds) = facts.amount("gen_ai.response.time_to_first_chunk") {
        return Some(seconds * 1000.0);
    }
    if let Some(ms) = facts.amount("ai.response.msToFirstChunk") {
        return Some(ms);
    }
    if let Some(text) = facts.text("langfuse.observation.completion_start_time")
        && let Some(first_ns) = parse_instant_ns(&text)
        && first_ns >= start_ns
    {
        return Some((first_ns - start_ns) as f64 / 1e6);
    }
    let first_ns = first_token_event_ns(span)?;
    let first_ns = i64::try_from(first_ns).ok().filter(|ns| *ns >= start_ns)?;
    Some((first_ns - start_ns) as f64 / 1e6)
}

fn first_token_event_ns(span: &Span) -> Option<u64> {
    span.events
        .iter()
        .filter(|event| FIRST_TOKEN_EVENTS.contains(&event.name.to_ascii_lowercase().as_str()))
        .map(|event| event.time_unix_nano)
        .min()
}

/// RFC 3339, or an ISO instant without offset taken as UTC; Langfuse may
/// send either, JSON-quoted.
fn parse_instant_ns(text: &str) -> Option<i64> {
    let text = text.trim().trim_matches('"');
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return instant.timestamp_nanos_opt();
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()?
        .and_utc()
        .timestamp_nanos_opt()
}

/// The model call a span describes, as a report for the accounting rules.
///
/// A span describes a call when it has a model and reports tokens; an llm,
/// embedding or reranker span that failed counts without tokens, so failed
/// requests reach the ledger. Agent, chain and workflow spans never do: they
/// carry their children's usage summed (GenAI `invoke_agent`, the Vercel AI
/// SDK's outer spans), which would count it twice. A token count that is
/// not a non-negative integer keeps the span but drops the call.
fn model_call(facts: &Facts<'_>, span: &Span, record: &SpanRecord) -> Option<RawReport<'static>> {
    if matches!(record.kind, SpanKind::Agent | SpanKind::Chain | SpanKind::Workflow) {
        return None;
    }
    let model = record.model.clone()?;
    let usage = read_usage(facts).ok()?;
    let is_model_kind =
        matches!(record.kind, SpanKind::Llm | SpanKind::Embedding | SpanKind::Reranker);
    let failed = record.status == SpanStatus::Error;
    if usage.is_empty() && !(is_model_kind && failed) {
        return None;
    }

    let operation = facts
        .text("gen_ai.operation.name")
        .and_then(|name| Operation::parse(&name))
        .or_else(|| facts.text("llm.request.type").and_then(|name| Operation::parse(&name)))
        .unwrap_or(match record.kind {
            SpanKind::Embedding => Operation::Embedding,
            SpanKind::Reranker => Operation::Rerank,
            _ => Operation::Chat,
        });
    let is_vercel_stream = facts.text("ai.operationId").is_some_and(|op| op.ends_with(".doStream"));
    let streaming = STREAMING_KEYS
        .iter()
        .find_map(|key| facts.flag(key))
        .or_else(|| (is_vercel_stream || first_token_event_ns(span).is_some()).then_some(true));
    let started_ms = record.start_ns / 1_000_000;
    let completed_ms = record.end_ns / 1_000_000;
    let owned = |value: String| TextRef(Cow::Owned(value));
    let fixed = |value: &'static str| TextRef(Cow::Borrowed(value));
    let text = |value: Option<String>| value.map(owned);

    Some(RawReport {
        id: text(facts.text("gen_ai.response.id")),
        project: Some(owned(record.project.clone())),
        model: Some(owned(model)),
        response_model: text(facts.first_text(RESPONSE_MODEL_KEYS)),
        provider: text(record.provider.clone()),
        operation: Some(fixed(operation.as_str())),
        user: text(record.user.clone()),
        session: text(record.session.clone()),
        input_tokens: usage.input.map(Count),
        output_tokens: usage.output.map(Count),
        total_tokens: usage.total.map(Count),
        cache_read_tokens: usage.cache_read.map(Count),
        cache_write_tokens: usage.cache_write.map(Count),
        reasoning_tokens: usage.reasoning.map(Count),
        started_at: Some(Instant((started_ms > 0).then_some(started_ms))),
        completed_at: Some(Instant((completed_ms > 0).then_some(completed_ms))),
        duration_ms: Some(Amount(record.duration_ms())),
        ttft_ms: time_to_first_token_ms(facts, span, record.start_ns).map(Amount),
        streaming,
        status: failed.then(|| fixed("error")),
        error_type: text(facts.text("error.type")),
        cost_usd: reported_cost(facts).map(Amount),
        trace_id: Some(owned(record.trace_id.clone())),
        span_id: Some(owned(record.span_id.clone())),
        ..RawReport::default()
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{Status, span::Event};

    use super::*;
    use crate::model::{LlmCall, Status as CallStatus};
    use crate::normalize::usage_report::{NormalizeContext, normalize_report};
    use crate::normalize::{AccountingRules, KeyFingerprinter};
    use crate::pricing::PriceTable;

    /// 2025-10-09T08:53:20Z.
    const START: u64 = 1_760_000_000_000_000_000;
    const START_MS: i64 = 1_760_000_000_000;
    const NOW_MS: i64 = 1_800_000_000_000;
    const TRACE_HEX: &str = "0102030405060708090a0b0c0d0e0f10";
    const SPAN_HEX: &str = "0102030405060708";

    trait IntoAny {
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

    fn any(value: impl IntoAny) -> AnyValue {
        AnyValue { value: Some(value.into_any()) }
    }

    fn kv(key: &str, value: impl IntoAny) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(any(value)), ..Default::default() }
    }

    fn event(name: &str, after_ms: u64) -> Event {
        Event {
            time_unix_nano: START + after_ms * 1_000_000,
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// A valid 2.5 s span with the given attributes.
    fn span_with(attributes: Vec<KeyValue>) -> Span {
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

    fn normalize(span: &Span) -> NormalizedSpan {
        let resource = Arc::new(Attributes::new());
        let context = SpanContext { resource: &resource, project_hint: None, now_ms: NOW_MS };
        normalize_span(&mut span.clone(), &context).unwrap()
    }

    fn error_of(span: &Span) -> SpanError {
        let resource = Arc::new(Attributes::new());
        let context = SpanContext { resource: &resource, project_hint: None, now_ms: NOW_MS };
        normalize_span(&mut span.clone(), &context).unwrap_err()
    }

    #[test]
    fn attributes_moved_out_convert_as_copied_ones_do() {
        let long = "é".repeat(MAX_VALUE_BYTES);
        let kvs = vec![
            kv("gen_ai.request.model", "gpt-4o"),
            kv("count", 3),
            kv("long", long.as_str()),
            kv("embedding.embeddings.0.embedding.vector", "dropped"),
            KeyValue { key: "empty".into(), value: None, ..Default::default() },
            kv("count", 4),
        ];
        let moved = attributes_into_json(kvs.clone(), &mut StringBudget::for_attributes());
        assert_eq!(moved, attributes_to_json(&kvs));
        assert_eq!(moved["count"], 4);
        assert!(
            moved["long"]
                .as_str()
                .unwrap()
                .ends_with(&format!("[truncated {} bytes]", long.len() - MAX_VALUE_BYTES))
        );
        assert!(!moved.contains_key("embedding.embeddings.0.embedding.vector"));
    }

    /// The report through the accounting rules, as the ingest path does.
    fn account(report: RawReport) -> LlmCall {
        let prices = PriceTable::builtin();
        let fingerprinter = KeyFingerprinter::new(b"test");
        let ctx = NormalizeContext {
            now_ms: NOW_MS,
            rules: AccountingRules::default(),
            prices: &prices,
            fingerprinter: &fingerprinter,
            default_project: "default",
        };
        normalize_report(report, &ctx).unwrap()
    }

    fn call_of(span: &Span) -> LlmCall {
        account(normalize(span).call.expect("the span describes a model call"))
    }

    /// (input, output, total, cache_read, cache_write, reasoning)
    fn tokens(call: &LlmCall) -> (u64, u64, u64, u64, u64, u64) {
        (
            call.input_tokens,
            call.output_tokens,
            call.total_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        )
    }

    #[test]
    fn genai_current_names() {
        let span = span_with(vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.response.model", "gpt-4o-2024-08-06"),
            kv("gen_ai.response.id", "chatcmpl-1"),
            kv("gen_ai.usage.input_tokens", 1000),
            kv("gen_ai.usage.output_tokens", 200),
            kv("gen_ai.usage.cache_read.input_tokens", 400),
            kv("gen_ai.usage.cache_creation.input_tokens", 100),
            kv("gen_ai.usage.reasoning.output_tokens", 50),
            kv("gen_ai.conversation.id", "conv-7"),
            kv("user.id", "u-1"),
            kv("gen_ai.request.stream", true),
            kv("gen_ai.response.time_to_first_chunk", 0.25),
        ]);
        let normalized = normalize(&span);
        let record = &normalized.span;
        assert_eq!(record.kind, SpanKind::Llm);
        assert_eq!(record.model.as_deref(), Some("gpt-4o"));
        assert_eq!(record.provider.as_deref(), Some("openai"));
        assert_eq!(record.user.as_deref(), Some("u-1"));
        assert_eq!(record.session.as_deref(), Some("conv-7"));
        assert_eq!((record.input_tokens, record.cost_usd, record.llm_call), (0, 0.0, false));

        let call = account(normalized.call.unwrap());
        assert_eq!(call.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(call.model, "gpt-4o");
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(call.operation, Operation::Chat);
        assert_eq!(tokens(&call), (1000, 200, 1200, 400, 100, 50));
        assert_eq!(call.user.as_deref(), Some("u-1"));
        assert_eq!(call.session.as_deref(), Some("conv-7"));
        assert_eq!(call.streaming, Some(true));
        assert_eq!(call.ttft_ms, Some(250.0));
        assert_eq!(call.duration_ms, Some(2500.0));
        assert_eq!(
            (call.started_at_ms, call.completed_at_ms),
            (Some(START_MS), Some(START_MS + 2500))
        );
        assert_eq!(call.time_ms, START_MS + 2500);
        assert_eq!(call.status, CallStatus::Ok);
        assert_eq!(call.reported_cost_usd, None);
        assert_eq!(call.price_id.as_deref(), Some("catalog:gpt-4o"));
        assert_eq!(call.trace_id.as_deref(), Some(TRACE_HEX));
        assert_eq!(call.span_id.as_deref(), Some(SPAN_HEX));
        assert_eq!(call.project, "default");
        assert!(call.tags.is_empty());
    }

    #[test]
    fn genai_legacy_names() {
        let span = span_with(vec![
            kv("gen_ai.system", "openai"),
            kv("llm.request.type", "chat"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("gen_ai.usage.prompt_tokens", 120),
            kv("gen_ai.usage.completion_tokens", 30),
            kv("gen_ai.usage.cache_read_input_tokens", 20),
            kv("gen_ai.usage.cache_creation_input_tokens", 10),
            kv("llm.usage.total_tokens", 150),
        ]);
        let normalized = normalize(&span);
        assert_eq!(normalized.span.kind, SpanKind::Llm, "from llm.request.type");
        let call = account(normalized.call.unwrap());
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(call.operation, Operation::Chat);
        assert_eq!(tokens(&call), (120, 30, 150, 20, 10, 0));
        assert_eq!(call.price_id.as_deref(), Some("catalog:gpt-4o-mini"));
    }

    #[test]
    fn openinference_llm_with_cache_read() {
        let mut span = span_with(vec![
            kv("openinference.span.kind", "LLM"),
            kv("llm.model_name", "claude-sonnet-4-5"),
            kv("llm.system", "anthropic"),
            kv("llm.token_count.prompt", 2000),
            kv("llm.token_count.completion", 300),
            kv("llm.token_count.total", 2300),
            kv("llm.token_count.prompt_details.cache_read", 1500),
            kv("llm.token_count.prompt_details.cache_write", 200),
            kv("llm.token_count.completion_details.reasoning", 100),
            kv("llm.cost.total", 0.0123),
            kv("session.id", "s-1"),
            kv("user.id", 42),
        ]);
        span.events = vec![event("First Token Stream Event", 400)];
        let normalized = normalize(&span);
        assert_eq!(normalized.span.kind, SpanKind::Llm);
        assert_eq!(normalized.span.user.as_deref(), Some("42"));
        let call = account(normalized.call.unwrap());
        assert_eq!(call.model, "claude-sonnet-4-5");
        assert_eq!(call.provider.as_deref(), Some("anthropic"));
        assert_eq!(tokens(&call), (2000, 300, 2300, 1500, 200, 100));
        assert_eq!(call.reported_cost_usd, Some(0.0123));
        assert_eq!((call.ttft_ms, call.streaming), (Some(400.0), Some(true)));
        assert_eq!(call.session.as_deref(), Some("s-1"));
        assert_eq!(call.price_id.as_deref(), Some("catalog:claude-sonnet-4-5"));
        // Tally's cost stands beside the reported one, computed from tokens.
        let expected = 300.0 * 3e-6 + 1500.0 * 3e-7 + 200.0 * 3.75e-6 + 300.0 * 1.5e-5;
        assert!((call.cost_usd - expected).abs() < 1e-12, "{}", call.cost_usd);

        // `llm.provider` (the host) wins over `llm.system` (the vendor).
        span.attributes.push(kv("llm.provider", "azure"));
        assert_eq!(normalize(&span).span.provider.as_deref(), Some("azure"));
    }

    #[test]
    fn openinference_embedding_drops_vectors() {
        let vector = ArrayValue { values: (0..1536).map(|i| any(f64::from(i) / 1536.0)).collect() };
        let span = span_with(vec![
            kv("openinference.span.kind", "EMBEDDING"),
            kv("embedding.model_name", "text-embedding-3-small"),
            kv("llm.system", "openai"),
            kv("llm.token_count.total", 64),
            kv("embedding.embeddings.0.embedding.text", "hello"),
            kv("embedding.embeddings.0.embedding.vector", any_value::Value::ArrayValue(vector)),
        ]);
        let normalized = normalize(&span);
        let record = &normalized.span;
        assert_eq!(record.kind, SpanKind::Embedding);
        assert_eq!(record.model.as_deref(), Some("text-embedding-3-small"));
        assert!(!record.attributes.contains_key("embedding.embeddings.0.embedding.vector"));
        assert_eq!(record.attributes["embedding.embeddings.0.embedding.text"], "hello");
        let call = account(normalized.call.unwrap());
        assert_eq!(call.operation, Operation::Embedding);
        assert_eq!(tokens(&call), (64, 0, 64, 0, 0, 0), "an embedding total becomes input");
        assert_eq!(call.price_id.as_deref(), Some("catalog:text-embedding-3-small"));
    }

    #[test]
    fn openllmetry_0_62_shape() {
        let mut span = span_with(vec![
            kv("llm.request.type", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "o3-mini"),
            kv("gen_ai.response.model", "o3-mini-2025-01-31"),
            kv("gen_ai.usage.input_tokens", 500),
            kv("gen_ai.usage.output_tokens", 900),
            kv("gen_ai.usage.reasoning_tokens", 600),
            kv("gen_ai.usage.total_tokens", 1400),
            kv("gen_ai.usage.cache_read.input_tokens", 128),
            kv("gen_ai.user", "end-user-9"),
            kv("traceloop.association.properties.session_id", "sess-3"),
            kv("llm.is_streaming", true),
        ]);
        // One event per streamed chunk, not necessarily in order.
        span.events = vec![
            event("gen_ai.content.completion.chunk", 700),
            event("gen_ai.content.completion.chunk", 650),
            event("gen_ai.content.completion.chunk", 900),
        ];
        let normalized = normalize(&span);
        assert_eq!(normalized.span.kind, SpanKind::Llm);
        assert_eq!(normalized.span.events.len(), 3);
        let call = account(normalized.call.unwrap());
        assert_eq!(tokens(&call), (500, 900, 1400, 128, 0, 600));
        assert_eq!(call.user.as_deref(), Some("end-user-9"));
        assert_eq!(call.session.as_deref(), Some("sess-3"));
        assert_eq!((call.ttft_ms, call.streaming), (Some(650.0), Some(true)));
        assert_eq!(call.response_model.as_deref(), Some("o3-mini-2025-01-31"));
        assert_eq!(call.price_id.as_deref(), Some("catalog:o3-mini"));
    }

    #[test]
    fn langfuse_generation() {
        let span = span_with(vec![
            kv("langfuse.observation.type", "generation"),
            kv("langfuse.observation.model.name", "gpt-4o"),
            // Exclusive: input leaves out the 400 cached, output the 150
            // reasoning tokens. Numbers arrive as ints, doubles and strings.
            kv(
                LANGFUSE_USAGE,
                r#"{"input":600,"output":150.0,"total":1300,"input_cached_tokens":"400","input_cache_creation":0,"output_reasoning_tokens":150}"#,
            ),
            kv(LANGFUSE_COST, r#"{"input":0.0015,"output":0.003,"total":0.0045}"#),
            kv("langfuse.observation.completion_start_time", r#""2025-10-09T08:53:20.300000Z""#),
            kv("langfuse.observation.level", "ERROR"),
            kv("langfuse.observation.status_message", "rate limited"),
            kv("langfuse.user.id", "lf-user"),
            kv("langfuse.session.id", "lf-session"),
        ]);
        let normalized = normalize(&span);
        let record = &normalized.span;
        assert_eq!(record.kind, SpanKind::Llm);
        assert_eq!(record.status, SpanStatus::Error);
        assert_eq!(record.status_message.as_deref(), Some("rate limited"));
        let call = account(normalized.call.unwrap());
        assert_eq!(call.model, "gpt-4o");
        assert_eq!(
            call.provider.as_deref(),
            Some("openai"),
            "Langfuse sends none; pricing finds it"
        );
        assert_eq!(tokens(&call), (1000, 300, 1300, 400, 0, 150));
        assert_eq!(call.reported_cost_usd, Some(0.0045));
        assert_eq!(call.ttft_ms, Some(300.0));
        assert_eq!(call.status, CallStatus::Error);
        assert_eq!(call.user.as_deref(), Some("lf-user"));
        assert_eq!(call.session.as_deref(), Some("lf-session"));

        // Other key spellings, a cost without a total, an offset-less instant.
        let span = span_with(vec![
            kv("langfuse.observation.type", "generation"),
            kv("langfuse.observation.model.name", "gpt-4o"),
            kv(
                LANGFUSE_USAGE,
                r#"{"input":10,"output":5,"cache_read_input_tokens":30,"cache_creation_input_tokens":2}"#,
            ),
            kv(LANGFUSE_COST, r#"{"input":0.25,"output":0.5}"#),
            kv("langfuse.observation.completion_start_time", "2025-10-09T08:53:21.5"),
        ]);
        let call = call_of(&span);
        assert_eq!(tokens(&call), (42, 5, 47, 30, 2, 0));
        assert_eq!(call.reported_cost_usd, Some(0.75));
        assert_eq!(call.ttft_ms, Some(1500.0));
        assert_eq!(call.status, CallStatus::Ok);
    }

    #[test]
    fn unreadable_counts_keep_the_span_and_drop_the_call() {
        for attribute in [
            kv(LANGFUSE_USAGE, r#"{"input":-3,"output":1}"#),
            kv(LANGFUSE_USAGE, r#"{"input":2.5}"#),
            kv(LANGFUSE_USAGE, "not json"),
            kv("gen_ai.usage.input_tokens", "lots"),
            kv("gen_ai.usage.input_tokens", -1),
            kv("gen_ai.usage.output_tokens", 7.5),
            kv("gen_ai.usage.output_tokens", true),
        ] {
            let key = attribute.key.clone();
            let span = span_with(vec![
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.request.model", "gpt-4o"),
                kv("gen_ai.usage.input_tokens", 5),
                attribute,
            ]);
            let normalized = normalize(&span);
            assert_eq!(normalized.span.kind, SpanKind::Llm, "{key}");
            assert!(normalized.call.is_none(), "{key}");
        }
        let facts_span = span_with(vec![kv("gen_ai.usage.output_tokens", 7.5)]);
        let facts = Facts::new(&facts_span.attributes);
        assert_eq!(
            read_usage(&facts).unwrap_err(),
            "gen_ai.usage.output_tokens: must be a non-negative integer up to 1000000000000, got 7.5"
        );
        // Whole doubles and digit strings are counts.
        let span = span_with(vec![
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", 12.0),
            kv("gen_ai.usage.output_tokens", "7"),
        ]);
        assert_eq!(tokens(&call_of(&span)), (12, 7, 19, 0, 0, 0));
    }

    #[test]
    fn vercel_ai_sdk() {
        let inner = span_with(vec![
            kv("ai.operationId", "ai.streamText.doStream"),
            kv("ai.model.id", "gpt-4o-mini"),
            kv("ai.model.provider", "openai.chat"),
            kv("gen_ai.system", "openai.chat"),
            kv("ai.usage.promptTokens", 10),
            kv("ai.usage.completionTokens", 5),
            kv("ai.response.msToFirstChunk", 120.5),
        ]);
        let normalized = normalize(&inner);
        assert_eq!(normalized.span.kind, SpanKind::Llm);
        let call = account(normalized.call.unwrap());
        assert_eq!(call.model, "gpt-4o-mini");
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(tokens(&call), (10, 5, 15, 0, 0, 0));
        assert_eq!((call.ttft_ms, call.streaming), (Some(120.5), Some(true)));

        // The outer span repeats the usage summed over steps: not a call.
        let outer = span_with(vec![
            kv("ai.operationId", "ai.streamText"),
            kv("ai.model.id", "gpt-4o-mini"),
            kv("ai.model.provider", "openai.chat"),
            kv("ai.usage.inputTokens", 10),
            kv("ai.usage.outputTokens", 5),
        ]);
        let normalized = normalize(&outer);
        assert_eq!(normalized.span.kind, SpanKind::Chain);
        assert!(normalized.call.is_none());

        let embed = span_with(vec![
            kv("ai.operationId", "ai.embed.doEmbed"),
            kv("ai.model.id", "text-embedding-3-small"),
            kv("ai.usage.tokens", 8),
            kv("gen_ai.usage.input_tokens", 8),
        ]);
        let call = call_of(&embed);
        assert_eq!((call.operation, call.input_tokens), (Operation::Embedding, 8));
    }

    #[test]
    fn kinds_follow_the_convention_order() {
        let layers = [
            (kv("langfuse.observation.type", "tool"), SpanKind::Tool),
            (kv("openinference.span.kind", "LLM"), SpanKind::Llm),
            (kv("gen_ai.operation.name", "embeddings"), SpanKind::Embedding),
            (kv("traceloop.span.kind", "workflow"), SpanKind::Workflow),
            (kv("gen_ai.tool.name", "search"), SpanKind::Tool),
            (kv("tally.span.kind", "memory"), SpanKind::Memory),
            (kv("llm.request.type", "rerank"), SpanKind::Reranker),
            (kv("ai.operationId", "ai.toolCall"), SpanKind::Tool),
        ];
        // All layers present, then each one peeled off from the top.
        for top in 0..layers.len() {
            let attributes = layers[top..].iter().map(|(kv, _)| kv.clone()).collect();
            assert_eq!(classify_span(attributes), layers[top].1, "top layer {}", layers[top].0.key);
        }
        assert_eq!(classify_span(vec![]), SpanKind::Unknown);

        let cases = [
            (kv("langfuse.observation.type", "Generation"), SpanKind::Llm),
            (kv("langfuse.observation.type", "retriever"), SpanKind::Retrieval),
            (kv("langfuse.observation.type", "event"), SpanKind::Unknown),
            (kv("langfuse.observation.type", "span"), SpanKind::Chain),
            (kv("openinference.span.kind", "PROMPT"), SpanKind::Chain),
            (kv("openinference.span.kind", "RETRIEVER"), SpanKind::Retrieval),
            (kv("openinference.span.kind", "reranker"), SpanKind::Reranker),
            (kv("openinference.span.kind", "UNKNOWN"), SpanKind::Unknown),
            (kv("gen_ai.operation.name", "generate_content"), SpanKind::Llm),
            (kv("gen_ai.operation.name", "invoke_workflow"), SpanKind::Workflow),
            (kv("gen_ai.operation.name", "create_agent"), SpanKind::Agent),
            (kv("traceloop.span.kind", "task"), SpanKind::Chain),
            (kv("tally.span.kind", "GUARDRAIL"), SpanKind::Guardrail),
        ];
        for (attribute, expected) in cases {
            let label = format!("{attribute:?}");
            assert_eq!(classify_span(vec![attribute]), expected, "{label}");
        }
        // A generic Langfuse span leaves the decision to later conventions.
        assert_eq!(
            classify_span(vec![
                kv("langfuse.observation.type", "span"),
                kv("gen_ai.operation.name", "chat"),
            ]),
            SpanKind::Llm
        );
    }

    fn classify_span(attributes: Vec<KeyValue>) -> SpanKind {
        normalize(&span_with(attributes)).span.kind
    }

    #[test]
    fn aggregate_spans_are_not_calls() {
        let span = span_with(vec![
            kv("gen_ai.operation.name", "invoke_agent"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", 5000),
            kv("gen_ai.usage.output_tokens", 800),
        ]);
        let normalized = normalize(&span);
        assert_eq!(normalized.span.kind, SpanKind::Agent);
        assert_eq!(normalized.span.model.as_deref(), Some("gpt-4o"));
        assert!(normalized.call.is_none());

        // Any other span with a model and tokens is a call; without a model,
        // or without tokens (unless it failed), it is not.
        let tool = span_with(vec![
            kv("gen_ai.tool.name", "summarize"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", 5),
        ]);
        assert_eq!(call_of(&tool).input_tokens, 5);
        let no_model = span_with(vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.usage.input_tokens", 5),
        ]);
        assert!(normalize(&no_model).call.is_none());
        let no_tokens = span_with(vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o"),
        ]);
        assert!(normalize(&no_tokens).call.is_none());
    }

    #[test]
    fn failed_model_spans_are_calls_without_tokens() {
        let mut span = span_with(vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("error.type", "RateLimitError"),
        ]);
        span.status = Some(Status { message: " 429 Too Many Requests ".to_owned(), code: 2 });
        let normalized = normalize(&span);
        assert_eq!(normalized.span.status, SpanStatus::Error);
        assert_eq!(normalized.span.status_message.as_deref(), Some("429 Too Many Requests"));
        let call = account(normalized.call.unwrap());
        assert_eq!(call.status, CallStatus::Error);
        assert_eq!(call.error_type.as_deref(), Some("RateLimitError"));
        assert_eq!(tokens(&call), (0, 0, 0, 0, 0, 0));

        span.status = Some(Status { message: String::new(), code: 1 });
        let normalized = normalize(&span);
        assert_eq!(
            (normalized.span.status, normalized.span.status_message),
            (SpanStatus::Ok, None)
        );
        assert!(normalized.call.is_none());
    }

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
                &mut span.clone(),
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
            resource_attributes(Some(&resource), &mut Truncation::default())["tally.project"],
            "billing"
        );
        assert!(resource_attributes(None, &mut Truncation::default()).is_empty());
    }

    #[test]
    fn attribute_conversion() {
        let list = KeyValueList { values: vec![kv("a", 1), kv("b", "two")] };
        let array = ArrayValue { values: vec![any(1), any("x"), any(true), any(0.5)] };
        let attributes = attributes_to_json(&[
            kv("s", "text"),
            kv("b", false),
            kv("i", -7),
            kv("d", 1.5),
            kv("nan", f64::NAN),
            kv("inf", f64::NEG_INFINITY),
            kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
            kv("list", any_value::Value::KvlistValue(list)),
            kv("array", any_value::Value::ArrayValue(array)),
            KeyValue { key: "empty".to_owned(), value: None, ..Default::default() },
        ]);
        let expected = serde_json::json!({
            "s": "text", "b": false, "i": -7, "d": 1.5, "nan": "NaN", "inf": "-inf",
            "bytes": "deadbeef", "list": {"a": 1, "b": "two"}, "array": [1, "x", true, 0.5],
            "empty": null,
        });
        assert_eq!(Value::Object(attributes), expected);
    }

    #[test]
    fn attribute_sizes_are_capped() {
        // 3-byte characters: 8 KiB is not a character boundary.
        let long = "€".repeat(3000);
        let attributes = attributes_to_json(&[kv("prompt", long.as_str())]);
        let kept = attributes["prompt"].as_str().unwrap();
        assert_eq!(kept, format!("{}…[truncated 810 bytes]", "€".repeat(2730)));

        // Nine long values: seven fill the 64 KiB but for the reserve of
        // short values, the others keep a short prefix, and short values
        // after them stay whole.
        let mut kvs: Vec<KeyValue> =
            (0..9).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        kvs.push(kv("gen_ai.request.model", "gpt-4o"));
        let attributes = attributes_to_json(&kvs);
        let truncated_at = |key: &str| {
            let text = attributes[key].as_str().unwrap();
            text.find('…').unwrap_or(text.len())
        };
        assert_eq!(truncated_at("p0"), 8192);
        assert_eq!(truncated_at("p5"), 8192);
        assert_eq!(truncated_at("p6"), 8178, "stops at the reserve for short values");
        assert_eq!(truncated_at("p7"), 256);
        assert_eq!(truncated_at("p8"), 256);
        assert_eq!(attributes["gen_ai.request.model"], "gpt-4o");

        let array = ArrayValue { values: (0..1030).map(any).collect() };
        let attributes = attributes_to_json(&[kv("array", any_value::Value::ArrayValue(array))]);
        let items = attributes["array"].as_array().unwrap();
        assert_eq!(items.len(), 1025);
        assert_eq!(items[1024], "…[truncated 6 items]");

        let mut span = span_with(vec![]);
        span.events = (0..200).map(|i| event("gen_ai.content.completion.chunk", i)).collect();
        assert_eq!(normalize(&span).span.events.len(), MAX_EVENTS);
    }

    /// The text a stored map holds: keys and strings, nested ones included.
    fn text_bytes(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(text_bytes).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
            _ => 0,
        }
    }

    #[test]
    fn attribute_counts_keys_and_text_are_capped_and_marked() {
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

        // Short values under long keys after long values: the text budget
        // drops what no longer fits, so the map stays within 64 KiB.
        let mut kvs: Vec<KeyValue> =
            (0..5).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        kvs.extend((0..120).map(|i| kv(&format!("{i:0>250}"), "v".repeat(250).as_str())));
        let attributes = attributes_to_json(&kvs);
        // 64 KiB, plus the marks of what was cut.
        assert!(text_bytes(&Value::Object(attributes.clone())) <= MAX_MAP_BYTES + 200);
        assert!(attributes.len() < 125);
        assert!(attributes.get("tally.truncated").is_none(), "marked only by its callers");

        // Nested arrays and lists are charged too.
        let array = || {
            any_value::Value::ArrayValue(ArrayValue {
                values: (0..1024).map(|_| any("x".repeat(200).as_str())).collect(),
            })
        };
        let kvs: Vec<KeyValue> = (0..100).map(|i| kv(&format!("a{i}"), array())).collect();
        let attributes = attributes_to_json(&kvs);
        let stored = serde_json::to_string(&attributes).unwrap();
        assert!(stored.len() < 2 * MAX_MAP_BYTES, "{} bytes stored", stored.len());
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
    fn facts_ignore_storage_caps() {
        // Prompts that use up the stored map's budget do not hide a long
        // usage attribute from accounting.
        let mut kvs: Vec<KeyValue> =
            (0..9).map(|i| kv(&format!("p{i}"), "x".repeat(10_000))).collect();
        let details = format!(r#"{{"input":10,"output":5,"padding":"{}"}}"#, "y".repeat(400));
        kvs.push(kv("langfuse.observation.type", "generation"));
        kvs.push(kv("langfuse.observation.model.name", "gpt-4o"));
        kvs.push(kv(LANGFUSE_USAGE, details));
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
}
