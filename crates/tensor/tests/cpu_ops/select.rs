//! Ops that choose between elements (compare, where, clip) and the
//! index/broadcast copies (gather, expand), against plain index loops.

use edgeserve_tensor::{CompareOp, DType, Tensor};

use crate::common::*;

/// The plain definition of each comparison.
fn holds(op: CompareOp, x: f64, y: f64) -> bool {
    match op {
        CompareOp::Equal => x == y,
        CompareOp::NotEqual => x != y,
        CompareOp::Less => x < y,
        CompareOp::LessEqual => x <= y,
        CompareOp::Greater => x > y,
        CompareOp::GreaterEqual => x >= y,
    }
}

#[test]
fn compare_broadcasts_into_a_u8_mask() {
    let mut rng = Rng::new(70);
    let (sa, sb) = ([2, 1, 5], [3, 1]);
    // Few distinct values, so equality happens; NaN in both.
    let mut a: Vec<f32> = (0..10).map(|_| rng.below(3) as f32).collect();
    let mut b: Vec<f32> = (0..3).map(|_| rng.below(3) as f32).collect();
    a[4] = f32::NAN;
    b[1] = f32::NAN;
    let out = bcast_shape(&sa, &sb);
    for &op in CompareOp::ALL {
        for dtype in [DType::F32, DType::F16, DType::I32, DType::I64] {
            let (ta, tb) = match dtype {
                DType::F32 => (f32t(&sa, a.clone()), f32t(&sb, b.clone())),
                DType::F16 => (f16t(&sa, &a), f16t(&sb, &b)),
                _ => {
                    let cast = |t: Tensor| cpu().cast(&t, dtype).unwrap();
                    (cast(f32t(&sa, a.clone())), cast(f32t(&sb, b.clone())))
                }
            };
            let got = cpu().compare(op, &ta, &tb).unwrap();
            assert_eq!((got.shape(), got.dtype()), (&out[..], DType::U8));
            let want: Vec<u8> = (0..numel(&out))
                .map(|i| {
                    let c = coords(i, &out);
                    let (mut x, mut y) = (a[bcast_index(&c, &sa)], b[bcast_index(&c, &sb)]);
                    if !dtype.is_float() {
                        // The cast made NaN 0.
                        (x, y) = (
                            if x.is_nan() { 0.0 } else { x },
                            if y.is_nan() { 0.0 } else { y },
                        );
                    }
                    u8::from(holds(op, x.into(), y.into()))
                })
                .collect();
            assert_eq!(read::<u8>(&got), want, "{op} {dtype}");
        }
    }
    // Large i64 values compare exactly, not through a float.
    let big = typed(DType::I64, &[2], vec![i64::MAX, i64::MIN]);
    let near = typed(DType::I64, &[2], vec![i64::MAX - 1, i64::MIN + 1]);
    let mask = cpu().compare(CompareOp::Greater, &big, &near).unwrap();
    assert_eq!(read::<u8>(&mask), [1, 0]);
}

#[test]
fn compare_refuses_mixed_dtypes_and_bad_broadcasts() {
    let a = zeros(&[2, 3]);
    let i = typed(DType::I32, &[2, 3], vec![0i32; 6]);
    let msg = assert_err!(cpu().compare(CompareOp::Less, &a, &i), DType);
    assert!(
        msg.contains("less") && msg.contains("f32") && msg.contains("i32"),
        "{msg}"
    );
    let msg = assert_err!(cpu().compare(CompareOp::Equal, &a, &zeros(&[4])), Shape);
    assert!(
        msg.contains("equal") && msg.contains("[2, 3]") && msg.contains("[4]"),
        "{msg}"
    );
}

