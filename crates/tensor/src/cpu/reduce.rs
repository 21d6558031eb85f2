//! Kernels that read a whole axis at once: reduce, softmax, layer norm,
//! top-k.

use std::cmp::Ordering;
use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::buffers::{elems, float_tensor, floats, tensor_of, written, zeroed};
use super::elem::Elem;
use super::math::exp;
use super::parallel::for_rows;
use crate::shape::ReducePlan;
use crate::{DType, NormParams, ReduceOp, Result, Tensor, TensorError};

/// Partial sums kept side by side so the loop vectorizes and long rows lose
/// less precision than with one running sum.
const LANES: usize = 8;

/// Element types reductions accumulate in: f32 (f16 is widened first) or an
/// integer type, which wraps on overflow.
trait Acc: Copy + PartialOrd + Default + Send + Sync {
    fn plus(self, o: Self) -> Self;
    /// True for NaN, so max/min propagate it as PyTorch does.
    fn is_nan(self) -> bool;
}

impl Acc for f32 {
    fn plus(self, o: Self) -> Self {
        self + o
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Acc for i32 {
    fn plus(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    fn is_nan(self) -> bool {
        false
    }
}

impl Acc for i64 {
    fn plus(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    fn is_nan(self) -> bool {
        false
    }
}

/// Whether `v` replaces `best` for max (`max` true) or min: strictly
/// better, or NaN, so the first extreme (or first NaN) wins.
#[inline(always)]
fn beats<T: Acc>(v: T, best: T, max: bool) -> bool {
    (if max { v > best } else { v < best }) || (v.is_nan() && !best.is_nan())
}

#[inline(always)]
fn sum_row<T: Acc>(row: &[T]) -> T {
    let mut lanes = [T::default(); LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.plus(v);
        }
    }
    let mut total = T::default();
    for l in lanes {
        total = total.plus(l);
    }
    tail.iter().fold(total, |t, &v| t.plus(v))
}

/// Like [`beats`] for values only: any NaN replaces, which still makes NaN
/// the result, and is simple enough for LLVM to vectorize.
#[inline(always)]
fn beats_value<T: Acc>(v: T, best: T, max: bool) -> bool {
    (if max { v > best } else { v < best }) || v.is_nan()
}

#[inline(always)]
fn extreme_row<T: Acc>(row: &[T], max: bool) -> T {
    // Side-by-side lanes vectorize; which equal element wins does not
    // matter for the value.
    let mut lanes = [row[0]; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if beats_value(v, *l, max) { v } else { *l };
        }
    }
    let mut best = row[0];
    for &v in lanes.iter().chain(tail) {
        best = if beats_value(v, best, max) { v } else { best };
    }
    best
}

fn arg_row<T: Acc>(row: &[T], max: bool) -> i64 {
    let (mut best, mut at) = (row[0], 0);
    for (i, &v) in row.iter().enumerate().skip(1) {
        if beats(v, best, max) {
            (best, at) = (v, i);
        }
    }
    at as i64
}

/// Reduces `x`, read as `[outer, len, inner]`, along `len` into a fresh
/// `[outer, inner]`, spreading the outer blocks over threads. A contiguous
/// axis (`inner` = 1) goes to `row`, which returns its one result; otherwise
/// `strided` gets each block, the block's `inner` outputs and the `scratch()`
/// its task made once.
///
/// Both run inside the kernel's vectorized loop, so callers pass them as
/// `#[inline(always)]` closures.
fn along_axis<T: Sync, U: Pod + Send, S>(
    x: &[T],
    s: &ReducePlan,
    scratch: impl Fn() -> S + Sync + Send,
    row: impl Fn(&[T]) -> U + Sync + Send,
    strided: impl Fn(&[T], &mut [U], &mut S) + Sync + Send,
) -> Result<Vec<U>> {
    let (len, inner) = (s.len, s.inner);
    let mut out = zeroed(s.outer * inner)?;
    for_rows(
        &mut out,
        inner,
        len * inner,
        #[inline(always)]
        |first, chunk| {
            let mut scratch = scratch();
            for (o, dst) in chunk.chunks_exact_mut(inner).enumerate() {
                let block = &x[(first + o) * len * inner..(first + o + 1) * len * inner];
                if inner == 1 {
                    dst[0] = row(block);
                } else {
                    strided(block, dst, &mut scratch);
                }
            }
        },
    );
    Ok(out)
}

/// Reduces along the plan's axis with a value-producing op.
fn reduce_values<T: Acc + Pod>(op: ReduceOp, x: &[T], s: &ReducePlan) -> Result<Vec<T>> {
    let sum = matches!(op, ReduceOp::Sum | ReduceOp::Mean);
    let max = op == ReduceOp::Max;
    along_axis(
        x,
        s,
        || (),
        #[inline(always)]
        |row| {
            if sum {
                sum_row(row)
            } else {
                extreme_row(row, max)
            }
        },
        // Walk the axis one contiguous run of `inner` at a time.
        #[inline(always)]
        |block, dst, ()| {
            let mut rows = block.chunks_exact(dst.len());
            if sum {
                dst.fill(T::default());
                for row in rows {
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d = d.plus(v);
                    }
                }
            } else {
                dst.copy_from_slice(rows.next().expect("axis checked non-empty"));
                for row in rows {
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d = if beats_value(v, *d, max) { v } else { *d };
                    }
                }
            }
        },
    )
}

