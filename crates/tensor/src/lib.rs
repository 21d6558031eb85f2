//! Tensors and the backends that compute on them.
//!
//! A [`Tensor`] is an immutable, cheaply clonable n-dimensional array whose
//! elements live wherever its [`Backend`] keeps them: host memory for the
//! [`cpu::CpuBackend`], device memory for a GPU backend. Every operation of
//! the plugin contract (`wit/edgeserve.wit`, interface `tensor`) is a method of
//! [`Backend`]; shape and dtype rules live in [`shape`] so every backend agrees
//! on them.

pub mod composed;
pub mod cpu;
pub mod deadline;
mod host;
mod ops;
pub mod shape;

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

pub use host::HostBuffer;
pub use ops::{Budget, Ops, Unlimited};

/// Element types a tensor can hold (the contract's `dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 8-bit unsigned integer.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// The little-endian bytes of `value` as one element of this dtype,
    /// converted as the contract's `full` converts it: floats to integers
    /// truncate toward zero, and every narrowing saturates (NaN becomes 0).
    pub fn element_bytes(self, value: f64) -> Vec<u8> {
        cpu::element_bytes(self, value)
    }

    /// Whether the dtype is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    /// The Open Inference Protocol datatype name ("FP32", "INT64", …).
    pub fn oip_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F16 => "FP16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
        }
    }

    /// Parses an Open Inference Protocol datatype name; `None` for names the
    /// contract cannot carry (including "BYTES", which is not numeric).
    pub fn from_oip_name(name: &str) -> Option<DType> {
        Some(match name {
            "FP32" => DType::F32,
            "FP16" => DType::F16,
            "INT32" => DType::I32,
            "INT64" => DType::I64,
            "UINT8" => DType::U8,
            _ => return None,
        })
    }

    /// Parses a safetensors dtype; `None` for ones the contract cannot carry.
    pub fn from_safetensors(dtype: &str) -> Option<DType> {
        Some(match dtype {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "I32" => DType::I32,
            "I64" => DType::I64,
            "U8" => DType::U8,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        })
    }
}

/// Why an operation was refused; mirrors the contract's `error` variant.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Shapes do not fit the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// The element type is not accepted by the operation.
    #[error("dtype error: {0}")]
    DType(String),
    /// An argument (axis, permutation, stride…) is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend does not implement this combination.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Memory for the result could not be allocated.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The device the tensors live on is gone (GPU reset or removed); every
    /// later operation on it fails the same way.
    #[error("device lost: {0}")]
    DeviceLost(String),
    /// The request's deadline passed before the operation finished, or
    /// before it started ([`deadline`]).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
}

/// Result of a tensor operation.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

/// Where a tensor's elements live.
#[derive(Clone)]
pub enum Storage {
    /// Host memory, readable directly.
    Host(HostBuffer),
    /// Memory owned by a device backend; only that backend can interpret it.
    Device(Arc<dyn Any + Send + Sync>),
}

/// An immutable n-dimensional array. Cloning shares the elements.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Arc<[usize]>,
    storage: Storage,
    /// For a model's weight ([`Tensor::into_weight`]), what a backend
    /// derived from the elements once, to keep for the tensor's life (the
    /// weight packed for a product kernel); shared with the clones and the
    /// reshapes, which share the elements.
    derived: Option<Arc<Kept>>,
}

/// What a model's weight keeps derived from its elements, and the same for
/// each part of its bytes that a view of it shares (a slice of it): a
/// handler that slices a weight per request (an LSTM's weight per
/// direction) gets the same kept form for the same part every time.
#[derive(Default)]
struct Kept {
    form: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// The parts' own, by the range of bytes they view; at most
    /// [`MAX_KEPT_PARTS`].
    parts: Mutex<Vec<(Range<usize>, Arc<Kept>)>>,
}

/// Most parts of one weight that keep a derived form: past them (a handler
/// slicing a weight at ever other offsets), a part's forms are made for
/// its view alone.
const MAX_KEPT_PARTS: usize = 64;