#[test]
fn where_selects_by_any_nonzero_condition_with_broadcasting() {
    let mut rng = Rng::new(71);
    let (sc, sa, sb) = ([3, 1], [2, 1, 4], [4]);
    let (ta, a) = rand_f32(&mut rng, &sa);
    let (tb, b) = rand_f32(&mut rng, &sb);
    let cond: Vec<f32> = vec![-0.0, 3.0, f32::NAN];
    let flags: Vec<bool> = cond.iter().map(|&v| v != 0.0).collect();
    let out = bcast_shape(&bcast_shape(&sa, &sb), &sc);
    let want: Vec<f32> = (0..numel(&out))
        .map(|i| {
            let c = coords(i, &out);
            if flags[bcast_index(&c, &sc)] {
                a[bcast_index(&c, &sa)]
            } else {
                b[bcast_index(&c, &sb)]
            }
        })
        .collect();
    let conds = [
        f32t(&sc, cond.clone()),
        f16t(&sc, &cond),
        typed(
            DType::U8,
            &sc,
            flags.iter().map(|&f| u8::from(f) * 7).collect(),
        ),
        typed(
            DType::I64,
            &sc,
            flags.iter().map(|&f| i64::from(f) << 40).collect(),
        ),
    ];
    for c in &conds {
        let got = cpu().select(c, &ta, &tb).unwrap();
        assert_eq!(got.shape(), out, "{}", c.dtype());
        assert_eq!(read_f32(&got), want, "condition {}", c.dtype());
    }
    // -0.0 is zero; integer branches move exactly.
    let neg_zero = f32t(&[2], vec![-0.0, 2.0]);
    let ia = typed(DType::I64, &[2], vec![i64::MAX, 1]);
    let ib = typed(DType::I64, &[1], vec![i64::MIN]);
    assert_eq!(
        read::<i64>(&cpu().select(&neg_zero, &ia, &ib).unwrap()),
        [i64::MIN, 1]
    );
}

#[test]
fn where_refuses_mixed_branches_and_bad_broadcasts() {
    let c = typed(DType::U8, &[2], vec![1u8, 0]);
    let i = typed(DType::I32, &[2], vec![0i32; 2]);
    let msg = assert_err!(cpu().select(&c, &zeros(&[2]), &i), DType);
    assert!(msg.starts_with("where:"), "{msg}");
    let msg = assert_err!(
        cpu().select(&zeros(&[3]), &zeros(&[2]), &zeros(&[2])),
        Shape
    );
    assert!(
        msg.contains("condition [3]") && msg.contains("a [2]"),
        "{msg}"
    );
    assert_err!(cpu().select(&c, &zeros(&[2]), &zeros(&[3])), Shape);
}

#[test]
fn gather_picks_along_any_axis_with_negative_indices() {
    let mut rng = Rng::new(72);
    let shape = [3, 4, 5];
    let (x, data) = rand_f32(&mut rng, &shape);
    let picks = [2i64, -1, 0, -4, 3, 1];
    for axis in 0..3 {
        let dim = shape[axis] as i64;
        let idx: Vec<i64> = picks.iter().map(|&i| i.clamp(-dim, dim - 1)).collect();
        let mut out = shape[..axis].to_vec();
        out.extend([2, 3]);
        out.extend(&shape[axis + 1..]);
        let want: Vec<f32> = (0..numel(&out))
            .map(|i| {
                let c = coords(i, &out);
                let k = idx[c[axis] * 3 + c[axis + 1]];
                let mut src: Vec<usize> = c[..axis].to_vec();
                src.push(if k < 0 {
                    (k + dim) as usize
                } else {
                    k as usize
                });
                src.extend(&c[axis + 2..]);
                data[flat(&src, &shape)]
            })
            .collect();
        let i64s = typed(DType::I64, &[2, 3], idx.clone());
        let i32s = typed(DType::I32, &[2, 3], idx.iter().map(|&i| i as i32).collect());
        for (ids, a) in [(&i64s, axis as i32), (&i32s, axis as i32 - 3)] {
            let got = cpu().gather(&x, ids, a).unwrap();
            assert_eq!(got.shape(), out);
            assert_eq!(read_f32(&got), want, "axis {a} {}", ids.dtype());
        }
    }
    // Scalar indices drop the axis; u8 data moves too.
    let t8 = typed(DType::U8, &[2, 3], vec![1u8, 2, 3, 4, 5, 6]);
    let one = typed(DType::I32, &[], vec![-1i32]);
    let got = cpu().gather(&t8, &one, 1).unwrap();
    assert_eq!((got.shape(), read::<u8>(&got)), (&[2][..], vec![3, 6]));
}

