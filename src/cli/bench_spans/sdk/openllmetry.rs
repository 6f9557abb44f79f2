//! An agent run as OpenLLMetry (traceloop-sdk with its OpenAI, Anthropic
//! and Chroma instrumentations) exports it: `traceloop.*` workflow and
//! entity attributes, the application's association properties on every
//! span, request and usage under the GenAI names, and the messages
//! flattened into `gen_ai.prompt.N.*` and `gen_ai.completion.N.*`.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::json;

use super::{Convention, EMBEDDING_MODEL, Llm, Message, ToolCall, Trace, flag, float};
use crate::cli::bench_spans::{int, text};

pub(super) struct OpenLlmetry;

/// The workflow's name, as `@agent(name=…)` gives it.
fn workflow(trace: &Trace) -> String {
    format!("{}_agent", trace.agent.name)
}

/// What traceloop's span processor puts on every span: the workflow (and,
/// below the root, the entity path) and the association properties.
fn common(trace: &Trace, root: bool) -> Vec<KeyValue> {
    let mut attributes = vec![text("traceloop.workflow.name", &workflow(trace))];
    if !root {
        attributes.push(text("traceloop.entity.path", &workflow(trace)));
    }
    let property =
        |key: &str, value: &str| text(&format!("traceloop.association.properties.{key}"), value);
    attributes.push(property("user_id", &trace.user));
    attributes.push(property("session_id", &trace.session));
    attributes.extend(trace.context().iter().map(|(key, value)| property(key, value)));
    attributes
}

/// A message flattened under `prefix` (`gen_ai.prompt.N`).
fn message(prefix: &str, message: &Message<'_>, attributes: &mut Vec<KeyValue>) {
    attributes.push(text(&format!("{prefix}.role"), message.role()));
    if let Some(content) = message.content() {
        attributes.push(text(&format!("{prefix}.content"), content));
    }
    match message {
        Message::ToolCall(call) => {
            attributes.push(text(&format!("{prefix}.tool_calls.0.id"), &call.id));
            attributes.push(text(&format!("{prefix}.tool_calls.0.name"), call.tool.name));
            attributes.push(text(&format!("{prefix}.tool_calls.0.arguments"), &call.arguments));
        }
        Message::ToolResult(call) => {
            attributes.push(text(&format!("{prefix}.tool_call_id"), &call.id));
        }
        _ => {}
    }
}

impl Convention for OpenLlmetry {
    fn agent(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let model = trace.model();
        let call = &trace.calls[0];
        let input = json!({"args": [trace.question], "kwargs": {"user_id": trace.user}});
        let mut attributes = vec![
            text("traceloop.span.kind", "agent"),
            text("traceloop.entity.name", &workflow(trace)),
            int("traceloop.entity.version", 3),
            text("traceloop.entity.input", &input.to_string()),
            text("traceloop.entity.output", &json!(trace.answer).to_string()),
            text("gen_ai.agent.name", trace.agent.name),
            text("gen_ai.request.model", model.name),
            float("gen_ai.request.temperature", call.temperature),
            int("gen_ai.request.max_tokens", call.max_tokens),
            float("gen_ai.request.top_p", call.top_p),
        ];
        attributes.extend(common(trace, true));
        (format!("{}.agent", workflow(trace)), attributes)
    }

    fn retrieval(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let tenant = json!({"tenant_id": trace.context()[0].1});
        let mut attributes = vec![
            text("db.system", "chroma"),
            text("db.operation", "query"),
            int("db.vector.query.top_k", trace.documents.len() as i64),
            int("db.chroma.query.n_results", trace.documents.len() as i64),
            int("db.chroma.query.embeddings_count", 1),
            text("db.chroma.query.include", r#"["documents", "metadatas", "distances"]"#),
            text("db.chroma.query.where", &tenant.to_string()),
            text("server.address", "chroma.internal"),
            int("server.port", 8000),
        ];
        attributes.extend(common(trace, false));
        ("chroma.query".into(), attributes)
    }

    fn embedding(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let mut attributes = vec![
            text("llm.request.type", "embedding"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", EMBEDDING_MODEL),
            text("gen_ai.response.model", EMBEDDING_MODEL),
            int("gen_ai.usage.input_tokens", trace.embedding_tokens),
            int("gen_ai.usage.total_tokens", trace.embedding_tokens),
            text("gen_ai.openai.api_base", "https://api.openai.com/v1/"),
            text("llm.headers", "None"),
            flag("llm.is_streaming", false),
            text("gen_ai.prompt.0.content", &trace.question),
        ];
        attributes.extend(common(trace, false));
        ("openai.embeddings".into(), attributes)
    }

    fn llm(&self, trace: &Trace, call: &Llm) -> (String, Vec<KeyValue>) {
        let model = call.model;
        let mut attributes = vec![
            text("llm.request.type", "chat"),
            text("gen_ai.provider.name", model.provider),
            text("gen_ai.request.model", model.name),
            float("gen_ai.request.temperature", call.temperature),
            int("gen_ai.request.max_tokens", call.max_tokens),
            float("gen_ai.request.top_p", call.top_p),
            flag("llm.is_streaming", false),
            text("gen_ai.response.model", model.response_model),
            text("gen_ai.response.id", &call.response_id),
            int("gen_ai.usage.input_tokens", call.input_tokens),
            int("gen_ai.usage.output_tokens", call.output_tokens),
            int("gen_ai.usage.total_tokens", call.input_tokens + call.output_tokens),
            int("gen_ai.usage.cache_read.input_tokens", call.cache_read_tokens),
        ];
        attributes.extend(common(trace, false));
        for (i, input) in trace.input(call).iter().enumerate() {
            message(&format!("gen_ai.prompt.{i}"), input, &mut attributes);
        }
        message("gen_ai.completion.0", &trace.output(call), &mut attributes);
        attributes.push(text("gen_ai.completion.0.finish_reason", call.finish_reason));
        (format!("{}.chat", model.provider), attributes)
    }

    fn tool(&self, trace: &Trace, call: &ToolCall) -> (String, Vec<KeyValue>) {
        let input = json!({"args": [], "kwargs": serde_json::from_str::<serde_json::Value>(&call.arguments).unwrap_or_default()});
        let mut attributes = vec![
            text("traceloop.span.kind", "tool"),
            text("traceloop.entity.name", call.tool.name),
            int("traceloop.entity.version", 1),
            text("traceloop.entity.input", &input.to_string()),
            text("traceloop.entity.output", &call.result),
            text("gen_ai.tool.name", call.tool.name),
            text("gen_ai.tool.type", "function"),
            text("gen_ai.tool.description", call.tool.description),
            text("gen_ai.tool.call.id", &call.id),
        ];
        attributes.extend(common(trace, false));
        (format!("{}.tool", call.tool.name), attributes)
    }
}
