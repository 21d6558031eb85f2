//! Convolution and pooling over NCHW, one thread per output element.

use edgeserve_tensor::shape::{self, Conv2dPlan, Pool2dPlan};
use edgeserve_tensor::{DType, PoolKind, Result, Tensor, WeightedInputs};

use crate::GpuBackend;
use crate::buffers::f32_only;
use crate::encoder::{Kernel, grid_threads, u32_of, words_of};

/// A direct convolution, clipped as it is written.
pub(crate) fn conv2d(
    g: &GpuBackend,
    inputs: WeightedInputs<'_>,
    plan: &Conv2dPlan,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let WeightedInputs { x, weight, bias } = inputs;
    let geom = plan.params;
    f32_only(OP, x.dtype())?;
    let xb = g.buf(OP, x)?;
    let wb = g.buf(OP, weight)?;
    let bb = bias.map(|b| g.buf(OP, b)).transpose()?;
    let (t, out) = g.output(OP, DType::F32, &plan.out_shape)?;
    let n = shape::numel(&plan.out_shape);
    // Every index the kernel forms stays below these, including the padded
    // extent its tap positions reach.
    u32_of(OP, x.numel())?;
    u32_of(OP, weight.numel())?;
    u32_of(
        OP,
        plan.h + geom.padding.0 + geom.padding_end.0 + geom.stride.0,
    )?;
    u32_of(
        OP,
        plan.w + geom.padding.1 + geom.padding_end.1 + geom.stride.1,
    )?;
    let mut p = words_of(
        OP,
        &[
            n,
            plan.n,
            plan.c,
            plan.h,
            plan.w,
            plan.o,
            plan.kh,
            plan.kw,
            plan.oh,
            plan.ow,
            geom.stride.0,
            geom.stride.1,
            geom.padding.0,
            geom.padding.1,
            geom.dilation.0,
            geom.dilation.1,
            geom.groups,
        ],
    )?;
    p.push(u32::from(bias.is_some()));
    let (lo, hi) = geom.clip.f32_range();
    p.extend([lo.to_bits(), hi.to_bits()]);
    let b = bb.as_ref().map_or(&g.dummy, |b| b.buffer());
    g.launch(
        Kernel::new("conv2d"),
        &p,
        &[xb.buffer(), wb.buffer(), b, out.buffer()],
        grid_threads(OP, n)?,
    )?;
    Ok(t)
}

/// Max or average pooling; padding never takes part.
pub(crate) fn pool2d(g: &GpuBackend, x: &Tensor, plan: &Pool2dPlan) -> Result<Tensor> {
    let geom = plan.params;
    let name = format!("pool2d {}", geom.kind);
    f32_only(&name, x.dtype())?;
    let xb = g.buf(&name, x)?;
    let (t, out) = g.output(&name, DType::F32, &plan.out_shape)?;
    let n = shape::numel(&plan.out_shape);
    u32_of(&name, x.numel())?;
    u32_of(&name, plan.h + geom.kernel.0 + geom.stride.0)?;
    u32_of(&name, plan.w + geom.kernel.1 + geom.stride.1)?;
    let mut p = words_of(
        &name,
        &[
            n,
            plan.h,
            plan.w,
            plan.oh,
            plan.ow,
            geom.kernel.0,
            geom.kernel.1,
            geom.stride.0,
            geom.stride.1,
            geom.padding.0,
            geom.padding.1,
        ],
    )?;
    p.push(f32::NEG_INFINITY.to_bits());
    let code = match geom.kind {
        PoolKind::Max => 0,
        PoolKind::Avg => 1,
    };
    g.map_kernel(
        &name,
        Kernel::with("pool2d", &[("OP", f64::from(code))]),
        &p,
        (xb.buffer(), out.buffer()),
        n,
    )?;
    Ok(t)
}
