//! The demo's traffic for a stretch of time: agent runs, workspace-chat
//! calls, document indexing and the nightly eval job, at `--rate` model
//! calls per second in the busiest hour and less in quiet ones; and the
//! request bodies that carry it to Tally's public ingest endpoints.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::agents::{self, Agent, Observation};
use super::calls::{Call, Caller, Outcome, Shape};
use super::cast::{self, Model, busyness, poisson};
use super::gateway_metrics::GatewayMetrics;
use super::world::{Sessions, World};

/// Share of the calls per second of `--rate` that the workspace chat and the
/// document indexer make (the agents make most of the rest).
const CHAT_SHARE: f64 = 0.5;
const INDEXER_SHARE: f64 = 0.04;
/// Eval calls per second during the nightly run (01:00–05:00 UTC), per call
/// per second of `--rate`.
const NIGHTLY_EVALS_SHARE: f64 = 0.075;

/// Agent runs per trace export, usage reports per request: requests stay a
/// few MiB.
const RUNS_PER_EXPORT: usize = 60;
const REPORTS_PER_REQUEST: usize = 5_000;
const POINTS_PER_REQUEST: usize = 5_000;

/// What to make of a stretch of time.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Share of agent runs whose traces are exported (head sampling).
    pub traced: f64,
    /// Whether the eval job's nightly runs are part of it (history only:
    /// live eval calls are paced against their budget, see `budgets`).
    pub nightly_evals: bool,
}

/// Everything sent for one stretch of time, as request bodies in the order
/// they go out: usage reports before the traces whose calls they describe,
/// so that the gateway's record of a call (with its API key, route and
/// team) is the one the ledger keeps.
#[derive(Debug, Default)]
pub struct Bodies {
    pub reports: Vec<Vec<u8>>,
    pub traces: Vec<Vec<u8>>,
    pub logs: Vec<Vec<u8>>,
    pub metrics: Vec<Vec<u8>>,
    pub points: Vec<Vec<u8>>,
    pub calls: u64,
    pub runs: u64,
    pub traced_runs: u64,
}

/// What the gateway and the retrieval service measured over a stretch,
/// until it is sent.
#[derive(Debug)]
pub struct Telemetry {
    pub gateway: GatewayMetrics,
    pub observations: Vec<Observation>,
}

impl Telemetry {
    pub fn new(interval_ms: i64) -> Telemetry {
        Telemetry { gateway: GatewayMetrics::new(interval_ms), observations: Vec::new() }
    }
}

impl Bodies {
    /// Appends `other`'s bodies and counts.
    pub fn extend(&mut self, other: Bodies) {
        self.reports.extend(other.reports);
        self.traces.extend(other.traces);
        self.logs.extend(other.logs);
        self.metrics.extend(other.metrics);
        self.points.extend(other.points);
        self.calls += other.calls;
        self.runs += other.runs;
        self.traced_runs += other.traced_runs;
    }
}

/// Makes traffic, stretch after stretch.
pub struct Generator {
    world: World,
    sessions: Sessions,
    rng: StdRng,
    /// Model calls per second at the busiest hour.
    rate: f64,
}

impl Generator {
    pub fn new(world: World, rate: f64, seed: u64) -> Generator {
        Generator { world, sessions: Sessions::default(), rng: StdRng::seed_from_u64(seed), rate }
    }

