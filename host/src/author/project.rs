//! A handler project on disk: its `edgeserve.toml` manifest.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AuthorError, Lang, io};

/// The contract version this host serves and scaffolds against: the
/// `package edgeserve:handler@…` line of `wit/edgeserve.wit`.
pub const CONTRACT_VERSION: &str = crate::runtime::CONTRACT_VERSION;

/// The manifest's file name.
pub const MANIFEST: &str = "edgeserve.toml";

/// A handler project: its folder and what its manifest declares.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project folder.
    pub dir: PathBuf,
    /// What `edgeserve.toml` says.
    pub manifest: Manifest,
}

/// `edgeserve.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The model name it installs as.
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// The contract version it was written against.
    pub contract: String,
    /// Files (relative to the project) installed next to `model.wasm`:
    /// `model.safetensors`, tokenizer vocabularies and other assets.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The model's `config.toml` (instances, limits, `[parameters]`),
    /// installed in the model folder when given.
    #[serde(default)]
    pub config: Option<PathBuf>,
}

impl Project {
    /// Reads the project in `dir`.
    pub fn open(dir: &Path) -> Result<Project, AuthorError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AuthorError::Manifest {
                path: path.clone(),
                message: "not found: is this a project made by `edgeserve new`?".into(),
            },
            _ => io("reading", &path)(e),
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| AuthorError::Manifest {
            path: path.clone(),
            message: e.message().to_owned(),
        })?;
        validate_name(&manifest.name)?;
        Ok(Project {
            dir: dir.to_owned(),
            manifest,
        })
    }
}

/// A name usable as a model folder, a Rust crate and a Python module file.
pub fn validate_name(name: &str) -> Result<(), AuthorError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AuthorError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_lowercase_identifiers() {
        assert!(validate_name("double-2").is_ok());
        for bad in ["", "2x", "Double", "a_b", "a/b", "../x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_manifest_with_an_unknown_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            "name = \"x\"\nlang = \"python\"\ncontract = \"0.1.1\"\nweights = []\n",
        )
        .unwrap();
        let err = Project::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("weights"), "{err}");
    }
}
