//! Every CPU backend operation against a plain, obviously correct reference
//! written here (loops over indices, computed in f64 where rounding matters),
//! on deterministic pseudo-random data, plus every error case.
//!
//! Tolerances, stated per test:
//! - matmul / conv2d / attention (f32): |got − want| ≤ 1e-4 · Σ|terms| + 1e-6,
//!   i.e. 1e-4 relative to the magnitude of the dot products involved;
//! - f16 paths: the same with 4e-3 (one f16 rounding of inputs and output);
//! - transcendental unary ops: 2e-6 relative + 1e-6 absolute;
//! - softmax / layer norm / reductions: 1e-5 relative + 1e-6 absolute;
//! - layout ops, integer ops, casts, f32 add/sub/mul/div/max/min/pow/affine:
//!   exact;
//! - linear, whose reference is matmul → add → unary (each checked above):
//!   exact in f32; in f16, exactly the f32 result rounded once, and within
//!   1e-2 relative + 1e-2 of the f16 composition, which rounds every step.

use std::sync::Arc;

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{
    Attention, Backend, BinaryOp, Conv2d, DType, HostBuffer, Pool2d, PoolKind, ReduceOp, Storage,
    Tensor, TensorError, UnaryOp, shape,
};
use half::f16;

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic, dependency-free test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

fn cpu() -> CpuBackend {
    CpuBackend::new()
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

fn f32t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, data).unwrap()
}

fn rand_f32(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data = rng.vec(numel(shape));
    (f32t(shape, data.clone()), data)
}

fn typed<T: bytemuck::Pod + Send + Sync>(dtype: DType, shape: &[usize], data: Vec<T>) -> Tensor {
    Tensor::from_host(dtype, shape, HostBuffer::from_vec(data)).unwrap()
}

fn f16t(shape: &[usize], data: &[f32]) -> Tensor {
    typed(
        DType::F16,
        shape,
        data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
    )
}

/// Values as f16 would hold them.
fn round_f16(data: &[f32]) -> Vec<f32> {
    data.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

fn read_f32(t: &Tensor) -> Vec<f32> {
    let host = t.host().expect("host tensor");
    match t.dtype() {
        DType::F32 => host.as_slice::<f32>().to_vec(),
        DType::F16 => host.as_slice::<f16>().iter().map(|v| v.to_f32()).collect(),
        other => panic!("read_f32 on {other}"),
    }
}

fn read<T: bytemuck::Pod>(t: &Tensor) -> Vec<T> {
    assert_eq!(size_of::<T>(), t.dtype().size());
    t.host().expect("host tensor").as_slice::<T>().to_vec()
}

/// Asserts |got − want| ≤ rtol·scale + atol element by element, where
/// `scale` is the magnitude the error is relative to (|want| by default).
fn assert_close_scaled(got: &[f32], want: &[f64], scale: &[f64], rtol: f64, atol: f64, what: &str) {
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

fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    assert_close_scaled(got, want, &scale, rtol, atol, what);
}

fn coords(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = index % shape[d];
        index /= shape[d];
    }
    c
}

fn flat(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Index into `shape` of output coordinates `c` under NumPy broadcasting.
fn bcast_index(c: &[usize], shape: &[usize]) -> usize {
    let lead = c.len() - shape.len();
    let cc: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { c[lead + i] })
        .collect();
    flat(&cc, shape)
}

fn bcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == 1 { db } else { da }
        })
        .collect()
}

macro_rules! assert_err {
    ($result:expr, $variant:ident) => {
        match $result {
            Err(TensorError::$variant(msg)) => msg,
            Err(other) => panic!("expected {}, got {other:?}", stringify!($variant)),
            Ok(_) => panic!("expected {}, got Ok", stringify!($variant)),
        }
    };
}

// ---------------------------------------------------------------- matmul

/// Naive batched matmul in f64 with NumPy batch broadcasting; returns the
/// result and Σ|a·b| per output element (the error scale).
fn ref_matmul(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    tb: bool,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = if tb {
        sb[sb.len() - 2]
    } else {
        sb[sb.len() - 1]
    };
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch = bcast_shape(ba, bb);
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let (mut out, mut scale) = (vec![0.0; numel(&out_shape)], vec![0.0; numel(&out_shape)]);
    for bi in 0..numel(&batch) {
        let c = coords(bi, &batch);
        let (ia, ib) = (bcast_index(&c, ba), bcast_index(&c, bb));
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let x = f64::from(a[ia * m * k + i * k + p]);
                    let y = f64::from(if tb {
                        b[ib * n * k + j * k + p]
                    } else {
                        b[ib * k * n + p * n + j]
                    });
                    s += x * y;
                    abs += (x * y).abs();
                }
                out[bi * m * n + i * n + j] = s;
                scale[bi * m * n + i * n + j] = abs;
            }
        }
    }
    (out_shape, out, scale)
}

fn check_matmul(rng: &mut Rng, sa: &[usize], sb: &[usize], tb: bool) {
    let (a, da) = rand_f32(rng, sa);
    let (b, db) = rand_f32(rng, sb);
    let got = cpu().matmul(&a, &b, tb).unwrap();
    let (shape, want, scale) = ref_matmul(&da, sa, &db, sb, tb);
    assert_eq!(got.shape(), shape, "matmul {sa:?} x {sb:?} tb={tb}");
    assert_close_scaled(
        &read_f32(&got),
        &want,
        &scale,
        1e-4,
        1e-6,
        &format!("matmul {sa:?} x {sb:?} tb={tb}"),
    );
}

#[test]
fn matmul_matches_naive_on_odd_shapes() {
    let mut rng = Rng::new(1);
    for (m, k, n) in [
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 65),
        (130, 70, 90),
        (64, 64, 64),
        (1, 300, 1),
        (200, 1, 3),
    ] {
        for tb in [false, true] {
            let sb = if tb { [n, k] } else { [k, n] };
            check_matmul(&mut rng, &[m, k], &sb, tb);
        }
    }
}

#[test]
fn matmul_large_threaded() {
    let mut rng = Rng::new(2);
    check_matmul(&mut rng, &[257, 300], &[300, 129], false);
    check_matmul(&mut rng, &[257, 300], &[129, 300], true);
}

#[test]
fn matmul_batched_with_broadcasting() {
    let mut rng = Rng::new(3);
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[3, 5, 6]),
        (&[1, 4, 5], &[3, 5, 2]),
        (&[2, 1, 4, 5], &[1, 3, 5, 6]),
        (&[6, 7, 8], &[8, 9]),      // one weight under consecutive activations
        (&[2, 3, 7, 8], &[8, 9]),   // same, two batch dims
        (&[4, 5], &[3, 5, 6]),      // a broadcast over b's batch
        (&[64, 8, 8], &[64, 8, 8]), // many small products in parallel
        (&[3, 1, 40, 50], &[1, 2, 50, 60]),
        (&[1, 3, 5], &[1, 5, 4]),
    ];
    for (sa, sb) in cases {
        check_matmul(&mut rng, sa, sb, false);
        let mut sbt = sb.to_vec();
        let r = sbt.len();
        sbt.swap(r - 1, r - 2);
        check_matmul(&mut rng, sa, &sbt, true);
    }
}

#[test]
fn matmul_empty_dimensions() {
    let a = f32t(&[0, 3], vec![]);
    let b = f32t(&[3, 4], vec![1.0; 12]);
    assert_eq!(cpu().matmul(&a, &b, false).unwrap().shape(), [0, 4]);
    // k = 0: an empty sum is 0.
    let a = f32t(&[2, 0], vec![]);
    let b = f32t(&[0, 3], vec![]);
    let out = cpu().matmul(&a, &b, false).unwrap();
    assert_eq!(read_f32(&out), vec![0.0; 6]);
}

#[test]
fn matmul_f16() {
    let mut rng = Rng::new(4);
    for (sa, sb) in [(vec![17, 33], vec![33, 65]), (vec![2, 5, 9], vec![9, 3])] {
        let (da, db) = (
            round_f16(&rng.vec(numel(&sa))),
            round_f16(&rng.vec(numel(&sb))),
        );
        let got = cpu()
            .matmul(&f16t(&sa, &da), &f16t(&sb, &db), false)
            .unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let (shape, want, scale) = ref_matmul(&da, &sa, &db, &sb, false);
        assert_eq!(got.shape(), shape);
        assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "matmul f16");
    }
}

#[test]
fn matmul_errors() {
    let c = cpu();
    let a = f32t(&[2, 3], vec![0.0; 6]);
    let msg = assert_err!(c.matmul(&a, &f32t(&[4, 5], vec![0.0; 20]), false), Shape);
    assert_eq!(
        msg,
        "matmul: a [2, 3] and b [4, 5]: inner dimensions 3 and 4 differ"
    );
    assert_err!(c.matmul(&a, &f32t(&[3, 5], vec![0.0; 15]), true), Shape);
    assert_err!(
        c.matmul(
            &f32t(&[3], vec![0.0; 3]),
            &f32t(&[3, 2], vec![0.0; 6]),
            false
        ),
        Shape
    );
    assert_err!(c.matmul(&a, &f32t(&[3], vec![0.0; 3]), false), Shape);
    assert_err!(
        c.matmul(
            &f32t(&[2, 2, 3], vec![0.0; 12]),
            &f32t(&[3, 3, 4], vec![0.0; 36]),
            false
        ),
        Shape
    );
    let i = typed(DType::I32, &[2, 2], vec![0i32; 4]);
    let msg = assert_err!(c.matmul(&i, &i, false), DType);
    assert!(msg.contains("matmul") && msg.contains("i32"), "{msg}");
    assert_err!(c.matmul(&a, &f16t(&[3, 2], &[0.0; 6]), false), DType);
}

// ---------------------------------------------------------------- binary

const BROADCAST_CASES: &[(&[usize], &[usize])] = &[
    (&[2, 3], &[2, 3]),
    (&[4, 5], &[5]),
    (&[5], &[4, 5]),
    (&[4, 1], &[1, 5]),
    (&[2, 1, 3], &[4, 1]),
    (&[], &[3]),
    (&[3, 2], &[]),
    (&[3, 1, 5, 1], &[1, 4, 1, 6]),
    (&[7], &[1]),
    (&[300, 257], &[257]),
    (&[1000, 100], &[1000, 1]),
    (&[2, 0, 3], &[3]),
    (&[1, 1], &[1]),
];

