//! Splitting kernels across rayon's pool and compiling their loops for the
//! widest vector units the CPU has.

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::placement;
use crate::deadline;

/// A pointer into an output shared by tasks that write disjoint elements of
/// it (the chunks of [`for_rows`], the column blocks of
/// [`super::matmul`]'s split products, the row ranges of [`super::skinny`]
/// and [`super::panels`]).
pub(super) struct SendPtr<T>(pub(super) *mut T);
// Not derived: a derive would ask `T: Copy` of a mere pointer.
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: every user hands each task its own elements.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// The compute threads [`use_threads`] set: each call's own thread and the
/// pool's workers together; 0 until it is called.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Runs the CPU kernels on `threads` threads: the thread that calls an
/// operation and `threads − 1` workers of rayon's global pool, which this
/// builds (at least one worker, which a single thread leaves idle). Call it
/// before anything uses the pool; it fails if something already has.
///
/// The calling thread takes its share of every split operation
/// ([`for_each_task`]), so a pool with a worker per core leaves one more
/// thread than cores: on two cores the idle worker's spinning took a tenth
/// of MobileNetV2's CPU time at batch 1, in 15 times as many context
/// switches (bench/RESULTS.md, "Session 47"). While one operation at a
/// time is split, the workers this builds keep off its caller's core
/// (`placement`). Unset, kernels split over the pool's size and the caller
/// runs beside it.
pub fn use_threads(threads: std::num::NonZeroUsize) -> Result<(), rayon::ThreadPoolBuildError> {
    placement::remember_cpus();
    rayon::ThreadPoolBuilder::new()
        .num_threads((threads.get() - 1).max(1))
        .thread_name(|i| format!("edgeserve-cpu-{i}"))
        .start_handler(|_| placement::register_worker())
        .build_global()?;
    THREADS.store(threads.get(), Ordering::Relaxed);
    Ok(())
}

/// How many threads an operation called on this thread splits its work
/// over: [`use_threads`]' count off the pool (the caller and the workers),
/// the pool's size on one of its workers or where it was never set.
pub fn threads() -> usize {
    let pool = rayon::current_num_threads();
    match THREADS.load(Ordering::Relaxed) {
        0 => pool,
        _ if rayon::current_thread_index().is_some() => pool,
        set => set,
    }
}

