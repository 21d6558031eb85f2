//! The native CPU backend: every operation of the contract on host memory.
//!
//! Matrix products go to the `gemm` crate (runtime-dispatched SIMD); the
//! other kernels are plain loops over contiguous slices written so LLVM can
//! vectorize them, recompiled for AVX2 where the CPU has it, and split
//! across rayon's pool when the work is large enough to pay for it. f16
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
//! - softmax of a slice that is all -inf, and attention of a query that sees
//!   no key, give zeros rather than NaN;
//! - `exp` (also inside softmax, sigmoid, silu, gelu-tanh and attention) is
//!   accurate to about 2 ulp and flushes results below f32's smallest normal
//!   to 0; gelu agrees with the exact erf form to about 1e-6;
//! - `linear` adds the bias and applies the activation in f32 before the
//!   product is rounded to its dtype: for f32 it equals `matmul`, `binary`
//!   add and `unary` bit for bit, for f16 it rounds once where they round
//!   three times;
//! - reshape, slices whose leading axes all have size 1 (along axis 0, say),
//!   transposes that only move unit axes and a concat of one tensor share
//!   the input's memory instead of copying it.

mod attention;
mod conv;
mod elementwise;
mod layout;
mod linear;
mod matmul;
mod reduce;

use std::borrow::Cow;
use std::mem::MaybeUninit;

use bytemuck::Pod;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::{
    Attention, Backend, BackendInfo, BinaryOp, Conv2d, DType, HostBuffer, Pool2d, ReduceOp, Result,
    Storage, Tensor, TensorError, UnaryOp, shape,
};

/// Runs every operation on the host with SIMD kernels.
///
/// Stateless: clones and instances are interchangeable, and all of them share
/// rayon's global thread pool.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {}

impl CpuBackend {
    /// A CPU backend.
    pub fn new() -> CpuBackend {
        CpuBackend {}
    }
}

/// An element type the kernels compute on, with the conversions `cast` and
/// `full` need. Conversions to integers truncate toward zero and saturate.
pub(crate) trait Elem: Pod + PartialOrd + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;

    /// Converts between element types with as few roundings as possible.
    #[inline(always)]
    fn convert<S: Elem>(s: S) -> Self {
        match (S::DTYPE.is_float(), Self::DTYPE.is_float()) {
            // f32 holds every f16 exactly and rounds an integer only once.
            (_, true) => Self::from_f32(s.to_f32()),
            // f64 holds every f32 exactly, and `as` saturates.
            (true, false) => Self::from_f64(s.to_f64()),
            (false, false) => Self::from_i64(s.to_i64()),
        }
    }
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
}

impl Elem for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        self.to_f32() as i64
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f32(v as f32)
    }
}

macro_rules! int_elem {
    ($t:ty, $dtype:expr) => {
        impl Elem for $t {
            const DTYPE: DType = $dtype;
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v.clamp(<$t>::MIN as i64, <$t>::MAX as i64) as $t
            }
        }
    };
}

int_elem!(i32, DType::I32);
int_elem!(i64, DType::I64);
int_elem!(u8, DType::U8);

/// The host bytes of `t`, or `Unsupported` for another backend's tensor.
fn host<'a>(op: &str, t: &'a Tensor) -> Result<&'a HostBuffer> {
    match t.storage() {
        Storage::Host(buffer) => Ok(buffer),
        Storage::Device(_) => Err(TensorError::Unsupported(format!(
            "{op}: the cpu backend cannot read a device tensor; bring it to the host first"
        ))),
    }
}

/// The elements of `t` as `T` (any type of the dtype's size and alignment).
fn elems<'a, T: Pod>(op: &str, t: &'a Tensor) -> Result<&'a [T]> {
    debug_assert_eq!(size_of::<T>(), t.dtype().size());
    Ok(host(op, t)?.as_slice())
}

/// The elements of a float tensor as f32: borrowed for f32, widened for f16.
fn floats<'a>(op: &str, t: &'a Tensor) -> Result<Cow<'a, [f32]>> {
    Ok(match t.dtype() {
        DType::F16 => {
            let half: &[f16] = elems(op, t)?;
            let mut wide = zeroed(half.len())?;
            half.convert_to_f32_slice(&mut wide);
            Cow::Owned(wide)
        }
        _ => Cow::Borrowed(elems(op, t)?),
    })
}

/// A fresh host tensor owning `data`.
fn tensor_of<T: Pod + Send + Sync>(dtype: DType, shape: &[usize], data: Vec<T>) -> Tensor {
    debug_assert_eq!(
        data.len() * size_of::<T>(),
        shape::numel(shape) * dtype.size()
    );
    Tensor::new(dtype, shape, Storage::Host(HostBuffer::from_vec(data)))
}

