//! The demo's three agents — support, research and coding — as runs of
//! OpenTelemetry spans with GenAI attributes: an agent span over LLM calls
//! (with their messages), tool calls, retrievals, embeddings and memory
//! steps, plus the log records the agents write and the processing times
//! their retrieval service measures. Every model call of a run is also a
//! `Call` the gateway reports, linked to its span.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::calls::{Call, Caller, Outcome, Shape};
use super::cast::{self, Model, long_tail};
use super::prose::{self, Slots, pick};
use super::world::{Sessions, World};

/// OTLP span kinds.
const INTERNAL: i32 = 1;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
const MS: f64 = 1_000_000.0;

/// The agents, each with the service that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Support,
    Research,
    Coding,
}

impl Agent {
    pub const ALL: [Agent; 3] = [Agent::Support, Agent::Research, Agent::Coding];

    pub fn name(self) -> &'static str {
        match self {
            Agent::Support => "support",
            Agent::Research => "research",
            Agent::Coding => "coding",
        }
    }

    pub fn service(self) -> &'static str {
        match self {
            Agent::Support => "support-agent",
            Agent::Research => "research-agent",
            Agent::Coding => "coding-agent",
        }
    }

    /// Runs per second at the busiest hour, per model call per second of
    /// `--rate` (support runs make about 3 calls, the others about 5).
    pub fn runs_per_call(self) -> f64 {
        match self {
            Agent::Support => 0.06,
            Agent::Research => 0.025,
            Agent::Coding => 0.02,
        }
    }
}

/// A processing time the retrieval service measures (`processing_time`,
/// `vector_operation_time` points).
#[derive(Debug, Clone)]
pub struct Observation {
    pub name: &'static str,
    pub at_ms: i64,
    pub value: f64,
    pub tags: [(&'static str, &'static str); 2],
}

/// One agent run: its model calls (always), and its spans, logs and
/// observations when it is traced.
#[derive(Debug, Default)]
pub struct Run {
    pub calls: Vec<Call>,
    pub spans: Vec<Span>,
    pub logs: Vec<LogRecord>,
    pub observations: Vec<Observation>,
}

/// A span id to hang children on.
type SpanId = [u8; 8];

struct Builder<'w> {
    world: &'w World,
    rng: &'w mut StdRng,
    traced: bool,
    trace_id: [u8; 16],
    agent: Agent,
    caller: Caller,
    session: String,
    /// The run's clock, in unix ms; steps advance it.
    at: f64,
    run: Run,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: u64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value as i64))
}

