//! Opening the device, and noticing when it is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use edgeserve_tensor::{BackendInfo, Result, TensorError};

use crate::buffers::Pool;
use crate::{GpuBackend, lock};

/// Why a [`GpuBackend`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter (GPU or software device) is visible to wgpu.
    #[error("no GPU adapter found (install mesa-vulkan-drivers for a software Vulkan device): {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device with its own limits.
    #[error("GPU adapter {adapter} refused to open a device: {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's explanation.
        reason: String,
    },
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl GpuBackend {
    /// Opens the highest-performance adapter wgpu finds (honouring
    /// `WGPU_BACKEND` and related environment variables), with the
    /// adapter's own limits so large buffers are allowed.
    pub fn new() -> Result<GpuBackend, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let ai = adapter.get_info();
        let limits = adapter.limits();
        let f16 = adapter.features() & wgpu::Features::SHADER_F16;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("edgeserve-gpu"),
            required_features: f16,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: ai.name.clone(),
            reason: e.to_string(),
        })?;
        let lost = Arc::new(OnceLock::<String>::new());
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let _ = lost_sink.set(format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::new(Mutex::new(None::<TensorError>));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&sink).get_or_insert_with(|| recorded_work_failed(e));
        }));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let driver = match (ai.driver.is_empty(), ai.driver_info.is_empty()) {
            (false, false) => format!("{} {}", ai.driver, ai.driver_info),
            (false, true) => ai.driver.clone(),
            _ => ai.driver_info.clone(),
        };
        Ok(GpuBackend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            info: BackendInfo {
                kind: "gpu",
                device: ai.name.clone(),
                api: format!("{:?}", ai.backend),
                driver,
            },
            software: ai.device_type == wgpu::DeviceType::Cpu,
            shader_f16: !f16.is_empty(),
            limits: device.limits(),
            device,
            queue,
            dummy,
            uncaptured,
            lost,
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Pool::default()),
            read_backs: Default::default(),
            tile_group: std::sync::atomic::AtomicU32::new(1),
            token: Arc::new(()),
        })
    }

    /// Whether the adapter is a software rasterizer (e.g. Mesa lavapipe):
    /// correct, but slower than the native CPU backend, so automatic device
    /// selection passes it over.
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// Whether the device has WGSL `f16` (`shader-f16`), so f16 matmul and
    /// linear run natively on f16 storage instead of widening to f32.
    pub fn has_shader_f16(&self) -> bool {
        self.shader_f16
    }

    /// Sets the order in which the matmul kernel's workgroups cover a
    /// product's output: `rows` rows of 128x64 tiles per group, each
    /// group's rows walked before its next column (1, the default: row
    /// after row). Every order computes the same result; on a large
    /// product, a group of a few rows keeps the workgroups running at once
    /// on shared panels of both operands. Products recorded afterwards use
    /// it, on every thread. For measuring the orders side by side
    /// (`examples/matmul_gflops`).
    pub fn set_matmul_tile_group(&self, rows: u32) {
        self.tile_group
            .store(rows.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The matmul grid order's tile rows per group
    /// ([`GpuBackend::set_matmul_tile_group`]).
    pub fn matmul_tile_group(&self) -> u32 {
        self.tile_group.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the device was lost (driver reset, GPU removed, or
    /// [`GpuBackend::destroy_device`]), or `None` while it works. Once lost,
    /// every operation of this backend fails with
    /// [`TensorError::DeviceLost`]; the server answers 5xx for the model.
    pub fn lost(&self) -> Option<String> {
        self.lost.get().cloned()
    }

    /// Destroys the device as a GPU reset would, for fault-injection tests:
    /// buffers are freed and later operations fail with a device-lost error
    /// rather than panicking or hanging.
    pub fn destroy_device(&self) {
        self.device.destroy();
        // wgpu reports a destroyed device through the lost callback; record
        // it here too in case the callback only fires on the next poll.
        let _ = self.lost.set("Destroyed: device destroyed".into());
    }

    /// Refuses work once the device is lost.
    pub(crate) fn alive(&self, op: &str) -> Result<()> {
        match self.lost.get() {
            None => Ok(()),
            Some(why) => Err(TensorError::DeviceLost(format!(
                "{op} on GPU {}: {why}",
                self.info.device
            ))),
        }
    }
}

/// The error of recorded work that the device refused or could not run.
pub(crate) fn recorded_work_failed(e: wgpu::Error) -> TensorError {
    let what = "the device reported an error while running recorded work";
    match e {
        // Out of memory stays typed, so the guest sees `out-of-memory`
        // rather than a generic failure.
        wgpu::Error::OutOfMemory { .. } => TensorError::OutOfMemory(format!("{what}: {e}")),
        _ => TensorError::Unsupported(format!("{what}: {e}")),
    }
}
