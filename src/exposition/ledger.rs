//! LLM usage counters for `/metrics`, kept as calls enter the ledger:
//! requests, tokens, cost and latency histograms per model, and per user and
//! API key for the top spenders only, so label cardinality stays bounded.

use std::collections::HashMap;

use super::text::{Exposition, Histogram, Kind, LabelSet, le_values};
use crate::model::LlmCall;

/// GenAI `gen_ai.client.operation.duration` bucket boundaries (seconds).
pub const DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// GenAI `gen_ai.server.time_to_first_token` bucket boundaries (seconds).
pub const TTFT_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Seed 000's `streaming_request_duration_seconds` buckets.
pub const STREAMING_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// The label a folded-in user or key gets.
pub const OTHER: &str = "__other__";

const TOKEN_TYPES: [&str; 5] = ["input", "output", "cache_read", "cache_write", "reasoning"];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CallKey {
    project: String,
    model: String,
    provider: String,
    operation: &'static str,
    status: &'static str,
    streaming: &'static str,
}

/// Counts shared by every breakdown.
#[derive(Debug, Clone, Default)]
struct Usage {
    requests: u64,
    tokens: [u64; 5],
    cost_usd: f64,
}

impl Usage {
    fn add(&mut self, call: &LlmCall) {
        self.requests += call.requests;
        let tokens = [
            call.input_tokens,
            call.output_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        ];
        for (sum, n) in self.tokens.iter_mut().zip(tokens) {
            *sum = sum.saturating_add(n);
        }
        self.cost_usd += call.cost_usd;
    }
}

struct CallStats {
    usage: Usage,
    duration: Histogram,
    ttft: Histogram,
}

/// Per-name usage where only the top `limit` names by cost get series of
/// their own and the rest are summed under `__other__`. A name's series
/// counts from the scrape that promoted it (what it did before stays in
/// `__other__`), and members are never demoted, so every series only grows,
/// as counters must.
struct TopN {
    limit: usize,
    members: HashMap<(String, String), Usage>,
    other: HashMap<String, Usage>,
    /// Cost so far of each name not (yet) a member, to pick the next ones.
    candidates: HashMap<(String, String), f64>,
}

impl TopN {
    fn new(limit: usize) -> Self {
        Self { limit, members: HashMap::new(), other: HashMap::new(), candidates: HashMap::new() }
    }

    fn add(&mut self, project: &str, name: &str, call: &LlmCall) {
        let key = (project.to_owned(), name.to_owned());
        if let Some(usage) = self.members.get_mut(&key) {
            usage.add(call);
            return;
        }
        self.other.entry(key.0.clone()).or_default().add(call);
        if self.members.len() < self.limit {
            *self.candidates.entry(key).or_default() += call.cost_usd;
        }
    }

    /// Promotes the costliest candidates while there is room.
    fn promote(&mut self) {
        let room = self.limit.saturating_sub(self.members.len());
        if room == 0 {
            self.candidates.clear();
            return;
        }
        let mut candidates: Vec<((String, String), f64)> = self.candidates.drain().collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (key, _) in candidates.into_iter().take(room) {
            self.members.insert(key, Usage::default());
        }
    }
}

/// Seed 000's gateway view: requests by streaming and status, and the
/// duration of streaming requests per key.
#[derive(Default)]
struct Gateway {
    requests: HashMap<(&'static str, &'static str), u64>,
    streaming: HashMap<(String, &'static str), Histogram>,
}

pub struct LedgerMetrics {
    calls: HashMap<CallKey, CallStats>,
    users: TopN,
    keys: TopN,
    gateway: Gateway,
}

impl LedgerMetrics {
    /// `top_n`: how many users and API keys get series of their own.
    pub fn new(top_n: usize) -> Self {
        Self {
            calls: HashMap::new(),
            users: TopN::new(top_n),
            keys: TopN::new(top_n),
            gateway: Gateway::default(),
        }
    }

