//! The host side of the plugin contract: generated bindings plus the
//! implementations of the `tensor` and `model` imports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use edgeserve_tensor as et;
use edgeserve_tensor::{Backend, Budget, Ops, Tensor, TensorError};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::repository::Weights;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "model-handler",
    imports: { default: trappable },
    with: { "edgeserve:handler/tensor.tensor": TensorHandle },
});

use self::edgeserve::handler::tensor::{self as wit, Dtype};
pub use self::edgeserve::handler::types::ModelMetadata;
pub use self::edgeserve::handler::types::{
    BytesTensor, InferRequest, NamedTensor, ParameterValue, TensorData, TensorMetadata,
};
pub use self::exports::edgeserve::handler::handler::InferError;

/// A guest's handle on a host tensor, with the bytes it is charged for
/// (zero for shared weights, which no instance owns).
pub struct TensorHandle {
    tensor: Tensor,
    charged: usize,
}

/// What every instance of one model version shares.
pub struct ModelContext {
    /// "name" or "name:version", for logs and errors.
    pub label: Arc<str>,
    /// The backend that runs this model's ops.
    pub backend: Arc<dyn Backend>,
    /// Weights, already resident on the backend.
    pub weights: Weights,
    /// `[parameters]` from config.toml.
    pub parameters: BTreeMap<String, String>,
    /// The version folder, for `model.asset`.
    pub dir: PathBuf,
    /// Cap on live tensor handles per instance.
    pub max_tensors: usize,
    /// Cap on bytes of live non-weight tensors per instance.
    pub max_tensor_bytes: usize,
}

/// Linear-memory and table caps that remember when they were hit, so a trap
/// can be reported as "memory limit" rather than a bare trap.
pub struct Limiter {
    limits: StoreLimits,
    memory_limit: usize,
    /// Set when a memory growth was refused.
    pub memory_exceeded: bool,
}

impl Limiter {
    /// Caps linear memory at `memory_limit` bytes.
    pub fn new(memory_limit: usize) -> Limiter {
        Limiter {
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .table_elements(1 << 20)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The data of one instance's store.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory caps, consulted by wasmtime through `Store::limiter`.
    pub limiter: Limiter,
    model: Arc<ModelContext>,
    live_tensors: usize,
    live_bytes: usize,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl InstanceState {
    /// State for a new instance of `model`.
    pub fn new(wasi: WasiCtx, model: Arc<ModelContext>, memory_limit: usize) -> InstanceState {
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_limit),
            model,
            live_tensors: 0,
            live_bytes: 0,
        }
    }

    /// The model this instance serves.
    pub fn model(&self) -> &Arc<ModelContext> {
        &self.model
    }

    /// Hands `tensor` to the guest, charging its bytes against the cap.
    pub fn push_tensor(&mut self, tensor: Tensor) -> Result<Resource<TensorHandle>, TensorError> {
        self.push(tensor, true)
    }

    /// Takes back a tensor the guest returned.
    pub fn take_tensor(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<Tensor> {
        let handle = self.table.delete(handle)?;
        self.release(&handle);
        Ok(handle.tensor)
    }

    fn push(
        &mut self,
        tensor: Tensor,
        charge: bool,
    ) -> Result<Resource<TensorHandle>, TensorError> {
        let model = &self.model;
        if self.live_tensors >= model.max_tensors {
            return Err(TensorError::OutOfMemory(format!(
                "model {} holds {} tensors, its limit (max_tensors)",
                model.label, model.max_tensors
            )));
        }
        let charged = if charge { tensor.byte_len() } else { 0 };
        if self.live_bytes + charged > model.max_tensor_bytes {
            return Err(TensorError::OutOfMemory(format!(
                "a {} byte tensor would take model {} past its {} MiB of live tensors (max_tensor_mib)",
                charged,
                model.label,
                model.max_tensor_bytes >> 20
            )));
        }
        let handle = self
            .table
            .push(TensorHandle { tensor, charged })
            .map_err(|e| TensorError::OutOfMemory(e.to_string()))?;
        self.live_tensors += 1;
        self.live_bytes += charged;
        Ok(handle)
    }

    fn release(&mut self, handle: &TensorHandle) {
        self.live_tensors -= 1;
        self.live_bytes -= handle.charged;
    }

    fn get(&self, handle: &Resource<TensorHandle>) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(handle)?.tensor.clone())
    }

