//! What every op shares: host transfers, device tensors refused, NaN
//! propagation, oversized and empty results.

use std::sync::Arc;

use edgeserve_tensor::cpu::{Simd, cap_simd, simd};
use edgeserve_tensor::shape::ClipBounds;
use edgeserve_tensor::{
    BinaryOp, Conv2d, DType, HostBuffer, PoolKind, ReduceOp, Storage, Tensor, UnaryOp,
};

use crate::common::*;
use crate::conv::pool;

#[test]
fn host_transfers_are_identity() {
    let c = cpu();
    let x = f32t(&[2], vec![1.0, 2.0]);
    assert_eq!(read_f32(&c.from_host(&x).unwrap()), vec![1.0, 2.0]);
    assert_eq!(read_f32(&c.to_host(&x).unwrap()), vec![1.0, 2.0]);
    let info = c.backend().info();
    assert_eq!((info.kind, info.driver.as_str()), ("cpu", ""));
    assert!(
        info.device.starts_with(std::env::consts::ARCH),
        "{}",
        info.device
    );
}

#[test]
fn device_tensors_are_refused() {
    let c = cpu();
    let dev = Tensor::new(DType::F32, &[2, 2], Storage::Device(Arc::new(0u32)));
    let host = zeros(&[2, 2]);
    assert_err!(c.to_host(&dev), Unsupported);
    assert_err!(c.from_host(&dev), Unsupported);
    assert_err!(c.matmul(&dev, &host, false), Unsupported);
    assert_err!(c.binary(BinaryOp::Add, &host, &dev), Unsupported);
    assert_err!(c.unary(UnaryOp::Exp, &dev), Unsupported);
    assert_err!(c.reshape(&dev, &[4]), Unsupported);
    assert_err!(c.transpose(&dev, &[1, 0]), Unsupported);
    assert_err!(c.slice(&dev, 0, 0, 1), Unsupported);
    assert_err!(c.concat(&[&host, &dev], 0), Unsupported);
    assert_err!(c.reduce(ReduceOp::Sum, &dev, 0, false), Unsupported);
    assert_err!(c.cast(&dev, DType::F16), Unsupported);
    assert_err!(c.cast(&dev, DType::F32), Unsupported);
    assert_err!(c.softmax(&dev, 0), Unsupported);
    assert_err!(c.top_k(&dev, 1), Unsupported);
}

#[test]
fn nan_propagates_where_documented() {
    let c = cpu();
    let nan = f32::NAN;
    let x = f32t(&[2, 4], vec![1.0, nan, 3.0, nan, 5.0, 2.0, 7.0, 1.0]);
    let reduce = |op, axis| c.reduce(op, &x, axis, false).unwrap();
    let max = read_f32(&reduce(ReduceOp::Max, 1));
    assert!(max[0].is_nan() && max[1] == 7.0, "{max:?}");
    let min = read_f32(&reduce(ReduceOp::Min, 0));
    assert!(
        min[1].is_nan() && min[3].is_nan() && min[0] == 1.0,
        "{min:?}"
    );
    // The first NaN is the arg-extreme.
    assert_eq!(read::<i64>(&reduce(ReduceOp::ArgMax, 1)), vec![1, 2]);
    assert_eq!(read::<i64>(&reduce(ReduceOp::ArgMin, 1)), vec![1, 3]);
    let (v, i) = c.top_k(&x, 2).unwrap();
    let v = read_f32(&v);
    assert!(
        v[0].is_nan() && v[1].is_nan() && v[2] == 7.0 && v[3] == 5.0,
        "{v:?}"
    );
    assert_eq!(read::<i64>(&i), vec![1, 3, 2, 0]);
    let img = f32t(&[1, 1, 2, 2], vec![1.0, nan, 3.0, 4.0]);
    let window = pool(PoolKind::Max, (2, 2), (1, 1), (0, 0));
    assert!(read_f32(&c.pool2d(&img, window).unwrap())[0].is_nan());
    let long: Vec<f32> = (0..100)
        .map(|i| if i == 37 { nan } else { i as f32 })
        .collect();
    let sm = read_f32(&c.softmax(&f32t(&[100], long), 0).unwrap());
    assert!(sm.iter().all(|v| v.is_nan()));
}