fn ref_binary<T: Copy>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: impl Fn(T, T) -> T,
) -> (Vec<usize>, Vec<T>) {
    let out = bcast_shape(sa, sb);
    let data = (0..numel(&out))
        .map(|i| {
            let c = coords(i, &out);
            f(a[bcast_index(&c, sa)], b[bcast_index(&c, sb)])
        })
        .collect();
    (out, data)
}

fn f32_op(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        BinaryOp::Maximum => |x: f32, y: f32| if x.is_nan() || x > y { x } else { y },
        BinaryOp::Minimum => |x: f32, y: f32| if x.is_nan() || x < y { x } else { y },
        BinaryOp::Pow => f32::powf,
    }
}

const ALL_BINARY: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Maximum,
    BinaryOp::Minimum,
    BinaryOp::Pow,
];

#[test]
fn binary_f32_broadcasts_like_numpy() {
    let mut rng = Rng::new(10);
    for &(sa, sb) in BROADCAST_CASES {
        for op in ALL_BINARY {
            let (a, da) = rand_f32(&mut rng, sa);
            // Positive b keeps pow real and division away from zero.
            let db: Vec<f32> = rng.vec(numel(sb)).iter().map(|v| v.abs() + 0.5).collect();
            let b = f32t(sb, db.clone());
            let got = cpu().binary(op, &a, &b).unwrap();
            let (shape, want) = ref_binary(&da, sa, &db, sb, f32_op(op));
            assert_eq!(got.shape(), shape, "{op} {sa:?} {sb:?}");
            let g = read_f32(&got);
            for (i, (x, y)) in g.iter().zip(&want).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{op} {sa:?} {sb:?} [{i}]: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn binary_maximum_propagates_nan() {
    let a = f32t(&[3], vec![f32::NAN, 1.0, 2.0]);
    let b = f32t(&[3], vec![0.0, f32::NAN, 1.0]);
    for op in [BinaryOp::Maximum, BinaryOp::Minimum] {
        let got = read_f32(&cpu().binary(op, &a, &b).unwrap());
        assert!(got[0].is_nan() && got[1].is_nan(), "{op}: {got:?}");
    }
}

#[test]
fn binary_f16() {
    let mut rng = Rng::new(11);
    for &(sa, sb) in &BROADCAST_CASES[..9] {
        for op in ALL_BINARY {
            let da = round_f16(&rng.vec(numel(sa)));
            let db: Vec<f32> = round_f16(
                &rng.vec(numel(sb))
                    .iter()
                    .map(|v| v.abs() + 0.5)
                    .collect::<Vec<_>>(),
            );
            let got = cpu().binary(op, &f16t(sa, &da), &f16t(sb, &db)).unwrap();
            assert_eq!(got.dtype(), DType::F16);
            let (_, want) = ref_binary(&da, sa, &db, sb, f32_op(op));
            let want = round_f16(&want);
            let g = read_f32(&got);
            for (x, y) in g.iter().zip(&want) {
                assert!(x == y || (x.is_nan() && y.is_nan()), "{op} f16: {x} vs {y}");
            }
        }
    }
}

#[test]
fn binary_integers() {
    let mut rng = Rng::new(12);
    let int_ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ];
    for &(sa, sb) in BROADCAST_CASES {
        for op in int_ops {
            let da: Vec<i64> = (0..numel(sa))
                .map(|_| rng.below(2001) as i64 - 1000)
                .collect();
            let db: Vec<i64> = (0..numel(sb))
                .map(|_| {
                    let v = rng.below(200) as i64 - 100;
                    if v == 0 { 7 } else { v }
                })
                .collect();
            let f = |x: i64, y: i64| match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
                BinaryOp::Maximum => x.max(y),
                _ => x.min(y),
            };
            let (shape, want) = ref_binary(&da, sa, &db, sb, f);
            let got = cpu()
                .binary(
                    op,
                    &typed(DType::I64, sa, da.clone()),
                    &typed(DType::I64, sb, db.clone()),
                )
                .unwrap();
            assert_eq!((got.dtype(), got.shape()), (DType::I64, &shape[..]));
            assert_eq!(read::<i64>(&got), want, "{op} i64 {sa:?} {sb:?}");
            let (a32, b32): (Vec<i32>, Vec<i32>) = (
                da.iter().map(|&v| v as i32).collect(),
                db.iter().map(|&v| v as i32).collect(),
            );
            let got = cpu()
                .binary(op, &typed(DType::I32, sa, a32), &typed(DType::I32, sb, b32))
                .unwrap();
            assert_eq!(got.dtype(), DType::I32);
            assert_eq!(
                read::<i32>(&got),
                want.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                "{op} i32"
            );
        }
    }
    // Division truncates toward zero; overflow wraps instead of trapping.
    let a = typed(DType::I32, &[3], vec![-7i32, 7, i32::MIN]);
    let b = typed(DType::I32, &[3], vec![2i32, -2, -1]);
    assert_eq!(
        read::<i32>(&cpu().binary(BinaryOp::Div, &a, &b).unwrap()),
        vec![-3, -3, i32::MIN]
    );
    let big = typed(DType::I32, &[1], vec![i32::MAX]);
    assert_eq!(
        read::<i32>(&cpu().binary(BinaryOp::Add, &big, &big).unwrap()),
        vec![-2]
    );
}

#[test]
fn binary_errors() {
    let c = cpu();
    let a = f32t(&[2, 3], vec![0.0; 6]);
    let msg = assert_err!(
        c.binary(BinaryOp::Add, &a, &f32t(&[4], vec![0.0; 4])),
        Shape
    );
    assert!(
        msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4]"),
        "{msg}"
    );
    assert_err!(
        c.binary(BinaryOp::Mul, &a, &f16t(&[2, 3], &[0.0; 6])),
        DType
    );
    let i = typed(DType::I32, &[2], vec![1i32, 2]);
    assert_err!(c.binary(BinaryOp::Pow, &i, &i), DType);
    assert_err!(
        c.binary(BinaryOp::Add, &i, &typed(DType::I64, &[2], vec![1i64, 2])),
        DType
    );
    let u = typed(DType::U8, &[2], vec![1u8, 2]);
    assert_err!(c.binary(BinaryOp::Add, &u, &u), DType);
    let zero = typed(DType::I32, &[2], vec![1i32, 0]);
    assert_err!(c.binary(BinaryOp::Div, &i, &zero), InvalidArgument);
}

// ---------------------------------------------------------------- unary

fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

fn ref_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
        UnaryOp::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Erf => erf64(x),
    }
}

