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
    /// Dynamic batching (`[batching]`); absent: every request runs alone.
    pub batching: Option<BatchingConfig>,
    /// A file in the model's folder holding an Open Inference Protocol JSON
    /// inference request, which every instance answers at load, before the
    /// model is ready (Triton's model warmup): the one-time work a first
    /// request would otherwise pay for, such as a GPU driver compiling the
    /// model's kernels, happens then. A request it fails fails the load.
    pub warmup: Option<String>,
}

/// Dynamic batching, the `[batching]` table. Its presence is the handler
/// author's word that every input and output has the batch along axis 0:
/// queued requests that agree on their inputs' datatypes and dims after
/// axis 0, their parameters and their requested outputs run as one
/// handler call on their inputs stacked along axis 0, and each gets its
/// own rows of every output back.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows (axis 0, summed over the requests) in one handler call;
    /// 1 turns batching off.
    pub max_batch_size: usize,
    /// How long a batch's first request waits for others to join it, in
    /// microseconds, when an instance is free (requests that queue for a
    /// busy instance join meanwhile anyway). Added to `queue_timeout_ms`.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Whether a request that finds the model idle (no batch forming,
    /// queued or running) waits out the delay too. Off by default: alone,
    /// the wait is pure latency, and requests arriving while it queues for
    /// an instance join it anyway.
    #[serde(default)]
    pub wait_when_idle: bool,
    /// Batch sizes (rows) the handler runs best at: a batch that reaches
    /// one is run without waiting out the delay.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// Outputs padded with zeros along axis 1 to the batch's longest member
    /// (as token ids are, `[PAD]` being 0): each request's rows are cut
    /// back to its own longest, dropping the trailing columns that are zero
    /// in all of them, so its answer is the one it would have had alone
    /// (the handler vouches that a row's last real element is never zero).
    #[serde(default)]
    pub padded_outputs: Vec<String>,
}

impl BatchingConfig {
    /// Whether requests are batched at all.
    pub fn enabled(&self) -> bool {
        self.max_batch_size > 1
    }

    /// The longest a batch waits for more requests.
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_micros(self.max_queue_delay_us)
    }

    fn validate(&self, queue_timeout_ms: u64) -> Result<(), String> {
        if self.max_batch_size == 0 {
            return Err(
                "[batching] max_batch_size must be at least 1 (1 turns batching off)".into(),
            );
        }
        if let Some(size) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&size| size == 0 || size > self.max_batch_size)
        {
            return Err(format!(
                "[batching] preferred_batch_sizes holds {size}, outside 1..={} (max_batch_size)",
                self.max_batch_size
            ));
        }
        if self.max_queue_delay_us > queue_timeout_ms.saturating_mul(1000) {
            return Err(format!(
                "[batching] max_queue_delay_us ({} µs) is longer than queue_timeout_ms ({queue_timeout_ms} ms)",
                self.max_queue_delay_us
            ));
        }
        Ok(())
    }
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
            batching: None,
            warmup: None,
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
        // Both are used in bytes; a count whose bytes overflow a usize would
        // wrap around to a small or zero limit (found by fuzzing).
        let most = (usize::MAX >> 20) as u64;
        for (key, mib) in [
            ("memory_limit_mib", self.memory_limit_mib),
            ("max_tensor_mib", self.max_tensor_mib),
        ] {
            if mib > most {
                return Err(format!(
                    "{key} is {mib}, more than the {most} MiB a usize can count in bytes"
                ));
            }
        }
        if let Some(batching) = &self.batching {
            batching.validate(self.queue_timeout_ms)?;
        }
        if let Some(file) = &self.warmup
            && !super::valid_entry_name(file)
        {
            return Err(format!(
                "warmup must name a file in the model's folder, not {file:?}"
            ));
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
    fn batching_is_read_and_checked() {
        let config: ModelConfig = toml::from_str(
            "[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 500\n\
             preferred_batch_sizes = [4, 8]\npadded_outputs = [\"ids\"]\n",
        )
        .unwrap();
        let batching = config.batching.as_ref().unwrap();
        assert!(batching.enabled());
        assert_eq!(batching.max_queue_delay(), Duration::from_micros(500));
        assert_eq!(batching.preferred_batch_sizes, [4, 8]);
        assert_eq!(batching.padded_outputs, ["ids"]);
        config.validate().unwrap();
        let off: ModelConfig = toml::from_str("[batching]\nmax_batch_size = 1").unwrap();
        assert!(!off.batching.unwrap().enabled());
        let missing = toml::from_str::<ModelConfig>("[batching]\nmax_queue_delay_us = 5")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("max_batch_size"), "{missing}");
        for (text, complaint) in [
            (
                "[batching]\nmax_batch_size = 0",
                "max_batch_size must be at least 1",
            ),
            (
                "[batching]\nmax_batch_size = 4\npreferred_batch_sizes = [2, 5]",
                "preferred_batch_sizes holds 5, outside 1..=4",
            ),
            (
                "queue_timeout_ms = 2\n[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 2001",
                "max_queue_delay_us (2001 µs) is longer than queue_timeout_ms (2 ms)",
            ),
        ] {
            let config: ModelConfig = toml::from_str(text).unwrap();
            let err = config.validate().unwrap_err();
            assert!(err.contains(complaint), "{text}: {err}");
        }
    }

    #[test]
    fn zero_instances_and_unaddressable_limits_are_refused() {
        let dir = std::env::temp_dir().join(format!("edgeserve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "instances = 0").unwrap();
        let err = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("instances must be at least 1"), "{err}");
        std::fs::write(&path, "memory_limit_mib = 17592186044416").unwrap();
        let err = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("memory_limit_mib is 17592186044416"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
