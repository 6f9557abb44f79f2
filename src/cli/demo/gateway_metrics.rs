//! The LLM gateway's own metrics, as an Aether-style gateway keeps them in
//! Prometheus (request totals by type and status, streaming durations and
//! concurrency slots per key, open circuit breakers, model-alias
//! resolution), tallied from the calls the gateway relays and exported as
//! OTLP metrics with delta temporality, one data point per series and
//! interval.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::Rng;
use rand::rngs::StdRng;

use super::calls::{Call, Outcome};
use super::world::World;

const DELTA: i32 = 1;
const MS: u64 = 1_000_000;

const SLOT_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
const STREAMING_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
const ALIAS_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// An explicit-bucket histogram of one interval.
#[derive(Debug, Clone)]
struct Hist {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Hist {
        Hist {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, value: f64) {
        let at = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[at] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// One interval's tallies. Keys come from the cast (API key ids, fixed
/// label values), so each map stays small.
#[derive(Debug, Default)]
struct Interval {
    /// (type, status) → requests.
    requests: BTreeMap<(&'static str, &'static str), u64>,
    /// (key_id, status) → streaming request durations (s).
    streaming: BTreeMap<(&'static str, &'static str), Hist>,
    /// (key_id, exception) → slot occupation (s).
    slots: BTreeMap<(&'static str, &'static str), Hist>,
    /// key_id → summed occupation (ms), for the average slots in use.
    busy_ms: BTreeMap<&'static str, f64>,
    /// (method, cache_hit) → resolutions.
    aliases: BTreeMap<(&'static str, &'static str), u64>,
    /// method → resolution time (s).
    alias_time: BTreeMap<&'static str, Hist>,
    conflicts: u64,
}

/// The gateway's metrics over a stretch of time, by interval.
#[derive(Debug)]
pub struct GatewayMetrics {
    interval_ms: i64,
    intervals: BTreeMap<i64, Interval>,
}

impl GatewayMetrics {
    pub fn new(interval_ms: i64) -> GatewayMetrics {
        GatewayMetrics { interval_ms, intervals: BTreeMap::new() }
    }

    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    fn interval(&mut self, t_ms: i64) -> &mut Interval {
        let start = t_ms.div_euclid(self.interval_ms) * self.interval_ms;
        self.intervals.entry(start).or_default()
    }

    /// Counts one call the gateway relayed.
    pub fn record(&mut self, call: &Call, rng: &mut StdRng) {
        let key = call.caller.key.id;
        let seconds = call.duration_ms / 1000.0;
        let status = if call.failed() { "error" } else { "success" };
        let kind = if call.streaming { "streaming" } else { "non-streaming" };
        // Which way the gateway found the model: mostly by its exact name,
        // sometimes through an alias ("fast", "smart") or the provider's name.
        let method = match rng.random_range(0..100) {
            0..80 => "direct_match",
            80..94 => "alias",
            94..99 => "provider_model_name",
            _ => "not_found",
        };
        let cache_hit = if rng.random_bool(0.9) { "true" } else { "false" };
        let resolve_s = if cache_hit == "true" {
            rng.random_range(0.0002..0.002)
        } else {
            rng.random_range(0.004..0.06)
        };
        let conflict = rng.random_bool(0.0005);
        let interval = self.interval(call.end_ms());
        *interval.requests.entry((kind, status)).or_default() += 1;
        if call.streaming {
            interval
                .streaming
                .entry((key, status))
                .or_insert_with(|| Hist::new(STREAMING_BUCKETS))
                .observe(seconds);
        }
        let exception = if matches!(call.outcome, Outcome::Failed(..)) { "true" } else { "false" };
        interval
            .slots
            .entry((key, exception))
            .or_insert_with(|| Hist::new(SLOT_BUCKETS))
            .observe(seconds);
        *interval.busy_ms.entry(key).or_default() += call.duration_ms;
        *interval.aliases.entry((method, cache_hit)).or_default() += 1;
        interval
            .alias_time
            .entry(method)
            .or_insert_with(|| Hist::new(ALIAS_BUCKETS))
            .observe(resolve_s);
        interval.conflicts += u64::from(conflict);
    }

    /// Makes sure the intervals from `from_ms` to `to_ms` exist, so that
    /// gauges are reported for quiet intervals too.
    pub fn cover(&mut self, from_ms: i64, to_ms: i64) {
        let mut t = from_ms.div_euclid(self.interval_ms) * self.interval_ms;
        while t < to_ms {
            self.intervals.entry(t).or_default();
            t += self.interval_ms;
        }
    }

    /// The OTLP export of every interval, or `None` when there is nothing.
    pub fn export(self, world: &World) -> Option<ExportMetricsServiceRequest> {
        if self.intervals.is_empty() {
            return None;
        }
        let interval_ms = self.interval_ms;
        let times = |start: i64| (start as u64 * MS, (start + interval_ms) as u64 * MS);
        let mut requests = Vec::new();
        let mut releases = Vec::new();
        let mut resolutions = Vec::new();
        let mut conflicts = Vec::new();
        let mut in_use = Vec::new();
        let mut circuits = Vec::new();
        let mut streaming = Vec::new();
        let mut slots = Vec::new();
        let mut alias_time = Vec::new();
        for (start, interval) in self.intervals {
            let (from, to) = times(start);
            let counter = |attributes: Vec<KeyValue>, value: u64| NumberDataPoint {
                attributes,
                start_time_unix_nano: from,
                time_unix_nano: to,
                value: Some(number_data_point::Value::AsInt(value as i64)),
                ..NumberDataPoint::default()
            };
            let gauge = |attributes: Vec<KeyValue>, value: f64| NumberDataPoint {
                attributes,
                time_unix_nano: to,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..NumberDataPoint::default()
            };
            let histogram = |attributes: Vec<KeyValue>, h: &Hist| HistogramDataPoint {
                attributes,
                start_time_unix_nano: from,
                time_unix_nano: to,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.clone(),
                explicit_bounds: h.bounds.to_vec(),
                min: Some(h.min),
                max: Some(h.max),
                ..HistogramDataPoint::default()
            };
            for ((kind, status), n) in &interval.requests {
                requests.push(counter(vec![text("type", kind), text("status", status)], *n));
            }
            for ((key, exception), h) in &interval.slots {
                let labels = vec![text("key_id", key), text("exception", exception)];
                releases.push(counter(labels.clone(), h.count));
                slots.push(histogram(labels, h));
            }
            for ((key, status), h) in &interval.streaming {
                streaming.push(histogram(vec![text("key_id", key), text("status", status)], h));
            }
            for key in super::cast::API_KEYS.iter().map(|k| k.id) {
                let busy = interval.busy_ms.get(key).copied().unwrap_or(0.0);
                in_use.push(gauge(vec![text("key_id", key)], (busy / interval_ms as f64).round()));
            }
            circuits.push(gauge(Vec::new(), f64::from(world.circuits_open(start))));
            for ((method, hit), n) in &interval.aliases {
                resolutions.push(counter(vec![text("method", method), text("cache_hit", hit)], *n));
            }
            for (method, h) in &interval.alias_time {
                alias_time.push(histogram(vec![text("method", method)], h));
            }
            if interval.conflicts > 0 {
                conflicts.push(counter(Vec::new(), interval.conflicts));
            }
        }
        let sum = |name: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
            name: name.into(),
            description: description.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: DELTA,
                is_monotonic: true,
            })),
            ..Metric::default()
        };
        let gauge = |name: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
            name: name.into(),
            description: description.into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: points })),
            ..Metric::default()
        };
        let histogram = |name: &str, description: &str, points: Vec<HistogramDataPoint>| Metric {
            name: name.into(),
            description: description.into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: DELTA,
            })),
            ..Metric::default()
        };
        let metrics = vec![
            sum("request_total", "Total number of requests", requests),
            histogram(
                "streaming_request_duration_seconds",
                "Duration of streaming requests in seconds",
                streaming,
            ),
            histogram(
                "concurrency_slot_duration_seconds",
                "Duration of concurrency slot occupation in seconds",
                slots,
            ),
            sum(
                "concurrency_slot_release_total",
                "Total number of concurrency slot releases",
                releases,
            ),
            gauge("concurrency_slots_in_use", "Current number of concurrency slots in use", in_use),
            gauge(
                "health_open_circuits",
                "Number of provider keys currently in circuit breaker open state",
                circuits,
            ),
            sum(
                "model_alias_resolution_total",
                "Total number of model alias resolutions",
                resolutions,
            ),
            histogram(
                "model_alias_resolution_duration_seconds",
                "Duration of model alias resolution in seconds",
                alias_time,
            ),
            sum(
                "model_alias_conflict_total",
                "Total number of alias conflicts detected",
                conflicts,
            ),
        ];
        let metrics = metrics.into_iter().filter(|m| !is_empty(m)).collect();
        Some(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![text("service.name", "llm-gateway")],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "llm-gateway.metrics".into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        })
    }
}

