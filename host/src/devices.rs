//! The compute devices models run on: the native CPU backend always, a wgpu
//! GPU backend when one is asked for or found.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

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
    /// The thread that watches the GPU for a loss did not start.
    #[error("cannot start the GPU watcher: {0}")]
    Watch(std::io::Error),
}

/// The backends this server runs models on. Clones share them, and see a
/// lost GPU replaced ([`Devices::reopen_gpu`]).
#[derive(Clone)]
pub struct Devices {
    cpu: Arc<dyn Backend>,
    choice: DeviceChoice,
    open: Arc<RwLock<OpenGpu>>,
    /// Read-backs of the GPUs lost and replaced so far.
    earlier_read_backs: Arc<AtomicU64>,
}

/// The GPU in use, if any, and the default device.
struct OpenGpu {
    gpu: Option<Arc<GpuBackend>>,
    default: DeviceKind,
}

impl OpenGpu {
    fn new(gpu: Option<GpuBackend>) -> OpenGpu {
        OpenGpu {
            default: match gpu {
                Some(_) => DeviceKind::Gpu,
                None => DeviceKind::Cpu,
            },
            gpu: gpu.map(Arc::new),
        }
    }
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
    /// Bytes the device's allocator has handed out in all, when it reports
    /// ([`GpuBackend::device_bytes`]).
    pub device: Option<u64>,
}

impl Devices {
    /// Opens the devices `choice` asks for.
    pub fn open(choice: DeviceChoice) -> Result<Devices, DeviceError> {
        Ok(Devices::on(choice, open_gpu(choice)?))
    }

    /// Runs on `gpu`, a GPU the caller opened (an adapter of its choosing,
    /// which `choice` might have passed over), as the default device;
    /// `choice` decides what replaces it after a loss ([`Devices::reopen_gpu`]).
    pub fn with_gpu(choice: DeviceChoice, gpu: GpuBackend) -> Devices {
        Devices::on(choice, Some(gpu))
    }

    fn on(choice: DeviceChoice, gpu: Option<GpuBackend>) -> Devices {
        Devices {
            cpu: Arc::new(CpuBackend::new()),
            choice,
            open: Arc::new(RwLock::new(OpenGpu::new(gpu))),
            earlier_read_backs: Arc::default(),
        }
    }

    /// Why the GPU in use was lost, or `None` while it works (or when
    /// there is none).
    pub fn gpu_lost(&self) -> Option<String> {
        self.gpu().and_then(|gpu| gpu.lost())
    }

    /// Replaces a lost GPU with a freshly opened device, as `--device`
    /// chose it: with `auto`, the CPU backend takes over when no GPU opens.
    /// Returns the new default device; models must be reloaded onto it.
    pub fn reopen_gpu(&self) -> Result<BackendInfo, DeviceError> {
        let fresh = OpenGpu::new(open_gpu(self.choice)?);
        let lost = std::mem::replace(
            &mut *self.open.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        if let Some(lost) = lost.gpu {
            self.earlier_read_backs
                .fetch_add(lost.read_backs(), Ordering::Relaxed);
        }
        Ok(self.default_info())
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, OpenGpu> {
        self.open.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend for a model asking for `kind` (`None`: the default).
    pub fn backend(&self, kind: Option<DeviceKind>) -> Result<Arc<dyn Backend>, DeviceError> {
        let open = self.state();
        match kind.unwrap_or(open.default) {
            DeviceKind::Cpu => Ok(self.cpu.clone()),
            DeviceKind::Gpu => open
                .gpu
                .clone()
                .map(|g| g as Arc<dyn Backend>)
                .ok_or(DeviceError::GpuNotOpened),
        }
    }

    /// The GPU backend, when one is open.
    pub fn gpu(&self) -> Option<Arc<GpuBackend>> {
        self.state().gpu.clone()
    }

    /// The default device's description.
    pub fn default_info(&self) -> BackendInfo {
        let open = self.state();
        match (open.default, &open.gpu) {
            (DeviceKind::Gpu, Some(gpu)) => gpu.info(),
            _ => self.cpu.info(),
        }
    }

    /// Device memory in use, when a GPU is open.
    pub fn gpu_memory(&self) -> Option<DeviceMemory> {
        self.gpu().map(|g| DeviceMemory {
            info: g.info(),
            allocated: g.allocated_bytes(),
            pooled: g.pooled_bytes(),
            device: g.device_bytes(),
        })
    }

    /// The GPU's name and how many times results were read back from it
    /// (each a wait for the device; see [`GpuBackend::read_backs`]), the
    /// GPUs it replaced included, when a GPU is open.
    pub fn gpu_read_backs(&self) -> Option<(String, u64)> {
        self.gpu().map(|g| {
            let earlier = self.earlier_read_backs.load(Ordering::Relaxed);
            (g.info().device, earlier + g.read_backs())
        })
    }

    /// Every open device.
    pub fn all(&self) -> Vec<BackendInfo> {
        std::iter::once(self.cpu.info())
            .chain(self.gpu().map(|g| g.info()))
            .collect()
    }
}

/// The GPU `choice` asks for: `None` for the CPU alone.
fn open_gpu(choice: DeviceChoice) -> Result<Option<GpuBackend>, DeviceError> {
    Ok(match choice {
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
    })
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