    /// The traffic of [`from_ms`, `to_ms`): usage reports, traces and logs
    /// encoded; the gateway's metrics and the retrieval service's
    /// observations added to `telemetry`, which `telemetry_bodies` encodes
    /// (the live feed sends it less often than it sends traffic).
    pub fn stretch(
        &mut self,
        from_ms: i64,
        to_ms: i64,
        plan: Plan,
        telemetry: &mut Telemetry,
    ) -> Bodies {
        let mut calls: Vec<Call> = Vec::new();
        let mut runs: Vec<(Agent, agents::Run)> = Vec::new();
        let mut bodies = Bodies::default();
        let mut t = from_ms;
        while t < to_ms {
            let end = (t + 60_000).min(to_ms);
            let seconds = (end - t) as f64 / 1000.0;
            let busy = busyness(t);
            for agent in Agent::ALL {
                let n = poisson(self.rate * agent.runs_per_call() * busy * seconds, &mut self.rng);
                for _ in 0..n {
                    let at = self.rng.random_range(t..end);
                    let traced = self.rng.random_bool(plan.traced);
                    let run = agents::run(
                        &self.world,
                        &mut self.sessions,
                        &mut self.rng,
                        agent,
                        at,
                        traced,
                    );
                    bodies.runs += 1;
                    bodies.traced_runs += u64::from(traced);
                    calls.extend(run.calls.iter().cloned());
                    if traced {
                        runs.push((agent, run));
                    }
                }
            }
            let chats = poisson(self.rate * CHAT_SHARE * busy * seconds, &mut self.rng);
            for _ in 0..chats {
                let at = self.rng.random_range(t..end);
                calls.push(self.chat_call(at));
            }
            let indexing = poisson(self.rate * INDEXER_SHARE * busy * seconds, &mut self.rng);
            for _ in 0..indexing {
                let at = self.rng.random_range(t..end);
                calls.push(self.indexer_call(at));
            }
            if plan.nightly_evals && nightly(t) {
                let evals = poisson(self.rate * NIGHTLY_EVALS_SHARE * seconds, &mut self.rng);
                for _ in 0..evals {
                    let at = self.rng.random_range(t..end);
                    let outcome = self.world.outcome(&cast::GPT_41, at, &mut self.rng);
                    calls.push(eval_call(at, outcome, &mut self.rng));
                }
            }
            t = end;
        }
        bodies.calls = calls.len() as u64;
        for call in &calls {
            telemetry.gateway.record(call, &mut self.rng);
        }
        bodies.reports = calls
            .chunks(REPORTS_PER_REQUEST)
            .map(|chunk| {
                let reports: Vec<Value> = chunk.iter().map(Call::report).collect();
                serde_json::to_vec(&reports).unwrap_or_default()
            })
            .collect();
        for (_, run) in &mut runs {
            telemetry.observations.append(&mut run.observations);
        }
        for chunk in runs.chunks(RUNS_PER_EXPORT) {
            bodies.traces.push(trace_export(chunk));
            if let Some(logs) = log_export(chunk) {
                bodies.logs.push(logs);
            }
        }
        bodies
    }

    /// The gateway's metrics and the retrieval service's points over
    /// [`from_ms`, `to_ms`), from what `telemetry` gathered.
    pub fn telemetry_bodies(
        &mut self,
        mut telemetry: Telemetry,
        from_ms: i64,
        to_ms: i64,
    ) -> Bodies {
        let mut bodies = Bodies::default();
        telemetry.gateway.cover(from_ms, to_ms);
        let interval_ms = telemetry.gateway.interval_ms();
        if let Some(export) = telemetry.gateway.export(&self.world) {
            bodies.metrics.push(export.encode_to_vec());
        }
        let points = self.points(&telemetry.observations, from_ms, to_ms, interval_ms);
        bodies.points = points
            .chunks(POINTS_PER_REQUEST)
            .map(|chunk| serde_json::to_vec(chunk).unwrap_or_default())
            .collect();
        bodies
    }

