//! Convolution and pooling over NCHW.
//!
//! A convolution is a product: each output position's patch of the input
//! against the weight. Where the packed product kernel takes the weight
//! ([`PackedWeight::of_conv`]), the input is laid out channels last and each
//! output position's patch is a row of one product over all the images,
//! which the kernel reads tap by tap where it lies (no im2col matrix, which
//! would be kh·kw times the input), against the weight packed once per
//! model as a linear layer's is. A convolution whose groups read one input
//! channel each (depthwise) sums its taps row by row where they lie.
//! Elsewhere (other grouped convolutions, narrow ones, CPUs without the
//! kernel) im2col lays out each image's `[c·kh·kw, oh·ow]` matrix, or a 1×1
//! convolution reads the input as it lies, for the product on
//! [`super::pointwise`]'s tiles (gemm where the CPU lacks them).

use std::mem::MaybeUninit;

use super::buffers::{float_tensor, floats, written, zeroed};
use super::elementwise::clamp;
use super::matmul::{Dst, MatRef, gemm, threaded};
use super::packed::{self, PackedWeight};
use super::parallel::{PARALLEL_WORK, SendPtr, Simd, for_each_task, for_rows, simd};
use crate::shape::{ClipBounds, Conv2dPlan, Pool2dPlan};
use crate::{Conv2d, PoolKind, Result, Tensor, WeightedInputs};

