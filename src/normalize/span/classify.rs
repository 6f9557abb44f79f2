//! What a span is, by convention: its kind (llm, tool, agent, …) from the
//! first convention that names one, and its status, which Langfuse's level
//! can turn to an error.

use std::borrow::Cow;

use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::Facts;
use crate::model::{SpanKind, SpanStatus};
use crate::normalize::otlp_wire::SpanRef;

/// Classifies in the order of semconv.md "Span kinds"; the first convention
/// whose value Tally recognizes decides. Values are case-insensitive.
///
/// Two fallbacks follow the list, consulted only when it decides nothing:
/// OpenLLMetry's legacy `llm.request.type` and the Vercel AI SDK's
/// `ai.operationId`. Langfuse's generic types do not decide: a Langfuse
/// `span` that nothing else classifies is a chain, an `event` unknown.
pub(super) fn classify(facts: &Facts<'_>) -> SpanKind {
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

/// The OTLP status, turned to an error by Langfuse's `level` = ERROR.
pub(super) fn span_status(span: &SpanRef<'_>, facts: &Facts<'_>) -> (SpanStatus, Option<String>) {
    let (code, message) = span.status.map_or((0, ""), |status| (status.code, status.message));
    let mut status = match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => SpanStatus::Ok,
        Ok(StatusCode::Error) => SpanStatus::Error,
        Ok(StatusCode::Unset) | Err(_) => SpanStatus::Unset,
    };
    let mut message = Some(message.trim()).filter(|m| !m.is_empty()).map(str::to_owned);
    if facts.lowercase("langfuse.observation.level").as_deref() == Some("error") {
        status = SpanStatus::Error;
        if message.is_none() {
            message = facts.text("langfuse.observation.status_message").map(Cow::into_owned);
        }
    }
    (status, message)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    use super::*;
    use crate::normalize::span::testing::{kv, normalize, span_with};

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
}
