//! Ops that choose between elements: compare, where, clip.

use super::{broadcast_for, check_size, numeric, operands_match};
use crate::{CompareOp, DType, Result, Tensor, TensorError};

/// Validates a broadcasting comparison; returns the shape of its u8 mask.
pub fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let name = op.name();
    operands_match(name, a, b)?;
    let out = broadcast_for(name, a.shape(), b.shape())?;
    check_size(name, &out, DType::U8)?;
    Ok(out)
}

/// Validates the contract's `where`: `a` and `b` share a dtype, `condition`
/// may have any, and the three broadcast together. Returns the output shape.
pub fn select(condition: &Tensor, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    operands_match("where", a, b)?;
    let ab = broadcast_for("where", a.shape(), b.shape())?;
    let out = broadcast_for("where", condition.shape(), &ab).map_err(|_| {
        TensorError::Shape(format!(
            "where: condition {:?}, a {:?} and b {:?} do not broadcast",
            condition.shape(),
            a.shape(),
            b.shape()
        ))
    })?;
    check_size("where", &out, a.dtype())?;
    Ok(out)
}

/// The bounds of a `clip`; `None` does not clip on that side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipBounds {
    /// Smaller values become this.
    pub lo: Option<f64>,
    /// Larger values become this.
    pub hi: Option<f64>,
}

/// Validates `clip`: numeric dtypes, bounds that are numbers.
pub fn clip(x: &Tensor, bounds: ClipBounds) -> Result<()> {
    numeric("clip", x.dtype())?;
    if let Some(nan) = [bounds.lo, bounds.hi]
        .into_iter()
        .flatten()
        .find(|b| b.is_nan())
    {
        return Err(TensorError::InvalidArgument(format!(
            "clip: the bound {nan} is not a number"
        )));
    }
    Ok(())
}
