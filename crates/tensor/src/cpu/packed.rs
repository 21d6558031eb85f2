//! Products of many activation rows (a batch of sentences' tokens) against
//! a packed weight: a model's weight is packed the first time a product of
//! [`MIN_WEIGHT_ROWS`] rows meets it and kept with the tensor for its life
//! ([`Tensor::into_weight`]); any other tensor is packed per call, as
//! `gemm` would, above [`super::panels`]' 128 rows.
//!
//! `gemm` repacks the weight on every call (7% of a batch-32 MiniLM
//! request) and its micro-kernel runs below ONNX Runtime's, whose MLAS
//! packs each weight once at load (bench/RESULTS.md, session 18). This is
//! MLAS's design for AVX2: the weight in panels of 16 output columns whose
//! 16 elements at one depth lie side by side in a cache line, and a
//! register tile of 6 activation rows by one panel: 12 accumulators from 2
//! aligned panel loads and 6 broadcasts of activation elements per depth
//! step, the activation read where it lies, the output written in place.
//!
//! A convolution ([`super::conv`]) runs on the same register tile with its
//! weight packed channels last ([`PackedWeight::of_conv`]), reading each
//! patch row where it lies in the input, tap by tap, instead of packing it
//! ([`gathered_product`]): an indirect convolution.
//!
//! Where the CPU has AVX-512 (and [`super::simd`] allows it), the product
//! runs on a tile of 12 rows by two panels in 16-lane registers instead
//! (`x86::Tile::wide_run`): twice the lanes per multiply-add, which CPUs with
//! two 512-bit FMA units (Intel's server cores) run at twice AVX2's peak.
//! Each element sums its depth in the same order either way, so both tiles
//! give the same bits.
//!
//! Only x86_64 with AVX2 and FMA has it; elsewhere [`PackedWeight::pack`]
//! declines and the caller keeps `gemm`.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::buffers::{floats, zeroed};
use super::matmul::{BAND_WORK, MIN_BAND_ROWS};
use super::parallel::{SendPtr, for_each_task, wide_tiles};
use crate::{Result, Tensor, deadline};

/// Fewest activation rows the packed kernel takes under a tensor that is
/// no model weight, packed for the one call: below, the panel kernel reads
/// it in place without packing it.
pub(super) const MIN_ROWS: usize = super::panels::MAX_ROWS + 1;

/// Fewest activation rows the packed kernel takes under a model's weight
/// ([`Tensor::into_weight`]), packed once and kept, on the AVX2 tiles: at
/// 32 rows and below the panel kernel (whole panels of 16 rows at 32) or
/// the dot kernel runs as fast without a packed copy. Above 32 the panel
/// kernel pays for a last panel of 8 rows whatever the rows past it, and
/// the packed tile's 6-row steps do not: `cpu_bench gflops` on a Zen 5 (2
/// threads, two alternating runs, MiniLM's three weight shapes) ran 33–56
/// rows packed at 428–518 GFLOP/s against 180–379 on the panel kernel at
/// AVX-512 (24 distinct weights in turn: 310–490 against 181–356), and at
/// 237–268 against 137–233 at AVX2 (distinct: 186–254 against 135–225);
/// minilm requests of 3 and 4 sentences (39 and 51 tokens) took 0.88–0.91×
/// the time. At 32 rows neither led throughout at AVX2.
const MIN_WEIGHT_ROWS: usize = super::panels::MIN_ROWS + 1;

/// [`MIN_WEIGHT_ROWS`] where the AVX-512 tiles run: there the packed
/// product outruns the dot kernel of [`super::skinny`], whose tiles are
/// AVX2 only, from 16 rows. `cpu_bench gflops` on a Zen 5 (two alternating
/// runs): 16–24 rows packed at 374–507 GFLOP/s against 209–254, and over
/// 24 distinct weights 254–461 against 206–238; at 8 rows it trailed on
/// [8,384]×[1536,384]ᵀ over distinct weights (163 against 176). At AVX2
/// the dot kernel stays ahead over distinct weights (156–202 against
/// 208–237). minilm requests of 1 and 2 sentences (16 and 21 tokens) took
/// 0.92–0.97× and 0.87–0.90× the time. A model thus keeps packed copies
/// ([`packed_weight_bytes`]) once it has seen one sentence of 16 tokens.
const MIN_WIDE_WEIGHT_ROWS: usize = 16;

/// Fewest activation rows the packed kernel takes under `b`.
pub(super) fn min_rows(b: &Tensor) -> usize {
    match (b.is_weight(), wide_tiles()) {
        (false, _) => MIN_ROWS,
        (true, false) => MIN_WEIGHT_ROWS,
        (true, true) => MIN_WIDE_WEIGHT_ROWS,
    }
}

/// Fewest output columns and depth the packed kernel takes: narrower, a
/// panel's 16 lanes go mostly unused and a tile's packing and stores
/// outweigh its few multiply-adds (`linear [1Mi,1]` over HTTP ran 1.6×
/// slower packed than by gemm).
const MIN_SIDE: usize = 64;

/// Output columns per panel: two vectors.
const WIDTH: usize = 16;