    /// Runs an op through the [`Ops`] front door, charged to this instance,
    /// and hands the result to the guest.
    fn op(&mut self, f: impl FnOnce(Ops<'_>) -> et::Result<Tensor>) -> OpResult {
        let result = f(Ops::new(self.model.backend.as_ref(), self));
        Ok(result
            .and_then(|t| self.push_tensor(t))
            .map_err(to_wit_error))
    }

    fn tensors(&self, handles: &[Resource<TensorHandle>]) -> wasmtime::Result<Vec<Tensor>> {
        handles.iter().map(|h| self.get(h)).collect()
    }

    fn opt(&self, handle: &Option<Resource<TensorHandle>>) -> wasmtime::Result<Option<Tensor>> {
        handle.as_ref().map(|h| self.get(h)).transpose()
    }
}

impl Budget for InstanceState {
    /// Refuses results larger than what the instance may still hold, before
    /// the backend allocates them.
    fn reserve(&self, bytes: usize) -> et::Result<()> {
        if self.live_bytes.saturating_add(bytes) > self.model.max_tensor_bytes {
            return Err(TensorError::OutOfMemory(format!(
                "a {bytes} byte result would take model {} past its {} MiB of live tensors (max_tensor_mib)",
                self.model.label,
                self.model.max_tensor_bytes >> 20
            )));
        }
        Ok(())
    }
}

/// The contract's error value for a backend error.
fn to_wit_error(e: TensorError) -> wit::Error {
    match e {
        TensorError::Shape(m) => wit::Error::Shape(m),
        TensorError::DType(m) => wit::Error::Dtype(m),
        TensorError::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        TensorError::Unsupported(m) => wit::Error::Unsupported(m),
        TensorError::OutOfMemory(m) => wit::Error::OutOfMemory(m),
        TensorError::DeviceLost(m) => wit::Error::DeviceLost(m),
    }
}

fn from_wit_dtype(d: Dtype) -> et::DType {
    match d {
        Dtype::F32 => et::DType::F32,
        Dtype::F16 => et::DType::F16,
        Dtype::I32 => et::DType::I32,
        Dtype::I64 => et::DType::I64,
        Dtype::U8 => et::DType::U8,
    }
}

fn to_wit_dtype(d: et::DType) -> Dtype {
    match d {
        et::DType::F32 => Dtype::F32,
        et::DType::F16 => Dtype::F16,
        et::DType::I32 => Dtype::I32,
        et::DType::I64 => Dtype::I64,
        et::DType::U8 => Dtype::U8,
    }
}

fn from_wit_unary(op: wit::UnaryOp) -> et::UnaryOp {
    match op {
        wit::UnaryOp::Neg => et::UnaryOp::Neg,
        wit::UnaryOp::Abs => et::UnaryOp::Abs,
        wit::UnaryOp::Exp => et::UnaryOp::Exp,
        wit::UnaryOp::Log => et::UnaryOp::Log,
        wit::UnaryOp::Sqrt => et::UnaryOp::Sqrt,
        wit::UnaryOp::Rsqrt => et::UnaryOp::Rsqrt,
        wit::UnaryOp::Relu => et::UnaryOp::Relu,
        wit::UnaryOp::Gelu => et::UnaryOp::Gelu,
        wit::UnaryOp::GeluTanh => et::UnaryOp::GeluTanh,
        wit::UnaryOp::Tanh => et::UnaryOp::Tanh,
        wit::UnaryOp::Sigmoid => et::UnaryOp::Sigmoid,
        wit::UnaryOp::Silu => et::UnaryOp::Silu,
        wit::UnaryOp::Erf => et::UnaryOp::Erf,
    }
}

fn dims(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn pair((a, b): (u32, u32)) -> (usize, usize) {
    (a as usize, b as usize)
}

type OpResult = wasmtime::Result<Result<Resource<TensorHandle>, wit::Error>>;
type Handle = Resource<TensorHandle>;

impl wit::HostTensor for InstanceState {
    fn from_bytes(&mut self, dtype: Dtype, shape: Vec<u32>, data: Vec<u8>) -> OpResult {
        let (dtype, shape) = (from_wit_dtype(dtype), dims(&shape));
        self.op(|ops| ops.from_bytes(dtype, &shape, &data))
    }

    fn full(&mut self, dtype: Dtype, shape: Vec<u32>, value: f64) -> OpResult {
        let (dtype, shape) = (from_wit_dtype(dtype), dims(&shape));
        self.op(|ops| ops.full(dtype, &shape, value))
    }

    fn shape(&mut self, this: Handle) -> wasmtime::Result<Vec<u32>> {
        Ok(self.get(&this)?.shape().iter().map(|&d| d as u32).collect())
    }

    fn dtype(&mut self, this: Handle) -> wasmtime::Result<Dtype> {
        Ok(to_wit_dtype(self.get(&this)?.dtype()))
    }

    fn read(&mut self, this: Handle) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        let tensor = self.get(&this)?;
        Ok(Ops::unlimited(self.model.backend.as_ref())
            .to_host(&tensor)
            .map(|t| t.host().map(|h| h.bytes().to_vec()).unwrap_or_default())
            .map_err(to_wit_error))
    }

    fn drop(&mut self, this: Handle) -> wasmtime::Result<()> {
        let handle = self.table.delete(this)?;
        self.release(&handle);
        Ok(())
    }
}

impl wit::Host for InstanceState {
    fn matmul(&mut self, a: Handle, b: Handle, transpose_b: bool) -> OpResult {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        self.op(|ops| ops.matmul(&a, &b, transpose_b))
    }

