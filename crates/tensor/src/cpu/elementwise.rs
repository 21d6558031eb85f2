//! Elementwise kernels: broadcasting binary ops, unary ops, affine, cast, full.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytemuck::Pod;

use super::buffers::{elems, float_tensor, floats, tensor_of, written, zeroed};
use super::elem::{Elem, by_dtype};
use super::math::{exp, gelu, ln, sigmoid, tanh};
use super::parallel::{BLOCK, for_rows};
use crate::{BinaryOp, DType, Result, Tensor, TensorError, UnaryOp, shape};

pub(super) fn full(dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
    fn fill<T: Elem>(shape: &[usize], value: f64) -> Result<Tensor> {
        let v = T::from_f64(value);
        let mut data: Vec<T> = zeroed(shape::numel(shape))?;
        // Zeros are free: the allocator hands out zeroed pages lazily.
        if bytemuck::bytes_of(&v).iter().any(|&b| b != 0) {
            data.fill(v);
        }
        Ok(tensor_of(T::DTYPE, shape, data))
    }
    by_dtype!(dtype, fill(shape, value))
}

pub(super) fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    fn from<S: Elem>(x: &Tensor, to: DType) -> Result<Tensor> {
        fn into<S: Elem, D: Elem>(x: &Tensor) -> Result<Tensor> {
            let src: &[S] = elems("cast", x)?;
            Ok(tensor_of(
                D::DTYPE,
                x.shape(),
                map(src, 1, D::convert::<S>)?,
            ))
        }
        by_dtype!(to, into::<S>(x))
    }
    if x.dtype() == to {
        super::host("cast", x)?;
        return Ok(x.clone());
    }
    match (x.dtype(), to) {
        // The half crate converts whole slices with F16C/NEON where present.
        (DType::F16, DType::F32) => {
            float_tensor(DType::F32, x.shape(), floats("cast", x)?.into_owned())
        }
        (DType::F32, DType::F16) => {
            float_tensor(DType::F16, x.shape(), floats("cast", x)?.into_owned())
        }
        _ => by_dtype!(x.dtype(), from(x, to)),
    }
}

pub(super) fn affine(x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
    let src = floats("affine", x)?;
    // Separate multiply and add: `mul_add` is a library call without FMA.
    let out = map(&src, 2, |v| v * factor + offset)?;
    float_tensor(x.dtype(), x.shape(), out)
}

