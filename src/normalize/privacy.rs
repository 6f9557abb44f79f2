//! Content privacy: how much of the prompts and completions that spans and
//! log records carry Tally stores. `privacy.store_content = false` drops the
//! content attributes of every convention Tally reads (and the bodies of
//! GenAI event logs); `privacy.redact` masks text matching the operator's
//! regular expressions in every stored attribute value, span status message
//! and log body. Both can be set per project. The ingest transports apply
//! this to normalized records before anything is encoded or committed, so
//! what is dropped or masked never reaches the disk; at the defaults (store
//! everything, no patterns) it does no work per record.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex_automata::meta::Regex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::model::{Attributes, LogRecord, SpanRecord};

/// What replaces each piece of text a redaction pattern matched.
pub const REDACTED: &str = "[REDACTED]";

/// Set (to `true`) on a span or log record whose content was dropped, so a
/// reader can tell "not stored" from "never sent".
pub const CONTENT_DROPPED: &str = "tally.content_dropped";

/// `[privacy]`: whether prompt and completion content is stored, and which
/// text is masked before it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Store prompt and completion content. When false, Tally drops it from
    /// spans and logs as they arrive: GenAI messages, system instructions
    /// and tool-call arguments and results (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`, `gen_ai.system_instructions`,
    /// `gen_ai.prompt.*`, `gen_ai.completion.*`), OpenInference messages,
    /// prompts, documents and input/output values (`llm.input_messages.*`,
    /// `llm.output_messages.*`, `input.value`, `output.value`, …), Langfuse
    /// input/output, Traceloop entity input/output, Vercel AI SDK prompts
    /// and responses, the attributes of GenAI message events on spans and
    /// the bodies of GenAI event log records (`gen_ai.*.message`,
    /// `gen_ai.choice`). Token counts, models, names, timings and everything
    /// else are kept; a record that lost content carries
    /// `tally.content_dropped = true`.
    pub store_content: bool,
    /// Regular expressions (Rust `regex` syntax). Text matching any of them
    /// is replaced by `[REDACTED]` in stored span, event and resource
    /// attribute values (inside JSON held in a string too), span status
    /// messages, log attributes and log bodies. Checked at start-up.
    pub redact: Vec<String>,
    /// Settings of one project (`[privacy.projects.NAME]`), each key given
    /// replacing the global one for that project's records.
    pub projects: BTreeMap<String, ProjectPrivacy>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { store_content: true, redact: Vec::new(), projects: BTreeMap::new() }
    }
}

/// `[privacy.projects.NAME]`: a project's own `store_content` and `redact`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectPrivacy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_content: Option<bool>,
    /// Replaces the global list for this project (an empty list: no
    /// redaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redact: Option<Vec<String>>,
}

impl PrivacyConfig {
    /// The settings compiled for ingest; an invalid pattern is an error
    /// naming its key, position and text.
    pub fn compile(&self) -> Result<Privacy, ConfigError> {
        let global = Policy {
            store_content: self.store_content,
            redact: redactor("privacy.redact", &self.redact)?,
        };
        let mut projects = FxHashMap::default();
        for (name, project) in &self.projects {
            let redact = match &project.redact {
                Some(patterns) => redactor(&format!("privacy.projects.{name}.redact"), patterns)?,
                None => global.redact.clone(),
            };
            let store_content = project.store_content.unwrap_or(self.store_content);
            projects.insert(name.clone(), Policy { store_content, redact });
        }
        let inert = global.is_inert() && projects.values().all(Policy::is_inert);
        Ok(Privacy { global, projects, inert })
    }
}

