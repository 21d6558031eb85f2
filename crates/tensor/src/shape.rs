//! Shape and dtype rules of every operation, shared by all backends.
//!
//! Each operation has one validator here that checks dtypes, shapes and
//! arguments and infers the output geometry. Backends call it before doing
//! any work, so the CPU and GPU backends accept exactly the same inputs and
//! refuse the rest with the same [`TensorError`] variant and message.
//! Messages name the operation and the shapes involved because they travel
//! unchanged to the plugin author.

use crate::{
    Attention, BinaryOp, Conv2d, DType, Pool2d, ReduceOp, Result, Tensor, TensorError, UnaryOp,
};

/// Number of elements of a tensor with dimensions `shape`.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of `shape`, or `None` when the count overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Refuses results whose byte size cannot even be addressed: they would
/// overflow size arithmetic and could never be allocated.
pub fn check_size(op: &str, shape: &[usize], dtype: DType) -> Result<()> {
    let bytes = checked_numel(shape).and_then(|n| n.checked_mul(dtype.size()));
    match bytes {
        Some(b) if b <= isize::MAX as usize => Ok(()),
        _ => Err(TensorError::OutOfMemory(format!(
            "{op}: a {dtype} result of shape {shape:?} does not fit in memory"
        ))),
    }
}

/// Turns a possibly negative axis (counting from the end) into an index
/// below `rank`.
pub fn normalize_axis(axis: i32, rank: usize) -> Result<usize> {
    let resolved = if axis < 0 {
        i64::from(axis) + rank as i64
    } else {
        i64::from(axis)
    };
    if resolved < 0 || resolved >= rank as i64 {
        return Err(TensorError::InvalidArgument(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(resolved as usize)
}

/// Resolves a reshape target against an element count: at most one entry may
/// be -1 and is inferred; every other entry must be non-negative.
pub fn resolve_reshape(numel: usize, shape: &[i32]) -> Result<Vec<usize>> {
    let err =
        |why: &str| TensorError::Shape(format!("reshape: {numel} elements to {shape:?}: {why}"));
    let mut inferred = None;
    let mut known = 1usize;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err(err("more than one -1")),
            -1 => inferred = Some(i),
            d if d < 0 => return Err(err(&format!("dimension {d} is negative"))),
            d => {
                known = known
                    .checked_mul(d as usize)
                    .ok_or_else(|| err("element count overflows"))?
            }
        }
    }
    let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    match inferred {
        Some(i) => {
            // 0 elements cannot pin down the -1 when another entry is 0 too.
            if known == 0 || !numel.is_multiple_of(known) {
                return Err(err("the -1 cannot be inferred"));
            }
            out[i] = numel / known;
        }
        None if known != numel => {
            return Err(err(&format!("the shape holds {known} elements")));
        }
        None => {}
    }
    Ok(out)
}

/// Row-major element strides of a contiguous tensor.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// NumPy broadcast of two shapes: aligned at the end, each pair of
/// dimensions equal or one of them 1.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    broadcast_for("broadcast", a, b)
}

fn broadcast_for(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => {
                return Err(TensorError::Shape(format!(
                    "{op}: a {a:?} and b {b:?}: dimensions {x} and {y} do not broadcast"
                )));
            }
        };
    }
    Ok(out)
}

/// Element strides that read a contiguous tensor of `shape` as if it had
/// the (broadcast) shape `out`: 0 along every broadcast dimension.
///
/// `shape` must broadcast to `out` (see [`broadcast`]).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    debug_assert!(shape.len() <= out.len());
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}

/// Offset of the element with row-major index `index` of shape `out`, in a
/// tensor read with `strides` (see [`broadcast_strides`]).
pub fn broadcast_offset(mut index: usize, out: &[usize], strides: &[usize]) -> usize {
    let mut offset = 0;
    for (&dim, &stride) in out.iter().zip(strides).rev() {
        if dim == 0 {
            return 0;
        }
        offset += (index % dim) * stride;
        index /= dim;
    }
    offset
}

/// `(outer, len, inner)`: the element counts before, along and after `axis`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

fn check_axis(op: &str, x: &Tensor, axis: usize) -> Result<()> {
    if axis >= x.shape().len() {
        return Err(TensorError::InvalidArgument(format!(
            "{op}: axis {axis} is out of range for {:?} (rank {})",
            x.shape(),
            x.shape().len()
        )));
    }
    Ok(())
}

