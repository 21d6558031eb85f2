//! The graph asset of an imported ONNX model (`graph.json`) and the rules of
//! what the ONNX handler runs.
//!
//! `edgeserve import` turns a `model.onnx` into a model folder: float
//! initializers go to `model.safetensors` (shared by every instance like any
//! model's weights), small constants stay inline in the [`Graph`], and the
//! nodes keep their ONNX op names and attributes. The handler component
//! (plugins/onnx) parses the same [`Graph`] at `init`. Both call
//! [`unsupported`], so a graph the handler cannot run is refused at import
//! and again at load, with every offending node listed.

mod graph;
mod support;

pub use graph::{Attr, Constant, DType, Graph, Node, ValueSpec};
pub use support::{
    MAX_OPSET, MIN_OPSET, SUPPORTED_OPS, Unsupported, bool_values, small_values, unsupported,
};

/// The op `edgeserve import` fuses `MatMul` by a constant weight, `Add` of
/// its bias and an optional activation (attribute `activation`: `Relu`,
/// `Gelu`, `Tanh` or `Sigmoid`) into: the host's `linear`. With `transB=1`
/// the weight is stored `[out, in]`.
pub const LINEAR: &str = "edgeserve.Linear";

/// The op `edgeserve import` fuses scaled dot-product attention into
/// (`MatMul(q, Transpose(k)) → Mul/Div by a constant → Add mask → Softmax →
/// MatMul(·, v)`): the host's `attention`. Inputs `q`, the transpose's input,
/// `v` and the optional mask; attributes `k_perm` (the permutation that
/// makes `k` `[..., lk, d]`) and `scale`.
pub const ATTENTION: &str = "edgeserve.Attention";

/// The asset file name of the graph inside a model's version folder.
pub const GRAPH_ASSET: &str = "graph.json";
