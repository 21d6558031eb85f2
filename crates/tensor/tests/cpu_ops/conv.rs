//! Sliding windows over NCHW: conv2d and pool2d.

use edgeserve_tensor::shape::ClipBounds;
use edgeserve_tensor::{Conv2d, DType, Pool2d, PoolKind};

use crate::common::*;

pub fn ref_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    p: Conv2d,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let [n, c, h, wd] = xs;
    let [o, cg, kh, kw] = ws;
    let (before, after) = (p.padding, p.padding_end);
    let oh = (h + before.0 + after.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
    let ow = (wd + before.1 + after.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
    let og = o / p.groups;
    let (mut out, mut scale) = (vec![], vec![]);
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| f64::from(bb[oc]));
                    let mut abs = s.abs();
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let ix = (ox * p.stride.1 + kx * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = f64::from(
                                    x[((b * c + ic) * h + iy as usize) * wd + ix as usize],
                                );
                                let wv = f64::from(w[((oc * cg + ci) * kh + ky) * kw + kx]);
                                s += xv * wv;
                                abs += (xv * wv).abs();
                            }
                        }
                    }
                    let lo = p.clip.lo.unwrap_or(f64::NEG_INFINITY);
                    out.push(s.max(lo).min(p.clip.hi.unwrap_or(f64::INFINITY)));
                    scale.push(abs);
                }
            }
        }
    }
    (vec![n, o, oh, ow], out, scale)
}

/// Stride, padding and dilation as (height, width) pairs, then groups.
pub type Geometry = ((usize, usize), (usize, usize), (usize, usize), usize);

pub fn conv_params((stride, padding, dilation, groups): Geometry) -> Conv2d {
    Conv2d::symmetric(stride, padding, dilation, groups)
}

/// `p` as written, clipped, and with one more zero row or column after the
/// input (clipped below only): each kernel's epilogue and its uneven
/// padding.
fn variants(p: Conv2d) -> [Conv2d; 4] {
    let (h, w) = p.padding;
    let both = ClipBounds {
        lo: Some(-0.5),
        hi: Some(0.5),
    };
    let below = ClipBounds {
        lo: Some(0.0),
        hi: None,
    };
    [
        p,
        Conv2d { clip: both, ..p },
        Conv2d {
            padding_end: (h + 1, w),
            clip: below,
            ..p
        },
        Conv2d {
            padding_end: (h, w + 1),
            clip: both,
            ..p
        },
    ]
}

/// Unit stride and dilation, and padding 1: a 3×3 kernel keeps the size.
fn same(groups: usize) -> Geometry {
    ((1, 1), (1, 1), (1, 1), groups)
}

/// Unit stride and dilation, no padding.
const PLAIN: Geometry = ((1, 1), (0, 0), (1, 1), 1);

