//! The parameter words of one recording (each dispatch's parameters and
//! the small tables it reads), packed into a few device buffers that the
//! stream keeps and rewrites once per submission, instead of one new
//! buffer per dispatch.

/// Bytes of one arena buffer; a larger table gets a buffer of its own.
const CHUNK: u64 = 64 << 10;

/// Arena buffers of [`CHUNK`] bytes a stream keeps between submissions.
const KEEP: usize = 4;

/// One device buffer of the arena and the bytes placed in it since the
/// last submission.
struct Chunk {
    buffer: wgpu::Buffer,
    staged: Vec<u8>,
}

/// A stream's parameter arena (see the module docs).
#[derive(Default)]
pub(crate) struct Arena {
    /// `chunks[..used]` hold this recording's words; the rest wait for
    /// reuse.
    chunks: Vec<Chunk>,
    used: usize,
}

/// Where placed words will be on the device when the recording runs.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    /// Index into the recording's chunks (stable until it is submitted).
    chunk: usize,
    offset: u64,
    size: wgpu::BufferSize,
}

impl Slot {
    /// The dynamic offset of the words in their buffer.
    pub(crate) fn offset(self) -> u32 {
        // Within a chunk of 64 KiB, or at 0 in a table's own buffer.
        self.offset as u32
    }
}

impl Arena {
    /// Places `words` (at least one word: empty bindings are invalid) at
    /// the next offset that is a multiple of `align`, in a new buffer when
    /// the current one is full.
    pub(crate) fn place(&mut self, device: &wgpu::Device, align: u64, words: &[u32]) -> Slot {
        let bytes: &[u8] = if words.is_empty() {
            &[0; 4]
        } else {
            bytemuck::cast_slice(words)
        };
        let size = bytes.len() as u64;
        let at = |c: &Chunk| (c.staged.len() as u64).next_multiple_of(align);
        let fits = |c: &Chunk| at(c) + size <= c.buffer.size();
        if self.used == 0 || !fits(&self.chunks[self.used - 1]) {
            let reusable = self.chunks.get(self.used).is_some_and(fits);
            if !reusable {
                let chunk = Chunk {
                    buffer: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("params"),
                        size: size
                            .max(CHUNK)
                            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    staged: Vec::new(),
                };
                self.chunks.insert(self.used, chunk);
            }
            self.used += 1;
        }
        let chunk = &mut self.chunks[self.used - 1];
        let offset = at(chunk);
        chunk.staged.resize(offset as usize, 0);
        chunk.staged.extend_from_slice(bytes);
        Slot {
            chunk: self.used - 1,
            offset,
            size: wgpu::BufferSize::new(size).expect("at least one word"),
        }
    }

    /// The buffer `slot` (placed in this recording) is in and its size:
    /// what a bind group binds, at offset 0, for the words to be found at
    /// the dynamic offset [`Slot::offset`].
    pub(crate) fn binding(&self, slot: Slot) -> (&wgpu::Buffer, wgpu::BufferSize) {
        (&self.chunks[slot.chunk].buffer, slot.size)
    }

    /// Writes the words placed since the last submission, ahead of the
    /// submission about to be made (`queue` runs writes first, and after
    /// the work submitted before, which may still read the old words).
    pub(crate) fn write(&mut self, queue: &wgpu::Queue) {
        for chunk in &mut self.chunks[..self.used] {
            queue.write_buffer(&chunk.buffer, 0, &chunk.staged);
            chunk.staged.clear();
        }
        self.used = 0;
        // Tables too large for one chunk, and chunks past a few, go.
        let mut kept = 0;
        self.chunks.retain(|c| {
            let keep = c.buffer.size() == CHUNK && kept < KEEP;
            kept += usize::from(keep);
            keep
        });
    }
}
