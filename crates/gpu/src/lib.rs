//! The wgpu tensor backend: the contract's operations as WGSL compute
//! kernels on any GPU wgpu reaches (Vulkan, Metal, DX12), including Mesa's
//! software Vulkan device (lavapipe) in CI.
//!
//! Tensors live in device buffers ([`GpuBuffer`] inside
//! [`Storage::Device`](edgeserve_tensor::Storage::Device)). Each thread
//! records its operations into a command encoder of its own and submits
//! them together when it brings a tensor back with [`Backend::to_host`], so
//! a request costs one submission and requests on different threads
//! overlap rather than queue for one encoder. Operations arrive validated,
//! with the plans of [`edgeserve_tensor::shape`], through
//! [`edgeserve_tensor::Ops`].
//!
//! The modules mirror the CPU backend's: `device` opens the device and
//! notices its loss, `buffers` holds the memory pool, uploads and read-backs,
//! `encoder` the pipelines and kernel launches, `stream` the per-thread
//! recordings and the order between them (one compute pass each, the
//! parameter words of its dispatches packed into its `arena`),
//! `broadcast` the launcher of broadcasting kernels, and one module per op
//! family records its kernels (WGSL under `src/kernels/`, assembled by
//! `kernels`).
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
//! embedding, gather, expand, where, full) also move i32 and i64 tensors,
//! `compare` also compares i32 and i64 (into u8 masks, which `where` takes
//! as conditions like any dtype), and top-k ranks f32, f16, i32 and i64. f16 matmul and linear read and write f16 directly where the
//! device has `shader-f16` (requested whenever the adapter offers it),
//! accumulating in f32 and rounding once; elsewhere they widen to f32 and
//! round the result. Casts convert between f16 and f32; other dtypes are
//! refused with [`TensorError::Unsupported`]. `conv2d` is a direct
//! convolution (one thread per output element).
//!
//! Buffers the backend allocates for results are rounded up to a
//! power-of-two size class and, when their last [`GpuBuffer`] handle drops,
//! kept in a per-backend pool (at most [`POOL_CAP`] bytes) for the next
//! allocation of the same class. Reuse is safe without waiting for the
//! device because every use of a buffer is submitted in queue order: a
//! buffer freed while a thread's unsubmitted work uses it is reused only by
//! that thread until it submits, and a thread reading another thread's
//! unsubmitted result submits that work first, so work that read the old
//! contents runs before work that overwrites them. Uploads go to the pool
//! too, but for weights over 256 KiB, which get buffers of their exact
//! size. A buffer the pool lets go is destroyed only while no read-back
//! waits for the device: wgpu's destroy would otherwise wait for that
//! read-back, and stall every thread recording meanwhile.

mod arena;
mod attention;
mod broadcast;
mod buffers;
mod conv;
mod device;
mod elementwise;
mod encoder;
mod kernels;
mod layout;
mod matmul;
mod reduce;
mod select;
mod stream;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use edgeserve_tensor::shape::{
    AttentionPlan, ClipBounds, Conv2dPlan, GatherPlan, LstmPlan, MatmulPlan, Pool2dPlan,
    ReducePlan, VarlenAttentionPlan,
};
use edgeserve_tensor::{
    AttentionInputs, Backend, BackendInfo, BinaryOp, CompareOp, DType, NormParams, ReduceOp,
    Result, Tensor, TensorError, UnaryOp, WeightedInputs,
};

use broadcast::Broadcast;
pub use buffers::{GpuBuffer, POOL_CAP};
pub use device::GpuError;

