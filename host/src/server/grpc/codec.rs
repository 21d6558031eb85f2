//! `ModelInferRequest` into the typed request, outputs into
//! `ModelInferResponse`: tensors travel either as `raw_input_contents` /
//! `raw_output_contents` (little-endian elements; BYTES elements each a
//! 4-byte little-endian length and the bytes, as Triton sends them) or as
//! typed `contents`. The response answers in the encoding the request used.

use bytes::Bytes;
use edgeserve_tensor::{DType, HostBuffer, Tensor};

use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    infer_parameter::ParameterChoice,
};
use crate::protocol::{self, Datatype};
use crate::runtime::{Parameter, ParameterValue, Value};
use crate::server::error::ApiError;
use crate::server::infer::InferRequest;

/// What the response needs from the request beyond the typed request.
#[derive(Debug)]
pub struct Envelope {
    /// The client's request id, echoed back.
    pub id: String,
    /// Whether the request carried raw contents, so the response does too.
    pub raw: bool,
}

/// Decodes an inference message (model name and version aside, which the
/// caller has taken) into the typed request.
pub fn decode(message: ModelInferRequest) -> Result<(InferRequest, Envelope), ApiError> {
    let ModelInferRequest {
        id,
        parameters,
        inputs: tensors,
        outputs,
        raw_input_contents: raw,
        ..
    } = message;
    let is_raw = !raw.is_empty();
    if is_raw && raw.len() != tensors.len() {
        return Err(ApiError::bad_request(format!(
            "raw_input_contents has {} entries but the request has {} inputs; give one per input, in input order",
            raw.len(),
            tensors.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs: Vec<(String, Value)> = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        let name = tensor.name.clone();
        let err = |message: String| ApiError::bad_request(format!("input '{name}': {message}"));
        if inputs.iter().any(|(given, _)| *given == name) {
            return Err(err("given more than once".into()));
        }
        let value = match raw.next() {
            Some(bytes) if tensor.contents.is_none() => from_raw(&tensor, bytes),
            Some(_) => Err(
                "has typed contents although the request uses raw_input_contents; use one or the other"
                    .into(),
            ),
            None => from_contents(tensor),
        }
        .map_err(err)?;
        inputs.push((name, value));
    }
    let mut parameters = parameters
        .into_iter()
        .map(|(key, value)| {
            let value = parameter(&key, value).map_err(ApiError::bad_request)?;
            Ok((key, value))
        })
        .collect::<Result<Vec<Parameter>, ApiError>>()?;
    // A protobuf map has no order; the handler sees the same one each time.
    parameters.sort_by(|a, b| a.0.cmp(&b.0));
    let outputs = (!outputs.is_empty()).then(|| outputs.into_iter().map(|o| o.name).collect());
    let request = InferRequest {
        inputs,
        parameters,
        outputs,
    };
    Ok((request, Envelope { id, raw: is_raw }))
}

/// The element count and datatype an input declares.
fn declared(tensor: &InferInputTensor) -> Result<(Vec<usize>, usize, Datatype), String> {
    let shape = tensor
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| format!("shape {:?} has a negative dimension", tensor.shape))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let datatype = Datatype::parse(&tensor.datatype)?;
    Ok((shape, count, datatype))
}

fn from_raw(tensor: &InferInputTensor, bytes: Bytes) -> Result<Value, String> {
    let (shape, count, datatype) = declared(tensor)?;
    let Datatype::Numeric(dtype) = datatype else {
        let elements = protocol::split_bytes(&bytes)?;
        if elements.len() != count {
            return Err(format!(
                "shape {shape:?} needs {count} BYTES elements but its raw contents hold {}",
                elements.len()
            ));
        }
        return Ok(Value::Bytes { shape, elements });
    };
    let expected = count * dtype.size();
    if bytes.len() != expected {
        return Err(format!(
            "shape {shape:?} of {datatype} needs {expected} bytes of raw contents, got {}",
            bytes.len()
        ));
    }
    Tensor::from_received(dtype, &shape, bytes)
        .map(Value::Numeric)
        .map_err(|e| e.to_string())
}

fn from_contents(tensor: InferInputTensor) -> Result<Value, String> {
    let (shape, count, datatype) = declared(&tensor)?;
    let contents = tensor
        .contents
        .ok_or_else(|| "has no contents (and the request has no raw_input_contents)".to_string())?;
    let sized = |field: &str, len: usize| {
        if len == count {
            Ok(())
        } else {
            Err(format!(
                "shape {shape:?} needs {count} elements but {field} has {len}"
            ))
        }
    };
    let dtype = match datatype {
        Datatype::Bytes => {
            sized("bytes_contents", contents.bytes_contents.len())?;
            return Ok(Value::Bytes {
                shape,
                elements: contents.bytes_contents,
            });
        }
        Datatype::Numeric(dtype) => dtype,
    };
    let buffer = match dtype {
        DType::F32 => {
            sized("fp32_contents", contents.fp32_contents.len())?;
            HostBuffer::from_vec(contents.fp32_contents)
        }
        DType::I32 => {
            sized("int_contents", contents.int_contents.len())?;
            HostBuffer::from_vec(contents.int_contents)
        }
        DType::I64 => {
            sized("int64_contents", contents.int64_contents.len())?;
            HostBuffer::from_vec(contents.int64_contents)
        }
        DType::U8 => {
            sized("uint_contents", contents.uint_contents.len())?;
            let bytes = contents
                .uint_contents
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    u8::try_from(x).map_err(|_| format!("uint_contents[{i}] = {x} is not a UINT8"))
                })
                .collect::<Result<Vec<u8>, _>>()?;
            HostBuffer::from_vec(bytes)
        }
        DType::F16 => {
            return Err("FP16 has no typed contents field: send it in raw_input_contents".into());
        }
    };
    Tensor::from_host(dtype, &shape, buffer)
        .map(Value::Numeric)
        .map_err(|e| e.to_string())
}