/// A weight in the kernel's layout: panel `q` (output columns `16q..16q+16`)
/// holds at `[q][p]` the 16 weight elements of depth `p`, zero past `n`.
pub(crate) struct PackedWeight {
    panels: Vec<Lanes>,
    n: usize,
    k: usize,
    /// Whether it was packed from `[n, k]` (else from `[k, n]`).
    transposed: bool,
    /// How its depth is ordered.
    depth: Depth,
}

/// How a packed weight's depth is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    /// As the tensor holds it.
    AsHeld,
    /// A convolution's `[o, c, kh, kw]` weight taken as `[o, kh, kw, c]`:
    /// the order of [`super::conv`]'s channels-last patches.
    ChannelsLast,
}

/// One panel's 16 elements at one depth: a cache line, aligned to one.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
struct Lanes([f32; WIDTH]);

/// Bytes of packed weights alive right now, kept or made for one call.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Host memory that weights packed for the product kernel hold right now,
/// besides the weights themselves: what serving large batches on the CPU
/// costs in memory, for operators to see.
pub fn packed_weight_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

impl Drop for PackedWeight {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(size_of_val(self.panels.as_slice()), Ordering::Relaxed);
    }
}

impl PackedWeight {
    /// The packed form of `b`'s elements (`[n, k]` when `transposed`, else
    /// `[k, n]`), which `w` reads as f32 only when they are to be packed:
    /// made once and then kept with the tensor (and its clones) when it is
    /// a model's weight, else made for this call; `None` when this CPU
    /// lacks the kernel or the product is too narrow or shallow for it
    /// (see [`MIN_SIDE`]).
    pub(super) fn of<'a>(
        b: &Tensor,
        w: impl FnOnce() -> Result<Cow<'a, [f32]>>,
        (n, k): (usize, usize),
        transposed: bool,
    ) -> Result<Option<Arc<PackedWeight>>> {
        if !takes(n, k) {
            return Ok(None);
        }
        let fits = |p: &PackedWeight| {
            (p.n, p.k, p.transposed, p.depth) == (n, k, transposed, Depth::AsHeld)
        };
        b.derived(|| Self::pack(&w()?, (n, k), transposed), fits)
            .map(Some)
    }

    /// A convolution's weight `b`, `[o, c, kh, kw]`, packed as the output
    /// columns of a product whose depth runs channels last, `(kh, kw, c)`:
    /// kept with a model's weight like [`PackedWeight::of`]'s, and `None`
    /// where that declines.
    pub(super) fn of_conv(
        b: &Tensor,
        (o, c, kh, kw): (usize, usize, usize, usize),
    ) -> Result<Option<Arc<PackedWeight>>> {
        let (taps, k) = (kh * kw, c * kh * kw);
        if !takes(o, k) {
            return Ok(None);
        }
        let fits = |p: &PackedWeight| {
            (p.n, p.k, p.transposed, p.depth) == (o, k, true, Depth::ChannelsLast)
        };
        let make = || {
            let w = floats("conv2d", b)?;
            let mut last = zeroed::<f32>(o * k)?;
            for (to, from) in last.chunks_exact_mut(k).zip(w.chunks_exact(k)) {
                for (ci, kernel) in from.chunks_exact(taps).enumerate() {
                    for (t, &v) in kernel.iter().enumerate() {
                        to[t * c + ci] = v;
                    }
                }
            }
            let mut packed = Self::pack(&last, (o, k), true)?;
            packed.depth = Depth::ChannelsLast;
            Ok(packed)
        };
        b.derived(make, fits).map(Some)
    }

    /// `w` (`[n, k]` when `transposed`, else `[k, n]`) packed for the
    /// caller to keep, or `None` as [`PackedWeight::of`] declines.
    pub(super) fn new(
        w: &[f32],
        (n, k): (usize, usize),
        transposed: bool,
    ) -> Result<Option<PackedWeight>> {
        if !takes(n, k) {
            return Ok(None);
        }
        Self::pack(w, (n, k), transposed).map(Some)
    }

    /// Packs `w`.
    fn pack(w: &[f32], (n, k): (usize, usize), transposed: bool) -> Result<PackedWeight> {
        assert!(w.len() >= n * k, "packed weight out of bounds");
        let mut panels: Vec<Lanes> = zeroed(n.div_ceil(WIDTH) * k)?;
        for (q, panel) in panels.chunks_exact_mut(k.max(1)).enumerate() {
            let columns = q * WIDTH..n.min(q * WIDTH + WIDTH);
            if transposed {
                // Row j of w is output column j: each is read once, along k.
                for (lane, j) in columns.enumerate() {
                    for (step, &v) in panel.iter_mut().zip(&w[j * k..(j + 1) * k]) {
                        step.0[lane] = v;
                    }
                }
            } else {
                for (p, step) in panel.iter_mut().enumerate() {
                    let row = &w[p * n..];
                    step.0[..columns.len()].copy_from_slice(&row[columns.clone()]);
                }
            }
        }
        LIVE_BYTES.fetch_add(size_of_val(panels.as_slice()), Ordering::Relaxed);
        Ok(PackedWeight {
            panels,
            n,
            k,
            transposed,
            depth: Depth::AsHeld,
        })
    }
}