/// Compiles `patterns` into one regex that finds the leftmost match of any
/// of them. Each is checked alone first, for an error that names it.
fn redactor(key: &str, patterns: &[String]) -> Result<Option<Arc<Regex>>, ConfigError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let invalid = |index: usize, pattern: &str, message: String| ConfigError::Value {
        key: format!("{key}[{index}]"),
        message: format!("pattern {pattern:?}: {message}"),
    };
    for (index, pattern) in patterns.iter().enumerate() {
        let regex =
            regex::Regex::new(pattern).map_err(|err| invalid(index, pattern, err.to_string()))?;
        // Such a pattern would mark every gap between two characters.
        if regex.is_match("") {
            return Err(invalid(index, pattern, "matches the empty string".into()));
        }
    }
    let regex = Regex::new_many(patterns)
        .map_err(|err| ConfigError::Value { key: key.to_owned(), message: err.to_string() })?;
    Ok(Some(Arc::new(regex)))
}

/// What one project's records go through.
#[derive(Debug, Clone)]
struct Policy {
    store_content: bool,
    redact: Option<Arc<Regex>>,
}

impl Policy {
    fn is_inert(&self) -> bool {
        self.store_content && self.redact.is_none()
    }
}

/// The compiled `[privacy]` settings.
#[derive(Debug, Clone)]
pub struct Privacy {
    global: Policy,
    projects: FxHashMap<String, Policy>,
    /// Nothing to drop or mask in any project: records pass untouched.
    inert: bool,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            global: Policy { store_content: true, redact: None },
            projects: FxHashMap::default(),
            inert: true,
        }
    }
}

impl Privacy {
    /// Stores everything, masks nothing: `apply` returns at once.
    pub fn is_inert(&self) -> bool {
        self.inert
    }

    fn policy(&self, project: &str) -> &Policy {
        self.projects.get(project).unwrap_or(&self.global)
    }

