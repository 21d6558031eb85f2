//! Splitting kernels across rayon's pool and compiling their loops for the
//! widest vector units the CPU has.

use rayon::prelude::*;

use crate::deadline;

/// An output pointer shared by tasks that write disjoint elements of it
/// (the column blocks of [`super::matmul`]'s split products, the row ranges
/// of [`super::skinny`] and [`super::panels`]).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: every user hands each task its own elements.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Work (in element operations) below which splitting across threads costs
/// more than it saves.
pub(super) const PARALLEL_WORK: usize = 1 << 15;

/// Runs `f(first_row, rows)` over `out` cut into rows of `row_len` elements,
/// on rayon's pool when `rows × cost_per_row` is worth it. Each call gets a
/// whole number of rows, so kernels keep their inner loops contiguous.
///
/// The chunks `f` is called on are disjoint and together cover all of
/// `out` (a non-empty `out` needs a non-zero `row_len`): callers that fill
/// every row they are handed rely on this to treat `out` as initialised
/// afterwards (see [`written`]). Past the request's deadline the kernel
/// unwinds between chunks instead ([`deadline`]), and `out` is never read.
pub(super) fn for_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    cost_per_row: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if row_len == 0 || out.is_empty() {
        // Returning here covers nothing, which is only whole when `out` is
        // empty.
        debug_assert!(row_len > 0 || out.is_empty(), "for_rows: empty rows");
        return;
    }
    let rows = out.len() / row_len;
    let threads = rayon::current_num_threads();
    let work = rows.saturating_mul(cost_per_row.max(1));
    // Captured here: rayon's workers do not see this thread's request.
    let deadline = deadline::kernel();
    if rows < 2 || work < PARALLEL_WORK || (threads <= 1 && deadline.is_none()) {
        with_simd(
            #[inline(always)]
            || f(0, out),
        );
        return;
    }
    // A few chunks per thread even out uneven rows without drowning in
    // tasks; capping a chunk's work keeps the deadline checks between
    // chunks frequent in a very large operation.
    let per_task = rows
        .div_ceil(threads * 4)
        .min((CHUNK_WORK / cost_per_row.max(1)).max(1));
    let chunk = |(i, chunk): (usize, &mut [T])| {
        deadline::stop_if_passed(deadline);
        with_simd(
            #[inline(always)]
            || f(i * per_task, chunk),
        )
    };
    if threads <= 1 {
        out.chunks_mut(per_task * row_len)
            .enumerate()
            .for_each(chunk);
    } else {
        out.par_chunks_mut(per_task * row_len)
            .enumerate()
            .for_each(chunk);
    }
}

/// Most work (in element operations) in one chunk of [`for_rows`]: a few
/// milliseconds, the longest a kernel runs past its request's deadline.
const CHUNK_WORK: usize = 1 << 24;

/// Runs `f` compiled for AVX2 and FMA when the CPU has them, so the loops
/// inlined into it vectorize 8 wide instead of the baseline's 4 (x86_64
/// builds target SSE2 unless told otherwise).
///
/// Only code inlined into `f` is compiled that way, hence the
/// `#[inline(always)]` on the closures compute kernels hand to [`for_rows`]
/// and on their helpers. Rust never fuses `a * b + c` on its own, so both
/// paths round identically.
#[inline(always)]
pub(super) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU was just checked to have the enabled features.
        return unsafe { wide(f) };
    }
    f()
}

/// Elementwise kernels over a flat buffer, cut into blocks this long so
/// parallel splitting stays coarse.
pub(super) const BLOCK: usize = 4096;
