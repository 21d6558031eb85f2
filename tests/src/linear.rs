//! The `linear` model (`y = 0.1·x + 0.3`) set up outside a server, for the
//! bench and the tests that drive the runtime directly: its component bytes
//! and the [`ModelContext`] its instances share, built the way
//! `edgeserve::registry` builds them.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use edgeserve::repository::{COMPONENT_FILE, CONFIG_FILE, ModelConfig};
use edgeserve::runtime::{Factory, ModelContext, Runtime, Value};
use edgeserve_tensor::Tensor;
use edgeserve_tensor::cpu::CpuBackend;

use crate::ModelRepository;

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
        let repo = crate::model_repository(&[MODEL]);
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

/// The input: x = 2, so y = 0.1·2 + 0.3 = 0.5.
pub fn input() -> anyhow::Result<Tensor> {
    Ok(Tensor::from_f32(&[1, 1], vec![2.0])?)
}

/// Asserts the guest computed y = 0.5.
pub fn check(outputs: &[(String, Value)]) -> anyhow::Result<()> {
    let y = match outputs {
        [(name, Value::Numeric(y))] if name == "y" => y,
        _ => anyhow::bail!("unexpected outputs {outputs:?}"),
    };
    let data = y.host().context("output on the host")?.as_slice::<f32>();
    ensure!(
        data.len() == 1 && (data[0] - 0.5).abs() < 1e-6,
        "y = {data:?}"
    );
    Ok(())
}
