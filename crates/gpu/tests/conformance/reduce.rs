//! Reductions and normalisations: softmax, layer-norm, reduce, top-k.

use edgeserve_tensor::{DType, ReduceOp, Tensor};

use crate::{Rng, assert_close, assert_same, cpu, gpu, up};

#[test]
fn softmax_matches_cpu_on_every_axis() {
    let mut rng = Rng::new(5);
    for shape in [&[3usize, 5, 7][..], &[17, 300], &[2, 1000, 3], &[1]] {
        for axis in 0..shape.len() as i32 {
            let x = rng.tensor(shape, -8.0, 8.0);
            let want = cpu().softmax(&x, axis).unwrap();
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
        let want = cpu().softmax(&x, axis).unwrap();
        let got = gpu().softmax(&x, axis).unwrap();
        assert_close("softmax -inf", &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn layer_norm_matches_cpu() {
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
            let want = cpu().layer_norm(&x, gg, bb, 1e-5).unwrap();
            let (gu, bu) = (gg.map(up), bb.map(up));
            let got = gpu()
                .layer_norm(&up(&x), gu.as_ref(), bu.as_ref(), 1e-5)
                .unwrap();
            assert_close(&format!("layer-norm {shape:?}"), &got, &want, 2e-5, 2e-5);
        }
    }
}

#[test]
fn reductions_match_cpu() {
    let mut rng = Rng::new(8);
    for shape in [&[3usize, 5, 7][..], &[17, 300], &[1]] {
        for axis in 0..shape.len() as i32 {
            for &op in ReduceOp::ALL {
                for keep in [false, true] {
                    let x = rng.tensor(shape, -5.0, 5.0);
                    let want = cpu().reduce(op, &x, axis, keep).unwrap();
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
fn top_k_matches_cpu() {
    let x = Rng::new(11).tensor(&[3, 5, 70], -1.0, 1.0);
    let (wv, wi) = cpu().top_k(&x, 6).unwrap();
    let (gv, gi) = gpu().top_k(&up(&x), 6).unwrap();
    assert_same("top-k values", &gv, &wv);
    assert_same("top-k indices", &gi, &wi);
}

/// Top-k of `x` on both backends: values and indices bit for bit.
fn check_top_k(what: &str, x: &Tensor, k: usize) {
    let (wv, wi) = cpu().top_k(x, k).unwrap();
    let (gv, gi) = gpu().top_k(&up(x), k).unwrap();
    let what = format!("top-k {what} {}{:?} k={k}", x.dtype(), x.shape());
    assert_same(&format!("{what} values"), &gv, &wv);
    assert_same(&format!("{what} indices"), &gi, &wi);
}

/// The device kernel ranks as the CPU does: NaN highest, -0 equal to 0,
/// ties by lower index; k = 0 and k = len; rows longer than a workgroup;
/// f16 rows that share words (odd k); i32 and i64 with their extremes.
#[test]
fn top_k_ranks_nan_and_ties_like_cpu_for_every_dtype() {
    let n = f32::NAN;
    let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
    let special = Tensor::from_f32(
        &[3, 8],
        vec![
            1.0, n, 3.0, 3.0, -0.0, 0.0, inf, n, //
            ninf, -1.0, 0.0, -0.0, -1.0, ninf, 2.0, 0.0, //
            n, n, n, 5.0, n, -5.0, n, 5.0,
        ],
    )
    .unwrap();
    // Few distinct values, so ties span the threads of a workgroup.
    let mut rng = Rng::new(15);
    let coarse = |rng: &mut Rng, shape: &[usize]| {
        let t = rng.tensor(shape, -4.0, 4.0);
        let v = t
            .host()
            .unwrap()
            .as_slice::<f32>()
            .iter()
            .map(|v| v.round())
            .collect();
        Tensor::from_f32(shape, v).unwrap()
    };
    let long = coarse(&mut rng, &[3, 1000]);
    let wide = rng.tensor(&[2, 3, 300], -1.0, 1.0);
    for (x, ks) in [
        (&special, &[0usize, 1, 3, 5, 8][..]),
        (&long, &[1, 7, 300, 1000][..]),
        (&wide, &[0, 2, 299][..]),
    ] {
        for &k in ks {
            check_top_k("f32", x, k);
            check_top_k("f16", &cpu().cast(x, DType::F16).unwrap(), k);
        }
    }
    let i32s: Vec<i32> = vec![3, i32::MIN, -1, i32::MAX, 3, 0, -1, i32::MIN, 7, 0];
    let i32s = Tensor::from_bytes(DType::I32, &[2, 5], bytemuck::cast_slice(&i32s)).unwrap();
    let i64s: Vec<i64> = vec![
        1 << 40,
        -(1 << 40),
        i64::MAX,
        (1 << 40) + 1,
        i64::MIN,
        1 << 40,
        -1,
        0,
        (1 << 32) - 1,
        1 << 32,
    ];
    let i64s = Tensor::from_bytes(DType::I64, &[10], bytemuck::cast_slice(&i64s)).unwrap();
    for k in [0, 1, 3, 5] {
        check_top_k("i32", &i32s, k);
    }
    for k in [0, 1, 4, 10] {
        check_top_k("i64", &i64s, k);
    }
    // An empty last axis with k = 0, and a host input uploaded on the fly.
    check_top_k("empty", &Tensor::from_f32(&[3, 0], vec![]).unwrap(), 0);
    let (gv, _) = gpu().top_k(&special, 2).unwrap();
    assert_same(
        "top-k host input",
        &gv,
        &cpu().top_k(&special, 2).unwrap().0,
    );
}
