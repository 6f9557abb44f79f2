//! TLS for both listeners (HTTP and OTLP/gRPC), with rustls: the `[tls]`
//! config, the certificate chain and key read from PEM files, and the
//! handshake of each accepted connection under a deadline.
//!
//! The certificate in use sits behind one lock shared by both listeners,
//! so `reload` (on SIGHUP) swaps it for every new handshake at once while
//! the connections already open keep the session they have. A file that
//! cannot be read or does not fit its key leaves the previous certificate
//! in use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info};

use crate::config::ConfigError;
use crate::time::parse_duration;

/// TLS on both listeners (`[tls]`): set both files, or neither for plain
/// HTTP and gRPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, its own certificate
    /// first, then any intermediates. Read at start and again on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC). Read at start and again on SIGHUP.
    pub key_file: Option<PathBuf>,
    /// Time a new connection has to complete its TLS handshake; a client
    /// slower than that is disconnected. It holds a connection slot
    /// (`server.max_connections`) meanwhile.
    pub handshake_timeout: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert_file: None, key_file: None, handshake_timeout: "10s".to_owned() }
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Value { key: format!("tls.{key}"), message }
}

impl TlsConfig {
    /// Both files or neither, and a positive handshake deadline.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.handshake_timeout()?;
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                Err(invalid("key_file", "must be set with tls.cert_file".to_owned()))
            }
            (None, Some(_)) => {
                Err(invalid("cert_file", "must be set with tls.key_file".to_owned()))
            }
            _ => Ok(()),
        }
    }

    fn handshake_timeout(&self) -> Result<Duration, ConfigError> {
        match parse_duration(&self.handshake_timeout) {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
            Ok(_) => Err(invalid("handshake_timeout", "must be positive".to_owned())),
            Err(message) => Err(invalid("handshake_timeout", message)),
        }
    }
}

/// The certificate new handshakes are given, on both listeners.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// TLS as configured: the files, the certificate in use and one rustls
/// server config per listener (they differ in ALPN only).
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    http: Arc<rustls::ServerConfig>,
    grpc: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl Tls {
    /// Reads the files of `config`; None when TLS is off. Errors name the
    /// config key of the file at fault.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Tls>>, ConfigError> {
        config.validate()?;
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = read_certified_key(cert_file, key_file, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let server_config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, ConfigError> {
            let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid("cert_file", format!("no TLS version to offer: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(server))
        };
        Ok(Some(Arc::new(Tls {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            http: server_config(&[b"h2", b"http/1.1"])?,
            grpc: server_config(&[b"h2"])?,
            provider,
            current,
            handshake_timeout: config.handshake_timeout()?,
        })))
    }

    /// Reads both files again and, when they hold a certificate and its
    /// key, gives it to every handshake from now on; otherwise the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let certified = read_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    /// The HTTP listener's handshake: ALPN `h2` and `http/1.1`, and a plain
    /// HTTP request answered with a 400 that says to use https.
    pub fn http_acceptor(&self) -> Acceptor {
        Acceptor {
            inner: self.http.clone().into(),
            handshake_timeout: self.handshake_timeout,
            answer_plain_http: true,
        }
    }

    /// The OTLP/gRPC listener's handshake: ALPN `h2`.
    pub fn grpc_acceptor(&self) -> Acceptor {
        Acceptor {
            inner: self.grpc.clone().into(),
            handshake_timeout: self.handshake_timeout,
            answer_plain_http: false,
        }
    }
}

/// Reloads `tls` each time the process gets SIGHUP, for as long as the
/// returned task runs. The handler is in place when this returns, so a
/// SIGHUP sent after it can no longer end the process.
#[cfg(unix)]
pub fn reload_on_hangup(tls: Arc<Tls>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = tls.clone();
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(())) => {
                    info!(cert_file = %tls.cert_file.display(), "tls certificate reloaded")
                }
                Ok(Err(err)) => {
                    error!(%err, "tls certificate not reloaded; the previous one stays in use")
                }
                Err(err) => error!(%err, "tls certificate reload failed"),
            }
        }
    }))
}

/// The certificate chain of `cert_file` with the key of `key_file`.
fn read_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ConfigError> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
    };
    let not_pem = |key: &str, path: &Path, err: pem::Error| {
        invalid(key, format!("{}: not a PEM file: {err}", path.display()))
    };
    let chain = CertificateDer::pem_slice_iter(&read("cert_file", cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem("cert_file", cert_file, e))?;
    if chain.is_empty() {
        return Err(invalid(
            "cert_file",
            format!("{}: no CERTIFICATE block in it", cert_file.display()),
        ));
    }
    let key = match PrivateKeyDer::from_pem_slice(&read("key_file", key_file)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(invalid(
                "key_file",
                format!("{}: no PRIVATE KEY block in it", key_file.display()),
            ));
        }
        Err(err) => return Err(not_pem("key_file", key_file, err)),
    };
    CertifiedKey::from_der(chain, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => invalid(
            "key_file",
            format!(
                "{} is not the key of the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => invalid(
            "cert_file",
            format!("{}: its first certificate cannot be read: {err}", cert_file.display()),
        ),
        other => invalid("key_file", format!("{}: unusable key: {other}", key_file.display())),
    })
}

