//! A handler written against the previous contract, `edgeserve:handler@0.1.1`
//! (`wit/` here is `wit/edgeserve.wit` as of that version, frozen), with
//! bare wit-bindgen and no SDK, so it stays as it was built then. It imports
//! 0.1.1's `output` as well as `tensor`; the host must keep serving it:
//! y = 3·x on input `x`.

wit_bindgen::generate!({
    path: "wit",
    world: "model-handler",
});

use edgeserve::handler::types::{
    InferRequest, ModelMetadata, NamedTensor, TensorData, TensorMetadata,
};
use edgeserve::handler::{output, tensor};
use exports::edgeserve::handler::handler::{Guest, InferError};

struct Handler;

fn spec(name: &str) -> TensorMetadata {
    TensorMetadata {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![-1],
    }
}

impl Guest for Handler {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
        }
    }

    fn init() -> Result<(), String> {
        Ok(())
    }

    fn infer(request: InferRequest) -> Result<Vec<NamedTensor>, InferError> {
        if output::streaming() {
            return Err(InferError::InvalidInput(
                "this handler does not stream".into(),
            ));
        }
        let Some(TensorData::Numeric(x)) = request.inputs.into_iter().next().map(|i| i.data) else {
            return Err(InferError::InvalidInput("x must be numeric".into()));
        };
        let y = tensor::affine(&x, 3.0, 0.0)
            .map_err(|e| InferError::Internal(format!("affine: {e:?}")))?;
        Ok(vec![NamedTensor {
            name: "y".into(),
            data: TensorData::Numeric(y),
        }])
    }
}

export!(Handler);
