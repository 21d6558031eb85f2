//! Wiring: settings in, a running server out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::accept::{Bounded, ConnectionLimit};
use crate::body_memory::BodyMemory;
use crate::bundle::{BundleSettings, BundleStore};
use crate::devices::{DeviceChoice, Devices};
use crate::metrics::Metrics;
use crate::offload::{Upstream, UpstreamSettings};
use crate::registry::ModelRegistry;
use crate::repository::Repository;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::server::Server;
use crate::server::auth::{self, AccessPolicy, AccessSettings};
use crate::tls::{Tls, TlsSettings};

/// Everything needed to start a server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The model repository folder.
    pub model_repository: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Port for the Open Inference Protocol over gRPC, on the same host
    /// (0 picks a free one); `None`: no gRPC.
    pub grpc_port: Option<u16>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Engine settings.
    pub runtime: RuntimeConfig,
    /// Which compute devices to open.
    pub device: DeviceChoice,
    /// Model bundles to install into the repository before loading it, and
    /// the cache they are kept in.
    pub bundles: BundleSettings,
    /// The server that takes requests this one cannot serve.
    pub upstream: Option<UpstreamSettings>,
    /// API keys, the admin key, and who may call what.
    pub access: AccessSettings,
    /// Serve HTTPS with this certificate and key; `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Serve the web console at `/console/` (and redirect `/` there).
    pub console: bool,
    /// Longest [`Running::shutdown`] waits for requests in flight and open
    /// connections before it stops anyway.
    pub shutdown_timeout: std::time::Duration,
    /// How long a connection may start no request before it is closed
    /// (gracefully: a request it is still answering finishes first), and
    /// a request body may pause before it is refused.
    pub idle_timeout: std::time::Duration,
    /// The most client connections open at once over every listener; past
    /// it, new ones wait in the kernel's backlog. `None`: as many as the
    /// process may open descriptors, less a reserve
    /// ([`crate::accept::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// The most bytes of request bodies held at once over every request;
    /// past it, a request is refused (503, RESOURCE_EXHAUSTED). `None`: a
    /// quarter of the memory available, at least `max_body_bytes`
    /// ([`crate::body_memory::default_limit`]).
    pub max_body_memory_bytes: Option<usize>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The wasm runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The requested device could not be opened.
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    /// The repository could not be read.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A model bundle could not be fetched, verified or installed.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The upstream server's client could not be set up.
    #[error(transparent)]
    Upstream(#[from] crate::offload::OffloadError),
    /// A key is malformed or the key file unreadable.
    #[error(transparent)]
    Access(#[from] crate::server::auth::AccessError),
    /// The TLS certificate, key or client CA is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A server accepting connections.
pub struct Running {
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    server: Server,
    shutdown_timeout: std::time::Duration,
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound gRPC address, when gRPC is on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The compute devices the models run on.
    pub fn devices(&self) -> &Devices {
        self.server.state().registry.devices()
    }

    /// Stops taking connections, lets in-flight requests finish, and returns
    /// when the server has stopped, or once [`Settings::shutdown_timeout`]
    /// has passed: a client that keeps a connection or a stream open, or a
    /// request that runs on, cannot hold the stop up for ever. What is still
    /// open then is left to end with the runtime (the binary exits).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.server.set_ready(false);
        let _ = self.shutdown.send(true);
        match tokio::time::timeout(self.shutdown_timeout, &mut self.task).await {
            Ok(stopped) => stopped.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    in_flight = self.server.state().metrics.inflight.get(),
                    "stopping with connections still open after the {:?} shutdown timeout",
                    self.shutdown_timeout
                );
                Ok(())
            }
        }
    }
}

/// How often the TLS files are checked for a change (SIGHUP reloads at once).
const TLS_RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the runtime, loads every model in the repository and listens.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    start_with(settings, None).await
}

/// As [`start`], on `devices` opened by the caller (e.g. a GPU adapter of
/// its choosing, [`Devices::with_gpu`]) instead of those `settings.device`
/// asks for.
pub async fn start_on(settings: Settings, devices: Devices) -> Result<Running, StartError> {
    start_with(settings, Some(devices)).await
}

