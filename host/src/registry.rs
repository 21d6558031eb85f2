//! Models loaded from the repository and ready to serve, by name and version.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use edgeserve_tensor::BackendInfo;

use crate::devices::{DeviceError, Devices};

use crate::metrics::{Metrics, ModelLabels, ModelSeries};
use crate::protocol::Datatype;
use crate::repository::{BatchingConfig, ModelConfig, Repository, RepositoryError};
use crate::runtime::{
    BatchMetrics, Batcher, CacheOutcome, Fault, InstancePool, ModelContext, ModelMetadata, Runtime,
    RuntimeError, WarmUp, block_on,
};

/// Why a model could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such model in the repository.
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The model's device was lost and the model is being reloaded onto a
    /// replacement: a 503 with `Retry-After`.
    #[error("model '{name}' is being reloaded after its device was lost ({reason}); retry shortly")]
    Recovering {
        /// The model.
        name: String,
        /// What happened to the device.
        reason: String,
    },
    /// The model exists but not that version.
    #[error("model '{name}' has no version {version} (versions: {available:?})")]
    UnknownVersion {
        /// The model.
        name: String,
        /// The requested version.
        version: String,
        /// The versions it has.
        available: Vec<u64>,
    },
    /// The model is in the repository but not loaded.
    #[error("model '{name}' is not loaded: {reason}")]
    NotLoaded {
        /// The model.
        name: String,
        /// Why (unloaded, or the load error).
        reason: String,
    },
    /// The repository could not be read.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The component failed to compile or link.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// An instance failed to start.
    #[error("cannot start model: {0}")]
    Start(#[from] Fault),
    /// The device the model asks for is not available.
    #[error("model '{name}': {source}")]
    Device {
        /// The model.
        name: String,
        /// Why.
        source: DeviceError,
    },
    /// The model's warm-up request cannot be read as one.
    #[error("model '{name}': warm-up request {path}: {message}")]
    WarmUp {
        /// The model.
        name: String,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The handler's metadata is unusable.
    #[error("model '{name}' declares bad metadata: {message}")]
    Metadata {
        /// The model.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A model version that is live: its metadata and its warm instances.
pub struct LoadedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// What the handler declared.
    pub metadata: ModelMetadata,
    /// Warm instances.
    pub pool: Arc<InstancePool>,
    /// Runs requests on the pool, batching those that can be.
    pub batcher: Arc<Batcher>,
    /// Serving settings.
    pub config: ModelConfig,
    /// The device running it.
    pub device: BackendInfo,
    /// Metric labels.
    pub labels: ModelLabels,
    /// Its per-request series.
    pub series: ModelSeries,
}

impl std::fmt::Display for LoadedModel {
    /// `name:version`, as errors and logs name a model version.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

/// One row of the repository index.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, when the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// "READY" or "UNAVAILABLE".
    pub state: &'static str,
    /// Why it is unavailable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

enum Entry {
    Ready(BTreeMap<u64, Arc<LoadedModel>>),
    Unavailable(String),
    /// Its device was lost and is being replaced; it is reloaded next.
    Recovering(String),
}

/// The live models.
pub struct ModelRegistry {
    runtime: Arc<Runtime>,
    repository: Repository,
    devices: Devices,
    metrics: Arc<Metrics>,
    models: RwLock<BTreeMap<String, Entry>>,
}

impl ModelRegistry {
    /// An empty registry over `repository`.
    pub fn new(
        runtime: Arc<Runtime>,
        repository: Repository,
        devices: Devices,
        metrics: Arc<Metrics>,
    ) -> Self {
        ModelRegistry {
            runtime,
            repository,
            devices,
            metrics,
            models: RwLock::new(BTreeMap::new()),
        }
    }

    /// The devices models run on.
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// The repository models are loaded from.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The wasm runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Loads every model in the repository; failures are logged and shown in
    /// the index, and do not stop the others.
    pub fn load_all(&self) -> Result<(), RegistryError> {
        for name in self.repository.model_names()? {
            if let Err(e) = self.load(&name) {
                tracing::error!(model = %name, "not serving: {e}");
            }
        }
        Ok(())
    }

    /// (Re)loads every version of `name`. Slow (compiles, starts instances):
    /// call it off the async executor. A reload that fails leaves the loaded
    /// versions serving, as Triton does, so a bad push takes nothing down.
    pub fn load(&self, name: &str) -> Result<(), RegistryError> {
        let loaded = self.load_versions(name);
        if let Err(RegistryError::Repository(RepositoryError::UnknownModel { .. })) = &loaded {
            // Nothing of that name to show as unavailable.
            return loaded.map(drop);
        }
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let (previous, result) = match loaded {
            Ok(versions) => (
                models.insert(name.to_owned(), Entry::Ready(versions)),
                Ok(()),
            ),
            Err(e) if matches!(models.get(name), Some(Entry::Ready(_))) => {
                tracing::error!(model = %name, "reload failed; the loaded versions keep serving: {e}");
                (None, Err(e))
            }
            // A config or warm-up file that cannot be read is the model's
            // state as much as a component that fails to start.
            Err(e) => (
                models.insert(name.to_owned(), Entry::Unavailable(e.to_string())),
                Err(e),
            ),
        };
        drop(models);
        if let Some(Entry::Ready(old)) = previous {
            self.retire(old);
        }
        result
    }

    /// Every version of `name`, loaded and warmed up, from what the
    /// repository holds now.
    fn load_versions(&self, name: &str) -> Result<BTreeMap<u64, Arc<LoadedModel>>, RegistryError> {
        let source = self.repository.model(name)?;
        let warm_up = warm_up_request(name, source.warmup.as_ref())?;
        let mut versions = BTreeMap::new();
        for (&version, dir) in &source.versions {
            let model = self.load_version(name, version, dir, &source.config, warm_up.as_ref())?;
            versions.insert(version, Arc::new(model));
        }
        Ok(versions)
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        dir: &std::path::Path,
        config: &ModelConfig,
        warm_up: Option<&WarmUp>,
    ) -> Result<LoadedModel, RegistryError> {
        let label: Arc<str> = format!("{name}:{version}").into();
        let wasm_path = dir.join(crate::repository::COMPONENT_FILE);
        let wasm = std::fs::read(&wasm_path).map_err(|source| RepositoryError::Io {
            path: wasm_path.clone(),
            source,
        })?;
        let started = std::time::Instant::now();
        let (component, outcome) = self.runtime.compile(&label, &wasm)?;
        let backend =
            self.devices
                .backend(config.device)
                .map_err(|source| RegistryError::Device {
                    name: name.to_owned(),
                    source,
                })?;
        let context = Arc::new(ModelContext::open(
            label.clone(),
            dir,
            config,
            backend.clone(),
        )?);
        let context_weight_bytes = context.weights.byte_len();
        let factory = self.runtime.factory(
            &component,
            context,
            config.timeout(),
            config.memory_limit_bytes(),
        )?;
        let labels = ModelLabels {
            model: name.to_owned(),
            version: version.to_string(),
        };
        self.metrics
            .weight_bytes
            .get_or_create(&labels)
            .set(context_weight_bytes as i64);
        let live = self.metrics.instances.get_or_create(&labels).clone();
        let pool = Arc::new(InstancePool::start(
            label.clone(),
            config.instances,
            factory,
            config.queue_timeout(),
            live,
            !backend.records_per_thread(),
        )?);
        let metadata = pool.with_idle(|instance| block_on(instance.metadata()))?;
        validate_metadata(name, &metadata)?;
        let batching = config.batching.clone().filter(BatchingConfig::enabled);
        if let Some(batching) = &batching {
            validate_batching(name, &metadata, batching)?;
        }
        // Replacements of failed instances skip it: the one-time work it
        // stands in for is done by then.
        if let Some(warm_up) = warm_up {
            pool.with_each_idle(|instance| block_on(instance.warm_up(warm_up)))?;
        }
        let batch_metrics = BatchMetrics {
            size: self.metrics.batch_size.get_or_create(&labels).clone(),
            wait: self
                .metrics
                .batch_wait_seconds
                .get_or_create(&labels)
                .clone(),
        };
        let batcher = Arc::new(Batcher::new(
            label.clone(),
            pool.clone(),
            batching,
            batch_metrics,
        ));
        tracing::info!(
            model = %label,
            instances = config.instances,
            device = backend.info().kind,
            compile = if outcome == CacheOutcome::Hit { "cached" } else { "compiled" },
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model ready"
        );
        Ok(LoadedModel {
            name: name.to_owned(),
            version,
            metadata,
            pool,
            batcher,
            config: config.clone(),
            device: backend.info(),
            series: self.metrics.model_series(&labels),
            labels,
        })
    }

    /// Stops serving `name`.
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        match models.get(name) {
            None => {
                drop(models);
                // Known on disk but never loaded: unloading is a no-op.
                self.repository.model(name)?;
                Ok(())
            }
            Some(_) => {
                let previous =
                    models.insert(name.to_owned(), Entry::Unavailable("unloaded".into()));
                drop(models);
                if let Some(Entry::Ready(old)) = previous {
                    self.retire(old);
                }
                Ok(())
            }
        }
    }

    /// Takes every model running on a GPU out of service while the lost
    /// device is replaced: requests for them get
    /// [`RegistryError::Recovering`] until [`ModelRegistry::load`] brings
    /// each back. Returns their names.
    pub fn suspend_gpu_models(&self, reason: &str) -> Vec<String> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let on_gpu = |entry: &Entry| match entry {
            Entry::Ready(versions) => versions.values().any(|m| m.device.kind == "gpu"),
            _ => false,
        };
        let names: Vec<String> = models
            .iter()
            .filter(|(_, entry)| on_gpu(entry))
            .map(|(name, _)| name.clone())
            .collect();
        let mut retired = Vec::new();
        for name in &names {
            let recovering = Entry::Recovering(reason.to_owned());
            if let Some(Entry::Ready(old)) = models.insert(name.clone(), recovering) {
                retired.push(old);
            }
        }
        drop(models);
        retired.into_iter().for_each(|old| self.retire(old));
        names
    }

    /// Drops the registry's hold on old versions; in-flight requests keep
    /// theirs until they finish.
    fn retire(&self, old: BTreeMap<u64, Arc<LoadedModel>>) {
        for model in old.values() {
            self.metrics.instances.remove(&model.labels);
            self.metrics.weight_bytes.remove(&model.labels);
        }
    }

    /// The model to serve: `version` or, when `None`, the highest loaded.
    pub fn get(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedModel>, RegistryError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let versions = match models.get(name) {
            Some(Entry::Ready(versions)) => versions,
            Some(Entry::Unavailable(reason)) => {
                return Err(RegistryError::NotLoaded {
                    name: name.to_owned(),
                    reason: reason.clone(),
                });
            }
            Some(Entry::Recovering(reason)) => {
                return Err(RegistryError::Recovering {
                    name: name.to_owned(),
                    reason: reason.clone(),
                });
            }
            None => return Err(RegistryError::UnknownModel(name.to_owned())),
        };
        let found = match version {
            None => versions.values().next_back(),
            Some(v) => v.parse::<u64>().ok().and_then(|v| versions.get(&v)),
        };
        found.cloned().ok_or_else(|| RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            available: versions.keys().copied().collect(),
        })
    }

    /// Every version number loaded for `name`.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        match self
            .models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            Some(Entry::Ready(versions)) => versions.keys().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Every model in the repository or loaded, with its state.
    pub fn index(&self) -> Result<Vec<IndexEntry>, RegistryError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let mut names = self.repository.model_names()?;
        names.extend(models.keys().cloned());
        names.sort();
        names.dedup();
        let mut rows = Vec::new();
        for name in names {
            match models.get(&name) {
                Some(Entry::Ready(versions)) => rows.extend(versions.keys().map(|v| IndexEntry {
                    name: name.clone(),
                    version: Some(v.to_string()),
                    state: "READY",
                    reason: String::new(),
                })),
                Some(Entry::Unavailable(reason) | Entry::Recovering(reason)) => {
                    rows.push(IndexEntry {
                        name,
                        version: None,
                        state: "UNAVAILABLE",
                        reason: reason.clone(),
                    })
                }
                None => rows.push(IndexEntry {
                    name,
                    version: None,
                    state: "UNAVAILABLE",
                    reason: "not loaded".into(),
                }),
            }
        }
        Ok(rows)
    }
}

