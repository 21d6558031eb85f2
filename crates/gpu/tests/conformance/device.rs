//! The device itself: refusals, the memory pool and its accounting,
//! allocation failures, device loss.

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::{Backend, CompareOp, DType, Tensor, TensorError, UnaryOp};

use crate::{assert_same, cpu, floats, gpu, gpu_backend, up};

#[test]
fn unimplemented_ops_and_dtypes_are_unsupported() {
    let h = Tensor::from_bytes(DType::F16, &[2, 2], &[0u8; 8]).unwrap();
    let hg = up(&h);
    let Err(TensorError::Unsupported(msg)) = gpu().softmax(&hg, 1) else {
        panic!("f16 softmax should be unsupported");
    };
    assert!(msg.contains("softmax") && msg.contains("f16"), "{msg}");
    // Validation errors are the shared ones, not Unsupported.
    let a = up(&Tensor::from_f32(&[2, 3], vec![0.0; 6]).unwrap());
    assert!(matches!(
        gpu().matmul(&a, &a, false),
        Err(TensorError::Shape(_))
    ));
    let i = Tensor::from_bytes(DType::I32, &[2], &[0u8; 8]).unwrap();
    assert!(matches!(
        gpu().unary(UnaryOp::Exp, &i),
        Err(TensorError::DType(_))
    ));
    // The host copy round-trips f16 bytes untouched.
    assert_eq!(
        gpu().to_host(&hg).unwrap().host().unwrap().bytes(),
        &[0u8; 8]
    );
}

/// A backend of its own, so other tests running at the same time do not
/// disturb its memory counters.
fn own_gpu() -> GpuBackend {
    GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"))
}

#[test]
fn freed_buffers_are_reused() {
    let backend = own_gpu();
    let g = backend.ops();
    assert_eq!(backend.pooled_bytes(), 0);
    let a = g.full(DType::F32, &[1000], 7.0).unwrap();
    assert_eq!(floats(&g.to_host(&a).unwrap()), vec![7.0; 1000]);
    drop(a);
    // 4000 bytes live in the 4096-byte class.
    assert_eq!(backend.pooled_bytes(), 4096);
    // A result of the same class takes the freed buffer, and is fully
    // overwritten: nothing of the old contents shows.
    let b = g.full(DType::F32, &[900], 2.0).unwrap();
    assert_eq!(backend.pooled_bytes(), 0);
    assert_eq!(floats(&g.to_host(&b).unwrap()), vec![2.0; 900]);
    // A chain of results reuses the buffers of intermediates it drops.
    let x = Tensor::from_f32(&[1, 1, 6, 6], (0..36).map(|v| v as f32).collect()).unwrap();
    let mut t = g.from_host(&x).unwrap();
    for _ in 0..20 {
        t = g.affine(&t, 1.0, 1.0).unwrap();
    }
    assert!(
        backend.pooled_bytes() <= 2 * 256,
        "{}",
        backend.pooled_bytes()
    );
    let want: Vec<f32> = (0..36).map(|v| v as f32 + 20.0).collect();
    assert_eq!(floats(&g.to_host(&t).unwrap()), want);
    // An intermediate dropped before the recorded work ran still feeds it.
    let c = g.full(DType::F32, &[64], 1.5).unwrap();
    let d = g.affine(&c, 2.0, 0.0).unwrap();
    drop(c);
    let e = g.full(DType::F32, &[64], 9.0).unwrap();
    assert_eq!(floats(&g.to_host(&d).unwrap()), vec![3.0; 64]);
    assert_eq!(floats(&g.to_host(&e).unwrap()), vec![9.0; 64]);
}

