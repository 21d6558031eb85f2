//! Fusions at import: patterns of exported graphs rewritten into the coarse
//! ops the host runs in one pass, so a request makes fewer host calls and
//! fewer passes over its activations.
//!
//! * Decomposed layer normalization, as torch exports `LayerNorm` before
//!   opset 17 (`ReduceMean → Sub → Pow 2 → ReduceMean → Add ε → Sqrt → Div`,
//!   then `Mul γ` and `Add β`) → `LayerNormalization` (the host's
//!   `layer-norm`).
//! * GELU in its erf form (`x · 0.5 · (1 + erf(x / √2))`, as BERT exports
//!   write it) → `Gelu`.
//! * GELU in its tanh form (`0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 ·
//!   x³)))`, as GPT-2 exports write it) → `Gelu` with `approximate=tanh`.
//! * `Gemm` by a constant `[in, out]` weight plus a constant bias (GPT-2's
//!   `Conv1D`), or `MatMul` by a constant 2-D weight then `Add` of a
//!   constant bias, then optionally an activation (either GELU among them,
//!   also past a `Reshape`, as GPT-2's feed-forward layer has it)
//!   → [`LINEAR`] (the host's `linear`: bias and
//!   activation applied as the product is written). Its weight is stored
//!   transposed, `[out, in]` (attribute `transB`), the layout the host's
//!   kernels read fastest for the few rows of one short sentence.
//! * Scaled dot-product attention as BERT exports write it (`MatMul(q,
//!   Transpose k) → Mul (or Div) by a constant → Add mask → Softmax over the
//!   last axis → MatMul by v`) → [`ATTENTION`] (the host's `attention`: the
//!   scores never leave the kernel). As transformers' SDPA exports write it
//!   too: q and the transposed k each scaled by a constant before the
//!   product, and the softmax guarded by `Where(IsNaN p, 0, p)` (rows with
//!   every key masked, which the host's attention already makes zeros).
//!
//! A pattern is rewritten only when its intermediate values are read by
//! nothing else and are not graph outputs.

use std::collections::HashMap;

use edgeserve_onnx_graph::{ATTENTION, Attr, DType, LINEAR, Node, ValueSpec};

use super::tensor::Raw;

/// The nodes and what a rewrite needs to know about their values.
pub struct Fuser<'a> {
    /// The nodes, in topological order.
    pub nodes: &'a mut Vec<Node>,
    /// Constant tensors by value name.
    pub tensors: &'a mut HashMap<String, Raw>,
    /// Graph outputs, which must survive every rewrite.
    pub outputs: &'a [ValueSpec],
}

/// What a pattern that matched replaces (node indices) and with what.
type Rewrite = (Vec<usize>, Node);

/// How many rewrites of each kind one run made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fused {
    /// `LayerNormalization` nodes made.
    pub layer_norms: usize,
    /// `Gelu` nodes made.
    pub gelus: usize,
    /// [`LINEAR`] nodes made.
    pub linears: usize,
    /// [`ATTENTION`] nodes made.
    pub attentions: usize,
}