/// Most bytes of a plain HTTP request read (and dropped) after answering
/// it, so that the answer is not lost to a reset.
const PLAIN_REQUEST_DRAIN: usize = 64 * 1024;

/// One listener's side of the handshake.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    answer_plain_http: bool,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("answer_plain_http", &self.answer_plain_http)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The connection once its handshake is done; None when it failed or
    /// took longer than `tls.handshake_timeout` (the connection is then
    /// closed).
    pub async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        match tokio::time::timeout(self.handshake_timeout, self.handshake(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                debug!(?peer, %err, "tls handshake failed");
                None
            }
            Err(_) => {
                debug!(?peer, "tls handshake did not finish within tls.handshake_timeout");
                None
            }
        }
    }

    async fn handshake(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        let read = stream.peek(&mut first).await?;
        // A request line starts with an upper-case method name; a TLS
        // client starts with a handshake record (0x16).
        if self.answer_plain_http && read == 1 && first[0].is_ascii_uppercase() {
            refuse_plain_http(stream).await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a plain HTTP request on the TLS port",
            ));
        }
        self.inner.accept(stream).await
    }
}

/// Answers a plain HTTP request sent to the TLS port with 400 and the
/// scheme to use, then closes the connection.
async fn refuse_plain_http(mut stream: TcpStream) {
    let body = serde_json::json!({"error": {
        "code": "tls_required",
        "message": "this port serves HTTPS: send the request to https:// instead of http://",
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Read what the client still sends, so closing does not reset the
    // connection before the answer is read; the handshake deadline bounds
    // the wait.
    let mut buffer = [0u8; 4096];
    let mut drained = 0;
    while drained < PLAIN_REQUEST_DRAIN {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files { dir: tempfile::tempdir().unwrap() }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// A self-signed certificate for localhost, as (cert, key) files.
        fn pair(&self, prefix: &str) -> (PathBuf, PathBuf) {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            (
                self.write(&format!("{prefix}cert.pem"), &generated.cert.pem()),
                self.write(&format!("{prefix}key.pem"), &generated.signing_key.serialize_pem()),
            )
        }
    }

    fn config(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: Some(cert.to_owned()),
            key_file: Some(key.to_owned()),
            ..TlsConfig::default()
        }
    }

    fn error(config: &TlsConfig) -> String {
        match Tls::load(config) {
            Ok(_) => panic!("{config:?} loaded"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn off_unless_both_files_are_set() {
        assert!(Tls::load(&TlsConfig::default()).unwrap().is_none());
        let only_cert = TlsConfig { cert_file: Some("c.pem".into()), ..TlsConfig::default() };
        let err = error(&only_cert);
        assert!(err.contains("tls.key_file") && err.contains("must be set"), "{err}");
        let only_key = TlsConfig { key_file: Some("k.pem".into()), ..TlsConfig::default() };
        assert!(error(&only_key).contains("tls.cert_file"));
        let zero = TlsConfig { handshake_timeout: "0s".into(), ..TlsConfig::default() };
        assert!(error(&zero).contains("tls.handshake_timeout"));
    }

    #[test]
    fn a_certificate_and_its_key_load() {
        let files = Files::new();
        let (cert, key) = files.pair("");
        let tls = Tls::load(&config(&cert, &key)).unwrap().expect("tls on");
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(tls.http.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(tls.grpc.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let files = Files::new();
        let (cert, key) = files.pair("a-");
        let (_, other_key) = files.pair("b-");
        let missing = files.dir.path().join("missing.pem");

        let err = error(&config(&missing, &key));
        assert!(err.contains("tls.cert_file") && err.contains("cannot read"), "{err}");
        let err = error(&config(&cert, &missing));
        assert!(err.contains("tls.key_file") && err.contains("cannot read"), "{err}");

        let empty = files.write("empty.pem", "no pem here\n");
        let err = error(&config(&empty, &key));
        assert!(err.contains("tls.cert_file") && err.contains("no CERTIFICATE"), "{err}");
        // A certificate where the key should be.
        let err = error(&config(&cert, &cert));
        assert!(err.contains("tls.key_file") && err.contains("no PRIVATE KEY"), "{err}");
        let broken = files.write("broken.pem", "-----BEGIN CERTIFICATE-----\n@@@\n");
        let err = error(&config(&broken, &key));
        assert!(err.contains("tls.cert_file") && err.contains("not a PEM file"), "{err}");

        let err = error(&config(&cert, &other_key));
        assert!(err.contains("tls.key_file") && err.contains("is not the key of"), "{err}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let files = Files::new();
        let (cert, key) = files.pair("");
        let tls = Tls::load(&config(&cert, &key)).unwrap().unwrap();
        let in_use = || tls.current.0.read().unwrap().cert[0].clone();
        let first = in_use();

        std::fs::write(&cert, "garbage").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("tls.cert_file"), "{err}");
        assert_eq!(in_use(), first);

        let (new_cert, new_key) = files.pair("new-");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(in_use(), first);
        let served = CertificateDer::from_pem_file(&new_cert).unwrap();
        assert_eq!(in_use(), served);
    }
}
