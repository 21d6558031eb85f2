//! Nodes that run on the host's tensor ops, one ONNX op to one or a few
//! host calls.

use edgeserve_onnx_graph::{Constant, DType, Node};
use edgeserve_sdk::{BinaryOp, CompareOp, Dtype, Error, PoolKind, ReduceOp, Tensor, UnaryOp};

use crate::small::{
    Small, axes_of, host_dtype, norm_axis, reshape_target, slice_bounds, slice_picks, squeeze,
    unsqueeze,
};
use crate::{conv, index, pad, recurrent, resize};

/// A value a node reads: a host tensor or a small value.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// A host tensor (request input, weight or an earlier node's result).
    Host(&'a Tensor),
    /// A small value (constant or shape arithmetic).
    Small(&'a Constant),
}

/// A value a node produces.
pub enum Value {
    /// A host tensor.
    Host(Tensor),
    /// A small value.
    Small(Constant),
}

impl Value {
    /// This value as an argument.
    pub fn arg(&self) -> Arg<'_> {
        match self {
            Value::Host(t) => Arg::Host(t),
            Value::Small(c) => Arg::Small(c),
        }
    }
}

/// Node inputs by position, with the lookups every op needs.
pub struct Args<'a> {
    /// The node being run.
    pub node: &'a Node,
    /// Its inputs; `None` for an omitted optional one.
    pub values: Vec<Option<Arg<'a>>>,
    /// Whether input 0 holds booleans (a 0/1 mask on the host).
    pub bool_input: bool,
}

/// A host tensor: the input itself, or a small value uploaded for this call.
pub(crate) enum HostArg<'a> {
    Borrowed(&'a Tensor),
    Owned(Tensor),
}

impl std::ops::Deref for HostArg<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        match self {
            HostArg::Borrowed(t) => t,
            HostArg::Owned(t) => t,
        }
    }
}

impl<'a> Args<'a> {
    pub(crate) fn get(&self, i: usize) -> Result<Arg<'a>, Error> {
        self.values
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| Error::InvalidArgument(format!("input {i} is missing")))
    }

    pub(crate) fn host(&self, i: usize) -> Result<HostArg<'a>, Error> {
        Ok(match self.get(i)? {
            Arg::Host(t) => HostArg::Borrowed(t),
            Arg::Small(c) => HostArg::Owned(c.to_host()?),
        })
    }

    pub(crate) fn opt_host(&self, i: usize) -> Result<Option<HostArg<'a>>, Error> {
        match self.values.get(i).copied().flatten() {
            None => Ok(None),
            Some(_) => self.host(i).map(Some),
        }
    }

    pub(crate) fn small(&self, i: usize) -> Result<Option<&'a Constant>, Error> {
        match self.values.get(i).copied().flatten() {
            None => Ok(None),
            Some(Arg::Small(c)) => Ok(Some(c)),
            Some(Arg::Host(_)) => Err(Error::Unsupported(format!(
                "input {i} must be a constant or shape arithmetic, not computed from request data"
            ))),
        }
    }

    pub(crate) fn ints(&self, i: usize) -> Result<Option<Vec<i64>>, Error> {
        Ok(self.small(i)?.map(Small::ints))
    }
}

pub(crate) fn dims(t: &Tensor) -> Vec<usize> {
    t.shape().iter().map(|&d| d as usize).collect()
}

/// A new handle on the same elements (ONNX `Identity`).
pub(crate) fn alias(t: &Tensor) -> Result<Tensor, Error> {
    reshape(t, &dims(t))
}

pub(crate) fn reshape(t: &Tensor, dims: &[usize]) -> Result<Tensor, Error> {
    t.reshape(&dims.iter().map(|&d| d as i32).collect::<Vec<_>>())
}

fn pair(v: Option<&[i64]>, default: u32) -> (u32, u32) {
    match v {
        Some([a, b, ..]) => (*a as u32, *b as u32),
        _ => (default, default),
    }
}