    /// Drops content from and masks the spans and log records of one
    /// export, each by the policy of its project.
    pub fn apply(&self, spans: &mut [SpanRecord], logs: &mut [LogRecord]) {
        if self.inert {
            return;
        }
        let mut resources = ResourceMemo::default();
        for span in spans {
            span.unpack_attributes();
            let policy = self.policy(&span.project);
            if !policy.store_content {
                drop_span_content(span);
            }
            if let Some(regex) = &policy.redact {
                redact_span(regex, span, &mut resources);
            }
        }
        for log in logs {
            let policy = self.policy(&log.project);
            if !policy.store_content {
                drop_log_content(log);
            }
            if let Some(regex) = &policy.redact {
                redact_map(regex, &mut log.attributes);
                redact_value(regex, &mut log.body);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------

/// Attributes whose value is content, by exact key.
fn is_content_key(key: &str) -> bool {
    matches!(
        key,
        // OpenTelemetry GenAI (current, and OpenLLMetry's older single values)
        "gen_ai.input.messages"
            | "gen_ai.output.messages"
            | "gen_ai.system_instructions"
            | "gen_ai.tool.call.arguments"
            | "gen_ai.tool.call.result"
            | "gen_ai.prompt"
            | "gen_ai.completion"
            | "gen_ai.event.content"
            // OpenInference
            | "input.value"
            | "output.value"
            | "llm.prompts"
            | "llm.prompt_template.template"
            | "llm.prompt_template.variables"
            | "reranker.query"
            // Langfuse
            | "langfuse.observation.input"
            | "langfuse.observation.output"
            | "langfuse.trace.input"
            | "langfuse.trace.output"
            // Traceloop
            | "traceloop.entity.input"
            | "traceloop.entity.output"
            // Vercel AI SDK
            | "ai.prompt"
            | "ai.prompt.messages"
            | "ai.response.text"
            | "ai.response.object"
            | "ai.response.toolCalls"
            | "ai.toolCall.args"
            | "ai.toolCall.result"
    ) || is_content_family(key)
}

/// Flattened message lists (every key under them: roles go with the
/// content, since a message is dropped whole), and the text of documents
/// and embedded inputs.
fn is_content_family(key: &str) -> bool {
    const MESSAGE_PREFIXES: [&str; 6] = [
        "gen_ai.prompt.",
        "gen_ai.completion.",
        "llm.input_messages.",
        "llm.output_messages.",
        "llm.prompts.",
        "llm.completions.",
    ];
    if MESSAGE_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
        return true;
    }
    (key.starts_with("retrieval.documents.") || key.starts_with("reranker."))
        && key.ends_with(".document.content")
        || key.starts_with("embedding.embeddings.") && key.ends_with(".embedding.text")
}

/// GenAI events that exist to carry a message: `gen_ai.user.message` and
/// its kin, `gen_ai.choice`, OpenLLMetry's `gen_ai.content.*` and the
/// current `gen_ai.client.inference.operation.details`.
fn is_content_event(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("gen_ai.") else {
        return false;
    };
    rest.ends_with(".message")
        || rest == "choice"
        || rest.starts_with("content.")
        || rest == "client.inference.operation.details"
}

/// What a content event keeps: its name, position and finish reason, and
/// GenAI attributes that are not content (provider, ids).
fn kept_in_content_event(key: &str) -> bool {
    matches!(key, "role" | "index" | "finish_reason" | "event.name")
        || key.starts_with("gen_ai.") && !is_content_key(key)
}

/// Removes content attributes from `attributes`; true when any was there.
fn drop_content(attributes: &mut Attributes, content_event: bool) -> bool {
    let before = attributes.len();
    if content_event {
        attributes.retain(|key, _| kept_in_content_event(key));
    } else {
        attributes.retain(|key, _| !is_content_key(key));
    }
    attributes.len() != before
}

fn drop_span_content(span: &mut SpanRecord) {
    let mut dropped = drop_content(&mut span.attributes, false);
    for event in &mut span.events {
        dropped |= drop_content(&mut event.attributes, is_content_event(&event.name));
    }
    if dropped {
        span.attributes.insert(CONTENT_DROPPED.to_owned(), Value::Bool(true));
    }
}

fn drop_log_content(log: &mut LogRecord) {
    let content_event =
        log.attributes.get("event.name").and_then(Value::as_str).is_some_and(is_content_event);
    let mut dropped = drop_content(&mut log.attributes, content_event);
    if content_event && !log.body.is_null() {
        log.body = Value::Null;
        dropped = true;
    }
    if dropped {
        log.attributes.insert(CONTENT_DROPPED.to_owned(), Value::Bool(true));
    }
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

/// The resources of one export are shared by their spans (one `Arc` per
/// `ResourceSpans`): each is masked once and the copy shared the same way.
#[derive(Default)]
struct ResourceMemo {
    last: Option<(Arc<Attributes>, Arc<Attributes>)>,
}

fn redact_span(regex: &Regex, span: &mut SpanRecord, resources: &mut ResourceMemo) {
    redact_map(regex, &mut span.attributes);
    for event in &mut span.events {
        redact_map(regex, &mut event.attributes);
    }
    if let Some(message) = &mut span.status_message
        && let Some(masked) = redact_text(regex, message)
    {
        *message = masked;
    }
    match &resources.last {
        Some((original, masked)) if Arc::ptr_eq(original, &span.resource) => {
            span.resource = masked.clone();
        }
        _ => {
            let original = span.resource.clone();
            let mut copy = (*original).clone();
            if redact_map(regex, &mut copy) {
                span.resource = Arc::new(copy);
            }
            resources.last = Some((original, span.resource.clone()));
        }
    }
}

/// Masks every string value of `map` (keys are names, not content); true
/// when anything changed.
fn redact_map(regex: &Regex, map: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for value in map.values_mut() {
        changed |= redact_value(regex, value);
    }
    changed
}

/// Masks the strings of `value` at any depth; true when anything changed.
fn redact_value(regex: &Regex, value: &mut Value) -> bool {
    match value {
        Value::String(text) => match redact_string(regex, text) {
            Some(masked) => {
                *text = masked;
                true
            }
            None => false,
        },
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= redact_value(regex, item);
            }
            changed
        }
        Value::Object(map) => redact_map(regex, map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A string value masked, or None when nothing in it matched. A string
/// holding a JSON object or array (as Langfuse, Traceloop and GenAI
/// messages are sent) is masked inside: its strings, keys and numbers as
/// decoded, so escapes neither hide a match nor get cut in half by one.
fn redact_string(regex: &Regex, text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(mut document) = serde_json::from_str::<Value>(text)
    {
        return redact_json(regex, &mut document)
            .then(|| serde_json::to_string(&document).expect("JSON values serialize"));
    }
    redact_text(regex, text)
}

/// `redact_value` for a decoded JSON document: object keys and numbers are
/// text of the string it came from, so they are masked too.
fn redact_json(regex: &Regex, value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            if !map.keys().any(|key| regex.is_match(key.as_str())) {
                let mut changed = false;
                for item in map.values_mut() {
                    changed |= redact_json(regex, item);
                }
                return changed;
            }
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                redact_json(regex, &mut item);
                let key = redact_text(regex, &key).unwrap_or(key);
                map.insert(key, item);
            }
            true
        }
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= redact_json(regex, item);
            }
            changed
        }
        Value::Number(number) => {
            let text = number.to_string();
            match redact_text(regex, &text) {
                Some(masked) => {
                    *value = Value::String(masked);
                    true
                }
                None => false,
            }
        }
        Value::String(_) => redact_value(regex, value),
        Value::Null | Value::Bool(_) => false,
    }
}

