//! `tally serve`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tracing::info;

use crate::config::{Config, Overrides};
use crate::server::{self, App};

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file (see tally.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Data directory [default: ./tally-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage URL: sqlite://PATH, or clickhouse://[USER:PASS@]HOST[:PORT]/DB
    /// for a node of a cluster [default: SQLite in the data dir].
    #[arg(long)]
    storage: Option<String>,
    /// Coordination store of a cluster: postgres://… (with clickhouse://
    /// storage).
    #[arg(long)]
    coordination: Option<String>,
    /// Serve a non-loopback address although no API key exists: anyone who
    /// can reach it reads and writes every project.
    #[arg(long)]
    insecure_no_auth: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides {
        http: args.http,
        grpc: args.grpc,
        data_dir: args.data_dir,
        storage: args.storage,
        coordination: args.coordination,
    };
    let mut config = Config::load(args.config.as_deref(), &env, &overrides)?;
    config.auth.insecure_no_auth |= args.insecure_no_auth;
    serve(config, shutdown_signal(), |_| {}).await
}

/// The addresses a started server listens on (ports chosen for `:0`
/// included).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

/// Runs the server of `config` until `shutdown` resolves: reads the TLS
/// certificate (reloaded on SIGHUP), opens the store, binds both
/// listeners, prints their addresses, calls `ready` with them, serves, and
/// then stops in order (listeners, committer with its final flush).
/// `tally serve` and `tally demo` both run through here.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    let (http_addr, grpc_addr) = (config.http, config.grpc);
    let tls = crate::tls::Tls::load(&config.tls)?;
    crate::listener::reserve_open_files(
        config.server.max_connections + config.server.grpc_max_connections,
    );
    let app = App::start(config).await?;
    let router = app.router()?;
    let retention = app.spawn_retention()?;
    let shipper = app.spawn_shipper();
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr}"))?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {grpc_addr} (OTLP/gRPC)"))?;
    let bound = listener.local_addr()?;
    let grpc_bound = grpc_listener.local_addr()?;
    // In place before the listening lines, so a SIGHUP sent once they are
    // out reloads instead of ending the process.
    #[cfg(unix)]
    let reloader = tls.clone().map(crate::tls::reload_on_hangup).transpose()?;
    let tls_on = tls.is_some();
    info!(http = %bound, grpc = %grpc_bound, tls = tls_on, data_dir = %app.config.data_dir.display(), "tally serving");
    // Tests and scripts read these lines to find ports chosen with :0.
    let (grpc_scheme, http_scheme) = if tls_on { ("grpcs", "https") } else { ("grpc", "http") };
    println!("tally listening on {grpc_scheme}://{grpc_bound}");
    println!("tally listening on {http_scheme}://{bound}");
    ready(Bound { http: bound, grpc: grpc_bound });
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = &app.config.server;
    let upkeep = app.access.spawn_upkeep();
    let mut grpc_limits = limits.grpc_limits()?;
    grpc_limits.tls = tls.as_ref().map(|tls| tls.grpc_acceptor());
    let mut http_limits = limits.http_limits()?;
    http_limits.tls = tls.as_ref().map(|tls| tls.http_acceptor());
    let grpc = tokio::spawn(crate::ingest::otlp_grpc::serve(
        grpc_listener,
        app.ingest()?,
        app.access.clone(),
        grpc_limits,
        limits.grpc_request_timeout()?,
        async {
            let _ = grpc_stopped.await;
        },
    ));
    server::run(listener, router, http_limits, shutdown).await?;
    let _ = stop_grpc.send(());
    if let Ok(Err(err)) = grpc.await {
        tracing::warn!(%err, "OTLP/gRPC server stopped with an error");
    }
    #[cfg(unix)]
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    retention.abort();
    upkeep.abort();
    if let Some(shipper) = shipper {
        shipper.abort();
    }
    app.access.write_last_use();
    app.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    info!("shutting down");
}
