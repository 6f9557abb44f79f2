//! `--shape sdk`: agent traces as instrumented applications export them.
//! A trace is drawn once (`Trace`: who asked what, the documents retrieved,
//! the model calls with their messages and token counts, the tool calls
//! with their JSON arguments and results) and then written in the words of
//! one SDK (`Sdk`, a quarter of an export's traces each): OpenLLMetry
//! (traceloop), the OpenTelemetry GenAI instrumentations, OpenInference
//! (Phoenix) or the Langfuse SDK, with the attribute names of semconv.md.
//! Each convention's module owns its names; this one owns what is common:
//! the trace's layout and timing, the prose and JSON its spans carry, and
//! the resources (about a dozen attributes each) the SDKs' spans come in.

mod langfuse;
mod openinference;
mod openllmetry;
mod otel_genai;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Value, json};

use super::prose::{prose, prose_between};
use super::{MS, NUMBER_DIGITS, kv, text, trace_id};
use crate::cli::bench::Rng;

/// An agent run: the agent span over a retrieval (with the embedding of
/// the question under it), a model call that asks for a tool, the tool
/// call, a model call that answers, a model call that checks the answer
/// against the documents, and a tool call the agent makes itself to file
/// the conversation.
pub(super) const SPANS_PER_TRACE: u64 = 8;

/// Span kinds of OTLP (`Span.kind`).
const INTERNAL: i32 = 1;
const CLIENT: i32 = 3;

/// The SDK a trace's spans come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sdk {
    OpenLlmetry,
    OtelGenAi,
    OpenInference,
    Langfuse,
}

impl Sdk {
    const ALL: [Sdk; 4] = [Sdk::OpenLlmetry, Sdk::OtelGenAi, Sdk::OpenInference, Sdk::Langfuse];

    /// The SDK of the `i`th trace of an export: by position, so that a
    /// stamped copy of a template (its traces renumbered) keeps its SDKs.
    fn of(i: u64) -> Sdk {
        Sdk::ALL[(i % Sdk::ALL.len() as u64) as usize]
    }

    /// The instrumentation scope its spans are reported under.
    fn scope(self) -> (&'static str, &'static str) {
        match self {
            Sdk::OpenLlmetry => ("opentelemetry.instrumentation.openai.v1", "0.47.3"),
            Sdk::OtelGenAi => ("@opentelemetry/instrumentation-openai", "0.3.0"),
            Sdk::OpenInference => ("openinference.instrumentation.openai", "0.1.30"),
            Sdk::Langfuse => ("langfuse-sdk", "3.8.1"),
        }
    }

    /// The process the spans come from, as its SDK and resource detectors
    /// describe it; the SDK's own attribute, if it has one, last. `project`, if given, is
    /// named too (`tally.project`).
    fn resource(self, project: Option<&str>) -> Resource {
        let (service, language, sdk_version, runtime, runtime_version, pid) = match self {
            Sdk::OpenLlmetry => ("support-agent", "python", "1.38.0", "cpython", "3.12.7", 4_127),
            Sdk::OtelGenAi => ("checkout-assistant", "nodejs", "2.2.0", "nodejs", "22.11.0", 88),
            Sdk::OpenInference => ("research-agent", "python", "1.38.0", "cpython", "3.11.10", 1),
            Sdk::Langfuse => ("billing-copilot", "python", "1.37.0", "cpython", "3.12.4", 23_514),
        };
        let mut attributes = vec![
            text("service.name", service),
            text("service.version", "2.14.0"),
            text("service.instance.id", &format!("{service}-7d9f8c6b5-x2k4p")),
            text("deployment.environment", "production"),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.language", language),
            text("telemetry.sdk.version", sdk_version),
            text("host.name", &format!("ip-10-0-{}-{}.ec2.internal", pid % 200, pid % 250)),
            text("host.arch", "amd64"),
            text("os.type", "linux"),
            super::int("process.pid", pid),
            text("process.runtime.name", runtime),
            text("process.runtime.version", runtime_version),
        ];
        attributes.push(match self {
            // Those two SDKs add nothing of their own: the pod, as the
            // Kubernetes detector names it.
            Sdk::OpenLlmetry | Sdk::OtelGenAi => {
                text("k8s.pod.name", &format!("{service}-7d9f8c6b5-x2k4p"))
            }
            // Phoenix's own default project, so that the spans land in
            // Tally's default project too unless one is named.
            Sdk::OpenInference => text("openinference.project.name", "default"),
            Sdk::Langfuse => text("langfuse.release", "2.14.0"),
        });
        attributes.extend(project.map(|p| text("tally.project", p)));
        Resource { attributes, ..Resource::default() }
    }
}

