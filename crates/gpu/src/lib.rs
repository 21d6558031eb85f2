//! The wgpu tensor backend: the contract's operations as WGSL compute
//! kernels on any GPU wgpu reaches (Vulkan, Metal, DX12), including Mesa's
//! software Vulkan device (lavapipe) in CI.
//!
//! Tensors live in device buffers ([`GpuBuffer`] inside
//! [`Storage::Device`]). Operations are recorded into one pending command
//! encoder and submitted together when a tensor is brought back with
//! [`Backend::to_host`], so a request costs one submission. Shapes and dtypes
//! are validated by [`edgeserve_tensor::shape`] before any work, exactly as
//! the CPU backend does.
//!
//! Matmul (and attention's two products) runs a tiled, register-blocked
//! kernel: 128x64 output tiles, 8x4 outputs per thread, whole-vec4 loads and
//! stores when k and n are multiples of 4 and an element-wise specialization
//! otherwise (pipelines are cached per kernel and override constants). The
//! same kernel serves `linear`: the bias and activation are applied to the
//! accumulators before the single store, so they cost no extra pass.
//!
//! A lost device (driver reset, GPU removed) is recorded by wgpu's
//! device-lost callback; from then on every operation fails at once with
//! [`TensorError::DeviceLost`] instead of touching the device.
//!
//! Arithmetic is f32. Layout operations (reshape, transpose, slice, concat,
//! embedding, full) also move i32 and i64 tensors. f16 matmul and linear
//! read and write f16 directly where the device has `shader-f16` (requested
//! whenever the adapter offers it), accumulating in f32 and rounding once;
//! elsewhere they widen to f32 and round the result. Casts convert between
//! f16 and f32; other dtypes are refused with
//! [`TensorError::Unsupported`]. `top_k` downloads its input and runs on the
//! host; `conv2d` is a direct convolution (one thread per output element).
//!
//! Buffers the backend allocates for results are rounded up to a
//! power-of-two size class and, when their last [`GpuBuffer`] handle drops,
//! kept in a per-backend pool (at most [`POOL_CAP`] bytes) for the next
//! allocation of the same class. Reuse is safe without waiting for the
//! device because every use of a buffer is recorded in queue order: work
//! that read the old contents runs before work that overwrites them.

mod kernels;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::shape::{
    self, AttentionPlan, Conv2dPlan, MatmulPlan, Pool2dPlan, ReducePlan,
};
use edgeserve_tensor::{
    Backend, BackendInfo, BinaryOp, DType, HostBuffer, PoolKind, ReduceOp, Result, Storage, Tensor,
    TensorError, UnaryOp,
};
use wgpu::util::DeviceExt;

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

/// A device buffer holding one tensor's elements, as stored in
/// [`Storage::Device`].
#[derive(Debug)]
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    /// Meaningful bytes (the buffer itself is rounded up to whole 16-byte
    /// quads).
    size: u64,
    /// The backend whose device owns the buffer.
    owner: u64,
    /// The host bytes this buffer was uploaded from, kept for integer
    /// tensors so embedding can check ids without a round trip.
    host: Option<HostBuffer>,
    /// The owning backend's memory accounting and free buffers.
    pool: Arc<Pool>,
    /// Whether the buffer is sized to a pool class and goes back to the
    /// pool when dropped.
    recycle: bool,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.pool.release(&self.buffer, self.recycle);
    }
}

impl GpuBuffer {
    /// The wgpu buffer: rounded up to a multiple of 16 bytes (at least 16),
    /// and for results to a power-of-two size class. When the last
    /// [`GpuBuffer`] handle drops the buffer may be reused for another
    /// result, so a clone of it must not outlive the tensor.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Bytes of tensor data in the buffer.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Most bytes of freed buffers a backend keeps for reuse.
pub const POOL_CAP: u64 = 256 << 20;

/// Smallest pool size class, in bytes.
const MIN_CLASS: u64 = 256;

/// A backend's device memory accounting and its freed buffers, by size
/// class (the buffer's size, a power of two).
#[derive(Debug, Default)]
struct Pool {
    /// Bytes of buffers held by live [`GpuBuffer`]s.
    live: AtomicU64,
    free: Mutex<FreeLists>,
}

#[derive(Debug, Default)]
struct FreeLists {
    by_class: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

impl Pool {
    /// A freed buffer of exactly `class` bytes, counted as live again.
    fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = {
            let mut free = lock(&self.free);
            let buffer = free.by_class.get_mut(&class)?.pop()?;
            free.bytes -= class;
            buffer
        };
        self.live.fetch_add(class, Ordering::Relaxed);
        Some(buffer)
    }

    /// Counts a newly created buffer as live.
    fn track(&self, buffer: &wgpu::Buffer) {
        self.live.fetch_add(buffer.size(), Ordering::Relaxed);
    }

    /// A live buffer's last handle dropped: keep it for reuse when it has a
    /// class size and the pool has room, else let wgpu free it once the
    /// device is done with it.
    fn release(&self, buffer: &wgpu::Buffer, recycle: bool) {
        let size = buffer.size();
        self.live.fetch_sub(size, Ordering::Relaxed);
        if !recycle {
            return;
        }
        let mut free = lock(&self.free);
        if free.bytes + size <= POOL_CAP {
            free.by_class.entry(size).or_default().push(buffer.clone());
            free.bytes += size;
        }
    }