    /// A workspace-chat call: anyone, any of the chat models, mostly
    /// streamed; now and then a stream is cut off.
    fn chat_call(&mut self, at: i64) -> Call {
        let rng = &mut self.rng;
        let (user, team) = cast::anyone(rng);
        let model: &'static Model = match rng.random_range(0..100) {
            0..35 => &cast::GPT_41_MINI,
            35..50 => &cast::GPT_41,
            50..65 => &cast::CLAUDE_HAIKU,
            65..75 => &cast::CLAUDE_SONNET,
            75..90 => &cast::GEMINI_FLASH,
            _ => &cast::DEEPSEEK,
        };
        let streaming = rng.random_bool(0.85);
        let mut outcome = self.world.outcome(model, at, rng);
        if streaming && outcome == Outcome::Ok && rng.random_bool(0.015) {
            outcome = Outcome::CutOff;
        }
        let prompt = super::prose::pick(super::prose::CHAT_PROMPTS, rng);
        let shape = Shape {
            input: (cast::long_tail(900.0, 0.8, rng) as u64).clamp(40, 60_000)
                + prompt.len() as u64 / 4,
            cached_share: if rng.random_bool(0.4) { rng.random_range(0.2..0.7) } else { 0.0 },
            cache_write: rng.random_bool(0.1),
            output: (cast::long_tail(260.0, 0.7, rng) as u64).clamp(8, 8_000),
            streaming,
        };
        let caller = Caller {
            user,
            team: cast::TEAMS[team].name,
            key: &cast::WORKSPACE_CHAT,
            route: cast::INTERACTIVE,
            agent: None,
        };
        let slowdown = self.world.slowdown(model, at);
        let mut call = Call::new(model, caller, shape, at, outcome, slowdown, rng);
        call.session = Some(format!("chat_{}_{}", user, at / 3_600_000));
        call
    }

    /// An embedding batch of the research team's document indexer.
    fn indexer_call(&mut self, at: i64) -> Call {
        let rng = &mut self.rng;
        let outcome = self.world.outcome(&cast::EMBEDDING, at, rng);
        let shape = Shape {
            input: rng.random_range(1_500..8_000),
            cached_share: 0.0,
            cache_write: false,
            output: 0,
            streaming: false,
        };
        let caller = Caller {
            user: cast::user_of(cast::RESEARCH, rng),
            team: cast::TEAMS[cast::RESEARCH].name,
            key: &cast::RESEARCH_APP,
            route: cast::BATCH,
            agent: None,
        };
        Call::new(&cast::EMBEDDING, caller, shape, at, outcome, 1.0, rng)
    }

    /// Metric points the retrieval service sends: its processing times (one
    /// observation each) and, per interval, its queue, host and index
    /// gauges and error counts.
    fn points(
        &mut self,
        observations: &[Observation],
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
    ) -> Vec<Value> {
        let mut points: Vec<Value> = observations
            .iter()
            .map(|o| {
                let mut tags = serde_json::Map::new();
                tags.insert("service".into(), json!("retriever"));
                for (k, v) in o.tags {
                    tags.insert(k.into(), json!(v));
                }
                json!({"name": o.name, "value": round4(o.value), "timestamp": o.at_ms,
                       "type": "histogram", "tags": tags})
            })
            .collect();
        let mut t = from_ms.div_euclid(interval_ms) * interval_ms;
        while t < to_ms {
            let at = (t + interval_ms - 1).min(to_ms - 1).max(from_ms);
            let busy = busyness(t);
            let rng = &mut self.rng;
            let host = json!({"host": "retriever-1", "service": "retriever"});
            points.push(json!({"name": "queue_size", "value": poisson(busy * 9.0, rng),
                               "timestamp": at, "tags": {"queue": "embedding", "service": "retriever"}}));
            points.push(json!({"name": "system_cpu_percent",
                               "value": round4(15.0 + 60.0 * busy + rng.random_range(-4.0..4.0)),
                               "timestamp": at, "tags": host}));
            points.push(json!({"name": "system_memory_percent",
                               "value": round4(52.0 + 14.0 * busy + rng.random_range(-1.5..1.5)),
                               "timestamp": at, "tags": host}));
            // The index grows a little with every minute of indexing.
            let vectors = 1_200_000 + (t / 60_000).rem_euclid(1_000_000) * 2;
            points.push(json!({"name": "vector_count", "value": vectors, "timestamp": at,
                               "tags": {"index": "help-center", "service": "retriever"}}));
            if rng.random_bool((0.05 * busy).min(1.0)) {
                let (error_type, context) = if rng.random_bool(0.6) {
                    ("TimeoutError", "vector_search")
                } else {
                    ("ConnectionResetError", "embedding_upload")
                };
                points.push(json!({"name": "error_count", "value": 1, "timestamp": at, "type": "counter",
                                   "tags": {"error_type": error_type, "context": context, "service": "retriever"}}));
            }
            t += interval_ms;
        }
        points
    }
}

/// Whether `t_ms` falls in the eval job's nightly run (01:00–05:00 UTC).
fn nightly(t_ms: i64) -> bool {
    let hour = t_ms.rem_euclid(86_400_000) / 3_600_000;
    (1..5).contains(&hour)
}

/// A call of the eval job: a model grading an answer against a long rubric
/// (the rubric prefix is cached).
pub fn eval_call(at: i64, outcome: Outcome, rng: &mut StdRng) -> Call {
    let shape = Shape {
        input: rng.random_range(16_000..24_000),
        cached_share: 0.5,
        cache_write: false,
        output: rng.random_range(250..650),
        streaming: false,
    };
    let caller = Caller {
        user: "kavya.iyer",
        team: cast::TEAMS[cast::RESEARCH].name,
        key: &cast::EVALS,
        route: cast::BATCH,
        agent: None,
    };
    Call::new(&cast::GPT_41, caller, shape, at, outcome, 1.0, rng)
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..KeyValue::default()
    }
}

fn resource(agent: Agent) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", agent.service()),
            text("service.version", "1.14.2"),
            text("deployment.environment.name", "production"),
            text("telemetry.sdk.language", "python"),
        ],
        ..Resource::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "acme.agents".into(),
        version: "1.14.2".into(),
        ..InstrumentationScope::default()
    }
}