/// `f` over every element, in parallel blocks for large inputs.
pub(super) fn map<T: Copy + Send + Sync, U: Pod + Send>(
    src: &[T],
    cost: usize,
    f: impl Fn(T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    let fill = |out: &mut [MaybeUninit<U>]| {
        for_blocks(
            out,
            cost,
            #[inline(always)]
            |at, chunk| {
                for (o, &s) in chunk.iter_mut().zip(&src[at]) {
                    o.write(f(s));
                }
            },
        );
    };
    // SAFETY: the blocks cover the output and each writes all its elements.
    unsafe { written(src.len(), fill) }
}

/// Runs `f(at, chunk)` over `out` cut into [`BLOCK`]-long chunks, across
/// threads when `cost` operations per element make it worth it; `at` is
/// the range of `out` that `chunk` is, and so of every input it lines up
/// with.
#[inline(always)]
fn for_blocks<T: Send>(
    out: &mut [T],
    cost: usize,
    f: impl Fn(Range<usize>, &mut [T]) + Sync + Send,
) {
    for_rows(
        out,
        BLOCK,
        BLOCK * cost,
        #[inline(always)]
        |row, chunk| {
            let start = row * BLOCK;
            f(start..start + chunk.len(), chunk)
        },
    );
}

/// Something done with a unary op's function on one f32. [`with_unary`]
/// hands the function over as its own type, so the loops that apply it
/// inline it and vectorize.
pub(super) trait UnaryVisitor {
    /// What the visit produces.
    type Output;
    /// Called with the op's function and its cost in element operations,
    /// which decides whether a pass over it is worth splitting across
    /// threads.
    fn visit<F: Fn(f32) -> f32 + Copy + Send + Sync>(self, f: F, cost: usize) -> Self::Output;
}

/// Visits `op`'s f32 function: the one definition of every unary op, shared
/// by `unary` and the epilogue of `linear` so that both round alike.
pub(super) fn with_unary<V: UnaryVisitor>(op: UnaryOp, v: V) -> V::Output {
    // √(2/π)
    const GELU_TANH_K: f32 = 0.797_884_6;
    match op {
        UnaryOp::Neg => v.visit(|x: f32| -x, 1),
        UnaryOp::Abs => v.visit(f32::abs, 1),
        UnaryOp::Exp => v.visit(exp, 4),
        UnaryOp::Log => v.visit(ln, 6),
        UnaryOp::Sqrt => v.visit(f32::sqrt, 2),
        UnaryOp::Rsqrt => v.visit(|x: f32| 1.0 / x.sqrt(), 2),
        // `x < 0` is false for NaN, so NaN passes through as in PyTorch.
        UnaryOp::Relu => v.visit(|x: f32| if x < 0.0 { 0.0 } else { x }, 1),
        // Through a closure because only a closure can be forced inline:
        // left to LLVM, gelu's bulk gets it called out of line, per element
        // and unvectorized.
        UnaryOp::Gelu => v.visit(
            #[inline(always)]
            |x: f32| gelu(x),
            10,
        ),
        // 0.5·(1 + tanh u) = sigmoid(2u): same value, one vectorizable exp.
        UnaryOp::GeluTanh => v.visit(
            |x: f32| x * sigmoid(2.0 * GELU_TANH_K * (x + 0.044_715 * x * x * x)),
            6,
        ),
        UnaryOp::Tanh => v.visit(tanh, 6),
        UnaryOp::Sigmoid => v.visit(sigmoid, 5),
        UnaryOp::Silu => v.visit(|x: f32| x * sigmoid(x), 5),
        // Standalone erf keeps libm's last-bit accuracy.
        UnaryOp::Erf => v.visit(libm::erff, 16),
    }
}

/// A unary op mapped over a slice into a fresh vector.
struct MapF32<'a>(&'a [f32]);

impl UnaryVisitor for MapF32<'_> {
    type Output = Result<Vec<f32>>;

    fn visit<F: Fn(f32) -> f32 + Copy + Send + Sync>(self, f: F, cost: usize) -> Result<Vec<f32>> {
        map(self.0, cost, f)
    }
}

pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let name = op.name();
    match x.dtype() {
        DType::F32 | DType::F16 => {
            let src = floats(name, x)?;
            float_tensor(x.dtype(), x.shape(), with_unary(op, MapF32(&src))?)
        }
        DType::I32 => unary_int::<i32>(op, x),
        DType::I64 => unary_int::<i64>(op, x),
        DType::U8 => Err(TensorError::DType(format!("{name}: u8 is not supported"))),
    }
}

/// `neg` or `abs`, the unary ops integers take; both wrap at the minimum.
fn unary_int<T: IntArith + Elem>(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let src: &[T] = elems(op.name(), x)?;
    let out = match op {
        UnaryOp::Neg => map(src, 1, T::neg)?,
        _ => map(src, 1, T::abs)?,
    };
    Ok(tensor_of(T::DTYPE, x.shape(), out))
}

/// Integer arithmetic with the contract's semantics: wrapping on overflow,
/// division truncating toward zero.
trait IntArith: Copy + Ord + Default + Send + Sync {
    const ZERO: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
}

macro_rules! int_arith {
    ($t:ty) => {
        impl IntArith for $t {
            const ZERO: Self = 0;
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn div(self, o: Self) -> Self {
                // Zero divisors are refused before the kernel runs.
                self.wrapping_div(o)
            }
            // `map` calls these per element: inline them as surely as the
            // std methods they wrap.
            #[inline(always)]
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline(always)]
            fn abs(self) -> Self {
                self.wrapping_abs()
            }
        }
    };
}

int_arith!(i32);
int_arith!(i64);

/// The larger of `x` and `y`; NaN in either operand wins, as in PyTorch.
#[inline(always)]
pub(super) fn maximum(x: f32, y: f32) -> f32 {
    if x.is_nan() || x > y { x } else { y }
}