fn parameter(key: &str, value: InferParameter) -> Result<ParameterValue, String> {
    Ok(match value.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => ParameterValue::Boolean(b),
        Some(ParameterChoice::Int64Param(i)) => ParameterValue::Integer(i),
        Some(ParameterChoice::Uint64Param(u)) => {
            ParameterValue::Integer(i64::try_from(u).map_err(|_| {
                format!("parameter '{key}': {u} does not fit a 64-bit signed integer")
            })?)
        }
        Some(ParameterChoice::DoubleParam(d)) => ParameterValue::Double(d),
        Some(ParameterChoice::StringParam(s)) => ParameterValue::Text(s),
        None => return Err(format!("parameter '{key}' has no value")),
    })
}

/// Encodes a model's outputs, raw when the request was (or when an output
/// is FP16, which has no typed field; the protocol forbids mixing).
pub fn encode(
    model: &str,
    version: u64,
    envelope: Envelope,
    outputs: &[(String, Value)],
) -> ModelInferResponse {
    let raw = envelope.raw
        || outputs
            .iter()
            .any(|(_, v)| Datatype::of(v) == Datatype::Numeric(DType::F16));
    let mut response = ModelInferResponse {
        model_name: model.to_owned(),
        model_version: version.to_string(),
        id: envelope.id,
        ..ModelInferResponse::default()
    };
    for (name, value) in outputs {
        let mut tensor = InferOutputTensor {
            name: name.clone(),
            datatype: Datatype::of(value).name().to_owned(),
            shape: value.shape().iter().map(|&d| d as i64).collect(),
            ..InferOutputTensor::default()
        };
        if raw {
            response.raw_output_contents.push(raw_bytes(value));
        } else {
            tensor.contents = Some(contents(value));
        }
        response.outputs.push(tensor);
    }
    response
}

fn raw_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    append_raw(value, &mut out);
    out
}

/// Appends `value` as raw contents: little-endian elements, BYTES elements
/// each length-prefixed (also the binary tensor extension's layout).
pub fn append_raw(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Numeric(t) => out.extend_from_slice(host(t).bytes()),
        Value::Bytes { elements, .. } => protocol::join_bytes(elements, out),
    }
}

fn contents(value: &Value) -> InferTensorContents {
    let mut contents = InferTensorContents::default();
    match value {
        Value::Bytes { elements, .. } => contents.bytes_contents = elements.clone(),
        Value::Numeric(t) => {
            let host = host(t);
            match t.dtype() {
                DType::F32 => contents.fp32_contents = host.as_slice().to_vec(),
                DType::I32 => contents.int_contents = host.as_slice().to_vec(),
                DType::I64 => contents.int64_contents = host.as_slice().to_vec(),
                DType::U8 => {
                    contents.uint_contents = host.bytes().iter().map(|&b| u32::from(b)).collect()
                }
                DType::F16 => unreachable!("FP16 outputs make the response raw"),
            }
        }
    }
    contents
}

fn host(t: &Tensor) -> &HostBuffer {
    t.host()
        .expect("outputs are brought to the host before encoding")
}