    /// Frees every pooled buffer (before retrying a failed allocation).
    fn trim(&self) {
        let mut free = lock(&self.free);
        free.by_class.clear();
        free.bytes = 0;
    }
}

struct State {
    pipelines: HashMap<String, wgpu::ComputePipeline>,
    encoder: Option<wgpu::CommandEncoder>,
    recorded: usize,
}

/// Operations recorded before the pending encoder is submitted without
/// waiting, to bound the memory a long request holds.
const MAX_RECORDED: usize = 512;

/// Largest workgroup count along one dispatch dimension (WebGPU's default).
const MAX_GROUPS: u32 = 65535;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the contract's tensor operations on a GPU through wgpu.
pub struct GpuBackend {
    id: u64,
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    info: BackendInfo,
    /// A CPU rasterizer (lavapipe, SwiftShader…) rather than a real GPU.
    software: bool,
    /// The device was created with WGSL `f16` (`shader-f16`).
    shader_f16: bool,
    /// Bound where an optional input is absent.
    dummy: wgpu::Buffer,
    /// The first error raised outside an error scope (a submission running
    /// out of memory, a validation failure), reported by the next `to_host`.
    uncaptured: Arc<Mutex<Option<TensorError>>>,
    /// Why the device was lost (set by wgpu's device-lost callback); every
    /// operation after that fails fast instead of touching the device.
    lost: Arc<OnceLock<String>>,
    state: Mutex<State>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// `op`'s code in `activation.wgsl`.
fn unary_code(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Neg => 0,
        UnaryOp::Abs => 1,
        UnaryOp::Exp => 2,
        UnaryOp::Log => 3,
        UnaryOp::Sqrt => 4,
        UnaryOp::Rsqrt => 5,
        UnaryOp::Relu => 6,
        UnaryOp::Gelu => 7,
        UnaryOp::GeluTanh => 8,
        UnaryOp::Tanh => 9,
        UnaryOp::Sigmoid => 10,
        UnaryOp::Silu => 11,
        UnaryOp::Erf => 12,
    }
}

/// What the matmul kernel does besides the product.
#[derive(Clone, Copy, Default)]
struct Epilogue<'a> {
    /// Operands and result are f16 (needs `shader-f16`).
    f16: bool,
    /// `[n]`, added to every row.
    bias: Option<&'a wgpu::Buffer>,
    /// Applied to every element last.
    activation: Option<UnaryOp>,
}

fn unsupported(op: &str, dtype: DType) -> TensorError {
    TensorError::Unsupported(format!(
        "gpu backend: {op} on {dtype} not implemented yet (f32 only)"
    ))
}

/// Words (u32) per element for operations that only move elements.
fn words_per_elem(op: &str, dtype: DType) -> Result<usize> {
    match dtype {
        DType::F32 | DType::I32 => Ok(1),
        DType::I64 => Ok(2),
        _ => Err(unsupported(op, dtype)),
    }
}

fn device_lost(op: &str, device: &str, why: &str) -> TensorError {
    TensorError::DeviceLost(format!("{op} on GPU {device}: {why}"))
}

fn f32_only(op: &str, dtype: DType) -> Result<()> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(unsupported(op, dtype))
    }
}

fn u32_of(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        TensorError::Unsupported(format!(
            "gpu backend: {op}: {v} exceeds 32-bit indexing on the device"
        ))
    })
}

