//! A sequence of steps, each cut into parts that run side by side, with
//! every thread keeping to one part from step to step.
//!
//! A recurrent layer's step multiplies the last state by the same weight
//! each time. Split by output columns over the threads, each thread's share
//! of the weight fits its core's L2, and stays there for the whole sequence
//! when the same thread takes the same share every step. Forking each
//! step's product on its own instead ([`super::parallel::for_each_task`])
//! hands the shares to whichever thread comes first and wakes a helper per
//! step: a tenth of an imported LSTM's samples at batch 8 were context
//! switches (bench/RESULTS.md, session 45).
//!
//! Nobody waits for a part nobody has claimed, so a helper that never
//! arrives (rayon's pool busy with other requests) only leaves its parts to
//! the calling thread: the threads meet once a step, but cannot deadlock.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a thread spins on the other parts of a step before it yields
/// its core between checks: a step's part takes microseconds, but a
/// preempted thread holding one would otherwise be spun on for a whole
/// time slice.
const SPIN: Duration = Duration::from_micros(50);

/// One turn of a wait that began at `start`: a spin for its first [`SPIN`],
/// then the core yielded.
fn pause(start: Instant) {
    if start.elapsed() < SPIN {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A counter on a cache line of its own, so that threads bumping
/// neighbouring parts' counters do not share a line.
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicUsize);

/// Runs `work(s, p)` for every step `s` in `0..steps` and part `p` in
/// `0..parts`, every part of a step finishing before any part of the next
/// starts. The calling thread runs with up to `parts - 1` of rayon's
/// workers; each thread takes its own part of every step first (the
/// caller part 0), then any part no thread has taken.
///
/// Before each step the caller runs `gate(s)`; an error there stops the
/// sequence (parts already running finish first) and is returned. A panic
/// in `work` stops it too and resumes on the caller once no part runs.
pub(super) fn for_each_step<E>(
    steps: usize,
    parts: usize,
    mut gate: impl FnMut(usize) -> Result<(), E>,
    work: impl Fn(usize, usize) + Sync,
) -> Result<(), E> {
    let helpers = super::parallel::threads()
        .saturating_sub(1)
        .min(parts.saturating_sub(1));
    if helpers == 0 || steps == 0 {
        for s in 0..steps {
            gate(s)?;
            (0..parts).for_each(|p| work(s, p));
        }
        return Ok(());
    }
    let work: *const (dyn Fn(usize, usize) + Sync + '_) = &work;
    // SAFETY: only the lifetime changes. `Team::take` calls `work` only for
    // a part it claimed below `steps`, and this function returns (or
    // unwinds) only once every claimed part has finished and no part can
    // be claimed any more, so no call outlives the borrow.
    let work: *const (dyn Fn(usize, usize) + Sync + 'static) = unsafe { std::mem::transmute(work) };
    let team = Arc::new(Team {
        work,
        steps,
        claimed: (0..parts).map(|_| Counter::default()).collect(),
        done: (0..parts).map(|_| Counter::default()).collect(),
        open: AtomicUsize::new(0),
        stopped: AtomicBool::new(false),
        homes: AtomicUsize::new(1),
        panic: Mutex::new(None),
    });
    for _ in 0..helpers {
        let team = Arc::clone(&team);
        rayon::spawn(move || team.help());
    }
    let mut outcome = Ok(());
    for s in 0..steps {
        if let Err(e) = gate(s) {
            outcome = Err(e);
            break;
        }
        team.open.store(s + 1, Ordering::Release);
        if !team.take(s, 0) {
            break;
        }
    }
    team.close();
    let panic = team.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
    outcome
}

/// The state the threads of one [`for_each_step`] share.
struct Team {
    /// Called only for a part claimed below `steps`; see `for_each_step`.
    work: *const (dyn Fn(usize, usize) + Sync),
    steps: usize,
    /// Per part, the next step of it to claim.
    claimed: Box<[Counter]>,
    /// Per part, the steps of it finished.
    done: Box<[Counter]>,
    /// Steps the caller has let start (its gate passed).
    open: AtomicUsize,
    /// Set by a gate's error or a part's panic: no part is claimed after.
    stopped: AtomicBool,
    /// The home part the next helper takes.
    homes: AtomicUsize,
    /// The first panic's payload.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `work` points to a `Sync` closure, called from any thread only
// while `for_each_step` keeps it alive (see there); the rest is `Sync`.
unsafe impl Send for Team {}
// SAFETY: as above.
unsafe impl Sync for Team {}

impl Team {
    /// A helper's part: from the earliest step with a part unclaimed on,
    /// until the sequence ends or stops.
    fn help(&self) {
        let parts = self.claimed.len();
        let home = self.homes.fetch_add(1, Ordering::Relaxed) % parts;
        let first = self
            .claimed
            .iter()
            .map(|c| c.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(self.steps);
        for s in first..self.steps {
            if !self.wait(|| self.open.load(Ordering::Acquire) > s) || !self.take(s, home) {
                return;
            }
        }
    }

    /// Runs the parts of step `s` that are still unclaimed, `home` first,
    /// once every part of step `s - 1` has finished. Returns `false` when
    /// the sequence stopped instead.
    fn take(&self, s: usize, home: usize) -> bool {
        if !self.wait(|| self.done.iter().all(|d| d.0.load(Ordering::Acquire) >= s)) {
            return false;
        }
        let parts = self.claimed.len();
        for p in (0..parts).map(|i| (home + i) % parts) {
            let claim =
                self.claimed[p]
                    .0
                    .compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Relaxed);
            if claim.is_err() {
                continue;
            }
            // SAFETY: step `s` (below `steps`: `close` moves every claim
            // counter to `steps`) of part `p` was claimed here, so
            // `for_each_step` is still waiting and the closure alive.
            let work = unsafe { &*self.work };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work(s, p))) {
                self.stopped.store(true, Ordering::Release);
                let mut panic = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                panic.get_or_insert(payload);
            }
            // Release: the part's writes happen before any thread sees it
            // finished and starts the next step.
            self.done[p].0.fetch_add(1, Ordering::Release);
        }
        !self.stopped.load(Ordering::Acquire)
    }

    /// Waits until `ready` holds (`true`) or the sequence stops (`false`).
    fn wait(&self, ready: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return false;
            }
            if ready() {
                return true;
            }
            pause(start);
        }
    }

    /// Ends the sequence on the caller: no part can be claimed from here
    /// on, and every part claimed has finished when this returns.
    fn close(&self) {
        self.stopped.store(true, Ordering::Release);
        for (claimed, done) in self.claimed.iter().zip(&self.done) {
            let last = claimed.0.swap(self.steps, Ordering::AcqRel);
            let start = Instant::now();
            while done.0.load(Ordering::Acquire) < last {
                pause(start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;
    use std::thread;

    use super::*;

    /// Every part of every step runs exactly once, and no part of a step
    /// starts before every part of the one before has finished.
    #[test]
    fn every_part_runs_once_and_steps_run_in_order() {
        let (steps, parts) = (200, 3);
        let runs: Vec<AtomicUsize> = (0..steps * parts).map(|_| AtomicUsize::new(0)).collect();
        let finished = AtomicUsize::new(0);
        let threads = Mutex::new(HashSet::new());
        let gated = AtomicUsize::new(0);
        for_each_step(
            steps,
            parts,
            |s| {
                assert_eq!(
                    gated.fetch_add(1, Ordering::Relaxed),
                    s,
                    "gates out of order"
                );
                Ok::<(), ()>(())
            },
            |s, p| {
                assert!(
                    finished.load(Ordering::Acquire) >= s * parts,
                    "step {s} part {p} started before step {} ended",
                    s.saturating_sub(1)
                );
                runs[s * parts + p].fetch_add(1, Ordering::Relaxed);
                threads.lock().unwrap().insert(thread::current().id());
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(20) {
                    std::hint::spin_loop();
                }
                finished.fetch_add(1, Ordering::AcqRel);
            },
        )
        .unwrap();
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(
                r.load(Ordering::Relaxed),
                1,
                "step {} part {}",
                i / parts,
                i % parts
            );
        }
        assert!(threads.lock().unwrap().contains(&thread::current().id()));
    }

    /// A gate's error stops the sequence at its step: the steps before ran
    /// whole, none after, and nothing runs once the call returned.
    #[test]
    fn a_gate_error_stops_before_its_step() {
        let ran = AtomicU64::new(0);
        let outcome = for_each_step(
            50,
            2,
            |s| if s == 20 { Err(s) } else { Ok(()) },
            |s, _| {
                ran.fetch_add(1, Ordering::Relaxed);
                assert!(s < 20, "step {s} ran after its gate failed");
            },
        );
        assert_eq!(outcome, Err(20));
        let after = ran.load(Ordering::Relaxed);
        assert_eq!(after, 40);
        thread::sleep(Duration::from_millis(5));
        assert_eq!(
            ran.load(Ordering::Relaxed),
            after,
            "a part ran after the return"
        );
    }

    /// A part's panic resumes on the caller, with its payload, and stops
    /// the steps after it.
    #[test]
    fn a_panic_in_a_part_resumes_on_the_caller() {
        let last = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for_each_step(
                100,
                2,
                |_| Ok::<(), ()>(()),
                |s, p| {
                    last.fetch_max(s, Ordering::Relaxed);
                    if s == 10 && p == 1 {
                        resume_unwind(Box::new(7u32));
                    }
                },
            )
        }));
        let payload = outcome.expect_err("the panic was lost");
        assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
        assert!(
            last.load(Ordering::Relaxed) <= 11,
            "steps ran on past the panic"
        );
    }
}
