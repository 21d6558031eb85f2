//! What every instance of one model version shares.

use std::path::Path;
use std::sync::Arc;

use edgeserve_tensor::Backend;

use crate::repository::{ModelConfig, ModelFiles, RepositoryError, Weights};

/// One model version opened for serving: the backend its ops run on, its
/// weights already resident there, the files its handler may read, and the
/// caps on what each instance may hold.
pub struct ModelContext {
    /// "name" or "name:version", for logs and errors.
    pub label: Arc<str>,
    /// The backend that runs this model's ops.
    pub backend: Arc<dyn Backend>,
    /// Weights, already resident on the backend.
    pub weights: Weights,
    /// Assets and `[parameters]`, for the `model` interface.
    pub(crate) files: ModelFiles,
    /// Cap on live tensor handles per instance.
    pub(super) max_tensors: usize,
    /// Cap on bytes of live non-weight tensors per instance.
    pub(super) max_tensor_bytes: usize,
}

impl ModelContext {
    /// Opens version folder `dir` of a model set up by `config`, placing its
    /// weights on `backend` once for every instance.
    pub fn open(
        label: impl Into<Arc<str>>,
        dir: &Path,
        config: &ModelConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<ModelContext, RepositoryError> {
        let files = ModelFiles::new(dir, config);
        let kind = backend.info().kind;
        let weights = files.weights(|t| {
            backend
                .from_host(t)
                .map_err(|e| format!("cannot place on {kind}: {e}"))
        })?;
        Ok(ModelContext {
            label: label.into(),
            backend,
            weights,
            files,
            max_tensors: config.max_tensors,
            max_tensor_bytes: config.max_tensor_bytes(),
        })
    }
}