/// Whether the kernel takes a weight of `n` output columns, `k` deep, on
/// this CPU.
pub(super) fn takes(n: usize, k: usize) -> bool {
    n >= MIN_SIDE && k >= MIN_SIDE && available()
}

/// Whether this CPU has the kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Most depth per block. Blocking the depth keeps a tile's activation rows
/// in L1, but each further block reloads and stores the output again:
/// [512,1536]×[384,1536]ᵀ on 2 threads ran at 1.15–1.23× gemm unsplit
/// against 1.04–1.10× in blocks of 256–768 (same minute, alternating with
/// gemm, 30 pairs each), so MiniLM's depths (384, 1536) stay whole.
const DEPTH: usize = 2048;

/// Output columns per block, whose panels the row block's tiles pass in
/// turn while they stay in L2: 64 ran at 1.18–1.23× gemm on 2 threads,
/// 128 at 1.11–1.16×, over MiniLM's shapes.
const COLUMNS: usize = 64;

/// Fewest rows in a block of the product, when it has as many: each block
/// of rows streams its columns' whole weight through the cache, so a
/// product of few rows splits its columns over the threads instead.
const MIN_BLOCK_ROWS: usize = 64;

/// Bytes of activation rows a block of the product takes under a weight
/// larger than this, when it has as many and enough blocks remain for the
/// threads: every block of rows streams such a weight from memory once
/// more (a model's 40 MB of weights do not stay in L3), while a block's rows
/// pass each of its column blocks' panels in turn and so should stay in L2
/// (half of the 2 MiB of the Xeon this was measured on). GPT-2 (6 × 384,
/// 64 tokens, batch 8: 512 rows) over HTTP took 0.90–0.92× the time of
/// blocks of 64 rows, in both orders; blocks of 512 KiB and 2 MiB 1.05×
/// that of 1 MiB; MiniLM at batch 32 within 1%. Under a smaller weight,
/// taller blocks only split the columns finer (MobileNetV2's 1 × 1
/// convolutions ran 1.04–1.05× slower at batch 1).
const BLOCK_BYTES: usize = 1 << 20;

/// Tasks per thread, so that blocks of uneven cost even out.
const TASKS_PER_THREAD: usize = 4;

