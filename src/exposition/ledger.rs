//! LLM usage counters for `/metrics`, kept per rollup series as calls enter
//! the ledger (no allocation per call) and folded at scrape time into
//! requests, tokens, cost and latency histograms per model, and per user and
//! API key for the top spenders only, so label cardinality stays bounded.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::text::{Exposition, Histogram, Kind, LabelSet, le_values};
use crate::aggregate::SeriesKey;
use crate::model::LlmCall;

/// GenAI `gen_ai.client.operation.duration` bucket boundaries (seconds).
pub const DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// GenAI `gen_ai.server.time_to_first_token` bucket boundaries (seconds).
pub const TTFT_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// The Aether gateway's `streaming_request_duration_seconds` buckets.
pub const STREAMING_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// The label a folded-in user or key gets.
pub const OTHER: &str = "__other__";

const TOKEN_TYPES: [&str; 5] = ["input", "output", "cache_read", "cache_write", "reasoning"];

/// Counts shared by every breakdown; they subtract for the top-N baselines.
#[derive(Debug, Clone, Default, PartialEq)]
struct Usage {
    requests: u64,
    tokens: [u64; 5],
    cost_usd: f64,
}

impl Usage {
    fn add_call(&mut self, call: &LlmCall) {
        let tokens = [
            call.input_tokens,
            call.output_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        ];
        self.requests += call.requests;
        for (sum, n) in self.tokens.iter_mut().zip(tokens) {
            *sum = sum.saturating_add(n);
        }
        self.cost_usd += call.cost_usd;
    }

    fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        for (sum, n) in self.tokens.iter_mut().zip(other.tokens) {
            *sum = sum.saturating_add(n);
        }
        self.cost_usd += other.cost_usd;
    }

    fn minus(&self, other: &Usage) -> Usage {
        let mut out = self.clone();
        out.requests -= other.requests.min(out.requests);
        for (sum, n) in out.tokens.iter_mut().zip(other.tokens) {
            *sum = sum.saturating_sub(n);
        }
        out.cost_usd -= other.cost_usd;
        out
    }
}

/// How a call streamed, as a label value.
fn streaming_label(streaming: Option<bool>) -> &'static str {
    match streaming {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

/// What the calls of one rollup series with one streaming flag add up to.
struct SeriesStats {
    usage: Usage,
    duration: Histogram,
    ttft: Histogram,
    /// The Aether gateway's streaming-duration buckets (streaming calls only).
    streaming: Histogram,
}

impl SeriesStats {
    fn new() -> Self {
        Self {
            usage: Usage::default(),
            duration: Histogram::new(&DURATION_BUCKETS),
            ttft: Histogram::new(&TTFT_BUCKETS),
            streaming: Histogram::new(&STREAMING_BUCKETS),
        }
    }
}

/// The labels of the per-model families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CallKey {
    project: String,
    model: String,
    provider: String,
    operation: &'static str,
    status: &'static str,
    streaming: &'static str,
}

/// Which users (or keys) have series of their own: at most `limit` per
/// server, chosen by cost at scrape time while there is room, never
/// demoted. A member's series counts from its promotion (its usage then is
/// the baseline, which stays in `__other__`), so every series only grows,
/// as counters must.
struct TopN {
    limit: usize,
    /// (project, name) → usage at promotion.
    baselines: HashMap<(String, String), Usage>,
}

impl TopN {
    fn new(limit: usize) -> Self {
        Self { limit, baselines: HashMap::new() }
    }

