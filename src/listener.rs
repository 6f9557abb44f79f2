//! Serving a listener under limits, for both listeners (HTTP and OTLP/gRPC):
//! a cap on open connections, TLS when configured, deadlines for the
//! handshake, request heads and bodies, an idle timeout, HTTP/2 keep-alive,
//! and a graceful stop.
//!
//! A client that connects and then sends slowly, or nothing at all, holds a
//! connection for a bounded time, and all such clients together hold at most
//! `max_connections`: past the cap, new connections wait in the listen
//! backlog, so the process never runs out of file descriptors and the
//! clients already connected keep being served.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::time::parse_duration;

/// Limits on the connections of both listeners (`[server]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Most HTTP connections open at once; further clients wait in the
    /// listen backlog until one closes. With `grpc_max_connections` it must
    /// stay below the process's open-file limit (`ulimit -n`): at start the
    /// server raises its soft limit as far as the hard one allows, and warns
    /// if the two caps still do not fit.
    pub max_connections: usize,
    /// Time allowed for an HTTP/1 request head (request line and headers),
    /// and for a new HTTP connection's first request; a client slower than
    /// that is disconnected. An HTTP/1 connection waiting for its next
    /// request is also closed after this long.
    pub header_read_timeout: String,
    /// Time allowed for a request body to arrive in full, counted from the
    /// end of its head; a body still arriving then gets 408 and the
    /// connection is closed. Large bodies over slow links need more.
    pub body_read_timeout: String,
    /// An HTTP connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY).
    pub idle_timeout: String,
    /// Most OTLP/gRPC connections open at once; further clients wait in the
    /// listen backlog until one closes.
    pub grpc_max_connections: usize,
    /// An OTLP/gRPC connection with no call in flight for this long is
    /// closed with a GOAWAY (clients reconnect when they next export).
    pub grpc_idle_timeout: String,
    /// How often an OTLP/gRPC connection is pinged (HTTP/2 PING) ...
    pub grpc_keepalive_interval: String,
    /// ... and how long the answer may take before the connection is closed.
    pub grpc_keepalive_timeout: String,
    /// Most calls in flight on one OTLP/gRPC connection (HTTP/2 streams).
    pub grpc_max_concurrent_streams: u32,
    /// Time allowed for one OTLP/gRPC call, receiving the request included;
    /// longer calls end with DEADLINE_EXCEEDED.
    pub grpc_request_timeout: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: "10s".to_owned(),
            body_read_timeout: "60s".to_owned(),
            idle_timeout: "60s".to_owned(),
            grpc_max_connections: 1024,
            grpc_idle_timeout: "5m".to_owned(),
            grpc_keepalive_interval: "30s".to_owned(),
            grpc_keepalive_timeout: "10s".to_owned(),
            grpc_max_concurrent_streams: 100,
            grpc_request_timeout: "60s".to_owned(),
        }
    }
}

/// A positive duration from the config key `server.<key>`.
fn positive(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let invalid = |message: String| ConfigError::Value { key: format!("server.{key}"), message };
    match parse_duration(value) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        Ok(_) => Err(invalid("must be positive".to_owned())),
        Err(message) => Err(invalid(message)),
    }
}

fn cap(key: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 || value > Semaphore::MAX_PERMITS.min(u32::MAX as usize) {
        return Err(ConfigError::Value {
            key: format!("server.{key}"),
            message: format!("must be between 1 and {}", u32::MAX),
        });
    }
    Ok(value)
}

impl ServerConfig {
    /// The limits of the HTTP listener.
    pub fn http_limits(&self) -> Result<Limits, ConfigError> {
        let header_read_timeout = positive("header_read_timeout", &self.header_read_timeout)?;
        Ok(Limits {
            max_connections: cap("max_connections", self.max_connections)?,
            header_read_timeout: Some(header_read_timeout),
            first_request_timeout: header_read_timeout,
            idle_timeout: positive("idle_timeout", &self.idle_timeout)?,
            body_read_timeout: Some(positive("body_read_timeout", &self.body_read_timeout)?),
            close_grace: header_read_timeout,
            http2_only: false,
            http2_keepalive: None,
            max_concurrent_streams: None,
            tls: None,
        })
    }

