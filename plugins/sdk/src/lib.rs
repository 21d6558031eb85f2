//! Write [edgeserve](https://github.com/) model handlers in Rust.
//!
//! A model handler is a WebAssembly component (`wasm32-wasip2`) that declares
//! its inputs and outputs, looks up its weights once per instance and then
//! answers inference requests. All numeric data lives in **host-owned
//! tensors**: a [`Tensor`] is a handle, and every operation on it (`matmul`,
//! `softmax`, `layer_norm`, …) runs on the host's kernels — native SIMD on a
//! CPU node, compute shaders on a GPU node. Data crosses into the sandbox only
//! when the handler reads it ([`Tensor::to_f32_vec`] and friends).
//!
//! This crate wraps the generated bindings of the `edgeserve:handler` WIT
//! package so that a handler reads like model code:
//!
//! * [`Tensor`] — constructors ([`Tensor::from_f32`], [`Tensor::full`], …),
//!   operations as methods returning `Result<Tensor, Error>`, and readers;
//! * [`model`] — the model's weights, config parameters and asset files;
//! * [`nn`] — layers loaded from the weights by name ([`nn::Linear`],
//!   [`nn::LayerNorm`]);
//! * [`output`] — text streamed while a request runs
//!   ([`output::TextStream`]: UTF-8 boundaries, stop sequences, cancel);
//! * [`Model`] + [`export_model!`] — the handler itself;
//! * [`Request`], [`Output`], [`TensorSpec`] — inputs, outputs and metadata;
//!   typed, range-checked request parameters
//!   ([`Request::parameter_in_range`]).
//!
//! Every fallible call returns [`Error`] (an operation the host refused) or
//! [`InferError`] (what a request fails with); `?` converts the former into
//! the latter, so handler code rarely needs a `map_err`.
//!
//! # Example
//!
//! A complete handler for `y = x · W + b`, with `W` (`[in, out]`) and `b`
//! read from the model's `model.safetensors` as `weight` and `bias`:
//!
//! ```no_run
//! use edgeserve_sdk::nn::{self, Layout};
//! use edgeserve_sdk::{
//!     export_model, InferError, Model, ModelMetadata, Output, Request, TensorSpec,
//! };
//!
//! struct Linear {
//!     layer: nn::Linear,
//! }
//!
//! impl Model for Linear {
//!     fn metadata() -> ModelMetadata {
//!         ModelMetadata {
//!             inputs: vec![TensorSpec::new("x", "FP32", &[-1, 1])],
//!             outputs: vec![TensorSpec::new("y", "FP32", &[-1, 1])],
//!         }
//!     }
//!
//!     fn init() -> Result<Self, String> {
//!         Ok(Linear {
//!             layer: nn::Linear::load("", Layout::InOut)?,
//!         })
//!     }
//!
//!     fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
//!         let y = self.layer.forward(request.numeric("x")?)?;
//!         Ok(vec![Output::numeric("y", y)])
//!     }
//! }
//!
//! export_model!(Linear);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate
//! must be a `cdylib`); the resulting `.wasm` is the component the host
//! loads as `<repository>/<model>/<version>/model.wasm`.
//!
//! # Failure
//!
//! Return [`InferError::InvalidInput`] for a bad request (the client gets a
//! 400) and [`InferError::Internal`] for a handler failure (500). A panic traps
//! the instance: the request fails with a 500 and the host replaces the
//! instance, so panicking is an acceptable reaction to a broken invariant.

#![warn(missing_docs)]

mod parameter;
mod request;
mod tensor;

pub mod model;
pub mod nn;
pub mod output;

pub use parameter::FromParameter;
pub use request::{Output, Request, TensorSpec};
pub use tensor::{Conv2d, Element};

pub use bindings::edgeserve::handler::tensor::{
    BinaryOp, CompareOp, Dtype, PoolKind, ReduceOp, Tensor, UnaryOp,
};
pub use bindings::edgeserve::handler::types::{
    BytesTensor, ModelMetadata, ParameterValue, TensorData, TensorMetadata,
};

/// The raw bindings generated from the `edgeserve:handler` WIT package.
///
/// Handlers normally use the re-exports at the crate root instead; these are
/// here for anything the ergonomic API does not cover (for instance the free
/// functions in `bindings::edgeserve::handler::tensor`).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "model-handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_model_handler",
        default_bindings_module: "edgeserve_sdk::bindings",
        with: {
            "edgeserve:handler/tensor@0.1.5/error": crate::Error,
            "edgeserve:handler/types@0.1.5/infer-error": crate::InferError,
        },
    });
}

