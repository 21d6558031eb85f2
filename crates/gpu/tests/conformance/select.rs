//! Ops that choose between elements (compare, where, clip) and the index
//! and broadcast copies (gather, expand).

use edgeserve_tensor::{CompareOp, DType, Tensor};

use crate::{Rng, assert_close, assert_same, cpu, gpu, up};

fn ints<T: bytemuck::Pod>(dtype: DType, shape: &[usize], data: &[T]) -> Tensor {
    Tensor::from_bytes(dtype, shape, bytemuck::cast_slice(data)).unwrap()
}

#[test]
fn compare_masks_match_for_f32_i32_and_i64() {
    let mut rng = Rng::new(80);
    // Few distinct values so that equality happens; NaN on both sides.
    let mut a: Vec<f32> = (0..2 * 7 * 5).map(|_| rng.f32(0.0, 3.0).floor()).collect();
    let mut b: Vec<f32> = (0..7).map(|_| rng.f32(0.0, 3.0).floor()).collect();
    a[3] = f32::NAN;
    b[2] = f32::NAN;
    let fa = Tensor::from_f32(&[2, 7, 5], a).unwrap();
    let fb = Tensor::from_f32(&[7, 1], b).unwrap();
    // i64 values that differ only in the high word, or only in the low one.
    let big: Vec<i64> = (0..35).map(|i| ((i % 3) - 1) << 33 | (i % 2)).collect();
    let ia = ints(DType::I64, &[5, 7], &big);
    let ib = ints(DType::I64, &[7], &big[..7]);
    let ja = cpu().cast(&ia, DType::I32).unwrap();
    let jb = cpu().cast(&fb, DType::I32).unwrap();
    let ja2 = cpu().cast(&fa, DType::I32).unwrap();
    for &op in CompareOp::ALL {
        for (a, b) in [(&fa, &fb), (&ia, &ib), (&ja2, &jb), (&ja, &ja)] {
            let want = cpu().compare(op, a, b).unwrap();
            let got = gpu().compare(op, &up(a), &up(b)).unwrap();
            assert_same(&format!("{op} {}", a.dtype()), &got, &want);
        }
    }
    // An odd element count leaves a partial last word.
    let odd = Tensor::from_f32(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let three = Tensor::from_f32(&[], vec![3.0]).unwrap();
    assert_same(
        "less-equal, 5 elements",
        &gpu()
            .compare(CompareOp::LessEqual, &up(&odd), &up(&three))
            .unwrap(),
        &cpu().compare(CompareOp::LessEqual, &odd, &three).unwrap(),
    );
}

#[test]
fn where_matches_for_every_condition_dtype() {
    let mut rng = Rng::new(81);
    let a = rng.tensor(&[2, 1, 6], -1.0, 1.0);
    let b = rng.tensor(&[5, 1], -1.0, 1.0);
    let cond = Tensor::from_f32(
        &[5, 6],
        (0..30).map(|i| [0.0, -0.0, 1.0, f32::NAN][i % 4]).collect(),
    )
    .unwrap();
    let mask = cpu()
        .compare(
            CompareOp::NotEqual,
            &cond,
            &Tensor::from_f32(&[], vec![0.0]).unwrap(),
        )
        .unwrap();
    let conds = [
        cond.clone(),
        mask.clone(),
        cpu().cast(&cond, DType::F16).unwrap(),
        cpu().cast(&cond, DType::I32).unwrap(),
        cpu().cast(&cond, DType::I64).unwrap(),
    ];
    for c in &conds {
        let want = cpu().select(c, &a, &b).unwrap();
        // The condition computed on the device, and uploaded.
        let got = gpu().select(&up(c), &up(&a), &up(&b)).unwrap();
        assert_same(&format!("where, condition {}", c.dtype()), &got, &want);
    }
    let device_mask = gpu()
        .compare(
            CompareOp::NotEqual,
            &up(&cond),
            &up(&Tensor::from_f32(&[], vec![0.0]).unwrap()),
        )
        .unwrap();
    assert_same(
        "where, mask computed on the device",
        &gpu().select(&device_mask, &up(&a), &up(&b)).unwrap(),
        &cpu().select(&mask, &a, &b).unwrap(),
    );
    // 8-byte branches move whole.
    let ia = ints(DType::I64, &[3], &[i64::MAX, -1, 7]);
    let ib = ints(DType::I64, &[1], &[i64::MIN]);
    let c = ints(DType::U8, &[3], &[0u8, 1, 0]);
    assert_same(
        "where i64",
        &gpu().select(&up(&c), &up(&ia), &up(&ib)).unwrap(),
        &cpu().select(&c, &ia, &ib).unwrap(),
    );
}

#[test]
fn gather_matches_on_every_axis_and_refuses_what_the_cpu_refuses() {
    let mut rng = Rng::new(82);
    let x = rng.tensor(&[3, 4, 5], -1.0, 1.0);
    let longs: Vec<i64> = (0..11).map(|i: i64| i64::from(i as i32 % 7) - 3).collect();
    let x64 = cpu().cast(&x.clone(), DType::I64).unwrap();
    for axis in 0..3i32 {
        let dim = [3, 4, 5][axis as usize];
        let picks: Vec<i64> = longs.iter().map(|&i| i.clamp(-dim, dim - 1)).collect();
        let i64s = ints(DType::I64, &[11], &picks);
        let i32s = ints(
            DType::I32,
            &[1, 11],
            &picks.iter().map(|&i| i as i32).collect::<Vec<_>>(),
        );
        for ids in [&i64s, &i32s] {
            for data in [&x, &x64] {
                assert_same(
                    &format!("gather axis {axis} {} by {}", data.dtype(), ids.dtype()),
                    &gpu().gather(&up(data), &up(ids), axis).unwrap(),
                    &cpu().gather(data, ids, axis).unwrap(),
                );
            }
        }
    }
    for bad in [4i64, -5, 1 << 40] {
        let ids = ints(DType::I64, &[2], &[0, bad]);
        assert_eq!(
            gpu().gather(&up(&x), &up(&ids), 1).unwrap_err(),
            cpu().gather(&x, &ids, 1).unwrap_err(),
            "index {bad}"
        );
    }
    // Indices computed on the device are checked too: argmax of a row is
    // in range, the same plus 10 is not.
    let scores = rng.tensor(&[4, 5], -1.0, 1.0);
    let at = gpu()
        .reduce(edgeserve_tensor::ReduceOp::ArgMax, &up(&scores), -1, false)
        .unwrap();
    let want_at = cpu()
        .reduce(edgeserve_tensor::ReduceOp::ArgMax, &scores, -1, false)
        .unwrap();
    assert_same(
        "gather by device indices",
        &gpu().gather(&up(&x), &at, 2).unwrap(),
        &cpu().gather(&x, &want_at, 2).unwrap(),
    );
    let ten = up(&ints(DType::I64, &[], &[10i64]));
    let far = gpu()
        .binary(
            edgeserve_tensor::BinaryOp::Add,
            &gpu().cast(&at, DType::F32).unwrap(),
            &gpu().cast(&ten, DType::F32).unwrap(),
        )
        .unwrap();
    let far = gpu().cast(&far, DType::I64).unwrap();
    let err = gpu().gather(&up(&x), &far, 2).unwrap_err();
    assert!(
        err.to_string().contains("out of range for an axis of 5"),
        "{err}"
    );
}

#[test]
fn expand_and_clip_match() {
    let mut rng = Rng::new(83);
    let x = rng.tensor(&[3, 1, 4], -2.0, 2.0);
    let x64 = cpu().cast(&x, DType::I64).unwrap();
    for target in [&[2, 3, 5, 4][..], &[3, 1, 4], &[1, 6, 1]] {
        for t in [&x, &x64] {
            assert_same(
                &format!("expand {} to {target:?}", t.dtype()),
                &gpu().expand(&up(t), target).unwrap(),
                &cpu().expand(t, target).unwrap(),
            );
        }
    }
    assert_eq!(
        gpu().expand(&up(&x), &[2, 2]).unwrap_err(),
        cpu().expand(&x, &[2, 2]).unwrap_err()
    );
    let mut data: Vec<f32> = (0..64).map(|_| rng.f32(-3.0, 3.0)).collect();
    data[5] = f32::NAN;
    data[6] = f32::NEG_INFINITY;
    let t = Tensor::from_f32(&[64], data).unwrap();
    for (lo, hi) in [
        (Some(-1.0), Some(1.5)),
        (None, Some(0.0)),
        (Some(0.5), None),
        (None, None),
    ] {
        assert_close(
            &format!("clip {lo:?} {hi:?}"),
            &gpu().clip(&up(&t), lo, hi).unwrap(),
            &cpu().clip(&t, lo, hi).unwrap(),
            0.0,
            0.0,
        );
    }
}