const ALL_UNARY: [UnaryOp; 13] = [
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

#[test]
fn unary_f32_matches_f64_reference() {
    let mut rng = Rng::new(20);
    // Wide range, both signs, plus the edges exp must get right.
    let mut data: Vec<f32> = (0..50_000)
        .map(|i| rng.f32() * if i % 3 == 0 { 100.0 } else { 8.0 })
        .collect();
    data.extend([
        0.0,
        -0.0,
        88.7,
        88.8,
        -87.3,
        -87.4,
        -200.0,
        200.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-30,
        -1e-30,
    ]);
    for op in ALL_UNARY {
        let input: Vec<f32> = match op {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => {
                data.iter().map(|v| v.abs() + 1e-3).collect()
            }
            _ => data.clone(),
        };
        let got = cpu()
            .unary(op, &f32t(&[input.len()], input.clone()))
            .unwrap();
        let want: Vec<f64> = input.iter().map(|&v| ref_unary(op, f64::from(v))).collect();
        assert_close(&read_f32(&got), &want, 2e-6, 1e-6, &format!("{op}"));
    }
    let nan = cpu()
        .unary(UnaryOp::Exp, &f32t(&[1], vec![f32::NAN]))
        .unwrap();
    assert!(read_f32(&nan)[0].is_nan());
    let relu = cpu()
        .unary(UnaryOp::Relu, &f32t(&[1], vec![f32::NAN]))
        .unwrap();
    assert!(read_f32(&relu)[0].is_nan());
}

/// GELU's left tail is tiny, so an absolute tolerance would hide any error
/// there; it has to be right relative to its own size.
#[test]
fn gelu_tail_is_relatively_accurate() {
    let input: Vec<f32> = (0..20_000).map(|i| -2.0 - i as f32 * 6e-4).collect();
    let got = read_f32(
        &cpu()
            .unary(UnaryOp::Gelu, &f32t(&[input.len()], input.clone()))
            .unwrap(),
    );
    let want: Vec<f64> = input
        .iter()
        .map(|&x| {
            let x = f64::from(x);
            0.5 * x * libm::erfc(-x / 2f64.sqrt())
        })
        .collect();
    let worst = got
        .iter()
        .zip(&want)
        // exp flushes what would be subnormal to 0, as documented.
        .filter(|&(_, &w)| w.abs() > 1e-36)
        .map(|(&g, &w)| ((f64::from(g) - w) / w).abs())
        .fold(0.0, f64::max);
    eprintln!("gelu tail worst relative error {worst:e}");
    assert!(worst < 1e-6, "gelu tail: worst relative error {worst:e}");
    let far = cpu()
        .unary(UnaryOp::Gelu, &f32t(&[3], vec![-20.0, -1e30, f32::MIN]))
        .unwrap();
    assert!(read_f32(&far).iter().all(|&v| v == 0.0), "{far:?}");
}

#[test]
fn unary_f16() {
    let mut rng = Rng::new(21);
    let data = round_f16(&(0..999).map(|_| rng.f32() * 6.0).collect::<Vec<_>>());
    for op in ALL_UNARY {
        let input: Vec<f32> = match op {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => {
                round_f16(&data.iter().map(|v| v.abs() + 0.01).collect::<Vec<_>>())
            }
            _ => data.clone(),
        };
        let got = cpu().unary(op, &f16t(&[3, 333], &input)).unwrap();
        assert_eq!((got.dtype(), got.shape()), (DType::F16, &[3, 333][..]));
        let want: Vec<f64> = input.iter().map(|&v| ref_unary(op, f64::from(v))).collect();
        assert_close(&read_f32(&got), &want, 1e-3, 1e-4, &format!("{op} f16"));
    }
}

#[test]
fn unary_integers() {
    let a = typed(DType::I32, &[4], vec![-3i32, 0, 5, i32::MIN]);
    assert_eq!(
        read::<i32>(&cpu().unary(UnaryOp::Neg, &a).unwrap()),
        vec![3, 0, -5, i32::MIN]
    );
    assert_eq!(
        read::<i32>(&cpu().unary(UnaryOp::Abs, &a).unwrap()),
        vec![3, 0, 5, i32::MIN]
    );
    let b = typed(DType::I64, &[2, 1], vec![-9i64, 4]);
    let neg = cpu().unary(UnaryOp::Neg, &b).unwrap();
    assert_eq!((neg.shape(), read::<i64>(&neg)), (&[2, 1][..], vec![9, -4]));
    assert_eq!(
        read::<i64>(&cpu().unary(UnaryOp::Abs, &b).unwrap()),
        vec![9, 4]
    );
}

#[test]
fn unary_errors() {
    let i = typed(DType::I32, &[2], vec![1i32, 2]);
    for op in ALL_UNARY.into_iter().skip(2) {
        let msg = assert_err!(cpu().unary(op, &i), DType);
        assert!(msg.contains(op.name()) && msg.contains("i32"), "{msg}");
    }
    let u = typed(DType::U8, &[2], vec![1u8, 2]);
    assert_err!(cpu().unary(UnaryOp::Neg, &u), DType);
    assert_err!(cpu().affine(&i, 2.0, 1.0), DType);
}

#[test]
fn affine_is_exact() {
    let mut rng = Rng::new(22);
    let (x, data) = rand_f32(&mut rng, &[70, 130]);
    let got = read_f32(&cpu().affine(&x, 1.7, -0.3).unwrap());
    let want: Vec<f32> = data.iter().map(|v| v * 1.7 + -0.3).collect();
    assert_eq!(got, want);
    let h = cpu().affine(&f16t(&[2], &[1.0, 2.0]), 2.0, 0.5).unwrap();
    assert_eq!((h.dtype(), read_f32(&h)), (DType::F16, vec![2.5, 4.5]));
}

// ---------------------------------------------------------------- linear

/// `linear` the long way: matmul, then the bias added, then the activation.
fn composed(
    a: &Tensor,
    b: &Tensor,
    tb: bool,
    bias: Option<&Tensor>,
    activation: Option<UnaryOp>,
) -> Tensor {
    let c = cpu();
    let mut y = c.matmul(a, b, tb).unwrap();
    if let Some(bias) = bias {
        y = c.binary(BinaryOp::Add, &y, bias).unwrap();
    }
    if let Some(op) = activation {
        y = c.unary(op, &y).unwrap();
    }
    y
}

/// No activation, then every unary op.
fn activations() -> impl Iterator<Item = Option<UnaryOp>> {
    std::iter::once(None).chain(ALL_UNARY.map(Some))
}

/// Operands and bias for `linear`: uniform in [-1, 1), or in [0, 1) for the
/// activations defined only on non-negative inputs.
fn linear_operands(
    rng: &mut Rng,
    sa: &[usize],
    sb: &[usize],
    n: usize,
    activation: Option<UnaryOp>,
) -> [Vec<f32>; 3] {
    let positive = matches!(
        activation,
        Some(UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt)
    );
    [numel(sa), numel(sb), n].map(|len| {
        let v = rng.vec(len);
        if positive {
            v.iter().map(|x| x.abs()).collect()
        } else {
            v
        }
    })
}

/// f32 bits, so that NaN compares equal to the same NaN.
fn bits(t: &Tensor) -> Vec<u32> {
    read_f32(t).iter().map(|v| v.to_bits()).collect()
}

#[test]
fn linear_equals_matmul_add_unary() {
    let mut rng = Rng::new(60);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]),
        (&[3, 5], &[5, 7]),
        (&[17, 33], &[33, 65]),
        (&[257, 300], &[300, 129]), // threaded gemm
        (&[2, 0], &[0, 3]),         // k = 0: the bias alone
        (&[6, 7, 8], &[8, 9]),      // one weight under consecutive activations
        (&[2, 3, 4, 5], &[3, 5, 6]),
        (&[4, 5], &[3, 5, 6]),      // a broadcast over b's batch
        (&[64, 8, 8], &[64, 8, 8]), // many small products in parallel
        (&[3, 1, 40, 50], &[1, 2, 50, 60]),
    ];
    for (sa, sb) in cases {
        for tb in [false, true] {
            let mut sb = sb.to_vec();
            let r = sb.len();
            if tb {
                sb.swap(r - 1, r - 2);
            }
            let n = if tb { sb[r - 2] } else { sb[r - 1] };
            for activation in activations() {
                let [da, db, dbias] = linear_operands(&mut rng, sa, &sb, n, activation);
                let (a, b, bias) = (f32t(sa, da), f32t(&sb, db), f32t(&[n], dbias));
                for bias in [None, Some(&bias)] {
                    let what = format!("linear {sa:?} x {sb:?} tb={tb} {activation:?} {bias:?}");
                    let got = cpu().linear(&a, &b, tb, bias, activation).unwrap();
                    let want = composed(&a, &b, tb, bias, activation);
                    assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()));
                    assert!(bits(&got) == bits(&want), "{what}: differs");
                }
            }
        }
    }
}

#[test]
fn linear_f16() {
    let mut rng = Rng::new(61);
    let cases: &[(&[usize], &[usize], bool)] = &[
        (&[17, 9], &[9, 33], false),
        (&[3, 7], &[5, 7], true),
        (&[2, 5, 9], &[9, 3], false),
        (&[4, 2, 6], &[4, 6, 5], false),
    ];
    for &(sa, sb, tb) in cases {
        let n = if tb {
            sb[sb.len() - 2]
        } else {
            sb[sb.len() - 1]
        };
        for activation in activations() {
            let [da, db, dbias] =
                linear_operands(&mut rng, sa, sb, n, activation).map(|v| round_f16(&v));
            let (a, b, bias) = (f16t(sa, &da), f16t(sb, &db), f16t(&[n], &dbias));
            let what = format!("linear f16 {sa:?} x {sb:?} tb={tb} {activation:?}");
            let got = cpu().linear(&a, &b, tb, Some(&bias), activation).unwrap();
            assert_eq!(got.dtype(), DType::F16, "{what}");
            // Computed in f32 and rounded once, as matmul does with f16.
            let wide = cpu()
                .linear(
                    &f32t(sa, da),
                    &f32t(sb, db),
                    tb,
                    Some(&f32t(&[n], dbias)),
                    activation,
                )
                .unwrap();
            assert!(
                bits(&got) == bits(&f32t(wide.shape(), round_f16(&read_f32(&wide)))),
                "{what}: not the f32 result rounded once"
            );
            // The composition rounds to f16 after every step, the fused op
            // only at the end.
            let want = read_f32(&composed(&a, &b, tb, Some(&bias), activation));
            let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            assert_close(&read_f32(&got), &want, 1e-2, 1e-2, &what);
        }
    }
}

#[test]
fn linear_errors() {
    let c = cpu();
    let a = f32t(&[2, 3], vec![0.0; 6]);
    let b = f32t(&[3, 4], vec![0.0; 12]);
    let linear = |bias: &Tensor| c.linear(&a, &b, false, Some(bias), Some(UnaryOp::Relu));
    let product = c.matmul(&a, &b, false).unwrap();
    // Each refused like the composition refuses it.
    let long = f32t(&[5], vec![0.0; 5]);
    let msg = assert_err!(linear(&long), Shape);
    assert!(msg.contains("linear") && msg.contains("[5]"), "{msg}");
    assert_err!(c.binary(BinaryOp::Add, &product, &long), Shape);
    let half = f16t(&[4], &[0.0; 4]);
    let msg = assert_err!(linear(&half), DType);
    assert!(msg.contains("linear") && msg.contains("f16"), "{msg}");
    assert_err!(c.binary(BinaryOp::Add, &product, &half), DType);
    let wrong = f32t(&[4, 5], vec![0.0; 20]);
    assert_eq!(
        c.linear(&a, &wrong, false, None, None).unwrap_err(),
        c.matmul(&a, &wrong, false).unwrap_err()
    );
    let i = typed(DType::I32, &[2, 2], vec![0i32; 4]);
    for activation in activations() {
        assert_eq!(
            c.linear(&i, &i, false, None, activation).unwrap_err(),
            c.matmul(&i, &i, false).unwrap_err()
        );
    }
    // Stricter than the composition: a bias is one row, not anything that
    // broadcasts.
    assert_err!(linear(&f32t(&[1, 4], vec![0.0; 4])), Shape);
    assert_err!(linear(&f32t(&[], vec![0.0])), Shape);
    let device = Tensor::new(DType::F32, &[4], Storage::Device(Arc::new(0u32)));
    let msg = assert_err!(linear(&device), Unsupported);
    assert!(msg.starts_with("linear"), "{msg}");
}

// ---------------------------------------------------------------- softmax, layer norm

fn ref_softmax(x: &[f32], shape: &[usize], axis: usize) -> Vec<f64> {
    let (outer, len, inner) = shape::split_at_axis(shape, axis);
    let mut out = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |l: usize| o * len * inner + l * inner + i;
            let max = (0..len)
                .map(|l| f64::from(x[at(l)]))
                .fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue; // all hidden: zeros
            }
            let sum: f64 = (0..len).map(|l| (f64::from(x[at(l)]) - max).exp()).sum();
            for l in 0..len {
                out[at(l)] = (f64::from(x[at(l)]) - max).exp() / sum;
            }
        }
    }
    out
}

#[test]
fn softmax_along_every_axis() {
    let mut rng = Rng::new(30);
    for shape in [vec![3, 5, 7], vec![64, 1000], vec![1, 1], vec![2, 9, 33]] {
        let data: Vec<f32> = rng.vec(numel(&shape)).iter().map(|v| v * 20.0).collect();
        let x = f32t(&shape, data.clone());
        for axis in 0..shape.len() {
            let got = cpu().softmax(&x, axis).unwrap();
            assert_close(
                &read_f32(&got),
                &ref_softmax(&data, &shape, axis),
                1e-5,
                1e-7,
                &format!("softmax {shape:?} axis {axis}"),
            );
        }
    }
}

