//! What a span used, by convention: its token counts (made inclusive: input
//! counts cached tokens, output reasoning ones), the cost its SDK reported
//! and its time to first token, with the attributes each convention sends
//! them in.

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};

use super::{Facts, Numeric};
use crate::normalize::otlp_value::{StringBudget, key_values_to_json};
use crate::normalize::otlp_wire::{SpanRef, ValueRef};
use crate::normalize::values::MAX_COUNT;

/// Event names that mark the first streamed token: OpenInference's, the
/// per-chunk event of OpenLLMetry (its first one) and the Vercel AI SDK's.
/// Compared in lowercase.
const FIRST_TOKEN_EVENTS: [&str; 3] =
    ["first token stream event", "gen_ai.content.completion.chunk", "ai.stream.firstchunk"];

// The field map (semconv.md) of usage: for each count, the attributes that
// carry it, the first one present wins. Vercel AI SDK names (`ai.*`) come
// last. Langfuse sends its usage and cost as one JSON attribute each.
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
const LANGFUSE_USAGE: &str = "langfuse.observation.usage_details";
const LANGFUSE_COST: &str = "langfuse.observation.cost_details";

/// Token counts as one convention reported them, made inclusive.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Usage {
    pub(super) input: Option<u64>,
    pub(super) output: Option<u64>,
    pub(super) total: Option<u64>,
    pub(super) cache_read: Option<u64>,
    pub(super) cache_write: Option<u64>,
    pub(super) reasoning: Option<u64>,
}

impl Usage {
    pub(super) fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Langfuse's usage (one JSON attribute) when present, taken whole: its
/// counts are exclusive and must not mix with other conventions'. Else
/// every other convention, field by field.
pub(super) fn read_usage(facts: &Facts<'_>) -> Result<Usage, String> {
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
fn json_object(value: ValueRef<'_>) -> Option<Map<String, Value>> {
    match value {
        ValueRef::Str(text) => serde_json::from_str(text).ok(),
        ValueRef::KvList(list) => {
            Some(key_values_to_json(list.iter(), &mut StringBudget::for_attributes()))
        }
        _ => None,
    }
}

/// Langfuse's `usage_details` are exclusive: `input` leaves out cached
/// reads and writes, `output` leaves out reasoning. They are added back so
/// that the report is in Tally's inclusive form. Errors start with the key
/// (".input: …"), for the caller to prefix with the attribute name.
fn langfuse_usage(value: ValueRef<'_>) -> Result<Usage, String> {
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
pub(super) fn reported_cost(facts: &Facts<'_>) -> Option<f64> {
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
pub(super) fn time_to_first_token_ms(
    facts: &Facts<'_>,
    span: &SpanRef<'_>,
    start_ns: i64,
) -> Option<f64> {
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

pub(super) fn first_token_event_ns(span: &SpanRef<'_>) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanKind;
    use crate::normalize::span::testing::{call_of, kv, normalize, span_with, tokens};

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
        let facts_span = SpanRef::of(&facts_span);
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
}