    /// Counts a call that has just entered the ledger.
    pub fn record(&mut self, call: &LlmCall) {
        let streaming = match call.streaming {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        };
        let key = CallKey {
            project: call.project.clone(),
            model: call.model.clone(),
            provider: call.provider.clone().unwrap_or_default(),
            operation: call.operation.as_str(),
            status: call.status.as_str(),
            streaming,
        };
        let stats = self.calls.entry(key).or_insert_with(|| CallStats {
            usage: Usage::default(),
            duration: Histogram::new(&DURATION_BUCKETS),
            ttft: Histogram::new(&TTFT_BUCKETS),
        });
        stats.usage.add(call);
        if let Some(ms) = call.duration_ms {
            stats.duration.observe(ms / 1000.0);
        }
        if let Some(ms) = call.ttft_ms {
            stats.ttft.observe(ms / 1000.0);
        }
        if let Some(user) = &call.user {
            self.users.add(&call.project, user, call);
        }
        if let Some(key) = &call.api_key {
            self.keys.add(&call.project, key, call);
        }

        let kind = if call.streaming == Some(true) { "streaming" } else { "non-streaming" };
        let status = if call.is_error() { "error" } else { "success" };
        *self.gateway.requests.entry((kind, status)).or_default() += call.requests;
        if call.streaming == Some(true)
            && let Some(ms) = call.duration_ms
        {
            let key_id = match &call.api_key {
                Some(key)
                    if self.keys.members.contains_key(&(call.project.clone(), key.clone())) =>
                {
                    key.clone()
                }
                _ => OTHER.to_owned(),
            };
            self.gateway
                .streaming
                .entry((key_id, status))
                .or_insert_with(|| Histogram::new(&STREAMING_BUCKETS))
                .observe(ms / 1000.0);
        }
    }