/// Refuses non-float dtypes for `op`.
pub fn float_only(op: &str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(TensorError::DType(format!(
            "{op}: needs f32 or f16, got {dtype}"
        )));
    }
    Ok(())
}

/// Refuses dtypes that arithmetic does not cover (u8 only travels and casts).
fn numeric(op: &str, dtype: DType) -> Result<()> {
    if dtype == DType::U8 {
        return Err(TensorError::DType(format!(
            "{op}: needs f32, f16, i32 or i64, got {dtype}"
        )));
    }
    Ok(())
}

fn same_dtype(op: &str, what: &str, x: &Tensor, other: &Tensor) -> Result<()> {
    if x.dtype() != other.dtype() {
        return Err(TensorError::DType(format!(
            "{op}: {what} is {} but the input is {}; dtypes must match",
            other.dtype(),
            x.dtype()
        )));
    }
    Ok(())
}

/// Validates a broadcasting binary op; returns the output shape (the
/// output dtype is the operands').
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let name = op.name();
    if a.dtype() != b.dtype() {
        return Err(TensorError::DType(format!(
            "{name}: a is {} and b is {}; dtypes must match",
            a.dtype(),
            b.dtype()
        )));
    }
    match op {
        BinaryOp::Pow => float_only(name, a.dtype())?,
        _ => numeric(name, a.dtype())?,
    }
    let out = broadcast_for(name, a.shape(), b.shape())?;
    check_size(name, &out, a.dtype())?;
    Ok(out)
}

/// Validates an elementwise unary op: `neg` and `abs` also take integers.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<()> {
    match op {
        UnaryOp::Neg | UnaryOp::Abs => numeric(op.name(), x.dtype()),
        _ => float_only(op.name(), x.dtype()),
    }
}

/// Validates `affine` (float only).
pub fn affine(x: &Tensor) -> Result<()> {
    float_only("affine", x.dtype())
}

/// Validates `full`: every dtype and value is accepted, and every shape
/// whose size is addressable.
pub fn full(dtype: DType, shape: &[usize], _value: f64) -> Result<()> {
    check_size("full", shape, dtype)
}

/// Validates `cast`: every pair of dtypes is accepted.
pub fn cast(x: &Tensor, to: DType) -> Result<()> {
    check_size("cast", x.shape(), to)
}

/// Geometry of a (batched, broadcast) matrix product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Number of matrix products (the product of `batch_shape`).
    pub batch: usize,
    /// Rows of a and of the output.
    pub m: usize,
    /// Columns of a, rows of b (before any transpose).
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// Broadcast batch dimensions of the output.
    pub batch_shape: Vec<usize>,
    /// `batch_shape` followed by `[m, n]`.
    pub out_shape: Vec<usize>,
    /// Stride, counted in whole matrices, of a along each batch dimension
    /// (0 where a is broadcast).
    pub a_batch_strides: Vec<usize>,
    /// Same as `a_batch_strides`, for b.
    pub b_batch_strides: Vec<usize>,
}

impl MatmulShape {
    /// Indices of the a and b matrices that output matrix `index` multiplies.
    pub fn operands(&self, index: usize) -> (usize, usize) {
        (
            broadcast_offset(index, &self.batch_shape, &self.a_batch_strides),
            broadcast_offset(index, &self.batch_shape, &self.b_batch_strides),
        )
    }

    /// Whether one b matrix serves every batch while the a matrices are
    /// consecutive, so the whole product is one `[batch·m, k] × [k, n]`.
    pub fn folds_into_one(&self) -> bool {
        self.b_batch_strides.iter().all(|&s| s == 0)
            && self.a_batch_strides == contiguous_strides(&self.batch_shape)
    }
}