impl Kept {
    /// The kept forms of the part at `bytes`.
    fn part(&self, bytes: Range<usize>) -> Arc<Kept> {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kept)) = parts.iter().find(|(at, _)| *at == bytes) {
            return Arc::clone(kept);
        }
        let kept = Arc::<Kept>::default();
        if parts.len() < MAX_KEPT_PARTS {
            parts.push((bytes, Arc::clone(&kept)));
        }
        kept
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match self.storage {
            Storage::Host(_) => "host",
            Storage::Device(_) => "device",
        };
        write!(f, "Tensor({}{:?} on {place})", self.dtype, self.shape)
    }
}

impl Tensor {
    /// A tensor over `storage`. The caller guarantees the storage holds
    /// product(shape) elements of `dtype`; [`Tensor::from_host`] checks it.
    pub fn new(dtype: DType, shape: &[usize], storage: Storage) -> Tensor {
        Tensor {
            dtype,
            shape: shape.into(),
            storage,
            derived: None,
        }
    }

    /// A host tensor over `buffer`, checking that its length fits.
    pub fn from_host(dtype: DType, shape: &[usize], buffer: HostBuffer) -> Result<Tensor> {
        // Checked, so that a shape whose size wraps around cannot pass for a
        // small buffer.
        // Addressable even when empty, so that kernels splitting it along an
        // axis never overflow a count either.
        let expected = shape::checked_numel(shape).and_then(|n| n.checked_mul(dtype.size()));
        let Some(expected) = expected.filter(|_| shape::addressable(shape, dtype)) else {
            return Err(TensorError::Shape(format!(
                "{dtype}{shape:?}: its dimensions multiply past what memory can hold"
            )));
        };
        if buffer.len() != expected {
            return Err(TensorError::Shape(format!(
                "{dtype}{shape:?} needs {expected} bytes, got {}",
                buffer.len()
            )));
        }
        Ok(Tensor::new(dtype, shape, Storage::Host(buffer)))
    }

    /// A host tensor copied from little-endian element bytes.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        Tensor::from_host(dtype, shape, HostBuffer::copy_from_bytes(dtype, bytes))
    }

    /// A host tensor over bytes received whole (a request body's binary
    /// data): shared without a copy when they lie aligned for `dtype`,
    /// copied otherwise.
    pub fn from_received(dtype: DType, shape: &[usize], bytes: bytes::Bytes) -> Result<Tensor> {
        let buffer = HostBuffer::received(bytes, dtype)
            .unwrap_or_else(|bytes| HostBuffer::copy_from_bytes(dtype, &bytes));
        Tensor::from_host(dtype, shape, buffer)
    }

    /// A host f32 tensor owning `data`.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        Tensor::from_host(DType::F32, shape, HostBuffer::from_vec(data))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        shape::numel(&self.shape)
    }

    /// Size of the elements in bytes.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Where the elements live.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The host buffer, when the tensor lives on the host.
    pub fn host(&self) -> Option<&HostBuffer> {
        match &self.storage {
            Storage::Host(buffer) => Some(buffer),
            Storage::Device(_) => None,
        }
    }

    /// The same tensor as a model's weight: it lives as long as the model
    /// and serves every request, so a backend keeps what it derives from it
    /// (a packed copy for a product kernel) instead of deriving it per call.
    /// Other tensors get no kept copies, which would escape the memory cap
    /// of the instance that made them.
    pub fn into_weight(mut self) -> Tensor {
        self.derived.get_or_insert_default();
        self
    }

    /// Whether this is a model's weight ([`Tensor::into_weight`]).
    pub fn is_weight(&self) -> bool {
        self.derived.is_some()
    }

    /// A form of the elements derived by `make`: for a weight, made once
    /// and then kept with the tensor and its clones while `fits` accepts it;
    /// for any other tensor, made afresh on every call. A weight keeps one
    /// derived form; one of another type, or one `fits` refuses, is made
    /// afresh too.
    pub(crate) fn derived<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> Result<T>,
        fits: impl Fn(&T) -> bool,
    ) -> Result<Arc<T>> {
        let Some(kept) = &self.derived else {
            return make().map(Arc::new);
        };
        let slot = &kept.form;
        if let Some(kept) = slot.get() {
            return match Arc::clone(kept).downcast::<T>() {
                Ok(kept) if fits(&kept) => Ok(kept),
                _ => make().map(Arc::new),
            };
        }
        let made = Arc::new(make()?);
        // A thread racing this one may have kept its own, equal form first.
        let _ = slot.set(made.clone());
        Ok(made)
    }

    /// The same elements viewed with another shape of equal element count
    /// (a weight's view is the weight, with its kept form).
    pub fn with_shape(&self, shape: &[usize]) -> Tensor {
        debug_assert_eq!(shape::numel(shape), self.numel());
        Tensor {
            derived: self.derived.clone(),
            ..Tensor::new(self.dtype, shape, self.storage.clone())
        }
    }

    /// A view of `storage`, the range `bytes` of this tensor's bytes, as
    /// `shape`: a part of a weight is a weight too, whose kept form lives
    /// with this one's, so every view of the same part shares it.
    pub(crate) fn part(&self, shape: &[usize], storage: Storage, bytes: Range<usize>) -> Tensor {
        Tensor {
            derived: self.derived.as_ref().map(|kept| kept.part(bytes)),
            ..Tensor::new(self.dtype, shape, storage)
        }
    }
}