/// A float tensor of `dtype` from f32 results, narrowing for f16.
fn float_tensor(dtype: DType, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Ok(match dtype {
        DType::F16 => {
            let mut half: Vec<f16> = zeroed(data.len())?;
            half.convert_from_f32_slice(&data);
            tensor_of(dtype, shape, half)
        }
        _ => tensor_of(dtype, shape, data),
    })
}

fn refused<T>(n: usize) -> TensorError {
    TensorError::OutOfMemory(format!(
        "cannot allocate {n} elements of {} bytes",
        size_of::<T>()
    ))
}

/// `n` elements that `fill` writes, with `OutOfMemory` instead of aborting
/// when the allocator refuses.
///
/// For outputs a kernel overwrites anyway: zeroing them first costs a
/// memset when the allocator reuses memory, or a page fault per 4 KiB when
/// it maps fresh pages, on every operation (about 8% of a BERT forward
/// pass), while uninitialised memory is usually recycled and already
/// mapped.
///
/// # Safety
///
/// `fill` must initialise every element of the slice it is given.
unsafe fn written<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Result<Vec<T>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| refused::<T>(n))?;
    fill(&mut data.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees `fill` initialised the first `n`
    // elements, and the capacity holds at least `n`.
    unsafe { data.set_len(n) };
    Ok(data)
}

/// `n` zero elements, or `OutOfMemory` instead of aborting the process when
/// the allocator refuses.
///
/// Zeroed memory comes from the allocator like `vec![0; n]` does (fresh
/// pages are zero already), so nothing is written twice.
fn zeroed<T: Pod>(n: usize) -> Result<Vec<T>> {
    let refuse = || refused::<T>(n);
    if n == 0 || size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| refuse())?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(refuse());
    }
    // SAFETY: the global allocator returned `ptr` for exactly `n` elements
    // of `T` at `T`'s alignment, which is what `Vec` frees it with, and all
    // zero bytes are a valid `T` because `T: Pod`.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Work (in element operations) below which splitting across threads costs
/// more than it saves.
const PARALLEL_WORK: usize = 1 << 15;

/// Runs `f(first_row, rows)` over `out` cut into rows of `row_len` elements,
/// on rayon's pool when `rows × cost_per_row` is worth it. Each call gets a
/// whole number of rows, so kernels keep their inner loops contiguous.
///
/// The chunks `f` is called on are disjoint and together cover all of
/// `out` (a non-empty `out` needs a non-zero `row_len`): callers that fill
/// every row they are handed rely on this to treat `out` as initialised
/// afterwards (see [`written`]).
fn for_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    cost_per_row: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if row_len == 0 || out.is_empty() {
        // Returning here covers nothing, which is only whole when `out` is
        // empty.
        debug_assert!(row_len > 0 || out.is_empty(), "for_rows: empty rows");
        return;
    }
    let rows = out.len() / row_len;
    let threads = rayon::current_num_threads();
    if threads <= 1 || rows < 2 || rows.saturating_mul(cost_per_row.max(1)) < PARALLEL_WORK {
        with_simd(
            #[inline(always)]
            || f(0, out),
        );
        return;
    }
    // A few chunks per thread even out uneven rows without drowning in tasks.
    let per_task = rows.div_ceil(threads * 4);
    out.par_chunks_mut(per_task * row_len)
        .enumerate()
        .for_each(|(i, chunk)| {
            with_simd(
                #[inline(always)]
                || f(i * per_task, chunk),
            )
        });
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them, so the loops
/// inlined into it vectorize 8 wide instead of the baseline's 4 (x86_64
/// builds target SSE2 unless told otherwise).
///
/// Only code inlined into `f` is compiled that way, hence the
/// `#[inline(always)]` on the closures compute kernels hand to [`for_rows`]
/// and on their helpers. Rust never fuses `a * b + c` on its own, so both
/// paths round identically.
#[inline(always)]
fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU was just checked to have the enabled features.
        return unsafe { wide(f) };
    }
    f()
}

/// Elementwise kernels over a flat buffer, cut into blocks this long so
/// parallel splitting stays coarse.
const BLOCK: usize = 4096;

/// Calls `$f::<T>(args)` with `T` the plain integer type of `$dtype`'s size,
/// for operations that only move elements.
macro_rules! by_size {
    ($dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype.size() {
            1 => $f::<u8>($($arg),*),
            2 => $f::<u16>($($arg),*),
            4 => $f::<u32>($($arg),*),
            _ => $f::<u64>($($arg),*),
        }
    };
}
use by_size;

