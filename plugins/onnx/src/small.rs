//! Small values computed in the handler itself: constants and the shape
//! arithmetic of exported graphs (`Shape → Gather → Unsqueeze → Concat →
//! Reshape`), which would cost a host round trip per op for a handful of
//! integers.

use edgeserve_onnx_graph::{Constant, DType, Node};
use edgeserve_sdk::{Dtype, Error, Tensor};

/// Dims of a broadcast of `a` and `b` (NumPy rules).
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, Error> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(Error::Shape(format!("{a:?} and {b:?} do not broadcast"))),
        })
        .collect()
}

/// The host element type that holds values of `dtype`. Booleans are 0/1
/// floats, so masks combine with the float ops every backend runs (`And` is
/// a product, `Where` a blend).
pub fn host_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 | DType::Bool => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
    }
}

/// Small-value helpers on [`Constant`].
pub trait Small: Sized {
    /// Element count.
    fn numel(&self) -> usize;
    /// The elements as integers (saturating).
    fn ints(&self) -> Vec<i64>;
    /// A rank-0 or rank-1 integer list.
    fn of_ints(values: &[i64]) -> Self;
    /// A copy on the host, as a tensor.
    fn to_host(&self) -> Result<Tensor, Error>;
    /// Evaluates a small-capable `node` on small `inputs`.
    fn eval(node: &Node, inputs: &[Option<&Constant>]) -> Result<Vec<Constant>, String>;
}

