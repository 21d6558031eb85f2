//! The native CPU backend: every operation of the contract on host memory.
//!
//! A linear layer's product goes to one of our AVX2 kernels by its number
//! of activation rows: over a model's weight, `packed` (the weight packed
//! once and kept with its tensor) above 32 rows, from 16 where the AVX-512
//! tiles run, and below that `panels` at 32 rows and `skinny` under 32,
//! which read the weight in place; over any other tensor `skinny` below 32,
//! `panels` to 128 and `packed` above. Other products go to
//! the `gemm` crate (runtime-dispatched SIMD); the other kernels are plain
//! loops over contiguous slices written so LLVM can vectorize them,
//! recompiled for AVX-512 or AVX2 where the CPU has it (the same bits at
//! every width, [`Simd`]), and split over the calling thread and rayon's
//! pool ([`use_threads`]) when the work is large enough to pay for it. f16
//! inputs are widened to f32, computed, and narrowed back. Shape and dtype
//! rules come from [`crate::shape`].
//!
//! Value semantics a second backend has to match:
//! - integer add/sub/mul wrap on overflow; integer division truncates
//!   toward zero, and a zero divisor is an `InvalidArgument` error;
//! - `cast` and `full` truncate floats toward zero when making integers and
//!   saturate every narrowing conversion (NaN becomes 0); integers and f32
//!   become f16 with round-to-nearest, ±inf past 65504;
//! - NaN propagates through maximum/minimum, max/min reductions, argmax/argmin
//!   (the first NaN wins), max pooling and relu; top-k ranks NaN highest;
//! - `compare` follows IEEE 754 (a NaN operand makes only `not-equal`
//!   hold); `where` takes any nonzero condition element as true (NaN
//!   included, -0.0 not); `clip` leaves NaN as it is; `gather` resolves
//!   negative indices from the end and refuses any outside `-n..n`;
//! - softmax of a slice that is all -inf, and attention of a query that sees
//!   no key, give zeros rather than NaN;
//! - `exp` (also inside softmax, sigmoid, silu, gelu-tanh and attention) is
//!   accurate to about 2 ulp and flushes results below f32's smallest normal
//!   to 0; gelu agrees with the exact erf form to about 5e-7 relative;
//!   tanh is accurate to about 2 ulp and ln to about 1 ulp (subnormal
//!   inputs included);
//! - `linear` adds the bias and applies the activation in f32 before the
//!   product is rounded to its dtype: for f32 it equals `matmul`, `binary`
//!   add and `unary` bit for bit, for f16 it rounds once where they round
//!   three times;
//! - reshape, slices whose leading axes all have size 1 (along axis 0, say),
//!   transposes that only move unit axes and a concat of one tensor share
//!   the input's memory instead of copying it.

mod attention;
mod buffers;
// Elsewhere than x86-64, some settings and fields of `conv`, `packed` and
// `skinny` serve kernels that are x86 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod conv;
mod elem;
mod elementwise;
mod gather;
mod layout;
mod linear;
mod math;
mod matmul;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod packed;
mod panels;
mod parallel;
mod placement;
#[cfg(target_arch = "x86_64")]
mod pointwise;
mod recurrent;
mod reduce;
mod select;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod skinny;
mod steps;

use crate::shape::{
    AttentionPlan, ClipBounds, Conv2dPlan, GatherPlan, LstmPlan, MatmulPlan, Pool2dPlan,
    ReducePlan, VarlenAttentionPlan,
};
use crate::{
    AttentionInputs, Backend, BackendInfo, BinaryOp, CompareOp, DType, NormParams, ReduceOp,
    Result, Tensor, UnaryOp, WeightedInputs,
};
use buffers::host;
pub(crate) use elem::element_bytes;
pub use packed::packed_weight_bytes;
pub use parallel::{Simd, cap_simd, for_each_task, map_tasks, simd, threads, use_threads};

/// Runs every operation on the host with SIMD kernels.
///
/// Stateless: clones and instances are interchangeable, and all of them share
/// rayon's global thread pool.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {}

impl CpuBackend {
    /// A CPU backend.
    pub const fn new() -> CpuBackend {
        CpuBackend {}
    }
}