/// Calls `$f::<T>(args)` with `T` the element type of `$dtype`; a leading
/// type argument (`f::<S>`) is passed through ahead of `T`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident $(::<$pre:ty>)? ($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $f::<$($pre,)? f32>($($arg),*),
            DType::F16 => $f::<$($pre,)? half::f16>($($arg),*),
            DType::I32 => $f::<$($pre,)? i32>($($arg),*),
            DType::I64 => $f::<$($pre,)? i64>($($arg),*),
            DType::U8 => $f::<$($pre,)? u8>($($arg),*),
        }
    };
}
use by_dtype;

/// A short description of the CPU's vector units, e.g. "x86_64 avx2 fma".
fn cpu_features() -> String {
    #[allow(unused_mut)]
    let mut parts = vec![std::env::consts::ARCH.to_string()];
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($feature:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($feature) {
                    parts.push($feature.to_string());
                })*
            };
        }
        probe!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($feature:tt),*) => {
                $(if std::arch::is_aarch64_feature_detected!($feature) {
                    parts.push($feature.to_string());
                })*
            };
        }
        probe!("neon", "fp16", "sve");
    }
    parts.push(format!("{} threads", rayon::current_num_threads()));
    parts.join(" ")
}

/// Prefixes the operation's name to allocation failures, which the kernels
/// report without knowing which operation they serve.
fn named(op: &'static str) -> impl FnOnce(TensorError) -> TensorError {
    move |e| match e {
        TensorError::OutOfMemory(why) => TensorError::OutOfMemory(format!("{op}: {why}")),
        other => other,
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "cpu",
            device: cpu_features(),
            api: "native".into(),
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
        shape::full(dtype, shape, value)?;
        elementwise::full(dtype, shape, value).map_err(named("full"))
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
        let s = shape::matmul(a, b, transpose_b)?;
        matmul::matmul(a, b, transpose_b, &s).map_err(named("matmul"))
    }

    fn linear(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_b: bool,
        bias: Option<&Tensor>,
        activation: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let s = shape::linear(a, b, transpose_b, bias)?;
        linear::linear(a, b, transpose_b, bias, activation, &s).map_err(named("linear"))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out_shape = shape::binary(op, a, b)?;
        elementwise::binary(op, a, b, &out_shape).map_err(named(op.name()))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        shape::unary(op, x)?;
        elementwise::unary(op, x).map_err(named(op.name()))
    }

    fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
        shape::affine(x)?;
        elementwise::affine(x, factor, offset).map_err(named("affine"))
    }

    fn softmax(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        shape::softmax(x, axis)?;
        reduce::softmax(x, axis).map_err(named("softmax"))
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        shape::layer_norm(x, gamma, beta)?;
        reduce::layer_norm(x, gamma, beta, eps).map_err(named("layer-norm"))
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let out_shape = shape::embedding(table, ids)?;
        layout::embedding(table, ids, &out_shape).map_err(named("embedding"))
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        shape::reshape(x, shape)?;
        host("reshape", x)?;
        Ok(x.with_shape(shape))
    }

    fn transpose(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let out_shape = shape::transpose(x, perm)?;
        layout::transpose(x, perm, &out_shape).map_err(named("transpose"))
    }

    fn slice(&self, x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
        let out_shape = shape::slice(x, axis, start, end)?;
        layout::slice(x, axis, start, &out_shape).map_err(named("slice"))
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        let out_shape = shape::concat(xs, axis)?;
        layout::concat(xs, axis, &out_shape).map_err(named("concat"))
    }

    fn reduce(&self, op: ReduceOp, x: &Tensor, axis: usize, keep_dims: bool) -> Result<Tensor> {
        let s = shape::reduce(op, x, axis, keep_dims)?;
        reduce::reduce(op, x, &s).map_err(named("reduce"))
    }

    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        shape::cast(x, to)?;
        elementwise::cast(x, to).map_err(named("cast"))
    }

    fn conv2d(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2d,
    ) -> Result<Tensor> {
        let s = shape::conv2d(x, weight, bias, params)?;
        conv::conv2d(x, weight, bias, params, &s).map_err(named("conv2d"))
    }

    fn pool2d(&self, x: &Tensor, params: Pool2d) -> Result<Tensor> {
        let s = shape::pool2d(x, params)?;
        conv::pool2d(x, params, &s).map_err(named("pool2d"))
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        params: Attention,
    ) -> Result<Tensor> {
        let s = shape::attention(q, k, v, mask, params)?;
        attention::attention(q, k, v, mask, params, &s).map_err(named("attention"))
    }

    fn top_k(&self, x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
        let out_shape = shape::top_k(x, k)?;
        reduce::top_k(x, k, &out_shape).map_err(named("top-k"))
    }
}
