//! Products: matmul, linear (fused epilogue), f16, batches, attention.

use edgeserve_tensor::{Attention, Backend, BinaryOp, DType, Tensor, UnaryOp};

use crate::{Rng, assert_close, assert_same, cpu, gpu, gpu_backend, up};

/// (m, k, n): odd sizes take the kernel's element-wise path, sizes with k
/// and n multiples of 4 its whole-quad path; neither need be a multiple of
/// the 128x64 tile or the depth step of 16.
const MATMUL_SIZES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (3, 5, 7),
    (65, 129, 33),
    (17, 33, 65),
    (130, 70, 90),
    (257, 129, 65),
    (257, 131, 259),
    (1, 4, 4),
    (3, 4, 8),
    (64, 64, 64),
    (100, 36, 68),
    (64, 512, 128),
];

/// Random operands of an `m x k` by `k x n` product in [-1, 1): `b` as
/// `n x k` when `tb` (the product takes its transpose).
fn operands(rng: &mut Rng, (m, k, n): (usize, usize, usize), tb: bool) -> (Tensor, Tensor) {
    let a = rng.tensor(&[m, k], -1.0, 1.0);
    let b = if tb {
        rng.tensor(&[n, k], -1.0, 1.0)
    } else {
        rng.tensor(&[k, n], -1.0, 1.0)
    };
    (a, b)
}

