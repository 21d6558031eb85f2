//! Shape arithmetic resolved at import.
//!
//! Exports with dynamic axes compute reshape targets at run time:
//! `Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)),
//! 12, 32)`. Tracking each value's dims symbolically (a number, or a graph
//! input's named dim such as `batch`) shows what those targets are, and the
//! graph is rewritten as an optimizer would:
//!
//! * a reshape target known in terms of its input's own dims becomes a
//!   constant (`[0, 0, 12, 32]`: ONNX's 0 copies the input's dim, -1 takes
//!   the one dim left);
//! * a reshape whose output has its input's shape is dropped;
//! * a dim read off an intermediate value (`Gather(Shape(hidden), 0)`) is
//!   read off a graph input that names the same dim instead, or is a
//!   constant when it is a fixed number;
//! * nodes nothing reads any more are removed.
//!
//! Named dims are the graph inputs' `dim_param`s: inputs that name a dim
//! alike are taken to agree on it, which the handler checks per request.
//! Everything else is inferred only where it is certain; a value whose dims
//! are not known blocks nothing but its own rewrites.

use std::collections::{BTreeSet, HashMap, HashSet};

use edgeserve_onnx_graph::{Attr, DType, Node, ValueSpec};

use super::tensor::Raw;

/// One dim as far as the import can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A graph input's named dim.
    Named(String),
}

/// Dims, each `None` where unknown.
type Dims = Vec<Option<Dim>>;

/// What is known about one value.
#[derive(Clone, Debug, Default)]
struct Facts {
    /// Its dims, when its rank is known.
    shape: Option<Dims>,
    /// Its elements, for the small integer tensors of shape arithmetic.
    value: Option<Dims>,
}

/// Integer constants up to this many elements are tracked as values.
const MAX_TRACKED: usize = 64;

/// Elementwise ops of one input: the output has the input's shape.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "Cast",
    "Ceil",
    "Clip",
    "CumSum",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsNaN",
    "LayerNormalization",
    "Log",
    "Mish",
    "Neg",
    "Not",
    "PRelu",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tanh",
    "Trilu",
];

/// Ops whose output is the NumPy broadcast of their inputs.
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Mul",
    "Or",
    "Pow",
    "Sub",
    "Where",
];

/// What `simplify` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Simplified {
    /// Reshape targets made constant.
    pub targets: usize,
    /// Reshapes dropped as no-ops.
    pub reshapes: usize,
    /// Dims read off a graph input or made constant instead.
    pub dims: usize,
}

