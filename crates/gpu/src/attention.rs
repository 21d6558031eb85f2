//! Scaled dot-product attention: the scores product, a masked softmax in
//! place, and the product with the values; and attention within sequences
//! packed without padding, one kernel per (token, head) row.

use edgeserve_tensor::shape::{AttentionPlan, VarlenAttentionPlan};
use edgeserve_tensor::{AttentionInputs, DType, Result, Tensor};

use crate::GpuBackend;
use crate::buffers::{bytes_of, f32_only};
use crate::encoder::{Kernel, grid, u32_of, words_of};
use crate::matmul::{Epilogue, Product};

pub(crate) fn attention(
    g: &GpuBackend,
    inputs: AttentionInputs<'_>,
    plan: &AttentionPlan,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let AttentionInputs { q, k, v, mask } = inputs;
    f32_only(OP, q.dtype())?;
    let (qb, kb, vb) = (g.buf(OP, q)?, g.buf(OP, k)?, g.buf(OP, v)?);
    let mb = mask.map(|m| g.buf(OP, m)).transpose()?;
    let (lq, lk, d, dv) = (plan.lq, plan.lk, plan.d, plan.dv);
    let scores = g.alloc(OP, bytes_of(OP, DType::F32, &[plan.batch, lq, lk])?)?;
    let ops: Vec<_> = (0..plan.batch).map(|b| plan.operands(b)).collect();
    let qk: Vec<(usize, usize)> = ops
        .iter()
        .map(|&(qi, ki, _, _)| (qi * lq * d, ki * lk * d))
        .collect();
    g.record_product(
        OP,
        &Product {
            a: qb.buffer(),
            b: kb.buffer(),
            c: scores.buffer(),
            mnk: (lq, lk, d),
            offsets: &qk,
            transpose_b: true,
            epilogue: Epilogue::default(),
        },
    )?;
    let (mrs, mcs) = plan
        .mask_strides
        .as_ref()
        .map_or((0, 0), |st| (st[st.len() - 2], st[st.len() - 1]));
    let mbase = ops
        .iter()
        .map(|&(_, _, _, m)| u32_of(OP, m))
        .collect::<Result<Vec<_>>>()?;
    let rows = plan.batch * lq;
    let mut p = words_of(OP, &[rows, lq, lk])?;
    p.extend([
        plan.scale.to_bits(),
        u32::from(mask.is_some()),
        u32::from(plan.causal),
    ]);
    p.extend(words_of(OP, &[mrs, mcs])?);
    let mbuf = mb.as_ref().map_or(&g.dummy, |m| m.buffer());
    if lk > 0 {
        g.launch_with_tables(
            Kernel::new("attn_softmax"),
            &[&p, &mbase],
            &[mbuf, scores.buffer()],
            grid(OP, rows)?,
        )?;
    }
    let (t, out) = g.output(OP, DType::F32, &plan.out_shape)?;
    let pv: Vec<(usize, usize)> = ops
        .iter()
        .enumerate()
        .map(|(b, &(_, _, vi, _))| (b * lq * lk, vi * lk * dv))
        .collect();
    g.record_product(
        OP,
        &Product {
            a: scores.buffer(),
            b: vb.buffer(),
            c: out.buffer(),
            mnk: (lq, dv, lk),
            offsets: &pv,
            transpose_b: false,
            epilogue: Epilogue::default(),
        },
    )?;
    Ok(t)
}

pub(crate) fn attention_varlen(
    g: &GpuBackend,
    [q, k, v]: [&Tensor; 3],
    plan: &VarlenAttentionPlan,
) -> Result<Tensor> {
    const OP: &str = "attention-varlen";
    f32_only(OP, q.dtype())?;
    let (qb, kb, vb) = (g.buf(OP, q)?, g.buf(OP, k)?, g.buf(OP, v)?);
    let (t, out) = g.output(OP, DType::F32, &plan.out_shape)?;
    let rows = plan.total * plan.heads;
    if rows == 0 || plan.dv == 0 {
        return Ok(t);
    }
    // Per token: its sequence's start and length, and where its heads'
    // scores begin in the scratch (each head holds `length` of them).
    let mut table = Vec::with_capacity(3 * plan.total);
    let mut base = 0usize;
    for w in plan.offsets.windows(2) {
        let len = w[1] - w[0];
        for _ in w[0]..w[1] {
            table.extend([w[0], len, base]);
            base += plan.heads * len;
        }
    }
    let scores = g.alloc(OP, bytes_of(OP, DType::F32, &[base.max(1)])?)?;
    let mut p = words_of(OP, &[rows, plan.heads, plan.d, plan.dv])?;
    p.extend([plan.scale.to_bits(), u32::from(plan.causal)]);
    let table = words_of(OP, &table)?;
    g.launch_with_tables(
        Kernel::new("attention_varlen"),
        &[&p, &table],
        &[
            qb.buffer(),
            kb.buffer(),
            vb.buffer(),
            scores.buffer(),
            out.buffer(),
        ],
        grid(OP, rows)?,
    )?;
    Ok(t)
}