/// Why the host refused a tensor operation (the WIT `tensor.error`).
///
/// Converts into [`InferError::Internal`] (and into `String` for
/// [`Model::init`]), so `?` works in handler code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shapes do not fit the operation; the text names both shapes.
    Shape(String),
    /// The element type is not accepted by the operation.
    Dtype(String),
    /// An argument (axis, permutation, stride…) is out of range.
    InvalidArgument(String),
    /// The backend does not implement this combination.
    Unsupported(String),
    /// The host could not allocate memory for the result (or the request hit
    /// its tensor limit).
    OutOfMemory(String),
    /// The compute device was lost (GPU reset or removed).
    DeviceLost(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::Dtype(m) => write!(f, "dtype error: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::OutOfMemory(m) => write!(f, "out of memory: {m}"),
            Error::DeviceLost(m) => write!(f, "device lost: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(error: Error) -> String {
        error.to_string()
    }
}

/// Why a handler refused or failed a request (the WIT `types.infer-error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InferError {
    /// The request is wrong (bad text, option out of range…): HTTP 400.
    InvalidInput(String),
    /// The handler itself failed: HTTP 500.
    Internal(String),
}

impl InferError {
    /// An [`InferError::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        InferError::InvalidInput(message.into())
    }

    /// An [`InferError::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        InferError::Internal(message.into())
    }
}

impl std::fmt::Display for InferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InferError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            InferError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for InferError {}

impl From<Error> for InferError {
    /// A refused host operation is the handler's fault, not the client's.
    fn from(error: Error) -> Self {
        InferError::Internal(error.to_string())
    }
}

/// A model handler: what [`export_model!`] turns into a component.
///
/// The host creates a few instances of the component per model; each one
/// calls [`Model::init`] once and keeps the returned value for every
/// [`Model::infer`] it serves. Requests on one instance never overlap.
pub trait Model: Sized + 'static {
    /// The model's inputs and outputs (Open Inference Protocol metadata). The
    /// host validates each request's names, datatypes and shapes against it
    /// before calling [`Model::infer`].
    fn metadata() -> ModelMetadata;

    /// Sets up one instance: look up weights, parse assets, read parameters.
    /// An error keeps the instance (and so the model) from serving.
    fn init() -> Result<Self, String>;

    /// Answers one request.
    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError>;
}

/// Exports a [`Model`] implementation as the component's `handler`.
///
/// Use it once, at the root of a `cdylib` crate:
///
/// ```ignore
/// edgeserve_sdk::export_model!(MyModel);
/// ```
///
/// The instance returned by [`Model::init`] is kept for the lifetime of the
/// WebAssembly instance; `infer` before a successful `init` fails with
/// [`InferError::Internal`].
#[macro_export]
macro_rules! export_model {
    ($model:ty) => {
        const _: () = {
            struct __EdgeserveHandler;

            impl $crate::bindings::exports::edgeserve::handler::handler::Guest
                for __EdgeserveHandler
            {
                fn metadata() -> $crate::ModelMetadata {
                    <$model as $crate::Model>::metadata()
                }

                fn init() -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::init::<$model>()
                }

                fn infer(
                    request: $crate::__private::InferRequest,
                ) -> ::core::result::Result<$crate::__private::Vec<$crate::Output>, $crate::InferError>
                {
                    $crate::__private::infer::<$model>(request)
                }
            }

            $crate::bindings::__export_model_handler!(
                __EdgeserveHandler with_types_in $crate::bindings
            );
        };
    };
}

/// Support code for [`export_model!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    pub use crate::bindings::edgeserve::handler::types::InferRequest;
    pub use std::string::String;
    pub use std::vec::Vec;

    use crate::{InferError, Model, Output, Request};

    thread_local! {
        // A component instance is single-threaded and never re-entered, so one
        // slot per instance is all the state a handler needs.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// Runs [`Model::init`] and keeps the result for `infer`.
    pub fn init<M: Model>() -> Result<(), String> {
        let model = M::init()?;
        INSTANCE.with_borrow_mut(|slot| *slot = Some(Box::new(model)));
        Ok(())
    }

    /// Runs [`Model::infer`] on the instance kept by `init`.
    pub fn infer<M: Model>(request: InferRequest) -> Result<Vec<Output>, InferError> {
        INSTANCE.with_borrow(|slot| {
            let model = slot
                .as_ref()
                .and_then(|m| m.downcast_ref::<M>())
                .ok_or_else(|| InferError::internal("infer called before a successful init"))?;
            model.infer(Request::new(request))
        })
    }
}
