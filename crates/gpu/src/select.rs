//! Kernels that choose between elements: compare (into a u8 mask) and
//! where.

use edgeserve_tensor::shape;
use edgeserve_tensor::{CompareOp, DType, Result, Tensor};

use crate::GpuBackend;
use crate::buffers::{unsupported, words_per_elem};
use crate::encoder::{broadcast_params, grid_threads};

/// `compare.wgsl`'s code for `op`.
fn compare_code(op: CompareOp) -> u32 {
    match op {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Less => 2,
        CompareOp::LessEqual => 3,
        CompareOp::Greater => 4,
        CompareOp::GreaterEqual => 5,
    }
}

pub(crate) fn compare(
    g: &GpuBackend,
    op: CompareOp,
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let name = op.name();
    let ty = match a.dtype() {
        DType::F32 => 0,
        DType::I32 => 1,
        DType::I64 => 2,
        other => return Err(unsupported(name, other)),
    };
    let (ab, bb) = (g.buf(name, a)?, g.buf(name, b)?);
    let (t, out) = g.output(name, DType::U8, out_shape)?;
    let n = shape::numel(out_shape);
    if n == 0 {
        return Ok(t);
    }
    let words = n.div_ceil(4);
    let p = broadcast_params(name, &[words, out_shape.len(), n], out_shape, &[a, b])?;
    let params = g.params(&p);
    g.dispatch(
        "compare",
        &[("OP", f64::from(compare_code(op))), ("TYPE", f64::from(ty))],
        &[&params, ab.buffer(), bb.buffer(), out.buffer()],
        grid_threads(name, words)?,
    )?;
    Ok(t)
}

pub(crate) fn select(
    g: &GpuBackend,
    cond: &Tensor,
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let per = words_per_elem("where", a.dtype())?;
    let (cb, ab, bb) = (
        g.buf("where", cond)?,
        g.buf("where", a)?,
        g.buf("where", b)?,
    );
    let (t, out) = g.output("where", a.dtype(), out_shape)?;
    let words = shape::numel(out_shape) * per;
    if words == 0 {
        return Ok(t);
    }
    let head = [words, out_shape.len(), per];
    let p = broadcast_params("where", &head, out_shape, &[cond, a, b])?;
    let params = g.params(&p);
    g.dispatch(
        "where",
        &[
            ("COND_BYTES", cond.dtype().size() as f64),
            ("COND_FLOAT", f64::from(u8::from(cond.dtype().is_float()))),
        ],
        &[&params, cb.buffer(), ab.buffer(), bb.buffer(), out.buffer()],
        grid_threads("where", words)?,
    )?;
    Ok(t)
}
