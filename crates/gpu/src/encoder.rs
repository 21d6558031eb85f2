//! Recording work: the pipeline cache, kernel launches with their parameter
//! words, and workgroup grids, into the calling thread's stream (see `stream`).

use std::collections::HashMap;
use std::time::Instant;

use edgeserve_tensor::{Result, TensorError, deadline};

use crate::{GpuBackend, kernels, lock, stream};

/// A pipeline's identity: its kernel, how many of its bindings take words
/// from the stream's arena, and its override constants (by bits).
type PipelineKey = (&'static str, usize, Vec<(&'static str, u64)>);

/// Built pipelines, each with its bind group layout, shared by every
/// stream.
pub(crate) type Pipelines = HashMap<PipelineKey, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>;

/// One compute pipeline: a kernel (a file stem under `src/kernels/`, see
/// `kernels`) with its override constants.
#[derive(Clone, Copy)]
pub(crate) struct Kernel<'a> {
    pub(crate) name: &'static str,
    pub(crate) consts: &'a [(&'static str, f64)],
}

impl<'a> Kernel<'a> {
    /// `name` with no override constants.
    pub(crate) const fn new(name: &'static str) -> Kernel<'a> {
        Kernel { name, consts: &[] }
    }

    /// `name` with override constants `consts`.
    pub(crate) const fn with(name: &'static str, consts: &'a [(&'static str, f64)]) -> Kernel<'a> {
        Kernel { name, consts }
    }
}

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
    /// The pipeline of `kernel` and its bind group layout, built on first
    /// use. Its first `words` bindings take words from the stream's arena at
    /// dynamic offsets, so one bind group serves every dispatch that binds
    /// the same buffers (see `stream`).
    fn pipeline(
        &self,
        Kernel {
            name: kernel,
            consts,
        }: Kernel<'_>,
        words: usize,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let key: PipelineKey = (
            kernel,
            words,
            consts.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: other threads go on recording meanwhile
        // (two building the same pipeline at once is harmless).
        let started = Instant::now();
        let source = kernels::source(kernel);
        let entries: Vec<_> = kernels::bindings(&source)
            .into_iter()
            .enumerate()
            .map(|(i, read_only)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: i < words,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel),
                entries: &entries,
            });
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
                layout: Some(&self.device.create_pipeline_layout(
                    &wgpu::PipelineLayoutDescriptor {
                        label: Some(kernel),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    },
                )),
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
        // A build is the server's one-time cost, not the request's that
        // first needed it: on a software driver it takes up to a second.
        deadline::postpone(started.elapsed());
        let built = (pipeline, layout);
        lock(&self.pipelines).insert(key, built.clone());
        Ok(built)
    }

    /// Records one dispatch of `kernel` into the calling thread's stream,
    /// with `params` as its parameter words (binding 0, see `common.wgsl`)
    /// and `buffers` bound after them, in order.
    pub(crate) fn launch(
        &self,
        kernel: Kernel<'_>,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.launch_with_tables(kernel, &[params], buffers, groups)
    }

    /// [`launch`](GpuBackend::launch) for a kernel that also reads tables
    /// of words: `words` are its parameters and then the tables, bound
    /// from binding 0 on (all in the stream's parameter arena), and
    /// `buffers` follow them.
    pub(crate) fn launch_with_tables(
        &self,
        kernel: Kernel<'_>,
        words: &[&[u32]],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.alive(kernel.name)?;
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let (pipeline, layout) = self.pipeline(kernel, words.len())?;
        stream::current(self).dispatch(&stream::Dispatch {
            label: kernel.name,
            pipeline: &pipeline,
            layout: &layout,
            words,
            buffers,
            groups,
        })
    }

    /// Records a kernel of `map.wgsl`'s shape: (params, input, output)
    /// with one thread per item, `params[0]` being `items`.
    pub(crate) fn map_kernel(
        &self,
        op: &str,
        kernel: Kernel<'_>,
        params: &[u32],
        (input, out): (&wgpu::Buffer, &wgpu::Buffer),
        items: usize,
    ) -> Result<()> {
        self.launch(kernel, params, &[input, out], grid_threads(op, items)?)
    }
}
