//! The Open Inference Protocol v2 wire format: JSON bodies and Triton's
//! binary tensor data extension.

use edgeserve_tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::error::ApiError;
use crate::runtime::{Parameter, ParameterValue, Value};

/// Header giving the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    #[serde(default)]
    data: Option<Json>,
}

#[derive(Deserialize)]
struct OutputRequestJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
}

/// A decoded inference request.
#[derive(Debug)]
pub struct Request {
    /// Client's request id, echoed back.
    pub id: Option<String>,
    /// Inputs in request order.
    pub inputs: Vec<Input>,
    /// Outputs the client asked for; `None` means all.
    pub outputs: Option<Vec<OutputRequest>>,
    /// Request parameters for the handler.
    pub parameters: Vec<Parameter>,
    /// `binary_data_output`: default encoding of outputs.
    pub binary_output: bool,
}

/// One decoded input.
#[derive(Debug)]
pub struct Input {
    /// Input name.
    pub name: String,
    /// OIP datatype as sent.
    pub datatype: String,
    /// Dimensions as sent.
    pub shape: Vec<usize>,
    /// The data, already checked against the shape.
    pub value: Value,
}

/// An output the client asked for.
#[derive(Debug)]
pub struct OutputRequest {
    /// Output name.
    pub name: String,
    /// Per-output `binary_data`, overriding `binary_data_output`.
    pub binary: Option<bool>,
}

/// Decodes a request body; `json_len` is the binary extension's header
/// length, when the client sent one.
pub fn decode(json_len: Option<usize>, body: &[u8]) -> Result<Request, ApiError> {
    let (head, mut binary) = match json_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "{HEADER_LENGTH} is {n} but the body has only {} bytes",
                body.len()
            )));
        }
        None => (body, &[][..]),
    };
    let request: RequestJson = serde_json::from_slice(head)
        .map_err(|e| ApiError::bad_request(format!("malformed request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let name = input.name;
        let err = |message: String| ApiError::bad_request(format!("input '{name}': {message}"));
        if inputs.iter().any(|i: &Input| i.name == name) {
            return Err(err("given more than once".into()));
        }
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| err(format!("shape {:?} has a negative dimension", input.shape)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let count = count.ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| err("binary_data_size must be a non-negative integer".into()))
            })
            .transpose()?;
        let value = match (binary_size, input.data) {
            (Some(size), _) => {
                if size > binary.len() {
                    return Err(err(format!(
                        "binary_data_size is {size} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (chunk, rest) = binary.split_at(size);
                binary = rest;
                from_binary(&input.datatype, &shape, count, chunk).map_err(err)?
            }
            (None, Some(data)) => from_json(&input.datatype, &shape, count, &data).map_err(err)?,
            (None, None) => {
                return Err(err(
                    "has neither 'data' nor a binary_data_size parameter".into()
                ));
            }
        };
        inputs.push(Input {
            name,
            datatype: input.datatype,
            shape,
            value,
        });
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the inputs that no input claims",
            binary.len()
        )));
    }
    let mut parameters = Vec::new();
    let mut binary_output = false;
    for (key, value) in request.parameters.unwrap_or_default() {
        if key == "binary_data_output" {
            binary_output = value.as_bool().unwrap_or(false);
            continue;
        }
        parameters.push((key, parameter(value)));
    }
    let outputs = request.outputs.map(|outputs| {
        outputs
            .into_iter()
            .map(|o| OutputRequest {
                binary: o
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Json::as_bool),
                name: o.name,
            })
            .collect()
    });
    Ok(Request {
        id: request.id,
        inputs,
        outputs,
        parameters,
        binary_output,
    })
}

fn parameter(value: Json) -> ParameterValue {
    match value {
        Json::Bool(b) => ParameterValue::Boolean(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ParameterValue::Integer(i),
            None => ParameterValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ParameterValue::Text(s),
        other => ParameterValue::Text(other.to_string()),
    }
}

fn dtype(datatype: &str) -> Result<DType, String> {
    DType::from_oip_name(datatype).ok_or_else(|| {
        format!("datatype {datatype} is not supported (edgeserve carries FP32, FP16, INT32, INT64, UINT8 and BYTES)")
    })
}

fn from_binary(
    datatype: &str,
    shape: &[usize],
    count: usize,
    chunk: &[u8],
) -> Result<Value, String> {
    if datatype == "BYTES" {
        let elements = split_bytes(chunk)?;
        if elements.len() != count {
            return Err(format!(
                "shape {shape:?} needs {count} BYTES elements but the binary data holds {}",
                elements.len()
            ));
        }
        return Ok(Value::Bytes {
            shape: shape.to_vec(),
            elements,
        });
    }
    let dtype = dtype(datatype)?;
    let expected = count * dtype.size();
    if chunk.len() != expected {
        return Err(format!(
            "shape {shape:?} of {datatype} needs {expected} bytes but binary_data_size is {}",
            chunk.len()
        ));
    }
    Tensor::from_bytes(dtype, shape, chunk)
        .map(Value::Numeric)
        .map_err(|e| e.to_string())
}

/// Splits Triton's BYTES encoding: each element is a 4-byte little-endian
/// length followed by that many bytes.
fn split_bytes(mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut elements = Vec::new();
    while !chunk.is_empty() {
        let Some((len, rest)) = chunk.split_first_chunk::<4>() else {
            return Err("BYTES binary data ends inside a 4-byte length prefix".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "BYTES element {} claims {len} bytes but only {} remain",
                elements.len(),
                rest.len()
            ));
        }
        elements.push(rest[..len].to_vec());
        chunk = &rest[len..];
    }
    Ok(elements)
}

