//! Recording work: the pipeline cache, parameter buffers, workgroup grids,
//! and dispatches into the calling thread's stream (see `stream`).

use std::collections::HashMap;

use edgeserve_tensor::{Result, Tensor, TensorError, shape};
use wgpu::util::DeviceExt;

use crate::{GpuBackend, kernels, lock, stream};

/// A pipeline's identity: its kernel and override constants (by bits).
type PipelineKey = (&'static str, Vec<(&'static str, u64)>);

/// Built pipelines, each with its bind group layout, shared by every
/// stream.
pub(crate) type Pipelines = HashMap<PipelineKey, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>;

/// Largest workgroup count along one dispatch dimension (WebGPU's default).
pub(crate) const MAX_GROUPS: u32 = 65535;

/// `v` as a parameter word, refusing what 32-bit device indexing cannot
/// reach.
pub(crate) fn u32_of(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        TensorError::Unsupported(format!(
            "gpu backend: {op}: {v} exceeds 32-bit indexing on the device"
        ))
    })
}

/// Parameter words of `values`, each checked by [`u32_of`].
pub(crate) fn words_of(op: &str, values: &[usize]) -> Result<Vec<u32>> {
    values.iter().map(|&v| u32_of(op, v)).collect()
}

/// Parameters of a broadcasting kernel: the `head` words, then the output
/// shape and each operand's strides into it (0 along broadcast axes).
pub(crate) fn broadcast_params(
    op: &str,
    head: &[usize],
    out_shape: &[usize],
    operands: &[&Tensor],
) -> Result<Vec<u32>> {
    let mut p = words_of(op, head)?;
    p.extend(words_of(op, out_shape)?);
    for x in operands {
        p.extend(words_of(
            op,
            &shape::broadcast_strides(x.shape(), out_shape),
        )?);
    }
    Ok(p)
}

/// A 2-D grid of workgroups covering `groups` groups.
pub(crate) fn grid(op: &str, groups: usize) -> Result<(u32, u32, u32)> {
    let g = u32_of(op, groups)?;
    let x = g.clamp(1, MAX_GROUPS);
    let y = g.div_ceil(x);
    if y > MAX_GROUPS {
        return Err(TensorError::Unsupported(format!(
            "gpu backend: {op}: {groups} workgroups exceed one dispatch"
        )));
    }
    Ok((x, y, 1))
}

/// Grid for one thread per item, 256 threads a workgroup (`map.wgsl`).
pub(crate) fn grid_threads(op: &str, items: usize) -> Result<(u32, u32, u32)> {
    grid(op, items.div_ceil(256))
}

impl GpuBackend {
    /// A storage buffer of parameter words (at least one: empty bindings
    /// are invalid).
    pub(crate) fn params(&self, words: &[u32]) -> wgpu::Buffer {
        let mut w = words.to_vec();
        if w.is_empty() {
            w.push(0);
        }
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&w),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// The pipeline of `kernel` with override constants `consts`, and its
    /// bind group layout, built on first use.
    fn pipeline(
        &self,
        kernel: &'static str,
        consts: &[(&'static str, f64)],
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let key: PipelineKey = (
            kernel,
            consts.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: other threads go on recording meanwhile
        // (two building the same pipeline at once is harmless).
        let source = kernels::source(kernel);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: consts,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: kernel {kernel} failed to build: {e}"
            )));
        }
        let built = (pipeline.clone(), pipeline.get_bind_group_layout(0));
        lock(&self.pipelines).insert(key, built.clone());
        Ok(built)
    }

    /// Records one dispatch of `kernel` over `buffers` (bound in order) into
    /// the calling thread's stream.
    pub(crate) fn dispatch(
        &self,
        kernel: &'static str,
        consts: &[(&'static str, f64)],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.alive(kernel)?;
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let (pipeline, layout) = self.pipeline(kernel, consts)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel),
            layout: &layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: binding {kernel} failed: {e}"
            )));
        }
        stream::current(self).record(|encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        });
        Ok(())
    }

    /// Records a kernel of `map.wgsl`'s shape: (params, input, output)
    /// with one thread per item, `params[0]` being `items`.
    pub(crate) fn map_kernel(
        &self,
        op: &str,
        kernel: &'static str,
        consts: &[(&'static str, f64)],
        params: &[u32],
        (input, out): (&wgpu::Buffer, &wgpu::Buffer),
        items: usize,
    ) -> Result<()> {
        let p = self.params(params);
        self.dispatch(kernel, consts, &[&p, input, out], grid_threads(op, items)?)
    }
}