    fn linear(
        &mut self,
        a: Handle,
        b: Handle,
        transpose_b: bool,
        bias: Option<Handle>,
        activation: Option<wit::UnaryOp>,
    ) -> OpResult {
        let (a, b, bias) = (self.get(&a)?, self.get(&b)?, self.opt(&bias)?);
        let activation = activation.map(from_wit_unary);
        self.op(|ops| ops.linear(&a, &b, transpose_b, bias.as_ref(), activation))
    }

    fn binary(&mut self, op: wit::BinaryOp, a: Handle, b: Handle) -> OpResult {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let op = match op {
            wit::BinaryOp::Add => et::BinaryOp::Add,
            wit::BinaryOp::Sub => et::BinaryOp::Sub,
            wit::BinaryOp::Mul => et::BinaryOp::Mul,
            wit::BinaryOp::Div => et::BinaryOp::Div,
            wit::BinaryOp::Maximum => et::BinaryOp::Maximum,
            wit::BinaryOp::Minimum => et::BinaryOp::Minimum,
            wit::BinaryOp::Pow => et::BinaryOp::Pow,
        };
        self.op(|ops| ops.binary(op, &a, &b))
    }

    fn unary(&mut self, op: wit::UnaryOp, x: Handle) -> OpResult {
        let (op, x) = (from_wit_unary(op), self.get(&x)?);
        self.op(|ops| ops.unary(op, &x))
    }

    fn affine(&mut self, x: Handle, factor: f32, offset: f32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.affine(&x, factor, offset))
    }

