//! The GPU path waits for results no longer than the request's deadline:
//! a read-back whose recorded work outlasts it fails with
//! `DeadlineExceeded`, and the backend goes on serving.

use std::time::{Duration, Instant};

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::{Backend, Tensor, TensorError, deadline};

use crate::{Rng, floats};

/// Side of the products chained on the device.
const SIZE: usize = 256;

/// The uncut read-back takes at least this long (more products are chained
/// until it does, up to [`MAX_LINKS`]), so a twentieth of it is a deadline
/// the device cannot meet even when other tests slowed the uncut run.
const MIN_WORK: Duration = Duration::from_millis(50);
const MAX_LINKS: usize = 256;

/// `x · w · w …` with `links` products, recorded on `backend` (nothing
/// runs until a read-back submits it).
fn chained_products(backend: &GpuBackend, x: &Tensor, w: &Tensor, links: usize) -> Tensor {
    let ops = backend.ops();
    let w = ops.from_host(w).unwrap();
    let mut t = ops.from_host(x).unwrap();
    for _ in 0..links {
        t = ops.matmul(&t, &w, false).unwrap();
    }
    t
}

#[test]
fn a_read_back_past_the_deadline_fails_with_deadline_exceeded_and_the_device_serves_on() {
    // A backend of its own: no other test's work shares its queue.
    let backend = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[SIZE, SIZE], -1.0, 1.0);
    // Scaled so the chain neither vanishes nor overflows.
    let w = rng.tensor(&[SIZE, SIZE], -0.09, 0.09);

    // The pipeline compiled beforehand, so the uncut time is the work's.
    Backend::to_host(&backend, &chained_products(&backend, &x, &w, 1)).unwrap();
    let mut links = 2;
    let (uncut, natural) = loop {
        let started = Instant::now();
        let uncut = Backend::to_host(&backend, &chained_products(&backend, &x, &w, links)).unwrap();
        let natural = started.elapsed();
        if natural >= MIN_WORK || links >= MAX_LINKS {
            break (uncut, natural);
        }
        links *= 4;
    };

    // The same work again, read back under a deadline of a twentieth of
    // its time. `Backend::to_host` directly, not `Ops`: the front door
    // refuses an op whose deadline has already passed, and this test is
    // about the wait for the device.
    let pending = chained_products(&backend, &x, &w, links);
    let budget = natural / 20;
    let started = Instant::now();
    let cut = deadline::within(Instant::now() + budget, || {
        Backend::to_host(&backend, &pending)
    });
    let waited = started.elapsed();
    eprintln!(
        "{links} products {SIZE}³: {:.1} ms uncut; deadline {:.1} ms, the read-back gave up after {:.1} ms",
        natural.as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3,
        waited.as_secs_f64() * 1e3
    );
    match cut {
        Err(TensorError::DeadlineExceeded(why)) => {
            assert!(why.starts_with("to-host"), "{why}")
        }
        other => panic!("a read-back past its deadline: {other:?}"),
    }

    // The submitted work ran on to its end on the device: the same tensor
    // reads back whole, equal to the uncut run's, and new work is served.
    assert!(backend.lost().is_none());
    let late = Backend::to_host(&backend, &pending).unwrap();
    assert_eq!(floats(&late), floats(&uncut));
    let ops = backend.ops();
    let two = ops
        .from_host(&Tensor::from_f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap())
        .unwrap();
    let squared = ops
        .to_host(&ops.matmul(&two, &two, false).unwrap())
        .unwrap();
    assert_eq!(floats(&squared), [7.0, 10.0, 15.0, 22.0]);
}

#[test]
fn building_a_pipeline_postpones_the_deadline_and_a_built_one_does_not() {
    // A backend of its own, so the pipeline is built here first.
    let backend = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
    let x = Rng::new(3).tensor(&[4, 4], -1.0, 1.0);
    let x = backend.ops().from_host(&x).unwrap();
    let far = Instant::now() + Duration::from_secs(600);
    let after_softmax = || {
        deadline::within(far, || {
            backend.ops().softmax(&x, -1).unwrap();
            deadline::current().unwrap()
        })
    };
    assert!(
        after_softmax() > far,
        "the first softmax built its pipeline"
    );
    assert_eq!(after_softmax(), far, "the second found it built");
}