    /// Promotes the costliest non-members while there is room, then splits
    /// `totals` into member rows and one `__other__` row per project.
    fn rows(&mut self, totals: HashMap<(String, String), Usage>) -> Vec<(String, String, Usage)> {
        let room = self.limit.saturating_sub(self.baselines.len());
        if room > 0 {
            let mut candidates: Vec<(&(String, String), &Usage)> =
                totals.iter().filter(|(k, _)| !self.baselines.contains_key(*k)).collect();
            candidates.sort_by(|a, b| b.1.cost_usd.total_cmp(&a.1.cost_usd).then(a.0.cmp(b.0)));
            for (key, usage) in candidates.into_iter().take(room) {
                self.baselines.insert(key.clone(), usage.clone());
            }
        }
        let mut other: HashMap<String, Usage> = HashMap::new();
        let mut rows = Vec::new();
        for ((project, name), usage) in totals {
            match self.baselines.get(&(project.clone(), name.clone())) {
                Some(baseline) => {
                    other.entry(project.clone()).or_default().add(baseline);
                    rows.push((project, name, usage.minus(baseline)));
                }
                None => other.entry(project).or_default().add(&usage),
            }
        }
        rows.extend(other.into_iter().map(|(project, usage)| (project, OTHER.to_owned(), usage)));
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows
    }

    fn is_member(&self, project: &str, name: &str) -> bool {
        self.baselines.contains_key(&(project.to_owned(), name.to_owned()))
    }
}

pub struct LedgerMetrics {
    /// (rollup series id, streaming flag) → what its calls add up to.
    by_series: FxHashMap<(i64, Option<bool>), SeriesStats>,
    users: TopN,
    keys: TopN,
}

impl LedgerMetrics {
    /// `top_n`: how many users and API keys get series of their own.
    pub fn new(top_n: usize) -> Self {
        Self { by_series: FxHashMap::default(), users: TopN::new(top_n), keys: TopN::new(top_n) }
    }

    /// Counts a call that has just entered the ledger in rollup series
    /// `series`.
    pub fn record(&mut self, call: &LlmCall, series: i64) {
        let stats = self.by_series.entry((series, call.streaming)).or_insert_with(SeriesStats::new);
        stats.usage.add_call(call);
        if let Some(ms) = call.duration_ms {
            stats.duration.observe(ms / 1000.0);
            if call.streaming == Some(true) {
                stats.streaming.observe(ms / 1000.0);
            }
        }
        if let Some(ms) = call.ttft_ms {
            stats.ttft.observe(ms / 1000.0);
        }
    }

    /// Drops the counters of rollup series let go.
    pub fn forget(&mut self, series: &[i64]) {
        let gone: rustc_hash::FxHashSet<i64> = series.iter().copied().collect();
        self.by_series.retain(|(id, _), _| !gone.contains(id));
    }

