//! Ops that read a whole axis: softmax, layer norm, reduce and top-k.

use edgeserve_tensor::{DType, ReduceOp, Tensor, shape};

use crate::common::*;

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
            let got = cpu().softmax(&x, axis as i32).unwrap();
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
    let want = ref_softmax(&data, &[3, 3], 1);
    assert_close(&got, &want, 1e-6, 1e-7, "softmax rows");
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
    assert_err!(cpu().softmax(&zeros(&[2, 3]), 2), InvalidArgument);
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
            let what = format!("layer_norm {shape:?}");
            assert_close(&read_f32(&got), &want, 1e-4, 2e-5, &what);
        }
    }
    let data = [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
    let h = cpu()
        .layer_norm(&f16t(&[2, 4], &data), None, None, 1e-5)
        .unwrap();
    let want = ref_layer_norm(&data, 4, None, None, 1e-5);
    assert_eq!(h.dtype(), DType::F16);
    assert_close(&read_f32(&h), &want, 2e-3, 1e-3, "layer_norm f16");
}

#[test]
fn layer_norm_errors() {
    let x = zeros(&[2, 3]);
    let norm = |x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>| {
        cpu().layer_norm(x, gamma, beta, 1e-5)
    };
    assert_err!(norm(&x, Some(&zeros(&[2])), None), Shape);
    assert_err!(norm(&x, None, Some(&zeros(&[1, 3]))), Shape);
    assert_err!(norm(&x, Some(&f16t(&[3], &[0.0; 3])), None), DType);
    let ints = typed(DType::I32, &[3], vec![0i32; 3]);
    assert_err!(norm(&ints, None, None), DType);
    assert_err!(norm(&f32t(&[], vec![1.0]), None, None), Shape);
}

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

fn is_arg(op: ReduceOp) -> bool {
    matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin)
}

fn as_i64(values: &[f64]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}

/// One reduction of float `data` (as `x` holds it) checked against the
/// reference: indices exactly, values within rtol·(|want| + spread) + atol,
/// where `spread` grows with the axis length.
struct FloatCase<'a> {
    x: Tensor,
    data: &'a [f32],
    spread: f64,
    tolerance: (f64, f64),
}

#[test]
fn reduce_every_op_axis_and_dtype() {
    let mut rng = Rng::new(80);
    for shape in [vec![3, 5, 7], vec![40, 1000], vec![1000, 40], vec![1]] {
        // Small integers force ties, so "first occurrence" is exercised.
        let ints: Vec<i64> = (0..numel(&shape))
            .map(|_| rng.below(9) as i64 - 4)
            .collect();
        let floats: Vec<f32> = rng.vec(numel(&shape));
        let halves = round_f16(&floats);
        for axis in 0..shape.len() {
            let len = shape[axis] as f64;
            let float_cases = [
                FloatCase {
                    x: f32t(&shape, floats.clone()),
                    data: &floats,
                    spread: len.sqrt(),
                    tolerance: (1e-5, 1e-6),
                },
                FloatCase {
                    x: f16t(&shape, &halves),
                    data: &halves,
                    spread: 1e-2 * len,
                    tolerance: (1e-3, 1e-3),
                },
            ];
            for keep in [false, true] {
                let mut out_shape = shape.clone();
                if keep {
                    out_shape[axis] = 1
                } else {
                    out_shape.remove(axis);
                }
                for &op in ReduceOp::ALL {
                    let what = format!("{op} {shape:?} axis {axis} keep {keep}");
                    let reduce = |x: &Tensor| cpu().reduce(op, x, axis as i32, keep).unwrap();
                    for case in &float_cases {
                        let what = format!("{} {what}", case.x.dtype());
                        let got = reduce(&case.x);
                        let want = ref_reduce(op, &widen(case.data), &shape, axis);
                        assert_eq!(got.shape(), out_shape, "{what}");
                        if is_arg(op) {
                            assert_eq!(got.dtype(), DType::I64);
                            assert_eq!(read::<i64>(&got), as_i64(&want), "{what}");
                        } else {
                            assert_eq!(got.dtype(), case.x.dtype());
                            let scale: Vec<f64> =
                                want.iter().map(|w| w.abs() + case.spread).collect();
                            let (rtol, atol) = case.tolerance;
                            assert_close_scaled(&read_f32(&got), &want, &scale, rtol, atol, &what);
                        }
                    }
                    // i32 / i64 (no mean)
                    if op == ReduceOp::Mean {
                        continue;
                    }
                    let ix: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
                    let want = as_i64(&ref_reduce(op, &ix, &shape, axis));
                    let got = reduce(&typed(DType::I64, &shape, ints.clone()));
                    assert_eq!(
                        (got.dtype(), read::<i64>(&got)),
                        (DType::I64, want.clone()),
                        "i64 {what}"
                    );
                    let i32s: Vec<i32> = ints.iter().map(|&v| v as i32).collect();
                    let got = reduce(&typed(DType::I32, &shape, i32s));
                    if is_arg(op) {
                        assert_eq!(read::<i64>(&got), want, "i32 {what}");
                    } else {
                        assert_eq!(got.dtype(), DType::I32);
                        let want: Vec<i32> = want.iter().map(|&v| v as i32).collect();
                        assert_eq!(read::<i32>(&got), want, "i32 {what}");
                    }
                }
            }
        }
    }
}

#[test]
fn reduce_errors() {
    let reduce = |op, x: &Tensor, axis| cpu().reduce(op, x, axis, false);
    let i = typed(DType::I32, &[2, 3], vec![0i32; 6]);
    let msg = assert_err!(reduce(ReduceOp::Mean, &i, 1), DType);
    assert!(msg.contains("mean") && msg.contains("i32"), "{msg}");
    let bytes = typed(DType::U8, &[2], vec![0u8; 2]);
    assert_err!(reduce(ReduceOp::Sum, &bytes, 0), DType);
    assert_err!(reduce(ReduceOp::Sum, &i, 2), InvalidArgument);
    let empty = f32t(&[2, 0], vec![]);
    assert_err!(reduce(ReduceOp::Max, &empty, 1), InvalidArgument);
    assert_err!(reduce(ReduceOp::ArgMin, &empty, 1), InvalidArgument);
    assert_eq!(
        read_f32(&reduce(ReduceOp::Sum, &empty, 1).unwrap()),
        vec![0.0, 0.0]
    );
}

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
    assert_err!(cpu().top_k(&zeros(&[2, 3]), 4), InvalidArgument);
    assert_err!(cpu().top_k(&typed(DType::U8, &[3], vec![0u8; 3]), 1), DType);
    assert_err!(cpu().top_k(&zeros(&[]), 1), Shape);
}