#[test]
fn softmax_handles_infinities() {
    let ninf = f32::NEG_INFINITY;
    let data = vec![0.0, ninf, 1.0, ninf, ninf, ninf, 1000.0, -1000.0, 0.0];
    let x = f32t(&[3, 3], data.clone());
    let got = read_f32(&cpu().softmax(&x, 1).unwrap());
    assert_close(
        &got,
        &ref_softmax(&data, &[3, 3], 1),
        1e-6,
        1e-7,
        "softmax rows",
    );
    assert_eq!(&got[3..6], &[0.0, 0.0, 0.0]);
    // Same along a strided axis.
    let xt = cpu().transpose(&x, &[1, 0]).unwrap();
    let got = read_f32(&cpu().softmax(&xt, 0).unwrap());
    assert_eq!([got[1], got[4], got[7]], [0.0, 0.0, 0.0]);
    let h = cpu()
        .softmax(&f16t(&[2, 2], &[0.0, 0.0, 1.0, 1.0]), 1)
        .unwrap();
    assert_eq!((h.dtype(), read_f32(&h)), (DType::F16, vec![0.5; 4]));
}

#[test]
fn softmax_errors() {
    assert_err!(
        cpu().softmax(&f32t(&[2, 3], vec![0.0; 6]), 2),
        InvalidArgument
    );
    assert_err!(
        cpu().softmax(&typed(DType::I64, &[2], vec![1i64, 2]), 0),
        DType
    );
    let msg = assert_err!(shape::normalize_axis(-3, 2), InvalidArgument);
    assert!(msg.contains("-3") && msg.contains('2'), "{msg}");
}

fn ref_layer_norm(x: &[f32], n: usize, g: Option<&[f32]>, b: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        for (j, &v) in row.iter().enumerate() {
            let y = (f64::from(v) - mean) / (var + eps).sqrt();
            out.push(y * g.map_or(1.0, |g| f64::from(g[j])) + b.map_or(0.0, |b| f64::from(b[j])));
        }
    }
    out
}

#[test]
fn layer_norm_matches_pytorch_definition() {
    let mut rng = Rng::new(31);
    for shape in [vec![5, 33], vec![2, 3, 768], vec![1, 1], vec![300, 64]] {
        let n = *shape.last().unwrap();
        // An offset mean checks the two-pass variance.
        let data: Vec<f32> = rng
            .vec(numel(&shape))
            .iter()
            .map(|v| v * 3.0 + 10.0)
            .collect();
        let (g, b) = (rng.vec(n), rng.vec(n));
        let x = f32t(&shape, data.clone());
        let (gt, bt) = (f32t(&[n], g.clone()), f32t(&[n], b.clone()));
        for (gamma, beta) in [
            (None, None),
            (Some(&gt), Some(&bt)),
            (Some(&gt), None),
            (None, Some(&bt)),
        ] {
            let got = cpu().layer_norm(&x, gamma, beta, 1e-5).unwrap();
            let want = ref_layer_norm(&data, n, gamma.map(|_| &g[..]), beta.map(|_| &b[..]), 1e-5);
            assert_close(
                &read_f32(&got),
                &want,
                1e-4,
                2e-5,
                &format!("layer_norm {shape:?}"),
            );
        }
    }
    let h = cpu()
        .layer_norm(
            &f16t(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]),
            None,
            None,
            1e-5,
        )
        .unwrap();
    let want = ref_layer_norm(
        &[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
        4,
        None,
        None,
        1e-5,
    );
    assert_eq!(h.dtype(), DType::F16);
    assert_close(&read_f32(&h), &want, 2e-3, 1e-3, "layer_norm f16");
}

#[test]
fn layer_norm_errors() {
    let x = f32t(&[2, 3], vec![0.0; 6]);
    assert_err!(
        cpu().layer_norm(&x, Some(&f32t(&[2], vec![0.0; 2])), None, 1e-5),
        Shape
    );
    assert_err!(
        cpu().layer_norm(&x, None, Some(&f32t(&[1, 3], vec![0.0; 3])), 1e-5),
        Shape
    );
    assert_err!(
        cpu().layer_norm(&x, Some(&f16t(&[3], &[0.0; 3])), None, 1e-5),
        DType
    );
    assert_err!(
        cpu().layer_norm(&typed(DType::I32, &[3], vec![0i32; 3]), None, None, 1e-5),
        DType
    );
    assert_err!(
        cpu().layer_norm(&f32t(&[], vec![1.0]), None, None, 1e-5),
        Shape
    );
}

// ---------------------------------------------------------------- embedding

