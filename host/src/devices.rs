//! The compute devices models run on: the native CPU backend always, a wgpu
//! GPU backend when one is asked for or found.

use std::sync::Arc;

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, BackendInfo};
use serde::Deserialize;

/// A kind of device a model may ask for in its config (`device = "gpu"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The native CPU backend.
    Cpu,
    /// The wgpu backend.
    Gpu,
}

/// The `--device` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU when there is one, else the CPU (software rasterizers
    /// such as lavapipe are slower than the native CPU backend, so they are
    /// passed over).
    Auto,
    /// A GPU adapter (software ones included); fail at start without one.
    Gpu,
    /// The native CPU backend only.
    Cpu,
}

/// The variable (and value) that turns off Mesa's Vulkan device-select layer.
pub const DEVICE_SELECT_OFF: (&str, &str) = ("NODEVICE_SELECT", "1");

/// Whether to turn off Mesa's implicit `VK_LAYER_MESA_device_select` before
/// the adapter probe, given the environment as `var` reads it.
///
/// That layer orders GPUs for desktop sessions: each time the Vulkan loader
/// lists devices (twice per wgpu probe) it connects to the Wayland display,
/// and without `XDG_RUNTIME_DIR` libwayland prints `error: XDG_RUNTIME_DIR
/// is invalid or not set in the environment.` each time, which a newcomer
/// reads as a failure. Without a display it has nothing to order by (wgpu
/// picks the adapter itself), so it is skipped unless the deployer chose.
pub fn skip_device_select_layer(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    ["NODEVICE_SELECT", "WAYLAND_DISPLAY", "DISPLAY"]
        .iter()
        .all(|name| var(name).is_none())
}

/// Why a device is not available.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `--device gpu` and no adapter could be opened.
    #[error("--device gpu: {0}")]
    NoGpu(#[from] edgeserve_gpu::GpuError),
    /// A model asked for a GPU this server did not open.
    #[error(
        "this server has no GPU backend (start it with --device gpu or auto on a machine with a GPU)"
    )]
    GpuNotOpened,
}

/// The backends this server runs models on.
#[derive(Clone)]
pub struct Devices {
    cpu: Arc<dyn Backend>,
    gpu: Option<Arc<GpuBackend>>,
    default: DeviceKind,
}

/// Device memory held by the GPU backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The device.
    pub info: BackendInfo,
    /// Bytes held by live tensors (weights and request intermediates).
    pub allocated: u64,
    /// Bytes of freed buffers kept for reuse.
    pub pooled: u64,
}

impl Devices {
    /// Opens the devices `choice` asks for.
    pub fn open(choice: DeviceChoice) -> Result<Devices, DeviceError> {
        let gpu = match choice {
            DeviceChoice::Cpu => None,
            DeviceChoice::Gpu => Some(GpuBackend::new()?),
            DeviceChoice::Auto => match GpuBackend::new() {
                Ok(gpu) if !gpu.is_software() => Some(gpu),
                Ok(gpu) => {
                    tracing::info!(adapter = %gpu.info().device, "--device auto: passing over a software GPU adapter");
                    None
                }
                Err(e) => {
                    tracing::info!("--device auto: no GPU ({e}); using the CPU backend");
                    None
                }
            },
        };
        let default = if gpu.is_some() {
            DeviceKind::Gpu
        } else {
            DeviceKind::Cpu
        };
        Ok(Devices {
            cpu: Arc::new(CpuBackend::new()),
            gpu: gpu.map(Arc::new),
            default,
        })
    }

    /// The backend for a model asking for `kind` (`None`: the default).
    pub fn backend(&self, kind: Option<DeviceKind>) -> Result<Arc<dyn Backend>, DeviceError> {
        match kind.unwrap_or(self.default) {
            DeviceKind::Cpu => Ok(self.cpu.clone()),
            DeviceKind::Gpu => self
                .gpu
                .clone()
                .map(|g| g as Arc<dyn Backend>)
                .ok_or(DeviceError::GpuNotOpened),
        }
    }

    /// The GPU backend, when one is open.
    pub fn gpu(&self) -> Option<&Arc<GpuBackend>> {
        self.gpu.as_ref()
    }

    /// The default device's description.
    pub fn default_info(&self) -> BackendInfo {
        match (self.default, &self.gpu) {
            (DeviceKind::Gpu, Some(gpu)) => gpu.info(),
            _ => self.cpu.info(),
        }
    }

    /// Device memory in use, when a GPU is open.
    pub fn gpu_memory(&self) -> Option<DeviceMemory> {
        self.gpu.as_ref().map(|g| DeviceMemory {
            info: g.info(),
            allocated: g.allocated_bytes(),
            pooled: g.pooled_bytes(),
        })
    }

    /// Every open device.
    pub fn all(&self) -> Vec<BackendInfo> {
        std::iter::once(self.cpu.info())
            .chain(self.gpu.iter().map(|g| g.info()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(set: &[&str]) -> bool {
        skip_device_select_layer(|name| set.contains(&name).then(|| "x".into()))
    }

    #[test]
    fn the_device_select_layer_is_skipped_only_without_a_display_or_a_choice() {
        assert!(skips(&[]));
        assert!(skips(&["XDG_RUNTIME_DIR"]));
        assert!(!skips(&["WAYLAND_DISPLAY"]));
        assert!(!skips(&["DISPLAY"]));
        assert!(!skips(&["NODEVICE_SELECT"]));
    }
}