/// A chat model and how its provider names responses.
pub(super) struct Model {
    pub(super) name: &'static str,
    pub(super) response_model: &'static str,
    /// `gen_ai.provider.name`, `llm.system`.
    pub(super) provider: &'static str,
    id_prefix: &'static str,
}

/// Chat models in the built-in price catalog.
static MODELS: [Model; 4] = [
    Model {
        name: "gpt-4o",
        response_model: "gpt-4o-2024-08-06",
        provider: "openai",
        id_prefix: "chatcmpl-",
    },
    Model {
        name: "gpt-4o-mini",
        response_model: "gpt-4o-mini-2024-07-18",
        provider: "openai",
        id_prefix: "chatcmpl-",
    },
    Model {
        name: "gpt-4.1-mini",
        response_model: "gpt-4.1-mini-2025-04-14",
        provider: "openai",
        id_prefix: "chatcmpl-",
    },
    Model {
        name: "claude-sonnet-4-5",
        response_model: "claude-sonnet-4-5-20250929",
        provider: "anthropic",
        id_prefix: "msg_",
    },
];

pub(super) const EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// An agent of the application: its name, what it does, and the seed of
/// the fixed start of its system prompt (the retrieved documents follow).
pub(super) struct Agent {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    seed: u64,
}

static AGENTS: [Agent; 4] = [
    Agent { name: "support", description: "Answers customer questions", seed: 11 },
    Agent { name: "billing", description: "Explains invoices and refunds", seed: 12 },
    Agent { name: "research", description: "Finds and summarizes documents", seed: 13 },
    Agent { name: "onboarding", description: "Helps new accounts get set up", seed: 14 },
];

/// A function the model may call.
pub(super) struct Tool {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    /// The one parameter it takes.
    parameter: &'static str,
}

/// The tools the model is offered.
static TOOLS: [Tool; 3] = [
    Tool {
        name: "search_docs",
        description: "Search the help center for articles",
        parameter: "query",
    },
    Tool { name: "get_order", description: "Look up an order by its id", parameter: "order_id" },
    Tool {
        name: "lookup_account",
        description: "Read a customer's plan and balance",
        parameter: "account_id",
    },
];

/// The tool the agent calls itself once it has answered.
static FILE_TICKET: Tool = Tool {
    name: "create_ticket",
    description: "File the conversation as a support ticket",
    parameter: "summary",
};

/// The JSON schema of a tool's parameters, as function definitions carry it.
pub(super) fn tool_schema(tool: &Tool) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": {
                "type": "object",
                "properties": {tool.parameter: {"type": "string"}},
                "required": [tool.parameter],
            },
        },
    })
}

/// The function definitions the model calls that may use tools are given.
pub(super) fn tool_definitions() -> Value {
    Value::Array(TOOLS.iter().map(tool_schema).collect())
}

/// A document the retrieval found.
pub(super) struct Document {
    pub(super) id: String,
    pub(super) score: f64,
    pub(super) text: String,
}

/// One tool call: what was asked for and what came back.
pub(super) struct ToolCall {
    pub(super) tool: &'static Tool,
    /// The provider's tool call id (`call_…`).
    pub(super) id: String,
    /// JSON text.
    pub(super) arguments: String,
    /// JSON text.
    pub(super) result: String,
    pub(super) failed: bool,
    pub(super) at_ms: (u64, u64),
}