#[test]
fn conv2d_matches_naive() {
    let mut rng = Rng::new(90);
    let cases: &[([usize; 4], [usize; 4], Geometry)] = &[
        ([2, 3, 7, 9], [4, 3, 3, 3], same(1)),
        ([2, 3, 7, 9], [4, 3, 3, 3], ((2, 2), (1, 1), (1, 1), 1)),
        ([1, 3, 11, 10], [5, 3, 3, 3], ((1, 2), (2, 0), (2, 1), 1)),
        ([2, 4, 6, 6], [6, 2, 3, 3], same(2)),
        ([1, 5, 8, 7], [5, 1, 3, 3], same(5)),
        ([3, 8, 5, 6], [4, 8, 1, 1], PLAIN),
        ([1, 8, 5, 6], [4, 8, 1, 1], ((2, 2), (0, 0), (1, 1), 1)),
        ([2, 2, 9, 12], [3, 2, 2, 5], ((3, 2), (1, 2), (1, 1), 1)),
        ([1, 3, 2, 2], [2, 3, 3, 3], ((1, 1), (3, 3), (1, 1), 1)),
        ([1, 3, 64, 64], [16, 3, 7, 7], ((2, 2), (3, 3), (1, 1), 1)),
        ([4, 16, 20, 20], [32, 16, 3, 3], same(1)),
        // One image, many groups: the groups are what runs in parallel.
        ([1, 32, 28, 28], [32, 1, 3, 3], same(32)),
        ([1, 16, 30, 30], [32, 4, 3, 3], ((2, 2), (1, 1), (1, 1), 4)),
        // One input channel a group (depthwise): a channel multiplier of
        // 2 at stride 2, a dilated 7×7 kernel wider than a block of 8
        // columns, stride 3, and a single-channel input (groups 1).
        ([2, 6, 19, 21], [12, 1, 3, 3], ((2, 2), (1, 1), (1, 1), 6)),
        ([1, 4, 17, 23], [4, 1, 7, 7], ((1, 1), (3, 5), (2, 2), 4)),
        ([2, 3, 9, 30], [3, 1, 3, 5], ((3, 3), (2, 0), (1, 1), 3)),
        ([1, 1, 12, 12], [4, 1, 3, 3], same(1)),
        // Rows of more than 16 outputs, so AVX-512's blocks of 16 columns
        // are full, at strides 1 and 2.
        ([1, 4, 9, 40], [4, 1, 3, 3], ((2, 2), (1, 1), (1, 1), 4)),
        ([1, 3, 6, 37], [3, 1, 3, 3], same(3)),
        // An empty input whose padding alone is read.
        ([1, 2, 3, 0], [2, 1, 1, 1], ((1, 1), (1, 1), (1, 1), 2)),
        // Wide enough for the packed product kernel: the patches of several
        // images as one product's rows, a ragged last panel of output
        // channels, strides, dilation and uneven padding, a strided 1×1
        // kernel, and 300 channels a tap (a depth of 2700).
        ([3, 16, 15, 13], [70, 16, 3, 3], ((1, 2), (1, 2), (2, 1), 1)),
        ([3, 64, 13, 13], [80, 64, 1, 1], ((2, 2), (0, 0), (1, 1), 1)),
        // A 1×1 kernel that reads its input as it lies, on the pointwise
        // tiles (as every product of the cases above that is not packed):
        // output channels and positions that leave short tiles (80 =
        // 6·12 + 8, 49 = 32 + 17); one image's plane split over the threads
        // by runs of positions; a 7×7 plane split by channels instead (200
        // channels, 16 tiles and a short one).
        ([3, 64, 7, 7], [80, 64, 1, 1], PLAIN),
        ([1, 16, 64, 64], [40, 16, 1, 1], PLAIN),
        ([2, 24, 20, 21], [37, 24, 1, 1], PLAIN),
        ([1, 160, 7, 7], [200, 160, 1, 1], PLAIN),
        (
            [1, 300, 12, 12],
            [64, 300, 3, 3],
            ((1, 1), (1, 2), (1, 1), 1),
        ),
    ];
    for (&(xs, ws, geometry), with_bias) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
        for p in variants(conv_params(geometry)) {
            let (x, xd) = rand_f32(&mut rng, &xs);
            let (w, wd) = rand_f32(&mut rng, &ws);
            let (b, bd) = rand_f32(&mut rng, &[ws[0]]);
            let got = cpu().conv2d(&x, &w, with_bias.then_some(&b), p).unwrap();
            let (shape, want, scale) = ref_conv(&xd, xs, &wd, ws, with_bias.then_some(&bd[..]), p);
            assert_eq!(got.shape(), shape, "{xs:?} {ws:?} {p:?}");
            let what = format!("conv {xs:?} {ws:?} {p:?} bias {with_bias}");
            assert_close_scaled(&read_f32(&got), &want, &scale, 1e-4, 1e-6, &what);
        }
    }
    // f16
    let (xs, ws) = ([1, 2, 6, 5], [3, 2, 3, 3]);
    let (xd, wd) = (round_f16(&rng.vec(60)), round_f16(&rng.vec(54)));
    let p = conv_params(same(1));
    let got = cpu()
        .conv2d(&f16t(&xs, &xd), &f16t(&ws, &wd), None, p)
        .unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let (_, want, scale) = ref_conv(&xd, xs, &wd, ws, None, p);
    assert_close_scaled(&read_f32(&got), &want, &scale, 4e-3, 1e-3, "conv f16");
}

#[test]
fn conv2d_errors() {
    let c = cpu();
    let x = zeros(&[1, 4, 5, 5]);
    let p = conv_params(PLAIN);
    let msg = assert_err!(c.conv2d(&x, &zeros(&[2, 3, 3, 3]), None, p), Shape);
    assert!(
        msg.contains("[1, 4, 5, 5]") && msg.contains("[2, 3, 3, 3]"),
        "{msg}"
    );
    let g3 = conv_params(((1, 1), (0, 0), (1, 1), 3));
    assert_err!(c.conv2d(&x, &zeros(&[3, 1, 3, 3]), None, g3), Shape);
    let w = zeros(&[2, 4, 3, 3]);
    for zero in [
        ((0, 1), (0, 0), (1, 1), 1),
        ((1, 1), (0, 0), (1, 0), 1),
        ((1, 1), (0, 0), (1, 1), 0),
    ] {
        assert_err!(c.conv2d(&x, &w, None, conv_params(zero)), InvalidArgument);
    }
    assert_err!(c.conv2d(&x, &w, Some(&zeros(&[3])), p), Shape);
    assert_err!(c.conv2d(&x, &zeros(&[2, 4, 6, 3]), None, p), Shape);
    assert_err!(c.conv2d(&zeros(&[4, 5, 5]), &w, None, p), Shape);
    let ints = typed(DType::I32, &[1, 4, 5, 5], vec![0i32; 100]);
    assert_err!(c.conv2d(&ints, &w, None, p), DType);
    let half = f16t(&[2, 4, 3, 3], &[0.0; 72]);
    assert_err!(c.conv2d(&x, &half, None, p), DType);
}

