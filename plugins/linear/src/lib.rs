//! The classic `y = 0.1 · x + 0.3`, computed as `x · weight + bias` on host
//! ops with both parameters read from `model.safetensors`
//! (`weight`: FP32 [1, 1] = 0.1, `bias`: FP32 [1] = 0.3; see
//! `make_weights.py`).
//!
//! Input `x`: FP32 [-1, 1]; output `y`: FP32 [-1, 1].

use edgeserve_sdk::nn::{self, Layout};
use edgeserve_sdk::{InferError, Model, ModelMetadata, Output, Request, TensorSpec, export_model};

/// The model: one layer at the root of the weights (`weight`, `bias`),
/// looked up once per instance.
struct Linear {
    layer: nn::Linear,
}

impl Model for Linear {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("x", "FP32", &[-1, 1])],
            outputs: vec![TensorSpec::new("y", "FP32", &[-1, 1])],
        }
    }

    fn init() -> Result<Self, String> {
        // `weight` is a plain `x · W` matrix, [in, out].
        Ok(Linear {
            layer: nn::Linear::load("", Layout::InOut)?,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let y = self.layer.forward(request.numeric("x")?)?;
        Ok(vec![Output::numeric("y", y)])
    }
}

export_model!(Linear);
