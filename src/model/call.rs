//! `LlmCall`: one model request, after normalization and accounting.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// A small string map; sorted so that equal tag sets serialize identically.
pub type Tags = BTreeMap<String, String>;

/// `text` in ASCII lowercase, borrowed when it has no capitals (as nearly
/// every enumerated value sent is).
pub fn ascii_lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Parses `text` trimmed, ignoring ASCII case.
fn lowercase_then<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    parse(&ascii_lowercase(text.trim()))
}

/// What kind of model request a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Chat,
    Completion,
    Embedding,
    Rerank,
    Image,
    Audio,
    Other,
}

impl Operation {
    const ALL: [Operation; 7] = [
        Operation::Chat,
        Operation::Completion,
        Operation::Embedding,
        Operation::Rerank,
        Operation::Image,
        Operation::Audio,
        Operation::Other,
    ];

    /// The operation whose `as u8` is `code` (`Other` for an unknown one).
    pub fn from_code(code: u8) -> Operation {
        Self::ALL.into_iter().find(|o| *o as u8 == code).unwrap_or(Operation::Other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completion => "completion",
            Operation::Embedding => "embedding",
            Operation::Rerank => "rerank",
            Operation::Image => "image",
            Operation::Audio => "audio",
            Operation::Other => "other",
        }
    }

    /// Parses the canonical names and the spellings gateways commonly send
    /// (GPUStack's `chat_completion`, OpenAI's `embeddings`, GenAI's
    /// `text_completion`, …).
    pub fn parse(text: &str) -> Option<Operation> {
        lowercase_then(text, Operation::parse_lowercase)
    }

    fn parse_lowercase(text: &str) -> Option<Operation> {
        let op = match text {
            "chat" | "chat_completion" | "chat_completions" | "chat.completions"
            | "generate_content" | "responses" | "messages" => Operation::Chat,
            "completion" | "completions" | "text_completion" => Operation::Completion,
            "embedding" | "embeddings" => Operation::Embedding,
            "rerank" | "reranker" | "reranking" => Operation::Rerank,
            "image" | "images" | "image_generation" | "image_edit" => Operation::Image,
            "audio" | "audio_speech" | "audio_transcription" | "speech" | "transcription" => {
                Operation::Audio
            }
            "other" => Operation::Other,
            _ => return None,
        };
        Some(op)
    }

    /// Embedding and reranker models report only a total token count.
    pub fn reports_only_total(self) -> bool {
        matches!(self, Operation::Embedding | Operation::Rerank)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
    Cancelled,
}

impl Status {
    /// The status whose `as u8` is `code` (`Ok` for an unknown one).
    pub fn from_code(code: u8) -> Status {
        [Status::Ok, Status::Error, Status::Cancelled]
            .into_iter()
            .find(|s| *s as u8 == code)
            .unwrap_or(Status::Ok)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        lowercase_then(text, Status::parse_lowercase)
    }

    fn parse_lowercase(text: &str) -> Option<Status> {
        match text {
            "ok" | "success" | "unset" => Some(Status::Ok),
            "error" | "failed" | "failure" => Some(Status::Error),
            "cancelled" | "canceled" | "aborted" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a call was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    UsageReport,
    Span,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::UsageReport => "usage_report",
            Source::Span => "span",
        }
    }

    pub fn parse(text: &str) -> Option<Source> {
        match text {
            "usage_report" => Some(Source::UsageReport),
            "span" => Some(Source::Span),
            _ => None,
        }
    }
}

/// One model request with its accounting already applied: tokens are in
/// Tally's canonical form (input includes cached, output includes reasoning),
/// estimates are filled in and flagged, and the cost is computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmCall {
    /// Idempotency key; calls without one are counted every time they arrive.
    pub id: Option<String>,
    pub project: String,
    /// The instant the call is accounted at: completed_at, else started_at,
    /// else arrival (unix ms, UTC).
    pub time_ms: i64,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub model: String,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub operation: Operation,
    pub user: Option<String>,
    /// A keyed fingerprint of the API key, never the key itself.
    pub api_key: Option<String>,
    pub session: Option<String>,
    pub route: Option<String>,
    pub cluster: Option<String>,
    pub tags: Tags,
    /// How many requests this record stands for (GPUStack's `request_count`).
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub completed: bool,
    pub estimated: bool,
    pub request_bytes: Option<u64>,
    pub output_chunks: Option<u64>,
    pub streaming: Option<bool>,
    pub ttft_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub status: Status,
    pub error_type: Option<String>,
    /// Tally's own cost; 0 when the model is unpriced (`price_id` is None).
    pub cost_usd: f64,
    pub price_id: Option<String>,
    /// The cost the caller reported, kept beside Tally's own.
    pub reported_cost_usd: Option<f64>,
    pub source: Source,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
}

impl LlmCall {
    pub fn is_unpriced(&self) -> bool {
        self.price_id.is_none()
    }

    pub fn is_error(&self) -> bool {
        self.status == Status::Error
    }
}

#[cfg(test)]
impl LlmCall {
    /// A plain completed chat call, for tests to adjust with `..`.
    pub fn example() -> LlmCall {
        LlmCall {
            id: None,
            project: "default".into(),
            time_ms: 0,
            started_at_ms: None,
            completed_at_ms: None,
            model: "gpt-4o".into(),
            response_model: None,
            provider: None,
            operation: Operation::Chat,
            user: None,
            api_key: None,
            session: None,
            route: None,
            cluster: None,
            tags: Tags::new(),
            requests: 1,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            completed: true,
            estimated: false,
            request_bytes: None,
            output_chunks: None,
            streaming: None,
            ttft_ms: None,
            duration_ms: None,
            status: Status::Ok,
            error_type: None,
            cost_usd: 0.0,
            price_id: None,
            reported_cost_usd: None,
            source: Source::UsageReport,
            trace_id: None,
            span_id: None,
        }
    }
}
