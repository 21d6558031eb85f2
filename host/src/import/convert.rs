//! An ONNX `ModelProto` turned into a graph asset and its weights: constants
//! inlined, initializers split out, `BatchNormalization` folded into the
//! `Conv` before it, shape arithmetic resolved ([`super::shapes`]), repeated
//! nodes merged ([`super::dedupe`]), common patterns fused ([`super::fuse`]).

use std::collections::{BTreeMap, HashMap};

use edgeserve_onnx_graph::{Attr, DType, Graph, Node, ValueSpec};

use super::ImportError;
use super::dedupe;
use super::fuse::{Fused, Fuser};
use super::proto::{AttributeProto, ModelProto, ValueInfoProto, attribute_type};
use super::shapes::{self, Simplified};
use super::tensor::Raw;

/// A converted model: the graph asset and the tensors for `model.safetensors`.
pub struct Converted {
    /// The graph asset.
    pub graph: Graph,
    /// Weights by name.
    pub weights: BTreeMap<String, Raw>,
    /// The fusions made.
    pub fused: Fused,
    /// The shape arithmetic resolved.
    pub simplified: Simplified,
    /// Repeated nodes merged.
    pub merged: usize,
}

/// Converts `model`; the graph is not yet checked against what the handler
/// supports.
pub fn convert(model: &ModelProto) -> Result<Converted, ImportError> {
    let proto = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Corrupt("the model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| ImportError::Corrupt("the model imports no default-domain opset".into()))?;
    if let Some(sparse) = proto.sparse_initializer.first() {
        let name = sparse.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(ImportError::Corrupt(format!(
            "sparse initializer {name:?} is not supported"
        )));
    }
    let mut tensors: HashMap<String, Raw> = HashMap::new();
    for init in &proto.initializer {
        tensors.insert(init.name.clone(), Raw::decode(init)?);
    }
    let mut nodes = Vec::new();
    let mut aliases: HashMap<String, String> = HashMap::new();
    for (i, n) in proto.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{i}", n.op_type)
        } else {
            n.name.clone()
        };
        let op = match n.domain.as_str() {
            "" | "ai.onnx" => n.op_type.clone(),
            domain => format!("{domain}.{}", n.op_type),
        };
        if op == "Constant" {
            let value = constant_value(&name, &n.attribute)?;
            let output = n.output.first().cloned().unwrap_or_default();
            tensors.insert(output, value);
            continue;
        }
        // An alias of a constant (torch exports tied or equal initializers
        // so) is read as that constant: one weight, which fusions recognise.
        if op == "Identity"
            && let (Some(input), Some(output)) = (n.input.first(), n.output.first())
            && tensors.contains_key(input)
            && !proto.output.iter().any(|o| &o.name == output)
        {
            aliases.insert(output.clone(), input.clone());
            continue;
        }
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            attrs.insert(a.name.clone(), attr(a)?);
        }
        nodes.push(Node {
            name,
            op,
            inputs: n
                .input
                .iter()
                .map(|i| aliases.get(i).unwrap_or(i).clone())
                .collect(),
            outputs: n.output.clone(),
            attrs,
        });
    }
    let outputs: Vec<ValueSpec> = proto.output.iter().map(spec).collect::<Result<_, _>>()?;
    // Old exports list initializers among the inputs too.
    let inputs: Vec<ValueSpec> = proto
        .input
        .iter()
        .filter(|i| !tensors.contains_key(&i.name))
        .map(spec)
        .collect::<Result<_, _>>()?;
    fold_batch_norms(&mut nodes, &mut tensors, &outputs);
    let simplified = shapes::simplify(&mut nodes, &mut tensors, &inputs, &outputs);
    let merged = dedupe::merge(&mut nodes, &tensors, &outputs);
    let fused = Fuser {
        nodes: &mut nodes,
        tensors: &mut tensors,
        outputs: &outputs,
    }
    .run();
    let used: std::collections::HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .chain(outputs.iter().map(|o| o.name.as_str()))
        .collect();
    let mut constants = BTreeMap::new();
    let mut weights = BTreeMap::new();
    for (name, raw) in tensors {
        if !used.contains(name.as_str()) {
            continue;
        }
        if raw.inline() {
            constants.insert(name, raw.constant());
        } else {
            weights.insert(name, raw);
        }
    }
    let graph = Graph {
        opset,
        inputs,
        outputs,
        weights: weights.keys().cloned().collect(),
        constants,
        nodes,
    };
    Ok(Converted {
        graph,
        weights,
        fused,
        simplified,
        merged,
    })
}

/// The value of a `Constant` node.
fn constant_value(node: &str, attrs: &[AttributeProto]) -> Result<Raw, ImportError> {
    let a = attrs
        .first()
        .ok_or_else(|| ImportError::Corrupt(format!("Constant {node:?} has no value")))?;
    Ok(match a.name.as_str() {
        "value" => Raw::decode(a.t.as_ref().ok_or_else(|| {
            ImportError::Corrupt(format!("Constant {node:?} has an empty value"))
        })?)?,
        "value_float" => Raw::from_floats(vec![], &[a.f]),
        "value_floats" => Raw::from_floats(vec![a.floats.len()], &a.floats),
        "value_int" => Raw::from_ints(vec![], &[a.i]),
        "value_ints" => Raw::from_ints(vec![a.ints.len()], &a.ints),
        other => {
            return Err(ImportError::Corrupt(format!(
                "Constant {node:?} has unsupported attribute {other}"
            )));
        }
    })
}

