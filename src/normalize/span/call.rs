//! The model call a span describes, as a `RawReport` for the accounting
//! rules: which spans are calls, and the report's fields from the record,
//! the usage and the call's own attributes (id, operation, streaming).

use std::borrow::Cow;

use super::usage::{first_token_event_ns, read_usage, reported_cost, time_to_first_token_ms};
use super::{Facts, RESPONSE_MODEL_KEYS};
use crate::model::{Operation, SpanKind, SpanRecord, SpanStatus};
use crate::normalize::otlp_wire::SpanRef;
use crate::normalize::usage_report::RawReport;
use crate::normalize::values::{Amount, Count, Instant, TextRef};

/// Whether the call was streamed, by convention (the first present wins).
const STREAMING_KEYS: &[&str] =
    &["gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming"];

/// The model call a span describes, as a report for the accounting rules.
///
/// A span describes a call when it has a model and reports tokens; an llm,
/// embedding or reranker span that failed counts without tokens, so failed
/// requests reach the ledger. Agent, chain and workflow spans never do: they
/// carry their children's usage summed (GenAI `invoke_agent`, the Vercel AI
/// SDK's outer spans), which would count it twice. A token count that is
/// not a non-negative integer keeps the span but drops the call.
pub(super) fn model_call(
    facts: &Facts<'_>,
    span: &SpanRef<'_>,
    record: &SpanRecord,
) -> Option<RawReport<'static>> {
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
        id: text(facts.text("gen_ai.response.id").map(Cow::into_owned)),
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
        error_type: text(facts.text("error.type").map(Cow::into_owned)),
        cost_usd: reported_cost(facts).map(Amount),
        trace_id: Some(owned(record.trace_id.clone())),
        span_id: Some(owned(record.span_id.clone())),
        ..RawReport::default()
    })
}