/// Validates a fused `linear`: a matmul as in [`matmul()`] and a bias of
/// shape `[n]` and the matmul's dtype. Every activation takes the float
/// dtypes matmul admits, so the activation needs no check.
pub fn linear(
    a: &Tensor,
    b: &Tensor,
    transpose_b: bool,
    bias: Option<&Tensor>,
) -> Result<MatmulShape> {
    let s = matmul(a, b, transpose_b)?;
    if let Some(bias) = bias {
        if bias.dtype() != a.dtype() {
            return Err(TensorError::DType(format!(
                "linear: bias is {} and the operands {}; dtypes must match",
                bias.dtype(),
                a.dtype()
            )));
        }
        if bias.shape() != [s.n] {
            return Err(TensorError::Shape(format!(
                "linear: bias {:?} must be [{}], one value per output column",
                bias.shape(),
                s.n
            )));
        }
    }
    Ok(s)
}

/// Validates a matmul: a `[..., m, k]`, b `[..., k, n]` (or `[..., n, k]`
/// with `transpose_b`), both float of one dtype and rank ≥ 2, batch
/// dimensions broadcast.
pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<MatmulShape> {
    let (sa, sb) = (a.shape(), b.shape());
    let err = |why: String| TensorError::Shape(format!("matmul: a {sa:?} and b {sb:?}: {why}"));
    if a.dtype() != b.dtype() {
        return Err(TensorError::DType(format!(
            "matmul: a is {} and b is {}; dtypes must match",
            a.dtype(),
            b.dtype()
        )));
    }
    float_only("matmul", a.dtype())?;
    if sa.len() < 2 || sb.len() < 2 {
        return Err(err("both operands need rank 2 or more".into()));
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (kb, n) = if transpose_b {
        (sb[sb.len() - 1], sb[sb.len() - 2])
    } else {
        (sb[sb.len() - 2], sb[sb.len() - 1])
    };
    if k != kb {
        return Err(err(format!("inner dimensions {k} and {kb} differ")));
    }
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch_shape = broadcast(ba, bb).map_err(|_| {
        err(format!(
            "batch dimensions {ba:?} and {bb:?} do not broadcast"
        ))
    })?;
    let mut out_shape = batch_shape.clone();
    out_shape.extend([m, n]);
    check_size("matmul", &out_shape, a.dtype())?;
    Ok(MatmulShape {
        batch: numel(&batch_shape),
        m,
        k,
        n,
        a_batch_strides: broadcast_strides(ba, &batch_shape),
        b_batch_strides: broadcast_strides(bb, &batch_shape),
        batch_shape,
        out_shape,
    })
}

/// Validates a softmax along `axis` (float only).
pub fn softmax(x: &Tensor, axis: usize) -> Result<()> {
    float_only("softmax", x.dtype())?;
    check_axis("softmax", x, axis)
}

/// Validates a layer norm: x float of rank ≥ 1; gamma and beta, when given,
/// of x's dtype and shape `[last]`.
pub fn layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> Result<()> {
    float_only("layer-norm", x.dtype())?;
    let Some(&last) = x.shape().last() else {
        return Err(TensorError::Shape(
            "layer-norm: x [] has no last axis to normalize".into(),
        ));
    };
    for (what, param) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = param {
            same_dtype("layer-norm", what, x, p)?;
            if p.shape() != [last] {
                return Err(TensorError::Shape(format!(
                    "layer-norm: x {:?} and {what} {:?}: {what} must be [{last}]",
                    x.shape(),
                    p.shape()
                )));
            }
        }
    }
    Ok(())
}

/// Validates an embedding lookup: table `[vocab, dim]` of any dtype, ids of
/// i32 or i64 and any shape. Returns the output shape `[..ids, dim]`.
///
/// Whether each id is below `vocab` is only known from the data; backends
/// report it with [`id_out_of_range`].
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Vec<usize>> {
    if !matches!(ids.dtype(), DType::I32 | DType::I64) {
        return Err(TensorError::DType(format!(
            "embedding: ids must be i32 or i64, got {}",
            ids.dtype()
        )));
    }
    if table.shape().len() != 2 {
        return Err(TensorError::Shape(format!(
            "embedding: table {:?} and ids {:?}: table must be [vocab, dim]",
            table.shape(),
            ids.shape()
        )));
    }
    let mut out = ids.shape().to_vec();
    out.push(table.shape()[1]);
    check_size("embedding", &out, table.dtype())?;
    Ok(out)
}

/// The error for an embedding id outside `0..vocab`.
pub fn id_out_of_range(id: i64, vocab: usize) -> TensorError {
    TensorError::InvalidArgument(format!(
        "embedding: id {id} is out of range for a vocabulary of {vocab}"
    ))
}