impl Small for Constant {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }

    fn of_ints(values: &[i64]) -> Self {
        Constant {
            dtype: DType::I64,
            shape: vec![values.len()],
            data: values.iter().map(|&v| v as f64).collect(),
        }
    }

    fn to_host(&self) -> Result<Tensor, Error> {
        let shape: Vec<u32> = self.shape.iter().map(|&d| d as u32).collect();
        match host_dtype(self.dtype) {
            Dtype::F32 | Dtype::F16 => {
                let data: Vec<f32> = self.data.iter().map(|&v| v as f32).collect();
                let t = Tensor::from_f32(&shape, &data)?;
                if self.dtype == DType::F16 {
                    t.cast(Dtype::F16)
                } else {
                    Ok(t)
                }
            }
            Dtype::I32 => Tensor::from_i32(
                &shape,
                &self.data.iter().map(|&v| v as i32).collect::<Vec<_>>(),
            ),
            Dtype::I64 => Tensor::from_i64(&shape, &self.ints()),
            Dtype::U8 => Tensor::from_u8(
                &shape,
                &self.data.iter().map(|&v| v as u8).collect::<Vec<_>>(),
            ),
        }
    }

    fn eval(node: &Node, inputs: &[Option<&Constant>]) -> Result<Vec<Constant>, String> {
        let arg = |i: usize| {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or(format!("input {i} is missing"))
        };
        let x = arg(0)?;
        let out = match node.op.as_str() {
            "Identity" => x.clone(),
            "Cast" => {
                let dtype = DType::from_onnx(node.int("to", 1) as i32).ok_or("bad Cast target")?;
                Constant {
                    dtype,
                    shape: x.shape.clone(),
                    data: x.data.iter().map(|&v| convert(v, dtype)).collect(),
                }
            }
            "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Equal" | "Greater" | "GreaterOrEqual"
            | "Less" | "LessOrEqual" | "And" | "Or" => {
                let compares = !matches!(node.op.as_str(), "Add" | "Sub" | "Mul" | "Div" | "Mod");
                let dtype = if compares { DType::Bool } else { x.dtype };
                let integer = !matches!(x.dtype, DType::F32 | DType::F16);
                let f = |a: f64, b: f64| match node.op.as_str() {
                    "Add" => a + b,
                    "Sub" => a - b,
                    "Mul" => a * b,
                    "Div" if integer => (a / b).trunc(),
                    "Div" => a / b,
                    // fmod=0 (integers): the sign of the divisor, like Python.
                    "Mod" if node.int("fmod", 0) == 0 => a - b * (a / b).floor(),
                    "Mod" => a % b,
                    "Greater" => f64::from(u8::from(a > b)),
                    "GreaterOrEqual" => f64::from(u8::from(a >= b)),
                    "Less" => f64::from(u8::from(a < b)),
                    "LessOrEqual" => f64::from(u8::from(a <= b)),
                    "And" => f64::from(u8::from(a != 0.0 && b != 0.0)),
                    "Or" => f64::from(u8::from(a != 0.0 || b != 0.0)),
                    _ => f64::from(u8::from(a == b)),
                };
                zip(&[x, arg(1)?], dtype, |v| f(v[0], v[1]))?
            }
            "Not" => zip(&[x], DType::Bool, |v| f64::from(u8::from(v[0] == 0.0)))?,
            "Ceil" => zip(&[x], x.dtype, |v| v[0].ceil())?,
            "Floor" => zip(&[x], x.dtype, |v| v[0].floor())?,
            // ONNX rounds halves to even.
            "Round" => zip(&[x], x.dtype, |v| v[0].round_ties_even())?,
            "Range" => {
                let scalar = |i: usize| -> Result<f64, String> {
                    arg(i)?
                        .data
                        .first()
                        .copied()
                        .ok_or(format!("input {i} is empty"))
                };
                let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
                if delta == 0.0 {
                    return Err("Range with a delta of 0".into());
                }
                let n = ((limit - start) / delta).ceil().max(0.0) as usize;
                Constant {
                    dtype: x.dtype,
                    shape: vec![n],
                    data: (0..n)
                        .map(|i| convert(start + i as f64 * delta, x.dtype))
                        .collect(),
                }
            }
            "Where" => zip(&[x, arg(1)?, arg(2)?], arg(1)?.dtype, |v| {
                if v[0] != 0.0 { v[1] } else { v[2] }
            })?,
            "ConstantOfShape" => {
                let value = match node.attrs.get("value") {
                    Some(edgeserve_onnx_graph::Attr::Tensor(c)) => c.clone(),
                    _ => Constant {
                        dtype: DType::F32,
                        shape: vec![1],
                        data: vec![0.0],
                    },
                };
                let shape: Vec<usize> = x.ints().iter().map(|&d| d.max(0) as usize).collect();
                let n = shape.iter().product();
                Constant {
                    dtype: value.dtype,
                    shape,
                    data: vec![value.data.first().copied().unwrap_or(0.0); n],
                }
            }
            "Reshape" => {
                let shape = reshape_target(&x.shape, &arg(1)?.ints()).map_err(|e| e.to_string())?;
                Constant { shape, ..x.clone() }
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = axes_of(node, inputs.get(1).copied().flatten());
                let shape = if node.op == "Squeeze" {
                    squeeze(&x.shape, axes.as_deref())
                } else {
                    unsqueeze(&x.shape, &axes.unwrap_or_default())
                };
                Constant {
                    shape: shape.map_err(|e| e.to_string())?,
                    ..x.clone()
                }
            }
            "Concat" => {
                let parts: Vec<&Constant> = inputs.iter().flatten().copied().collect();
                let axis =
                    norm_axis(node.int("axis", 0), x.shape.len()).map_err(|e| e.to_string())?;
                let outer: usize = x.shape[..axis].iter().product();
                let mut shape = x.shape.clone();
                shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
                let mut data = Vec::with_capacity(shape.iter().product());
                for o in 0..outer {
                    for p in &parts {
                        let chunk = p.numel() / outer.max(1);
                        data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
                    }
                }
                Constant {
                    dtype: x.dtype,
                    shape,
                    data,
                }
            }
            "Gather" => {
                let idx = arg(1)?;
                let axis =
                    norm_axis(node.int("axis", 0), x.shape.len()).map_err(|e| e.to_string())?;
                gather(x, axis, idx)?
            }
            "ai.onnx.ml.ArrayFeatureExtractor" => {
                let idx = arg(1)?;
                let last = x.shape.len().saturating_sub(1);
                let mut out = gather(
                    x,
                    last,
                    &Constant {
                        shape: vec![idx.numel()],
                        ..idx.clone()
                    },
                )?;
                if x.shape.len() == 1 {
                    out.shape.insert(0, 1);
                }
                out
            }
            "Slice" => {
                let starts = arg(1)?.ints();
                let ends = arg(2)?.ints();
                let axes = inputs
                    .get(3)
                    .copied()
                    .flatten()
                    .map(Small::ints)
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = inputs.get(4).copied().flatten().map(Small::ints);
                let mut cur = x.clone();
                for (k, &axis) in axes.iter().enumerate() {
                    let axis = norm_axis(axis, cur.shape.len()).map_err(|e| e.to_string())?;
                    let step = steps.as_ref().map_or(1, |s| s[k]);
                    let picks = slice_picks(cur.shape[axis], starts[k], ends[k], step)?;
                    cur = gather(&cur, axis, &Constant::of_ints(&picks))?;
                }
                cur
            }
            "Transpose" => {
                let rank = x.shape.len();
                let perm: Vec<usize> = match node.ints("perm") {
                    Some(p) => p.iter().map(|&a| a as usize).collect(),
                    None => (0..rank).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..rank).collect::<Vec<_>>() {
                    return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
                }
                let shape: Vec<usize> = perm.iter().map(|&a| x.shape[a]).collect();
                let strides = strides(&x.shape);
                let data = (0..x.numel())
                    .map(|mut flat| {
                        let mut from = 0;
                        for (i, &a) in perm.iter().enumerate().rev() {
                            from += flat % shape[i] * strides[a];
                            flat /= shape[i];
                        }
                        x.data[from]
                    })
                    .collect();
                Constant {
                    dtype: x.dtype,
                    shape,
                    data,
                }
            }
            other => return Err(format!("{other} cannot run on small values")),
        };
        Ok(vec![out])
    }
}

