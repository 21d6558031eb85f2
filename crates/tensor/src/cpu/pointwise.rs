//! A convolution's product `W[o, c] · X[c, h·w]` per image, plus a bias and
//! clipped, on register tiles that read `X` where it lies: a 1×1
//! convolution's input (unit stride, no padding) or another's im2col matrix.
//!
//! gemm packs both sides for such a product and leaves the bias and the
//! clip to a second pass over the output, which at MobileNetV2's 112² and
//! 56² layers is megabytes written, read back and written again. Here a
//! tile of output channels sums its depth with the weight broadcast and
//! each input row's run of positions loaded as it lies (a row of `X` is
//! contiguous along the positions, so nothing needs packing), starts from
//! the bias and clips in registers, and stores every output once.
//!
//! The AVX-512 tile (12 channels by 32 positions) runs where the kernels
//! run AVX-512, the AVX2 one (6 by 16) under a lower cap or on a CPU
//! without it; both sum each output in the same order with fused
//! multiply-adds, so they compute the same bits ([`super::Simd`]).

use std::mem::MaybeUninit;

use super::parallel::{SendPtr, for_each_task, wide_tiles};
use crate::deadline;

/// The operands of one image's product, in the layouts the tiles read.
#[derive(Clone, Copy)]
pub(super) struct Pointwise<'a> {
    /// The input, `[c, plane]`.
    pub x: &'a [f32],
    /// The weight, `[o, c]`.
    pub w: &'a [f32],
    /// One value per output channel, the sums' start.
    pub bias: Option<&'a [f32]>,
    /// The bounds every output is clipped to (infinite where it is not).
    pub clip: (f32, f32),
    /// Input channels: each output's depth.
    pub c: usize,
    /// Output channels.
    pub o: usize,
    /// Positions, `h·w`.
    pub plane: usize,
}

/// Whether this CPU has the tiles (AVX2 and FMA).
pub(super) fn available() -> bool {
    super::packed::available()
}

/// Writes the product into `out` (`[o, plane]`), every element of it, on
/// the calling thread, or split over the threads where `threads`. The
/// output splits into regions of whole tiles (a run of channels by a run of
/// positions) that the calling thread and the pool take in turn: along the
/// positions first, where a large plane leaves plenty, then the channels,
/// where a 7×7 plane is a tile or two wide.
///
/// Callers check [`available`] first.
pub(super) fn conv(k: &Pointwise<'_>, out: &mut [MaybeUninit<f32>], threads: bool) {
    assert_eq!(out.len(), k.o * k.plane, "pointwise output size");
    assert_eq!(k.x.len(), k.c * k.plane, "pointwise input size");
    assert_eq!(k.w.len(), k.o * k.c, "pointwise weight size");
    assert!(available(), "the tiles need AVX2 and FMA");
    if out.is_empty() {
        return;
    }
    let wide = wide_tiles();
    let (rows, columns) = x86::tile(wide);
    let (column_tiles, row_tiles) = (k.plane.div_ceil(columns), k.o.div_ceil(rows));
    let want = if threads {
        super::parallel::threads() * 4
    } else {
        1
    };
    let column_parts = column_tiles.min(want);
    let row_parts = row_tiles.min(want.div_ceil(column_parts));
    let (columns_per, rows_per) = (
        column_tiles.div_ceil(column_parts) * columns,
        row_tiles.div_ceil(row_parts) * rows,
    );
    let (column_parts, row_parts) = (k.plane.div_ceil(columns_per), k.o.div_ceil(rows_per));
    let deadline = deadline::kernel();
    let base = SendPtr(out.as_mut_ptr().cast::<f32>());
    for_each_task(row_parts * column_parts, |t| {
        // The whole `SendPtr`, not its raw pointer field, goes to the task.
        let out = base;
        deadline::stop_if_passed(deadline);
        let (rp, cp) = (t / column_parts, t % column_parts);
        let rows = rp * rows_per..k.o.min((rp + 1) * rows_per);
        let columns = cp * columns_per..k.plane.min((cp + 1) * columns_per);
        // SAFETY: AVX2 and FMA are present (asserted above), and AVX-512
        // where `wide`. The region lies inside the output, and the tasks'
        // regions are disjoint parts of `out`, which stays borrowed until
        // every task has finished.
        unsafe { x86::region(k, rows, columns, out.0, wide) }
    });
}

mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::Pointwise;

    /// (Output channels, positions) of a tile: the AVX-512 one when `wide`,
    /// else the AVX2 one.
    pub fn tile(wide: bool) -> (usize, usize) {
        if wide { (12, 32) } else { (6, 16) }
    }

    /// Output channels `rows` and positions `columns`, tile by tile: a run of positions against every tile of channels in
    /// turn, so the input's `[c, run]` stays in the L1 while the channels
    /// sweep over it.
    ///
    /// # Safety
    /// AVX2 and FMA are present, and AVX-512F where `wide`; `out` is `k`'s
    /// whole `[o, plane]` output and the region lies inside it.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn region(
        k: &Pointwise<'_>,
        rows: Range<usize>,
        columns: Range<usize>,
        out: *mut f32,
        wide: bool,
    ) {
        let (tile_rows, tile_columns) = tile(wide);
        let x = k.x.as_ptr();
        for j in columns.clone().step_by(tile_columns) {
            let width = tile_columns.min(columns.end - j);
            for i in rows.clone().step_by(tile_rows) {
                let tile = Tile {
                    // SAFETY: column j of every input row, and row i of the
                    // weight, lie inside their operands.
                    x: unsafe { x.add(j) },
                    w: unsafe { k.w.as_ptr().add(i * k.c) },
                    bias: k.bias.map(|b| &b[i..]),
                    clip: k.clip,
                    depth: k.c,
                    stride: k.plane,
                    out: unsafe { out.add(i * k.plane + j) },
                    width,
                };
                let r = tile_rows.min(rows.end - i);
                // SAFETY: the tile's rows and columns lie in the operands.
                unsafe {
                    if wide {
                        tile.wide_dispatch(r)
                    } else {
                        tile.dispatch(r)
                    }
                }
            }
        }
    }

    /// `$tile.$run::<R, V>()` for its row count `$r` (`R` from 1 to
    /// `$most`, 12 or 6) and `$v` vectors.
    macro_rules! run_rows {
        ($tile:ident . $run:ident, $r:expr, $v:literal, 12) => {
            match $r {
                12 => $tile.$run::<12, $v>(),
                11 => $tile.$run::<11, $v>(),
                10 => $tile.$run::<10, $v>(),
                9 => $tile.$run::<9, $v>(),
                8 => $tile.$run::<8, $v>(),
                7 => $tile.$run::<7, $v>(),
                r => run_rows!($tile.$run, r, $v, 6),
            }
        };
        ($tile:ident . $run:ident, $r:expr, $v:literal, 6) => {
            match $r {
                6 => $tile.$run::<6, $v>(),
                5 => $tile.$run::<5, $v>(),
                4 => $tile.$run::<4, $v>(),
                3 => $tile.$run::<3, $v>(),
                2 => $tile.$run::<2, $v>(),
                _ => $tile.$run::<1, $v>(),
            }
        };
    }

    /// One tile: `R` output channels' weight rows (`depth` apart) against
    /// the input rows' runs from `x` (`stride` apart), into the first
    /// `width` positions at `out` (rows `stride` apart).
    struct Tile<'a> {
        x: *const f32,
        w: *const f32,
        bias: Option<&'a [f32]>,
        clip: (f32, f32),
        depth: usize,
        stride: usize,
        out: *mut f32,
        width: usize,
    }

    impl Tile<'_> {
        /// Runs the AVX-512 tile of `r` rows, 12 at most.
        ///
        /// # Safety
        /// AVX-512F is present and the tile lies inside the operands.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide_dispatch(&self, r: usize) {
            // SAFETY: forwarded from the caller.
            unsafe {
                if self.width > 16 {
                    run_rows!(self.wide_run, r, 2, 12)
                } else {
                    run_rows!(self.wide_run, r, 1, 12)
                }
            }
        }

        /// The `R × 16V` AVX-512 tile: 12 channels by two vectors keep 24
        /// of the 32 registers accumulating, 24 multiply-adds for each
        /// depth step's 2 loads and 12 broadcasts.
        ///
        /// # Safety
        /// As [`Tile::wide_dispatch`], with `width` at most `16V`.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide_run<const R: usize, const V: usize>(&self) {
            // SAFETY: forwarded from the caller.
            unsafe { self.run::<__m512, R, V>() }
        }

        /// Runs the AVX2 tile of `r` rows, 6 at most.
        ///
        /// # Safety
        /// AVX2 and FMA are present and the tile lies inside the operands.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dispatch(&self, r: usize) {
            // SAFETY: forwarded from the caller.
            unsafe {
                if self.width > 8 {
                    run_rows!(self.narrow_run, r, 2, 6)
                } else {
                    run_rows!(self.narrow_run, r, 1, 6)
                }
            }
        }

        /// The `R × 8V` AVX2 tile: 6 channels by two vectors keep 12 of the
        /// 16 registers accumulating.
        ///
        /// # Safety
        /// As [`Tile::dispatch`], with `width` at most `8V`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn narrow_run<const R: usize, const V: usize>(&self) {
            // SAFETY: forwarded from the caller.
            unsafe { self.run::<__m256, R, V>() }
        }

        /// The `R × V` tile of vectors `L`: each output starts from its
        /// bias, sums its depth in order by fused multiply-adds, and is
        /// clipped as `clamp` clips.
        ///
        /// # Safety
        /// `L`'s instructions are present; the tile lies inside the
        /// operands, with `width` at most `V` vectors.
        #[inline(always)]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn run<L: Lanes, const R: usize, const V: usize>(&self) {
            // SAFETY (all): `L`'s instructions are present; the lanes the
            // masks keep are input row p's and output row r's positions of
            // the tile, and weight element (r, p) is inside the weight.
            unsafe {
                let masks: [L::Mask; V] =
                    std::array::from_fn(|v| L::mask(self.width.saturating_sub(L::WIDTH * v)));
                let mut acc: [[L; V]; R] =
                    std::array::from_fn(|r| [L::splat(self.bias.map_or(0.0, |b| b[r])); V]);
                for p in 0..self.depth {
                    let line = self.x.add(p * self.stride);
                    // The next tile's run of this row, which the hardware's
                    // prefetchers miss: one stream per depth step.
                    for offset in (V * L::WIDTH..2 * V * L::WIDTH).step_by(16) {
                        _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(offset).cast());
                    }
                    let b: [L; V] =
                        std::array::from_fn(|v| L::load(masks[v], line.add(L::WIDTH * v)));
                    for r in 0..R {
                        let a = L::splat(*self.w.add(r * self.depth + p));
                        for v in 0..V {
                            acc[r][v] = L::fmadd(a, b[v], acc[r][v]);
                        }
                    }
                }
                let (lo, hi) = (L::splat(self.clip.0), L::splat(self.clip.1));
                for r in 0..R {
                    for v in 0..V {
                        let at = self.out.add(r * self.stride + L::WIDTH * v);
                        acc[r][v].clip(lo, hi).store(masks[v], at);
                    }
                }
            }
        }
    }

    /// A vector of f32 lanes, as the tiles use it. Implementations are
    /// inlined into the tile of their width, compiled for its instructions.
    trait Lanes: Copy {
        /// Lanes per vector.
        const WIDTH: usize;
        /// Which lanes a load or store touches.
        type Mask: Copy;
        /// The first `lanes` lanes (all of them from `WIDTH` on).
        unsafe fn mask(lanes: usize) -> Self::Mask;
        unsafe fn splat(v: f32) -> Self;
        /// The masked lanes from `at`, zeros elsewhere.
        unsafe fn load(mask: Self::Mask, at: *const f32) -> Self;
        /// `a · b + c`, rounded once.
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
        /// `clamp`'s clip: NaN, and a value equal to a bound (-0.0 against
        /// 0.0), keep the value.
        unsafe fn clip(self, lo: Self, hi: Self) -> Self;
        unsafe fn store(self, mask: Self::Mask, at: *mut f32);
    }

    impl Lanes for __m512 {
        const WIDTH: usize = 16;
        type Mask = __mmask16;
        #[inline(always)]
        unsafe fn mask(lanes: usize) -> __mmask16 {
            (1u32 << lanes.min(16)).wrapping_sub(1) as __mmask16
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY (here and below): the caller's.
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(mask: __mmask16, at: *const f32) -> Self {
            unsafe { _mm512_maskz_loadu_ps(mask, at) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn clip(self, lo: Self, hi: Self) -> Self {
            unsafe {
                let above =
                    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(self, lo), lo, self);
                _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_NGE_UQ>(above, hi), hi, above)
            }
        }
        #[inline(always)]
        unsafe fn store(self, mask: __mmask16, at: *mut f32) {
            unsafe { _mm512_mask_storeu_ps(at, mask, self) }
        }
    }

    impl Lanes for __m256 {
        const WIDTH: usize = 8;
        type Mask = __m256i;
        #[inline(always)]
        unsafe fn mask(lanes: usize) -> __m256i {
            // Lanes below `lanes` all ones (their sign bit set).
            // SAFETY (here and below): the caller's.
            unsafe {
                let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes.min(8) as i32), index)
            }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(mask: __m256i, at: *const f32) -> Self {
            unsafe { _mm256_maskload_ps(at, mask) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn clip(self, lo: Self, hi: Self) -> Self {
            unsafe {
                let above = _mm256_blendv_ps(lo, self, _mm256_cmp_ps::<_CMP_NLE_UQ>(self, lo));
                _mm256_blendv_ps(hi, above, _mm256_cmp_ps::<_CMP_NGE_UQ>(above, hi))
            }
        }
        #[inline(always)]
        unsafe fn store(self, mask: __m256i, at: *mut f32) {
            unsafe { _mm256_maskstore_ps(at, mask, self) }
        }
    }
}