/// Validates a reshape to an already resolved shape (see
/// [`resolve_reshape`]): the element counts must agree.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<()> {
    if numel(shape) != x.numel() {
        return Err(TensorError::Shape(format!(
            "reshape: {:?} ({} elements) to {shape:?} ({} elements)",
            x.shape(),
            x.numel(),
            numel(shape)
        )));
    }
    Ok(())
}

/// Validates a transpose (output axis i is input axis `perm[i]`); returns
/// the output shape.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Vec<usize>> {
    let rank = x.shape().len();
    let mut seen = vec![false; rank];
    let valid = perm.len() == rank
        && perm
            .iter()
            .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(TensorError::InvalidArgument(format!(
            "transpose: {perm:?} is not a permutation of the {rank} axes of {:?}",
            x.shape()
        )));
    }
    Ok(perm.iter().map(|&p| x.shape()[p]).collect())
}

/// Validates a slice `start..end` along `axis`; returns the output shape.
pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Vec<usize>> {
    check_axis("slice", x, axis)?;
    let dim = x.shape()[axis];
    if start > end || end > dim {
        return Err(TensorError::InvalidArgument(format!(
            "slice: {start}..{end} is out of range for axis {axis} of {:?}",
            x.shape()
        )));
    }
    let mut out = x.shape().to_vec();
    out[axis] = end - start;
    Ok(out)
}

/// Validates a concat along `axis`: at least one tensor, one dtype, one
/// rank, every other dimension equal. Returns the output shape.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Vec<usize>> {
    let Some(first) = xs.first() else {
        return Err(TensorError::InvalidArgument(
            "concat: needs at least one tensor".into(),
        ));
    };
    check_axis("concat", first, axis)?;
    let mut out = first.shape().to_vec();
    for (i, x) in xs.iter().enumerate().skip(1) {
        if x.dtype() != first.dtype() {
            return Err(TensorError::DType(format!(
                "concat: tensor 0 is {} but tensor {i} is {}; dtypes must match",
                first.dtype(),
                x.dtype()
            )));
        }
        let fits = x.shape().len() == out.len()
            && x.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !fits {
            return Err(TensorError::Shape(format!(
                "concat: tensor 0 {:?} and tensor {i} {:?} differ outside axis {axis}",
                first.shape(),
                x.shape()
            )));
        }
        out[axis] += x.shape()[axis];
    }
    check_size("concat", &out, first.dtype())?;
    Ok(out)
}

/// Geometry of a reduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceShape {
    /// Output dtype: i64 for argmax/argmin, the input's otherwise.
    pub dtype: DType,
    /// Output dimensions (the reduced axis kept as 1 or removed).
    pub out_shape: Vec<usize>,
    /// Elements before the axis.
    pub outer: usize,
    /// Length of the axis.
    pub len: usize,
    /// Elements after the axis.
    pub inner: usize,
}

/// Validates a reduction along `axis`. `mean` needs a float dtype; max, min,
/// argmax and argmin need a non-empty axis.
pub fn reduce(op: ReduceOp, x: &Tensor, axis: usize, keep_dims: bool) -> Result<ReduceShape> {
    let name = format!("reduce {op}");
    match op {
        ReduceOp::Mean => float_only(&name, x.dtype())?,
        _ => numeric(&name, x.dtype())?,
    }
    check_axis(&name, x, axis)?;
    let (outer, len, inner) = split_at_axis(x.shape(), axis);
    if len == 0 && !matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: axis {axis} of {:?} is empty",
            x.shape()
        )));
    }
    let mut out_shape = x.shape().to_vec();
    if keep_dims {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    let dtype = match op {
        ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
        _ => x.dtype(),
    };
    Ok(ReduceShape {
        dtype,
        out_shape,
        outer,
        len,
        inner,
    })
}

/// Geometry of a 2-D convolution over NCHW.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// `[n, o, oh, ow]`.
    pub out_shape: Vec<usize>,
}