#[test]
fn oversized_results_are_errors_not_aborts() {
    let c = cpu();
    // Past isize::MAX bytes: refused before allocating.
    let msg = assert_err!(c.full(DType::F32, &[usize::MAX / 2, 4], 0.0), OutOfMemory);
    assert!(msg.starts_with("full"), "{msg}");
    assert_err!(c.full(DType::I64, &[1 << 40, 1 << 40], 0.0), OutOfMemory);
    // Addressable but beyond any address space: the allocator refuses.
    let msg = assert_err!(c.full(DType::F32, &[1 << 48], 1.0), OutOfMemory);
    assert!(msg.starts_with("full"), "{msg}");
    // A shape whose element count wraps around cannot pass for a small buffer.
    let wrapped = Tensor::from_host(
        DType::U8,
        &[1 << 32, 1 << 32],
        HostBuffer::from_vec(Vec::<u8>::new()),
    );
    assert_err!(wrapped, Shape);
}

#[test]
fn empty_tensors_flow_through() {
    let c = cpu();
    let e = f32t(&[0, 3], vec![]);
    assert_eq!(c.unary(UnaryOp::Exp, &e).unwrap().shape(), [0, 3]);
    assert_eq!(c.softmax(&e, 1).unwrap().shape(), [0, 3]);
    assert_eq!(c.transpose(&e, &[1, 0]).unwrap().shape(), [3, 0]);
    assert_eq!(c.cast(&e, DType::U8).unwrap().shape(), [0, 3]);
    assert_eq!(c.layer_norm(&e, None, None, 1e-5).unwrap().shape(), [0, 3]);
    let u = c.cast(&e, DType::U8).unwrap();
    assert_eq!(c.cast(&u, DType::I64).unwrap().numel(), 0);
    let sliced = c.slice(&zeros(&[2, 3]), 1, 1, 1).unwrap();
    assert_eq!(sliced.shape(), [2, 0]);
}

/// Puts the SIMD cap back when a test that lowered it ends, even by a
/// failed assertion, so the other tests of this binary run at full width.
struct Uncapped;

impl Drop for Uncapped {
    fn drop(&mut self) {
        cap_simd(Simd::Avx512);
    }
}