fn from_json(datatype: &str, shape: &[usize], count: usize, data: &Json) -> Result<Value, String> {
    let mut leaves = Vec::with_capacity(count.min(1 << 24));
    flatten(data, &mut leaves);
    if leaves.len() != count {
        return Err(format!(
            "shape {shape:?} needs {count} elements but data has {}",
            leaves.len()
        ));
    }
    let bad = |i: usize, want: &str| format!("data element {i} is {}, expected {want}", leaves[i]);
    if datatype == "BYTES" {
        let elements = leaves
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(|s| s.as_bytes().to_vec())
                    .ok_or_else(|| bad(i, "a string"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Value::Bytes {
            shape: shape.to_vec(),
            elements,
        });
    }
    fn typed<T: bytemuck::Pod + Send + Sync>(
        leaves: &[&Json],
        convert: impl Fn(&Json) -> Option<T>,
        bad: impl Fn(usize) -> String,
    ) -> Result<edgeserve_tensor::HostBuffer, String> {
        let values = leaves
            .iter()
            .enumerate()
            .map(|(i, v)| convert(v).ok_or_else(|| bad(i)))
            .collect::<Result<Vec<T>, _>>()?;
        Ok(edgeserve_tensor::HostBuffer::from_vec(values))
    }
    let dtype = dtype(datatype)?;
    let buffer = match dtype {
        DType::F32 => typed(
            &leaves,
            |v| v.as_f64().map(|x| x as f32),
            |i| bad(i, "a number"),
        )?,
        DType::F16 => typed(
            &leaves,
            |v| v.as_f64().map(half::f16::from_f64),
            |i| bad(i, "a number"),
        )?,
        DType::I32 => typed(
            &leaves,
            |v| v.as_i64().and_then(|x| i32::try_from(x).ok()),
            |i| bad(i, "a 32-bit integer"),
        )?,
        DType::I64 => typed(&leaves, Json::as_i64, |i| bad(i, "a 64-bit integer"))?,
        DType::U8 => typed(
            &leaves,
            |v| v.as_u64().and_then(|x| u8::try_from(x).ok()),
            |i| bad(i, "an integer in 0..=255"),
        )?,
    };
    Tensor::from_host(dtype, shape, buffer)
        .map(Value::Numeric)
        .map_err(|e| e.to_string())
}

/// Nested or flat `data`: every non-array leaf in row-major order.
fn flatten<'a>(value: &'a Json, out: &mut Vec<&'a Json>) {
    match value {
        Json::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        leaf => out.push(leaf),
    }
}

/// An encoded response body and, for binary bodies, the JSON part's length.
pub struct Encoded {
    /// The body.
    pub body: Vec<u8>,
    /// `Some(json length)` when binary data follows the JSON.
    pub json_len: Option<usize>,
}

