//! Recordings side by side: every thread that runs operations records into
//! a command encoder of its own (a [`Stream`]) and submits it at its own
//! read-back, so concurrent requests overlap instead of queueing behind
//! one lock.
//!
//! Queue order still has to hold where two streams meet, in two places:
//! - a stream that reads a buffer another stream wrote and has not yet
//!   submitted submits that stream first ([`Uses::read`]);
//! - a buffer freed while a stream's unsubmitted work may still use it is
//!   not handed to another stream: it waits in that stream's own free list,
//!   where only that stream reuses it (after the earlier work, in its own
//!   encoder), and goes to the shared pool when the stream submits
//!   ([`Uses::release`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::buffers::Pool;
use crate::{GpuBackend, lock};

/// Dispatches recorded before a stream is submitted without waiting, to
/// bound the memory a long request holds.
const MAX_RECORDED: usize = 512;

/// One thread's recording on one backend.
pub(crate) struct Stream {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pool: Arc<Pool>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Work recorded since the last submission.
    encoder: Option<wgpu::CommandEncoder>,
    /// Dispatches in `encoder`.
    recorded: usize,
    /// Buffers freed while `encoder` was open, by size class: this
    /// stream's to reuse until it submits.
    freed: HashMap<u64, Vec<wgpu::Buffer>>,
}

/// A thread's stream on one backend: the backend's id, a handle that tells
/// whether the backend still exists, and the stream.
type Entry = (u64, Weak<()>, Arc<Stream>);

thread_local! {
    /// This thread's stream on each backend.
    static STREAMS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's stream on `g`, opened on first use.
pub(crate) fn current(g: &GpuBackend) -> Arc<Stream> {
    STREAMS.with_borrow_mut(|streams| {
        if let Some((.., s)) = streams.iter().find(|(id, ..)| *id == g.id) {
            return s.clone();
        }
        // Streams of dropped backends go with the next new one.
        streams.retain(|(_, backend, _)| backend.strong_count() > 0);
        let s = Arc::new(Stream {
            device: g.device.clone(),
            queue: g.queue.clone(),
            pool: g.pool.clone(),
            state: Mutex::default(),
        });
        streams.push((g.id, Arc::downgrade(&g.token), s.clone()));
        s
    })
}

impl Stream {
    /// Whether work is recorded and not yet submitted.
    fn pending(&self) -> bool {
        lock(&self.state).encoder.is_some()
    }

    /// Records with `f` into the open encoder, opening one if needed; a
    /// stream of [`MAX_RECORDED`] dispatches is submitted without waiting.
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut st = lock(&self.state);
        let encoder = st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        f(encoder);
        st.recorded += 1;
        if st.recorded >= MAX_RECORDED {
            self.submit(&mut st, |_| {});
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
        let mut encoder = st.encoder.take().unwrap_or_else(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        last(&mut encoder);
        st.recorded = 0;
        let index = self.queue.submit([encoder.finish()]);
        // Work recorded from now on runs after everything that used these.
        for buffer in st.freed.drain().flat_map(|(_, list)| list) {
            self.pool.held.fetch_sub(buffer.size(), Ordering::Relaxed);
            self.pool.recycle(buffer);
        }
        index
    }

    /// A freed buffer of exactly `class` bytes that only this stream's
    /// pending work used.
    pub(crate) fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = lock(&self.state).freed.get_mut(&class)?.pop()?;
        self.pool.held.fetch_sub(class, Ordering::Relaxed);
        Some(buffer)
    }

    /// Keeps `buffer` for this stream while its work is pending, else gives
    /// it to the shared pool.
    fn release(&self, buffer: wgpu::Buffer) {
        let mut st = lock(&self.state);
        if st.encoder.is_none() {
            drop(st);
            self.pool.recycle(buffer);
            return;
        }
        self.pool.held.fetch_add(buffer.size(), Ordering::Relaxed);
        st.freed.entry(buffer.size()).or_default().push(buffer);
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

    /// The buffer's last handle dropped: it goes to the shared pool once no
    /// unsubmitted work uses it. Other streams with pending work are
    /// submitted and the last one keeps it.
    pub(crate) fn release(self, buffer: wgpu::Buffer, pool: &Pool) {
        let users = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut pending: Vec<Arc<Stream>> = users.into_iter().filter(|s| s.pending()).collect();
        let Some(last) = pending.pop() else {
            pool.recycle(buffer);
            return;
        };
        for s in pending {
            s.flush();
        }
        last.release(buffer);
    }
}
