//! Layout kernels: embedding, gather, expand, reshape, transpose, slice,
//! concat, all moving 32-bit words (8-byte elements as two).

use std::sync::Arc;

use edgeserve_tensor::shape::{self, GatherPlan};
use edgeserve_tensor::{DType, HostBuffer, Result, Tensor};

use crate::buffers::words_per_elem;
use crate::encoder::{Kernel, grid_threads, words_of};
use crate::{GpuBackend, GpuBuffer};

/// One thread per output word; ids uploaded from the host are checked here,
/// as the CPU backend does, while ids computed on the device map
/// out-of-range entries to zero rows.
pub(crate) fn embedding(
    g: &GpuBackend,
    table: &Tensor,
    ids: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let words = words_per_elem("embedding", table.dtype())?;
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    let ib = g.buf("embedding", ids)?;
    let out_of_range = |i: i64| i < 0 || i as u64 >= vocab as u64;
    if let Some(h) = ib.uploaded()
        && let Some(id) = first_bad(h, ids.dtype(), out_of_range)
    {
        return Err(shape::id_out_of_range(id, vocab));
    }
    let total = shape::numel(out_shape) * words;
    let geometry = [total, (dim * words).max(1), vocab.min(u32::MAX as usize)];
    pick(g, "embedding", table, (ids, &ib), out_shape, &geometry)
}

/// One thread per output word. Indices are checked before the kernel runs:
/// uploaded ones from their host copy, ones computed on the device after
/// reading them back (which waits for the work recorded so far), so an index
/// out of range is an error on this backend as on the CPU.
pub(crate) fn gather(
    g: &GpuBackend,
    x: &Tensor,
    indices: &Tensor,
    plan: &GatherPlan,
) -> Result<Tensor> {
    let words = words_per_elem("gather", x.dtype())?;
    let ib = g.buf("gather", indices)?;
    let host;
    let checked = match ib.uploaded() {
        Some(h) => h,
        None => {
            host = crate::buffers::to_host(g, indices)?;
            host.host().expect("read back to the host")
        }
    };
    let dim = plan.dim as i64;
    if let Some(i) = first_bad(checked, indices.dtype(), |i| i < -dim || i >= dim) {
        return Err(shape::index_out_of_range(i, plan.dim));
    }
    let total = shape::numel(&plan.out_shape) * words;
    let geometry = [total, plan.inner * words, plan.count, plan.dim];
    pick(g, "gather", x, (indices, &ib), &plan.out_shape, &geometry)
}

/// The first of the host `indices` (i32 or i64 by `dtype`) that `bad`
/// refuses.
fn first_bad(indices: &HostBuffer, dtype: DType, bad: impl Fn(i64) -> bool) -> Option<i64> {
    match dtype {
        DType::I32 => indices
            .as_slice::<i32>()
            .iter()
            .map(|&i| i64::from(i))
            .find(|&i| bad(i)),
        _ => indices.as_slice::<i64>().iter().copied().find(|&i| bad(i)),
    }
}

/// Records `kernel` (`embedding.wgsl` or `gather.wgsl`) copying words of
/// `x` picked by `indices` (checked, on the device as `index_buffer`) into
/// a fresh result of `out_shape`, one thread per output word. Its
/// parameters are `geometry` (output words first), then the words per
/// index.
fn pick(
    g: &GpuBackend,
    kernel: &'static str,
    x: &Tensor,
    (indices, index_buffer): (&Tensor, &GpuBuffer),
    out_shape: &[usize],
    geometry: &[usize],
) -> Result<Tensor> {
    let xb = g.buf(kernel, x)?;
    let (t, out) = g.output(kernel, x.dtype(), out_shape)?;
    let total = geometry[0];
    if total == 0 {
        return Ok(t);
    }
    let per_index = if indices.dtype() == DType::I64 { 2 } else { 1 };
    let mut p = words_of(kernel, geometry)?;
    p.push(per_index);
    g.launch(
        Kernel::new(kernel),
        &p,
        &[index_buffer.buffer(), xb.buffer(), out.buffer()],
        grid_threads(kernel, total)?,
    )?;
    Ok(t)
}

