//! matmul, and the fused linear against its composition.

use std::sync::Arc;

use edgeserve_tensor::{BinaryOp, DType, Storage, Tensor, UnaryOp};

use crate::common::*;

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
    let n = columns(sb, tb);
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

/// Columns of the product with a b of shape `sb`.
fn columns(sb: &[usize], tb: bool) -> usize {
    sb[sb.len() - if tb { 2 } else { 1 }]
}

/// `sb` with its two matrix axes swapped: the same b read transposed.
fn swap_last_two(sb: &[usize]) -> Vec<usize> {
    let mut t = sb.to_vec();
    let r = t.len();
    t.swap(r - 1, r - 2);
    t
}

fn check_matmul(rng: &mut Rng, sa: &[usize], sb: &[usize], tb: bool) {
    let (a, da) = rand_f32(rng, sa);
    let (b, db) = rand_f32(rng, sb);
    let got = cpu().matmul(&a, &b, tb).unwrap();
    let (shape, want, scale) = ref_matmul(&da, sa, &db, sb, tb);
    let what = format!("matmul {sa:?} x {sb:?} tb={tb}");
    assert_eq!(got.shape(), shape, "{what}");
    assert_close_scaled(&read_f32(&got), &want, &scale, 1e-4, 1e-6, &what);
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

/// One model weight under many products, as across requests: each gets
/// its own answer, whichever layout it reads the weight in (above 128 rows
/// the weight is packed once and the packing kept with the tensor).
#[test]
fn a_reused_weight_serves_every_product() {
    let mut rng = Rng::new(4);
    let (k, n) = (96, 96);
    let (b, db) = rand_f32(&mut rng, &[k, n]);
    let b = b.into_weight();
    for (m, tb) in [
        (200, true),
        (150, true),
        (200, false),
        (40, true),
        (300, false),
    ] {
        let (a, da) = rand_f32(&mut rng, &[m, k]);
        let got = cpu().matmul(&a, &b, tb).unwrap();
        let (_, want, scale) = ref_matmul(&da, &[m, k], &db, &[k, n], tb);
        let what = format!("matmul [{m}, {k}] x the shared weight, tb={tb}");
        assert_close_scaled(&read_f32(&got), &want, &scale, 1e-4, 1e-6, &what);
    }
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
        check_matmul(&mut rng, sa, &swap_last_two(sb), true);
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
    // The last, a model's weight above 128 rows, runs packed; its second
    // product reads only the kept packing.
    for (sa, sb, repeats) in [
        (vec![17, 33], vec![33, 65], 1),
        (vec![2, 5, 9], vec![9, 3], 1),
        (vec![200, 70], vec![70, 80], 2),
    ] {
        let (da, db) = (
            round_f16(&rng.vec(numel(&sa))),
            round_f16(&rng.vec(numel(&sb))),
        );
        let weight = f16t(&sb, &db).into_weight();
        for _ in 0..repeats {
            let got = cpu().matmul(&f16t(&sa, &da), &weight, false).unwrap();
            assert_eq!(got.dtype(), DType::F16);
            let (shape, want, scale) = ref_matmul(&da, &sa, &db, &sb, false);
            assert_eq!(got.shape(), shape);
            assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "matmul f16");
        }
    }
}