/// Rewrites the shape arithmetic of `nodes` (see the module docs).
pub fn simplify(
    nodes: &mut Vec<Node>,
    tensors: &mut HashMap<String, Raw>,
    inputs: &[ValueSpec],
    outputs: &[ValueSpec],
) -> Simplified {
    let mut done = Simplified::default();
    let facts = infer(nodes, tensors, inputs);
    let shape_of = |v: &str| facts.get(v).and_then(|f| f.shape.clone());
    let is_output = |v: &str| outputs.iter().any(|o| o.name == v);

    for node in nodes.iter_mut() {
        if node.op != "Reshape" || node.int("allowzero", 0) != 0 {
            continue;
        }
        let (Some(x), Some(target)) = (node.input(0), node.input(1)) else {
            continue;
        };
        if tensors.contains_key(target) {
            continue;
        }
        let (Some(shape), Some(Some(value))) = (shape_of(x), facts.get(target).map(|f| &f.value))
        else {
            continue;
        };
        if let Some(constant) = constant_target(&shape, value) {
            let name = format!("{}.target", node.name);
            tensors.insert(
                name.clone(),
                Raw::from_ints(vec![constant.len()], &constant),
            );
            node.inputs[1] = name;
            done.targets += 1;
        }
    }

    // No-op reshapes: readers take the input itself.
    let mut renamed: HashMap<String, String> = HashMap::new();
    nodes.retain(|node| {
        let (Some(x), Some(out)) = (node.input(0), node.outputs.first()) else {
            return true;
        };
        let same = node.op == "Reshape"
            && !is_output(out)
            && shape_of(x)
                .is_some_and(|s| s.iter().all(Option::is_some) && shape_of(out) == Some(s));
        if same {
            renamed.insert(out.clone(), x.to_string());
            done.reshapes += 1;
        }
        !same
    });
    for node in nodes.iter_mut() {
        for input in &mut node.inputs {
            while let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
    }
    remove_unread(nodes, outputs);

    done.dims = redirect_dims(nodes, tensors, inputs, &facts);
    remove_unread(nodes, outputs);
    done
}

/// A constant reshape target equal to `value` for an input of `shape`:
/// fixed sizes kept, a named dim in its own place copied (0), and at most
/// one other named dim left to -1.
fn constant_target(shape: &Dims, value: &Dims) -> Option<Vec<i64>> {
    let mut target = Vec::with_capacity(value.len());
    let mut inferred = value.iter().any(|d| d == &Some(Dim::Fixed(-1)));
    for (j, d) in value.iter().enumerate() {
        target.push(match d.as_ref()? {
            Dim::Fixed(c) => *c,
            named if shape.get(j) == Some(&Some(named.clone())) => 0,
            Dim::Named(_) if !inferred => {
                inferred = true;
                -1
            }
            Dim::Named(_) => return None,
        });
    }
    Some(target)
}

/// Points each `Gather(Shape(x), i)` of a named dim of an intermediate `x`
/// at a graph input naming that dim (preferring one its readers already
/// depend on, so a mask computed from one input stays so), and makes it a
/// constant when the dim is fixed. Returns how many it changed.
fn redirect_dims(
    nodes: &mut Vec<Node>,
    tensors: &mut HashMap<String, Raw>,
    inputs: &[ValueSpec],
    facts: &HashMap<String, Facts>,
) -> usize {
    let writer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut changes: Vec<(String, Change, Vec<usize>)> = Vec::new();
    for node in nodes.iter() {
        if node.op != "Gather" || node.int("axis", 0) != 0 {
            continue;
        }
        let (Some(shape), Some(index)) = (node.input(0), node.input(1)) else {
            continue;
        };
        let Some(&s) = writer.get(shape) else {
            continue;
        };
        let of = &nodes[s];
        let whole = of.attrs.keys().all(|k| k != "start" && k != "end");
        let Some(x) = of.input(0).filter(|_| of.op == "Shape" && whole) else {
            continue;
        };
        if inputs.iter().any(|g| g.name == x) {
            continue;
        }
        let Some(Some(dims)) = facts.get(x).map(|f| &f.shape) else {
            continue;
        };
        // One index, as a scalar or in a list of one: the result keeps its rank.
        let (index, rank) = match tensors.get(index) {
            Some(t)
                if t.numel() == 1
                    && t.dims.len() <= 1
                    && matches!(t.dtype, DType::I64 | DType::I32) =>
            {
                (t.values()[0] as i64, t.dims.clone())
            }
            _ => continue,
        };
        match axis(index, dims.len()).and_then(|a| dims.get(a)) {
            Some(Some(Dim::Fixed(c))) => {
                changes.push((node.outputs[0].clone(), Change::Fixed(*c), rank))
            }
            Some(Some(Dim::Named(name))) => {
                let candidates: Vec<(&str, usize)> = inputs
                    .iter()
                    .filter_map(|g| {
                        let p = g.symbols.iter().position(|s| s.as_deref() == Some(name))?;
                        Some((g.name.as_str(), p))
                    })
                    .collect();
                let near = nearest_source(nodes, &node.outputs[0], inputs, |g| {
                    candidates.iter().any(|(c, _)| *c == g)
                });
                let pick = candidates
                    .iter()
                    .find(|(g, _)| Some(*g) == near.as_deref())
                    .or(candidates.first());
                if let Some(&(g, p)) = pick {
                    changes.push((
                        node.outputs[0].clone(),
                        Change::Input(g.to_string(), p),
                        rank,
                    ));
                }
            }
            _ => {}
        }
    }
    let count = changes.len();
    for (out, change, rank) in changes {
        let at = |nodes: &[Node]| {
            nodes
                .iter()
                .position(|n| n.outputs.first() == Some(&out))
                .expect("a node changed once")
        };
        match change {
            Change::Fixed(c) => {
                nodes.remove(at(nodes));
                tensors.insert(out, Raw::from_ints(rank, &[c]));
            }
            Change::Input(input, p) => {
                let shape = format!("{input}.shape");
                if !nodes.iter().any(|n| n.outputs.first() == Some(&shape)) {
                    nodes.insert(
                        0,
                        Node {
                            name: shape.clone(),
                            op: "Shape".into(),
                            inputs: vec![input.clone()],
                            outputs: vec![shape.clone()],
                            attrs: Default::default(),
                        },
                    );
                }
                let index = format!("{out}.index");
                tensors.insert(index.clone(), Raw::from_ints(rank, &[p as i64]));
                let i = at(nodes);
                nodes[i].inputs = vec![shape, index];
            }
        }
    }
    count
}

/// How [`redirect_dims`] replaces one dim.
enum Change {
    /// By this constant.
    Fixed(i64),
    /// By this graph input's dim at this position.
    Input(String, usize),
}

/// The first graph input accepted by `wanted` whose data a reader of
/// `value` (transitively, in topological order) reads other than through
/// `value`: the input the computation that uses `value` is about.
fn nearest_source(
    nodes: &[Node],
    value: &str,
    inputs: &[ValueSpec],
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    // Graph inputs whose data each value depends on (a `Shape` reads none),
    // in one pass over the topological order.
    let mut sources: HashMap<&str, BTreeSet<&str>> = inputs
        .iter()
        .map(|g| (g.name.as_str(), BTreeSet::from([g.name.as_str()])))
        .collect();
    for node in nodes.iter().filter(|n| n.op != "Shape") {
        let from: BTreeSet<&str> = node
            .inputs
            .iter()
            .filter_map(|i| sources.get(i.as_str()))
            .flatten()
            .copied()
            .collect();
        for o in &node.outputs {
            sources.insert(o, from.clone());
        }
    }
    let mut downstream: HashSet<&str> = HashSet::from([value]);
    for node in nodes {
        if !node.inputs.iter().any(|i| downstream.contains(i.as_str())) {
            continue;
        }
        let found = node
            .inputs
            .iter()
            .filter(|i| !downstream.contains(i.as_str()))
            .filter_map(|i| sources.get(i.as_str()))
            .flatten()
            .find(|g| wanted(g));
        if let Some(g) = found {
            return Some(g.to_string());
        }
        downstream.extend(node.outputs.iter().map(String::as_str));
    }
    None
}

/// Removes nodes none of whose outputs is read or is a graph output.
fn remove_unread(nodes: &mut Vec<Node>, outputs: &[ValueSpec]) {
    let mut read: HashSet<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; nodes.len()];
    for (i, node) in nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| read.contains(o)) {
            keep[i] = true;
            read.extend(node.inputs.iter().cloned());
        }
    }
    let mut keep = keep.into_iter();
    nodes.retain(|_| keep.next().unwrap_or(true));
}

