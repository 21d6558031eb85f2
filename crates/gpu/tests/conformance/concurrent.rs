//! Requests side by side: every thread records into its own stream and
//! submits at its own read-back. Concurrent chains give exactly the
//! answers they give alone, a result recorded on one thread and read on
//! another has run first, and a buffer freed while one thread's work is
//! unsubmitted is not handed to another thread.

use std::sync::{Barrier, mpsc};
use std::thread;

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::{Backend, BinaryOp, DType, Ops, Tensor, UnaryOp};

use crate::{Rng, floats};

fn own_gpu() -> GpuBackend {
    GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"))
}

/// Threads running at once.
const THREADS: usize = 8;
/// Times each thread runs its chain.
const ROUNDS: usize = 6;

/// One request's own inputs: sizes differ by thread, so buffers of the
/// same size class pass between threads through the pool.
struct Request {
    seed: usize,
    x: Tensor,
    w: Tensor,
    bias: Tensor,
}

fn request(ops: Ops<'_>, seed: usize, shared: &Tensor) -> Request {
    let mut rng = Rng::new(seed as u64 + 1);
    let rows = 4 + 3 * seed;
    let x = rng.tensor(&[rows, 32], -1.0, 1.0);
    // Every request also starts from a result of the main thread.
    let x = ops
        .binary(BinaryOp::Add, &ops.from_host(&x).unwrap(), shared)
        .unwrap();
    Request {
        seed,
        x,
        w: ops.from_host(&rng.tensor(&[32, 32], -0.3, 0.3)).unwrap(),
        bias: ops.from_host(&rng.tensor(&[32], -0.1, 0.1)).unwrap(),
    }
}

/// A chain of ops, a different mix per request; nothing is read back
/// before the end, and every intermediate is dropped as soon as it is used.
fn chain(ops: Ops<'_>, r: &Request) -> Vec<u8> {
    let mut t = r.x.clone();
    for step in 0..12 {
        t = match (step + r.seed) % 5 {
            0 => ops
                .linear(&t, &r.w, false, Some(&r.bias), Some(UnaryOp::Gelu))
                .unwrap(),
            1 => ops.softmax(&t, -1).unwrap(),
            2 => ops.layer_norm(&t, None, None, 1e-5).unwrap(),
            3 => ops.matmul(&t, &r.w, true).unwrap(),
            _ => ops.affine(&t, 1.5, -0.25).unwrap(),
        };
    }
    let t = ops.cast(&t, DType::F32).unwrap();
    ops.to_host(&t).unwrap().host().unwrap().bytes().to_vec()
}

#[test]
fn concurrent_requests_give_the_answers_they_give_alone() {
    let backend = own_gpu();
    let ops = backend.ops();
    // A result every thread reads (the next test reads one that is still
    // unsubmitted).
    let shared = ops.full(DType::F32, &[1, 32], 0.5).unwrap();
    let shared = ops.affine(&shared, 2.0, 0.25).unwrap();
    let requests: Vec<Request> = (0..THREADS).map(|s| request(ops, s, &shared)).collect();
    let alone: Vec<Vec<u8>> = requests.iter().map(|r| chain(ops, r)).collect();
    // Distinct answers, so one read from another's buffer would show.
    for (i, a) in alone.iter().enumerate() {
        for b in &alone[i + 1..] {
            assert_ne!(a, b, "requests must differ to tell them apart");
        }
    }
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for (r, want) in requests.iter().zip(&alone) {
            let (backend, start) = (&backend, &start);
            s.spawn(move || {
                let ops = backend.ops();
                start.wait();
                for round in 0..ROUNDS {
                    let got = chain(ops, r);
                    assert!(
                        &got == want,
                        "request {} round {round}: concurrent result differs from the sequential one",
                        r.seed
                    );
                }
            });
        }
    });
}

