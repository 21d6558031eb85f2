//! The graph as a plan: constants folded at `init`, the remaining nodes in
//! order with their inputs resolved to slots and the point where each value
//! is last used (so its host tensor is dropped as soon as possible).

use std::collections::HashMap;

use edgeserve_onnx_graph::{Constant, Graph, Node, bool_values, small_values, unsupported};
use edgeserve_sdk::{Error, InferError, Output, Request, Tensor, model};

use crate::host::{self, Arg, Args, Value};
use crate::pack::{Packing, Role};
use crate::small::Small;

/// The model parameter (`[parameters]` in its `config.toml`) saying what
/// an output holding a value per token gives at padding positions:
/// `computed` (the default: what the graph computes there) or `zeros`, which
/// lets a padded batch asking for such an output run on its real tokens
/// ([`crate::pack`]). Clients that pool with the attention mask, as
/// sentence-transformers does, get the same answer either way.
pub(crate) const PADDING_POSITIONS: &str = "padding_positions";

/// A value known before any request.
pub(crate) enum Static {
    /// A weight from `model.safetensors` (a shared handle, not a copy).
    Weight(Tensor),
    /// A constant, given or folded.
    Const(Constant),
}

/// One node left to run per request.
pub(crate) struct Step {
    pub(crate) node: Node,
    pub(crate) inputs: Vec<Option<usize>>,
    pub(crate) outputs: Vec<usize>,
    /// Runs in the handler on small values rather than on the host.
    pub(crate) small: bool,
    /// Input 0 holds booleans.
    pub(crate) bool_input: bool,
    /// Slots whose last reader this step is.
    pub(crate) frees: Vec<usize>,
}

/// A graph ready to serve.
pub struct Plan {
    opset: i64,
    statics: HashMap<usize, Static>,
    inputs: Vec<(String, usize)>,
    /// Named dims of the inputs: (name, input index, axis).
    symbols: Vec<(String, usize, usize)>,
    outputs: Vec<(String, usize)>,
    steps: Vec<Step>,
    slots: usize,
    /// Where a padded batch can run on its real tokens only.
    packing: Option<Packing>,
    /// Per-token outputs may give zeros at padding ([`PADDING_POSITIONS`]).
    zeros_at_padding: bool,
}