/// What can be told of every value, in one pass over the topological order.
fn infer(
    nodes: &[Node],
    tensors: &HashMap<String, Raw>,
    inputs: &[ValueSpec],
) -> HashMap<String, Facts> {
    let mut facts: HashMap<String, Facts> = HashMap::new();
    for g in inputs {
        let shape = g
            .shape
            .iter()
            .enumerate()
            .map(|(j, &d)| match g.symbols.get(j).cloned().flatten() {
                Some(name) => Some(Dim::Named(name)),
                None => (d >= 0).then_some(Dim::Fixed(d)),
            })
            .collect();
        facts.insert(
            g.name.clone(),
            Facts {
                shape: Some(shape),
                value: None,
            },
        );
    }
    for (name, t) in tensors {
        let integer = matches!(t.dtype, DType::I64 | DType::I32);
        let value = (integer && t.dims.len() <= 1 && t.numel() <= MAX_TRACKED).then(|| {
            t.values()
                .iter()
                .map(|&v| Some(Dim::Fixed(v as i64)))
                .collect()
        });
        let shape = t.dims.iter().map(|&d| Some(Dim::Fixed(d as i64))).collect();
        facts.insert(
            name.clone(),
            Facts {
                shape: Some(shape),
                value,
            },
        );
    }
    for node in nodes {
        let out = node_facts(node, |v: &str| facts.get(v).cloned().unwrap_or_default());
        if let (Some(first), Some(out)) = (node.outputs.first(), out) {
            facts.insert(first.clone(), out);
        }
    }
    facts
}

