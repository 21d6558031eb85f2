//! Test data, readers, tolerant comparisons and index arithmetic shared by
//! every op family's tests.

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, DType, HostBuffer, Ops, Tensor};
use half::f16;

#[path = "../support/indexing.rs"]
mod indexing;
pub use indexing::{bcast_index, coords, flat};

/// Every operation on the CPU backend, without caps.
pub fn cpu() -> Ops<'static> {
    static CPU: CpuBackend = CpuBackend::new();
    CPU.ops()
}

/// xorshift64*: deterministic, dependency-free test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

pub fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

pub fn f32t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, data).unwrap()
}

/// An f32 tensor of zeros, for cases where only the shape matters.
pub fn zeros(shape: &[usize]) -> Tensor {
    f32t(shape, vec![0.0; numel(shape)])
}

pub fn rand_f32(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data = rng.vec(numel(shape));
    (f32t(shape, data.clone()), data)
}

pub fn typed<T: bytemuck::Pod + Send + Sync>(
    dtype: DType,
    shape: &[usize],
    data: Vec<T>,
) -> Tensor {
    Tensor::from_host(dtype, shape, HostBuffer::from_vec(data)).unwrap()
}

pub fn f16t(shape: &[usize], data: &[f32]) -> Tensor {
    typed(
        DType::F16,
        shape,
        data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
    )
}

/// Values as f16 would hold them.
pub fn round_f16(data: &[f32]) -> Vec<f32> {
    data.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

pub fn read_f32(t: &Tensor) -> Vec<f32> {
    let host = t.host().expect("host tensor");
    match t.dtype() {
        DType::F32 => host.as_slice::<f32>().to_vec(),
        DType::F16 => host.as_slice::<f16>().iter().map(|v| v.to_f32()).collect(),
        other => panic!("read_f32 on {other}"),
    }
}

pub fn read<T: bytemuck::Pod>(t: &Tensor) -> Vec<T> {
    assert_eq!(size_of::<T>(), t.dtype().size());
    t.host().expect("host tensor").as_slice::<T>().to_vec()
}

/// f32 values widened, for the f64 references.
pub fn widen(data: &[f32]) -> Vec<f64> {
    data.iter().map(|&v| f64::from(v)).collect()
}

/// Asserts |got − want| ≤ rtol·scale + atol element by element, where
/// `scale` is the magnitude the error is relative to (|want| by default).
pub fn assert_close_scaled(
    got: &[f32],
    want: &[f64],
    scale: &[f64],
    rtol: f64,
    atol: f64,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let (g, w) = (f64::from(got[i]), want[i]);
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        if w.is_infinite() || (w as f32).is_infinite() {
            assert_eq!(g, w as f32 as f64, "{what}[{i}]");
            continue;
        }
        let tol = rtol * scale[i] + atol;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tol {tol})"
        );
    }
}

pub fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    assert_close_scaled(got, want, &scale, rtol, atol, what);
}

pub fn bcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    // Dimension i of `s` aligned at the end, 1 where `s` is shorter.
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (1, db) => db,
            (da, _) => da,
        })
        .collect()
}

/// The message of the expected error variant; panics on anything else.
macro_rules! assert_err {
    ($result:expr, $variant:ident) => {
        match $result {
            Err(edgeserve_tensor::TensorError::$variant(msg)) => msg,
            Err(other) => panic!("expected {}, got {other:?}", stringify!($variant)),
            Ok(_) => panic!("expected {}, got Ok", stringify!($variant)),
        }
    };
}