/// Every vector width computes the same bits: the kernels' loops keep
/// each element's operations in the order written, so the cap changes only
/// how many lanes run at once. Covers the loops `with_simd` compiles
/// (elementwise, the linear epilogue, softmax, layer norm, reductions,
/// attention, depthwise convolutions) and the two tiles of the packed and
/// the panel products and of 1×1 convolutions, on sizes that also take the
/// threaded paths.
#[test]
fn every_simd_level_computes_the_same_bits() {
    let _restore = Uncapped;
    let c = cpu();
    let mut rng = Rng::new(7);
    // Wide enough for GELU's left tail, the exp clamps and the logs of
    // negatives (NaN), with infinities and NaN among them.
    let mut data: Vec<f32> = rng.vec(96 * 384).iter().map(|x| 12.0 * x).collect();
    data[..4].copy_from_slice(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0]);
    let x = f32t(&[96, 384], data);
    let (w, _) = rand_f32(&mut rng, &[384, 384]);
    // A model's weight: 96 rows run on the packed kernel's tiles.
    let weight = w.clone().into_weight();
    let (bias, _) = rand_f32(&mut rng, &[384]);
    let (gamma, _) = rand_f32(&mut rng, &[384]);
    let (q, _) = rand_f32(&mut rng, &[4, 24, 32]);
    let (k, _) = rand_f32(&mut rng, &[4, 24, 32]);
    let (v, _) = rand_f32(&mut rng, &[4, 24, 32]);
    // Depthwise convolutions (their AVX2 blocks), at stride 1 and 2 with
    // uneven padding and a ReLU6 clip, on images holding x's specials.
    let image = f32t(&[2, 6, 13, 21], read_f32(&x)[..2 * 6 * 13 * 21].to_vec());
    let (taps, _) = rand_f32(&mut rng, &[6, 1, 3, 3]);
    let (shift, _) = rand_f32(&mut rng, &[6]);
    let relu6 = ClipBounds {
        lo: Some(0.0),
        hi: Some(6.0),
    };
    let depthwise = [
        Conv2d::symmetric((1, 1), (1, 1), (1, 1), 6),
        Conv2d {
            padding_end: (1, 1),
            clip: relu6,
            ..Conv2d::symmetric((2, 2), (0, 0), (1, 1), 6)
        },
        Conv2d {
            clip: relu6,
            ..Conv2d::symmetric((1, 1), (2, 2), (2, 2), 6)
        },
    ];
    // A 1×1 convolution with a bias and ReLU6 (the pointwise tiles), whose
    // 29 channels and 207 positions leave short tiles at both widths, and a
    // strided 3×3 one too narrow for the packed kernel (its im2col matrix
    // on the same tiles).
    let planes = f32t(&[2, 20, 9, 23], read_f32(&x)[..2 * 20 * 9 * 23].to_vec());
    let (mix, _) = rand_f32(&mut rng, &[29, 20, 1, 1]);
    let (mix_bias, _) = rand_f32(&mut rng, &[29]);
    let (stem, _) = rand_f32(&mut rng, &[10, 6, 3, 3]);
    let (stem_bias, _) = rand_f32(&mut rng, &[10]);
    let pointwise = Conv2d {
        clip: relu6,
        ..Conv2d::symmetric((1, 1), (0, 0), (1, 1), 1)
    };
    let strided = Conv2d {
        clip: relu6,
        ..Conv2d::symmetric((2, 2), (1, 1), (1, 1), 1)
    };
    let run = || -> Vec<Vec<u32>> {
        let mut results: Vec<Tensor> = UnaryOp::ALL
            .iter()
            .map(|&op| c.unary(op, &x).unwrap())
            .collect();
        for op in [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div] {
            results.push(c.binary(op, &x, &bias).unwrap());
        }
        results.extend([
            c.affine(&x, 0.3, -1.5).unwrap(),
            c.linear(&x, &w, false, Some(&bias), Some(UnaryOp::Gelu))
                .unwrap(),
            c.matmul(&x, &weight, true).unwrap(),
            // No weight: 96 rows run on the panel kernel's tiles.
            c.matmul(&x, &w, true).unwrap(),
            c.softmax(&x, -1).unwrap(),
            c.layer_norm(&x, Some(&gamma), Some(&bias), 1e-5).unwrap(),
            c.reduce(ReduceOp::Sum, &x, 1, false).unwrap(),
            c.reduce(ReduceOp::Mean, &x, 0, false).unwrap(),
            c.reduce(ReduceOp::Max, &x, 1, false).unwrap(),
            c.attention(
                &q,
                &k,
                &v,
                None,
                edgeserve_tensor::Attention {
                    scale: None,
                    causal: true,
                },
            )
            .unwrap(),
        ]);
        for p in depthwise {
            results.push(c.conv2d(&image, &taps, Some(&shift), p).unwrap());
        }
        results.push(c.conv2d(&planes, &mix, Some(&mix_bias), pointwise).unwrap());
        results.push(c.conv2d(&image, &stem, Some(&stem_bias), strided).unwrap());
        results
            .iter()
            // Which NaN an operation returns (sign, payload) follows the
            // instructions picked; that it is NaN does not.
            .map(|t| {
                let bits = |f: &f32| if f.is_nan() { f32::NAN } else { *f }.to_bits();
                read_f32(t).iter().map(bits).collect()
            })
            .collect()
    };
    let widest = simd();
    let full = run();
    for cap in [Simd::Avx2, Simd::Baseline] {
        cap_simd(cap);
        assert_eq!(simd(), widest.min(cap), "the cap bounds the level");
        assert_eq!(
            c.backend().info().api,
            widest.min(cap).name(),
            "the backend reports the level its loops run at"
        );
        let capped = run();
        for (i, (a, b)) in full.iter().zip(&capped).enumerate() {
            assert!(a == b, "result {i} differs between {widest:?} and {cap:?}");
        }
    }
    eprintln!("compared {widest:?} with every narrower level");
}
