//! The demo's HTTP client: sends its traffic to Tally's public endpoints as
//! any gateway or OpenTelemetry exporter would — retrying on 429 and 503
//! after the `Retry-After` the server asks for — and reads answers back.
//! Everything stops as soon as the demo is asked to stop.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;
use tracing::warn;

use super::traffic::Bodies;

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/x-protobuf";
/// Attempts per request before the demo gives up on it.
const ATTEMPTS: u32 = 8;
/// Longest wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why a request was not done.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the demo is stopping")]
    Stopped,
    #[error("{request}: gave up after {ATTEMPTS} attempts; the last: {last}")]
    GaveUp { request: String, last: String },
}

#[derive(Clone)]
pub struct Feed {
    client: reqwest::Client,
    base: String,
    stop: watch::Receiver<bool>,
}

impl Feed {
    pub fn new(base: String, stop: watch::Receiver<bool>) -> anyhow::Result<Feed> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Below the server's idle timeout, so that a pooled connection is
            // never reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            // The demo's server is its own, on this host.
            .no_proxy()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Feed { client, base, stop })
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `wait`, or less if the demo stops meanwhile.
    pub async fn pause(&self, wait: Duration) -> Result<(), FeedError> {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = stop.wait_for(|s| *s) => Err(FeedError::Stopped),
        }
    }

    /// POSTs `body` to `path`, retrying what is worth retrying; returns the
    /// answer's status and body.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), FeedError> {
        self.send(reqwest::Method::POST, path, content_type, body).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), FeedError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            if self.stopping() {
                return Err(FeedError::Stopped);
            }
            let request = self
                .client
                .request(method.clone(), &url)
                .header("content-type", content_type)
                .body(body.clone());
            let mut stop = self.stop.clone();
            let response = tokio::select! {
                response = request.send() => response,
                _ = stop.wait_for(|s| *s) => return Err(FeedError::Stopped),
            };
            let wait = match response {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let answer = response.bytes().await.unwrap_or_default();
                    if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                        return Ok((status, answer));
                    }
                    last = format!("{status}: {}", String::from_utf8_lossy(&answer));
                    retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_WAIT)
                }
                Err(err) => {
                    last = err.to_string();
                    Duration::from_millis(500)
                }
            };
            self.pause(wait).await?;
        }
        Err(FeedError::GaveUp { request: format!("{method} {path}"), last })
    }

    /// Sends a JSON body with `method` and reads the answer as JSON, failing
    /// on anything but a 2xx.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (status, answer) = self.send(method.clone(), path, JSON, bytes).await?;
        let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(reqwest::Method::GET, path, None).await
    }

    /// Sends every body of `bodies` in order (usage reports first) and
    /// checks that the server took them.
    pub async fn deliver(&self, bodies: Bodies) -> Result<(), FeedError> {
        for body in bodies.reports {
            let (status, answer) = self.post("/api/v1/usage", JSON, body.into()).await?;
            check_json("usage reports", status, &answer);
        }
        for body in bodies.traces {
            let (status, answer) = self.post("/v1/traces", PROTOBUF, body.into()).await?;
            check_otlp::<ExportTraceServiceResponse>("spans", status, &answer, |r| {
                r.partial_success.map(|p| (p.rejected_spans, p.error_message))
            });
        }
        for body in bodies.logs {
            let (status, answer) = self.post("/v1/logs", PROTOBUF, body.into()).await?;
            check_otlp::<ExportLogsServiceResponse>("log records", status, &answer, |r| {
                r.partial_success.map(|p| (p.rejected_log_records, p.error_message))
            });
        }
        for body in bodies.metrics {
            let (status, answer) = self.post("/v1/metrics", PROTOBUF, body.into()).await?;
            check_otlp::<ExportMetricsServiceResponse>(
                "metric data points",
                status,
                &answer,
                |r| r.partial_success.map(|p| (p.rejected_data_points, p.error_message)),
            );
        }
        for body in bodies.points {
            let (status, answer) = self.post("/api/v1/points", JSON, body.into()).await?;
            check_json("metric points", status, &answer);
        }
        Ok(())
    }
}

/// Warns when Tally refused some of what the demo sent: the demo's data is
/// meant to be valid, so this points at a bug.
fn check_json(what: &str, status: StatusCode, answer: &[u8]) {
    let value: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    if !status.is_success() {
        warn!(%status, answer = %String::from_utf8_lossy(answer), "{what} refused");
        return;
    }
    if let Some(rejected) = value["rejected"].as_array().filter(|r| !r.is_empty()) {
        warn!(rejected = rejected.len(), first = %rejected[0], "some {what} rejected");
    }
}

fn check_otlp<R: Message + Default>(
    what: &str,
    status: StatusCode,
    answer: &[u8],
    partial: impl Fn(R) -> Option<(i64, String)>,
) {
    if !status.is_success() {
        warn!(%status, answer = %String::from_utf8_lossy(answer), "{what} refused");
        return;
    }
    if let Some((rejected, message)) = R::decode(answer).ok().and_then(partial)
        && rejected > 0
    {
        warn!(rejected, %message, "some {what} rejected");
    }
}