#[test]
fn embedding_gathers_rows() {
    let mut rng = Rng::new(40);
    let (table, data) = rand_f32(&mut rng, &[10, 7]);
    let ids = typed(DType::I32, &[2, 3], vec![0i32, 9, 3, 3, 5, 1]);
    let got = cpu().embedding(&table, &ids).unwrap();
    assert_eq!(got.shape(), [2, 3, 7]);
    let want: Vec<f32> = [0, 9, 3, 3, 5, 1]
        .iter()
        .flat_map(|&i| data[i * 7..(i + 1) * 7].to_vec())
        .collect();
    assert_eq!(read_f32(&got), want);
    // i64 ids, other table dtypes, scalar ids.
    let ids = typed(DType::I64, &[4], vec![2i64, 2, 0, 1]);
    let t64 = typed(DType::I64, &[3, 2], vec![0i64, 1, 10, 11, 20, 21]);
    assert_eq!(
        read::<i64>(&cpu().embedding(&t64, &ids).unwrap()),
        vec![20, 21, 20, 21, 0, 1, 10, 11]
    );
    let t8 = typed(DType::U8, &[3, 1], vec![5u8, 6, 7]);
    assert_eq!(
        read::<u8>(&cpu().embedding(&t8, &ids).unwrap()),
        vec![7, 7, 5, 6]
    );
    let th = f16t(&[3, 2], &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
    let got = cpu()
        .embedding(&th, &typed(DType::I32, &[], vec![1i32]))
        .unwrap();
    assert_eq!((got.shape(), read_f32(&got)), (&[2][..], vec![2.5, 3.5]));
    // A big gather takes the parallel path.
    let (big, bd) = rand_f32(&mut rng, &[1000, 64]);
    let idv: Vec<i64> = (0..2000).map(|_| rng.below(1000) as i64).collect();
    let got = read_f32(
        &cpu()
            .embedding(&big, &typed(DType::I64, &[2000], idv.clone()))
            .unwrap(),
    );
    for (r, &id) in idv.iter().enumerate() {
        assert_eq!(
            &got[r * 64..(r + 1) * 64],
            &bd[id as usize * 64..(id as usize + 1) * 64]
        );
    }
}

#[test]
fn embedding_errors() {
    let table = f32t(&[10, 2], vec![0.0; 20]);
    let msg = assert_err!(
        cpu().embedding(&table, &typed(DType::I32, &[2], vec![3i32, 10])),
        InvalidArgument
    );
    assert!(msg.contains("10") && msg.contains("id"), "{msg}");
    let msg = assert_err!(
        cpu().embedding(&table, &typed(DType::I64, &[1], vec![-1i64])),
        InvalidArgument
    );
    assert!(msg.contains("-1"), "{msg}");
    assert_err!(cpu().embedding(&table, &f32t(&[1], vec![0.0])), DType);
    assert_err!(
        cpu().embedding(&table, &typed(DType::U8, &[1], vec![0u8])),
        DType
    );
    assert_err!(
        cpu().embedding(
            &f32t(&[20], vec![0.0; 20]),
            &typed(DType::I32, &[1], vec![0i32])
        ),
        Shape
    );
}

// ---------------------------------------------------------------- layout

#[test]
fn reshape_shares_elements() {
    let x = f32t(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let shape = shape::resolve_reshape(x.numel(), &[3, -1]).unwrap();
    let y = cpu().reshape(&x, &shape).unwrap();
    assert_eq!((y.shape(), read_f32(&y)), (&[3, 2][..], read_f32(&x)));
    assert_err!(cpu().reshape(&x, &[4, 2]), Shape);
}

fn all_perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = vec![];
    for p in all_perms(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

fn ref_transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    (0..x.len())
        .map(|i| {
            let oc = coords(i, &out_shape);
            let mut ic = vec![0; shape.len()];
            for (o, &p) in perm.iter().enumerate() {
                ic[p] = oc[o];
            }
            x[flat(&ic, shape)]
        })
        .collect()
}

#[test]
fn transpose_every_permutation() {
    let mut rng = Rng::new(50);
    for shape in [vec![2, 3, 4, 5], vec![3, 1, 4, 2], vec![1, 5, 1, 3]] {
        let data: Vec<u32> = (0..numel(&shape) as u32).collect();
        let asf: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        for perm in all_perms(shape.len()) {
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let got = cpu().transpose(&f32t(&shape, asf.clone()), &perm).unwrap();
            assert_eq!(got.shape(), out_shape);
            assert_eq!(
                read_f32(&got),
                ref_transpose(&asf, &shape, &perm),
                "{shape:?} {perm:?}"
            );
            let bytes: Vec<u8> = data.iter().map(|&v| v as u8).collect();
            let got = cpu()
                .transpose(&typed(DType::U8, &shape, bytes.clone()), &perm)
                .unwrap();
            assert_eq!(read::<u8>(&got), ref_transpose(&bytes, &shape, &perm));
            let wide: Vec<i64> = data.iter().map(|&v| v as i64 * 1_000_000_007).collect();
            let got = cpu()
                .transpose(&typed(DType::I64, &shape, wide.clone()), &perm)
                .unwrap();
            assert_eq!(read::<i64>(&got), ref_transpose(&wide, &shape, &perm));
        }
    }
    // Tiled matrix transposes, odd sizes, f16 and batched.
    for (shape, perm) in [
        (vec![33, 65], vec![1, 0]),
        (vec![3, 40, 50], vec![0, 2, 1]),
        (vec![130, 70], vec![1, 0]),
        (vec![2, 64, 12, 64], vec![0, 2, 1, 3]),
    ] {
        let data = round_f16(&rng.vec(numel(&shape)));
        let got = cpu().transpose(&f16t(&shape, &data), &perm).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(
            read_f32(&got),
            ref_transpose(&data, &shape, &perm),
            "{shape:?} {perm:?}"
        );
    }
}

#[test]
fn transpose_errors() {
    let x = f32t(&[2, 3], vec![0.0; 6]);
    for bad in [&[0, 0][..], &[0], &[0, 1, 2], &[1, 2]] {
        assert_err!(cpu().transpose(&x, bad), InvalidArgument);
    }
}

#[test]
fn slice_along_each_axis() {
    let mut rng = Rng::new(60);
    let shape = [3, 4, 5];
    let data: Vec<i32> = (0..60).collect();
    for axis in 0..3 {
        for _ in 0..10 {
            let a = rng.below(shape[axis] as u64 + 1) as usize;
            let b = rng.below(shape[axis] as u64 + 1) as usize;
            let (start, end) = (a.min(b), a.max(b));
            let got = cpu()
                .slice(&typed(DType::I32, &shape, data.clone()), axis, start, end)
                .unwrap();
            let mut out_shape = shape.to_vec();
            out_shape[axis] = end - start;
            let want: Vec<i32> = (0..60)
                .filter(|&i| (start..end).contains(&coords(i as usize, &shape)[axis]))
                .collect();
            assert_eq!(got.shape(), out_shape);
            assert_eq!(read::<i32>(&got), want, "axis {axis} {start}..{end}");
        }
    }
    let h = cpu()
        .slice(
            &f16t(&[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
            0,
            1,
            3,
        )
        .unwrap();
    assert_eq!(
        (h.dtype(), read_f32(&h)),
        (DType::F16, vec![2.0, 3.0, 4.0, 5.0])
    );
    let big = f32t(&[200, 300], (0..60000).map(|v| v as f32).collect());
    let got = read_f32(&cpu().slice(&big, 1, 7, 290).unwrap());
    assert_eq!(got[283], 300.0 + 7.0);
}

#[test]
fn slice_errors() {
    let x = f32t(&[2, 3], vec![0.0; 6]);
    assert_err!(cpu().slice(&x, 1, 0, 4), InvalidArgument);
    assert_err!(cpu().slice(&x, 1, 2, 1), InvalidArgument);
    assert_err!(cpu().slice(&x, 2, 0, 1), InvalidArgument);
}

#[test]
fn concat_along_each_axis() {
    let mut rng = Rng::new(70);
    for axis in 0..3 {
        let mut shapes = vec![vec![2, 3, 4]; 3];
        for (i, s) in shapes.iter_mut().enumerate() {
            s[axis] = i + 1;
        }
        let parts: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(numel(s))).collect();
        let ts: Vec<Tensor> = shapes
            .iter()
            .zip(&parts)
            .map(|(s, d)| f32t(s, d.clone()))
            .collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        let got = cpu().concat(&refs, axis).unwrap();
        let mut out_shape = vec![2, 3, 4];
        out_shape[axis] = 6;
        assert_eq!(got.shape(), out_shape);
        let want: Vec<f32> = (0..numel(&out_shape))
            .map(|i| {
                let mut c = coords(i, &out_shape);
                let (mut part, mut at) = (0, c[axis]);
                while at >= shapes[part][axis] {
                    at -= shapes[part][axis];
                    part += 1;
                }
                c[axis] = at;
                parts[part][flat(&c, &shapes[part])]
            })
            .collect();
        assert_eq!(read_f32(&got), want, "axis {axis}");
    }
    let one = typed(DType::U8, &[2], vec![1u8, 2]);
    assert_eq!(read::<u8>(&cpu().concat(&[&one], 0).unwrap()), vec![1, 2]);
    let two = typed(DType::U8, &[1], vec![3u8]);
    assert_eq!(
        read::<u8>(&cpu().concat(&[&one, &two, &one], 0).unwrap()),
        vec![1, 2, 3, 1, 2]
    );
}

#[test]
fn concat_errors() {
    let a = f32t(&[2, 3], vec![0.0; 6]);
    assert_err!(cpu().concat(&[], 0), InvalidArgument);
    assert_err!(cpu().concat(&[&a, &f16t(&[2, 3], &[0.0; 6])], 0), DType);
    assert_err!(cpu().concat(&[&a, &f32t(&[2, 4], vec![0.0; 8])], 0), Shape);
    assert_err!(cpu().concat(&[&a, &f32t(&[6], vec![0.0; 6])], 0), Shape);
    assert_err!(cpu().concat(&[&a, &a], 2), InvalidArgument);
    assert_eq!(
        cpu()
            .concat(&[&a, &f32t(&[2, 4], vec![0.0; 8])], 1)
            .unwrap()
            .shape(),
        [2, 7]
    );
}

// ---------------------------------------------------------------- reduce

fn ref_reduce(op: ReduceOp, x: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let (outer, len, inner) = shape::split_at_axis(shape, axis);
    let mut out = vec![];
    for o in 0..outer {
        for i in 0..inner {
            let vals: Vec<f64> = (0..len)
                .map(|l| x[o * len * inner + l * inner + i])
                .collect();
            let first = |better: &dyn Fn(f64, f64) -> bool| {
                let mut best = 0;
                for (l, &v) in vals.iter().enumerate() {
                    if better(v, vals[best]) {
                        best = l;
                    }
                }
                best as f64
            };
            out.push(match op {
                ReduceOp::Sum => vals.iter().sum(),
                ReduceOp::Mean => vals.iter().sum::<f64>() / len as f64,
                ReduceOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ReduceOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                ReduceOp::ArgMax => first(&|v, b| v > b),
                ReduceOp::ArgMin => first(&|v, b| v < b),
            });
        }
    }
    out
}

const ALL_REDUCE: [ReduceOp; 6] = [
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::ArgMax,
    ReduceOp::ArgMin,
];

#[test]
fn reduce_every_op_axis_and_dtype() {
    let mut rng = Rng::new(80);
    for shape in [vec![3, 5, 7], vec![40, 1000], vec![1000, 40], vec![1]] {
        // Small integers force ties, so "first occurrence" is exercised.
        let ints: Vec<i64> = (0..numel(&shape))
            .map(|_| rng.below(9) as i64 - 4)
            .collect();
        let floats: Vec<f32> = rng.vec(numel(&shape));
        for axis in 0..shape.len() {
            for keep in [false, true] {
                let mut out_shape = shape.clone();
                if keep {
                    out_shape[axis] = 1
                } else {
                    out_shape.remove(axis);
                }
                for op in ALL_REDUCE {
                    let arg = matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin);
                    let what = format!("{op} {shape:?} axis {axis} keep {keep}");
                    // f32
                    let got = cpu()
                        .reduce(op, &f32t(&shape, floats.clone()), axis, keep)
                        .unwrap();
                    assert_eq!(got.shape(), out_shape, "{what}");
                    let fx: Vec<f64> = floats.iter().map(|&v| f64::from(v)).collect();
                    let want = ref_reduce(op, &fx, &shape, axis);
                    if arg {
                        assert_eq!(got.dtype(), DType::I64);
                        assert_eq!(
                            read::<i64>(&got),
                            want.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                            "{what}"
                        );
                    } else {
                        let len = shape[axis] as f64;
                        let scale: Vec<f64> = want.iter().map(|w| w.abs() + len.sqrt()).collect();
                        assert_close_scaled(&read_f32(&got), &want, &scale, 1e-5, 1e-6, &what);
                    }
                    // f16
                    let hx = round_f16(&floats);
                    let got = cpu().reduce(op, &f16t(&shape, &hx), axis, keep).unwrap();
                    let want = ref_reduce(
                        op,
                        &hx.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                        &shape,
                        axis,
                    );
                    if arg {
                        assert_eq!(
                            read::<i64>(&got),
                            want.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                            "f16 {what}"
                        );
                    } else {
                        assert_eq!(got.dtype(), DType::F16);
                        let len = shape[axis] as f64;
                        let scale: Vec<f64> = want.iter().map(|w| w.abs() + 1e-2 * len).collect();
                        assert_close_scaled(
                            &read_f32(&got),
                            &want,
                            &scale,
                            1e-3,
                            1e-3,
                            &format!("f16 {what}"),
                        );
                    }
                    // i32 / i64 (no mean)
                    if op == ReduceOp::Mean {
                        continue;
                    }
                    let ix: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
                    let want: Vec<i64> = ref_reduce(op, &ix, &shape, axis)
                        .iter()
                        .map(|&v| v as i64)
                        .collect();
                    let got = cpu()
                        .reduce(op, &typed(DType::I64, &shape, ints.clone()), axis, keep)
                        .unwrap();
                    assert_eq!(
                        (got.dtype(), read::<i64>(&got)),
                        (DType::I64, want.clone()),
                        "i64 {what}"
                    );
                    let i32s: Vec<i32> = ints.iter().map(|&v| v as i32).collect();
                    let got = cpu()
                        .reduce(op, &typed(DType::I32, &shape, i32s), axis, keep)
                        .unwrap();
                    if arg {
                        assert_eq!(read::<i64>(&got), want, "i32 {what}");
                    } else {
                        assert_eq!(got.dtype(), DType::I32);
                        assert_eq!(
                            read::<i32>(&got),
                            want.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                            "i32 {what}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn reduce_errors() {
    let i = typed(DType::I32, &[2, 3], vec![0i32; 6]);
    let msg = assert_err!(cpu().reduce(ReduceOp::Mean, &i, 1, false), DType);
    assert!(msg.contains("mean") && msg.contains("i32"), "{msg}");
    assert_err!(
        cpu().reduce(
            ReduceOp::Sum,
            &typed(DType::U8, &[2], vec![0u8; 2]),
            0,
            false
        ),
        DType
    );
    assert_err!(cpu().reduce(ReduceOp::Sum, &i, 2, false), InvalidArgument);
    let empty = f32t(&[2, 0], vec![]);
    assert_err!(
        cpu().reduce(ReduceOp::Max, &empty, 1, false),
        InvalidArgument
    );
    assert_err!(
        cpu().reduce(ReduceOp::ArgMin, &empty, 1, false),
        InvalidArgument
    );
    assert_eq!(
        read_f32(&cpu().reduce(ReduceOp::Sum, &empty, 1, false).unwrap()),
        vec![0.0, 0.0]
    );
}

// ---------------------------------------------------------------- cast, full

#[test]
fn cast_truncates_and_saturates() {
    let c = cpu();
    let x = f32t(
        &[9],
        vec![1.5, -1.5, 3e9, -3e9, f32::NAN, 255.9, 256.0, -0.5, 70000.0],
    );
    assert_eq!(
        read::<i32>(&c.cast(&x, DType::I32).unwrap()),
        vec![1, -1, i32::MAX, i32::MIN, 0, 255, 256, 0, 70000]
    );
    assert_eq!(
        read::<i64>(&c.cast(&x, DType::I64).unwrap()),
        vec![1, -1, 3_000_000_000, -3_000_000_000, 0, 255, 256, 0, 70000]
    );
    assert_eq!(
        read::<u8>(&c.cast(&x, DType::U8).unwrap()),
        vec![1, 0, 255, 0, 0, 255, 255, 0, 255]
    );
    let h = read_f32(&c.cast(&x, DType::F16).unwrap());
    assert_eq!(
        (h[0], h[1], h[5], h[6], h[8]),
        (1.5, -1.5, 255.875, 256.0, f32::INFINITY)
    );
    let wide = typed(
        DType::I64,
        &[5],
        vec![-1i64, 300, 1 << 40, -(1 << 40), 16_777_217],
    );
    assert_eq!(
        read::<i32>(&c.cast(&wide, DType::I32).unwrap()),
        vec![-1, 300, i32::MAX, i32::MIN, 16_777_217]
    );
    assert_eq!(
        read::<u8>(&c.cast(&wide, DType::U8).unwrap()),
        vec![0, 255, 255, 0, 255]
    );
    assert_eq!(
        read_f32(&c.cast(&wide, DType::F32).unwrap()),
        vec![
            -1.0,
            300.0,
            (1u64 << 40) as f32,
            -((1u64 << 40) as f32),
            16_777_216.0
        ]
    );
    let bytes = typed(DType::U8, &[3], vec![0u8, 128, 255]);
    assert_eq!(
        read::<i32>(&c.cast(&bytes, DType::I32).unwrap()),
        vec![0, 128, 255]
    );
    assert_eq!(
        read_f32(&c.cast(&bytes, DType::F16).unwrap()),
        vec![0.0, 128.0, 255.0]
    );
    // Every pair round-trips small integers exactly; same dtype is identity.
    let dtypes = [DType::F32, DType::F16, DType::I32, DType::I64, DType::U8];
    let base = f32t(&[2, 3], vec![0.0, 1.0, 2.0, 7.0, 100.0, 255.0]);
    for from in dtypes {
        let x = c.cast(&base, from).unwrap();
        for to in dtypes {
            let y = c.cast(&x, to).unwrap();
            assert_eq!((y.dtype(), y.shape()), (to, &[2, 3][..]));
            let back = c.cast(&y, DType::F32).unwrap();
            assert_eq!(read_f32(&back), read_f32(&base), "{from} -> {to}");
        }
    }
    // A large cast takes the parallel path.
    let big = f32t(&[100_000], (0..100_000).map(|v| v as f32 + 0.7).collect());
    let got = read::<i64>(&c.cast(&big, DType::I64).unwrap());
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as i64));
}

#[test]
fn full_converts_the_value() {
    let c = cpu();
    assert_eq!(
        read_f32(&c.full(DType::F32, &[2, 2], 1.25).unwrap()),
        vec![1.25; 4]
    );
    assert_eq!(
        read_f32(&c.full(DType::F16, &[3], 0.1).unwrap()),
        vec![f16::from_f64(0.1).to_f32(); 3]
    );
    assert_eq!(
        read::<i32>(&c.full(DType::I32, &[2], -3.7).unwrap()),
        vec![-3, -3]
    );
    assert_eq!(
        read::<i64>(&c.full(DType::I64, &[1], 1e300).unwrap()),
        vec![i64::MAX]
    );
    assert_eq!(
        read::<u8>(&c.full(DType::U8, &[2], -1.0).unwrap()),
        vec![0, 0]
    );
    let s = c.full(DType::F32, &[], 2.0).unwrap();
    assert_eq!((s.shape(), read_f32(&s)), (&[][..], vec![2.0]));
    assert_eq!(c.full(DType::I64, &[0, 5], 1.0).unwrap().numel(), 0);
}

// ---------------------------------------------------------------- conv2d, pool2d

#[allow(clippy::too_many_arguments)]
fn ref_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    p: Conv2d,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let [n, c, h, wd] = xs;
    let [o, cg, kh, kw] = ws;
    let oh = (h + 2 * p.padding.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
    let ow = (wd + 2 * p.padding.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
    let og = o / p.groups;
    let (mut out, mut scale) = (vec![], vec![]);
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| f64::from(bb[oc]));
                    let mut abs = s.abs();
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = f64::from(
                                    x[((b * c + ic) * h + iy as usize) * wd + ix as usize],
                                );
                                let wv = f64::from(w[((oc * cg + ci) * kh + ky) * kw + kx]);
                                s += xv * wv;
                                abs += (xv * wv).abs();
                            }
                        }
                    }
                    out.push(s);
                    scale.push(abs);
                }
            }
        }
    }
    (vec![n, o, oh, ow], out, scale)
}