/// The OTLP trace export of `runs`, one resource per agent service.
fn trace_export(runs: &[(Agent, agents::Run)]) -> Vec<u8> {
    let resource_spans = Agent::ALL
        .iter()
        .filter_map(|&agent| {
            let spans: Vec<Span> = runs
                .iter()
                .filter(|(a, _)| *a == agent)
                .flat_map(|(_, run)| run.spans.iter().cloned())
                .collect();
            (!spans.is_empty()).then(|| ResourceSpans {
                resource: Some(resource(agent)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// The OTLP logs export of `runs`, if they wrote any.
fn log_export(runs: &[(Agent, agents::Run)]) -> Option<Vec<u8>> {
    let resource_logs: Vec<ResourceLogs> = Agent::ALL
        .iter()
        .filter_map(|&agent| {
            let log_records: Vec<LogRecord> = runs
                .iter()
                .filter(|(a, _)| *a == agent)
                .flat_map(|(_, run)| run.logs.iter().cloned())
                .collect();
            (!log_records.is_empty()).then(|| ResourceLogs {
                resource: Some(resource(agent)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            })
        })
        .collect();
    (!resource_logs.is_empty()).then(|| ExportLogsServiceRequest { resource_logs }.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;

    const HOUR: i64 = 3_600_000;
    /// 2026-03-04T00:00:00Z, a Wednesday.
    const DAY: i64 = 1_772_582_400_000;

    #[test]
    fn an_hour_of_traffic_has_the_promised_mix() {
        let world = World::new(DAY + 20 * HOUR);
        let mut generator = Generator::new(world, 2.0, 11);
        let plan = Plan { traced: 1.0, nightly_evals: true };
        // 14:00 UTC on a weekday: the busiest hour.
        let (from, to) = (DAY + 14 * HOUR, DAY + 15 * HOUR);
        let mut telemetry = Telemetry::new(60_000);
        let mut bodies = generator.stretch(from, to, plan, &mut telemetry);
        bodies.extend(generator.telemetry_bodies(telemetry, from, to));
        let per_second = bodies.calls as f64 / 3600.0;
        assert!((1.6..2.4).contains(&per_second), "{per_second} calls/s");
        let reports: Vec<Value> = bodies
            .reports
            .iter()
            .flat_map(|b| serde_json::from_slice::<Vec<Value>>(b).unwrap())
            .collect();
        let users: std::collections::BTreeSet<_> =
            reports.iter().map(|r| r["user"].as_str().unwrap().to_owned()).collect();
        let models: std::collections::BTreeSet<_> =
            reports.iter().map(|r| r["model"].as_str().unwrap().to_owned()).collect();
        assert_eq!(users.len(), 20);
        assert!(models.len() >= 8, "{models:?}");
        let errors = reports.iter().filter(|r| r["status"] == "error").count() as f64;
        let share = errors / reports.len() as f64;
        assert!((0.015..0.05).contains(&share), "error share {share}");
        assert!(reports.iter().any(|r| r["completed"] == false));
        assert!(reports.iter().any(|r| r.get("reasoning_tokens").is_some()));
        assert!(reports.iter().any(|r| r.get("cache_write_tokens").is_some()));

        // Every traced LLM span carries its messages, as prose, and is the
        // call a usage report describes.
        let mut llm_spans = 0;
        for body in &bodies.traces {
            let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            for span in
                export.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
            {
                if !span.name.starts_with("chat ") {
                    continue;
                }
                llm_spans += 1;
                let attr = |key: &str| span.attributes.iter().find(|kv| kv.key == key);
                let Some(any_value::Value::StringValue(input)) =
                    attr("gen_ai.input.messages").and_then(|kv| kv.value.as_ref()?.value.clone())
                else {
                    panic!("{} has no input messages", span.name)
                };
                let messages: Value = serde_json::from_str(&input).unwrap();
                let first = messages[0]["parts"][0]["content"].as_str().unwrap();
                assert!(first.split_whitespace().count() >= 8, "{first}");
                let span_hex = hex::encode(&span.span_id);
                assert!(reports.iter().any(|r| r["span_id"] == span_hex.as_str()));
            }
        }
        assert!(llm_spans > 100, "{llm_spans} LLM spans");
        assert!(!bodies.metrics.is_empty() && !bodies.points.is_empty() && !bodies.logs.is_empty());
    }

    #[test]
    fn nights_are_quieter_and_evals_run_then() {
        let world = World::new(DAY + 20 * HOUR);
        let mut generator = Generator::new(world, 2.0, 12);
        let plan = Plan { traced: 0.0, nightly_evals: true };
        let mut telemetry = Telemetry::new(300_000);
        let night = generator.stretch(DAY + 2 * HOUR, DAY + 3 * HOUR, plan, &mut telemetry);
        let evals = night
            .reports
            .iter()
            .flat_map(|b| serde_json::from_slice::<Vec<Value>>(b).unwrap())
            .filter(|r| r["route"] == "batch" && r["model"] == "gpt-4.1")
            .count();
        assert!(evals > 300, "{evals} eval calls");
        assert!(night.traces.is_empty() && night.runs > 0);
    }
}