impl Plan {
    /// Checks `graph`, looks up its weights and folds its constants.
    pub fn new(graph: &Graph) -> Result<Plan, String> {
        let zeros_at_padding = match model::parameter(PADDING_POSITIONS).as_deref() {
            None | Some("computed") => false,
            Some("zeros") => true,
            Some(other) => {
                return Err(format!(
                    "parameter {PADDING_POSITIONS} must be \"computed\" or \"zeros\", not {other:?}"
                ));
            }
        };
        let problems = unsupported(graph);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(format!(
                "the ONNX graph cannot be served:\n{}",
                list.join("\n")
            ));
        }
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut slot = |name: &str| {
            let next = slot_of.len();
            *slot_of.entry(name.to_string()).or_insert(next)
        };
        let mut statics = HashMap::new();
        for name in &graph.weights {
            let weight = model::weight(name).map_err(|e| format!("weight {name}: {e}"))?;
            statics.insert(slot(name), Static::Weight(weight));
        }
        for (name, c) in &graph.constants {
            statics.insert(slot(name), Static::Const(c.clone()));
        }
        let inputs: Vec<(String, usize)> = graph
            .inputs
            .iter()
            .map(|s| (s.name.clone(), slot(&s.name)))
            .collect();
        let symbols = graph
            .inputs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.symbols
                    .iter()
                    .enumerate()
                    .filter_map(move |(axis, name)| Some((name.clone()?, i, axis)))
            })
            .collect();
        let small = small_values(graph);
        let bools = bool_values(graph);
        let mut steps = Vec::new();
        for node in &graph.nodes {
            let ins: Vec<Option<usize>> = node
                .inputs
                .iter()
                .map(|i| (!i.is_empty()).then(|| slot(i)))
                .collect();
            let outs: Vec<usize> = node.outputs.iter().map(|o| slot(o)).collect();
            let is_small = node.outputs.iter().all(|o| small.contains(o));
            let consts: Option<Vec<Option<&Constant>>> = ins
                .iter()
                .map(|i| match i {
                    None => Some(None),
                    Some(i) => match statics.get(i) {
                        Some(Static::Const(c)) => Some(Some(c)),
                        _ => None,
                    },
                })
                .collect();
            match consts {
                // Folding: every input is known now, so compute it once.
                Some(consts) if is_small && node.op != "Shape" => {
                    let values = Constant::eval(node, &consts)
                        .map_err(|e| format!("folding node {:?} ({}): {e}", node.name, node.op))?;
                    for (o, v) in outs.iter().zip(values) {
                        statics.insert(*o, Static::Const(v));
                    }
                }
                _ => steps.push(Step {
                    node: node.clone(),
                    inputs: ins,
                    outputs: outs,
                    small: is_small,
                    bool_input: node.input(0).is_some_and(|i| bools.contains(i)),
                    frees: vec![],
                }),
            }
        }
        let outputs: Vec<(String, usize)> = graph
            .outputs
            .iter()
            .map(|s| (s.name.clone(), slot(&s.name)))
            .collect();
        let output_slots: Vec<usize> = outputs.iter().map(|(_, s)| *s).collect();
        crate::conv::fold_pads(&mut steps, &statics, graph.opset, &output_slots);
        crate::conv::fold_clips(&mut steps, &statics, graph.opset, &output_slots);
        let packing = Packing::find(&mut steps, &statics, &output_slots);
        let mut last_use = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            for s in step.inputs.iter().flatten() {
                last_use.insert(*s, i);
            }
        }
        for (s, i) in last_use {
            if !statics.contains_key(&s) && !outputs.iter().any(|(_, o)| *o == s) {
                steps[i].frees.push(s);
            }
        }
        Ok(Plan {
            opset: graph.opset,
            statics,
            inputs,
            symbols,
            outputs,
            steps,
            slots: slot_of.len(),
            packing,
            zeros_at_padding,
        })
    }

    /// Refuses inputs that give one named dim (`batch`, `sequence`) two
    /// sizes: the graph was imported taking them to agree.
    fn check_symbols(&self, values: &[Option<Value>]) -> Result<(), InferError> {
        let mut first: HashMap<&str, (usize, usize, u32)> = HashMap::new();
        for (symbol, input, axis) in &self.symbols {
            let (name, slot) = &self.inputs[*input];
            let Some(Value::Host(t)) = &values[*slot] else {
                continue;
            };
            let Some(&size) = t.shape().get(*axis) else {
                continue;
            };
            let (other, other_axis, other_size) =
                *first.entry(symbol).or_insert((*input, *axis, size));
            if other_size != size {
                return Err(InferError::InvalidInput(format!(
                    "input {name:?} has {size} at dim {axis} but input {:?} has {other_size} at dim \
                     {other_axis}; the model names both {symbol:?}, so they must agree",
                    self.inputs[other].0
                )));
            }
        }
        Ok(())
    }

    /// Runs the plan on one request.
    pub fn run(&self, mut request: Request) -> Result<Vec<Output>, InferError> {
        let mut values: Vec<Option<Value>> = (0..self.slots).map(|_| None).collect();
        for (name, slot) in &self.inputs {
            values[*slot] = Some(Value::Host(request.take_numeric(name)?));
        }
        self.check_symbols(&values)?;
        // A packed run gives zeros at padding where the graph computes a
        // value: not for a request asking for such an output, unless the
        // model takes zeros there.
        let may_pack = self.packing.as_ref().is_some_and(|p| {
            self.zeros_at_padding
                || !self
                    .outputs
                    .iter()
                    .any(|(name, slot)| p.token_outputs().contains(slot) && request.wants(name))
        });
        let mut packed = None;
        for (i, step) in self.steps.iter().enumerate() {
            let produced = self.packed_step(i, step, may_pack, &mut packed, &mut values);
            let produced = produced.map_err(|e| {
                let message = format!("node {:?} ({}): {e}", step.node.name, step.node.op);
                match e {
                    // A request whose shapes do not fit the graph.
                    Error::Shape(_) | Error::InvalidArgument(_) => {
                        InferError::InvalidInput(message)
                    }
                    _ => InferError::Internal(message),
                }
            })?;
            for (slot, value) in step.outputs.iter().zip(produced) {
                values[*slot] = Some(value);
            }
            for slot in &step.frees {
                values[*slot] = None;
            }
        }
        if let (Some(packing), Some(p)) = (&self.packing, &mut packed) {
            let wanted = self.outputs.iter().filter(|(name, _)| request.wants(name));
            packing
                .unpack(wanted.map(|(_, slot)| *slot), p, &mut values)
                .map_err(|e| InferError::internal(format!("scattering the outputs back: {e}")))?;
        }
        let mut outputs = Vec::new();
        for (name, slot) in &self.outputs {
            if !request.wants(name) {
                continue;
            }
            let tensor = match (values[*slot].take(), self.statics.get(slot)) {
                (Some(Value::Host(t)), _) => t,
                (Some(Value::Small(c)), _) => c.to_host()?,
                (None, Some(Static::Const(c))) => c.to_host()?,
                (None, Some(Static::Weight(w))) => {
                    w.reshape(&w.shape().iter().map(|&d| d as i32).collect::<Vec<_>>())?
                }
                (None, None) => {
                    return Err(InferError::internal(format!(
                        "output {name} was not computed"
                    )));
                }
            };
            outputs.push(Output::numeric(name.clone(), tensor));
        }
        Ok(outputs)
    }

    /// Runs step `i`, packed where this request runs packed (see
    /// [`crate::pack`]); `packed` is set at the region's first step.
    fn packed_step(
        &self,
        i: usize,
        step: &Step,
        may_pack: bool,
        packed: &mut Option<crate::pack::Packed>,
        values: &mut [Option<Value>],
    ) -> Result<Vec<Value>, Error> {
        let Some(packing) = &self.packing else {
            return self.step(step, values);
        };
        if i == packing.first() && may_pack {
            *packed = packing.start(values)?;
        }
        let Some(p) = packed else {
            return self.step(step, values);
        };
        let host = |at: usize| match step.inputs.get(at).copied().flatten() {
            Some(slot) => match &values[slot] {
                Some(Value::Host(t)) => Ok(t),
                _ => Err(Error::InvalidArgument(format!(
                    "input {at} is not a tensor"
                ))),
            },
            None => Err(Error::InvalidArgument(format!("input {at} is missing"))),
        };
        match packing.role(i) {
            Role::Outside => {
                packing.unpack(step.inputs.iter().flatten().copied(), p, values)?;
                self.step(step, values)
            }
            Role::Inside => self.step(step, values),
            Role::Alias => Ok(vec![Value::Host(host::alias(host(0)?)?)]),
            Role::Attention => {
                let scale = step.node.float("scale", 1.0);
                let out = p.attention(host(0)?, host(1)?, host(2)?, scale)?;
                Ok(vec![Value::Host(out)])
            }
        }
    }

    fn step(&self, step: &Step, values: &[Option<Value>]) -> Result<Vec<Value>, Error> {
        let args: Vec<Option<Arg<'_>>> = step
            .inputs
            .iter()
            .map(|s| {
                s.and_then(|s| match self.statics.get(&s) {
                    Some(Static::Weight(w)) => Some(Arg::Host(w)),
                    Some(Static::Const(c)) => Some(Arg::Small(c)),
                    None => values[s].as_ref().map(Value::arg),
                })
            })
            .collect();
        if step.node.op == "Shape" {
            return shape(&step.node, args.first().copied().flatten());
        }
        if step.small {
            let consts: Vec<Option<&Constant>> = args
                .iter()
                .map(|a| match a {
                    Some(Arg::Small(c)) => Some(*c),
                    _ => None,
                })
                .collect();
            let out = Constant::eval(&step.node, &consts).map_err(Error::InvalidArgument)?;
            return Ok(out.into_iter().map(Value::Small).collect());
        }
        host::run(
            &Args {
                node: &step.node,
                values: args,
                bool_input: step.bool_input,
            },
            self.opset,
        )
    }
}

