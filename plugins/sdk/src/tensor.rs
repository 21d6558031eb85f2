//! The ergonomic API over the host's `tensor` resource: constructors,
//! readers, and every host operation as a method.

use crate::bindings::edgeserve::handler::tensor as ops;
use crate::{BinaryOp, CompareOp, Dtype, Error, PoolKind, ReduceOp, Tensor, UnaryOp};

mod sealed {
    pub trait Sealed {}
}

/// A Rust element type that maps to a tensor [`Dtype`]: `f32`, `i32`, `i64`
/// or `u8`. Used by [`Tensor::from_slice`] and [`Tensor::to_vec`].
pub trait Element: sealed::Sealed + Copy + 'static {
    /// The tensor element type this Rust type stands for.
    const DTYPE: Dtype;
    /// Size of one element in bytes.
    const SIZE: usize;
    /// Appends the little-endian bytes of `values` to `out`.
    fn write_le(values: &[Self], out: &mut Vec<u8>);
    /// Decodes one element from exactly [`Element::SIZE`] little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $dtype:ident) => {
        impl sealed::Sealed for $t {}

        impl Element for $t {
            const DTYPE: Dtype = Dtype::$dtype;
            const SIZE: usize = std::mem::size_of::<$t>();

            fn write_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * Self::SIZE);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }

            fn read_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element size"))
            }
        }
    };
}

element!(f32, F32);
element!(i32, I32);
element!(i64, I64);
element!(u8, U8);

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 => 2,
            Dtype::I64 => 8,
            Dtype::U8 => 1,
        }
    }

    /// The Open Inference Protocol datatype name (`"FP32"`, `"INT64"`, …).
    pub fn oip_name(self) -> &'static str {
        match self {
            Dtype::F32 => "FP32",
            Dtype::F16 => "FP16",
            Dtype::I32 => "INT32",
            Dtype::I64 => "INT64",
            Dtype::U8 => "UINT8",
        }
    }
}

/// Stride, padding, dilation and groups of a [`Tensor::conv2d`], and the
/// bounds its output is clipped to.
///
/// `Conv2d::default()` is a plain convolution: stride 1, no padding, no
/// dilation, one group, no clipping. Pairs are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2d {
    /// Step between windows.
    pub stride: (u32, u32),
    /// Zeros added before each axis (top, left), and after it unless
    /// `padding_end` says otherwise.
    pub padding: (u32, u32),
    /// Zeros added after each axis (bottom, right) where they differ from
    /// `padding`, as TensorFlow's "SAME" padding of a stride-2 layer does.
    pub padding_end: Option<(u32, u32)>,
    /// Spacing between kernel taps.
    pub dilation: (u32, u32),
    /// Channel groups (`c` and `o` must both be divisible by it).
    pub groups: u32,
    /// Bounds `(lo, hi)` each output is clipped to as it is written, an
    /// absent one not clipping (ReLU: `(Some(0.0), None)`; ReLU6: `(Some(0.0),
    /// Some(6.0))`); one pass fewer than a separate [`Tensor::clip`].
    pub clip: (Option<f64>, Option<f64>),
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            stride: (1, 1),
            padding: (0, 0),
            padding_end: None,
            dilation: (1, 1),
            groups: 1,
            clip: (None, None),
        }
    }
}

/// Constructors and readers.
impl Tensor {
    /// A tensor of `shape` holding `data` (row-major; `data.len()` must equal
    /// the product of `shape`).
    pub fn from_slice<T: Element>(shape: &[u32], data: &[T]) -> Result<Tensor, Error> {
        let mut bytes = Vec::new();
        T::write_le(data, &mut bytes);
        Tensor::from_bytes(T::DTYPE, shape, &bytes)
    }

    /// A rank-0 `f32` tensor holding `value`; broadcasts against anything.
    pub fn scalar(value: f32) -> Result<Tensor, Error> {
        Tensor::full(Dtype::F32, &[], value.into())
    }