/// Output length of a sliding window: `None` when the window does not fit.
fn window_count(
    size: usize,
    pad: usize,
    kernel: usize,
    dilation: usize,
    stride: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + 2 * pad;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// Validates a conv2d: x `[n, c, h, w]`, weight `[o, c/groups, kh, kw]`,
/// bias `[o]`, all float of one dtype; stride, dilation and groups ≥ 1.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2d,
) -> Result<Conv2dShape> {
    let (sx, sw) = (x.shape(), weight.shape());
    let err =
        |why: String| TensorError::Shape(format!("conv2d: x {sx:?} and weight {sw:?}: {why}"));
    float_only("conv2d", x.dtype())?;
    same_dtype("conv2d", "weight", x, weight)?;
    if let Some(b) = bias {
        same_dtype("conv2d", "bias", x, b)?;
    }
    if p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0 || p.groups == 0
    {
        return Err(TensorError::InvalidArgument(format!(
            "conv2d: stride {:?}, dilation {:?} and groups {} must all be at least 1",
            p.stride, p.dilation, p.groups
        )));
    }
    if sx.len() != 4 || sw.len() != 4 {
        return Err(err(
            "x must be [n, c, h, w] and weight [o, c/groups, kh, kw]".into(),
        ));
    }
    let (n, c, h, w) = (sx[0], sx[1], sx[2], sx[3]);
    let (o, cg, kh, kw) = (sw[0], sw[1], sw[2], sw[3]);
    if c % p.groups != 0 || o % p.groups != 0 {
        return Err(err(format!(
            "{c} input and {o} output channels must both divide into {} groups",
            p.groups
        )));
    }
    if cg != c / p.groups {
        return Err(err(format!(
            "weight has {cg} input channels per group, x has {} ({c} in {} groups)",
            c / p.groups,
            p.groups
        )));
    }
    if kh == 0 || kw == 0 {
        return Err(err("the kernel is empty".into()));
    }
    if let Some(b) = bias
        && b.shape() != [o]
    {
        return Err(TensorError::Shape(format!(
            "conv2d: weight {sw:?} and bias {:?}: bias must be [{o}]",
            b.shape()
        )));
    }
    let oh = window_count(h, p.padding.0, kh, p.dilation.0, p.stride.0);
    let ow = window_count(w, p.padding.1, kw, p.dilation.1, p.stride.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(err(format!(
            "the dilated kernel does not fit the input padded by {:?}",
            p.padding
        )));
    };
    let out_shape = vec![n, o, oh, ow];
    check_size("conv2d", &out_shape, x.dtype())?;
    Ok(Conv2dShape {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        oh,
        ow,
        out_shape,
    })
}

/// Geometry of a 2-D pooling over NCHW.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// `[n, c, oh, ow]`.
    pub out_shape: Vec<usize>,
}

/// Validates a pool2d: x float `[n, c, h, w]`; kernel and stride ≥ 1;
/// padding at most half the kernel (as PyTorch requires), so no window lies
/// entirely in the padding.
pub fn pool2d(x: &Tensor, p: Pool2d) -> Result<Pool2dShape> {
    let name = format!("pool2d {}", p.kind);
    float_only(&name, x.dtype())?;
    if p.kernel.0 == 0 || p.kernel.1 == 0 || p.stride.0 == 0 || p.stride.1 == 0 {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: kernel {:?} and stride {:?} must be at least 1",
            p.kernel, p.stride
        )));
    }
    if 2 * p.padding.0 > p.kernel.0 || 2 * p.padding.1 > p.kernel.1 {
        return Err(TensorError::InvalidArgument(format!(
            "{name}: padding {:?} exceeds half the kernel {:?}",
            p.padding, p.kernel
        )));
    }
    let s = x.shape();
    if s.len() != 4 {
        return Err(TensorError::Shape(format!(
            "{name}: x {s:?} must be [n, c, h, w]"
        )));
    }
    let oh = window_count(s[2], p.padding.0, p.kernel.0, 1, p.stride.0);
    let ow = window_count(s[3], p.padding.1, p.kernel.1, 1, p.stride.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(TensorError::Shape(format!(
            "{name}: x {s:?}: kernel {:?} does not fit the input padded by {:?}",
            p.kernel, p.padding
        )));
    };
    Ok(Pool2dShape {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
        oh,
        ow,
        out_shape: vec![s[0], s[1], oh, ow],
    })
}

