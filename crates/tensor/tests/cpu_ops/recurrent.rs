//! The LSTM layer (`lstm`) against a plain f64 loop of ONNX's equations,
//! and against the same layer composed from the CPU backend's other
//! kernels, a step at a time (what a handler would otherwise call).

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::shape;
use edgeserve_tensor::{DType, Tensor};

use crate::common::*;

/// Every step's h (`[steps, batch, hidden]`), the last h and the last c, in
/// f64, straight from the equations.
fn reference(
    xg: &[f32],
    r: &[f32],
    h0: &[f32],
    c0: &[f32],
    (steps, batch, hidden): (usize, usize, usize),
    reverse: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut h: Vec<f64> = widen(h0);
    let mut c: Vec<f64> = widen(c0);
    let mut y = vec![0.0; steps * batch * hidden];
    for s in 0..steps {
        let t = if reverse { steps - 1 - s } else { s };
        let mut next = vec![0.0; batch * hidden];
        for b in 0..batch {
            let pre = |k: usize, j: usize| {
                let row = k * hidden + j;
                let dot: f64 = (0..hidden)
                    .map(|p| h[b * hidden + p] * f64::from(r[row * hidden + p]))
                    .sum();
                f64::from(xg[(t * batch + b) * 4 * hidden + row]) + dot
            };
            for j in 0..hidden {
                let (i, o, f, g) = (
                    sigmoid(pre(0, j)),
                    sigmoid(pre(1, j)),
                    sigmoid(pre(2, j)),
                    pre(3, j).tanh(),
                );
                let cell = f * c[b * hidden + j] + i * g;
                c[b * hidden + j] = cell;
                next[b * hidden + j] = o * cell.tanh();
            }
        }
        h = next;
        y[t * batch * hidden..][..batch * hidden].copy_from_slice(&h);
    }
    (y, h, c)
}

/// Sizes (steps, batch, hidden) covering one step, a batch of one, a batch
/// past the product kernels' packing threshold, a hidden width that no
/// vector divides, and a step large enough to be cut over the threads.
const SIZES: [(usize, usize, usize); 5] =
    [(1, 2, 8), (7, 1, 16), (5, 20, 24), (6, 3, 13), (3, 2, 128)];

#[test]
fn lstm_matches_the_equations_and_its_composition() {
    let mut rng = Rng::new(45);
    for (steps, batch, hidden) in SIZES {
        for reverse in [false, true] {
            let what = format!("steps {steps}, batch {batch}, hidden {hidden}, reverse {reverse}");
            let (xg, xg_data) = rand_f32(&mut rng, &[steps, batch, 4 * hidden]);
            let (r, r_data) = rand_f32(&mut rng, &[4 * hidden, hidden]);
            let (h0, h0_data) = rand_f32(&mut rng, &[batch, hidden]);
            let (c0, c0_data) = rand_f32(&mut rng, &[batch, hidden]);
            let (y, h, c) = cpu().lstm([&xg, &r, &h0, &c0], reverse).unwrap();
            assert_eq!(y.shape(), [steps, batch, hidden], "{what}");
            assert_eq!(
                (h.shape(), c.shape()),
                ([batch, hidden].as_slice(), [batch, hidden].as_slice())
            );
            let sizes = (steps, batch, hidden);
            let (want_y, want_h, want_c) =
                reference(&xg_data, &r_data, &h0_data, &c0_data, sizes, reverse);
            // Products of `hidden` terms under |1|, then σ and tanh.
            let tol = 1e-5;
            assert_close(&read_f32(&y), &want_y, tol, tol, &format!("y, {what}"));
            assert_close(&read_f32(&h), &want_h, tol, tol, &format!("h, {what}"));
            assert_close(&read_f32(&c), &want_c, tol, tol, &format!("c, {what}"));

            let plan = shape::lstm([&xg, &r, &h0, &c0], reverse).unwrap();
            let composed =
                edgeserve_tensor::composed::lstm(&CpuBackend::new(), [&xg, &r, &h0, &c0], &plan)
                    .unwrap();
            for (got, want, name) in [
                (&y, &composed.0, "y"),
                (&h, &composed.1, "h"),
                (&c, &composed.2, "c"),
            ] {
                let want: Vec<f64> = widen(&read_f32(want));
                // The same operations in the same order; but a step cut
                // over the threads sums its product on the packed kernel
                // where r is 64 deep or more, in another order than the
                // composition's dot kernel, and those roundings pass through
                // the gates and the cell, step after step.
                let atol = if hidden >= 64 { 1e-5 } else { 1e-7 };
                assert_close(
                    &read_f32(got),
                    &want,
                    1e-6,
                    atol,
                    &format!("{name} against the composition, {what}"),
                );
            }
        }
    }
}

