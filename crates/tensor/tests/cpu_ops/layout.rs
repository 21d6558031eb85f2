//! Ops that only move elements: embedding, reshape, transpose, slice and
//! concat.

use edgeserve_tensor::{DType, Tensor};

use crate::common::*;

#[test]
fn embedding_gathers_rows() {
    let mut rng = Rng::new(40);
    let (table, data) = rand_f32(&mut rng, &[10, 7]);
    let ids = typed(DType::I32, &[2, 3], vec![0i32, 9, 3, 3, 5, 1]);
    let got = cpu().embedding(&table, &ids).unwrap();
    assert_eq!(got.shape(), [2, 3, 7]);
    let want: Vec<f32> = [0, 9, 3, 3, 5, 1]
        .iter()
        .flat_map(|&i| data[i * 7..(i + 1) * 7].to_vec())
        .collect();
    assert_eq!(read_f32(&got), want);
    // i64 ids, other table dtypes, scalar ids.
    let ids = typed(DType::I64, &[4], vec![2i64, 2, 0, 1]);
    let t64 = typed(DType::I64, &[3, 2], vec![0i64, 1, 10, 11, 20, 21]);
    assert_eq!(
        read::<i64>(&cpu().embedding(&t64, &ids).unwrap()),
        vec![20, 21, 20, 21, 0, 1, 10, 11]
    );
    let t8 = typed(DType::U8, &[3, 1], vec![5u8, 6, 7]);
    assert_eq!(
        read::<u8>(&cpu().embedding(&t8, &ids).unwrap()),
        vec![7, 7, 5, 6]
    );
    let th = f16t(&[3, 2], &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
    let got = cpu()
        .embedding(&th, &typed(DType::I32, &[], vec![1i32]))
        .unwrap();
    assert_eq!((got.shape(), read_f32(&got)), (&[2][..], vec![2.5, 3.5]));
    // A big gather takes the parallel path.
    let (big, bd) = rand_f32(&mut rng, &[1000, 64]);
    let idv: Vec<i64> = (0..2000).map(|_| rng.below(1000) as i64).collect();
    let got = read_f32(
        &cpu()
            .embedding(&big, &typed(DType::I64, &[2000], idv.clone()))
            .unwrap(),
    );
    for (r, &id) in idv.iter().enumerate() {
        assert_eq!(
            &got[r * 64..(r + 1) * 64],
            &bd[id as usize * 64..(id as usize + 1) * 64]
        );
    }
}

#[test]
fn embedding_errors() {
    let table = zeros(&[10, 2]);
    let embedding = |ids: Tensor| cpu().embedding(&table, &ids);
    let msg = assert_err!(
        embedding(typed(DType::I32, &[2], vec![3i32, 10])),
        InvalidArgument
    );
    assert!(msg.contains("10") && msg.contains("id"), "{msg}");
    let msg = assert_err!(
        embedding(typed(DType::I64, &[1], vec![-1i64])),
        InvalidArgument
    );
    assert!(msg.contains("-1"), "{msg}");
    assert_err!(embedding(zeros(&[1])), DType);
    assert_err!(embedding(typed(DType::U8, &[1], vec![0u8])), DType);
    let ids = typed(DType::I32, &[1], vec![0i32]);
    assert_err!(cpu().embedding(&zeros(&[20]), &ids), Shape);
}

#[test]
fn reshape_shares_elements() {
    let x = f32t(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = cpu().reshape(&x, &[3, -1]).unwrap();
    assert_eq!((y.shape(), read_f32(&y)), (&[3, 2][..], read_f32(&x)));
    assert_err!(cpu().reshape(&x, &[4, 2]), Shape);
}

fn all_perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = vec![];
    for p in all_perms(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

fn ref_transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    (0..x.len())
        .map(|i| {
            let oc = coords(i, &out_shape);
            let mut ic = vec![0; shape.len()];
            for (o, &p) in perm.iter().enumerate() {
                ic[p] = oc[o];
            }
            x[flat(&ic, shape)]
        })
        .collect()
}

#[test]
fn transpose_every_permutation() {
    let mut rng = Rng::new(50);
    for shape in [vec![2, 3, 4, 5], vec![3, 1, 4, 2], vec![1, 5, 1, 3]] {
        let data: Vec<u32> = (0..numel(&shape) as u32).collect();
        let asf: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        let bytes: Vec<u8> = data.iter().map(|&v| v as u8).collect();
        let wide: Vec<i64> = data.iter().map(|&v| v as i64 * 1_000_000_007).collect();
        for perm in all_perms(shape.len()) {
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let transpose = |x: Tensor| cpu().transpose(&x, &perm).unwrap();
            let got = transpose(f32t(&shape, asf.clone()));
            assert_eq!(got.shape(), out_shape);
            assert_eq!(
                read_f32(&got),
                ref_transpose(&asf, &shape, &perm),
                "{shape:?} {perm:?}"
            );
            let got = transpose(typed(DType::U8, &shape, bytes.clone()));
            assert_eq!(read::<u8>(&got), ref_transpose(&bytes, &shape, &perm));
            let got = transpose(typed(DType::I64, &shape, wide.clone()));
            assert_eq!(read::<i64>(&got), ref_transpose(&wide, &shape, &perm));
        }
    }
    // Tiled matrix transposes, odd sizes, f16 and batched.
    for (shape, perm) in [
        (vec![33, 65], vec![1, 0]),
        (vec![3, 40, 50], vec![0, 2, 1]),
        (vec![130, 70], vec![1, 0]),
        (vec![2, 64, 12, 64], vec![0, 2, 1, 3]),
    ] {
        let data = round_f16(&rng.vec(numel(&shape)));
        let got = cpu().transpose(&f16t(&shape, &data), &perm).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(
            read_f32(&got),
            ref_transpose(&data, &shape, &perm),
            "{shape:?} {perm:?}"
        );
    }
}

#[test]
fn transpose_errors() {
    let x = zeros(&[2, 3]);
    for bad in [&[0, 0][..], &[0], &[0, 1, 2], &[1, 2]] {
        assert_err!(cpu().transpose(&x, bad), InvalidArgument);
    }
}

#[test]
fn slice_along_each_axis() {
    let mut rng = Rng::new(60);
    let shape = [3, 4, 5];
    let data: Vec<i32> = (0..60).collect();
    for axis in 0..3 {
        for _ in 0..10 {
            let a = rng.below(shape[axis] as u64 + 1) as usize;
            let b = rng.below(shape[axis] as u64 + 1) as usize;
            let (start, end) = (a.min(b), a.max(b));
            let x = typed(DType::I32, &shape, data.clone());
            let got = cpu().slice(&x, axis as i32, start, end).unwrap();
            let mut out_shape = shape.to_vec();
            out_shape[axis] = end - start;
            let want: Vec<i32> = (0..60)
                .filter(|&i| (start..end).contains(&coords(i as usize, &shape)[axis]))
                .collect();
            assert_eq!(got.shape(), out_shape);
            assert_eq!(read::<i32>(&got), want, "axis {axis} {start}..{end}");
        }
    }
    let x = f16t(&[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let h = cpu().slice(&x, 0, 1, 3).unwrap();
    assert_eq!(
        (h.dtype(), read_f32(&h)),
        (DType::F16, vec![2.0, 3.0, 4.0, 5.0])
    );
    let big = f32t(&[200, 300], (0..60000).map(|v| v as f32).collect());
    let got = read_f32(&cpu().slice(&big, 1, 7, 290).unwrap());
    assert_eq!(got[283], 300.0 + 7.0);
}

#[test]
fn slice_errors() {
    let x = zeros(&[2, 3]);
    assert_err!(cpu().slice(&x, 1, 0, 4), InvalidArgument);
    assert_err!(cpu().slice(&x, 1, 2, 1), InvalidArgument);
    assert_err!(cpu().slice(&x, 2, 0, 1), InvalidArgument);
}

#[test]
fn concat_along_each_axis() {
    let mut rng = Rng::new(70);
    for axis in 0..3 {
        let mut shapes = vec![vec![2, 3, 4]; 3];
        for (i, s) in shapes.iter_mut().enumerate() {
            s[axis] = i + 1;
        }
        let parts: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(numel(s))).collect();
        let ts: Vec<Tensor> = shapes
            .iter()
            .zip(&parts)
            .map(|(s, d)| f32t(s, d.clone()))
            .collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        let got = cpu().concat(&refs, axis as i32).unwrap();
        let mut out_shape = vec![2, 3, 4];
        out_shape[axis] = 6;
        assert_eq!(got.shape(), out_shape);
        let want: Vec<f32> = (0..numel(&out_shape))
            .map(|i| {
                let mut c = coords(i, &out_shape);
                let (mut part, mut at) = (0, c[axis]);
                while at >= shapes[part][axis] {
                    at -= shapes[part][axis];
                    part += 1;
                }
                c[axis] = at;
                parts[part][flat(&c, &shapes[part])]
            })
            .collect();
        assert_eq!(read_f32(&got), want, "axis {axis}");
    }
    let one = typed(DType::U8, &[2], vec![1u8, 2]);
    assert_eq!(read::<u8>(&cpu().concat(&[&one], 0).unwrap()), vec![1, 2]);
    let two = typed(DType::U8, &[1], vec![3u8]);
    assert_eq!(
        read::<u8>(&cpu().concat(&[&one, &two, &one], 0).unwrap()),
        vec![1, 2, 3, 1, 2]
    );
}

#[test]
fn concat_errors() {
    let a = zeros(&[2, 3]);
    assert_err!(cpu().concat(&[], 0), InvalidArgument);
    assert_err!(cpu().concat(&[&a, &f16t(&[2, 3], &[0.0; 6])], 0), DType);
    assert_err!(cpu().concat(&[&a, &zeros(&[2, 4])], 0), Shape);
    assert_err!(cpu().concat(&[&a, &zeros(&[6])], 0), Shape);
    assert_err!(cpu().concat(&[&a, &a], 2), InvalidArgument);
    let joined = cpu().concat(&[&a, &zeros(&[2, 4])], 1).unwrap();
    assert_eq!(joined.shape(), [2, 7]);
}
