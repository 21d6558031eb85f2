//! The front door of every tensor operation.
//!
//! An operation arrives here in the contract's terms (axes that may count
//! from the end, reshape targets with a `-1`), is validated once by its
//! [`shape`] rule into a resolved plan, has its result's bytes reserved
//! against a [`Budget`], and only then reaches a [`Backend`] kernel with the
//! plan. Backends never validate or re-derive shapes, and every error names
//! the operation it came from.

use crate::deadline;
use crate::shape::{self, normalize_axis};
use crate::{
    Attention, AttentionInputs, Backend, BinaryOp, CompareOp, Conv2d, DType, NormParams, Pool2d,
    ReduceOp, Result, Tensor, TensorError, UnaryOp, WeightedInputs,
};

/// Caps on what the results of operations may hold, consulted before a
/// backend allocates anything.
pub trait Budget {
    /// Refuses a result of `bytes` bytes that would exceed the caps.
    fn reserve(&self, bytes: usize) -> Result<()>;
}

/// A budget without caps: only the device's memory limits results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unlimited;

impl Budget for Unlimited {
    fn reserve(&self, _bytes: usize) -> Result<()> {
        Ok(())
    }
}

/// Every operation of the contract on one backend, under one budget.
///
/// Cheap to make: a runtime builds one per call from its instance's budget.
#[derive(Clone, Copy)]
pub struct Ops<'a> {
    backend: &'a dyn Backend,
    budget: &'a dyn Budget,
}

/// Prefixes the operation's name to allocation failures, which kernels
/// report without always knowing which operation they serve.
fn named(op: &str) -> impl FnOnce(TensorError) -> TensorError + '_ {
    move |e| match e {
        TensorError::OutOfMemory(why) if !why.starts_with(op) => {
            TensorError::OutOfMemory(format!("{op}: {why}"))
        }
        other => other,
    }
}

/// Resolves a contract axis for `op` on a tensor of `rank` dimensions.
fn axis_of(op: &str, axis: i32, rank: usize) -> Result<usize> {
    normalize_axis(axis, rank).map_err(|e| match e {
        TensorError::InvalidArgument(why) => TensorError::InvalidArgument(format!("{op}: {why}")),
        other => other,
    })
}

