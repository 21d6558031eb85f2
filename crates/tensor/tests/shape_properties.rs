//! The shape rules against the CPU kernels, on random shapes: every shape
//! the front door accepts runs without a panic and gives the rule's shape
//! and the plain definition's values; every shape it rejects is an error,
//! never a panic. The references here index by hand, independently of the
//! crate's own stride helpers.

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, BinaryOp, Ops, ReduceOp, Tensor, shape};
use proptest::prelude::*;

#[path = "support/indexing.rs"]
mod indexing;
use indexing::{bcast_index, coords, flat};

fn cpu() -> Ops<'static> {
    static CPU: CpuBackend = CpuBackend::new();
    CPU.ops()
}

/// A tensor of `shape` holding small distinct integers (exact in f32).
fn tensor(shape: &[usize], salt: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 7 + salt * 3) % 11) as f32 - 5.0)
        .collect();
    Tensor::from_f32(shape, data).expect("shape fits data")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.host().expect("a host tensor").as_slice::<f32>().to_vec()
}

fn dims(rank: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4, rank)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn binary_broadcasting_matches_the_rule(a in dims(0..=4), b in dims(0..=4)) {
        let (x, y) = (tensor(&a, 1), tensor(&b, 2));
        let rule = shape::broadcast(&a, &b);
        match cpu().binary(BinaryOp::Add, &x, &y) {
            Err(e) => prop_assert!(rule.is_err(), "{a:?}+{b:?} refused by the op ({e}) but not by the rule"),
            Ok(out) => {
                let want = rule.expect("accepted by the op, so by the rule");
                prop_assert_eq!(out.shape(), want.as_slice());
                let (xs, ys, got) = (values(&x), values(&y), values(&out));
                for (index, g) in got.iter().enumerate() {
                    let at = coords(index, &want);
                    let expected = xs[bcast_index(&at, &a)] + ys[bcast_index(&at, &b)];
                    prop_assert_eq!(*g, expected, "{:?}+{:?} at {:?}", a, b, at);
                }
            }
        }
    }

    #[test]
    fn matmul_matches_the_rule(
        batch in dims(0..=2),
        b_batch_rank in 0usize..=2,
        m in 0usize..5,
        k in 0usize..5,
        k2 in 0usize..5,
        n in 0usize..5,
        transpose_b in any::<bool>(),
    ) {
        let b_batch = &batch[batch.len().saturating_sub(b_batch_rank)..];
        let a_shape = [batch.as_slice(), &[m, k]].concat();
        let b_shape = if transpose_b {
            [b_batch, &[n, k2]].concat()
        } else {
            [b_batch, &[k2, n]].concat()
        };
        let (x, y) = (tensor(&a_shape, 3), tensor(&b_shape, 4));
        let result = cpu().matmul(&x, &y, transpose_b);
        prop_assert_eq!(result.is_ok(), k == k2, "{:?} x {:?}: {:?}", a_shape, b_shape, result.as_ref().err());
        if let Ok(out) = result {
            let want = [batch.as_slice(), &[m, n]].concat();
            prop_assert_eq!(out.shape(), want.as_slice());
            let (xs, ys, got) = (values(&x), values(&y), values(&out));
            for (index, g) in got.iter().enumerate() {
                let at = coords(index, &want);
                let (i, j) = (at[at.len() - 2], at[at.len() - 1]);
                let prefix = &at[..at.len() - 2];
                let b_prefix = &prefix[prefix.len() - b_batch.len()..];
                let expected: f32 = (0..k)
                    .map(|p| {
                        let a_at = [prefix, &[i, p]].concat();
                        let b_at = if transpose_b {
                            [b_prefix, &[j, p]].concat()
                        } else {
                            [b_prefix, &[p, j]].concat()
                        };
                        xs[flat(&a_at, &a_shape)] * ys[flat(&b_at, &b_shape)]
                    })
                    .sum();
                prop_assert_eq!(*g, expected, "at {:?}", at);
            }
        }
    }

    #[test]
    fn reduce_sum_matches_the_rule(dims in dims(0..=4), axis in -5i32..5, keep_dims in any::<bool>()) {
        let x = tensor(&dims, 5);
        let rule = shape::normalize_axis(axis, dims.len());
        match cpu().reduce(ReduceOp::Sum, &x, axis, keep_dims) {
            Err(e) => prop_assert!(rule.is_err(), "axis {axis} of {dims:?} refused ({e}) but valid"),
            Ok(out) => {
                let axis = rule.expect("accepted by the op, so by the rule");
                let mut want = dims.clone();
                if keep_dims { want[axis] = 1 } else { want.remove(axis); }
                prop_assert_eq!(out.shape(), want.as_slice());
                let (xs, got) = (values(&x), values(&out));
                let mut expected = vec![0.0f32; got.len()];
                for (index, v) in xs.iter().enumerate() {
                    let mut at = coords(index, &dims);
                    if keep_dims { at[axis] = 0 } else { at.remove(axis); }
                    expected[flat(&at, &want)] += v;
                }
                prop_assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn transpose_matches_the_rule(dims in dims(0..=4), perm in prop::collection::vec(0usize..5, 0..=5)) {
        let x = tensor(&dims, 6);
        let valid = perm.len() == dims.len() && {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            sorted.iter().copied().eq(0..dims.len())
        };
        match cpu().transpose(&x, &perm) {
            Err(e) => prop_assert!(!valid, "{perm:?} of {dims:?} refused ({e}) but a permutation"),
            Ok(out) => {
                prop_assert!(valid, "{:?} of {:?} accepted", perm, dims);
                let want: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
                prop_assert_eq!(out.shape(), want.as_slice());
                let (xs, got) = (values(&x), values(&out));
                for (index, g) in got.iter().enumerate() {
                    let at = coords(index, &want);
                    let mut source = vec![0; dims.len()];
                    for (d, &p) in perm.iter().enumerate() {
                        source[p] = at[d];
                    }
                    prop_assert_eq!(*g, xs[flat(&source, &dims)]);
                }
            }
        }
    }

    #[test]
    fn reshape_and_slice_never_panic(
        dims in dims(0..=4),
        target in prop::collection::vec(-2i32..5, 0..=4),
        axis in -5i32..5,
        start in 0usize..5,
        end in 0usize..5,
    ) {
        let x = tensor(&dims, 7);
        let numel: usize = dims.iter().product();
        let rule = shape::resolve_reshape(numel, &target);
        match cpu().reshape(&x, &target) {
            Ok(out) => {
                let want = rule.expect("accepted by the op, so by the rule");
                prop_assert_eq!(out.shape(), want.as_slice());
                prop_assert_eq!(values(&out), values(&x));
            }
            Err(_) => prop_assert!(rule.is_err()),
        }
        let valid = shape::normalize_axis(axis, dims.len())
            .is_ok_and(|a| start <= end && end <= dims[a]);
        prop_assert_eq!(cpu().slice(&x, axis, start, end).is_ok(), valid);
    }
}