    fn softmax(&mut self, x: Handle, axis: i32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.softmax(&x, axis))
    }

    fn layer_norm(
        &mut self,
        x: Handle,
        gamma: Option<Handle>,
        beta: Option<Handle>,
        eps: f32,
    ) -> OpResult {
        let (x, gamma, beta) = (self.get(&x)?, self.opt(&gamma)?, self.opt(&beta)?);
        self.op(|ops| ops.layer_norm(&x, gamma.as_ref(), beta.as_ref(), eps))
    }

    fn embedding(&mut self, table: Handle, ids: Handle) -> OpResult {
        let (table, ids) = (self.get(&table)?, self.get(&ids)?);
        self.op(|ops| ops.embedding(&table, &ids))
    }

    fn reshape(&mut self, x: Handle, shape: Vec<i32>) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.reshape(&x, &shape))
    }

    fn transpose(&mut self, x: Handle, perm: Vec<u32>) -> OpResult {
        let (x, perm) = (self.get(&x)?, dims(&perm));
        self.op(|ops| ops.transpose(&x, &perm))
    }

    fn slice(&mut self, x: Handle, axis: i32, start: u32, end: u32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.slice(&x, axis, start as usize, end as usize))
    }

    fn concat(&mut self, xs: Vec<Handle>, axis: i32) -> OpResult {
        let xs = self.tensors(&xs)?;
        self.op(|ops| ops.concat(&xs.iter().collect::<Vec<_>>(), axis))
    }

    fn reduce(&mut self, op: wit::ReduceOp, x: Handle, axis: i32, keep_dims: bool) -> OpResult {
        let x = self.get(&x)?;
        let op = match op {
            wit::ReduceOp::Sum => et::ReduceOp::Sum,
            wit::ReduceOp::Mean => et::ReduceOp::Mean,
            wit::ReduceOp::Max => et::ReduceOp::Max,
            wit::ReduceOp::Min => et::ReduceOp::Min,
            wit::ReduceOp::Argmax => et::ReduceOp::ArgMax,
            wit::ReduceOp::Argmin => et::ReduceOp::ArgMin,
        };
        self.op(|ops| ops.reduce(op, &x, axis, keep_dims))
    }

    fn cast(&mut self, x: Handle, to: Dtype) -> OpResult {
        let (x, to) = (self.get(&x)?, from_wit_dtype(to));
        self.op(|ops| ops.cast(&x, to))
    }

    #[allow(clippy::too_many_arguments)] // the contract's signature
    fn conv2d(
        &mut self,
        x: Handle,
        weight: Handle,
        bias: Option<Handle>,
        stride: (u32, u32),
        padding: (u32, u32),
        dilation: (u32, u32),
        groups: u32,
    ) -> OpResult {
        let (x, weight, bias) = (self.get(&x)?, self.get(&weight)?, self.opt(&bias)?);
        let params = et::Conv2d {
            stride: pair(stride),
            padding: pair(padding),
            dilation: pair(dilation),
            groups: groups as usize,
        };
        self.op(|ops| ops.conv2d(&x, &weight, bias.as_ref(), params))
    }

    fn pool2d(
        &mut self,
        kind: wit::PoolKind,
        x: Handle,
        kernel: (u32, u32),
        stride: (u32, u32),
        padding: (u32, u32),
    ) -> OpResult {
        let x = self.get(&x)?;
        let params = et::Pool2d {
            kind: match kind {
                wit::PoolKind::Max => et::PoolKind::Max,
                wit::PoolKind::Avg => et::PoolKind::Avg,
            },
            kernel: pair(kernel),
            stride: pair(stride),
            padding: pair(padding),
        };
        self.op(|ops| ops.pool2d(&x, params))
    }

    fn attention(
        &mut self,
        q: Handle,
        k: Handle,
        v: Handle,
        mask: Option<Handle>,
        scale: Option<f32>,
        causal: bool,
    ) -> OpResult {
        let (q, k, v) = (self.get(&q)?, self.get(&k)?, self.get(&v)?);
        let (mask, params) = (self.opt(&mask)?, et::Attention { scale, causal });
        self.op(|ops| ops.attention(&q, &k, &v, mask.as_ref(), params))
    }

    fn top_k(
        &mut self,
        x: Handle,
        k: u32,
    ) -> wasmtime::Result<Result<(Handle, Handle), wit::Error>> {
        let x = self.get(&x)?;
        let ranked = Ops::new(self.model.backend.as_ref(), self).top_k(&x, k as usize);
        let (values, indices) = match ranked {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(to_wit_error(e))),
        };
        let values = match self.push_tensor(values) {
            Ok(h) => h,
            Err(e) => return Ok(Err(to_wit_error(e))),
        };
        match self.push_tensor(indices) {
            Ok(indices) => Ok(Ok((values, indices))),
            Err(e) => {
                wit::HostTensor::drop(self, values)?;
                Ok(Err(to_wit_error(e)))
            }
        }
    }
}

impl self::edgeserve::handler::model::Host for InstanceState {
    fn weight(&mut self, name: String) -> wasmtime::Result<Result<Handle, wit::Error>> {
        let Some(tensor) = self.model.weights.get(&name).cloned() else {
            let known: Vec<&str> = self.model.weights.names().take(20).collect();
            return Ok(Err(wit::Error::InvalidArgument(format!(
                "model {} has no weight '{name}' (it has: {})",
                self.model.label,
                known.join(", ")
            ))));
        };
        Ok(self.push(tensor, false).map_err(to_wit_error))
    }

    fn weight_names(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.model.weights.names().map(str::to_owned).collect())
    }

    fn parameter(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.model.parameters.get(&key).cloned())
    }

    fn asset(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        // Only plain file names: the guest must not walk out of its folder.
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
        if !plain {
            return Ok(None);
        }
        Ok(std::fs::read(self.model.dir.join(name)).ok())
    }
}

impl self::edgeserve::handler::types::Host for InstanceState {}