/// The output positions `lo..hi` along one axis whose input position
/// `i = o·stride + offset − pad` (offset = tap·dilation) lies in `0..size`;
/// the others read padding.
fn valid_outputs(
    size: usize,
    out: usize,
    stride: usize,
    pad: usize,
    offset: usize,
) -> (usize, usize) {
    // i = o·stride + offset − pad ≥ 0  ⇔  o ≥ ceil((pad − offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // i < size  ⇔  o·stride < size + pad − offset
    let hi = if size + pad <= offset {
        0
    } else {
        (size + pad - offset).div_ceil(stride)
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Lays one image's group of channels out as the `[cg·kh·kw, oh·ow]` matrix
/// whose product with the group's weights is the convolution; its rows
/// split over the threads where `threads` (a batch-1 convolution's only
/// matrix, which one thread would write alone while the others wait).
fn im2col(x: &[f32], s: &Conv2dPlan, p: &Conv2d, col: &mut [f32], threads: bool) {
    let plane = s.oh * s.ow;
    if threads {
        for_rows(
            col,
            plane,
            plane,
            #[inline(always)]
            |first, rows| im2col_rows(x, s, p, first, rows),
        );
    } else {
        im2col_rows(x, s, p, 0, col);
    }
}

/// Rows `first..` of [`im2col`]'s matrix (row `ci·kh·kw + ky·kw + kx`).
#[inline(always)]
fn im2col_rows(x: &[f32], s: &Conv2dPlan, p: &Conv2d, first: usize, rows: &mut [f32]) {
    let (h, w, oh, ow) = (s.h, s.w, s.oh, s.ow);
    for (i, row) in rows.chunks_exact_mut(oh * ow).enumerate() {
        let r = first + i;
        let (ci, ky, kx) = (r / (s.kh * s.kw), r / s.kw % s.kh, r % s.kw);
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        let (y_lo, y_hi) = valid_outputs(h, oh, p.stride.0, p.padding.0, ky * p.dilation.0);
        let (x_lo, x_hi) = valid_outputs(w, ow, p.stride.1, p.padding.1, kx * p.dilation.1);
        if x_lo == x_hi {
            row.fill(0.0);
            continue;
        }
        // Only what reads padding is zeroed; the rest is copied below.
        row[..y_lo * ow].fill(0.0);
        row[y_hi * ow..].fill(0.0);
        let ix0 = x_lo * p.stride.1 + kx * p.dilation.1 - p.padding.1;
        let n = x_hi - x_lo;
        for oy in y_lo..y_hi {
            let iy = oy * p.stride.0 + ky * p.dilation.0 - p.padding.0;
            let src = &plane[iy * w..(iy + 1) * w];
            let line = &mut row[oy * ow..(oy + 1) * ow];
            line[..x_lo].fill(0.0);
            line[x_hi..].fill(0.0);
            let dst = &mut line[x_lo..x_hi];
            if p.stride.1 == 1 {
                dst.copy_from_slice(&src[ix0..ix0 + n]);
            } else if p.stride.1 == 2 {
                // In pairs, so the compiler sees the stride and gathers
                // with shuffles; the last element's pair may end past the
                // row.
                let (last, head) = dst.split_last_mut().expect("x_lo < x_hi");
                let pairs = src[ix0..ix0 + 2 * head.len()].chunks_exact(2);
                for (d, pair) in head.iter_mut().zip(pairs) {
                    *d = pair[0];
                }
                *last = src[ix0 + 2 * head.len()];
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src[ix0 + j * p.stride.1];
                }
            }
        }
    }
}

pub(super) fn conv2d(inputs: WeightedInputs<'_>, s: &Conv2dPlan) -> Result<Tensor> {
    let WeightedInputs { x, weight, bias } = inputs;
    let p = s.params;
    let src = floats("conv2d", x)?;
    let wt = floats("conv2d", weight)?;
    let bias = bias.map(|b| floats("conv2d", b)).transpose()?;
    let g = p.groups;
    let (cg, og) = (s.c / g, s.o / g);
    let taps = cg * s.kh * s.kw;
    let plane = s.oh * s.ow;
    if let Some(out) = packed_conv(&src, weight, bias.as_deref(), s)? {
        return float_tensor(x.dtype(), &s.out_shape, out);
    }
    if cg == 1 {
        // SAFETY: `depthwise` writes every element of each plane it is given.
        let out = unsafe {
            written(s.n * s.o * plane, |out| {
                for_rows(
                    out,
                    plane,
                    plane * taps,
                    #[inline(always)]
                    |first, planes| depthwise(&src, &wt, bias.as_deref(), s, first, planes),
                )
            })
        }?;
        return float_tensor(x.dtype(), &s.out_shape, out);
    }
    if s.n * s.o * plane == 0 {
        return float_tensor(x.dtype(), &s.out_shape, Vec::new());
    }
    let direct = reads_input_as_is(s);
    let clip = p.clip.f32_range();
    // The unit of work is one group of one image: one product writing a
    // contiguous [og, oh·ow] block of the output. Units go to threads in
    // runs, each thread with its own im2col buffer, allocated here so that
    // running out of memory is an error, not an abort.
    let (units, unit_out) = (s.n * g, og * plane);
    let worth = units > 1 && units * unit_out * taps >= PARALLEL_WORK;
    let per_worker = if worth {
        units.div_ceil(super::parallel::threads())
    } else {
        units
    };
    let mut cols = (0..units.div_ceil(per_worker))
        .map(|_| zeroed::<f32>(if direct { 0 } else { taps * plane }))
        .collect::<Result<Vec<_>>>()?;
    let image_in = s.c * s.h * s.w;
    let group_in = cg * s.h * s.w;
    let run = |first: usize, chunk: &mut [MaybeUninit<f32>], col: &mut [f32], threads: bool| {
        for (i, dst) in chunk.chunks_exact_mut(unit_out).enumerate() {
            let (image, gi) = ((first + i) / g, (first + i) % g);
            let from = image * image_in + gi * group_in;
            let channels = &src[from..from + group_in];
            let x = if direct {
                channels
            } else {
                im2col(channels, s, &p, col, threads);
                &col[..]
            };
            let w = &wt[gi * og * taps..(gi + 1) * og * taps];
            let bias = bias.as_deref().map(|b| &b[gi * og..(gi + 1) * og]);
            product(dst, w, x, (og, plane, taps), bias, clip, threads);
        }
    };
    // SAFETY: the units cover the output, and each writes all of its block.
    let out = unsafe {
        written(s.n * s.o * plane, |out| {
            if let [col] = &mut cols[..] {
                // One worker: let each product spread over the threads instead.
                run(0, out, col, threaded(og, plane, taps));
            } else {
                let step = per_worker * unit_out;
                let (len, out) = (out.len(), SendPtr(out.as_mut_ptr()));
                let cols = SendPtr(cols.as_mut_ptr());
                for_each_task(len.div_ceil(step), |w| {
                    let (out, cols) = (out, cols);
                    let start = w * step;
                    // (Unsafe, in the block above.) Task `w` alone touches
                    // its run of the output and its im2col buffer (one per
                    // task), both borrowed until every task has finished.
                    let (chunk, col) = (
                        std::slice::from_raw_parts_mut(out.0.add(start), step.min(len - start)),
                        &mut *cols.0.add(w),
                    );
                    run(w * per_worker, chunk, col, false)
                });
            }
        })
    }?;
    float_tensor(x.dtype(), &s.out_shape, out)
}

/// Output planes `first..` (plane `i` is image `i / o`, channel `i % o`)
/// of a convolution whose groups each read one input channel (depthwise,
/// as MobileNet's, with any channel multiplier). Each plane is copied into
/// a zero border wide enough that every tap of every block of 8 (16 with
/// AVX-512) output columns reads inside it, so a block's outputs sum their
/// kh·kw taps in registers without a bounds test ([`Bordered::rows`]);
/// im2col would write kh·kw copies of the plane for a product only kh·kw
/// deep.
#[inline(always)]
fn depthwise(
    src: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dPlan,
    first: usize,
    planes: &mut [MaybeUninit<f32>],
) {
    let p = s.params;
    let (og, taps) = (s.o / p.groups, s.kh * s.kw);
    let (top, left) = p.padding;
    let vectors = simd() != Simd::Baseline && matches!(p.stride.1, 1 | 2);
    // Blocks of 16 columns in AVX-512 registers where the CPU has them and
    // a row holds more than 8 outputs; else of 8.
    let lanes = if vectors && simd() == Simd::Avx512 && s.ow > 8 {
        16
    } else {
        8
    };
    // The bordered plane: rows and columns every output block reaches.
    let rows = ((s.oh - 1) * p.stride.0 + (s.kh - 1) * p.dilation.0 + 1).max(top + s.h);
    let width = (s.ow.next_multiple_of(lanes) - 1) * p.stride.1 + (s.kw - 1) * p.dilation.1 + 1;
    let width = width.max(left + s.w);
    // Past the last row: a vector load of a stride-2 block's second half
    // reaches one element beyond the taps it keeps.
    let mut bordered = vec![0.0f32; rows * width + lanes];
    let clip = p.clip.f32_range();
    for (i, plane) in planes.chunks_exact_mut(s.oh * s.ow).enumerate() {
        let (image, oc) = ((first + i) / s.o, (first + i) % s.o);
        // Consecutive output channels of one group read the same input.
        if i == 0 || (first + i).is_multiple_of(og) {
            let input = &src[(image * s.c + oc / og) * s.h * s.w..][..s.h * s.w];
            // An empty input (padding alone is read) leaves the border.
            for (y, line) in input.chunks_exact(s.w.max(1)).enumerate() {
                bordered[(top + y) * width + left..][..s.w].copy_from_slice(line);
            }
        }
        let weight = &wt[oc * taps..][..taps];
        let start = bias.map_or(0.0, |b| b[oc]);
        let at = Bordered {
            data: &bordered,
            width,
            weight,
            start,
            clip,
            vectors,
            lanes,
        };
        // Four rows at once: four independent sums per tap keep the adder
        // busy where one would wait on its own latency.
        let whole = s.oh / 4 * 4;
        for oy in (0..whole).step_by(4) {
            at.rows::<4>(plane, oy, s);
        }
        for oy in whole..s.oh {
            at.rows::<1>(plane, oy, s);
        }
    }
}

/// One input plane in its zero border, one output channel's taps, the
/// value each sum starts from (the bias) and the bounds it is clipped to.
struct Bordered<'a> {
    data: &'a [f32],
    width: usize,
    weight: &'a [f32],
    start: f32,
    clip: (f32, f32),
    /// Whether [`x86::rows`] takes the blocks: AVX2 is on and the stride
    /// along a row is 1 or 2.
    vectors: bool,
    /// Columns a vector block covers: 16 for [`x86::rows_wide`] (AVX-512
    /// on), else 8. The border holds `lanes` elements past every block.
    lanes: usize,
}

