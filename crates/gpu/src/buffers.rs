//! Device buffers: the per-backend pool of freed buffers, allocation,
//! uploads and read-backs, and the dtypes the kernels can hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgeserve_tensor::{DType, HostBuffer, Result, Storage, Tensor, TensorError, deadline};

use crate::stream::{self, Uses};
use crate::{GpuBackend, lock};

/// A device buffer holding one tensor's elements, as stored in
/// [`Storage::Device`].
#[derive(Debug)]
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    /// Meaningful bytes (the buffer itself is rounded up to whole 16-byte
    /// quads).
    size: u64,
    /// The backend whose device owns the buffer.
    owner: u64,
    /// The host bytes this buffer was uploaded from, kept for integer
    /// tensors (embedding checks ids without a round trip) and for small
    /// uploads other than weights (read back without waiting for the
    /// device).
    host: Option<HostBuffer>,
    /// The owning backend's memory accounting and free buffers.
    pool: Arc<Pool>,
    /// Whether the buffer is sized to a pool class and goes back to the
    /// pool when dropped (else it is destroyed).
    recycle: bool,
    /// The streams whose recorded work uses the buffer.
    uses: Uses,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.pool
            .live
            .fetch_sub(self.buffer.size(), Ordering::Relaxed);
        std::mem::take(&mut self.uses).release(self.buffer.clone(), &self.pool, self.recycle);
    }
}

impl GpuBuffer {
    /// The wgpu buffer: rounded up to a multiple of 16 bytes (at least 16),
    /// and for results to a power-of-two size class. When the last
    /// [`GpuBuffer`] handle drops the buffer may be reused for another
    /// result, so a clone of it must not outlive the tensor.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Bytes of tensor data in the buffer.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The host elements the buffer was uploaded from, when kept.
    pub(crate) fn uploaded(&self) -> Option<&HostBuffer> {
        self.host.as_ref()
    }
}

/// Most bytes of freed buffers a backend keeps for reuse.
pub const POOL_CAP: u64 = 256 << 20;

/// Largest weight (whole quads) written into a pooled buffer, which goes
/// back to the pool when freed; larger weights get a buffer of their exact
/// size, destroyed when freed. Other uploads, a request's inputs, go to
/// pooled buffers whatever their size: freed after every request, they
/// come back from the pool instead of being destroyed ([`Doomed`]). Also
/// the largest upload other than a weight whose host bytes are kept.
const POOLED_UPLOAD: u64 = 256 << 10;

/// Smallest pool size class, in bytes.
const MIN_CLASS: u64 = 256;

/// Usage of every tensor buffer: bound by kernels, copied to staging
/// buffers for read-back.
const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A backend's device memory accounting and its freed buffers, by size
/// class (the buffer's size, a power of two).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Bytes of buffers held by live [`GpuBuffer`]s.
    live: AtomicU64,
    /// Bytes of freed buffers waiting in streams' own lists for their
    /// pending work to be submitted (see [`stream`]).
    pub(crate) held: AtomicU64,
    free: Mutex<FreeLists>,
    /// Buffers to destroy once no read-back waits for the device.
    doomed: Mutex<Doomed>,
}

/// Destroying a buffer takes wgpu-core's snatch lock for writing, and a
/// read-back's wait for the device holds it for reading, for as long as
/// the device runs. A destroy would wait for another request's device
/// work; worse, the lock is fair, so every thread that then records,
/// submits or binds (each taking it for reading) would queue behind that
/// destroy. So a buffer freed while any read-back waits is destroyed
/// when the last one ends (bench/RESULTS.md, session 45).
#[derive(Debug, Default)]
struct Doomed {
    /// Read-backs waiting for the device now.
    waits: usize,
    buffers: Vec<wgpu::Buffer>,
    bytes: u64,
}

impl Doomed {
    /// Every buffer kept, the list left empty.
    fn take(&mut self) -> Vec<wgpu::Buffer> {
        self.bytes = 0;
        std::mem::take(&mut self.buffers)
    }
}

/// Most bytes of buffers kept for destruction while read-backs wait; past
/// it they are destroyed at once, waiting as wgpu makes them, rather than
/// hold device memory that concurrent waits might never let go.
const DOOMED_CAP: u64 = 256 << 20;

