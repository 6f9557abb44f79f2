//! An agent run as OpenInference (Arize Phoenix's OpenAI and agent
//! instrumentations) exports it: `openinference.span.kind`, the raw
//! request and response in `input.value` and `output.value`, the messages
//! flattened into `llm.input_messages.N.message.*` and
//! `llm.output_messages.N.message.*`, token counts under `llm.token_count`,
//! retrieved documents under `retrieval.documents.N.document.*`, and the
//! session, user, metadata and tags of `using_attributes` on every span,
//! beside the attributes the application sets itself (`app.*`).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde_json::{Value, json};

use super::{Convention, EMBEDDING_MODEL, Llm, Message, ToolCall, Trace, float, strings};
use crate::cli::bench_spans::{int, text};

pub(super) struct OpenInference;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

/// What every span carries: its kind, its input and output, and the
/// attributes of the context.
fn common(trace: &Trace, kind: &str, input: (&str, &str), output: (&str, &str)) -> Vec<KeyValue> {
    let mut attributes = vec![
        text("openinference.span.kind", kind),
        text("input.value", input.0),
        text("input.mime_type", input.1),
        text("output.value", output.0),
        text("output.mime_type", output.1),
        text("session.id", &trace.session),
        text("user.id", &trace.user),
        text("metadata", &trace.context_json()),
        strings("tag.tags", &[trace.agent.name, trace.channel]),
    ];
    // The request id is in the metadata only.
    let context = trace.context();
    attributes.extend(context[..6].iter().map(|(key, value)| text(&format!("app.{key}"), value)));
    attributes
}

/// A message flattened under `prefix` (`llm.input_messages.N`).
fn message(prefix: &str, message: &Message<'_>, attributes: &mut Vec<KeyValue>) {
    attributes.push(text(&format!("{prefix}.message.role"), message.role()));
    if let Some(content) = message.content() {
        attributes.push(text(&format!("{prefix}.message.content"), content));
    }
    match message {
        Message::ToolCall(call) => {
            let at = format!("{prefix}.message.tool_calls.0.tool_call");
            attributes.push(text(&format!("{at}.id"), &call.id));
            attributes.push(text(&format!("{at}.function.name"), call.tool.name));
            attributes.push(text(&format!("{at}.function.arguments"), &call.arguments));
        }
        Message::ToolResult(call) => {
            attributes.push(text(&format!("{prefix}.message.tool_call_id"), &call.id));
        }
        _ => {}
    }
}

impl Convention for OpenInference {
    fn agent(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let (input_tokens, output_tokens) = trace.total_tokens();
        let mut attributes = common(trace, "AGENT", (&trace.question, TEXT), (&trace.answer, TEXT));
        attributes.extend([
            text("agent.name", trace.agent.name),
            text("graph.node.id", &format!("{}_agent", trace.agent.name)),
            text("graph.node.name", trace.agent.name),
            int("llm.token_count.prompt", input_tokens),
            int("llm.token_count.completion", output_tokens),
            int("llm.token_count.total", input_tokens + output_tokens),
        ]);
        (format!("{} agent", trace.agent.name), attributes)
    }

    fn retrieval(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let ids: Vec<&str> = trace.documents.iter().map(|d| d.id.as_str()).collect();
        let output = json!({"ids": ids}).to_string();
        let mut attributes = common(trace, "RETRIEVER", (&trace.question, TEXT), (&output, JSON));
        for (i, document) in trace.documents.iter().enumerate() {
            let at = format!("retrieval.documents.{i}.document");
            let metadata = json!({"source": "help-center", "tenant_id": trace.context()[0].1});
            attributes.extend([
                text(&format!("{at}.id"), &document.id),
                text(&format!("{at}.content"), &document.text),
                float(&format!("{at}.score"), document.score),
                text(&format!("{at}.metadata"), &metadata.to_string()),
            ]);
        }
        ("retrieve".into(), attributes)
    }

    fn embedding(&self, trace: &Trace) -> (String, Vec<KeyValue>) {
        let input = json!({"input": trace.question, "model": EMBEDDING_MODEL}).to_string();
        let output =
            json!({"object": "list", "model": EMBEDDING_MODEL, "data": [{"index": 0}]}).to_string();
        let mut attributes = common(trace, "EMBEDDING", (&input, JSON), (&output, JSON));
        attributes.extend([
            text("embedding.model_name", EMBEDDING_MODEL),
            text("embedding.embeddings.0.embedding.text", &trace.question),
            text("llm.system", "openai"),
            text("llm.provider", "openai"),
            text("llm.invocation_parameters", r#"{"encoding_format": "float"}"#),
            int("llm.token_count.prompt", trace.embedding_tokens),
            int("llm.token_count.total", trace.embedding_tokens),
        ]);
        ("CreateEmbeddings".into(), attributes)
    }

    fn llm(&self, trace: &Trace, call: &Llm) -> (String, Vec<KeyValue>) {
        let model = call.model;
        let request = trace.openai_request(call);
        let mut parameters = request.clone();
        if let Value::Object(fields) = &mut parameters {
            fields.retain(|key, _| !matches!(key.as_str(), "messages" | "tools"));
        }
        let response = trace.openai_response(call).to_string();
        let mut attributes = common(trace, "LLM", (&request.to_string(), JSON), (&response, JSON));
        attributes.extend([
            text("llm.system", model.provider),
            text("llm.provider", model.provider),
            text("llm.model_name", model.response_model),
            text("llm.invocation_parameters", &parameters.to_string()),
            int("llm.token_count.prompt", call.input_tokens),
            int("llm.token_count.completion", call.output_tokens),
            int("llm.token_count.total", call.input_tokens + call.output_tokens),
            int("llm.token_count.prompt_details.cache_read", call.cache_read_tokens),
        ]);
        if call.has_tools() {
            for (i, schema) in
                super::tool_definitions().as_array().into_iter().flatten().enumerate()
            {
                attributes
                    .push(text(&format!("llm.tools.{i}.tool.json_schema"), &schema.to_string()));
            }
        }
        for (i, input) in trace.input(call).iter().enumerate() {
            message(&format!("llm.input_messages.{i}"), input, &mut attributes);
        }
        message("llm.output_messages.0", &trace.output(call), &mut attributes);
        let name = if model.provider == "openai" { "ChatCompletion" } else { "Messages" };
        (name.into(), attributes)
    }

    fn tool(&self, trace: &Trace, call: &ToolCall) -> (String, Vec<KeyValue>) {
        let mut attributes = common(trace, "TOOL", (&call.arguments, JSON), (&call.result, JSON));
        attributes.extend([
            text("tool.name", call.tool.name),
            text("tool.description", call.tool.description),
            text(
                "tool.parameters",
                &super::tool_schema(call.tool)["function"]["parameters"].to_string(),
            ),
            text("tool_call.id", &call.id),
            text("tool_call.function.arguments", &call.arguments),
        ]);
        (call.tool.name.into(), attributes)
    }
}
