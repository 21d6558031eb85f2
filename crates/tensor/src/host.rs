//! Host memory that tensors can borrow typed slices from without copying.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytemuck::Pod;

use crate::DType;

/// Anything that owns a run of bytes for as long as it lives.
trait Bytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl<T: Pod + Send + Sync> Bytes for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

impl Bytes for memmap2::Mmap {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Bytes for bytes::Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Shared, immutable host bytes: an owned vector, a window of a memory map,
/// or bytes received whole (a request body's binary data).
///
/// Construction guarantees the bytes are aligned for the element type they
/// were made for, so [`HostBuffer::as_slice`] never copies.
#[derive(Clone)]
pub struct HostBuffer {
    owner: Arc<dyn Bytes>,
    range: Range<usize>,
}

impl fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostBuffer({} bytes)", self.len())
    }
}

impl HostBuffer {
    /// Takes ownership of typed elements.
    pub fn from_vec<T: Pod + Send + Sync>(data: Vec<T>) -> HostBuffer {
        let len = std::mem::size_of_val(data.as_slice());
        HostBuffer {
            owner: Arc::new(data),
            range: 0..len,
        }
    }

    /// Copies little-endian bytes into storage aligned for `dtype`.
    pub fn copy_from_bytes(dtype: DType, bytes: &[u8]) -> HostBuffer {
        fn copy<T: Pod + Send + Sync>(bytes: &[u8]) -> HostBuffer {
            let n = bytes.len() / size_of::<T>();
            let mut out = vec![T::zeroed(); n];
            bytemuck::cast_slice_mut::<T, u8>(&mut out)
                .copy_from_slice(&bytes[..n * size_of::<T>()]);
            if bytes.len().is_multiple_of(size_of::<T>()) {
                HostBuffer::from_vec(out)
            } else {
                // Keep the odd length visible so the caller's length check fails loudly.
                let mut raw = bytemuck::cast_slice::<T, u8>(&out).to_vec();
                raw.extend_from_slice(&bytes[n * size_of::<T>()..]);
                HostBuffer::from_vec(raw)
            }
        }
        match dtype {
            DType::F32 => copy::<f32>(bytes),
            DType::F16 => copy::<u16>(bytes),
            DType::I32 => copy::<i32>(bytes),
            DType::I64 => copy::<i64>(bytes),
            DType::U8 => copy::<u8>(bytes),
        }
    }

    /// A window of a memory map, without copying, when `range` is aligned for
    /// `dtype`; `None` otherwise (the caller copies with
    /// [`HostBuffer::copy_from_bytes`]).
    pub fn mapped(
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
        dtype: DType,
    ) -> Option<HostBuffer> {
        let start = map.as_ptr() as usize + range.start;
        if !start.is_multiple_of(dtype.size()) || range.end > map.len() {
            return None;
        }
        Some(HostBuffer { owner: map, range })
    }

    /// Bytes received whole (a request body's binary data), shared without
    /// copying when they are aligned for `dtype`; else the bytes back, for
    /// the caller to copy ([`HostBuffer::copy_from_bytes`]).
    pub(crate) fn received(bytes: bytes::Bytes, dtype: DType) -> Result<HostBuffer, bytes::Bytes> {
        if !(bytes.as_ptr() as usize).is_multiple_of(dtype.size()) {
            return Err(bytes);
        }
        let range = 0..bytes.len();
        Ok(HostBuffer {
            owner: Arc::new(bytes),
            range,
        })
    }

    /// A window of this buffer's bytes, sharing them without copying.
    ///
    /// # Panics
    /// When `range` does not lie within the buffer.
    pub fn slice(&self, range: Range<usize>) -> HostBuffer {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "HostBuffer::slice: {range:?} is outside {} bytes",
            self.len()
        );
        HostBuffer {
            owner: self.owner.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.owner.bytes()[self.range.clone()]
    }

    /// The bytes as elements of `T`.
    ///
    /// # Panics
    /// When `T` is not the element type the buffer was built for (misaligned
    /// or not a whole number of elements): a bug in the caller, not bad input.
    pub fn as_slice<T: Pod>(&self) -> &[T] {
        // An empty buffer's dangling pointer is only aligned for the type it
        // was made from, which need not be `T`.
        if self.is_empty() {
            return &[];
        }
        bytemuck::cast_slice(self.bytes())
    }
}