/// A strided copy whose strides are 0 along every broadcast axis.
pub(crate) fn expand(g: &GpuBackend, x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let in_strides = shape::broadcast_strides(x.shape(), out_shape);
    let (t, copy) = Strided::new(g, "expand", x.dtype(), out_shape)?;
    copy.run(g, x, out_shape, &in_strides, (0, 0))?;
    Ok(t)
}

/// Shares `x`'s buffer under the new shape.
pub(crate) fn reshape(g: &GpuBackend, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.host().is_none() {
        g.buf("reshape", x)?;
    }
    Ok(x.with_shape(shape))
}

pub(crate) fn transpose(
    g: &GpuBackend,
    x: &Tensor,
    perm: &[usize],
    out_shape: &[usize],
) -> Result<Tensor> {
    let own = shape::contiguous_strides(x.shape());
    let in_strides: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    let (t, copy) = Strided::new(g, "transpose", x.dtype(), out_shape)?;
    copy.run(g, x, out_shape, &in_strides, (0, 0))?;
    Ok(t)
}

pub(crate) fn slice(
    g: &GpuBackend,
    x: &Tensor,
    axis: usize,
    start: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let own = shape::contiguous_strides(x.shape());
    let (t, copy) = Strided::new(g, "slice", x.dtype(), out_shape)?;
    copy.run(g, x, out_shape, &own, (start * own[axis], 0))?;
    Ok(t)
}

pub(crate) fn concat(
    g: &GpuBackend,
    xs: &[&Tensor],
    axis: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let (t, copy) = Strided::new(g, "concat", xs[0].dtype(), out_shape)?;
    let mut at = 0usize;
    for x in xs {
        let own = shape::contiguous_strides(x.shape());
        copy.run(g, x, x.shape(), &own, (0, at * copy.out_strides[axis]))?;
        at += x.shape()[axis];
    }
    Ok(t)
}

/// Strided copies into one fresh result (`copy.wgsl`).
struct Strided {
    op: &'static str,
    /// Words per element.
    words: usize,
    /// The result's element strides.
    out_strides: Vec<usize>,
    out: Arc<GpuBuffer>,
}

impl Strided {
    /// The result tensor of `dtype` and `out_shape`, and a copier into it.
    fn new(
        g: &GpuBackend,
        op: &'static str,
        dtype: DType,
        out_shape: &[usize],
    ) -> Result<(Tensor, Strided)> {
        let words = words_per_elem(op, dtype)?;
        let (t, out) = g.output(op, dtype, out_shape)?;
        let copy = Strided {
            op,
            words,
            out_strides: shape::contiguous_strides(out_shape),
            out,
        };
        Ok((t, copy))
    }

    /// Records `out[out_off + Σ c·out_strides] = x[in_off + Σ c·in_strides]`
    /// over every coordinate `c` of `dims`; offsets and strides count
    /// elements.
    fn run(
        &self,
        g: &GpuBackend,
        x: &Tensor,
        dims: &[usize],
        in_strides: &[usize],
        (in_off, out_off): (usize, usize),
    ) -> Result<()> {
        let xb = g.buf(self.op, x)?;
        let n = shape::numel(dims) * self.words;
        if n == 0 {
            return Ok(());
        }
        // In words: 8-byte elements get an innermost axis of 2 words.
        let (mut s, mut is, mut os) =
            (dims.to_vec(), in_strides.to_vec(), self.out_strides.clone());
        for v in is.iter_mut().chain(os.iter_mut()) {
            *v *= self.words;
        }
        if self.words > 1 {
            s.push(self.words);
            is.push(1);
            os.push(1);
        }
        let mut p = vec![n, s.len(), in_off * self.words, out_off * self.words];
        p.extend(s.iter().chain(&is).chain(&os));
        let p = words_of(self.op, &p)?;
        g.map_kernel(
            self.op,
            Kernel::new("copy"),
            &p,
            (xb.buffer(), self.out.buffer()),
            n,
        )
    }
}