fn float(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

fn flag(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

fn strings(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|v| AnyValue { value: Some(any_value::Value::StringValue((*v).into())) })
        .collect();
    kv(key, any_value::Value::ArrayValue(ArrayValue { values }))
}

/// A chat message in the GenAI conventions' JSON form.
fn message(role: &str, content: &str) -> Value {
    json!({"role": role, "parts": [{"type": "text", "content": content}]})
}

fn tool_call_message(id: &str, name: &str, arguments: &Value) -> Value {
    json!({"role": "assistant", "parts": [{"type": "tool_call", "id": id, "name": name, "arguments": arguments}]})
}

fn tool_result_message(id: &str, result: &str) -> Value {
    json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": id, "result": result}]})
}

/// Rough token count of text (about four characters a token).
fn tokens_of(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// What one LLM step sends and gets back.
struct Exchange {
    system: String,
    input: Vec<Value>,
    /// The assistant's answer: text, or a tool call (id, name, arguments).
    output: Reply,
    /// Prompt tokens not shown in the messages (tool definitions, files,
    /// retrieved documents).
    hidden_input: u64,
    /// Share of the prompt served from the provider's cache.
    cached_share: f64,
    cache_write: bool,
    streaming: bool,
}

enum Reply {
    Text(String),
    Tool { id: String, name: &'static str, arguments: Value },
}

impl Builder<'_> {
    fn span_id(&mut self) -> SpanId {
        self.rng.random()
    }

    /// A provider-style id for a tool call the model asks for.
    fn call_id(&mut self, prefix: &str) -> String {
        format!("{prefix}_{}", cast::hex_id(6, self.rng))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_span(
        &mut self,
        id: SpanId,
        parent: Option<SpanId>,
        name: String,
        kind: i32,
        start_ms: f64,
        end_ms: f64,
        mut attributes: Vec<KeyValue>,
        failure: Option<(&str, &str)>,
    ) {
        if !self.traced {
            return;
        }
        attributes.push(text("user.id", self.caller.user));
        attributes.push(text("gen_ai.conversation.id", &self.session));
        let mut span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name,
            kind,
            start_time_unix_nano: (start_ms * MS) as u64,
            end_time_unix_nano: (end_ms * MS) as u64,
            attributes,
            ..Span::default()
        };
        if let Some((error_type, message)) = failure {
            span.attributes.push(text("error.type", error_type));
            span.status = Some(Status { code: STATUS_ERROR, message: message.into() });
            span.events.push(Event {
                time_unix_nano: (end_ms * MS) as u64,
                name: "exception".into(),
                attributes: vec![
                    text("exception.type", error_type),
                    text("exception.message", message),
                ],
                ..Event::default()
            });
        }
        self.run.spans.push(span);
    }

    fn log(&mut self, at_ms: f64, severity: (i32, &str), body: String, span: Option<SpanId>) {
        if !self.traced {
            return;
        }
        self.run.logs.push(LogRecord {
            time_unix_nano: (at_ms * MS) as u64,
            observed_time_unix_nano: (at_ms * MS) as u64,
            severity_number: severity.0,
            severity_text: severity.1.into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
            attributes: vec![text("gen_ai.agent.name", self.agent.name())],
            trace_id: self.trace_id.to_vec(),
            span_id: span.map(|s| s.to_vec()).unwrap_or_default(),
            ..LogRecord::default()
        });
    }

    /// One LLM call, retried once after a backoff when the provider fails.
    /// Returns the answer's output tokens.
    fn llm(&mut self, parent: SpanId, model: &'static Model, exchange: &Exchange) -> u64 {
        let outcome = self.world.outcome(model, self.at as i64, self.rng);
        if let Outcome::Failed(error_type, message) = outcome {
            self.llm_attempt(parent, model, exchange, outcome);
            self.log(
                self.at,
                (13, "WARN"),
                format!("{} call failed ({error_type}: {message}); retrying", model.name),
                None,
            );
            self.at += self.rng.random_range(800.0..4_000.0);
        }
        self.llm_attempt(parent, model, exchange, Outcome::Ok)
    }

    fn llm_attempt(
        &mut self,
        parent: SpanId,
        model: &'static Model,
        exchange: &Exchange,
        outcome: Outcome,
    ) -> u64 {
        let output_text = match &exchange.output {
            Reply::Text(text) => text.clone(),
            Reply::Tool { arguments, .. } => arguments.to_string(),
        };
        let shown_input: u64 = tokens_of(&exchange.system)
            + exchange.input.iter().map(|m| tokens_of(&m.to_string())).sum::<u64>();
        let shape = Shape {
            input: shown_input + exchange.hidden_input,
            cached_share: exchange.cached_share,
            cache_write: exchange.cache_write,
            output: tokens_of(&output_text) + self.rng.random_range(0..40),
            streaming: exchange.streaming,
        };
        let slowdown = self.world.slowdown(model, self.at as i64);
        let mut call =
            Call::new(model, self.caller, shape, self.at as i64, outcome, slowdown, self.rng);
        call.session = Some(self.session.clone());
        let id = self.span_id();
        call.span = Some((hex::encode(self.trace_id), hex::encode(id)));
        let start = self.at;
        let end = start + call.duration_ms;
        if self.traced {
            let mut attributes = vec![
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.provider.name", model.provider),
                text("gen_ai.request.model", model.name),
                text("gen_ai.agent.name", self.agent.name()),
                flag("gen_ai.request.stream", call.streaming),
                int("gen_ai.request.max_tokens", 4_096),
                float("gen_ai.request.temperature", 0.2),
                text(
                    "gen_ai.system_instructions",
                    &json!([{"type": "text", "content": exchange.system}]).to_string(),
                ),
                text("gen_ai.input.messages", &Value::Array(exchange.input.clone()).to_string()),
            ];
            if !call.failed() {
                let (message, finish) = match &exchange.output {
                    Reply::Text(text) => (message("assistant", text), "stop"),
                    Reply::Tool { id, name, arguments } => {
                        (tool_call_message(id, name, arguments), "tool_call")
                    }
                };
                let mut message = message;
                message["finish_reason"] = json!(finish);
                attributes.extend([
                    text("gen_ai.response.id", &call.id),
                    text("gen_ai.response.model", model.name),
                    strings("gen_ai.response.finish_reasons", &[finish]),
                    text("gen_ai.output.messages", &json!([message]).to_string()),
                    int("gen_ai.usage.input_tokens", call.input),
                    int("gen_ai.usage.output_tokens", call.output),
                ]);
                if call.cache_read > 0 {
                    attributes.push(int("gen_ai.usage.cache_read.input_tokens", call.cache_read));
                }
                if call.cache_write > 0 {
                    attributes
                        .push(int("gen_ai.usage.cache_creation.input_tokens", call.cache_write));
                }
                if call.reasoning > 0 {
                    attributes.push(int("gen_ai.usage.reasoning.output_tokens", call.reasoning));
                }
                if let Some(ttft) = call.ttft_ms {
                    attributes.push(float("gen_ai.response.time_to_first_chunk", ttft / 1000.0));
                }
            }
            let failure = outcome.failure();
            self.push_span(
                id,
                Some(parent),
                format!("chat {}", model.name),
                CLIENT,
                start,
                end,
                attributes,
                failure,
            );
        }
        let output = call.output;
        self.run.calls.push(call);
        self.at = end;
        output
    }

    /// A tool call taking about `typical_ms` (with a long tail); fails with
    /// `failure` if given.
    fn tool(
        &mut self,
        parent: SpanId,
        name: &'static str,
        arguments: &str,
        result: &str,
        typical_ms: f64,
        failure: Option<(&str, &str)>,
    ) -> f64 {
        let id = self.span_id();
        let call_id = format!("call_{}", cast::hex_id(8, self.rng));
        let duration = long_tail(typical_ms, 0.6, self.rng);
        let start = self.at;
        let mut attributes = vec![
            text("gen_ai.operation.name", "execute_tool"),
            text("gen_ai.tool.name", name),
            text("gen_ai.tool.type", "function"),
            text("gen_ai.tool.call.id", &call_id),
            text("gen_ai.tool.call.arguments", arguments),
        ];
        if failure.is_none() {
            attributes.push(text("gen_ai.tool.call.result", result));
        }
        self.push_span(
            id,
            Some(parent),
            format!("execute_tool {name}"),
            INTERNAL,
            start,
            start + duration,
            attributes,
            failure,
        );
        if let Some((kind, message)) = failure {
            self.log(
                start + duration,
                (17, "ERROR"),
                format!("tool {name} failed: {kind}: {message}"),
                Some(id),
            );
        }
        self.at = start + duration;
        duration
    }

    /// An embedding of `query` then a vector search of `source`.
    fn retrieval(&mut self, parent: SpanId, source: &str, query: &str, documents: &[&str]) {
        let id = self.span_id();
        let start = self.at;
        // The embedding call, inside the retrieval.
        let embed_shape = Shape {
            input: tokens_of(query) + 4,
            cached_share: 0.0,
            cache_write: false,
            output: 0,
            streaming: false,
        };
        let outcome = self.world.outcome(&cast::EMBEDDING, self.at as i64, self.rng);
        let mut embed = Call::new(
            &cast::EMBEDDING,
            self.caller,
            embed_shape,
            start as i64 + 2,
            outcome,
            1.0,
            self.rng,
        );
        embed.session = Some(self.session.clone());
        let embed_id = self.span_id();
        embed.span = Some((hex::encode(self.trace_id), hex::encode(embed_id)));
        let embed_end = start + 2.0 + embed.duration_ms;
        let mut attributes = vec![
            text("gen_ai.operation.name", "embeddings"),
            text("gen_ai.provider.name", cast::EMBEDDING.provider),
            text("gen_ai.request.model", cast::EMBEDDING.name),
            int("gen_ai.embeddings.dimension.count", 1_536),
        ];
        if !embed.failed() {
            attributes.push(text("gen_ai.response.model", cast::EMBEDDING.name));
            attributes.push(int("gen_ai.usage.input_tokens", embed.input));
        }
        let failure = outcome.failure();
        self.push_span(
            embed_id,
            Some(id),
            format!("embeddings {}", cast::EMBEDDING.name),
            CLIENT,
            start + 2.0,
            embed_end,
            attributes,
            failure,
        );
        let embed_ms = embed.duration_ms;
        self.run.calls.push(embed);
        let search_ms = long_tail(45.0, 0.5, self.rng);
        let end = embed_end + search_ms + 3.0;
        let scored: Vec<Value> = documents
            .iter()
            .enumerate()
            .map(|(i, doc)| json!({"id": doc, "score": ((0.91 - 0.07 * i as f64) * 1000.0).round() / 1000.0}))
            .collect();
        self.push_span(
            id,
            Some(parent),
            format!("retrieval {source}"),
            INTERNAL,
            start,
            end,
            vec![
                text("gen_ai.operation.name", "retrieval"),
                text("gen_ai.data_source.id", source),
                text("gen_ai.retrieval.query.text", query),
                int("gen_ai.retrieval.top_k", 5),
                text("gen_ai.retrieval.documents", &Value::Array(scored).to_string()),
            ],
            None,
        );
        let status = if failure.is_some() { "error" } else { "success" };
        self.observe(
            "processing_time",
            end,
            (end - start) / 1000.0,
            [("operation", "search"), ("status", status)],
        );
        self.observe(
            "processing_time",
            embed_end,
            embed_ms / 1000.0,
            [("operation", "embed"), ("status", status)],
        );
        self.observe(
            "vector_operation_time",
            end,
            search_ms / 1000.0,
            [("operation", "query"), ("index", "hnsw")],
        );
        self.at = end;
    }

    /// A read or write of the agent's memory store.
    fn memory(&mut self, parent: SpanId, operation: &'static str, store: &str, records: u64) {
        let id = self.span_id();
        let duration =
            long_tail(if operation == "search_memory" { 25.0 } else { 40.0 }, 0.4, self.rng);
        let start = self.at;
        let verb = if operation == "search_memory" { "load" } else { "save" };
        self.push_span(
            id,
            Some(parent),
            format!("memory {verb} {store}"),
            INTERNAL,
            start,
            start + duration,
            vec![
                text("gen_ai.operation.name", operation),
                text("tally.span.kind", "memory"),
                text("gen_ai.memory.store.id", store),
                int("gen_ai.memory.record.count", records),
            ],
            None,
        );
        self.observe(
            "processing_time",
            start + duration,
            duration / 1000.0,
            [("operation", "memory"), ("status", "success")],
        );
        self.at = start + duration;
    }

    fn observe(
        &mut self,
        name: &'static str,
        at_ms: f64,
        value: f64,
        tags: [(&'static str, &'static str); 2],
    ) {
        if self.traced {
            self.run.observations.push(Observation { name, at_ms: at_ms as i64, value, tags });
        }
    }
}

/// The date of `t_ms` as people write it ("March 14").
fn day_of(t_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t_ms)
        .map(|t| t.format("%B %-d").to_string())
        .unwrap_or_default()
}

/// One run of `agent` ending at about `end_ms`. `traced`: whether its
/// spans, logs and observations are kept (sampled-out runs still make
/// their model calls, which the gateway reports).
pub fn run(
    world: &World,
    sessions: &mut Sessions,
    rng: &mut StdRng,
    agent: Agent,
    end_ms: i64,
    traced: bool,
) -> Run {
    let (team, key) = match agent {
        Agent::Support => (cast::SUPPORT, &cast::SUPPORT_BOT),
        Agent::Research => (cast::RESEARCH, &cast::RESEARCH_APP),
        Agent::Coding => (cast::ENGINEERING, &cast::CODING_ASSISTANT),
    };
    let user = cast::user_of(team, rng);
    let caller = Caller {
        user,
        team: cast::TEAMS[team].name,
        key,
        route: cast::INTERACTIVE,
        agent: Some(agent.name()),
    };
    // Runs are built forward from a provisional start and then shifted so
    // that they end at `end_ms`: live runs are exported as they finish.
    let provisional = end_ms as f64 - 60_000.0;
    let session = sessions.session(agent.name(), user, end_ms, rng);
    let slots = Slots::new(user, day_of(end_ms), rng);
    let mut builder = Builder {
        world,
        trace_id: rng.random(),
        rng,
        traced,
        agent,
        caller,
        session,
        at: provisional,
        run: Run::default(),
    };
    let root = builder.span_id();
    builder.log(
        builder.at,
        (9, "INFO"),
        format!("{} agent run started for {user}", agent.name()),
        Some(root),
    );
    let failed_step = match agent {
        Agent::Support => support(&mut builder, root, &slots),
        Agent::Research => research(&mut builder, root),
        Agent::Coding => coding(&mut builder, root, &slots),
    };
    let end = builder.at + 3.0;
    let llm_calls = builder.run.calls.len();
    builder.log(
        end,
        (9, "INFO"),
        format!(
            "{} agent run finished in {:.1} s with {llm_calls} model calls",
            agent.name(),
            (end - provisional) / 1000.0
        ),
        Some(root),
    );
    let failure = failed_step.map(|step| ("AgentStepFailed", step));
    builder.push_span(
        root,
        None,
        format!("invoke_agent {}", agent.name()),
        INTERNAL,
        provisional,
        end,
        vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.name", agent.name()),
            text("gen_ai.agent.id", &format!("agent_{}", agent.name())),
        ],
        failure,
    );
    let mut run = builder.run;
    shift(&mut run, end_ms as f64 - end);
    run
}

