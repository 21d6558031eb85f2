//! The `linear` model (`y = 0.1·x + 0.3`) set up outside a server: its
//! component bytes and the [`ModelContext`] its instances share, built the
//! way `edgeserve::registry` builds them.

use std::sync::Arc;

use anyhow::Context as _;
use edgeserve::repository::{COMPONENT_FILE, CONFIG_FILE, ModelConfig};
use edgeserve::runtime::{Factory, ModelContext, Runtime};
use edgeserve_e2e::ModelRepository;
use edgeserve_tensor::cpu::CpuBackend;

/// Name of the model every measurement uses.
pub const MODEL: &str = "linear";

/// `linear`, loaded from a throwaway repository with the freshly built plugin.
pub struct Linear {
    /// The repository (kept alive: the weights are mapped from it).
    _repo: ModelRepository,
    /// The component's bytes.
    pub wasm: Vec<u8>,
    /// `config.toml`.
    pub config: ModelConfig,
    /// What its instances share: CPU backend, mapped weights, limits.
    pub context: Arc<ModelContext>,
}

impl Linear {
    /// Assembles the repository and reads version 1 of the model.
    pub fn load() -> anyhow::Result<Linear> {
        let repo = edgeserve_e2e::model_repository(&[MODEL]);
        let model = repo.join(MODEL);
        let dir = model.join("1");
        let wasm = std::fs::read(dir.join(COMPONENT_FILE)).context("reading the component")?;
        let config = ModelConfig::load(&model.join(CONFIG_FILE))?;
        let context = Arc::new(ModelContext::open(
            format!("{MODEL}:1"),
            &dir,
            &config,
            Arc::new(CpuBackend::new()),
        )?);
        Ok(Linear {
            _repo: repo,
            wasm,
            config,
            context,
        })
    }

    /// Compiles the component on `runtime` (or loads it from its cache) and
    /// returns the factory of initialized instances the server's pool uses.
    pub fn factory(&self, runtime: &Runtime) -> anyhow::Result<Factory> {
        let (component, _) = runtime.compile(MODEL, &self.wasm)?;
        Ok(runtime.factory(
            &component,
            self.context.clone(),
            self.config.timeout(),
            self.config.memory_limit_bytes(),
        )?)
    }
}
