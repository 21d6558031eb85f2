//! Conformance of the GPU backend against the CPU reference backend.
//!
//! Every implemented operation runs on both backends with the same random
//! inputs (a deterministic xorshift generator) and the results must agree
//! within the stated tolerance. A missing GPU adapter fails these tests: CI
//! installs Mesa's software Vulkan device (`mesa-vulkan-drivers`).

use std::sync::OnceLock;

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{
    Attention, Backend, BinaryOp, Conv2d, DType, Pool2d, PoolKind, ReduceOp, Tensor, TensorError,
    UnaryOp,
};

fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}")))
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

fn floats(t: &Tensor) -> Vec<f32> {
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

/// (m, k, n): odd sizes take the kernel's element-wise path, sizes with k
/// and n multiples of 4 its whole-quad path; neither need be a multiple of
/// the 64x64 tile or the depth step of 16.
const MATMUL_SIZES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (3, 5, 7),
    (65, 129, 33),
    (17, 33, 65),
    (130, 70, 90),
    (257, 129, 65),
    (257, 131, 259),
    (1, 4, 4),
    (3, 4, 8),
    (64, 64, 64),
    (100, 36, 68),
    (64, 512, 128),
];

/// Matmul tolerance for k ≤ 512: 1e-4·(1 + |ref|).
#[test]
fn matmul_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(1);
    for (m, k, n) in MATMUL_SIZES {
        for tb in [false, true] {
            let a = rng.tensor(&[m, k], -1.0, 1.0);
            let b = if tb {
                rng.tensor(&[n, k], -1.0, 1.0)
            } else {
                rng.tensor(&[k, n], -1.0, 1.0)
            };
            let want = cpu.matmul(&a, &b, tb).unwrap();
            let got = gpu().matmul(&up(&a), &up(&b), tb).unwrap();
            assert_close(
                &format!("matmul {m}x{k}x{n} tb={tb}"),
                &got,
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn f16_matmul_and_casts_match_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(5);
    for (m, k, n, tb) in [
        (3, 5, 7, false),
        (65, 33, 20, true),
        (2, 64, 1, false),
        (130, 64, 68, false),
        (64, 128, 96, true),
    ] {
        let a = cpu
            .cast(&rng.tensor(&[m, k], -1.0, 1.0), DType::F16)
            .unwrap();
        let bs: &[usize] = if tb { &[n, k] } else { &[k, n] };
        let b = cpu.cast(&rng.tensor(bs, -1.0, 1.0), DType::F16).unwrap();
        let want = cpu.matmul(&a, &b, tb).unwrap();
        let got = gpu().to_host(&gpu().matmul(&a, &b, tb).unwrap()).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        // One f16 rounding step of the result, plus f32 summation order.
        assert_close(
            &format!("f16 matmul {m}x{k}x{n}"),
            &cpu.cast(&got, DType::F32).unwrap(),
            &cpu.cast(&want, DType::F32).unwrap(),
            1e-3,
            1e-3,
        );
    }
    // f16 -> f32 is exact; f32 -> f16 rounds to nearest (odd lengths too).
    let x = rng.tensor(&[7, 3], -100.0, 100.0);
    let h = cpu.cast(&x, DType::F16).unwrap();
    assert_same(
        "cast f16->f32",
        &gpu().cast(&h, DType::F32).unwrap(),
        &cpu.cast(&h, DType::F32).unwrap(),
    );
    assert_same("cast f32->f16", &gpu().cast(&x, DType::F16).unwrap(), &h);
}

/// Every activation, with and without bias, both operand layouts, odd and
/// whole-quad sizes and a broadcast batch: the fused kernel against the CPU
/// backend's `linear` and against matmul, add and the unary op as three calls.
#[test]
fn linear_matches_cpu_and_the_unfused_ops() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(11);
    let acts = [
        None,
        Some(UnaryOp::Neg),
        Some(UnaryOp::Abs),
        Some(UnaryOp::Exp),
        Some(UnaryOp::Log),
        Some(UnaryOp::Sqrt),
        Some(UnaryOp::Rsqrt),
        Some(UnaryOp::Relu),
        Some(UnaryOp::Gelu),
        Some(UnaryOp::GeluTanh),
        Some(UnaryOp::Tanh),
        Some(UnaryOp::Sigmoid),
        Some(UnaryOp::Silu),
        Some(UnaryOp::Erf),
    ];
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 5], &[5, 7]),
        (&[130, 64], &[64, 68]),
        (&[2, 1, 9, 33], &[3, 33, 20]),
        (&[1, 1], &[1, 1]),
    ];
    for (i, act) in acts.into_iter().enumerate() {
        // Logs and roots get positive products (and biases), so results are
        // finite and well conditioned.
        let lo = match act {
            Some(UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt) => 0.1,
            _ => -1.0,
        };
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let tb = (i + j) % 2 == 1;
            let a = rng.tensor(sa, lo, 1.0);
            let mut sb = sb.to_vec();
            let r = sb.len();
            if tb {
                sb.swap(r - 1, r - 2);
            }
            let b = rng.tensor(&sb, lo, 1.0);
            let n = if tb { sb[r - 2] } else { sb[r - 1] };
            let bias = rng.tensor(&[n], lo.max(0.0), 1.0);
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias);
                let what = format!("linear {sa:?}x{sb:?} tb={tb} bias={with_bias} {act:?}");
                let want = cpu.linear(&a, &b, tb, bias, act).unwrap();
                let gb = bias.map(up);
                let got = gpu()
                    .linear(&up(&a), &up(&b), tb, gb.as_ref(), act)
                    .unwrap();
                assert_close(&what, &got, &want, 2e-4, 2e-4);
                let mut apart = gpu().matmul(&up(&a), &up(&b), tb).unwrap();
                if let Some(gb) = &gb {
                    apart = gpu().binary(BinaryOp::Add, &apart, gb).unwrap();
                }
                if let Some(op) = act {
                    apart = gpu().unary(op, &apart).unwrap();
                }
                assert_close(
                    &format!("{what} vs unfused"),
                    &got,
                    &gpu().to_host(&apart).unwrap(),
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}