/// Rows made of runs that lie elsewhere: row `i` is runs `0..runs()` of
/// `k / runs()` elements each, back to back, each read where it lies, or
/// zeros where [`Gathered::row`] has none (a convolution's patch, tap by
/// tap, the taps on padding zeros).
pub(super) trait Gathered: Sync {
    /// Runs per row.
    fn runs(&self) -> usize;
    /// Calls `each(run, elements)` for every run of row `i`, in order,
    /// `None` for zeros.
    fn row<'a>(&'a self, i: usize, each: impl FnMut(usize, Option<&'a [f32]>));
}

/// `out[m × n] = x[m × k] · w` for `w` packed, every element written, split
/// over threads into blocks of rows and columns when `threads`. Under a
/// deadline, each block checks it before it starts.
pub(super) fn product(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    w: &PackedWeight,
    m: usize,
    threads: bool,
) {
    product_at(out, x, w, m, threads, wide_tiles());
}

/// [`product`] on the AVX-512 tile when `wide`, else on the AVX2 one.
fn product_at(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    w: &PackedWeight,
    m: usize,
    threads: bool,
    wide: bool,
) {
    assert!(x.len() >= m * w.k, "packed product out of bounds");
    // SAFETY: the kernel is available (a `PackedWeight` exists only where
    // it is), and AVX-512 where `wide` (the caller found it); the bounds
    // were asserted, and blocks write disjoint elements.
    split(
        out,
        w,
        m,
        threads,
        x86::tile(wide),
        |out, rows, columns| unsafe { x86::block(out, x, w, rows, columns, wide) },
    );
}

/// [`product`] of rows `0..m` of `x`, each `w.k` long, written channels
/// first with a bias and clipped, as a convolution's NCHW output: row
/// `image · plane + position`'s column `c` (plus `bias[c]`, then clipped to
/// `lo..=hi`) to `out[(image · n + c) · plane + position]`, every element
/// written.
pub(super) fn gathered_product(
    out: &mut [MaybeUninit<f32>],
    x: &impl Gathered,
    w: &PackedWeight,
    (m, plane): (usize, usize),
    (bias, clip): (Option<&[f32]>, (f32, f32)),
    threads: bool,
) {
    assert!(
        x.runs() > 0 && w.k.is_multiple_of(x.runs()) && plane > 0 && m.is_multiple_of(plane),
        "a gathered product's runs or planes do not fit"
    );
    assert!(bias.is_none_or(|b| b.len() == w.n), "a bias per column");
    // SAFETY: as in `product`; the runs' lengths are checked as they are
    // read.
    split(
        out,
        w,
        m,
        threads,
        x86::tile(false),
        |out, rows, columns| unsafe {
            x86::gathered(out, x, w, rows, columns, (plane, bias, clip))
        },
    );
}

/// Runs `block(out, rows, columns)` over `out`, `[m × n]`, in blocks of
/// rows and columns (multiples of `tile`'s, the kernel's), on
/// rayon's pool when `threads`, checking the deadline before each block; an
/// empty product is no block, and one of no depth writes zeros.
fn split(
    out: &mut [MaybeUninit<f32>],
    w: &PackedWeight,
    m: usize,
    threads: bool,
    (tile_rows, tile_columns): (usize, usize),
    block: impl Fn(*mut f32, Range<usize>, Range<usize>) + Sync + Send,
) {
    let (n, k) = (w.n, w.k);
    assert!(out.len() >= m * n, "packed product out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(MaybeUninit::new(0.0));
        return;
    }
    let threads = if threads {
        super::parallel::threads()
    } else {
        1
    };
    let tasks = threads * TASKS_PER_THREAD;
    // Capped as gemm's bands are, so that a deadline, checked before each
    // block, cuts a very large product within milliseconds.
    let most = (BAND_WORK / (n * k)).max(MIN_BAND_ROWS);
    // Every block of rows reads its columns' whole weight, so blocks stay
    // tall and the tasks left over split the columns.
    let tall = if n * k * size_of::<f32>() > BLOCK_BYTES {
        BLOCK_BYTES / (k * size_of::<f32>())
    } else {
        0
    };
    // Enough blocks of rows for every thread to have one, where the columns
    // alone give too few.
    let for_threads = m.div_ceil(threads.div_ceil(n.div_ceil(tile_columns)));
    let rows = m
        .div_ceil(tasks)
        .max(tall.min(for_threads))
        .max(MIN_BLOCK_ROWS)
        .min(most);
    let row_blocks = m.div_ceil(rows);
    // Blocks of even height, which rounding to whole tiles may make fewer.
    let rows = m.div_ceil(row_blocks).next_multiple_of(tile_rows);
    let row_blocks = m.div_ceil(rows);
    let columns = n
        .div_ceil((tasks / row_blocks).max(1))
        .next_multiple_of(tile_columns);
    let deadline = deadline::kernel();
    let out = SendPtr(out.as_mut_ptr().cast::<f32>());
    // Blocks of one column block follow each other, so that the threads
    // share its weight in cache.
    let task = move |task: usize| {
        let out = out;
        deadline::stop_if_passed(deadline);
        let (row, column) = (task % row_blocks * rows, task / row_blocks * columns);
        block(
            out.0,
            row..m.min(row + rows),
            column..n.min(column + columns),
        );
    };
    let count = row_blocks * n.div_ceil(columns);
    if threads > 1 {
        for_each_task(count, task);
    } else {
        (0..count).for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::elementwise::clamp;
    use super::{COLUMNS, DEPTH, Gathered, PackedWeight, WIDTH};

    /// Activation rows per tile.
    pub const ROWS: usize = 6;

    /// `$tile.run::<R>()` for its row count `$r`, 1 to [`ROWS`].
    macro_rules! run_rows {
        ($tile:expr, $r:expr) => {
            match $r {
                6 => $tile.run::<6>(),
                5 => $tile.run::<5>(),
                4 => $tile.run::<4>(),
                3 => $tile.run::<3>(),
                2 => $tile.run::<2>(),
                _ => $tile.run::<1>(),
            }
        };
    }

    /// (Rows, columns) of the AVX2 tile, or of the AVX-512 one when `wide`.
    pub fn tile(wide: bool) -> (usize, usize) {
        if wide {
            (WIDE_ROWS, 2 * WIDTH)
        } else {
            (ROWS, WIDTH)
        }
    }

    /// Output rows `rows` and columns `columns` of the product, on the AVX2
    /// tile, or on the AVX-512 one when `wide` ([`Tile::wide_run`]).
    ///
    /// # Safety
    /// AVX2 and FMA are present, and AVX-512F when `wide`; `out` holds
    /// `m × n` floats and `x` `m × k` for `m` at least `rows.end`;
    /// `columns` starts at a multiple of [`WIDTH`] and lies inside `0..n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(
        out: *mut f32,
        x: &[f32],
        w: &PackedWeight,
        rows: Range<usize>,
        columns: Range<usize>,
        wide: bool,
    ) {
        let (tile_rows, tile_columns) = tile(wide);
        let (n, k) = (w.n, w.k);
        let depths = k.div_ceil(DEPTH);
        let depth = k.div_ceil(depths);
        for first in (0..k).step_by(depth) {
            let steps = depth.min(k - first);
            for block in columns.clone().step_by(COLUMNS) {
                let block = block..columns.end.min(block + COLUMNS);
                for i in rows.clone().step_by(tile_rows) {
                    let r = tile_rows.min(rows.end - i);
                    for j in block.clone().step_by(tile_columns) {
                        let tile = Tile {
                            x: x[i * k + first..].as_ptr(),
                            // SAFETY: panel j / 16 at depth `first` is
                            // inside the packed weight; (i, j) inside out.
                            w: w.panels[j / WIDTH * k + first..].as_ptr().cast(),
                            steps,
                            out: unsafe { out.add(i * n + j) },
                            n,
                            k,
                            accumulate: first > 0,
                            width: tile_columns.min(block.end - j),
                        };
                        // SAFETY: the tile lies inside the operands.
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
        }
    }

    /// One tile: activation rows from `x` (rows `k` apart) against one
    /// panel from `w` (two on AVX-512) over `steps` depths, into the first
    /// `width` columns at `out` (rows `n` apart).
    struct Tile {
        x: *const f32,
        w: *const f32,
        steps: usize,
        out: *mut f32,
        n: usize,
        k: usize,
        accumulate: bool,
        width: usize,
    }

    impl Tile {
        /// Runs the tile of `r` rows.
        ///
        /// # Safety
        /// AVX2 and FMA are present and the tile lies inside the operands.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dispatch(&self, r: usize) {
            // SAFETY: forwarded from the caller.
            unsafe { run_rows!(self, r) }
        }

        /// The `R × 16` register tile.
        ///
        /// # Safety
        /// As [`Tile::dispatch`].
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn run<const R: usize>(&self) {
            let Tile {
                x,
                w,
                steps,
                out,
                n,
                k,
                accumulate,
                width,
            } = *self;
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            // SAFETY (all loads): each depth step of the panel is a whole
            // aligned line, and element p of each of the R activation rows
            // is inside x.
            let step = |p: usize, acc: &mut [[__m256; 2]; R]| unsafe {
                let b = w.add(p * WIDTH);
                let (b0, b1) = (_mm256_load_ps(b), _mm256_load_ps(b.add(8)));
                for r in 0..R {
                    let a = _mm256_broadcast_ss(&*x.add(r * k + p));
                    acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
                }
            };
            each_step(steps, |p| step(p, &mut acc));
            for r in 0..R {
                // SAFETY: row r of the tile holds `width` floats of out,
                // written by an earlier depth block when `accumulate`; a
                // narrow tile goes through a line on the stack.
                unsafe {
                    let row = out.add(r * n);
                    let mut line = [0.0f32; WIDTH];
                    let dst = if width == WIDTH {
                        row
                    } else {
                        if accumulate {
                            std::ptr::copy_nonoverlapping(row, line.as_mut_ptr(), width);
                        }
                        line.as_mut_ptr()
                    };
                    for v in 0..2 {
                        let at = dst.add(8 * v);
                        let sum = if accumulate {
                            _mm256_add_ps(acc[r][v], _mm256_loadu_ps(at))
                        } else {
                            acc[r][v]
                        };
                        _mm256_storeu_ps(at, sum);
                    }
                    if width < WIDTH {
                        std::ptr::copy_nonoverlapping(line.as_ptr(), row, width);
                    }
                }
            }
        }
    }

    /// Calls `step(p)` for each depth step `p` of `0..steps` in order, four
    /// to a loop iteration: both register tiles' depth loop.
    #[inline(always)]
    fn each_step(steps: usize, mut step: impl FnMut(usize)) {
        let mut p = 0;
        while p + 4 <= steps {
            for u in 0..4 {
                step(p + u);
            }
            p += 4;
        }
        while p < steps {
            step(p);
            p += 1;
        }
    }

    /// Activation rows per tile of the AVX-512 kernel.
    pub const WIDE_ROWS: usize = 12;

    impl Tile {
        /// Runs the AVX-512 tile of `r` rows ([`WIDE_ROWS`] at most), over
        /// as many panels as it is wide (`width` up to 32 columns, the
        /// second panel `k` depth steps after the first).
        ///
        /// # Safety
        /// AVX-512F is present and the tile lies inside the operands.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide_dispatch(&self, r: usize) {
            macro_rules! rows {
                ($p:literal) => {
                    match r {
                        12 => self.wide_run::<12, $p>(),
                        11 => self.wide_run::<11, $p>(),
                        10 => self.wide_run::<10, $p>(),
                        9 => self.wide_run::<9, $p>(),
                        8 => self.wide_run::<8, $p>(),
                        7 => self.wide_run::<7, $p>(),
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
            unsafe {
                if self.width > WIDTH {
                    rows!(2)
                } else {
                    rows!(1)
                }
            }
        }

        /// The `R × 16P` register tile on AVX-512: 12 rows by two panels keep
        /// 24 of the 32 vector registers accumulating, so each depth step is
        /// 24 multiply-adds of 16 lanes for 2 panel loads and 12 broadcasts,
        /// where the AVX2 tile does 12 of 8 lanes for 2 and 6. Each output
        /// element still sums its depth in order, one fused multiply-add at
        /// a time: the same bits as [`Tile::run`].
        ///
        /// # Safety
        /// As [`Tile::wide_dispatch`], with `P` panels inside the weight.
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[inline]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn wide_run<const R: usize, const P: usize>(&self) {
            let Tile {
                x,
                w,
                steps,
                out,
                n,
                k,
                accumulate,
                width,
            } = *self;
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            // SAFETY (all loads): each depth step of a panel is a whole
            // aligned line, and element p of each of the R activation rows
            // is inside x.
            let step = |p: usize, acc: &mut [[__m512; P]; R]| unsafe {
                let b: [__m512; P] =
                    std::array::from_fn(|v| _mm512_load_ps(w.add((v * k + p) * WIDTH)));
                for r in 0..R {
                    let a = _mm512_set1_ps(*x.add(r * k + p));
                    for v in 0..P {
                        acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
                    }
                }
            };
            each_step(steps, |p| step(p, &mut acc));
            for r in 0..R {
                for v in 0..P {
                    // SAFETY: the lanes the mask keeps are row r's columns
                    // of out, written by an earlier depth block when
                    // `accumulate`.
                    unsafe {
                        let at = out.add(r * n + v * WIDTH);
                        let lanes = width.saturating_sub(v * WIDTH).min(WIDTH);
                        let mask = (1u32 << lanes).wrapping_sub(1) as __mmask16;
                        let sum = if accumulate {
                            _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(mask, at))
                        } else {
                            acc[r][v]
                        };
                        _mm512_mask_storeu_ps(at, mask, sum);
                    }
                }
            }
        }
    }

    /// Output rows `rows` and channels `columns` of a
    /// [`super::gathered_product`], written channels first: row `image ·
    /// plane + position`'s output channel `c` to `out[(image · n + c) ·
    /// plane + position]`, plus `bias[c]`, clipped to `clip`. Each tile
    /// reads its rows where their runs lie and sums all runs in registers;
    /// nothing is packed.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `out` holds `m × n` floats for `m` at
    /// least `rows.end`, a multiple of `plane`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gathered(
        out: *mut f32,
        x: &impl Gathered,
        w: &PackedWeight,
        rows: Range<usize>,
        columns: Range<usize>,
        (plane, bias, clip): (usize, Option<&[f32]>, (f32, f32)),
    ) {
        let (n, k, runs) = (w.n, w.k, x.runs());
        let len = k / runs;
        let zeros = vec![0.0f32; len.max(WIDTH)];
        // Where each run of the tile's rows starts.
        let mut starts = vec![[zeros.as_ptr(); ROWS]; runs];
        for block in columns.clone().step_by(COLUMNS) {
            let block = block..columns.end.min(block + COLUMNS);
            for i in rows.clone().step_by(ROWS) {
                let r = ROWS.min(rows.end - i);
                for (t, row) in (i..i + r).enumerate() {
                    x.row(row, |run, elements| {
                        starts[run][t] = match elements {
                            Some(elements) => {
                                assert_eq!(elements.len(), len, "a gathered run's length");
                                elements.as_ptr()
                            }
                            None => zeros.as_ptr(),
                        };
                    });
                }
                for j in block.clone().step_by(WIDTH) {
                    let width = WIDTH.min(n - j);
                    let tile = Gather {
                        starts: &starts,
                        len,
                        w: w.panels[j / WIDTH * k..].as_ptr().cast(),
                        // SAFETY: row i + t is inside out, at channel j.
                        outs: std::array::from_fn(|t| {
                            let row = i + t.min(r - 1);
                            unsafe { out.add(((row / plane) * n + j) * plane + row % plane) }
                        }),
                        plane,
                        bias: match bias {
                            Some(b) => &b[j..j + width],
                            None => &zeros[..width],
                        },
                        clip,
                    };
                    // SAFETY: each of the r rows' runs holds `len` floats,
                    // and the panel all `runs · len` depths.
                    unsafe { run_rows!(tile, r) }
                }
            }
        }
    }

    /// One tile of a gathered product: up to [`ROWS`] rows, each `runs`
    /// runs of `len` elements starting at `starts[run][r]`, against the
    /// panel at `w` (all the runs' depths, back to back), into `bias.len()`
    /// channels `plane` apart from each row's `outs[r]`, clipped to `clip`.
    struct Gather<'a> {
        starts: &'a [[*const f32; ROWS]],
        len: usize,
        w: *const f32,
        outs: [*mut f32; ROWS],
        plane: usize,
        bias: &'a [f32],
        clip: (f32, f32),
    }

    impl Gather<'_> {
        /// The `R × 16` register tile, summed over every run, then written.
        ///
        /// # Safety
        /// AVX2 and FMA are present and the tile lies inside the operands.
        #[target_feature(enable = "avx2,fma")]
        // A register tile reads best indexed by its row and vector.
        #[allow(clippy::needless_range_loop)]
        unsafe fn run<const R: usize>(&self) {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for (run, starts) in self.starts.iter().enumerate() {
                let w = unsafe { self.w.add(run * self.len * WIDTH) };
                // SAFETY (all loads): each depth step of the panel is a
                // whole aligned line, and element p of each of the R rows'
                // runs is inside it.
                let step = |p: usize, acc: &mut [[__m256; 2]; R]| unsafe {
                    let b = w.add(p * WIDTH);
                    let (b0, b1) = (_mm256_load_ps(b), _mm256_load_ps(b.add(8)));
                    for r in 0..R {
                        let a = _mm256_broadcast_ss(&*starts[r].add(p));
                        acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
                    }
                };
                let mut p = 0;
                while p + 4 <= self.len {
                    for u in 0..4 {
                        step(p + u, &mut acc);
                    }
                    p += 4;
                }
                while p < self.len {
                    step(p, &mut acc);
                    p += 1;
                }
            }
            let mut lines = [[0.0f32; WIDTH]; R];
            for r in 0..R {
                // SAFETY: a line holds two vectors.
                unsafe {
                    _mm256_storeu_ps(lines[r].as_mut_ptr(), acc[r][0]);
                    _mm256_storeu_ps(lines[r].as_mut_ptr().add(8), acc[r][1]);
                }
            }
            for (c, &b) in self.bias.iter().enumerate() {
                for r in 0..R {
                    // SAFETY: channel c of row r is inside out.
                    unsafe {
                        *self.outs[r].add(c * self.plane) = clamp(lines[r][c] + b, self.clip)
                    };
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub fn tile(_: bool) -> (usize, usize) {
        unreachable!("the packed kernel is only available on x86_64")
    }

    pub unsafe fn block(
        _: *mut f32,
        _: &[f32],
        _: &super::PackedWeight,
        _: std::ops::Range<usize>,
        _: std::ops::Range<usize>,
        _: bool,
    ) {
        unreachable!("the packed kernel is only available on x86_64")
    }

    pub unsafe fn gathered(
        _: *mut f32,
        _: &impl super::Gathered,
        _: &super::PackedWeight,
        _: std::ops::Range<usize>,
        _: std::ops::Range<usize>,
        _: (usize, Option<&[f32]>, (f32, f32)),
    ) {
        unreachable!("the packed kernel is only available on x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::super::skinny::Weight;
    use super::super::skinny::tests::{assert_matches, reference, values};
    use super::*;

    /// Every tile height, narrow last panel, ragged column block, depth
    /// block and thread split agrees with the plain product, for weights of
    /// either layout.
    #[test]
    fn packed_products_match_the_plain_product() {
        if !available() {
            return;
        }
        let sizes = [1, 5, 6, 7, 13, 130, 251].into_iter().flat_map(|m| {
            [1, 15, 16, 17, 129, 300].into_iter().flat_map(move |n| {
                [1, 3, 4, 9, 512, 700, 1100]
                    .into_iter()
                    .map(move |k| (m, n, k))
            })
        });
        // Depths past one block, whose later blocks add to the output.
        let deep = [(13, 17, DEPTH + 3), (130, 70, 2 * DEPTH + 1)];
        for (m, n, k) in sizes.chain(deep) {
            for transposed in [true, false] {
                let x = values(m * k, 1);
                let w = values(n * k, 2);
                let packed = PackedWeight::pack(&w, (n, k), transposed).expect("pack");
                let weight = Weight {
                    data: &w,
                    transposed,
                };
                let expected = reference(&x, weight, (m, n, k));
                let mut first: Option<Vec<u32>> = None;
                for (threads, wide) in tiles() {
                    let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
                    product_at(&mut out, &x, &packed, m, threads, wide);
                    let case = format!(
                        "m={m} n={n} k={k} transposed={transposed} threads={threads} wide={wide}"
                    );
                    assert_matches(&out, &expected, k, &case);
                    // Both tiles, split or not, sum each element alike.
                    // SAFETY: every element was written.
                    let bits = out.iter().map(|v| unsafe { v.assume_init() }.to_bits());
                    let bits: Vec<u32> = bits.collect();
                    assert_eq!(first.get_or_insert_with(|| bits.clone()), &bits, "{case}");
                }
            }
        }
    }

    /// Every (threads, wide) the kernel runs with on this CPU: the AVX-512
    /// tile only where the CPU has it.
    fn tiles() -> Vec<(bool, bool)> {
        let widths = super::super::parallel::tile_widths();
        widths.flat_map(|w| [(false, w), (true, w)]).collect()
    }

    /// A weight is packed once and kept: a second product, a clone's and a
    /// reshaped view's (the same bytes) reuse the packing; the other layout
    /// and a tensor that is no weight get their own each time; too narrow a
    /// product gets none.
    #[test]
    fn a_weight_is_packed_once_per_tensor() {
        if !available() {
            return;
        }
        let (n, k) = (96, 80);
        let data = values(n * k, 5);
        let b = Tensor::from_f32(&[n, k], data.clone())
            .expect("tensor")
            .into_weight();
        let of = |b: &Tensor, transposed| {
            PackedWeight::of(b, || Ok(Cow::Borrowed(&data)), (n, k), transposed)
                .expect("pack")
                .expect("packed")
        };
        let first = of(&b, true);
        assert!(Arc::ptr_eq(&first, &of(&b, true)), "packed again");
        assert!(
            Arc::ptr_eq(&first, &of(&b.clone(), true)),
            "a clone packed again"
        );
        assert!(
            Arc::ptr_eq(&first, &of(&b.with_shape(&[1, n, k]), true)),
            "a reshaped view packed again"
        );
        let activation = Tensor::from_f32(&[n, k], data.clone()).expect("tensor");
        let once = of(&activation, true);
        assert!(
            !Arc::ptr_eq(&once, &of(&activation, true)),
            "a non-weight kept"
        );
        let other = of(&b, false);
        assert!(
            !other.transposed && first.transposed,
            "the other layout reused"
        );
        // Other tests pack at the same time, so the count can only be
        // bounded below.
        assert!(packed_weight_bytes() >= 3 * n.div_ceil(WIDTH) * WIDTH * k * 4);
        let narrow = PackedWeight::of(&b, || Ok(Cow::Borrowed(&data)), (MIN_SIDE - 1, k), true)
            .expect("pack");
        assert!(narrow.is_none(), "a narrow product packed");
    }

    /// A slice of a weight that shares its bytes (a handler's view of one
    /// direction of an LSTM's weight, per request) is a weight, whose
    /// packing is kept for its part of the bytes: a second view of the same
    /// part reuses it, a view of another part does not.
    #[test]
    fn a_part_of_a_weight_keeps_its_own_packing() {
        if !available() {
            return;
        }
        let (n, k) = (96, 80);
        let data = values(2 * n * k, 7);
        let b = Tensor::from_f32(&[2, n, k], data.clone())
            .expect("tensor")
            .into_weight();
        let part = |d: usize| {
            let view = super::super::layout::slice(&b, 0, d, &[1, n, k]).expect("slice");
            view.with_shape(&[n, k])
        };
        let of = |t: &Tensor, d: usize| {
            let rows = &data[d * n * k..(d + 1) * n * k];
            PackedWeight::of(t, || Ok(Cow::Borrowed(rows)), (n, k), true)
                .expect("pack")
                .expect("packed")
        };
        assert!(part(1).is_weight(), "a part of a weight is no weight");
        let first = of(&part(1), 1);
        assert!(
            Arc::ptr_eq(&first, &of(&part(1), 1)),
            "the same part packed again"
        );
        let other = of(&part(0), 0);
        assert!(!Arc::ptr_eq(&first, &other), "two parts share a packing");
        assert!(
            Arc::ptr_eq(&other, &of(&part(0), 0)),
            "the other part packed again"
        );
    }

    /// A model's weight is packed, and kept, by a product of more than 32
    /// rows ([`MIN_WEIGHT_ROWS`]), or of 16 where the AVX-512 tiles run,
    /// and not by fewer.
    #[test]
    fn a_model_weight_is_packed_and_kept_from_its_least_rows() {
        if !available() {
            return;
        }
        use crate::Backend;
        let (n, k) = (96, 80);
        let ops = super::super::CpuBackend::new();
        let packed_by = |rows: usize, b: &Tensor| {
            let x = Tensor::from_f32(&[rows, k], values(rows * k, 6)).expect("x");
            ops.ops().matmul(&x, b, true).expect("matmul");
            let mut made = false;
            PackedWeight::of(
                b,
                || {
                    made = true;
                    Ok(Cow::Owned(values(n * k, 7)))
                },
                (n, k),
                true,
            )
            .expect("pack");
            !made
        };
        let weight = || {
            Tensor::from_f32(&[n, k], values(n * k, 7))
                .expect("w")
                .into_weight()
        };
        let least = if wide_tiles() { 16 } else { 33 };
        assert!(!packed_by(least - 1, &weight()));
        assert!(packed_by(least, &weight()));
    }

    /// A convolution's packing orders its depth channels last, and is never
    /// taken for a product's packing of the same tensor, nor the reverse.
    #[test]
    fn a_convolution_weight_is_packed_channels_last() {
        if !available() {
            return;
        }
        let (o, c, kh, kw) = (70, 5, 4, 4);
        let k = c * kh * kw;
        let data = values(o * k, 6);
        let b = Tensor::from_f32(&[o, c, kh, kw], data.clone())
            .expect("tensor")
            .into_weight();
        let conv = |b: &Tensor| {
            PackedWeight::of_conv(b, (o, c, kh, kw))
                .expect("pack")
                .expect("packed")
        };
        let first = conv(&b);
        assert!(Arc::ptr_eq(&first, &conv(&b)), "packed again");
        // Output column j at depth (ky, kx, ci) is w[j, ci, ky, kx].
        for (j, ci, ky, kx) in [(0, 0, 0, 0), (17, 3, 2, 1), (69, 4, 3, 3)] {
            let depth = (ky * kw + kx) * c + ci;
            let lanes = first.panels[j / WIDTH * k + depth].0;
            let held = data[((j * c + ci) * kh + ky) * kw + kx];
            assert_eq!(lanes[j % WIDTH], held, "column {j} tap {ci},{ky},{kx}");
        }
        let product = PackedWeight::of(&b, || Ok(Cow::Borrowed(&data)), (o, k), true)
            .expect("pack")
            .expect("packed");
        assert_eq!(
            product.depth,
            Depth::AsHeld,
            "the convolution's packing taken"
        );
        assert_eq!(
            conv(&b).depth,
            Depth::ChannelsLast,
            "the product's packing taken"
        );
    }
}