/// Device bytes for `bytes` of tensor data: whole 16-byte quads, at least
/// one, because the matmul kernel binds its operands as `array<vec4<f32>>`
/// and a trailing partial quad would be out of its reach.
fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(16).max(1) * 16
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
            lock(&sink).get_or_insert_with(|| {
                let what = "the device reported an error while running recorded work";
                match e {
                    // Out of memory stays typed, so the guest sees
                    // `out-of-memory` rather than a generic failure.
                    wgpu::Error::OutOfMemory { .. } => {
                        TensorError::OutOfMemory(format!("{what}: {e}"))
                    }
                    _ => TensorError::Unsupported(format!("{what}: {e}")),
                }
            });
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
            state: Mutex::new(State {
                pipelines: HashMap::new(),
                encoder: None,
                recorded: 0,
            }),
            pool: Arc::new(Pool::default()),
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
    fn alive(&self, op: &str) -> Result<()> {
        match self.lost.get() {
            None => Ok(()),
            Some(why) => Err(device_lost(op, &self.info.device, why)),
        }
    }

    /// Bytes of device buffers held by live tensors (and scratch buffers of
    /// recorded work) of this backend: uploads and results, rounded up to
    /// their buffers' sizes. Freed buffers kept for reuse are not counted
    /// (see [`GpuBackend::pooled_bytes`]).
    pub fn allocated_bytes(&self) -> u64 {
        self.pool.live.load(Ordering::Relaxed)
    }

    /// Bytes of freed device buffers kept for reuse (at most [`POOL_CAP`]).
    pub fn pooled_bytes(&self) -> u64 {
        lock(&self.pool.free).bytes
    }

    /// A storage buffer for `bytes` bytes. Its contents are undefined: a
    /// buffer from the pool holds what its last user wrote, so every caller
    /// overwrites the whole result.
    fn alloc(&self, op: &str, bytes: u64) -> Result<GpuBuffer> {
        self.alive(op)?;
        let size = padded(bytes);
        let max = self
            .limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size);
        if size > max {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: {bytes} bytes exceed the device's largest buffer ({max} bytes)"
            )));
        }
        // Pool-sized classes for what the pool may keep; larger buffers are
        // allocated exactly, to not waste up to half of them.
        let class = size.next_power_of_two().max(MIN_CLASS);
        let recycle = class <= max && class <= POOL_CAP;
        let wrap = |buffer: wgpu::Buffer| GpuBuffer {
            buffer,
            size: bytes,
            owner: self.id,
            host: None,
            pool: self.pool.clone(),
            recycle,
        };
        if recycle && let Some(buffer) = self.pool.take(class) {
            return Ok(wrap(buffer));
        }
        let size = if recycle { class } else { size };
        let mut retried = false;
        loop {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            match pollster::block_on(scope.pop()) {
                None => {
                    self.pool.track(&buffer);
                    return Ok(wrap(buffer));
                }
                // Give the pooled buffers back to the device and try again.
                Some(_) if !retried && self.pooled_bytes() > 0 => {
                    self.pool.trim();
                    retried = true;
                }
                Some(e) => {
                    return Err(TensorError::OutOfMemory(format!(
                        "{op}: allocating {bytes} bytes on the device failed: {e}"
                    )));
                }
            }
        }
    }

    /// Bytes of a tensor of `shape` and `dtype`, refusing overflow.
    fn bytes_of(op: &str, dtype: DType, shape: &[usize]) -> Result<u64> {
        shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| {
                TensorError::OutOfMemory(format!("{op}: {dtype}{shape:?} overflows memory"))
            })
    }

    /// A fresh device tensor of `shape` and `dtype`.
    fn output(&self, op: &str, dtype: DType, shape: &[usize]) -> Result<(Tensor, Arc<GpuBuffer>)> {
        let size = Self::bytes_of(op, dtype, shape)?;
        let buf = Arc::new(self.alloc(op, size)?);
        let t = Tensor::new(dtype, shape, Storage::Device(buf.clone()));
        Ok((t, buf))
    }

    fn upload(&self, op: &str, t: &Tensor, host: &HostBuffer) -> Result<Arc<GpuBuffer>> {
        self.alive(op)?;
        let size = host.len() as u64;
        let padded = padded(size);
        let max = self
            .limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size);
        if padded > max {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: {size} bytes exceed the device's largest buffer ({max} bytes)"
            )));
        }
        let mut bytes = host.bytes().to_vec();
        bytes.resize(padded as usize, 0);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: uploading {size} bytes failed: {e}"
            )));
        }
        let keep = matches!(t.dtype(), DType::I32 | DType::I64).then(|| host.clone());
        self.pool.track(&buffer);
        Ok(Arc::new(GpuBuffer {
            buffer,
            size,
            owner: self.id,
            host: keep,
            pool: self.pool.clone(),
            recycle: false,
        }))
    }

    /// The device buffer of `t`, uploading host tensors on the fly.
    fn buf(&self, op: &str, t: &Tensor) -> Result<Arc<GpuBuffer>> {
        match t.storage() {
            Storage::Host(h) => self.upload(op, t, h),
            Storage::Device(any) => {
                let Ok(buf) = any.clone().downcast::<GpuBuffer>() else {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the gpu backend cannot read another backend's device tensor"
                    )));
                };
                if buf.owner != self.id {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the tensor lives on another gpu backend instance"
                    )));
                }
                Ok(buf)
            }
        }
    }

    fn params(&self, words: &[u32]) -> wgpu::Buffer {
        let mut w = words.to_vec();
        if w.is_empty() {
            w.push(0);
        }
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&w),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// A 2-D grid of workgroups covering `groups` groups.
    fn grid(op: &str, groups: usize) -> Result<(u32, u32, u32)> {
        let g = u32_of(op, groups)?;
        let x = g.clamp(1, MAX_GROUPS);
        let y = g.div_ceil(x);
        if y > MAX_GROUPS {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: {op}: {groups} workgroups exceed one dispatch"
            )));
        }
        Ok((x, y, 1))
    }

    /// Grid for one thread per item, 256 threads a workgroup.
    fn grid_threads(op: &str, items: usize) -> Result<(u32, u32, u32)> {
        Self::grid(op, items.div_ceil(256))
    }

    fn pipeline(
        &self,
        st: &mut State,
        kernel: &'static str,
        consts: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = format!("{kernel}{consts:?}");
        if let Some(p) = st.pipelines.get(&key) {
            return Ok(p.clone());
        }
        let source = kernels::source(kernel);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: consts,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: kernel {kernel} failed to build: {e}"
            )));
        }
        st.pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Records one dispatch of `kernel` over `buffers` (bound in order) into
    /// the pending encoder.
    fn dispatch(
        &self,
        kernel: &'static str,
        consts: &[(&str, f64)],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.alive(kernel)?;
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let mut st = lock(&self.state);
        let pipeline = self.pipeline(&mut st, kernel, consts)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: binding {kernel} failed: {e}"
            )));
        }
        let device = &self.device;
        let encoder = st.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        st.recorded += 1;
        if st.recorded >= MAX_RECORDED {
            let encoder = st.encoder.take().expect("just recorded into it");
            st.recorded = 0;
            self.queue.submit([encoder.finish()]);
        }
        Ok(())
    }

    /// A kernel taking (params, input, output) with one thread per item.
    #[allow(clippy::too_many_arguments)]
    fn map_kernel(
        &self,
        op: &str,
        kernel: &'static str,
        consts: &[(&str, f64)],
        params: &[u32],
        input: &wgpu::Buffer,
        out: &wgpu::Buffer,
        items: usize,
    ) -> Result<()> {
        let p = self.params(params);
        self.dispatch(
            kernel,
            consts,
            &[&p, input, out],
            Self::grid_threads(op, items)?,
        )
    }

    /// Strided word copy: `y[out_off + Σ c·os] = x[in_off + Σ c·is]` over
    /// every coordinate `c` of `shape`.
    #[allow(clippy::too_many_arguments)]
    fn copy_strided(
        &self,
        op: &str,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        shape: &[usize],
        in_strides: &[usize],
        out_strides: &[usize],
        in_off: usize,
        out_off: usize,
    ) -> Result<()> {
        let n = shape::numel(shape);
        if n == 0 {
            return Ok(());
        }
        let mut p = vec![
            u32_of(op, n)?,
            shape.len() as u32,
            u32_of(op, in_off)?,
            u32_of(op, out_off)?,
        ];
        for v in shape.iter().chain(in_strides).chain(out_strides) {
            p.push(u32_of(op, *v)?);
        }
        self.map_kernel(op, "copy", &[], &p, x, y, n)
    }

    /// Shape and strides in words: 8-byte elements get an innermost axis
    /// of 2 words.
    fn in_words(shape: &[usize], strides: &[usize], words: usize) -> (Vec<usize>, Vec<usize>) {
        let mut s = shape.to_vec();
        let mut st: Vec<usize> = strides.iter().map(|v| v * words).collect();
        if words > 1 {
            s.push(words);
            st.push(1);
        }
        (s, st)
    }

    /// Records a batched product `c[b] = act(a[b] · b[b] + bias)` (or with
    /// `b[b]ᵀ`); `offsets[i]` gives the element offsets of batch `i`'s a and
    /// b.
    #[allow(clippy::too_many_arguments)]
    fn matmul_into(
        &self,
        op: &str,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        (m, n, k): (usize, usize, usize),
        offsets: &[(usize, usize)],
        transpose_b: bool,
        epilogue: Epilogue<'_>,
    ) -> Result<()> {
        let batch = offsets.len();
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let mut table = Vec::with_capacity(2 * batch);
        for &(ao, bo) in offsets {
            table.push(u32_of(op, ao)?);
            table.push(u32_of(op, bo)?);
        }
        u32_of(op, batch * m * n)?;
        let offs = self.params(&table);
        let gx = u32_of(op, n.div_ceil(64))?;
        // Workgroups cover 128 rows x 64 columns of C (see matmul.wgsl).
        let gy = u32_of(op, m.div_ceil(128))?;
        if gx > MAX_GROUPS || gy > MAX_GROUPS {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: {op}: {m}x{n} output exceeds one dispatch"
            )));
        }
        // Whole-quad loads and stores need every row of A, B (or Bᵀ) and C
        // to start on a 16-byte boundary: k and n multiples of 4 align the
        // rows, and every batch's A and B offset must be a whole quad too
        // (the callers' are multiples of k or n, but that is not checked).
        let vec4 =
            k % 4 == 0 && n % 4 == 0 && offsets.iter().all(|&(ao, bo)| ao % 4 == 0 && bo % 4 == 0);
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let consts = [
            ("TRANS_B", flag(transpose_b)),
            ("VEC4", flag(vec4)),
            ("HAS_BIAS", flag(epilogue.bias.is_some())),
            (
                "ACT",
                epilogue
                    .activation
                    .map_or(0.0, |op| f64::from(unary_code(op) + 1)),
            ),
        ];
        let kernel = if epilogue.f16 { "matmul_f16" } else { "matmul" };
        let bias = epilogue.bias.unwrap_or(&self.dummy);
        let mut base = 0usize;
        while base < batch {
            let count = (batch - base).min(MAX_GROUPS as usize);
            let p = self.params(&[m as u32, n as u32, k as u32, base as u32]);
            self.dispatch(
                kernel,
                &consts,
                &[&p, &offs, a, b, c, bias],
                (gx, gy, count as u32),
            )?;
            base += count;
        }
        Ok(())
    }

    /// Matmul and linear after validation: one dispatch of the matmul
    /// kernel, on f16 storage where the device has `shader-f16`.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        s: &MatmulPlan,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let op = if bias.is_some() || s.activation.is_some() {
            "linear"
        } else {
            "matmul"
        };
        let dtype = a.dtype();
        if dtype == DType::F16 && !self.shader_f16 {
            // Widen, compute, round once, as the CPU backend does.
            let wide = |t: &Tensor| self.cast(t, DType::F32);
            let bias = bias.map(wide).transpose()?;
            let y = self.product(s, &wide(a)?, &wide(b)?, bias.as_ref())?;
            return self.cast(&y, DType::F16);
        }
        let (ab, bb) = (self.buf(op, a)?, self.buf(op, b)?);
        let bias = bias.map(|t| self.buf(op, t)).transpose()?;
        let (t, out) = self.output(op, dtype, &s.out_shape)?;
        let offsets: Vec<(usize, usize)> = (0..s.batch)
            .map(|i| {
                let (ai, bi) = s.operands(i);
                (ai * s.m * s.k, bi * s.k * s.n)
            })
            .collect();
        self.matmul_into(
            op,
            &ab.buffer,
            &bb.buffer,
            &out.buffer,
            (s.m, s.n, s.k),
            &offsets,
            s.transpose_b,
            Epilogue {
                f16: dtype == DType::F16,
                bias: bias.as_ref().map(|b| &b.buffer),
                activation: s.activation,
            },
        )?;
        Ok(t)
    }

    /// Submits everything recorded and waits for the device; then reads
    /// `buf`'s `bytes` bytes.
    fn read_back(&self, op: &str, buf: &GpuBuffer) -> Result<Vec<u8>> {
        self.alive(op)?;
        // Whole quads, a multiple of wgpu's 4-byte copy alignment; every
        // device buffer is at least this long (see `alloc` and `upload`).
        let size = padded(buf.size);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: staging {size} bytes failed: {e}"
            )));
        }
        {
            let mut st = lock(&self.state);
            let mut encoder = st.encoder.take().unwrap_or_else(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            st.recorded = 0;
            encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, size);
            self.queue.submit([encoder.finish()]);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| match self.lost() {
                Some(why) => device_lost(op, &self.info.device, &why),
                None => TensorError::Unsupported(format!("{op}: waiting for the device: {e}")),
            })?;
        self.alive(op)?;
        if let Some(e) = lock(&self.uncaptured).take() {
            return Err(e);
        }
        // Another thread's poll may have claimed this map's callback and
        // not run it yet, so an empty channel is not an answer; a
        // disconnected one is (wgpu dropped the callback unanswered).
        let mapped = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(5)) {
                Ok(r) => break r,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the device dropped the read-back"
                    )));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.alive(op)?;
                    let _ = self.device.poll(wgpu::PollType::Poll);
                }
            }
        };
        mapped.map_err(|e| {
            TensorError::Unsupported(format!("{op}: mapping the result failed: {e}"))
        })?;
        let data = {
            let view = staging.get_mapped_range(..).map_err(|e| {
                TensorError::Unsupported(format!("{op}: reading the mapped result failed: {e}"))
            })?;
            view[..buf.size as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    fn unary_f32(
        &self,
        op: &str,
        code: u32,
        x: &Tensor,
        factor: f32,
        offset: f32,
    ) -> Result<Tensor> {
        f32_only(op, x.dtype())?;
        let xb = self.buf(op, x)?;
        let (t, out) = self.output(op, DType::F32, x.shape())?;
        let n = x.numel();
        self.map_kernel(
            op,
            "unary",
            &[("OP", f64::from(code))],
            &[u32_of(op, n)?, factor.to_bits(), offset.to_bits()],
            &xb.buffer,
            &out.buffer,
            n,
        )?;
        Ok(t)
    }
}

impl Backend for GpuBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn from_host(&self, tensor: &Tensor) -> Result<Tensor> {
        let Storage::Host(h) = tensor.storage() else {
            // Already ours (or refused if another device's).
            self.buf("from-host", tensor)?;
            return Ok(tensor.clone());
        };
        let buf = self.upload("from-host", tensor, h)?;
        Ok(Tensor::new(
            tensor.dtype(),
            tensor.shape(),
            Storage::Device(buf),
        ))
    }

    fn to_host(&self, tensor: &Tensor) -> Result<Tensor> {
        if tensor.host().is_some() {
            return Ok(tensor.clone());
        }
        let buf = self.buf("to-host", tensor)?;
        let bytes = self.read_back("to-host", &buf)?;
        Tensor::from_host(
            tensor.dtype(),
            tensor.shape(),
            HostBuffer::copy_from_bytes(tensor.dtype(), &bytes),
        )
    }

    fn full(&self, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
        let size = Self::bytes_of("full", dtype, shape)?;
        if dtype == DType::F16 {
            return Err(unsupported("full", dtype));
        }
        let elem = dtype.element_bytes(value);
        let mut pattern = [0u8; 8];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = elem[i % elem.len()];
        }
        let (t, out) = self.output("full", dtype, shape)?;
        let words = size.div_ceil(4) as usize;
        let p = self.params(&[
            u32_of("full", words)?,
            u32::from_le_bytes([pattern[0], pattern[1], pattern[2], pattern[3]]),
            u32::from_le_bytes([pattern[4], pattern[5], pattern[6], pattern[7]]),
        ]);
        self.dispatch(
            "fill",
            &[],
            &[&p, &out.buffer],
            Self::grid_threads("full", words)?,
        )?;
        Ok(t)
    }

    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        plan: &MatmulPlan,
    ) -> Result<Tensor> {
        self.product(plan, a, b, bias)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        f32_only(op.name(), a.dtype())?;
        let (ab, bb) = (self.buf(op.name(), a)?, self.buf(op.name(), b)?);
        let (t, out) = self.output(op.name(), DType::F32, out_shape)?;
        let n = shape::numel(out_shape);
        if n == 0 {
            return Ok(t);
        }
        let sa = shape::broadcast_strides(a.shape(), out_shape);
        let sb = shape::broadcast_strides(b.shape(), out_shape);
        let mut p = vec![u32_of(op.name(), n)?, out_shape.len() as u32];
        for v in out_shape.iter().chain(&sa).chain(&sb) {
            p.push(u32_of(op.name(), *v)?);
        }
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Maximum => 4,
            BinaryOp::Minimum => 5,
            BinaryOp::Pow => 6,
        };
        let params = self.params(&p);
        self.dispatch(
            "binary",
            &[("OP", f64::from(code))],
            &[&params, &ab.buffer, &bb.buffer, &out.buffer],
            Self::grid_threads(op.name(), n)?,
        )?;
        Ok(t)
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        let code = unary_code(op);
        self.unary_f32(op.name(), code, x, 1.0, 0.0)
    }

    fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
        self.unary_f32("affine", 13, x, factor, offset)
    }

    fn softmax(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        f32_only("softmax", x.dtype())?;
        let xb = self.buf("softmax", x)?;
        let (t, out) = self.output("softmax", DType::F32, x.shape())?;
        let (outer, len, inner) = shape::split_at_axis(x.shape(), axis);
        let rows = outer * inner;
        let p = self.params(&[
            u32_of("softmax", rows)?,
            u32_of("softmax", len)?,
            u32_of("softmax", inner)?,
        ]);
        self.dispatch(
            "softmax",
            &[],
            &[&p, &xb.buffer, &out.buffer],
            Self::grid("softmax", rows)?,
        )?;
        Ok(t)
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        f32_only("layer-norm", x.dtype())?;
        let xb = self.buf("layer-norm", x)?;
        let gb = gamma.map(|g| self.buf("layer-norm", g)).transpose()?;
        let bb = beta.map(|b| self.buf("layer-norm", b)).transpose()?;
        let (t, out) = self.output("layer-norm", DType::F32, x.shape())?;
        let n = *x.shape().last().expect("rank checked by shape::layer_norm");
        let rows = x.numel().checked_div(n).unwrap_or(0);
        let flags = u32::from(gamma.is_some()) | (u32::from(beta.is_some()) << 1);
        let p = self.params(&[
            u32_of("layer-norm", rows)?,
            u32_of("layer-norm", n)?,
            flags,
            eps.to_bits(),
        ]);
        let g = gb.as_ref().map_or(&self.dummy, |g| &g.buffer);
        let b = bb.as_ref().map_or(&self.dummy, |b| &b.buffer);
        self.dispatch(
            "layer_norm",
            &[],
            &[&p, &xb.buffer, g, b, &out.buffer],
            Self::grid("layer-norm", rows)?,
        )?;
        Ok(t)
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        let words = words_per_elem("embedding", table.dtype())?;
        let (vocab, dim) = (table.shape()[0], table.shape()[1]);
        let ib = self.buf("embedding", ids)?;
        // Ids uploaded from the host are checked here, as the CPU backend
        // does; ids computed on the device map out-of-range entries to zeros.
        if let Some(h) = &ib.host {
            let bad = match ids.dtype() {
                DType::I32 => h
                    .as_slice::<i32>()
                    .iter()
                    .map(|&i| i64::from(i))
                    .find(|&i| i < 0 || i as u64 >= vocab as u64),
                _ => h
                    .as_slice::<i64>()
                    .iter()
                    .copied()
                    .find(|&i| i < 0 || i as u64 >= vocab as u64),
            };
            if let Some(id) = bad {
                return Err(shape::id_out_of_range(id, vocab));
            }
        }
        let tb = self.buf("embedding", table)?;
        let (t, out) = self.output("embedding", table.dtype(), out_shape)?;
        let total = shape::numel(out_shape) * words;
        let per_id = if ids.dtype() == DType::I64 { 2 } else { 1 };
        let p = self.params(&[
            u32_of("embedding", total)?,
            u32_of("embedding", (dim * words).max(1))?,
            u32_of("embedding", vocab.min(u32::MAX as usize))?,
            per_id,
        ]);
        self.dispatch(
            "embedding",
            &[],
            &[&p, &ib.buffer, &tb.buffer, &out.buffer],
            Self::grid_threads("embedding", total)?,
        )?;
        Ok(t)
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        if x.host().is_none() {
            self.buf("reshape", x)?;
        }
        Ok(x.with_shape(shape))
    }

    fn transpose(&self, x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor> {
        let words = words_per_elem("transpose", x.dtype())?;
        let xb = self.buf("transpose", x)?;
        let (t, out) = self.output("transpose", x.dtype(), out_shape)?;
        let own = shape::contiguous_strides(x.shape());
        let in_strides: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
        let (s, is) = Self::in_words(out_shape, &in_strides, words);
        let (_, os) = Self::in_words(out_shape, &shape::contiguous_strides(out_shape), words);
        self.copy_strided("transpose", &xb.buffer, &out.buffer, &s, &is, &os, 0, 0)?;
        Ok(t)
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, out_shape: &[usize]) -> Result<Tensor> {
        let words = words_per_elem("slice", x.dtype())?;
        let xb = self.buf("slice", x)?;
        let (t, out) = self.output("slice", x.dtype(), out_shape)?;
        let own = shape::contiguous_strides(x.shape());
        let (s, is) = Self::in_words(out_shape, &own, words);
        let (_, os) = Self::in_words(out_shape, &shape::contiguous_strides(out_shape), words);
        let off = start * own[axis] * words;
        self.copy_strided("slice", &xb.buffer, &out.buffer, &s, &is, &os, off, 0)?;
        Ok(t)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor> {
        let dtype = xs[0].dtype();
        let words = words_per_elem("concat", dtype)?;
        let bufs = xs
            .iter()
            .map(|x| self.buf("concat", x))
            .collect::<Result<Vec<_>>>()?;
        let (t, out) = self.output("concat", dtype, out_shape)?;
        let ostr = shape::contiguous_strides(out_shape);
        let mut at = 0usize;
        for (x, b) in xs.iter().zip(&bufs) {
            let (s, is) = Self::in_words(x.shape(), &shape::contiguous_strides(x.shape()), words);
            let (_, os) = Self::in_words(x.shape(), &ostr, words);
            let off = at * ostr[axis] * words;
            self.copy_strided("concat", &b.buffer, &out.buffer, &s, &is, &os, 0, off)?;
            at += x.shape()[axis];
        }
        Ok(t)
    }

    fn reduce(&self, op: ReduceOp, x: &Tensor, s: &ReducePlan) -> Result<Tensor> {
        let name = format!("reduce {op}");
        f32_only(&name, x.dtype())?;
        let xb = self.buf(&name, x)?;
        let (t, out) = self.output(&name, s.dtype, &s.out_shape)?;
        let count = s.outer * s.inner;
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Mean => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
            ReduceOp::ArgMax => 4,
            ReduceOp::ArgMin => 5,
        };
        self.map_kernel(
            &name,
            "reduce",
            &[("OP", f64::from(code))],
            &[
                u32_of(&name, count)?,
                u32_of(&name, s.len)?,
                u32_of(&name, s.inner)?,
            ],
            &xb.buffer,
            &out.buffer,
            count,
        )?;
        Ok(t)
    }

    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        if x.dtype() == to {
            self.buf("cast", x)?;
            return Ok(x.clone());
        }
        let code = match (x.dtype(), to) {
            (DType::F32, DType::I32) => 0,
            (DType::I32, DType::F32) => 1,
            (DType::I32, DType::I64) => 2,
            (DType::I64, DType::I32) => 3,
            (DType::F32, DType::I64) => 4,
            (DType::I64, DType::F32) => 5,
            (DType::F16, DType::F32) => 6,
            (DType::F32, DType::F16) => 7,
            (from, to) => {
                return Err(TensorError::Unsupported(format!(
                    "gpu backend: cast from {from} to {to} not implemented yet"
                )));
            }
        };
        let xb = self.buf("cast", x)?;
        let (t, out) = self.output("cast", to, x.shape())?;
        let n = x.numel();
        // f32 -> f16 packs two halves per thread, so no two threads write
        // the same word.
        let items = if to == DType::F16 { n.div_ceil(2) } else { n };
        self.map_kernel(
            "cast",
            "cast",
            &[("OP", f64::from(code))],
            &[u32_of("cast", items)?, u32_of("cast", n)?],
            &xb.buffer,
            &out.buffer,
            items,
        )?;
        Ok(t)
    }

    fn conv2d(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        s: &Conv2dPlan,
    ) -> Result<Tensor> {
        let params = s.params;
        f32_only("conv2d", x.dtype())?;
        let xb = self.buf("conv2d", x)?;
        let wb = self.buf("conv2d", weight)?;
        let bb = bias.map(|b| self.buf("conv2d", b)).transpose()?;
        let (t, out) = self.output("conv2d", DType::F32, &s.out_shape)?;
        let n = shape::numel(&s.out_shape);
        // Every index the kernel forms stays below these.
        u32_of("conv2d", x.numel())?;
        u32_of("conv2d", weight.numel())?;
        let mut p = Vec::with_capacity(18);
        for v in [
            n,
            s.n,
            s.c,
            s.h,
            s.w,
            s.o,
            s.kh,
            s.kw,
            s.oh,
            s.ow,
            params.stride.0,
            params.stride.1,
            params.padding.0,
            params.padding.1,
            params.dilation.0,
            params.dilation.1,
            params.groups,
        ] {
            p.push(u32_of("conv2d", v)?);
        }
        // The padded extent the kernel's tap positions reach.
        u32_of("conv2d", s.h + 2 * params.padding.0 + params.stride.0)?;
        u32_of("conv2d", s.w + 2 * params.padding.1 + params.stride.1)?;
        p.push(u32::from(bias.is_some()));
        let p = self.params(&p);
        let b = bb.as_ref().map_or(&self.dummy, |b| &b.buffer);
        self.dispatch(
            "conv2d",
            &[],
            &[&p, &xb.buffer, &wb.buffer, b, &out.buffer],
            Self::grid_threads("conv2d", n)?,
        )?;
        Ok(t)
    }

    fn pool2d(&self, x: &Tensor, s: &Pool2dPlan) -> Result<Tensor> {
        let params = s.params;
        let name = format!("pool2d {}", params.kind);
        f32_only(&name, x.dtype())?;
        let xb = self.buf(&name, x)?;
        let (t, out) = self.output(&name, DType::F32, &s.out_shape)?;
        let n = shape::numel(&s.out_shape);
        u32_of(&name, x.numel())?;
        u32_of(&name, s.h + params.kernel.0 + params.stride.0)?;
        u32_of(&name, s.w + params.kernel.1 + params.stride.1)?;
        let mut p = Vec::with_capacity(12);
        for v in [
            n,
            s.h,
            s.w,
            s.oh,
            s.ow,
            params.kernel.0,
            params.kernel.1,
            params.stride.0,
            params.stride.1,
            params.padding.0,
            params.padding.1,
        ] {
            p.push(u32_of(&name, v)?);
        }
        p.push(f32::NEG_INFINITY.to_bits());
        let code = match params.kind {
            PoolKind::Max => 0,
            PoolKind::Avg => 1,
        };
        self.map_kernel(
            &name,
            "pool2d",
            &[("OP", f64::from(code))],
            &p,
            &xb.buffer,
            &out.buffer,
            n,
        )?;
        Ok(t)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        s: &AttentionPlan,
    ) -> Result<Tensor> {
        f32_only("attention", q.dtype())?;
        let (qb, kb, vb) = (
            self.buf("attention", q)?,
            self.buf("attention", k)?,
            self.buf("attention", v)?,
        );
        let mb = mask.map(|m| self.buf("attention", m)).transpose()?;
        let (lq, lk, d, dv) = (s.lq, s.lk, s.d, s.dv);
        let scores = self.alloc(
            "attention",
            Self::bytes_of("attention", DType::F32, &[s.batch, lq, lk])?,
        )?;
        let ops: Vec<_> = (0..s.batch).map(|b| s.operands(b)).collect();
        let qk: Vec<(usize, usize)> = ops
            .iter()
            .map(|&(qi, ki, _, _)| (qi * lq * d, ki * lk * d))
            .collect();
        self.matmul_into(
            "attention",
            &qb.buffer,
            &kb.buffer,
            &scores.buffer,
            (lq, lk, d),
            &qk,
            true,
            Epilogue::default(),
        )?;
        let (mrs, mcs) = s
            .mask_strides
            .as_ref()
            .map_or((0, 0), |st| (st[st.len() - 2], st[st.len() - 1]));
        let mbase = ops
            .iter()
            .map(|&(_, _, _, m)| u32_of("attention", m))
            .collect::<Result<Vec<_>>>()?;
        let rows = s.batch * lq;
        let p = self.params(&[
            u32_of("attention", rows)?,
            u32_of("attention", lq)?,
            u32_of("attention", lk)?,
            s.scale.to_bits(),
            u32::from(mask.is_some()),
            u32::from(s.causal),
            u32_of("attention", mrs)?,
            u32_of("attention", mcs)?,
        ]);
        let mbase = self.params(&mbase);
        let mbuf = mb.as_ref().map_or(&self.dummy, |m| &m.buffer);
        if lk > 0 {
            self.dispatch(
                "attn_softmax",
                &[],
                &[&p, &mbase, mbuf, &scores.buffer],
                Self::grid("attention", rows)?,
            )?;
        }
        let (t, out) = self.output("attention", DType::F32, &s.out_shape)?;
        let pv: Vec<(usize, usize)> = ops
            .iter()
            .enumerate()
            .map(|(b, &(_, _, vi, _))| (b * lq * lk, vi * lk * dv))
            .collect();
        self.matmul_into(
            "attention",
            &scores.buffer,
            &vb.buffer,
            &out.buffer,
            (lq, dv, lk),
            &pv,
            false,
            Epilogue::default(),
        )?;
        Ok(t)
    }

    /// Downloads `x` (completing pending work), ranks on the host with the
    /// CPU backend's kernel, and uploads both results.
    fn top_k(&self, x: &Tensor, k: usize, out_shape: &[usize]) -> Result<(Tensor, Tensor)> {
        let host = self.to_host(x)?;
        let (values, indices) = CpuBackend::new().top_k(&host, k, out_shape)?;
        Ok((self.from_host(&values)?, self.from_host(&indices)?))
    }
}