/// Which model call of the agent run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Asks for a tool.
    Plan,
    /// Answers with the tool's result.
    Answer,
    /// Checks the answer against the documents (a small model).
    Check,
}

/// One model call of the agent.
pub(super) struct Llm {
    pub(super) step: Step,
    pub(super) model: &'static Model,
    pub(super) response_id: String,
    pub(super) temperature: f64,
    pub(super) top_p: f64,
    pub(super) max_tokens: i64,
    /// Inclusive of the cache reads.
    pub(super) input_tokens: i64,
    pub(super) output_tokens: i64,
    pub(super) cache_read_tokens: i64,
    /// OpenAI's `finish_reason`.
    pub(super) finish_reason: &'static str,
    pub(super) at_ms: (u64, u64),
}

impl Llm {
    /// Whether the call was offered the tools.
    pub(super) fn has_tools(&self) -> bool {
        self.step != Step::Check
    }
}

/// A message of a model call's conversation.
pub(super) enum Message<'a> {
    System(&'a str),
    User(&'a str),
    /// The assistant asks for a tool (no text beside it).
    ToolCall(&'a ToolCall),
    /// What a tool returned.
    ToolResult(&'a ToolCall),
    Assistant(&'a str),
}

impl Message<'_> {
    pub(super) fn role(&self) -> &'static str {
        match self {
            Message::System(_) => "system",
            Message::User(_) => "user",
            Message::ToolCall(_) | Message::Assistant(_) => "assistant",
            Message::ToolResult(_) => "tool",
        }
    }

    /// Its text, if it has one (tool calls have none).
    pub(super) fn content(&self) -> Option<&str> {
        match self {
            Message::System(text) | Message::User(text) | Message::Assistant(text) => Some(text),
            Message::ToolResult(call) => Some(&call.result),
            Message::ToolCall(_) => None,
        }
    }

    /// The message as OpenAI's chat API takes and returns it (OpenInference
    /// and Langfuse record requests and responses in this form).
    pub(super) fn openai_json(&self) -> Value {
        match self {
            Message::ToolCall(call) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.tool.name, "arguments": call.arguments},
                }],
            }),
            Message::ToolResult(call) => {
                json!({"role": "tool", "tool_call_id": call.id, "content": call.result})
            }
            other => json!({"role": other.role(), "content": other.content()}),
        }
    }
}

/// Everything one agent run is about, before it is written in an SDK's
/// words.
pub(super) struct Trace {
    pub(super) sdk: Sdk,
    pub(super) id: Vec<u8>,
    /// Start, in ns since the epoch.
    pub(super) t0: u64,
    pub(super) len_ms: u64,
    span_ids: [[u8; 8]; SPANS_PER_TRACE as usize],
    pub(super) agent: &'static Agent,
    pub(super) user: String,
    pub(super) session: String,
    tenant: String,
    plan: &'static str,
    pub(super) channel: &'static str,
    locale: &'static str,
    region: &'static str,
    request: String,
    pub(super) question: String,
    /// The agent's prompt and the documents.
    pub(super) system: String,
    /// The checker's prompt and the documents.
    check_system: String,
    pub(super) answer: String,
    /// What the checker said of the answer.
    verdict: String,
    pub(super) documents: Vec<Document>,
    pub(super) retrieval_ms: (u64, u64),
    pub(super) embedding_ms: (u64, u64),
    pub(super) embedding_tokens: i64,
    /// The tool the plan call asked for.
    pub(super) asked: ToolCall,
    /// The ticket the agent files at the end.
    pub(super) filed: ToolCall,
    pub(super) calls: [Llm; 3],
}

/// The spans of a trace, by index into `Trace::span_ids`, in the order
/// they are exported.
const ROOT: usize = 0;
const RETRIEVAL: usize = 1;
const EMBEDDING: usize = 2;
const PLAN: usize = 3;
const ASKED_TOOL: usize = 4;
const ANSWER: usize = 5;
const CHECK: usize = 6;
const FILED_TOOL: usize = 7;

