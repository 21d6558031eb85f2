//! Measurement 1: getting a `linear` instance — compiling the component
//! (cold, or from the compile cache) and creating a fresh initialized
//! instance (the pool's `Factory` call: instantiate + `init`).

use anyhow::ensure;
use edgeserve::runtime::{CacheOutcome, Runtime};
use edgeserve_e2e::runtime_config;

use crate::stats::Samples;
use edgeserve_e2e::linear::{Linear, MODEL};

/// Iteration counts.
pub struct Config {
    /// Cold compilations.
    pub compiles: usize,
    /// Compile-cache loads.
    pub cache_loads: usize,
    /// Instance creations.
    pub instances: usize,
}

/// The timings.
pub struct Startup {
    /// `Runtime::compile` without a cache (always compiles).
    pub compile_cold: Samples,
    /// `Runtime::compile` hitting the on-disk compile cache.
    pub compile_cached: Samples,
    /// One `Factory` call: a fresh instance, instantiated and initialized.
    pub create: Samples,
}

/// Runs the measurement; `runtime` is the pooled runtime the instances of
/// the other measurements come from.
pub fn run(linear: &Linear, runtime: &Runtime, config: &Config) -> anyhow::Result<Startup> {
    let uncached = Runtime::new(&runtime_config(None))?;
    let compile_cold = Samples::measure(1, config.compiles, || {
        let (component, outcome) = uncached.compile(MODEL, &linear.wasm)?;
        ensure!(outcome == CacheOutcome::Miss, "compiled without a cache");
        Ok(component)
    })?;

    let cache = tempfile::Builder::new()
        .prefix("edgeserve-bench-cache-")
        .tempdir()?;
    let cached = Runtime::new(&runtime_config(Some(cache.path().to_owned())))?;
    // The first load compiles and fills the cache; every later one hits.
    cached.compile(MODEL, &linear.wasm)?;
    let compile_cached = Samples::measure(1, config.cache_loads, || {
        let (component, outcome) = cached.compile(MODEL, &linear.wasm)?;
        ensure!(outcome == CacheOutcome::Hit, "the compile cache was missed");
        Ok(component)
    })?;

    let factory = linear.factory(runtime)?;
    let create = Samples::measure(10, config.instances, || Ok(factory()?))?;
    Ok(Startup {
        compile_cold,
        compile_cached,
        create,
    })
}