/// Matmul tolerance for k ≤ 512: 1e-4·(1 + |ref|).
#[test]
fn matmul_matches_cpu() {
    let mut rng = Rng::new(1);
    for (m, k, n) in MATMUL_SIZES {
        for tb in [false, true] {
            let (a, b) = operands(&mut rng, (m, k, n), tb);
            let want = cpu().matmul(&a, &b, tb).unwrap();
            let got = gpu().matmul(&up(&a), &up(&b), tb).unwrap();
            assert_close(
                &format!("matmul {m}x{k}x{n} tb={tb}"),
                &got,
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

/// Every grid order of the matmul kernel computes every output tile as
/// row after row does, bit for bit: groups of fewer rows than the grid has
/// (the last one short), and of more.
#[test]
fn grouped_tile_orders_compute_the_same_product() {
    // A backend of its own: the order is a setting of the whole backend.
    let g = edgeserve_gpu::GpuBackend::new().expect("a GPU adapter");
    let ops = edgeserve_tensor::Ops::unlimited(&g);
    let mut rng = Rng::new(17);
    // 11 tile rows by 4 tile columns; k and n off the whole-quad path too.
    for (m, k, n) in [(1403, 36, 199), (1403, 33, 197)] {
        for tb in [false, true] {
            let (a, b) = operands(&mut rng, (m, k, n), tb);
            let (ga, gb) = (ops.from_host(&a).unwrap(), ops.from_host(&b).unwrap());
            // Every result held until all are read: a tile an order
            // skipped would otherwise keep the last result's value in the
            // reused buffer.
            let products: Vec<(u32, Tensor)> = [1, 4, 8, 16]
                .into_iter()
                .map(|rows| {
                    g.set_matmul_tile_group(rows);
                    assert_eq!(g.matmul_tile_group(), rows);
                    (rows, ops.matmul(&ga, &gb, tb).unwrap())
                })
                .collect();
            let read: Vec<(u32, Tensor)> = products
                .iter()
                .map(|(rows, c)| (*rows, ops.to_host(c).unwrap()))
                .collect();
            let row_major = &read[0].1;
            assert_close(
                &format!("matmul {m}x{k}x{n} tb={tb}"),
                row_major,
                &cpu().matmul(&a, &b, tb).unwrap(),
                1e-4,
                1e-4,
            );
            for (rows, grouped) in &read[1..] {
                assert_eq!(
                    grouped.host().unwrap().bytes(),
                    row_major.host().unwrap().bytes(),
                    "matmul {m}x{k}x{n} tb={tb}, groups of {rows} tile rows"
                );
            }
        }
    }
}

#[test]
fn f16_matmul_and_casts_match_cpu() {
    let mut rng = Rng::new(5);
    for (m, k, n, tb) in [
        (3, 5, 7, false),
        (65, 33, 20, true),
        (2, 64, 1, false),
        (130, 64, 68, false),
        (64, 128, 96, true),
    ] {
        let a = cpu()
            .cast(&rng.tensor(&[m, k], -1.0, 1.0), DType::F16)
            .unwrap();
        let bs: &[usize] = if tb { &[n, k] } else { &[k, n] };
        let b = cpu().cast(&rng.tensor(bs, -1.0, 1.0), DType::F16).unwrap();
        let want = cpu().matmul(&a, &b, tb).unwrap();
        let got = gpu().matmul(&a, &b, tb).unwrap();
        // One f16 rounding step of the result, plus f32 summation order.
        assert_close(&format!("f16 matmul {m}x{k}x{n}"), &got, &want, 1e-3, 1e-3);
    }
    // f16 -> f32 is exact; f32 -> f16 rounds to nearest (odd lengths too).
    let x = rng.tensor(&[7, 3], -100.0, 100.0);
    let h = cpu().cast(&x, DType::F16).unwrap();
    assert_same(
        "cast f16->f32",
        &gpu().cast(&h, DType::F32).unwrap(),
        &cpu().cast(&h, DType::F32).unwrap(),
    );
    assert_same("cast f32->f16", &gpu().cast(&x, DType::F16).unwrap(), &h);
}

/// Every activation, with and without bias, both operand layouts, odd and
/// whole-quad sizes and a broadcast batch: the fused kernel against the CPU
/// backend's `linear` and against matmul, add and the unary op as three calls.
#[test]
fn linear_matches_cpu_and_the_unfused_ops() {
    let mut rng = Rng::new(11);
    let acts = std::iter::once(None).chain(UnaryOp::ALL.iter().copied().map(Some));
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 5], &[5, 7]),
        (&[130, 64], &[64, 68]),
        (&[2, 1, 9, 33], &[3, 33, 20]),
        (&[1, 1], &[1, 1]),
    ];
    for (i, act) in acts.enumerate() {
        // Logs and roots get positive products (and biases), so results are
        // finite and well conditioned.
        let lo = match act {
            Some(UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt) => 0.1,
            _ => -1.0,
        };
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let tb = (i + j) % 2 == 1;
            let a = rng.tensor(sa, lo, 1.0);
            let mut sb = sb.to_vec();
            let r = sb.len();
            if tb {
                sb.swap(r - 1, r - 2);
            }
            let b = rng.tensor(&sb, lo, 1.0);
            let n = if tb { sb[r - 2] } else { sb[r - 1] };
            let bias = rng.tensor(&[n], lo.max(0.0), 1.0);
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias);
                let what = format!("linear {sa:?}x{sb:?} tb={tb} bias={with_bias} {act:?}");
                let want = cpu().linear(&a, &b, tb, bias, act).unwrap();
                let gb = bias.map(up);
                let got = gpu()
                    .linear(&up(&a), &up(&b), tb, gb.as_ref(), act)
                    .unwrap();
                assert_close(&what, &got, &want, 2e-4, 2e-4);
                let mut apart = gpu().matmul(&up(&a), &up(&b), tb).unwrap();
                if let Some(gb) = &gb {
                    apart = gpu().binary(BinaryOp::Add, &apart, gb).unwrap();
                }
                if let Some(op) = act {
                    apart = gpu().unary(op, &apart).unwrap();
                }
                assert_close(
                    &format!("{what} vs unfused"),
                    &got,
                    &gpu().to_host(&apart).unwrap(),
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}

/// f16 operands, bias and result, on the native kernel where the device has
/// `shader-f16` (lavapipe, as in CI, does).
#[test]
fn f16_linear_matches_cpu() {
    let g = gpu_backend();
    if g.info().device.contains("llvmpipe") {
        assert!(g.has_shader_f16(), "lavapipe offers shader-f16");
    }
    let mut rng = Rng::new(12);
    let h = |t: Tensor| cpu().cast(&t, DType::F16).unwrap();
    for (m, k, n, tb) in [(64, 128, 96, false), (130, 64, 68, true), (5, 3, 9, false)] {
        let a = h(rng.tensor(&[m, k], -1.0, 1.0));
        let b = h(rng.tensor(&if tb { [n, k] } else { [k, n] }, -1.0, 1.0));
        let bias = h(rng.tensor(&[n], -1.0, 1.0));
        let want = cpu()
            .linear(&a, &b, tb, Some(&bias), Some(UnaryOp::GeluTanh))
            .unwrap();
        let got = gpu()
            .linear(
                &up(&a),
                &up(&b),
                tb,
                Some(&up(&bias)),
                Some(UnaryOp::GeluTanh),
            )
            .unwrap();
        assert_close(
            &format!("f16 linear {m}x{k}x{n} tb={tb}"),
            &got,
            &want,
            2e-3,
            2e-3,
        );
    }
}

#[test]
fn batched_matmul_broadcasts() {
    let mut rng = Rng::new(2);
    let cases: [(&[usize], &[usize], bool); 8] = [
        (&[2, 3, 17, 33], &[3, 33, 20], false),
        (&[4, 1, 5, 9], &[1, 3, 6, 9], true),
        (&[3, 65, 70], &[70, 66], false),
        (&[2, 1, 1], &[2, 1, 1, 1], false),
        // k and n multiples of 4: whole-quad loads at every batch offset.
        (&[2, 3, 17, 32], &[3, 32, 20], false),
        (&[4, 1, 65, 36], &[1, 3, 68, 36], true),
        (&[3, 70, 64], &[64, 72], false),
        (&[70, 64], &[2, 3, 72, 64], true),
    ];
    for (sa, sb, tb) in cases {
        let a = rng.tensor(sa, -1.0, 1.0);
        let b = rng.tensor(sb, -1.0, 1.0);
        let want = cpu().matmul(&a, &b, tb).unwrap();
        // Host tensors are uploaded on the fly.
        let got = gpu().matmul(&a, &b, tb).unwrap();
        assert_close(&format!("matmul {sa:?}x{sb:?}"), &got, &want, 1e-4, 1e-4);
    }
}

#[test]
fn attention_matches_cpu() {
    let mut rng = Rng::new(10);
    // (q, k, v, mask) shapes and causality: plain 4-D, causal with fewer
    // and with more queries than keys, broadcast batch dims with a
    // broadcast mask, and a 2-D mask under causality.
    type Shape = &'static [usize];
    let cases: [(Shape, Shape, Shape, Option<Shape>, bool); 5] = [
        (
            &[2, 3, 17, 16],
            &[2, 3, 17, 16],
            &[2, 3, 17, 8],
            None,
            false,
        ),
        (&[2, 5, 16], &[2, 9, 16], &[2, 9, 16], None, true),
        (&[2, 9, 16], &[2, 5, 16], &[2, 5, 4], None, true),
        (
            &[2, 3, 7, 8],
            &[1, 3, 300, 8],
            &[2, 1, 300, 8],
            Some(&[2, 1, 1, 300]),
            false,
        ),
        (&[4, 33, 8], &[4, 33, 8], &[4, 33, 8], Some(&[33, 33]), true),
    ];
    for (qs, ks, vs, ms, causal) in cases {
        let q = rng.tensor(qs, -1.0, 1.0);
        let k = rng.tensor(ks, -1.0, 1.0);
        let v = rng.tensor(vs, -1.0, 1.0);
        let mask = ms.map(|s| rng.tensor(s, -2.0, 0.0));
        for scale in [None, Some(0.3)] {
            let p = Attention { scale, causal };
            let want = cpu().attention(&q, &k, &v, mask.as_ref(), p).unwrap();
            let gm = mask.as_ref().map(up);
            let got = gpu()
                .attention(&up(&q), &up(&k), &up(&v), gm.as_ref(), p)
                .unwrap();
            assert_close(&format!("attention {qs:?}"), &got, &want, 1e-5, 1e-4);
        }
    }
}

#[test]
fn chained_ops_run_in_one_submission() {
    let mut rng = Rng::new(12);
    let x = rng.tensor(&[8, 64], -1.0, 1.0);
    let w = rng.tensor(&[64, 64], -0.2, 0.2);
    let (mut c, mut g) = (x.clone(), up(&x));
    for _ in 0..10 {
        c = cpu().matmul(&c, &w, false).unwrap();
        c = cpu().unary(UnaryOp::Gelu, &c).unwrap();
        c = cpu().layer_norm(&c, None, None, 1e-5).unwrap();
        g = gpu().matmul(&g, &up(&w), false).unwrap();
        g = gpu().unary(UnaryOp::Gelu, &g).unwrap();
        g = gpu().layer_norm(&g, None, None, 1e-5).unwrap();
    }
    assert_close("chain", &g, &c, 1e-3, 1e-3);
}

#[test]
fn attention_varlen_matches_cpu() {
    let mut rng = Rng::new(13);
    // An empty sequence, single tokens, and one longer than a workgroup.
    let offsets = [0, 5, 5, 6, 23, 323, 326];
    let total = offsets[offsets.len() - 1];
    for (heads, d, dv) in [(3, 8, 6), (1, 16, 16)] {
        let q = rng.tensor(&[total, heads, d], -1.0, 1.0);
        let k = rng.tensor(&[total, heads, d], -1.0, 1.0);
        let v = rng.tensor(&[total, heads, dv], -1.0, 1.0);
        for (scale, causal) in [(None, false), (Some(0.3), true)] {
            let p = Attention { scale, causal };
            let want = cpu().attention_varlen([&q, &k, &v], &offsets, p).unwrap();
            let got = gpu()
                .attention_varlen([&up(&q), &up(&k), &up(&v)], &offsets, p)
                .unwrap();
            let what = format!("attention-varlen heads {heads}, causal {causal}");
            assert_close(&what, &got, &want, 1e-5, 1e-4);
        }
    }
}

#[test]
fn lstm_matches_cpu() {
    let mut rng = Rng::new(14);
    // One step; a batch past a workgroup's rows, backwards; a step the CPU
    // cuts over its threads; empty states.
    for (steps, batch, hidden, reverse) in [
        (1, 2, 8, false),
        (6, 3, 13, false),
        (9, 20, 32, true),
        (3, 2, 128, false),
        (3, 0, 4, false),
        (3, 2, 0, true),
    ] {
        let x_gates = rng.tensor(&[steps, batch, 4 * hidden], -2.0, 2.0);
        let r = rng.tensor(&[4 * hidden, hidden], -0.5, 0.5);
        let h0 = rng.tensor(&[batch, hidden], -1.0, 1.0);
        let c0 = rng.tensor(&[batch, hidden], -1.0, 1.0);
        let want = cpu().lstm([&x_gates, &r, &h0, &c0], reverse).unwrap();
        let on_gpu = [&x_gates, &r, &h0, &c0].map(up);
        let [x_gates, r, h0, c0] = &on_gpu;
        let got = gpu().lstm([x_gates, r, h0, c0], reverse).unwrap();
        let what =
            |part: &str| format!("lstm {part}, steps {steps}, batch {batch}, hidden {hidden}");
        assert_close(&what("y"), &got.0, &want.0, 1e-5, 1e-4);
        assert_close(&what("h"), &got.1, &want.1, 1e-5, 1e-4);
        assert_close(&what("c"), &got.2, &want.2, 1e-5, 1e-4);
    }
}
