//! OTLP metrics into metric points: gauges as they are, monotonic sums as
//! counter deltas and histograms (explicit, exponential) and summaries as
//! pre-aggregated points — cumulative series turned into deltas per series,
//! with resets (a new start time, or a value going down) starting over.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as ExponentialBuckets;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

pub use super::cumulative::{CumulativeState, Staged};
use super::cumulative::{Increment, Previous, SeriesKey, distribution_delta, sum_delta};
use super::limits::{MAX_POINT_VALUE, check_time_ns, clip, shown};
use super::otlp_value::{attributes_to_json, resource_attributes};
use super::otlp_wire::ResourceRef;
use super::point::{MAX_TAG_NAME, MAX_TAG_VALUE, MAX_TAGS, valid_name};
use super::span::SpanContext;
use crate::model::{Distribution, MetricKey, MetricPoint, PointKind, Tags};

const CUMULATIVE: i32 = 2;

/// The exponential-histogram scales OTLP allows: finer ones have no
/// representable bucket base, and `-scale` must not overflow.
const SCALES: std::ops::RangeInclusive<i32> = -10..=20;

fn tag_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The series key of one attribute set of an export.
type KnownKey = (Vec<KeyValue>, Arc<MetricKey>);

/// A hash of attributes by their keys and plain values (equal attributes
/// hash equal; others may too, and are told apart by comparing them).
fn attributes_hash(attributes: &[KeyValue]) -> u64 {
    let mut hasher = FxHasher::default();
    for kv in attributes {
        kv.key.hash(&mut hasher);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(text)) => text.hash(&mut hasher),
            Some(any_value::Value::IntValue(int)) => int.hash(&mut hasher),
            Some(any_value::Value::BoolValue(flag)) => flag.hash(&mut hasher),
            Some(any_value::Value::DoubleValue(double)) => double.to_bits().hash(&mut hasher),
            _ => 0u8.hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// The attribute's value when it is a string.
fn text_value(kv: &KeyValue) -> Option<&String> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => Some(text),
        _ => None,
    }
}

/// Data-point attributes as tags, plus the resource's service.
fn tags_of(attributes: &[KeyValue], service: Option<&str>) -> Result<Tags, String> {
    // Attributes are nearly always strings, taken as they are; other values
    // are written as JSON.
    let mut tags: Tags = if attributes.iter().all(|kv| text_value(kv).is_some()) {
        attributes.iter().filter_map(|kv| Some((kv.key.clone(), text_value(kv)?.clone()))).collect()
    } else {
        attributes_to_json(attributes).iter().map(|(k, v)| (k.clone(), tag_value(v))).collect()
    };
    if let Some(service) = service {
        tags.entry("service".to_owned()).or_insert_with(|| service.to_owned());
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("{} attributes, at most {MAX_TAGS}", tags.len()));
    }
    for (key, value) in &tags {
        if key.is_empty() || key.len() > MAX_TAG_NAME || key.starts_with("__") {
            return Err(format!(
                "attribute name {:?} must be 1 to {MAX_TAG_NAME} bytes, not starting with __",
                clip(key)
            ));
        }
        if value.len() > MAX_TAG_VALUE {
            return Err(format!(
                "attribute {}: {} bytes, at most {MAX_TAG_VALUE}",
                clip(key),
                value.len()
            ));
        }
    }
    Ok(tags)
}

/// Explicit-bucket counts at representative values: a bucket's midpoint,
/// the observed min or max (else the bound) for the open-ended ends.
fn explicit_buckets(
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
    mean: f64,
) -> Vec<(f64, u64)> {
    if bounds.is_empty() {
        // Counts are the client's: their sum may not fit.
        let total = counts.iter().fold(0u64, |total, n| total.saturating_add(*n));
        return vec![(mean, total)];
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let value = if i == 0 {
                min.map_or(bounds[0], |m| m.min(bounds[0]))
            } else if i >= bounds.len() {
                max.map_or(bounds[bounds.len() - 1], |m| m.max(bounds[bounds.len() - 1]))
            } else {
                // Halved first: the sum of two large bounds is beyond f64.
                bounds[i - 1] / 2.0 + bounds[i] / 2.0
            };
            (value, *count)
        })
        .collect()
}

