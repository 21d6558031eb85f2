//! Data movement: embedding, gather, expand, reshape, transpose, slice, concat.

use super::{broadcast_for, check_axis, check_size, dtypes_match, resolve_reshape, split_at_axis};
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

/// The geometry of a gather along one axis of `x`, seen as
/// `[outer, dim, inner]`: each index picks an `inner`-long run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherPlan {
    /// Elements before the axis (product of the leading dimensions).
    pub outer: usize,
    /// The axis' length: indices lie in `-dim..dim`.
    pub dim: usize,
    /// Elements after the axis (product of the trailing dimensions).
    pub inner: usize,
    /// Number of indices.
    pub count: usize,
    /// `[..before, ..indices, ..after]`.
    pub out_shape: Vec<usize>,
}

/// Validates a gather along `axis` (already normalised): indices of i32 or
/// i64 and any shape. Whether each index lies in `-dim..dim` is only known
/// from the data; backends report it with [`index_out_of_range`].
pub fn gather(x: &Tensor, indices: &Tensor, axis: usize) -> Result<GatherPlan> {
    if !matches!(indices.dtype(), DType::I32 | DType::I64) {
        return Err(TensorError::DType(format!(
            "gather: indices must be i32 or i64, got {}",
            indices.dtype()
        )));
    }
    check_axis("gather", x, axis)?;
    let (outer, dim, inner) = split_at_axis(x.shape(), axis);
    let mut out_shape = x.shape()[..axis].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&x.shape()[axis + 1..]);
    check_size("gather", &out_shape, x.dtype())?;
    Ok(GatherPlan {
        outer,
        dim,
        inner,
        count: indices.numel(),
        out_shape,
    })
}

/// The error for a gather index outside `-dim..dim`.
pub fn index_out_of_range(index: i64, dim: usize) -> TensorError {
    TensorError::InvalidArgument(format!(
        "gather: index {index} is out of range for an axis of {dim}"
    ))
}

/// Validates `expand`: `x` broadcast with `shape` (NumPy rules, both ways).
/// Returns the output shape.
pub fn expand(x: &Tensor, shape: &[usize]) -> Result<Vec<usize>> {
    let out = broadcast_for("expand", x.shape(), shape).map_err(|_| {
        TensorError::Shape(format!(
            "expand: x {:?} does not broadcast with the shape {shape:?}",
            x.shape()
        ))
    })?;
    check_size("expand", &out, x.dtype())?;
    Ok(out)
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
        dtypes_match(first.dtype(), x.dtype(), || {
            format!(
                "concat: tensor 0 is {} but tensor {i} is {}",
                first.dtype(),
                x.dtype()
            )
        })?;
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