/// The facts of `node`'s first output.
fn node_facts(node: &Node, get: impl Fn(&str) -> Facts) -> Option<Facts> {
    let arg = |i: usize| node.input(i).map(&get).unwrap_or_default();
    let x = arg(0);
    let int_list = |i: usize| -> Option<Vec<i64>> {
        arg(i)
            .value?
            .into_iter()
            .map(|d| match d {
                Some(Dim::Fixed(c)) => Some(c),
                _ => None,
            })
            .collect()
    };
    let axes = || {
        node.ints("axes")
            .map(<[i64]>::to_vec)
            .or_else(|| int_list(1))
    };
    // The axes attribute or input, each counted from the end when negative.
    let axes_of = |rank: usize| -> Option<Vec<usize>> {
        axes()?.into_iter().map(|a| axis(a, rank)).collect()
    };
    let shape_only = |shape: Option<Dims>| Some(Facts { shape, value: None });
    let op = node.op.as_str();
    match op {
        "Shape" => {
            let dims = x.shape?;
            let rank = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let (start, end) = (clamp(node.int("start", 0)), clamp(node.int("end", rank)));
            let value = dims.get(start..end.max(start))?.to_vec();
            Some(Facts {
                shape: Some(vec![Some(Dim::Fixed(value.len() as i64))]),
                value: Some(value),
            })
        }
        "Gather" => {
            let indices = arg(1);
            let dims = x.shape?;
            let at = axis(node.int("axis", 0), dims.len())?;
            let index_shape = indices.shape?;
            let shape = [&dims[..at], &index_shape, &dims[at + 1..]].concat();
            let value = (at == 0 && dims.len() == 1)
                .then(|| {
                    let picks = int_list(1)?;
                    let n = x.value?;
                    picks
                        .iter()
                        .map(|&p| n.get(axis(p, n.len())?).cloned())
                        .collect::<Option<Dims>>()
                })
                .flatten();
            Some(Facts {
                shape: Some(shape),
                value,
            })
        }
        "Unsqueeze" => {
            let mut dims = x.shape?;
            let rank = dims.len() + axes()?.len();
            let mut axes = axes_of(rank)?;
            axes.sort_unstable();
            for a in axes {
                if a > dims.len() {
                    return None;
                }
                dims.insert(a, Some(Dim::Fixed(1)));
            }
            Some(Facts {
                shape: Some(dims),
                value: x.value,
            })
        }
        "Squeeze" => {
            let dims = x.shape?;
            let axes = axes_of(dims.len())?;
            let shape = dims
                .into_iter()
                .enumerate()
                .filter(|(j, _)| !axes.contains(j))
                .map(|(_, d)| d)
                .collect();
            Some(Facts {
                shape: Some(shape),
                value: x.value,
            })
        }
        "Concat" => {
            let all: Vec<Facts> = node.inputs.iter().map(|i| get(i)).collect();
            let shapes: Vec<Dims> = all.iter().map(|f| f.shape.clone()).collect::<Option<_>>()?;
            let rank = shapes.first()?.len();
            let at = axis(node.int("axis", 0), rank)?;
            let mut shape = shapes[0].clone();
            let sizes: Option<i64> = shapes
                .iter()
                .map(|s| match s.get(at) {
                    Some(Some(Dim::Fixed(c))) => Some(*c),
                    _ => None,
                })
                .sum();
            *shape.get_mut(at)? = sizes.map(Dim::Fixed);
            let value = (rank == 1)
                .then(|| {
                    all.into_iter()
                        .map(|f| f.value)
                        .collect::<Option<Vec<Dims>>>()
                        .map(|v| v.concat())
                })
                .flatten();
            Some(Facts {
                shape: Some(shape),
                value,
            })
        }
        "Cast" if matches!(node.int("to", 0), 6 | 7) => Some(x),
        op if SAME_SHAPE.contains(&op) => shape_only(x.shape),
        op if BROADCAST.contains(&op) => {
            let all: Vec<Facts> = node.inputs.iter().map(|i| get(i)).collect();
            let shapes: Option<Vec<Dims>> = all.iter().map(|f| f.shape.clone()).collect();
            let values: Option<Vec<Dims>> = all.into_iter().map(|f| f.value).collect();
            Some(Facts {
                shape: Some(
                    shapes?
                        .iter()
                        .try_fold(vec![], |a, b| Some(broadcast(&a, b)))?,
                ),
                value: values.and_then(|v| elementwise(op, &v)),
            })
        }
        "Reshape" => {
            let target = arg(1).value?;
            let copies = |d: &Option<Dim>| matches!(d, Some(Dim::Fixed(0 | -1)));
            let shape = match x.shape {
                Some(dims) => reshaped(&dims, &target, node.int("allowzero", 0) != 0),
                None if !target.iter().any(copies) => Some(target),
                None => None,
            };
            // Shape arithmetic keeps its elements through a flattening.
            let flat = shape.as_ref().is_some_and(|s| s.len() <= 1);
            Some(Facts {
                shape,
                value: x.value.filter(|_| flat),
            })
        }
        "Range" => match (int_list(0)?.as_slice(), int_list(2)?.as_slice()) {
            ([0], [1]) => shape_only(Some(vec![arg(1).value?.first()?.clone()])),
            _ => None,
        },
        "Transpose" => {
            let dims = x.shape?;
            let perm: Vec<usize> = match node.ints("perm") {
                Some(p) => p.iter().map(|&a| a as usize).collect(),
                None => (0..dims.len()).rev().collect(),
            };
            shape_only(perm.iter().map(|&a| dims.get(a).cloned()).collect())
        }
        "MatMul" => {
            let (a, b) = (x.shape?, arg(1).shape?);
            if a.len() < 2 || b.len() < 2 {
                return None;
            }
            let mut shape = broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
            shape.extend([a[a.len() - 2].clone(), b[b.len() - 1].clone()]);
            shape_only(Some(shape))
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" => {
            let dims = x.shape?;
            let axes = axes_of(dims.len())?;
            let keep = node.int("keepdims", 1) != 0;
            let shape = dims
                .into_iter()
                .enumerate()
                .filter_map(|(j, d)| match (axes.contains(&j), keep) {
                    (false, _) => Some(d),
                    (true, true) => Some(Some(Dim::Fixed(1))),
                    (true, false) => None,
                })
                .collect();
            shape_only(Some(shape))
        }
        "Slice" => {
            let mut dims = x.shape?;
            let (starts, ends) = (int_list(1)?, arg(2).value?);
            let axes = match node.input(3) {
                Some(_) => int_list(3)?,
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match node.input(4) {
                Some(_) => int_list(4)?,
                None => vec![1; starts.len()],
            };
            for (((&start, end), &axis), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
                let axis = self::axis(axis, dims.len())?;
                let dim = dims.get_mut(axis)?;
                // From the start, step 1: the end is the new size (a named
                // end is taken to fit, as the nodes after rely on it).
                *dim = match (start, step, end.clone(), dim.clone()) {
                    (0, 1, Some(Dim::Fixed(e)), Some(Dim::Fixed(n))) if e >= 0 => {
                        Some(Dim::Fixed(e.min(n)))
                    }
                    (0, 1, Some(Dim::Fixed(e)), d) if e >= i64::from(i32::MAX) => d,
                    (0, 1, Some(named @ Dim::Named(_)), _) => Some(named),
                    _ => None,
                };
            }
            shape_only(Some(dims))
        }
        "Expand" => shape_only(Some(broadcast(&x.shape?, &arg(1).value?))),
        "ConstantOfShape" => {
            let fill = match node.attrs.get("value") {
                Some(Attr::Tensor(c)) if matches!(c.dtype, DType::I64 | DType::I32) => {
                    c.data.first().map(|&v| v as i64)
                }
                _ => None,
            };
            let count = match x.value.as_deref() {
                Some([Some(Dim::Fixed(n))]) if (0..=MAX_TRACKED as i64).contains(n) => Some(*n),
                _ => None,
            };
            let value = fill
                .zip(count)
                .map(|(v, n)| vec![Some(Dim::Fixed(v)); n as usize]);
            Some(Facts {
                shape: x.value,
                value,
            })
        }
        _ => None,
    }
}

/// Axis `a` of `rank` axes (counted from the end when negative), if there
/// is one.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let at = if a < 0 { a + rank as i64 } else { a };
    usize::try_from(at).ok().filter(|&at| at < rank)
}

