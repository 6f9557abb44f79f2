//! TLS on both listeners, with certificates made here by a test CA: the
//! OpenTelemetry Python SDK exports over https (OTLP/HTTP) and over gRPC
//! with TLS, trusting that CA the way the README says; the API answers
//! curl over https; ALPN offers what each listener speaks; a plain HTTP
//! request to the TLS port is told to use https; SIGHUP puts a new
//! certificate in front of new connections while open ones keep working; a
//! handshake that never finishes is dropped within `tls.handshake_timeout`
//! and holds a connection slot until then; Tally's CLI reaches it over
//! https and its budget alerts reach an https webhook. Needs the packages of
//! tests/python/requirements.txt in `.venv` and curl (scripts/test installs
//! them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A certificate authority of the test's own.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM,
    /// key PEM).
    fn server_cert(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "tally test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files a TLS server is configured with, and the CA file clients trust.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn write(dir: &Path, ca: &TestCa) -> Files {
        let files = Files {
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
            ca: dir.join("ca.pem"),
        };
        files.install(ca);
        std::fs::write(&files.ca, ca.pem()).unwrap();
        files
    }

    /// Puts a new certificate of `ca` (and its key) at the server's paths.
    fn install(&self, ca: &TestCa) -> CertificateDer<'static> {
        let (cert, key) = ca.server_cert();
        std::fs::write(&self.cert, &cert).unwrap();
        std::fs::write(&self.key, key).unwrap();
        CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()
    }

    /// A config file turning TLS on with these files, plus `extra` TOML.
    fn config(&self, dir: &Path, extra: &str) -> String {
        common::write_file(
            dir,
            "tally.toml",
            &format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
                self.cert.display().to_string(),
                self.key.display().to_string()
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// A TLS client of our own: chosen roots and ALPN, one connection held
// ---------------------------------------------------------------------------

fn client_config(ca: &TestCa, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// `host:port` of a base URL.
fn authority(url: &str) -> &str {
    url.split_once("://").map(|(_, rest)| rest).unwrap_or(url).trim_end_matches('/')
}

async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The certificate the server presented on `stream`.
fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("a server certificate")[0].clone().into_owned()
}

/// One HTTP/1.1 connection over TLS, kept open across requests.
struct HeldConnection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    peer: CertificateDer<'static>,
}

impl HeldConnection {
    async fn open(addr: &str, ca: &TestCa) -> std::io::Result<HeldConnection> {
        let stream = connect(addr, client_config(ca, &[b"http/1.1"])).await?;
        let peer = peer_cert(&stream);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Ok(HeldConnection { sender, peer })
    }

    /// GET `path` on this connection: (status, body).
    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = hyper::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            self.sender.ready().await.expect("connection still open");
            self.sender.send_request(request).await.expect("response")
        })
        .await
        .expect("an answer within 10 s");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

// ---------------------------------------------------------------------------
// Real clients: the OpenTelemetry Python SDK and curl
// ---------------------------------------------------------------------------

/// Runs tests/python/emit_otel.py trusting `ca` through
/// OTEL_EXPORTER_OTLP_CERTIFICATE; returns the trace id it printed.
fn emit_otel(protocol: &str, endpoint: &str, session: &str, ca: &Path) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_otel.py");
    let output = Command::new(common::python())
        .arg(script)
        .args([protocol, endpoint, session])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_INSECURE")
        // `requests` lets these win over the exporter's certificate.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)
        // Failed exports are retried for a long while by default.
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "emit_otel.py {protocol} failed:\n{stdout}\n{stderr}");
    let trace_id = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert_eq!(trace_id.len(), 32, "emit_otel.py printed no trace id:\n{stdout}\n{stderr}");
    trace_id
}

/// GET `url` with curl trusting `ca` (as the README shows); the JSON answer.
fn curl_json(ca: &Path, url: &str) -> Value {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl (Debian package curl; scripts/test installs it)");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl {url} failed: {}{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("curl {url}: not JSON ({e}): {body}"))
}