async fn start_with(settings: Settings, devices: Option<Devices>) -> Result<Running, StartError> {
    let access = Arc::new(AccessPolicy::new(&settings.access, settings.listen.ip())?);
    let metrics = Arc::new(Metrics::new());
    let limit = ConnectionLimit::new(
        (settings.max_connections).unwrap_or_else(crate::accept::default_max_connections),
        &metrics,
    );
    let memory = BodyMemory::new(
        (settings.max_body_memory_bytes)
            .unwrap_or_else(|| crate::body_memory::default_limit(settings.max_body_bytes)),
        &metrics,
    );
    let tls = (settings.tls.as_ref())
        .map(|tls| Tls::new(tls, metrics.clone()))
        .transpose()?;
    let upstream = settings
        .upstream
        .as_ref()
        .map(Upstream::new)
        .transpose()?
        .map(Arc::new);
    let bundles = Arc::new(BundleStore::new(&settings.bundles)?);
    // Before anything slow, so a bad bundle fails the start at once.
    for source in &settings.bundles.sources {
        bundles
            .install(source, &settings.model_repository, None)
            .await?;
    }
    let runtime = Arc::new(Runtime::new(&settings.runtime)?);
    let devices = match devices {
        Some(devices) => devices,
        None => tokio::task::spawn_blocking(move || Devices::open(settings.device))
            .await
            .expect("opening devices does not panic")?,
    };
    let default = devices.default_info();
    for info in devices.all() {
        let is_default = info == default;
        tracing::info!(kind = info.kind, device = %info.device, api = %info.api, driver = %info.driver, default = is_default, "compute device");
    }
    crate::recovery::record_devices(&metrics, &devices);
    tracing::info!(allocator = runtime.allocator(), "wasm runtime ready");
    let registry = Arc::new(ModelRegistry::new(
        runtime,
        Repository::new(&settings.model_repository),
        devices,
        metrics.clone(),
    ));
    let loader = registry.clone();
    tokio::task::spawn_blocking(move || loader.load_all())
        .await
        .expect("model loading does not panic")?;
    crate::recovery::watch(&registry, metrics.clone())?;
    let server = Server::new(
        registry,
        metrics,
        settings.max_body_bytes,
        bundles,
        upstream,
    );
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen,
        source,
    })?;
    let grpc = match settings.grpc_port {
        Some(port) => {
            let addr = SocketAddr::new(settings.listen.ip(), port);
            let bind_error = |source| StartError::Bind { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let bound = listener.local_addr().map_err(bind_error)?;
            let router = crate::server::grpc::router(server.state().clone(), access.clone()).await;
            Some((listener, bound, router))
        }
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|(_, addr, _)| *addr);
    let (shutdown, stop) = watch::channel(false);
    let idle = settings.idle_timeout;
    let grpc = grpc
        .map(|(listener, addr, router)| {
            let listener = Bounded::new(listener, limit.clone());
            let memory = memory.clone();
            crate::server::grpc::serve(listener, router, tls.as_ref(), idle, memory, stop.clone())
                .map_err(|source| StartError::Bind { addr, source })
        })
        .transpose()?;
    // The console's page and assets are open by their paths
    // (`AccessPolicy::classify`); its API calls carry a key.
    let router = if settings.console {
        server.router().merge(crate::server::console::router())
    } else {
        server.router()
    };
    let router = auth::protect(router, access);
    let quiet = crate::listen::Quiet::new(idle);
    let (max_connections, max_body_memory_bytes) = (limit.max(), memory.limit());
    let listener = Bounded::new(listener, limit);
    let http = crate::tls::serve(listener, router, tls.as_ref(), quiet, memory, stop.clone())
        .map_err(|source| StartError::Bind { addr, source })?;
    if let Some(tls) = &tls {
        tls.watch(TLS_RELOAD_POLL, stop);
    }
    let task = tokio::spawn(async move {
        match grpc {
            Some(grpc) => tokio::try_join!(http, grpc).map(|_| ()),
            None => http.await,
        }
    });
    server.set_ready(true);
    tracing::info!(
        %addr,
        max_connections,
        max_body_memory_bytes,
        "serving the Open Inference Protocol"
    );
    if let Some(addr) = grpc_addr {
        tracing::info!(%addr, "gRPC: inference.GRPCInferenceService, grpc.health.v1.Health");
    }
    Ok(Running {
        addr,
        grpc_addr,
        shutdown,
        task,
        server,
        shutdown_timeout: settings.shutdown_timeout,
    })
}