impl Bordered<'_> {
    /// Output rows `oy..oy + R` of `plane`, 8 columns at a time.
    #[inline(always)]
    fn rows<const R: usize>(&self, plane: &mut [MaybeUninit<f32>], oy: usize, s: &Conv2dPlan) {
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            // SAFETY: `vectors` holds only where AVX2 is on, and `lanes` is
            // 16 only where AVX-512 is; the border (with `lanes` spare
            // elements) holds every element a block loads.
            unsafe {
                if self.lanes == 16 {
                    x86::rows_wide::<R>(self, plane, oy, s)
                } else {
                    x86::rows::<R>(self, plane, oy, s)
                }
            };
            return;
        }
        let p = s.params;
        for first in (0..s.ow).step_by(8) {
            let mut acc = [[self.start; 8]; R];
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let v = self.weight[ky * s.kw + kx];
                    let column = first * p.stride.1 + kx * p.dilation.1;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let y = (oy + r) * p.stride.0 + ky * p.dilation.0;
                        let line = &self.data[y * self.width + column..];
                        // A known stride lets the 8 reads be one load (or
                        // two and a shuffle).
                        match p.stride.1 {
                            1 => tap::<1>(acc, v, line, 1),
                            2 => tap::<2>(acc, v, line, 2),
                            stride => tap::<0>(acc, v, line, stride),
                        }
                    }
                }
            }
            let columns = first..(first + 8).min(s.ow);
            for (r, acc) in acc.iter().enumerate() {
                let row = &mut plane[(oy + r) * s.ow..][..s.ow];
                for (o, &a) in row[columns.clone()].iter_mut().zip(acc) {
                    o.write(clamp(a, self.clip));
                }
            }
        }
    }
}

