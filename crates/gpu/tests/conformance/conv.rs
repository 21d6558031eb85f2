//! Convolution and pooling.

use edgeserve_tensor::shape::ClipBounds;
use edgeserve_tensor::{Conv2d, Pool2d, PoolKind, Tensor, TensorError};

use crate::{Rng, assert_close, cpu, floats, gpu, up};

#[test]
fn conv2d_matches_cpu() {
    let mut rng = Rng::new(13);
    struct Case {
        x: [usize; 4],
        /// Output channels, kernel (h, w).
        o: usize,
        k: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    }
    let case = |x, o, k, stride, padding, dilation, groups| Case {
        x,
        o,
        k,
        stride,
        padding,
        dilation,
        groups,
    };
    let cases = [
        case([1, 3, 7, 9], 5, (3, 3), (1, 1), (0, 0), (1, 1), 1),
        case([2, 3, 11, 13], 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        case([2, 4, 15, 10], 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),
        case([1, 3, 17, 17], 8, (7, 7), (2, 2), (3, 3), (1, 1), 1),
        case([2, 2, 13, 11], 3, (3, 3), (1, 1), (2, 2), (2, 2), 1),
        case([1, 4, 9, 12], 6, (3, 2), (2, 1), (1, 0), (2, 1), 2),
        case([2, 6, 10, 9], 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),
        case([1, 8, 13, 13], 8, (3, 3), (2, 2), (1, 1), (1, 1), 8),
        case([3, 5, 6, 7], 7, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        case([1, 2, 5, 5], 3, (5, 5), (3, 3), (2, 2), (1, 1), 1),
        case([0, 3, 4, 4], 2, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ];
    for c in cases {
        let p = Conv2d::symmetric(c.stride, c.padding, c.dilation, c.groups);
        // A fused TensorFlow-style layer: one more zero row and column
        // after the input than before, and the output clipped (ReLU6's
        // shape, at this data's scale).
        let fused = Conv2d {
            padding_end: (c.padding.0 + 1, c.padding.1 + 1),
            clip: ClipBounds {
                lo: Some(0.0),
                hi: Some(0.5),
            },
            ..p
        };
        let x = rng.tensor(&c.x, -1.0, 1.0);
        let w = rng.tensor(&[c.o, c.x[1] / c.groups, c.k.0, c.k.1], -0.5, 0.5);
        let b = rng.tensor(&[c.o], -1.0, 1.0);
        for (p, bias) in [p, fused]
            .into_iter()
            .flat_map(|p| [(p, None), (p, Some(&b))])
        {
            let what = format!("conv2d x {:?} o {} {p:?} bias {}", c.x, c.o, bias.is_some());
            let want = cpu().conv2d(&x, &w, bias, p).unwrap();
            let gb = bias.map(up);
            let got = gpu().conv2d(&up(&x), &up(&w), gb.as_ref(), p).unwrap();
            assert_close(&what, &got, &want, 1e-5, 1e-4);
        }
    }
    // Host inputs are uploaded on the fly; shape errors are the shared ones.
    let x = rng.tensor(&[1, 2, 5, 5], -1.0, 1.0);
    let w = rng.tensor(&[4, 2, 3, 3], -1.0, 1.0);
    let p = Conv2d::symmetric((1, 1), (1, 1), (1, 1), 1);
    assert_close(
        "conv2d host inputs",
        &gpu().conv2d(&x, &w, None, p).unwrap(),
        &cpu().conv2d(&x, &w, None, p).unwrap(),
        1e-5,
        1e-4,
    );
    let bad = rng.tensor(&[4, 3, 3, 3], -1.0, 1.0);
    assert!(matches!(
        gpu().conv2d(&up(&x), &up(&bad), None, p),
        Err(TensorError::Shape(_))
    ));
}

#[test]
fn pool2d_matches_cpu() {
    let mut rng = Rng::new(14);
    let cases = [
        ([2, 3, 11, 13], (3, 3), (2, 2), (1, 1)),
        ([1, 4, 8, 8], (2, 2), (2, 2), (0, 0)),
        ([2, 2, 9, 7], (2, 2), (2, 2), (0, 0)),
        ([1, 3, 10, 6], (3, 2), (1, 2), (1, 1)),
        ([1, 1, 5, 5], (5, 5), (1, 1), (2, 2)),
        ([3, 2, 7, 7], (3, 3), (3, 3), (0, 0)),
    ];
    for (shape, kernel, stride, padding) in cases {
        let mut x = rng.tensor(&shape, -2.0, 2.0);
        if shape[0] == 2 && shape[2] == 11 {
            // NaNs propagate through max (and avg) like the CPU backend.
            let mut v = floats(&x);
            v[5] = f32::NAN;
            v[200] = f32::NAN;
            x = Tensor::from_f32(&shape, v).unwrap();
        }
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let p = Pool2d {
                kind,
                kernel,
                stride,
                padding,
            };
            let want = cpu().pool2d(&x, p).unwrap();
            let got = gpu().pool2d(&up(&x), p).unwrap();
            assert_close(&format!("pool2d {shape:?} {p:?}"), &got, &want, 1e-6, 1e-5);
        }
    }
    let x = up(&rng.tensor(&[1, 1, 4, 4], -1.0, 1.0));
    let p = Pool2d {
        kind: PoolKind::Max,
        kernel: (2, 2),
        stride: (2, 2),
        padding: (2, 2),
    };
    assert!(matches!(
        gpu().pool2d(&x, p),
        Err(TensorError::InvalidArgument(_))
    ));
}