    /// The limits of the OTLP/gRPC listener (its calls' deadline is
    /// `grpc_request_timeout`, applied by the gRPC service).
    pub fn grpc_limits(&self) -> Result<Limits, ConfigError> {
        let idle_timeout = positive("grpc_idle_timeout", &self.grpc_idle_timeout)?;
        let keepalive_timeout = positive("grpc_keepalive_timeout", &self.grpc_keepalive_timeout)?;
        if self.grpc_max_concurrent_streams == 0 {
            return Err(ConfigError::Value {
                key: "server.grpc_max_concurrent_streams".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(Limits {
            max_connections: cap("grpc_max_connections", self.grpc_max_connections)?,
            header_read_timeout: None,
            first_request_timeout: idle_timeout,
            idle_timeout,
            body_read_timeout: None,
            close_grace: keepalive_timeout,
            http2_only: true,
            http2_keepalive: Some((
                positive("grpc_keepalive_interval", &self.grpc_keepalive_interval)?,
                keepalive_timeout,
            )),
            max_concurrent_streams: Some(self.grpc_max_concurrent_streams),
            tls: None,
        })
    }

    pub fn grpc_request_timeout(&self) -> Result<Duration, ConfigError> {
        positive("grpc_request_timeout", &self.grpc_request_timeout)
    }

    /// Checks every key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http_limits()?;
        self.grpc_limits()?;
        self.grpc_request_timeout()?;
        Ok(())
    }
}

/// Descriptors kept for what is not a client connection: the store, the
/// listeners, webhook deliveries, logs.
const OTHER_FILES: u64 = 256;

/// Makes room for `connections` open connections under the open-file limit:
/// raises the soft limit towards the hard one when it is too low, and warns
/// when even that is not enough (accepting would then fail with "too many
/// open files" before the connection caps are reached).
pub fn reserve_open_files(connections: usize) {
    let needed = connections as u64 + OTHER_FILES;
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let soft = limit.current.unwrap_or(u64::MAX);
        if soft >= needed {
            return;
        }
        let hard = limit.maximum.unwrap_or(u64::MAX);
        let raised = needed.min(hard);
        let current = match setrlimit(Resource::Nofile, Rlimit { current: Some(raised), ..limit }) {
            Ok(()) => raised,
            Err(_) => soft,
        };
        if current < needed {
            warn!(
                open_file_limit = current,
                needed,
                "the open-file limit is below server.max_connections + \
                 server.grpc_max_connections + {OTHER_FILES}; raise it (ulimit -n) or lower the caps"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = needed;
}

/// What one listener allows its connections, parsed from [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; the accept loop waits for a free slot.
    pub max_connections: usize,
    /// HTTP/1 request heads (and the wait for the next one).
    pub header_read_timeout: Option<Duration>,
    /// A new connection with no request yet is closed after this long.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body must arrive in full within this long (408 otherwise).
    pub body_read_timeout: Option<Duration>,
    /// A connection asked to close (idle, or the server stopping) is
    /// dropped once it has had this long to finish and has no request in
    /// flight: a peer that ignores GOAWAY or keeps a head half sent cannot
    /// keep it open.
    pub close_grace: Duration,
    /// Refuse HTTP/1 (gRPC speaks HTTP/2 only).
    pub http2_only: bool,
    /// HTTP/2 PING interval and the time its answer may take.
    pub http2_keepalive: Option<(Duration, Duration)>,
    pub max_concurrent_streams: Option<u32>,
    /// The TLS handshake each connection goes through first, under its own
    /// deadline and while holding its slot under `max_connections`; None
    /// for plain TCP.
    pub tls: Option<crate::tls::Acceptor>,
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then stops accepting and waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let builder = connection_builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection holds a receiver; the server has stopped once the
    // last one is dropped.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut at_cap = false;
    loop {
        if slots.available_permits() == 0 && !at_cap {
            warn!(
                max_connections = limits.max_connections,
                addr = ?listener.local_addr().ok(),
                "connection limit reached; new connections wait until one closes"
            );
        }
        at_cap = slots.available_permits() == 0;
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection failures (reset before accept) need no
                    // pause; running out of descriptors or memory does.
                    if !is_connection_error(&err) {
                        warn!(%err, "accept failed; retrying in 100ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(accept_connection(
            stream,
            peer,
            builder.clone(),
            router.clone(),
            limits.clone(),
            stopping.clone(),
            slot,
        ));
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}

fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(err.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if limits.http2_only {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout);
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new()).max_concurrent_streams(limits.max_concurrent_streams);
    if let Some((interval, timeout)) = limits.http2_keepalive {
        http2.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    builder
}

/// Requests in flight on one connection; the connection is idle at zero.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(counter: &Arc<watch::Sender<usize>>) -> InFlight {
        counter.send_modify(|n| *n += 1);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// One connection, from accept to close; `slot` is its place under the
/// cap, held through the TLS handshake too.
async fn accept_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: Arc<Limits>,
    mut stopping: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let Some(tls) = limits.tls.clone() else {
        return serve_connection(stream, peer, builder, router, limits, stopping, slot).await;
    };
    let stream = tokio::select! {
        accepted = tls.accept(stream) => match accepted {
            Some(stream) => stream,
            None => return,
        },
        // The server is stopping: a handshake in progress is not waited for.
        _ = stopping.changed() => return,
    };
    serve_connection(stream, peer, builder, router, limits, stopping, slot).await
}

/// One connection's requests, until it closes.
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: Arc<Limits>,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (in_flight, mut activity) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let body_read_timeout = limits.body_read_timeout;
    let service = {
        let in_flight = in_flight.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(crate::access::guard::ClientAddr(peer));
            let busy = InFlight::start(&in_flight);
            let router = router.clone();
            async move {
                let response = handle(router, request, body_read_timeout).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut idle_limit = limits.first_request_timeout;
    let mut closing = false;
    loop {
        let idle = *activity.borrow_and_update() == 0;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(%err, "connection ended with an error");
                }
                break;
            }
            // A request started or ended: the idle clock starts again.
            _ = activity.changed() => idle_limit = limits.idle_timeout,
            () = tokio::time::sleep(idle_limit), if idle && !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopping.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(limits.close_grace), if idle && closing => break,
        }
    }
}

/// One request through the router, its body under the read deadline.
async fn handle(
    router: Router,
    request: Request<Incoming>,
    body_read_timeout: Option<Duration>,
) -> Response<Body> {
    let http1 = request.version() < Version::HTTP_2;
    let has_body = !http_body::Body::is_end_stream(request.body());
    let expired = Arc::new(AtomicBool::new(false));
    let read_to_end = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| match has_body {
        true => Body::new(DeadlineBody::new(
            body,
            body_read_timeout,
            expired.clone(),
            read_to_end.clone(),
        )),
        false => Body::new(body),
    });
    let mut response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if expired.load(Ordering::Relaxed) {
        return body_timeout_response(body_read_timeout.unwrap_or_default(), http1);
    }
    // hyper closes an HTTP/1 connection whose request body was not read to
    // its end (a 413, a request refused before its body was read) once the
    // response is written, without saying so: a client would send its next
    // request on a connection being closed, and see it fail.
    if http1 && has_body && !read_to_end.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 408, and the connection closed: the rest of the body is never read.
fn body_timeout_response(limit: Duration, http1: bool) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {}s (server.body_read_timeout)",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    // HTTP/2 has no Connection header; the unread stream is reset instead.
    if http1 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The error a request body ends with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once `limit` (if any) has passed since the
/// request head, however steadily its bytes trickle in, and tells whether
/// it was read to its end.
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
    read_to_end: Arc<AtomicBool>,
    ended: bool,
}

