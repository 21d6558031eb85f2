//! Kernels that only move elements: transpose, slice, concat, embedding.
//!
//! They never look at values, so each runs on the plain integer type of the
//! dtype's size (`by_size!`) and covers every dtype with one instantiation
//! per element width.

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::buffers::{elems, host, tensor_of, written};
use super::elem::by_size;
use super::parallel::for_rows;
use crate::shape::{self, contiguous_strides};
use crate::{Result, Storage, Tensor};

/// A 2-D transpose fills bands of this many output rows...
const BAND: usize = 64;
/// ...this many source rows at a time. Few source rows matter more than
/// square tiles: with power-of-two widths the rows a tile reads all map to
/// one L1 set, and more of them than the cache's ways thrash (measured on
/// [1024, 1024] f32: 32×32 tiles 3.1 ms, 8×64 0.85 ms).
const STEP: usize = 8;

/// Walks row-major positions of `dims`, tracking the matching offset in a
/// tensor read with `strides`.
struct Odometer<'a> {
    dims: &'a [usize],
    strides: &'a [usize],
    coord: Vec<usize>,
    offset: usize,
}

impl<'a> Odometer<'a> {
    fn new(dims: &'a [usize], strides: &'a [usize], start: usize) -> Odometer<'a> {
        let mut coord = vec![0; dims.len()];
        let mut rest = start;
        for d in (0..dims.len()).rev() {
            coord[d] = rest % dims[d];
            rest /= dims[d];
        }
        let offset = coord.iter().zip(strides).map(|(c, s)| c * s).sum();
        Odometer {
            dims,
            strides,
            coord,
            offset,
        }
    }

    fn advance(&mut self) {
        for d in (0..self.dims.len()).rev() {
            self.coord[d] += 1;
            self.offset += self.strides[d];
            if self.coord[d] < self.dims[d] {
                return;
            }
            self.offset -= self.strides[d] * self.dims[d];
            self.coord[d] = 0;
        }
    }
}

/// The smallest equivalent problem: unit axes dropped, and input axes that
/// stay adjacent and in order in the output merged. Returns (input shape,
/// perm) of the reduced problem.
fn simplify(in_shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut renumber = vec![usize::MAX; in_shape.len()];
    let kept: Vec<usize> = (0..in_shape.len()).filter(|&a| in_shape[a] != 1).collect();
    for (new, &old) in kept.iter().enumerate() {
        renumber[old] = new;
    }
    let perm: Vec<usize> = perm
        .iter()
        .filter(|&&p| in_shape[p] != 1)
        .map(|&p| renumber[p])
        .collect();
    let dims: Vec<usize> = kept.iter().map(|&a| in_shape[a]).collect();
    // Runs of output axes reading consecutive input axes: (first input axis, length).
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &p in &perm {
        match groups.last_mut() {
            Some((start, len)) if *start + *len == p => *len += 1,
            _ => groups.push((p, 1)),
        }
    }
    let mut by_input: Vec<usize> = (0..groups.len()).collect();
    by_input.sort_by_key(|&g| groups[g].0);
    let mut new_axis = vec![0; groups.len()];
    let mut merged = Vec::with_capacity(groups.len());
    for (axis, &g) in by_input.iter().enumerate() {
        new_axis[g] = axis;
        let (start, len) = groups[g];
        merged.push(shape::numel(&dims[start..start + len]));
    }
    (merged, new_axis)
}

