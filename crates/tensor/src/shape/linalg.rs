//! Products: matmul, the fused linear, attention, and the LSTM layer.

use super::{
    broadcast, broadcast_offset, broadcast_strides, check_size, contiguous_strides, dtypes_match,
    float_only, numel, operands_match, same_dtype,
};
use crate::{
    Attention, AttentionInputs, DType, Result, Tensor, TensorError, UnaryOp, WeightedInputs,
};

/// Geometry of a (batched, broadcast) matrix product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    /// Whether b is read as `[..., n, k]`.
    pub transpose_b: bool,
    /// Applied to each element after the bias (`linear`'s epilogue).
    pub activation: Option<UnaryOp>,
    /// Number of matrix products (the product of the batch dimensions).
    pub batch: usize,
    /// How a and b broadcast over the batch dimensions.
    pub batches: BatchBroadcast<2>,
    /// Rows of a and of the output.
    pub m: usize,
    /// Columns of a, rows of b (before any transpose).
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// The batch dimensions followed by `[m, n]`.
    pub out_shape: Vec<usize>,
}

impl MatmulPlan {
    /// Indices of the a and b matrices that output matrix `index` multiplies.
    pub fn operands(&self, index: usize) -> (usize, usize) {
        let [a, b] = self.batches.operands(index);
        (a, b)
    }

    /// Whether one b matrix serves every batch while the a matrices are
    /// consecutive, so the whole product is one `[batch·m, k] × [k, n]`.
    /// A batch dimension of extent 1 is only ever at index 0, so its stride
    /// (0 where it broadcasts) says nothing: `[1, m, k] × [k, n]`, the
    /// shape a sequence of one batch has in an imported graph, folds.
    pub fn folds_into_one(&self) -> bool {
        let [a, b] = &self.batches.strides;
        let shape = &self.batches.shape;
        let contiguous = contiguous_strides(shape);
        (0..shape.len()).all(|d| shape[d] == 1 || (b[d] == 0 && a[d] == contiguous[d]))
    }
}

/// How the operands of a batched product broadcast over the batch
/// dimensions (all but the last two) they share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchBroadcast<const N: usize> {
    /// The broadcast batch dimensions of the output.
    pub shape: Vec<usize>,
    /// Stride of each operand along each batch dimension, counted in whole
    /// matrices (0 where that operand is broadcast).
    pub strides: [Vec<usize>; N],
}

impl<const N: usize> BatchBroadcast<N> {
    /// Broadcasts the operands' batch dimensions; `None` when they do not
    /// broadcast together.
    fn of(dims: [&[usize]; N]) -> Option<Self> {
        let shape = dims
            .iter()
            .try_fold(Vec::new(), |shape, d| broadcast(&shape, d).ok())?;
        let strides = dims.map(|d| broadcast_strides(d, &shape));
        Some(Self { shape, strides })
    }

    /// Number of batch entries: the product of `shape`.
    pub fn count(&self) -> usize {
        numel(&self.shape)
    }

    /// Index of each operand's matrix for batch entry `index`.
    pub fn operands(&self, index: usize) -> [usize; N] {
        self.strides
            .each_ref()
            .map(|strides| broadcast_offset(index, &self.shape, strides))
    }

    /// The batch dimensions followed by a matrix's `[rows, cols]`.
    fn with_matrix(&self, rows: usize, cols: usize) -> Vec<usize> {
        let mut shape = self.shape.clone();
        shape.extend([rows, cols]);
        shape
    }
}