/// `op` on the elements of small integer tensors (each of one element or
/// of a common length), where the result can be told: products and sums of
/// fixed numbers, `Equal` (a named dim is never negative), `Where`.
fn elementwise(op: &str, values: &[Dims]) -> Option<Dims> {
    let len = values.iter().map(Vec::len).max()?;
    if values.iter().any(|v| v.len() != len && v.len() != 1) {
        return None;
    }
    let at = |k: usize, j: usize| values[k].get(j).or(values[k].first()).cloned().flatten();
    let fixed = |d: &Option<Dim>| match d {
        Some(Dim::Fixed(c)) => Some(*c),
        _ => None,
    };
    (0..len)
        .map(|j| {
            let (a, b) = (at(0, j), at(1, j));
            Some(match op {
                "Mul" => Dim::Fixed(fixed(&a)?.checked_mul(fixed(&b)?)?),
                "Add" => Dim::Fixed(fixed(&a)?.checked_add(fixed(&b)?)?),
                "Equal" => Dim::Fixed(match (a?, b?) {
                    (x, y) if x == y => 1,
                    (Dim::Fixed(_), Dim::Fixed(_)) => 0,
                    (Dim::Named(_), Dim::Fixed(c)) | (Dim::Fixed(c), Dim::Named(_)) if c < 0 => 0,
                    _ => return None,
                }),
                "Where" => match fixed(&a)? {
                    0 => at(2, j)?,
                    _ => b?,
                },
                _ => return None,
            })
        })
        .map(Some)
        .collect::<Option<Dims>>()
}

