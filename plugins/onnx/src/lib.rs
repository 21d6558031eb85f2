//! The generic ONNX handler: serves a graph imported by `edgeserve import`
//! with no model-specific code.
//!
//! The model folder holds `graph.json` (the nodes, inline constants and
//! input/output specs, see `edgeserve-onnx-graph`) and `model.safetensors`
//! (the float initializers, shared read-only by every instance like any
//! model's weights). At `init` the handler checks the graph against the same
//! rules as the importer, folds every node whose inputs are constants, and
//! keeps the rest as a plan; a request runs the plan's nodes in order on the
//! host's tensor ops, computing shape arithmetic on small values itself. A
//! padded batch through a BERT-like encoder runs on its real tokens only
//! ([`pack`]).

mod conv;
mod host;
mod index;
mod pack;
mod pad;
mod plan;
mod recurrent;
mod resize;
mod small;

use std::sync::OnceLock;

use edgeserve_onnx_graph::{GRAPH_ASSET, Graph};
use edgeserve_sdk::{
    InferError, Model, ModelMetadata, Output, Request, TensorSpec, export_model, model,
};

use crate::plan::Plan;

/// The graph of this model, parsed once per instance (`metadata` and `init`
/// both need it).
fn graph() -> Result<&'static Graph, String> {
    static GRAPH: OnceLock<Result<Graph, String>> = OnceLock::new();
    GRAPH
        .get_or_init(|| {
            let bytes = model::asset_required(GRAPH_ASSET)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{GRAPH_ASSET} is not a graph asset: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// An instance: the plan of one graph.
struct Onnx {
    plan: Plan,
}

impl Model for Onnx {
    fn metadata() -> ModelMetadata {
        let spec = |s: &edgeserve_onnx_graph::ValueSpec| {
            TensorSpec::new(
                s.name.clone(),
                s.dtype.oip_name().unwrap_or("BYTES"),
                &s.shape,
            )
        };
        match graph() {
            Ok(g) => ModelMetadata {
                inputs: g.inputs.iter().map(spec).collect(),
                outputs: g.outputs.iter().map(spec).collect(),
            },
            // `init` already failed with this error, so the model never loads.
            Err(_) => ModelMetadata {
                inputs: vec![],
                outputs: vec![],
            },
        }
    }

    fn init() -> Result<Self, String> {
        Ok(Onnx {
            plan: Plan::new(graph()?)?,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        self.plan.run(request)
    }
}

export_model!(Onnx);
