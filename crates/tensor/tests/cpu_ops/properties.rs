//! The windowed and attention shape rules on random shapes and arguments
//! (proptest), against the naive references of `conv` and `attention`:
//! every case the front door accepts runs without a panic and gives the
//! reference's shape and values; every case it rejects is an error, never a
//! panic, and is one the plain definition rules out. The conditions are
//! written out here, independently of the rules.

use edgeserve_tensor::{PoolKind, Tensor};
use proptest::prelude::*;

use crate::attention::{AttnCase, ref_attention};
use crate::common::{Rng, *};
use crate::conv::{Geometry, conv_params, pool, ref_conv, ref_pool};

/// Random values for `shape` from a proptest-chosen seed.
fn data(seed: u64, shape: &[usize]) -> (Tensor, Vec<f32>) {
    rand_f32(&mut Rng::new(seed), shape)
}

/// Whether batch shapes broadcast together (NumPy rules).
fn broadcasts(a: &[usize], b: &[usize]) -> bool {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .all(|(&x, &y)| x == y || x == 1 || y == 1)
}

/// A (height, width) pair, each at least `min` but now and then zero.
fn pair(min: usize, max: usize) -> impl Strategy<Value = (usize, usize)> {
    let one = move || prop_oneof![9 => min..=max, 1 => Just(0)];
    (one(), one())
}