fn is_empty(metric: &Metric) -> bool {
    match &metric.data {
        Some(metric::Data::Sum(s)) => s.data_points.is_empty(),
        Some(metric::Data::Gauge(g)) => g.data_points.is_empty(),
        Some(metric::Data::Histogram(h)) => h.data_points.is_empty(),
        _ => true,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::calls::{Caller, Shape};
    use super::super::cast::{GPT_41_MINI, WORKSPACE_CHAT};
    use super::*;

    #[test]
    fn intervals_count_every_call_once() {
        let mut rng = StdRng::seed_from_u64(5);
        let caller = Caller {
            user: "amara.okafor",
            team: "support",
            key: &WORKSPACE_CHAT,
            route: "interactive",
            agent: None,
        };
        let shape = Shape {
            input: 500,
            cached_share: 0.0,
            cache_write: false,
            output: 100,
            streaming: true,
        };
        let mut metrics = GatewayMetrics::new(60_000);
        for i in 0..90 {
            let call =
                Call::new(&GPT_41_MINI, caller, shape, i * 1_000, Outcome::Ok, 1.0, &mut rng);
            metrics.record(&call, &mut rng);
        }
        metrics.cover(0, 180_000);
        let export = metrics.export(&World::new(0)).unwrap();
        let scope = &export.resource_metrics[0].scope_metrics[0];
        let requests = scope.metrics.iter().find(|m| m.name == "request_total").unwrap();
        let Some(metric::Data::Sum(sum)) = &requests.data else { panic!("a sum") };
        let total: i64 = sum
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(n)) => n,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 90);
        let in_use = scope.metrics.iter().find(|m| m.name == "concurrency_slots_in_use").unwrap();
        let Some(metric::Data::Gauge(gauge)) = &in_use.data else { panic!("a gauge") };
        // Five keys, three intervals (the last one quiet).
        assert_eq!(gauge.data_points.len(), 15);
    }
}