/// `v` as held by a value of `dtype`.
fn convert(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 | DType::F16 => f64::from(v as f32),
        DType::Bool => f64::from(u8::from(v != 0.0)),
        DType::U8 => f64::from(v as u8),
        DType::I32 => f64::from(v as i32),
        DType::I64 => (v as i64) as f64,
    }
}

/// Elementwise `f` over broadcast operands.
fn zip(xs: &[&Constant], dtype: DType, f: impl Fn(&[f64]) -> f64) -> Result<Constant, String> {
    let mut shape: Vec<usize> = Vec::new();
    for x in xs {
        shape = broadcast(&shape, &x.shape).map_err(|e| e.to_string())?;
    }
    let n: usize = shape.iter().product();
    let mut args = vec![0.0; xs.len()];
    let mut data = Vec::with_capacity(n);
    for flat in 0..n {
        for (a, x) in args.iter_mut().zip(xs) {
            *a = x.data[broadcast_index(flat, &shape, &x.shape)];
        }
        data.push(convert(f(&args), dtype));
    }
    Ok(Constant { dtype, shape, data })
}

/// The element of a value of dims `from` that element `flat` of a broadcast
/// to `to` reads.
fn broadcast_index(mut flat: usize, to: &[usize], from: &[usize]) -> usize {
    let (mut index, mut stride) = (0, 1);
    for i in (0..to.len()).rev() {
        let coord = flat % to[i];
        flat /= to[i];
        if let Some(j) = (i + from.len()).checked_sub(to.len()) {
            if from[j] != 1 {
                index += coord * stride;
            }
            stride *= from[j];
        }
    }
    index
}

/// Elements of `x` at `indices` along `axis`.
fn gather(x: &Constant, axis: usize, indices: &Constant) -> Result<Constant, String> {
    let dim = x.shape[axis];
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * indices.numel() * inner);
    for o in 0..outer {
        for &i in &indices.ints() {
            let i = if i < 0 { i + dim as i64 } else { i };
            if !(0..dim as i64).contains(&i) {
                return Err(format!("index {i} is out of range for a dim of {dim}"));
            }
            let start = (o * dim + i as usize) * inner;
            data.extend_from_slice(&x.data[start..start + inner]);
        }
    }
    let mut shape = x.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&x.shape[axis + 1..]);
    Ok(Constant {
        dtype: x.dtype,
        shape,
        data,
    })
}

/// Row-major element strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    strides
}

/// The positions an ONNX `Slice` of `start..end` by `step` picks from an
/// axis of `dim` (a negative step walks backwards).
pub fn slice_picks(dim: usize, start: i64, end: i64, step: i64) -> Result<Vec<i64>, String> {
    if step == 0 {
        return Err("Slice with a step of 0".into());
    }
    if step > 0 {
        let (s, e) = slice_bounds(dim, start, end);
        return Ok((s as i64..e as i64).step_by(step as usize).collect());
    }
    let dim = dim as i64;
    let clamp = |v: i64, lo: i64| {
        let v = if v < 0 { v.saturating_add(dim) } else { v };
        v.clamp(lo, dim - 1)
    };
    let (mut i, end) = (clamp(start, 0), clamp(end, -1));
    let mut picks = Vec::new();
    while i > end {
        picks.push(i);
        i += step;
    }
    Ok(picks)
}

