//! Wiring: settings in, a running server out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bundle::{BundleSettings, BundleStore};
use crate::devices::{DeviceChoice, Devices};
use crate::metrics::{DeviceLabels, Metrics};
use crate::offload::{Upstream, UpstreamSettings};
use crate::registry::ModelRegistry;
use crate::repository::Repository;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::server::Server;

/// Everything needed to start a server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The model repository folder.
    pub model_repository: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
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
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    server: Server,
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The compute devices the models run on.
    pub fn devices(&self) -> &Devices {
        self.server.state().registry.devices()
    }

    /// Stops taking connections, lets in-flight requests finish, and returns
    /// when the server has stopped.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.set_ready(false);
        let _ = self.shutdown.send(true);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Starts the runtime, loads every model in the repository and listens.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
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
    let devices = tokio::task::spawn_blocking(move || Devices::open(settings.device))
        .await
        .expect("opening devices does not panic")?;
    let metrics = Arc::new(Metrics::new());
    let default = devices.default_info();
    for info in devices.all() {
        let is_default = info == default;
        tracing::info!(kind = info.kind, device = %info.device, api = %info.api, driver = %info.driver, default = is_default, "compute device");
        metrics
            .device
            .get_or_create(&DeviceLabels {
                kind: info.kind.into(),
                device: info.device,
                api: info.api,
                driver: info.driver,
            })
            .set(i64::from(is_default));
    }
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
    let (shutdown, mut stop) = watch::channel(false);
    let router = server.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|&stop| stop).await;
            })
            .await
    });
    server.set_ready(true);
    tracing::info!(%addr, "serving the Open Inference Protocol");
    Ok(Running {
        addr,
        shutdown,
        task,
        server,
    })
}
