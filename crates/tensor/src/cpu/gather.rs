//! Gathers: whole runs of a tensor picked by index (`gather`, and the
//! row lookup of `embedding`).

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::buffers::{elems, host, tensor_of, written};
use super::elem::by_size;
use super::parallel::for_rows;
use crate::shape::{self, GatherPlan};
use crate::{DType, Result, Tensor, TensorError};

pub(super) fn gather(x: &Tensor, indices: &Tensor, plan: &GatherPlan) -> Result<Tensor> {
    let dim = plan.dim;
    let picks = checked(indices, "gather", |i| {
        let from_end = if i < 0 { i + dim as i64 } else { i };
        usize::try_from(from_end)
            .ok()
            .filter(|&r| r < dim)
            .ok_or_else(|| shape::index_out_of_range(i, dim))
    })?;
    take(x, &picks, plan)
}

/// `indices` (i32 or i64) as positions, each resolved by `resolve`.
pub(super) fn checked(
    indices: &Tensor,
    op: &str,
    resolve: impl Fn(i64) -> Result<usize, TensorError>,
) -> Result<Vec<usize>> {
    match indices.dtype() {
        DType::I32 => elems::<i32>(op, indices)?
            .iter()
            .map(|&i| resolve(i64::from(i)))
            .collect(),
        _ => elems::<i64>(op, indices)?
            .iter()
            .map(|&i| resolve(i))
            .collect(),
    }
}

/// The plan's output: for each outer block, the `inner`-long run at each
/// of `picks` (positions below `plan.dim`, already checked).
pub(super) fn take(x: &Tensor, picks: &[usize], plan: &GatherPlan) -> Result<Tensor> {
    host("gather", x)?;
    fn run<T: Pod + Send + Sync>(x: &Tensor, picks: &[usize], plan: &GatherPlan) -> Result<Tensor> {
        let src: &[T] = elems("gather", x)?;
        let (dim, inner, count) = (plan.dim, plan.inner, picks.len());
        let n = plan.outer * count * inner;
        if n == 0 {
            return Ok(tensor_of(x.dtype(), &plan.out_shape, Vec::<T>::new()));
        }
        let fill = |out: &mut [MaybeUninit<T>]| {
            for_rows(out, inner, inner, |first, chunk| {
                for (r, dst) in chunk.chunks_exact_mut(inner).enumerate() {
                    let (block, j) = ((first + r) / count, (first + r) % count);
                    let from = (block * dim + picks[j]) * inner;
                    dst.write_copy_of_slice(&src[from..from + inner]);
                }
            });
        };
        // SAFETY: one run per (block, index), each copied whole.
        let out = unsafe { written(n, fill) }?;
        Ok(tensor_of(x.dtype(), &plan.out_shape, out))
    }
    by_size!(x.dtype(), run(x, picks, plan))
}
