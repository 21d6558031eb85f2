//! What every route shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bundle::BundleStore;
use crate::metrics::Metrics;
use crate::offload::Upstream;
use crate::registry::ModelRegistry;

/// State shared by every route.
pub struct AppState {
    /// The live models.
    pub registry: Arc<ModelRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether `/v2/health/ready` answers 200.
    pub ready: AtomicBool,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Fetches model bundles for repository load requests.
    pub bundles: Arc<BundleStore>,
    /// Where requests this server cannot serve go, when set.
    pub upstream: Option<Arc<Upstream>>,
}
