//! Recordings side by side: every thread that runs operations records into
//! a command encoder of its own (a [`Stream`]) and submits it at its own
//! read-back, so concurrent requests overlap instead of queueing behind
//! one lock.
//!
//! What the device refuses in a submission (commands are validated when
//! the encoder finishes) or cannot run for lack of memory is caught in
//! error scopes around the submission and kept with the stream whose work
//! it was, whichever thread submitted it: that stream's next read-back
//! fails with it, and no other request sees it. A call that ends without
//! reading back (a trap, a deadline) leaves its failure and any work it
//! never submitted behind; the next call on the thread settles both first
//! ([`begin_call`]), so it does not fail with the last one's error.
//!
//! Queue order still has to hold where two streams meet, in two places:
//! - a stream that reads a buffer another stream wrote and has not yet
//!   submitted submits that stream first ([`Uses::read`]);
//! - a buffer freed while a stream's unsubmitted work may still use it is
//!   not handed to another stream: it waits in that stream's own free list,
//!   where only that stream reuses it (after the earlier work, in its own
//!   encoder), and goes to the shared pool when the stream submits
//!   ([`Uses::release`]).
//!
//! What each dispatch costs to record is kept small: a recording holds one
//! compute pass open across its dispatches (a pass per dispatch costs wgpu
//! a usage scope to set up and close each time), and the parameter words
//! of its dispatches go into the stream's [`Arena`], written once at
//! submission, rather than into a new buffer per dispatch. Those words are
//! bound at dynamic offsets, so a bind group depends only on the buffers it
//! binds, and the stream keeps the bind groups of its recording: a dispatch
//! that binds the same buffers as an earlier one (a chain of ops over a
//! few recycled buffers) reuses that bind group, made and validated once.
//! The bind groups outlive the recording that made them: a request that
//! runs again (the next one of a model, the next token of a decode) binds
//! the same weights, the same pooled buffers and the same arena buffers,
//! so after its first run it makes none. A bind group not used in the
//! last [`KEEP_BINDS`] submissions of its stream goes, so the map stays
//! bounded. A bind group is keyed by the buffers themselves (held by the
//! key), so it binds exactly those; and a buffer the pool lets go is
//! destroyed there ([`crate::buffers`]), so a kept bind group never keeps
//! device memory outside the pool's accounting.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use edgeserve_tensor::{Result, TensorError};

use crate::arena::Arena;
use crate::buffers::Pool;
use crate::device::recorded_work_failed;
use crate::{GpuBackend, lock};

/// Dispatches recorded before a stream is submitted without waiting, to
/// bound the memory a long request holds.
const MAX_RECORDED: usize = 512;

/// Submissions a bind group is kept for after its last use: enough for a
/// request to find its bind groups again when the same thread ran a few
/// requests of other models in between, and a bound on the map (at most
/// this many recordings' worth of bind groups).
const KEEP_BINDS: u64 = 4;

/// One thread's recording on one backend.
pub(crate) struct Stream {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pool: Arc<Pool>,
    /// The device's alignment of storage buffer binding offsets.
    align: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The compute pass open in `encoder` (it locks the encoder until it
    /// ends; declared first so it also drops first).
    pass: Option<wgpu::ComputePass<'static>>,
    /// Work recorded since the last submission.
    encoder: Option<wgpu::CommandEncoder>,
    /// Dispatches in `encoder`.
    recorded: usize,
    /// Buffers freed while `encoder` was open, by size class: this
    /// stream's to reuse until it submits.
    freed: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Buffers freed while `encoder` was open that are not reused (not of
    /// a class size): destroyed once it is submitted.
    retired: Vec<wgpu::Buffer>,
    /// Parameter words of the dispatches in `encoder`.
    arena: Arena,
    /// The bind groups of the last [`KEEP_BINDS`] recordings.
    binds: HashMap<BindKey, Kept>,
    /// Submissions made so far: the number of the recording in `encoder`.
    submissions: u64,
    /// The first error the device reported for a submission of this
    /// stream's work (whichever thread submitted it), for this stream's
    /// next read-back: never another request's.
    failed: Option<TensorError>,
}

/// A bind group and the last recording that used it.
struct Kept {
    bind: wgpu::BindGroup,
    used: u64,
}

/// What a bind group binds: a kernel's layout and its buffers in binding
/// order, first the arena buffers its words are read from (with the words'
/// size; their offset is dynamic), then whole tensor buffers. Holding the
/// buffers keeps each one's identity from passing to a new buffer while
/// the bind group is kept.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    bound: Vec<(wgpu::Buffer, Option<wgpu::BufferSize>)>,
}

/// Most bindings of words one dispatch reads (WebGPU's least limit on
/// dynamic storage buffers; kernels take at most two: parameters and a
/// table).
const MAX_WORDS: usize = 4;

/// One dispatch to record: its pipeline, the words it reads (parameters
/// first, then tables; bound from binding 0 on, from the stream's arena),
/// and the buffers bound after them.
pub(crate) struct Dispatch<'a> {
    pub(crate) label: &'static str,
    pub(crate) pipeline: &'a wgpu::ComputePipeline,
    pub(crate) layout: &'a wgpu::BindGroupLayout,
    pub(crate) words: &'a [&'a [u32]],
    pub(crate) buffers: &'a [&'a wgpu::Buffer],
    pub(crate) groups: (u32, u32, u32),
}

