//! The wasmtime side: one engine, a compile cache, a linker with the
//! contract and a capability-free WASI, and pools of warm instances.

mod batching;
pub(crate) mod bindings;
mod cache;
mod context;
mod contract;
mod instance;
mod limits;
mod pool;
pub(crate) mod state;
mod stdio;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

pub use crate::capability::OutputSink;
pub use batching::{Answer, BatchMetrics, Batcher};
pub use bindings::{ModelMetadata, TensorMetadata, TextChunk};
pub use cache::{CacheOutcome, CompileCache, DEFAULT_CACHE_MAX_BYTES};
pub use context::ModelContext;
pub use contract::{CONTRACT_VERSION, ContractError, contract_compatible};
pub use instance::{Fault, Instance, Parameter, ParameterValue, Value, WarmUp};
pub use pool::{Factory, InstancePool, PoolError, Timing};
pub use state::InstanceState;

/// Granularity of request deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of compiled code the cache keeps; the least recently
    /// used entries go first.
    pub cache_max_bytes: u64,
    /// Try the pooling allocator (falls back to on-demand when the address
    /// space cannot hold the pool).
    pub pooling: bool,
    /// Instance slots in the pool, across all models.
    pub max_instances: u32,
    /// Largest linear memory any instance may have, in bytes.
    pub max_memory: usize,
}

/// Why the runtime could not start or load a component.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    /// The component failed to compile or link.
    #[error("cannot compile {what}: {message}")]
    Compile {
        /// What was being compiled.
        what: String,
        /// Why it failed.
        message: String,
    },
}

/// The shared wasm engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: CompileCache,
    allocator: &'static str,
    ticks: Arc<EpochTicks>,
}

/// Held by the runtime and by every instance: the epoch thread ticks while
/// anyone holds one. An instance outlives the runtime when its caller gave
/// up (a client's deadline) and the server then stopped; its handler runs on
/// and must still reach its own deadline, or it spins forever.
pub(crate) struct EpochTicks;

impl Runtime {
    /// Builds the engine, probing for the pooling allocator.
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut base = Config::new();
        base.wasm_component_model(true).epoch_interruption(true);
        let (engine, allocator) = match config.pooling.then(|| pooled(&base, config)) {
            Some(Ok(engine)) => (engine, "pooling"),
            Some(Err(e)) => {
                tracing::info!("pooling allocator unavailable ({e}); using on-demand allocation");
                (Engine::new(&base).map_err(engine_err)?, "on-demand")
            }
            None => (Engine::new(&base).map_err(engine_err)?, "on-demand"),
        };
        let mut linker = Linker::new(&engine);
        // Only std's needs: no preopens, sockets or environment are granted
        // (the WasiCtx of each instance is built empty).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        bindings::ModelHandler::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let ticks = Arc::new(EpochTicks);
        let (ticked, held) = (engine.clone(), Arc::downgrade(&ticks));
        std::thread::Builder::new()
            .name("edgeserve-epoch".into())
            .spawn(move || {
                while held.strong_count() > 0 {
                    std::thread::sleep(EPOCH_TICK);
                    ticked.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache: CompileCache::new(config.cache_dir.clone(), config.cache_max_bytes),
            allocator,
            ticks,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// "pooling" or "on-demand".
    pub fn allocator(&self) -> &'static str {
        self.allocator
    }

    /// Compiles a component, or loads it from the compile cache.
    pub fn compile(
        &self,
        what: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), RuntimeError> {
        contract::check_binary(wasm).map_err(|e| RuntimeError::Compile {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
        self.cache
            .load(&self.engine, wasm)
            .map_err(|e| RuntimeError::Compile {
                what: what.to_owned(),
                message: format!("{e:#}"),
            })
    }

    /// A factory of initialized instances of `component` serving `context`;
    /// fails when the component does not fit the contract.
    pub fn factory(
        &self,
        component: &Component,
        context: Arc<ModelContext>,
        timeout: Duration,
        memory_limit: usize,
    ) -> Result<Factory, RuntimeError> {
        let link = |e: wasmtime::Error| RuntimeError::Compile {
            what: context.label.to_string(),
            message: format!("the component does not fit the edgeserve contract: {e:#}"),
        };
        contract::check(&self.engine, component).map_err(|e| RuntimeError::Compile {
            what: context.label.to_string(),
            message: e.to_string(),
        })?;
        let pre = self.linker.instantiate_pre(component).map_err(link)?;
        let pre = bindings::ModelHandlerPre::new(pre).map_err(link)?;
        let ticks = self.ticks.clone();
        Ok(Arc::new(move || {
            block_on(Instance::start(
                &pre,
                context.clone(),
                timeout,
                memory_limit,
                ticks.clone(),
            ))
        }))
    }
}

/// Runs a call into a guest to completion on this thread, for callers that
/// are not async (loading a model, starting an instance, the bench). Never
/// on an async worker: it blocks the thread.
pub fn block_on<F: std::future::Future>(call: F) -> F::Output {
    wasmtime_wasi::runtime::in_tokio(call)
}

/// An engine with the pooling allocator sized for `config`, or why not.
fn pooled(base: &Config, config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(config.max_instances)
        .total_core_instances(config.max_instances * 4)
        .total_memories(config.max_instances * 2)
        .total_tables(config.max_instances * 4)
        .max_memory_size(config.max_memory);
    let mut with_pool = base.clone();
    with_pool.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&with_pool)
}
