//! Matrix products: on the `gemm` crate for conv2d, attention and batched
//! matmuls, and for a linear layer (one weight under every row) on the
//! kernel its number of rows calls for.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use gemm::Parallelism;

use super::buffers::{float_tensor, floats, uninit, written};
use super::packed::{self, PackedWeight};
use super::panels;
use super::parallel::{SendPtr, for_each_block, for_rows};
use super::skinny::{self, Weight};
use crate::deadline;
use crate::shape::MatmulPlan;
use crate::{Result, Tensor};

/// m·n·k below which gemm's own threading costs more than it saves.
/// Measured with `examples/cpu_bench.rs` on a 2-thread AVX2 machine: one
/// thread and two are even at 64³, one is faster at 96³ and two win from
/// 128³ on.
const PARALLEL_GEMM: usize = 112 * 112 * 112;

/// Multiply-adds in one band of a product run under a deadline: a few
/// milliseconds on two cores.
pub(super) const BAND_WORK: usize = 1 << 27;

/// Fewest rows in a band, so that re-packing the rhs stays cheap.
pub(super) const MIN_BAND_ROWS: usize = 64;

/// A read-only strided matrix: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(super) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with rows `rs` elements apart.
    pub fn rows(data: &'a [f32], rs: usize) -> MatRef<'a> {
        MatRef { data, rs, cs: 1 }
    }

    /// Checks that every element of a non-empty `rows × cols` view lies in
    /// `data`; this is what makes the raw-pointer call to gemm sound.
    fn check(&self, rows: usize, cols: usize) {
        let last = (rows - 1)
            .checked_mul(self.rs)
            .zip((cols - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c));
        assert!(
            last.is_some_and(|l| l < self.data.len()),
            "matrix view out of bounds"
        );
    }
}

/// Whether gemm should spread an `m × n × k` product over threads.
pub(super) fn threaded(m: usize, n: usize, k: usize) -> bool {
    m.saturating_mul(n).saturating_mul(k) >= PARALLEL_GEMM && super::parallel::threads() > 1
}

