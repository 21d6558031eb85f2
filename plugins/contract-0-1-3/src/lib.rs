//! A handler written against the previous contract, `edgeserve:handler@0.1.3`
//! (`wit/` here is `wit/edgeserve.wit` as of that version, frozen), with
//! bare wit-bindgen and no SDK, so it stays as it was built then. It calls
//! 0.1.3's `attention-varlen` with every token a sequence of its own, which
//! attends to itself alone: y = 2·x on input `x`.

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
        fn failed(op: &'static str) -> impl Fn(tensor::Error) -> InferError {
            move |e| InferError::Internal(format!("{op}: {e:?}"))
        }
        let n = x.shape().iter().product::<u32>();
        // [tokens, heads, d] with one head of one dimension.
        let tokens = tensor::reshape(&x, &[n as i32, 1, 1]).map_err(failed("reshape"))?;
        let values = tensor::affine(&tokens, 2.0, 0.0).map_err(failed("affine"))?;
        let offsets: Vec<u32> = (0..=n).collect();
        let y = tensor::attention_varlen(&tokens, &tokens, &values, &offsets, None, false)
            .map_err(failed("attention-varlen"))?;
        let y = tensor::reshape(&y, &[n as i32]).map_err(failed("reshape"))?;
        Ok(vec![NamedTensor {
            name: "y".into(),
            data: TensorData::Numeric(y),
        }])
    }
}

export!(Handler);