/// A short description of the CPU's vector units, e.g. "x86_64 avx2 fma".
fn cpu_features() -> String {
    #[allow(unused_mut)]
    let mut parts = vec![std::env::consts::ARCH.to_string()];
    #[allow(unused_macros)]
    macro_rules! probe {
        ($detected:ident: $($feature:tt),*) => {
            $(if std::arch::$detected!($feature) {
                parts.push($feature.to_string());
            })*
        };
    }
    #[cfg(target_arch = "x86_64")]
    probe!(is_x86_feature_detected: "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f");
    #[cfg(target_arch = "aarch64")]
    probe!(is_aarch64_feature_detected: "neon", "fp16", "sve");
    parts.push(format!("{} threads", threads()));
    parts.join(" ")
}

impl Backend for CpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "cpu",
            device: cpu_features(),
            // Read per call: `--cpu-simd` may cap it after the backend is made.
            api: simd().name().into(),
            driver: String::new(),
        }
    }

    fn from_host(&self, tensor: &Tensor) -> Result<Tensor> {
        host("from-host", tensor)?;
        Ok(tensor.clone())
    }

    fn to_host(&self, tensor: &Tensor) -> Result<Tensor> {
        host("to-host", tensor)?;
        Ok(tensor.clone())
    }

    fn full(&self, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
        elementwise::full(dtype, shape, value)
    }

    fn matmul(&self, inputs: WeightedInputs<'_>, plan: &MatmulPlan) -> Result<Tensor> {
        linear::linear(inputs, plan)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        elementwise::binary(op, a, b, out_shape)
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        elementwise::unary(op, x)
    }

    fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
        elementwise::affine(x, factor, offset)
    }

    fn softmax(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        reduce::softmax(x, axis)
    }

    fn layer_norm(&self, x: &Tensor, norm: NormParams<'_>) -> Result<Tensor> {
        reduce::layer_norm(x, norm)
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        layout::embedding(table, ids, out_shape)
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        host("reshape", x)?;
        Ok(x.with_shape(shape))
    }

    fn transpose(&self, x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor> {
        layout::transpose(x, perm, out_shape)
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, out_shape: &[usize]) -> Result<Tensor> {
        layout::slice(x, axis, start, out_shape)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor> {
        layout::concat(xs, axis, out_shape)
    }

    fn reduce(&self, op: ReduceOp, x: &Tensor, plan: &ReducePlan) -> Result<Tensor> {
        reduce::reduce(op, x, plan)
    }

    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        elementwise::cast(x, to)
    }

    fn conv2d(&self, inputs: WeightedInputs<'_>, plan: &Conv2dPlan) -> Result<Tensor> {
        conv::conv2d(inputs, plan)
    }

    fn pool2d(&self, x: &Tensor, plan: &Pool2dPlan) -> Result<Tensor> {
        conv::pool2d(x, plan)
    }

    fn attention(&self, inputs: AttentionInputs<'_>, plan: &AttentionPlan) -> Result<Tensor> {
        attention::attention(inputs, plan)
    }

    fn top_k(&self, x: &Tensor, k: usize, out_shape: &[usize]) -> Result<(Tensor, Tensor)> {
        reduce::top_k(x, k, out_shape)
    }

    fn compare(
        &self,
        op: CompareOp,
        a: &Tensor,
        b: &Tensor,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        select::compare(op, a, b, out_shape)
    }

    fn select(&self, cond: &Tensor, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        select::select(cond, a, b, out_shape)
    }

    fn gather(&self, x: &Tensor, indices: &Tensor, plan: &GatherPlan) -> Result<Tensor> {
        gather::gather(x, indices, plan)
    }

    fn expand(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
        select::expand(x, out_shape)
    }

    fn clip(&self, x: &Tensor, bounds: ClipBounds) -> Result<Tensor> {
        select::clip(x, bounds)
    }

    fn attention_varlen(&self, qkv: [&Tensor; 3], plan: &VarlenAttentionPlan) -> Result<Tensor> {
        attention::attention_varlen(qkv, plan)
    }

    fn lstm(&self, inputs: [&Tensor; 4], plan: &LstmPlan) -> Result<(Tensor, Tensor, Tensor)> {
        recurrent::lstm(inputs, plan)
    }
}