/// Where a product goes.
pub(super) enum Dst<'a> {
    /// Uninitialised memory: every element of the product is written, none
    /// read.
    Fresh(&'a mut [MaybeUninit<f32>]),
    /// Initialised memory, overwritten.
    Overwrite(&'a mut [f32]),
}

/// `scale · lhs × rhs` for an `m × k` lhs and a `k × n` rhs (`dims` is
/// `(m, n, k)`) into the `m` rows of `n` of `dst`, rows `dst_rs` apart.
pub(super) fn gemm(
    dst: Dst<'_>,
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    threads: bool,
) {
    // SAFETY (of `uninit`): gemm only ever stores initialised floats.
    let dst = match dst {
        Dst::Fresh(dst) => dst,
        Dst::Overwrite(dst) => unsafe { uninit(dst) },
    };
    if m == 0 || n == 0 {
        return;
    }
    let end = (m - 1).checked_mul(dst_rs).and_then(|r| r.checked_add(n));
    assert!(
        n <= dst_rs && end.is_some_and(|e| e <= dst.len()),
        "gemm destination out of bounds"
    );
    if k == 0 {
        for row in dst.chunks_mut(dst_rs).take(m) {
            row[..n].fill(MaybeUninit::new(0.0));
        }
        return;
    }
    lhs.check(m, k);
    rhs.check(k, n);
    // Under a deadline, a large product runs as bands of rows with a
    // deadline check before each (a band re-packs the rhs, which costs
    // about 1/rows of its work).
    let deadline = deadline::kernel();
    let rows = if deadline.is_some() && m.saturating_mul(n).saturating_mul(k) > BAND_WORK {
        (BAND_WORK / n.saturating_mul(k).max(1)).max(MIN_BAND_ROWS)
    } else {
        m
    };
    for first in (0..m).step_by(rows) {
        deadline::stop_if_passed(deadline);
        let band = rows.min(m - first);
        let lhs = MatRef {
            data: &lhs.data[first * lhs.rs..],
            ..lhs
        };
        let dst = &mut dst[first * dst_rs..];
        // SAFETY: the band's views are tails of the views checked above,
        // cut at its first row, so its rows lie within them.
        unsafe { gemm_band(dst, dst_rs, (band, n, k), lhs, rhs, scale, threads) };
    }
}

/// [`gemm`] of one band of `m` rows.
///
/// Threaded, it splits the product into blocks of output columns, one per
/// thread, each a single-threaded gemm, rather than using gemm's own
/// threading: gemm repacks a `[n, k]` weight (the `transpose_b` side) on
/// the calling thread alone before its threads start, once per depth block,
/// and meanwhile the other threads wait. Split by columns, each thread
/// packs its own block of the weight (bench/RESULTS.md, session 15: MiniLM
/// at batch 32 over HTTP took 0.80–0.82× the time). A product with too
/// few columns for that (a 7×7 convolution's 49) is split by rows instead,
/// also on the calling thread and the pool's
/// ([`for_each_task`](super::parallel::for_each_task)), where
/// gemm's own threading left the calling thread asleep (MobileNetV2,
/// bench/RESULTS.md, "Session 47").
///
/// # Safety
///
/// Every element of the `m × n` destination (rows `dst_rs` apart), of the
/// `m × k` lhs and of the `k × n` rhs view must lie in its slice.
unsafe fn gemm_band(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    threads: bool,
) {
    let tasks = if threads {
        super::parallel::threads().min(n / MIN_SPLIT_COLUMNS)
    } else {
        1
    };
    let dst = SendPtr(dst.as_mut_ptr().cast::<f32>());
    // SAFETY (of every call below): the caller vouches for the three views
    // and a block's views are parts of them; `dst` was borrowed mutably, so
    // it cannot alias the shared inputs, and blocks write disjoint parts of
    // it.
    let product = move |rows: Range<usize>, columns: Range<usize>| unsafe {
        // The whole pointer, not its field: the wrapper is what is Sync.
        let dst = dst;
        let lhs = MatRef {
            data: &lhs.data[rows.start * lhs.rs..],
            ..lhs
        };
        let rhs = MatRef {
            data: &rhs.data[columns.start * rhs.cs..],
            ..rhs
        };
        single_gemm(
            dst.0.add(rows.start * dst_rs + columns.start),
            dst_rs,
            (rows.len(), columns.len(), k),
            lhs,
            rhs,
            scale,
        )
    };
    if tasks > 1 {
        // Whole vectors of columns per block, so each block's stores stay
        // aligned to the rows'.
        let width = n.div_ceil(tasks).next_multiple_of(16);
        for_each_block(n, width, |columns| product(0..m, columns));
        return;
    }
    let rows = if threads { split_rows(m) } else { m };
    if rows >= m {
        product(0..m, 0..n);
        return;
    }
    // Too few columns to split: blocks of rows instead, each thread with
    // its share of the lhs and the whole (narrow) rhs.
    for_each_block(m, rows, |band| product(band, 0..n));
}

/// Rows of each block where [`gemm_band`] splits a narrow product by rows:
/// a thread's share, whole microkernel tiles of 16 rows (`m` itself where
/// a share would be under a tile).
fn split_rows(m: usize) -> usize {
    let share = m.div_ceil(super::parallel::threads()).next_multiple_of(16);
    if share >= m { m } else { share }
}

/// Fewest output columns a thread takes in [`gemm_band`]'s column split;
/// narrower products keep gemm's own threading, which splits rows too.
const MIN_SPLIT_COLUMNS: usize = 64;

/// One call to gemm: `scale · lhs × rhs` into `dst`.
///
/// # Safety
///
/// As for [`gemm_band`], for these views.
unsafe fn single_gemm(
    dst: *mut f32,
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
) {
    // SAFETY: the caller vouches for the views, and the strides fit isize
    // because they index existing slices. With `read_dst` false gemm
    // stores every destination element without loading it first, so
    // uninitialised memory is fine.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// The batched product `a · b` (`s` from [`crate::shape::matmul`]), with
/// `finish` applied to every block of whole output rows (`s.n` elements
/// each) right after gemm writes it, while it is still in cache; `op` names
/// the operation in errors.
pub(super) fn matmul_with(
    a: &Tensor,
    b: &Tensor,
    s: &MatmulPlan,
    op: &str,
    finish: impl Fn(&mut [f32]) + Sync,
) -> Result<Tensor> {
    let x = floats(op, a)?;
    let (m, n, k) = (s.m, s.n, s.k);
    let total = s.batch * m * n;
    if total == 0 {
        return float_tensor(a.dtype(), &s.out_shape, Vec::new());
    }
    let packed_weight = if s.folds_into_one() && s.batch * m >= packed::min_rows(b) {
        PackedWeight::of(b, || floats(op, b), (n, k), s.transpose_b)?
    } else {
        None
    };
    // A packed weight serves the product alone, so a kept one spares
    // reading (for f16, widening) the whole weight on every call.
    let y = match packed_weight {
        Some(_) => Cow::Borrowed(&[][..]),
        None => floats(op, b)?,
    };
    // Reading b through strides makes transpose_b free.
    let rhs_at = |index: usize| {
        let data = &y[index * k * n..(index + 1) * k * n];
        if s.transpose_b {
            MatRef { data, rs: 1, cs: k }
        } else {
            MatRef::rows(data, n)
        }
    };
    let lhs_at = |index: usize| MatRef::rows(&x[index * m * k..(index + 1) * m * k], k);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        if s.folds_into_one() {
            // One shared weight matrix under consecutive activations (a
            // linear layer over [batch, seq, k]): one tall product, a
            // model's weight packed once above 32 rows, or from 16 on the
            // AVX-512 tiles (another tensor per call above 128), read in
            // place below (by the panel kernel from 32 rows, the skinny
            // ones below), else (on a CPU without those kernels) by gemm.
            let rows = s.batch * m;
            let threads = threaded(rows, n, k);
            let x = &x[..rows * k];
            let done = if let Some(w) = &packed_weight {
                packed::product(out, x, w, rows, threads);
                true
            } else {
                let weight = Weight {
                    data: &y[..k * n],
                    transposed: s.transpose_b,
                };
                (s.transpose_b && panels::product(out, x, weight.data, (rows, n, k), threads))
                    || skinny::product(out, x, weight, (rows, n, k), threads)
            };
            if !done {
                let lhs = MatRef::rows(x, k);
                gemm(
                    Dst::Fresh(out),
                    n,
                    (rows, n, k),
                    lhs,
                    rhs_at(0),
                    1.0,
                    threads,
                );
            }
            // SAFETY: the product has just written all of `out`.
            finish(unsafe { out.assume_init_mut() });
        } else if threaded(m, n, k) || s.batch == 1 {
            for (index, dst) in out.chunks_exact_mut(m * n).enumerate() {
                let (ia, ib) = s.operands(index);
                let (lhs, rhs) = (lhs_at(ia), rhs_at(ib));
                gemm(
                    Dst::Fresh(dst),
                    n,
                    (m, n, k),
                    lhs,
                    rhs,
                    1.0,
                    threaded(m, n, k),
                );
                // SAFETY: gemm has just written all of `dst`.
                finish(unsafe { dst.assume_init_mut() });
            }
        } else {
            // Many small products: one thread per group of whole products.
            for_rows(out, m * n, m * n * k, |first, chunk| {
                for (i, dst) in chunk.chunks_exact_mut(m * n).enumerate() {
                    let (ia, ib) = s.operands(first + i);
                    let (lhs, rhs) = (lhs_at(ia), rhs_at(ib));
                    gemm(Dst::Fresh(dst), n, (m, n, k), lhs, rhs, 1.0, false);
                    // SAFETY: gemm has just written all of `dst`.
                    finish(unsafe { dst.assume_init_mut() });
                }
            });
        }
    };
    // SAFETY: every branch writes all `batch` products of `m × n`, each
    // with rows exactly `n` apart, so every element is written.
    let out = unsafe { written(total, fill) }?;
    float_tensor(a.dtype(), &s.out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::super::skinny::Weight;
    use super::super::skinny::tests::{reference, values};
    use super::*;

    /// Split by columns (on a pool of three, blocks of uneven width and a
    /// last one narrower than the rest; from outside the pool, as a request
    /// calls, over the global pool and the calling thread) or left to gemm's
    /// threads, a product lands in its own columns of a wider destination
    /// and leaves the columns past it alone.
    #[test]
    fn threaded_products_write_each_column_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let (m, k) = (150, 300);
        for n in [49, 64, 130, 200, 333] {
            for (transposed, on_worker) in [(true, true), (false, true), (true, false)] {
                let x = values(m * k, 3);
                let data = values(n * k, 4);
                let w = Weight {
                    data: &data,
                    transposed,
                };
                let rhs = if transposed {
                    MatRef {
                        data: &data,
                        rs: 1,
                        cs: k,
                    }
                } else {
                    MatRef::rows(&data, n)
                };
                let stride = n + 5;
                let mut dst = vec![0.5f32; m * stride];
                let out = Dst::Overwrite(&mut dst);
                let dims = (m, n, k);
                let run = || gemm(out, stride, dims, MatRef::rows(&x, k), rhs, 1.0, true);
                if on_worker {
                    pool.install(run);
                } else {
                    run();
                }
                let expected = reference(&x, w, (m, n, k));
                for (r, row) in dst.chunks(stride).enumerate() {
                    for (c, &got) in row.iter().enumerate() {
                        let want = match expected.get(r * n + c) {
                            Some(&p) if c < n => p,
                            _ => 0.5,
                        };
                        assert!(
                            (got - want).abs() <= 1e-3,
                            "n={n} transposed={transposed} on_worker={on_worker}: \
                             ({r}, {c}) is {got}, want {want}"
                        );
                    }
                }
            }
        }
    }
}