#[derive(Debug, Default)]
struct FreeLists {
    by_class: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

impl Pool {
    /// A freed buffer of exactly `class` bytes, counted as live again.
    fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = {
            let mut free = lock(&self.free);
            let buffer = free.by_class.get_mut(&class)?.pop()?;
            free.bytes -= class;
            buffer
        };
        self.live.fetch_add(class, Ordering::Relaxed);
        Some(buffer)
    }

    /// Counts a newly created buffer as live.
    fn track(&self, buffer: &wgpu::Buffer) {
        self.live.fetch_add(buffer.size(), Ordering::Relaxed);
    }

    /// A freed buffer that no unsubmitted work uses: when `reuse` (it is
    /// of a class size) and the pool has room, kept for reuse; else
    /// destroyed ([`Pool::destroy`]), so wgpu frees its memory once the
    /// device is done with it even while a stream's kept bind group still
    /// holds a handle on it (see [`stream`]).
    pub(crate) fn free(&self, buffer: wgpu::Buffer, reuse: bool) {
        let size = buffer.size();
        let mut free = lock(&self.free);
        if reuse && free.bytes + size <= POOL_CAP {
            free.by_class.entry(size).or_default().push(buffer);
            free.bytes += size;
        } else {
            drop(free);
            self.destroy(buffer);
        }
    }

    /// Destroys `buffer` now if no read-back waits for the device, else
    /// when the last one ends ([`Doomed`]).
    fn destroy(&self, buffer: wgpu::Buffer) {
        let mut doomed = lock(&self.doomed);
        if doomed.waits == 0 {
            // Under the lock, so that no wait starts before it is done.
            buffer.destroy();
            return;
        }
        doomed.bytes += buffer.size();
        doomed.buffers.push(buffer);
        if doomed.bytes > DOOMED_CAP {
            let buffers = doomed.take();
            drop(doomed);
            buffers.iter().for_each(wgpu::Buffer::destroy);
        }
    }

    /// Runs `wait`, a blocking wait for the device, counted as a read-back
    /// waiting: buffers freed meanwhile are destroyed once none is.
    pub(crate) fn waiting<R>(&self, wait: impl FnOnce() -> R) -> R {
        /// Ends the count on every exit, an unwind included.
        struct Waited<'a>(&'a Pool);
        impl Drop for Waited<'_> {
            fn drop(&mut self) {
                let mut doomed = lock(&self.0.doomed);
                doomed.waits -= 1;
                if doomed.waits == 0 {
                    doomed.take().iter().for_each(wgpu::Buffer::destroy);
                }
            }
        }
        lock(&self.doomed).waits += 1;
        let _waited = Waited(self);
        wait()
    }

    /// Bytes of freed buffers waiting for read-backs to end before they
    /// are destroyed ([`Doomed`]).
    pub(crate) fn doomed_bytes(&self) -> u64 {
        lock(&self.doomed).bytes
    }

    /// Frees every pooled buffer and every one kept for destruction (before
    /// retrying a failed allocation): destroyed at once, since the retry
    /// needs their memory back.
    fn trim(&self) {
        let mut free = lock(&self.free);
        for buffer in free.by_class.drain().flat_map(|(_, list)| list) {
            buffer.destroy();
        }
        free.bytes = 0;
        drop(free);
        let buffers = lock(&self.doomed).take();
        buffers.iter().for_each(wgpu::Buffer::destroy);
    }
}

/// Device bytes for `bytes` of tensor data: whole 16-byte quads, at least
/// one, because the matmul kernel binds its operands as `array<vec4<f32>>`
/// and a trailing partial quad would be out of its reach.
fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(16).max(1) * 16
}

/// Writes `bytes` at the start of `to` and zeroes the rest: the padding to
/// whole quads ([`padded`]).
fn fill_padded(to: wgpu::WriteOnly<'_, [u8]>, bytes: &[u8]) {
    let (mut head, mut tail) = to.split_at(bytes.len());
    head.copy_from_slice(bytes);
    tail.fill(0);
}

/// Whether the upload of `size` bytes for `op` went through: an
/// out-of-memory error caught by `scope`, or else `written`'s own failure,
/// fails it.
fn uploaded(
    op: &str,
    size: u64,
    scope: wgpu::ErrorScopeGuard,
    written: std::result::Result<(), String>,
) -> Result<()> {
    let failed = pollster::block_on(scope.pop())
        .map(|e| e.to_string())
        .or(written.err());
    match failed {
        Some(e) => Err(TensorError::OutOfMemory(format!(
            "{op}: uploading {size} bytes failed: {e}"
        ))),
        None => Ok(()),
    }
}