/// Are a distribution's bucket values, min and max finite numbers (as the
/// client's bounds, quantile values, min and max may not be)?
fn finite(d: &Distribution) -> bool {
    d.min.is_none_or(f64::is_finite)
        && d.max.is_none_or(f64::is_finite)
        && d.buckets.iter().all(|(value, _)| value.is_finite())
}

/// Exponential-histogram buckets at their geometric midpoints (`scale`
/// within `SCALES`).
fn exponential_buckets(
    scale: i32,
    zero_count: u64,
    positive: Option<(i32, &[u64])>,
    negative: Option<(i32, &[u64])>,
) -> Vec<(f64, u64)> {
    // A bucket's midpoint is base^(index + 0.5) with base = 2^(2^-scale),
    // taken as one power of 2: at scale -10 the base alone is beyond f64.
    let log2_base = 2f64.powi(-scale);
    let mut out = Vec::new();
    if zero_count > 0 {
        out.push((0.0, zero_count));
    }
    for (sign, side) in [(1.0, positive), (-1.0, negative)] {
        if let Some((offset, counts)) = side {
            for (k, count) in counts.iter().enumerate() {
                let index = f64::from(offset) + k as f64;
                // Buckets past f64's range hold no f64 observation; their
                // counts are kept at its largest value.
                let midpoint = 2f64.powf((index + 0.5) * log2_base).min(f64::MAX);
                out.push((sign * midpoint, *count));
            }
        }
    }
    out
}

/// A summary's count spread over its quantile values (approximate: only
/// count and sum are exact).
fn summary_buckets(count: u64, quantiles: &[(f64, f64)]) -> Vec<(f64, u64)> {
    let mut sorted = quantiles.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut assigned = 0u64;
    let mut previous_q = 0.0;
    for (i, (q, value)) in sorted.iter().enumerate() {
        let n = if i + 1 == sorted.len() {
            count - assigned
        } else {
            (((q - previous_q) * count as f64).round() as u64).min(count - assigned)
        };
        assigned += n;
        previous_q = *q;
        out.push((*value, n));
    }
    out
}

/// One side of an exponential histogram as (offset, counts).
fn side(buckets: &Option<ExponentialBuckets>) -> Option<(i32, &[u64])> {
    buckets.as_ref().map(|b| (b.offset, b.bucket_counts.as_slice()))
}

/// One histogram data point, whatever its bucket layout.
struct Sample {
    start_ns: u64,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Vec<(f64, u64)>,
}

/// A histogram sample as a distribution: as sent for delta temporality,
/// its change since the previous sample for cumulative (min and max then
/// unknown). None: a baseline, or no new observations.
fn distribution(
    state: &mut CumulativeState,
    cumulative: bool,
    key: impl FnOnce() -> SeriesKey,
    sample: Sample,
    time_ns: u64,
) -> Option<Distribution> {
    let Sample { start_ns, count, sum, min, max, buckets } = sample;
    let d = if cumulative {
        let sample = Previous::Distribution { start_ns, count, sum, buckets };
        match state.step(key(), sample, time_ns, distribution_delta)? {
            Increment::Distribution { count, sum, buckets } => {
                Distribution { count, sum, min: None, max: None, buckets }
            }
            Increment::Sum(_) => return None,
        }
    } else {
        Distribution { count, sum, min, max, buckets }
    };
    (d.count > 0).then_some(d)
}