/// f16 operands, bias and result, on the native kernel where the device has
/// `shader-f16` (lavapipe, as in CI, does).
#[test]
fn f16_linear_matches_cpu() {
    let g = gpu();
    if g.info().device.contains("llvmpipe") {
        assert!(g.has_shader_f16(), "lavapipe offers shader-f16");
    }
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(12);
    let h = |t: Tensor| cpu.cast(&t, DType::F16).unwrap();
    for (m, k, n, tb) in [(64, 128, 96, false), (130, 64, 68, true), (5, 3, 9, false)] {
        let a = h(rng.tensor(&[m, k], -1.0, 1.0));
        let b = h(rng.tensor(&if tb { [n, k] } else { [k, n] }, -1.0, 1.0));
        let bias = h(rng.tensor(&[n], -1.0, 1.0));
        let want = cpu
            .linear(&a, &b, tb, Some(&bias), Some(UnaryOp::GeluTanh))
            .unwrap();
        let got = g
            .to_host(
                &g.linear(
                    &up(&a),
                    &up(&b),
                    tb,
                    Some(&up(&bias)),
                    Some(UnaryOp::GeluTanh),
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_close(
            &format!("f16 linear {m}x{k}x{n} tb={tb}"),
            &cpu.cast(&got, DType::F32).unwrap(),
            &cpu.cast(&want, DType::F32).unwrap(),
            2e-3,
            2e-3,
        );
    }
}

#[test]
fn batched_matmul_broadcasts() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(2);
    let cases: [(&[usize], &[usize], bool); 8] = [
        (&[2, 3, 17, 33], &[3, 33, 20], false),
        (&[4, 1, 5, 9], &[1, 3, 6, 9], true),
        (&[3, 65, 70], &[70, 66], false),
        (&[2, 1, 1], &[2, 1, 1, 1], false),
        // k and n multiples of 4: whole-quad loads at every batch offset.
        (&[2, 3, 17, 32], &[3, 32, 20], false),
        (&[4, 1, 65, 36], &[1, 3, 68, 36], true),
        (&[3, 70, 64], &[64, 72], false),
        (&[70, 64], &[2, 3, 72, 64], true),
    ];
    for (sa, sb, tb) in cases {
        let a = rng.tensor(sa, -1.0, 1.0);
        let b = rng.tensor(sb, -1.0, 1.0);
        let want = cpu.matmul(&a, &b, tb).unwrap();
        // Host tensors are uploaded on the fly.
        let got = gpu().matmul(&a, &b, tb).unwrap();
        assert_close(&format!("matmul {sa:?}x{sb:?}"), &got, &want, 1e-4, 1e-4);
    }
}

#[test]
fn binary_broadcasts_like_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(3);
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[3, 5, 7], &[3, 5, 7]),
        (&[2, 3, 4], &[3, 1]),
        (&[5], &[1]),
        (&[], &[4, 2]),
        (&[17, 1, 65], &[1, 33, 1]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Pow,
    ];
    for (sa, sb) in shapes {
        for op in ops {
            let (lo, hi) = if op == BinaryOp::Pow {
                (0.1, 3.0)
            } else {
                (-2.0, 2.0)
            };
            let a = rng.tensor(sa, lo, hi);
            let b = rng.tensor(sb, lo, hi);
            let want = cpu.binary(op, &a, &b).unwrap();
            let got = gpu().binary(op, &up(&a), &up(&b)).unwrap();
            assert_close(&format!("{op} {sa:?} {sb:?}"), &got, &want, 1e-6, 1e-5);
        }
    }
    // Negative bases with integer exponents, and NaN propagation in max/min.
    let a = Tensor::from_f32(&[4], vec![-2.0, -3.0, f32::NAN, 1.0]).unwrap();
    let b = Tensor::from_f32(&[4], vec![3.0, 2.0, 1.0, f32::NAN]).unwrap();
    for op in [BinaryOp::Pow, BinaryOp::Maximum, BinaryOp::Minimum] {
        let want = cpu.binary(op, &a, &b).unwrap();
        let got = gpu().binary(op, &a, &b).unwrap();
        assert_close(&format!("{op} special"), &got, &want, 1e-6, 1e-5);
    }
}