impl<'a> Ops<'a> {
    /// Operations on `backend` whose results are charged to `budget`.
    pub fn new(backend: &'a dyn Backend, budget: &'a dyn Budget) -> Ops<'a> {
        Ops { backend, budget }
    }

    /// Operations on `backend` without caps.
    pub fn unlimited(backend: &'a dyn Backend) -> Ops<'a> {
        Ops::new(backend, &Unlimited)
    }

    /// The backend the kernels run on.
    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// Reserves a result of `dtype` and `elements`, then runs `kernel`
    /// under the request's [`deadline`], if it has not passed yet.
    fn run<T>(
        &self,
        op: &str,
        (dtype, elements): (DType, usize),
        kernel: impl FnOnce(&'a dyn Backend) -> Result<T>,
    ) -> Result<T> {
        deadline::check(op)?;
        self.budget.reserve(elements.saturating_mul(dtype.size()))?;
        deadline::run(op, || kernel(self.backend)).map_err(named(op))
    }

    /// A tensor of `dtype` and `shape` from little-endian element bytes,
    /// resident on the backend.
    pub fn from_bytes(&self, dtype: DType, shape: &[usize], data: &[u8]) -> Result<Tensor> {
        let host = Tensor::from_bytes(dtype, shape, data)?;
        self.run("from-bytes", (dtype, host.numel()), |b| b.from_host(&host))
    }

    /// Makes a host tensor usable by the backend (an upload for a GPU).
    pub fn from_host(&self, tensor: &Tensor) -> Result<Tensor> {
        let size = (tensor.dtype(), tensor.numel());
        self.run("from-host", size, |b| b.from_host(tensor))
    }

    /// Brings a tensor's elements to the host, completing pending work.
    pub fn to_host(&self, tensor: &Tensor) -> Result<Tensor> {
        deadline::check("to-host")?;
        deadline::run("to-host", || self.backend.to_host(tensor)).map_err(named("to-host"))
    }

    /// A tensor with every element equal to `value`.
    pub fn full(&self, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
        shape::full(dtype, shape, value)?;
        self.run("full", (dtype, shape::numel(shape)), |b| {
            b.full(dtype, shape, value)
        })
    }

    /// Batched matrix product, see the contract's `matmul`.
    pub fn matmul(&self, a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
        let plan = shape::matmul(a, b, transpose_b)?;
        self.run("matmul", (a.dtype(), shape::numel(&plan.out_shape)), |k| {
            let inputs = WeightedInputs {
                x: a,
                weight: b,
                bias: None,
            };
            k.matmul(inputs, &plan)
        })
    }

    /// `activation(a · b + bias)` in one pass, see the contract's `linear`.
    pub fn linear(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_b: bool,
        bias: Option<&Tensor>,
        activation: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let inputs = WeightedInputs {
            x: a,
            weight: b,
            bias,
        };
        let plan = shape::linear(inputs, transpose_b, activation)?;
        self.run("linear", (a.dtype(), shape::numel(&plan.out_shape)), |k| {
            k.matmul(inputs, &plan)
        })
    }

    /// Broadcasting elementwise binary op.
    pub fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out = shape::binary(op, a, b)?;
        self.run(op.name(), (a.dtype(), shape::numel(&out)), |k| {
            k.binary(op, a, b, &out)
        })
    }

    /// Elementwise unary op.
    pub fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        shape::unary(op, x)?;
        self.run(op.name(), (x.dtype(), x.numel()), |k| k.unary(op, x))
    }

    /// `x * factor + offset`.
    pub fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
        shape::affine(x)?;
        self.run("affine", (x.dtype(), x.numel()), |k| {
            k.affine(x, factor, offset)
        })
    }

    /// Softmax along `axis` (negative counts from the end).
    pub fn softmax(&self, x: &Tensor, axis: i32) -> Result<Tensor> {
        let axis = axis_of("softmax", axis, x.shape().len())?;
        shape::softmax(x, axis)?;
        self.run("softmax", (x.dtype(), x.numel()), |k| k.softmax(x, axis))
    }

    /// Layer normalization over the last axis with optional scale and shift.
    pub fn layer_norm(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        shape::layer_norm(x, gamma, beta)?;
        self.run("layer-norm", (x.dtype(), x.numel()), |k| {
            k.layer_norm(x, NormParams { gamma, beta, eps })
        })
    }

    /// Row gather: `table[ids]`.
    pub fn embedding(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let out = shape::embedding(table, ids)?;
        self.run("embedding", (table.dtype(), shape::numel(&out)), |k| {
            k.embedding(table, ids, &out)
        })
    }

    /// Same elements, new shape; at most one entry may be -1 (inferred).
    pub fn reshape(&self, x: &Tensor, shape: &[i32]) -> Result<Tensor> {
        let shape = shape::reshape(x, shape)?;
        self.run("reshape", (x.dtype(), x.numel()), |k| k.reshape(x, &shape))
    }

    /// Axis permutation: output axis i is input axis `perm[i]`.
    pub fn transpose(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let out = shape::transpose(x, perm)?;
        self.run("transpose", (x.dtype(), x.numel()), |k| {
            k.transpose(x, perm, &out)
        })
    }

    /// Elements `start..end` along `axis` (negative counts from the end).
    pub fn slice(&self, x: &Tensor, axis: i32, start: usize, end: usize) -> Result<Tensor> {
        let axis = axis_of("slice", axis, x.shape().len())?;
        let out = shape::slice(x, axis, start, end)?;
        self.run("slice", (x.dtype(), shape::numel(&out)), |k| {
            k.slice(x, axis, start, &out)
        })
    }

    /// Join along `axis` (negative counts from the end).
    pub fn concat(&self, xs: &[&Tensor], axis: i32) -> Result<Tensor> {
        let rank = xs.first().map_or(0, |t| t.shape().len());
        let axis = axis_of("concat", axis, rank)?;
        let out = shape::concat(xs, axis)?;
        let dtype = xs.first().map_or(DType::F32, |t| t.dtype());
        self.run("concat", (dtype, shape::numel(&out)), |k| {
            k.concat(xs, axis, &out)
        })
    }

    /// Reduction along `axis` (negative counts from the end).
    pub fn reduce(&self, op: ReduceOp, x: &Tensor, axis: i32, keep_dims: bool) -> Result<Tensor> {
        let axis = axis_of("reduce", axis, x.shape().len())?;
        let plan = shape::reduce(op, x, axis, keep_dims)?;
        self.run("reduce", (plan.dtype, shape::numel(&plan.out_shape)), |k| {
            k.reduce(op, x, &plan)
        })
    }

    /// Element conversion.
    pub fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        shape::cast(x, to)?;
        self.run("cast", (to, x.numel()), |k| k.cast(x, to))
    }

    /// 2-D convolution over NCHW.
    pub fn conv2d(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2d,
    ) -> Result<Tensor> {
        let plan = shape::conv2d(x, weight, bias, params)?;
        self.run("conv2d", (x.dtype(), shape::numel(&plan.out_shape)), |k| {
            k.conv2d(WeightedInputs { x, weight, bias }, &plan)
        })
    }

    /// 2-D pooling over NCHW.
    pub fn pool2d(&self, x: &Tensor, params: Pool2d) -> Result<Tensor> {
        let plan = shape::pool2d(x, params)?;
        self.run("pool2d", (x.dtype(), shape::numel(&plan.out_shape)), |k| {
            k.pool2d(x, &plan)
        })
    }

    /// Scaled dot-product attention.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        params: Attention,
    ) -> Result<Tensor> {
        let inputs = AttentionInputs { q, k, v, mask };
        let plan = shape::attention(inputs, params)?;
        // The scores [batch, lq, lk] are the largest intermediate.
        let elements = (plan.batch * plan.lq)
            .saturating_mul(plan.lk)
            .saturating_add(shape::numel(&plan.out_shape));
        self.run("attention", (q.dtype(), elements), |b| {
            b.attention(inputs, &plan)
        })
    }

    /// Attention within each sequence of tokens packed without padding
    /// (the contract's `attention-varlen`): sequence `i` is tokens
    /// `offsets[i]..offsets[i + 1]` of q, k and v.
    pub fn attention_varlen(
        &self,
        [q, k, v]: [&Tensor; 3],
        offsets: &[usize],
        params: Attention,
    ) -> Result<Tensor> {
        let plan = shape::attention_varlen([q, k, v], offsets, params)?;
        // As for `attention`: the scores of every head are the largest
        // intermediate.
        let elements = plan
            .heads
            .saturating_mul(plan.scores_per_head())
            .saturating_add(shape::numel(&plan.out_shape));
        self.run("attention-varlen", (q.dtype(), elements), |b| {
            b.attention_varlen([q, k, v], &plan)
        })
    }

    /// An LSTM layer over a whole sequence (the contract's `lstm`) from
    /// `[x_gates, r, h0, c0]`, the last step first when `reverse`:
    /// (every step's h in time order, the last h, the last c).
    pub fn lstm(&self, inputs: [&Tensor; 4], reverse: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let plan = shape::lstm(inputs, reverse)?;
        // y, the last h and c, and a step's gates in flight.
        let state = shape::numel(&plan.state_shape());
        let elements = shape::numel(&plan.y_shape()).saturating_add(state.saturating_mul(6));
        self.run("lstm", (DType::F32, elements), |b| b.lstm(inputs, &plan))
    }

    /// The `k` largest entries along the last axis: (values, i64 indices).
    pub fn top_k(&self, x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
        let out = shape::top_k(x, k)?;
        // Values of x's dtype and i64 indices, counted as bytes.
        let bytes = shape::numel(&out).saturating_mul(x.dtype().size() + DType::I64.size());
        self.run("top-k", (DType::U8, bytes), |b| b.top_k(x, k, &out))
    }

    /// Broadcasting comparison into a u8 mask, see the contract's `compare`.
    pub fn compare(&self, op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out = shape::compare(op, a, b)?;
        self.run(op.name(), (DType::U8, shape::numel(&out)), |k| {
            k.compare(op, a, b, &out)
        })
    }

    /// `a` where `condition` is nonzero, else `b` (the contract's `where`).
    pub fn select(&self, condition: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out = shape::select(condition, a, b)?;
        self.run("where", (a.dtype(), shape::numel(&out)), |k| {
            k.select(condition, a, b, &out)
        })
    }

    /// Entries of `x` picked along `axis` (negative counts from the end).
    pub fn gather(&self, x: &Tensor, indices: &Tensor, axis: i32) -> Result<Tensor> {
        let axis = axis_of("gather", axis, x.shape().len())?;
        let plan = shape::gather(x, indices, axis)?;
        self.run("gather", (x.dtype(), shape::numel(&plan.out_shape)), |k| {
            k.gather(x, indices, &plan)
        })
    }

    /// `x` broadcast with `shape`.
    pub fn expand(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        let out = shape::expand(x, shape)?;
        self.run("expand", (x.dtype(), shape::numel(&out)), |k| {
            k.expand(x, &out)
        })
    }

    /// `min(max(x, lo), hi)` elementwise; an absent bound does not clip.
    pub fn clip(&self, x: &Tensor, lo: Option<f64>, hi: Option<f64>) -> Result<Tensor> {
        let bounds = shape::ClipBounds { lo, hi };
        shape::clip(x, bounds)?;
        self.run("clip", (x.dtype(), x.numel()), |k| k.clip(x, bounds))
    }
}
