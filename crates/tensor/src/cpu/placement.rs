//! Keeping the pool's workers off the core of the thread that splits an
//! operation with them.
//!
//! [`super::parallel::for_each_task`]'s caller works beside the workers it
//! wakes, so the split pays only when they run on other cores. Linux decides
//! where a woken thread runs, and on the two-vCPU KVM guests this project is
//! measured on it kept the one worker on the request thread's vCPU for whole
//! server runs: the two then took turns on one core while the other stayed
//! idle, and MiniLM at batch 1 ran a third slower than in runs where they
//! landed apart (a scheduler trace in bench/RESULTS.md, "Session 48").
//! So while one operation at a time is split, the workers may run on any of
//! the process's CPUs but the caller's; their mask changes only when that
//! caller's CPU does, one `sched_setaffinity` per worker. Concurrent
//! operations leave the masks as they are: their callers are on several
//! cores and the work they share keeps every core busy anyway.

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};

    /// The CPUs this process may run on, read when the pool is built.
    static ALLOWED: OnceLock<Cpus> = OnceLock::new();
    /// The pool's workers' thread ids, as they start.
    static WORKERS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());
    /// The CPU the workers' masks leave out; -1 while none is.
    static EXCLUDED: AtomicI32 = AtomicI32::new(-1);
    /// Operations being split right now.
    static SPLITTING: AtomicUsize = AtomicUsize::new(0);

    /// A CPU set, `Send` and `Sync` as plain bits.
    #[derive(Clone, Copy)]
    struct Cpus(libc::cpu_set_t);

    impl Cpus {
        /// The set without `cpu`, or `None` if nothing else is left.
        fn without(mut self, cpu: usize) -> Option<Self> {
            // SAFETY: `CPU_CLR` and `CPU_COUNT` bound-check their index
            // against the set's size.
            unsafe {
                libc::CPU_CLR(cpu, &mut self.0);
                (libc::CPU_COUNT(&self.0) > 0).then_some(self)
            }
        }

        /// Restricts thread `tid` (0: the calling thread) to these CPUs; a
        /// thread that has exited, or a set the process may no longer use,
        /// just leaves it where it is.
        fn apply(&self, tid: libc::pid_t) {
            // SAFETY: the set is a valid `cpu_set_t` of the size passed.
            unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
            }
        }
    }

    /// Reads the CPUs the process may use, before any worker starts.
    pub(in crate::cpu) fn remember_cpus() {
        // SAFETY: an all-zero `cpu_set_t` is the empty set, and the call
        // writes at most the size passed.
        let cpus = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
                .then_some(Cpus(set))
        };
        if let Some(cpus) = cpus {
            let _ = ALLOWED.set(cpus);
        }
    }

    /// Called on each worker as it starts: records it and gives it the mask
    /// the workers have now.
    pub(in crate::cpu) fn register_worker() {
        let mut workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: gettid has no preconditions.
        workers.push(unsafe { libc::gettid() });
        let excluded = EXCLUDED.load(Ordering::Relaxed);
        if let (Ok(cpu), Some(allowed)) = (usize::try_from(excluded), ALLOWED.get())
            && let Some(mask) = allowed.without(cpu)
        {
            mask.apply(0);
        }
    }

    /// Marks an operation being split until it is dropped.
    pub(in crate::cpu) struct Splitting;

    impl Drop for Splitting {
        fn drop(&mut self) {
            SPLITTING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Called before an operation wakes workers: if no other operation is
    /// being split, moves the workers off the calling thread's CPU (when
    /// they are not off it already).
    pub(in crate::cpu) fn split_here() -> Splitting {
        if SPLITTING.fetch_add(1, Ordering::Relaxed) == 0 {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            if cpu >= 0 && cpu != EXCLUDED.load(Ordering::Relaxed) {
                exclude(cpu);
            }
        }
        Splitting
    }

    /// Gives every worker the process's CPUs but `cpu`.
    #[cold]
    fn exclude(cpu: i32) {
        let Some(mask) = ALLOWED
            .get()
            .and_then(|allowed| allowed.without(cpu as usize))
        else {
            return;
        };
        let workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        for &tid in workers.iter() {
            mask.apply(tid);
        }
        EXCLUDED.store(cpu, Ordering::Relaxed);
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    //! Elsewhere the scheduler places the workers alone.

    /// Does nothing here.
    pub(in crate::cpu) fn remember_cpus() {}
    /// Does nothing here.
    pub(in crate::cpu) fn register_worker() {}
    /// Does nothing here.
    pub(in crate::cpu) struct Splitting;
    /// Does nothing here.
    pub(in crate::cpu) fn split_here() -> Splitting {
        Splitting
    }
}

#[cfg(target_os = "linux")]
pub(super) use linux::*;
#[cfg(not(target_os = "linux"))]
pub(super) use other::*;
