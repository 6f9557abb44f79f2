//! `tally bench points`: tagged metric points posted as JSON arrays, or as
//! OTLP/HTTP protobuf gauges, from concurrent clients; prints points/s (each
//! batch durably acknowledged), batch latency, the server's peak RSS, and
//! the latency of a 24 h p99 query across 1,000 series.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::bail;
use clap::{Args, ValueEnum};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::bench::{Rng, Server, Target, percentile, post_until_taken};

#[derive(Args)]
pub struct PointsArgs {
    #[command(flatten)]
    target: Target,
    /// Points to send in all.
    #[arg(long, default_value_t = 5_000_000)]
    points: u64,
    /// Points per request.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Queries timed after the load.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Point times are spread over this many seconds before now (live
    /// traffic: a minute; a backfill: a day).
    #[arg(long, default_value_t = 60)]
    spread_s: u64,
    /// Before timing `/metrics`, send usage reports for this many distinct
    /// LLM series (models), so the exposition has that many of each family.
    #[arg(long, default_value_t = 10_000)]
    llm_series: u64,
    /// How points are sent: JSON to /api/v1/points, or OTLP/HTTP protobuf
    /// gauges to /v1/metrics.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Build this many full batches before the clock starts and send them in
    /// turn, so that building bodies takes no CPU from the server while it
    /// is timed (0: build each batch as it is sent).
    #[arg(long, default_value_t = 0)]
    prebuilt: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Otlp,
}

/// One point of batch `batch`: value, worker, shard, time (unix ms).
fn point_values(rng: &mut Rng, now: i64, spread_ms: u64) -> (f64, u64, u64, i64) {
    let value = rng.below(2000) as f64 + rng.below(1000) as f64 / 1000.0;
    let (worker, shard) = (rng.below(100), rng.below(10));
    (value, worker, shard, now - rng.below(spread_ms.max(1)) as i64)
}

fn batch_rng(batch: u64) -> Rng {
    Rng(0x9E37_79B9_7F4A_7C15 ^ (batch + 1).wrapping_mul(0x2545_F491_4F6C_DD1D))
}

fn text_attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..KeyValue::default()
    }
}

