//! A handler written against the previous contract, `edgeserve:handler@0.1.2`
//! (`wit/` here is `wit/edgeserve.wit` as of that version, frozen), with
//! bare wit-bindgen and no SDK, so it stays as it was built then. It calls
//! 0.1.2's `clip`; the host must keep serving it: y = clip(x, 0, 2) on
//! input `x`.

wit_bindgen::generate!({
    path: "wit",
    world: "model-handler",
});

use edgeserve::handler::tensor;
use edgeserve::handler::types::{
    InferRequest, ModelMetadata, NamedTensor, TensorData, TensorMetadata,
};
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
        let Some(TensorData::Numeric(x)) = request.inputs.into_iter().next().map(|i| i.data) else {
            return Err(InferError::InvalidInput("x must be numeric".into()));
        };
        let y = tensor::clip(&x, Some(0.0), Some(2.0))
            .map_err(|e| InferError::Internal(format!("clip: {e:?}")))?;
        Ok(vec![NamedTensor {
            name: "y".into(),
            data: TensorData::Numeric(y),
        }])
    }
}

export!(Handler);