/// [`Bordered::rows`] in AVX2 registers, with the generic loop's
/// operations in its order (a product, then a sum, per tap; no fused
/// multiply-add), so both compute the same bits.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::Bordered;
    use crate::shape::Conv2dPlan;

    /// Output rows `oy..oy + R` of `plane`, 8 columns at a time, for a
    /// stride of 1 or 2 along the row.
    ///
    /// # Safety
    /// AVX2 is present, and `b.data` holds 8 elements past every block's
    /// last tap.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows<const R: usize>(
        b: &Bordered<'_>,
        plane: &mut [MaybeUninit<f32>],
        oy: usize,
        s: &Conv2dPlan,
    ) {
        let p = s.params;
        let (lo, hi) = (_mm256_set1_ps(b.clip.0), _mm256_set1_ps(b.clip.1));
        let (row, column) = (p.stride.0 * b.width, p.stride.1);
        // From a block's first element: its last row's last tap, and the
        // vector loaded there.
        let reach = (R - 1) * row
            + (s.kh - 1) * p.dilation.0 * b.width
            + (s.kw - 1) * p.dilation.1
            + 8 * column;
        for first in (0..s.ow).step_by(8) {
            let at = oy * row + first * column;
            assert!(at + reach <= b.data.len(), "a block past the border");
            // SAFETY: the assert.
            let block = unsafe { b.data.as_ptr().add(at) };
            let mut acc = [_mm256_set1_ps(b.start); R];
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let v = _mm256_set1_ps(b.weight[ky * s.kw + kx]);
                    let tap = ky * p.dilation.0 * b.width + kx * p.dilation.1;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: inside the block's reach.
                        let x = unsafe {
                            let line = block.add(tap + r * row);
                            if column == 1 {
                                _mm256_loadu_ps(line)
                            } else {
                                evens(_mm256_loadu_ps(line), _mm256_loadu_ps(line.add(8)))
                            }
                        };
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(v, x));
                    }
                }
            }
            let columns = 8.min(s.ow - first);
            for (r, &acc) in acc.iter().enumerate() {
                // `clamp`'s choices: NaN, and a value equal to a bound
                // (-0.0 against 0.0), keep the first operand.
                let above = _mm256_blendv_ps(lo, acc, _mm256_cmp_ps::<_CMP_NLE_UQ>(acc, lo));
                let y = _mm256_blendv_ps(hi, above, _mm256_cmp_ps::<_CMP_NGE_UQ>(above, hi));
                let row = &mut plane[(oy + r) * s.ow + first..][..columns];
                // SAFETY: `row` holds `columns` floats, all that the
                // masked store writes.
                unsafe { store(row, columns, y) };
            }
        }
    }

    /// [`rows`] in blocks of 16 columns, in AVX-512 registers, with the
    /// same operations in the same order, so all three compute the same bits.
    ///
    /// # Safety
    /// AVX-512 is present, and `b.data` holds 16 elements past every
    /// block's last tap.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_wide<const R: usize>(
        b: &Bordered<'_>,
        plane: &mut [MaybeUninit<f32>],
        oy: usize,
        s: &Conv2dPlan,
    ) {
        let p = s.params;
        let (lo, hi) = (_mm512_set1_ps(b.clip.0), _mm512_set1_ps(b.clip.1));
        let (row, column) = (p.stride.0 * b.width, p.stride.1);
        let reach = (R - 1) * row
            + (s.kh - 1) * p.dilation.0 * b.width
            + (s.kw - 1) * p.dilation.1
            + 16 * column;
        // Elements 0, 2, … 30 of the 32 in two vectors.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for first in (0..s.ow).step_by(16) {
            let at = oy * row + first * column;
            assert!(at + reach <= b.data.len(), "a block past the border");
            // SAFETY: the assert.
            let block = unsafe { b.data.as_ptr().add(at) };
            let mut acc = [_mm512_set1_ps(b.start); R];
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let v = _mm512_set1_ps(b.weight[ky * s.kw + kx]);
                    let tap = ky * p.dilation.0 * b.width + kx * p.dilation.1;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: inside the block's reach.
                        let x = unsafe {
                            let line = block.add(tap + r * row);
                            if column == 1 {
                                _mm512_loadu_ps(line)
                            } else {
                                let (a, b) = (_mm512_loadu_ps(line), _mm512_loadu_ps(line.add(16)));
                                _mm512_permutex2var_ps(a, evens, b)
                            }
                        };
                        *acc = _mm512_add_ps(*acc, _mm512_mul_ps(v, x));
                    }
                }
            }
            let columns = 16.min(s.ow - first);
            // The block's first `columns` lanes.
            let mask = (((1u32 << columns) - 1) & 0xffff) as __mmask16;
            for (r, &acc) in acc.iter().enumerate() {
                // [`rows`]' choices: NaN, and a value equal to a bound,
                // keep the first operand.
                let above =
                    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(acc, lo), lo, acc);
                let y =
                    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_NGE_UQ>(above, hi), hi, above);
                let row = &mut plane[(oy + r) * s.ow + first..][..columns];
                // SAFETY: the mask writes the first `columns` floats, which
                // `row` holds. A store of the whole vector, or one through
                // a copy of it (a `memmove` call for a length the compiler
                // cannot see), cost a tenth of MobileNetV2's time.
                unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().cast(), mask, y) };
            }
        }
    }

    /// Writes the first `columns` (at most 8) lanes of `y` to `row`: the
    /// whole vector in one store where `columns` is 8, else through a mask,
    /// rather than through a copy on the stack, whose length the compiler
    /// cannot see (a `memmove` call per block).
    ///
    /// # Safety
    /// AVX2 is present, and `row` holds at least `columns` floats.
    #[target_feature(enable = "avx2")]
    unsafe fn store(row: &mut [MaybeUninit<f32>], columns: usize, y: __m256) {
        let at = row.as_mut_ptr().cast::<f32>();
        if columns >= 8 {
            // SAFETY: `row` holds 8 floats.
            unsafe { _mm256_storeu_ps(at, y) };
            return;
        }
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // Lanes below `columns` all ones (their sign bit set).
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(columns as i32), lanes);
        // SAFETY: the masked lanes lie within `row`.
        unsafe { _mm256_maskstore_ps(at, mask, y) };
    }

    /// Elements 0, 2, … 14 of the 16 in `a` then `b`.
    #[target_feature(enable = "avx2")]
    fn evens(a: __m256, b: __m256) -> __m256 {
        // Each 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6; then the middle
        // two 64-bit quarters swap.
        let mixed = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            mixed,
        )))
    }
}