/// A thread's stream on one backend: the backend's id, a handle that tells
/// whether the backend still exists, and the stream.
type Opened = (u64, Weak<()>, Arc<Stream>);

thread_local! {
    /// This thread's stream on each backend.
    static STREAMS: RefCell<Vec<Opened>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's stream on `g`, if it has opened one.
fn opened(g: &GpuBackend) -> Option<Arc<Stream>> {
    STREAMS.with_borrow(|streams| {
        streams
            .iter()
            .find(|(id, ..)| *id == g.id)
            .map(|(.., s)| s.clone())
    })
}

/// The calling thread's stream on `g`, opened on first use.
pub(crate) fn current(g: &GpuBackend) -> Arc<Stream> {
    if let Some(s) = opened(g) {
        return s;
    }
    STREAMS.with_borrow_mut(|streams| {
        // Streams of dropped backends go with the next new one.
        streams.retain(|(_, backend, _)| backend.strong_count() > 0);
        let s = Arc::new(Stream {
            device: g.device.clone(),
            queue: g.queue.clone(),
            pool: g.pool.clone(),
            align: u64::from(g.limits.min_storage_buffer_offset_alignment).max(4),
            state: Mutex::default(),
        });
        streams.push((g.id, Arc::downgrade(&g.token), s.clone()));
        s
    })
}

/// A call starts on this thread: what an earlier call left in this thread's
/// stream on `g` is settled. Its unsubmitted work is submitted (another
/// stream may be waiting on what it writes), and a failure the device
/// reported for its work is dropped: the call it belonged to has ended
/// without reading back, and the new call must not fail with it.
pub(crate) fn begin_call(g: &GpuBackend) {
    if let Some(stream) = opened(g) {
        stream.flush();
        stream.take_failure();
    }
}

impl Stream {
    /// Whether work is recorded and not yet submitted.
    fn pending(&self) -> bool {
        lock(&self.state).encoder.is_some()
    }

    /// Records `d` into the open pass, opening an encoder and a pass if
    /// needed; a stream of [`MAX_RECORDED`] dispatches is submitted without
    /// waiting. The words are placed under the stream's lock, so that no
    /// submission from another thread writes the arena between placing them
    /// and recording the dispatch that reads them.
    pub(crate) fn dispatch(&self, d: &Dispatch<'_>) -> Result<()> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let mut offsets = [0; MAX_WORDS];
        let mut bound = Vec::with_capacity(d.words.len() + d.buffers.len());
        for (offset, words) in offsets.iter_mut().zip(d.words) {
            let slot = st.arena.place(&self.device, self.align, words);
            let (buffer, size) = st.arena.binding(slot);
            bound.push((buffer.clone(), Some(size)));
            *offset = slot.offset();
        }
        assert_eq!(
            bound.len(),
            d.words.len(),
            "{}: over {MAX_WORDS} word bindings",
            d.label
        );
        bound.extend(d.buffers.iter().map(|&b| (b.clone(), None)));
        let key = BindKey {
            layout: d.layout.clone(),
            bound,
        };
        let recording = st.submissions;
        let bind = match st.binds.entry(key) {
            Entry::Occupied(mut known) => {
                known.get_mut().used = recording;
                known.get().bind.clone()
            }
            Entry::Vacant(new) => {
                let bind = self.bind(d.label, new.key())?;
                let kept = new.insert(Kept {
                    bind,
                    used: recording,
                });
                kept.bind.clone()
            }
        };
        let offsets = &offsets[..d.words.len()];
        if st.pass.is_none() {
            let encoder = st.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            let pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            st.pass = Some(pass.forget_lifetime());
        }
        let pass = st.pass.as_mut().expect("opened above");
        pass.set_pipeline(d.pipeline);
        pass.set_bind_group(0, &bind, offsets);
        pass.dispatch_workgroups(d.groups.0, d.groups.1, d.groups.2);
        st.recorded += 1;
        if st.recorded >= MAX_RECORDED {
            self.submit(st, |_| {});
        }
        Ok(())
    }

    /// A new bind group for `key`, checked: a binding wgpu refuses is an
    /// error of the operation that records it.
    fn bind(&self, label: &str, key: &BindKey) -> Result<wgpu::BindGroup> {
        let entries: Vec<_> = (key.bound.iter().enumerate())
            .map(|(i, (buffer, size))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match size {
                    // Words, at the dynamic offset.
                    Some(size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: 0,
                        size: Some(*size),
                    }),
                    None => buffer.as_entire_binding(),
                },
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &key.layout,
            entries: &entries,
        });
        match pollster::block_on(scope.pop()) {
            None => Ok(bind),
            Some(e) => Err(TensorError::Unsupported(format!(
                "gpu backend: binding {label} failed: {e}"
            ))),
        }
    }

    /// Records `last` after everything pending and submits it all.
    pub(crate) fn submit_with(
        &self,
        last: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> wgpu::SubmissionIndex {
        self.submit(&mut lock(&self.state), last)
    }

    /// Submits what is pending, if anything: another stream needs it to
    /// have run first.
    fn flush(&self) {
        let mut st = lock(&self.state);
        if st.encoder.is_some() {
            self.submit(&mut st, |_| {});
        }
    }

    fn submit(
        &self,
        st: &mut State,
        last: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> wgpu::SubmissionIndex {
        // Ending the pass unlocks the encoder.
        st.pass = None;
        let mut encoder = st.encoder.take().unwrap_or_else(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        last(&mut encoder);
        st.recorded = 0;
        st.submissions += 1;
        let oldest = st.submissions.saturating_sub(KEEP_BINDS);
        st.binds.retain(|_, kept| kept.used >= oldest);
        // Recorded commands are validated when the encoder finishes, and
        // the submission may run out of memory: errors caught here are this
        // stream's, where outside a scope they would go to whichever
        // request reads back next.
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        st.arena.write(&self.queue);
        let index = self.queue.submit([encoder.finish()]);
        // Scopes pop innermost first.
        let errors = [invalid, out_of_memory].map(|scope| pollster::block_on(scope.pop()));
        if let Some(e) = errors.into_iter().flatten().next() {
            st.failed.get_or_insert(recorded_work_failed(e));
        }
        // Work recorded from now on runs after everything that used these.
        let reused = st.freed.drain().flat_map(|(_, list)| list);
        let retired = st.retired.drain(..);
        for (buffer, reuse) in reused.map(|b| (b, true)).chain(retired.map(|b| (b, false))) {
            self.pool.held.fetch_sub(buffer.size(), Ordering::Relaxed);
            self.pool.free(buffer, reuse);
        }
        index
    }

    /// The error the device reported for this stream's submitted work
    /// since the last call, if any.
    pub(crate) fn take_failure(&self) -> Option<TensorError> {
        lock(&self.state).failed.take()
    }

    /// A freed buffer of exactly `class` bytes that only this stream's
    /// pending work used.
    pub(crate) fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = lock(&self.state).freed.get_mut(&class)?.pop()?;
        self.pool.held.fetch_sub(class, Ordering::Relaxed);
        Some(buffer)
    }

    /// Keeps `buffer` for this stream while its work is pending (to reuse
    /// when `reuse`), else frees it to the shared pool ([`Pool::free`]).
    fn release(&self, buffer: wgpu::Buffer, reuse: bool) {
        let mut st = lock(&self.state);
        if st.encoder.is_none() {
            drop(st);
            self.pool.free(buffer, reuse);
            return;
        }
        self.pool.held.fetch_add(buffer.size(), Ordering::Relaxed);
        if reuse {
            st.freed.entry(buffer.size()).or_default().push(buffer);
        } else {
            st.retired.push(buffer);
        }
    }
}

/// The streams that have used one buffer, the first being the one that
/// wrote it (results are written only by the operation that allocates
/// them).
#[derive(Default)]
pub(crate) struct Uses(Mutex<Vec<Arc<Stream>>>);

impl std::fmt::Debug for Uses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uses({} streams)", lock(&self.0).len())
    }
}

