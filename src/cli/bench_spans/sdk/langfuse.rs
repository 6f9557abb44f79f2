//! An agent run as the Langfuse SDK (v3, OpenTelemetry based, with its
//! OpenAI integration) exports it: `langfuse.observation.*` attributes
//! with JSON input and output, the model and its parameters, usage as one
//! JSON attribute (`usage_details`, whose `input` leaves out cache reads),
//! metadata as JSON-encoded values, and the trace's name, user, session,
//! tags and metadata propagated to every observation.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::{Value, json};

use super::{Convention, EMBEDDING_MODEL, Llm, Message, ToolCall, Trace, strings};
use crate::cli::bench_spans::{int, text};

pub(super) struct Langfuse;

/// What every observation carries: its type, level, input and output, and
/// the trace's attributes.
fn common(trace: &Trace, kind: &str, failed: bool, input: &str, output: &str) -> Vec<KeyValue> {
    let mut attributes = vec![
        text("langfuse.observation.type", kind),
        text("langfuse.observation.level", if failed { "ERROR" } else { "DEFAULT" }),
        text("langfuse.observation.input", input),
        text("langfuse.observation.output", output),
        text("langfuse.trace.name", &format!("{}-agent", trace.agent.name)),
        strings("langfuse.trace.tags", &[trace.agent.name, trace.channel]),
        text("langfuse.environment", "production"),
        text("user.id", &trace.user),
        text("session.id", &trace.session),
    ];
    let context = trace.context();
    attributes.extend(context[..5].iter().map(|(key, value)| {
        text(&format!("langfuse.trace.metadata.{key}"), &json!(value).to_string())
    }));
    attributes
}

/// Observation metadata: each value JSON-encoded.
fn metadata(key: &str, value: Value) -> KeyValue {
    text(&format!("langfuse.observation.metadata.{key}"), &value.to_string())
}

impl Convention for Langfuse {
    fn agent(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let input = json!({"question": trace.question}).to_string();
        let output = json!(trace.answer).to_string();
        let mut attributes = common(trace, "agent", false, &input, &output);
        attributes.extend([
            text("langfuse.trace.input", &input),
            text("langfuse.trace.output", &output),
            text("langfuse.version", "2.14.0"),
            metadata("agent", json!(trace.agent.name)),
            metadata("model", json!(trace.model().name)),
            metadata("max_steps", json!(6)),
        ]);
        (format!("{}-agent", trace.agent.name), attributes)
    }

    fn retrieval(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let input = json!({"query": trace.question}).to_string();
        let documents: Vec<Value> = trace
            .documents
            .iter()
            .map(|d| json!({"id": d.id, "score": d.score, "text": d.text}))
            .collect();
        let output = Value::Array(documents).to_string();
        let mut attributes = common(trace, "retriever", false, &input, &output);
        attributes.extend([
            metadata("index", json!("help_center_articles")),
            metadata("top_k", json!(trace.documents.len())),
            metadata("embedding_model", json!(EMBEDDING_MODEL)),
            metadata("filter", json!({"tenant_id": trace.context()[0].1})),
            metadata("hits", json!(trace.documents.len())),
            metadata("reranked", json!(false)),
        ]);
        ("retrieve-docs".into(), attributes)
    }

    fn embedding(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let input = json!(trace.question).to_string();
        let output = json!({"dimensions": 1_536, "count": 1}).to_string();
        let mut attributes = common(trace, "embedding", false, &input, &output);
        attributes.extend([
            text("langfuse.observation.model.name", EMBEDDING_MODEL),
            text("langfuse.observation.model.parameters", r#"{"encoding_format":"float"}"#),
            text(
                "langfuse.observation.usage_details",
                &json!({"input": trace.embedding_tokens, "total": trace.embedding_tokens})
                    .to_string(),
            ),
            metadata("dimensions", json!(1_536)),
            metadata("batch_size", json!(1)),
            metadata("provider", json!("openai")),
        ]);
        ("embed-query".into(), attributes)
    }

    fn llm(&self, trace: &Trace, call: &Llm) -> (String, Vec<KeyValue>) {
        let model = call.model;
        let input: Vec<Value> = trace.input(call).iter().map(Message::openai_json).collect();
        let output = trace.output(call).openai_json().to_string();
        let mut attributes =
            common(trace, "generation", false, &Value::Array(input).to_string(), &output);
        // Langfuse's usage is exclusive: `input` leaves out the cache reads.
        let usage = json!({
            "input": call.input_tokens - call.cache_read_tokens,
            "cache_read_input_tokens": call.cache_read_tokens,
            "output": call.output_tokens,
            "total": call.input_tokens + call.output_tokens,
        });
        let parameters = json!({
            "temperature": call.temperature,
            "max_tokens": call.max_tokens,
            "top_p": call.top_p,
        });
        attributes.extend([
            text("langfuse.observation.model.name", model.name),
            text("langfuse.observation.model.parameters", &parameters.to_string()),
            text("langfuse.observation.usage_details", &usage.to_string()),
            text("langfuse.observation.prompt.name", &format!("{}-system", trace.agent.name)),
            int("langfuse.observation.prompt.version", 7),
            metadata("response_id", json!(call.response_id)),
            metadata("finish_reason", json!(call.finish_reason)),
        ]);
        let name =
            if model.provider == "openai" { "OpenAI-generation" } else { "Anthropic-generation" };
        (name.into(), attributes)
    }

    fn tool(&self, trace: &Trace, call: &ToolCall) -> (String, Vec<KeyValue>) {
        let mut attributes = common(trace, "tool", call.failed, &call.arguments, &call.result);
        attributes.extend([
            metadata("tool_call_id", json!(call.id)),
            metadata("description", json!(call.tool.description)),
            metadata("timeout_ms", json!(10_000)),
            metadata("attempt", json!(1)),
            metadata("cached", json!(false)),
            metadata("source", json!("agent")),
        ]);
        if call.failed {
            attributes.push(text("langfuse.observation.status_message", "upstream timed out"));
        }
        (call.tool.name.into(), attributes)
    }
}
