//! Kernels that choose between elements: compare (into a u8 mask) and
//! where.

use edgeserve_tensor::{CompareOp, DType, Result, Tensor};

use crate::GpuBackend;
use crate::broadcast::Broadcast;
use crate::buffers::{unsupported, words_per_elem};
use crate::encoder::Kernel;

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

/// `compare.wgsl` into a u8 mask, four elements a thread.
pub(crate) fn compare(g: &GpuBackend, op: CompareOp, args: Broadcast<'_, 2>) -> Result<Tensor> {
    let name = op.name();
    let ty = match args.operands[0].dtype() {
        DType::F32 => 0,
        DType::I32 => 1,
        DType::I64 => 2,
        other => return Err(unsupported(name, other)),
    };
    let consts = [("OP", f64::from(compare_code(op))), ("TYPE", f64::from(ty))];
    let n = args.numel();
    let kernel = Kernel::with("compare", &consts);
    args.launch(g, name, kernel, DType::U8, n.div_ceil(4), &[n])
}

/// `where.wgsl`, moving whole words of any dtype it can hold.
pub(crate) fn select(g: &GpuBackend, args: Broadcast<'_, 3>) -> Result<Tensor> {
    let [cond, a, _] = args.operands;
    let per = words_per_elem("where", a.dtype())?;
    let consts = [
        ("COND_BYTES", cond.dtype().size() as f64),
        ("COND_FLOAT", f64::from(u8::from(cond.dtype().is_float()))),
    ];
    let kernel = Kernel::with("where", &consts);
    args.launch(g, "where", kernel, a.dtype(), args.numel() * per, &[per])
}