impl Uses {
    /// Used by `stream`, which writes it.
    pub(crate) fn written_by(stream: Arc<Stream>) -> Uses {
        Uses(Mutex::new(vec![stream]))
    }

    /// About to be read by `stream`: the writer's pending work is submitted
    /// first when it is another stream's.
    pub(crate) fn read(&self, stream: &Arc<Stream>) {
        let mut users = lock(&self.0);
        if users.iter().any(|s| Arc::ptr_eq(s, stream)) {
            return;
        }
        if let Some(writer) = users.first() {
            writer.flush();
        }
        users.push(stream.clone());
    }

    /// The buffer's last handle dropped: it is freed ([`Pool::free`], for
    /// reuse when `reuse`) once no unsubmitted work uses it. Other streams
    /// with pending work are submitted and the last one keeps it.
    pub(crate) fn release(self, buffer: wgpu::Buffer, pool: &Pool, reuse: bool) {
        let users = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut pending: Vec<Arc<Stream>> = users.into_iter().filter(|s| s.pending()).collect();
        let Some(last) = pending.pop() else {
            pool.free(buffer, reuse);
            return;
        };
        for s in pending {
            s.flush();
        }
        last.release(buffer, reuse);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::thread;

    use edgeserve_tensor::{Backend, BinaryOp, Ops, Tensor};

    use super::current;
    use crate::GpuBackend;

    /// A source and a destination buffer of 16 bytes, for a copy the
    /// device refuses.
    fn copy_buffers(g: &GpuBackend) -> (wgpu::Buffer, wgpu::Buffer) {
        let buffer = |usage| {
            g.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        (
            buffer(wgpu::BufferUsages::COPY_SRC),
            buffer(wgpu::BufferUsages::COPY_DST),
        )
    }

    /// Two requests side by side: the device refuses one's submitted work,
    /// and the other, reading back first, still gets its own answer; the
    /// refusal goes to the request whose work it was, at its read-back.
    #[test]
    fn a_refused_submission_fails_only_its_own_stream() {
        let g = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
        let doubled = |x: &[f32]| -> edgeserve_tensor::Result<Vec<f32>> {
            let ops = Ops::unlimited(&g);
            let x = ops.from_host(&Tensor::from_f32(&[x.len()], x.to_vec())?)?;
            let y = ops.to_host(&ops.binary(BinaryOp::Add, &x, &x)?)?;
            Ok(y.host().expect("read back").as_slice::<f32>().to_vec())
        };
        let (from, to) = copy_buffers(&g);
        let turns = Barrier::new(2);
        thread::scope(|s| {
            let refused = s.spawn(|| {
                // A copy of 3 bytes: off WebGPU's 4-byte copy alignment.
                current(&g).submit_with(|e| e.copy_buffer_to_buffer(&from, 0, &to, 0, 3));
                turns.wait();
                turns.wait();
                doubled(&[5.0])
            });
            turns.wait();
            let mine = doubled(&[1.0, 2.0, 3.0, 4.0]);
            turns.wait();
            assert_eq!(mine.unwrap(), [2.0, 4.0, 6.0, 8.0]);
            let error = refused.join().unwrap().unwrap_err().to_string();
            assert!(
                error.contains("recorded work") && error.contains("COPY_BUFFER_ALIGNMENT"),
                "{error}"
            );
        });
        // Reported once: the stream serves its next request.
        assert_eq!(doubled(&[0.5]).unwrap(), [1.0]);
    }

    /// A call ends (a trap, a deadline) after the device refused its
    /// submitted work and before any read-back: the next call on the same
    /// thread starts clean instead of failing with that refusal.
    #[test]
    fn a_call_does_not_inherit_what_an_abandoned_one_left() {
        let g = GpuBackend::new().unwrap_or_else(|e| panic!("GpuBackend::new: {e}"));
        let ops = Ops::unlimited(&g);
        let (from, to) = copy_buffers(&g);
        // The abandoned call: refused work, then work recorded and never
        // submitted, and no read-back.
        g.begin_call();
        current(&g).submit_with(|e| e.copy_buffer_to_buffer(&from, 0, &to, 0, 3));
        let x = ops
            .from_host(&Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap())
            .unwrap();
        let pending = ops.binary(BinaryOp::Mul, &x, &x).unwrap();
        assert!(current(&g).pending(), "the product waits unsubmitted");
        // The next call on this thread.
        g.begin_call();
        assert!(
            !current(&g).pending(),
            "what the last call left is submitted"
        );
        let y = ops
            .to_host(&ops.binary(BinaryOp::Add, &x, &x).unwrap())
            .unwrap();
        assert_eq!(y.host().expect("read back").as_slice::<f32>(), [2.0, 4.0]);
        // The abandoned call's own tensor is still whole.
        let squared = ops.to_host(&pending).unwrap();
        assert_eq!(
            squared.host().expect("read back").as_slice::<f32>(),
            [1.0, 4.0]
        );
    }
}
