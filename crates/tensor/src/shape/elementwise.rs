//! Elementwise ops: binary, unary, affine, full and cast.

use super::{broadcast_for, check_size, float_only, numeric, operands_match};
use crate::{BinaryOp, DType, Result, Tensor, UnaryOp};

/// Validates a broadcasting binary op; returns the output shape (the
/// output dtype is the operands').
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let name = op.name();
    operands_match(name, a, b)?;
    match op {
        BinaryOp::Pow => float_only(name, a.dtype())?,
        _ => numeric(name, a.dtype())?,
    }
    let out = broadcast_for(name, a.shape(), b.shape())?;
    check_size(name, &out, a.dtype())?;
    Ok(out)
}

/// Validates an elementwise unary op: `neg` and `abs` also take integers.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<()> {
    match op {
        UnaryOp::Neg | UnaryOp::Abs => numeric(op.name(), x.dtype()),
        _ => float_only(op.name(), x.dtype()),
    }
}

/// Validates `affine` (float only).
pub fn affine(x: &Tensor) -> Result<()> {
    float_only("affine", x.dtype())
}

/// Validates `full`: every dtype and value is accepted, and every shape
/// whose size is addressable.
pub fn full(dtype: DType, shape: &[usize], _value: f64) -> Result<()> {
    check_size("full", shape, dtype)
}

/// Validates `cast`: every pair of dtypes is accepted.
pub fn cast(x: &Tensor, to: DType) -> Result<()> {
    check_size("cast", x.shape(), to)
}
