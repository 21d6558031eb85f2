//! HTTPS: rustls in front of the same routers, with an optional client CA
//! (mTLS), and certificates reloaded on SIGHUP or when their files change,
//! without dropping a connection (a handshake takes whatever configuration
//! is current; open connections keep theirs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::serve::Listener as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::accept::{Bounded, Held};
use crate::body_memory::BodyMemory;
use crate::listen::{Quiet, Serving};
use crate::metrics::{Metrics, TlsFailureLabels, TlsHandshakeLabels};
use crate::server::auth::Protected;

/// Where the server's certificate and key are.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; with
    /// it, clients without a valid certificate are refused.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the kind needed.
    #[error("TLS: {path} holds no {what}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
        /// The parser's word.
        message: String,
    },
    /// rustls refused the combination (e.g. the key does not match).
    #[error("TLS: {0}")]
    Config(String),
}

/// The TLS configuration in force, replaced on reload.
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Reads the certificate, key and client CA of `settings`; handshakes
    /// are counted in `metrics`.
    pub fn new(settings: &TlsSettings, metrics: Arc<Metrics>) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: Arc::new(RwLock::new(build(settings)?)),
            settings: settings.clone(),
            metrics,
        })
    }

    /// Reads the files again; on an error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.settings)?;
        *self.current.write().expect("the TLS lock is not poisoned") = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .expect("the TLS lock is not poisoned")
                .clone(),
        )
    }

    /// Reloads on SIGHUP and when a file's modification time changes
    /// (checked every `poll`), until `stop` turns true.
    pub fn watch(&self, poll: Duration, mut stop: watch::Receiver<bool>) {
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut seen = tls.modified();
            let mut tick = tokio::time::interval(poll);
            loop {
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<Option<()>>();
                let why = tokio::select! {
                    _ = stop.wait_for(|&s| s) => return,
                    _ = signal => "SIGHUP",
                    _ = tick.tick() => {
                        let now = tls.modified();
                        if now == seen { continue; }
                        seen = now;
                        "a changed file"
                    }
                };
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificates reloaded after {why}"),
                    Err(e) => tracing::warn!("TLS certificates not reloaded after {why}: {e}"),
                }
            }
        });
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        let s = &self.settings;
        [Some(&s.cert), Some(&s.key), s.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem {
        path: path.to_owned(),
        what: "certificate",
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// aws-lc-rs's defaults: the post-quantum hybrid X25519MLKEM768 preferred
/// where the peer offers it (browsers, rustls, OpenSSL 3.5), the classical
/// groups for the rest.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The configuration of the server's outbound HTTPS (the upstream, bundle
/// servers), with the key exchange it serves: trusting only the
/// certificates in the PEM file `ca` when given, else the Mozilla roots
/// (webpki-roots, as reqwest's default). Speaks HTTP/1.1.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match ca {
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => trusted(path, "CA")?,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates in the PEM file `path` as trust roots; `what` names
/// them in errors.
fn trusted(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn build(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key)?).map_err(|e| TlsError::Pem {
        path: settings.key.clone(),
        what: "private key",
        message: e.to_string(),
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = trusted(path, "client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", settings.key.display())))?;
    // gRPC needs h2; REST clients may speak either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Longest a client may take over its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP connections after their TLS handshake, which run concurrently so a
/// slow client holds up no other: an [`axum::serve::Listener`].
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<Held<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and completes handshakes with the configuration
    /// current at each one's start. Stops accepting once the listener is
    /// dropped. A connection counts against `tcp`'s limit from its accept,
    /// its handshake included.
    pub fn new(mut tcp: Bounded, tls: Tls) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (done, handshaken) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = done.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (acceptor, done) = (tls.acceptor(), done.clone());
                let metrics = tls.metrics.clone();
                tokio::spawn(async move {
                    let failed = |reason| {
                        let labels = TlsFailureLabels { reason };
                        metrics.tls_handshake_failures.get_or_create(&labels).inc();
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            count(&metrics, stream.get_ref().1);
                            let _ = done.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            failed("refused");
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            failed("timed_out");
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { handshaken, local })
    }
}

/// Counts a completed handshake by the version and key exchange it agreed.
fn count(metrics: &Metrics, connection: &rustls::ServerConnection) {
    let labels = TlsHandshakeLabels {
        version: (connection.protocol_version())
            .and_then(|v| v.as_str())
            .unwrap_or("unknown"),
        group: (connection.negotiated_key_exchange_group())
            .and_then(|g| g.name().as_str())
            .unwrap_or("unknown"),
    };
    metrics.tls_handshakes.get_or_create(&labels).inc();
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Held<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept task ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `router` (behind its access checks) on `tcp`, over TLS when `tls`
/// is set, within `quiet`'s limits, until `stop` turns true, then lets
/// requests in flight finish. Request bodies count against `memory`.
pub fn serve(
    tcp: Bounded,
    router: Protected,
    tls: Option<&Tls>,
    quiet: Quiet,
    memory: BodyMemory,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Serving> {
    Ok(match tls {
        None => crate::listen::serve(tcp, router, quiet, memory, stop),
        Some(tls) => {
            let tcp = TlsListener::new(tcp, tls.clone())?;
            crate::listen::serve(tcp, router, quiet, memory, stop)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accept::ConnectionLimit;
    use axum::serve::Listener;

    #[tokio::test]
    async fn a_tls_connection_sends_without_delay_and_counts_from_its_accept() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        let settings = TlsSettings {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        std::fs::write(&settings.cert, key.cert.pem()).unwrap();
        std::fs::write(&settings.key, key.signing_key.serialize_pem()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let tls = Tls::new(&settings, metrics.clone()).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = Bounded::new(tcp, ConnectionLimit::new(4, &metrics));
        let mut listener = TlsListener::new(tcp, tls).unwrap();
        let addr = listener.local_addr().unwrap();
        // A client that connects and says nothing holds a place already.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(
            client_config(Some(&settings.cert)).unwrap(),
        ));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (connected, (accepted, _)) = tokio::join!(client.connect(name, tcp), listener.accept());
        connected.unwrap();
        assert!(accepted.get_ref().0.get_ref().nodelay().unwrap());
        assert_eq!(metrics.open_connections.get(), 2);
        drop(accepted);
        assert_eq!(metrics.open_connections.get(), 1);
    }
}