/// Moves every time of `run` by `delta_ms`.
fn shift(run: &mut Run, delta_ms: f64) {
    let ns = |t: &mut u64| *t = (*t as f64 + delta_ms * MS) as u64;
    for span in &mut run.spans {
        ns(&mut span.start_time_unix_nano);
        ns(&mut span.end_time_unix_nano);
        span.events.iter_mut().for_each(|e| ns(&mut e.time_unix_nano));
    }
    for log in &mut run.logs {
        ns(&mut log.time_unix_nano);
        ns(&mut log.observed_time_unix_nano);
    }
    let delta = delta_ms.round() as i64;
    run.calls.iter_mut().for_each(|c| c.start_ms += delta);
    run.observations.iter_mut().for_each(|o| o.at_ms += delta);
}

/// Support: recall the conversation, search the help center, maybe look
/// something up in the account, answer.
fn support(b: &mut Builder<'_>, root: SpanId, slots: &Slots) -> Option<&'static str> {
    let case = &prose::SUPPORT_CASES[b.rng.random_range(0..prose::SUPPORT_CASES.len())];
    let question = slots.fill(pick(case.questions, b.rng));
    let remembered = b.rng.random_range(0..6);
    b.memory(root, "search_memory", "support-conversations", remembered);
    b.retrieval(root, "help-center", &question, &["kb-1042", "kb-0877", "kb-1310"]);
    let model = if b.rng.random_bool(0.6) { &cast::CLAUDE_HAIKU } else { &cast::GPT_41_MINI };
    let system = format!(
        "{}\n\nHelp-center article \"{}\": {}",
        prose::SUPPORT_SYSTEM,
        case.article,
        case.excerpt
    );
    let mut input = vec![message("user", &question)];
    if let Some((tool, arguments, result)) = case.tool {
        let call_id = format!("call_{}", cast::hex_id(6, b.rng));
        let arguments: Value = serde_json::from_str(&slots.fill(arguments)).unwrap_or(Value::Null);
        b.llm(
            root,
            model,
            &Exchange {
                system: system.clone(),
                input: input.clone(),
                output: Reply::Tool {
                    id: call_id.clone(),
                    name: tool,
                    arguments: arguments.clone(),
                },
                hidden_input: 600,
                cached_share: 0.5,
                cache_write: false,
                streaming: false,
            },
        );
        let result = slots.fill(result);
        // The account service is usually quick; now and then it stalls.
        let typical = if b.rng.random_bool(0.08) { 4_500.0 } else { 220.0 };
        b.tool(root, tool, &arguments.to_string(), &result, typical, None);
        input.push(tool_call_message(&call_id, tool, &arguments));
        input.push(tool_result_message(&call_id, &result));
    }
    let answer = slots.fill(pick(case.answers, b.rng));
    b.llm(
        root,
        model,
        &Exchange {
            system,
            input,
            output: Reply::Text(answer),
            hidden_input: 600,
            cached_share: 0.5,
            cache_write: false,
            streaming: true,
        },
    );
    b.memory(root, "upsert_memory", "support-conversations", 2);
    None
}

/// Research: plan searches, run them, read the sources, write a brief.
fn research(b: &mut Builder<'_>, root: SpanId) -> Option<&'static str> {
    let case = &prose::RESEARCH_CASES[b.rng.random_range(0..prose::RESEARCH_CASES.len())];
    let question = message("user", case.question);
    let searches: Vec<Value> = case.searches.iter().map(|q| json!({"query": q})).collect();
    let tool_id = b.call_id("call");
    b.llm(
        root,
        &cast::O4_MINI,
        &Exchange {
            system: prose::RESEARCH_SYSTEM.to_owned(),
            input: vec![question.clone()],
            output: Reply::Tool {
                id: tool_id,
                name: "web_search",
                arguments: json!({"searches": searches}),
            },
            hidden_input: 900,
            cached_share: 0.0,
            cache_write: false,
            streaming: false,
        },
    );
    let mut failed = None;
    for query in case.searches {
        // Search is the slow step: usually a second or two, sometimes far more.
        let typical = if b.rng.random_bool(0.1) { 14_000.0 } else { 1_300.0 };
        let failure = b
            .rng
            .random_bool(0.03)
            .then_some(("TimeoutError", "search provider did not answer within 30 s"));
        let result = format!("10 results for \"{query}\"; top sources fetched");
        let arguments = json!({"query": query, "max_results": 10}).to_string();
        b.tool(root, "web_search", &arguments, &result, typical, failure);
        if failure.is_some() {
            // One retry, which works.
            b.tool(root, "web_search", &arguments, &result, 1_300.0, None);
        }
        b.tool(
            root,
            "fetch_page",
            &json!({"url_count": 3}).to_string(),
            "3 pages fetched, 14,200 words",
            700.0,
            None,
        );
    }
    b.retrieval(root, "research-notes", case.question, &["note-2231", "note-1987"]);
    let notes = format!("Findings from the sources:\n{}", case.finding);
    let sources = b.rng.random_range(18_000..52_000);
    b.llm(
        root,
        &cast::GEMINI_PRO,
        &Exchange {
            system: "Read the fetched sources and extract the facts that answer the question, with the source number of each.".to_owned(),
            input: vec![question.clone()],
            output: Reply::Text(notes.clone()),
            hidden_input: sources,
            cached_share: 0.0,
            cache_write: false,
            streaming: false,
        },
    );
    b.llm(
        root,
        &cast::CLAUDE_SONNET,
        &Exchange {
            system: prose::RESEARCH_SYSTEM.to_owned(),
            input: vec![question, message("user", &notes)],
            output: Reply::Text(case.brief.to_owned()),
            hidden_input: 1_500,
            cached_share: 0.3,
            cache_write: false,
            streaming: true,
        },
    );
    if b.rng.random_bool(0.02) {
        failed = Some("the brief could not be saved: notes store unavailable");
    } else {
        b.memory(root, "upsert_memory", "research-notes", 3);
    }
    failed
}

/// Coding: load the repository map, read files, patch, run the tests
/// (which may fail once), get a review and write the commit message.
fn coding(b: &mut Builder<'_>, root: SpanId, slots: &Slots) -> Option<&'static str> {
    let case = &prose::CODING_CASES[b.rng.random_range(0..prose::CODING_CASES.len())];
    let task = message("user", &slots.fill(case.task));
    let entries = b.rng.random_range(20..120);
    b.memory(root, "search_memory", "repository-map", entries);
    // A fresh session writes the repository context to the provider cache;
    // later steps read it.
    let context_tokens = b.rng.random_range(9_000..24_000);
    let first_file = case.files[0];
    let tool_id = b.call_id("toolu");
    b.llm(
        root,
        &cast::CLAUDE_SONNET,
        &Exchange {
            system: prose::CODING_SYSTEM.to_owned(),
            input: vec![task.clone()],
            output: Reply::Tool {
                id: tool_id,
                name: "read_file",
                arguments: json!({"path": first_file}),
            },
            hidden_input: context_tokens,
            cached_share: 0.8,
            cache_write: true,
            streaming: false,
        },
    );
    for file in case.files {
        b.tool(
            root,
            "read_file",
            &json!({"path": file}).to_string(),
            &format!("{file}: 184 lines"),
            35.0,
            None,
        );
    }
    b.tool(
        root,
        "search_code",
        &json!({"pattern": slots.test}).to_string(),
        "4 matches in 2 files",
        240.0,
        None,
    );
    let diagnosis = message("assistant", case.diagnosis);
    let tool_id = b.call_id("toolu");
    b.llm(
        root,
        &cast::CLAUDE_SONNET,
        &Exchange {
            system: prose::CODING_SYSTEM.to_owned(),
            input: vec![task.clone(), diagnosis.clone()],
            output: Reply::Tool {
                id: tool_id,
                name: "apply_patch",
                arguments: json!({"patch": case.patch}),
            },
            hidden_input: context_tokens + 2_500,
            cached_share: 0.85,
            cache_write: false,
            streaming: true,
        },
    );
    b.tool(
        root,
        "apply_patch",
        &json!({"files": case.files.len()}).to_string(),
        "patch applied",
        60.0,
        None,
    );
    // The test suite is the slow step.
    let flaky = b.rng.random_bool(0.15);
    let failure = flaky.then_some(("TestsFailed", "1 failed, 211 passed"));
    b.tool(
        root,
        "run_tests",
        &json!({"path": "tests/"}).to_string(),
        "212 passed",
        9_000.0,
        failure,
    );
    if flaky {
        let tool_id = b.call_id("toolu");
        b.llm(
            root,
            &cast::CLAUDE_SONNET,
            &Exchange {
                system: prose::CODING_SYSTEM.to_owned(),
                input: vec![
                    task.clone(),
                    diagnosis,
                    message("user", "The test run failed: 1 failed, 211 passed. Fix the failure."),
                ],
                output: Reply::Tool {
                    id: tool_id,
                    name: "apply_patch",
                    arguments: json!({"patch": case.patch}),
                },
                hidden_input: context_tokens + 4_000,
                cached_share: 0.85,
                cache_write: false,
                streaming: true,
            },
        );
        b.tool(
            root,
            "run_tests",
            &json!({"path": "tests/"}).to_string(),
            "212 passed",
            9_000.0,
            None,
        );
    }
    b.llm(
        root,
        &cast::GPT_41,
        &Exchange {
            system: "Review this change for correctness and style. Answer with approve or request changes, and at most three short comments.".to_owned(),
            input: vec![message("user", case.patch)],
            output: Reply::Text(format!("approve\n\n{}", case.summary)),
            hidden_input: 1_200,
            cached_share: 0.0,
            cache_write: false,
            streaming: false,
        },
    );
    b.llm(
        root,
        &cast::DEEPSEEK,
        &Exchange {
            system: "Write a git commit message: a summary line under 60 characters, a blank line, then one or two lines of detail.".to_owned(),
            input: vec![message("user", case.summary)],
            output: Reply::Text(case.commit.to_owned()),
            hidden_input: 200,
            cached_share: 0.0,
            cache_write: false,
            streaming: true,
        },
    );
    None
}
