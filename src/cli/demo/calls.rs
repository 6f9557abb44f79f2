//! One model call as the gateway sees it: its tokens, timing and outcome
//! drawn from the model's character, and the usage report the gateway
//! sends to `POST /api/v1/usage` for it.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::cast::{ApiKey, Model, long_tail};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Ok,
    /// The provider failed: (error type, message).
    Failed(&'static str, &'static str),
    /// The client went away mid-stream, before the usage chunk: the gateway
    /// knows only the request's size and the chunks it relayed.
    CutOff,
}

impl Outcome {
    /// The error type and message of a failed call.
    pub fn failure(self) -> Option<(&'static str, &'static str)> {
        match self {
            Outcome::Failed(kind, message) => Some((kind, message)),
            _ => None,
        }
    }
}

/// The errors providers answer, with how often each comes up.
const ERRORS: &[(&str, &str, u32)] = &[
    ("RateLimitError", "429 Too Many Requests: rate limit reached for requests per minute", 40),
    ("APITimeoutError", "request timed out after 60 s waiting for the first token", 15),
    ("InternalServerError", "500 upstream error: the model is overloaded, try again later", 30),
    ("ContextLengthExceeded", "400 the prompt is longer than the model's context window", 15),
];

/// Draws an error type by its weight.
pub fn draw_error(rng: &mut StdRng) -> Outcome {
    let total: u32 = ERRORS.iter().map(|e| e.2).sum();
    let mut at = rng.random_range(0..total);
    for &(kind, message, weight) in ERRORS {
        if at < weight {
            return Outcome::Failed(kind, message);
        }
        at -= weight;
    }
    Outcome::Failed(ERRORS[0].0, ERRORS[0].1)
}

/// Who made a call and through which of the gateway's doors.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user: &'static str,
    pub team: &'static str,
    pub key: &'static ApiKey,
    pub route: &'static str,
    /// The agent that made it (a tag), if any.
    pub agent: Option<&'static str>,
}

/// The size of a call before it is made.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    /// The share of the prompt that is a cached prefix (0 to 1).
    pub cached_share: f64,
    /// Writes the prompt prefix to the cache (first call of a session).
    pub cache_write: bool,
    pub output: u64,
    pub streaming: bool,
}

#[derive(Debug, Clone)]
pub struct Call {
    /// The provider's response id: the report's idempotency key, and the
    /// span's `gen_ai.response.id` when the call is traced.
    pub id: String,
    pub model: &'static Model,
    pub caller: Caller,
    pub session: Option<String>,
    pub start_ms: i64,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub streaming: bool,
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    pub request_bytes: u64,
    pub output_chunks: u64,
    pub outcome: Outcome,
    /// (trace id, span id) in hex, when the call is a span of a trace.
    pub span: Option<(String, String)>,
}

impl Call {
    /// A call of `model` starting at `start_ms`, shaped by `shape`, ending
    /// in `outcome`. `slowdown` stretches its latency (1 = normal).
    pub fn new(
        model: &'static Model,
        caller: Caller,
        shape: Shape,
        start_ms: i64,
        outcome: Outcome,
        slowdown: f64,
        rng: &mut StdRng,
    ) -> Call {
        let id = format!("{}-{}", response_prefix(model), super::cast::hex_id(12, rng));
        let mut call = Call {
            id,
            model,
            caller,
            session: None,
            start_ms,
            duration_ms: 0.0,
            ttft_ms: None,
            streaming: shape.streaming && !model.embedding,
            input: shape.input.max(1),
            cache_read: 0,
            cache_write: 0,
            output: 0,
            reasoning: 0,
            request_bytes: shape.input * 4 + rng.random_range(200..900),
            output_chunks: 0,
            outcome,
            span: None,
        };
        if model.embedding {
            call.duration_ms = long_tail(60.0 + call.input as f64 / 40.0, 0.35, rng) * slowdown;
            if let Outcome::Failed(..) = outcome {
                call.input = 0;
            }
            return call;
        }
        let cached = (shape.input as f64 * shape.cached_share) as u64;
        if shape.cache_write && model.cache_writes {
            call.cache_write = cached;
        } else {
            call.cache_read = cached;
        }
        call.output = shape.output.max(1);
        if model.reasoning {
            call.reasoning = (call.output as f64 * rng.random_range(0.4..2.5)) as u64;
            call.output += call.reasoning;
        }
        // Time to the first token grows with the uncached prompt; reasoning
        // happens before it.
        let uncached = (call.input - call.cache_read) as f64;
        let first = long_tail(model.first_token_ms + uncached / 60.0, 0.3, rng) * slowdown
            + call.reasoning as f64 / model.tokens_per_s * 1000.0;
        let visible = (call.output - call.reasoning) as f64;
        let generation = visible / model.tokens_per_s * 1000.0 * rng.random_range(0.85..1.2);
        call.duration_ms = first + generation * slowdown;
        call.output_chunks = (visible / 3.5).ceil() as u64;
        if call.streaming {
            call.ttft_ms = Some(first);
        }
        match outcome {
            Outcome::Ok => {}
            Outcome::Failed(kind, _) => {
                // Failed calls bill nothing; some fail fast, timeouts late.
                (call.cache_read, call.cache_write, call.output, call.reasoning) = (0, 0, 0, 0);
                call.output_chunks = 0;
                call.ttft_ms = None;
                call.duration_ms = match kind {
                    "APITimeoutError" => 60_000.0 + rng.random_range(0.0..400.0),
                    "RateLimitError" | "ContextLengthExceeded" => rng.random_range(80.0..400.0),
                    _ => rng.random_range(300.0..4_000.0),
                };
                call.input = 0;
            }
            Outcome::CutOff => {
                // The stream stopped part way; the gateway relayed some chunks.
                call.output_chunks =
                    (call.output_chunks as f64 * rng.random_range(0.1..0.7)) as u64;
                call.duration_ms = first
                    + call.output_chunks as f64 * 3.5 / model.tokens_per_s * 1000.0 * slowdown;
            }
        }
        call
    }

    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms.round() as i64
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(..))
    }

    /// The gateway's usage report for this call.
    pub fn report(&self) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), json!(self.id));
        r.insert("model".into(), json!(self.model.name));
        r.insert("provider".into(), json!(self.model.provider));
        r.insert(
            "operation".into(),
            json!(if self.model.embedding { "embedding" } else { "chat" }),
        );
        r.insert("user".into(), json!(self.caller.user));
        r.insert("api_key".into(), json!(self.caller.key.key));
        r.insert("route".into(), json!(self.caller.route));
        let mut tags = Map::new();
        tags.insert("team".into(), json!(self.caller.team));
        if let Some(agent) = self.caller.agent {
            tags.insert("agent".into(), json!(agent));
        }
        r.insert("tags".into(), Value::Object(tags));
        if let Some(session) = &self.session {
            r.insert("session".into(), json!(session));
        }
        r.insert("started_at".into(), json!(self.start_ms));
        r.insert("completed_at".into(), json!(self.end_ms()));
        r.insert("duration_ms".into(), json!(self.duration_ms.round()));
        r.insert("streaming".into(), json!(self.streaming));
        if let Some(ttft) = self.ttft_ms {
            r.insert("ttft_ms".into(), json!(ttft.round()));
        }
        r.insert("request_bytes".into(), json!(self.request_bytes));
        match self.outcome {
            Outcome::Failed(kind, _) => {
                r.insert("status".into(), json!("error"));
                r.insert("error_type".into(), json!(kind));
            }
            Outcome::CutOff => {
                // No usage chunk arrived: Tally estimates the tokens.
                r.insert("completed".into(), json!(false));
                r.insert("output_chunks".into(), json!(self.output_chunks));
            }
            Outcome::Ok if self.model.embedding => {
                // Embedding APIs report only a total.
                r.insert("total_tokens".into(), json!(self.input));
            }
            Outcome::Ok => {
                r.insert("input_tokens".into(), json!(self.input));
                r.insert("output_tokens".into(), json!(self.output));
                if self.cache_read > 0 {
                    r.insert("cache_read_tokens".into(), json!(self.cache_read));
                }
                if self.cache_write > 0 {
                    r.insert("cache_write_tokens".into(), json!(self.cache_write));
                }
                if self.reasoning > 0 {
                    r.insert("reasoning_tokens".into(), json!(self.reasoning));
                }
                r.insert("output_chunks".into(), json!(self.output_chunks));
            }
        }
        if let Some((trace, span)) = &self.span {
            r.insert("trace_id".into(), json!(trace));
            r.insert("span_id".into(), json!(span));
        }
        Value::Object(r)
    }
}