/// Indices of the extremes along the plan's axis.
fn reduce_args<T: Acc>(op: ReduceOp, x: &[T], s: &ReducePlan) -> Result<Vec<i64>> {
    let max = op == ReduceOp::ArgMax;
    along_axis(
        x,
        s,
        // The best value so far at each inner position.
        || vec![T::default(); s.inner],
        #[inline(always)]
        |row| arg_row(row, max),
        #[inline(always)]
        |block, dst, best| {
            let inner = dst.len();
            best.copy_from_slice(&block[..inner]);
            dst.fill(0);
            for (l, row) in block.chunks_exact(inner).enumerate().skip(1) {
                for ((b, d), &v) in best.iter_mut().zip(dst.iter_mut()).zip(row) {
                    if beats(v, *b, max) {
                        (*b, *d) = (v, l as i64);
                    }
                }
            }
        },
    )
}

fn reduce_typed<T: Acc + Elem>(op: ReduceOp, x: &[T], s: &ReducePlan) -> Result<Tensor> {
    Ok(match op {
        ReduceOp::ArgMax | ReduceOp::ArgMin => {
            tensor_of(DType::I64, &s.out_shape, reduce_args(op, x, s)?)
        }
        _ => tensor_of(T::DTYPE, &s.out_shape, reduce_values(op, x, s)?),
    })
}

pub(super) fn reduce(op: ReduceOp, x: &Tensor, s: &ReducePlan) -> Result<Tensor> {
    let name = "reduce";
    match x.dtype() {
        DType::F32 | DType::F16 => {
            let src = floats(name, x)?;
            match op {
                ReduceOp::ArgMax | ReduceOp::ArgMin => Ok(tensor_of(
                    DType::I64,
                    &s.out_shape,
                    reduce_args(op, &src, s)?,
                )),
                _ => {
                    let mut out = reduce_values(op, &src, s)?;
                    if op == ReduceOp::Mean {
                        let inv = 1.0 / s.len as f32;
                        out.iter_mut().for_each(|v| *v *= inv);
                    }
                    float_tensor(x.dtype(), &s.out_shape, out)
                }
            }
        }
        DType::I32 => reduce_typed::<i32>(op, elems(name, x)?, s),
        DType::I64 => reduce_typed::<i64>(op, elems(name, x)?, s),
        DType::U8 => Err(TensorError::DType(format!(
            "reduce {op}: u8 is not supported"
        ))),
    }
}

