//! What a handler reads from the repository while it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use edgeserve_tensor::Tensor;

use super::{ModelConfig, RepositoryError, WEIGHTS_FILE, Weights};

/// One version of a model as its handler sees it: its weights, the plain
/// files of its version folder (`model.asset`) and its config's
/// `[parameters]` (`model.parameter`).
#[derive(Clone, Debug)]
pub struct ModelFiles {
    dir: PathBuf,
    parameters: BTreeMap<String, String>,
}

impl ModelFiles {
    /// The files of version folder `dir`, with the parameters of `config`.
    pub fn new(dir: impl Into<PathBuf>, config: &ModelConfig) -> ModelFiles {
        ModelFiles {
            dir: dir.into(),
            parameters: config.parameters.clone(),
        }
    }

    /// The version's weights (none when it ships no weights file), each
    /// passed through `place` (e.g. an upload to a device), whose error
    /// message names the file.
    pub fn weights(
        &self,
        place: impl FnMut(&Tensor) -> Result<Tensor, String>,
    ) -> Result<Weights, RepositoryError> {
        let path = self.dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            return Ok(Weights::default());
        }
        Weights::open(&path)?
            .try_map(place)
            .map_err(|message| RepositoryError::Weights { path, message })
    }

    /// The `[parameters]` entry `key`.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }

    /// The file `name` of the version folder; `None` when it is missing or
    /// `name` is not a plain file name.
    pub fn asset(&self, name: &str) -> Option<Vec<u8>> {
        // Only plain file names: the guest must not walk out of its folder.
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
        if !plain {
            return None;
        }
        std::fs::read(self.dir.join(name)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_plain_files_of_the_version_folder() {
        let root = std::env::temp_dir().join(format!("edgeserve-files-{}", std::process::id()));
        let dir = root.join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vocab.txt"), b"a b").unwrap();
        std::fs::write(dir.join(".hidden"), b"x").unwrap();
        std::fs::write(root.join("secret"), b"x").unwrap();
        let mut config = ModelConfig::default();
        config.parameters.insert("label".into(), "x".into());
        let files = ModelFiles::new(&dir, &config);
        assert_eq!(files.asset("vocab.txt").as_deref(), Some(&b"a b"[..]));
        for refused in ["", ".hidden", "../secret", "..\\secret", "missing"] {
            assert_eq!(files.asset(refused), None, "{refused}");
        }
        assert_eq!(files.parameter("label"), Some("x"));
        assert_eq!(files.parameter("nope"), None);
        assert_eq!(files.weights(|t| Ok(t.clone())).unwrap().byte_len(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }
}