/// `axis` counted from the front (ONNX allows negative axes).
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, Error> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if (0..rank as i64).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::InvalidArgument(format!(
            "axis {axis} is out of range for rank {rank}"
        )))
    }
}

/// ONNX `Slice` bounds for one axis, clamped to `0..=dim`.
pub fn slice_bounds(dim: usize, start: i64, end: i64) -> (usize, usize) {
    let clamp = |v: i64| {
        let v = if v < 0 {
            v.saturating_add(dim as i64)
        } else {
            v
        };
        v.clamp(0, dim as i64) as usize
    };
    let (s, e) = (clamp(start), clamp(end));
    (s, e.max(s))
}

/// The dims an ONNX `Reshape` to `target` gives `dims` (`0` copies the
/// input dim, `-1` is inferred).
pub fn reshape_target(dims: &[usize], target: &[i64]) -> Result<Vec<usize>, Error> {
    let total: usize = dims.iter().product();
    let mut out: Vec<Option<usize>> = target
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            0 => dims.get(i).copied(),
            -1 => None,
            t => Some(t.max(0) as usize),
        })
        .collect();
    let known: usize = out.iter().flatten().product();
    if let Some(slot) = out.iter_mut().find(|d| d.is_none()) {
        *slot = Some(total.checked_div(known).unwrap_or(0));
    }
    let shape: Vec<usize> = out.into_iter().map(|d| d.unwrap_or(1)).collect();
    if shape.iter().product::<usize>() != total {
        return Err(Error::Shape(format!(
            "cannot reshape {dims:?} to {target:?}"
        )));
    }
    Ok(shape)
}

/// Axes of a `Squeeze`/`Unsqueeze`/reduction: the `axes` attribute (older
/// opsets) or the constant second input (newer ones).
pub fn axes_of(node: &Node, input: Option<&Constant>) -> Option<Vec<i64>> {
    node.ints("axes")
        .map(<[i64]>::to_vec)
        .or_else(|| input.map(Small::ints))
}

/// `dims` without the size-1 `axes` (all size-1 dims when `None`).
pub fn squeeze(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, Error> {
    let drop: Vec<usize> = match axes {
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
        Some(axes) => axes
            .iter()
            .map(|&a| norm_axis(a, dims.len()))
            .collect::<Result<_, _>>()?,
    };
    Ok(dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

/// `dims` with size-1 dims inserted at `axes` (of the output).
pub fn unsqueeze(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, Error> {
    let rank = dims.len() + axes.len();
    let mut insert: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_, _>>()?;
    insert.sort_unstable();
    let mut rest = dims.iter();
    Ok((0..rank)
        .map(|i| {
            if insert.contains(&i) {
                1
            } else {
                *rest.next().unwrap_or(&1)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use edgeserve_onnx_graph::{Attr, Constant, DType, Node};

    use super::{Small, slice_picks};

    #[test]
    fn slices_by_any_step_pick_what_numpy_picks() {
        // numpy: arange(6)[5:-7:-2], [-1:-7:-1], [10:1:-3], [1:6:2].
        assert_eq!(slice_picks(6, 5, -7, -2).unwrap(), [5, 3, 1]);
        assert_eq!(
            slice_picks(6, -1, i64::MIN, -1).unwrap(),
            [5, 4, 3, 2, 1, 0]
        );
        assert_eq!(slice_picks(6, 10, 1, -3).unwrap(), [5, 2]);
        assert_eq!(slice_picks(6, 1, 6, 2).unwrap(), [1, 3, 5]);
        assert!(slice_picks(6, 0, 6, 0).is_err());
    }

    #[test]
    fn a_small_transpose_moves_every_element() {
        let x = Constant {
            dtype: DType::I64,
            shape: vec![2, 3, 4],
            data: (0..24).map(f64::from).collect(),
        };
        let node = Node {
            name: "t".into(),
            op: "Transpose".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            attrs: [("perm".to_string(), Attr::Ints(vec![2, 0, 1]))].into(),
        };
        let y = Constant::eval(&node, &[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.shape, [4, 2, 3]);
        // y[k][i][j] = x[i][j][k] = 12i + 4j + k.
        for (flat, &v) in y.data.iter().enumerate() {
            let (k, i, j) = (flat / 6, flat / 3 % 2, flat % 3);
            assert_eq!(v, (12 * i + 4 * j + k) as f64, "at {flat}");
        }
    }
}