pub(super) fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let src = floats("softmax", x)?;
    let (_, len, inner) = crate::shape::split_at_axis(x.shape(), axis);
    let mut out = zeroed(src.len())?;
    let block = len * inner;
    for_rows(
        &mut out,
        block,
        block * 8,
        #[inline(always)]
        |first, chunk| {
            let mut max = vec![0.0f32; inner];
            let mut sum = vec![0.0f32; inner];
            for (o, dst) in chunk.chunks_exact_mut(block).enumerate() {
                let xs = &src[(first + o) * block..(first + o + 1) * block];
                if inner == 1 {
                    dst.copy_from_slice(xs);
                    if !softmax_in_place(dst) {
                        dst.fill(0.0);
                    }
                    continue;
                }
                // Strided axis: keep one running max and sum per inner position
                // so every pass walks contiguous runs.
                max.copy_from_slice(&xs[..inner]);
                for row in xs.chunks_exact(inner).skip(1) {
                    for (m, &v) in max.iter_mut().zip(row) {
                        *m = if v > *m { v } else { *m };
                    }
                }
                // An all -inf slice gets exp(-inf) = 0 everywhere and then zeros,
                // as the contiguous case gives, instead of NaN from -inf - -inf.
                for m in max.iter_mut() {
                    if *m == f32::NEG_INFINITY {
                        *m = 0.0;
                    }
                }
                sum.fill(0.0);
                for (row, drow) in xs.chunks_exact(inner).zip(dst.chunks_exact_mut(inner)) {
                    for (((d, &v), &m), s) in drow.iter_mut().zip(row).zip(&max).zip(sum.iter_mut())
                    {
                        *d = exp(v - m);
                        *s += *d;
                    }
                }
                sum.iter_mut()
                    .for_each(|s| *s = if *s == 0.0 { 0.0 } else { 1.0 / *s });
                for drow in dst.chunks_exact_mut(inner) {
                    for (d, &s) in drow.iter_mut().zip(&sum) {
                        *d *= s;
                    }
                }
            }
        },
    );
    float_tensor(x.dtype(), x.shape(), out)
}

/// Stable softmax of one contiguous row, in place. Returns false, leaving
/// the row untouched, when every entry is -inf (nothing to normalize).
///
/// Always inlined so that it is compiled for the wide vector units of the
/// kernel that calls it (see `with_simd`).
#[inline(always)]
pub(super) fn softmax_in_place(row: &mut [f32]) -> bool {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if v > *l { v } else { *l };
        }
    }
    // NaN is skipped here but still turns every output into NaN below.
    let max = tail
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if max == f32::NEG_INFINITY {
        return false;
    }
    // Plain loops, not lane arrays: exp only vectorizes in a simple loop.
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum = sum_row(row);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    true
}

pub(super) fn layer_norm(x: &Tensor, norm: NormParams<'_>) -> Result<Tensor> {
    let NormParams { gamma, beta, eps } = norm;
    let src = floats("layer-norm", x)?;
    let gamma = gamma.map(|g| floats("layer-norm", g)).transpose()?;
    let beta = beta.map(|b| floats("layer-norm", b)).transpose()?;
    let n = *x.shape().last().expect("rank checked by shape::layer_norm");
    // Shorter ones would leave outputs unwritten below.
    assert!(
        [&gamma, &beta]
            .iter()
            .all(|p| p.as_ref().is_none_or(|p| p.len() == n)),
        "layer-norm parameters checked by shape::layer_norm"
    );
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_rows(
            out,
            n,
            n * 6,
            #[inline(always)]
            |first, chunk| {
                for (r, dst) in chunk.chunks_exact_mut(n).enumerate() {
                    let row = &src[(first + r) * n..(first + r + 1) * n];
                    let mean = sum_row(row) / n as f32;
                    // Two passes: the one-pass E[x²]−E[x]² cancels badly for
                    // large means.
                    let mut lanes = [0.0f32; LANES];
                    let chunks = row.chunks_exact(LANES);
                    let tail: f32 = chunks
                        .remainder()
                        .iter()
                        .map(|v| (v - mean) * (v - mean))
                        .sum();
                    for c in chunks {
                        for (l, &v) in lanes.iter_mut().zip(c) {
                            *l += (v - mean) * (v - mean);
                        }
                    }
                    let var = (lanes.iter().sum::<f32>() + tail) / n as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    let centred = row.iter().map(|&v| v - mean);
                    match (&gamma, &beta) {
                        (Some(g), Some(b)) => {
                            for (((d, v), &g), &b) in
                                dst.iter_mut().zip(centred).zip(g.iter()).zip(b.iter())
                            {
                                d.write(v * inv * g + b);
                            }
                        }
                        (Some(g), None) => {
                            for ((d, v), &g) in dst.iter_mut().zip(centred).zip(g.iter()) {
                                d.write(v * inv * g);
                            }
                        }
                        (None, Some(b)) => {
                            for ((d, v), &b) in dst.iter_mut().zip(centred).zip(b.iter()) {
                                d.write(v * inv + b);
                            }
                        }
                        (None, None) => {
                            for (d, v) in dst.iter_mut().zip(centred) {
                                d.write(v * inv);
                            }
                        }
                    }
                }
            },
        );
    };
    // SAFETY: every row is written whole by one of the four loops (gamma
    // and beta have length n, checked by shape::layer_norm).
    let out = unsafe { written(src.len(), fill) }?;
    float_tensor(x.dtype(), x.shape(), out)
}