/// Adds `v` times 8 elements of `line`, `stride` apart (`S` when not 0),
/// to `acc`.
#[inline(always)]
fn tap<const S: usize>(acc: &mut [f32; 8], v: f32, line: &[f32], stride: usize) {
    let stride = if S == 0 { stride } else { S };
    let reads = &line[..7 * stride + 1];
    for (l, a) in acc.iter_mut().enumerate() {
        *a += v * reads[l * stride];
    }
}

/// One unit's `dst[o, plane] = clip(w[o, taps] · x[taps, plane] + bias)`,
/// every element written, over the threads where `threads`: on
/// [`super::pointwise`]'s tiles where the CPU has them, else by gemm and a
/// pass for the bias and clip.
fn product(
    dst: &mut [MaybeUninit<f32>],
    w: &[f32],
    x: &[f32],
    (o, plane, taps): (usize, usize, usize),
    bias: Option<&[f32]>,
    clip: (f32, f32),
    threads: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if super::pointwise::available() {
        let k = super::pointwise::Pointwise {
            x,
            w,
            bias,
            clip,
            c: taps,
            o,
            plane,
        };
        super::pointwise::conv(&k, dst, threads);
        return;
    }
    let (lhs, rhs) = (MatRef::rows(w, taps), MatRef::rows(x, plane));
    gemm(
        Dst::Fresh(&mut *dst),
        plane,
        (o, plane, taps),
        lhs,
        rhs,
        1.0,
        threads,
    );
    // SAFETY: the product wrote every element of the block.
    let dst = unsafe { dst.assume_init_mut() };
    let unclipped = clip == ClipBounds::NONE.f32_range();
    finish(dst, plane, bias, (!unclipped).then_some(clip));
}

