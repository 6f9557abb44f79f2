//! OTLP over gRPC (TraceService and LogsService, gzip accepted): the same
//! validation and partial success as over HTTP, with RESOURCE_EXHAUSTED or
//! UNAVAILABLE when the server cannot take more.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::UsageIngest;
use super::otlp::{self, Failure, Problems};
use crate::durability::{CommitError, Records};
use crate::normalize::otlp_metric::Staged;

/// Both services share the ingest state.
#[derive(Clone)]
struct Otlp {
    ingest: Arc<UsageIngest>,
}

fn hint(metadata: &MetadataMap) -> Option<String> {
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    otlp::project_hint(text("x-langfuse-public-key"), text("authorization"))
}

fn commit_status(err: CommitError) -> Status {
    match err {
        CommitError::Overloaded { .. } => Status::resource_exhausted(err.to_string()),
        CommitError::Store(_) | CommitError::Stopped => {
            tracing::error!(%err, "commit failed");
            Status::unavailable(
                "the store could not commit this batch; nothing in it was acknowledged, retry later",
            )
        }
    }
}

impl Otlp {
    /// Normalizes and commits one export ([`otlp::normalize_and_commit`]).
    async fn ingest(
        &self,
        endpoint: &'static str,
        normalize: impl FnOnce(&UsageIngest) -> (Records, Problems, Option<Staged>) + Send + 'static,
    ) -> Result<Problems, Status> {
        let normalize = move |ingest: &UsageIngest| Ok(normalize(ingest));
        otlp::normalize_and_commit(&self.ingest, endpoint, normalize).await.map_err(|failure| {
            match failure {
                Failure::Commit(err) => commit_status(err),
                Failure::Request(err) => Status::internal(err.message),
            }
        })
    }

    fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.ingest.in_flight.try_acquire().map_err(|_| {
            Status::resource_exhausted("too many ingest requests in flight; retry later")
        })
    }
}

fn partial(problems: &Problems) -> Option<(i64, String)> {
    (!problems.is_empty()).then(|| (problems.rejected, problems.message()))
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _permit = self.permit()?;
        let hint = hint(request.metadata());
        let mut request = request.into_inner();
        let problems = self
            .ingest("otlp_grpc_traces", move |ingest| {
                let (records, problems) =
                    otlp::trace_records(&ingest.context(), &mut request, hint.as_deref());
                (records, problems, None)
            })
            .await?;
        let partial_success = partial(&problems).map(|(rejected_spans, error_message)| {
            ExportTracePartialSuccess { rejected_spans, error_message }
        });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let _permit = self.permit()?;
        let hint = hint(request.metadata());
        let request = request.into_inner();
        let problems = self
            .ingest("otlp_grpc_logs", move |_| {
                let (records, problems) = otlp::log_records(&request, hint.as_deref());
                (records, problems, None)
            })
            .await?;
        let partial_success = partial(&problems).map(|(rejected_log_records, error_message)| {
            ExportLogsPartialSuccess { rejected_log_records, error_message }
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let _permit = self.permit()?;
        let hint = hint(request.metadata());
        let request = request.into_inner();
        let problems = self
            .ingest("otlp_grpc_metrics", move |ingest| {
                let (records, problems, staged) =
                    otlp::metric_records(ingest, &request, hint.as_deref());
                (records, problems, Some(staged))
            })
            .await?;
        let partial_success = partial(&problems).map(|(rejected_data_points, error_message)| {
            ExportMetricsPartialSuccess { rejected_data_points, error_message }
        });
        Ok(Response::new(ExportMetricsServiceResponse { partial_success }))
    }
}

/// Serves OTLP/gRPC on `listener` under `limits` until `shutdown` resolves;
/// a call taking longer than `request_timeout` (receiving the request
/// included) ends with DEADLINE_EXCEEDED.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<UsageIngest>,
    limits: crate::listener::Limits,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limit = ingest.max_body_bytes;
    let otlp = Otlp { ingest };
    let traces = TraceServiceServer::new(otlp.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let metrics = MetricsServiceServer::new(otlp.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(otlp)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let router = tonic::service::Routes::new(traces)
        .add_service(logs)
        .add_service(metrics)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(request_timeout, deadline));
    crate::listener::serve(listener, router, limits, shutdown).await
}

/// Ends a call that outlives `limit` with DEADLINE_EXCEEDED.
async fn deadline(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Status::deadline_exceeded(format!(
            "the call took longer than {}s (server.grpc_request_timeout)",
            limit.as_secs_f64()
        ))
        .into_http(),
    }
}
