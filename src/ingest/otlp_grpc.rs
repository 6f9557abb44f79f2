//! OTLP over gRPC (TraceService, LogsService and MetricsService, gzip
//! accepted): the same validation and partial success as over HTTP, with
//! RESOURCE_EXHAUSTED or UNAVAILABLE when the server cannot take more. The
//! gRPC layer hands over each message's bytes; they are decoded with the
//! rest of the request's CPU work, on its lane.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::UsageIngest;
use super::otlp::{self, Failure, Signal};
use crate::access::Principal;
use crate::durability::CommitError;
use crate::error::ApiError;

fn hint(metadata: &MetadataMap, principal: Option<&Principal>) -> Option<String> {
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    otlp::default_project(principal, text("x-langfuse-public-key"), text("authorization"))
}

fn commit_status(err: CommitError) -> Status {
    match err {
        CommitError::Overloaded { .. } => Status::resource_exhausted(err.to_string()),
        CommitError::Backlog { .. } | CommitError::Pending { .. } => {
            Status::unavailable(err.to_string())
        }
        CommitError::Store(_) | CommitError::Stopped => {
            tracing::error!(%err, "commit failed");
            Status::unavailable(
                "the store could not commit this batch; nothing in it was acknowledged, retry later",
            )
        }
    }
}

/// A request that could not be read or normalized, as gRPC says it.
fn request_status(err: ApiError) -> Status {
    if err.status == axum::http::StatusCode::FORBIDDEN {
        Status::permission_denied(err.message)
    } else if err.status == axum::http::StatusCode::TOO_MANY_REQUESTS {
        Status::resource_exhausted(err.message)
    } else if err.status.is_client_error() {
        Status::invalid_argument(err.message)
    } else {
        Status::internal(err.message)
    }
}

/// Messages as bytes: requests are decoded on their lane, and answers come
/// encoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One export method: decode, normalize and commit on a lane, answer.
struct ExportCall<S> {
    ingest: Arc<UsageIngest>,
    signal: PhantomData<fn() -> S>,
}

impl<S: Signal> tonic::server::UnaryService<Bytes> for ExportCall<S> {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = Arc::clone(&self.ingest);
        Box::pin(async move {
            let _permit = ingest.in_flight.try_acquire().map_err(|_| {
                Status::resource_exhausted("too many ingest requests in flight; retry later")
            })?;
            let principal = request.extensions().get::<Principal>().cloned();
            let hint = hint(request.metadata(), principal.as_ref());
            let bytes = request.into_inner();
            let normalize = move |ingest: &UsageIngest| {
                S::protobuf_records(&bytes, ingest, hint.as_deref()).map_err(|e| {
                    ApiError::bad_request(format!("not a valid protobuf {}: {e}", S::NAME))
                })
            };
            let problems =
                otlp::normalize_and_commit(&ingest, S::GRPC_ENDPOINT, principal, normalize)
                    .await
                    .map_err(|failure| match failure {
                    Failure::Commit(err) => commit_status(err),
                    Failure::Request(err) => request_status(err),
                })?;
            Ok(Response::new(Bytes::from(S::response(problems.partial()).encode_to_vec())))
        })
    }
}

/// The gRPC handling of one export method.
async fn export<S: Signal>(
    State(ingest): State<Arc<UsageIngest>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let mut gzip = EnabledCompressionEncodings::default();
    gzip.enable(CompressionEncoding::Gzip);
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .apply_compression_config(gzip, gzip)
        .apply_max_message_size_config(Some(ingest.max_body_bytes), None);
    let call = ExportCall::<S> { ingest, signal: PhantomData };
    grpc.unary(call, request).await.map(axum::body::Body::new)
}

/// Any other method.
async fn unimplemented(request: axum::extract::Request) -> axum::response::Response {
    Status::unimplemented(format!("{} is not a method this server has", request.uri().path()))
        .into_http()
}

/// Serves OTLP/gRPC on `listener` under `limits` until `shutdown` resolves;
/// a call taking longer than `request_timeout` (receiving the request
/// included) ends with DEADLINE_EXCEEDED.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<UsageIngest>,
    access: Arc<crate::access::Access>,
    limits: crate::listener::Limits,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .route(ExportTraceServiceRequest::GRPC_PATH, post(export::<ExportTraceServiceRequest>))
        .route(ExportLogsServiceRequest::GRPC_PATH, post(export::<ExportLogsServiceRequest>))
        .route(ExportMetricsServiceRequest::GRPC_PATH, post(export::<ExportMetricsServiceRequest>))
        .fallback(unimplemented)
        .with_state(ingest)
        .layer(axum::middleware::from_fn_with_state(access, crate::access::guard::guard))
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