/// ONNX `Shape`: the dims of a value, as a small value (`start`/`end` pick a
/// range of them).
fn shape(node: &Node, x: Option<Arg<'_>>) -> Result<Vec<Value>, Error> {
    let dims: Vec<i64> = match x {
        Some(Arg::Host(t)) => t.shape().iter().map(|&d| i64::from(d)).collect(),
        Some(Arg::Small(c)) => c.shape.iter().map(|&d| d as i64).collect(),
        None => return Err(Error::InvalidArgument("Shape has no input".into())),
    };
    let rank = dims.len();
    let (s, e) =
        crate::small::slice_bounds(rank, node.int("start", 0), node.int("end", rank as i64));
    Ok(vec![Value::Small(Constant::of_ints(&dims[s..e]))])
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, HashMap};

    use edgeserve_onnx_graph::{Attr, Constant, DType, Node};

    use super::{Static, Step};

    /// Steps and statics laid out by slot as `Plan::new` lays them out;
    /// weights are constants of their shape (the analysis reads shapes only).
    #[derive(Default)]
    pub(crate) struct Graph {
        pub(crate) slots: HashMap<String, usize>,
        pub(crate) steps: Vec<Step>,
        pub(crate) statics: HashMap<usize, Static>,
        count: usize,
    }

    impl Graph {
        pub(crate) fn slot(&mut self, name: &str) -> usize {
            let next = self.slots.len();
            *self.slots.entry(name.to_string()).or_insert(next)
        }

        pub(crate) fn constant(&mut self, shape: &[usize], data: &[f64]) -> String {
            self.count += 1;
            let name = format!("c{}", self.count);
            let slot = self.slot(&name);
            let c = Constant {
                dtype: DType::F32,
                shape: shape.to_vec(),
                data: data.to_vec(),
            };
            self.statics.insert(slot, Static::Const(c));
            name
        }

        pub(crate) fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
            self.count += 1;
            let out = format!("{op}_{}", self.count);
            let node = Node {
                name: out.clone(),
                op: op.to_string(),
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                outputs: vec![out.clone()],
                attrs: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
            };
            let step = Step {
                inputs: inputs.iter().map(|i| Some(self.slot(i))).collect(),
                outputs: vec![self.slot(&out)],
                node,
                small: false,
                bool_input: false,
                frees: vec![],
            };
            self.steps.push(step);
            out
        }
    }
}