/// Elementwise binary operations (NumPy broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// max(a, b)
    Maximum,
    /// min(a, b)
    Minimum,
    /// a ^ b (float only)
    Pow,
}

/// Elementwise unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// max(x, 0)
    Relu,
    /// x·Φ(x), exact (erf) form, as BERT uses.
    Gelu,
    /// The tanh approximation of GELU, as GPT-2 uses.
    GeluTanh,
    /// tanh x
    Tanh,
    /// 1/(1+e^-x)
    Sigmoid,
    /// x·sigmoid(x)
    Silu,
    /// The error function.
    Erf,
}

/// Reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Σ
    Sum,
    /// Σ/n
    Mean,
    /// Largest element.
    Max,
    /// Smallest element.
    Min,
    /// Index (i64) of the first largest element.
    ArgMax,
    /// Index (i64) of the first smallest element.
    ArgMin,
}

/// Pooling kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Largest element of each window.
    Max,
    /// Mean of each window, padding excluded from the count.
    Avg,
}

/// Elementwise comparisons; the result is a u8 mask (1 where it holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// a == b
    Equal,
    /// a != b
    NotEqual,
    /// a < b
    Less,
    /// a <= b
    LessEqual,
    /// a > b
    Greater,
    /// a >= b
    GreaterEqual,
}

// Error messages name operations the way the contract spells them, so a
// plugin author can match a message to the call that produced it.
macro_rules! contract_names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every variant, in the contract's order.
            pub const ALL: &[$ty] = &[$(<$ty>::$variant),*];

            /// The operation's name in the contract (`wit/edgeserve.wit`).
            pub fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name,)*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

contract_names!(BinaryOp {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div",
    Maximum => "maximum", Minimum => "minimum", Pow => "pow",
});
contract_names!(UnaryOp {
    Neg => "neg", Abs => "abs", Exp => "exp", Log => "log", Sqrt => "sqrt",
    Rsqrt => "rsqrt", Relu => "relu", Gelu => "gelu", GeluTanh => "gelu-tanh",
    Tanh => "tanh", Sigmoid => "sigmoid", Silu => "silu", Erf => "erf",
});
contract_names!(ReduceOp {
    Sum => "sum", Mean => "mean", Max => "max", Min => "min",
    ArgMax => "argmax", ArgMin => "argmin",
});
contract_names!(PoolKind { Max => "max", Avg => "avg" });
contract_names!(CompareOp {
    Equal => "equal", NotEqual => "not-equal", Less => "less",
    LessEqual => "less-equal", Greater => "greater", GreaterEqual => "greater-equal",
});

/// Geometry of a 2-D convolution, and what is done to each output as it is
/// written; pairs are (height, width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2d {
    /// Step between windows.
    pub stride: (usize, usize),
    /// Zeros added before each axis (top, left).
    pub padding: (usize, usize),
    /// Zeros added after each axis (bottom, right). TensorFlow's "SAME"
    /// padding of a stride-2 layer adds one more here than before.
    pub padding_end: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups; input and output channels must divide by it.
    pub groups: usize,
    /// The bounds each output is clipped to as it is written (ReLU: `lo`
    /// 0; ReLU6: `lo` 0 and `hi` 6), saving a `clip` pass over the result.
    pub clip: shape::ClipBounds,
}