    /// The rollup series whose keys `render` needs.
    pub fn series_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.by_series.keys().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Writes every LLM family; `keys` names the rollup series.
    pub fn render(&mut self, e: &mut Exposition, keys: &HashMap<i64, Arc<SeriesKey>>) {
        let mut calls: HashMap<CallKey, SeriesStats> = HashMap::new();
        let mut users: HashMap<(String, String), Usage> = HashMap::new();
        let mut api_keys: HashMap<(String, String), Usage> = HashMap::new();
        let mut gateway: HashMap<(&'static str, &'static str), u64> = HashMap::new();
        for ((series, streaming), stats) in &self.by_series {
            let Some(key) = keys.get(series) else { continue };
            let call_key = CallKey {
                project: key.project.clone(),
                model: key.model.clone(),
                provider: key.provider.clone().unwrap_or_default(),
                operation: key.operation.as_str(),
                status: key.status.as_str(),
                streaming: streaming_label(*streaming),
            };
            let into = calls.entry(call_key).or_insert_with(SeriesStats::new);
            into.usage.add(&stats.usage);
            into.duration.merge(&stats.duration);
            into.ttft.merge(&stats.ttft);
            for (name, totals) in [(&key.user, &mut users), (&key.api_key, &mut api_keys)] {
                if let Some(name) = name {
                    totals
                        .entry((key.project.clone(), name.clone()))
                        .or_default()
                        .add(&stats.usage);
                }
            }
            let kind = if *streaming == Some(true) { "streaming" } else { "non-streaming" };
            let status =
                if key.status == crate::model::Status::Error { "error" } else { "success" };
            *gateway.entry((kind, status)).or_default() += stats.usage.requests;
        }
        let mut calls: Vec<(CallKey, SeriesStats)> = calls.into_iter().collect();
        calls.sort_by(|a, b| a.0.cmp(&b.0));
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
        let series = || calls.iter().map(|(_, s)| s).zip(&sets);
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
        let user_rows = self.users.rows(users);
        let key_rows = self.keys.rows(api_keys);
        for (rows, dimension, what) in
            [(&user_rows, "user", "user"), (&key_rows, "api_key", "API key (fingerprint)")]
        {
            let name = format!("tally_llm_{dimension}_requests_total");
            e.family(
                &name,
                Kind::Counter,
                &format!("LLM requests per {what}, top spenders only; the rest under {OTHER}."),
            );
            for (project, n, usage) in rows {
                e.sample(&name, &[("project", project), (dimension, n)], usage.requests as f64);
            }
            let name = format!("tally_llm_{dimension}_tokens_total");
            e.family(
                &name,
                Kind::Counter,
                &format!("Tokens per {what} and type, top spenders only."),
            );
            for (project, n, usage) in rows {
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
            for (project, n, usage) in rows {
                e.sample(&name, &[("project", project), (dimension, n)], usage.cost_usd);
            }
        }
        e.family("tally_gateway_request_total", Kind::Counter, "Requests by type (streaming, non-streaming) and status (success, error), as the Aether gateway's request_total.");
        let mut requests: Vec<_> = gateway.into_iter().collect();
        requests.sort();
        for ((kind, status), n) in requests {
            e.sample(
                "tally_gateway_request_total",
                &[("type", kind), ("status", status)],
                n as f64,
            );
        }
        // Streaming durations per key: a key's own series holds what came
        // after it joined the top N; the rest, and non-members, __other__.
        let mut streaming: HashMap<(String, &'static str), Histogram> = HashMap::new();
        for ((series, flag), stats) in &self.by_series {
            let Some(key) = keys.get(series) else { continue };
            if *flag != Some(true) || stats.streaming.count == 0 {
                continue;
            }
            let key_id = match &key.api_key {
                Some(k) if self.keys.is_member(&key.project, k) => k.clone(),
                _ => OTHER.to_owned(),
            };
            let status =
                if key.status == crate::model::Status::Error { "error" } else { "success" };
            streaming
                .entry((key_id, status))
                .or_insert_with(|| Histogram::new(&STREAMING_BUCKETS))
                .merge(&stats.streaming);
        }
        e.family(
            "tally_gateway_streaming_request_duration_seconds",
            Kind::Histogram,
            "Duration of streaming requests per API key (top spenders; the rest under __other__).",
        );
        let mut streaming: Vec<_> = streaming.into_iter().collect();
        streaming.sort_by(|a, b| a.0.cmp(&b.0));
        for ((key_id, status), h) in streaming {
            e.histogram(
                "tally_gateway_streaming_request_duration_seconds",
                &[("key_id", &key_id), ("status", status)],
                &h,
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

    /// Records a call in its own series (as the registry would assign).
    fn record(m: &mut LedgerMetrics, keys: &mut HashMap<i64, Arc<SeriesKey>>, call: &LlmCall) {
        let key = SeriesKey::of(call);
        let id = match keys.iter().find(|(_, k)| ***k == key) {
            Some((id, _)) => *id,
            None => {
                let id = keys.len() as i64 + 1;
                keys.insert(id, Arc::new(key));
                id
            }
        };
        m.record(call, id);
    }

    #[test]
    fn top_spenders_get_series_and_the_rest_fold_into_other() {
        let mut m = LedgerMetrics::new(2);
        let mut keys = HashMap::new();
        for (user, cost) in [("a", 1.0), ("b", 5.0), ("c", 3.0), ("a", 1.0)] {
            record(&mut m, &mut keys, &call(user, cost));
        }
        let mut e = Exposition::default();
        m.render(&mut e, &keys);
        // b and c were the top 2 at the first scrape; what they did before
        // it stays under __other__, so counters never go down.
        record(&mut m, &mut keys, &call("b", 5.0));
        record(&mut m, &mut keys, &call("a", 9.0));
        let mut e = Exposition::default();
        m.render(&mut e, &keys);
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