/// The smaller of `x` and `y`; NaN in either operand wins, as in PyTorch.
#[inline(always)]
pub(super) fn minimum(x: f32, y: f32) -> f32 {
    if x.is_nan() || x < y { x } else { y }
}

/// `v` within `lo..=hi`; NaN stays NaN.
#[inline(always)]
pub(super) fn clamp(v: f32, (lo, hi): (f32, f32)) -> f32 {
    minimum(maximum(v, lo), hi)
}

fn binary_float(
    op: BinaryOp,
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    out: &[usize],
) -> Result<Vec<f32>> {
    match op {
        BinaryOp::Add => zip(a, sa, b, sb, out, |x, y| x + y),
        BinaryOp::Sub => zip(a, sa, b, sb, out, |x, y| x - y),
        BinaryOp::Mul => zip(a, sa, b, sb, out, |x, y| x * y),
        BinaryOp::Div => zip(a, sa, b, sb, out, |x, y| x / y),
        BinaryOp::Maximum => zip(a, sa, b, sb, out, maximum),
        BinaryOp::Minimum => zip(a, sa, b, sb, out, minimum),
        BinaryOp::Pow => zip(a, sa, b, sb, out, f32::powf),
    }
}

fn binary_int<T: IntArith + Elem>(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
) -> Result<Tensor> {
    let name = op.name();
    let (x, y): (&[T], &[T]) = (elems(name, a)?, elems(name, b)?);
    let (sa, sb) = (a.shape(), b.shape());
    if op == BinaryOp::Div && shape::numel(out) > 0 && y.contains(&T::ZERO) {
        return Err(TensorError::InvalidArgument(format!(
            "div: integer division by zero (b {sb:?} holds a 0)"
        )));
    }
    let data = match op {
        BinaryOp::Add => zip(x, sa, y, sb, out, T::add),
        BinaryOp::Sub => zip(x, sa, y, sb, out, T::sub),
        BinaryOp::Mul => zip(x, sa, y, sb, out, T::mul),
        BinaryOp::Div => zip(x, sa, y, sb, out, T::div),
        BinaryOp::Maximum => zip(x, sa, y, sb, out, Ord::max),
        BinaryOp::Minimum => zip(x, sa, y, sb, out, Ord::min),
        BinaryOp::Pow => unreachable!("shape::binary refuses integer pow"),
    }?;
    Ok(tensor_of(T::DTYPE, out, data))
}

pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Result<Tensor> {
    let name = op.name();
    match a.dtype() {
        DType::F32 | DType::F16 => {
            let (x, y) = (floats(name, a)?, floats(name, b)?);
            let data = binary_float(op, &x, a.shape(), &y, b.shape(), out)?;
            float_tensor(a.dtype(), out, data)
        }
        DType::I32 => binary_int::<i32>(op, a, b, out),
        DType::I64 => binary_int::<i64>(op, a, b, out),
        DType::U8 => Err(TensorError::DType(format!("{name}: u8 is not supported"))),
    }
}

/// `f(a, b)` over the broadcast shape `out` (a comparison's `U` is its
/// u8 mask, arithmetic's is `T`).
///
/// Dimensions are first merged wherever both operands stay contiguous (or
/// stay broadcast) across them, so the work becomes an outer loop over rows
/// and an inner loop in which each operand is either a contiguous run or one
/// repeated value — the loops LLVM vectorizes. Equal shapes and a bias
/// broadcast over rows both reduce to contiguous runs.
pub(super) fn zip<T: Pod + Send + Sync, U: Pod + Send>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    let n = shape::numel(out);
    if n == 0 {
        return Ok(Vec::new());
    }
    let fill = |data: &mut [MaybeUninit<U>]| {
        if sa == sb {
            zip_flat(data, a, b, f);
        } else {
            zip_rows(data, a, b, collapse(out, sa, sb), f);
        }
    };
    // SAFETY: both kernels write every element of the output.
    unsafe { written(n, fill) }
}