/// Unary tolerance: 2e-6 + 2e-5·|ref| (transcendentals differ by a few ulp).
#[test]
fn unary_and_affine_match_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(4);
    let ops = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Erf,
    ];
    for shape in [&[1usize][..], &[3, 5, 7], &[257, 129]] {
        for op in ops {
            let (lo, hi) = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.01, 10.0),
                UnaryOp::Gelu | UnaryOp::Erf => (-10.0, 10.0),
                _ => (-6.0, 6.0),
            };
            let x = rng.tensor(shape, lo, hi);
            let want = cpu.unary(op, &x).unwrap();
            let got = gpu().unary(op, &up(&x)).unwrap();
            assert_close(&format!("{op} {shape:?}"), &got, &want, 2e-6, 2e-5);
        }
        let x = rng.tensor(shape, -3.0, 3.0);
        let want = cpu.affine(&x, 1.5, -0.25).unwrap();
        let got = gpu().affine(&up(&x), 1.5, -0.25).unwrap();
        assert_close("affine", &got, &want, 1e-6, 1e-6);
    }
}

#[test]
fn softmax_matches_cpu_on_every_axis() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(5);
    for shape in [&[3usize, 5, 7][..], &[17, 300], &[2, 1000, 3], &[1]] {
        for axis in 0..shape.len() {
            let x = rng.tensor(shape, -8.0, 8.0);
            let want = cpu.softmax(&x, axis).unwrap();
            let got = gpu().softmax(&up(&x), axis).unwrap();
            assert_close(
                &format!("softmax {shape:?} axis {axis}"),
                &got,
                &want,
                1e-6,
                1e-5,
            );
        }
    }
    // A row that is entirely -inf gives zeros, like the CPU.
    let x = Tensor::from_f32(
        &[2, 3],
        vec![
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            1.0,
            f32::NEG_INFINITY,
            2.0,
        ],
    )
    .unwrap();
    for axis in 0..2 {
        let want = cpu.softmax(&x, axis).unwrap();
        let got = gpu().softmax(&x, axis).unwrap();
        assert_close("softmax -inf", &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(6);
    for shape in [&[3usize, 7][..], &[5, 300], &[2, 3, 1000], &[1]] {
        let n = *shape.last().unwrap();
        let x = rng.tensor(shape, -4.0, 6.0);
        let g = rng.tensor(&[n], 0.5, 1.5);
        let b = rng.tensor(&[n], -1.0, 1.0);
        for (gg, bb) in [
            (None, None),
            (Some(&g), None),
            (None, Some(&b)),
            (Some(&g), Some(&b)),
        ] {
            let want = cpu.layer_norm(&x, gg, bb, 1e-5).unwrap();
            let (gu, bu) = (gg.map(up), bb.map(up));
            let got = gpu()
                .layer_norm(&up(&x), gu.as_ref(), bu.as_ref(), 1e-5)
                .unwrap();
            assert_close(&format!("layer-norm {shape:?}"), &got, &want, 2e-5, 2e-5);
        }
    }
}

#[test]
fn embedding_gathers_rows_and_checks_ids() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(7);
    let table = rng.tensor(&[50, 33], -1.0, 1.0);
    let ids32: Vec<i32> = (0..12).map(|i: i32| i * 7 % 50).collect();
    let ids64: Vec<i64> = ids32.iter().map(|&i| i64::from(i)).collect();
    let i32t = Tensor::from_bytes(DType::I32, &[3, 4], bytemuck::cast_slice(&ids32)).unwrap();
    let i64t = Tensor::from_bytes(DType::I64, &[12], bytemuck::cast_slice(&ids64)).unwrap();
    for ids in [&i32t, &i64t] {
        let want = cpu.embedding(&table, ids).unwrap();
        let got = gpu().embedding(&up(&table), &up(ids)).unwrap();
        assert_same("embedding", &got, &want);
    }
    // An i64 table moves whole 8-byte elements.
    let t64: Vec<i64> = (0..40).map(|i| i * 1_000_000_007 - 7).collect();
    let t64 = Tensor::from_bytes(DType::I64, &[10, 4], bytemuck::cast_slice(&t64)).unwrap();
    let ids = Tensor::from_bytes(DType::I32, &[3], bytemuck::cast_slice(&[9i32, 0, 4])).unwrap();
    assert_same(
        "embedding i64 table",
        &gpu().embedding(&up(&t64), &up(&ids)).unwrap(),
        &cpu.embedding(&t64, &ids).unwrap(),
    );
    let bad = Tensor::from_bytes(DType::I32, &[2], bytemuck::cast_slice(&[1i32, 50])).unwrap();
    assert_eq!(
        gpu().embedding(&up(&table), &up(&bad)).unwrap_err(),
        cpu.embedding(&table, &bad).unwrap_err()
    );
}

