//! A model's `config.toml`: serving limits and handler parameters.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::RepositoryError;

/// Per-model serving settings, read from `<repo>/<model>/config.toml`.
/// Every key is optional; the defaults suit a small model.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Warm instances kept per version; also the model's concurrency.
    pub instances: usize,
    /// Deadline for one `infer` call, in milliseconds.
    pub timeout_ms: u64,
    /// Cap on each instance's linear memory, in MiB.
    pub memory_limit_mib: u64,
    /// How long a request may wait for a free instance before a 503.
    pub queue_timeout_ms: u64,
    /// Cap on live tensor handles per instance.
    pub max_tensors: usize,
    /// Cap on the bytes of live (non-weight) tensors per instance, in MiB.
    pub max_tensor_mib: u64,
    /// Device override ("cpu" or "gpu"); the server's default when absent.
    pub device: Option<crate::devices::DeviceKind>,
    /// Forward requests that find no free instance within the queue
    /// deadline to the upstream server instead of answering 503 (needs
    /// `--upstream`); the server's `--offload-on-queue-timeout` when absent.
    pub offload_on_queue_timeout: Option<bool>,
    /// Free-form values the handler reads with `model.parameter(key)`.
    pub parameters: BTreeMap<String, String>,
    /// What the model does, for clients (model metadata's `parameters.task`)
    /// and the console, which shows a matching widget: `digits`,
    /// `embeddings`, `recommender` or `text-generation`.
    pub task: Option<String>,
    /// How `/v1/chat/completions` turns messages into a prompt for a
    /// text-generation model: `plain` (the default) or `chatml`.
    pub chat_template: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            instances: 2,
            timeout_ms: 5_000,
            memory_limit_mib: 256,
            queue_timeout_ms: 1_000,
            max_tensors: 4_096,
            max_tensor_mib: 1_024,
            device: None,
            offload_on_queue_timeout: None,
            parameters: BTreeMap::new(),
            task: None,
            chat_template: None,
        }
    }
}

impl ModelConfig {
    /// Reads `path`, or the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<ModelConfig, RepositoryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(source) => {
                return Err(RepositoryError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let config: ModelConfig = toml::from_str(&text).map_err(|e| RepositoryError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config
            .validate()
            .map_err(|message| RepositoryError::Config {
                path: path.to_owned(),
                message,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.instances == 0 {
            return Err("instances must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".into());
        }
        if self.memory_limit_mib == 0 {
            return Err("memory_limit_mib must be at least 1".into());
        }
        Ok(())
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The longest wait for a free instance.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// The linear-memory cap in bytes.
    pub fn memory_limit_bytes(&self) -> usize {
        (self.memory_limit_mib as usize) << 20
    }

    /// The live-tensor cap in bytes.
    pub fn max_tensor_bytes(&self) -> usize {
        (self.max_tensor_mib as usize) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_rejects_unknown_ones() {
        let config: ModelConfig = toml::from_str(
            "instances = 3\ntimeout_ms = 10\nmemory_limit_mib = 8\nqueue_timeout_ms = 5\n\
             max_tensors = 7\nmax_tensor_mib = 9\ndevice = \"gpu\"\n\
             offload_on_queue_timeout = true\n[parameters]\nlabel = \"x\"\n",
        )
        .unwrap();
        assert_eq!(config.instances, 3);
        assert_eq!(config.timeout(), Duration::from_millis(10));
        assert_eq!(config.memory_limit_bytes(), 8 << 20);
        assert_eq!(config.parameters["label"], "x");
        assert_eq!(config.device, Some(crate::devices::DeviceKind::Gpu));
        assert_eq!(config.offload_on_queue_timeout, Some(true));
        let err = toml::from_str::<ModelConfig>("instanses = 3").unwrap_err();
        assert!(err.to_string().contains("instanses"), "{err}");
    }

    #[test]
    fn zero_instances_is_refused() {
        let dir = std::env::temp_dir().join(format!("edgeserve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "instances = 0").unwrap();
        let err = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("instances must be at least 1"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
