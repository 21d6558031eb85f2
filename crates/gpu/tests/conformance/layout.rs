//! Layout ops: embedding, transpose, slice, concat, reshape.

use edgeserve_tensor::{DType, Tensor};

use crate::{Rng, assert_same, cpu, gpu, up};

#[test]
fn embedding_gathers_rows_and_checks_ids() {
    let mut rng = Rng::new(7);
    let table = rng.tensor(&[50, 33], -1.0, 1.0);
    let ids32: Vec<i32> = (0..12).map(|i: i32| i * 7 % 50).collect();
    let ids64: Vec<i64> = ids32.iter().map(|&i| i64::from(i)).collect();
    let i32t = Tensor::from_bytes(DType::I32, &[3, 4], bytemuck::cast_slice(&ids32)).unwrap();
    let i64t = Tensor::from_bytes(DType::I64, &[12], bytemuck::cast_slice(&ids64)).unwrap();
    for ids in [&i32t, &i64t] {
        let want = cpu().embedding(&table, ids).unwrap();
        let got = gpu().embedding(&up(&table), &up(ids)).unwrap();
        assert_same("embedding", &got, &want);
    }
    // An i64 table moves whole 8-byte elements.
    let t64: Vec<i64> = (0..40).map(|i| i * 1_000_000_007 - 7).collect();
    let t64 = Tensor::from_bytes(DType::I64, &[10, 4], bytemuck::cast_slice(&t64)).unwrap();
    let ids = Tensor::from_bytes(DType::I32, &[3], bytemuck::cast_slice(&[9i32, 0, 4])).unwrap();
    assert_same(
        "embedding i64 table",
        &gpu().embedding(&up(&t64), &up(&ids)).unwrap(),
        &cpu().embedding(&t64, &ids).unwrap(),
    );
    let bad = Tensor::from_bytes(DType::I32, &[2], bytemuck::cast_slice(&[1i32, 50])).unwrap();
    assert_eq!(
        gpu().embedding(&up(&table), &up(&bad)).unwrap_err(),
        cpu().embedding(&table, &bad).unwrap_err()
    );
}

#[test]
fn layout_ops_are_exact_for_f32_and_i64() {
    let mut rng = Rng::new(9);
    let f = rng.tensor(&[3, 5, 7], -1.0, 1.0);
    let ints: Vec<i64> = (0..105).map(|i| (i as i64 - 50) * 3_000_000_011).collect();
    let i = Tensor::from_bytes(DType::I64, &[3, 5, 7], bytemuck::cast_slice(&ints)).unwrap();
    for x in [&f, &i] {
        let g = up(x);
        for perm in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            assert_same(
                &format!("transpose {perm:?}"),
                &gpu().transpose(&g, &perm).unwrap(),
                &cpu().transpose(x, &perm).unwrap(),
            );
        }
        for (axis, s, e) in [(0, 1, 3), (1, 0, 5), (2, 3, 6), (1, 2, 2)] {
            assert_same(
                &format!("slice {axis} {s}..{e}"),
                &gpu().slice(&g, axis, s, e).unwrap(),
                &cpu().slice(x, axis, s, e).unwrap(),
            );
        }
        for axis in 0..3 {
            let parts = [x, x, x];
            let gparts = [&g, &g, &g];
            assert_same(
                &format!("concat {axis}"),
                &gpu().concat(&gparts, axis).unwrap(),
                &cpu().concat(&parts, axis).unwrap(),
            );
        }
        let r = gpu().reshape(&g, &[7, 15]).unwrap();
        assert_same("reshape", &r, &cpu().reshape(x, &[7, 15]).unwrap());
    }
}
