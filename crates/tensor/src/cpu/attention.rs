//! Scaled dot-product attention, one block of queries at a time: over
//! batches of equal-length sequences, and over sequences packed without
//! padding.

use std::mem::MaybeUninit;

use super::buffers::{float_tensor, floats, written};
use super::matmul::{Dst, MatRef, gemm};
use super::parallel::for_rows;
use super::reduce::softmax_in_place;
use crate::shape::{AttentionPlan, VarlenAttentionPlan};
use crate::{AttentionInputs, Result, Tensor};

/// Queries scored together: their `[block, lk]` scores stay in cache
/// between the two products while each product stays large enough for gemm.
const QUERY_BLOCK: usize = 64;

pub(super) fn attention(inputs: AttentionInputs<'_>, s: &AttentionPlan) -> Result<Tensor> {
    let AttentionInputs { q, k, v, mask } = inputs;
    let (qs, ks, vs) = (
        floats("attention", q)?,
        floats("attention", k)?,
        floats("attention", v)?,
    );
    let mask = mask.map(|m| floats("attention", m)).transpose()?;
    let (lq, lk, d, dv) = (s.lq, s.lk, s.d, s.dv);
    // Mask element (i, j) of a batch entry sits at base + i·mrs + j·mcs.
    let (mrs, mcs) = s
        .mask_strides
        .as_ref()
        .map_or((0, 0), |st| (st[st.len() - 2], st[st.len() - 1]));
    let fill = |out: &mut [MaybeUninit<f32>]| {
        // Each output row is one query; tasks take runs of queries, which may
        // span batch entries, so one long sequence still spreads over threads.
        for_rows(
            out,
            dv,
            2 * lk * (d + dv),
            #[inline(always)]
            |first, chunk| {
                let rows = chunk.len() / dv;
                let mut scores = vec![0.0f32; QUERY_BLOCK.min(rows) * lk];
                let mut r = 0;
                while r < rows {
                    let (b, i0) = ((first + r) / lq, (first + r) % lq);
                    let count = QUERY_BLOCK.min(lq - i0).min(rows - r);
                    let dst = &mut chunk[r * dv..(r + count) * dv];
                    r += count;
                    // Keys past the last query's causal limit are hidden from the
                    // whole block: leave them out of both products.
                    let keys = if s.causal {
                        s.causal_limit(i0 + count - 1)
                    } else {
                        lk
                    };
                    if keys == 0 {
                        dst.fill(MaybeUninit::new(0.0));
                        continue;
                    }
                    let (qi, ki, vi, base) = s.operands(b);
                    let qm = &qs[(qi * lq + i0) * d..(qi * lq + i0 + count) * d];
                    let km = &ks[ki * lk * d..(ki * lk + keys) * d];
                    let vm = &vs[vi * lk * dv..(vi * lk + keys) * dv];
                    let sc = &mut scores[..count * keys];
                    // k is [keys, d]; reading it with swapped strides gives kᵀ.
                    let kt = MatRef {
                        data: km,
                        rs: 1,
                        cs: d,
                    };
                    let (q_rows, dims) = (MatRef::rows(qm, d), (count, keys, d));
                    gemm(Dst::Overwrite(sc), keys, dims, q_rows, kt, s.scale, false);
                    for (row_index, row) in sc.chunks_exact_mut(keys).enumerate() {
                        let i = i0 + row_index;
                        if let Some(m) = &mask {
                            let at = base + i * mrs;
                            if mcs == 1 {
                                for (x, &mv) in row.iter_mut().zip(&m[at..at + keys]) {
                                    *x += mv;
                                }
                            } else {
                                let mv = m[at];
                                row.iter_mut().for_each(|x| *x += mv);
                            }
                        }
                        if s.causal {
                            row[s.causal_limit(i)..].fill(f32::NEG_INFINITY);
                        }
                        if !softmax_in_place(row) {
                            // Every key hidden: this query attends to nothing.
                            row.fill(0.0);
                        }
                    }
                    let (weights, values) = (MatRef::rows(sc, keys), MatRef::rows(vm, dv));
                    let dims = (count, dv, keys);
                    gemm(Dst::Fresh(dst), dv, dims, weights, values, 1.0, false);
                }
            },
        );
    };
    // SAFETY: the blocks of queries cover every output row, and each block
    // is either zero-filled or written whole by the second product.
    let out = unsafe { written(s.batch * lq * dv, fill) }?;
    float_tensor(q.dtype(), &s.out_shape, out)
}

/// Attention within each packed sequence: tasks take runs of tokens (which
/// may span sequences), and score each head of a block of their queries
/// against the keys of its own sequence only, reading q, k and v in place
/// through strides (`[total, heads, width]` needs no transpose).
pub(super) fn attention_varlen([q, k, v]: [&Tensor; 3], s: &VarlenAttentionPlan) -> Result<Tensor> {
    const OP: &str = "attention-varlen";
    let (qs, ks, vs) = (floats(OP, q)?, floats(OP, k)?, floats(OP, v)?);
    let (heads, d, dv) = (s.heads, s.d, s.dv);
    let (q_rs, v_rs) = (heads * d, heads * dv);
    let longest = s.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_rows(
            out,
            v_rs,
            2 * heads * longest * (d + dv),
            #[inline(always)]
            |first, chunk| {
                let tokens = chunk.len() / v_rs;
                let mut scores = vec![0.0f32; QUERY_BLOCK.min(tokens) * longest];
                let mut t = 0;
                while t < tokens {
                    let (start, end) = s.sequence_of(first + t);
                    // This task's queries of that sequence, a block at a time.
                    let i0 = first + t - start;
                    let count = QUERY_BLOCK.min(end - start - i0).min(tokens - t);
                    let keys = s.visible_keys(i0 + count - 1, end - start);
                    for h in 0..heads {
                        let qm = MatRef::rows(&qs[(first + t) * q_rs + h * d..], q_rs);
                        // k is [keys, d] with rows q_rs apart; swapped
                        // strides read it as kᵀ.
                        let kt = MatRef {
                            data: &ks[start * q_rs + h * d..],
                            rs: 1,
                            cs: q_rs,
                        };
                        let sc = &mut scores[..count * keys];
                        gemm(
                            Dst::Overwrite(sc),
                            keys,
                            (count, keys, d),
                            qm,
                            kt,
                            s.scale,
                            false,
                        );
                        for (r, row) in sc.chunks_exact_mut(keys).enumerate() {
                            row[s.visible_keys(i0 + r, end - start)..].fill(f32::NEG_INFINITY);
                            // Every query sees at least itself.
                            softmax_in_place(row);
                        }
                        let vm = MatRef::rows(&vs[start * v_rs + h * dv..], v_rs);
                        let dst = &mut chunk[t * v_rs + h * dv..];
                        let weights = MatRef::rows(sc, keys);
                        gemm(
                            Dst::Fresh(dst),
                            v_rs,
                            (count, dv, keys),
                            weights,
                            vm,
                            1.0,
                            false,
                        );
                    }
                    t += count;
                }
            },
        );
    };
    // SAFETY: the blocks of queries cover every token of the chunk, and for
    // each the second product writes all `dv` columns of every head.
    let out = unsafe { written(s.total * v_rs, fill) }?;
    float_tensor(q.dtype(), &s.out_shape, out)
}
