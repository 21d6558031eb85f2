//! Measurement 2: the cost of crossing into wasm. `Instance::infer` on a
//! warm `linear` instance with a [1, 1] input — the guest calls two host ops
//! (matmul, add) and returns the output — against the same two ops called
//! directly on the native CPU backend.

use std::hint::black_box;

use anyhow::Context as _;
use edgeserve::runtime::{Runtime, Value, block_on};
use edgeserve_tensor::{BinaryOp, Ops};

use edgeserve_e2e::linear::{Linear, check, input};

use crate::stats::Samples;

/// The timings.
pub struct Infer {
    /// `Instance::infer` through wasm.
    pub wasm: Samples,
    /// `matmul` + `add` on the backend, no wasm.
    pub native: Samples,
}

/// Runs each path `n` times after a warm-up.
pub fn run(linear: &Linear, runtime: &Runtime, n: usize) -> anyhow::Result<Infer> {
    let mut instance = linear.factory(runtime)?()?;
    let mut call = || -> anyhow::Result<Vec<(String, Value)>> {
        Ok(block_on(instance.infer(
            vec![("x".to_owned(), Value::Numeric(input()?))],
            Vec::new(),
            None,
        ))?)
    };
    check(&call()?)?;
    let wasm = Samples::measure(n / 10, n, &mut call)?;

    let context = &linear.context;
    let weight = context.weights.get("weight").context("weight")?;
    let bias = context.weights.get("bias").context("bias")?;
    let ops = Ops::unlimited(context.backend.as_ref());
    let native = Samples::measure(n / 10, n, || {
        let x = input()?;
        let xw = ops.matmul(black_box(&x), weight, false)?;
        Ok(ops.binary(BinaryOp::Add, &xw, bias)?)
    })?;
    Ok(Infer { wasm, native })
}
