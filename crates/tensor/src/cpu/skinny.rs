//! Products of a few activation rows against a weight matrix, read in place.
//!
//! `gemm` packs both operands into its own layout on every call. For a
//! layer's weight under a handful of activation rows (a request of one
//! sentence, one generated token) that packing costs as much as the
//! product itself: the weight is read, rewritten and read again, every call.
//! These kernels read the weight once, where it lies, and keep the few
//! activation rows in L1:
//! - a weight `[n, k]` (PyTorch's `[out, in]`, `transpose_b`) is dotted row by
//!   row, 8 lanes along `k`;
//! - a weight `[k, n]` is walked one row of `k` at a time, 16 columns wide,
//!   against a broadcast activation element; one larger than L2 under one or
//!   two rows is instead read front to back, four of its rows at a time
//!   added into the output rows, which stay in L1.
//!
//! Only x86_64 with AVX2 and FMA has them; elsewhere [`product`] declines
//! and the caller uses `gemm`.

use std::mem::MaybeUninit;

/// Elements of the activation (rows × k) above which `gemm`'s cache
/// blocking beats reading a `[k, n]` weight in place, for more than two
/// rows. Measured with `examples/cpu_bench.rs` (its `weight` cases) on a
/// 2-thread AVX2 machine, idle: [16,384]×[384,1536] runs 1.15× gemm's speed
/// in place, [64,384]×[384,1536] 1.13×.
const MAX_ACTIVATION: usize = 64 * 384;

/// Most activation rows the dot kernel takes for a `[n, k]` weight. It
/// prefetches the weight strips ahead, so it streams a weight from DRAM
/// fast for one sentence's rows; from 32 rows on the panel kernel
/// ([`super::panels`]) runs nearer the FMA units' peak and takes over
/// (`cpu_bench gflops`, 1 thread, best of 4 alternating runs: [32,384]×
/// [1536,384]ᵀ 71.5 vs 60.8 GFLOP/s, [32,1536]×[384,1536]ᵀ 77.2 vs 52.6).
/// Where the AVX-512 tiles run, a model's weight goes to the packed kernel
/// from 16 rows instead ([`super::packed`]).
const MAX_DOT_ROWS: usize = super::panels::MIN_ROWS - 1;
/// Most activation elements (768 KiB) the dot kernel takes: it re-reads
/// them for every weight strip, and [128, 1536] (MiniLM's widest layer)
/// is the largest product it was measured to win on. At [`MAX_DOT_ROWS`]
/// rows it caps `k` near 6300.
const MAX_DOT_ACTIVATION: usize = 128 * 1536;

/// The longest `k` the broadcast kernel takes above two rows: it walks all
/// of k per tile without blocking it, and past about 512 the tile's 6
/// activation rows leave L1. Measured as [`MAX_ACTIVATION`]:
/// [16,384]×[384,1536] runs 1.15× gemm's speed in place,
/// [16,1536]×[1536,384] 0.75–0.9×.
const MAX_BROADCAST_DEPTH: usize = 512;

/// The weight operand: `data` holds `[n, k]` when `transposed`, else
/// `[k, n]`, both row-major and dense.
#[derive(Clone, Copy)]
pub(super) struct Weight<'a> {
    pub data: &'a [f32],
    pub transposed: bool,
}

/// Whether [`product`] takes `m` activation rows `k` deep against a weight
/// `[n, k]` (`transposed`) or `[k, n]`, for any non-zero `n`.
pub(super) fn takes(m: usize, k: usize, transposed: bool) -> bool {
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, k, transposed);
        false
    }
    #[cfg(target_arch = "x86_64")]
    {
        let available = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        available
            && m > 0
            && k > 0
            && (m <= 2
                || if transposed {
                    m <= MAX_DOT_ROWS && m * k <= MAX_DOT_ACTIVATION
                } else {
                    m * k <= MAX_ACTIVATION && k <= MAX_BROADCAST_DEPTH
                })
    }
}