#[test]
fn reductions_match_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(8);
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::ArgMax,
        ReduceOp::ArgMin,
    ];
    for shape in [&[3usize, 5, 7][..], &[17, 300], &[1]] {
        for axis in 0..shape.len() {
            for op in ops {
                for keep in [false, true] {
                    let x = rng.tensor(shape, -5.0, 5.0);
                    let want = cpu.reduce(op, &x, axis, keep).unwrap();
                    let got = gpu().reduce(op, &up(&x), axis, keep).unwrap();
                    let what = format!("reduce {op} {shape:?} axis {axis}");
                    if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) {
                        assert_same(&what, &got, &want);
                    } else {
                        assert_close(&what, &got, &want, 1e-4, 1e-5);
                    }
                }
            }
        }
    }
}

#[test]
fn layout_ops_are_exact_for_f32_and_i64() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(9);
    let f = rng.tensor(&[3, 5, 7], -1.0, 1.0);
    let ints: Vec<i64> = (0..105).map(|i| (i as i64 - 50) * 3_000_000_011).collect();
    let i = Tensor::from_bytes(DType::I64, &[3, 5, 7], bytemuck::cast_slice(&ints)).unwrap();
    for x in [&f, &i] {
        let g = up(x);
        for perm in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            assert_same(
                &format!("transpose {perm:?}"),
                &gpu().transpose(&g, &perm).unwrap(),
                &cpu.transpose(x, &perm).unwrap(),
            );
        }
        for (axis, s, e) in [(0, 1, 3), (1, 0, 5), (2, 3, 6), (1, 2, 2)] {
            assert_same(
                &format!("slice {axis} {s}..{e}"),
                &gpu().slice(&g, axis, s, e).unwrap(),
                &cpu.slice(x, axis, s, e).unwrap(),
            );
        }
        for axis in 0..3 {
            let parts = [x, x, x];
            let gparts = [&g, &g, &g];
            assert_same(
                &format!("concat {axis}"),
                &gpu().concat(&gparts, axis).unwrap(),
                &cpu.concat(&parts, axis).unwrap(),
            );
        }
        let r = gpu().reshape(&g, &[7, 15]).unwrap();
        assert_same("reshape", &r, &cpu.reshape(x, &[7, 15]).unwrap());
    }
}

