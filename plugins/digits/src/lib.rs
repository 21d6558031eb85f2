//! A multi-layer perceptron for scikit-learn's 8×8 handwritten digits
//! (`sklearn.datasets.load_digits`), trained by `train.py`.
//!
//! Input `pixels`: FP32 [-1, 64], raw pixel intensities 0..16 (the 1/16
//! scaling used in training is baked into `fc1.weight`).
//! Outputs `probabilities`: FP32 [-1, 10] and `label`: INT64 [-1].
//!
//! Weights follow the PyTorch `Linear` layout (`fcN.weight`: [out, in],
//! `fcN.bias`: [out]), so each layer is the SDK's `Linear` with
//! `Layout::OutIn` (`x · Wᵀ + b`), its ReLU applied in the same host pass.

use edgeserve_sdk::nn::{Layout, Linear};
use edgeserve_sdk::{
    InferError, Model, ModelMetadata, Output, Request, TensorSpec, UnaryOp, export_model,
};

/// 64 → 64 → 32 → 10, ReLU between layers, softmax at the end.
struct Digits {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Model for Digits {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("pixels", "FP32", &[-1, 64])],
            outputs: vec![
                TensorSpec::new("probabilities", "FP32", &[-1, 10]),
                TensorSpec::new("label", "INT64", &[-1]),
            ],
        }
    }

    fn init() -> Result<Self, String> {
        Ok(Digits {
            fc1: Linear::load("fc1", Layout::OutIn)?.with_activation(UnaryOp::Relu),
            fc2: Linear::load("fc2", Layout::OutIn)?.with_activation(UnaryOp::Relu),
            fc3: Linear::load("fc3", Layout::OutIn)?,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let pixels = request.numeric("pixels")?;
        let h1 = self.fc1.forward(pixels)?;
        let h2 = self.fc2.forward(&h1)?;
        let logits = self.fc3.forward(&h2)?;
        let probabilities = logits.softmax(-1)?;
        let label = logits.argmax(-1, false)?;
        Ok(vec![
            Output::numeric("probabilities", probabilities),
            Output::numeric("label", label),
        ])
    }
}

export_model!(Digits);