/// Runs `args.node` on the host; `opset` is the graph's default-domain opset.
pub fn run(args: &Args<'_>, opset: i64) -> Result<Vec<Value>, Error> {
    let node = args.node;
    let one = |t: Tensor| Ok(vec![Value::Host(t)]);
    let x = || args.host(0);
    let binary = |op: BinaryOp| -> Result<Tensor, Error> {
        let mut acc = args.host(0)?.binary(op, &*args.host(1)?)?;
        for i in 2..args.values.len() {
            acc = acc.binary(op, &*args.host(i)?)?;
        }
        Ok(acc)
    };
    let unary = |op: UnaryOp| x()?.unary(op);
    match node.op.as_str() {
        "Identity" | "Dropout" => one(match args.get(0)? {
            Arg::Host(t) => alias(t)?,
            Arg::Small(c) => return Ok(vec![Value::Small(c.clone())]),
        }),
        "Add" | "Sum" => one(binary(BinaryOp::Add)?),
        // Booleans are 0/1 floats on the host.
        "And" => one(binary(BinaryOp::Mul)?),
        "Or" => one(binary(BinaryOp::Maximum)?),
        "Not" => one(x()?.affine(-1.0, 1.0)?),
        // NaN is the one value not equal to itself (both backends compare
        // NaN as unordered).
        "IsNaN" => {
            let x = x()?;
            one(as_bool(&x.compare(CompareOp::NotEqual, &x)?)?)
        }
        // The host's `where` takes the 0/1 mask as it is (nonzero selects).
        "Where" => one(x()?.select(&*args.host(1)?, &*args.host(2)?)?),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
            let op = match node.op.as_str() {
                "Equal" => CompareOp::Equal,
                "Less" => CompareOp::Less,
                "LessOrEqual" => CompareOp::LessEqual,
                "Greater" => CompareOp::Greater,
                _ => CompareOp::GreaterEqual,
            };
            one(as_bool(&x()?.compare(op, &*args.host(1)?)?)?)
        }
        "Sub" => one(binary(BinaryOp::Sub)?),
        "Mul" => one(binary(BinaryOp::Mul)?),
        "Div" => one(binary(BinaryOp::Div)?),
        "Pow" => one(binary(BinaryOp::Pow)?),
        "Max" => one(binary(BinaryOp::Maximum)?),
        "Min" => one(binary(BinaryOp::Minimum)?),
        "Relu" => one(unary(UnaryOp::Relu)?),
        "Sigmoid" => one(unary(UnaryOp::Sigmoid)?),
        "Tanh" => one(unary(UnaryOp::Tanh)?),
        "Exp" => one(unary(UnaryOp::Exp)?),
        "Log" => one(unary(UnaryOp::Log)?),
        "Sqrt" => one(unary(UnaryOp::Sqrt)?),
        "Neg" => one(unary(UnaryOp::Neg)?),
        "Abs" => one(unary(UnaryOp::Abs)?),
        "Erf" => one(unary(UnaryOp::Erf)?),
        "Gelu" => one(unary(if node.string("approximate") == Some("tanh") {
            UnaryOp::GeluTanh
        } else {
            UnaryOp::Gelu
        })?),
        "Reciprocal" => {
            let x = x()?;
            one(Tensor::full(x.dtype(), &[], 1.0)?.div(&x)?)
        }
        "LeakyRelu" | "PRelu" => {
            // relu(x) + slope · min(x, 0): one slope, or PRelu's tensor.
            let x = x()?;
            let pos = x.relu()?;
            let neg = x.sub(&pos)?;
            let scaled = if node.op == "PRelu" {
                neg.mul(&*args.host(1)?)?
            } else {
                neg.affine(node.float("alpha", 0.01), 0.0)?
            };
            one(pos.add(&scaled)?)
        }
        "Elu" | "Selu" => {
            // relu(x) + α(e^min(x, 0) − 1), Selu scaled by γ.
            let x = x()?;
            let selu = node.op == "Selu";
            let alpha = node.float("alpha", if selu { 1.673_263_2 } else { 1.0 });
            let pos = x.relu()?;
            let y = pos.add(&x.sub(&pos)?.exp()?.affine(alpha, -alpha)?)?;
            one(if selu {
                y.affine(node.float("gamma", 1.050_701), 0.0)?
            } else {
                y
            })
        }
        "HardSigmoid" => one(hard_sigmoid(
            &*x()?,
            node.float("alpha", 0.2),
            node.float("beta", 0.5),
        )?),
        "HardSwish" => {
            let x = x()?;
            one(x.mul(&hard_sigmoid(&x, 1.0 / 6.0, 0.5)?)?)
        }
        "Softplus" => one(softplus(&*x()?)?),
        "Mish" => {
            let x = x()?;
            one(x.mul(&softplus(&x)?.tanh()?)?)
        }
        "Softsign" => {
            let x = x()?;
            one(x.div(&x.abs()?.affine(1.0, 1.0)?)?)
        }
        "Clip" => {
            let x = x()?;
            if opset < 11 {
                let (lo, hi) = (node.float("min", f32::MIN), node.float("max", f32::MAX));
                return one(x.clip(Some(lo.into()), Some(hi.into()))?);
            }
            // Constant bounds clip in one pass; bounds computed from request
            // data are broadcast maximum and minimum.
            let bound = |i: usize| match args.values.get(i).copied().flatten() {
                Some(Arg::Small(c)) => c.data.first().copied(),
                _ => None,
            };
            let mut y = x.clip(bound(1), bound(2))?;
            for (i, op) in [(1, BinaryOp::Maximum), (2, BinaryOp::Minimum)] {
                if let Some(Arg::Host(b)) = args.values.get(i).copied().flatten() {
                    y = y.binary(op, b)?;
                }
            }
            one(y)
        }
        "MatMul" => one(matmul(&*args.host(0)?, &*args.host(1)?)?),
        edgeserve_onnx_graph::LINEAR => {
            let (x, w, b) = (x()?, args.host(1)?, args.host(2)?);
            let activation = match node.string("activation") {
                None => None,
                Some("Relu") => Some(UnaryOp::Relu),
                Some("Gelu") => Some(UnaryOp::Gelu),
                Some("GeluTanh") => Some(UnaryOp::GeluTanh),
                Some("Tanh") => Some(UnaryOp::Tanh),
                Some("Sigmoid") => Some(UnaryOp::Sigmoid),
                Some(other) => {
                    return Err(Error::Unsupported(format!("linear activation {other:?}")));
                }
            };
            let transposed = node.int("transB", 0) != 0;
            if x.rank() >= 2 {
                return one(if transposed {
                    x.linear_t(&w, Some(&b), activation)?
                } else {
                    x.linear(&w, Some(&b), activation)?
                });
            }
            let w = if transposed {
                w.transpose(&[1, 0])?
            } else {
                alias(&w)?
            };
            let y = matmul(&x, &w)?.add(&b)?;
            one(match activation {
                Some(op) => y.unary(op)?,
                None => y,
            })
        }
        edgeserve_onnx_graph::ATTENTION => {
            let (q, k, v) = (x()?, args.host(1)?, args.host(2)?);
            let perm: Vec<u32> = node
                .ints("k_perm")
                .unwrap_or_default()
                .iter()
                .map(|&a| a as u32)
                .collect();
            let k = if perm.iter().enumerate().all(|(i, &a)| i as u32 == a) {
                alias(&k)?
            } else {
                k.transpose(&perm)?
            };
            let mask = args.opt_host(3)?;
            let scale = node.float("scale", 1.0);
            one(q.attention(&k, &v, mask.as_deref(), Some(scale), false)?)
        }
        "Gemm" => {
            let (a, b) = (args.host(0)?, args.host(1)?);
            let trans_b = node.int("transB", 0) != 0;
            let (alpha, beta) = (node.float("alpha", 1.0), node.float("beta", 1.0));
            let c = args.opt_host(2)?;
            let n = b.shape()[if trans_b { 0 } else { 1 }];
            let bias = match &c {
                Some(c)
                    if alpha == 1.0
                        && beta == 1.0
                        && c.numel() == u64::from(n)
                        && c.shape().last() == Some(&n) =>
                {
                    Some(c.reshape(&[n as i32])?)
                }
                _ => None,
            };
            if bias.is_some() || c.is_none() && alpha == 1.0 {
                let y = if trans_b {
                    a.linear_t(&b, bias.as_ref(), None)?
                } else {
                    a.linear(&b, bias.as_ref(), None)?
                };
                return one(y);
            }
            let mut y = if trans_b {
                a.matmul_t(&b)?
            } else {
                a.matmul(&b)?
            };
            if alpha != 1.0 {
                y = y.affine(alpha, 0.0)?;
            }
            if let Some(c) = c {
                y = if beta == 1.0 {
                    y.add(&c)?
                } else {
                    y.add(&c.affine(beta, 0.0)?)?
                };
            }
            one(y)
        }
        "Softmax" | "LogSoftmax" => {
            let x = x()?;
            let rank = x.rank();
            let axis = norm_axis(node.int("axis", if opset < 13 { 1 } else { -1 }), rank)?;
            let y = if opset >= 13 || axis + 1 == rank {
                x.softmax(axis as i32)?
            } else {
                // Before opset 13 the input is flattened to 2-D at `axis`.
                let d = dims(&x);
                let rows: usize = d[..axis].iter().product();
                reshape(
                    &reshape(&x, &[rows, d[axis..].iter().product()])?.softmax(-1)?,
                    &d,
                )?
            };
            one(if node.op == "LogSoftmax" { y.log()? } else { y })
        }
        "LayerNormalization" => {
            let x = x()?;
            if norm_axis(node.int("axis", -1), x.rank())? + 1 != x.rank() {
                return Err(Error::Unsupported(
                    "LayerNormalization over more than the last axis".into(),
                ));
            }
            let (g, b) = (args.opt_host(1)?, args.opt_host(2)?);
            one(x.layer_norm(g.as_deref(), b.as_deref(), node.float("epsilon", 1e-5))?)
        }
        "Reshape" => {
            let x = x()?;
            let target = args
                .ints(1)?
                .ok_or_else(|| Error::InvalidArgument("Reshape needs a shape".into()))?;
            one(reshape(&x, &reshape_target(&dims(&x), &target)?)?)
        }
        "Flatten" => {
            let x = x()?;
            let d = dims(&x);
            let axis = if node.int("axis", 1) == d.len() as i64 {
                d.len()
            } else {
                norm_axis(node.int("axis", 1), d.len())?
            };
            one(reshape(
                &x,
                &[d[..axis].iter().product(), d[axis..].iter().product()],
            )?)
        }
        "Squeeze" | "Unsqueeze" => {
            let x = x()?;
            let axes = axes_of(node, args.small(1)?);
            let d = if node.op == "Squeeze" {
                squeeze(&dims(&x), axes.as_deref())?
            } else {
                unsqueeze(&dims(&x), &axes.unwrap_or_default())?
            };
            one(reshape(&x, &d)?)
        }
        "Transpose" => {
            let x = x()?;
            let perm: Vec<u32> = match node.ints("perm") {
                Some(p) => p.iter().map(|&a| a as u32).collect(),
                None => (0..x.rank() as u32).rev().collect(),
            };
            one(x.transpose(&perm)?)
        }
        "Concat" => {
            let parts: Vec<HostArg<'_>> = (0..args.values.len())
                .map(|i| args.host(i))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&Tensor> = parts.iter().map(|p| &**p).collect();
            one(Tensor::concat(&refs, node.int("axis", 0) as i32)?)
        }
        "Slice" => {
            let x = x()?;
            let starts = args.ints(1)?.unwrap_or_default();
            let ends = args.ints(2)?.unwrap_or_default();
            let axes = args
                .ints(3)?
                .unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = args.ints(4)?;
            let mut y = alias(&x)?;
            for (k, &axis) in axes.iter().enumerate() {
                let axis = norm_axis(axis, y.rank())?;
                let dim = y.shape()[axis] as usize;
                y = match steps.as_ref().map_or(1, |s| s[k]) {
                    1 => {
                        let (s, e) = slice_bounds(dim, starts[k], ends[k]);
                        y.slice(axis as i32, s as u32, e as u32)?
                    }
                    // Strided and reversed slices pick their rows.
                    step => {
                        let picks = slice_picks(dim, starts[k], ends[k], step)
                            .map_err(Error::InvalidArgument)?;
                        y.gather(
                            &Tensor::from_i64(&[picks.len() as u32], &picks)?,
                            axis as i32,
                        )?
                    }
                };
            }
            one(y)
        }
        "Gather" => {
            let indices = match args.get(1)? {
                Arg::Host(t) => HostArg::Borrowed(t),
                // Small indices are integers whatever their ONNX type.
                Arg::Small(c) => HostArg::Owned(Tensor::from_i64(
                    &c.shape.iter().map(|&d| d as u32).collect::<Vec<_>>(),
                    &c.ints(),
                )?),
            };
            one(x()?.gather(&indices, node.int("axis", 0) as i32)?)
        }
        "Expand" => {
            let target: Vec<u32> = args
                .ints(1)?
                .unwrap_or_default()
                .iter()
                .map(|&d| d.max(0) as u32)
                .collect();
            one(x()?.expand(&target)?)
        }
        "Cast" => {
            let to = DType::from_onnx(node.int("to", 1) as i32)
                .ok_or_else(|| Error::Dtype("Cast target".into()))?;
            let x = x()?;
            one(if to == DType::Bool {
                to_mask(&x, args.bool_input)?
            } else {
                x.cast(host_dtype(to))?
            })
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" => {
            let x = x()?;
            let op = match node.op.as_str() {
                "ReduceMean" => ReduceOp::Mean,
                "ReduceSum" | "ReduceL2" => ReduceOp::Sum,
                "ReduceMax" => ReduceOp::Max,
                _ => ReduceOp::Min,
            };
            let axes =
                axes_of(node, args.small(1)?).unwrap_or_else(|| (0..x.rank() as i64).collect());
            let keep = node.int("keepdims", 1) != 0;
            one(if node.op == "ReduceL2" {
                reduce(&x.mul(&x)?, op, &axes, keep)?.sqrt()?
            } else {
                reduce(&x, op, &axes, keep)?
            })
        }
        "ArgMax" | "ArgMin" => {
            let op = if node.op == "ArgMax" {
                ReduceOp::Argmax
            } else {
                ReduceOp::Argmin
            };
            one(x()?.reduce(op, node.int("axis", 0) as i32, node.int("keepdims", 1) != 0)?)
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = x()?;
            let op = if node.op == "GlobalMaxPool" {
                ReduceOp::Max
            } else {
                ReduceOp::Mean
            };
            // Every spatial axis: 1-D ([n, c, l]) and 2-D inputs alike.
            if x.rank() < 3 {
                return Err(Error::Shape(format!(
                    "{} of a rank-{} value (no spatial axes)",
                    node.op,
                    x.rank()
                )));
            }
            let spatial: Vec<i64> = (2..x.rank() as i64).collect();
            one(reduce(&x, op, &spatial, true)?)
        }
        "Conv" => one(conv::conv(args)?),
        "ConvTranspose" => one(conv::conv_transpose(args)?),
        "Pad" => one(pad::run(args, opset)?),
        "Resize" => one(resize::run(args, opset)?),
        "Split" => Ok(index::split(args)?.into_iter().map(Value::Host).collect()),
        "Trilu" => one(index::trilu(args)?),
        "CumSum" => one(index::cum_sum(args)?),
        "GatherElements" => one(index::gather_elements(args)?),
        "LSTM" | "GRU" | "RNN" => Ok(recurrent::run(args)?.into_iter().map(Value::Host).collect()),
        "MaxPool" | "AveragePool" => {
            let kind = if node.op == "MaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let kernel = pair(node.ints("kernel_shape"), 1);
            one(x()?.pool2d(
                kind,
                kernel,
                pair(node.ints("strides"), 1),
                pair(node.ints("pads"), 0),
            )?)
        }
        "TopK" => {
            let k = args.ints(1)?.and_then(|k| k.first().copied()).unwrap_or(1);
            let (values, indices) = x()?.top_k(k as u32)?;
            Ok(vec![Value::Host(values), Value::Host(indices)])
        }
        "ai.onnx.ml.ArrayFeatureExtractor" => {
            // Class labels picked by predicted index: the labels become a
            // one-column table and the indices pick its rows.
            let table = args
                .small(0)?
                .ok_or_else(|| Error::InvalidArgument("labels missing".into()))?;
            let Arg::Host(indices) = args.get(1)? else {
                unreachable!("small inputs run in the handler")
            };
            let labels = Tensor::from_f32(
                &[table.numel() as u32, 1],
                &table.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            )?;
            let picked = labels
                .embedding(&indices.reshape(&[1, -1])?)?
                .reshape(&[1, -1])?;
            one(picked.cast(host_dtype(table.dtype))?)
        }
        other => Err(Error::Unsupported(format!("op {other}"))),
    }
}