#[test]
fn casts_match_cpu() {
    let cpu = CpuBackend::new();
    let vals = vec![
        0.0f32,
        -0.0,
        1.5,
        -1.5,
        2.5e9,
        -2.5e9,
        1e19,
        -1e19,
        f32::NAN,
        123456.7,
        -7.9,
        3e10,
    ];
    let f = Tensor::from_f32(&[12], vals).unwrap();
    let i64s: Vec<i64> = vec![
        0,
        -1,
        5,
        1 << 40,
        -(1 << 40),
        i64::MAX,
        i64::MIN,
        2_147_483_648,
    ];
    let l = Tensor::from_bytes(DType::I64, &[8], bytemuck::cast_slice(&i64s)).unwrap();
    let i32s: Vec<i32> = vec![0, -1, 7, i32::MAX, i32::MIN, 16_777_217];
    let s = Tensor::from_bytes(DType::I32, &[6], bytemuck::cast_slice(&i32s)).unwrap();
    let pairs = [
        (&f, DType::I32),
        (&f, DType::I64),
        (&s, DType::F32),
        (&s, DType::I64),
        (&l, DType::I32),
        (&f, DType::F32),
    ];
    for (x, to) in pairs {
        assert_same(
            &format!("cast {} to {to}", x.dtype()),
            &gpu().cast(&up(x), to).unwrap(),
            &cpu.cast(x, to).unwrap(),
        );
    }
    // i64 -> f32 is exact for values that fit in i32, close otherwise.
    let got = gpu().cast(&up(&l), DType::F32).unwrap();
    assert_close(
        "cast i64 to f32",
        &got,
        &cpu.cast(&l, DType::F32).unwrap(),
        0.0,
        1e-7,
    );
}

#[test]
fn full_matches_cpu() {
    let cpu = CpuBackend::new();
    for (dtype, value) in [
        (DType::F32, 1.25),
        (DType::I32, -7.9),
        (DType::I64, -3e12),
        (DType::U8, 300.0),
    ] {
        for shape in [&[3usize, 5, 7][..], &[], &[0, 4], &[3]] {
            assert_same(
                &format!("full {dtype}{shape:?}"),
                &gpu().full(dtype, shape, value).unwrap(),
                &cpu.full(dtype, shape, value).unwrap(),
            );
        }
    }
}

#[test]
fn attention_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(10);
    struct Case {
        q: &'static [usize],
        k: &'static [usize],
        v: &'static [usize],
        mask: Option<&'static [usize]>,
        causal: bool,
    }
    let cases = [
        Case {
            q: &[2, 3, 17, 16],
            k: &[2, 3, 17, 16],
            v: &[2, 3, 17, 8],
            mask: None,
            causal: false,
        },
        Case {
            q: &[2, 5, 16],
            k: &[2, 9, 16],
            v: &[2, 9, 16],
            mask: None,
            causal: true,
        },
        Case {
            q: &[2, 9, 16],
            k: &[2, 5, 16],
            v: &[2, 5, 4],
            mask: None,
            causal: true,
        },
        Case {
            q: &[2, 3, 7, 8],
            k: &[1, 3, 300, 8],
            v: &[2, 1, 300, 8],
            mask: Some(&[2, 1, 1, 300]),
            causal: false,
        },
        Case {
            q: &[4, 33, 8],
            k: &[4, 33, 8],
            v: &[4, 33, 8],
            mask: Some(&[33, 33]),
            causal: true,
        },
    ];
    for c in cases {
        let q = rng.tensor(c.q, -1.0, 1.0);
        let k = rng.tensor(c.k, -1.0, 1.0);
        let v = rng.tensor(c.v, -1.0, 1.0);
        let mask = c.mask.map(|s| rng.tensor(s, -2.0, 0.0));
        for scale in [None, Some(0.3)] {
            let p = Attention {
                scale,
                causal: c.causal,
            };
            let want = cpu.attention(&q, &k, &v, mask.as_ref(), p).unwrap();
            let gm = mask.as_ref().map(up);
            let got = gpu()
                .attention(&up(&q), &up(&k), &up(&v), gm.as_ref(), p)
                .unwrap();
            assert_close(&format!("attention {:?}", c.q), &got, &want, 1e-5, 1e-4);
        }
    }
}

#[test]
fn top_k_matches_cpu() {
    let cpu = CpuBackend::new();
    let x = Rng::new(11).tensor(&[3, 5, 70], -1.0, 1.0);
    let (wv, wi) = cpu.top_k(&x, 6).unwrap();
    let (gv, gi) = gpu().top_k(&up(&x), 6).unwrap();
    assert_same("top-k values", &gv, &wv);
    assert_same("top-k indices", &gi, &wi);
}

