//! A multi-layer perceptron for scikit-learn's 8×8 handwritten digits
//! (`sklearn.datasets.load_digits`), trained by `train.py`.
//!
//! Input `pixels`: FP32 [-1, 64], raw pixel intensities 0..16 (the 1/16
//! scaling used in training is baked into `fc1.weight`).
//! Outputs `probabilities`: FP32 [-1, 10] and `label`: INT64 [-1].
//!
//! Weights follow the PyTorch `Linear` layout (`fcN.weight`: [out, in],
//! `fcN.bias`: [out]), so each layer is `x · Wᵀ + b` (`linear_t`), its
//! ReLU applied in the same host pass.

use edgeserve_sdk::{
    InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, UnaryOp, export_model,
    model,
};

/// One fully connected layer.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(name: &str) -> Result<Self, String> {
        Ok(Dense {
            weight: model::weight(&format!("{name}.weight"))?,
            bias: model::weight(&format!("{name}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor, activation: Option<UnaryOp>) -> Result<Tensor, InferError> {
        Ok(x.linear_t(&self.weight, Some(&self.bias), activation)?)
    }
}

/// 64 → 64 → 32 → 10, ReLU between layers, softmax at the end.
struct Digits {
    fc1: Dense,
    fc2: Dense,
    fc3: Dense,
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
            fc1: Dense::load("fc1")?,
            fc2: Dense::load("fc2")?,
            fc3: Dense::load("fc3")?,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let pixels = request.numeric("pixels")?;
        let h1 = self.fc1.forward(pixels, Some(UnaryOp::Relu))?;
        let h2 = self.fc2.forward(&h1, Some(UnaryOp::Relu))?;
        let logits = self.fc3.forward(&h2, None)?;
        let probabilities = logits.softmax(-1)?;
        let label = logits.argmax(-1, false)?;
        Ok(vec![
            Output::numeric("probabilities", probabilities),
            Output::numeric("label", label),
        ])
    }
}

export_model!(Digits);