/// One attribute; kinds the handler never reads are kept by kind name so
/// the check can name them.
fn attr(a: &AttributeProto) -> Result<Attr, ImportError> {
    Ok(match a.r#type {
        attribute_type::FLOAT => Attr::Float(a.f),
        attribute_type::INT => Attr::Int(a.i),
        attribute_type::STRING => Attr::String(String::from_utf8_lossy(&a.s).into_owned()),
        attribute_type::FLOATS => Attr::Floats(a.floats.clone()),
        attribute_type::INTS => Attr::Ints(a.ints.clone()),
        attribute_type::STRINGS => Attr::Strings(
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        attribute_type::TENSOR => match &a.t {
            Some(t) => Attr::Tensor(Raw::decode(t)?.constant()),
            None => Attr::Other("TENSOR".into()),
        },
        attribute_type::GRAPH => Attr::Other("GRAPH (a subgraph)".into()),
        other => Attr::Other(format!("type {other}")),
    })
}

/// A graph input or output as metadata: symbolic or unknown dims are -1.
fn spec(v: &ValueInfoProto) -> Result<ValueSpec, ImportError> {
    let tensor = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| {
            ImportError::Corrupt(format!("graph input/output {:?} is not a tensor", v.name))
        })?;
    let dtype = DType::from_onnx(tensor.elem_type).ok_or_else(|| ImportError::Dtype {
        tensor: v.name.clone(),
        code: tensor.elem_type,
    })?;
    let shape = tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| d.dim_value.filter(|&v| v > 0).unwrap_or(-1))
                .collect()
        })
        .unwrap_or_default();
    let symbols: Vec<Option<String>> = tensor
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| d.dim_param.clone().filter(|p| !p.is_empty()))
        .collect();
    Ok(ValueSpec {
        name: v.name.clone(),
        dtype,
        shape,
        symbols: if symbols.iter().any(Option::is_some) {
            symbols
        } else {
            vec![]
        },
    })
}

/// Folds each `BatchNormalization` that reads a `Conv` (whose output nothing
/// else reads, with constant weights) into that `Conv`:
/// `w' = w · s`, `b' = (b − mean) · s + β`, `s = γ / √(var + ε)` per output
/// channel. Others are left for the check to refuse.
fn fold_batch_norms(
    nodes: &mut Vec<Node>,
    tensors: &mut HashMap<String, Raw>,
    outputs: &[ValueSpec],
) {
    let mut i = 0;
    while i < nodes.len() {
        let bn = &nodes[i];
        let folded = (|| {
            if bn.op != "BatchNormalization" || bn.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return None;
            }
            let x = bn.input(0)?;
            let readers = nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == x))
                .count();
            if readers != 1 || outputs.iter().any(|o| o.name == x) {
                return None;
            }
            let conv = nodes
                .iter()
                .position(|n| n.op == "Conv" && n.outputs.first().map(String::as_str) == Some(x))?;
            let param = |k: usize| {
                tensors
                    .get(bn.input(k)?)
                    .filter(|t| t.dtype == DType::F32)
                    .map(Raw::floats)
            };
            let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
            let w = tensors
                .get(nodes[conv].input(1)?)
                .filter(|t| t.dtype == DType::F32)?;
            let channels = *w.dims.first()?;
            if [&gamma, &beta, &mean, &var]
                .iter()
                .any(|p| p.len() != channels)
            {
                return None;
            }
            let b = match nodes[conv].input(2) {
                Some(name) => tensors.get(name)?.floats(),
                None => vec![0.0; channels],
            };
            let eps = bn.float("epsilon", 1e-5);
            let scale: Vec<f32> = (0..channels)
                .map(|c| gamma[c] / (var[c] + eps).sqrt())
                .collect();
            let per = w.numel() / channels;
            let wf: Vec<f32> = w
                .floats()
                .iter()
                .enumerate()
                .map(|(k, v)| v * scale[k / per])
                .collect();
            let bf: Vec<f32> = (0..channels)
                .map(|c| (b[c] - mean[c]) * scale[c] + beta[c])
                .collect();
            Some((
                conv,
                Raw::from_floats(w.dims.clone(), &wf),
                Raw::from_floats(vec![channels], &bf),
            ))
        })();
        match folded {
            Some((conv, w, b)) => {
                let bn = nodes.remove(i);
                let conv = &mut nodes[if conv > i { conv - 1 } else { conv }];
                let (wn, bname) = (
                    format!("{}.folded.weight", conv.name),
                    format!("{}.folded.bias", conv.name),
                );
                tensors.insert(wn.clone(), w);
                tensors.insert(bname.clone(), b);
                conv.inputs = vec![conv.inputs[0].clone(), wn, bname];
                conv.outputs[0] = bn.outputs[0].clone();
            }
            None => i += 1,
        }
    }
}
