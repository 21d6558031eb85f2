//! A handler written against the previous contract, `edgeserve:handler@0.1.4`
//! (`wit/` here is `wit/edgeserve.wit` as of that version, frozen), with
//! bare wit-bindgen and no SDK, so it stays as it was built then. It calls
//! 0.1.4's `conv2d-fused` with a 1×1 kernel of 2 and its output clipped
//! below at 0: y = max(2·x, 0) on input `x`.

wit_bindgen::generate!({
    path: "wit",
    world: "model-handler",
});

use edgeserve::handler::tensor::{self, Conv2dOptions, Dtype, Tensor};
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
        // [n, c, h, w] with one channel of one row.
        let image = tensor::reshape(&x, &[1, 1, 1, n as i32]).map_err(failed("reshape"))?;
        let weight = Tensor::full(Dtype::F32, &[1, 1, 1, 1], 2.0).map_err(failed("full"))?;
        let options = Conv2dOptions {
            stride: (1, 1),
            padding_begin: (0, 0),
            padding_end: (0, 0),
            dilation: (1, 1),
            groups: 1,
            clip_lo: Some(0.0),
            clip_hi: None,
        };
        let y =
            tensor::conv2d_fused(&image, &weight, None, options).map_err(failed("conv2d-fused"))?;
        let y = tensor::reshape(&y, &[n as i32]).map_err(failed("reshape"))?;
        Ok(vec![NamedTensor {
            name: "y".into(),
            data: TensorData::Numeric(y),
        }])
    }
}

export!(Handler);