/// Runs the contract's tensor operations on a GPU through wgpu.
pub struct GpuBackend {
    /// Tells this backend's buffers from another instance's.
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
    /// The first error raised outside an error scope, reported by the next
    /// `to_host` of any thread. A submission's errors are not among them:
    /// they go to the stream whose work it was ([`stream`]).
    uncaptured: Arc<Mutex<Option<TensorError>>>,
    /// Why the device was lost (set by wgpu's device-lost callback); every
    /// operation after that fails fast instead of touching the device.
    lost: Arc<OnceLock<String>>,
    /// Pipelines built so far, shared by every thread's recording.
    pipelines: Mutex<encoder::Pipelines>,
    pool: Arc<buffers::Pool>,
    /// Waits for the device to hand results to the host, so far.
    read_backs: std::sync::atomic::AtomicU64,
    /// Rows of output tiles in a group of the matmul grid order
    /// ([`GpuBackend::set_matmul_tile_group`]).
    tile_group: std::sync::atomic::AtomicU32,
    /// Dropped with the backend, telling threads' streams (kept per thread,
    /// see `stream`) that it is gone.
    token: Arc<()>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Locks `m`, ignoring poisoning: a panic elsewhere leaves the pool, the
/// streams, the pipelines and the error slot consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Backend for GpuBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn lost(&self) -> Option<String> {
        GpuBackend::lost(self)
    }

    fn records_per_thread(&self) -> bool {
        true
    }

    fn begin_call(&self) {
        stream::begin_call(self);
    }

    fn from_host(&self, tensor: &Tensor) -> Result<Tensor> {
        buffers::from_host(self, tensor)
    }

    fn to_host(&self, tensor: &Tensor) -> Result<Tensor> {
        buffers::to_host(self, tensor)
    }

    fn to_host_all(&self, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        buffers::to_host_all(self, tensors)
    }

    fn full(&self, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
        elementwise::full(self, dtype, shape, value)
    }

    fn matmul(&self, inputs: WeightedInputs<'_>, plan: &MatmulPlan) -> Result<Tensor> {
        matmul::matmul(self, inputs, plan)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        let operands = [a, b];
        elementwise::binary(
            self,
            op,
            Broadcast {
                operands,
                out_shape,
            },
        )
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        elementwise::unary(self, op, x)
    }

    fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
        elementwise::affine(self, x, factor, offset)
    }

    fn softmax(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        reduce::softmax(self, x, axis)
    }

    fn layer_norm(&self, x: &Tensor, norm: NormParams<'_>) -> Result<Tensor> {
        reduce::layer_norm(self, x, norm)
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        layout::embedding(self, table, ids, out_shape)
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        layout::reshape(self, x, shape)
    }

    fn transpose(&self, x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor> {
        layout::transpose(self, x, perm, out_shape)
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, out_shape: &[usize]) -> Result<Tensor> {
        layout::slice(self, x, axis, start, out_shape)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor> {
        layout::concat(self, xs, axis, out_shape)
    }

    fn reduce(&self, op: ReduceOp, x: &Tensor, plan: &ReducePlan) -> Result<Tensor> {
        reduce::reduce(self, op, x, plan)
    }

    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        elementwise::cast(self, x, to)
    }

    fn conv2d(&self, inputs: WeightedInputs<'_>, plan: &Conv2dPlan) -> Result<Tensor> {
        conv::conv2d(self, inputs, plan)
    }

    fn pool2d(&self, x: &Tensor, plan: &Pool2dPlan) -> Result<Tensor> {
        conv::pool2d(self, x, plan)
    }

    fn attention(&self, inputs: AttentionInputs<'_>, plan: &AttentionPlan) -> Result<Tensor> {
        attention::attention(self, inputs, plan)
    }

    fn top_k(&self, x: &Tensor, k: usize, out_shape: &[usize]) -> Result<(Tensor, Tensor)> {
        reduce::top_k(self, x, k, out_shape)
    }

    fn compare(
        &self,
        op: CompareOp,
        a: &Tensor,
        b: &Tensor,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let operands = [a, b];
        select::compare(
            self,
            op,
            Broadcast {
                operands,
                out_shape,
            },
        )
    }

    fn select(&self, cond: &Tensor, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        let operands = [cond, a, b];
        select::select(
            self,
            Broadcast {
                operands,
                out_shape,
            },
        )
    }

    fn gather(&self, x: &Tensor, indices: &Tensor, plan: &GatherPlan) -> Result<Tensor> {
        layout::gather(self, x, indices, plan)
    }

    fn expand(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        layout::expand(self, x, out_shape)
    }

    fn clip(&self, x: &Tensor, bounds: ClipBounds) -> Result<Tensor> {
        elementwise::clip(self, x, bounds)
    }

    fn attention_varlen(&self, qkv: [&Tensor; 3], plan: &VarlenAttentionPlan) -> Result<Tensor> {
        attention::attention_varlen(self, qkv, plan)
    }

    /// A step at a time from the other kernels, recorded into the stream
    /// with no read-back between steps.
    fn lstm(&self, inputs: [&Tensor; 4], plan: &LstmPlan) -> Result<(Tensor, Tensor, Tensor)> {
        edgeserve_tensor::composed::lstm(self, inputs, plan)
    }
}
