//! Layers loaded from the model's weights by name, as PyTorch's `state_dict`
//! names them: a layer at `prefix` keeps its parameters in `{prefix}.weight`
//! and `{prefix}.bias`.
//!
//! ```no_run
//! use edgeserve_sdk::nn::{Layout, LayerNorm, Linear};
//! use edgeserve_sdk::{InferError, Tensor, UnaryOp};
//!
//! # fn run(x: &Tensor) -> Result<(), InferError> {
//! // A PyTorch MLP block: `fc1.weight` is [hidden, in], `fc1.bias` [hidden].
//! let fc1 = Linear::load("fc1", Layout::OutIn)?.with_activation(UnaryOp::Relu);
//! let norm = LayerNorm::load("norm", 1e-5)?;
//! let y = norm.forward(&fc1.forward(x)?)?;
//! # Ok(()) }
//! ```

use crate::bindings::edgeserve::handler::tensor as ops;
use crate::{Error, Tensor, UnaryOp, model};

/// How a [`Linear`] layer's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[out, in]`, as PyTorch's `nn.Linear` stores it: the layer computes
    /// `x · Wᵀ + b`.
    OutIn,
    /// `[in, out]`, as GPT-2's `Conv1D` (or a plain `x · W` matrix) stores
    /// it: the layer computes `x · W + b`.
    InOut,
}

/// A fully connected layer, `activation(x · W + b)`, run as one fused host
/// `linear` op: the bias and activation are applied as the product is
/// written.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    layout: Layout,
    activation: Option<UnaryOp>,
}

impl Linear {
    /// Looks up the layer's weight `{prefix}.weight` (2-D, stored as
    /// `layout`) and bias `{prefix}.bias` (`[out]`); with an empty `prefix`,
    /// plain `weight` and `bias`. The layer has no activation until
    /// [`Linear::with_activation`] gives it one.
    pub fn load(prefix: &str, layout: Layout) -> Result<Linear, Error> {
        let weight_name = parameter_name(prefix, "weight");
        let (weight, [rows, cols]) = model::weight_2d(&weight_name)?;
        let out = match layout {
            Layout::OutIn => rows,
            Layout::InOut => cols,
        };
        let bias_name = parameter_name(prefix, "bias");
        let bias = model::weight(&bias_name)?;
        if bias.shape() != [out] {
            return Err(Error::Shape(format!(
                "weight {bias_name} is {:?}, not [{out}] (the outputs of {weight_name}, {:?} as {layout:?})",
                bias.shape(),
                [rows, cols],
            )));
        }
        Ok(Linear {
            weight,
            bias,
            layout,
            activation: None,
        })
    }

    /// The same layer with `activation` applied to its output, in the same
    /// host pass as the product.
    pub fn with_activation(self, activation: UnaryOp) -> Linear {
        Linear {
            activation: Some(activation),
            ..self
        }
    }

    /// `activation(x · W + b)` for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        let transpose = self.layout == Layout::OutIn;
        ops::linear(
            x,
            &self.weight,
            transpose,
            Some(&self.bias),
            self.activation,
        )
    }
}

/// Layer normalization over the last axis with a learned scale `γ`
/// (`{prefix}.weight`) and shift `β` (`{prefix}.bias`), as PyTorch's
/// `nn.LayerNorm` names them.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Looks up `{prefix}.weight` and `{prefix}.bias`; `eps` is added to the
    /// variance, as the model was trained with.
    pub fn load(prefix: &str, eps: f32) -> Result<LayerNorm, Error> {
        Ok(LayerNorm {
            gamma: model::weight(&parameter_name(prefix, "weight"))?,
            beta: model::weight(&parameter_name(prefix, "bias"))?,
            eps,
        })
    }

    /// `x` normalized over its last axis, then `* γ + β`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        x.layer_norm(Some(&self.gamma), Some(&self.beta), self.eps)
    }
}

/// The weight name of a layer parameter: `{prefix}.{name}`, or `name` alone
/// for a layer at the root (an empty `prefix`).
fn parameter_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