fn pick<T>(rng: &mut Rng, items: &[T]) -> usize {
    rng.below(items.len() as u64) as usize
}

fn one_of<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[pick(rng, items)]
}

/// `len` letters and digits, as providers' ids are made of.
fn alphanumeric(rng: &mut Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| CHARS[pick(rng, CHARS)] as char).collect()
}

/// The fixed starts of the prompts, the same in every export of a run (as
/// an application's prompts are): each agent's, then the checker's.
struct Prompts {
    agents: Vec<String>,
    check: String,
}

impl Prompts {
    fn new() -> Self {
        Prompts {
            agents: AGENTS.iter().map(|a| prose_between(&mut Rng(a.seed), 200, 300)).collect(),
            check: prose_between(&mut Rng(99), 250, 300),
        }
    }
}

/// What every trace of an export is drawn with: the run (in its ids), the
/// clock and spread its start falls in, and the prompts.
struct Draw<'a> {
    run: u64,
    now_ns: u64,
    spread_ms: u64,
    prompts: &'a Prompts,
}

impl Trace {
    /// Trace `n` of the run, the `position`th of its export.
    fn draw(draw: &Draw<'_>, n: u64, position: u64, rng: &mut Rng) -> Trace {
        let run = draw.run;
        let t0 = draw.now_ns - rng.below(draw.spread_ms.max(1)) * MS - 60_000 * MS;
        // Random span ids, as SDKs make them (never all zeros: xorshift
        // never yields 0).
        let span_ids = std::array::from_fn(|_| rng.next().to_be_bytes());
        let agent_index = pick(rng, &AGENTS);
        let documents: Vec<Document> = (0..3)
            .map(|i| Document {
                id: format!("kb-{}", 1_000 + rng.below(9_000)),
                score: 0.9 - f64::from(i) * 0.07 - rng.below(50) as f64 / 1_000.0,
                text: prose_between(rng, 150, 220),
            })
            .collect();
        let with_documents = |prompt: &str, lead: &str| {
            let mut text = format!("{prompt} {lead}");
            for document in &documents {
                text.push(' ');
                text.push_str(&document.text);
            }
            text
        };
        let system =
            with_documents(&draw.prompts.agents[agent_index], "Use these articles when they help.");
        let check_system =
            with_documents(&draw.prompts.check, "Check the answer against these articles.");
        let question = prose_between(rng, 350, 650);
        let answer = prose_between(rng, 300, 550);
        let verdict = prose_between(rng, 60, 150);

        // Retrieval (with the question's embedding in it) first, then the
        // model calls and tools one after another.
        let retrieval_ms = (5, 60 + rng.below(140));
        let embedding_ms = (8, 20 + rng.below(30));
        let mut at = retrieval_ms.0 + retrieval_ms.1 + 5;
        let mut next = |len: u64| {
            let span = (at, len);
            at += len + 2;
            span
        };
        let model = &MODELS[pick(rng, &MODELS)];
        let temperature = one_of(rng, &[0.0, 0.2, 0.3, 0.7, 1.0]);
        let top_p = one_of(rng, &[1.0, 0.95, 0.9]);
        let max_tokens = one_of(rng, &[1_024, 2_048, 4_096]);
        let llm = |step: Step, index: usize, model: &'static Model, at_ms: (u64, u64)| Llm {
            step,
            model,
            response_id: format!("{}{run}-{n:0NUMBER_DIGITS$}-{index}", model.id_prefix),
            temperature,
            top_p,
            max_tokens,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            finish_reason: if step == Step::Plan { "tool_calls" } else { "stop" },
            at_ms,
        };
        let plan = llm(Step::Plan, 0, model, next(400 + rng.below(1_600)));
        let tool = &TOOLS[pick(rng, &TOOLS)];
        let failed = rng.below(20) == 0;
        let asked = ToolCall {
            tool,
            id: format!("call_{}", alphanumeric(rng, 24)),
            arguments: tool_arguments(tool, rng),
            result: tool_result(tool, failed, rng),
            failed,
            at_ms: next(30 + rng.below(800)),
        };
        let answer_call = llm(Step::Answer, 1, model, next(800 + rng.below(3_200)));
        let check = llm(Step::Check, 2, &MODELS[1], next(300 + rng.below(700)));
        let filed = ToolCall {
            tool: &FILE_TICKET,
            id: format!("call_{}", alphanumeric(rng, 24)),
            arguments: tool_arguments(&FILE_TICKET, rng),
            result: tool_result(&FILE_TICKET, false, rng),
            failed: false,
            at_ms: next(40 + rng.below(200)),
        };
        let len_ms = at + 1;
        let mut trace = Trace {
            sdk: Sdk::of(position),
            id: trace_id(run, n),
            t0,
            len_ms,
            span_ids,
            agent: &AGENTS[agent_index],
            user: format!("user-{}", rng.below(500)),
            session: format!("session-{:0NUMBER_DIGITS$}", n / 4),
            tenant: format!("tenant-{}", rng.below(40)),
            plan: one_of(rng, &["free", "team", "business", "enterprise"]),
            channel: one_of(rng, &["web", "mobile", "slack", "email"]),
            locale: one_of(rng, &["en-US", "en-GB", "de-DE", "fr-FR", "ja-JP"]),
            region: one_of(rng, &["us-east-1", "eu-west-1", "ap-northeast-1"]),
            request: format!("req_{}", alphanumeric(rng, 20)),
            question,
            system,
            check_system,
            answer,
            verdict,
            documents,
            retrieval_ms,
            embedding_ms,
            embedding_tokens: 0,
            asked,
            filed,
            calls: [plan, answer_call, check],
        };
        trace.count_tokens(rng);
        trace
    }

    /// Token counts from the text (about four bytes a token), with the
    /// function definitions counted in the input of calls offered them,
    /// and part of the answer's input read from the provider's prompt
    /// cache (the plan call sent the same start).
    fn count_tokens(&mut self, rng: &mut Rng) {
        let definitions = tool_definitions().to_string().len();
        self.embedding_tokens = self.question.len() as i64 / 4;
        let cached = rng.below(4) as i64;
        for index in 0..self.calls.len() {
            let call = &self.calls[index];
            let mut input: usize = self.input(call).iter().map(message_bytes).sum();
            if call.has_tools() {
                input += definitions;
            }
            let output = message_bytes(&self.output(call));
            let input_tokens = input as i64 / 4;
            let call = &mut self.calls[index];
            call.input_tokens = input_tokens;
            call.output_tokens = (output as i64 / 4).max(12);
            call.cache_read_tokens =
                if call.step == Step::Answer { input_tokens * cached / 5 } else { 0 };
        }
    }

    /// The conversation a model call is sent.
    pub(super) fn input(&self, call: &Llm) -> Vec<Message<'_>> {
        match call.step {
            Step::Plan => vec![Message::System(&self.system), Message::User(&self.question)],
            Step::Answer => vec![
                Message::System(&self.system),
                Message::User(&self.question),
                Message::ToolCall(&self.asked),
                Message::ToolResult(&self.asked),
            ],
            Step::Check => vec![Message::System(&self.check_system), Message::User(&self.answer)],
        }
    }

    /// What a model call answers.
    pub(super) fn output(&self, call: &Llm) -> Message<'_> {
        match call.step {
            Step::Plan => Message::ToolCall(&self.asked),
            Step::Answer => Message::Assistant(&self.answer),
            Step::Check => Message::Assistant(&self.verdict),
        }
    }

    /// The request body of a model call as OpenAI's API takes it.
    pub(super) fn openai_request(&self, call: &Llm) -> Value {
        let messages: Vec<Value> = self.input(call).iter().map(Message::openai_json).collect();
        let mut request = json!({
            "model": call.model.name,
            "messages": messages,
            "temperature": call.temperature,
            "top_p": call.top_p,
            "max_tokens": call.max_tokens,
        });
        if call.has_tools() {
            request["tools"] = tool_definitions();
        }
        request
    }

    /// The response to a model call as OpenAI's API returns it.
    pub(super) fn openai_response(&self, call: &Llm) -> Value {
        json!({
            "id": call.response_id,
            "object": "chat.completion",
            "created": self.t0 / 1_000_000_000,
            "model": call.model.response_model,
            "choices": [{
                "index": 0,
                "message": self.output(call).openai_json(),
                "finish_reason": call.finish_reason,
            }],
            "usage": {
                "prompt_tokens": call.input_tokens,
                "completion_tokens": call.output_tokens,
                "total_tokens": call.input_tokens + call.output_tokens,
                "prompt_tokens_details": {"cached_tokens": call.cache_read_tokens},
            },
        })
    }

    /// The application's own context, which SDKs copy onto every span
    /// (as association properties, metadata or baggage).
    pub(super) fn context(&self) -> [(&'static str, &str); 7] {
        [
            ("tenant_id", &self.tenant),
            ("plan", self.plan),
            ("channel", self.channel),
            ("locale", self.locale),
            ("region", self.region),
            ("app_version", "2.14.0"),
            ("request_id", &self.request),
        ]
    }

    /// The context as one JSON object.
    pub(super) fn context_json(&self) -> String {
        let object: serde_json::Map<String, Value> =
            self.context().iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        Value::Object(object).to_string()
    }

    /// The summed usage of the run's model calls (input, output).
    pub(super) fn total_tokens(&self) -> (i64, i64) {
        let input = self.calls.iter().map(|c| c.input_tokens).sum::<i64>() + self.embedding_tokens;
        (input, self.calls.iter().map(|c| c.output_tokens).sum())
    }

    /// The model the agent runs on.
    pub(super) fn model(&self) -> &'static Model {
        self.calls[0].model
    }

    /// A span of the trace, its parent and times from the layout.
    fn span(&self, index: usize, name: String, kind: i32, at_ms: (u64, u64)) -> Span {
        let parent = match index {
            ROOT => None,
            EMBEDDING => Some(RETRIEVAL),
            _ => Some(ROOT),
        };
        let (start_ms, len_ms) = at_ms;
        Span {
            trace_id: self.id.clone(),
            span_id: self.span_ids[index].to_vec(),
            parent_span_id: parent.map(|p| self.span_ids[p].to_vec()).unwrap_or_default(),
            name,
            kind,
            start_time_unix_nano: self.t0 + start_ms * MS,
            end_time_unix_nano: self.t0 + (start_ms + len_ms) * MS,
            ..Span::default()
        }
    }

    /// The trace's spans in its SDK's words.
    fn spans(&self) -> Vec<Span> {
        let convention: &dyn Convention = match self.sdk {
            Sdk::OpenLlmetry => &openllmetry::OpenLlmetry,
            Sdk::OtelGenAi => &otel_genai::OtelGenAi,
            Sdk::OpenInference => &openinference::OpenInference,
            Sdk::Langfuse => &langfuse::Langfuse,
        };
        let with = |index: usize, kind: i32, at_ms, (name, attributes): (String, Vec<KeyValue>)| {
            Span { attributes, ..self.span(index, name, kind, at_ms) }
        };
        let tool = |index: usize, call: &ToolCall| {
            let mut span = with(index, INTERNAL, call.at_ms, convention.tool(self, call));
            if call.failed {
                span.status = Some(Status { code: 2, message: "upstream timed out".into() });
            }
            span
        };
        let [plan, answer, check] = &self.calls;
        let spans = vec![
            with(ROOT, INTERNAL, (0, self.len_ms), convention.agent(self)),
            with(RETRIEVAL, INTERNAL, self.retrieval_ms, convention.retrieval(self)),
            with(EMBEDDING, CLIENT, self.embedding_ms, convention.embedding(self)),
            with(PLAN, CLIENT, plan.at_ms, convention.llm(self, plan)),
            tool(ASKED_TOOL, &self.asked),
            with(ANSWER, CLIENT, answer.at_ms, convention.llm(self, answer)),
            with(CHECK, CLIENT, check.at_ms, convention.llm(self, check)),
            tool(FILED_TOOL, &self.filed),
        ];
        debug_assert_eq!(spans.len() as u64, SPANS_PER_TRACE);
        spans
    }
}