/// How the provider's response ids look.
fn response_prefix(model: &Model) -> &'static str {
    match model.provider {
        "anthropic" => "msg",
        "gemini" => "gen",
        _ if model.embedding => "emb",
        _ => "chatcmpl",
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::cast::{CLAUDE_SONNET, EMBEDDING, O4_MINI, WORKSPACE_CHAT};
    use super::*;

    const CALLER: Caller = Caller {
        user: "amara.okafor",
        team: "support",
        key: &WORKSPACE_CHAT,
        route: "interactive",
        agent: None,
    };
    const SHAPE: Shape =
        Shape { input: 4_000, cached_share: 0.5, cache_write: false, output: 300, streaming: true };

    #[test]
    fn reports_follow_tallys_token_conventions() {
        let mut rng = StdRng::seed_from_u64(1);
        let call = Call::new(&O4_MINI, CALLER, SHAPE, 1_000, Outcome::Ok, 1.0, &mut rng);
        let report = call.report();
        // Output includes reasoning; input includes the cached part.
        let output = report["output_tokens"].as_u64().unwrap();
        assert!(report["reasoning_tokens"].as_u64().unwrap() < output);
        assert_eq!(report["cache_read_tokens"], 2_000);
        assert_eq!(report["input_tokens"], 4_000);
        assert!(report["ttft_ms"].as_f64().unwrap() < report["duration_ms"].as_f64().unwrap());

        let first = Shape { cache_write: true, ..SHAPE };
        let call = Call::new(&CLAUDE_SONNET, CALLER, first, 1_000, Outcome::Ok, 1.0, &mut rng);
        assert_eq!((call.cache_write, call.cache_read), (2_000, 0));

        let call = Call::new(&EMBEDDING, CALLER, SHAPE, 1_000, Outcome::Ok, 1.0, &mut rng);
        let report = call.report();
        assert_eq!(report["total_tokens"], 4_000);
        assert!(report.get("input_tokens").is_none() && report.get("ttft_ms").is_none());
    }

    #[test]
    fn failed_and_cut_off_calls_report_what_a_gateway_knows() {
        let mut rng = StdRng::seed_from_u64(2);
        let failed = Outcome::Failed("RateLimitError", "429");
        let report = Call::new(&O4_MINI, CALLER, SHAPE, 0, failed, 1.0, &mut rng).report();
        assert_eq!(
            (&report["status"], &report["error_type"]),
            (&json!("error"), &json!("RateLimitError"))
        );
        assert!(report.get("output_tokens").is_none());

        let report = Call::new(&O4_MINI, CALLER, SHAPE, 0, Outcome::CutOff, 1.0, &mut rng).report();
        assert_eq!(report["completed"], false);
        assert!(report.get("input_tokens").is_none());
        assert!(report["request_bytes"].as_u64().unwrap() > 0);
    }
}
