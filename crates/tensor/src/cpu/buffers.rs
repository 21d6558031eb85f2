//! Host memory for kernels: reading a tensor's elements and allocating
//! results without aborting the process when memory runs out.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use bytemuck::Pod;
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::{DType, HostBuffer, Result, Storage, Tensor, TensorError, shape};

/// The host bytes of `t`, or `Unsupported` for another backend's tensor.
pub(super) fn host<'a>(op: &str, t: &'a Tensor) -> Result<&'a HostBuffer> {
    match t.storage() {
        Storage::Host(buffer) => Ok(buffer),
        Storage::Device(_) => Err(TensorError::Unsupported(format!(
            "{op}: the cpu backend cannot read a device tensor; bring it to the host first"
        ))),
    }
}

/// The elements of `t` as `T` (any type of the dtype's size and alignment).
pub(super) fn elems<'a, T: Pod>(op: &str, t: &'a Tensor) -> Result<&'a [T]> {
    debug_assert_eq!(size_of::<T>(), t.dtype().size());
    Ok(host(op, t)?.as_slice())
}

/// The elements of a float tensor as f32: borrowed for f32, widened for f16.
pub(super) fn floats<'a>(op: &str, t: &'a Tensor) -> Result<Cow<'a, [f32]>> {
    Ok(match t.dtype() {
        DType::F16 => {
            let half: &[f16] = elems(op, t)?;
            let mut wide = zeroed(half.len())?;
            half.convert_to_f32_slice(&mut wide);
            Cow::Owned(wide)
        }
        _ => Cow::Borrowed(elems(op, t)?),
    })
}

/// A fresh host tensor owning `data`.
pub(super) fn tensor_of<T: Pod + Send + Sync>(
    dtype: DType,
    shape: &[usize],
    data: Vec<T>,
) -> Tensor {
    debug_assert_eq!(
        data.len() * size_of::<T>(),
        shape::numel(shape) * dtype.size()
    );
    Tensor::new(dtype, shape, Storage::Host(HostBuffer::from_vec(data)))
}

/// A float tensor of `dtype` from f32 results, narrowing for f16.
pub(super) fn float_tensor(dtype: DType, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Ok(match dtype {
        DType::F16 => {
            let mut half: Vec<f16> = zeroed(data.len())?;
            half.convert_from_f32_slice(&data);
            tensor_of(dtype, shape, half)
        }
        _ => tensor_of(dtype, shape, data),
    })
}

fn refused<T>(n: usize) -> TensorError {
    TensorError::OutOfMemory(format!(
        "cannot allocate {n} elements of {} bytes",
        size_of::<T>()
    ))
}

/// `n` elements that `fill` writes, with `OutOfMemory` instead of aborting
/// when the allocator refuses.
///
/// For outputs a kernel overwrites anyway: zeroing them first costs a
/// memset when the allocator reuses memory, or a page fault per 4 KiB when
/// it maps fresh pages, on every operation (about 8% of a BERT forward
/// pass), while uninitialised memory is usually recycled and already
/// mapped.
///
/// # Safety
///
/// `fill` must initialise every element of the slice it is given.
pub(super) unsafe fn written<T>(
    n: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Result<Vec<T>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| refused::<T>(n))?;
    fill(&mut data.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees `fill` initialised the first `n`
    // elements, and the capacity holds at least `n`.
    unsafe { data.set_len(n) };
    Ok(data)
}

/// `n` zero elements, or `OutOfMemory` instead of aborting the process when
/// the allocator refuses.
///
/// Zeroed memory comes from the allocator like `vec![0; n]` does (fresh
/// pages are zero already), so nothing is written twice.
pub(super) fn zeroed<T: Pod>(n: usize) -> Result<Vec<T>> {
    let refuse = || refused::<T>(n);
    if n == 0 || size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| refuse())?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(refuse());
    }
    // SAFETY: the global allocator returned `ptr` for exactly `n` elements
    // of `T` at `T`'s alignment, which is what `Vec` frees it with, and all
    // zero bytes are a valid `T` because `T: Pod`.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// An initialised slice viewed as a destination that may be uninitialised.
///
/// # Safety
///
/// Only initialised values may be stored through the view: the slice is
/// read as `f32` again once it ends.
pub(super) unsafe fn uninit(dst: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the caller keeps
    // every element initialised.
    unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) }
}