/// Encodes outputs as the client asked.
pub fn encode(
    model: &str,
    version: u64,
    id: Option<String>,
    outputs: &[(String, Value)],
    requested: Option<&[OutputRequest]>,
    binary_default: bool,
) -> Encoded {
    let mut binary = Vec::new();
    let mut any_binary = false;
    let mut entries = Vec::with_capacity(outputs.len());
    for (name, value) in outputs {
        let wanted = match requested {
            None => Some(binary_default),
            Some(list) => list
                .iter()
                .find(|o| o.name == *name)
                .map(|o| o.binary.unwrap_or(binary_default)),
        };
        let Some(as_binary) = wanted else { continue };
        let (datatype, shape) = match value {
            Value::Numeric(t) => (t.dtype().oip_name(), t.shape()),
            Value::Bytes { shape, .. } => ("BYTES", shape.as_slice()),
        };
        let mut entry = OutputJson {
            name,
            datatype,
            shape,
            parameters: None,
            data: None,
        };
        if as_binary {
            any_binary = true;
            let start = binary.len();
            match value {
                Value::Numeric(t) => {
                    binary.extend_from_slice(t.host().map(|h| h.bytes()).unwrap_or_default())
                }
                Value::Bytes { elements, .. } => {
                    for e in elements {
                        binary.extend_from_slice(&(e.len() as u32).to_le_bytes());
                        binary.extend_from_slice(e);
                    }
                }
            }
            entry.parameters = Some(BinarySize {
                binary_data_size: binary.len() - start,
            });
        } else {
            entry.data = Some(Data::of(value));
        }
        entries.push(entry);
    }
    let response = ResponseJson {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: entries,
    };
    let mut body = serde_json::to_vec(&response).expect("responses always serialize");
    if !any_binary {
        return Encoded {
            body,
            json_len: None,
        };
    }
    let json_len = body.len();
    body.extend_from_slice(&binary);
    Encoded {
        body,
        json_len: Some(json_len),
    }
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Output elements, serialized straight from the tensor (f32 as the
/// shortest decimal that round-trips, like Triton).
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    F32(&'a [f32]),
    F16(Vec<f32>),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    Bytes(Vec<std::borrow::Cow<'a, str>>),
}

impl<'a> Data<'a> {
    fn of(value: &'a Value) -> Data<'a> {
        match value {
            Value::Bytes { elements, .. } => Data::Bytes(
                elements
                    .iter()
                    .map(|e| String::from_utf8_lossy(e))
                    .collect(),
            ),
            Value::Numeric(t) => {
                let host = t
                    .host()
                    .expect("outputs are brought to the host before encoding");
                match t.dtype() {
                    DType::F32 => Data::F32(host.as_slice()),
                    DType::F16 => Data::F16(
                        host.as_slice::<u16>()
                            .iter()
                            .map(|&x| half::f16::from_bits(x).to_f32())
                            .collect(),
                    ),
                    DType::I32 => Data::I32(host.as_slice()),
                    DType::I64 => Data::I64(host.as_slice()),
                    DType::U8 => Data::U8(host.as_slice()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        for body in [&flat[..], &nested[..]] {
            let request = decode(None, body).unwrap();
            let Value::Numeric(t) = &request.inputs[0].value else {
                panic!()
            };
            assert_eq!(t.host().unwrap().as_slice::<f32>(), [1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn binary_inputs_and_bytes_elements_decode() {
        let head = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&(-1i32).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(b"!");
        let request = decode(Some(head.len()), &body).unwrap();
        let Value::Numeric(t) = &request.inputs[0].value else {
            panic!()
        };
        assert_eq!(t.host().unwrap().as_slice::<i32>(), [7, -1]);
        let Value::Bytes { elements, .. } = &request.inputs[1].value else {
            panic!()
        };
        assert_eq!(elements, &[b"hi".to_vec(), b"!".to_vec()]);
    }

    #[test]
    fn mismatches_name_the_input_and_the_problem() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "input 'x': shape [3] needs 3 elements but data has 2",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":["a"]}]}"#,
                "input 'x': data element 0 is \"a\", expected a 32-bit integer",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[true]}]}"#,
                "input 'x': datatype BOOL is not supported",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "input 'x': has neither 'data'",
            ),
            (br#"{"inputs": [}"#, "malformed request JSON"),
        ];
        for (body, expected) in cases {
            let err = decode(None, body).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.contains(expected),
                "{} does not contain {expected}",
                err.message
            );
        }
    }

    #[test]
    fn outputs_encode_as_json_or_binary_as_asked() {
        let t = Tensor::from_f32(&[2], vec![0.5, 1.5]).unwrap();
        let outputs = vec![("y".to_string(), Value::Numeric(t))];
        let json_body = encode("m", 1, Some("r1".into()), &outputs, None, false);
        assert_eq!(json_body.json_len, None);
        let parsed: Json = serde_json::from_slice(&json_body.body).unwrap();
        assert_eq!(parsed["outputs"][0]["data"], json!([0.5, 1.5]));
        // f32 prints as the shortest round-trip decimal, not its f64 widening.
        let tenth = vec![(
            "y".to_string(),
            Value::Numeric(Tensor::from_f32(&[1], vec![0.1]).unwrap()),
        )];
        let text = String::from_utf8(encode("m", 1, None, &tenth, None, false).body).unwrap();
        assert!(text.contains("\"data\":[0.1]"), "{text}");
        assert_eq!(parsed["id"], "r1");
        let binary = encode("m", 1, None, &outputs, None, true);
        let n = binary.json_len.unwrap();
        let head: Json = serde_json::from_slice(&binary.body[..n]).unwrap();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(
            &binary.body[n..],
            bytemuck::cast_slice::<f32, u8>(&[0.5, 1.5])
        );
    }
}