/// `out[m × n] = x[m × k] · w`, every element written, split over threads
/// by columns when `threads`. Returns `false`, writing nothing, when this
/// CPU lacks the kernels or the product is one `gemm` runs faster (see
/// [`MAX_DOT_ROWS`], [`MAX_ACTIVATION`] and [`MAX_BROADCAST_DEPTH`]).
pub(super) fn product(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    w: Weight<'_>,
    (m, n, k): (usize, usize, usize),
    threads: bool,
) -> bool {
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (out, x, w, m, n, k, threads);
        false
    }
    #[cfg(target_arch = "x86_64")]
    {
        if n == 0 || !takes(m, k, w.transposed) {
            return false;
        }
        assert!(
            x.len() >= m * k && w.data.len() >= n * k && out.len() >= m * n,
            "skinny product out of bounds"
        );
        let out = super::parallel::SendPtr(out.as_mut_ptr().cast::<f32>());
        // Column ranges are disjoint, so the tasks write disjoint elements.
        let columns = move |range: std::ops::Range<usize>| {
            let out = out;
            // SAFETY: AVX2 and FMA were checked; the bounds were asserted
            // above and each call writes only columns `range`.
            unsafe {
                if w.transposed {
                    x86::dot_rows(out.0, x, w.data, (m, n, k), range);
                } else {
                    x86::broadcast_rows(out.0, x, w.data, (m, n, k), range);
                }
            }
        };
        let tasks = if threads {
            super::parallel::threads()
        } else {
            1
        };
        if tasks <= 1 {
            columns(0..n);
        } else {
            // Whole tiles per task, so only the last task has a ragged one.
            let per_task = n.div_ceil(tasks).next_multiple_of(x86::COLS_WIDE);
            super::parallel::for_each_block(n, per_task, columns);
        }
        true
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Activation rows per tile of the dot kernel.
    const ROWS: usize = 3;
    /// Weight rows per tile of the dot kernel.
    const WROWS: usize = 4;
    /// Activation rows per tile of the broadcast kernel.
    const ROWS_WIDE: usize = 6;
    /// How many strips ahead the dot kernel prefetches its weight rows:
    /// DRAM's latency is hidden behind the compute of the strips between.
    const AHEAD: usize = 2;
    /// Most floats of strips ahead the dot kernel prefetches into L1 (16
    /// KiB, half of Zen 4's L1).
    const L1_AHEAD: usize = 4096;
    /// Output columns of the widest tile of either kernel.
    pub const COLS_WIDE: usize = 64;

    /// How a dot tile asks for the cache lines of weight rows ahead of
    /// their use, one step of the tile at a time.
    ///
    /// Weight rows `[n, k]` lie back to back, so a strip of them is one run
    /// of memory. The row tiles of the strip in use split the run of a strip
    /// `AHEAD` strips on into consecutive shares, and each spreads its share
    /// evenly over its steps: the weight streams in from DRAM while the strip
    /// in L1 is computed on, without a burst of misses that would stall the
    /// tile's own loads.
    pub trait Ahead: Sized {
        /// Asks for `share`, `lines` lines, over `steps` steps.
        fn new(share: Share, lines: usize, steps: usize) -> Self;

        /// One step of the tile.
        fn step(&mut self);

        /// Tile `tile` of `tiles`' share of weight rows `first..first + rows`
        /// (clipped to `n`).
        fn strip(
            w: &[f32],
            nk: (usize, usize),
            first: usize,
            rows: usize,
            tiles: (usize, usize),
        ) -> Self {
            let (share, lines, steps) = Share::of(w, nk, first, rows, tiles);
            Self::new(share, lines, steps)
        }
    }

    /// Floats per cache line.
    const LINE: usize = 16;

    /// The lines of a tile's share of a strip that are still to ask for.
    pub struct Share {
        next: *const f32,
        end: *const f32,
    }

    impl Share {
        /// Tile `tile` of `tiles`' share of weight rows `first..first + rows`
        /// (clipped to `n`), with its number of lines and the tile's steps.
        fn of(
            w: &[f32],
            (n, k): (usize, usize),
            first: usize,
            rows: usize,
            (tile, tiles): (usize, usize),
        ) -> (Share, usize, usize) {
            let start = first.min(n) * k;
            let end = (first + rows).min(n) * k;
            let share = (end - start).div_ceil(tiles).next_multiple_of(LINE);
            let from = (start + tile * share).min(end);
            let to = (from + share).min(end);
            let lines = Share {
                next: w.as_ptr().wrapping_add(from),
                end: w.as_ptr().wrapping_add(to),
            };
            (lines, (to - from) / LINE, (k / 8).max(1))
        }

        /// Asks for the next line, into L2 (`L2`) or L1; `false` when none
        /// is left.
        #[inline(always)]
        fn ask<const L2: bool>(&mut self) -> bool {
            if self.next >= self.end {
                return false;
            }
            // SAFETY: a prefetch never faults, wherever it points.
            unsafe {
                if L2 {
                    _mm_prefetch::<_MM_HINT_T1>(self.next.cast());
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(self.next.cast());
                }
            }
            self.next = self.next.wrapping_add(LINE);
            true
        }
    }

    /// Many row tiles to a strip (10 activation rows or more): each asks for
    /// one line every few steps, into L1, or into L2 (`L2`) when the strips
    /// ahead would not fit in L1 beside the strip in use (`cpu_bench`,
    /// [13,1536]·[384,1536]ᵀ from DRAM: 3.2 ms with L2, 4.0 ms with L1).
    pub struct Steady<const L2: bool> {
        share: Share,
        /// Steps between two lines, and steps left until the next one.
        every: usize,
        wait: usize,
    }

    impl<const L2: bool> Ahead for Steady<L2> {
        fn new(share: Share, lines: usize, steps: usize) -> Self {
            Self {
                share,
                every: (steps / lines.max(1)).max(1),
                wait: 0,
            }
        }

        #[inline(always)]
        fn step(&mut self) {
            if self.wait == 0 {
                self.wait = self.every;
                self.share.ask::<L2>();
            }
            self.wait -= 1;
        }
    }

    /// One to three row tiles to a strip (up to 9 activation rows): each has
    /// a large share to ask for, up to several lines a step, so it asks for
    /// them into L2, where such bursts do not evict the strip in use from L1.
    /// The hardware's prefetcher alone does not keep that many weight rows
    /// streaming (Zen 4, weights from DRAM: [2,384]·[1536,384]ᵀ took 2.4× as
    /// long as [4,384]·[1536,384]ᵀ without this; `ab_builds.py`, MiniLM's
    /// 9-row sentence 0.82–0.86× as long with it).
    pub struct Burst {
        share: Share,
        /// Lines to ask for per step, in 256ths, and the 256ths owed.
        rate: usize,
        owed: usize,
    }

    impl Ahead for Burst {
        fn new(share: Share, lines: usize, steps: usize) -> Self {
            Self {
                share,
                rate: (256 * lines).div_ceil(steps),
                owed: 0,
            }
        }

        #[inline(always)]
        fn step(&mut self) {
            self.owed += self.rate;
            while self.owed >= 256 && self.share.ask::<true>() {
                self.owed -= 256;
            }
        }
    }

    /// Output columns `cols` of `x · wᵀ` for `w` `[n, k]`, in tiles of 3
    /// rows by 4 weight rows (one row: 8 weight rows, so that 8
    /// accumulators are in flight).
    ///
    /// # Safety
    /// AVX2 and FMA are present; `x` holds `m × k`, `w` `n × k`, `out`
    /// `m × n` elements, and `cols` lies within `0..n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (m, n, k): (usize, usize, usize),
        cols: Range<usize>,
    ) {
        if m == 1 {
            let mut j = cols.start;
            while j + 8 <= cols.end {
                let ahead = Burst::strip(w, (n, k), j + AHEAD * 8, 8, (0, 1));
                // SAFETY: the tile lies within the bounds the caller vouched for.
                unsafe { dot_tile::<1, 8, _>(out, x, w, (n, k), (0, j), ahead) };
                j += 8;
            }
            if j < cols.end {
                // SAFETY: as above.
                unsafe { dot_rows_tiled::<Burst>(out, x, w, (m, n, k), j..cols.end) };
            }
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            if m.div_ceil(ROWS) <= 3 {
                dot_rows_tiled::<Burst>(out, x, w, (m, n, k), cols);
            } else if AHEAD * WROWS * k > L1_AHEAD {
                dot_rows_tiled::<Steady<true>>(out, x, w, (m, n, k), cols);
            } else {
                dot_rows_tiled::<Steady<false>>(out, x, w, (m, n, k), cols);
            }
        }
    }

    /// [`dot_rows`] in tiles of 3 rows by 4 weight rows, asking for the
    /// weight ahead with `P`.
    ///
    /// # Safety
    /// As [`dot_rows`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_rows_tiled<P: Ahead>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (m, n, k): (usize, usize, usize),
        cols: Range<usize>,
    ) {
        let tiles = m.div_ceil(ROWS);
        for_each_tile(m, cols, (ROWS, WROWS), |i, j, r, c| {
            let ahead = P::strip(w, (n, k), j + AHEAD * WROWS, WROWS, (i / ROWS, tiles));
            // SAFETY: the tile lies within the bounds the caller vouched for.
            unsafe {
                match (r, c) {
                    (3, 4) => dot_tile::<3, 4, P>(out, x, w, (n, k), (i, j), ahead),
                    (r, c) => dot_tile_any(out, x, w, (n, k), (i, j), (r, c), ahead),
                }
            }
        });
    }

    /// Calls `tile(i, j, r, c)` for the tiles of at most `rows × width`
    /// that cover rows `0..m` by columns `cols`, column strip by strip so a
    /// strip of weights stays in cache while every row passes it.
    #[inline(always)]
    fn for_each_tile(
        m: usize,
        cols: Range<usize>,
        (rows, width): (usize, usize),
        mut tile: impl FnMut(usize, usize, usize, usize),
    ) {
        let mut j = cols.start;
        while j < cols.end {
            let c = (cols.end - j).min(width);
            let mut i = 0;
            while i < m {
                let r = (m - i).min(rows);
                tile(i, j, r, c);
                i += r;
            }
            j += c;
        }
    }

    /// One `R × C` tile of dot products: rows `i..i+R` of `x` against rows
    /// `j..j+C` of `w`.
    ///
    /// # Safety
    /// As [`dot_rows`], with the tile inside the output.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    // A register tile reads best indexed by its row and column.
    #[allow(clippy::needless_range_loop)]
    unsafe fn dot_tile<const R: usize, const C: usize, P: Ahead>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (n, k): (usize, usize),
        (i, j): (usize, usize),
        mut ahead: P,
    ) {
        let xs = x.as_ptr();
        let ws = w.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let whole = k / 8 * 8;
        let mut p = 0;
        // SAFETY (all loads): row starts plus p + 8 ≤ k stay inside the
        // operands the caller vouched for.
        while p < whole {
            let mut a = [_mm256_setzero_ps(); R];
            for (r, a) in a.iter_mut().enumerate() {
                *a = unsafe { _mm256_loadu_ps(xs.add((i + r) * k + p)) };
            }
            ahead.step();
            for c in 0..C {
                let wv = unsafe { _mm256_loadu_ps(ws.add((j + c) * k + p)) };
                for r in 0..R {
                    acc[r][c] = _mm256_fmadd_ps(a[r], wv, acc[r][c]);
                }
            }
            p += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let mut sum = hsum(acc[r][c]);
                for q in whole..k {
                    sum += x[(i + r) * k + q] * w[(j + c) * k + q];
                }
                // SAFETY: (i + r, j + c) is inside the m × n output.
                unsafe { out.add((i + r) * n + j + c).write(sum) };
            }
        }
    }

    /// [`dot_tile`] for the ragged edge tiles, sized at run time.
    ///
    /// # Safety
    /// As [`dot_tile`], with `r ≤ 3` and `c ≤ 4`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_tile_any<P: Ahead>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        nk: (usize, usize),
        at: (usize, usize),
        (r, c): (usize, usize),
        ahead: P,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match (r, c) {
                (1, 1) => dot_tile::<1, 1, P>(out, x, w, nk, at, ahead),
                (1, 2) => dot_tile::<1, 2, P>(out, x, w, nk, at, ahead),
                (1, 3) => dot_tile::<1, 3, P>(out, x, w, nk, at, ahead),
                (1, _) => dot_tile::<1, 4, P>(out, x, w, nk, at, ahead),
                (2, 1) => dot_tile::<2, 1, P>(out, x, w, nk, at, ahead),
                (2, 2) => dot_tile::<2, 2, P>(out, x, w, nk, at, ahead),
                (2, 3) => dot_tile::<2, 3, P>(out, x, w, nk, at, ahead),
                (2, _) => dot_tile::<2, 4, P>(out, x, w, nk, at, ahead),
                (_, 1) => dot_tile::<3, 1, P>(out, x, w, nk, at, ahead),
                (_, 2) => dot_tile::<3, 2, P>(out, x, w, nk, at, ahead),
                (_, 3) => dot_tile::<3, 3, P>(out, x, w, nk, at, ahead),
                (_, _) => dot_tile::<3, 4, P>(out, x, w, nk, at, ahead),
            }
        }
    }

    /// The sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
    }

    /// Fewest weight elements [`stream`] takes (1 MiB, an L2): a weight
    /// that caches hold runs faster through the register tiles of
    /// [`broadcast_strips`] (`ab_builds.py`'s GPT-2 of width 64: 1.03–1.07×
    /// as long streamed).
    const STREAM_MIN_WEIGHT: usize = 1 << 18;
    /// Weight rows [`stream`] adds per pass over its columns.
    const STREAM_DEPTH: usize = 4;

    /// Output columns `cols` of `x · w` for `w` `[k, n]` and `R` rows (one
    /// or two), reading the weight's rows front to back.
    ///
    /// Each pass adds `STREAM_DEPTH` weight rows, scaled by the matching
    /// activation elements, to the output columns, which stay in L1 as the
    /// accumulator. The weight is read as a few long runs of memory, which
    /// the hardware's prefetcher follows, where a register tile's strip of
    /// every row would be a short read `n` floats from the last. Each output
    /// element still sums its `k` products in order, as the register tiles
    /// do.
    ///
    /// # Safety
    /// As [`broadcast_rows`], with `m == R`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn stream<const R: usize>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (_, n, k): (usize, usize, usize),
        cols: Range<usize>,
    ) {
        let ws = w.as_ptr();
        let width = cols.len();
        let whole = width / 8 * 8;
        // SAFETY: rows 0..R of the output have columns `cols`.
        let acc: [*mut f32; R] = std::array::from_fn(|r| unsafe { out.add(r * n + cols.start) });
        for acc in acc {
            // SAFETY: as above; all-zero bytes are 0.0.
            unsafe { acc.write_bytes(0, width) };
        }
        // One pass: `d` weight rows from row p added to every output row
        // (the arrays' last `STREAM_DEPTH - d` entries repeat row p + d - 1
        // and go unused).
        // SAFETY (every load and store): columns `cols` of weight rows
        // p..p + d and of output rows 0..R lie inside the operands the
        // caller vouched for.
        let pass = |p: usize, d: usize| {
            let row: [*const f32; STREAM_DEPTH] =
                std::array::from_fn(|e| ws.wrapping_add((p + e.min(d - 1)) * n + cols.start));
            let xs: [[__m256; STREAM_DEPTH]; R] = std::array::from_fn(|r| {
                std::array::from_fn(|e| _mm256_set1_ps(x[r * k + p + e.min(d - 1)]))
            });
            let mut c = 0;
            while c < whole {
                let wv: [__m256; STREAM_DEPTH] =
                    std::array::from_fn(|e| unsafe { _mm256_loadu_ps(row[e].add(c)) });
                for r in 0..R {
                    unsafe {
                        let mut o = _mm256_loadu_ps(acc[r].add(c));
                        for e in 0..d {
                            o = _mm256_fmadd_ps(xs[r][e], wv[e], o);
                        }
                        _mm256_storeu_ps(acc[r].add(c), o);
                    }
                }
                c += 8;
            }
            for c in whole..width {
                for r in 0..R {
                    unsafe {
                        let mut o = *acc[r].add(c);
                        for e in 0..d {
                            o = x[r * k + p + e].mul_add(*row[e].add(c), o);
                        }
                        acc[r].add(c).write(o);
                    }
                }
            }
        };
        let mut p = 0;
        while p + STREAM_DEPTH <= k {
            pass(p, STREAM_DEPTH);
            p += STREAM_DEPTH;
        }
        if p < k {
            pass(p, k - p);
        }
    }

    /// Output columns `cols` of `x · w` for `w` `[k, n]`: streamed under
    /// one or two rows when the weight outgrows L2, else in register tiles.
    ///
    /// # Safety
    /// As [`dot_rows`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn broadcast_rows(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        mnk: (usize, usize, usize),
        cols: Range<usize>,
    ) {
        let (m, n, k) = mnk;
        let streamed = n * k >= STREAM_MIN_WEIGHT;
        // FMA has a latency of about 4 cycles and two issue ports: keep at
        // least 8 accumulators in flight, so fewer rows take wider strips.
        // SAFETY: forwarded from the caller.
        unsafe {
            match (m, streamed) {
                (1, true) => stream::<1>(out, x, w, mnk, cols),
                (2, true) => stream::<2>(out, x, w, mnk, cols),
                (1, _) => broadcast_strips::<8>(out, x, w, mnk, cols),
                (2, _) => broadcast_strips::<4>(out, x, w, mnk, cols),
                _ => broadcast_strips::<2>(out, x, w, mnk, cols),
            }
        }
    }

    /// [`broadcast_rows`] in strips of `V` vectors (`8·V` columns).
    ///
    /// # Safety
    /// As [`dot_rows`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn broadcast_strips<const V: usize>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (m, n, k): (usize, usize, usize),
        cols: Range<usize>,
    ) {
        for_each_tile(m, cols, (ROWS_WIDE, 8 * V), |i, j, r, c| {
            let at = (i, j, c);
            // SAFETY: the tile lies within the bounds the caller vouched for.
            unsafe {
                match r {
                    6 => broadcast_tile::<6, V>(out, x, w, (n, k), at),
                    5 => broadcast_tile::<5, V>(out, x, w, (n, k), at),
                    4 => broadcast_tile::<4, V>(out, x, w, (n, k), at),
                    3 => broadcast_tile::<3, V>(out, x, w, (n, k), at),
                    2 => broadcast_tile::<2, V>(out, x, w, (n, k), at),
                    _ => broadcast_tile::<1, V>(out, x, w, (n, k), at),
                }
            }
        });
    }

    /// One tile of `R` rows by `c ≤ 8·V` columns from column `j`: each step
    /// loads a strip of one weight row and adds it, scaled by one broadcast
    /// activation element, to every row's accumulators.
    ///
    /// # Safety
    /// As [`broadcast_rows`], with the tile inside the output.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    // A register tile reads best indexed by its row and column.
    #[allow(clippy::needless_range_loop)]
    unsafe fn broadcast_tile<const R: usize, const V: usize>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        (n, k): (usize, usize),
        (i, j, c): (usize, usize, usize),
    ) {
        let xs = x.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        // The ragged last strip is copied into a padded row first.
        let mut padded = [[0.0f32; 8]; V];
        for p in 0..k {
            let strip: *const f32 = if c == 8 * V {
                // SAFETY: row p of w has columns j..j + 8·V ≤ n.
                unsafe { w.as_ptr().add(p * n + j) }
            } else {
                padded.as_flattened_mut()[..c].copy_from_slice(&w[p * n + j..p * n + j + c]);
                padded.as_ptr().cast()
            };
            let mut wv = [_mm256_setzero_ps(); V];
            for (v, wv) in wv.iter_mut().enumerate() {
                // SAFETY: `strip` points at 8·V floats.
                *wv = unsafe { _mm256_loadu_ps(strip.add(8 * v)) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: (i + r, p) is inside x.
                let a = unsafe { _mm256_broadcast_ss(&*xs.add((i + r) * k + p)) };
                for v in 0..V {
                    acc[v] = _mm256_fmadd_ps(a, wv[v], acc[v]);
                }
            }
        }
        let mut row = [[0.0f32; 8]; V];
        for (r, acc) in acc.iter().enumerate() {
            for v in 0..V {
                // SAFETY: `row[v]` holds 8 floats.
                unsafe { _mm256_storeu_ps(row[v].as_mut_ptr(), acc[v]) };
            }
            let row = row.as_flattened();
            // SAFETY: columns j..j + c of row i + r are inside the output.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.add((i + r) * n + j), c) };
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `x · w` in f64, the plain way (also the panel kernel's reference).
    pub(in crate::cpu) fn reference(
        x: &[f32],
        w: Weight<'_>,
        (m, n, k): (usize, usize, usize),
    ) -> Vec<f32> {
        let at = |p: usize, j: usize| {
            if w.transposed {
                w.data[j * k + p]
            } else {
                w.data[p * n + j]
            }
        };
        (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(at(p, j)))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    /// Asserts that a kernel's `out` (first filled with NaN, so that an
    /// element it missed shows) matches the plain product `expected` of
    /// depth `k`; `case` names the case in the message.
    pub(in crate::cpu) fn assert_matches(
        out: &[MaybeUninit<f32>],
        expected: &[f32],
        k: usize,
        case: &str,
    ) {
        for (e, (o, want)) in out.iter().zip(expected).enumerate() {
            // SAFETY: the caller initialised `out` with NaN.
            let got = unsafe { o.assume_init() };
            assert!(
                (got - want).abs() <= 1e-4 * (k as f32).sqrt(),
                "{case}: element {e} is {got}, want {want}"
            );
        }
    }

    /// `len` values in [-1, 1), spread by `seed`.
    pub(in crate::cpu) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Every tile shape, ragged edge and thread split agrees with the plain
    /// product, on CPUs that have the kernels.
    #[test]
    fn in_place_products_match_the_plain_product() {
        let mut ran = 0;
        let mut shapes = vec![];
        for m in [1, 2, 3, 4, 5, 6, 7, 13, 64, 128] {
            for n in [1, 3, 8, 9, 17, 64, 130] {
                for k in [1, 7, 8, 9, 33, 600] {
                    shapes.push((m, n, k));
                }
            }
        }
        // Weights past L2 (`[k, n]` ones are streamed under one or two rows),
        // with ragged column and depth tails.
        shapes.extend([(1, 523, 601), (2, 517, 603), (3, 523, 601), (1, 530, 1024)]);
        for (m, n, k) in shapes {
            for transposed in [true, false] {
                for threads in [false, true] {
                    let x = values(m * k, 1);
                    let data = values(n * k, 2);
                    let w = Weight {
                        data: &data,
                        transposed,
                    };
                    let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
                    if !product(&mut out, &x, w, (m, n, k), threads) {
                        continue;
                    }
                    ran += 1;
                    let expected = reference(&x, w, (m, n, k));
                    let case =
                        format!("m={m} n={n} k={k} transposed={transposed} threads={threads}");
                    assert_matches(&out, &expected, k, &case);
                }
            }
        }
        if super::super::packed::available() {
            assert!(ran > 1000, "the kernels ran for only {ran} cases");
        }
    }
}