/// Refuses `op` on `dtype`, which the kernels do not handle.
pub(crate) fn unsupported(op: &str, dtype: DType) -> TensorError {
    TensorError::Unsupported(format!(
        "gpu backend: {op} on {dtype} not implemented yet (f32 only)"
    ))
}

/// Refuses every dtype but f32, the only one arithmetic kernels read.
pub(crate) fn f32_only(op: &str, dtype: DType) -> Result<()> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(unsupported(op, dtype))
    }
}

/// Words (u32) per element for operations that only move elements.
pub(crate) fn words_per_elem(op: &str, dtype: DType) -> Result<usize> {
    match dtype {
        DType::F32 | DType::I32 => Ok(1),
        DType::I64 => Ok(2),
        _ => Err(unsupported(op, dtype)),
    }
}

/// Bytes of a tensor of `shape` and `dtype`, refusing overflow.
pub(crate) fn bytes_of(op: &str, dtype: DType, shape: &[usize]) -> Result<u64> {
    shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| TensorError::OutOfMemory(format!("{op}: {dtype}{shape:?} overflows memory")))
}

/// [`Backend::from_host`](edgeserve_tensor::Backend::from_host): uploads a
/// host tensor; a device tensor of this backend passes as is.
pub(crate) fn from_host(g: &GpuBackend, tensor: &Tensor) -> Result<Tensor> {
    let Storage::Host(h) = tensor.storage() else {
        // Already ours (or refused if another device's).
        g.buf("from-host", tensor)?;
        return Ok(tensor.clone());
    };
    let buf = g.upload("from-host", tensor, h)?;
    Ok(Tensor::new(
        tensor.dtype(),
        tensor.shape(),
        Storage::Device(buf),
    ))
}

/// [`Backend::to_host`](edgeserve_tensor::Backend::to_host): runs the
/// recorded work and reads the tensor back.
pub(crate) fn to_host(g: &GpuBackend, tensor: &Tensor) -> Result<Tensor> {
    let mut all = to_host_all(g, &[tensor])?;
    Ok(all.remove(0))
}

/// [`Backend::to_host_all`](edgeserve_tensor::Backend::to_host_all): runs
/// the recorded work and reads every device tensor of `tensors` back
/// through one staging buffer, so the caller waits for the device once.
/// Tensors uploaded from the host whose bytes were kept (integers, small
/// uploads) come from those, since nothing writes an uploaded buffer
/// again while its tensor lives.
pub(crate) fn to_host_all(g: &GpuBackend, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut known = Vec::with_capacity(tensors.len());
    let mut pending = Vec::new();
    for &t in tensors {
        known.push(if t.host().is_some() {
            Some(t.clone())
        } else {
            let buf = g.buf("to-host", t)?;
            match buf.uploaded() {
                Some(kept) => Some(Tensor::from_host(t.dtype(), t.shape(), kept.clone())?),
                None => {
                    pending.push(buf);
                    None
                }
            }
        });
    }
    let mut read = if pending.is_empty() {
        Vec::new()
    } else {
        g.read_back("to-host", &pending)?
    }
    .into_iter();
    tensors
        .iter()
        .zip(known)
        .map(|(t, known)| match known {
            Some(t) => Ok(t),
            None => {
                let bytes = read.next().expect("one read-back per tensor not known");
                Tensor::from_host(
                    t.dtype(),
                    t.shape(),
                    HostBuffer::copy_from_bytes(t.dtype(), &bytes),
                )
            }
        })
        .collect()
}

impl GpuBackend {
    /// Bytes of device buffers held by live tensors (and scratch buffers of
    /// recorded work) of this backend: uploads and results, rounded up to
    /// their buffers' sizes. Freed buffers kept for reuse are not counted
    /// (see [`GpuBackend::pooled_bytes`]).
    pub fn allocated_bytes(&self) -> u64 {
        self.pool.live.load(Ordering::Relaxed)
    }

