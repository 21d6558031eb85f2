//! Reductions and normalisations: reduce, softmax, layer-norm, top-k.

use edgeserve_tensor::shape::{self, ReducePlan};
use edgeserve_tensor::{DType, NormParams, ReduceOp, Result, Tensor};

use crate::GpuBackend;
use crate::buffers::{f32_only, unsupported};
use crate::encoder::{Kernel, grid, u32_of, words_of};

/// One workgroup per row of `len` elements `inner` apart.
pub(crate) fn softmax(g: &GpuBackend, x: &Tensor, axis: usize) -> Result<Tensor> {
    f32_only("softmax", x.dtype())?;
    let xb = g.buf("softmax", x)?;
    let (t, out) = g.output("softmax", DType::F32, x.shape())?;
    let (outer, len, inner) = shape::split_at_axis(x.shape(), axis);
    let rows = outer * inner;
    g.launch(
        Kernel::new("softmax"),
        &words_of("softmax", &[rows, len, inner])?,
        &[xb.buffer(), out.buffer()],
        grid("softmax", rows)?,
    )?;
    Ok(t)
}

/// One workgroup per row (the last axis).
pub(crate) fn layer_norm(g: &GpuBackend, x: &Tensor, norm: NormParams<'_>) -> Result<Tensor> {
    let NormParams { gamma, beta, eps } = norm;
    f32_only("layer-norm", x.dtype())?;
    let xb = g.buf("layer-norm", x)?;
    let gb = gamma.map(|t| g.buf("layer-norm", t)).transpose()?;
    let bb = beta.map(|t| g.buf("layer-norm", t)).transpose()?;
    let (t, out) = g.output("layer-norm", DType::F32, x.shape())?;
    let n = *x.shape().last().expect("rank checked by shape::layer_norm");
    let rows = x.numel().checked_div(n).unwrap_or(0);
    let flags = u32::from(gamma.is_some()) | (u32::from(beta.is_some()) << 1);
    let mut p = words_of("layer-norm", &[rows, n])?;
    p.extend([flags, eps.to_bits()]);
    let gw = gb.as_ref().map_or(&g.dummy, |b| b.buffer());
    let bw = bb.as_ref().map_or(&g.dummy, |b| b.buffer());
    g.launch(
        Kernel::new("layer_norm"),
        &p,
        &[xb.buffer(), gw, bw, out.buffer()],
        grid("layer-norm", rows)?,
    )?;
    Ok(t)
}

/// One thread per output.
pub(crate) fn reduce(
    g: &GpuBackend,
    op: ReduceOp,
    x: &Tensor,
    plan: &ReducePlan,
) -> Result<Tensor> {
    let name = format!("reduce {op}");
    f32_only(&name, x.dtype())?;
    let xb = g.buf(&name, x)?;
    let (t, out) = g.output(&name, plan.dtype, &plan.out_shape)?;
    let count = plan.outer * plan.inner;
    let code = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
        ReduceOp::ArgMax => 4,
        ReduceOp::ArgMin => 5,
    };
    g.map_kernel(
        &name,
        Kernel::with("reduce", &[("OP", f64::from(code))]),
        &words_of(&name, &[count, plan.len, plan.inner])?,
        (xb.buffer(), out.buffer()),
        count,
    )?;
    Ok(t)
}

/// One workgroup per row (the last axis): a tournament over 256 chunks of
/// the row, replayed k times (`top_k.wgsl`).
pub(crate) fn top_k(
    g: &GpuBackend,
    x: &Tensor,
    k: usize,
    out_shape: &[usize],
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "top-k";
    let code = match x.dtype() {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::I32 => 2,
        DType::I64 => 3,
        other => return Err(unsupported(OP, other)),
    };
    let len = *x.shape().last().expect("rank checked by shape::top_k");
    let rows = shape::numel(&out_shape[..out_shape.len() - 1]);
    // Element and word indices of the input (and a chunk's end, rounded up
    // to 256 chunks a row), and word indices of the i64 indices, stay below
    // these.
    u32_of(OP, (x.numel() + 256) * x.dtype().size().div_ceil(4))?;
    u32_of(OP, rows.saturating_mul(k).saturating_mul(2))?;
    let xb = g.buf(OP, x)?;
    let (values, vb) = g.output(OP, x.dtype(), out_shape)?;
    let (indices, ib) = g.output(OP, DType::I64, out_shape)?;
    if k > 0 {
        g.launch(
            Kernel::with("top_k", &[("DT", f64::from(code))]),
            &words_of(OP, &[rows, len, k])?,
            &[xb.buffer(), vb.buffer(), ib.buffer()],
            grid(OP, rows)?,
        )?;
    }
    Ok((values, indices))
}