/// Adds each row's bias (`bias[r]` to row `r`, of `plane` elements) and
/// clips, in one pass over a product's block compiled for the widest
/// vectors, where seeding the block with the bias before the product and
/// clipping it after took two passes at 4 lanes, besides zeroing it. The
/// rows are split over the threads: a batch-1 convolution's block is one
/// product's whole output, megabytes that one thread would walk alone.
fn finish(dst: &mut [f32], plane: usize, bias: Option<&[f32]>, clip: Option<(f32, f32)>) {
    if bias.is_none() && clip.is_none() {
        return;
    }
    for_rows(
        dst,
        plane,
        plane,
        #[inline(always)]
        |first, rows| match (bias, clip) {
            (Some(bias), Some(range)) => {
                for (row, &b) in rows.chunks_exact_mut(plane).zip(&bias[first..]) {
                    row.iter_mut().for_each(|v| *v = clamp(*v + b, range));
                }
            }
            (Some(bias), None) => {
                for (row, &b) in rows.chunks_exact_mut(plane).zip(&bias[first..]) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
            (None, Some(range)) => rows.iter_mut().for_each(|v| *v = clamp(*v, range)),
            (None, None) => {}
        },
    )
}

/// Whether the convolution is a product of the weight with the input as it
/// lies: a 1×1 kernel with unit stride and no padding reads each image's
/// `[c, h·w]` as the product's right-hand side, with nothing laid out.
fn reads_input_as_is(s: &Conv2dPlan) -> bool {
    let p = s.params;
    s.kh == 1 && s.kw == 1 && p.stride == (1, 1) && p.padding == (0, 0) && p.padding_end == (0, 0)
}

/// [`conv2d`]'s output through the packed product kernel, `None` where the
/// kernel does not take it.
fn packed_conv(
    src: &[f32],
    weight: &Tensor,
    bias: Option<&[f32]>,
    s: &Conv2dPlan,
) -> Result<Option<Vec<f32>>> {
    let (plane, taps, o) = (s.oh * s.ow, s.c * s.kh * s.kw, s.o);
    let rows = s.n * plane;
    // A product with the input as it lies beats the packed kernel's, which
    // would lay the input out channels last and write its outputs back to
    // NCHW one by one: MobileNetV2's 1×1 layers at 14×14 ran 1.8–2.2× as
    // fast on gemm (`cpu_bench 1x1`), and as fast at 7×7; `pointwise`'s
    // tiles run them now.
    if s.params.groups != 1 || rows < packed::MIN_ROWS || reads_input_as_is(s) {
        return Ok(None);
    }
    let Some(w) = PackedWeight::of_conv(weight, (o, s.c, s.kh, s.kw))? else {
        return Ok(None);
    };
    // SAFETY (both): each fill writes every element it is given.
    let hwc = unsafe { written(src.len(), |hwc| channels_last(src, s, hwc)) }?;
    let patches = Patches { hwc: &hwc, s };
    let threads = threaded(rows, o, taps);
    let out = unsafe {
        written(rows * o, |out| {
            packed::gathered_product(
                out,
                &patches,
                &w,
                (rows, plane),
                (bias, s.params.clip.f32_range()),
                threads,
            )
        })
    }?;
    Ok(Some(out))
}

/// Images `[n, c, h, w]` as `[n, h, w, c]`.
fn channels_last(x: &[f32], s: &Conv2dPlan, hwc: &mut [MaybeUninit<f32>]) {
    let (c, h, w) = (s.c, s.h, s.w);
    for_rows(hwc, w * c, w * c, |first, rows| {
        for (r, row) in rows.chunks_exact_mut(w * c).enumerate() {
            let (image, y) = ((first + r) / h, (first + r) % h);
            let planes = &x[image * c * h * w..][..c * h * w];
            for (ci, plane) in planes.chunks_exact(h * w).enumerate() {
                for (ix, &v) in plane[y * w..(y + 1) * w].iter().enumerate() {
                    row[ix * c + ci] = MaybeUninit::new(v);
                }
            }
        }
    });
}

/// The patches of channels-last images as a product's rows, read where
/// they lie: row `image · oh·ow + position` is the input under that output
/// position's window, one run of `c` channels per tap `(ky, kx)`, zeros
/// where the tap reads padding.
struct Patches<'a> {
    hwc: &'a [f32],
    s: &'a Conv2dPlan,
}