/// [`zip`] of two operands of one shape: both contiguous runs throughout.
fn zip_flat<T: Pod + Send + Sync, U: Send>(
    data: &mut [MaybeUninit<U>],
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> U + Sync + Send,
) {
    for_blocks(
        data,
        1,
        #[inline(always)]
        |at, chunk| {
            for ((o, &x), &y) in chunk.iter_mut().zip(&a[at.clone()]).zip(&b[at]) {
                o.write(f(x, y));
            }
        },
    );
}

/// [`zip`] over the dimensions [`collapse`] merged, writing each element of
/// `data` once: an odometer over the outer ones, and the innermost one as a
/// contiguous run or a repeated value of each operand.
fn zip_rows<T: Pod + Send + Sync, U: Pod + Send>(
    data: &mut [MaybeUninit<U>],
    a: &[T],
    b: &[T],
    (dims, strides_a, strides_b): (Vec<usize>, Vec<usize>, Vec<usize>),
    f: impl Fn(T, T) -> U + Sync + Send,
) {
    let inner = *dims.last().expect("collapse keeps at least one dimension");
    let (ia, ib) = (*strides_a.last().unwrap(), *strides_b.last().unwrap());
    let outer_dims = &dims[..dims.len() - 1];
    for_rows(
        data,
        inner,
        inner,
        #[inline(always)]
        |first_row, chunk| {
            // Odometer over the outer dimensions, started at `first_row`.
            let mut coord = vec![0usize; outer_dims.len()];
            let mut rest = first_row;
            for d in (0..outer_dims.len()).rev() {
                coord[d] = rest % outer_dims[d];
                rest /= outer_dims[d];
            }
            let mut oa: usize = coord.iter().zip(&strides_a).map(|(c, s)| c * s).sum();
            let mut ob: usize = coord.iter().zip(&strides_b).map(|(c, s)| c * s).sum();
            for row in chunk.chunks_exact_mut(inner) {
                match (ia, ib) {
                    (1, 1) => {
                        for ((o, &x), &y) in row
                            .iter_mut()
                            .zip(&a[oa..oa + inner])
                            .zip(&b[ob..ob + inner])
                        {
                            o.write(f(x, y));
                        }
                    }
                    (1, _) => {
                        let y = b[ob];
                        for (o, &x) in row.iter_mut().zip(&a[oa..oa + inner]) {
                            o.write(f(x, y));
                        }
                    }
                    (_, 1) => {
                        let x = a[oa];
                        for (o, &y) in row.iter_mut().zip(&b[ob..ob + inner]) {
                            o.write(f(x, y));
                        }
                    }
                    _ => row.fill(MaybeUninit::new(f(a[oa], b[ob]))),
                }
                for d in (0..outer_dims.len()).rev() {
                    coord[d] += 1;
                    oa += strides_a[d];
                    ob += strides_b[d];
                    if coord[d] < outer_dims[d] {
                        break;
                    }
                    oa -= strides_a[d] * outer_dims[d];
                    ob -= strides_b[d] * outer_dims[d];
                    coord[d] = 0;
                }
            }
        },
    );
}

/// Drops unit dimensions of `out` and merges neighbours that both operands
/// traverse alike; returns (dims, a strides, b strides), never empty.
fn collapse(out: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (ta, tb) = (
        shape::broadcast_strides(sa, out),
        shape::broadcast_strides(sb, out),
    );
    let (mut dims, mut da, mut db): (Vec<usize>, Vec<usize>, Vec<usize>) = (vec![], vec![], vec![]);
    for i in 0..out.len() {
        if out[i] == 1 {
            continue;
        }
        if let (Some(&pa), Some(&pb)) = (da.last(), db.last()) {
            // The previous dimension steps over exactly this one in both.
            if pa == ta[i] * out[i] && pb == tb[i] * out[i] {
                *dims.last_mut().unwrap() *= out[i];
                *da.last_mut().unwrap() = ta[i];
                *db.last_mut().unwrap() = tb[i];
                continue;
            }
        }
        dims.push(out[i]);
        da.push(ta[i]);
        db.push(tb[i]);
    }
    if dims.is_empty() {
        return (vec![1], vec![0], vec![0]);
    }
    (dims, da, db)
}