/// Geometry of scaled dot-product attention.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionShape {
    /// Number of (query block, key block) pairs: the product of `batch_shape`.
    pub batch: usize,
    /// Queries per batch entry.
    pub lq: usize,
    /// Keys (and values) per batch entry.
    pub lk: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
    /// The scale applied to q·kᵀ (the given one or 1/√d).
    pub scale: f32,
    /// Broadcast batch dimensions of q, k and v.
    pub batch_shape: Vec<usize>,
    /// `batch_shape` followed by `[lq, dv]`.
    pub out_shape: Vec<usize>,
    /// Stride of q along each batch dimension, counted in whole `[lq, d]`
    /// matrices (0 where broadcast).
    pub q_batch_strides: Vec<usize>,
    /// Same as `q_batch_strides`, for k.
    pub k_batch_strides: Vec<usize>,
    /// Same as `q_batch_strides`, for v.
    pub v_batch_strides: Vec<usize>,
    /// Element strides of the mask over `batch_shape + [lq, lk]` (0 where
    /// broadcast), when there is a mask.
    pub mask_strides: Option<Vec<usize>>,
}

impl AttentionShape {
    /// Indices of the q, k and v matrices, and the mask's element offset, for
    /// batch entry `index`.
    pub fn operands(&self, index: usize) -> (usize, usize, usize, usize) {
        let bs = &self.batch_shape;
        let mask = self
            .mask_strides
            .as_ref()
            .map_or(0, |s| broadcast_offset(index, bs, &s[..bs.len()]));
        (
            broadcast_offset(index, bs, &self.q_batch_strides),
            broadcast_offset(index, bs, &self.k_batch_strides),
            broadcast_offset(index, bs, &self.v_batch_strides),
            mask,
        )
    }

    /// The number of keys query `i` may see under a causal mask: key `j` is
    /// hidden when `j > i + (lk - lq)`.
    pub fn causal_limit(&self, i: usize) -> usize {
        (i as i64 + self.lk as i64 - self.lq as i64 + 1).clamp(0, self.lk as i64) as usize
    }
}

/// Validates attention: q `[..., lq, d]`, k `[..., lk, d]`, v `[..., lk, dv]`
/// with broadcasting batch dimensions, and a mask broadcastable to
/// `[..., lq, lk]`; all float of one dtype.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    params: Attention,
) -> Result<AttentionShape> {
    let (sq, sk, sv) = (q.shape(), k.shape(), v.shape());
    let err = |why: String| {
        TensorError::Shape(format!("attention: q {sq:?}, k {sk:?} and v {sv:?}: {why}"))
    };
    float_only("attention", q.dtype())?;
    same_dtype("attention", "k", q, k)?;
    same_dtype("attention", "v", q, v)?;
    if let Some(m) = mask {
        same_dtype("attention", "mask", q, m)?;
    }
    if sq.len() < 2 || sk.len() < 2 || sv.len() < 2 {
        return Err(err("q, k and v need rank 2 or more".into()));
    }
    let (lq, d) = (sq[sq.len() - 2], sq[sq.len() - 1]);
    let (lk, dk) = (sk[sk.len() - 2], sk[sk.len() - 1]);
    let (lv, dv) = (sv[sv.len() - 2], sv[sv.len() - 1]);
    if d != dk {
        return Err(err(format!("q and k widths {d} and {dk} differ")));
    }
    if lk != lv {
        return Err(err(format!("k and v hold {lk} and {lv} positions")));
    }
    let (bq, bk, bv) = (
        &sq[..sq.len() - 2],
        &sk[..sk.len() - 2],
        &sv[..sv.len() - 2],
    );
    let batch_shape = broadcast(bq, bk)
        .and_then(|s| broadcast(&s, bv))
        .map_err(|_| {
            err(format!(
                "batch dimensions {bq:?}, {bk:?} and {bv:?} do not broadcast"
            ))
        })?;
    let mask_strides = match mask {
        None => None,
        Some(m) => {
            let mut scores = batch_shape.clone();
            scores.extend([lq, lk]);
            let fits = m.shape().len() <= scores.len()
                && broadcast(m.shape(), &scores).is_ok_and(|b| b == scores);
            if !fits {
                return Err(TensorError::Shape(format!(
                    "attention: mask {:?} does not broadcast to the scores {scores:?}",
                    m.shape()
                )));
            }
            Some(broadcast_strides(m.shape(), &scores))
        }
    };
    let scale = params.scale.unwrap_or(1.0 / (d as f32).sqrt());
    let mut out_shape = batch_shape.clone();
    out_shape.extend([lq, dv]);
    check_size("attention", &out_shape, q.dtype())?;
    Ok(AttentionShape {
        batch: numel(&batch_shape),
        lq,
        lk,
        d,
        dv,
        scale,
        q_batch_strides: broadcast_strides(bq, &batch_shape),
        k_batch_strides: broadcast_strides(bk, &batch_shape),
        v_batch_strides: broadcast_strides(bv, &batch_shape),
        mask_strides,
        batch_shape,
        out_shape,
    })
}