#[test]
fn matmul_errors() {
    let c = cpu();
    let a = zeros(&[2, 3]);
    let msg = assert_err!(c.matmul(&a, &zeros(&[4, 5]), false), Shape);
    assert_eq!(
        msg,
        "matmul: a [2, 3] and b [4, 5]: inner dimensions 3 and 4 differ"
    );
    assert_err!(c.matmul(&a, &zeros(&[3, 5]), true), Shape);
    assert_err!(c.matmul(&zeros(&[3]), &zeros(&[3, 2]), false), Shape);
    assert_err!(c.matmul(&a, &zeros(&[3]), false), Shape);
    assert_err!(
        c.matmul(&zeros(&[2, 2, 3]), &zeros(&[3, 3, 4]), false),
        Shape
    );
    let i = typed(DType::I32, &[2, 2], vec![0i32; 4]);
    let msg = assert_err!(c.matmul(&i, &i, false), DType);
    assert!(msg.contains("matmul") && msg.contains("i32"), "{msg}");
    assert_err!(c.matmul(&a, &f16t(&[3, 2], &[0.0; 6]), false), DType);
}

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
    std::iter::once(None).chain(UnaryOp::ALL.iter().copied().map(Some))
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
        (&[130, 200], &[200, 300]), // packed, its columns split over the threads
        (&[2, 0], &[0, 3]),         // k = 0: the bias alone
        (&[6, 7, 8], &[8, 9]),      // one weight under consecutive activations
        (&[2, 3, 4, 5], &[3, 5, 6]),
        (&[4, 5], &[3, 5, 6]),      // a broadcast over b's batch
        (&[64, 8, 8], &[64, 8, 8]), // many small products in parallel
        (&[3, 1, 40, 50], &[1, 2, 50, 60]),
    ];
    for (sa, sb) in cases {
        for tb in [false, true] {
            let sb = if tb { swap_last_two(sb) } else { sb.to_vec() };
            let n = columns(&sb, tb);
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
        let n = columns(sb, tb);
        for activation in activations() {
            let [da, db, dbias] =
                linear_operands(&mut rng, sa, sb, n, activation).map(|v| round_f16(&v));
            let (a, b, bias) = (f16t(sa, &da), f16t(sb, &db), f16t(&[n], &dbias));
            let what = format!("linear f16 {sa:?} x {sb:?} tb={tb} {activation:?}");
            let got = cpu().linear(&a, &b, tb, Some(&bias), activation).unwrap();
            assert_eq!(got.dtype(), DType::F16, "{what}");
            // Computed in f32 and rounded once, as matmul does with f16.
            let (a32, b32, bias32) = (f32t(sa, da), f32t(sb, db), f32t(&[n], dbias));
            let wide = cpu()
                .linear(&a32, &b32, tb, Some(&bias32), activation)
                .unwrap();
            assert!(
                bits(&got) == bits(&f32t(wide.shape(), round_f16(&read_f32(&wide)))),
                "{what}: not the f32 result rounded once"
            );
            // The composition rounds to f16 after every step, the fused op
            // only at the end.
            let want = read_f32(&composed(&a, &b, tb, Some(&bias), activation));
            assert_close(&read_f32(&got), &widen(&want), 1e-2, 1e-2, &what);
        }
    }
}

#[test]
fn linear_errors() {
    let c = cpu();
    let a = zeros(&[2, 3]);
    let b = zeros(&[3, 4]);
    let linear = |bias: &Tensor| c.linear(&a, &b, false, Some(bias), Some(UnaryOp::Relu));
    let product = c.matmul(&a, &b, false).unwrap();
    // Each refused like the composition refuses it.
    let long = zeros(&[5]);
    let msg = assert_err!(linear(&long), Shape);
    assert!(msg.contains("linear") && msg.contains("[5]"), "{msg}");
    assert_err!(c.binary(BinaryOp::Add, &product, &long), Shape);
    let half = f16t(&[4], &[0.0; 4]);
    let msg = assert_err!(linear(&half), DType);
    assert!(msg.contains("linear") && msg.contains("f16"), "{msg}");
    assert_err!(c.binary(BinaryOp::Add, &product, &half), DType);
    let wrong = zeros(&[4, 5]);
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
    assert_err!(linear(&zeros(&[1, 4])), Shape);
    assert_err!(linear(&zeros(&[])), Shape);
    let device = Tensor::new(DType::F32, &[4], Storage::Device(Arc::new(0u32)));
    let msg = assert_err!(linear(&device), Unsupported);
    assert!(msg.starts_with("linear"), "{msg}");
}