/// `Some(wrong value)` now and then: a perturbation that may break a case.
fn now_and_then(range: std::ops::Range<usize>) -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.15, range)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn conv2d_matches_the_definition(
        (n, h, wd) in (0usize..3, 0usize..6, 0usize..6),
        (groups, per_group_in, per_group_out) in (prop_oneof![9 => 1usize..4, 1 => Just(0)], 0usize..3, 0usize..3),
        (kh, kw) in pair(1, 3),
        (stride, padding, dilation) in (pair(1, 3), (0usize..3, 0usize..3), pair(1, 2)),
        (wrong_channels, wrong_cg, bias) in (now_and_then(1..3), now_and_then(0..4), prop::option::of(now_and_then(0..5))),
        seed in any::<u64>(),
    ) {
        let c = groups.max(1) * per_group_in + wrong_channels.unwrap_or(0);
        let o = groups.max(1) * per_group_out;
        let cg = wrong_cg.unwrap_or(per_group_in);
        let (x, w) = ([n, c, h, wd], [o, cg, kh, kw]);
        let bias = bias.map(|wrong| wrong.unwrap_or(o));
        let geometry: Geometry = (stride, padding, dilation, groups);
        let p = conv_params(geometry);
        let (xt, xd) = data(seed, &x);
        let (wt, wdata) = data(seed ^ 1, &w);
        let (bt, bd) = bias.map(|len| data(seed ^ 2, &[len])).unzip();
        let fits = |size: usize, pad: usize, k: usize, dil: usize| size + 2 * pad > dil * (k - 1);
        let valid = stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0 && groups > 0
            && c % groups == 0 && o % groups == 0 && cg == c / groups
            && kh > 0 && kw > 0 && bias.is_none_or(|len| len == o)
            && fits(h, padding.0, kh, dilation.0) && fits(wd, padding.1, kw, dilation.1);
        match cpu().conv2d(&xt, &wt, bt.as_ref(), p) {
            Err(e) => prop_assert!(!valid, "x {x:?} w {w:?} {p:?} refused: {e}"),
            Ok(out) => {
                prop_assert!(valid, "x {:?} w {:?} {:?} bias {:?} accepted", x, w, p, bias);
                let (shape, want, scale) = ref_conv(&xd, x, &wdata, w, bd.as_deref(), p);
                prop_assert_eq!(out.shape(), shape.as_slice());
                assert_close_scaled(&read_f32(&out), &want, &scale, 1e-4, 1e-6, &format!("conv {x:?} {w:?} {p:?}"));
            }
        }
    }

    #[test]
    fn pool2d_matches_the_definition(
        x in prop::array::uniform4(0usize..7),
        kernel in pair(1, 4),
        stride in pair(1, 3),
        padding in (0usize..3, 0usize..3),
        max in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let p = pool(kind, kernel, stride, padding);
        let (xt, xd) = data(seed, &x);
        let valid = kernel.0 > 0 && kernel.1 > 0 && stride.0 > 0 && stride.1 > 0
            && 2 * padding.0 <= kernel.0 && 2 * padding.1 <= kernel.1 && x[2] > 0 && x[3] > 0
            && x[2] + 2 * padding.0 >= kernel.0 && x[3] + 2 * padding.1 >= kernel.1;
        match cpu().pool2d(&xt, p) {
            Err(e) => prop_assert!(!valid, "x {x:?} {p:?} refused: {e}"),
            Ok(out) => {
                prop_assert!(valid, "x {:?} {:?} accepted", x, p);
                let (shape, want) = ref_pool(&xd, x, p);
                prop_assert_eq!(out.shape(), shape.as_slice());
                assert_close(&read_f32(&out), &want, 1e-6, 1e-6, &format!("pool {x:?} {p:?}"));
            }
        }
    }

    #[test]
    fn attention_matches_the_definition(
        batches in prop::collection::vec(prop::collection::vec(1usize..3, 0..=2), 3),
        (lq, lk, wrong_lv) in (0usize..5, 0usize..5, now_and_then(0..5)),
        (d, dv, wrong_dk) in (1usize..5, 1usize..5, now_and_then(1..5)),
        mask in prop::option::of((0usize..=2, any::<bool>(), any::<bool>())),
        causal in any::<bool>(),
        scale in prop::option::of(0.1f32..2.0),
        seed in any::<u64>(),
    ) {
        let (lv, dk) = (wrong_lv.unwrap_or(lk), wrong_dk.unwrap_or(d));
        let (bq, bk, bv) = (&batches[0], &batches[1], &batches[2]);
        let q: Vec<usize> = [bq.as_slice(), &[lq, d]].concat();
        let k: Vec<usize> = [bk.as_slice(), &[lk, dk]].concat();
        let v: Vec<usize> = [bv.as_slice(), &[lv, dv]].concat();
        let batch_ok = broadcasts(bq, bk) && broadcasts(bq, bv) && broadcasts(bk, bv);
        let batch = if batch_ok { bcast_shape(&bcast_shape(bq, bk), bv) } else { vec![] };
        // A mask over the trailing `rank` score dims, each kept or set to 1.
        let mask_shape: Option<Vec<usize>> = mask.map(|(lead, keep_q, keep_k)| {
            let lead = &batch[batch.len() - lead.min(batch.len())..];
            [lead, &[if keep_q { lq } else { 1 }, if keep_k { lk } else { 1 }]].concat()
        });
        let valid = batch_ok && d == dk && lk == lv;
        let case = AttnCase { q: &q, k: &k, v: &v, mask: mask_shape.as_deref(), causal, scale };
        let ((qt, qd), (kt, kd), (vt, vd)) = (data(seed, &q), data(seed ^ 1, &k), data(seed ^ 2, &v));
        let (mt, md) = mask_shape.as_ref().map(|s| data(seed ^ 3, s)).unzip();
        match cpu().attention(&qt, &kt, &vt, mt.as_ref(), case.params()) {
            Err(e) => prop_assert!(!valid, "q {q:?} k {k:?} v {v:?} mask {mask_shape:?} refused: {e}"),
            Ok(out) => {
                prop_assert!(valid, "q {:?} k {:?} v {:?} accepted", q, k, v);
                let (shape, want, err) = ref_attention(&case, &qd, &kd, &vd, md.as_deref());
                prop_assert_eq!(out.shape(), shape.as_slice());
                assert_close_scaled(&read_f32(&out), &want, &err, 1e-4, 1e-6, &format!("attention q {q:?} k {k:?} v {v:?}"));
            }
        }
    }
}