impl Fuser<'_> {
    /// Runs every fusion, layer norms and GELUs first so linears can take
    /// the GELU after them as their activation.
    pub fn run(&mut self) -> Fused {
        let fused = Fused {
            layer_norms: self.rewrite(Self::layer_norm),
            gelus: self.rewrite(Self::gelu) + self.rewrite(Self::gelu_tanh),
            linears: self.rewrite(Self::linear) + self.rewrite(Self::gemm_linear),
            attentions: self.rewrite(Self::attention),
        };
        self.activations_through_reshapes();
        self.transpose_linear_weights();
        fused
    }

    /// Stores each [`LINEAR`] weight `[in, out]` as `<name>.t`, `[out, in]`
    /// (once, however many nodes read it); the original stays for other
    /// readers and is dropped with the unused tensors otherwise.
    fn transpose_linear_weights(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.op == LINEAR) {
            let weight = node.inputs[1].clone();
            let transposed = format!("{weight}.t");
            if !self.tensors.contains_key(&transposed) {
                let Some(w) = self.tensors.get(&weight) else {
                    continue;
                };
                let (k, n) = (w.dims[0], w.dims[1]);
                let data = w.floats();
                let t: Vec<f32> = (0..n * k).map(|i| data[(i % k) * n + i / k]).collect();
                self.tensors
                    .insert(transposed.clone(), Raw::from_floats(vec![n, k], &t));
            }
            node.inputs[1] = transposed;
            node.attrs.insert("transB".into(), Attr::Int(1));
        }
    }

    /// Applies `pattern` at every node where it matches; it returns the
    /// nodes it replaces (the last one's place takes the new node).
    fn rewrite(&mut self, pattern: fn(&Self, usize) -> Option<Rewrite>) -> usize {
        let mut count = 0;
        let mut i = 0;
        while i < self.nodes.len() {
            if let Some((mut remove, node)) = pattern(self, i) {
                remove.sort_unstable();
                let last = *remove.last().expect("a pattern replaces nodes");
                self.nodes[last] = node;
                for &r in remove[..remove.len() - 1].iter().rev() {
                    self.nodes.remove(r);
                }
                count += 1;
            } else {
                i += 1;
            }
        }
        count
    }

    /// The only node reading `value`, when `value` is not a graph output.
    fn only_reader(&self, value: &str) -> Option<usize> {
        if self.outputs.iter().any(|o| o.name == value) {
            return None;
        }
        let mut readers = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.iter().any(|i| i == value));
        let (first, _) = readers.next()?;
        readers.next().is_none().then_some(first)
    }

    /// The node that writes `value`.
    fn writer(&self, value: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// Readers of `value` (when not a graph output), by op.
    fn readers(&self, value: &str) -> Option<Vec<usize>> {
        if self.outputs.iter().any(|o| o.name == value) {
            return None;
        }
        Some(
            (0..self.nodes.len())
                .filter(|&i| self.nodes[i].inputs.iter().any(|n| n == value))
                .collect(),
        )
    }

    /// The two readers of `value`, the one that is `op` first (which the
    /// caller checks).
    fn two_readers(&self, value: &str, op: &str) -> Option<(usize, usize)> {
        match *self.readers(value)?.as_slice() {
            [a, b] if self.nodes[a].op == op => Some((a, b)),
            [a, b] => Some((b, a)),
            _ => None,
        }
    }

    /// The node at `i` when it is `op` reading `value`; returns it with its
    /// other input.
    fn reads<'n>(&'n self, i: usize, op: &str, value: &str) -> Option<(&'n Node, Option<&'n str>)> {
        let node = &self.nodes[i];
        if node.op != op || node.outputs.len() != 1 {
            return None;
        }
        let other = match node.inputs.as_slice() {
            [a] if a == value => None,
            [a, b] if a == value => Some(b.as_str()),
            [a, b] if b == value => Some(a.as_str()),
            _ => return None,
        };
        Some((node, other))
    }

    /// A constant float tensor's elements.
    fn floats(&self, name: Option<&str>) -> Option<(Vec<usize>, Vec<f32>)> {
        let t = self.tensors.get(name?)?;
        (t.dtype == DType::F32).then(|| (t.dims.clone(), t.floats()))
    }

    /// A constant scalar (any shape of one element).
    fn scalar(&self, name: Option<&str>) -> Option<f32> {
        match self.floats(name)?.1.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Whether a `ReduceMean` at `i` reduces only the last axis, keeping it.
    fn mean_over_last(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        let axes = node.ints("axes").map(<[i64]>::to_vec).or_else(|| {
            let t = self.tensors.get(node.input(1)?)?;
            Some(t.constant().data.iter().map(|&v| v as i64).collect())
        });
        node.op == "ReduceMean" && axes.as_deref() == Some(&[-1]) && node.int("keepdims", 1) == 1
    }

    /// `ReduceMean → Sub → Pow 2 → ReduceMean → Add ε → Sqrt → Div [→ Mul γ
    /// [→ Add β]]` at the first `ReduceMean`.
    fn layer_norm(&self, mean: usize) -> Option<Rewrite> {
        if !self.mean_over_last(mean) {
            return None;
        }
        let x = self.nodes[mean].input(0)?;
        let mean_out = self.nodes[mean].outputs.first()?;
        let sub = self.only_reader(mean_out)?;
        let (sub_node, other) = self.reads(sub, "Sub", mean_out)?;
        if sub_node.inputs[0] != x || other != Some(x) {
            return None;
        }
        let centered = &sub_node.outputs[0];
        let (pow, div) = self.two_readers(centered, "Pow")?;
        let (pow_node, two) = self.reads(pow, "Pow", centered)?;
        if pow_node.inputs[0] != *centered || self.scalar(two) != Some(2.0) {
            return None;
        }
        let var = self.only_reader(&pow_node.outputs[0])?;
        if !self.mean_over_last(var) {
            return None;
        }
        let add = self.only_reader(&self.nodes[var].outputs[0])?;
        let (add_node, eps) = self.reads(add, "Add", &self.nodes[var].outputs[0])?;
        let eps = self.scalar(eps)?;
        let sqrt = self.only_reader(&add_node.outputs[0])?;
        let (sqrt_node, _) = self.reads(sqrt, "Sqrt", &add_node.outputs[0])?;
        let (div_node, denominator) = self.reads(div, "Div", centered)?;
        if div_node.inputs[0] != *centered || denominator != Some(&sqrt_node.outputs[0]) {
            return None;
        }
        let mut replaced = vec![mean, sub, pow, var, add, sqrt, div];
        let mut inputs = vec![x.to_string()];
        let mut out = div_node.outputs[0].clone();
        // The scale and shift, when they are per-feature constants.
        let per_feature = |name: Option<&str>| {
            self.floats(name)
                .filter(|(dims, _)| dims.len() == 1)
                .map(|_| name.unwrap_or_default().to_string())
        };
        // The scale (`Mul`), then the shift (`Add`): each taken only when the
        // step before it was.
        let step = |out: &str, op| {
            let step = self.only_reader(out)?;
            let (node, param) = self.reads(step, op, out)?;
            Some((step, node, per_feature(param)?))
        };
        for op in ["Mul", "Add"] {
            let Some((at, node, param)) = step(&out, op) else {
                break;
            };
            replaced.push(at);
            inputs.push(param);
            out = node.outputs[0].clone();
        }
        let node = Node {
            name: format!("{}.fused", self.nodes[mean].name),
            op: "LayerNormalization".into(),
            inputs,
            outputs: vec![out],
            attrs: [
                ("axis".to_string(), Attr::Int(-1)),
                ("epsilon".to_string(), Attr::Float(eps)),
            ]
            .into(),
        };
        Some((replaced, node))
    }

    /// `x / √2 → Erf → + 1 → · x → · 0.5` (the last two in either order)
    /// at the `Div`.
    fn gelu(&self, div: usize) -> Option<Rewrite> {
        let div_node = &self.nodes[div];
        let x = div_node.input(0)?;
        if div_node.op != "Div" || self.scalar(div_node.input(1))? != std::f32::consts::SQRT_2 {
            return None;
        }
        let erf = self.only_reader(&div_node.outputs[0])?;
        let (erf_node, _) = self.reads(erf, "Erf", &div_node.outputs[0])?;
        let add = self.only_reader(&erf_node.outputs[0])?;
        let (add_node, one) = self.reads(add, "Add", &erf_node.outputs[0])?;
        if self.scalar(one)? != 1.0 {
            return None;
        }
        let first = self.only_reader(&add_node.outputs[0])?;
        let (first_node, other) = self.reads(first, "Mul", &add_node.outputs[0])?;
        let second = self.only_reader(&first_node.outputs[0])?;
        let (second_node, last) = self.reads(second, "Mul", &first_node.outputs[0])?;
        // Either (x · (1 + erf)) · 0.5 or (0.5 · (1 + erf)) · x.
        let fits = (other == Some(x) && self.scalar(last) == Some(0.5))
            || (self.scalar(other) == Some(0.5) && last == Some(x));
        if !fits {
            return None;
        }
        let node = gelu_node(div_node, x, &second_node.outputs, false);
        Some((vec![div, erf, add, first, second], node))
    }

    /// `x³ → · 0.044715 → + x → · √(2/π) → Tanh → + 1 → · (x · 0.5)` at the
    /// `Pow`.
    fn gelu_tanh(&self, pow: usize) -> Option<Rewrite> {
        let close = |v: Option<f32>, want: f32| v.is_some_and(|v| (v - want).abs() <= 1e-6 * want);
        let pow_node = &self.nodes[pow];
        let x = pow_node.input(0)?;
        if pow_node.op != "Pow" || self.scalar(pow_node.input(1))? != 3.0 {
            return None;
        }
        let next = |i: usize, op: &str| -> Option<(usize, &Node, Option<&str>)> {
            let value = &self.nodes[i].outputs[0];
            let j = self.only_reader(value)?;
            let (node, other) = self.reads(j, op, value)?;
            Some((j, node, other))
        };
        let (cube, _, c) = next(pow, "Mul")?;
        let (sum, _, y) = next(cube, "Add")?;
        let (scale, _, s) = next(sum, "Mul")?;
        let (tanh, _, _) = next(scale, "Tanh")?;
        let (one, _, o) = next(tanh, "Add")?;
        let (last, last_node, half) = next(one, "Mul")?;
        let half = self.writer(half?)?;
        let (half_node, h) = self.reads(half, "Mul", x)?;
        let fits = close(self.scalar(c), 0.044715)
            && y == Some(x)
            && close(self.scalar(s), (2.0 / std::f32::consts::PI).sqrt())
            && self.scalar(o) == Some(1.0)
            && self.scalar(h) == Some(0.5)
            && self.only_reader(&half_node.outputs[0]) == Some(last);
        if !fits {
            return None;
        }
        let node = gelu_node(pow_node, x, &last_node.outputs, true);
        Some((vec![half, pow, cube, sum, scale, tanh, one, last], node))
    }

    /// `Gemm(x, W, b)` with a constant `[in, out]` weight and a constant
    /// `[out]` bias, no scaling or transposes → [`LINEAR`], whose weight is
    /// then stored transposed like a `MatMul`'s.
    fn gemm_linear(&self, gemm: usize) -> Option<Rewrite> {
        let node = &self.nodes[gemm];
        let plain = node.int("transA", 0) == 0
            && node.int("transB", 0) == 0
            && node.float("alpha", 1.0) == 1.0
            && node.float("beta", 1.0) == 1.0;
        if node.op != "Gemm" || !plain || node.outputs.len() != 1 {
            return None;
        }
        let (w_dims, _) = self.floats(node.input(1))?;
        let [_, n] = w_dims.as_slice() else {
            return None;
        };
        if self.floats(node.input(2))?.0 != [*n] {
            return None;
        }
        let mut replaced = vec![gemm];
        let (out, attrs) = self.activation_after(&node.outputs[0], &mut replaced);
        let linear = Node {
            name: format!("{}.fused", node.name),
            op: LINEAR.into(),
            inputs: node.inputs.clone(),
            outputs: vec![out],
            attrs,
        };
        Some((replaced, linear))
    }

    /// The activation a [`LINEAR`] writing `value` takes on, when the only
    /// reader of `value` is one the host applies as the product is written
    /// (added to `replaced`): the output then becomes the activation's, and
    /// the attributes name it.
    fn activation_after(
        &self,
        value: &str,
        replaced: &mut Vec<usize>,
    ) -> (String, std::collections::BTreeMap<String, Attr>) {
        let mut attrs = std::collections::BTreeMap::new();
        let Some((at, name)) = self.activation(value) else {
            return (value.to_string(), attrs);
        };
        attrs.insert("activation".to_string(), Attr::String(name.into()));
        replaced.push(at);
        (self.nodes[at].outputs[0].clone(), attrs)
    }

    /// The only reader of `value` when it is an activation a [`LINEAR`]
    /// applies, with the name its `activation` attribute gives it
    /// (`GeluTanh` for `Gelu` with `approximate=tanh`).
    fn activation(&self, value: &str) -> Option<(usize, &'static str)> {
        let at = self.only_reader(value)?;
        let node = &self.nodes[at];
        let tanh = node.string("approximate") == Some("tanh") && node.attrs.len() == 1;
        let plain = node.attrs.is_empty();
        let name = match node.op.as_str() {
            "Gelu" if tanh => "GeluTanh",
            "Gelu" if plain => "Gelu",
            "Relu" if plain => "Relu",
            "Tanh" if plain => "Tanh",
            "Sigmoid" if plain => "Sigmoid",
            _ => return None,
        };
        Some((at, name))
    }

    /// Moves the activation after `LINEAR → Reshape` into the linear (an
    /// elementwise op commutes with a reshape), as GPT-2's `Conv1D` exports
    /// write its feed-forward layer: a 2-D `Gemm`, a `Reshape` back to 3-D,
    /// then the GELU.
    fn activations_through_reshapes(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            let node = &self.nodes[i];
            let bare = node.op == LINEAR && !node.attrs.contains_key("activation");
            let found = bare
                .then(|| {
                    let reshape = self.only_reader(&node.outputs[0])?;
                    let r = &self.nodes[reshape];
                    (r.op == "Reshape" && r.input(0) == Some(node.outputs[0].as_str()))
                        .then_some(())?;
                    let (act, name) = self.activation(&r.outputs[0])?;
                    Some((reshape, act, name))
                })
                .flatten();
            if let Some((reshape, act, name)) = found {
                let activation = Attr::String(name.into());
                self.nodes[i].attrs.insert("activation".into(), activation);
                self.nodes[reshape].outputs = self.nodes[act].outputs.clone();
                self.nodes.remove(act);
            }
            i += 1;
        }
    }

    /// `MatMul(x, W) → Add b [→ activation]` at the `MatMul`.
    fn linear(&self, matmul: usize) -> Option<Rewrite> {
        let mm = &self.nodes[matmul];
        if mm.op != "MatMul" {
            return None;
        }
        let (w_dims, _) = self.floats(mm.input(1))?;
        let [_, n] = w_dims.as_slice() else {
            return None;
        };
        let add = self.only_reader(&mm.outputs[0])?;
        let (add_node, bias) = self.reads(add, "Add", &mm.outputs[0])?;
        if self.floats(bias)?.0 != [*n] {
            return None;
        }
        let mut replaced = vec![matmul, add];
        let (out, attrs) = self.activation_after(&add_node.outputs[0], &mut replaced);
        let node = Node {
            name: format!("{}.fused", mm.name),
            op: LINEAR.into(),
            inputs: vec![
                mm.inputs[0].clone(),
                mm.inputs[1].clone(),
                bias?.to_string(),
            ],
            outputs: vec![out],
            attrs,
        };
        Some((replaced, node))
    }

    /// `MatMul(q, Transpose k) [→ Mul c | Div c] [→ Add mask] → Softmax(-1)
    /// [→ Where(IsNaN p, 0, p)] → MatMul(·, v)` at the first `MatMul`. q and
    /// the transposed k may each reach the product through a `Mul` by a
    /// constant, as SDPA exports scale both by the fourth root of the
    /// attention scale.
    fn attention(&self, scores: usize) -> Option<Rewrite> {
        let mm = &self.nodes[scores];
        if mm.op != "MatMul" || mm.inputs.len() != 2 {
            return None;
        }
        let mut replaced = vec![scores];
        let mut prescale = 1.0;
        // A `Mul` by a constant that only the product reads, taken off.
        let mut unscaled = |value: &str| -> String {
            let scale = self.writer(value).and_then(|at| {
                let node = &self.nodes[at];
                let c = (node.op == "Mul" && node.inputs.len() == 2)
                    .then(|| self.scalar(node.input(1)))??;
                (self.only_reader(value) == Some(scores)).then_some((at, c))
            });
            match scale {
                Some((at, c)) => {
                    prescale *= c;
                    replaced.push(at);
                    self.nodes[at].inputs[0].clone()
                }
                None => value.to_string(),
            }
        };
        let q = unscaled(&mm.inputs[0]);
        let kt = unscaled(&mm.inputs[1]);
        // k reaches the product transposed; the fused node reads it untransposed.
        let transpose = self.writer(&kt)?;
        let t = &self.nodes[transpose];
        let mut perm = t.ints("perm")?.to_vec();
        let kt_read_once = self.only_reader(&kt).is_some_and(|r| replaced.contains(&r));
        if t.op != "Transpose" || perm.len() < 2 || !kt_read_once {
            return None;
        }
        let rank = perm.len();
        perm.swap(rank - 2, rank - 1);
        replaced.push(transpose);
        let mut out = mm.outputs[0].clone();
        let mut next = self.only_reader(&out)?;
        let scaled = match self.reads(next, "Mul", &out) {
            Some((_, c)) => self.scalar(c),
            None => match self.reads(next, "Div", &out) {
                Some((node, c)) if node.inputs[0] == out => self.scalar(c).map(|c| 1.0 / c),
                _ => None,
            },
        };
        if scaled.is_some() {
            replaced.push(next);
            out = self.nodes[next].outputs[0].clone();
            next = self.only_reader(&out)?;
        }
        let mut mask = None;
        if let Some((node, other)) = self.reads(next, "Add", &out) {
            mask = Some(other?.to_string());
            replaced.push(next);
            out = node.outputs[0].clone();
            next = self.only_reader(&out)?;
        }
        let (softmax, _) = self.reads(next, "Softmax", &out)?;
        if softmax.int("axis", 1) != -1 {
            return None;
        }
        replaced.push(next);
        out = softmax.outputs[0].clone();
        if let Some((guard, nan)) = self.nan_guard(&out) {
            replaced.extend([nan, guard]);
            out = self.nodes[guard].outputs[0].clone();
        }
        let last = self.only_reader(&out)?;
        let (product, v) = self.reads(last, "MatMul", &out)?;
        if product.inputs[0] != out {
            return None;
        }
        replaced.push(last);
        let mut inputs = vec![q, t.inputs.first()?.clone(), v?.to_string()];
        inputs.extend(mask);
        let node = Node {
            name: format!("{}.fused", mm.name),
            op: ATTENTION.into(),
            inputs,
            outputs: product.outputs.clone(),
            attrs: [
                ("k_perm".to_string(), Attr::Ints(perm)),
                (
                    "scale".to_string(),
                    Attr::Float(prescale * scaled.unwrap_or(1.0)),
                ),
            ]
            .into(),
        };
        Some((replaced, node))
    }

    /// `Where(IsNaN p, 0, p)` on the softmax output `p`, as SDPA exports
    /// guard rows whose every key is masked: the host's attention gives
    /// those rows zeros already. Returns the `Where` and the `IsNaN`.
    fn nan_guard(&self, p: &str) -> Option<(usize, usize)> {
        let (nan, guard) = self.two_readers(p, "IsNaN")?;
        let (nan_node, _) = self.reads(nan, "IsNaN", p)?;
        let g = &self.nodes[guard];
        let guards = g.op == "Where"
            && g.inputs.len() == 3
            && g.inputs[0] == nan_node.outputs[0]
            && self.scalar(g.input(1)) == Some(0.0)
            && g.inputs[2] == p
            && self.only_reader(&nan_node.outputs[0]) == Some(guard);
        guards.then_some((guard, nan))
    }
}

/// The `Gelu` of `x` that a matched pattern starting at `first` becomes,
/// writing `outputs`; `approximate=tanh` when `tanh`.
fn gelu_node(first: &Node, x: &str, outputs: &[String], tanh: bool) -> Node {
    let approximate = ("approximate".to_string(), Attr::String("tanh".into()));
    Node {
        name: format!("{}.fused", first.name),
        op: "Gelu".into(),
        inputs: vec![x.to_string()],
        outputs: outputs.to_vec(),
        attrs: tanh.then_some(approximate).into_iter().collect(),
    }
}