#[test]
fn allocated_bytes_counts_live_buffers() {
    let backend = own_gpu();
    let g = backend.ops();
    assert_eq!(backend.allocated_bytes(), 0);
    // Small uploads (request inputs, mostly) take a buffer of their size
    // class, as results do.
    let x = g
        .from_host(&Tensor::from_f32(&[3, 5], vec![1.0; 15]).unwrap())
        .unwrap();
    assert_eq!(backend.allocated_bytes(), 256);
    // Results count their size class.
    let y = g.full(DType::F32, &[1000], 0.0).unwrap();
    assert_eq!(backend.allocated_bytes(), 256 + 4096);
    let z = g.unary(UnaryOp::Exp, &x).unwrap();
    assert_eq!(backend.allocated_bytes(), 256 + 4096 + 256);
    // Clones share a buffer.
    let z2 = z.clone();
    assert_eq!(backend.allocated_bytes(), 256 + 4096 + 256);
    drop((z, z2, y));
    assert_eq!(backend.allocated_bytes(), 256);
    assert_eq!(backend.pooled_bytes(), 4096 + 256);
    drop(x);
    assert_eq!(backend.allocated_bytes(), 0);
    assert_eq!(backend.pooled_bytes(), 4096 + 2 * 256);
    // Once the recorded work is submitted (by a read-back), the next small
    // upload takes a freed buffer, written whole with its own elements
    // (a queue write runs ahead of the next submission, so until then it
    // takes none that this thread's unsubmitted work may still read).
    let probe = g.full(DType::F32, &[1], 0.0).unwrap();
    g.to_host(&probe).unwrap();
    drop(probe);
    assert_eq!(backend.pooled_bytes(), 4096 + 2 * 256);
    let again = Tensor::from_f32(&[2, 3], vec![0.5, -2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let x = g.from_host(&again).unwrap();
    assert_eq!(backend.pooled_bytes(), 4096 + 256);
    assert_eq!(
        floats(&g.to_host(&g.affine(&x, 2.0, 0.0).unwrap()).unwrap()),
        vec![1.0, -4.0, 6.0, 8.0, 10.0, 12.0]
    );
    drop(x);
    // Large weights count their size rounded up to 16 bytes, and are
    // destroyed when freed.
    let pooled = backend.pooled_bytes();
    let large = Tensor::from_f32(&[65_537], vec![1.0; 65_537]).unwrap();
    let w = g.from_host(&large.clone().into_weight()).unwrap();
    assert_eq!(backend.allocated_bytes(), 262_160);
    drop(w);
    assert_eq!(backend.allocated_bytes(), 0);
    assert_eq!(backend.pooled_bytes(), pooled);
    // Large inputs take a pooled buffer of their class, and go back to the
    // pool when freed.
    let input = g.from_host(&large).unwrap();
    assert_eq!(backend.allocated_bytes(), 524_288);
    drop(input);
    assert_eq!(backend.allocated_bytes(), 0);
    assert_eq!(backend.pooled_bytes(), pooled + 524_288);
    // Host copies hold no device memory.
    let big = g.full(DType::F32, &[1 << 16], 1.0).unwrap();
    let host = g.to_host(&big).unwrap();
    drop(big);
    assert_eq!(backend.allocated_bytes(), 0);
    assert_eq!(host.numel(), 1 << 16);
}

#[test]
fn absurd_allocations_fail_cleanly() {
    for shape in [&[1usize << 40][..], &[1 << 40, 1 << 40, 1 << 40]] {
        match gpu().full(DType::F32, shape, 1.0) {
            Err(TensorError::OutOfMemory(_) | TensorError::InvalidArgument(_)) => {}
            other => panic!("full {shape:?}: {other:?}"),
        }
    }
    // The backend still works afterwards.
    let t = gpu().full(DType::F32, &[2], 3.0).unwrap();
    assert_eq!(floats(&gpu().to_host(&t).unwrap()), vec![3.0, 3.0]);
}

#[test]
fn oversized_results_are_out_of_memory_and_the_backend_recovers() {
    let backend = own_gpu();
    let g = backend.ops();
    let a = g.full(DType::F32, &[1 << 17, 1], 1.0).unwrap();
    let b = g.full(DType::F32, &[1, 1 << 17], 2.0).unwrap();
    // 2^34 floats (64 GiB): past any device's largest storage binding.
    match g.matmul(&a, &b, false) {
        Err(TensorError::OutOfMemory(msg)) => assert!(msg.contains("matmul"), "{msg}"),
        other => panic!("64 GiB matmul result: {other:?}"),
    }
    let small = g.matmul(
        &a.with_shape(&[1 << 10, 128]),
        &b.with_shape(&[128, 1 << 10]),
        false,
    );
    let c = g.to_host(&small.unwrap()).unwrap();
    assert_eq!(c.shape(), &[1 << 10, 1 << 10]);
    assert!(floats(&c).iter().all(|&v| v == 256.0));
}

#[test]
fn a_lost_device_fails_every_operation_without_hanging() {
    let backend = own_gpu();
    let g = backend.ops();
    let x = g.full(DType::F32, &[8], 1.0).unwrap();
    let pending = g.affine(&x, 2.0, 0.0).unwrap();
    assert!(backend.lost().is_none());
    backend.destroy_device();
    assert!(backend.lost().is_some());
    let lost = |what: &str, r: Result<Tensor, TensorError>| match r {
        Err(TensorError::DeviceLost(msg)) => {
            assert!(msg.to_lowercase().contains("destroyed"), "{what}: {msg}")
        }
        other => panic!("{what} after device loss: {other:?}"),
    };
    lost("to_host of recorded work", g.to_host(&pending));
    lost("full", g.full(DType::F32, &[4], 0.0));
    lost("unary", g.unary(UnaryOp::Exp, &x));
    lost(
        "upload",
        g.from_host(&Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap()),
    );
    lost(
        "matmul",
        g.matmul(&x.with_shape(&[2, 4]), &x.with_shape(&[4, 2]), false),
    );
    // Other backends are unaffected.
    let t = gpu().full(DType::F32, &[2], 3.0).unwrap();
    assert_eq!(floats(&gpu().to_host(&t).unwrap()), vec![3.0, 3.0]);
}

#[test]
fn info_names_the_device() {
    let info = gpu_backend().info();
    assert_eq!(info.kind, "gpu");
    assert!(!info.device.is_empty());
    assert!(!info.api.is_empty());
}

/// Streams keep bind groups across submissions, and a kept bind group holds
/// a handle on each buffer it binds; a freed buffer's device memory still
/// goes back to the driver (the pool destroys what it does not keep).
/// Eight uploads of 4 MiB, each read by one op and dropped after its
/// read-back: kept alive, the last four (the bind groups of four
/// recordings) would hold 16 MiB that no counter shows.
#[test]
fn kept_bind_groups_hold_no_device_memory() {
    let backend = own_gpu();
    let g = backend.ops();
    let before = backend
        .device_bytes()
        .expect("the device's allocator reports");
    let n = 1 << 20;
    for i in 0..8 {
        let x = g
            .from_host(&Tensor::from_f32(&[n], vec![i as f32; n]).unwrap())
            .unwrap();
        let y = g.affine(&x, 1.0, 1.0).unwrap();
        assert_eq!(floats(&g.to_host(&y).unwrap())[n - 1], i as f32 + 1.0);
        drop(x);
    }
    // One more submission, so wgpu frees what the device finished with.
    let small = g.full(DType::F32, &[4], 1.0).unwrap();
    assert_eq!(floats(&g.to_host(&small).unwrap()), vec![1.0; 4]);
    let counted = backend.allocated_bytes() + backend.pooled_bytes();
    let device = backend.device_bytes().unwrap() - before;
    assert!(
        device <= counted + (4 << 20),
        "the device holds {device} bytes more than at the start; live and pooled tensors {counted}"
    );
}

#[test]
fn several_results_come_back_in_one_wait() {
    let backend = own_gpu();
    let g = backend.ops();
    let x = Tensor::from_f32(&[3, 5], (0..15).map(|v| (v * 7 % 11) as f32).collect()).unwrap();
    let (values, indices) = g.top_k(&g.from_host(&x).unwrap(), 2).unwrap();
    // Sizes that are not whole quads, so each lands at its own offset.
    let odd = g.full(DType::F32, &[5], 2.5).unwrap();
    let mask = g.compare(CompareOp::Greater, &odd, &odd).unwrap();
    let host = Tensor::from_f32(&[2], vec![1.0, -1.0]).unwrap();
    let tensors = [&values, &indices, &host, &odd, &mask];
    let before = backend.read_backs();
    let all = backend.to_host_all(&tensors).unwrap();
    assert_eq!(
        backend.read_backs(),
        before + 1,
        "one wait for four device tensors"
    );
    let (want_values, want_indices) = cpu().top_k(&x, 2).unwrap();
    let want_odd = cpu().full(DType::F32, &[5], 2.5).unwrap();
    let want = [&want_values, &want_indices, &host, &want_odd];
    for (i, (got, want)) in all.iter().zip(want).enumerate() {
        assert_same(&format!("tensor {i}"), got, want);
    }
    // Nothing is greater than itself.
    assert_eq!(all[4].shape(), &[5]);
    assert_eq!(all[4].host().unwrap().bytes(), &[0u8; 5]);
    // One tensor at a time waits once each; host tensors not at all.
    let before = backend.read_backs();
    for t in tensors {
        backend.to_host(t).unwrap();
    }
    assert_eq!(backend.read_backs(), before + 4);
    assert!(backend.to_host_all(&[&host]).is_ok());
    assert_eq!(backend.read_backs(), before + 4);
    // Integers and small uploads come back from the host bytes kept of
    // them, reshaped as the tensor is now.
    let words: Vec<u8> = [5i64, -1, 7, 1 << 40, 0, 3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let ids = Tensor::from_bytes(DType::I64, &[2, 3], &words).unwrap();
    let uploaded = g.reshape(&g.from_host(&ids).unwrap(), &[3, 2]).unwrap();
    let back = backend.to_host_all(&[&uploaded]).unwrap();
    assert_eq!(backend.read_backs(), before + 4);
    assert_eq!(back[0].shape(), &[3, 2]);
    assert_eq!(back[0].host().unwrap().bytes(), ids.host().unwrap().bytes());
    let small = g.from_host(&host).unwrap();
    let back = backend.to_host_all(&[&small]).unwrap();
    assert_eq!(backend.read_backs(), before + 4);
    assert_eq!(
        back[0].host().unwrap().bytes(),
        host.host().unwrap().bytes()
    );
    // A weight's float bytes are not kept (their handle would hold the
    // whole mapped file): it is read back from the device.
    let weight = g.from_host(&host.clone().into_weight()).unwrap();
    let back = backend.to_host_all(&[&weight]).unwrap();
    assert_eq!(backend.read_backs(), before + 5);
    assert_eq!(
        back[0].host().unwrap().bytes(),
        host.host().unwrap().bytes()
    );
}
