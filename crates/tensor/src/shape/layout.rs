//! Data movement: embedding, reshape, transpose, slice, concat.

use super::{check_axis, check_size, resolve_reshape};
use crate::{DType, Result, Tensor, TensorError};

/// Validates an embedding lookup: table `[vocab, dim]` of any dtype, ids of
/// i32 or i64 and any shape. Returns the output shape `[..ids, dim]`.
///
/// Whether each id is below `vocab` is only known from the data; backends
/// report it with [`id_out_of_range`].
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Vec<usize>> {
    if !matches!(ids.dtype(), DType::I32 | DType::I64) {
        return Err(TensorError::DType(format!(
            "embedding: ids must be i32 or i64, got {}",
            ids.dtype()
        )));
    }
    if table.shape().len() != 2 {
        return Err(TensorError::Shape(format!(
            "embedding: table {:?} and ids {:?}: table must be [vocab, dim]",
            table.shape(),
            ids.shape()
        )));
    }
    let mut out = ids.shape().to_vec();
    out.push(table.shape()[1]);
    check_size("embedding", &out, table.dtype())?;
    Ok(out)
}

/// The error for an embedding id outside `0..vocab`.
pub fn id_out_of_range(id: i64, vocab: usize) -> TensorError {
    TensorError::InvalidArgument(format!(
        "embedding: id {id} is out of range for a vocabulary of {vocab}"
    ))
}

/// Validates a reshape to `shape` (at most one -1, inferred; see
/// [`resolve_reshape`]) and returns the resolved output shape.
pub fn reshape(x: &Tensor, shape: &[i32]) -> Result<Vec<usize>> {
    resolve_reshape(x.numel(), shape)
}

/// Validates a transpose (output axis i is input axis `perm[i]`); returns
/// the output shape.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Vec<usize>> {
    let rank = x.shape().len();
    let mut seen = vec![false; rank];
    let valid = perm.len() == rank
        && perm
            .iter()
            .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(TensorError::InvalidArgument(format!(
            "transpose: {perm:?} is not a permutation of the {rank} axes of {:?}",
            x.shape()
        )));
    }
    Ok(perm.iter().map(|&p| x.shape()[p]).collect())
}

/// Validates a slice `start..end` along `axis`; returns the output shape.
pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Vec<usize>> {
    check_axis("slice", x, axis)?;
    let dim = x.shape()[axis];
    if start > end || end > dim {
        return Err(TensorError::InvalidArgument(format!(
            "slice: {start}..{end} is out of range for axis {axis} of {:?}",
            x.shape()
        )));
    }
    let mut out = x.shape().to_vec();
    out[axis] = end - start;
    Ok(out)
}

/// Validates a concat along `axis`: at least one tensor, one dtype, one
/// rank, every other dimension equal. Returns the output shape.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Vec<usize>> {
    let Some(first) = xs.first() else {
        return Err(TensorError::InvalidArgument(
            "concat: needs at least one tensor".into(),
        ));
    };
    check_axis("concat", first, axis)?;
    let mut out = first.shape().to_vec();
    for (i, x) in xs.iter().enumerate().skip(1) {
        if x.dtype() != first.dtype() {
            return Err(TensorError::DType(format!(
                "concat: tensor 0 is {} but tensor {i} is {}; dtypes must match",
                first.dtype(),
                x.dtype()
            )));
        }
        let fits = x.shape().len() == out.len()
            && x.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !fits {
            return Err(TensorError::Shape(format!(
                "concat: tensor 0 {:?} and tensor {i} {:?} differ outside axis {axis}",
                first.shape(),
                x.shape()
            )));
        }
        out[axis] += x.shape()[axis];
    }
    check_size("concat", &out, first.dtype())?;
    Ok(out)
}
