//! Products of 32 to 128 activation rows (a batch of sentences' tokens)
//! against a `[n, k]` weight (PyTorch's `[out, in]`, `transpose_b`), the
//! weight read where it lies: a model's weight at exactly 32 rows on the
//! AVX2 tiles (above, and from 16 rows on the AVX-512 ones,
//! [`super::packed`] packs it once and runs faster), and any other tensor.
//!
//! A register tile of 6 weight rows by 16 activation rows keeps 12
//! accumulators of 8 lanes busy from 2 vector loads and 6 broadcasts per
//! depth step, which runs close to the FMA units' peak. The dot kernel of
//! [`super::skinny`] needs 7 full-width loads and a horizontal sum per
//! accumulator for the same 12, and `gemm` repacks the whole weight on every
//! call. The broadcast side here is the weight: each of its rows gives one
//! element per step, so the weight needs no packing. The activation is the
//! side that is packed, per call, into panels of 16 rows whose elements at
//! one depth lie side by side; it is small (m·k moves against m·n·k
//! multiply-adds). The tile thus computes the transposed product, into a
//! scratch buffer in that layout, which is transposed into the output at
//! the end (m·n moves). Both moves go by 8×8 register transposes.
//!
//! Where the CPU has AVX-512 (and [`super::simd`] allows it), a panel's 16
//! rows fill one register and the tile is 6 weight rows by two panels
//! (`x86::Tile::wide_run`), the same bits as the AVX2 tile.
//!
//! Only x86_64 with AVX2 and FMA has it; elsewhere [`product`] declines.

use std::mem::MaybeUninit;

/// Fewest activation rows the panel kernel takes. Its rows come in panels
/// of 16 and a last one of 8, so rows past a multiple of 8 cost as much as
/// 8: `cpu_bench gflops`, 1 thread, [18,384]×[1536,384]ᵀ runs at 38–41
/// GFLOP/s against 60–66 at 16 rows and about 55 for the dot kernel of
/// [`super::skinny`]. From 32 rows that waste is at most a fifth, and the
/// kernel's lead over the dot kernel (1.1–1.5× at 32–128 rows) covers it;
/// below, one sentence's tokens stay with the dot kernel.
pub(super) const MIN_ROWS: usize = 32;

/// Most activation rows it takes. Above, the panels and the scratch outgrow
/// L2 and `gemm`'s cache blocking pays for its packing of the weight:
/// `cpu_bench gflops`, [256,384]×[1536,384]ᵀ, 1 thread, 75 GFLOP/s for gemm
/// against 60 for this kernel.
pub(super) const MAX_ROWS: usize = 128;

/// `out[m × n] = x[m × k] · wᵀ` for `w` `[n, k]`, every element written,
/// split over threads by weight rows when `threads`. Returns `false`,
/// writing nothing, when this CPU lacks the kernel or `m` is outside
/// [`MIN_ROWS`]`..=`[`MAX_ROWS`].
pub(super) fn product(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    threads: bool,
) -> bool {
    if !(MIN_ROWS..=MAX_ROWS).contains(&m) || n == 0 || k == 0 || !available() {
        return false;
    }
    let tasks = if threads {
        super::parallel::threads()
    } else {
        1
    };
    let wide = super::parallel::wide_tiles();
    run(out, x, w, (m, n, k), tasks, wide);
    true
}

