//! What the ONNX handler runs: the op table and the checks every graph
//! passes at import and again at load.

use std::collections::BTreeSet;
use std::fmt;

use crate::graph::{Attr, Graph, Node};

/// Lowest default-domain opset the handler accepts.
pub const MIN_OPSET: i64 = 7;
/// Highest default-domain opset the handler accepts.
pub const MAX_OPSET: i64 = 21;

/// Every op the handler runs, with the limits it places on it. The README's
/// list of supported ops is printed from this table
/// (`edgeserve import --list-ops`), so the two cannot drift.
pub const SUPPORTED_OPS: &[(&str, &str)] = &[
    ("Abs", ""),
    ("Add", ""),
    ("And", "booleans held as 0/1 on the host"),
    ("ArgMax", "select_last_index=0"),
    ("ArgMin", "select_last_index=0"),
    (
        "AveragePool",
        "2-D, ceil_mode=0, no dilation, padding excluded from the count",
    ),
    (
        "BatchNormalization",
        "folded into the Conv before it at import",
    ),
    (
        "Cast",
        "to FLOAT, FLOAT16, INT32, INT64, UINT8, BOOL (booleans held as 0/1 on the host)",
    ),
    ("Clip", ""),
    ("Concat", ""),
    ("Constant", "folded at import"),
    ("ConstantOfShape", "shape arithmetic"),
    ("Ceil", "shape arithmetic"),
    ("Conv", "1-D and 2-D"),
    (
        "ConvTranspose",
        "1-D and 2-D, explicit pads (no output_shape, auto_pad NOTSET or VALID)",
    ),
    ("CumSum", "sums in f32 (integers exact up to 2^24)"),
    ("Div", ""),
    ("Dropout", "inference: identity"),
    ("Elu", ""),
    ("Equal", "booleans held as 0/1 on the host"),
    ("Greater", "booleans held as 0/1 on the host"),
    ("GreaterOrEqual", "booleans held as 0/1 on the host"),
    ("Erf", ""),
    ("Exp", ""),
    ("Expand", "target shape known at run time"),
    ("Flatten", ""),
    ("Floor", "shape arithmetic"),
    (
        "GRU",
        "default activations, layout=0, whole sequences (no sequence_lens)",
    ),
    (
        "Gather",
        "indices in range (an index out of range fails the request)",
    ),
    (
        "GatherElements",
        "fewer than 2^24 elements; an index out of range fails the request",
    ),
    ("Gelu", "approximate none or tanh"),
    ("Gemm", "transA=0"),
    ("GlobalAveragePool", ""),
    ("GlobalMaxPool", ""),
    ("HardSigmoid", ""),
    ("HardSwish", ""),
    ("Identity", ""),
    ("IsNaN", "booleans held as 0/1 on the host"),
    (
        "LSTM",
        "default activations, input_forget=0, layout=0, whole sequences (no sequence_lens)",
    ),
    ("LayerNormalization", "over the last axis"),
    ("LeakyRelu", ""),
    ("Less", "booleans held as 0/1 on the host"),
    ("LessOrEqual", "booleans held as 0/1 on the host"),
    ("Log", ""),
    ("LogSoftmax", ""),
    ("MatMul", ""),
    ("Max", ""),
    ("MaxPool", "2-D, ceil_mode=0, no dilation, one output"),
    ("Min", ""),
    ("Mish", ""),
    ("Mod", "shape arithmetic"),
    ("Mul", ""),
    ("Neg", ""),
    ("Not", "booleans held as 0/1 on the host"),
    ("Or", "booleans held as 0/1 on the host"),
    ("PRelu", ""),
    (
        "Pad",
        "modes constant, edge, reflect and wrap; pads and value constant or shape arithmetic",
    ),
    ("Pow", ""),
    (
        "RNN",
        "default activation, layout=0, whole sequences (no sequence_lens)",
    ),
    ("Range", "shape arithmetic"),
    ("Reciprocal", ""),
    ("ReduceL2", ""),
    ("ReduceMax", ""),
    ("ReduceMean", ""),
    ("ReduceMin", ""),
    ("ReduceSum", ""),
    ("Relu", ""),
    ("Reshape", "allowzero=0"),
    (
        "Resize",
        "nearest and linear, no antialias; scales or sizes constant or shape arithmetic",
    ),
    ("Round", "shape arithmetic"),
    ("Selu", ""),
    ("Shape", ""),
    ("Sigmoid", ""),
    ("Slice", ""),
    ("Softmax", ""),
    ("Softplus", ""),
    ("Softsign", ""),
    ("Split", "split sizes constant or shape arithmetic"),
    ("Sqrt", ""),
    ("Squeeze", ""),
    ("Sub", ""),
    ("Sum", ""),
    ("Tanh", ""),
    ("TopK", "last axis, largest=1, sorted=1"),
    ("Transpose", ""),
    ("Trilu", ""),
    ("Unsqueeze", ""),
    ("Where", ""),
    (
        "ai.onnx.ml.ArrayFeatureExtractor",
        "constant data (class labels)",
    ),
    (
        crate::ATTENTION,
        "fused at import: MatMul(q, Transpose k), scale, Add of the mask, Softmax, MatMul by v",
    ),
    (
        crate::LINEAR,
        "fused at import: MatMul by a 2-D constant + Add of its bias (+ Relu/Gelu/Tanh/Sigmoid)",
    ),
];