/// Converts an export; returns the points and one message per rejected
/// data point (named by metric and position).
pub fn metric_points(
    request: &ExportMetricsServiceRequest,
    hint: Option<&str>,
    now_ms: i64,
    oldest_ms: i64,
    state: &mut CumulativeState,
) -> (Vec<MetricPoint>, Vec<String>) {
    let mut points = Vec::new();
    let mut rejected = Vec::new();
    for resource_metrics in &request.resource_metrics {
        // Resource truncation is marked on the resource; metric tags have
        // caps of their own, so it is not counted here.
        let resource = resource_metrics.resource.as_ref().map(ResourceRef::of);
        let resource =
            resource_attributes(resource.as_ref(), &mut super::limits::Truncation::default());
        let resource = std::sync::Arc::new(resource);
        let context = SpanContext { resource: &resource, project_hint: hint, now_ms };
        let project = context.project();
        let service = resource.get("service.name").and_then(|v| v.as_str()).map(str::to_owned);
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                let name = metric.name.trim();
                if name.is_empty() || name.len() > 200 || !valid_name(name) {
                    rejected.push(format!("metric {:?}: not a valid metric name", clip(name)));
                    continue;
                }
                let refused = state.refused();
                let mut at = 0usize;
                // The data points of one attribute set share one series key.
                let mut keys: FxHashMap<u64, Vec<KnownKey>> = FxHashMap::default();
                let mut emit = |attributes: &[KeyValue],
                                time_ns: u64,
                                kind: PointKind,
                                value: f64,
                                distribution: Option<Distribution>,
                                points: &mut Vec<MetricPoint>,
                                rejected: &mut Vec<String>| {
                    let index = at;
                    at += 1;
                    // OTLP leaves a point's time unset (0) when it has none.
                    let time_ms = if time_ns == 0 {
                        now_ms
                    } else {
                        match check_time_ns(time_ns, now_ms) {
                            Ok(ns) => ns / 1_000_000,
                            Err(bound) => {
                                rejected.push(format!(
                                    "{name} data point {index} (time_unix_nano): {bound}"
                                ));
                                return;
                            }
                        }
                    };
                    if time_ms < oldest_ms {
                        rejected.push(format!(
                            "{name} data point {index} (time_unix_nano): is older than the longest metric retention"
                        ));
                        return;
                    }
                    if !value.is_finite() {
                        rejected.push(format!("{name} data point {index}: value is not finite"));
                        return;
                    }
                    if distribution.as_ref().is_some_and(|d| !finite(d)) {
                        rejected.push(format!(
                            "{name} data point {index}: bucket bounds, quantile values, min and max must be finite"
                        ));
                        return;
                    }
                    let sum = distribution.as_ref().map_or(0.0, |d| d.sum);
                    if value.abs() > MAX_POINT_VALUE
                        || !sum.is_finite()
                        || sum.abs() > MAX_POINT_VALUE
                    {
                        rejected.push(format!(
                            "{name} data point {index}: value is too large: {} (at most ±{})",
                            shown(if value.abs() > MAX_POINT_VALUE { value } else { sum }),
                            shown(MAX_POINT_VALUE)
                        ));
                        return;
                    }
                    let hash = attributes_hash(attributes);
                    let known = keys
                        .get(&hash)
                        .and_then(|same| same.iter().find(|(kvs, _)| kvs == attributes))
                        .map(|(_, key)| key.clone());
                    let key = match known {
                        Some(key) => key,
                        None => match tags_of(attributes, service.as_deref()) {
                            Ok(tags) => {
                                let key = Arc::new(MetricKey {
                                    project: project.clone(),
                                    name: name.to_owned(),
                                    tags,
                                });
                                keys.entry(hash)
                                    .or_default()
                                    .push((attributes.to_vec(), key.clone()));
                                key
                            }
                            Err(err) => {
                                rejected.push(format!("{name} data point {index}: {err}"));
                                return;
                            }
                        },
                    };
                    points.push(MetricPoint {
                        key,
                        value,
                        time_ms,
                        kind,
                        distribution: distribution.map(Box::new),
                    });
                };
                let number = |v: &Option<number_data_point::Value>| match v {
                    Some(number_data_point::Value::AsDouble(d)) => *d,
                    Some(number_data_point::Value::AsInt(i)) => *i as f64,
                    None => f64::NAN,
                };
                let series_key = |attributes: &[KeyValue]| {
                    (
                        project.clone(),
                        name.to_owned(),
                        tags_of(attributes, service.as_deref()).unwrap_or_default(),
                    )
                };
                match &metric.data {
                    Some(metric::Data::Gauge(gauge)) => {
                        for p in &gauge.data_points {
                            emit(
                                &p.attributes,
                                p.time_unix_nano,
                                PointKind::Gauge,
                                number(&p.value),
                                None,
                                &mut points,
                                &mut rejected,
                            );
                        }
                    }
                    Some(metric::Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            let value = number(&p.value);
                            if !sum.is_monotonic {
                                emit(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    PointKind::Gauge,
                                    value,
                                    None,
                                    &mut points,
                                    &mut rejected,
                                );
                                continue;
                            }
                            let delta = if sum.aggregation_temporality == CUMULATIVE {
                                let key = series_key(&p.attributes);
                                let sample =
                                    Previous::Sum { start_ns: p.start_time_unix_nano, value };
                                match state.step(key, sample, p.time_unix_nano, sum_delta) {
                                    Some(Increment::Sum(delta)) => Some(delta),
                                    _ => None,
                                }
                            } else {
                                Some(value)
                            };
                            if let Some(delta) = delta {
                                emit(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    PointKind::Counter,
                                    delta,
                                    None,
                                    &mut points,
                                    &mut rejected,
                                );
                            }
                        }
                    }
                    Some(metric::Data::Histogram(histogram)) => {
                        let cumulative = histogram.aggregation_temporality == CUMULATIVE;
                        for p in &histogram.data_points {
                            let sum = p.sum.unwrap_or(0.0);
                            let mean = if p.count > 0 { sum / p.count as f64 } else { 0.0 };
                            let sample = Sample {
                                start_ns: p.start_time_unix_nano,
                                count: p.count,
                                sum,
                                min: p.min,
                                max: p.max,
                                buckets: explicit_buckets(
                                    &p.explicit_bounds,
                                    &p.bucket_counts,
                                    p.min,
                                    p.max,
                                    mean,
                                ),
                            };
                            let key = || series_key(&p.attributes);
                            let time = p.time_unix_nano;
                            if let Some(d) = distribution(state, cumulative, key, sample, time) {
                                let mean = d.sum / d.count as f64;
                                let (attributes, time) = (&p.attributes, p.time_unix_nano);
                                let kind = PointKind::Histogram;
                                emit(
                                    attributes,
                                    time,
                                    kind,
                                    mean,
                                    Some(d),
                                    &mut points,
                                    &mut rejected,
                                );
                            }
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(histogram)) => {
                        let cumulative = histogram.aggregation_temporality == CUMULATIVE;
                        for p in &histogram.data_points {
                            if !SCALES.contains(&p.scale) {
                                rejected.push(format!(
                                    "{name} data point: scale {} is outside {} to {}",
                                    p.scale,
                                    SCALES.start(),
                                    SCALES.end()
                                ));
                                continue;
                            }
                            let sample = Sample {
                                start_ns: p.start_time_unix_nano,
                                count: p.count,
                                sum: p.sum.unwrap_or(0.0),
                                min: p.min,
                                max: p.max,
                                buckets: exponential_buckets(
                                    p.scale,
                                    p.zero_count,
                                    side(&p.positive),
                                    side(&p.negative),
                                ),
                            };
                            let key = || series_key(&p.attributes);
                            let time = p.time_unix_nano;
                            if let Some(d) = distribution(state, cumulative, key, sample, time) {
                                let mean = d.sum / d.count as f64;
                                let (attributes, time) = (&p.attributes, p.time_unix_nano);
                                let kind = PointKind::Histogram;
                                emit(
                                    attributes,
                                    time,
                                    kind,
                                    mean,
                                    Some(d),
                                    &mut points,
                                    &mut rejected,
                                );
                            }
                        }
                    }
                    Some(metric::Data::Summary(summary)) => {
                        for p in &summary.data_points {
                            let quantiles: Vec<(f64, f64)> =
                                p.quantile_values.iter().map(|q| (q.quantile, q.value)).collect();
                            let sample = Previous::Distribution {
                                start_ns: p.start_time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                buckets: Vec::new(),
                            };
                            let key = series_key(&p.attributes);
                            let recorded =
                                state.step(key, sample, p.time_unix_nano, distribution_delta);
                            let Some(Increment::Distribution { count, sum, .. }) = recorded else {
                                continue;
                            };
                            if count == 0 {
                                continue;
                            }
                            let d = Distribution {
                                count,
                                sum,
                                min: None,
                                max: None,
                                buckets: summary_buckets(count, &quantiles),
                            };
                            emit(
                                &p.attributes,
                                p.time_unix_nano,
                                PointKind::Histogram,
                                sum / count as f64,
                                Some(d),
                                &mut points,
                                &mut rejected,
                            );
                        }
                    }
                    None => rejected.push(format!("metric {name}: no data")),
                }
                for _ in refused..state.refused() {
                    rejected.push(format!(
                        "{name} data point: more cumulative series than \
                         metrics.max_cumulative_series are tracked; send delta temporality \
                         or fewer series"
                    ));
                }
            }
        }
    }
    (points, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    const NOW_MS: i64 = 1_800_000_000_000;

    fn attr(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..KeyValue::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics { metrics, ..ScopeMetrics::default() }],
                ..ResourceMetrics::default()
            }],
        }
    }

    /// A cumulative counter sample taken `seconds` after the series' first.
    fn cumulative_sum(value: i64, start_ns: u64, seconds: u64) -> Metric {
        Metric {
            name: "request_total".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: vec![attr("status", "success")],
                    start_time_unix_nano: start_ns,
                    time_unix_nano: (NOW_MS as u64 - 60_000 + seconds * 1000) * 1_000_000,
                    value: Some(number_data_point::Value::AsInt(value)),
                    ..NumberDataPoint::default()
                }],
                aggregation_temporality: CUMULATIVE,
                is_monotonic: true,
            })),
            ..Metric::default()
        }
    }

    #[test]
    fn cumulative_sums_become_deltas_and_resets_start_over() {
        let started = 1_000;
        let mut state = CumulativeState::new(started, 1_000);
        let mut deltas = Vec::new();
        // Started after the server: counts from zero; then +3; then a reset
        // (new start time) counts its value; then going down is a reset too.
        let samples = [(5, 2_000), (8, 2_000), (2, 9_000), (4, 9_000), (1, 9_000)];
        for (seconds, (value, start)) in samples.into_iter().enumerate() {
            let (points, rejected) = metric_points(
                &request(vec![cumulative_sum(value, start, seconds as u64)]),
                None,
                NOW_MS,
                0,
                &mut state,
            );
            assert!(rejected.is_empty());
            drop(state.take_staged());
            deltas.extend(points.iter().map(|p| p.value));
        }
        assert_eq!(deltas, vec![5.0, 3.0, 2.0, 2.0, 1.0]);
        // A series that started before the server: its first sample is a baseline.
        let mut state = CumulativeState::new(started, 1_000);
        let convert = |state: &mut CumulativeState, value: i64, seconds: u64| {
            let sample = request(vec![cumulative_sum(value, 10, seconds)]);
            metric_points(&sample, None, NOW_MS, 0, state).0
        };
        assert!(convert(&mut state, 100, 0).is_empty());
        drop(state.take_staged());
        // A request that was not committed leaves no trace.
        assert_eq!(convert(&mut state, 103, 1)[0].value, 3.0);
        let staged = state.take_staged();
        state.forget(staged);
        let points = convert(&mut state, 107, 2);
        assert_eq!(points[0].value, 7.0);
        assert_eq!(points[0].key.tags["status"], "success");
    }

    #[test]
    fn explicit_histograms_keep_count_and_sum_exact() {
        let metric = Metric {
            name: "gen_ai.client.operation.duration".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 4,
                    sum: Some(3.5),
                    bucket_counts: vec![1, 2, 1],
                    explicit_bounds: vec![0.5, 1.0],
                    min: Some(0.2),
                    max: Some(1.9),
                    time_unix_nano: (NOW_MS as u64) * 1_000_000,
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: 1,
            })),
            ..Metric::default()
        };
        let mut state = CumulativeState::new(0, 1_000);
        let (points, rejected) = metric_points(&request(vec![metric]), None, NOW_MS, 0, &mut state);
        assert!(rejected.is_empty());
        let d = points[0].distribution.as_ref().unwrap();
        assert_eq!((d.count, d.sum, d.min, d.max), (4, 3.5, Some(0.2), Some(1.9)));
        assert_eq!(d.buckets, vec![(0.2, 1), (0.75, 2), (1.9, 1)]);
    }

    #[test]
    fn bad_names_and_attributes_are_rejected_by_position() {
        let mut bad = cumulative_sum(1, 5, 0);
        bad.name = "9bad".into();
        let mut many = cumulative_sum(1, 5, 0);
        if let Some(metric::Data::Sum(sum)) = &mut many.data {
            sum.data_points[0].attributes = (0..20).map(|i| attr(&format!("a{i}"), "v")).collect();
        }
        let mut state = CumulativeState::new(0, 1_000);
        let (points, rejected) =
            metric_points(&request(vec![bad, many]), None, NOW_MS, 0, &mut state);
        assert!(points.is_empty());
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(rejected[0].contains("9bad"));
        assert!(rejected[1].contains("request_total data point 0"));
    }

    #[test]
    fn exponential_and_summary_buckets() {
        let b = exponential_buckets(0, 1, Some((0, &[2, 1])), None);
        assert_eq!(b[0], (0.0, 1));
        assert!((b[1].0 - 2f64.sqrt()).abs() < 1e-12 && b[1].1 == 2);
        assert_eq!(
            summary_buckets(10, &[(0.5, 1.0), (0.9, 2.0), (1.0, 3.0)]),
            vec![(1.0, 5), (2.0, 4), (3.0, 1)]
        );
    }

    /// Found while writing the OTLP fuzz target: bucket counts summing past u64::MAX overflowed (a panic in
    /// debug builds, a wrapped count in release).
    #[test]
    fn bucket_counts_beyond_u64_saturate() {
        assert_eq!(explicit_buckets(&[], &[u64::MAX, 2], None, None, 0.5), vec![(0.5, u64::MAX)]);
    }

    /// Found while writing the OTLP fuzz target: bounds, min and max are the client's: a midpoint of two
    /// large bounds overflowed to infinity, and infinite or NaN bounds, min
    /// or max went into the metric bins.
    #[test]
    fn histograms_with_values_beyond_f64_are_rejected() {
        let big = explicit_buckets(&[-f64::MAX, f64::MAX], &[0, 1, 0], None, None, 0.0);
        assert_eq!(big[1], (0.0, 1));
        let point = |bounds: Vec<f64>, max: Option<f64>| HistogramDataPoint {
            count: 2,
            sum: Some(3.0),
            bucket_counts: vec![1, 1],
            explicit_bounds: bounds,
            max,
            time_unix_nano: (NOW_MS as u64 - 1_000) * 1_000_000,
            ..Default::default()
        };
        let metric = Metric {
            name: "latency".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![
                    point(vec![f64::INFINITY], None),
                    point(vec![f64::NAN], None),
                    point(vec![1.0], Some(f64::INFINITY)),
                    point(vec![1.0], Some(2.0)),
                ],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        };
        let mut state = CumulativeState::new(0, 1_000);
        let (points, rejected) = metric_points(&request(vec![metric]), None, NOW_MS, 0, &mut state);
        assert_eq!((points.len(), rejected.len()), (1, 3), "{rejected:?}");
        assert!(rejected[0].contains("latency data point 0: bucket bounds"), "{rejected:?}");
    }

    /// Found while writing the OTLP fuzz target: a scale of i32::MIN overflowed `-scale` (a panic in debug
    /// builds, every bucket at 1.0 in release); a scale outside OTLP's range
    /// is rejected, and at scale -10, whose base is beyond f64, buckets have
    /// finite midpoints.
    #[test]
    fn exponential_scale_outside_the_otlp_range_is_rejected() {
        use opentelemetry_proto::tonic::metrics::v1::{
            ExponentialHistogram, ExponentialHistogramDataPoint, exponential_histogram_data_point,
        };
        let point = |scale| ExponentialHistogramDataPoint {
            scale,
            count: 2,
            sum: Some(3.0),
            time_unix_nano: (NOW_MS as u64 - 1_000) * 1_000_000,
            positive: Some(exponential_histogram_data_point::Buckets {
                offset: 0,
                bucket_counts: vec![1, 1],
            }),
            ..Default::default()
        };
        let metric = Metric {
            name: "size".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![point(i32::MIN), point(21), point(20), point(-10)],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        };
        let mut state = CumulativeState::new(0, 1_000);
        let (points, rejected) = metric_points(&request(vec![metric]), None, NOW_MS, 0, &mut state);
        assert_eq!(points.len(), 2);
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(rejected[0].contains("scale -2147483648 is outside -10 to 20"), "{rejected:?}");
        for point in &points {
            let d = point.distribution.as_ref().unwrap();
            assert!(d.buckets.iter().all(|(v, _)| v.is_finite() && *v > 0.0), "{d:?}");
        }
    }
}