pub fn ref_pool(x: &[f32], xs: [usize; 4], p: Pool2d) -> (Vec<usize>, Vec<f64>) {
    let [n, c, h, w] = xs;
    let oh = (h + 2 * p.padding.0 - p.kernel.0) / p.stride.0 + 1;
    let ow = (w + 2 * p.padding.1 - p.kernel.1) / p.stride.1 + 1;
    let mut out = vec![];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut vals = vec![];
                for ky in 0..p.kernel.0 {
                    for kx in 0..p.kernel.1 {
                        let iy = (oy * p.stride.0 + ky) as isize - p.padding.0 as isize;
                        let ix = (ox * p.stride.1 + kx) as isize - p.padding.1 as isize;
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            vals.push(f64::from(x[plane * h * w + iy as usize * w + ix as usize]));
                        }
                    }
                }
                out.push(match p.kind {
                    PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                });
            }
        }
    }
    (vec![n, c, oh, ow], out)
}

/// A pooling of `kind` with kernel, stride and padding as (height, width).
pub fn pool(
    kind: PoolKind,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Pool2d {
    Pool2d {
        kind,
        kernel,
        stride,
        padding,
    }
}

#[test]
fn pool2d_matches_naive() {
    let mut rng = Rng::new(91);
    for &kind in PoolKind::ALL {
        for (xs, kernel, stride, padding) in [
            ([2, 3, 7, 9], (2, 2), (2, 2), (0, 0)),
            ([2, 3, 7, 9], (3, 3), (2, 2), (1, 1)),
            ([1, 2, 8, 5], (3, 2), (1, 2), (1, 1)),
            ([1, 1, 1, 1], (1, 1), (1, 1), (0, 0)),
            ([4, 16, 32, 32], (3, 3), (1, 1), (1, 1)),
        ] {
            let p = pool(kind, kernel, stride, padding);
            let (x, xd) = rand_f32(&mut rng, &xs);
            let got = cpu().pool2d(&x, p).unwrap();
            let (shape, want) = ref_pool(&xd, xs, p);
            assert_eq!(got.shape(), shape);
            assert_close(&read_f32(&got), &want, 1e-6, 1e-7, &format!("{p:?} {xs:?}"));
            let hd = round_f16(&xd);
            let got = cpu().pool2d(&f16t(&xs, &hd), p).unwrap();
            let (_, want) = ref_pool(&hd, xs, p);
            let what = format!("f16 {p:?} {xs:?}");
            assert_close(&read_f32(&got), &want, 1e-3, 1e-3, &what);
        }
    }
}

/// A kernel far larger than the input, padded by half of itself, is a
/// global pool: every window clips to the whole input. Found by the
/// `shape_rules` fuzz target (fuzz/regressions/shape_rules/pool2d-huge-kernel-cost):
/// the kernel's cost estimate and window ends overflowed.
#[test]
fn pool2d_with_a_kernel_far_larger_than_the_input_pools_all_of_it() {
    let x = typed(
        DType::F32,
        &[1, 1, 2, 3],
        vec![1.0f32, 7.0, 3.0, 4.0, 5.0, 6.0],
    );
    let huge = 1usize << 62;
    for (kind, want) in [(PoolKind::Max, 7.0), (PoolKind::Avg, 26.0 / 6.0)] {
        let p = pool(kind, (huge, huge), (huge, huge), (huge / 2, huge / 2));
        let got = cpu().pool2d(&x, p).unwrap();
        assert_eq!(got.shape(), [1, 1, 1, 1]);
        assert_close(&read_f32(&got), &[want], 1e-6, 1e-7, &format!("{kind:?}"));
    }
}

#[test]
fn pool2d_errors() {
    let x = zeros(&[1, 1, 4, 4]);
    let p = |kernel, stride, padding| pool(PoolKind::Max, kernel, stride, padding);
    assert_err!(cpu().pool2d(&x, p((2, 2), (1, 1), (2, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((0, 2), (1, 1), (0, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((2, 2), (0, 1), (0, 0))), InvalidArgument);
    assert_err!(cpu().pool2d(&x, p((5, 2), (1, 1), (0, 0))), Shape);
    let two_d = zeros(&[4, 4]);
    assert_err!(cpu().pool2d(&two_d, p((2, 2), (1, 1), (0, 0))), Shape);
    let bytes = typed(DType::U8, &[1, 1, 4, 4], vec![0u8; 16]);
    assert_err!(cpu().pool2d(&bytes, p((2, 2), (1, 1), (0, 0))), DType);
    // No rows: every window would lie in the padding (found by the property
    // test; the kernel used to index past the empty input).
    let msg = assert_err!(
        cpu().pool2d(&zeros(&[1, 1, 0, 0]), p((4, 4), (1, 1), (2, 2))),
        Shape
    );
    assert!(msg.contains("no rows or columns"), "{msg}");
}
