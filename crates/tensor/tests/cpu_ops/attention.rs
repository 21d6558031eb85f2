//! Scaled dot-product attention against a naive f64 reference.

use edgeserve_tensor::{Attention, DType, Tensor};

use crate::common::*;

/// Shapes of q, k, v and the mask, and the options.
pub struct AttnCase<'a> {
    pub q: &'a [usize],
    pub k: &'a [usize],
    pub v: &'a [usize],
    pub mask: Option<&'a [usize]>,
    pub causal: bool,
    pub scale: Option<f32>,
}

impl AttnCase<'_> {
    pub fn params(&self) -> Attention {
        Attention {
            scale: self.scale,
            causal: self.causal,
        }
    }
}

/// Unscaled (1/√d) attention, causal or not.
fn plain(causal: bool) -> Attention {
    Attention {
        scale: None,
        causal,
    }
}

/// Naive attention in f64; returns (shape, values, error scale).
pub fn ref_attention(
    case: &AttnCase,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (sq, sk, sv) = (case.q, case.k, case.v);
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
                    if let (Some(m), Some(ms)) = (mask, case.mask) {
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

#[test]
fn attention_matches_naive() {
    let mut rng = Rng::new(100);
    type Shapes<'a> = (&'a [usize], &'a [usize], &'a [usize], Option<&'a [usize]>);
    // Multi-head q, k and v shared by the mask cases.
    const Q: &[usize] = &[2, 3, 5, 8];
    const K: &[usize] = &[2, 3, 7, 8];
    const V: &[usize] = &[2, 3, 7, 6];
    let cases: &[(Shapes, bool, Option<f32>)] = &[
        ((Q, K, V, None), false, None),
        ((Q, K, V, Some(&[5, 7])), false, None),
        ((Q, K, V, Some(&[2, 1, 1, 7])), true, Some(0.5)),
        ((Q, K, V, Some(&[5, 1])), false, None),
        ((&[4, 6, 16], &[4, 6, 16], &[4, 6, 16], None), true, None),
        // lq > lk: early rows see nothing.
        ((&[4, 9, 16], &[4, 6, 16], &[4, 6, 16], None), true, None),
        // One new token over a cache.
        ((&[1, 16], &[40, 16], &[40, 3], None), true, None),
        // Shared k/v heads.
        (
            (&[2, 4, 5, 8], &[2, 1, 7, 8], &[2, 1, 7, 8], None),
            false,
            None,
        ),
        // Several query blocks.
        ((&[200, 64], &[230, 64], &[230, 64], None), true, None),
        (
            (
                &[3, 130, 32],
                &[3, 130, 32],
                &[3, 130, 24],
                Some(&[3, 130, 130]),
            ),
            false,
            None,
        ),
        ((&[1, 1], &[1, 1], &[1, 1], None), false, None),
    ];
    for &((q, k, v, mask), causal, scale) in cases {
        let case = AttnCase {
            q,
            k,
            v,
            mask,
            causal,
            scale,
        };
        let (q, qd) = rand_f32(&mut rng, case.q);
        let (k, kd) = rand_f32(&mut rng, case.k);
        let (v, vd) = rand_f32(&mut rng, case.v);
        let md: Option<Vec<f32>> = case.mask.map(|s| {
            // Some -inf entries, as real masks have.
            rng.vec(numel(s))
                .iter()
                .map(|&x| if x > 0.7 { f32::NEG_INFINITY } else { x * 2.0 })
                .collect()
        });
        let m = case.mask.map(|s| f32t(s, md.clone().unwrap()));
        let got = cpu()
            .attention(&q, &k, &v, m.as_ref(), case.params())
            .unwrap();
        let (shape, want, scale) = ref_attention(&case, &qd, &kd, &vd, md.as_deref());
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
    let got = cpu()
        .attention(&q, &k, &v, Some(&mask), plain(false))
        .unwrap();
    assert_eq!(read_f32(&got), vec![0.0, 0.0, 3.0, 4.0]);
}

#[test]
fn attention_f16() {
    let mut rng = Rng::new(101);
    let case = AttnCase {
        q: &[2, 5, 8],
        k: &[2, 7, 8],
        v: &[2, 7, 4],
        mask: Some(&[5, 7]),
        causal: true,
        scale: None,
    };
    let (qd, kd, vd, md) = (
        round_f16(&rng.vec(80)),
        round_f16(&rng.vec(112)),
        round_f16(&rng.vec(56)),
        round_f16(&rng.vec(35)),
    );
    let (q, k, v) = (f16t(case.q, &qd), f16t(case.k, &kd), f16t(case.v, &vd));
    let mask = f16t(&[5, 7], &md);
    let got = cpu()
        .attention(&q, &k, &v, Some(&mask), case.params())
        .unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let (_, want, scale) = ref_attention(&case, &qd, &kd, &vd, Some(&md));
    assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "attention f16");
}

#[test]
fn attention_errors() {
    let c = cpu();
    let p = plain(false);
    let q = zeros(&[2, 3, 4]);
    let k = zeros(&[2, 5, 4]);
    let v = zeros(&[2, 5, 6]);
    c.attention(&q, &k, &v, None, p).unwrap();
    let msg = assert_err!(c.attention(&q, &zeros(&[2, 5, 3]), &v, None, p), Shape);
    assert!(
        msg.contains("[2, 3, 4]") && msg.contains("[2, 5, 3]"),
        "{msg}"
    );
    assert_err!(c.attention(&q, &k, &zeros(&[2, 4, 6]), None, p), Shape);
    let (k3, v3) = (zeros(&[3, 5, 4]), zeros(&[3, 5, 6]));
    assert_err!(c.attention(&q, &k3, &v3, None, p), Shape);
    let masked = |mask: &Tensor| c.attention(&q, &k, &v, Some(mask), p);
    assert_err!(masked(&zeros(&[3, 4])), Shape);
    // A mask may not add batch dimensions of its own.
    assert_err!(masked(&zeros(&[7, 2, 3, 5])), Shape);
    assert_err!(masked(&f16t(&[3, 5], &[0.0; 15])), DType);
    assert_err!(c.attention(&zeros(&[4]), &k, &v, None, p), Shape);
    let i = typed(DType::I32, &[2, 2], vec![0i32; 4]);
    assert_err!(c.attention(&i, &i, &i, None, p), DType);
}
