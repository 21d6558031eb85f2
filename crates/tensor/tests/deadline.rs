//! Request deadlines bind host work: an operation past the deadline never
//! starts, and one that is running when it passes stops between blocks of
//! work with `DeadlineExceeded`, instead of running to its end.

use std::time::{Duration, Instant};

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, DType, Result, Tensor, TensorError, deadline};

/// A `rows × cols` matrix of small varied values.
fn matrix(batch: usize, rows: usize, cols: usize) -> Tensor {
    let data = (0..batch * rows * cols)
        .map(|i| ((i * 7919) % 13) as f32 * 0.125 - 0.75)
        .collect();
    Tensor::from_f32(&[batch, rows, cols], data).unwrap()
}

/// Runs `op` and returns its result and how long it took.
fn timed<T>(op: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = op();
    (result, started.elapsed())
}

fn assert_stopped(result: &Result<Tensor>, op: &str) {
    match result {
        Err(TensorError::DeadlineExceeded(why)) => assert!(why.starts_with(op), "{why}"),
        other => panic!("{op} past its deadline: {other:?}"),
    }
}

#[test]
fn an_op_past_the_deadline_never_starts() {
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    let a = matrix(1, 4, 4);
    deadline::within(Instant::now(), || {
        assert_stopped(&ops.matmul(&a, &a, false), "matmul");
        assert_stopped(&ops.full(DType::F32, &[2], 1.0), "full");
        assert_stopped(&ops.to_host(&a), "to-host");
    });
    // Outside the request, the same op runs.
    assert_eq!(ops.matmul(&a, &a, false).unwrap().shape(), [1, 4, 4]);
}

/// Runs `product` uncut, then under a deadline of a tenth of that time, and
/// checks that it stopped with `DeadlineExceeded`: the deadline lay ahead
/// when the one operation started, so only a cut inside it can fail it.
/// How soon it stopped is printed, not compared with a threshold.
fn assert_cut_midway(what: &str, product: impl Fn() -> Result<Tensor>) {
    let (uncut, natural) = timed(&product);
    uncut.unwrap();
    let budget = natural / 10;
    let (cut, elapsed) = timed(|| deadline::within(Instant::now() + budget, &product));
    assert_stopped(&cut, "matmul");
    eprintln!(
        "{what}: {:.1} ms uncut; deadline {:.1} ms, stopped after {:.1} ms",
        natural.as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3
    );
}

#[test]
fn a_deadline_stops_a_large_matmul_midway() {
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    // One large product: gemm runs in bands of rows, checked between bands.
    let a = matrix(1, 1536, 1536);
    assert_cut_midway("1536³ matmul", || ops.matmul(&a, &a, false));
    // Many small products: checked between the chunks of products.
    let b = matrix(8192, 48, 48);
    assert_cut_midway("8192 × 48³ batched matmul", || ops.matmul(&b, &b, true));
}

#[test]
fn a_distant_deadline_changes_nothing() {
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    // Above the size that runs in bands under a deadline.
    let a = matrix(1, 640, 512);
    let b = matrix(1, 512, 640);
    let plain = ops.matmul(&a, &b, false).unwrap();
    let far = Instant::now() + Duration::from_secs(600);
    let banded = deadline::within(far, || ops.matmul(&a, &b, false)).unwrap();
    let (x, y) = (
        plain.host().unwrap().as_slice::<f32>(),
        banded.host().unwrap().as_slice::<f32>(),
    );
    let worst = x
        .iter()
        .zip(y)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1e-4, "banded vs whole: max |Δ| = {worst}");
}