impl packed::Gathered for Patches<'_> {
    fn runs(&self) -> usize {
        self.s.kh * self.s.kw
    }

    fn row<'a>(&'a self, i: usize, mut each: impl FnMut(usize, Option<&'a [f32]>)) {
        let (s, p) = (self.s, self.s.params);
        let (image, position) = (i / (s.oh * s.ow), i % (s.oh * s.ow));
        let (oy, ox) = (position / s.ow, position % s.ow);
        let image = &self.hwc[image * s.h * s.w * s.c..][..s.h * s.w * s.c];
        let inside = |o: usize, stride: usize, tap: usize, pad: usize, size: usize| {
            (o * stride + tap).checked_sub(pad).filter(|&i| i < size)
        };
        for ky in 0..s.kh {
            let iy = inside(oy, p.stride.0, ky * p.dilation.0, p.padding.0, s.h);
            for kx in 0..s.kw {
                let ix = inside(ox, p.stride.1, kx * p.dilation.1, p.padding.1, s.w);
                let pixel = iy
                    .zip(ix)
                    .map(|(iy, ix)| &image[(iy * s.w + ix) * s.c..][..s.c]);
                each(ky * s.kw + kx, pixel);
            }
        }
    }
}

pub(super) fn pool2d(x: &Tensor, s: &Pool2dPlan) -> Result<Tensor> {
    let p = s.params;
    let src = floats("pool2d", x)?;
    let (h, w, oh, ow) = (s.h, s.w, s.oh, s.ow);
    let mut out = zeroed(s.n * s.c * oh * ow)?;
    let max = p.kind == PoolKind::Max;
    // Any NaN in a window makes its max NaN, as in PyTorch.
    #[inline(always)]
    fn max_nan(a: f32, v: f32) -> f32 {
        if v > a || v.is_nan() { v } else { a }
    }
    // A window's rows are clipped to the input; the kernel itself may be
    // far larger (padded by half of it), so saturate rather than overflow.
    for_rows(
        &mut out,
        oh * ow,
        h.saturating_mul(w).saturating_mul(p.kernel.0.min(h)),
        #[inline(always)]
        |first, chunk| {
            // Separable: first fold the window's rows into one row (a loop
            // over contiguous memory), then slide along that row.
            let mut folded = vec![0.0f32; w];
            for (i, dst) in chunk.chunks_exact_mut(oh * ow).enumerate() {
                let plane = &src[(first + i) * h * w..(first + i + 1) * h * w];
                for (oy, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
                    // Clip the window to the input: padding never takes part.
                    let y0 = (oy * p.stride.0).saturating_sub(p.padding.0);
                    // `kernel - padding` first: a kernel near usize::MAX
                    // (padding half of it) fits only that way round.
                    let y1 = (oy * p.stride.0 + (p.kernel.0 - p.padding.0)).min(h);
                    folded.copy_from_slice(&plane[y0 * w..(y0 + 1) * w]);
                    for row in plane[(y0 + 1) * w..y1 * w].chunks_exact(w) {
                        if max {
                            for (f, &v) in folded.iter_mut().zip(row) {
                                *f = max_nan(*f, v);
                            }
                        } else {
                            for (f, &v) in folded.iter_mut().zip(row) {
                                *f += v;
                            }
                        }
                    }
                    for (ox, d) in dst_row.iter_mut().enumerate() {
                        let x0 = (ox * p.stride.1).saturating_sub(p.padding.1);
                        let x1 = (ox * p.stride.1 + (p.kernel.1 - p.padding.1)).min(w);
                        let window = &folded[x0..x1];
                        *d = if max {
                            window.iter().fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v))
                        } else {
                            window.iter().sum::<f32>() / ((y1 - y0) * (x1 - x0)) as f32
                        };
                    }
                }
            }
        },
    );
    float_tensor(x.dtype(), &s.out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×1 convolution that reads its input as it lies runs on gemm; with
    /// a stride (or a wider kernel) its patches must be gathered, and it
    /// runs on the packed kernel wherever that kernel runs.
    #[test]
    fn only_convolutions_that_gather_their_patches_run_packed() {
        let x = Tensor::from_f32(&[3, 64, 13, 13], vec![0.5; 3 * 64 * 13 * 13]).unwrap();
        let src = floats("conv2d", &x).unwrap();
        let packed = |o: usize, k: usize, stride: usize| {
            let w = Tensor::from_f32(&[o, 64, k, k], vec![0.25; o * 64 * k * k]).unwrap();
            let params = Conv2d::symmetric((stride, stride), (0, 0), (1, 1), 1);
            let plan = crate::shape::conv2d(&x, &w, None, params).unwrap();
            let kernel = PackedWeight::of_conv(&w, (o, 64, k, k)).unwrap().is_some();
            (
                packed_conv(&src, &w, None, &plan).unwrap().is_some(),
                kernel,
            )
        };
        let (direct, _) = packed(80, 1, 1);
        assert!(
            !direct,
            "a 1×1 convolution of the input as it lies ran packed"
        );
        let (strided, kernel) = packed(80, 1, 2);
        assert_eq!(strided, kernel);
        let (wide, kernel) = packed(80, 3, 1);
        assert_eq!(wide, kernel);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert!(
                strided && wide,
                "the packed kernel declined a convolution it takes"
            );
        }
    }
}