fn conv_params(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2d {
    Conv2d {
        stride,
        padding,
        dilation,
        groups,
    }
}

#[test]
fn conv2d_matches_naive() {
    let mut rng = Rng::new(90);
    let cases: Vec<([usize; 4], [usize; 4], Conv2d)> = vec![
        (
            [2, 3, 7, 9],
            [4, 3, 3, 3],
            conv_params((1, 1), (1, 1), (1, 1), 1),
        ),
        (
            [2, 3, 7, 9],
            [4, 3, 3, 3],
            conv_params((2, 2), (1, 1), (1, 1), 1),
        ),
        (
            [1, 3, 11, 10],
            [5, 3, 3, 3],
            conv_params((1, 2), (2, 0), (2, 1), 1),
        ),
        (
            [2, 4, 6, 6],
            [6, 2, 3, 3],
            conv_params((1, 1), (1, 1), (1, 1), 2),
        ),
        (
            [1, 5, 8, 7],
            [5, 1, 3, 3],
            conv_params((1, 1), (1, 1), (1, 1), 5),
        ),
        (
            [3, 8, 5, 6],
            [4, 8, 1, 1],
            conv_params((1, 1), (0, 0), (1, 1), 1),
        ),
        (
            [1, 8, 5, 6],
            [4, 8, 1, 1],
            conv_params((2, 2), (0, 0), (1, 1), 1),
        ),
        (
            [2, 2, 9, 12],
            [3, 2, 2, 5],
            conv_params((3, 2), (1, 2), (1, 1), 1),
        ),
        (
            [1, 3, 2, 2],
            [2, 3, 3, 3],
            conv_params((1, 1), (3, 3), (1, 1), 1),
        ),
        (
            [1, 3, 64, 64],
            [16, 3, 7, 7],
            conv_params((2, 2), (3, 3), (1, 1), 1),
        ),
        (
            [4, 16, 20, 20],
            [32, 16, 3, 3],
            conv_params((1, 1), (1, 1), (1, 1), 1),
        ),
        // One image, many groups: the groups are what runs in parallel.
        (
            [1, 32, 28, 28],
            [32, 1, 3, 3],
            conv_params((1, 1), (1, 1), (1, 1), 32),
        ),
        (
            [1, 16, 30, 30],
            [32, 4, 3, 3],
            conv_params((2, 2), (1, 1), (1, 1), 4),
        ),
    ];
    for (xs, ws, p) in cases {
        for with_bias in [false, true] {
            let (x, xd) = rand_f32(&mut rng, &xs);
            let (w, wd) = rand_f32(&mut rng, &ws);
            let (b, bd) = rand_f32(&mut rng, &[ws[0]]);
            let got = cpu().conv2d(&x, &w, with_bias.then_some(&b), p).unwrap();
            let (shape, want, scale) = ref_conv(&xd, xs, &wd, ws, with_bias.then_some(&bd[..]), p);
            assert_eq!(got.shape(), shape, "{xs:?} {ws:?} {p:?}");
            assert_close_scaled(
                &read_f32(&got),
                &want,
                &scale,
                1e-4,
                1e-6,
                &format!("conv {xs:?} {ws:?} {p:?} bias {with_bias}"),
            );
        }
    }
    // f16
    let (xs, ws) = ([1, 2, 6, 5], [3, 2, 3, 3]);
    let (xd, wd) = (round_f16(&rng.vec(60)), round_f16(&rng.vec(54)));
    let p = conv_params((1, 1), (1, 1), (1, 1), 1);
    let got = cpu()
        .conv2d(&f16t(&xs, &xd), &f16t(&ws, &wd), None, p)
        .unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let (_, want, scale) = ref_conv(&xd, xs, &wd, ws, None, p);
    assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "conv f16");
}

#[test]
fn conv2d_errors() {
    let c = cpu();
    let x = f32t(&[1, 4, 5, 5], vec![0.0; 100]);
    let p = conv_params((1, 1), (0, 0), (1, 1), 1);
    let msg = assert_err!(
        c.conv2d(&x, &f32t(&[2, 3, 3, 3], vec![0.0; 54]), None, p),
        Shape
    );
    assert!(
        msg.contains("[1, 4, 5, 5]") && msg.contains("[2, 3, 3, 3]"),
        "{msg}"
    );
    let g3 = conv_params((1, 1), (0, 0), (1, 1), 3);
    assert_err!(
        c.conv2d(&x, &f32t(&[3, 1, 3, 3], vec![0.0; 27]), None, g3),
        Shape
    );
    let w = f32t(&[2, 4, 3, 3], vec![0.0; 72]);
    assert_err!(
        c.conv2d(&x, &w, None, conv_params((0, 1), (0, 0), (1, 1), 1)),
        InvalidArgument
    );
    assert_err!(
        c.conv2d(&x, &w, None, conv_params((1, 1), (0, 0), (1, 0), 1)),
        InvalidArgument
    );
    assert_err!(
        c.conv2d(&x, &w, None, conv_params((1, 1), (0, 0), (1, 1), 0)),
        InvalidArgument
    );
    assert_err!(c.conv2d(&x, &w, Some(&f32t(&[3], vec![0.0; 3])), p), Shape);
    assert_err!(
        c.conv2d(&x, &f32t(&[2, 4, 6, 3], vec![0.0; 144]), None, p),
        Shape
    );
    assert_err!(
        c.conv2d(&f32t(&[4, 5, 5], vec![0.0; 100]), &w, None, p),
        Shape
    );
    assert_err!(
        c.conv2d(
            &typed(DType::I32, &[1, 4, 5, 5], vec![0i32; 100]),
            &w,
            None,
            p
        ),
        DType
    );
    assert_err!(
        c.conv2d(&x, &f16t(&[2, 4, 3, 3], &[0.0; 72]), None, p),
        DType
    );
}

