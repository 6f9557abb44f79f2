//! OTLP export requests: decoding from protobuf and from OTLP/JSON
//! (`tally::ingest::otlp_http::decode`), then span, log and metric
//! normalization as the OTLP transports run it; metric points then go into
//! a metric bin and its sketch, as the rollup puts them. Protobuf trace
//! exports are also read in place, as the transports read them: whatever
//! prost decodes must read, with as many spans.
//!
//! Input: the first byte picks the signal (traces, logs, metrics: bits 0-1),
//! whether the body is JSON (bit 2) and whether a project hint is given
//! (bit 3); the rest is the body.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tally::aggregate::metric::Bin;
use tally::ingest::otlp;
use tally::ingest::otlp_http::{Encoding, check_not_snake_case, decode};
use tally::normalize::otlp_metric::{CumulativeState, metric_points};
use tally::normalize::usage_report::NormalizeContext;
use tally::normalize::{AccountingRules, KeyFingerprinter};
use tally::pricing::PriceTable;

/// A fixed clock, so that a crash reproduces (log normalization reads the
/// real one).
const NOW_MS: i64 = 1_700_000_000_000;

fn prices() -> &'static PriceTable {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    PRICES.get_or_init(PriceTable::builtin)
}

fn traces(body: &[u8], encoding: Encoding, hint: Option<&str>) {
    let fingerprinter = KeyFingerprinter::new(b"fuzz");
    let context = NormalizeContext {
        now_ms: NOW_MS,
        rules: AccountingRules::default(),
        prices: prices(),
        fingerprinter: &fingerprinter,
        default_project: "default",
    };
    let in_place = (encoding == Encoding::Protobuf)
        .then(|| otlp::trace_records_in_place(&context, body, hint));
    let Ok(request) = decode::<ExportTraceServiceRequest>(body, encoding, "traces") else {
        return;
    };
    let items = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len());
    let items: usize = items.sum();
    if check_not_snake_case(body, items, encoding).is_err() {
        return;
    }
    let (records, problems) = otlp::trace_records(&context, &request, hint);
    assert_eq!(records.spans.len() + problems.rejected as usize, items);
    assert!(records.calls.len() <= records.spans.len());
    let _ = problems.message();
    if let Some(in_place) = in_place {
        let (records, problems) = in_place.expect("what prost decodes reads in place");
        assert_eq!(records.spans.len() + problems.rejected as usize, items);
        assert!(records.calls.len() <= records.spans.len());
    }
}

fn logs(body: &[u8], encoding: Encoding, hint: Option<&str>) {
    let Ok(request) = decode::<ExportLogsServiceRequest>(body, encoding, "logs") else {
        return;
    };
    let items = request.resource_logs.iter().flat_map(|r| &r.scope_logs);
    let items: usize = items.map(|s| s.log_records.len()).sum();
    if check_not_snake_case(body, items, encoding).is_err() {
        return;
    }
    let (records, problems) = otlp::log_records(&request, hint);
    assert_eq!(records.logs.len() + problems.rejected as usize, items);
    let _ = problems.message();
}

fn metrics(body: &[u8], encoding: Encoding, hint: Option<&str>) {
    let Ok(request) = decode::<ExportMetricsServiceRequest>(body, encoding, "metrics") else {
        return;
    };
    let items = request.resource_metrics.iter().flat_map(|r| &r.scope_metrics);
    let items: usize = items.map(|s| s.metrics.len()).sum();
    if check_not_snake_case(body, items, encoding).is_err() {
        return;
    }
    // Twice, the second time over the first's cumulative samples, as a
    // client re-sending the same cumulative series would; the second is then
    // taken back, as when its commit fails.
    let started_ns = (NOW_MS - 3_600_000) as u64 * 1_000_000;
    let mut state = CumulativeState::new(started_ns, 10_000);
    let oldest = NOW_MS - 30 * 86_400_000;
    for pass in 0..2 {
        let (points, _rejected) = metric_points(&request, hint, NOW_MS, oldest, &mut state);
        // Into one metric bin, as the rollup would (sketch included).
        let mut bin = Bin::default();
        for point in &points {
            assert!(point.value.is_finite(), "value {}", point.value);
            match &point.distribution {
                Some(d) => {
                    let finite = |v: &Option<f64>| v.is_none_or(f64::is_finite);
                    assert!(finite(&d.min) && finite(&d.max), "{d:?}");
                    assert!(d.buckets.iter().all(|(v, _)| v.is_finite()), "{d:?}");
                    bin.merge(&Bin::of_distribution(d, point.value, point.time_ms));
                }
                None => bin.add(point.value, point.time_ms),
            }
        }
        for q in [0.0, 0.5, 0.99, 1.0] {
            let _ = bin.sketch.quantile(q);
        }
        let staged = state.take_staged();
        if pass == 1 {
            state.forget(staged);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let encoding = if flags & 4 == 0 { Encoding::Protobuf } else { Encoding::Json };
    let hint = (flags & 8 != 0).then_some("pk-lf-fuzz");
    match (flags & 3) % 3 {
        0 => traces(body, encoding, hint),
        1 => logs(body, encoding, hint),
        _ => metrics(body, encoding, hint),
    }
});