#[test]
fn gather_refuses_out_of_range_indices_axes_and_dtypes() {
    let x = zeros(&[3, 4]);
    for bad in [4i64, -5, i64::MAX, i64::MIN] {
        let ids = typed(DType::I64, &[2], vec![0, bad]);
        let msg = assert_err!(cpu().gather(&x, &ids, 1), InvalidArgument);
        assert_eq!(
            msg,
            format!("gather: index {bad} is out of range for an axis of 4")
        );
    }
    let ids = typed(DType::I32, &[1], vec![0i32]);
    let msg = assert_err!(cpu().gather(&x, &ids, 2), InvalidArgument);
    assert!(
        msg.starts_with("gather:") && msg.contains("axis 2"),
        "{msg}"
    );
    assert_err!(cpu().gather(&x, &zeros(&[1]), 0), DType);
    assert_err!(cpu().gather(&zeros(&[]), &ids, 0), InvalidArgument);
}

#[test]
fn expand_broadcasts_both_ways() {
    let mut rng = Rng::new(73);
    let (x, data) = rand_f32(&mut rng, &[3, 1]);
    for target in [&[2, 3, 4][..], &[1, 1], &[3, 1], &[4]] {
        let out = bcast_shape(&[3, 1], target);
        let got = cpu().expand(&x, target).unwrap();
        assert_eq!(got.shape(), out, "{target:?}");
        let want: Vec<f32> = (0..numel(&out))
            .map(|i| data[bcast_index(&coords(i, &out), &[3, 1])])
            .collect();
        assert_eq!(read_f32(&got), want, "{target:?}");
    }
    let i = typed(DType::I64, &[2], vec![i64::MIN, 5]);
    assert_eq!(
        read::<i64>(&cpu().expand(&i, &[2, 2]).unwrap()),
        [i64::MIN, 5, i64::MIN, 5]
    );
    let msg = assert_err!(cpu().expand(&x, &[2, 2]), Shape);
    assert_eq!(
        msg,
        "expand: x [3, 1] does not broadcast with the shape [2, 2]"
    );
}

#[test]
fn clip_bounds_every_numeric_dtype() {
    let data = vec![-3.0, -0.5, 0.0, 0.25, 2.0, f32::NAN, f32::INFINITY];
    let clip = |v: f32| if v.is_nan() { v } else { v.clamp(-1.0, 1.5) };
    let want: Vec<f64> = data.iter().map(|&v| f64::from(clip(v))).collect();
    let got = cpu()
        .clip(&f32t(&[7], data.clone()), Some(-1.0), Some(1.5))
        .unwrap();
    assert_close(&read_f32(&got), &want, 0.0, 0.0, "clip f32");
    let got = cpu()
        .clip(&f16t(&[7], &data), Some(-1.0), Some(1.5))
        .unwrap();
    assert_close(&read_f32(&got), &want, 0.0, 0.0, "clip f16");
    // One side only.
    let got = cpu()
        .clip(&f32t(&[3], vec![-2.0, 0.5, 9.0]), None, Some(1.0))
        .unwrap();
    assert_eq!(read_f32(&got), [-2.0, 0.5, 1.0]);
    let ints = typed(DType::I64, &[4], vec![i64::MIN, -1, 3, i64::MAX]);
    let got = cpu().clip(&ints, Some(0.0), Some(1e30)).unwrap();
    assert_eq!(read::<i64>(&got), [0, 0, 3, i64::MAX]);
    let got = cpu()
        .clip(&typed(DType::I32, &[2], vec![-9i32, 9]), Some(-2.0), None)
        .unwrap();
    assert_eq!(read::<i32>(&got), [-2, 9]);
    assert_err!(
        cpu().clip(&zeros(&[1]), Some(f64::NAN), None),
        InvalidArgument
    );
    assert_err!(
        cpu().clip(&typed(DType::U8, &[1], vec![0u8]), None, None),
        DType
    );
}