    /// The elements of each of `tensors` as `f32`, row-major, read back
    /// together: the host flattens, converts and joins them first, so a GPU
    /// waits once where reading them one by one waits once each. Integers
    /// convert exactly up to 2^24.
    pub fn read_f32_all(tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>, Error> {
        if tensors.is_empty() {
            return Ok(Vec::new());
        }
        let flat = tensors
            .iter()
            .map(|t| {
                let flat = t.reshape(&[-1])?;
                if flat.dtype() == Dtype::F32 {
                    Ok(flat)
                } else {
                    flat.cast(Dtype::F32)
                }
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let joined = Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?.to_f32_vec()?;
        let mut rest = &joined[..];
        Ok(flat
            .iter()
            .map(|t| {
                let (head, tail) = rest.split_at(t.numel() as usize);
                rest = tail;
                head.to_vec()
            })
            .collect())
    }

    /// The elements as `T`, row-major. When the tensor's dtype differs from
    /// `T`'s, the host casts it first.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, Error> {
        let bytes = if self.dtype() == T::DTYPE {
            self.read()?
        } else {
            self.cast(T::DTYPE)?.read()?
        };
        if bytes.len() % T::SIZE != 0 {
            return Err(Error::Dtype(format!(
                "host returned {} bytes, not a multiple of {} ({:?})",
                bytes.len(),
                T::SIZE,
                T::DTYPE
            )));
        }
        Ok(bytes.chunks_exact(T::SIZE).map(T::read_le).collect())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements (the product of the shape).
    pub fn numel(&self) -> u64 {
        self.shape().iter().map(|&d| u64::from(d)).product()
    }
}

/// The element-typed shorthands of [`Tensor::from_slice`] and
/// [`Tensor::to_vec`], for handler code that names its element type once.
macro_rules! typed {
    ($($t:ty: $from:ident, $to:ident;)*) => {
        /// Constructors and readers for one element type.
        impl Tensor {
            $(
                #[doc = concat!("A `", stringify!($t), "` tensor of `shape` holding `data`.")]
                pub fn $from(shape: &[u32], data: &[$t]) -> Result<Tensor, Error> {
                    Tensor::from_slice(shape, data)
                }

                #[doc = concat!("The elements as `", stringify!($t), "` (cast on the host if needed).")]
                pub fn $to(&self) -> Result<Vec<$t>, Error> {
                    self.to_vec()
                }
            )*
        }
    };
}

typed! {
    f32: from_f32, to_f32_vec;
    i64: from_i64, to_i64_vec;
    i32: from_i32, to_i32_vec;
    u8: from_u8, to_u8_vec;
}

/// Named shorthands for one generic op, in an `impl Tensor` block: for each
/// `name => Variant`, a method `name(&self, args…)` that calls
/// `self.via(Enum::Variant, args…)`, documented by the comment above it.
macro_rules! shorthands {
    (
        $(#[$block:meta])*
        $via:ident($enum:ident $args:tt)
        $($(#[doc = $doc:literal])* $name:ident => $op:ident;)*
    ) => {
        $(#[$block])*
        impl Tensor {
            $(shorthand!($via $enum $args $(#[doc = $doc])* $name $op);)*
        }
    };
}

/// One method of [`shorthands!`]; `args` are its parameters after `&self`.
macro_rules! shorthand {
    ($via:ident $enum:ident ($($arg:ident: $ty:ty),*) $(#[doc = $doc:literal])* $name:ident $op:ident) => {
        $(#[doc = $doc])*
        pub fn $name(&self $(, $arg: $ty)*) -> Result<Tensor, Error> {
            self.$via($enum::$op $(, $arg)*)
        }
    };
}

/// Linear algebra and elementwise operations.
impl Tensor {
    /// Matrix product over the last two axes (batch axes broadcast):
    /// `[..., m, k] · [..., k, n] -> [..., m, n]`.
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor, Error> {
        ops::matmul(self, b, false)
    }

    /// Matrix product with `b` transposed: `[..., m, k] · [..., n, k]ᵀ`.
    /// This is the natural layout of PyTorch `Linear` weights (`[out, in]`).
    pub fn matmul_t(&self, b: &Tensor) -> Result<Tensor, Error> {
        ops::matmul(self, b, true)
    }

    /// `activation(self · b + bias)` in one host pass: a [`Tensor::matmul`]
    /// whose `bias` (`[n]`, added to every row) and elementwise `activation`
    /// are applied as the product is written, saving the passes (and
    /// intermediate tensors) of separate [`Tensor::add`] and
    /// [`Tensor::unary`] calls.
    pub fn linear(
        &self,
        b: &Tensor,
        bias: Option<&Tensor>,
        activation: Option<UnaryOp>,
    ) -> Result<Tensor, Error> {
        ops::linear(self, b, false, bias, activation)
    }

    /// [`Tensor::linear`] with `b` transposed, as [`Tensor::matmul_t`]: a
    /// PyTorch `Linear` layer (weight `[out, in]`, bias `[out]`) is
    /// `x.linear_t(&weight, Some(&bias), None)`.
    pub fn linear_t(
        &self,
        b: &Tensor,
        bias: Option<&Tensor>,
        activation: Option<UnaryOp>,
    ) -> Result<Tensor, Error> {
        ops::linear(self, b, true, bias, activation)
    }

    /// `self op other` elementwise with NumPy broadcasting.
    pub fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor, Error> {
        ops::binary(op, self, other)
    }

    /// `op(self)` elementwise.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor, Error> {
        ops::unary(op, self)
    }

    /// `self * factor + offset` elementwise, in one pass.
    pub fn affine(&self, factor: f32, offset: f32) -> Result<Tensor, Error> {
        ops::affine(self, factor, offset)
    }

    /// Softmax along `axis` (negative counts from the end).
    pub fn softmax(&self, axis: i32) -> Result<Tensor, Error> {
        ops::softmax(self, axis)
    }

    /// Layer normalization over the last axis, then `* gamma + beta` for
    /// whichever of the two is given.
    pub fn layer_norm(
        &self,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor, Error> {
        ops::layer_norm(self, gamma, beta, eps)
    }

    /// Rows of this table (`[vocab, dim]`) picked by integer `ids` (`[...]`),
    /// giving `[..., dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor, Error> {
        ops::embedding(self, ids)
    }

    /// Element conversion to `dtype`.
    pub fn cast(&self, dtype: Dtype) -> Result<Tensor, Error> {
        ops::cast(self, dtype)
    }
}

shorthands! {
    /// Elementwise shorthands for [`Tensor::binary`].
    binary(BinaryOp (other: &Tensor))
    /// `self + other` (broadcasting).
    add => Add;
    /// `self - other` (broadcasting).
    sub => Sub;
    /// `self * other` elementwise (broadcasting).
    mul => Mul;
    /// `self / other` elementwise (broadcasting).
    div => Div;
    /// Elementwise maximum (broadcasting).
    maximum => Maximum;
    /// Elementwise minimum (broadcasting).
    minimum => Minimum;
    /// `self` raised to `other`, elementwise (broadcasting).
    pow => Pow;
}

shorthands! {
    /// Elementwise shorthands for [`Tensor::unary`].
    unary(UnaryOp ())
    /// `-self`.
    neg => Neg;
    /// `|self|`.
    abs => Abs;
    /// `eˣ`.
    exp => Exp;
    /// Natural logarithm.
    log => Log;
    /// Square root.
    sqrt => Sqrt;
    /// `1 / √x`.
    rsqrt => Rsqrt;
    /// `max(x, 0)`.
    relu => Relu;
    /// GELU with the exact erf formulation.
    gelu => Gelu;
    /// GELU with the tanh approximation (GPT-2 style).
    gelu_tanh => GeluTanh;
    /// Hyperbolic tangent.
    tanh => Tanh;
    /// Logistic sigmoid `1 / (1 + e⁻ˣ)`.
    sigmoid => Sigmoid;
    /// SiLU (swish): `x · sigmoid(x)`.
    silu => Silu;
    /// The error function.
    erf => Erf;
}

/// Shape manipulation.
impl Tensor {
    /// Same elements, new shape; one entry may be `-1` (inferred).
    pub fn reshape(&self, shape: &[i32]) -> Result<Tensor, Error> {
        ops::reshape(self, shape)
    }

    /// Axes reordered: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&self, perm: &[u32]) -> Result<Tensor, Error> {
        ops::transpose(self, perm)
    }

    /// Elements `start..end` along `axis` (negative counts from the end).
    pub fn slice(&self, axis: i32, start: u32, end: u32) -> Result<Tensor, Error> {
        ops::slice(self, axis, start, end)
    }

    /// `tensors` joined along `axis`; all other axes must match.
    pub fn concat(tensors: &[&Tensor], axis: i32) -> Result<Tensor, Error> {
        ops::concat(tensors, axis)
    }
}

/// Reductions.
impl Tensor {
    /// Reduce along `axis`, keeping it as size 1 when `keep_dims`.
    pub fn reduce(&self, op: ReduceOp, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        ops::reduce(op, self, axis, keep_dims)
    }

    /// The `k` largest entries along the last axis, largest first:
    /// `(values, i64 indices)`.
    pub fn top_k(&self, k: u32) -> Result<(Tensor, Tensor), Error> {
        ops::top_k(self, k)
    }
}

shorthands! {
    /// Shorthands for [`Tensor::reduce`].
    reduce(ReduceOp (axis: i32, keep_dims: bool))
    /// Sum along `axis`.
    sum => Sum;
    /// Mean along `axis`.
    mean => Mean;
    /// Maximum along `axis`.
    max => Max;
    /// Minimum along `axis`.
    min => Min;
    /// Index of the maximum along `axis`, as `i64`.
    argmax => Argmax;
    /// Index of the minimum along `axis`, as `i64`.
    argmin => Argmin;
}

/// Comparison, selection and indexing.
impl Tensor {
    /// `self op other` with broadcasting, as a `u8` mask (1 where it holds).
    pub fn compare(&self, op: CompareOp, other: &Tensor) -> Result<Tensor, Error> {
        ops::compare(op, self, other)
    }

    /// The contract's `where` with `self` as the condition: `a` where
    /// `self` is nonzero, `b` elsewhere (the three broadcast).
    pub fn select(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, Error> {
        ops::where_(self, a, b)
    }

    /// Entries picked along `axis` by integer `indices` (negative ones
    /// count from the end): `[..before, n, ..after]` becomes
    /// `[..before, ..indices, ..after]`.
    pub fn gather(&self, indices: &Tensor, axis: i32) -> Result<Tensor, Error> {
        ops::gather(self, indices, axis)
    }

    /// Broadcast with `shape` (NumPy rules, both ways).
    pub fn expand(&self, shape: &[u32]) -> Result<Tensor, Error> {
        ops::expand(self, shape)
    }

    /// `min(max(self, lo), hi)` elementwise; `None` does not clip that side.
    pub fn clip(&self, lo: Option<f64>, hi: Option<f64>) -> Result<Tensor, Error> {
        ops::clip(self, lo, hi)
    }
}

shorthands! {
    /// Shorthands for [`Tensor::compare`].
    compare(CompareOp (other: &Tensor))
    /// `self == other` as a `u8` mask.
    eq => Equal;
    /// `self != other` as a `u8` mask.
    ne => NotEqual;
    /// `self < other` as a `u8` mask.
    lt => Less;
    /// `self <= other` as a `u8` mask.
    le => LessEqual;
    /// `self > other` as a `u8` mask.
    gt => Greater;
    /// `self >= other` as a `u8` mask.
    ge => GreaterEqual;
}

/// Convolution, pooling and attention.
impl Tensor {
    /// 2-D convolution of `self` (`[n, c, h, w]`) with `weight`
    /// (`[o, c / groups, kh, kw]`) plus an optional `bias` (`[o]`), clipped
    /// as `params` says. Uneven padding or a clip is the contract's
    /// `conv2d-fused` (0.1.4).
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2d,
    ) -> Result<Tensor, Error> {
        let Conv2d {
            stride,
            padding,
            padding_end,
            dilation,
            groups,
            clip: (clip_lo, clip_hi),
        } = params;
        let fused = (padding_end.is_some_and(|end| end != padding)
            || clip_lo.is_some()
            || clip_hi.is_some())
        .then_some(ops::Conv2dOptions {
            stride,
            padding_begin: padding,
            padding_end: padding_end.unwrap_or(padding),
            dilation,
            groups,
            clip_lo,
            clip_hi,
        });
        match fused {
            Some(options) => ops::conv2d_fused(self, weight, bias, options),
            None => ops::conv2d(self, weight, bias, stride, padding, dilation, groups),
        }
    }

    /// 2-D pooling over `[n, c, h, w]`; `avg` excludes padding from the count.
    pub fn pool2d(
        &self,
        kind: PoolKind,
        kernel: (u32, u32),
        stride: (u32, u32),
        padding: (u32, u32),
    ) -> Result<Tensor, Error> {
        ops::pool2d(kind, self, kernel, stride, padding)
    }

    /// Scaled dot-product attention with `self` as the queries:
    /// `softmax(q·kᵀ·scale + mask)·v`.
    ///
    /// q: `[..., lq, d]`; k: `[..., lk, d]`; v: `[..., lk, dv]`. `mask`
    /// broadcasts to `[..., lq, lk]` and is added to the scores; `causal`
    /// hides keys after each query (aligned to the end, so it works with a KV
    /// cache); `scale` defaults to `1/√d`.
    pub fn attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: Option<f32>,
        causal: bool,
    ) -> Result<Tensor, Error> {
        ops::attention(self, k, v, mask, scale, causal)
    }

    /// Self-attention over sequences packed back to back without padding,
    /// with `self` as the queries (contract 0.1.3).
    ///
    /// q and k: `[total, heads, d]`; v: `[total, heads, dv]` (a `linear`
    /// output `[total, heads · d]` reshaped). `offsets` holds n + 1 token
    /// offsets, 0 first and `total` last: sequence `i` is tokens
    /// `offsets[i]..offsets[i + 1]`, and each token attends only to its own
    /// sequence, so no mask and no work on padding. `causal` also hides the
    /// later tokens of its sequence; `scale` defaults to `1/√d`. The result
    /// is `[total, heads, dv]`.
    pub fn attention_varlen(
        &self,
        k: &Tensor,
        v: &Tensor,
        offsets: &[u32],
        scale: Option<f32>,
        causal: bool,
    ) -> Result<Tensor, Error> {
        ops::attention_varlen(self, k, v, offsets, scale, causal)
    }
}

shorthands! {
    /// Shorthands for [`Tensor::pool2d`].
    pool2d(PoolKind (kernel: (u32, u32), stride: (u32, u32), padding: (u32, u32)))
    /// Max pooling; see [`Tensor::pool2d`].
    max_pool2d => Max;
    /// Average pooling; see [`Tensor::pool2d`].
    avg_pool2d => Avg;
}

/// Recurrent layers.
impl Tensor {
    /// An LSTM layer over a whole sequence in one host call, with `self` as
    /// the gate inputs (contract 0.1.5): ONNX's `LSTM` for one direction,
    /// without peepholes or clipping, where a step at a time would be a
    /// dozen small calls.
    ///
    /// `self`: `[steps, batch, 4 · hidden]`, the input's product with every
    /// gate's weights plus the biases (one [`Tensor::linear_t`] over all
    /// steps, with ONNX's `W` as the weight and `Wb + Rb` as the bias); `r`:
    /// `[4 · hidden, hidden]`; `h0` and `c0`: `[batch, hidden]`; all f32. For
    /// each step t (the last first when `reverse`), the gates are
    /// `self[t] + h·rᵀ`, split along the last axis into i, o, f and g (ONNX's
    /// order); then `c = σ(f)⊙c + σ(i)⊙tanh(g)` and `h = σ(o)⊙tanh(c)`,
    /// starting from `h0` and `c0`. Returns `(y, h, c)`: every step's h as
    /// `[steps, batch, hidden]` in time order whatever the direction, and
    /// the last step's h and c (`[batch, hidden]`).
    pub fn lstm(
        &self,
        r: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        reverse: bool,
    ) -> Result<(Tensor, Tensor, Tensor), Error> {
        ops::lstm(self, r, h0, c0, reverse)
    }
}