/// Descending order with NaN above everything, ties by lower index: the
/// order top-k reports in.
fn rank_f32(a: (f32, u32), b: (f32, u32)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // -0.0 and 0.0 compare equal here, so they fall to the index.
        _ => b.0.partial_cmp(&a.0).expect("no NaN left"),
    };
    by_value.then(a.1.cmp(&b.1))
}

fn top_k_indices<T: Copy + Send + Sync>(
    src: &[T],
    len: usize,
    k: usize,
    rank: impl Fn((T, u32), (T, u32)) -> Ordering + Sync + Send,
) -> Result<Vec<i64>> {
    let rows = src.len().checked_div(len).unwrap_or(0);
    let mut out = zeroed(rows * k)?;
    // For a few winners out of many, one pass against the current k-th best
    // rejects almost every element with one comparison; otherwise partition.
    let few = k <= 64 && k * 16 <= len;
    for_rows(&mut out, k, len * 4, |first, chunk| {
        let mut keyed: Vec<(T, u32)> = Vec::with_capacity(if few { k + 1 } else { len });
        for (r, dst) in chunk.chunks_exact_mut(k).enumerate() {
            let row = &src[(first + r) * len..(first + r + 1) * len];
            keyed.clear();
            if few {
                for (i, &v) in row.iter().enumerate() {
                    let item = (v, i as u32);
                    // Kept sorted best first; a later equal value ranks lower.
                    if keyed.len() == k && rank(item, keyed[k - 1]) != Ordering::Less {
                        continue;
                    }
                    let at = keyed.partition_point(|&kept| rank(kept, item) == Ordering::Less);
                    keyed.insert(at, item);
                    keyed.truncate(k);
                }
            } else {
                keyed.extend(row.iter().enumerate().map(|(i, &v)| (v, i as u32)));
                if k < len {
                    keyed.select_nth_unstable_by(k - 1, |a, b| rank(*a, *b));
                }
                keyed.truncate(k);
                keyed.sort_unstable_by(|a, b| rank(*a, *b));
            }
            for (d, w) in dst.iter_mut().zip(keyed.iter()) {
                *d = i64::from(w.1);
            }
        }
    });
    Ok(out)
}

pub(super) fn top_k(x: &Tensor, k: usize, out_shape: &[usize]) -> Result<(Tensor, Tensor)> {
    let len = *x.shape().last().expect("rank checked by shape::top_k");
    if len > u32::MAX as usize {
        return Err(TensorError::Unsupported(format!(
            "top-k: the last axis of {:?} is longer than 2^32",
            x.shape()
        )));
    }
    fn gather<T: Copy>(src: &[T], len: usize, k: usize, idx: &[i64]) -> Vec<T> {
        idx.iter()
            .enumerate()
            .map(|(i, &j)| src[(i / k) * len + j as usize])
            .collect()
    }
    fn ints<T: Elem + Ord>(
        x: &Tensor,
        len: usize,
        k: usize,
        out_shape: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let src: &[T] = elems("top-k", x)?;
        let idx = top_k_indices(src, len, k, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)))?;
        let values = gather(src, len, k, &idx);
        Ok((
            tensor_of(T::DTYPE, out_shape, values),
            tensor_of(DType::I64, out_shape, idx),
        ))
    }
    if k == 0 || len == 0 {
        let n = crate::shape::numel(out_shape);
        return Ok((
            super::elementwise::full(x.dtype(), out_shape, 0.0)?,
            tensor_of(DType::I64, out_shape, zeroed::<i64>(n)?),
        ));
    }
    match x.dtype() {
        DType::F32 | DType::F16 => {
            let src = floats("top-k", x)?;
            let idx = top_k_indices(&src, len, k, rank_f32)?;
            let values = gather(&src, len, k, &idx);
            Ok((
                float_tensor(x.dtype(), out_shape, values)?,
                tensor_of(DType::I64, out_shape, idx),
            ))
        }
        DType::I32 => ints::<i32>(x, len, k, out_shape),
        DType::I64 => ints::<i64>(x, len, k, out_shape),
        DType::U8 => Err(TensorError::DType("top-k: u8 is not supported".into())),
    }
}