impl Conv2d {
    /// A convolution padded alike on both sides of each axis, unclipped.
    pub const fn symmetric(
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Conv2d {
        Conv2d {
            stride,
            padding,
            padding_end: padding,
            dilation,
            groups,
            clip: shape::ClipBounds::NONE,
        }
    }
}

/// Geometry of a 2-D pooling; pairs are (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Window size.
    pub kernel: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Padding added on each side (ignored by the window, not counted by avg).
    pub padding: (usize, usize),
}

/// Options of scaled dot-product attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    /// Multiplies q·kᵀ; `None` means 1/√d.
    pub scale: Option<f32>,
    /// Hide keys after each query, aligned to the end of the key axis.
    pub causal: bool,
}

/// The tensors of a weighted op (`matmul`/`linear`, `conv2d`): the input,
/// the weight it is multiplied with, and an optional bias added after.
#[derive(Clone, Copy, Debug)]
pub struct WeightedInputs<'a> {
    /// The activations (`a` of a matmul).
    pub x: &'a Tensor,
    /// The weight (`b` of a matmul, the kernel of a convolution).
    pub weight: &'a Tensor,
    /// Added to every output row (matmul) or channel (convolution).
    pub bias: Option<&'a Tensor>,
}

/// The tensors of scaled dot-product attention.
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    /// Queries `[.., lq, d]`.
    pub q: &'a Tensor,
    /// Keys `[.., lk, d]`.
    pub k: &'a Tensor,
    /// Values `[.., lk, dv]`.
    pub v: &'a Tensor,
    /// Added to the scores, broadcast to `[.., lq, lk]`.
    pub mask: Option<&'a Tensor>,
}

/// Scale, shift and epsilon of a layer normalization.
#[derive(Clone, Copy, Debug)]
pub struct NormParams<'a> {
    /// Multiplies each normalized row.
    pub gamma: Option<&'a Tensor>,
    /// Added after the scale.
    pub beta: Option<&'a Tensor>,
    /// Added to the variance.
    pub eps: f32,
}

/// What a backend reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// "cpu" or "gpu".
    pub kind: &'static str,
    /// Device name: the GPU adapter, or the CPU's architecture, vector
    /// features and thread count.
    pub device: String,
    /// Graphics API in use, or for the CPU the vector instructions its
    /// kernels' loops run ([`cpu::Simd::name`]: "avx512", "avx2",
    /// "baseline").
    pub api: String,
    /// Driver description, empty where not applicable.
    pub driver: String,
}