#[test]
fn chained_ops_run_in_one_submission() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(12);
    let x = rng.tensor(&[8, 64], -1.0, 1.0);
    let w = rng.tensor(&[64, 64], -0.2, 0.2);
    let (mut c, mut g) = (x.clone(), up(&x));
    for _ in 0..10 {
        c = cpu.matmul(&c, &w, false).unwrap();
        c = cpu.unary(UnaryOp::Gelu, &c).unwrap();
        c = cpu.layer_norm(&c, None, None, 1e-5).unwrap();
        g = gpu().matmul(&g, &up(&w), false).unwrap();
        g = gpu().unary(UnaryOp::Gelu, &g).unwrap();
        g = gpu().layer_norm(&g, None, None, 1e-5).unwrap();
    }
    assert_close("chain", &g, &c, 1e-3, 1e-3);
}

#[test]
fn unimplemented_ops_and_dtypes_are_unsupported() {
    let h = Tensor::from_bytes(DType::F16, &[2, 2], &[0u8; 8]).unwrap();
    let hg = up(&h);
    let Err(TensorError::Unsupported(msg)) = gpu().softmax(&hg, 1) else {
        panic!("f16 softmax should be unsupported");
    };
    assert!(msg.contains("softmax") && msg.contains("f16"), "{msg}");
    // Validation errors are the shared ones, not Unsupported.
    let a = up(&Tensor::from_f32(&[2, 3], vec![0.0; 6]).unwrap());
    assert!(matches!(
        gpu().matmul(&a, &a, false),
        Err(TensorError::Shape(_))
    ));
    let i = Tensor::from_bytes(DType::I32, &[2], &[0u8; 8]).unwrap();
    assert!(matches!(
        gpu().unary(UnaryOp::Exp, &i),
        Err(TensorError::DType(_))
    ));
    // The host copy round-trips f16 bytes untouched.
    assert_eq!(
        gpu().to_host(&hg).unwrap().host().unwrap().bytes(),
        &[0u8; 8]
    );
}