/// Callers side by side on the shared pool, each stepping its own layer in
/// parts over the threads, each get the answer the layer gives alone: no
/// caller waits on another's helpers for good, and no part of one layer
/// writes into another's.
#[test]
fn lstm_side_by_side_gives_each_caller_its_own_answer() {
    let (steps, batch, hidden) = (6, 4, 128);
    let mut rng = Rng::new(46);
    let layers: Vec<[Tensor; 4]> = (0..4)
        .map(|_| {
            [
                rand_f32(&mut rng, &[steps, batch, 4 * hidden]).0,
                rand_f32(&mut rng, &[4 * hidden, hidden]).0.into_weight(),
                rand_f32(&mut rng, &[batch, hidden]).0,
                rand_f32(&mut rng, &[batch, hidden]).0,
            ]
        })
        .collect();
    let run = |[x, r, h, c]: &[Tensor; 4]| {
        let (y, h, c) = cpu().lstm([x, r, h, c], false).unwrap();
        [y, h, c].map(|t| read_f32(&t))
    };
    let alone: Vec<_> = layers.iter().map(run).collect();
    std::thread::scope(|scope| {
        for (layer, want) in layers.iter().zip(&alone) {
            scope.spawn(move || {
                for round in 0..20 {
                    // Not bit for bit: another test of this binary may cap
                    // the vector width meanwhile, which picks other kernels.
                    for (got, want) in run(layer).iter().zip(want) {
                        let want: Vec<f64> = widen(want);
                        assert_close(got, &want, 1e-5, 1e-5, &format!("round {round}"));
                    }
                }
            });
        }
    });
}

#[test]
fn lstm_of_no_steps_is_its_start() {
    let mut rng = Rng::new(46);
    let (h0, h0_data) = rand_f32(&mut rng, &[2, 3]);
    let (c0, c0_data) = rand_f32(&mut rng, &[2, 3]);
    let (y, h, c) = cpu()
        .lstm([&zeros(&[0, 2, 12]), &zeros(&[12, 3]), &h0, &c0], false)
        .unwrap();
    assert_eq!(y.shape(), [0, 2, 3]);
    assert_eq!((read_f32(&h), read_f32(&c)), (h0_data, c0_data));
}

#[test]
fn lstm_of_empty_states_is_empty() {
    for (batch, hidden) in [(0, 3), (2, 0), (0, 0)] {
        let state = zeros(&[batch, hidden]);
        let (x_gates, r) = (zeros(&[4, batch, 4 * hidden]), zeros(&[4 * hidden, hidden]));
        for reverse in [false, true] {
            let (y, h, c) = cpu().lstm([&x_gates, &r, &state, &state], reverse).unwrap();
            assert_eq!(y.shape(), [4, batch, hidden]);
            assert_eq!((h.shape(), c.shape()), (state.shape(), state.shape()));
        }
    }
}

#[test]
fn lstm_refuses_what_does_not_fit() {
    let (xg, r, s) = (zeros(&[2, 3, 8]), zeros(&[8, 2]), zeros(&[3, 2]));
    let shape = |x: &Tensor, r: &Tensor, h0: &Tensor, c0: &Tensor| {
        assert_err!(cpu().lstm([x, r, h0, c0], false), Shape)
    };
    let msg = shape(&zeros(&[3, 8]), &r, &s, &s);
    assert!(msg.contains("[steps, batch, 4·hidden]"), "{msg}");
    let msg = shape(&zeros(&[2, 3, 6]), &zeros(&[6, 1]), &s, &s);
    assert!(msg.contains("four gates"), "{msg}");
    let msg = shape(&xg, &zeros(&[2, 8]), &s, &s);
    assert!(msg.contains("r must be [8, 2]"), "{msg}");
    let msg = shape(&xg, &r, &s, &zeros(&[2, 2]));
    assert!(msg.contains("h0 and c0 must be [3, 2]"), "{msg}");
    let half = f16t(&[2, 3, 8], &[0.0; 48]);
    let msg = assert_err!(cpu().lstm([&half, &r, &s, &s], false), DType);
    assert!(msg.contains("lstm: needs f32, got f16"), "{msg}");
    let ints = Tensor::from_bytes(DType::I32, &[8, 2], &[0; 64]).unwrap();
    let msg = assert_err!(cpu().lstm([&xg, &ints, &s, &s], false), DType);
    assert!(msg.contains("r is i32"), "{msg}");
}