impl DeadlineBody {
    fn new(
        inner: Incoming,
        limit: Option<Duration>,
        expired: Arc<AtomicBool>,
        read_to_end: Arc<AtomicBool>,
    ) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit: limit.unwrap_or_default(),
            deadline: limit.map(|limit| Box::pin(tokio::time::sleep(limit))),
            expired,
            read_to_end,
            ended: false,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        // Checked before the data, so a steady trickle cannot outrun it.
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.expired.store(true, Ordering::Relaxed);
            this.ended = true;
            return Poll::Ready(Some(Err(BodyTimeout(this.limit).into())));
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.ended = true;
        }
        if this.ended || this.inner.is_end_stream() {
            this.read_to_end.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let config = ServerConfig::default();
        let http = config.http_limits().unwrap();
        assert_eq!(http.header_read_timeout, Some(Duration::from_secs(10)));
        assert_eq!(http.first_request_timeout, Duration::from_secs(10));
        assert_eq!(http.body_read_timeout, Some(Duration::from_secs(60)));
        assert_eq!(http.idle_timeout, Duration::from_secs(60));
        assert!(!http.http2_only);
        let grpc = config.grpc_limits().unwrap();
        assert!(grpc.http2_only);
        assert_eq!(grpc.idle_timeout, Duration::from_secs(300));
        assert_eq!(grpc.http2_keepalive, Some((Duration::from_secs(30), Duration::from_secs(10))));
        assert_eq!(grpc.max_concurrent_streams, Some(100));
        assert_eq!(config.grpc_request_timeout().unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = ServerConfig { header_read_timeout: "0s".into(), ..Default::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server.header_read_timeout") && err.contains("positive"), "{err}");
        let config = ServerConfig { grpc_idle_timeout: "soon".into(), ..Default::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server.grpc_idle_timeout"), "{err}");
        let config = ServerConfig { max_connections: 0, ..Default::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server.max_connections"), "{err}");
        let config = ServerConfig { grpc_max_concurrent_streams: 0, ..Default::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server.grpc_max_concurrent_streams"), "{err}");
    }
}