/// The bytes of a message's text, or of its arguments for a tool call.
fn message_bytes(message: &Message<'_>) -> usize {
    match message {
        Message::ToolCall(call) => call.arguments.len(),
        other => other.content().map_or(0, str::len),
    }
}

fn tool_arguments(tool: &Tool, rng: &mut Rng) -> String {
    let value = match tool.parameter {
        "query" => prose_between(rng, 30, 90),
        "order_id" => format!("ord_{}", alphanumeric(rng, 14)),
        "account_id" => format!("acct_{}", alphanumeric(rng, 12)),
        _ => prose_between(rng, 60, 140),
    };
    json!({tool.parameter: value}).to_string()
}

fn tool_result(tool: &Tool, failed: bool, rng: &mut Rng) -> String {
    if failed {
        return json!({"error": "upstream timed out", "retryable": true}).to_string();
    }
    let summary = prose_between(rng, 250, 450);
    let result = match tool.parameter {
        "query" => json!({
            "results": [{
                "id": format!("kb-{}", 1_000 + rng.below(9_000)),
                "title": prose(rng, 20).trim_end_matches(['.', '?', '!']),
                "snippet": summary,
            }],
            "total": 1 + rng.below(40),
        }),
        "order_id" => json!({
            "status": one_of(rng, &["processing", "shipped", "delivered"]),
            "items": 1 + rng.below(5),
            "note": summary,
        }),
        "account_id" => json!({
            "plan": one_of(rng, &["free", "team", "business"]),
            "balance_usd": rng.below(50_000) as f64 / 100.0,
            "notes": summary,
        }),
        _ => json!({
            "ticket_id": format!("T-{}", 10_000 + rng.below(90_000)),
            "queue": "tier-1",
        }),
    };
    result.to_string()
}

