//! On-disk cache of compiled components, so a restart or a new pod does not
//! recompile.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::disk_cache;

/// How many bytes of compiled code a cache keeps unless told otherwise:
/// a few dozen models with their weights inside.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// Compiled components keyed by the component's sha256 and the engine's
/// compatibility hash (wasmtime version, target, settings).
///
/// Every new model version or server upgrade adds an entry (tens of MB for
/// a model with its weights inside), so the cache keeps to a size: storing
/// an entry removes the least recently used ones beyond it.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    max_bytes: u64,
}

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code from the cache.
    Hit,
    /// Compiled (and stored, when a cache directory is set).
    Miss,
}

impl CompileCache {
    /// A cache in `dir` of at most `max_bytes` of compiled code (an entry
    /// larger than that is still kept, alone), or no caching when `None`.
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> CompileCache {
        CompileCache { dir, max_bytes }
    }

    /// The cache folder, if caching is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Compiles `wasm`, or loads its cached compilation.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Miss));
        };
        let mut engine_hash = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut engine_hash);
        let key = format!(
            "{:x}-{:016x}.cwasm",
            Sha256::digest(wasm),
            std::hash::Hasher::finish(&engine_hash)
        );
        let path = dir.join(key);
        if path.is_file() {
            // SAFETY: files in the cache folder are written only by
            // `Component::serialize` below with this same engine
            // configuration (the key carries its compatibility hash); the
            // folder is the operator's to protect, like the binary itself.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Its modification time is when it was last used.
                    if let Err(e) = disk_cache::mark_used(&path) {
                        tracing::warn!(path = %path.display(), "cannot mark a compile cache entry used: {e}");
                    }
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable compile cache entry: {e}")
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = store(dir, &path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), "cannot write compile cache entry: {e}");
        } else if let Err(e) =
            disk_cache::trim(dir, &path, self.max_bytes, |name| name.ends_with(".cwasm"))
        {
            tracing::warn!(dir = %dir.display(), "cannot trim the compile cache: {e}");
        }
        Ok((component, CacheOutcome::Miss))
    }
}

/// Writes atomically (temp file + rename) so a crash never leaves a torn entry.
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