/// `clip(alpha · x + beta, 0, 1)`.
fn hard_sigmoid(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor, Error> {
    x.affine(alpha, beta)?.clip(Some(0.0), Some(1.0))
}

/// `ln(1 + eˣ)` as `relu(x) + ln(1 + e^−|x|)`, which neither overflows for
/// large x nor loses small values to rounding.
fn softplus(x: &Tensor) -> Result<Tensor, Error> {
    x.relu()?
        .add(&x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)
}

/// ONNX `MatMul`: NumPy semantics, including 1-D operands.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, Error> {
    let (ra, rb) = (a.rank(), b.rank());
    let a2 = if ra == 1 {
        a.reshape(&[1, -1])?
    } else {
        alias(a)?
    };
    let b2 = if rb == 1 {
        b.reshape(&[-1, 1])?
    } else {
        alias(b)?
    };
    let mut y = a2.matmul(&b2)?;
    let mut d = dims(&y);
    if rb == 1 {
        d.pop();
    }
    if ra == 1 {
        d.remove(d.len() - if rb == 1 { 1 } else { 2 });
    }
    if ra == 1 || rb == 1 {
        y = reshape(&y, &d)?;
    }
    Ok(y)
}

/// A reduction over several `axes` (all of them when none are named, as
/// ONNX reads an empty list), the last first so the others keep their
/// positions.
fn reduce(x: &Tensor, op: ReduceOp, axes: &[i64], keep: bool) -> Result<Tensor, Error> {
    let rank = x.rank();
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<_, _>>()?
    };
    axes.sort_unstable_by(|a, b| b.cmp(a));
    axes.dedup();
    let Some((&first, rest)) = axes.split_first() else {
        return alias(x);
    };
    let mut y = x.reduce(op, first as i32, keep)?;
    for &axis in rest {
        y = y.reduce(op, axis as i32, keep)?;
    }
    Ok(y)
}

/// ONNX `Cast` to `BOOL` on the host: `x ≠ 0` (NaN included) as a 0/1
/// float; booleans, already 0/1, stay as they are.
fn to_mask(x: &Tensor, is_bool: bool) -> Result<Tensor, Error> {
    if is_bool {
        return alias(x);
    }
    as_bool(&x.ne(&Tensor::full(x.dtype(), &[], 0.0)?)?)
}

/// A u8 mask of the host's `compare` as the handler holds booleans: 0/1
/// floats, which arithmetic (`And` as a product, `Not` as `1 − x`) takes.
pub(crate) fn as_bool(mask: &Tensor) -> Result<Tensor, Error> {
    let (yes, no) = (
        Tensor::full(Dtype::F32, &[], 1.0)?,
        Tensor::full(Dtype::F32, &[], 0.0)?,
    );
    mask.select(&yes, &no)
}