/// Checks the run emit_otel.py sent, read back over https.
fn check_run(ca: &Path, base: &str, trace_id: &str) {
    let detail = curl_json(ca, &format!("{base}/api/v1/traces/{trace_id}"));
    let roots = detail["spans"].as_array().expect("spans");
    assert_eq!(roots.len(), 1, "{detail}");
    assert_eq!(roots[0]["name"], "invoke_agent support", "{detail}");
    assert_eq!(roots[0]["service"], "support-agent", "{detail}");
    assert_eq!(roots[0]["children"].as_array().unwrap().len(), 3, "{detail}");
    assert_eq!(roots[0]["subtree"]["input_tokens"], 1264, "{detail}");
    let logs = detail["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 1, "{detail}");
    assert_eq!(logs[0]["body"], "model answered");
}

/// Sends SIGHUP to the server.
fn hang_up(server: &TestServer) {
    let status =
        Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_over_https_and_grpcs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Tally test CA");
    let files = Files::write(dir.path(), &ca);
    let config = files.config(dir.path(), "");
    let data = dir.path().join("data");
    let server = TestServer::start_with_args(&data, &[], &["--config", &config]);
    let base = server.url().to_owned();
    let grpc = server.grpc_url().to_owned();
    assert!(base.starts_with("https://"), "{base}");
    assert!(grpc.starts_with("https://"), "grpcs:// printed for {grpc}");

    let over_https = emit_otel("http", &base, "session-https", &files.ca);
    check_run(&files.ca, &base, &over_https);
    let over_grpcs = emit_otel("grpc", &grpc, "session-grpcs", &files.ca);
    check_run(&files.ca, &base, &over_grpcs);
    let usage = curl_json(&files.ca, &format!("{base}/api/v1/usage/summary?since=1h"));
    assert_eq!(usage["total"]["requests"], 4, "{usage}");
    // Tally's own CLI, trusting the CA through SSL_CERT_FILE.
    let ca_file = files.ca.display().to_string();
    let cli = common::run_tally(
        &["usage", "--server", &base, "--since", "1h", "--format", "json"],
        &[("SSL_CERT_FILE", &ca_file)],
    )
    .await;
    assert!(cli.success, "tally usage over https failed: {}", cli.stderr);
    let usage: Value = serde_json::from_str(&cli.stdout).unwrap();
    assert_eq!(usage["total"]["requests"], 4, "{usage}");
    let untrusted = common::run_tally(&["usage", "--server", &base], &[]).await;
    assert!(!untrusted.success, "tally usage trusted a CA it was not given");

    // ALPN: HTTP/2 and HTTP/1.1 on the HTTP listener, HTTP/2 only on gRPC.
    let http_addr = authority(&base);
    let grpc_addr = authority(&grpc);
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let stream = connect(http_addr, client_config(&ca, both)).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let stream = connect(http_addr, client_config(&ca, &[b"http/1.1"])).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let stream = connect(grpc_addr, client_config(&ca, both)).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let refused = connect(grpc_addr, client_config(&ca, &[b"http/1.1"])).await;
    assert!(refused.is_err(), "the gRPC listener agreed to HTTP/1.1");

    // A client that does not trust the CA is refused by its own check.
    let stranger = TestCa::new("another CA");
    assert!(connect(http_addr, client_config(&stranger, both)).await.is_err());

    // Plain HTTP to the TLS port: told to use https, not served.
    let plain = common::get(&format!("http://{http_addr}"), "/api/v1/usage/summary", &[]).await;
    plain.assert_error(400, Some("tls_required"));
    assert!(plain.json["error"]["message"].as_str().unwrap().contains("https://"), "{plain:?}");
    // Plain HTTP/2 (a gRPC client without TLS) on the gRPC port: closed.
    let mut tcp = TcpStream::connect(grpc_addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gRPC port kept a plain HTTP/2 connection open");
    assert!(answer.is_empty() || answer[0] == 0x15, "not a TLS alert: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = TestCa::new("first CA");
    let files = Files::write(dir.path(), &first_ca);
    let first_cert = CertificateDer::from_pem_file(&files.cert).unwrap();
    let config = files.config(dir.path(), "");
    let data = dir.path().join("data");
    let server = TestServer::start_with_args(&data, &[], &["--config", &config]);
    let addr = authority(server.url()).to_owned();

    let mut held = HeldConnection::open(&addr, &first_ca).await.unwrap();
    assert_eq!(held.peer, first_cert);
    assert_eq!(held.get("/healthz").await.0, 200);

    // A certificate from another CA at the same paths, then SIGHUP.
    let second_ca = TestCa::new("second CA");
    let second_cert = files.install(&second_ca);
    hang_up(&server);
    let started = Instant::now();
    let fresh = loop {
        match HeldConnection::open(&addr, &second_ca).await {
            Ok(connection) => break connection,
            Err(err) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no connection got the new certificate within 10 s of SIGHUP: {err}\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(fresh.peer, second_cert);
    assert!(
        HeldConnection::open(&addr, &first_ca).await.is_err(),
        "a new connection was still given the first certificate"
    );
    // The connection opened before the reload is still served.
    let (status, body) = held.get("/api/v1/usage/summary?since=1h").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.get("/healthz").await.0, 200);

    // A broken file on SIGHUP: logged, and the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    hang_up(&server);
    let started = Instant::now();
    while !server.log().contains("tls certificate not reloaded") {
        assert!(started.elapsed() < Duration::from_secs(10), "no error logged:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.log().contains("tls.cert_file"), "{}", server.log());
    let mut after = HeldConnection::open(&addr, &second_ca).await.unwrap();
    assert_eq!(after.peer, second_cert);
    assert_eq!(after.get("/healthz").await.0, 200);
    assert_eq!(held.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_dropped_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Tally test CA");
    let files = Files::write(dir.path(), &ca);
    let deadline = Duration::from_secs(1);
    let config = files.config(
        dir.path(),
        "handshake_timeout = \"1s\"\n[server]\nmax_connections = 2\ngrpc_max_connections = 1\n",
    );
    let data = dir.path().join("data");
    let server = TestServer::start_with_args(&data, &[], &["--config", &config]);
    let addr = authority(server.url()).to_owned();
    let grpc_addr = authority(server.grpc_url()).to_owned();

    // Both HTTP slots taken: one client says nothing, one sends the start
    // of a TLS record and stops; the gRPC slot likewise.
    let started = Instant::now();
    let silent = TcpStream::connect(&addr).await.unwrap();
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let grpc_silent = TcpStream::connect(&grpc_addr).await.unwrap();
    // A real client behind them waits for a slot, then is served.
    let waiting = tokio::spawn({
        let addr = addr.clone();
        let ca_config = client_config(&ca, &[b"http/1.1"]);
        async move {
            let stream = connect(&addr, ca_config).await.expect("served once a slot frees");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            let request = hyper::Request::get("/healthz")
                .header("host", "127.0.0.1")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let status = sender.send_request(request).await.unwrap().status().as_u16();
            (status, Instant::now())
        }
    });

    for (name, mut stream) in
        [("silent", silent), ("partial", partial), ("silent gRPC", grpc_silent)]
    {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the {name} handshake was still open after 10 s"));
        let waited = started.elapsed();
        assert!(
            waited >= deadline - Duration::from_millis(100),
            "the {name} handshake was dropped after {waited:?}, before the deadline ({closed:?})"
        );
        assert!(waited < deadline * 5, "the {name} handshake was dropped after {waited:?}");
    }
    let (status, served_at) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting client was served within 10 s")
        .unwrap();
    assert_eq!(status, 200);
    // It could only be served once a half-open handshake gave its slot up.
    assert!(served_at - started >= deadline - Duration::from_millis(100));
}

#[tokio::test]
async fn a_bad_tls_config_stops_the_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let ca = TestCa::new("Tally test CA");
    let files = Files::write(dir.path(), &ca);
    let serve = |config: String| async move {
        let args = [
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--config",
            &config,
        ];
        common::run_tally(&args, &[]).await
    };

    let only_cert = common::write_file(
        dir.path(),
        "only-cert.toml",
        &format!("[tls]\ncert_file = {:?}\n", files.cert.display().to_string()),
    );
    let out = serve(only_cert).await;
    assert!(!out.success && out.stderr.contains("tls.key_file"), "{}", out.stderr);

    std::fs::remove_file(&files.key).unwrap();
    let out = serve(files.config(dir.path(), "")).await;
    assert!(!out.success, "started without its key file");
    assert!(
        out.stderr.contains("tls.key_file") && out.stderr.contains("cannot read"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&files.key.display().to_string()), "{}", out.stderr);
}

/// An https receiver of budget alerts with a certificate of `ca`: reads
/// each request whole, answers 200 and counts it.
async fn https_receiver(ca: &TestCa) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let (cert, key) = ca.server_cert();
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_alerts_reach_an_https_webhook_the_server_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("receiver CA");
    let ca_file = common::write_file(dir.path(), "receiver-ca.pem", &ca.pem());
    let (url, hits) = https_receiver(&ca).await;
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("TALLY_ALERTS__ALLOW_PRIVATE_TARGETS", "true"), ("SSL_CERT_FILE", &ca_file)],
    );
    let base = server.url();
    let spec = serde_json::json!({"name": "over-tls", "scope": {"user": "tls-user"},
        "metric": "tokens", "limit": 10, "period": "day", "thresholds": [100],
        "webhooks": [url], "secret": "test-secret-0123456789"});
    let created = common::post_json_to(base, "/api/v1/budgets", &spec).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let call = serde_json::json!({"model": "gpt-4o", "user": "tls-user", "input_tokens": 20});
    common::ingest(base, &serde_json::json!([call])).await;

    let started = Instant::now();
    loop {
        let alerts = common::get_ok(base, "/api/v1/alerts", &[("budget_id", &id)]).await;
        let delivery = &alerts["alerts"][0]["deliveries"][0];
        if delivery["status"] == "delivered" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the alert was not delivered over https: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
