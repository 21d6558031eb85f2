//! Kernels that choose between elements: compare, where, expand, clip.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::buffers::{elems, float_tensor, floats, host, tensor_of, written};
use super::elem::{Elem, by_dtype, by_size};
use super::elementwise::{clamp, map, zip};
use super::parallel::for_rows;
use crate::shape::{self, ClipBounds};
use crate::{CompareOp, DType, Result, Tensor};

pub(super) fn compare(op: CompareOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Result<Tensor> {
    let name = op.name();
    let (sa, sb) = (a.shape(), b.shape());
    let mask = match a.dtype() {
        // f16 compares widened: f32 holds every f16 exactly.
        DType::F32 | DType::F16 => mask_of(op, &floats(name, a)?, sa, &floats(name, b)?, sb, out),
        DType::I32 => mask_of::<i32>(op, elems(name, a)?, sa, elems(name, b)?, sb, out),
        DType::I64 => mask_of::<i64>(op, elems(name, a)?, sa, elems(name, b)?, sb, out),
        DType::U8 => mask_of::<u8>(op, elems(name, a)?, sa, elems(name, b)?, sb, out),
    }?;
    Ok(tensor_of(DType::U8, out, mask))
}

/// `op` over the broadcast shape `out` as 0/1 bytes; NaN compares false
/// except for `not-equal`.
fn mask_of<T: Pod + PartialOrd + Send + Sync>(
    op: CompareOp,
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &[usize],
) -> Result<Vec<u8>> {
    match op {
        CompareOp::Equal => zip(a, sa, b, sb, out, |x, y| u8::from(x == y)),
        CompareOp::NotEqual => zip(a, sa, b, sb, out, |x, y| u8::from(x != y)),
        CompareOp::Less => zip(a, sa, b, sb, out, |x, y| u8::from(x < y)),
        CompareOp::LessEqual => zip(a, sa, b, sb, out, |x, y| u8::from(x <= y)),
        CompareOp::Greater => zip(a, sa, b, sb, out, |x, y| u8::from(x > y)),
        CompareOp::GreaterEqual => zip(a, sa, b, sb, out, |x, y| u8::from(x >= y)),
    }
}

/// Whether each element of `t` is nonzero, as 0/1 bytes (NaN is nonzero,
/// -0.0 is zero); a u8 tensor is read as it is.
fn nonzero(t: &Tensor) -> Result<Cow<'_, [u8]>> {
    fn of<T: Elem>(t: &Tensor) -> Result<Cow<'_, [u8]>> {
        let src: &[T] = elems("where", t)?;
        Ok(Cow::Owned(map(src, 1, |v: T| u8::from(v.to_f64() != 0.0))?))
    }
    match t.dtype() {
        DType::U8 => Ok(Cow::Borrowed(elems("where", t)?)),
        dtype => by_dtype!(dtype, of(t)),
    }
}

pub(super) fn select(cond: &Tensor, a: &Tensor, b: &Tensor, out: &[usize]) -> Result<Tensor> {
    let mask = nonzero(cond)?;
    fn run<T: Pod + Send + Sync>(
        (mask, sc): (&[u8], &[usize]),
        a: &Tensor,
        b: &Tensor,
        out: &[usize],
    ) -> Result<Tensor> {
        let (x, y): (&[T], &[T]) = (elems("where", a)?, elems("where", b)?);
        let shapes = [sc, a.shape(), b.shape()];
        let data = broadcast_rows(out, shapes, |row, [oc, oa, ob], [ic, ia, ib]| {
            for (j, o) in row.iter_mut().enumerate() {
                o.write(if mask[oc + j * ic] != 0 {
                    x[oa + j * ia]
                } else {
                    y[ob + j * ib]
                });
            }
        })?;
        Ok(tensor_of(a.dtype(), out, data))
    }
    by_size!(a.dtype(), run((&mask, cond.shape()), a, b, out))
}

