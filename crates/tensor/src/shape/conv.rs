//! Sliding windows over NCHW: conv2d and pool2d.

use super::{check_size, float_only, same_dtype};
use crate::{Conv2d, Pool2d, Result, Tensor, TensorError};

/// Geometry of a 2-D convolution over NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dPlan {
    /// Stride, padding, dilation and groups, as validated.
    pub params: Conv2d,
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// `[n, o, oh, ow]`.
    pub out_shape: Vec<usize>,
}

/// Output length of a sliding window over `size` padded by `pads` (before,
/// after): `None` when the window does not fit (or its extent overflows a
/// count, which no input can match).
fn window_count(
    size: usize,
    pads: (usize, usize),
    kernel: usize,
    dilation: usize,
    stride: usize,
) -> Option<usize> {
    let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
    let padded = pads.0.checked_add(pads.1)?.checked_add(size)?;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// Validates a conv2d: x `[n, c, h, w]`, weight `[o, c/groups, kh, kw]`,
/// bias `[o]`, all float of one dtype; stride, dilation and groups ≥ 1;
/// clip bounds that are numbers.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: Conv2d) -> Result<Conv2dPlan> {
    let (sx, sw) = (x.shape(), weight.shape());
    let err =
        |why: String| TensorError::Shape(format!("conv2d: x {sx:?} and weight {sw:?}: {why}"));
    float_only("conv2d", x.dtype())?;
    same_dtype("conv2d", "weight", x, weight)?;
    if let Some(b) = bias {
        same_dtype("conv2d", "bias", x, b)?;
    }
    if p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0 || p.groups == 0
    {
        return Err(TensorError::InvalidArgument(format!(
            "conv2d: stride {:?}, dilation {:?} and groups {} must all be at least 1",
            p.stride, p.dilation, p.groups
        )));
    }
    p.clip.check("conv2d")?;
    if sx.len() != 4 || sw.len() != 4 {
        return Err(err(
            "x must be [n, c, h, w] and weight [o, c/groups, kh, kw]".into(),
        ));
    }
    let (n, c, h, w) = (sx[0], sx[1], sx[2], sx[3]);
    let (o, cg, kh, kw) = (sw[0], sw[1], sw[2], sw[3]);
    if c % p.groups != 0 || o % p.groups != 0 {
        return Err(err(format!(
            "{c} input and {o} output channels must both divide into {} groups",
            p.groups
        )));
    }
    if cg != c / p.groups {
        return Err(err(format!(
            "weight has {cg} input channels per group, x has {} ({c} in {} groups)",
            c / p.groups,
            p.groups
        )));
    }
    if kh == 0 || kw == 0 {
        return Err(err("the kernel is empty".into()));
    }
    if let Some(b) = bias
        && b.shape() != [o]
    {
        return Err(TensorError::Shape(format!(
            "conv2d: weight {sw:?} and bias {:?}: bias must be [{o}]",
            b.shape()
        )));
    }
    let (before, after) = (p.padding, p.padding_end);
    let oh = window_count(h, (before.0, after.0), kh, p.dilation.0, p.stride.0);
    let ow = window_count(w, (before.1, after.1), kw, p.dilation.1, p.stride.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(err(format!(
            "the dilated kernel does not fit the input padded by {before:?} before and {after:?} after"
        )));
    };
    let out_shape = vec![n, o, oh, ow];
    check_size("conv2d", &out_shape, x.dtype())?;
    Ok(Conv2dPlan {
        params: p,
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        oh,
        ow,
        out_shape,
    })
}

/// Geometry of a 2-D pooling over NCHW.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2dPlan {
    /// Kind, kernel, stride and padding, as validated.
    pub params: Pool2d,
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// `[n, c, oh, ow]`.
    pub out_shape: Vec<usize>,
}

/// Validates a pool2d: x float `[n, c, h, w]`; kernel and stride ≥ 1;
/// padding at most half the kernel (as PyTorch requires), so no window lies
/// entirely in the padding.
pub fn pool2d(x: &Tensor, p: Pool2d) -> Result<Pool2dPlan> {
    let name = format!("pool2d {}", p.kind);
    float_only(&name, x.dtype())?;
    if p.kernel.0 == 0 || p.kernel.1 == 0 || p.stride.0 == 0 || p.stride.1 == 0 {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: kernel {:?} and stride {:?} must be at least 1",
            p.kernel, p.stride
        )));
    }
    if p.padding.0 > p.kernel.0 / 2 || p.padding.1 > p.kernel.1 / 2 {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: padding {:?} exceeds half the kernel {:?}",
            p.padding, p.kernel
        )));
    }
    let s = x.shape();
    if s.len() != 4 {
        return Err(TensorError::Shape(format!(
            "{name}: x {s:?} must be [n, c, h, w]"
        )));
    }
    // With no rows or columns every window would lie in the padding.
    if s[2] == 0 || s[3] == 0 {
        return Err(TensorError::Shape(format!(
            "{name}: x {s:?} has no rows or columns to pool"
        )));
    }
    let oh = window_count(s[2], (p.padding.0, p.padding.0), p.kernel.0, 1, p.stride.0);
    let ow = window_count(s[3], (p.padding.1, p.padding.1), p.kernel.1, 1, p.stride.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(TensorError::Shape(format!(
            "{name}: x {s:?}: kernel {:?} does not fit the input padded by {:?}",
            p.kernel, p.padding
        )));
    };
    Ok(Pool2dPlan {
        params: p,
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
        oh,
        ow,
        out_shape: vec![s[0], s[1], oh, ow],
    })
}
