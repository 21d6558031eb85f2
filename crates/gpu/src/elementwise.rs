//! Elementwise kernels: broadcasting binary ops, unary ops, affine, cast,
//! full.

use edgeserve_tensor::shape;
use edgeserve_tensor::{BinaryOp, DType, Result, Tensor, TensorError, UnaryOp};

use crate::GpuBackend;
use crate::broadcast::Broadcast;
use crate::buffers::{bytes_of, f32_only, unsupported};
use crate::encoder::{Kernel, grid_threads, u32_of, words_of};

/// `op`'s code in `activation.wgsl`.
pub(crate) fn unary_code(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Neg => 0,
        UnaryOp::Abs => 1,
        UnaryOp::Exp => 2,
        UnaryOp::Log => 3,
        UnaryOp::Sqrt => 4,
        UnaryOp::Rsqrt => 5,
        UnaryOp::Relu => 6,
        UnaryOp::Gelu => 7,
        UnaryOp::GeluTanh => 8,
        UnaryOp::Tanh => 9,
        UnaryOp::Sigmoid => 10,
        UnaryOp::Silu => 11,
        UnaryOp::Erf => 12,
    }
}

/// `unary.wgsl`'s code for affine, past the unary ops.
const AFFINE: u32 = 13;
/// `unary.wgsl`'s code for clip.
const CLIP: u32 = 14;

/// Fills the words of the result with the element's bytes, repeated.
pub(crate) fn full(g: &GpuBackend, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor> {
    let size = bytes_of("full", dtype, shape)?;
    if dtype == DType::F16 {
        return Err(unsupported("full", dtype));
    }
    let elem = dtype.element_bytes(value);
    let mut pattern = [0u8; 8];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = elem[i % elem.len()];
    }
    let (t, out) = g.output("full", dtype, shape)?;
    let words = size.div_ceil(4) as usize;
    let p = [
        u32_of("full", words)?,
        u32::from_le_bytes([pattern[0], pattern[1], pattern[2], pattern[3]]),
        u32::from_le_bytes([pattern[4], pattern[5], pattern[6], pattern[7]]),
    ];
    g.launch(
        Kernel::new("fill"),
        &p,
        &[out.buffer()],
        grid_threads("full", words)?,
    )?;
    Ok(t)
}

/// `binary.wgsl` over f32, i32 or i64 operands. Integer division is left
/// to the CPU backend: its zero divisors are an error there, which a kernel
/// could only find by reading the divisor back.
pub(crate) fn binary(g: &GpuBackend, op: BinaryOp, args: Broadcast<'_, 2>) -> Result<Tensor> {
    let name = op.name();
    let dtype = args.operands[0].dtype();
    let int_op = !matches!(op, BinaryOp::Div | BinaryOp::Pow);
    let ty = match dtype {
        DType::F32 => 0,
        DType::I32 if int_op => 1,
        DType::I64 if int_op => 2,
        _ => {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: {name} on {dtype} not implemented yet (f32, and i32/i64 for add, sub, mul, maximum, minimum)"
            )));
        }
    };
    let code = match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Maximum => 4,
        BinaryOp::Minimum => 5,
        BinaryOp::Pow => 6,
    };
    let consts = [("OP", f64::from(code)), ("TYPE", f64::from(ty))];
    let kernel = Kernel::with("binary", &consts);
    args.launch(g, name, kernel, dtype, args.numel(), &[])
}

pub(crate) fn unary(g: &GpuBackend, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    map_f32(g, op.name(), unary_code(op), x, 1.0, 0.0)
}

pub(crate) fn affine(g: &GpuBackend, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor> {
    map_f32(g, "affine", AFFINE, x, factor, offset)
}

pub(crate) fn clip(g: &GpuBackend, x: &Tensor, bounds: shape::ClipBounds) -> Result<Tensor> {
    let lo = bounds.lo.map_or(f32::NEG_INFINITY, |v| v as f32);
    let hi = bounds.hi.map_or(f32::INFINITY, |v| v as f32);
    map_f32(g, "clip", CLIP, x, lo, hi)
}

/// `unary.wgsl` with op `code` over f32 `x`.
fn map_f32(
    g: &GpuBackend,
    op: &str,
    code: u32,
    x: &Tensor,
    factor: f32,
    offset: f32,
) -> Result<Tensor> {
    f32_only(op, x.dtype())?;
    let xb = g.buf(op, x)?;
    let (t, out) = g.output(op, DType::F32, x.shape())?;
    let n = x.numel();
    g.map_kernel(
        op,
        Kernel::with("unary", &[("OP", f64::from(code))]),
        &[u32_of(op, n)?, factor.to_bits(), offset.to_bits()],
        (xb.buffer(), out.buffer()),
        n,
    )?;
    Ok(t)
}

pub(crate) fn cast(g: &GpuBackend, x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype() == to {
        g.buf("cast", x)?;
        return Ok(x.clone());
    }
    let code = match (x.dtype(), to) {
        (DType::F32, DType::I32) => 0,
        (DType::I32, DType::F32) => 1,
        (DType::I32, DType::I64) => 2,
        (DType::I64, DType::I32) => 3,
        (DType::F32, DType::I64) => 4,
        (DType::I64, DType::F32) => 5,
        (DType::F16, DType::F32) => 6,
        (DType::F32, DType::F16) => 7,
        (from, to) => {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: cast from {from} to {to} not implemented yet"
            )));
        }
    };
    let xb = g.buf("cast", x)?;
    let (t, out) = g.output("cast", to, x.shape())?;
    let n = x.numel();
    // f32 -> f16 packs two halves per thread, so no two threads write the
    // same word.
    let items = if to == DType::F16 { n.div_ceil(2) } else { n };
    g.map_kernel(
        "cast",
        Kernel::with("cast", &[("OP", f64::from(code))]),
        &words_of("cast", &[items, n])?,
        (xb.buffer(), out.buffer()),
        items,
    )?;
    Ok(t)
}