pub(super) fn transpose(x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor> {
    host("transpose", x)?;
    let (dims, perm) = simplify(x.shape(), perm);
    if dims.len() <= 1 || x.numel() == 0 {
        // Only unit axes moved: the bytes are already in output order.
        return Ok(x.with_shape(out_shape));
    }
    fn run<T: Pod + Send + Sync>(
        x: &Tensor,
        dims: &[usize],
        perm: &[usize],
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let src: &[T] = elems("transpose", x)?;
        let rank = dims.len();
        let in_strides = contiguous_strides(dims);
        let odims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let ostrides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let last = odims[rank - 1];
        let fill = |out: &mut [MaybeUninit<T>]| {
            if perm[rank - 1] == rank - 1 {
                // The innermost axis stays put: copy whole runs.
                let (outer_dims, outer_strides) = (&odims[..rank - 1], &ostrides[..rank - 1]);
                for_rows(out, last, last, |first, chunk| {
                    let mut at = Odometer::new(outer_dims, outer_strides, first);
                    for row in chunk.chunks_exact_mut(last) {
                        row.write_copy_of_slice(&src[at.offset..at.offset + last]);
                        at.advance();
                    }
                });
            } else if perm[rank - 2..] == [rank - 1, rank - 2]
                && perm[..rank - 2].iter().enumerate().all(|(i, &p)| i == p)
            {
                // A (batched) matrix transpose, [b, r, c] -> [b, c, r]. Output
                // rows are split across threads; each band of output rows is
                // filled a few source rows at a time, so the source lines a band
                // reads stay in L1 until all of it has used them.
                let (r, c) = (dims[rank - 2], dims[rank - 1]);
                for_rows(out, r, r, |first, chunk| {
                    let rows = chunk.len() / r;
                    let mut g = 0;
                    while g < rows {
                        let (b, j0) = ((first + g) / c, (first + g) % c);
                        let band = BAND.min(c - j0).min(rows - g);
                        let block = &src[b * r * c..(b + 1) * r * c];
                        let dst = &mut chunk[g * r..(g + band) * r];
                        for i0 in (0..r).step_by(STEP) {
                            let i1 = (i0 + STEP).min(r);
                            for jj in 0..band {
                                let column = &block[i0 * c + j0 + jj..];
                                for (k, d) in dst[jj * r + i0..jj * r + i1].iter_mut().enumerate() {
                                    d.write(column[k * c]);
                                }
                            }
                        }
                        g += band;
                    }
                });
            } else {
                let (outer_dims, outer_strides) = (&odims[..rank - 1], &ostrides[..rank - 1]);
                let step = ostrides[rank - 1];
                for_rows(out, last, last * 2, |first, chunk| {
                    let mut at = Odometer::new(outer_dims, outer_strides, first);
                    for row in chunk.chunks_exact_mut(last) {
                        for (j, d) in row.iter_mut().enumerate() {
                            d.write(src[at.offset + j * step]);
                        }
                        at.advance();
                    }
                });
            }
        };
        // SAFETY: each branch writes every element of every output row.
        let out = unsafe { written(src.len(), fill) }?;
        Ok(tensor_of(x.dtype(), out_shape, out))
    }
    by_size!(x.dtype(), run(x, &dims, &perm, out_shape))
}

pub(super) fn slice(x: &Tensor, axis: usize, start: usize, out_shape: &[usize]) -> Result<Tensor> {
    let buffer = host("slice", x)?;
    let (outer, len, inner) = shape::split_at_axis(x.shape(), axis);
    let taken = out_shape[axis];
    let size = x.dtype().size();
    if shape::numel(out_shape) == 0 {
        return Ok(Tensor::new(
            x.dtype(),
            out_shape,
            Storage::Host(buffer.slice(0..0)),
        ));
    }
    if outer == 1 {
        // One contiguous run: share the bytes instead of copying them.
        let range = start * inner * size..(start + taken) * inner * size;
        let bytes = buffer.slice(range.clone());
        return Ok(x.part(out_shape, Storage::Host(bytes), range));
    }
    fn run<T: Pod + Send + Sync>(
        x: &Tensor,
        (len, inner, start, taken): (usize, usize, usize, usize),
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let src: &[T] = elems("slice", x)?;
        let run = taken * inner;
        let fill = |out: &mut [MaybeUninit<T>]| {
            for_rows(out, run, run, |first, chunk| {
                for (o, dst) in chunk.chunks_exact_mut(run).enumerate() {
                    let from = ((first + o) * len + start) * inner;
                    dst.write_copy_of_slice(&src[from..from + run]);
                }
            });
        };
        // SAFETY: every output run is copied whole.
        let out = unsafe { written(shape::numel(out_shape), fill) }?;
        Ok(tensor_of(x.dtype(), out_shape, out))
    }
    by_size!(x.dtype(), run(x, (len, inner, start, taken), out_shape))
}

pub(super) fn concat(xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor> {
    for x in xs {
        host("concat", x)?;
    }
    if let [only] = xs {
        return Ok(only.with_shape(out_shape));
    }
    fn run<T: Pod + Send + Sync>(
        xs: &[&Tensor],
        axis: usize,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let parts: Vec<(&[T], usize)> = xs
            .iter()
            .map(|x| {
                let run = shape::numel(&x.shape()[axis..]);
                elems("concat", x).map(|s| (s, run))
            })
            .collect::<Result<_>>()?;
        let row = shape::numel(&out_shape[axis..]);
        let fill = |out: &mut [MaybeUninit<T>]| {
            for_rows(out, row, row, |first, chunk| {
                for (o, dst) in chunk.chunks_exact_mut(row).enumerate() {
                    let mut at = 0;
                    for &(src, run) in &parts {
                        let from = (first + o) * run;
                        dst[at..at + run].write_copy_of_slice(&src[from..from + run]);
                        at += run;
                    }
                }
            });
        };
        // SAFETY: the parts' runs add up to the output row (shape::concat),
        // so each row is written whole.
        let out = unsafe { written(shape::numel(out_shape), fill) }?;
        Ok(tensor_of(xs[0].dtype(), out_shape, out))
    }
    by_size!(xs[0].dtype(), run(xs, axis, out_shape))
}

pub(super) fn embedding(table: &Tensor, ids: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    let rows = super::gather::checked(ids, "embedding", |id| {
        usize::try_from(id)
            .ok()
            .filter(|&i| i < vocab)
            .ok_or_else(|| shape::id_out_of_range(id, vocab))
    })?;
    // A gather along axis 0 of the table.
    let plan = shape::GatherPlan {
        outer: 1,
        dim: vocab,
        inner: dim,
        count: rows.len(),
        out_shape: out_shape.to_vec(),
    };
    super::gather::take(table, &rows, &plan)
}
