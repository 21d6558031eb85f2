//! The `{{name}}` model handler: y = 2·x + 1, computed on host kernels.

use edgeserve_sdk::{InferError, Model, ModelMetadata, Output, Request, TensorSpec, export_model};

struct {{class}};

impl Model for {{class}} {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("x", "FP32", &[-1])],
            outputs: vec![TensorSpec::new("y", "FP32", &[-1])],
        }
    }

    /// Runs once per instance: look up weights here with `model::weight`.
    fn init() -> Result<Self, String> {
        Ok({{class}})
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        // One host pass: x · 2 + 1.
        let y = request.numeric("x")?.affine(2.0, 1.0)?;
        Ok(vec![Output::numeric("y", y)])
    }
}

export_model!({{class}});