/// Ops that only run on small values the handler computes itself (shape
/// arithmetic), because the host has no kernel for them yet.
const SMALL_ONLY: &[&str] = &["Ceil", "Floor", "Mod", "Range", "Round"];

/// Ops that compute on small values in the handler when every input is
/// small, and otherwise run on the host.
const SMALL_CAPABLE: &[&str] = &[
    "Add",
    "And",
    "Cast",
    "Ceil",
    "Concat",
    "ConstantOfShape",
    "Div",
    "Equal",
    "Floor",
    "Gather",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "Less",
    "LessOrEqual",
    "Mod",
    "Mul",
    "Not",
    "Or",
    "Range",
    "Reshape",
    "Round",
    "Slice",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
    "Where",
    "ai.onnx.ml.ArrayFeatureExtractor",
];

/// One reason a graph cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The node's name, or empty for a problem of the whole graph.
    pub node: String,
    /// The node's op, or empty for a problem of the whole graph.
    pub op: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "node {:?} ({}): {}", self.node, self.op, self.reason)
        }
    }
}

/// Which values are small (constants and shape arithmetic computed in the
/// handler, never sent to the host), by name: constants, `Shape` outputs, and
/// outputs of `SMALL_CAPABLE` nodes whose inputs are all small.
pub fn small_values(graph: &Graph) -> BTreeSet<String> {
    let mut small: BTreeSet<String> = graph.constants.keys().cloned().collect();
    for node in &graph.nodes {
        let all_small = node
            .inputs
            .iter()
            .all(|i| i.is_empty() || small.contains(i));
        if node.op == "Shape" || (SMALL_CAPABLE.contains(&node.op.as_str()) && all_small) {
            small.extend(node.outputs.iter().cloned());
        }
    }
    small
}

/// Which values hold booleans (ONNX `BOOL`), by name: outputs of
/// comparisons, logic ops and casts to `BOOL`, and of the ops that move
/// their first input's elements. On the host a boolean is a 0/1 float.
pub fn bool_values(graph: &Graph) -> BTreeSet<String> {
    let mut bools: BTreeSet<String> = graph
        .constants
        .iter()
        .filter(|(_, c)| c.dtype == crate::DType::Bool)
        .map(|(name, _)| name.clone())
        .collect();
    for node in &graph.nodes {
        let from = |i: usize| node.input(i).is_some_and(|name| bools.contains(name));
        let is_bool = match node.op.as_str() {
            "Cast" => node.int("to", 0) == i64::from(crate::DType::Bool.onnx_code()),
            "Equal" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual" | "And" | "Or"
            | "Not" | "IsNaN" => true,
            "Where" => from(1),
            "Reshape" | "Flatten" | "Gather" | "Unsqueeze" | "Squeeze" | "Expand" | "Identity"
            | "Transpose" | "Slice" | "Concat" | "Split" | "Pad" | "GatherElements" | "Trilu" => {
                from(0)
            }
            _ => false,
        };
        if is_bool {
            bools.extend(node.outputs.iter().cloned());
        }
    }
    bools
}

