//! Elementwise ops: binary, unary, affine, cast, full.

use edgeserve_tensor::{BinaryOp, DType, Tensor, UnaryOp};

use crate::{Rng, assert_close, assert_same, cpu, gpu, up};

#[test]
fn binary_broadcasts_like_cpu() {
    let mut rng = Rng::new(3);
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[3, 5, 7], &[3, 5, 7]),
        (&[2, 3, 4], &[3, 1]),
        (&[5], &[1]),
        (&[], &[4, 2]),
        (&[17, 1, 65], &[1, 33, 1]),
    ];
    for (sa, sb) in shapes {
        for &op in BinaryOp::ALL {
            let (lo, hi) = if op == BinaryOp::Pow {
                (0.1, 3.0)
            } else {
                (-2.0, 2.0)
            };
            let a = rng.tensor(sa, lo, hi);
            let b = rng.tensor(sb, lo, hi);
            let want = cpu().binary(op, &a, &b).unwrap();
            let got = gpu().binary(op, &up(&a), &up(&b)).unwrap();
            assert_close(&format!("{op} {sa:?} {sb:?}"), &got, &want, 1e-6, 1e-5);
        }
    }
    // Negative bases with integer exponents, and NaN propagation in max/min.
    let a = Tensor::from_f32(&[4], vec![-2.0, -3.0, f32::NAN, 1.0]).unwrap();
    let b = Tensor::from_f32(&[4], vec![3.0, 2.0, 1.0, f32::NAN]).unwrap();
    for op in [BinaryOp::Pow, BinaryOp::Maximum, BinaryOp::Minimum] {
        let want = cpu().binary(op, &a, &b).unwrap();
        let got = gpu().binary(op, &a, &b).unwrap();
        assert_close(&format!("{op} special"), &got, &want, 1e-6, 1e-5);
    }
}

/// Integer add, sub, mul, maximum and minimum give the CPU's bits, wrapping
/// at the type's ends (an i64 product past 2^64 keeps its low 64 bits), with
/// broadcasting; division, whose zero divisors only the CPU finds, and pow
/// are refused, naming the op.
#[test]
fn integer_binary_ops_match_cpu_bit_for_bit() {
    let i64s: Vec<i64> = vec![
        0,
        1,
        -1,
        7,
        -9,
        1 << 31,
        (1 << 32) + 5,
        -(1 << 33) + 3,
        0x1234_5678_9abc,
        i64::MAX,
        i64::MIN,
        -0x7654_3210_fedc,
    ];
    let i32s: Vec<i32> = vec![
        0,
        1,
        -1,
        7,
        -9,
        65535,
        65536,
        -65537,
        123_456_789,
        i32::MAX,
        i32::MIN,
        -5,
    ];
    let tensors = [
        Tensor::from_bytes(DType::I64, &[12], bytemuck::cast_slice(&i64s)).unwrap(),
        Tensor::from_bytes(DType::I32, &[12], bytemuck::cast_slice(&i32s)).unwrap(),
    ];
    for all in &tensors {
        let dtype = all.dtype();
        // Every pair: [12, 1] against [12] broadcasts to [12, 12].
        let column = cpu().reshape(all, &[12, 1]).unwrap();
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
        ] {
            let want = cpu().binary(op, &column, all).unwrap();
            let got = gpu().binary(op, &up(&column), &up(all)).unwrap();
            assert_same(&format!("{op} {dtype}"), &got, &want);
        }
        let err = gpu().binary(BinaryOp::Div, &up(all), &up(all)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("div on {dtype}")),
            "{err}"
        );
        let err = gpu().binary(BinaryOp::Pow, &up(all), &up(all)).unwrap_err();
        assert!(err.to_string().contains("pow"), "{err}");
    }
}

/// Unary tolerance: 2e-6 + 2e-5·|ref| (transcendentals differ by a few ulp).
#[test]
fn unary_and_affine_match_cpu() {
    let mut rng = Rng::new(4);
    for shape in [&[1usize][..], &[3, 5, 7], &[257, 129]] {
        for &op in UnaryOp::ALL {
            let (lo, hi) = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.01, 10.0),
                UnaryOp::Gelu | UnaryOp::Erf => (-10.0, 10.0),
                _ => (-6.0, 6.0),
            };
            let x = rng.tensor(shape, lo, hi);
            let want = cpu().unary(op, &x).unwrap();
            let got = gpu().unary(op, &up(&x)).unwrap();
            assert_close(&format!("{op} {shape:?}"), &got, &want, 2e-6, 2e-5);
        }
        let x = rng.tensor(shape, -3.0, 3.0);
        let want = cpu().affine(&x, 1.5, -0.25).unwrap();
        let got = gpu().affine(&up(&x), 1.5, -0.25).unwrap();
        assert_close("affine", &got, &want, 1e-6, 1e-6);
    }
}

#[test]
fn casts_match_cpu() {
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
            &cpu().cast(x, to).unwrap(),
        );
    }
    // i64 -> f32 is exact for values that fit in i32, close otherwise.
    let got = gpu().cast(&up(&l), DType::F32).unwrap();
    assert_close(
        "cast i64 to f32",
        &got,
        &cpu().cast(&l, DType::F32).unwrap(),
        0.0,
        1e-7,
    );
}

#[test]
fn full_matches_cpu() {
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
                &cpu().full(dtype, shape, value).unwrap(),
            );
        }
    }
}