#[test]
fn conv2d_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(13);
    struct Case {
        x: [usize; 4],
        /// Output channels, kernel (h, w).
        o: usize,
        k: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    }
    let case = |x, o, k, stride, padding, dilation, groups| Case {
        x,
        o,
        k,
        stride,
        padding,
        dilation,
        groups,
    };
    let cases = [
        case([1, 3, 7, 9], 5, (3, 3), (1, 1), (0, 0), (1, 1), 1),
        case([2, 3, 11, 13], 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        case([2, 4, 15, 10], 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),
        case([1, 3, 17, 17], 8, (7, 7), (2, 2), (3, 3), (1, 1), 1),
        case([2, 2, 13, 11], 3, (3, 3), (1, 1), (2, 2), (2, 2), 1),
        case([1, 4, 9, 12], 6, (3, 2), (2, 1), (1, 0), (2, 1), 2),
        case([2, 6, 10, 9], 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),
        case([1, 8, 13, 13], 8, (3, 3), (2, 2), (1, 1), (1, 1), 8),
        case([3, 5, 6, 7], 7, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        case([1, 2, 5, 5], 3, (5, 5), (3, 3), (2, 2), (1, 1), 1),
        case([0, 3, 4, 4], 2, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ];
    for c in cases {
        let p = Conv2d {
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: c.groups,
        };
        let x = rng.tensor(&c.x, -1.0, 1.0);
        let w = rng.tensor(&[c.o, c.x[1] / c.groups, c.k.0, c.k.1], -0.5, 0.5);
        let b = rng.tensor(&[c.o], -1.0, 1.0);
        for bias in [None, Some(&b)] {
            let what = format!("conv2d x {:?} o {} {p:?} bias {}", c.x, c.o, bias.is_some());
            let want = cpu.conv2d(&x, &w, bias, p).unwrap();
            let gb = bias.map(up);
            let got = gpu().conv2d(&up(&x), &up(&w), gb.as_ref(), p).unwrap();
            assert_close(&what, &got, &want, 1e-5, 1e-4);
        }
    }
    // Host inputs are uploaded on the fly; shape errors are the shared ones.
    let x = rng.tensor(&[1, 2, 5, 5], -1.0, 1.0);
    let w = rng.tensor(&[4, 2, 3, 3], -1.0, 1.0);
    let p = Conv2d {
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
    };
    assert_close(
        "conv2d host inputs",
        &gpu().conv2d(&x, &w, None, p).unwrap(),
        &cpu.conv2d(&x, &w, None, p).unwrap(),
        1e-5,
        1e-4,
    );
    let bad = rng.tensor(&[4, 3, 3, 3], -1.0, 1.0);
    assert!(matches!(
        gpu().conv2d(&up(&x), &up(&bad), None, p),
        Err(TensorError::Shape(_))
    ));
}

#[test]
fn pool2d_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(14);
    let cases = [
        ([2, 3, 11, 13], (3, 3), (2, 2), (1, 1)),
        ([1, 4, 8, 8], (2, 2), (2, 2), (0, 0)),
        ([2, 2, 9, 7], (2, 2), (2, 2), (0, 0)),
        ([1, 3, 10, 6], (3, 2), (1, 2), (1, 1)),
        ([1, 1, 5, 5], (5, 5), (1, 1), (2, 2)),
        ([3, 2, 7, 7], (3, 3), (3, 3), (0, 0)),
    ];
    for (shape, kernel, stride, padding) in cases {
        let mut x = rng.tensor(&shape, -2.0, 2.0);
        if shape[0] == 2 && shape[2] == 11 {
            // NaNs propagate through max (and avg) like the CPU backend.
            let mut v = floats(&x);
            v[5] = f32::NAN;
            v[200] = f32::NAN;
            x = Tensor::from_f32(&shape, v).unwrap();
        }
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let p = Pool2d {
                kind,
                kernel,
                stride,
                padding,
            };
            let want = cpu.pool2d(&x, p).unwrap();
            let got = gpu().pool2d(&up(&x), p).unwrap();
            assert_close(&format!("pool2d {shape:?} {p:?}"), &got, &want, 1e-6, 1e-5);
        }
    }
    let x = up(&rng.tensor(&[1, 1, 4, 4], -1.0, 1.0));
    let p = Pool2d {
        kind: PoolKind::Max,
        kernel: (2, 2),
        stride: (2, 2),
        padding: (2, 2),
    };
    assert!(matches!(
        gpu().pool2d(&x, p),
        Err(TensorError::InvalidArgument(_))
    ));
}

/// A backend of its own, so other tests running at the same time do not
/// disturb its memory counters.
fn own_gpu() -> GpuBackend {
    GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"))
}

#[test]
fn freed_buffers_are_reused() {
    let g = own_gpu();
    assert_eq!(g.pooled_bytes(), 0);
    let a = g.full(DType::F32, &[1000], 7.0).unwrap();
    assert_eq!(floats(&g.to_host(&a).unwrap()), vec![7.0; 1000]);
    drop(a);
    // 4000 bytes live in the 4096-byte class.
    assert_eq!(g.pooled_bytes(), 4096);
    // A result of the same class takes the freed buffer, and is fully
    // overwritten: nothing of the old contents shows.
    let b = g.full(DType::F32, &[900], 2.0).unwrap();
    assert_eq!(g.pooled_bytes(), 0);
    assert_eq!(floats(&g.to_host(&b).unwrap()), vec![2.0; 900]);
    // A chain of results reuses the buffers of intermediates it drops.
    let x = Tensor::from_f32(&[1, 1, 6, 6], (0..36).map(|v| v as f32).collect()).unwrap();
    let mut t = g.from_host(&x).unwrap();
    for _ in 0..20 {
        t = g.affine(&t, 1.0, 1.0).unwrap();
    }
    assert!(g.pooled_bytes() <= 2 * 256, "{}", g.pooled_bytes());
    let want: Vec<f32> = (0..36).map(|v| v as f32 + 20.0).collect();
    assert_eq!(floats(&g.to_host(&t).unwrap()), want);
    // An intermediate dropped before the recorded work ran still feeds it.
    let c = g.full(DType::F32, &[64], 1.5).unwrap();
    let d = g.affine(&c, 2.0, 0.0).unwrap();
    drop(c);
    let e = g.full(DType::F32, &[64], 9.0).unwrap();
    assert_eq!(floats(&g.to_host(&d).unwrap()), vec![3.0; 64]);
    assert_eq!(floats(&g.to_host(&e).unwrap()), vec![9.0; 64]);
}