pub(super) fn expand(x: &Tensor, out: &[usize]) -> Result<Tensor> {
    host("expand", x)?;
    if shape::numel(out) == x.numel() {
        // Only unit axes added: the same elements, shared.
        return Ok(x.with_shape(out));
    }
    fn run<T: Pod + Send + Sync>(x: &Tensor, out: &[usize]) -> Result<Tensor> {
        let src: &[T] = elems("expand", x)?;
        let data = broadcast_rows(out, [x.shape()], |row, [at], [step]| {
            if step == 0 {
                row.fill(MaybeUninit::new(src[at]));
            } else {
                row.write_copy_of_slice(&src[at..at + row.len()]);
            }
        })?;
        Ok(tensor_of(x.dtype(), out, data))
    }
    by_size!(x.dtype(), run(x, out))
}

pub(super) fn clip(x: &Tensor, bounds: ClipBounds) -> Result<Tensor> {
    fn ints<T: Elem + Ord>(x: &Tensor, bounds: ClipBounds) -> Result<Tensor> {
        let src: &[T] = elems("clip", x)?;
        let lo = bounds.lo.map(T::from_f64);
        let hi = bounds.hi.map(T::from_f64);
        let data = map(src, 1, |v: T| {
            let v = lo.map_or(v, |lo| v.max(lo));
            hi.map_or(v, |hi| v.min(hi))
        })?;
        Ok(tensor_of(T::DTYPE, x.shape(), data))
    }
    match x.dtype() {
        DType::I32 => ints::<i32>(x, bounds),
        DType::I64 => ints::<i64>(x, bounds),
        dtype => {
            let src = floats("clip", x)?;
            let range = bounds.f32_range();
            let data = map(&src, 2, |v| clamp(v, range))?;
            float_tensor(dtype, x.shape(), data)
        }
    }
}

/// The `n = numel(out)` elements of a result broadcast from `N` operands of
/// `shapes`, filled one innermost row of `out` at a time:
/// `f(row, starts, steps)` gets each operand's offset for the row's first
/// element and its step along the row (0 where the operand repeats).
fn broadcast_rows<U: Pod + Send, const N: usize>(
    out: &[usize],
    shapes: [&[usize]; N],
    f: impl Fn(&mut [MaybeUninit<U>], [usize; N], [usize; N]) + Sync + Send,
) -> Result<Vec<U>> {
    let n = shape::numel(out);
    if n == 0 {
        return Ok(Vec::new());
    }
    let strides = shapes.map(|s| shape::broadcast_strides(s, out));
    let (inner, outer) = out.split_last().map_or((1, &[][..]), |(&l, r)| (l, r));
    let steps: [usize; N] = std::array::from_fn(|k| strides[k].last().copied().unwrap_or(0));
    let fill = |data: &mut [MaybeUninit<U>]| {
        for_rows(data, inner, inner, |first_row, chunk| {
            // Odometer over the outer dimensions, started at `first_row`.
            let mut coord = vec![0usize; outer.len()];
            let mut rest = first_row;
            for d in (0..outer.len()).rev() {
                coord[d] = rest % outer[d];
                rest /= outer[d];
            }
            let mut at: [usize; N] =
                std::array::from_fn(|k| coord.iter().zip(&strides[k]).map(|(c, s)| c * s).sum());
            for row in chunk.chunks_exact_mut(inner) {
                f(row, at, steps);
                for d in (0..outer.len()).rev() {
                    coord[d] += 1;
                    for (a, s) in at.iter_mut().zip(&strides) {
                        *a += s[d];
                    }
                    if coord[d] < outer[d] {
                        break;
                    }
                    for (a, s) in at.iter_mut().zip(&strides) {
                        *a -= s[d] * outer[d];
                    }
                    coord[d] = 0;
                }
            }
        });
    };
    // SAFETY: `f` writes every element of each row it is handed, and the
    // rows cover the output.
    unsafe { written(n, fill) }
}
