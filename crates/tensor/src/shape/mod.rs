//! Shape and dtype rules of every operation, shared by all backends.
//!
//! Each operation has one rule here that checks dtypes, shapes and
//! arguments and resolves the output geometry into a plan. Only the
//! [`Ops`](crate::Ops) front door calls them; backends receive the plan and
//! never re-derive it, so the CPU and GPU backends accept exactly the same
//! inputs and refuse the rest with the same [`TensorError`] variant and
//! message. Messages name the operation and the shapes involved because they
//! travel unchanged to the plugin author.

mod conv;
mod elementwise;
mod layout;
mod linalg;
mod reduce;
mod select;

pub use conv::{Conv2dPlan, Pool2dPlan, conv2d, pool2d};
pub use elementwise::{affine, binary, cast, full, unary};
pub use layout::{
    GatherPlan, concat, embedding, expand, gather, id_out_of_range, index_out_of_range, reshape,
    slice, transpose,
};
pub use linalg::{
    AttentionPlan, BatchBroadcast, LstmPlan, MatmulPlan, VarlenAttentionPlan, attention,
    attention_varlen, linear, lstm, matmul,
};
pub use reduce::{ReducePlan, layer_norm, reduce, softmax, top_k};
pub use select::{ClipBounds, clip, compare, select};

use crate::{DType, Result, Tensor, TensorError};

/// Number of elements of a tensor with dimensions `shape`.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of `shape`, or `None` when the count overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Whether `shape` at `dtype` is addressable: its non-zero dimensions
/// multiply to at most `isize::MAX` bytes. For a tensor with elements that
/// is its size; for an empty one it still bounds the sub-shapes kernels
/// split it into (`[0, 2^40, 2^40]` is empty, but its last two dimensions
/// overflow a count).
pub fn addressable(shape: &[usize], dtype: DType) -> bool {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .is_some_and(|bytes| bytes <= isize::MAX as usize)
}

/// Refuses results whose byte size cannot even be addressed: they would
/// overflow size arithmetic and could never be allocated.
pub fn check_size(op: &str, shape: &[usize], dtype: DType) -> Result<()> {
    if addressable(shape, dtype) {
        return Ok(());
    }
    Err(TensorError::OutOfMemory(format!(
        "{op}: a {dtype} result of shape {shape:?} does not fit in memory"
    )))
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
    if !addressable(&out, DType::U8) {
        return Err(err("its dimensions multiply past what memory can hold"));
    }
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

/// Refuses two tensors of different dtypes; `which` starts the message,
/// naming the op and each tensor's dtype.
fn dtypes_match(x: DType, y: DType, which: impl FnOnce() -> String) -> Result<()> {
    if x == y {
        return Ok(());
    }
    Err(TensorError::DType(format!(
        "{}; dtypes must match",
        which()
    )))
}

/// The two operands `a` and `b` of `op` share a dtype.
fn operands_match(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    dtypes_match(a.dtype(), b.dtype(), || {
        format!("{op}: a is {} and b is {}", a.dtype(), b.dtype())
    })
}

/// `op`'s input `what` has the dtype of its main input `x`.
fn same_dtype(op: &str, what: &str, x: &Tensor, other: &Tensor) -> Result<()> {
    dtypes_match(x.dtype(), other.dtype(), || {
        format!(
            "{op}: {what} is {} but the input is {}",
            other.dtype(),
            x.dtype()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attention;
    use crate::AttentionInputs;

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

    /// A product folds into one tall `[batch·m, k] × [k, n]` when one b
    /// serves consecutive a matrices; batch dimensions of extent 1 (an
    /// imported graph's `[1, seq, hidden]`) never stop it.
    #[test]
    fn products_over_one_shared_weight_fold_into_one() {
        let t = |shape: &[usize]| Tensor::from_f32(shape, vec![0.0; numel(shape)]).unwrap();
        let folds =
            |a: &[usize], b: &[usize]| matmul(&t(a), &t(b), false).unwrap().folds_into_one();
        assert!(folds(&[13, 8], &[8, 4]));
        assert!(folds(&[1, 13, 8], &[8, 4]));
        assert!(folds(&[3, 13, 8], &[8, 4]));
        assert!(folds(&[1, 3, 13, 8], &[1, 8, 4]));
        assert!(folds(&[3, 1, 13, 8], &[8, 4]));
        // One b per batch, or a broadcast over b's batches: not one product.
        assert!(!folds(&[3, 13, 8], &[3, 8, 4]));
        assert!(!folds(&[1, 13, 8], &[3, 8, 4]));
    }

    #[test]
    fn causal_limit_aligns_to_the_end() {
        let q = Tensor::from_f32(&[2, 4], vec![0.0; 8]).unwrap();
        let k = Tensor::from_f32(&[5, 4], vec![0.0; 20]).unwrap();
        let p = Attention {
            scale: None,
            causal: true,
        };
        let qkv = |q, k| AttentionInputs {
            q,
            k,
            v: k,
            mask: None,
        };
        let s = attention(qkv(&q, &k), p).unwrap();
        assert_eq!((s.causal_limit(0), s.causal_limit(1)), (4, 5));
        let s = attention(qkv(&k, &q), p).unwrap();
        assert_eq!(
            (s.causal_limit(2), s.causal_limit(3), s.causal_limit(4)),
            (0, 1, 2)
        );
    }
}