    /// Writes every LLM family.
    pub fn render(&mut self, e: &mut Exposition) {
        self.users.promote();
        self.keys.promote();
        let mut calls: Vec<(&CallKey, &CallStats)> = self.calls.iter().collect();
        calls.sort_by(|a, b| {
            (&a.0.project, &a.0.model, &a.0.provider, a.0.operation, a.0.status, a.0.streaming).cmp(
                &(
                    &b.0.project,
                    &b.0.model,
                    &b.0.provider,
                    b.0.operation,
                    b.0.status,
                    b.0.streaming,
                ),
            )
        });
        // Each series' labels are rendered once for all its families.
        let sets: Vec<LabelSet> = calls
            .iter()
            .map(|(k, _)| {
                LabelSet::new(&[
                    ("project", &k.project),
                    ("model", &k.model),
                    ("provider", &k.provider),
                    ("operation", k.operation),
                    ("status", k.status),
                    ("streaming", k.streaming),
                ])
            })
            .collect();
        let series = || calls.iter().map(|(_, s)| *s).zip(&sets);
        e.family("tally_llm_requests_total", Kind::Counter, "LLM requests entered in the ledger.");
        for (s, labels) in series() {
            e.sample_with("tally_llm_requests_total", labels, None, s.usage.requests as f64);
        }
        e.family(
            "tally_llm_tokens_total",
            Kind::Counter,
            "Tokens by type (input includes cached tokens, output includes reasoning).",
        );
        for (s, labels) in series() {
            for (kind, n) in TOKEN_TYPES.iter().zip(s.usage.tokens) {
                e.sample_with("tally_llm_tokens_total", labels, Some(("type", kind)), n as f64);
            }
        }
        e.family("tally_llm_cost_usd_total", Kind::Counter, "Cost in USD computed by Tally.");
        for (s, labels) in series() {
            e.sample_with("tally_llm_cost_usd_total", labels, None, s.usage.cost_usd);
        }
        e.family(
            "tally_llm_request_duration_seconds",
            Kind::Histogram,
            "LLM request duration (GenAI operation-duration buckets).",
        );
        let les = le_values(&DURATION_BUCKETS);
        for (s, labels) in series() {
            e.histogram_with("tally_llm_request_duration_seconds", labels, &les, &s.duration);
        }
        e.family(
            "tally_llm_time_to_first_token_seconds",
            Kind::Histogram,
            "Time to first token of LLM requests (GenAI buckets).",
        );
        let les = le_values(&TTFT_BUCKETS);
        for (s, labels) in series() {
            e.histogram_with("tally_llm_time_to_first_token_seconds", labels, &les, &s.ttft);
        }
        for (top, dimension, what) in
            [(&self.users, "user", "user"), (&self.keys, "api_key", "API key (fingerprint)")]
        {
            let mut rows: Vec<(String, String, &Usage)> = top
                .members
                .iter()
                .map(|((p, n), u)| (p.clone(), n.clone(), u))
                .chain(top.other.iter().map(|(p, u)| (p.clone(), OTHER.to_owned(), u)))
                .collect();
            rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            let name = format!("tally_llm_{dimension}_requests_total");
            e.family(
                &name,
                Kind::Counter,
                &format!("LLM requests per {what}, top spenders only; the rest under {OTHER}."),
            );
            for (project, n, usage) in &rows {
                e.sample(&name, &[("project", project), (dimension, n)], usage.requests as f64);
            }
            let name = format!("tally_llm_{dimension}_tokens_total");
            e.family(
                &name,
                Kind::Counter,
                &format!("Tokens per {what} and type, top spenders only."),
            );
            for (project, n, usage) in &rows {
                for (kind, count) in TOKEN_TYPES.iter().zip(usage.tokens) {
                    e.sample(
                        &name,
                        &[("project", project), (dimension, n), ("type", kind)],
                        count as f64,
                    );
                }
            }
            let name = format!("tally_llm_{dimension}_cost_usd_total");
            e.family(&name, Kind::Counter, &format!("Cost in USD per {what}, top spenders only."));
            for (project, n, usage) in &rows {
                e.sample(&name, &[("project", project), (dimension, n)], usage.cost_usd);
            }
        }
        e.family("tally_gateway_request_total", Kind::Counter, "Requests by type (streaming, non-streaming) and status (success, error), as seed 000's request_total.");
        let mut requests: Vec<_> = self.gateway.requests.iter().collect();
        requests.sort();
        for ((kind, status), n) in requests {
            e.sample(
                "tally_gateway_request_total",
                &[("type", kind), ("status", status)],
                *n as f64,
            );
        }
        e.family(
            "tally_gateway_streaming_request_duration_seconds",
            Kind::Histogram,
            "Duration of streaming requests per API key (top spenders; the rest under __other__).",
        );
        let mut streaming: Vec<_> = self.gateway.streaming.iter().collect();
        streaming.sort_by(|a, b| a.0.cmp(b.0));
        for ((key_id, status), h) in streaming {
            e.histogram(
                "tally_gateway_streaming_request_duration_seconds",
                &[("key_id", key_id), ("status", status)],
                h,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(user: &str, cost: f64) -> LlmCall {
        LlmCall {
            user: Some(user.into()),
            api_key: Some(format!("k_{user}")),
            input_tokens: 10,
            cache_read_tokens: 4,
            output_tokens: 2,
            cost_usd: cost,
            duration_ms: Some(1500.0),
            streaming: Some(true),
            ..LlmCall::example()
        }
    }

    #[test]
    fn top_spenders_get_series_and_the_rest_fold_into_other() {
        let mut m = LedgerMetrics::new(2);
        for (user, cost) in [("a", 1.0), ("b", 5.0), ("c", 3.0), ("a", 1.0)] {
            m.record(&call(user, cost));
        }
        let mut e = Exposition::default();
        m.render(&mut e);
        // b and c were the top 2 at the first scrape; what they did before
        // it stays under __other__, so counters never go down.
        m.record(&call("b", 5.0));
        m.record(&call("a", 9.0));
        let mut e = Exposition::default();
        m.render(&mut e);
        let text = e.finish();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle}\n{text}"))
                .to_owned()
        };
        assert!(
            line("tally_llm_user_requests_total{project=\"default\",user=\"b\"}").ends_with(" 1")
        );
        assert!(
            line("tally_llm_user_requests_total{project=\"default\",user=\"__other__\"}")
                .ends_with(" 5")
        );
        assert!(!text.contains("user=\"a\""), "a came too late for the 2 places");
        assert!(
            line("tally_llm_requests_total{project=\"default\",model=\"gpt-4o\"").ends_with(" 6")
        );
        assert!(line("tally_llm_tokens_total{project=\"default\",model=\"gpt-4o\",provider=\"\",operation=\"chat\",status=\"ok\",streaming=\"true\",type=\"cache_read\"}").ends_with(" 24"));
        assert!(line("tally_llm_request_duration_seconds_bucket{project=\"default\",model=\"gpt-4o\",provider=\"\",operation=\"chat\",status=\"ok\",streaming=\"true\",le=\"1.28\"}").ends_with(" 0"));
        assert!(line("tally_llm_request_duration_seconds_bucket{project=\"default\",model=\"gpt-4o\",provider=\"\",operation=\"chat\",status=\"ok\",streaming=\"true\",le=\"2.56\"}").ends_with(" 6"));
        assert!(
            line("tally_gateway_request_total{type=\"streaming\",status=\"success\"}")
                .ends_with(" 6")
        );
    }
}