/// Validates a fused `linear`: a matmul as in [`matmul()`] and a bias of
/// shape `[n]` and the matmul's dtype. Every activation takes the float
/// dtypes matmul admits, so the activation needs no check.
pub fn linear(
    inputs: WeightedInputs<'_>,
    transpose_b: bool,
    activation: Option<UnaryOp>,
) -> Result<MatmulPlan> {
    let mut s = matmul(inputs.x, inputs.weight, transpose_b)?;
    s.activation = activation;
    if let Some(bias) = inputs.bias {
        dtypes_match(bias.dtype(), inputs.x.dtype(), || {
            format!(
                "linear: bias is {} and the operands {}",
                bias.dtype(),
                inputs.x.dtype()
            )
        })?;
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
pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<MatmulPlan> {
    let (sa, sb) = (a.shape(), b.shape());
    let err = |why: String| TensorError::Shape(format!("matmul: a {sa:?} and b {sb:?}: {why}"));
    operands_match("matmul", a, b)?;
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
    let batches = BatchBroadcast::of([ba, bb]).ok_or_else(|| {
        err(format!(
            "batch dimensions {ba:?} and {bb:?} do not broadcast"
        ))
    })?;
    let out_shape = batches.with_matrix(m, n);
    check_size("matmul", &out_shape, a.dtype())?;
    Ok(MatmulPlan {
        transpose_b,
        activation: None,
        batch: batches.count(),
        batches,
        m,
        k,
        n,
        out_shape,
    })
}

/// Geometry of scaled dot-product attention.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPlan {
    /// Number of (query block, key block) pairs: the product of the batch
    /// dimensions.
    pub batch: usize,
    /// How q, k and v broadcast over the batch dimensions.
    pub batches: BatchBroadcast<3>,
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
    /// Hide keys after each query, aligned to the end of the key axis.
    pub causal: bool,
    /// The batch dimensions followed by `[lq, dv]`.
    pub out_shape: Vec<usize>,
    /// Element strides of the mask over the batch dimensions and `[lq, lk]`
    /// (0 where broadcast), when there is a mask.
    pub mask_strides: Option<Vec<usize>>,
}

impl AttentionPlan {
    /// Indices of the q, k and v matrices, and the mask's element offset, for
    /// batch entry `index`.
    pub fn operands(&self, index: usize) -> (usize, usize, usize, usize) {
        let bs = &self.batches.shape;
        let mask = self
            .mask_strides
            .as_ref()
            .map_or(0, |s| broadcast_offset(index, bs, &s[..bs.len()]));
        let [q, k, v] = self.batches.operands(index);
        (q, k, v, mask)
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
pub fn attention(inputs: AttentionInputs<'_>, params: Attention) -> Result<AttentionPlan> {
    let AttentionInputs { q, k, v, mask } = inputs;
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
    let batches = BatchBroadcast::of([bq, bk, bv]).ok_or_else(|| {
        err(format!(
            "batch dimensions {bq:?}, {bk:?} and {bv:?} do not broadcast"
        ))
    })?;
    let mask_strides = match mask {
        None => None,
        Some(m) => {
            let scores = batches.with_matrix(lq, lk);
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
    let out_shape = batches.with_matrix(lq, dv);
    check_size("attention", &out_shape, q.dtype())?;
    Ok(AttentionPlan {
        batch: batches.count(),
        batches,
        lq,
        lk,
        d,
        dv,
        scale,
        causal: params.causal,
        out_shape,
        mask_strides,
    })
}

/// Geometry of attention over sequences packed without padding (the
/// contract's `attention-varlen`).
#[derive(Clone, Debug, PartialEq)]
pub struct VarlenAttentionPlan {
    /// Tokens of every sequence together.
    pub total: usize,
    /// Heads per token.
    pub heads: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
    /// The scale applied to q·kᵀ (the given one or 1/√d).
    pub scale: f32,
    /// Hide the later tokens of its sequence from each query.
    pub causal: bool,
    /// `n + 1` token offsets: sequence `i` is tokens `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<usize>,
    /// `[total, heads, dv]`.
    pub out_shape: Vec<usize>,
}

impl VarlenAttentionPlan {
    /// The bounds `(start, end)` of the sequence that holds `token`.
    pub fn sequence_of(&self, token: usize) -> (usize, usize) {
        // The last offset at or before `token` starts its sequence (empty
        // sequences share that offset with the next one).
        let at = self.offsets.partition_point(|&o| o <= token) - 1;
        (self.offsets[at], self.offsets[at + 1])
    }

    /// The number of keys query `i` of a sequence of `len` tokens sees.
    pub fn visible_keys(&self, i: usize, len: usize) -> usize {
        if self.causal { i + 1 } else { len }
    }

    /// Scores one head of every query holds: the sum of the squared
    /// sequence lengths.
    pub fn scores_per_head(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).saturating_mul(w[1] - w[0]))
            .fold(0, usize::saturating_add)
    }
}

/// Validates attention over packed sequences: q `[total, heads, d]`, k
/// `[total, heads, d]`, v `[total, heads, dv]`, all float of one dtype, and
/// `offsets`: 0 first, `total` last, never decreasing.
pub fn attention_varlen(
    [q, k, v]: [&Tensor; 3],
    offsets: &[usize],
    params: Attention,
) -> Result<VarlenAttentionPlan> {
    const OP: &str = "attention-varlen";
    let (sq, sk, sv) = (q.shape(), k.shape(), v.shape());
    let err =
        |why: String| TensorError::Shape(format!("{OP}: q {sq:?}, k {sk:?} and v {sv:?}: {why}"));
    float_only(OP, q.dtype())?;
    same_dtype(OP, "k", q, k)?;
    same_dtype(OP, "v", q, v)?;
    if sq.len() != 3 || sk.len() != 3 || sv.len() != 3 {
        return Err(err("q, k and v must be [tokens, heads, width]".into()));
    }
    if sq[..2] != sk[..2] || sq[..2] != sv[..2] {
        return Err(err("q, k and v must hold the same tokens and heads".into()));
    }
    if sq[2] != sk[2] {
        return Err(err(format!(
            "q and k widths {} and {} differ",
            sq[2], sk[2]
        )));
    }
    let total = sq[0];
    let bad =
        |why: String| TensorError::InvalidArgument(format!("{OP}: offsets {offsets:?}: {why}"));
    if offsets.first() != Some(&0) {
        return Err(bad("the first offset must be 0".into()));
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(bad("offsets must not decrease".into()));
    }
    if offsets.last() != Some(&total) {
        return Err(bad(format!(
            "the last offset must be the token count {total}"
        )));
    }
    let out_shape = vec![total, sq[1], sv[2]];
    check_size(OP, &out_shape, q.dtype())?;
    Ok(VarlenAttentionPlan {
        total,
        heads: sq[1],
        d: sq[2],
        dv: sv[2],
        scale: params.scale.unwrap_or(1.0 / (sq[2] as f32).sqrt()),
        causal: params.causal,
        offsets: offsets.to_vec(),
        out_shape,
    })
}

/// Sizes of an LSTM layer over a sequence (the contract's `lstm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmPlan {
    /// Steps of the sequence.
    pub steps: usize,
    /// Sequences side by side.
    pub batch: usize,
    /// Width of h and c; the gates are four times as wide.
    pub hidden: usize,
    /// Whether the last step runs first.
    pub reverse: bool,
}

impl LstmPlan {
    /// Every step's h, `[steps, batch, hidden]`.
    pub fn y_shape(&self) -> [usize; 3] {
        [self.steps, self.batch, self.hidden]
    }

    /// The last h and c, `[batch, hidden]`.
    pub fn state_shape(&self) -> [usize; 2] {
        [self.batch, self.hidden]
    }

    /// The step run `s`-th: from the last one back when `reverse`.
    pub fn step(&self, s: usize) -> usize {
        if self.reverse { self.steps - 1 - s } else { s }
    }
}

/// Validates an LSTM layer: x-gates `[steps, batch, 4·hidden]`, r
/// `[4·hidden, hidden]`, h0 and c0 `[batch, hidden]`, all f32.
pub fn lstm([x_gates, r, h0, c0]: [&Tensor; 4], reverse: bool) -> Result<LstmPlan> {
    const OP: &str = "lstm";
    if x_gates.dtype() != DType::F32 {
        return Err(TensorError::DType(format!(
            "{OP}: needs f32, got {}",
            x_gates.dtype()
        )));
    }
    same_dtype(OP, "r", x_gates, r)?;
    same_dtype(OP, "h0", x_gates, h0)?;
    same_dtype(OP, "c0", x_gates, c0)?;
    let (sx, sr, sh, sc) = (x_gates.shape(), r.shape(), h0.shape(), c0.shape());
    let err = |why: String| {
        TensorError::Shape(format!(
            "{OP}: x-gates {sx:?}, r {sr:?}, h0 {sh:?} and c0 {sc:?}: {why}"
        ))
    };
    let [steps, batch, gates] = sx[..] else {
        return Err(err("x-gates must be [steps, batch, 4·hidden]".into()));
    };
    if !gates.is_multiple_of(4) {
        return Err(err(format!(
            "x-gates' last axis {gates} must hold four gates of one width"
        )));
    }
    let hidden = gates / 4;
    if sr != [gates, hidden] {
        return Err(err(format!("r must be [{gates}, {hidden}]")));
    }
    if sh != [batch, hidden] || sc != [batch, hidden] {
        return Err(err(format!("h0 and c0 must be [{batch}, {hidden}]")));
    }
    let plan = LstmPlan {
        steps,
        batch,
        hidden,
        reverse,
    };
    check_size(OP, &plan.y_shape(), DType::F32)?;
    Ok(plan)
}
