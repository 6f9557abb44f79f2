//! `SpanRecord` and `LogRecord`: trace spans and log records after
//! normalization, with the LLM facts a span carried.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Attribute maps as stored and served: OTLP values turned into JSON.
pub type Attributes = Map<String, Value>;

/// What a span did, in Tally's vocabulary (semconv.md "Span kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Agent,
    Llm,
    Embedding,
    Tool,
    Retrieval,
    Reranker,
    Memory,
    Chain,
    Workflow,
    Guardrail,
    Evaluator,
    Unknown,
}

impl SpanKind {
    pub const ALL: [SpanKind; 12] = [
        SpanKind::Agent,
        SpanKind::Llm,
        SpanKind::Embedding,
        SpanKind::Tool,
        SpanKind::Retrieval,
        SpanKind::Reranker,
        SpanKind::Memory,
        SpanKind::Chain,
        SpanKind::Workflow,
        SpanKind::Guardrail,
        SpanKind::Evaluator,
        SpanKind::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Agent => "agent",
            SpanKind::Llm => "llm",
            SpanKind::Embedding => "embedding",
            SpanKind::Tool => "tool",
            SpanKind::Retrieval => "retrieval",
            SpanKind::Reranker => "reranker",
            SpanKind::Memory => "memory",
            SpanKind::Chain => "chain",
            SpanKind::Workflow => "workflow",
            SpanKind::Guardrail => "guardrail",
            SpanKind::Evaluator => "evaluator",
            SpanKind::Unknown => "unknown",
        }
    }

    /// Parses Tally's own names only (as in `kind=` query parameters).
    pub fn parse(text: &str) -> Option<SpanKind> {
        SpanKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The span's OTLP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<SpanStatus> {
        match text {
            "unset" => Some(SpanStatus::Unset),
            "ok" => Some(SpanStatus::Ok),
            "error" => Some(SpanStatus::Error),
            _ => None,
        }
    }
}

/// A timestamped event inside a span (exceptions, first-token marks, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Attributes,
}

/// A span's attributes in their stored form: a MessagePack map, as the
/// span store writes maps. Made as a span is normalized, so that its
/// attributes go to storage without becoming a map of strings on the way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedAttributes(pub Vec<u8>);

impl PackedAttributes {
    pub fn unpack(&self) -> Attributes {
        rmp_serde::from_slice(&self.0).unwrap_or_default()
    }
}

/// One span. The LLM fields are filled for spans that describe a model call
/// (from the `LlmCall` derived from it, after the accounting rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub project: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// `service.name` of the resource (`unknown_service` when absent).
    pub service: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status: SpanStatus,
    pub status_message: Option<String>,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    /// Shared by the spans of one export that came with it.
    pub resource: Arc<Attributes>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    /// Did this span produce an `LlmCall` in the ledger?
    pub llm_call: bool,
    /// The attributes, packed, when `attributes` is left empty for them
    /// (spans as ingest makes them; read back, spans have a map).
    #[serde(skip)]
    pub packed: Option<PackedAttributes>,
}

impl SpanRecord {
    /// The attributes as a map, unpacked if they are packed.
    pub fn attributes_map(&self) -> Cow<'_, Attributes> {
        match &self.packed {
            Some(packed) => Cow::Owned(packed.unpack()),
            None => Cow::Borrowed(&self.attributes),
        }
    }

    /// Puts packed attributes into `attributes`, for what changes the map.
    pub fn unpack_attributes(&mut self) {
        if let Some(packed) = self.packed.take() {
            self.attributes = packed.unpack();
        }
    }

    pub fn duration_ms(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e6
    }

    /// A plain chain span of service `svc`, for tests to adjust.
    pub fn example() -> SpanRecord {
        SpanRecord {
            project: "default".to_owned(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            span_id: "b7ad6b7169203331".to_owned(),
            parent_span_id: None,
            name: "op".to_owned(),
            kind: SpanKind::Chain,
            service: "svc".to_owned(),
            start_ns: 0,
            end_ns: 0,
            status: SpanStatus::Unset,
            status_message: None,
            attributes: Attributes::new(),
            events: Vec::new(),
            resource: Arc::default(),
            model: None,
            provider: None,
            user: None,
            session: None,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cost_usd: 0.0,
            llm_call: false,
            packed: None,
        }
    }
}

/// One log record, linked to a span when it carries trace and span ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub project: String,
    /// Event time, else observed time (unix ns).
    pub time_ns: i64,
    pub severity_number: i32,
    pub severity_text: Option<String>,
    /// The body as JSON (strings stay strings).
    pub body: Value,
    pub attributes: Attributes,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub service: String,
}