/// `text` with each match replaced by `[REDACTED]`, or None when nothing
/// matched. Empty matches (a pattern like `\b`) mask nothing.
fn redact_text(regex: &Regex, text: &str) -> Option<String> {
    let mut masked = String::new();
    let mut copied = 0;
    for found in regex.find_iter(text) {
        let (start, end) = (found.start(), found.end());
        if start == end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            continue;
        }
        masked.push_str(&text[copied..start]);
        masked.push_str(REDACTED);
        copied = end;
    }
    if copied == 0 && masked.is_empty() {
        return None;
    }
    masked.push_str(&text[copied..]);
    Some(masked)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::config::{Config, Overrides};
    use crate::model::SpanEvent;

    const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}";
    const API_KEY: &str = r"sk-[A-Za-z0-9]{16,}";

    fn privacy(text: &str) -> Privacy {
        Config::from_toml_str("privacy.toml", text, &HashMap::new(), &Overrides::default())
            .unwrap()
            .privacy
            .compile()
            .unwrap()
    }

    fn attributes(value: Value) -> Attributes {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn span(project: &str, attrs: Value) -> SpanRecord {
        SpanRecord {
            project: project.to_owned(),
            attributes: attributes(attrs),
            ..SpanRecord::example()
        }
    }

    fn log(project: &str, body: Value, attrs: Value) -> LogRecord {
        LogRecord {
            project: project.to_owned(),
            time_ns: 1,
            severity_number: 9,
            severity_text: None,
            body,
            attributes: attributes(attrs),
            trace_id: None,
            span_id: None,
            service: "svc".to_owned(),
        }
    }

    #[test]
    fn defaults_are_inert_and_change_nothing() {
        let privacy = PrivacyConfig::default().compile().unwrap();
        assert!(privacy.is_inert());
        let mut spans = [span("p", json!({"gen_ai.input.messages": "hi a@b.co"}))];
        let before = spans.clone();
        privacy.apply(&mut spans, &mut []);
        assert_eq!(spans, before);
        // A project override alone makes the settings do work.
        assert!(!self::privacy("[privacy.projects.a]\nstore_content = false\n").is_inert());
    }

    #[test]
    fn content_of_every_convention_is_dropped_and_the_rest_kept() {
        let privacy = privacy("[privacy]\nstore_content = false\n");
        let mut spans = [span(
            "p",
            json!({
                "gen_ai.input.messages": "[{\"role\":\"user\"}]",
                "gen_ai.output.messages": "x",
                "gen_ai.system_instructions": "x",
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "x",
                "gen_ai.completion.0.content": "x",
                "llm.input_messages.0.message.content": "x",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "x",
                "input.value": "x",
                "output.value": "x",
                "retrieval.documents.0.document.content": "x",
                "embedding.embeddings.0.embedding.text": "x",
                "langfuse.observation.input": "x",
                "langfuse.observation.output": "x",
                "langfuse.trace.input": "x",
                "traceloop.entity.input": "x",
                "traceloop.entity.output": "x",
                "ai.prompt.messages": "x",
                // Kept: accounting, names and ids.
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 4,
                "llm.token_count.prompt": 10,
                "langfuse.observation.usage_details": "{\"input\":10}",
                "langfuse.observation.prompt.name": "greeting",
                "retrieval.documents.0.document.id": "doc-1",
                "traceloop.entity.name": "planner",
                "input.mime_type": "text/plain",
            }),
        )];
        spans[0].events = vec![
            SpanEvent {
                time_ns: 1,
                name: "gen_ai.user.message".into(),
                attributes: attributes(
                    json!({"content": "x", "role": "user", "gen_ai.system": "openai"}),
                ),
            },
            SpanEvent {
                time_ns: 2,
                name: "gen_ai.choice".into(),
                attributes: attributes(json!({"message": {"content": "x"}, "index": 0})),
            },
            SpanEvent {
                time_ns: 3,
                name: "exception".into(),
                attributes: attributes(json!({"exception.type": "Timeout"})),
            },
        ];
        privacy.apply(&mut spans, &mut []);
        let kept: Vec<&str> = spans[0].attributes.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "gen_ai.request.model",
                "gen_ai.usage.completion_tokens",
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "input.mime_type",
                "langfuse.observation.prompt.name",
                "langfuse.observation.usage_details",
                "llm.token_count.prompt",
                "retrieval.documents.0.document.id",
                "tally.content_dropped",
                "traceloop.entity.name",
            ]
        );
        let events: Vec<Value> =
            spans[0].events.iter().map(|e| Value::Object(e.attributes.clone())).collect();
        assert_eq!(
            events,
            [
                json!({"role": "user", "gen_ai.system": "openai"}),
                json!({"index": 0}),
                json!({"exception.type": "Timeout"})
            ]
        );
    }

    #[test]
    fn a_span_without_content_is_not_marked() {
        let privacy = privacy("[privacy]\nstore_content = false\n");
        let mut spans = [span("p", json!({"gen_ai.request.model": "gpt-4o"}))];
        let before = spans.clone();
        privacy.apply(&mut spans, &mut []);
        assert_eq!(spans, before);
    }

    #[test]
    fn genai_event_logs_lose_their_body_other_logs_keep_it() {
        let privacy = privacy("[privacy]\nstore_content = false\n");
        let mut logs = [
            log(
                "p",
                json!({"content": "secret prompt"}),
                json!({"event.name": "gen_ai.user.message", "gen_ai.provider.name": "openai"}),
            ),
            log("p", json!("secret answer"), json!({"event.name": "gen_ai.choice"})),
            log("p", json!("upstream timed out"), json!({"gen_ai.input.messages": "x"})),
            log("p", json!("plain"), json!({"http.route": "/v1/chat"})),
        ];
        privacy.apply(&mut [], &mut logs);
        assert_eq!(logs[0].body, Value::Null);
        assert_eq!(
            Value::Object(logs[0].attributes.clone()),
            json!({"event.name": "gen_ai.user.message", "gen_ai.provider.name": "openai",
                   "tally.content_dropped": true})
        );
        assert_eq!(logs[1].body, Value::Null);
        assert_eq!(logs[2].body, json!("upstream timed out"));
        assert_eq!(
            Value::Object(logs[2].attributes.clone()),
            json!({"tally.content_dropped": true})
        );
        assert_eq!(logs[3].body, json!("plain"));
        assert!(!logs[3].attributes.contains_key(CONTENT_DROPPED));
    }

    #[test]
    fn redaction_masks_text_in_attributes_events_resource_status_and_bodies() {
        let config = format!("[privacy]\nredact = ['{EMAIL}', '{API_KEY}']\n");
        let privacy = privacy(&config);
        let resource = Arc::new(attributes(json!({"service.owner": "ops@example.com"})));
        let mut first = span(
            "p",
            json!({
                "app.note": "write to bob@example.com or carol@example.org, key sk-abcdefghijklmnop1234",
                "gen_ai.usage.input_tokens": 12,
                "tags": ["x", "dave@example.net"],
            }),
        );
        first.resource = resource.clone();
        first.status_message = Some("rejected for eve@example.com".into());
        first.events = vec![SpanEvent {
            time_ns: 1,
            name: "note".into(),
            attributes: attributes(json!({"who": "frank@example.com"})),
        }];
        let mut second = span("p", json!({}));
        second.resource = resource.clone();
        let mut spans = [first, second];
        let mut logs =
            [log("p", json!("mail grace@example.com"), json!({"user.email": "heidi@example.com"}))];
        privacy.apply(&mut spans, &mut logs);
        let span = &spans[0];
        assert_eq!(
            span.attributes["app.note"],
            "write to [REDACTED] or [REDACTED], key [REDACTED]"
        );
        assert_eq!(span.attributes["gen_ai.usage.input_tokens"], 12);
        assert_eq!(span.attributes["tags"], json!(["x", "[REDACTED]"]));
        assert_eq!(span.status_message.as_deref(), Some("rejected for [REDACTED]"));
        assert_eq!(span.events[0].attributes["who"], "[REDACTED]");
        assert_eq!(span.resource["service.owner"], "[REDACTED]");
        // One masked copy of the resource, shared as the original was.
        assert!(Arc::ptr_eq(&spans[0].resource, &spans[1].resource));
        assert_eq!(resource["service.owner"], "ops@example.com");
        assert_eq!(logs[0].body, "mail [REDACTED]");
        assert_eq!(logs[0].attributes["user.email"], "[REDACTED]");
    }

    #[test]
    fn redaction_inside_json_strings_keeps_them_json() {
        let privacy = privacy(&format!("[privacy]\nredact = ['{EMAIL}', '\\d{{16}}']\n"));
        // The email follows an escaped newline: masking the raw text would
        // take the `n` of `\n` and leave an invalid escape behind.
        let messages = json!([{"role": "user", "content": "hi\nbob@example.com",
                               "card": 4111111111111111_u64,
                               "ivan@example.com": "key"}])
        .to_string();
        let mut spans = [span("p", json!({"gen_ai.input.messages": messages}))];
        privacy.apply(&mut spans, &mut []);
        let stored = spans[0].attributes["gen_ai.input.messages"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(stored).unwrap();
        assert_eq!(
            parsed,
            json!([{"role": "user", "content": "hi\n[REDACTED]", "card": "[REDACTED]",
                    "[REDACTED]": "key"}])
        );
        // JSON with nothing to mask is left exactly as sent.
        let untouched = "{ \"role\" : \"user\" }";
        let mut spans = [span("p", json!({"gen_ai.input.messages": untouched}))];
        privacy.apply(&mut spans, &mut []);
        assert_eq!(spans[0].attributes["gen_ai.input.messages"], untouched);
        // Text that only looks like JSON is masked as text.
        let mut spans = [span("p", json!({"note": "[cut] bob@example.com"}))];
        privacy.apply(&mut spans, &mut []);
        assert_eq!(spans[0].attributes["note"], "[cut] [REDACTED]");
    }

    #[test]
    fn patterns_take_the_leftmost_match_of_any_and_skip_empty_matches() {
        let regex = redactor("k", &["bc".into(), "abcd".into(), r"\bz?x".into()]).unwrap().unwrap();
        assert_eq!(redact_text(&regex, "abcd bc").as_deref(), Some("[REDACTED] [REDACTED]"));
        assert_eq!(redact_text(&regex, "nothing here"), None);
        assert_eq!(redact_text(&regex, "é x é").as_deref(), Some("é [REDACTED] é"));
        // A match of the whole text.
        assert_eq!(redact_text(&regex, "bc").as_deref(), Some("[REDACTED]"));
    }

    #[test]
    fn projects_override_the_global_settings() {
        let privacy = privacy(&format!(
            "[privacy]\nstore_content = false\nredact = ['{EMAIL}']\n\
             [privacy.projects.open]\nstore_content = true\nredact = []\n\
             [privacy.projects.strict]\nredact = ['{API_KEY}']\n"
        ));
        let attrs = json!({"input.value": "bob@example.com sk-abcdefghijklmnopqrst"});
        let mut spans =
            [span("open", attrs.clone()), span("strict", attrs.clone()), span("other", attrs)];
        privacy.apply(&mut spans, &mut []);
        assert_eq!(spans[0].attributes["input.value"], "bob@example.com sk-abcdefghijklmnopqrst");
        assert!(!spans[1].attributes.contains_key("input.value"));
        assert!(!spans[2].attributes.contains_key("input.value"));
        let mut kept = [span("strict", json!({"note": "bob@example.com sk-abcdefghijklmnopqrst"}))];
        privacy.apply(&mut kept, &mut []);
        assert_eq!(kept[0].attributes["note"], "bob@example.com [REDACTED]");
    }

    /// The commented examples of tally.example.toml and the README's
    /// example load, and mask what they say they mask.
    #[test]
    fn documented_examples_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("tally.example.toml")).unwrap();
        let section: Vec<&str> = example
            .lines()
            .skip_while(|line| *line != "[privacy]")
            .take_while(|line| !line.starts_with("# Prices"))
            .collect();
        let redact: Vec<&str> = section
            .iter()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with("redact = ['[A-Z"))
            .collect();
        let project: Vec<String> = section
            .iter()
            .skip_while(|line| !line.starts_with("# [privacy.projects."))
            .filter_map(|line| line.strip_prefix("# "))
            .map(str::to_owned)
            .collect();
        assert_eq!((redact.len(), project.len()), (1, 3), "{section:?}");
        let text = format!("[privacy]\n{}\n{}\n", redact[0], project.join("\n"));
        let example = privacy(&text);
        let mut spans = [
            span("default", json!({"note": "bob@example.com sk-abcdefghijklmnopqrstuvwx"})),
            span("support-bot", json!({"note": "card 4111111111111111", "input.value": "x"})),
        ];
        example.apply(&mut spans, &mut []);
        assert_eq!(spans[0].attributes["note"], "[REDACTED] [REDACTED]");
        assert_eq!(spans[1].attributes["note"], "card [REDACTED]");
        assert!(!spans[1].attributes.contains_key("input.value"));

        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let block: String = readme
            .lines()
            .skip_while(|line| *line != "### Content privacy")
            .skip_while(|line| *line != "```toml")
            .skip(1)
            .take_while(|line| *line != "```")
            .map(|line| format!("{line}\n"))
            .collect();
        let readme = privacy(&block);
        let mut spans = [
            span("default", json!({"note": "bob@example.com", "input.value": "x"})),
            span("support-bot", json!({"note": "bob@example.com", "input.value": "x"})),
            span("eval-lab", json!({"note": "bob@example.com"})),
        ];
        readme.apply(&mut spans, &mut []);
        assert_eq!(spans[0].attributes["note"], "[REDACTED]");
        assert!(spans[0].attributes.contains_key("input.value"));
        assert_eq!(spans[1].attributes["note"], "[REDACTED]");
        assert!(!spans[1].attributes.contains_key("input.value"));
        assert_eq!(spans[2].attributes["note"], "bob@example.com");
    }

    #[test]
    fn bad_patterns_are_named_at_load() {
        let load = |text: &str| {
            Config::from_toml_str("privacy.toml", text, &HashMap::new(), &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        let err = load("[privacy]\nredact = ['ok', 'a(b']\n");
        assert!(err.contains("privacy.redact[1]") && err.contains("\"a(b\""), "{err}");
        let err = load("[privacy.projects.team-a]\nredact = ['x*']\n");
        assert!(err.contains("privacy.projects.team-a.redact[0]"), "{err}");
        assert!(err.contains("matches the empty string"), "{err}");
        let err = load("[privacy.projects.a]\nstore = false\n");
        assert!(err.contains("store"), "{err}");
    }
}