/// Whether this CPU has the kernel.
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`product`] for any non-empty sizes, in `tasks` parts. The caller has
/// checked [`available`].
#[cfg(target_arch = "x86_64")]
fn run(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    tasks: usize,
    wide: bool,
) {
    use super::parallel::SendPtr;
    use x86::{Lanes, PANEL, ROWS};
    assert!(
        x.len() >= m * k && w.len() >= n * k && out.len() >= m * n,
        "panel product out of bounds"
    );
    let panels = m.div_ceil(PANEL);
    let mut packed = vec![Lanes::ZERO; panels * k];
    // SAFETY: AVX2 and FMA were checked by the caller; `packed` holds
    // `panels × k` lanes and `x` m × k floats.
    unsafe { x86::pack(&mut packed, x, (m, k)) };
    let mut scratch = vec![Lanes::ZERO; n * panels];
    let product = x86::Product {
        packed: &packed,
        w,
        m,
        k,
        panels,
    };
    let out = SendPtr(out.as_mut_ptr().cast::<f32>());
    let scratch_at = SendPtr(scratch.as_mut_ptr().cast::<f32>());
    // Weight rows `rows` of the product, transposed into output columns
    // `rows`: tasks take disjoint ranges, so they write disjoint elements of
    // both the scratch and the output.
    let part = move |rows: std::ops::Range<usize>| {
        let (out, scratch) = (out, scratch_at);
        // SAFETY: as for `pack`; the bounds were asserted above, the
        // scratch holds n × panels lanes, and this call touches only rows
        // (output columns) `rows` of either.
        // With `wide`, the caller found AVX-512 too.
        unsafe {
            product.rows(scratch.0.cast(), rows.clone(), wide);
            x86::unpack(out.0, scratch.0.cast(), (m, n, panels), rows);
        }
    };
    // Whole tiles of 6 and transpose blocks of 8 per task.
    let per_task = n.div_ceil(tasks.max(1)).next_multiple_of(ROWS * 4);
    if tasks <= 1 || per_task >= n {
        part(0..n);
    } else {
        super::parallel::for_each_block(n, per_task, part);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn run(
    _: &mut [MaybeUninit<f32>],
    _: &[f32],
    _: &[f32],
    _: (usize, usize, usize),
    _: usize,
    _: bool,
) {
    unreachable!("the panel kernel is only available on x86_64")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Activation rows per panel: two vectors.
    pub const PANEL: usize = 16;
    /// Weight rows per tile.
    pub const ROWS: usize = 6;
    /// Depth per block: a tile's 6 weight rows of it (12 KiB) stay in L1
    /// while every panel passes them, and the panels' share of it in L2.
    const DEPTH: usize = 512;
    /// How many strips of weight rows ahead the first panel's tile asks for
    /// the weight: DRAM's latency hides behind the strips between.
    const AHEAD: usize = 2;
    /// Floats per cache line.
    const LINE: usize = 16;

    /// One panel's 16 activation elements at one depth, or one weight row's
    /// 16 outputs of one panel: a cache line, aligned to one.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    pub struct Lanes([f32; PANEL]);

    impl Lanes {
        pub const ZERO: Lanes = Lanes([0.0; PANEL]);
    }

    /// Packs `x` `[m, k]` into panels: element (i, p) goes to lane `i % 16`
    /// of `packed[(i / 16) · k + p]`; lanes past `m` stay as they are (zero).
    ///
    /// # Safety
    /// AVX2 and FMA are present; `packed` holds `m.div_ceil(16) × k` lanes
    /// and `x` `m × k` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack(packed: &mut [Lanes], x: &[f32], (m, k): (usize, usize)) {
        let dst = packed.as_mut_ptr().cast::<f32>();
        let (m8, k8) = (m / 8 * 8, k / 8 * 8);
        // Element (i, p) of x sits at i·k + p; of the panels at
        // ((i / 16)·k + p)·16 + i % 16.
        let at = |i: usize, p: usize| ((i / PANEL) * k + p) * PANEL + i % PANEL;
        for i in (0..m8).step_by(8) {
            for p in (0..k8).step_by(8) {
                // SAFETY: rows i..i+8 and columns p..p+8 are inside x, and
                // their places inside the panels.
                unsafe { transpose8(x.as_ptr().add(i * k + p), k, dst.add(at(i, p)), PANEL) };
            }
            for p in k8..k {
                for t in i..i + 8 {
                    // SAFETY: as above.
                    unsafe { dst.add(at(t, p)).write(x[t * k + p]) };
                }
            }
        }
        for t in m8..m {
            for p in 0..k {
                // SAFETY: as above.
                unsafe { dst.add(at(t, p)).write(x[t * k + p]) };
            }
        }
    }

    /// Transposes the product's scratch into output columns `cols`:
    /// element (j, i) of the scratch, lane `i % 16` of its lanes
    /// `j · panels + i / 16`, goes to `out[i · n + j]`.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `out` holds `m × n` floats, `scratch`
    /// `n × panels` lanes with rows `cols` written, and `cols` lies in `0..n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn unpack(
        out: *mut f32,
        scratch: *const f32,
        (m, n, panels): (usize, usize, usize),
        cols: Range<usize>,
    ) {
        let stride = panels * PANEL;
        let at = |j: usize, i: usize| j * stride + (i / PANEL) * PANEL + i % PANEL;
        let m8 = m / 8 * 8;
        let whole = cols.start + (cols.end - cols.start) / 8 * 8;
        for j in (cols.start..whole).step_by(8) {
            for i in (0..m8).step_by(8) {
                // SAFETY: the 8×8 block is inside both.
                unsafe { transpose8(scratch.add(at(j, i)), stride, out.add(i * n + j), n) };
            }
        }
        // The ragged edges, element by element.
        for i in 0..m {
            let from = if i < m8 { whole } else { cols.start };
            for j in from..cols.end {
                // SAFETY: (i, j) is inside both.
                unsafe { out.add(i * n + j).write(scratch.add(at(j, i)).read()) };
            }
        }
    }

    /// Writes the transpose of the 8×8 block at `src` (rows `src_stride`
    /// apart) to `dst` (rows `dst_stride` apart).
    ///
    /// # Safety
    /// AVX2 is present and both blocks lie in memory the caller may
    /// read and write.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn transpose8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: the caller vouches for both blocks.
        let r: [__m256; 8] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_stride)) });
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let rows = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, row) in rows.into_iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(dst.add(i * dst_stride), row) };
        }
    }

    /// The operands of one product: the packed activation and the weight.
    #[derive(Clone, Copy)]
    pub struct Product<'a> {
        pub packed: &'a [Lanes],
        pub w: &'a [f32],
        pub m: usize,
        pub k: usize,
        pub panels: usize,
    }

    impl Product<'_> {
        /// Rows `rows` of the transposed product into `scratch`: for weight
        /// row j and panel q, lanes `j · panels + q`; on the AVX-512 tile
        /// when `wide` ([`Tile::wide_run`]), two panels at a time.
        ///
        /// # Safety
        /// AVX2 and FMA are present, and AVX-512F when `wide`; `scratch`
        /// holds `n × panels` lanes and `rows` lies in `0..n`.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn rows(&self, scratch: *mut Lanes, rows: Range<usize>, wide: bool) {
            let Product {
                packed,
                w,
                m,
                k,
                panels,
            } = *self;
            // The last panel takes one vector when it has at most 8 rows.
            let narrow = m - (panels - 1) * PANEL <= 8;
            for first in (0..k).step_by(DEPTH) {
                let depth = DEPTH.min(k - first);
                let mut j = rows.start;
                while j < rows.end {
                    let r = ROWS.min(rows.end - j);
                    for q in (0..panels).step_by(if wide { 2 } else { 1 }) {
                        let at = Tile {
                            // Prefetching the weight this tile reads again
                            // from L1 for the other panels is the first
                            // panel's job.
                            w: w[j * k + first..].as_ptr(),
                            k,
                            depth,
                            x: packed[q * k + first..].as_ptr().cast(),
                            // SAFETY: (j, q) is inside the scratch.
                            dst: unsafe { scratch.add(j * panels + q) }.cast(),
                            dst_stride: panels * PANEL,
                            accumulate: first > 0,
                            ahead: q == 0,
                        };
                        // SAFETY: the tile lies inside the operands.
                        unsafe {
                            if wide {
                                at.wide_dispatch(r, q + 1 < panels)
                            } else {
                                at.dispatch(r, narrow && q == panels - 1)
                            }
                        }
                    }
                    j += r;
                }
            }
        }
    }

    /// Asks for the cache lines at depth `p` of the `R` weight rows
    /// [`AHEAD`] tiles on from `w` (rows `k` apart): both register tiles'
    /// prefetch, once per line of depth steps.
    #[inline(always)]
    fn prefetch_ahead<const R: usize>(w: *const f32, k: usize, p: usize) {
        for r in 0..R {
            let line = w.wrapping_add((AHEAD * ROWS + r) * k + p);
            // SAFETY: a prefetch never faults, wherever it points.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast()) };
        }
    }

    impl Tile {
        /// Runs the AVX-512 tile of `r` weight rows, over two panels when
        /// `two` (the second `k` depth steps after the first in `x`).
        ///
        /// # Safety
        /// AVX-512F is present and the tile lies inside the operands.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide_dispatch(&self, r: usize, two: bool) {
            macro_rules! rows {
                ($p:literal) => {
                    match r {
                        6 => self.wide_run::<6, $p>(),
                        5 => self.wide_run::<5, $p>(),
                        4 => self.wide_run::<4, $p>(),
                        3 => self.wide_run::<3, $p>(),
                        2 => self.wide_run::<2, $p>(),
                        _ => self.wide_run::<1, $p>(),
                    }
                };
            }
            // SAFETY: forwarded from the caller.
            unsafe { if two { rows!(2) } else { rows!(1) } }
        }

        /// The `R × 16·P` register tile on AVX-512: a panel's 16 rows in one
        /// register, so each depth step is 12 multiply-adds of 16 lanes for
        /// 2 panel loads and 6 broadcasts, as the AVX2 tile's 12 of 8 lanes
        /// over one panel. Each element sums its depth in the same order, in
        /// the same depth blocks, as [`Tile::run`]: the same bits. A tile of
        /// 12 weight rows (24 registers) ran slower than the AVX2 tile at 32
        /// rows (`cpu_bench "gflops [32,"`, alternating): it streams twice
        /// as many weight rows at once.
        ///
        /// # Safety
        /// As [`Tile::wide_dispatch`], with `P` panels inside `x`.
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[inline]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn wide_run<const R: usize, const P: usize>(&self) {
            let Tile {
                w,
                k,
                depth,
                x,
                dst,
                dst_stride,
                accumulate,
                ahead,
            } = *self;
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            let mut p = 0;
            while p < depth {
                let end = (p + LINE).min(depth);
                if ahead {
                    prefetch_ahead::<R>(w, k, p);
                }
                while p < end {
                    // SAFETY (all loads): step p of each panel is a whole
                    // aligned line, k lines after the previous panel's;
                    // element p of each of the R weight rows is inside w.
                    let xv: [__m512; P] = std::array::from_fn(|v| unsafe {
                        _mm512_load_ps(x.add((v * k + p) * PANEL))
                    });
                    for r in 0..R {
                        let b = unsafe { _mm512_set1_ps(*w.add(r * k + p)) };
                        for v in 0..P {
                            acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
                        }
                    }
                    p += 1;
                }
            }
            for r in 0..R {
                for v in 0..P {
                    // SAFETY: row r of the tile's scratch holds P aligned
                    // lines, written by an earlier block when `accumulate`.
                    unsafe {
                        let at = dst.add(r * dst_stride + PANEL * v);
                        let sum = if accumulate {
                            _mm512_add_ps(acc[r][v], _mm512_load_ps(at))
                        } else {
                            acc[r][v]
                        };
                        _mm512_store_ps(at, sum);
                    }
                }
            }
        }
    }

    /// One tile: weight rows from `w` (rows `k` apart) against one panel
    /// from `x` (two on AVX-512), over `depth` steps, into `dst` (rows
    /// `dst_stride` apart).
    struct Tile {
        w: *const f32,
        k: usize,
        depth: usize,
        x: *const f32,
        dst: *mut f32,
        dst_stride: usize,
        accumulate: bool,
        ahead: bool,
    }

    impl Tile {
        /// Runs the tile of `r` weight rows, over one vector of the panel
        /// when `one`, else two.
        ///
        /// # Safety
        /// AVX2 and FMA are present and the tile lies inside the operands.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dispatch(&self, r: usize, one: bool) {
            // SAFETY: forwarded from the caller.
            unsafe {
                match (r, one) {
                    (6, false) => self.run::<6, 2>(),
                    (5, false) => self.run::<5, 2>(),
                    (4, false) => self.run::<4, 2>(),
                    (3, false) => self.run::<3, 2>(),
                    (2, false) => self.run::<2, 2>(),
                    (_, false) => self.run::<1, 2>(),
                    (6, true) => self.run::<6, 1>(),
                    (5, true) => self.run::<5, 1>(),
                    (4, true) => self.run::<4, 1>(),
                    (3, true) => self.run::<3, 1>(),
                    (2, true) => self.run::<2, 1>(),
                    (_, true) => self.run::<1, 1>(),
                }
            }
        }

        /// The `R × 8·V` register tile.
        ///
        /// # Safety
        /// As [`Tile::dispatch`].
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn run<const R: usize, const V: usize>(&self) {
            let Tile {
                w,
                k,
                depth,
                x,
                dst,
                dst_stride,
                accumulate,
                ahead,
            } = *self;
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let mut p = 0;
            while p < depth {
                let end = (p + LINE).min(depth);
                if ahead {
                    prefetch_ahead::<R>(w, k, p);
                }
                while p < end {
                    // SAFETY (all loads): step p of the panel is a whole
                    // aligned line; element p of each of the R weight rows
                    // is inside w.
                    let xs = unsafe { x.add(p * PANEL) };
                    let mut xv = [_mm256_setzero_ps(); V];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        *xv = unsafe { _mm256_load_ps(xs.add(8 * v)) };
                    }
                    for r in 0..R {
                        let b = unsafe { _mm256_broadcast_ss(&*w.add(r * k + p)) };
                        for v in 0..V {
                            acc[r][v] = _mm256_fmadd_ps(b, xv[v], acc[r][v]);
                        }
                    }
                    p += 1;
                }
            }
            for r in 0..R {
                for v in 0..V {
                    // SAFETY: row r of the tile's scratch holds 8·V aligned
                    // floats, written by an earlier block when `accumulate`.
                    unsafe {
                        let at = dst.add(r * dst_stride + 8 * v);
                        let sum = if accumulate {
                            _mm256_add_ps(acc[r][v], _mm256_load_ps(at))
                        } else {
                            acc[r][v]
                        };
                        _mm256_store_ps(at, sum);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parallel::tile_widths;
    use super::super::skinny::Weight;
    use super::super::skinny::tests::{assert_matches, reference, values};
    use super::*;

    /// Every tile shape, narrow last panel, ragged transpose edge, depth
    /// block and task split agrees with the plain product.
    #[test]
    fn panel_products_match_the_plain_product() {
        if !available() {
            return;
        }
        for m in [1, 7, 8, 9, 15, 16, 17, 24, 25, 33, 55] {
            for n in [1, 5, 6, 7, 13, 24, 50] {
                for k in [1, 7, 8, 9, 33, 512, 513, 1100] {
                    let x = values(m * k, 1);
                    let w = values(n * k, 2);
                    let weight = Weight {
                        data: &w,
                        transposed: true,
                    };
                    let expected = reference(&x, weight, (m, n, k));
                    let mut first: Option<Vec<u32>> = None;
                    for (tasks, wide) in [1, 2, 3]
                        .into_iter()
                        .flat_map(|t| tile_widths().map(move |w| (t, w)))
                    {
                        let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
                        run(&mut out, &x, &w, (m, n, k), tasks, wide);
                        let case = format!("m={m} n={n} k={k} tasks={tasks} wide={wide}");
                        assert_matches(&out, &expected, k, &case);
                        // Either tile, split or not, sums each element alike.
                        // SAFETY: every element was written.
                        let bits = out.iter().map(|v| unsafe { v.assume_init() }.to_bits());
                        let bits: Vec<u32> = bits.collect();
                        assert_eq!(first.get_or_insert_with(|| bits.clone()), &bits, "{case}");
                    }
                }
            }
        }
    }

    /// The public entry takes exactly its range of rows and leaves the rest
    /// to the other kernels.
    #[test]
    fn product_takes_only_its_rows() {
        let (n, k) = (10, 20);
        let w = values(n * k, 3);
        for (m, taken) in [
            (MIN_ROWS - 1, false),
            (MIN_ROWS, true),
            (MAX_ROWS, true),
            (MAX_ROWS + 1, false),
        ] {
            let x = values(m * k, 4);
            let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
            assert_eq!(
                product(&mut out, &x, &w, (m, n, k), true),
                taken && available(),
                "m={m}"
            );
        }
    }
}
