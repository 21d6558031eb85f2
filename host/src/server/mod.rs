//! The HTTP front end.
//!
//! Every protocol decodes into the typed path of `infer`; `routes` speaks
//! the Open Inference Protocol (wire format in `oip`), `generate` the plain
//! text route, `repository` Triton's repository extension; `upstream`
//! forwards what this server does not serve.

pub mod auth;
mod body;
mod choices;
pub mod console;
mod error;
mod fields;
mod generate;
mod generate_ext;
mod generation;
pub mod grpc;
mod infer;
pub(crate) mod oip;
mod openai;
mod repository;
mod routes;
mod sse;
mod state;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;
pub(crate) use infer::InferRequest;
pub use state::AppState;

use crate::bundle::BundleStore;
use crate::metrics::Metrics;
use crate::offload::Upstream;
use crate::registry::ModelRegistry;

/// The HTTP application: every route over shared state.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// A server over `registry`, not ready until [`Server::set_ready`].
    pub fn new(
        registry: Arc<ModelRegistry>,
        metrics: Arc<Metrics>,
        max_body: usize,
        bundles: Arc<BundleStore>,
        upstream: Option<Arc<Upstream>>,
    ) -> Server {
        Server {
            state: Arc::new(AppState {
                registry,
                metrics,
                ready: AtomicBool::new(false),
                max_body,
                bundles,
                upstream,
            }),
        }
    }

    /// Flips the readiness probe.
    pub fn set_ready(&self, ready: bool) {
        self.state
            .ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The axum router.
    pub fn router(&self) -> Router {
        use routes::*;
        Router::new()
            .route("/v2", get(server_metadata))
            .route("/v2/health/live", get(live))
            .route("/v2/health/ready", get(ready))
            .route("/v2/models/{name}", get(model_metadata))
            .route("/v2/models/{name}/versions/{version}", get(model_metadata))
            .route("/v2/models/{name}/ready", get(model_ready))
            .route(
                "/v2/models/{name}/versions/{version}/ready",
                get(model_ready),
            )
            .route("/v2/models/{name}/infer", post(infer))
            .route("/v2/models/{name}/versions/{version}/infer", post(infer))
            .merge(generate_ext::router())
            .route("/v2/repository/index", post(repository::index))
            .route("/v2/repository/models/{name}/load", post(repository::load))
            .route(
                "/v2/repository/models/{name}/unload",
                post(repository::unload),
            )
            .route("/metrics", get(metrics))
            .route("/generate", post(generate::generate))
            .merge(openai::router())
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.state.clone())
    }
}
