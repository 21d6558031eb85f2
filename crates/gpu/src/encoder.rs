//! Recording work: the pipeline cache, parameter buffers, workgroup grids,
//! and the pending command encoder that `to_host` submits.

use std::collections::HashMap;

use edgeserve_tensor::{Result, Tensor, TensorError, shape};
use wgpu::util::DeviceExt;

use crate::{GpuBackend, kernels, lock};

/// What a backend has built and recorded, behind one lock so that work
/// lands in the encoder in the order it was recorded.
pub(crate) struct Recording {
    /// Pipelines by kernel and override constants.
    pub(crate) pipelines: HashMap<String, wgpu::ComputePipeline>,
    /// Work recorded since the last submission.
    pub(crate) encoder: Option<wgpu::CommandEncoder>,
    /// Dispatches in `encoder`.
    pub(crate) recorded: usize,
}

/// Operations recorded before the pending encoder is submitted without
/// waiting, to bound the memory a long request holds.
const MAX_RECORDED: usize = 512;

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

    /// The pipeline of `kernel` with override constants `consts`, built on
    /// first use.
    fn pipeline(
        &self,
        rec: &mut Recording,
        kernel: &'static str,
        consts: &[(&str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = format!("{kernel}{consts:?}");
        if let Some(p) = rec.pipelines.get(&key) {
            return Ok(p.clone());
        }
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
        rec.pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Records one dispatch of `kernel` over `buffers` (bound in order) into
    /// the pending encoder.
    pub(crate) fn dispatch(
        &self,
        kernel: &'static str,
        consts: &[(&str, f64)],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.alive(kernel)?;
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let mut rec = lock(&self.recording);
        let pipeline = self.pipeline(&mut rec, kernel, consts)?;
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
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::Unsupported(format!(
                "gpu backend: binding {kernel} failed: {e}"
            )));
        }
        let device = &self.device;
        let encoder = rec.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        rec.recorded += 1;
        if rec.recorded >= MAX_RECORDED {
            let encoder = rec.encoder.take().expect("just recorded into it");
            rec.recorded = 0;
            self.queue.submit([encoder.finish()]);
        }
        Ok(())
    }

    /// Records a kernel of `map.wgsl`'s shape: (params, input, output)
    /// with one thread per item, `params[0]` being `items`.
    pub(crate) fn map_kernel(
        &self,
        op: &str,
        kernel: &'static str,
        consts: &[(&str, f64)],
        params: &[u32],
        (input, out): (&wgpu::Buffer, &wgpu::Buffer),
        items: usize,
    ) -> Result<()> {
        let p = self.params(params);
        self.dispatch(kernel, consts, &[&p, input, out], grid_threads(op, items)?)
    }

    /// Records `last` after everything pending and submits it all, holding
    /// the recording lock throughout so that no other thread's work slips
    /// between (a read-back must see every result recorded before it).
    pub(crate) fn submit_with(&self, last: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut rec = lock(&self.recording);
        let mut encoder = rec.encoder.take().unwrap_or_else(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        rec.recorded = 0;
        last(&mut encoder);
        self.queue.submit([encoder.finish()]);
    }
}
