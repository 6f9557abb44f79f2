//! An agent run as the OpenTelemetry GenAI instrumentations export it (a
//! Node.js service, content capture on): `gen_ai.*` attributes of the
//! current semantic conventions, the messages as JSON in
//! `gen_ai.system_instructions`, `gen_ai.input.messages` and
//! `gen_ai.output.messages`, and the application's baggage (`app.*`) copied
//! onto every span.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::{Value, json};

use super::{
    Convention, EMBEDDING_MODEL, Llm, Message, ToolCall, Trace, float, strings, tool_definitions,
};
use crate::cli::bench_spans::{int, text};

pub(super) struct OtelGenAi;

/// The conversation, the agent and the user on every span, with the
/// baggage entries a baggage span processor copies there.
fn common(trace: &Trace) -> Vec<KeyValue> {
    let mut attributes = vec![
        text("gen_ai.conversation.id", &trace.session),
        text("user.id", &trace.user),
        text("gen_ai.agent.name", trace.agent.name),
    ];
    attributes
        .extend(trace.context().iter().map(|(key, value)| text(&format!("app.{key}"), value)));
    attributes
}

/// A message in the GenAI JSON form: a role and typed parts.
fn message_json(message: &Message<'_>) -> Value {
    let part = match message {
        Message::ToolCall(call) => json!({
            "type": "tool_call",
            "id": call.id,
            "name": call.tool.name,
            "arguments": serde_json::from_str::<Value>(&call.arguments).unwrap_or_default(),
        }),
        Message::ToolResult(call) => json!({
            "type": "tool_call_response",
            "id": call.id,
            "response": call.result,
        }),
        other => json!({"type": "text", "content": other.content()}),
    };
    json!({"role": message.role(), "parts": [part]})
}

impl Convention for OtelGenAi {
    fn agent(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let (input_tokens, output_tokens) = trace.total_tokens();
        let input = json!([message_json(&Message::User(&trace.question))]);
        let mut output = message_json(&Message::Assistant(&trace.answer));
        output["finish_reason"] = json!("stop");
        let mut attributes = vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.id", &format!("agent_{}", trace.agent.name)),
            text("gen_ai.agent.description", trace.agent.description),
            text("gen_ai.provider.name", trace.model().provider),
            text("gen_ai.request.model", trace.model().name),
            int("gen_ai.usage.input_tokens", input_tokens),
            int("gen_ai.usage.output_tokens", output_tokens),
            text("gen_ai.input.messages", &input.to_string()),
            text("gen_ai.output.messages", &json!([output]).to_string()),
            text("gen_ai.output.type", "text"),
        ];
        attributes.extend(common(trace));
        (format!("invoke_agent {}", trace.agent.name), attributes)
    }

    fn retrieval(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let documents: Vec<Value> = trace
            .documents
            .iter()
            .map(|d| json!({"id": d.id, "score": d.score, "content": d.text}))
            .collect();
        let mut attributes = vec![
            text("gen_ai.operation.name", "retrieval"),
            text("gen_ai.data_source.id", "help-center"),
            text("gen_ai.provider.name", "chroma"),
            text("gen_ai.retrieval.query.text", &trace.question),
            int("gen_ai.retrieval.top_k", trace.documents.len() as i64),
            text("gen_ai.retrieval.documents", &Value::Array(documents).to_string()),
            text("db.system.name", "chromadb"),
            text("db.collection.name", "help_center_articles"),
            text("server.address", "chroma.internal"),
            int("server.port", 8000),
        ];
        attributes.extend(common(trace));
        ("retrieval help-center".into(), attributes)
    }

    fn embedding(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let mut attributes = vec![
            text("gen_ai.operation.name", "embeddings"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", EMBEDDING_MODEL),
            text("gen_ai.response.model", EMBEDDING_MODEL),
            int("gen_ai.usage.input_tokens", trace.embedding_tokens),
            int("gen_ai.embeddings.dimension.count", 1_536),
            strings("gen_ai.request.encoding_formats", &["float"]),
            text("openai.request.service_tier", "auto"),
            text("server.address", "api.openai.com"),
            int("server.port", 443),
        ];
        attributes.extend(common(trace));
        (format!("embeddings {EMBEDDING_MODEL}"), attributes)
    }

    fn llm(&self, trace: &Trace, call: &Llm) -> (String, Vec<KeyValue>) {
        let model = call.model;
        let input = trace.input(call);
        let (system, messages) = input.split_first().expect("a system prompt first");
        let instructions = json!([{"type": "text", "content": system.content()}]);
        let messages: Vec<Value> = messages.iter().map(message_json).collect();
        let mut output = message_json(&trace.output(call));
        output["finish_reason"] = json!(call.finish_reason);
        let server =
            if model.provider == "openai" { "api.openai.com" } else { "api.anthropic.com" };
        let mut attributes = vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", model.provider),
            text("gen_ai.request.model", model.name),
            float("gen_ai.request.temperature", call.temperature),
            int("gen_ai.request.max_tokens", call.max_tokens),
            float("gen_ai.request.top_p", call.top_p),
            text("gen_ai.response.model", model.response_model),
            text("gen_ai.response.id", &call.response_id),
            strings("gen_ai.response.finish_reasons", &[call.finish_reason]),
            int("gen_ai.usage.input_tokens", call.input_tokens),
            int("gen_ai.usage.output_tokens", call.output_tokens),
            int("gen_ai.usage.cache_read.input_tokens", call.cache_read_tokens),
            text("gen_ai.output.type", "text"),
            text("server.address", server),
            int("server.port", 443),
            text("gen_ai.system_instructions", &instructions.to_string()),
            text("gen_ai.input.messages", &Value::Array(messages).to_string()),
            text("gen_ai.output.messages", &json!([output]).to_string()),
        ];
        if call.has_tools() {
            attributes.push(text("gen_ai.tool.definitions", &tool_definitions().to_string()));
        }
        attributes.extend(common(trace));
        (format!("chat {}", model.name), attributes)
    }

    fn tool(&self, trace: &Trace, call: &ToolCall) -> (String, Vec<KeyValue>) {
        let mut attributes = vec![
            text("gen_ai.operation.name", "execute_tool"),
            text("gen_ai.tool.name", call.tool.name),
            text("gen_ai.tool.type", "function"),
            text("gen_ai.tool.call.id", &call.id),
            text("gen_ai.tool.description", call.tool.description),
            text("gen_ai.tool.call.arguments", &call.arguments),
            text("gen_ai.tool.call.result", &call.result),
            text("code.function.name", call.tool.name),
            text("code.file.path", &format!("/app/dist/tools/{}.js", call.tool.name)),
            int("code.line.number", 12 + call.tool.name.len() as i64),
        ];
        if call.failed {
            attributes.push(text("error.type", "TimeoutError"));
        }
        attributes.extend(common(trace));
        (format!("execute_tool {}", call.tool.name), attributes)
    }
}