/// Every reason `graph` cannot be served, in node order; empty when it can.
pub fn unsupported(graph: &Graph) -> Vec<Unsupported> {
    let mut problems = Vec::new();
    let whole = |reason: String| Unsupported {
        node: String::new(),
        op: String::new(),
        reason,
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&graph.opset) {
        problems.push(whole(format!(
            "opset {} is out of the supported range {MIN_OPSET}..={MAX_OPSET}",
            graph.opset
        )));
    }
    for spec in graph.inputs.iter().chain(&graph.outputs) {
        if spec.dtype.oip_name().is_none() {
            problems.push(whole(format!(
                "graph input/output {:?} has element type {:?}, which a request cannot carry",
                spec.name, spec.dtype
            )));
        }
    }
    let small = small_values(graph);
    let mut defined: BTreeSet<&str> = graph
        .inputs
        .iter()
        .map(|s| s.name.as_str())
        .chain(graph.weights.iter().map(String::as_str))
        .chain(graph.constants.keys().map(String::as_str))
        .collect();
    for node in &graph.nodes {
        let mut problem = |reason: String| {
            problems.push(Unsupported {
                node: node.name.clone(),
                op: node.op.clone(),
                reason,
            })
        };
        for input in node.inputs.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(input.as_str()) {
                problem(format!("input {input:?} is not produced before this node"));
            }
        }
        if let Err(reason) = check(node, graph, &small) {
            problem(reason);
        }
        defined.extend(node.outputs.iter().map(String::as_str));
    }
    for output in &graph.outputs {
        if !defined.contains(output.name.as_str()) {
            problems.push(whole(format!(
                "graph output {:?} is produced by no node",
                output.name
            )));
        }
    }
    problems
}