fn ref_pool(x: &[f32], xs: [usize; 4], p: Pool2d) -> (Vec<usize>, Vec<f64>) {
    let [n, c, h, w] = xs;
    let oh = (h + 2 * p.padding.0 - p.kernel.0) / p.stride.0 + 1;
    let ow = (w + 2 * p.padding.1 - p.kernel.1) / p.stride.1 + 1;
    let mut out = vec![];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut vals = vec![];
                for ky in 0..p.kernel.0 {
                    for kx in 0..p.kernel.1 {
                        let iy = (oy * p.stride.0 + ky) as isize - p.padding.0 as isize;
                        let ix = (ox * p.stride.1 + kx) as isize - p.padding.1 as isize;
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            vals.push(f64::from(x[plane * h * w + iy as usize * w + ix as usize]));
                        }
                    }
                }
                out.push(match p.kind {
                    PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                });
            }
        }
    }
    (vec![n, c, oh, ow], out)
}

#[test]
fn pool2d_matches_naive() {
    let mut rng = Rng::new(91);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (xs, kernel, stride, padding) in [
            ([2, 3, 7, 9], (2, 2), (2, 2), (0, 0)),
            ([2, 3, 7, 9], (3, 3), (2, 2), (1, 1)),
            ([1, 2, 8, 5], (3, 2), (1, 2), (1, 1)),
            ([1, 1, 1, 1], (1, 1), (1, 1), (0, 0)),
            ([4, 16, 32, 32], (3, 3), (1, 1), (1, 1)),
        ] {
            let p = Pool2d {
                kind,
                kernel,
                stride,
                padding,
            };
            let (x, xd) = rand_f32(&mut rng, &xs);
            let got = cpu().pool2d(&x, p).unwrap();
            let (shape, want) = ref_pool(&xd, xs, p);
            assert_eq!(got.shape(), shape);
            assert_close(&read_f32(&got), &want, 1e-6, 1e-7, &format!("{p:?} {xs:?}"));
            let hd = round_f16(&xd);
            let got = cpu().pool2d(&f16t(&xs, &hd), p).unwrap();
            let (_, want) = ref_pool(&hd, xs, p);
            assert_close(
                &read_f32(&got),
                &want,
                1e-3,
                1e-3,
                &format!("f16 {p:?} {xs:?}"),
            );
        }
    }
}

