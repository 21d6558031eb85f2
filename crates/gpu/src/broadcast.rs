//! Kernels over operands broadcast to one shape (binary, compare, where):
//! they bind and describe their operands the same way, so one launcher
//! serves them all.

use edgeserve_tensor::{DType, Result, Tensor, shape};

use crate::GpuBackend;
use crate::encoder::{Kernel, grid_threads, words_of};

/// `N` operands broadcast together into `out_shape` (NumPy rules, already
/// checked by the shape rule).
#[derive(Clone, Copy)]
pub(crate) struct Broadcast<'a, const N: usize> {
    pub(crate) operands: [&'a Tensor; N],
    pub(crate) out_shape: &'a [usize],
}

impl<const N: usize> Broadcast<'_, N> {
    /// Elements of the result.
    pub(crate) fn numel(&self) -> usize {
        shape::numel(self.out_shape)
    }

    /// Records `kernel` into a fresh `dtype` result with one thread per
    /// item of `threads` (none when the result is empty). Its parameters
    /// are `[threads, rank, extra..]`, the output shape, then each
    /// operand's strides into it (0 along broadcast axes); it binds the
    /// operands in order, then the result.
    pub(crate) fn launch(
        self,
        g: &GpuBackend,
        op: &str,
        kernel: Kernel<'_>,
        dtype: DType,
        threads: usize,
        extra: &[usize],
    ) -> Result<Tensor> {
        let bufs = self
            .operands
            .iter()
            .map(|x| g.buf(op, x))
            .collect::<Result<Vec<_>>>()?;
        let (t, out) = g.output(op, dtype, self.out_shape)?;
        if threads == 0 {
            return Ok(t);
        }
        let mut p = words_of(op, &[threads, self.out_shape.len()])?;
        p.extend(words_of(op, extra)?);
        p.extend(words_of(op, self.out_shape)?);
        for x in self.operands {
            let strides = shape::broadcast_strides(x.shape(), self.out_shape);
            p.extend(words_of(op, &strides)?);
        }
        let bound: Vec<&wgpu::Buffer> = bufs
            .iter()
            .map(|b| b.buffer())
            .chain([out.buffer()])
            .collect();
        g.launch(kernel, &p, &bound, grid_threads(op, threads)?)?;
        Ok(t)
    }
}
