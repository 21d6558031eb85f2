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

/// A run of at most [`QUERY_BLOCK`] queries of one sequence that a task
/// scores together.
struct QueryBlock {
    /// The block's first row within the task's chunk of the output.
    row: usize,
    /// The row of its sequence's first query, over the whole output.
    start: usize,
    /// Queries in its sequence.
    len: usize,
    /// The block's first query within its sequence.
    i0: usize,
    /// Queries in the block.
    count: usize,
}

/// Fills `out` (`row_len` values a query) by blocks of queries: each task
/// takes a run of rows, which may span sequences so that one long sequence
/// still spreads over threads, and hands `block` one sequence's queries at
/// a time with scratch room for their scores against up to `max_keys` keys.
/// `sequence_of` gives the bounds `(start, end)` of the sequence that holds
/// an output row.
fn for_query_blocks(
    out: &mut [MaybeUninit<f32>],
    row_len: usize,
    cost_per_row: usize,
    max_keys: usize,
    sequence_of: impl Fn(usize) -> (usize, usize) + Sync + Send,
    block: impl Fn(&QueryBlock, &mut [MaybeUninit<f32>], &mut [f32]) + Sync + Send,
) {
    for_rows(
        out,
        row_len,
        cost_per_row,
        #[inline(always)]
        |first, chunk| {
            let rows = chunk.len() / row_len;
            let mut scores = vec![0.0f32; QUERY_BLOCK.min(rows) * max_keys];
            let mut row = 0;
            while row < rows {
                let (start, end) = sequence_of(first + row);
                let i0 = first + row - start;
                let count = QUERY_BLOCK.min(end - start - i0).min(rows - row);
                let at = QueryBlock {
                    row,
                    start,
                    len: end - start,
                    i0,
                    count,
                };
                block(&at, chunk, &mut scores);
                row += count;
            }
        },
    );
}

/// `keys` rows of `stride` values read with swapped strides: `kᵀ`.
fn transposed(keys: &[f32], stride: usize) -> MatRef<'_> {
    MatRef {
        data: keys,
        rs: 1,
        cs: stride,
    }
}

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
        // Each batch entry is a sequence of `lq` queries.
        let sequence_of = |row: usize| (row - row % lq, row - row % lq + lq);
        for_query_blocks(
            out,
            dv,
            2 * lk * (d + dv),
            lk,
            sequence_of,
            #[inline(always)]
            |&QueryBlock {
                 row: at,
                 start,
                 i0,
                 count,
                 ..
             },
             chunk,
             scores| {
                let dst = &mut chunk[at * dv..(at + count) * dv];
                // Keys past the last query's causal limit are hidden from the
                // whole block: leave them out of both products.
                let keys = if s.causal {
                    s.causal_limit(i0 + count - 1)
                } else {
                    lk
                };
                if keys == 0 {
                    dst.fill(MaybeUninit::new(0.0));
                    return;
                }
                let (qi, ki, vi, base) = s.operands(start / lq);
                let qm = &qs[(qi * lq + i0) * d..(qi * lq + i0 + count) * d];
                let km = &ks[ki * lk * d..(ki * lk + keys) * d];
                let vm = &vs[vi * lk * dv..(vi * lk + keys) * dv];
                let sc = &mut scores[..count * keys];
                // k is [keys, d].
                let (q_rows, dims) = (MatRef::rows(qm, d), (count, keys, d));
                let kt = transposed(km, d);
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
        for_query_blocks(
            out,
            v_rs,
            2 * heads * longest * (d + dv),
            longest,
            |token| s.sequence_of(token),
            #[inline(always)]
            |&QueryBlock {
                 row: at,
                 start,
                 len,
                 i0,
                 count,
             },
             chunk,
             scores| {
                let keys = s.visible_keys(i0 + count - 1, len);
                for h in 0..heads {
                    let qm = MatRef::rows(&qs[(start + i0) * q_rs + h * d..], q_rs);
                    // k is [keys, d] with rows q_rs apart.
                    let kt = transposed(&ks[start * q_rs + h * d..], q_rs);
                    let (sc, dims) = (&mut scores[..count * keys], (count, keys, d));
                    gemm(Dst::Overwrite(sc), keys, dims, qm, kt, s.scale, false);
                    for (r, row) in sc.chunks_exact_mut(keys).enumerate() {
                        row[s.visible_keys(i0 + r, len)..].fill(f32::NEG_INFINITY);
                        // Every query sees at least itself.
                        softmax_in_place(row);
                    }
                    let vm = MatRef::rows(&vs[start * v_rs + h * dv..], v_rs);
                    let dst = &mut chunk[at * v_rs + h * dv..];
                    let (weights, dims) = (MatRef::rows(sc, keys), (count, dv, keys));
                    gemm(Dst::Fresh(dst), v_rs, dims, weights, vm, 1.0, false);
                }
            },
        );
    };
    // SAFETY: the blocks of queries cover every token of the chunk, and for
    // each the second product writes all `dv` columns of every head.
    let out = unsafe { written(s.total * v_rs, fill) }?;
    float_tensor(q.dtype(), &s.out_shape, out)
}
