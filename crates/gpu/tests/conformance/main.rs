//! Conformance of the GPU backend against the CPU reference backend.
//!
//! Every implemented operation runs on both backends, through
//! [`Ops`] as every caller does, with the same random inputs (a
//! deterministic xorshift generator) and the results must agree within the
//! stated tolerance. A missing GPU adapter fails these tests: CI installs
//! Mesa's software Vulkan device (`mesa-vulkan-drivers`).
//!
//! One module per op family, as in the backends; `device` covers memory,
//! device loss and refusals, `deadline` the wait for results, `recording`
//! long recordings and their parameter words.

mod concurrent;
mod conv;
mod deadline;
mod device;
mod elementwise;
mod layout;
mod linalg;
mod recording;
mod reduce;
mod select;

use std::sync::OnceLock;

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{DType, Ops, Tensor};

static CPU: CpuBackend = CpuBackend::new();

/// The reference: the CPU backend's operations.
fn cpu() -> Ops<'static> {
    Ops::unlimited(&CPU)
}

/// The GPU backend the tests share (they run at once, on many threads).
fn gpu_backend() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}")))
}

/// The shared GPU backend's operations.
fn gpu() -> Ops<'static> {
    Ops::unlimited(gpu_backend())
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|_| self.f32(lo, hi)).collect()).unwrap()
    }
}

fn up(t: &Tensor) -> Tensor {
    gpu().from_host(t).unwrap()
}

/// The elements as f32 (f16 ones widened exactly).
fn floats(t: &Tensor) -> Vec<f32> {
    let t = cpu().cast(t, DType::F32).unwrap();
    t.host().unwrap().as_slice::<f32>().to_vec()
}

/// Asserts |gpu - cpu| ≤ atol + rtol·|cpu| elementwise (NaN matches NaN).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32, rtol: f32) {
    let got = gpu().to_host(got).unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (floats(&got), floats(want));
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what}: element {i}: gpu {g} vs cpu {w}");
    }
}

/// Asserts bit-identical results (layout ops, integer results).
fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
    let got = gpu().to_host(got).unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(
        got.host().unwrap().bytes(),
        want.host().unwrap().bytes(),
        "{what}: bytes"
    );
}
