//! Reductions and normalisations: reduce, softmax, layer-norm, top-k.

use super::{check_axis, float_only, numeric, same_dtype, split_at_axis};
use crate::{DType, ReduceOp, Result, Tensor, TensorError};

/// Validates a softmax along `axis` (float only).
pub fn softmax(x: &Tensor, axis: usize) -> Result<()> {
    float_only("softmax", x.dtype())?;
    check_axis("softmax", x, axis)
}

/// Validates a layer norm: x float of rank ≥ 1; gamma and beta, when given,
/// of x's dtype and shape `[last]`.
pub fn layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> Result<()> {
    float_only("layer-norm", x.dtype())?;
    let Some(&last) = x.shape().last() else {
        return Err(TensorError::Shape(
            "layer-norm: x [] has no last axis to normalize".into(),
        ));
    };
    for (what, param) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = param {
            same_dtype("layer-norm", what, x, p)?;
            if p.shape() != [last] {
                return Err(TensorError::Shape(format!(
                    "layer-norm: x {:?} and {what} {:?}: {what} must be [{last}]",
                    x.shape(),
                    p.shape()
                )));
            }
        }
    }
    Ok(())
}

/// Geometry of a reduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReducePlan {
    /// Output dtype: i64 for argmax/argmin, the input's otherwise.
    pub dtype: DType,
    /// Output dimensions (the reduced axis kept as 1 or removed).
    pub out_shape: Vec<usize>,
    /// Elements before the axis.
    pub outer: usize,
    /// Length of the axis.
    pub len: usize,
    /// Elements after the axis.
    pub inner: usize,
}

/// Validates a reduction along `axis`. `mean` needs a float dtype; max, min,
/// argmax and argmin need a non-empty axis.
pub fn reduce(op: ReduceOp, x: &Tensor, axis: usize, keep_dims: bool) -> Result<ReducePlan> {
    let name = format!("reduce {op}");
    match op {
        ReduceOp::Mean => float_only(&name, x.dtype())?,
        _ => numeric(&name, x.dtype())?,
    }
    check_axis(&name, x, axis)?;
    let (outer, len, inner) = split_at_axis(x.shape(), axis);
    if len == 0 && !matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: axis {axis} of {:?} is empty",
            x.shape()
        )));
    }
    let mut out_shape = x.shape().to_vec();
    if keep_dims {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    let dtype = match op {
        ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
        _ => x.dtype(),
    };
    Ok(ReducePlan {
        dtype,
        out_shape,
        outer,
        len,
        inner,
    })
}

/// Validates a top-k along the last axis: numeric dtype, rank ≥ 1,
/// `k` no larger than the axis. Returns the output shape `[..., k]`.
pub fn top_k(x: &Tensor, k: usize) -> Result<Vec<usize>> {
    numeric("top-k", x.dtype())?;
    let Some(&last) = x.shape().last() else {
        return Err(TensorError::Shape("top-k: x [] has no last axis".into()));
    };
    if k > last {
        return Err(TensorError::InvalidArgument(format!(
            "top-k: k {k} exceeds the last axis of {:?}",
            x.shape()
        )));
    }
    let mut out = x.shape().to_vec();
    *out.last_mut().expect("rank checked above") = k;
    Ok(out)
}
