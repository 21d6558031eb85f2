//! The tiled matmul kernel: `matmul` and `linear` (bias and activation as
//! its epilogue), and the two products of attention.

use edgeserve_tensor::shape::MatmulPlan;
use edgeserve_tensor::{DType, Result, Tensor, TensorError, UnaryOp, WeightedInputs};

use crate::GpuBackend;
use crate::elementwise::{cast, unary_code};
use crate::encoder::{Kernel, MAX_GROUPS, u32_of};

/// What the matmul kernel does besides the product.
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// Operands and result are f16 (needs `shader-f16`).
    pub(crate) f16: bool,
    /// `[n]`, added to every row.
    pub(crate) bias: Option<&'a wgpu::Buffer>,
    /// Applied to every element last.
    pub(crate) activation: Option<UnaryOp>,
}

/// One batched product: `c[b] = act(a[b] · b[b] + bias)` (or with `b[b]ᵀ`)
/// of `m x k` by `k x n` matrices, where `offsets[i]` gives the element
/// offsets of batch `i`'s a and b.
pub(crate) struct Product<'a> {
    pub(crate) a: &'a wgpu::Buffer,
    pub(crate) b: &'a wgpu::Buffer,
    pub(crate) c: &'a wgpu::Buffer,
    pub(crate) mnk: (usize, usize, usize),
    pub(crate) offsets: &'a [(usize, usize)],
    pub(crate) transpose_b: bool,
    pub(crate) epilogue: Epilogue<'a>,
}

/// Matmul and linear: one dispatch of the matmul kernel, on f16 storage
/// where the device has `shader-f16`.
pub(crate) fn matmul(
    g: &GpuBackend,
    inputs: WeightedInputs<'_>,
    plan: &MatmulPlan,
) -> Result<Tensor> {
    let WeightedInputs {
        x: a,
        weight: b,
        bias,
    } = inputs;
    let op = if bias.is_some() || plan.activation.is_some() {
        "linear"
    } else {
        "matmul"
    };
    let dtype = a.dtype();
    if dtype == DType::F16 && !g.shader_f16 {
        // Widen, compute, round once, as the CPU backend does.
        let wide = |t: &Tensor| cast(g, t, DType::F32);
        let bias = bias.map(wide).transpose()?;
        let wide_inputs = WeightedInputs {
            x: &wide(a)?,
            weight: &wide(b)?,
            bias: bias.as_ref(),
        };
        let y = matmul(g, wide_inputs, plan)?;
        return cast(g, &y, DType::F16);
    }
    let (ab, bb) = (g.buf(op, a)?, g.buf(op, b)?);
    let bias = bias.map(|t| g.buf(op, t)).transpose()?;
    let (t, out) = g.output(op, dtype, &plan.out_shape)?;
    let offsets: Vec<(usize, usize)> = (0..plan.batch)
        .map(|i| {
            let (ai, bi) = plan.operands(i);
            (ai * plan.m * plan.k, bi * plan.k * plan.n)
        })
        .collect();
    g.record_product(
        op,
        &Product {
            a: ab.buffer(),
            b: bb.buffer(),
            c: out.buffer(),
            mnk: (plan.m, plan.n, plan.k),
            offsets: &offsets,
            transpose_b: plan.transpose_b,
            epilogue: Epilogue {
                f16: dtype == DType::F16,
                bias: bias.as_ref().map(|b| b.buffer()),
                activation: plan.activation,
            },
        },
    )?;
    Ok(t)
}

impl GpuBackend {
    /// Records `product`, in as many dispatches as its batch needs.
    pub(crate) fn record_product(&self, op: &str, product: &Product<'_>) -> Result<()> {
        let Product {
            a,
            b,
            c,
            mnk: (m, n, k),
            offsets,
            transpose_b,
            epilogue,
        } = *product;
        let batch = offsets.len();
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let mut table = Vec::with_capacity(2 * batch);
        for &(ao, bo) in offsets {
            table.push(u32_of(op, ao)?);
            table.push(u32_of(op, bo)?);
        }
        u32_of(op, batch * m * n)?;
        let gx = u32_of(op, n.div_ceil(64))?;
        // Workgroups cover 128 rows x 64 columns of C (see matmul.wgsl).
        let gy = u32_of(op, m.div_ceil(128))?;
        if gx > MAX_GROUPS || gy > MAX_GROUPS {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: {op}: {m}x{n} output exceeds one dispatch"
            )));
        }
        // Whole-quad loads and stores need every row of A, B (or Bᵀ) and C
        // to start on a 16-byte boundary: k and n multiples of 4 align the
        // rows, and every batch's A and B offset must be a whole quad too
        // (the callers' are multiples of k or n, but that is not checked).
        let vec4 =
            k % 4 == 0 && n % 4 == 0 && offsets.iter().all(|&(ao, bo)| ao % 4 == 0 && bo % 4 == 0);
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let consts = [
            ("TRANS_B", flag(transpose_b)),
            ("VEC4", flag(vec4)),
            ("HAS_BIAS", flag(epilogue.bias.is_some())),
            (
                "ACT",
                epilogue
                    .activation
                    .map_or(0.0, |op| f64::from(unary_code(op) + 1)),
            ),
            ("GROUP_ROWS", f64::from(self.matmul_tile_group())),
        ];
        let kernel = if epilogue.f16 { "matmul_f16" } else { "matmul" };
        let bias = epilogue.bias.unwrap_or(&self.dummy);
        let mut base = 0usize;
        while base < batch {
            let count = (batch - base).min(MAX_GROUPS as usize);
            self.launch_with_tables(
                Kernel::with(kernel, &consts),
                &[&[m as u32, n as u32, k as u32, base as u32], &table],
                &[a, b, c, bias],
                (gx, gy, count as u32),
            )?;
            base += count;
        }
        Ok(())
    }
}
