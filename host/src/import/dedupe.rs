//! Repeated computations merged at import.
//!
//! Exports repeat work per layer that depends on nothing per layer: each of
//! a BERT's attention layers turns the same boolean mask into the same
//! additive one (`Where(mask, 0, -inf)` with its own copies of the two
//! constants). Merging equal small constants, then nodes with the same op,
//! attributes and inputs, leaves one such value, computed once per request,
//! which every layer reads.

use std::collections::HashMap;

use edgeserve_onnx_graph::{Node, ValueSpec};

use super::tensor::Raw;

/// Constants up to this many elements are compared by value.
const MAX_COMPARED: usize = 64;

/// Merges equal small constants and equal nodes; returns how many nodes
/// were dropped.
pub fn merge(
    nodes: &mut Vec<Node>,
    tensors: &HashMap<String, Raw>,
    outputs: &[ValueSpec],
) -> usize {
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut names: Vec<&String> = tensors
        .iter()
        .filter(|(_, t)| t.numel() <= MAX_COMPARED)
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let mut first: HashMap<(String, &[usize], &[u8]), &String> = HashMap::new();
    for name in names {
        let t = &tensors[name];
        let key = (
            format!("{:?}", t.dtype),
            t.dims.as_slice(),
            t.bytes.as_slice(),
        );
        let kept = *first.entry(key).or_insert(name);
        if kept != name {
            renamed.insert(name.clone(), kept.clone());
        }
    }

    let is_output = |v: &String| outputs.iter().any(|o| &o.name == v);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let before = nodes.len();
    nodes.retain_mut(|node| {
        for input in &mut node.inputs {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
        let key = format!(
            "{}|{}|{}|{}",
            node.op,
            node.inputs.join(","),
            node.outputs.len(),
            serde_json::to_string(&node.attrs).expect("attributes serialise")
        );
        // Random ops give a new value each time they run.
        let pure = !node.op.starts_with("Random");
        match seen.get(&key) {
            Some(earlier) if pure && !node.outputs.iter().any(is_output) => {
                for (o, e) in node.outputs.iter().zip(earlier) {
                    renamed.insert(o.clone(), e.clone());
                }
                false
            }
            Some(_) => true,
            None => {
                seen.insert(key, node.outputs.clone());
                true
            }
        }
    });
    before - nodes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::node;

    #[test]
    fn equal_constants_and_nodes_merge_and_random_ones_do_not() {
        let tensors = HashMap::from([
            ("zero_a".to_string(), Raw::from_floats(vec![1], &[0.0])),
            ("zero_b".to_string(), Raw::from_floats(vec![1], &[0.0])),
            (
                "low".to_string(),
                Raw::from_floats(vec![1], &[f32::NEG_INFINITY]),
            ),
            ("other".to_string(), Raw::from_floats(vec![1], &[1.0])),
        ]);
        let mut nodes = vec![
            node("Where", &["mask", "zero_a", "low"], "add_a"),
            node("Where", &["mask", "zero_b", "low"], "add_b"),
            node("Where", &["mask", "other", "low"], "add_c"),
            node("Add", &["x", "add_b"], "y"),
            node("RandomNormalLike", &["x"], "r1"),
            node("RandomNormalLike", &["x"], "r2"),
        ];
        let outputs = [ValueSpec {
            name: "y".into(),
            dtype: edgeserve_onnx_graph::DType::F32,
            shape: vec![],
            symbols: vec![],
        }];
        assert_eq!(merge(&mut nodes, &tensors, &outputs), 1);
        let names: Vec<&str> = nodes.iter().map(|n| n.outputs[0].as_str()).collect();
        assert_eq!(names, ["add_a", "add_c", "y", "r1", "r2"]);
        assert_eq!(nodes[2].inputs, ["x", "add_a"]);
    }
}