#[test]
fn pool2d_errors() {
    let x = f32t(&[1, 1, 4, 4], vec![0.0; 16]);
    let p = |kernel, stride, padding| Pool2d {
        kind: PoolKind::Max,
        kernel,
        stride,
        padding,
    };
    assert_err!(cpu().pool2d(&x, p((2, 2), (1, 1), (2, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((0, 2), (1, 1), (0, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((2, 2), (0, 1), (0, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((5, 2), (1, 1), (0, 0))), Shape);
    assert_err!(
        cpu().pool2d(&f32t(&[4, 4], vec![0.0; 16]), p((2, 2), (1, 1), (0, 0))),
        Shape
    );
    assert_err!(
        cpu().pool2d(
            &typed(DType::U8, &[1, 1, 4, 4], vec![0u8; 16]),
            p((2, 2), (1, 1), (0, 0))
        ),
        DType
    );
}

// ---------------------------------------------------------------- attention

struct AttnCase {
    q: Vec<usize>,
    k: Vec<usize>,
    v: Vec<usize>,
    mask: Option<Vec<usize>>,
    causal: bool,
    scale: Option<f32>,
}

/// Naive attention in f64; returns (shape, values, error scale).
fn ref_attention(
    case: &AttnCase,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (sq, sk, sv) = (&case.q, &case.k, &case.v);
    let (lq, d) = (sq[sq.len() - 2], sq[sq.len() - 1]);
    let lk = sk[sk.len() - 2];
    let dv = sv[sv.len() - 1];
    let (bq, bk, bv) = (
        &sq[..sq.len() - 2],
        &sk[..sk.len() - 2],
        &sv[..sv.len() - 2],
    );
    let batch = bcast_shape(&bcast_shape(bq, bk), bv);
    let scale = f64::from(case.scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let mut scores_shape = batch.clone();
    scores_shape.extend([lq, lk]);
    let (mut out, mut err) = (vec![], vec![]);
    for b in 0..numel(&batch) {
        let c = coords(b, &batch);
        let (iq, ik, iv) = (
            bcast_index(&c, bq),
            bcast_index(&c, bk),
            bcast_index(&c, bv),
        );
        for i in 0..lq {
            let mut s: Vec<f64> = (0..lk)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|p| {
                            f64::from(q[(iq * lq + i) * d + p])
                                * f64::from(k[(ik * lk + j) * d + p])
                        })
                        .sum();
                    let mut sc = dot * scale;
                    if let (Some(m), Some(ms)) = (mask, &case.mask) {
                        let mut cc = c.clone();
                        cc.extend([i, j]);
                        sc += f64::from(m[bcast_index(&cc, ms)]);
                    }
                    if case.causal && j as i64 > i as i64 + lk as i64 - lq as i64 {
                        sc = f64::NEG_INFINITY;
                    }
                    sc
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                s.iter_mut().for_each(|x| *x = 0.0);
            } else {
                let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
                s.iter_mut().for_each(|x| *x = (*x - max).exp() / sum);
            }
            for e in 0..dv {
                let terms: Vec<f64> = (0..lk)
                    .map(|j| s[j] * f64::from(v[(iv * lk + j) * dv + e]))
                    .collect();
                out.push(terms.iter().sum());
                err.push(terms.iter().map(|t| t.abs()).sum::<f64>() + 1e-3);
            }
        }
    }
    let mut shape = batch;
    shape.extend([lq, dv]);
    (shape, out, err)
}

fn attn(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    mask: Option<&[usize]>,
    causal: bool,
    scale: Option<f32>,
) -> AttnCase {
    AttnCase {
        q: q.to_vec(),
        k: k.to_vec(),
        v: v.to_vec(),
        mask: mask.map(<[usize]>::to_vec),
        causal,
        scale,
    }
}

#[test]
fn attention_matches_naive() {
    let mut rng = Rng::new(100);
    let cases = [
        attn(
            &[2, 3, 5, 8],
            &[2, 3, 7, 8],
            &[2, 3, 7, 6],
            None,
            false,
            None,
        ),
        attn(
            &[2, 3, 5, 8],
            &[2, 3, 7, 8],
            &[2, 3, 7, 6],
            Some(&[5, 7]),
            false,
            None,
        ),
        attn(
            &[2, 3, 5, 8],
            &[2, 3, 7, 8],
            &[2, 3, 7, 6],
            Some(&[2, 1, 1, 7]),
            true,
            Some(0.5),
        ),
        attn(
            &[2, 3, 5, 8],
            &[2, 3, 7, 8],
            &[2, 3, 7, 6],
            Some(&[5, 1]),
            false,
            None,
        ),
        attn(&[4, 6, 16], &[4, 6, 16], &[4, 6, 16], None, true, None),
        attn(&[4, 9, 16], &[4, 6, 16], &[4, 6, 16], None, true, None), // lq > lk: early rows see nothing
        attn(&[1, 16], &[40, 16], &[40, 3], None, true, None),         // one new token over a cache
        attn(
            &[2, 4, 5, 8],
            &[2, 1, 7, 8],
            &[2, 1, 7, 8],
            None,
            false,
            None,
        ), // shared k/v heads
        attn(&[200, 64], &[230, 64], &[230, 64], None, true, None),    // several query blocks
        attn(
            &[3, 130, 32],
            &[3, 130, 32],
            &[3, 130, 24],
            Some(&[3, 130, 130]),
            false,
            None,
        ),
        attn(&[1, 1], &[1, 1], &[1, 1], None, false, None),
    ];
    for case in &cases {
        let (q, qd) = rand_f32(&mut rng, &case.q);
        let (k, kd) = rand_f32(&mut rng, &case.k);
        let (v, vd) = rand_f32(&mut rng, &case.v);
        let md: Option<Vec<f32>> = case.mask.as_ref().map(|s| {
            // Some -inf entries, as real masks have.
            rng.vec(numel(s))
                .iter()
                .map(|&x| if x > 0.7 { f32::NEG_INFINITY } else { x * 2.0 })
                .collect()
        });
        let m = case.mask.as_ref().map(|s| f32t(s, md.clone().unwrap()));
        let params = Attention {
            scale: case.scale,
            causal: case.causal,
        };
        let got = cpu().attention(&q, &k, &v, m.as_ref(), params).unwrap();
        let (shape, want, scale) = ref_attention(case, &qd, &kd, &vd, md.as_deref());
        let what = format!(
            "attention q {:?} k {:?} mask {:?} causal {}",
            case.q, case.k, case.mask, case.causal
        );
        assert_eq!(got.shape(), shape, "{what}");
        assert_close_scaled(&read_f32(&got), &want, &scale, 1e-4, 1e-6, &what);
    }
}

#[test]
fn attention_fully_masked_rows_are_zero() {
    let q = f32t(&[2, 4], vec![1.0; 8]);
    let k = f32t(&[3, 4], vec![1.0; 12]);
    let v = f32t(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ninf = f32::NEG_INFINITY;
    let mask = f32t(&[2, 3], vec![ninf, ninf, ninf, 0.0, ninf, 0.0]);
    let got = read_f32(
        &cpu()
            .attention(
                &q,
                &k,
                &v,
                Some(&mask),
                Attention {
                    scale: None,
                    causal: false,
                },
            )
            .unwrap(),
    );
    assert_eq!(got, vec![0.0, 0.0, 3.0, 4.0]);
}

#[test]
fn attention_f16() {
    let mut rng = Rng::new(101);
    let case = attn(
        &[2, 5, 8],
        &[2, 7, 8],
        &[2, 7, 4],
        Some(&[5, 7]),
        true,
        None,
    );
    let (qd, kd, vd, md) = (
        round_f16(&rng.vec(80)),
        round_f16(&rng.vec(112)),
        round_f16(&rng.vec(56)),
        round_f16(&rng.vec(35)),
    );
    let got = cpu()
        .attention(
            &f16t(&case.q, &qd),
            &f16t(&case.k, &kd),
            &f16t(&case.v, &vd),
            Some(&f16t(&[5, 7], &md)),
            Attention {
                scale: None,
                causal: true,
            },
        )
        .unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let (_, want, scale) = ref_attention(&case, &qd, &kd, &vd, Some(&md));
    assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "attention f16");
}

#[test]
fn attention_errors() {
    let c = cpu();
    let p = Attention {
        scale: None,
        causal: false,
    };
    let q = f32t(&[2, 3, 4], vec![0.0; 24]);
    let k = f32t(&[2, 5, 4], vec![0.0; 40]);
    let v = f32t(&[2, 5, 6], vec![0.0; 60]);
    c.attention(&q, &k, &v, None, p).unwrap();
    let msg = assert_err!(
        c.attention(&q, &f32t(&[2, 5, 3], vec![0.0; 30]), &v, None, p),
        Shape
    );
    assert!(
        msg.contains("[2, 3, 4]") && msg.contains("[2, 5, 3]"),
        "{msg}"
    );
    assert_err!(
        c.attention(&q, &k, &f32t(&[2, 4, 6], vec![0.0; 48]), None, p),
        Shape
    );
    assert_err!(
        c.attention(
            &q,
            &f32t(&[3, 5, 4], vec![0.0; 60]),
            &f32t(&[3, 5, 6], vec![0.0; 90]),
            None,
            p
        ),
        Shape
    );
    assert_err!(
        c.attention(&q, &k, &v, Some(&f32t(&[3, 4], vec![0.0; 12])), p),
        Shape
    );
    // A mask may not add batch dimensions of its own.
    assert_err!(
        c.attention(&q, &k, &v, Some(&f32t(&[7, 2, 3, 5], vec![0.0; 210])), p),
        Shape
    );
    assert_err!(
        c.attention(&q, &k, &v, Some(&f16t(&[3, 5], &[0.0; 15])), p),
        DType
    );
    assert_err!(
        c.attention(&f32t(&[4], vec![0.0; 4]), &k, &v, None, p),
        Shape
    );
    let i = typed(DType::I32, &[2, 2], vec![0i32; 4]);
    assert_err!(c.attention(&i, &i, &i, None, p), DType);
}

// ---------------------------------------------------------------- top-k

#[test]
fn top_k_largest_first_ties_by_index() {
    let mut rng = Rng::new(110);
    for (rows, len) in [(3, 10), (1, 1), (50, 1000), (7, 33)] {
        // Few distinct values: many ties.
        let data: Vec<f32> = (0..rows * len).map(|_| rng.below(7) as f32 - 3.0).collect();
        let ints: Vec<i32> = data.iter().map(|&v| v as i32).collect();
        for k in [0, 1, len / 2, len] {
            let got = cpu().top_k(&f32t(&[rows, len], data.clone()), k).unwrap();
            let goti = cpu()
                .top_k(&typed(DType::I32, &[rows, len], ints.clone()), k)
                .unwrap();
            let (mut wv, mut wi) = (vec![], vec![]);
            for r in 0..rows {
                let mut idx: Vec<usize> = (0..len).collect();
                // A stable sort keeps lower indices first among equals.
                idx.sort_by(|&a, &b| data[r * len + b].partial_cmp(&data[r * len + a]).unwrap());
                for &i in &idx[..k] {
                    wv.push(data[r * len + i]);
                    wi.push(i as i64);
                }
            }
            assert_eq!(got.0.shape(), [rows, k]);
            assert_eq!(got.1.dtype(), DType::I64);
            assert_eq!(read_f32(&got.0), wv, "values {rows}x{len} k {k}");
            assert_eq!(read::<i64>(&got.1), wi, "indices {rows}x{len} k {k}");
            assert_eq!(
                read::<i32>(&goti.0),
                wv.iter().map(|&v| v as i32).collect::<Vec<_>>()
            );
            assert_eq!(read::<i64>(&goti.1), wi);
        }
    }
    let (v, i) = cpu().top_k(&f16t(&[4], &[1.0, 3.0, 2.0, 3.0]), 2).unwrap();
    assert_eq!(
        (v.dtype(), read_f32(&v), read::<i64>(&i)),
        (DType::F16, vec![3.0, 3.0], vec![1, 3])
    );
    let (v, i) = cpu()
        .top_k(&typed(DType::I64, &[3], vec![5i64, -1, 9]), 3)
        .unwrap();
    assert_eq!(
        (read::<i64>(&v), read::<i64>(&i)),
        (vec![9, 5, -1], vec![2, 0, 1])
    );
}

#[test]
fn top_k_errors() {
    assert_err!(
        cpu().top_k(&f32t(&[2, 3], vec![0.0; 6]), 4),
        InvalidArgument
    );
    assert_err!(cpu().top_k(&typed(DType::U8, &[3], vec![0u8; 3]), 1), DType);
    assert_err!(cpu().top_k(&f32t(&[], vec![0.0]), 1), Shape);
}

// ---------------------------------------------------------------- backend plumbing

#[test]
fn host_transfers_are_identity() {
    let c = cpu();
    let x = f32t(&[2], vec![1.0, 2.0]);
    assert_eq!(read_f32(&c.from_host(&x).unwrap()), vec![1.0, 2.0]);
    assert_eq!(read_f32(&c.to_host(&x).unwrap()), vec![1.0, 2.0]);
    let info = c.info();
    assert_eq!(
        (info.kind, info.api.as_str(), info.driver.as_str()),
        ("cpu", "native", "")
    );
    assert!(
        info.device.starts_with(std::env::consts::ARCH),
        "{}",
        info.device
    );
}

#[test]
fn device_tensors_are_refused() {
    let c = cpu();
    let dev = Tensor::new(DType::F32, &[2, 2], Storage::Device(Arc::new(0u32)));
    let host = f32t(&[2, 2], vec![0.0; 4]);
    assert_err!(c.to_host(&dev), Unsupported);
    assert_err!(c.from_host(&dev), Unsupported);
    assert_err!(c.matmul(&dev, &host, false), Unsupported);
    assert_err!(c.binary(BinaryOp::Add, &host, &dev), Unsupported);
    assert_err!(c.unary(UnaryOp::Exp, &dev), Unsupported);
    assert_err!(c.reshape(&dev, &[4]), Unsupported);
    assert_err!(c.transpose(&dev, &[1, 0]), Unsupported);
    assert_err!(c.slice(&dev, 0, 0, 1), Unsupported);
    assert_err!(c.concat(&[&host, &dev], 0), Unsupported);
    assert_err!(c.reduce(ReduceOp::Sum, &dev, 0, false), Unsupported);
    assert_err!(c.cast(&dev, DType::F16), Unsupported);
    assert_err!(c.cast(&dev, DType::F32), Unsupported);
    assert_err!(c.softmax(&dev, 0), Unsupported);
    assert_err!(c.top_k(&dev, 1), Unsupported);
}

#[test]
fn nan_propagates_where_documented() {
    let c = cpu();
    let nan = f32::NAN;
    let x = f32t(&[2, 4], vec![1.0, nan, 3.0, nan, 5.0, 2.0, 7.0, 1.0]);
    let max = read_f32(&c.reduce(ReduceOp::Max, &x, 1, false).unwrap());
    assert!(max[0].is_nan() && max[1] == 7.0, "{max:?}");
    let min = read_f32(&c.reduce(ReduceOp::Min, &x, 0, false).unwrap());
    assert!(
        min[1].is_nan() && min[3].is_nan() && min[0] == 1.0,
        "{min:?}"
    );
    // The first NaN is the arg-extreme.
    assert_eq!(
        read::<i64>(&c.reduce(ReduceOp::ArgMax, &x, 1, false).unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        read::<i64>(&c.reduce(ReduceOp::ArgMin, &x, 1, false).unwrap()),
        vec![1, 3]
    );
    let (v, i) = c.top_k(&x, 2).unwrap();
    let v = read_f32(&v);
    assert!(
        v[0].is_nan() && v[1].is_nan() && v[2] == 7.0 && v[3] == 5.0,
        "{v:?}"
    );
    assert_eq!(read::<i64>(&i), vec![1, 3, 2, 0]);
    let img = f32t(&[1, 1, 2, 2], vec![1.0, nan, 3.0, 4.0]);
    let pool = Pool2d {
        kind: PoolKind::Max,
        kernel: (2, 2),
        stride: (1, 1),
        padding: (0, 0),
    };
    assert!(read_f32(&c.pool2d(&img, pool).unwrap())[0].is_nan());
    let long: Vec<f32> = (0..100)
        .map(|i| if i == 37 { nan } else { i as f32 })
        .collect();
    let sm = read_f32(&c.softmax(&f32t(&[100], long), 0).unwrap());
    assert!(sm.iter().all(|v| v.is_nan()));
}

#[test]
fn oversized_results_are_errors_not_aborts() {
    let c = cpu();
    // Past isize::MAX bytes: refused before allocating.
    let msg = assert_err!(c.full(DType::F32, &[usize::MAX / 2, 4], 0.0), OutOfMemory);
    assert!(msg.starts_with("full"), "{msg}");
    assert_err!(c.full(DType::I64, &[1 << 40, 1 << 40], 0.0), OutOfMemory);
    // Addressable but beyond any address space: the allocator refuses.
    let msg = assert_err!(c.full(DType::F32, &[1 << 48], 1.0), OutOfMemory);
    assert!(msg.starts_with("full"), "{msg}");
    // A shape whose element count wraps around cannot pass for a small buffer.
    let wrapped = Tensor::from_host(
        DType::U8,
        &[1 << 32, 1 << 32],
        HostBuffer::from_vec(Vec::<u8>::new()),
    );
    assert_err!(wrapped, Shape);
}

#[test]
fn empty_tensors_flow_through() {
    let c = cpu();
    let e = f32t(&[0, 3], vec![]);
    assert_eq!(c.unary(UnaryOp::Exp, &e).unwrap().shape(), [0, 3]);
    assert_eq!(c.softmax(&e, 1).unwrap().shape(), [0, 3]);
    assert_eq!(c.transpose(&e, &[1, 0]).unwrap().shape(), [3, 0]);
    assert_eq!(c.cast(&e, DType::U8).unwrap().shape(), [0, 3]);
    assert_eq!(c.layer_norm(&e, None, None, 1e-5).unwrap().shape(), [0, 3]);
    let u = c.cast(&e, DType::U8).unwrap();
    assert_eq!(c.cast(&u, DType::I64).unwrap().numel(), 0);
    assert_eq!(
        c.slice(&f32t(&[2, 3], vec![0.0; 6]), 1, 1, 1)
            .unwrap()
            .shape(),
        [2, 0]
    );
}
