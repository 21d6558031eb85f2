//! Elementwise kernels: broadcasting binary ops, unary ops, affine, cast, full.

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::buffers::{elems, float_tensor, floats, tensor_of, written, zeroed};
use super::elem::{Elem, by_dtype};
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
            let mut out: Vec<D> = zeroed(src.len())?;
            for_rows(
                &mut out,
                BLOCK,
                BLOCK,
                #[inline(always)]
                |row, chunk| {
                    let start = row * BLOCK;
                    let end = start + chunk.len();
                    for (o, &s) in chunk.iter_mut().zip(&src[start..end]) {
                        *o = D::convert(s);
                    }
                },
            );
            Ok(tensor_of(D::DTYPE, x.shape(), out))
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
fn map<T: Copy + Send + Sync, U: Pod + Send>(
    src: &[T],
    cost: usize,
    f: impl Fn(T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    let fill = |out: &mut [MaybeUninit<U>]| {
        for_rows(
            out,
            BLOCK,
            BLOCK * cost,
            #[inline(always)]
            |row, chunk| {
                let start = row * BLOCK;
                let end = start + chunk.len();
                for (o, &s) in chunk.iter_mut().zip(&src[start..end]) {
                    o.write(f(s));
                }
            },
        );
    };
    // SAFETY: the blocks cover the output and each writes all its elements.
    unsafe { written(src.len(), fill) }
}

/// e^x to about 2 ulp, written without branches or library calls so that
/// LLVM vectorizes the loops that call it (softmax, attention, sigmoid).
///
/// Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial
/// for e^r, and 2^n built directly in the exponent bits. Results below the
/// smallest normal float flush to 0.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    // ln(f32::MAX) and ln(f32::MIN_POSITIVE).
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_54;
    // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let k = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let ni = k.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n spans -126..=128; two half-size powers keep each one a normal float.
    let half = ni >> 1;
    let pow = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let scaled = y * pow(half) * pow(ni - half);
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        // Also maps -inf to 0.
        0.0
    } else if x.is_nan() {
        x
    } else {
        scaled
    }
}

/// erf(x) to about 3e-7 absolute, as x times a rational function of x² on
/// [-4, 4] (erf is ±1 in f32 beyond), with no branches so that loops
/// calling it vectorize; libm's `erff` is a library call per element. The
/// coefficients are the ones XLA, Eigen and TVM use for f32 erf.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    // Beyond 3.92, erf(x) rounds to ±1 in f32; the approximation does not
    // quite reach it, which GELU would scale up by |x|.
    let saturated = 1.0f32.copysign(x);
    let big = x.abs() > 3.92;
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_473_9e-2;
    if big { saturated } else { x * p / q }
}

/// erfc(u/√2) for u ≥ 2, to about 2e-7 relative, branch-free so that loops
/// calling it vectorize (libm's `erfcf` is a library call per element).
///
/// Numerical Recipes' `erfcc`: erfc(z) = t·e^(-z² + c(t)) with t = 1/(1 + z/2)
/// and c a degree-9 Chebyshev fit, accurate to 1.2e-7 relative for all
/// z ≥ 0. At z = 4, z² is 16, so rounding -z² + c to f32 alone would cost
/// 1e-6 relative; instead z² = u²/2 is split exactly into hi + lo (Dekker),
/// the sum's rounding error is recovered (Fast2Sum, |hi| ≥ |c| here), and
/// both small parts go in as e^ε ≈ 1 + ε.
#[inline(always)]
fn erfc_scaled_tail(u: f32) -> f32 {
    // erfc(20/√2) is far below f32's range; the clamp keeps u² finite.
    let u = u.min(20.0);
    let z = u * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut c = 0.170_872_77f32;
    c = c * t + -0.822_152_23;
    c = c * t + 1.488_515_9;
    c = c * t + -1.135_204;
    c = c * t + 0.278_868_07;
    c = c * t + -0.186_288_06;
    c = c * t + 0.096_784_18;
    c = c * t + 0.374_091_96;
    c = c * t + 1.000_023_7;
    c = c * t + -1.265_512_2;
    // Dekker's exact product: u = uh + ul with 12-bit halves whose
    // products are exact, so u² = square + low exactly. (`mul_add` would
    // be shorter but is a library call on CPUs or paths without FMA, and
    // blocks vectorization.)
    let split = u * 4097.0;
    let uh = split - (split - u);
    let ul = u - uh;
    let square = u * u;
    let low = ((uh * uh - square) + 2.0 * uh * ul) + ul * ul;
    // Halving is exact, so hi + lo is u²/2 exactly.
    let (hi, lo) = (0.5 * square, 0.5 * low);
    let a = c - hi;
    let err = (-hi - a) + c;
    t * exp(a) * (1.0 + (err - lo))
}

/// GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), to about 1e-6 relative everywhere.
///
/// Below -2, 1 + erf cancels away the approximation's accuracy, so the
/// tail takes x/2·erfc(-x/√2) instead. Both are computed and one selected,
/// which keeps the loop branch-free and vectorized: a second scalar pass
/// through libm for the tail cost about as much as the whole vector loop.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let body = gelu_body(x);
    let tail = 0.5 * x * erfc_scaled_tail(-x);
    if x < -2.0 { tail } else { body }
}

/// GELU through erf, accurate from -2 up.
#[inline(always)]
fn gelu_body(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
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
        UnaryOp::Log => v.visit(f32::ln, 16),
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
        UnaryOp::Tanh => v.visit(f32::tanh, 16),
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

/// GELU over a slice. Runs with no element in the left tail skip its
/// computation, which costs twice the body; the check itself vectorizes.
/// Outside the tail [`gelu`] is [`gelu_body`] bit for bit, so this agrees
/// with the plain `gelu` that [`with_unary`] hands to `linear`.
fn gelu_f32(src: &[f32]) -> Result<Vec<f32>> {
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_rows(
            out,
            BLOCK,
            BLOCK * 10,
            #[inline(always)]
            |row, chunk| {
                let xs = &src[row * BLOCK..row * BLOCK + chunk.len()];
                for (o, x) in chunk.chunks_mut(64).zip(xs.chunks(64)) {
                    if x.iter().fold(false, |t, &v| t | (v < -2.0)) {
                        for (o, &x) in o.iter_mut().zip(x) {
                            o.write(gelu(x));
                        }
                    } else {
                        for (o, &x) in o.iter_mut().zip(x) {
                            o.write(gelu_body(x));
                        }
                    }
                }
            },
        );
    };
    // SAFETY: every run of every block is written by one of the loops.
    unsafe { written(src.len(), fill) }
}

fn unary_f32(op: UnaryOp, src: &[f32]) -> Result<Vec<f32>> {
    match op {
        UnaryOp::Gelu => gelu_f32(src),
        _ => with_unary(op, MapF32(src)),
    }
}

pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let name = op.name();
    match x.dtype() {
        DType::F32 | DType::F16 => {
            let src = floats(name, x)?;
            float_tensor(x.dtype(), x.shape(), unary_f32(op, &src)?)
        }
        DType::I32 => {
            let src: &[i32] = elems(name, x)?;
            let out = match op {
                UnaryOp::Neg => map(src, 1, i32::wrapping_neg)?,
                _ => map(src, 1, i32::wrapping_abs)?,
            };
            Ok(tensor_of(DType::I32, x.shape(), out))
        }
        DType::I64 => {
            let src: &[i64] = elems(name, x)?;
            let out = match op {
                UnaryOp::Neg => map(src, 1, i64::wrapping_neg)?,
                _ => map(src, 1, i64::wrapping_abs)?,
            };
            Ok(tensor_of(DType::I64, x.shape(), out))
        }
        DType::U8 => Err(TensorError::DType(format!("{name}: u8 is not supported"))),
    }
}

/// Integer arithmetic with the contract's semantics: wrapping on overflow,
/// division truncating toward zero.
trait IntArith: Copy + Ord + Default + Send + Sync {
    const ZERO: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
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
        }
    };
}

int_arith!(i32);
int_arith!(i64);

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
        // NaN in either operand wins, as in PyTorch.
        BinaryOp::Maximum => zip(
            a,
            sa,
            b,
            sb,
            out,
            |x: f32, y: f32| {
                if x.is_nan() || x > y { x } else { y }
            },
        ),
        BinaryOp::Minimum => zip(
            a,
            sa,
            b,
            sb,
            out,
            |x: f32, y: f32| {
                if x.is_nan() || x < y { x } else { y }
            },
        ),
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

/// `f(a, b)` over the broadcast shape `out`.
///
/// Dimensions are first merged wherever both operands stay contiguous (or
/// stay broadcast) across them, so the work becomes an outer loop over rows
/// and an inner loop in which each operand is either a contiguous run or one
/// repeated value — the loops LLVM vectorizes. Equal shapes and a bias
/// broadcast over rows both reduce to contiguous runs.
fn zip<T: Pod + Send + Sync>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Result<Vec<T>> {
    let n = shape::numel(out);
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: both kernels write every element of the output.
    unsafe { written(n, |data| zip_into(data, a, sa, b, sb, out, f)) }
}

/// The kernels of [`zip`], writing each element of `data` once.
fn zip_into<T: Pod + Send + Sync>(
    data: &mut [MaybeUninit<T>],
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    if sa == sb {
        for_rows(
            data,
            BLOCK,
            BLOCK,
            #[inline(always)]
            |row, chunk| {
                let s = row * BLOCK;
                let e = s + chunk.len();
                for ((o, &x), &y) in chunk.iter_mut().zip(&a[s..e]).zip(&b[s..e]) {
                    o.write(f(x, y));
                }
            },
        );
        return;
    }
    let (dims, strides_a, strides_b) = collapse(out, sa, sb);
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