#[test]
fn allocated_bytes_counts_live_buffers() {
    let g = own_gpu();
    assert_eq!(g.allocated_bytes(), 0);
    // Uploads count their size rounded up to 16 bytes.
    let x = g
        .from_host(&Tensor::from_f32(&[3, 5], vec![1.0; 15]).unwrap())
        .unwrap();
    assert_eq!(g.allocated_bytes(), 64);
    // Results count their size class.
    let y = g.full(DType::F32, &[1000], 0.0).unwrap();
    assert_eq!(g.allocated_bytes(), 64 + 4096);
    let z = g.unary(UnaryOp::Exp, &x).unwrap();
    assert_eq!(g.allocated_bytes(), 64 + 4096 + 256);
    // Clones share a buffer.
    let z2 = z.clone();
    assert_eq!(g.allocated_bytes(), 64 + 4096 + 256);
    drop((z, z2, y));
    assert_eq!(g.allocated_bytes(), 64);
    assert_eq!(g.pooled_bytes(), 4096 + 256);
    drop(x);
    assert_eq!(g.allocated_bytes(), 0);
    // Host copies hold no device memory.
    let big = g.full(DType::F32, &[1 << 16], 1.0).unwrap();
    let host = g.to_host(&big).unwrap();
    drop(big);
    assert_eq!(g.allocated_bytes(), 0);
    assert_eq!(host.numel(), 1 << 16);
}

#[test]
fn absurd_allocations_fail_cleanly() {
    for shape in [&[1usize << 40][..], &[1 << 40, 1 << 40, 1 << 40]] {
        match gpu().full(DType::F32, shape, 1.0) {
            Err(TensorError::OutOfMemory(_) | TensorError::InvalidArgument(_)) => {}
            other => panic!("full {shape:?}: {other:?}"),
        }
    }
    // The backend still works afterwards.
    let t = gpu().full(DType::F32, &[2], 3.0).unwrap();
    assert_eq!(floats(&gpu().to_host(&t).unwrap()), vec![3.0, 3.0]);
}

#[test]
fn oversized_results_are_out_of_memory_and_the_backend_recovers() {
    let g = own_gpu();
    let a = g.full(DType::F32, &[1 << 17, 1], 1.0).unwrap();
    let b = g.full(DType::F32, &[1, 1 << 17], 2.0).unwrap();
    // 2^34 floats (64 GiB): past any device's largest storage binding.
    match g.matmul(&a, &b, false) {
        Err(TensorError::OutOfMemory(msg)) => assert!(msg.contains("matmul"), "{msg}"),
        other => panic!("64 GiB matmul result: {other:?}"),
    }
    let small = g.matmul(
        &a.with_shape(&[1 << 10, 128]),
        &b.with_shape(&[128, 1 << 10]),
        false,
    );
    let c = g.to_host(&small.unwrap()).unwrap();
    assert_eq!(c.shape(), &[1 << 10, 1 << 10]);
    assert!(floats(&c).iter().all(|&v| v == 256.0));
}

#[test]
fn a_lost_device_fails_every_operation_without_hanging() {
    let g = own_gpu();
    let x = g.full(DType::F32, &[8], 1.0).unwrap();
    let pending = g.affine(&x, 2.0, 0.0).unwrap();
    assert!(g.lost().is_none());
    g.destroy_device();
    assert!(g.lost().is_some());
    let lost = |what: &str, r: Result<Tensor, TensorError>| match r {
        Err(TensorError::DeviceLost(msg)) => {
            assert!(msg.to_lowercase().contains("destroyed"), "{what}: {msg}")
        }
        other => panic!("{what} after device loss: {other:?}"),
    };
    lost("to_host of recorded work", g.to_host(&pending));
    lost("full", g.full(DType::F32, &[4], 0.0));
    lost("unary", g.unary(UnaryOp::Exp, &x));
    lost(
        "upload",
        g.from_host(&Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap()),
    );
    lost(
        "matmul",
        g.matmul(&x.with_shape(&[2, 4]), &x.with_shape(&[4, 2]), false),
    );
    // Other backends are unaffected.
    let t = gpu().full(DType::F32, &[2], 3.0).unwrap();
    assert_eq!(floats(&gpu().to_host(&t).unwrap()), vec![3.0, 3.0]);
}

#[test]
fn info_names_the_device() {
    let info = gpu().info();
    assert_eq!(info.kind, "gpu");
    assert!(!info.device.is_empty());
    assert!(!info.api.is_empty());
}
