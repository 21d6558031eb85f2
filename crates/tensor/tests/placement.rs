//! The pool `cpu::use_threads` builds keeps its workers off the core of the
//! thread that splits an operation with them. Its own test binary: it
//! builds rayon's global pool and pins its own thread.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use edgeserve_tensor::cpu;

/// The CPUs the calling thread may run on.
fn own_cpus() -> BTreeSet<usize> {
    // SAFETY: an all-zero set is the empty set; the call writes at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        set
    };
    // SAFETY: CPU_ISSET bound-checks its index.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Restricts the calling thread to these CPUs.
fn pin_self(cpus: &BTreeSet<usize>) {
    // SAFETY: as in `own_cpus`; CPU_SET bound-checks its index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Splits an operation from this thread until the pool's worker has taken
/// one of its tasks, and returns the CPUs that worker could run on then.
fn worker_cpus_during_a_split() -> BTreeSet<usize> {
    let seen = Mutex::new(None);
    for _ in 0..100 {
        cpu::for_each_task(8, |_| {
            if rayon::current_thread_index().is_some() {
                *seen.lock().unwrap() = Some(own_cpus());
            }
            thread::sleep(Duration::from_millis(2));
        });
        if let Some(cpus) = seen.lock().unwrap().take() {
            return cpus;
        }
    }
    panic!("the worker took no task in 100 splits");
}

#[test]
fn the_worker_runs_anywhere_but_on_the_callers_core() {
    let allowed = own_cpus();
    cpu::use_threads(NonZeroUsize::new(2).unwrap()).expect("the pool is built first here");
    let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
        unreachable!("a running thread has a CPU");
    };
    if first == last {
        // One CPU: nowhere else to go, so the worker keeps it.
        assert_eq!(worker_cpus_during_a_split(), allowed);
        return;
    }
    // The caller moves, and the worker's CPUs follow: all but the caller's.
    for caller in [first, last, first] {
        pin_self(&BTreeSet::from([caller]));
        let mut expected = allowed.clone();
        expected.remove(&caller);
        assert_eq!(
            worker_cpus_during_a_split(),
            expected,
            "the caller ran on CPU {caller}"
        );
    }
    pin_self(&allowed);
}