/// Runs `task(i)` for every `i` in `0..tasks`, each once, on the calling
/// thread and up to [`threads`]` − 1` of rayon's workers, and returns when
/// all have finished; a task's panic resumes here once they have.
///
/// The calling thread takes tasks too, from the same counter as the
/// workers, instead of handing all of them to the pool and sleeping until
/// they are done, as `rayon::scope` does from outside the pool. A request's
/// thread thus never waits for a sleeping worker to wake: tasks no worker
/// has claimed yet it runs itself. Waking and sleeping per operation cost a
/// third of a batch-1 transformer request's samples
/// (bench/RESULTS.md, session 15).
pub fn for_each_task(tasks: usize, task: impl Fn(usize) + Sync) {
    let helpers = threads().saturating_sub(1).min(tasks.saturating_sub(1));
    if helpers == 0 {
        (0..tasks).for_each(task);
        return;
    }
    if rayon::current_thread_index().is_some() {
        // On a worker already, where rayon's join lets this thread work.
        (0..tasks).into_par_iter().for_each(&task);
        return;
    }
    let task: *const (dyn Fn(usize) + Sync + '_) = &task;
    // SAFETY: only the lifetime changes. `Shared::run` calls the task only
    // for an index it claimed below `tasks`, and this function returns (or
    // unwinds) only after every claimed index has finished, so no call
    // outlives the borrow; later claims find nothing and touch no task.
    let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
    let _splitting = placement::split_here();
    let shared = Arc::new(Shared {
        task,
        tasks,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panic: Mutex::new(None),
        caller: thread::current(),
    });
    for _ in 0..helpers {
        let shared = Arc::clone(&shared);
        rayon::spawn(move || shared.run());
    }
    shared.run();
    shared.wait();
    let panic = shared
        .panic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// [`for_each_task`], collecting each task's result in task order.
pub fn map_tasks<R: Send>(tasks: usize, task: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let results: Vec<Mutex<Option<R>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    for_each_task(tasks, |i| {
        let result = task(i);
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every task ran")
        })
        .collect()
}

/// Runs `f` on `0..len` cut into blocks of `width` (the last one shorter),
/// as the tasks of [`for_each_task`].
pub(super) fn for_each_block(len: usize, width: usize, f: impl Fn(Range<usize>) + Sync) {
    for_each_task(len.div_ceil(width), |block| {
        let start = block * width;
        f(start..len.min(start + width))
    });
}

/// How long [`for_each_task`]'s caller spins on the last tasks before it
/// parks: a worker's task of a batch-1 product takes tens of microseconds.
const SPIN: Duration = Duration::from_micros(50);

/// The state [`for_each_task`]'s threads share.
struct Shared {
    /// Called only for claimed indices below `tasks`; see `for_each_task`.
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    /// The next index to claim.
    next: AtomicUsize,
    /// Tasks finished, panicked ones included.
    finished: AtomicUsize,
    /// The first task panic's payload.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Unparked by whoever finishes the last task.
    caller: Thread,
}

// SAFETY: `task` points to a `Sync` closure, called from any thread only
// while `for_each_task` keeps it alive (see there); the rest is `Sync`.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Claims and runs tasks until none is left unclaimed.
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            // SAFETY: `i` was claimed below `tasks`, so `for_each_task` is
            // still waiting and the closure alive.
            let task = unsafe { &*self.task };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task(i))) {
                let mut panic = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                panic.get_or_insert(payload);
            }
            // Release: the task's writes happen before the caller sees the
            // count reach `tasks`.
            if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.tasks {
                self.caller.unpark();
            }
        }
    }

    /// Returns once every task has finished.
    fn wait(&self) {
        let done = || self.finished.load(Ordering::Acquire) == self.tasks;
        let start = Instant::now();
        while !done() {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                // A stale unpark only makes this loop check again.
                thread::park();
            }
        }
    }
}

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
    let threads = threads();
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
        return;
    }
    let len = out.len();
    let step = per_task * row_len;
    let base = SendPtr(out.as_mut_ptr());
    for_each_block(len, step, move |block| {
        let base = base;
        // SAFETY: the blocks are disjoint parts of `out`, which stays
        // borrowed until every task has finished.
        let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(block.start), block.len()) };
        chunk((block.start / step, part))
    });
}

/// Most work (in element operations) in one chunk of [`for_rows`]: a few
/// milliseconds, the longest a kernel runs past its request's deadline.
const CHUNK_WORK: usize = 1 << 24;

/// The vector instructions the CPU kernels' loops are compiled for, from
/// the narrowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64): 4 lanes.
    Baseline,
    /// AVX2 and FMA: 8 lanes and 16 vector registers.
    Avx2,
    /// AVX-512 (F and VL) besides AVX2 and FMA: 16 lanes and 32 registers,
    /// which hold a polynomial's constants that AVX2 reloads from memory
    /// (GELU's loop runs about 1.8× as fast on Zen 4).
    Avx512,
}

impl Simd {
    /// Its name: "avx512", "avx2" or "baseline" (the last two as
    /// `--cpu-simd` spells its caps).
    pub fn name(self) -> &'static str {
        match self {
            Simd::Baseline => "baseline",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }
}

/// The widest [`Simd`] the kernels may use, as a `u8`.
static SIMD_CAP: AtomicU8 = AtomicU8::new(Simd::Avx512 as u8);

/// Caps the vector instructions the CPU kernels use (by default, the widest
/// the CPU has). Every level computes the same bits: the loops keep each
/// element's operations and their order as written, only more lanes at a
/// time, so a cap changes speed alone.
pub fn cap_simd(cap: Simd) {
    SIMD_CAP.store(cap as u8, Ordering::Relaxed);
}