/// Validates a top-k along the last axis: numeric dtype, rank ≥ 1,
/// `k` no larger than the axis. Returns the output shape `[..., k]`.
pub fn top_k(x: &Tensor, k: usize) -> Result<Vec<usize>> {
    numeric("top-k", x.dtype())?;
    let Some(&last) = x.shape().last() else {
        return Err(TensorError::Shape("top-k: x [] has no last axis".into()));
    };
    if k > last {
        return Err(TensorError::InvalidArgument(format!(
            "top-k: k {k} exceeds the last axis of {:?}",
            x.shape()
        )));
    }
    let mut out = x.shape().to_vec();
    *out.last_mut().expect("rank checked above") = k;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_count_from_the_end() {
        assert_eq!(normalize_axis(-1, 3), Ok(2));
        assert_eq!(normalize_axis(0, 3), Ok(0));
        assert!(matches!(
            normalize_axis(3, 3),
            Err(TensorError::InvalidArgument(_))
        ));
        assert!(matches!(
            normalize_axis(-4, 3),
            Err(TensorError::InvalidArgument(_))
        ));
        assert!(matches!(
            normalize_axis(0, 0),
            Err(TensorError::InvalidArgument(_))
        ));
    }

    #[test]
    fn reshape_infers_one_dimension() {
        assert_eq!(resolve_reshape(24, &[2, -1, 4]), Ok(vec![2, 3, 4]));
        assert_eq!(resolve_reshape(24, &[24]), Ok(vec![24]));
        assert_eq!(resolve_reshape(0, &[0, 5]), Ok(vec![0, 5]));
        assert_eq!(resolve_reshape(1, &[]), Ok(vec![]));
        for bad in [&[-1, -1][..], &[5, -1], &[7], &[-2, 12], &[0, -1]] {
            assert!(
                matches!(resolve_reshape(24, bad), Err(TensorError::Shape(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 1, 3], &[4, 1]), Ok(vec![2, 4, 3]));
        assert_eq!(broadcast(&[], &[3]), Ok(vec![3]));
        assert_eq!(broadcast(&[0], &[1]), Ok(vec![0]));
        assert!(matches!(
            broadcast(&[2, 3], &[4]),
            Err(TensorError::Shape(_))
        ));
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_offset(5, &[2, 3], &[0, 1]), 2);
    }

    #[test]
    fn matmul_message_names_both_shapes() {
        let a = Tensor::from_f32(&[2, 3], vec![0.0; 6]).unwrap();
        let b = Tensor::from_f32(&[4, 5], vec![0.0; 20]).unwrap();
        let Err(TensorError::Shape(msg)) = matmul(&a, &b, false) else {
            panic!("expected a shape error");
        };
        assert_eq!(
            msg,
            "matmul: a [2, 3] and b [4, 5]: inner dimensions 3 and 4 differ"
        );
    }

    #[test]
    fn causal_limit_aligns_to_the_end() {
        let q = Tensor::from_f32(&[2, 4], vec![0.0; 8]).unwrap();
        let k = Tensor::from_f32(&[5, 4], vec![0.0; 20]).unwrap();
        let p = Attention {
            scale: None,
            causal: true,
        };
        let s = attention(&q, &k, &k, None, p).unwrap();
        assert_eq!((s.causal_limit(0), s.causal_limit(1)), (4, 5));
        let s = attention(&k, &q, &q, None, p).unwrap();
        assert_eq!(
            (s.causal_limit(2), s.causal_limit(3), s.causal_limit(4)),
            (0, 1, 2)
        );
    }
}