#[test]
fn a_result_recorded_on_one_thread_reads_back_whole_on_another() {
    let backend = own_gpu();
    let ops = backend.ops();
    // Recorded, not submitted: the other thread's read-back must run it.
    let pending = ops.full(DType::F32, &[300], 3.0).unwrap();
    let on_other = thread::scope(|s| {
        s.spawn(|| {
            let ops = backend.ops();
            let t = ops.affine(&pending, 1.0, 1.0).unwrap();
            floats(&ops.to_host(&t).unwrap())
        })
        .join()
        .unwrap()
    });
    assert_eq!(on_other, vec![4.0; 300]);
    assert_eq!(floats(&ops.to_host(&pending).unwrap()), vec![3.0; 300]);
}

#[test]
fn a_buffer_freed_by_unsubmitted_work_is_not_reused_by_another_thread() {
    let backend = own_gpu();
    let (to_b, at_b) = mpsc::channel::<()>();
    let (to_a, at_a) = mpsc::channel::<()>();
    thread::scope(|s| {
        let backend = &backend;
        // A: `doubled` reads `x`, then `x` is freed while that read is
        // still only recorded.
        let a = s.spawn(move || {
            let ops = backend.ops();
            let x = ops.full(DType::F32, &[64], 1.0).unwrap();
            ops.to_host(&x).unwrap();
            let doubled = ops.affine(&x, 2.0, 0.0).unwrap();
            drop(x);
            to_b.send(()).unwrap();
            at_a.recv().unwrap();
            floats(&ops.to_host(&doubled).unwrap())
        });
        // B: a result of `x`'s size class, written and submitted before A
        // submits; had it taken `x`'s buffer, A's read would see 5s.
        s.spawn(move || {
            let ops = backend.ops();
            at_b.recv().unwrap();
            let other = ops.full(DType::F32, &[64], 5.0).unwrap();
            assert_eq!(floats(&ops.to_host(&other).unwrap()), vec![5.0; 64]);
            to_a.send(()).unwrap();
        });
        assert_eq!(a.join().unwrap(), vec![2.0; 64]);
    });
    // Once A submitted, the buffer went back to the shared pool.
    assert!(backend.pooled_bytes() >= 256, "{}", backend.pooled_bytes());
}

/// Requests side by side whose inputs are large (above the size kept on
/// the host; pooled since session 45) and uploaded per request. Each frees
/// its first input while the op reading it is still unsubmitted, then
/// uploads a second of the same size class, which must not land in the
/// first one's buffer (a queue write runs ahead of that op); and the
/// buffers, one class for all, pass between the threads through the pool.
#[test]
fn large_inputs_uploaded_side_by_side_stay_each_requests_own() {
    let backend = own_gpu();
    // 300 KiB and a little more per thread: one 512 KiB class for all.
    let input = |t: usize, k: usize| {
        let n = 76_800 + 16 * t;
        let values = (0..n).map(|i| ((i * k) % 1000 + t * 1000) as f32).collect();
        Tensor::from_f32(&[n], values).unwrap()
    };
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (backend, start) = (&backend, &start);
            let (first, second) = (input(t, 1), input(t, 7));
            s.spawn(move || {
                let ops = backend.ops();
                let want = |x: &Tensor, a: f32| -> Vec<f32> {
                    floats(x).iter().map(|v| v * a + 1.0).collect()
                };
                let (want_first, want_second) = (want(&first, 2.0), want(&second, 3.0));
                start.wait();
                for round in 0..ROUNDS {
                    let x = ops.from_host(&first).unwrap();
                    let y = ops.affine(&x, 2.0, 1.0).unwrap();
                    drop(x);
                    let x = ops.from_host(&second).unwrap();
                    let z = ops.affine(&x, 3.0, 1.0).unwrap();
                    let got = backend.to_host_all(&[&y, &z]).unwrap();
                    assert!(
                        floats(&got[0]) == want_first && floats(&got[1]) == want_second,
                        "thread {t} round {round}: an op read another input's values"
                    );
                }
            });
        }
    });
}
