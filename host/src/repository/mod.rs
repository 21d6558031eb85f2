//! The on-disk model repository.
//!
//! ```text
//! <repo>/<model>/config.toml                 optional serving settings
//! <repo>/<model>/<warm-up request>           optional, as the config's `warmup` names it
//! <repo>/<model>/<version>/model.wasm         the handler component
//! <repo>/<model>/<version>/model.safetensors  optional weights
//! <repo>/<model>/<version>/<asset>            files the handler may read
//! ```
//! Versions are positive integers; requests without a version go to the
//! highest one.

mod config;
mod files;
mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::{BatchingConfig, ModelConfig};
pub use files::ModelFiles;
pub use weights::Weights;

/// File name of a version's component.
pub const COMPONENT_FILE: &str = "model.wasm";
/// File name of a version's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of a model's settings.
pub const CONFIG_FILE: &str = "config.toml";

/// What went wrong reading the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No folder of that name in the repository.
    #[error("model '{name}' is not in the repository at {root}")]
    UnknownModel {
        /// The requested model.
        name: String,
        /// The repository root.
        root: PathBuf,
    },
    /// The model folder has no version holding a component.
    #[error("model '{name}' has no version folder containing {COMPONENT_FILE}")]
    NoVersions {
        /// The model.
        name: String,
    },
    /// `config.toml` is malformed.
    #[error("invalid config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file is malformed or holds an unsupported dtype.
    #[error("invalid weights {path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A model as found on disk.
#[derive(Clone, Debug)]
pub struct ModelSource {
    /// Folder name, which is the model's name.
    pub name: String,
    /// Its settings.
    pub config: ModelConfig,
    /// Version number → version folder, ascending.
    pub versions: BTreeMap<u64, PathBuf>,
    /// The warm-up request `config.warmup` names: its path and its bytes.
    pub warmup: Option<(PathBuf, bytes::Bytes)>,
}

/// A model repository rooted at a folder.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// A repository at `root` (not read until asked).
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository { root: root.into() }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of every model folder, sorted.
    pub fn model_names(&self) -> Result<Vec<String>, RepositoryError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| RepositoryError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads one model's folder: its config and its versions.
    pub fn model(&self, name: &str) -> Result<ModelSource, RepositoryError> {
        let dir = self.root.join(name);
        if !valid_entry_name(name) || !dir.is_dir() {
            return Err(RepositoryError::UnknownModel {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
        let entries = std::fs::read_dir(&dir).map_err(|source| RepositoryError::Io {
            path: dir.clone(),
            source,
        })?;
        let versions: BTreeMap<u64, PathBuf> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u64>().ok()?;
                let path = e.path();
                (version > 0 && path.join(COMPONENT_FILE).is_file()).then_some((version, path))
            })
            .collect();
        if versions.is_empty() {
            return Err(RepositoryError::NoVersions {
                name: name.to_owned(),
            });
        }
        let warmup = match &config.warmup {
            Some(file) => {
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(|source| RepositoryError::Io {
                    path: path.clone(),
                    source,
                })?;
                Some((path, bytes.into()))
            }
            None => None,
        };
        Ok(ModelSource {
            name: name.to_owned(),
            config,
            versions,
            warmup,
        })
    }
}

/// Whether `name` may name a model folder, or a file in one that a config
/// names: ASCII letters, digits, `-`, `_` and `.`, not empty and not hidden
/// (so it never escapes the repository).
pub(crate) fn valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versions_holding_a_component_and_ignores_the_rest() {
        let root = std::env::temp_dir().join(format!("edgeserve-repo-{}", std::process::id()));
        for (dir, file) in [
            ("m/1", "model.wasm"),
            ("m/3", "model.wasm"),
            ("m/2", "notes.txt"),
            ("m/x", "model.wasm"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(file), b"").unwrap();
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let repo = Repository::new(&root);
        assert_eq!(repo.model_names().unwrap(), ["empty", "m"]);
        let m = repo.model("m").unwrap();
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(m.config, ModelConfig::default());
        assert!(matches!(
            repo.model("empty"),
            Err(RepositoryError::NoVersions { .. })
        ));
        assert!(matches!(
            repo.model("../etc"),
            Err(RepositoryError::UnknownModel { .. })
        ));
        assert!(matches!(
            repo.model("nope"),
            Err(RepositoryError::UnknownModel { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
