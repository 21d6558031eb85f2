//! Attention over sequences packed without padding (`attention-varlen`)
//! against the padded, masked `attention` it replaces.

use edgeserve_tensor::{Attention, DType, Tensor};

use crate::common::*;

/// Lengths of the packed sequences: an empty one, single tokens, and one
/// longer than a block of queries, so tasks start inside sequences.
const LENGTHS: [usize; 7] = [5, 1, 0, 17, 70, 3, 1];

/// `[0, l0, l0 + l1, …]`.
fn offsets(lengths: &[usize]) -> Vec<usize> {
    std::iter::once(0)
        .chain(lengths.iter().scan(0, |end, l| {
            *end += l;
            Some(*end)
        }))
        .collect()
}

/// Packed `[total, heads, width]` rows as `[n, heads, longest, width]`,
/// the padding filled with `pad` (which the mask must hide).
fn padded(packed: &[f32], offsets: &[usize], heads: usize, width: usize, pad: f32) -> Tensor {
    let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let n = offsets.len() - 1;
    let mut out = vec![pad; n * heads * longest * width];
    for s in 0..n {
        for (i, t) in (offsets[s]..offsets[s + 1]).enumerate() {
            for h in 0..heads {
                let from = (t * heads + h) * width;
                let to = ((s * heads + h) * longest + i) * width;
                out[to..to + width].copy_from_slice(&packed[from..from + width]);
            }
        }
    }
    f32t(&[n, heads, longest, width], out)
}

/// The real rows of a padded `[n, heads, longest, width]` result, packed.
fn packed(padded: &[f32], offsets: &[usize], heads: usize, width: usize) -> Vec<f32> {
    let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let mut out = Vec::new();
    for s in 0..offsets.len() - 1 {
        for i in 0..offsets[s + 1] - offsets[s] {
            for h in 0..heads {
                let at = ((s * heads + h) * longest + i) * width;
                out.extend_from_slice(&padded[at..at + width]);
            }
        }
    }
    out
}

#[test]
fn varlen_matches_padded_masked_attention() {
    let mut rng = Rng::new(110);
    let (heads, d, dv) = (3, 8, 6);
    let offs = offsets(&LENGTHS);
    let total = *offs.last().unwrap();
    let (q, qd) = rand_f32(&mut rng, &[total, heads, d]);
    let (k, kd) = rand_f32(&mut rng, &[total, heads, d]);
    let (v, vd) = rand_f32(&mut rng, &[total, heads, dv]);
    let longest = *LENGTHS.iter().max().unwrap();
    // Padding keys masked out, as a BERT batch does.
    let mask: Vec<f32> = LENGTHS
        .iter()
        .flat_map(|&l| (0..longest).map(move |j| if j < l { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = f32t(&[LENGTHS.len(), 1, 1, longest], mask);
    let (pq, pk, pv) = (
        padded(&qd, &offs, heads, d, 7.0),
        padded(&kd, &offs, heads, d, -5.0),
        padded(&vd, &offs, heads, dv, 100.0),
    );
    for causal in [false, true] {
        for scale in [None, Some(0.3)] {
            let params = Attention { scale, causal };
            let got = cpu().attention_varlen([&q, &k, &v], &offs, params).unwrap();
            assert_eq!(got.shape(), [total, heads, dv]);
            let want = cpu().attention(&pq, &pk, &pv, Some(&mask), params).unwrap();
            let want = packed(&read_f32(&want), &offs, heads, dv);
            let what = format!("varlen vs padded, causal {causal}, scale {scale:?}");
            assert_close(&read_f32(&got), &widen(&want), 1e-5, 1e-6, &what);
        }
    }
}

#[test]
fn varlen_f16_and_empty() {
    let mut rng = Rng::new(111);
    let offs = offsets(&[4, 9]);
    let data = |n: usize, rng: &mut Rng| round_f16(&rng.vec(n));
    let (qd, kd, vd) = (
        data(13 * 16, &mut rng),
        data(13 * 16, &mut rng),
        data(13 * 8, &mut rng),
    );
    let plain = Attention {
        scale: None,
        causal: false,
    };
    let (q, k, v) = (
        f16t(&[13, 2, 8], &qd),
        f16t(&[13, 2, 8], &kd),
        f16t(&[13, 2, 4], &vd),
    );
    let got = cpu().attention_varlen([&q, &k, &v], &offs, plain).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let (q, k, v) = (
        f32t(&[13, 2, 8], qd),
        f32t(&[13, 2, 8], kd),
        f32t(&[13, 2, 4], vd),
    );
    let want = cpu().attention_varlen([&q, &k, &v], &offs, plain).unwrap();
    assert_close(&read_f32(&got), &widen(&read_f32(&want)), 4e-3, 1e-3, "f16");
    // No tokens at all, with or without (empty) sequences.
    for offs in [&[0][..], &[0, 0, 0]] {
        let e = zeros(&[0, 2, 8]);
        let got = cpu().attention_varlen([&e, &e, &zeros(&[0, 2, 4])], offs, plain);
        assert_eq!(got.unwrap().shape(), [0, 2, 4]);
    }
}

#[test]
fn varlen_errors() {
    let c = cpu();
    let p = Attention {
        scale: None,
        causal: false,
    };
    let (q, v) = (zeros(&[5, 2, 4]), zeros(&[5, 2, 3]));
    c.attention_varlen([&q, &q, &v], &[0, 2, 5], p).unwrap();
    for offs in [&[][..], &[1, 5], &[0, 3, 2, 5], &[0, 2, 4], &[0, 6]] {
        let msg = assert_err!(c.attention_varlen([&q, &q, &v], offs, p), InvalidArgument);
        assert!(msg.starts_with("attention-varlen: offsets"), "{msg}");
    }
    let msg = assert_err!(
        c.attention_varlen([&q, &zeros(&[5, 2, 3]), &v], &[0, 5], p),
        Shape
    );
    assert!(msg.contains("[5, 2, 4]") && msg.contains("widths"), "{msg}");
    assert_err!(
        c.attention_varlen([&q, &q, &zeros(&[4, 2, 3])], &[0, 5], p),
        Shape
    );
    assert_err!(
        c.attention_varlen([&q, &zeros(&[5, 1, 4]), &v], &[0, 5], p),
        Shape
    );
    assert_err!(
        c.attention_varlen([&zeros(&[5, 8]), &q, &v], &[0, 5], p),
        Shape
    );
    let half = f16t(&[5, 2, 3], &[0.0; 30]);
    assert_err!(c.attention_varlen([&q, &q, &half], &[0, 5], p), DType);
    let i = typed(DType::I32, &[5, 2, 4], vec![0i32; 40]);
    assert_err!(c.attention_varlen([&i, &i, &i], &[0, 5], p), DType);
}
