//! `cpu::use_threads`: the caller counts as one of the compute threads. Its
//! own test binary, since it builds rayon's global pool once per process.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use edgeserve_tensor::cpu;

#[test]
fn the_caller_and_one_fewer_workers_share_every_split() {
    cpu::use_threads(NonZeroUsize::new(3).unwrap()).expect("the pool is built first here");
    assert_eq!(rayon::current_num_threads(), 2, "workers: threads - 1");
    assert_eq!(cpu::threads(), 3, "the caller counts off the pool");
    let (tx, rx) = std::sync::mpsc::channel();
    rayon::spawn(move || tx.send(cpu::threads()).unwrap());
    assert_eq!(rx.recv().unwrap(), 2, "on a worker, the pool's own size");
    // Tasks long enough that every thread takes some: the caller and both
    // workers, and no other thread.
    let seen = Mutex::new(HashSet::new());
    for _ in 0..20 {
        cpu::for_each_task(12, |_| {
            seen.lock().unwrap().insert(thread::current().id());
            thread::sleep(Duration::from_millis(2));
        });
        if seen.lock().unwrap().len() == 3 {
            break;
        }
    }
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.contains(&thread::current().id()),
        "the caller took no task"
    );
    assert_eq!(seen.len(), 3, "tasks ran on {} threads", seen.len());
    // Results come back in task order, wherever each ran.
    assert_eq!(
        cpu::map_tasks(9, |i| i * i),
        (0..9).map(|i| i * i).collect::<Vec<_>>()
    );
    assert!(
        cpu::use_threads(NonZeroUsize::new(2).unwrap()).is_err(),
        "the pool is built once"
    );
}
