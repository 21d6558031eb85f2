//! The ergonomic API over the host's `tensor` resource: constructors,
//! readers, and every host operation as a method.

use crate::bindings::edgeserve::handler::tensor as ops;
use crate::{BinaryOp, Dtype, Error, PoolKind, ReduceOp, Tensor, UnaryOp};

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

/// Stride, padding, dilation and groups of a [`Tensor::conv2d`].
///
/// `Conv2d::default()` is a plain convolution: stride 1, no padding, no
/// dilation, one group. Pairs are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Step between windows.
    pub stride: (u32, u32),
    /// Zeros added on each side.
    pub padding: (u32, u32),
    /// Spacing between kernel taps.
    pub dilation: (u32, u32),
    /// Channel groups (`c` and `o` must both be divisible by it).
    pub groups: u32,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
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

    /// An `f32` tensor of `shape` holding `data`.
    pub fn from_f32(shape: &[u32], data: &[f32]) -> Result<Tensor, Error> {
        Tensor::from_slice(shape, data)
    }

    /// An `i64` tensor of `shape` holding `data`.
    pub fn from_i64(shape: &[u32], data: &[i64]) -> Result<Tensor, Error> {
        Tensor::from_slice(shape, data)
    }

    /// An `i32` tensor of `shape` holding `data`.
    pub fn from_i32(shape: &[u32], data: &[i32]) -> Result<Tensor, Error> {
        Tensor::from_slice(shape, data)
    }

    /// A `u8` tensor of `shape` holding `data`.
    pub fn from_u8(shape: &[u32], data: &[u8]) -> Result<Tensor, Error> {
        Tensor::from_bytes(Dtype::U8, shape, data)
    }

    /// A rank-0 `f32` tensor holding `value`; broadcasts against anything.
    pub fn scalar(value: f32) -> Result<Tensor, Error> {
        Tensor::full(Dtype::F32, &[], value.into())
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

    /// The elements as `f32` (cast on the host if needed).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, Error> {
        self.to_vec()
    }

    /// The elements as `i64` (cast on the host if needed).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, Error> {
        self.to_vec()
    }

    /// The elements as `i32` (cast on the host if needed).
    pub fn to_i32_vec(&self) -> Result<Vec<i32>, Error> {
        self.to_vec()
    }

    /// The elements as `u8` (cast on the host if needed).
    pub fn to_u8_vec(&self) -> Result<Vec<u8>, Error> {
        self.to_vec()
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

    /// `self + other` (broadcasting).
    pub fn add(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Add, other)
    }

    /// `self - other` (broadcasting).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Sub, other)
    }

    /// `self * other` elementwise (broadcasting).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Mul, other)
    }

    /// `self / other` elementwise (broadcasting).
    pub fn div(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Div, other)
    }

    /// Elementwise maximum (broadcasting).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Maximum, other)
    }

    /// Elementwise minimum (broadcasting).
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Minimum, other)
    }

    /// `self` raised to `other`, elementwise (broadcasting).
    pub fn pow(&self, other: &Tensor) -> Result<Tensor, Error> {
        self.binary(BinaryOp::Pow, other)
    }

    /// `op(self)` elementwise.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor, Error> {
        ops::unary(op, self)
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Neg)
    }

    /// `|self|`.
    pub fn abs(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Abs)
    }

    /// `eˣ`.
    pub fn exp(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Exp)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Log)
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Sqrt)
    }

    /// `1 / √x`.
    pub fn rsqrt(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Rsqrt)
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Relu)
    }

    /// GELU with the exact erf formulation.
    pub fn gelu(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Gelu)
    }

    /// GELU with the tanh approximation (GPT-2 style).
    pub fn gelu_tanh(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::GeluTanh)
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Tanh)
    }

    /// Logistic sigmoid `1 / (1 + e⁻ˣ)`.
    pub fn sigmoid(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Sigmoid)
    }

    /// SiLU (swish): `x · sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Silu)
    }

    /// The error function.
    pub fn erf(&self) -> Result<Tensor, Error> {
        self.unary(UnaryOp::Erf)
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

    /// Sum along `axis`.
    pub fn sum(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Sum, axis, keep_dims)
    }

    /// Mean along `axis`.
    pub fn mean(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Mean, axis, keep_dims)
    }

    /// Maximum along `axis`.
    pub fn max(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Max, axis, keep_dims)
    }

    /// Minimum along `axis`.
    pub fn min(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Min, axis, keep_dims)
    }

    /// Index of the maximum along `axis`, as `i64`.
    pub fn argmax(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Argmax, axis, keep_dims)
    }

    /// Index of the minimum along `axis`, as `i64`.
    pub fn argmin(&self, axis: i32, keep_dims: bool) -> Result<Tensor, Error> {
        self.reduce(ReduceOp::Argmin, axis, keep_dims)
    }

    /// The `k` largest entries along the last axis, largest first:
    /// `(values, i64 indices)`.
    pub fn top_k(&self, k: u32) -> Result<(Tensor, Tensor), Error> {
        ops::top_k(self, k)
    }
}

/// Convolution, pooling and attention.
impl Tensor {
    /// 2-D convolution of `self` (`[n, c, h, w]`) with `weight`
    /// (`[o, c / groups, kh, kw]`) plus an optional `bias` (`[o]`).
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2d,
    ) -> Result<Tensor, Error> {
        ops::conv2d(
            self,
            weight,
            bias,
            params.stride,
            params.padding,
            params.dilation,
            params.groups,
        )
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

    /// Max pooling; see [`Tensor::pool2d`].
    pub fn max_pool2d(
        &self,
        kernel: (u32, u32),
        stride: (u32, u32),
        padding: (u32, u32),
    ) -> Result<Tensor, Error> {
        self.pool2d(PoolKind::Max, kernel, stride, padding)
    }

    /// Average pooling; see [`Tensor::pool2d`].
    pub fn avg_pool2d(
        &self,
        kernel: (u32, u32),
        stride: (u32, u32),
        padding: (u32, u32),
    ) -> Result<Tensor, Error> {
        self.pool2d(PoolKind::Avg, kernel, stride, padding)
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
}