/// The limits of one op, beyond its being in [`SUPPORTED_OPS`].
fn check(node: &Node, graph: &Graph, small: &BTreeSet<String>) -> Result<(), String> {
    let (op, opset) = (node.op.as_str(), graph.opset);
    if !SUPPORTED_OPS.iter().any(|(name, _)| *name == op) {
        return Err("op is not supported".into());
    }
    let attr_is = |name: &str, allowed: i64| {
        let v = node.int(name, allowed);
        if v == allowed {
            Ok(())
        } else {
            Err(format!(
                "attribute {name}={v} is not supported (only {allowed})"
            ))
        }
    };
    let no_dilation = || match node.ints("dilations") {
        Some(d) if d.iter().any(|&x| x != 1) => Err(format!("dilations {d:?} are not supported")),
        _ => Ok(()),
    };
    let explicit_pads = || match node.string("auto_pad") {
        None | Some("NOTSET") => Ok(()),
        Some(other) => Err(format!(
            "auto_pad={other} is not supported (only explicit pads)"
        )),
    };
    let one_or_two_d = || match node.ints("kernel_shape") {
        Some(k) if !(1..=2).contains(&k.len()) => {
            Err(format!("kernel_shape {k:?} is not 1-D or 2-D"))
        }
        _ => Ok(()),
    };
    let two_d = || match node.ints("kernel_shape") {
        Some(k) if k.len() != 2 => Err(format!("kernel_shape {k:?} is not 2-D")),
        _ => Ok(()),
    };
    let symmetric = || match node.ints("pads") {
        Some(p) if p.len() != 4 || p[0] != p[2] || p[1] != p[3] => {
            Err(format!("pads {p:?} are not 2-D and symmetric"))
        }
        _ => Ok(()),
    };
    let from_request = |i: usize| node.input(i).filter(|name| !small.contains(*name));
    if SMALL_ONLY.contains(&op)
        && let Some(input) = (0..node.inputs.len()).find_map(from_request)
    {
        return Err(format!(
            "runs only on shape arithmetic, but input {input:?} is computed from request data"
        ));
    }
    match op {
        "ArgMax" | "ArgMin" => attr_is("select_last_index", 0),
        "BatchNormalization" => Err(
            "only supported right after a Conv with constant weights, where it is folded".into(),
        ),
        "Constant" => Err("not folded at import".into()),
        "LSTM" | "GRU" | "RNN" => {
            if node.input(4).is_some() {
                return Err(
                    "sequence_lens is not supported (every sequence runs the full length)".into(),
                );
            }
            let defaults: &[&str] = match op {
                "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
                "GRU" => &["Sigmoid", "Tanh"],
                _ => &["Tanh"],
            };
            match node.attrs.get("activations") {
                None => {}
                // The defaults spelled out, once per direction.
                Some(Attr::Strings(names))
                    if !names.is_empty()
                        && names.len() % defaults.len() == 0
                        && names.chunks(defaults.len()).all(|chunk| {
                            chunk
                                .iter()
                                .zip(defaults)
                                .all(|(a, b)| a.eq_ignore_ascii_case(b))
                        }) => {}
                Some(other) => {
                    return Err(format!(
                        "activations {other:?} are not supported (only the defaults {defaults:?})"
                    ));
                }
            }
            attr_is("input_forget", 0)?;
            attr_is("layout", 0)?;
            match node.string("direction") {
                None | Some("forward") | Some("reverse") | Some("bidirectional") => Ok(()),
                Some(other) => Err(format!("direction={other} is not supported")),
            }
        }
        "Conv" => one_or_two_d(),
        "ConvTranspose" => {
            one_or_two_d()?;
            if node.ints("output_shape").is_some() {
                return Err("output_shape is not supported (give pads)".into());
            }
            match node.string("auto_pad") {
                None | Some("NOTSET") | Some("VALID") => Ok(()),
                Some(other) => Err(format!(
                    "auto_pad={other} is not supported (only explicit pads or VALID)"
                )),
            }
        }
        "Pad" => match node.string("mode") {
            None | Some("constant") | Some("edge") | Some("reflect") | Some("wrap") => Ok(()),
            Some(other) => Err(format!("mode={other} is not supported")),
        },
        "Resize" => {
            attr_is("antialias", 0)?;
            let allowed = |name: &str, default: &str, values: &[&str]| {
                let v = node.string(name).unwrap_or(default);
                if values.contains(&v) {
                    Ok(())
                } else {
                    Err(format!("{name}={v} is not supported"))
                }
            };
            allowed("mode", "nearest", &["nearest", "linear"])?;
            allowed(
                "coordinate_transformation_mode",
                "half_pixel",
                &[
                    "half_pixel",
                    "pytorch_half_pixel",
                    "align_corners",
                    "asymmetric",
                    "tf_half_pixel_for_nearest",
                ],
            )?;
            allowed(
                "nearest_mode",
                "round_prefer_floor",
                &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
            )?;
            allowed("keep_aspect_ratio_policy", "stretch", &["stretch"])
        }
        "MaxPool" | "AveragePool" => {
            explicit_pads()?;
            two_d()?;
            symmetric()?;
            no_dilation()?;
            attr_is("ceil_mode", 0)?;
            attr_is("storage_order", 0)?;
            if node.outputs.len() > 1 {
                return Err("the indices output is not supported".into());
            }
            if op == "AveragePool"
                && node.int("count_include_pad", 0) != 0
                && node.ints("pads").is_some_and(|p| p.iter().any(|&x| x != 0))
            {
                return Err("count_include_pad=1 with padding is not supported".into());
            }
            Ok(())
        }
        "Gelu" => match node.string("approximate") {
            None | Some("none") | Some("tanh") => Ok(()),
            Some(other) => Err(format!("approximate={other} is not supported")),
        },
        "Gemm" => attr_is("transA", 0),
        "LayerNormalization" | "Dropout" if node.outputs.iter().skip(1).any(|o| !o.is_empty()) => {
            Err("only the first output is supported".into())
        }
        "Reshape" => attr_is("allowzero", 0),
        "ReduceL2" | "ReduceMax" | "ReduceMean" | "ReduceMin" | "ReduceSum" => {
            attr_is("noop_with_empty_axes", 0)
        }
        "TopK" => {
            attr_is("largest", 1)?;
            attr_is("sorted", 1)?;
            attr_is("axis", -1)
        }
        "Cast" => match node.attrs.get("to") {
            Some(Attr::Int(code)) if crate::DType::from_onnx(*code as i32).is_some() => Ok(()),
            other => Err(format!("cast to {other:?} is not supported")),
        },
        "Slice" if opset < 10 => Err("Slice before opset 10 (attributes) is not supported".into()),
        _ => Ok(()),
    }
    .and_then(
        |()| match node.attrs.iter().find(|(_, a)| matches!(a, Attr::Other(_))) {
            Some((name, Attr::Other(kind))) => {
                Err(format!("attribute {name} of kind {kind} is not supported"))
            }
            _ => Ok(()),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Constant, DType, ValueSpec};

    fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> Node {
        Node {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
            attrs: BTreeMap::new(),
        }
    }

    fn graph(nodes: Vec<Node>) -> Graph {
        Graph {
            opset: 17,
            inputs: vec![ValueSpec {
                name: "x".into(),
                dtype: DType::F32,
                shape: vec![-1, 4],
                symbols: vec![],
            }],
            outputs: vec![ValueSpec {
                name: "y".into(),
                dtype: DType::F32,
                shape: vec![-1, 4],
                symbols: vec![],
            }],
            weights: vec![],
            constants: BTreeMap::new(),
            nodes,
        }
    }

    #[test]
    fn every_unsupported_node_is_listed_with_its_name() {
        let g = graph(vec![
            node("a", "Relu", &["x"], "h"),
            node("nms", "NonMaxSuppression", &["h"], "i"),
            node("loop", "Loop", &["i"], "y"),
        ]);
        let problems: Vec<String> = unsupported(&g).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "node \"nms\" (NonMaxSuppression): op is not supported",
                "node \"loop\" (Loop): op is not supported",
            ]
        );
    }

    #[test]
    fn shape_only_ops_are_refused_on_request_data() {
        let ok = graph(vec![
            node("s", "Shape", &["x"], "s"),
            node("e", "Equal", &["s", "s"], "m"),
            node("r", "Relu", &["x"], "y"),
        ]);
        assert_eq!(unsupported(&ok), []);
        let bad = graph(vec![node("m", "Mod", &["x", "x"], "y")]);
        assert!(
            unsupported(&bad)[0].reason.contains("request data"),
            "{:?}",
            unsupported(&bad)
        );
    }

    #[test]
    fn masks_and_selects_run_on_request_data() {
        let scalar = |v: f64| Constant {
            dtype: DType::F32,
            shape: vec![],
            data: vec![v],
        };
        let mut g = graph(vec![
            node("m", "Cast", &["x"], "mask"),
            node("w", "Where", &["mask", "zero", "low"], "y"),
        ]);
        g.nodes[0].attrs.insert("to".into(), Attr::Int(9));
        g.constants.insert("zero".into(), scalar(0.0));
        g.constants
            .insert("low".into(), scalar(f64::from(f32::MIN)));
        assert_eq!(unsupported(&g), []);
        assert!(bool_values(&g).contains("mask"));
        assert!(
            !bool_values(&g).contains("y"),
            "a select of floats is a float"
        );
        // An infinite branch (a BERT mask's -inf) and request data in
        // both branches are a plain select on the host.
        g.constants.insert("low".into(), scalar(f64::NEG_INFINITY));
        assert_eq!(unsupported(&g), []);
        let mut g = graph(vec![
            node("eq", "Equal", &["x", "x"], "mask"),
            node("w", "Where", &["mask", "x", "x"], "y"),
        ]);
        g.nodes.push(node("g", "Greater", &["y", "x"], "z"));
        assert_eq!(unsupported(&g), []);
        assert!(bool_values(&g).contains("mask") && bool_values(&g).contains("z"));
    }

    #[test]
    fn recurrent_layers_take_the_default_activations_and_whole_sequences() {
        let strings = |v: &[&str]| Attr::Strings(v.iter().map(|s| s.to_string()).collect());
        let rnn = |attrs: &[(&str, Attr)], inputs: &[&str]| {
            let mut n = node("rnn", "RNN", inputs, "y");
            n.attrs = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let problems = unsupported(&graph(vec![n]));
            problems.first().map(|p| p.reason.clone())
        };
        assert_eq!(rnn(&[], &["x"]), None);
        // Torch writes the default out; a bidirectional layer twice.
        assert_eq!(rnn(&[("activations", strings(&["Tanh"]))], &["x"]), None);
        let both = strings(&["Tanh", "tanh"]);
        assert_eq!(rnn(&[("activations", both)], &["x"]), None);
        let relu = rnn(&[("activations", strings(&["Relu"]))], &["x"]).unwrap();
        assert!(relu.contains("activations"), "{relu}");
        let lens = rnn(&[], &["x", "", "", "", "x"]).unwrap();
        assert!(lens.contains("sequence_lens"), "{lens}");
        let layout = rnn(&[("layout", Attr::Int(1))], &["x"]).unwrap();
        assert!(layout.contains("layout=1"), "{layout}");
    }

    #[test]
    fn opset_and_ordering_are_checked() {
        let mut g = graph(vec![node("r", "Relu", &["later"], "y")]);
        g.opset = 99;
        let problems: Vec<String> = unsupported(&g).iter().map(ToString::to_string).collect();
        assert!(problems[0].contains("opset 99"), "{problems:?}");
        assert!(
            problems[1].contains("\"later\" is not produced"),
            "{problems:?}"
        );
    }
}