fn validate_metadata(name: &str, metadata: &ModelMetadata) -> Result<(), RegistryError> {
    let bad = |message: String| RegistryError::Metadata {
        name: name.to_owned(),
        message,
    };
    if metadata.inputs.is_empty() || metadata.outputs.is_empty() {
        return Err(bad(
            "it must declare at least one input and one output".into()
        ));
    }
    for spec in metadata.inputs.iter().chain(&metadata.outputs) {
        if Datatype::from_name(&spec.datatype).is_none() {
            return Err(bad(format!(
                "tensor '{}' has datatype {}; use one of {:?}",
                spec.name,
                spec.datatype,
                Datatype::names()
            )));
        }
        if spec.shape.iter().any(|&d| d < -1) {
            return Err(bad(format!(
                "tensor '{}' has shape {:?}",
                spec.name, spec.shape
            )));
        }
    }
    Ok(())
}

/// Checks that a batching model's tensors can have the batch along axis 0
/// and that its padded outputs exist.
fn validate_batching(
    name: &str,
    metadata: &ModelMetadata,
    batching: &BatchingConfig,
) -> Result<(), RegistryError> {
    let bad = |message: String| RegistryError::Metadata {
        name: name.to_owned(),
        message,
    };
    if let Some(spec) = metadata
        .inputs
        .iter()
        .chain(&metadata.outputs)
        .find(|spec| spec.shape.first() != Some(&-1))
    {
        return Err(bad(format!(
            "[batching] stacks requests along axis 0, but tensor '{}' has shape {:?}, \
             whose axis 0 is not -1 (any size)",
            spec.name, spec.shape
        )));
    }
    if let Some(unknown) = batching
        .padded_outputs
        .iter()
        .find(|output| !metadata.outputs.iter().any(|spec| spec.name == **output))
    {
        return Err(bad(format!(
            "[batching] padded_outputs names '{unknown}', which is not one of its outputs"
        )));
    }
    Ok(())
}

/// The warm-up request `file` holds (its path and bytes), decoded as a
/// client's OIP JSON request would be.
fn warm_up_request(
    name: &str,
    file: Option<&(std::path::PathBuf, bytes::Bytes)>,
) -> Result<Option<WarmUp>, RegistryError> {
    let Some((path, bytes)) = file else {
        return Ok(None);
    };
    let (request, _) =
        crate::server::oip::decode(None, bytes).map_err(|e| RegistryError::WarmUp {
            name: name.to_owned(),
            path: path.clone(),
            message: e.message,
        })?;
    Ok(Some(WarmUp {
        source: path.display().to_string(),
        inputs: request.inputs,
        parameters: request.parameters,
        outputs: request.outputs,
    }))
}
