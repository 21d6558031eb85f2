//! Support for edgeserve's end-to-end tests: the plugin components compiled
//! by `build.rs`, and throwaway model repositories assembled from them.
//!
//! ```no_run
//! let repo = edgeserve_e2e::model_repository(&["linear", "faulty"]);
//! // repo.path()/linear/config.toml, repo.path()/linear/1/model.{wasm,safetensors}, …
//! # let _ = repo;
//! ```

use std::fs;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

mod built {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// `(name, component path)` of every plugin crate in `plugins/`, freshly
/// compiled to a `wasm32-wasip2` component by this crate's build script.
pub use built::PLUGINS;

/// The repository root (the folder holding `plugins/`, `examples/`, `wit/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
}

/// The freshly built component of plugin `name` (e.g. `"linear"`).
///
/// # Panics
/// If there is no plugin crate of that name in `plugins/`.
pub fn plugin(name: &str) -> PathBuf {
    PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| PathBuf::from(path))
        .unwrap_or_else(|| {
            let known: Vec<_> = PLUGINS.iter().map(|(n, _)| *n).collect();
            panic!("no plugin named {name:?}; built plugins: {known:?}")
        })
}

/// A file from `tests/data/` (e.g. `"digits_reference.json"`).
pub fn test_data(name: &str) -> PathBuf {
    repo_root().join("tests").join("data").join(name)
}

/// A model repository in a fresh temporary directory, deleted on drop.
///
/// Dereferences to its [`Path`], so it can be passed wherever a path is
/// expected (`&*repo`, `repo.path()`, `repo.join("linear")`).
#[derive(Debug)]
pub struct ModelRepository {
    dir: TempDir,
}

impl ModelRepository {
    /// The repository's root folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the folder on disk after the value is dropped (for debugging a
    /// failing test) and returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl Deref for ModelRepository {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.dir.path()
    }
}

impl AsRef<Path> for ModelRepository {
    fn as_ref(&self) -> &Path {
        self.dir.path()
    }
}

/// Assembles a model repository holding `models`, in a fresh temporary
/// directory.
///
/// Each model `m` is copied from `examples/models/m` or, failing that,
/// `tests/models/m` (config, weights, assets, every version folder), and the
/// freshly built `plugins/m` component is placed as `model.wasm` in each of
/// its version folders — `1/` is created when the source has none. Any stale
/// `model.wasm` in the source is ignored.
///
/// # Panics
/// If a model has no source folder or no plugin, or on I/O errors: this is
/// test setup.
pub fn model_repository(models: &[&str]) -> ModelRepository {
    let dir = tempfile::Builder::new()
        .prefix("edgeserve-models-")
        .tempdir()
        .expect("creating a temporary model repository");
    for &model in models {
        add_model(dir.path(), model)
            .unwrap_or_else(|e| panic!("adding model {model:?} to the repository: {e}"));
    }
    ModelRepository { dir }
}

/// Adds model `model` to the repository at `repo`, as
/// [`model_repository`] does for each of its models (e.g. to drop a model
/// into a repository a server is already serving).
pub fn add_model(repo: &Path, model: &str) -> io::Result<()> {
    let root = repo_root();
    let source = [root.join("examples/models"), root.join("tests/models")]
        .into_iter()
        .map(|base| base.join(model))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no folder {model} in examples/models or tests/models"),
            )
        })?;
    let wasm = plugin(model);
    let dest = repo.join(model);
    copy_dir(&source, &dest)?;

    let mut versions: Vec<PathBuf> = fs::read_dir(&dest)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_version(p))
        .collect();
    if versions.is_empty() {
        let first = dest.join("1");
        fs::create_dir(&first)?;
        versions.push(first);
    }
    for version in versions {
        fs::copy(&wasm, version.join("model.wasm"))?;
    }
    Ok(())
}

fn is_version(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|v| v > 0)
}

/// Copies `from` into `to` recursively, leaving out `model.wasm` build
/// outputs.
fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &target)?;
        } else if entry.file_name() != "model.wasm" {
            fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_is_built() {
        for name in ["linear", "digits", "faulty"] {
            let path = plugin(name);
            let bytes = fs::read(&path).unwrap();
            // A component, not a core module: magic, then version 0x0d, layer 1.
            assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "{}", path.display());
        }
    }

    #[test]
    fn assembles_a_repository() {
        let repo = model_repository(&["linear", "digits", "faulty"]);
        for model in ["linear", "digits", "faulty"] {
            assert!(repo.join(model).join("config.toml").is_file(), "{model}");
            assert!(repo.join(model).join("1/model.wasm").is_file(), "{model}");
        }
        assert!(repo.join("linear/1/model.safetensors").is_file());
        assert!(repo.join("digits/1/model.safetensors").is_file());
        let path = repo.to_path_buf();
        drop(repo);
        assert!(
            !path.exists(),
            "the temporary repository is removed on drop"
        );
    }
}