/// How one SDK writes each span of an agent run: a span name and its
/// attributes.
trait Convention {
    fn agent(&self, trace: &Trace) -> (String, Vec<KeyValue>);
    fn retrieval(&self, trace: &Trace) -> (String, Vec<KeyValue>);
    fn embedding(&self, trace: &Trace) -> (String, Vec<KeyValue>);
    fn llm(&self, trace: &Trace, call: &Llm) -> (String, Vec<KeyValue>);
    fn tool(&self, trace: &Trace, call: &ToolCall) -> (String, Vec<KeyValue>);
}

pub(super) fn float(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

pub(super) fn flag(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

pub(super) fn strings(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|v| AnyValue { value: Some(any_value::Value::StringValue((*v).into())) })
        .collect();
    kv(key, any_value::Value::ArrayValue(ArrayValue { values }))
}

/// An export of `traces` SDK-shaped traces, numbered from `first_trace`:
/// one `ResourceSpans` per SDK, as a collector forwards several services'
/// batches.
pub(super) fn export(
    run: u64,
    first_trace: u64,
    traces: u64,
    now_ns: u64,
    spread_ms: u64,
    project: Option<&str>,
) -> ExportTraceServiceRequest {
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (first_trace + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let prompts = Prompts::new();
    let draw = Draw { run, now_ns, spread_ms, prompts: &prompts };
    let mut by_sdk: Vec<Vec<Span>> = vec![Vec::new(); Sdk::ALL.len()];
    for (position, n) in (first_trace..first_trace + traces).enumerate() {
        let trace = Trace::draw(&draw, n, position as u64, &mut rng);
        let at = Sdk::ALL.iter().position(|sdk| *sdk == trace.sdk).expect("a known SDK");
        by_sdk[at].extend(trace.spans());
    }
    let resource_spans = Sdk::ALL
        .iter()
        .zip(by_sdk)
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(sdk, spans)| {
            let (name, version) = sdk.scope();
            ResourceSpans {
                resource: Some(sdk.resource(project)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: name.into(),
                        version: version.into(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
