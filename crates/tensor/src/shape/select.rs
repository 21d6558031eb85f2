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

impl ClipBounds {
    /// No bound on either side.
    pub const NONE: ClipBounds = ClipBounds { lo: None, hi: None };

    /// The bounds as f32s, an absent one infinite.
    pub fn f32_range(self) -> (f32, f32) {
        (
            self.lo.map_or(f32::NEG_INFINITY, |v| v as f32),
            self.hi.map_or(f32::INFINITY, |v| v as f32),
        )
    }

    /// Refuses a bound that is not a number; `op` names the operation.
    pub(crate) fn check(self, op: &str) -> Result<()> {
        match [self.lo, self.hi]
            .into_iter()
            .flatten()
            .find(|b| b.is_nan())
        {
            Some(nan) => Err(TensorError::InvalidArgument(format!(
                "{op}: the bound {nan} is not a number"
            ))),
            None => Ok(()),
        }
    }
}

/// Validates `clip`: numeric dtypes, bounds that are numbers.
pub fn clip(x: &Tensor, bounds: ClipBounds) -> Result<()> {
    numeric("clip", x.dtype())?;
    bounds.check("clip")
}