/// The NumPy broadcast of two shapes; a dim is unknown where the two are
/// neither equal nor 1 on one side.
fn broadcast(a: &[Option<Dim>], b: &[Option<Dim>]) -> Dims {
    let rank = a.len().max(b.len());
    let at = |s: &[Option<Dim>], j: usize| {
        (j + s.len())
            .checked_sub(rank)
            .map_or(Some(Dim::Fixed(1)), |k| s[k].clone())
    };
    (0..rank)
        .map(|j| match (at(a, j), at(b, j)) {
            (x, y) if x == y => x,
            (Some(Dim::Fixed(1)), y) => y,
            (x, Some(Dim::Fixed(1))) => x,
            _ => None,
        })
        .collect()
}

/// The shape a reshape of `shape` to `target` makes, where it can be told.
fn reshaped(shape: &Dims, target: &Dims, allowzero: bool) -> Option<Dims> {
    let mut out: Dims = target
        .iter()
        .enumerate()
        .map(|(j, d)| match d {
            Some(Dim::Fixed(0)) if !allowzero => shape.get(j).cloned().flatten(),
            other => other.clone(),
        })
        .collect();
    let Some(free) = out.iter().position(|d| d == &Some(Dim::Fixed(-1))) else {
        return Some(out);
    };
    // The dim left is what the input's dims do not share with the others.
    let mut left: Vec<Dim> = shape.iter().cloned().collect::<Option<_>>()?;
    let mut fixed = 1i64;
    for (j, d) in out.iter().enumerate() {
        match d {
            _ if j == free => {}
            Some(Dim::Fixed(c)) => fixed *= c,
            Some(named) => {
                let at = left.iter().position(|l| l == named)?;
                left.remove(at);
            }
            None => return None,
        }
    }
    let product: i64 = left
        .iter()
        .map(|d| match d {
            Dim::Fixed(c) => *c,
            Dim::Named(_) => 1,
        })
        .product();
    let names: Vec<&Dim> = left.iter().filter(|d| matches!(d, Dim::Named(_))).collect();
    out[free] = match names[..] {
        [] if fixed != 0 && product % fixed == 0 => Some(Dim::Fixed(product / fixed)),
        [named] if product == fixed => Some(named.clone()),
        _ => None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::node;

    fn named(n: &str) -> Option<Dim> {
        Some(Dim::Named(n.into()))
    }

    fn fixed(c: i64) -> Option<Dim> {
        Some(Dim::Fixed(c))
    }

    fn spec(name: &str, symbols: &[&str]) -> ValueSpec {
        ValueSpec {
            name: name.into(),
            dtype: DType::I64,
            shape: vec![-1; symbols.len()],
            symbols: symbols.iter().map(|s| Some(s.to_string())).collect(),
        }
    }

    #[test]
    fn targets_copy_dims_in_place_and_leave_one_to_infer() {
        let shape = vec![named("batch"), named("sequence"), fixed(384)];
        let heads = vec![named("batch"), named("sequence"), fixed(12), fixed(32)];
        assert_eq!(constant_target(&shape, &heads), Some(vec![0, 0, 12, 32]));
        // `sequence` out of place: the one dim left to -1.
        let moved = vec![named("batch"), fixed(12), named("sequence"), fixed(32)];
        assert_eq!(constant_target(&shape, &moved), Some(vec![0, 12, -1, 32]));
        // Two dims out of place cannot both be inferred.
        let both = vec![fixed(12), named("batch"), named("sequence")];
        assert_eq!(constant_target(&shape, &both), None);
        assert_eq!(constant_target(&shape, &vec![named("batch"), None]), None);
    }

    #[test]
    fn a_reshape_infers_its_free_dim_symbolically() {
        let shape = vec![named("batch"), fixed(12), named("sequence"), fixed(32)];
        let target = vec![named("batch"), fixed(-1), named("sequence"), fixed(32)];
        assert_eq!(reshaped(&shape, &target, false), Some(shape.clone()));
        let merged = vec![fixed(0), fixed(0), fixed(-1)];
        let heads = vec![named("batch"), named("sequence"), fixed(12), fixed(32)];
        assert_eq!(
            reshaped(&heads, &merged, false),
            Some(vec![named("batch"), named("sequence"), fixed(384)])
        );
        // A free dim made of two named ones is not one dim.
        let flat = vec![fixed(-1), fixed(384)];
        assert_eq!(
            reshaped(
                &vec![named("batch"), named("sequence"), fixed(384)],
                &flat,
                false
            ),
            Some(vec![None, fixed(384)])
        );
        // Torch's guard for Expand: -1 becomes 1, named dims stay.
        let dims = vec![named("batch"), fixed(-1), named("sequence")];
        let is_minus_one = elementwise("Equal", &[dims.clone(), vec![fixed(-1)]]).unwrap();
        assert_eq!(is_minus_one, vec![fixed(0), fixed(1), fixed(0)]);
        let guarded = elementwise("Where", &[is_minus_one, vec![fixed(1)], dims]).unwrap();
        assert_eq!(guarded, vec![named("batch"), fixed(1), named("sequence")]);
    }

    #[test]
    fn shape_arithmetic_becomes_constants_and_reads_the_data_input() {
        // hidden = Gather(table, ids); split into heads through a target
        // computed from Shape(hidden); a mask-like value computed from
        // Shape(hidden)[0] and the mask input.
        let mut tensors = HashMap::from([
            (
                "table".to_string(),
                Raw::from_floats(vec![10, 8], &[0.0; 80]),
            ),
            ("zero".to_string(), Raw::from_ints(vec![], &[0])),
            ("one".to_string(), Raw::from_ints(vec![], &[1])),
            ("axes".to_string(), Raw::from_ints(vec![1], &[0])),
            ("heads".to_string(), Raw::from_ints(vec![2], &[2, 4])),
        ]);
        let mut nodes = vec![
            node("Gather", &["table", "ids"], "hidden"),
            node("Shape", &["hidden"], "shape"),
            node("Gather", &["shape", "zero"], "b"),
            node("Gather", &["shape", "one"], "s"),
            node("Unsqueeze", &["b", "axes"], "b1"),
            node("Unsqueeze", &["s", "axes"], "s1"),
            node("Concat", &["b1", "s1", "heads"], "target"),
            node("Reshape", &["hidden", "target"], "split"),
            node("Unsqueeze", &["b", "axes"], "b2"),
            node("Expand", &["mask", "b2"], "wide"),
            node("Add", &["split", "wide"], "out"),
        ];
        nodes[6]
            .attrs
            .insert("axis".into(), edgeserve_onnx_graph::Attr::Int(0));
        let inputs = [
            spec("ids", &["batch", "sequence"]),
            spec("mask", &["batch", "sequence"]),
        ];
        let outputs = [spec("out", &[])];
        let done = simplify(&mut nodes, &mut tensors, &inputs, &outputs);
        assert_eq!(
            done,
            Simplified {
                targets: 1,
                reshapes: 0,
                dims: 1
            }
        );
        let reshape = nodes.iter().find(|n| n.op == "Reshape").unwrap();
        assert_eq!(tensors[&reshape.inputs[1]].values(), [0.0, 0.0, 2.0, 4.0]);
        // The batch dim the mask-like value needs is read off `mask`, the
        // input whose data its readers use, not `ids`.
        let shapes: Vec<&Node> = nodes.iter().filter(|n| n.op == "Shape").collect();
        assert_eq!(shapes.len(), 1, "{nodes:?}");
        assert_eq!(shapes[0].inputs, ["mask"]);
        assert!(!nodes.iter().any(|n| n.outputs[0] == "s1"), "{nodes:?}");
    }
}
