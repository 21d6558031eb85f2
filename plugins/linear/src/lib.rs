//! The classic `y = 0.1 · x + 0.3`, computed as `x · weight + bias` on host
//! ops with both parameters read from `model.safetensors`
//! (`weight`: FP32 [1, 1] = 0.1, `bias`: FP32 [1] = 0.3; see
//! `make_weights.py`).
//!
//! Input `x`: FP32 [-1, 1]; output `y`: FP32 [-1, 1].

use edgeserve_sdk::{
    InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, export_model, model,
};

/// The model: its two parameters, looked up once per instance.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Model for Linear {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("x", "FP32", &[-1, 1])],
            outputs: vec![TensorSpec::new("y", "FP32", &[-1, 1])],
        }
    }

    fn init() -> Result<Self, String> {
        Ok(Linear {
            weight: model::weight("weight")?,
            bias: model::weight("bias")?,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let x = request.numeric("x")?;
        let y = x.matmul(&self.weight)?.add(&self.bias)?;
        Ok(vec![Output::numeric("y", y)])
    }
}

export_model!(Linear);