/// The same points as `batch_body`, as one OTLP gauge of a `bench` service.
pub(super) fn otlp_body(batch: u64, size: u64, now: i64, spread_ms: u64) -> Vec<u8> {
    let mut rng = batch_rng(batch);
    let data_points = (0..size)
        .map(|_| {
            let (value, worker, shard, time) = point_values(&mut rng, now, spread_ms);
            NumberDataPoint {
                attributes: vec![
                    text_attribute("worker", format!("w{worker}")),
                    text_attribute("shard", format!("s{shard}")),
                ],
                time_unix_nano: time as u64 * 1_000_000,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..NumberDataPoint::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text_attribute("service.name", "bench".into())],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "op_time".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec()
}

/// 1,000 series of one name (100 workers × 10 shards); times spread over
/// `spread_ms` before `now`.
pub(super) fn batch_body(batch: u64, size: u64, now: i64, spread_ms: u64) -> String {
    let mut rng = batch_rng(batch);
    let mut out = String::with_capacity(size as usize * 110);
    out.push('[');
    for i in 0..size {
        if i > 0 {
            out.push(',');
        }
        let (value, worker, shard, time) = point_values(&mut rng, now, spread_ms);
        let _ = write!(
            out,
            r#"{{"name":"op_time","value":{value},"tags":{{"worker":"w{worker}","shard":"s{shard}"}},"timestamp":{time}}}"#,
        );
    }
    out.push(']');
    out
}

pub async fn points(args: PointsArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.target).await?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency as usize).build()?;
    let now = crate::time::now_ms();
    let batches = args.points.div_ceil(args.batch);
    let (path, content_type, form) = match args.format {
        Format::Json => ("/api/v1/points", "application/json", "JSON batches"),
        Format::Otlp => ("/v1/metrics", "application/x-protobuf", "OTLP/HTTP protobuf gauges"),
    };
    println!(
        "points: {} points in {form} of {}, {} concurrent clients, 1,000 series, times over the last {} s",
        args.points, args.batch, args.concurrency, args.spread_s
    );
    let body_of = move |n: u64, size: u64| match args.format {
        Format::Json => batch_body(n, size, now, args.spread_s * 1000).into_bytes(),
        Format::Otlp => otlp_body(n, size, now, args.spread_s * 1000),
    };
    let prebuilt: Arc<Vec<axum::body::Bytes>> =
        Arc::new((0..args.prebuilt).map(|n| body_of(n, args.batch).into()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, sent) = (client.clone(), next.clone(), sent.clone());
        let endpoint = format!("{}{path}", server.url);
        let (total, batch, format, prebuilt) =
            (args.points, args.batch, args.format, prebuilt.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= batches {
                    break;
                }
                let size = batch.min(total - n * batch);
                let body: axum::body::Bytes = match prebuilt.len() as u64 {
                    built if built > 0 && size == batch => prebuilt[(n % built) as usize].clone(),
                    _ => body_of(n, size).into(),
                };
                let t0 = Instant::now();
                let (status, answer) =
                    post_until_taken(&client, &endpoint, content_type, body).await?;
                let taken = match format {
                    Format::Json => serde_json::from_slice::<serde_json::Value>(&answer)
                        .is_ok_and(|a| a["accepted"].as_u64() == Some(size)),
                    Format::Otlp => {
                        ExportMetricsServiceResponse::decode(&answer[..]).is_ok_and(|a| {
                            a.partial_success.is_none_or(|p| p.rejected_data_points == 0)
                        })
                    }
                };
                if status != 200 || !taken {
                    bail!("batch {n}: {status} {}", String::from_utf8_lossy(&answer));
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                sent.fetch_add(size, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    latencies.sort_by(f64::total_cmp);
    println!("  throughput      {:.0} points/s (durably acknowledged)", sent as f64 / seconds);
    println!(
        "  batch latency   p50 {:.1} ms  p99 {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    // All 1,000 series merged into 100 groups (by worker), hourly p99: right
    // after the load (its last bins still open in memory, flushes under way),
    // then once they are flushed to the store.
    let query = format!(
        "{}/api/v1/metrics/query?name=op_time&since=24h&step=1h&agg=p99&group_by=worker",
        server.url
    );
    for moment in ["right after the load", "after a flush"] {
        if moment == "after a flush" {
            client.post(format!("{}/api/v1/admin/flush", server.url)).send().await?;
        }
        let mut times = Vec::new();
        for _ in 0..args.queries {
            let t0 = Instant::now();
            let body: serde_json::Value = client.get(&query).send().await?.json().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            if body["groups"].as_array().map(Vec::len) != Some(100) {
                bail!("query {query}: expected 100 groups, got {}", body["groups"]);
            }
        }
        // The first query reads every step from the store; later ones reuse
        // the steps no flush has changed since.
        let first = times[0];
        times.sort_by(f64::total_cmp);
        println!(
            "  24 h p99 by hour over 1,000 series (grouped by worker), {moment}: first {first:.2} ms, p50 {:.2} ms  p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    // LLM series for the exposition: one report per model, 1,000 a request.
    for first in (0..args.llm_series).step_by(1000) {
        let reports: Vec<serde_json::Value> = (first..(first + 1000).min(args.llm_series))
            .map(|i| {
                serde_json::json!({"model": format!("bench-model-{i}"), "input_tokens": 10,
                    "output_tokens": 2, "duration_ms": 800, "ttft_ms": 90, "user": format!("u{}", i % 500)})
            })
            .collect();
        let response =
            client.post(format!("{}/api/v1/usage", server.url)).json(&reports).send().await?;
        if !response.status().is_success() {
            bail!("usage reports for /metrics: {}", response.status());
        }
    }
    let mut renders = Vec::new();
    let mut lines = 0;
    for _ in 0..10 {
        let t0 = Instant::now();
        let text = client.get(format!("{}/metrics", server.url)).send().await?.text().await?;
        renders.push(t0.elapsed().as_secs_f64() * 1000.0);
        lines = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    renders.sort_by(f64::total_cmp);
    println!(
        "  /metrics        {} LLM series, {lines} sample lines: p50 {:.1} ms  max {:.1} ms",
        args.llm_series,
        percentile(&renders, 0.5),
        renders.last().copied().unwrap_or(f64::NAN)
    );
    match server.peak_rss_mib() {
        Some(mib) => println!("  server peak RSS {mib:.0} MiB"),
        None => println!("  server peak RSS unknown (external server)"),
    }
    Ok(())
}