/// What the CPU kernels use: the widest level this CPU has, within the cap.
pub fn simd() -> Simd {
    static WIDEST: OnceLock<Simd> = OnceLock::new();
    let widest = *WIDEST.get_or_init(detect);
    match SIMD_CAP.load(Ordering::Relaxed) {
        cap if cap >= widest as u8 => widest,
        cap if cap >= Simd::Avx2 as u8 => Simd::Avx2,
        _ => Simd::Baseline,
    }
}

/// The widest level this CPU has.
fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") && has!("avx512vl") {
                Simd::Avx512
            } else {
                Simd::Avx2
            };
        }
    }
    Simd::Baseline
}

/// Whether the product kernels run their AVX-512 register tiles
/// ([`super::packed`], [`super::panels`]): the level in use is AVX-512, so
/// a cap turns them off too. They give the AVX2 tiles' bits.
pub(super) fn wide_tiles() -> bool {
    simd() == Simd::Avx512
}

/// The tile widths a product kernel has on this CPU, for tests to run
/// each: the AVX2 tiles (`false`), and the AVX-512 ones where in use.
#[cfg(test)]
pub(super) fn tile_widths() -> impl Iterator<Item = bool> {
    [false, true]
        .into_iter()
        .filter(|&wide| !wide || wide_tiles())
}

/// Runs `f` compiled for the widest vector units [`simd`] allows, so the
/// loops inlined into it vectorize 16 or 8 wide instead of the baseline's
/// 4 (x86_64 builds target SSE2 unless told otherwise).
///
/// Only code inlined into `f` is compiled that way, hence the
/// `#[inline(always)]` on the closures compute kernels hand to [`for_rows`]
/// and on their helpers. Rust never fuses `a * b + c` on its own, so every
/// path rounds identically.
#[inline(always)]
pub(super) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match simd() {
        Simd::Avx512 => {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            fn widest<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: `simd` just found the enabled features on this CPU.
            return unsafe { widest(f) };
        }
        Simd::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: as above.
            return unsafe { wide(f) };
        }
        Simd::Baseline => {}
    }
    f()
}

/// Elementwise kernels over a flat buffer, cut into blocks this long so
/// parallel splitting stays coarse.
pub(super) const BLOCK: usize = 4096;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// From a thread outside the pool, as a request's is, every index runs
    /// exactly once per call, however the caller and the workers race for
    /// them; with more than one thread in the pool, tasks long enough for a
    /// worker to wake are shared with it.
    #[test]
    fn every_task_runs_once_on_the_caller_and_the_pool() {
        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..500 {
            for_each_task(counts.len(), |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        for (i, count) in counts.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 500, "task {i}");
        }
        // Other tests share the global pool, so a round may find its
        // workers busy throughout; some round of twenty must not.
        let shared = (0..20).any(|_| {
            let threads = Mutex::new(HashSet::new());
            for_each_task(64, |_| {
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(500) {
                    std::hint::spin_loop();
                }
                threads.lock().unwrap().insert(thread::current().id());
            });
            let threads = threads.into_inner().unwrap();
            assert!(
                threads.contains(&thread::current().id()),
                "the caller took no task"
            );
            threads.len() > 1
        });
        if rayon::current_num_threads() > 1 {
            assert!(shared, "no worker took a task in twenty rounds");
        }
    }

    /// A task's panic reaches the caller, with its payload, only after every
    /// other task has run: none is left writing into a buffer the unwind
    /// frees.
    #[test]
    fn a_task_panic_resumes_on_the_caller_after_the_rest() {
        let ran = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for_each_task(16, |i| {
                if i == 3 {
                    resume_unwind(Box::new(7u32));
                }
                thread::sleep(Duration::from_millis(1));
                ran.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = outcome.expect_err("the panic was lost");
        assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
        assert_eq!(ran.load(Ordering::Relaxed), 15);
    }
}