/// A device that stores tensors and runs the contract's operations on them.
///
/// Kernels receive operations already validated and resolved by [`Ops`]
/// (the only caller): shapes, axes and dtypes are known good, and each plan
/// carries the geometry its [`shape`] rule derived, so a backend never
/// re-derives it. Implementations may record operations lazily;
/// [`Backend::to_host`] is the point where pending work must complete.
pub trait Backend: Send + Sync {
    /// Describes the device.
    fn info(&self) -> BackendInfo;
    /// Makes a host tensor usable by this backend (an upload for a GPU).
    // Named after the contract's direction of travel, not a constructor.
    #[allow(clippy::wrong_self_convention)]
    fn from_host(&self, tensor: &Tensor) -> Result<Tensor>;
    /// Brings a tensor's elements to the host, completing pending work.
    fn to_host(&self, tensor: &Tensor) -> Result<Tensor>;
    /// [`Backend::to_host`] of each of `tensors`, in order. A device
    /// backend reads them all in one wait, where one `to_host` after
    /// another waits for the device once each.
    fn to_host_all(&self, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        tensors.iter().map(|t| self.to_host(t)).collect()
    }
    /// A tensor with every element equal to `value`.
    fn full(&self, dtype: DType, shape: &[usize], value: f64) -> Result<Tensor>;
    /// `activation(a · b + bias)`: the contract's `matmul` (no bias, no
    /// activation) and `linear` in one kernel with an epilogue.
    fn matmul(&self, inputs: WeightedInputs<'_>, plan: &shape::MatmulPlan) -> Result<Tensor>;
    /// Broadcasting elementwise binary op into `out_shape`.
    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// Elementwise unary op.
    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor>;
    /// `x * factor + offset`.
    fn affine(&self, x: &Tensor, factor: f32, offset: f32) -> Result<Tensor>;
    /// Softmax along `axis`.
    fn softmax(&self, x: &Tensor, axis: usize) -> Result<Tensor>;
    /// Layer normalization over the last axis with optional scale and shift.
    fn layer_norm(&self, x: &Tensor, norm: NormParams<'_>) -> Result<Tensor>;
    /// Row gather `table[ids]` into `out_shape`; ids are checked against the
    /// table here, since only the data tells ([`shape::id_out_of_range`]).
    fn embedding(&self, table: &Tensor, ids: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// Same elements, new shape of equal element count.
    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor>;
    /// Axis permutation into `out_shape`.
    fn transpose(&self, x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Result<Tensor>;
    /// Elements from `start` along `axis`, `out_shape[axis]` of them.
    fn slice(&self, x: &Tensor, axis: usize, start: usize, out_shape: &[usize]) -> Result<Tensor>;
    /// Join along `axis` into `out_shape`.
    fn concat(&self, xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Result<Tensor>;
    /// Reduction along the plan's axis.
    fn reduce(&self, op: ReduceOp, x: &Tensor, plan: &shape::ReducePlan) -> Result<Tensor>;
    /// Element conversion.
    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor>;
    /// 2-D convolution over NCHW.
    fn conv2d(&self, inputs: WeightedInputs<'_>, plan: &shape::Conv2dPlan) -> Result<Tensor>;
    /// 2-D pooling over NCHW.
    fn pool2d(&self, x: &Tensor, plan: &shape::Pool2dPlan) -> Result<Tensor>;
    /// Scaled dot-product attention.
    fn attention(&self, inputs: AttentionInputs<'_>, plan: &shape::AttentionPlan)
    -> Result<Tensor>;
    /// The `k` largest entries along the last axis into `out_shape`:
    /// (values, i64 indices).
    fn top_k(&self, x: &Tensor, k: usize, out_shape: &[usize]) -> Result<(Tensor, Tensor)>;
    /// Broadcasting comparison into a u8 mask of `out_shape`.
    fn compare(&self, op: CompareOp, a: &Tensor, b: &Tensor, out_shape: &[usize])
    -> Result<Tensor>;
    /// The contract's `where`: `a` where `cond` is nonzero, else `b`,
    /// broadcast into `out_shape`.
    fn select(&self, cond: &Tensor, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// Entries of `x` picked along the plan's axis by `indices`; indices
    /// are checked here, since only the data tells
    /// ([`shape::index_out_of_range`]).
    fn gather(&self, x: &Tensor, indices: &Tensor, plan: &shape::GatherPlan) -> Result<Tensor>;
    /// `x` broadcast into `out_shape`.
    fn expand(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// `min(max(x, lo), hi)` with the bounds already in range of `x`'s dtype.
    fn clip(&self, x: &Tensor, bounds: shape::ClipBounds) -> Result<Tensor>;
    /// Attention within each sequence of `[q, k, v]` packed without padding
    /// (the contract's `attention-varlen`).
    fn attention_varlen(
        &self,
        qkv: [&Tensor; 3],
        plan: &shape::VarlenAttentionPlan,
    ) -> Result<Tensor>;
    /// An LSTM layer over a whole sequence (the contract's `lstm`) from
    /// `[x_gates, r, h0, c0]`: (every step's h, the last h, the last c).
    /// [`composed::lstm`] builds it from a backend's other kernels.
    fn lstm(
        &self,
        inputs: [&Tensor; 4],
        plan: &shape::LstmPlan,
    ) -> Result<(Tensor, Tensor, Tensor)>;

    /// Why the device is gone (driver reset, device removed), or `None`
    /// while it works; once gone, every operation fails with
    /// [`TensorError::DeviceLost`]. Host memory is never lost.
    fn lost(&self) -> Option<String> {
        None
    }

    /// Whether a handler call's work is recorded per thread (a GPU's
    /// command stream), so one call must stay on the thread it started on
    /// until its read-back; `false` lets the host resume a call elsewhere.
    fn records_per_thread(&self) -> bool {
        false
    }

    /// A handler call is about to start on this thread. Whatever an earlier
    /// call on this thread left behind without reading it back (work it
    /// recorded and never submitted, an error the device reported for its
    /// work) is settled here, so that none of it reaches the new call.
    fn begin_call(&self) {}

    /// The contract's operations on this backend, without caps.
    fn ops(&self) -> Ops<'_>
    where
        Self: Sized,
    {
        Ops::unlimited(self)
    }
}

/// Calls `$then! { kernel(arg: Type, …) -> Made; … }` with every required
/// [`Backend`] method but `info`, in the trait's order, each with the
/// `Result`'s payload as `Made`.
///
/// For a backend that stands in for or wraps another (a test's probe, a
/// counting wrapper): it writes its methods from this one list, so a new
/// operation changes the trait and this list, not every such backend.
#[macro_export]
macro_rules! backend_kernels {
    ($then:ident) => {
        $then! {
            from_host(tensor: &$crate::Tensor) -> $crate::Tensor;
            to_host(tensor: &$crate::Tensor) -> $crate::Tensor;
            full(dtype: $crate::DType, shape: &[usize], value: f64) -> $crate::Tensor;
            matmul(
                inputs: $crate::WeightedInputs<'_>,
                plan: &$crate::shape::MatmulPlan
            ) -> $crate::Tensor;
            binary(
                op: $crate::BinaryOp,
                a: &$crate::Tensor,
                b: &$crate::Tensor,
                out: &[usize]
            ) -> $crate::Tensor;
            unary(op: $crate::UnaryOp, x: &$crate::Tensor) -> $crate::Tensor;
            affine(x: &$crate::Tensor, factor: f32, offset: f32) -> $crate::Tensor;
            softmax(x: &$crate::Tensor, axis: usize) -> $crate::Tensor;
            layer_norm(x: &$crate::Tensor, norm: $crate::NormParams<'_>) -> $crate::Tensor;
            embedding(
                table: &$crate::Tensor,
                ids: &$crate::Tensor,
                out: &[usize]
            ) -> $crate::Tensor;
            reshape(x: &$crate::Tensor, shape: &[usize]) -> $crate::Tensor;
            transpose(x: &$crate::Tensor, perm: &[usize], out: &[usize]) -> $crate::Tensor;
            slice(
                x: &$crate::Tensor,
                axis: usize,
                start: usize,
                out: &[usize]
            ) -> $crate::Tensor;
            concat(xs: &[&$crate::Tensor], axis: usize, out: &[usize]) -> $crate::Tensor;
            reduce(
                op: $crate::ReduceOp,
                x: &$crate::Tensor,
                plan: &$crate::shape::ReducePlan
            ) -> $crate::Tensor;
            cast(x: &$crate::Tensor, to: $crate::DType) -> $crate::Tensor;
            conv2d(
                inputs: $crate::WeightedInputs<'_>,
                plan: &$crate::shape::Conv2dPlan
            ) -> $crate::Tensor;
            pool2d(x: &$crate::Tensor, plan: &$crate::shape::Pool2dPlan) -> $crate::Tensor;
            attention(
                inputs: $crate::AttentionInputs<'_>,
                plan: &$crate::shape::AttentionPlan
            ) -> $crate::Tensor;
            top_k(
                x: &$crate::Tensor,
                k: usize,
                out: &[usize]
            ) -> ($crate::Tensor, $crate::Tensor);
            compare(
                op: $crate::CompareOp,
                a: &$crate::Tensor,
                b: &$crate::Tensor,
                out: &[usize]
            ) -> $crate::Tensor;
            select(
                cond: &$crate::Tensor,
                a: &$crate::Tensor,
                b: &$crate::Tensor,
                out: &[usize]
            ) -> $crate::Tensor;
            gather(
                x: &$crate::Tensor,
                indices: &$crate::Tensor,
                plan: &$crate::shape::GatherPlan
            ) -> $crate::Tensor;
            expand(x: &$crate::Tensor, out: &[usize]) -> $crate::Tensor;
            clip(x: &$crate::Tensor, bounds: $crate::shape::ClipBounds) -> $crate::Tensor;
            attention_varlen(
                qkv: [&$crate::Tensor; 3],
                plan: &$crate::shape::VarlenAttentionPlan
            ) -> $crate::Tensor;
            lstm(
                inputs: [&$crate::Tensor; 4],
                plan: &$crate::shape::LstmPlan
            ) -> ($crate::Tensor, $crate::Tensor, $crate::Tensor);
        }
    };
}
