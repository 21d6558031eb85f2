//! Elementwise ops: binary with broadcasting, unary, affine, cast and full.

use edgeserve_tensor::{BinaryOp, DType, Tensor, UnaryOp};
use half::f16;

use crate::common::*;

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

/// Positive values keep pow real and division away from zero.
fn positive(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec(n).iter().map(|v| v.abs() + 0.5).collect()
}

#[test]
fn binary_f32_broadcasts_like_numpy() {
    let mut rng = Rng::new(10);
    for &(sa, sb) in BROADCAST_CASES {
        for &op in BinaryOp::ALL {
            let (a, da) = rand_f32(&mut rng, sa);
            let db = positive(&mut rng, numel(sb));
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
        for &op in BinaryOp::ALL {
            let da = round_f16(&rng.vec(numel(sa)));
            let db = round_f16(&positive(&mut rng, numel(sb)));
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
    for &(sa, sb) in BROADCAST_CASES {
        // Every op but pow, which is float only.
        for &op in BinaryOp::ALL.iter().filter(|&&op| op != BinaryOp::Pow) {
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
            let (a64, b64) = (
                typed(DType::I64, sa, da.clone()),
                typed(DType::I64, sb, db.clone()),
            );
            let got = cpu().binary(op, &a64, &b64).unwrap();
            assert_eq!((got.dtype(), got.shape()), (DType::I64, &shape[..]));
            assert_eq!(read::<i64>(&got), want, "{op} i64 {sa:?} {sb:?}");
            let narrow = |v: &[i64]| v.iter().map(|&v| v as i32).collect::<Vec<_>>();
            let (a32, b32) = (
                typed(DType::I32, sa, narrow(&da)),
                typed(DType::I32, sb, narrow(&db)),
            );
            let got = cpu().binary(op, &a32, &b32).unwrap();
            assert_eq!(got.dtype(), DType::I32);
            assert_eq!(read::<i32>(&got), narrow(&want), "{op} i32");
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
    let a = zeros(&[2, 3]);
    let msg = assert_err!(c.binary(BinaryOp::Add, &a, &zeros(&[4])), Shape);
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

fn ref_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        UnaryOp::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Erf => libm::erf(x),
    }
}

/// `data` moved into `op`'s domain: at least `floor` for the ops defined
/// only on positive inputs, unchanged for the others.
fn in_domain(op: UnaryOp, data: &[f32], floor: f32) -> Vec<f32> {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => {
            data.iter().map(|v| v.abs() + floor).collect()
        }
        _ => data.to_vec(),
    }
}

/// `op` on `x`, which holds `input`, against the f64 reference; returns
/// the result for further checks.
fn check_unary(
    op: UnaryOp,
    x: &Tensor,
    input: &[f32],
    (rtol, atol): (f64, f64),
    what: &str,
) -> Tensor {
    let got = cpu().unary(op, x).unwrap();
    let want: Vec<f64> = input.iter().map(|&v| ref_unary(op, f64::from(v))).collect();
    assert_close(&read_f32(&got), &want, rtol, atol, what);
    got
}

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
    for &op in UnaryOp::ALL {
        let input = in_domain(op, &data, 1e-3);
        let x = f32t(&[input.len()], input.clone());
        check_unary(op, &x, &input, (2e-6, 1e-6), op.name());
    }
    for op in [UnaryOp::Exp, UnaryOp::Relu] {
        let nan = cpu().unary(op, &f32t(&[1], vec![f32::NAN])).unwrap();
        assert!(read_f32(&nan)[0].is_nan(), "{op}");
    }
}

/// Asserts that `op` on `input` is within `bound` of `reference`, relative
/// to each wanted value larger than `floor`, and prints the worst error. A
/// NaN counts as infinitely wrong: `f64::max` would otherwise pass over it.
fn assert_relatively_accurate(
    op: UnaryOp,
    input: &[f32],
    reference: impl Fn(f64) -> f64,
    floor: f64,
    bound: f64,
) {
    let got = unary_on(op, input);
    let worst = got
        .iter()
        .zip(input)
        .map(|(&g, &x)| (f64::from(g), reference(f64::from(x))))
        .filter(|&(_, w)| w.abs() > floor)
        .map(|(g, w)| {
            let error = ((g - w) / w).abs();
            if error.is_nan() { f64::INFINITY } else { error }
        })
        .fold(0.0, f64::max);
    eprintln!("{op} worst relative error {worst:e}");
    assert!(worst < bound, "{op}: worst relative error {worst:e}");
}

/// `op` on a 1-D tensor holding `input`, read back.
fn unary_on(op: UnaryOp, input: &[f32]) -> Vec<f32> {
    read_f32(
        &cpu()
            .unary(op, &f32t(&[input.len()], input.to_vec()))
            .unwrap(),
    )
}

/// GELU's left tail is tiny, so an absolute tolerance would hide any error
/// there; it has to be right relative to its own size, and so does the rest
/// of the line (through the tail into the body and past it).
#[test]
fn gelu_is_relatively_accurate_everywhere() {
    let input: Vec<f32> = (0..40_000).map(|i| -14.0 + i as f32 * 5e-4).collect();
    let exact = |x: f64| 0.5 * x * libm::erfc(-x / 2f64.sqrt());
    // exp flushes what would be subnormal to 0, as documented.
    assert_relatively_accurate(UnaryOp::Gelu, &input, exact, 1e-36, 1e-6);
    let far = unary_on(UnaryOp::Gelu, &[-20.0, -1e30, f32::MIN]);
    assert!(far.iter().all(|&v| v == 0.0), "{far:?}");
}

/// exp is the kernels' own polynomial (softmax, attention, sigmoid, tanh
/// and GELU all run on it), so its error is held to a couple of ulp across
/// its whole finite range, not just the loose bound every unary op meets.
#[test]
fn exp_is_relatively_accurate_everywhere() {
    let input: Vec<f32> = (0..176_000).map(|i| -87.3 + i as f32 * 1e-3).collect();
    assert_relatively_accurate(UnaryOp::Exp, &input, f64::exp, 0.0, 3e-7);
}

/// tanh near 0 is as small as its argument, so an absolute tolerance would
/// hide any error there; each result must be right relative to its own
/// size, across the polynomial's range, the switch to the exponential form
/// at 0.625 and the approach to ±1, with -0, ±inf and NaN passed through.
#[test]
fn tanh_is_relatively_accurate_everywhere() {
    let mut input: Vec<f32> = (0..48_000).map(|i| -12.0 + i as f32 * 5e-4).collect();
    input.extend((0..600).map(|i| 10f32.powf(-30.0 + i as f32 * 0.05)));
    input.extend([0.624_999_9, 0.625, 0.625_000_1, 9.0, 9.1, 44.0, 89.0, 1e30]);
    input.extend(input.clone().iter().map(|x| -x));
    assert_relatively_accurate(UnaryOp::Tanh, &input, f64::tanh, 0.0, 2.5e-7);
    let edges = unary_on(
        UnaryOp::Tanh,
        &[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
    );
    assert_eq!(edges[..4], [0.0, -0.0, 1.0, -1.0]);
    assert!(
        edges[1].is_sign_negative() && edges[4].is_nan(),
        "{edges:?}"
    );
}

/// ln near 1 is as small as x - 1, so it must be right relative to its own
/// size there as everywhere else: across the whole positive range,
/// subnormals included, both sides of the √½ switch of its mantissa, and the
/// values next to 1, with 0, -0, +inf, negatives and NaN handled as IEEE 754
/// says.
#[test]
fn log_is_relatively_accurate_everywhere() {
    let mut input: Vec<f32> = (0..=8_000)
        .map(|i| 10f32.powf(-45.0 + i as f32 * 0.01))
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    input.extend((1..2_000).flat_map(|i| {
        let step = i as f32 * f32::EPSILON;
        [1.0 + step, 1.0 - step / 2.0]
    }));
    input.extend((0..20_000).map(|i| 0.5 + i as f32 * 1e-4));
    input.extend([
        std::f32::consts::FRAC_1_SQRT_2,
        f32::from_bits(std::f32::consts::FRAC_1_SQRT_2.to_bits() - 1),
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
    ]);
    assert_relatively_accurate(UnaryOp::Log, &input, f64::ln, 0.0, 2.5e-7);
    let edges = unary_on(
        UnaryOp::Log,
        &[1.0, 0.0, -0.0, f32::INFINITY, -1.0, f32::NAN],
    );
    assert_eq!(
        edges[..4],
        [0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY]
    );
    assert!(edges[4].is_nan() && edges[5].is_nan(), "{edges:?}");
}

#[test]
fn unary_f16() {
    let mut rng = Rng::new(21);
    let data = round_f16(&(0..999).map(|_| rng.f32() * 6.0).collect::<Vec<_>>());
    for &op in UnaryOp::ALL {
        let input = round_f16(&in_domain(op, &data, 0.01));
        let x = f16t(&[3, 333], &input);
        let got = check_unary(op, &x, &input, (1e-3, 1e-4), &format!("{op} f16"));
        assert_eq!((got.dtype(), got.shape()), (DType::F16, &[3, 333][..]));
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
    // Every op but neg and abs is float only.
    for &op in UnaryOp::ALL {
        if matches!(op, UnaryOp::Neg | UnaryOp::Abs) {
            continue;
        }
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

#[test]
fn cast_truncates_and_saturates() {
    let c = cpu();
    let cast = |x: &Tensor, to: DType| c.cast(x, to).unwrap();
    let x = f32t(
        &[9],
        vec![1.5, -1.5, 3e9, -3e9, f32::NAN, 255.9, 256.0, -0.5, 70000.0],
    );
    assert_eq!(
        read::<i32>(&cast(&x, DType::I32)),
        vec![1, -1, i32::MAX, i32::MIN, 0, 255, 256, 0, 70000]
    );
    assert_eq!(
        read::<i64>(&cast(&x, DType::I64)),
        vec![1, -1, 3_000_000_000, -3_000_000_000, 0, 255, 256, 0, 70000]
    );
    assert_eq!(
        read::<u8>(&cast(&x, DType::U8)),
        vec![1, 0, 255, 0, 0, 255, 255, 0, 255]
    );
    let h = read_f32(&cast(&x, DType::F16));
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
        read::<i32>(&cast(&wide, DType::I32)),
        vec![-1, 300, i32::MAX, i32::MIN, 16_777_217]
    );
    assert_eq!(
        read::<u8>(&cast(&wide, DType::U8)),
        vec![0, 255, 255, 0, 255]
    );
    let big = (1u64 << 40) as f32;
    assert_eq!(
        read_f32(&cast(&wide, DType::F32)),
        vec![-1.0, 300.0, big, -big, 16_777_216.0]
    );
    let bytes = typed(DType::U8, &[3], vec![0u8, 128, 255]);
    assert_eq!(read::<i32>(&cast(&bytes, DType::I32)), vec![0, 128, 255]);
    assert_eq!(read_f32(&cast(&bytes, DType::F16)), vec![0.0, 128.0, 255.0]);
    // Every pair round-trips small integers exactly; same dtype is identity.
    let dtypes = [DType::F32, DType::F16, DType::I32, DType::I64, DType::U8];
    let base = f32t(&[2, 3], vec![0.0, 1.0, 2.0, 7.0, 100.0, 255.0]);
    for from in dtypes {
        let x = cast(&base, from);
        for to in dtypes {
            let y = cast(&x, to);
            assert_eq!((y.dtype(), y.shape()), (to, &[2, 3][..]));
            let back = cast(&y, DType::F32);
            assert_eq!(read_f32(&back), read_f32(&base), "{from} -> {to}");
        }
    }
    // A large cast takes the parallel path.
    let big = f32t(&[100_000], (0..100_000).map(|v| v as f32 + 0.7).collect());
    let got = read::<i64>(&cast(&big, DType::I64));
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as i64));
}

#[test]
fn full_converts_the_value() {
    let c = cpu();
    let full = |dtype: DType, shape: &[usize], value: f64| c.full(dtype, shape, value).unwrap();
    assert_eq!(read_f32(&full(DType::F32, &[2, 2], 1.25)), vec![1.25; 4]);
    assert_eq!(
        read_f32(&full(DType::F16, &[3], 0.1)),
        vec![f16::from_f64(0.1).to_f32(); 3]
    );
    assert_eq!(read::<i32>(&full(DType::I32, &[2], -3.7)), vec![-3, -3]);
    assert_eq!(read::<i64>(&full(DType::I64, &[1], 1e300)), vec![i64::MAX]);
    assert_eq!(read::<u8>(&full(DType::U8, &[2], -1.0)), vec![0, 0]);
    let s = full(DType::F32, &[], 2.0);
    assert_eq!((s.shape(), read_f32(&s)), (&[][..], vec![2.0]));
    assert_eq!(full(DType::I64, &[0, 5], 1.0).numel(), 0);
}