    /// How many times this backend has waited for the device to hand
    /// results to the host: once per [`Backend::to_host`] of a device
    /// tensor, once per [`Backend::to_host_all`] however many it reads.
    ///
    /// [`Backend::to_host`]: edgeserve_tensor::Backend::to_host
    /// [`Backend::to_host_all`]: edgeserve_tensor::Backend::to_host_all
    pub fn read_backs(&self) -> u64 {
        self.read_backs.load(Ordering::Relaxed)
    }

    /// Bytes of freed device buffers kept for reuse: in the shared pool (at
    /// most [`POOL_CAP`]) and in recordings not yet submitted.
    pub fn pooled_bytes(&self) -> u64 {
        lock(&self.pool.free).bytes + self.pool.held.load(Ordering::Relaxed)
    }

    /// Bytes the device's memory allocator has handed out for everything
    /// on this backend's device: tensors, pooled buffers, parameter arenas,
    /// and memory wgpu has yet to free once the device is done with it.
    /// `None` where the driver's allocator does not report.
    pub fn device_bytes(&self) -> Option<u64> {
        (self.device.generate_allocator_report()).map(|report| report.total_allocated_bytes)
    }

    /// The device size of a buffer for `bytes` bytes of tensor data, if the
    /// device can bind one that large.
    fn fits(&self, op: &str, bytes: u64) -> Result<(u64, u64)> {
        self.alive(op)?;
        let max = self
            .limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size);
        let size = padded(bytes);
        if size > max {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: {bytes} bytes exceed the device's largest buffer ({max} bytes)"
            )));
        }
        Ok((size, max))
    }

    /// A storage buffer for `bytes` bytes. Its contents are undefined: a
    /// buffer from the pool holds what its last user wrote, so every caller
    /// overwrites the whole result.
    pub(crate) fn alloc(&self, op: &str, bytes: u64) -> Result<GpuBuffer> {
        self.alloc_from(op, bytes, true)
    }

    /// [`GpuBackend::alloc`], taking a freed buffer from this stream's own
    /// list only when `own_freed`.
    fn alloc_from(&self, op: &str, bytes: u64, own_freed: bool) -> Result<GpuBuffer> {
        let (size, max) = self.fits(op, bytes)?;
        // Pool-sized classes for what the pool may keep; larger buffers are
        // allocated exactly, to not waste up to half of them.
        let class = size.next_power_of_two().max(MIN_CLASS);
        let recycle = class <= max && class <= POOL_CAP;
        let stream = stream::current(self);
        let wrap = |buffer: wgpu::Buffer| GpuBuffer {
            buffer,
            size: bytes,
            owner: self.id,
            host: None,
            pool: self.pool.clone(),
            recycle,
            uses: Uses::written_by(stream.clone()),
        };
        if recycle {
            // This stream's own freed buffers first: the shared pool only
            // gets them once its work is submitted.
            if let Some(buffer) = own_freed.then(|| stream.take(class)).flatten() {
                self.pool.live.fetch_add(class, Ordering::Relaxed);
                return Ok(wrap(buffer));
            }
            if let Some(buffer) = self.pool.take(class) {
                return Ok(wrap(buffer));
            }
        }
        let size = if recycle { class } else { size };
        let mut retried = false;
        loop {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            });
            match pollster::block_on(scope.pop()) {
                None => {
                    self.pool.track(&buffer);
                    return Ok(wrap(buffer));
                }
                // Give the pooled buffers back to the device and try again.
                Some(_) if !retried && self.pooled_bytes() + self.pool.doomed_bytes() > 0 => {
                    self.pool.trim();
                    retried = true;
                }
                Some(e) => {
                    return Err(TensorError::OutOfMemory(format!(
                        "{op}: allocating {bytes} bytes on the device failed: {e}"
                    )));
                }
            }
        }
    }

    /// A fresh device tensor of `shape` and `dtype`, and its buffer.
    pub(crate) fn output(
        &self,
        op: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<(Tensor, Arc<GpuBuffer>)> {
        let size = bytes_of(op, dtype, shape)?;
        let buf = Arc::new(self.alloc(op, size)?);
        let t = Tensor::new(dtype, shape, Storage::Device(buf.clone()));
        Ok((t, buf))
    }

    /// A new device buffer holding `host`, the elements of `t`.
    fn upload(&self, op: &str, t: &Tensor, host: &HostBuffer) -> Result<Arc<GpuBuffer>> {
        let dtype = t.dtype();
        let size = host.len() as u64;
        let (padded, _) = self.fits(op, size)?;
        // A shared handle on the caller's bytes, not a copy. Of weights,
        // only integers keep theirs (embedding checks ids with it): a
        // handle holds the whole mapped weights file beside the device copy.
        let small = padded <= POOLED_UPLOAD;
        let integer = matches!(dtype, DType::I32 | DType::I64);
        let keep = (integer || small && !t.is_weight()).then(|| host.clone());
        if small || !t.is_weight() {
            // Not from this stream's own freed buffers: its unsubmitted
            // work may still read one, and a queue write runs ahead of the
            // next submission.
            let mut buf = self.alloc_from(op, size, false)?;
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            // Written straight into the staging memory, padding zeroed.
            let staged = wgpu::BufferSize::new(padded)
                .and_then(|padded| self.queue.write_buffer_with(&buf.buffer, 0, padded))
                .map(|mut view| fill_padded(view.slice(..), host.bytes()));
            uploaded(
                op,
                size,
                scope,
                staged.ok_or("no staging memory".to_owned()),
            )?;
            buf.host = keep;
            return Ok(Arc::new(buf));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        // A large weight: mapped at creation and filled in place, with no
        // padded copy on the host first.
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: padded,
            usage: TENSOR_USAGE,
            mapped_at_creation: true,
        });
        let mapped = buffer
            .get_mapped_range_mut(..)
            .map(|mut view| fill_padded(view.slice(..), host.bytes()));
        if mapped.is_ok() {
            buffer.unmap();
        }
        uploaded(op, size, scope, mapped.map_err(|e| e.to_string()))?;
        self.pool.track(&buffer);
        Ok(Arc::new(GpuBuffer {
            buffer,
            size,
            owner: self.id,
            host: keep,
            pool: self.pool.clone(),
            recycle: false,
            // The caller's stream records with it next: destroying it when it
            // drops waits for that stream's submission.
            uses: Uses::written_by(stream::current(self)),
        }))
    }

    /// The device buffer of `t`, uploading host tensors on the fly.
    pub(crate) fn buf(&self, op: &str, t: &Tensor) -> Result<Arc<GpuBuffer>> {
        match t.storage() {
            Storage::Host(h) => self.upload(op, t, h),
            Storage::Device(any) => {
                let Ok(buf) = any.clone().downcast::<GpuBuffer>() else {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the gpu backend cannot read another backend's device tensor"
                    )));
                };
                if buf.owner != self.id {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the tensor lives on another gpu backend instance"
                    )));
                }
                buf.uses.read(&stream::current(self));
                Ok(buf)
            }
        }
    }

    /// Submits everything this thread recorded and waits for the device to
    /// run it; then reads each of `bufs`' meaningful bytes, all through one
    /// staging buffer and one wait.
    fn read_back(&self, op: &str, bufs: &[Arc<GpuBuffer>]) -> Result<Vec<Vec<u8>>> {
        self.alive(op)?;
        // Each at an offset of whole quads, a multiple of wgpu's 4-byte copy
        // and 8-byte map alignments; every device buffer is at least that
        // long (see `alloc` and `upload`).
        let offsets: Vec<u64> = bufs
            .iter()
            .scan(0, |end, buf| {
                let at = *end;
                *end += padded(buf.size);
                Some(at)
            })
            .collect();
        let size = bufs.iter().map(|buf| padded(buf.size)).sum();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(TensorError::OutOfMemory(format!(
                "{op}: staging {size} bytes failed: {e}"
            )));
        }
        let stream = stream::current(self);
        let submitted = stream.submit_with(|encoder| {
            for (buf, &at) in bufs.iter().zip(&offsets) {
                encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, at, padded(buf.size));
            }
        });
        self.read_backs.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        // No longer than the request's deadline: work already submitted
        // runs to its end on the device, but the request stops waiting.
        let until = deadline::current();
        let passed = || until.is_some_and(|d| Instant::now() >= d);
        self.pool
            .waiting(|| {
                self.device.poll(wgpu::PollType::Wait {
                    submission_index: Some(submitted),
                    timeout: until.map(|d| d.saturating_duration_since(Instant::now())),
                })
            })
            .map_err(|e| match self.alive(op) {
                Err(lost) => lost,
                Ok(()) if passed() => deadline::exceeded(op),
                Ok(()) => TensorError::Unsupported(format!("{op}: waiting for the device: {e}")),
            })?;
        self.alive(op)?;
        if let Some(e) = stream.take_failure() {
            return Err(e);
        }
        if let Some(e) = lock(&self.uncaptured).take() {
            return Err(e);
        }
        // Another thread's poll may have claimed this map's callback and
        // not run it yet, so an empty channel is not an answer; a
        // disconnected one is (wgpu dropped the callback unanswered).
        let mapped = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(5)) {
                Ok(r) => break r,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TensorError::Unsupported(format!(
                        "{op}: the device dropped the read-back"
                    )));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.alive(op)?;
                    if passed() {
                        return Err(deadline::exceeded(op));
                    }
                    let _ = self.device.poll(wgpu::PollType::Poll);
                }
            }
        };
        mapped.map_err(|e| {
            TensorError::Unsupported(format!("{op}: mapping the result failed: {e}"))
        })?;
        let data = {
            let view = staging.get_mapped_range(..).map_err(|e| {
                TensorError::Unsupported(format!("{op}: reading the mapped result failed: {e}"))
            })?;
            bufs.iter()
                .zip(&offsets)
                .map(|(buf, &at)| view[at as usize..(at + buf.size) as usize].to_vec())
                .collect()
        };
        staging.unmap();
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use edgeserve_tensor::{Ops, Tensor};

    use super::POOLED_UPLOAD;
    use crate::GpuBackend;

    /// Elements of a tensor twice [`POOLED_UPLOAD`].
    const LARGE: usize = (POOLED_UPLOAD as usize / 4) * 2;

    fn large() -> Tensor {
        Tensor::from_f32(&[LARGE], vec![1.5; LARGE]).unwrap()
    }

    /// A large weight gets a buffer of its own, destroyed when freed: freed
    /// while a read-back waits for the device, it is kept until that wait
    /// ends instead of taking wgpu's lock against it, and destroyed then;
    /// with no wait, at once. The read-back waiting meanwhile answers.
    #[test]
    fn a_buffer_freed_during_a_read_back_is_destroyed_after_it() {
        let g = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
        let ops = Ops::unlimited(&g);
        let weight = || ops.from_host(&large().into_weight()).unwrap();
        let bytes = (LARGE * 4) as u64;

        let w = weight();
        let answer = g.pool.waiting(|| {
            drop(w);
            assert_eq!(g.pool.doomed_bytes(), bytes, "kept while a wait runs");
            let y = ops.affine(&weight(), 2.0, 1.0).unwrap();
            ops.to_host(&y).unwrap()
        });
        assert_eq!(answer.host().unwrap().as_slice::<f32>()[LARGE - 1], 4.0);
        assert_eq!(g.pool.doomed_bytes(), 0, "destroyed when the wait ended");

        drop(weight());
        assert_eq!(g.pool.doomed_bytes(), 0, "destroyed at once with no wait");
    }

    /// A large input (not a weight) goes back to the pool when freed and is
    /// the next request's buffer: nothing is destroyed, and the second
    /// upload reads as its own elements.
    #[test]
    fn a_large_input_is_pooled() {
        let g = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
        let ops = Ops::unlimited(&g);
        let x = ops.from_host(&large()).unwrap();
        drop(ops.to_host(&ops.affine(&x, 1.0, 0.0).unwrap()).unwrap());
        let before = g.pooled_bytes();
        g.pool.waiting(|| drop(x));
        assert_eq!(g.pool.doomed_bytes(), 0);
        let class = (LARGE as u64 * 4).next_power_of_two();
        assert_eq!(g.pooled_bytes(), before + class);
        let other = Tensor::from_f32(&[LARGE], (0..LARGE).map(|i| i as f32).collect()).unwrap();
        let y = ops.to_host(
            &ops.affine(&ops.from_host(&other).unwrap(), 1.0, 0.0)
                .unwrap(),
        );
        // Had the upload made a buffer of its own, the pool would now hold
        // one more.
        assert_eq!(g.pooled_bytes(), before + class, "the freed one reused");
        let y = y.unwrap();
        assert_eq!(
            y.host().unwrap().as_slice::<f32>(),
            other.host().unwrap().as_slice::<f32>()
        );
    }
}
