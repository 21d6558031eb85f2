//! Request bodies into typed requests.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName};
use edgeserve_tensor::{DType, Tensor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

use super::data::{self, Expected};
use super::lift::{self, Lifted};
use super::{Envelope, OutputRequest};
use crate::protocol::{self, Datatype, HEADER_LENGTH};
use crate::runtime::{ParameterValue, Value};
use crate::server::error::ApiError;
use crate::server::infer::InferRequest;

#[derive(Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
struct RequestJson<I> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    inputs: Vec<I>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestJson>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct InputJson<D> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    #[serde(default)]
    data: Option<D>,
}

/// An input's `data` as a decoder holds it: the raw text the fast path
/// reads straight into elements, or a `Value` tree, whose failures name
/// the element and the problem.
trait Data {
    /// The elements `expected`, `lifted` holding the arrays of numbers
    /// taken out of the text before it was parsed.
    fn values(self, lifted: &Lifted<'_>, expected: &Expected<'_>) -> Result<Value, String>;
}

impl Data for &RawValue {
    fn values(self, lifted: &Lifted<'_>, expected: &Expected<'_>) -> Result<Value, String> {
        // The decoder starts over with `Value`s to say what is wrong.
        let value = match lifted.take(self.get()) {
            lift::Data::Array(array) => data::lifted(expected, array),
            lift::Data::Again => None,
            lift::Data::Written => data::typed(expected, self),
        };
        value.ok_or_else(String::new)
    }
}

impl Data for Json {
    fn values(self, _: &Lifted<'_>, expected: &Expected<'_>) -> Result<Value, String> {
        let &Expected {
            datatype,
            shape,
            count,
        } = expected;
        from_json(datatype, shape, count, &self)
    }
}

#[derive(Deserialize)]
struct OutputRequestJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
}

/// [`HEADER_LENGTH`] as a `HeaderName`: looking it up then hashes the name
/// without first parsing it, on every request.
const LENGTH_HEADER: HeaderName = HeaderName::from_static(HEADER_LENGTH);

/// The binary extension's JSON length, when the client sent one.
pub fn json_len(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    headers
        .get(LENGTH_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{HEADER_LENGTH} must be a byte count"))
                })
        })
        .transpose()
}

/// Decodes a request body; `json_len` is the binary extension's header
/// length, when the client sent one. A numeric input's binary data becomes
/// its tensor without a copy where it lies aligned in `body`.
pub fn decode(json_len: Option<usize>, body: &Bytes) -> Result<(InferRequest, Envelope), ApiError> {
    let (head, binary) = split(json_len, body)?;
    // The fast path first: numeric arrays lifted out, the rest parsed
    // typed. A body it refuses is decoded again through `Value`s, which
    // accept the same bodies and word every refusal.
    decode_as::<&RawValue>(&Lifted::new(head), binary, body)
        .or_else(|_| decode_as::<Json>(&Lifted::none(head), binary, body))
}

/// [`decode`] through `Value`s alone, which the fast path must agree with
/// on every body (the `oip_json` fuzz target holds it to that).
pub fn decode_as_values(
    json_len: Option<usize>,
    body: &Bytes,
) -> Result<(InferRequest, Envelope), ApiError> {
    let (head, binary) = split(json_len, body)?;
    decode_as::<Json>(&Lifted::none(head), binary, body)
}

/// The body's JSON head and the binary data after it.
fn split(json_len: Option<usize>, body: &[u8]) -> Result<(&[u8], &[u8]), ApiError> {
    match json_len {
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ApiError::bad_request(format!(
            "{HEADER_LENGTH} is {n} but the body has only {} bytes",
            body.len()
        ))),
        None => Ok((body, &[][..])),
    }
}

fn decode_as<'t, D: Data + Deserialize<'t>>(
    lifted: &'t Lifted<'_>,
    mut binary: &[u8],
    whole: &Bytes,
) -> Result<(InferRequest, Envelope), ApiError> {
    let request: RequestJson<InputJson<D>> = serde_json::from_slice(lifted.text())
        .map_err(|e| ApiError::bad_request(format!("malformed request JSON: {e}")))?;
    let request_id = request.id;
    let mut inputs: Vec<(String, Value)> = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let name = input.name;
        let err = |message: String| ApiError::bad_request(format!("input '{name}': {message}"));
        if inputs.iter().any(|(given, _)| *given == name) {
            return Err(err("given more than once".into()));
        }
        let (shape, count) = layout(&input.shape).map_err(err)?;
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
                from_binary(&input.datatype, &shape, count, whole.slice_ref(chunk)).map_err(err)?
            }
            (None, Some(data)) => {
                let expected = Expected {
                    datatype: &input.datatype,
                    shape: &shape,
                    count,
                };
                data.values(lifted, &expected).map_err(err)?
            }
            (None, None) => {
                return Err(err(
                    "has neither 'data' nor a binary_data_size parameter".into()
                ));
            }
        };
        inputs.push((name, value));
    }
    if !lifted.all_taken() {
        // A lifted array that was not an input's `data`: the body must be
        // read as it came.
        return Err(ApiError::bad_request(String::new()));
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
    let outputs: Option<Vec<OutputRequest>> = request.outputs.map(|outputs| {
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
    let request = InferRequest {
        inputs,
        parameters,
        outputs: outputs
            .as_ref()
            .map(|outputs| outputs.iter().map(|o| o.name.clone()).collect()),
    };
    let envelope = Envelope {
        id: request_id,
        outputs,
        binary_output,
    };
    Ok((request, envelope))
}

/// An input's dims and element count, or what is wrong with its shape.
fn layout(shape: &[i64]) -> Result<(Vec<usize>, usize), String> {
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("shape {shape:?} has a negative dimension"))?;
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let count = count.ok_or_else(|| format!("shape {dims:?} is too large"))?;
    Ok((dims, count))
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

fn from_binary(
    datatype_name: &str,
    shape: &[usize],
    count: usize,
    chunk: Bytes,
) -> Result<Value, String> {
    let Datatype::Numeric(dtype) = Datatype::parse(datatype_name)? else {
        let elements = protocol::split_bytes(&chunk)?;
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
    };
    let expected = count * dtype.size();
    if chunk.len() != expected {
        return Err(format!(
            "shape {shape:?} of {datatype_name} needs {expected} bytes but binary_data_size is {}",
            chunk.len()
        ));
    }
    Tensor::from_received(dtype, shape, chunk)
        .map(Value::Numeric)
        .map_err(|e| e.to_string())
}

fn from_json(
    datatype_name: &str,
    shape: &[usize],
    count: usize,
    data: &Json,
) -> Result<Value, String> {
    let mut leaves = Vec::with_capacity(count.min(1 << 24));
    flatten(data, &mut leaves);
    if leaves.len() != count {
        return Err(format!(
            "shape {shape:?} needs {count} elements but data has {}",
            leaves.len()
        ));
    }
    let bad = |i: usize, want: &str| format!("data element {i} is {}, expected {want}", leaves[i]);
    let Datatype::Numeric(dtype) = Datatype::parse(datatype_name)? else {
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
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        // `data` before the layout it is read by.
        let data_first = br#"{"inputs":[{"data":[1,2.0,3e0,4],"name":"x","extra":{"a":[1]},"shape":[2,2],"datatype":"FP32"}]}"#;
        // Keys are JSON strings: escapes name the same fields.
        let escaped =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        for body in [&flat[..], &nested[..], &data_first[..], &escaped[..]] {
            let (request, _) = decode(None, &Bytes::from_static(body)).unwrap();
            assert_eq!(request.inputs[0].0, "x");
            let Value::Numeric(t) = &request.inputs[0].1 else {
                panic!()
            };
            assert_eq!(t.host().unwrap().as_slice::<f32>(), [1.0, 2.0, 3.0, 4.0]);
        }
    }

    /// An array long enough to be read in parts on several threads decodes
    /// as the `Value` path decodes it, and one number too many or too few
    /// is refused alike.
    #[test]
    fn a_long_array_read_in_parts_decodes_as_values_do() {
        let numbers: Vec<String> = (0..60_000)
            .map(|i| format!("{}", (f64::from(i) * 0.37).sin()))
            .collect();
        let data = numbers.join(",");
        for shape in [60_000, 60_001, 59_999] {
            let body = Bytes::from(format!(
                r#"{{"inputs":[{{"name":"x","shape":[{shape}],"datatype":"FP32","data":[{data}]}}]}}"#
            ));
            match (decode(None, &body), decode_as_values(None, &body)) {
                (Ok((fast, _)), Ok((values, _))) => {
                    let tensor = |request: &InferRequest| match &request.inputs[0].1 {
                        Value::Numeric(t) => t.host().unwrap().bytes().to_vec(),
                        Value::Bytes { .. } => panic!("a BYTES input"),
                    };
                    assert_eq!(tensor(&fast), tensor(&values), "shape [{shape}]");
                    assert_eq!(shape, numbers.len());
                }
                (Err(fast), Err(values)) => {
                    assert_eq!(fast.message, values.message);
                    assert_ne!(shape, numbers.len());
                }
                _ => panic!("shape [{shape}]: one path refused what the other read"),
            }
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
        let (request, _) = decode(Some(head.len()), &Bytes::from(body)).unwrap();
        let Value::Numeric(t) = &request.inputs[0].1 else {
            panic!()
        };
        assert_eq!(t.host().unwrap().as_slice::<i32>(), [7, -1]);
        let Value::Bytes { elements, .. } = &request.inputs[1].1 else {
            panic!()
        };
        assert_eq!(elements, &[b"hi".to_vec(), b"!".to_vec()]);
    }

    /// Binary data aligned for its type in the body becomes the tensor's
    /// storage as it is; at an odd offset it is copied, to the same values.
    #[test]
    fn aligned_binary_data_is_shared_with_the_body_and_the_rest_copied() {
        let values = [1.5f32, -2.0, 3.25];
        for pad in 0..4 {
            // The JSON head, padded with spaces to move the data's offset.
            let mut head = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#.to_vec();
            head.resize(head.len() + pad, b' ');
            let mut body = head.clone();
            body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            let body = Bytes::from(body);
            let (request, _) = decode(Some(head.len()), &body).unwrap();
            let Value::Numeric(t) = &request.inputs[0].1 else {
                panic!()
            };
            let host = t.host().unwrap();
            assert_eq!(host.as_slice::<f32>(), values);
            let data = host.bytes().as_ptr() as usize;
            let start = body.as_ptr() as usize + head.len();
            let aligned = start.is_multiple_of(4);
            assert_eq!(data == start, aligned, "pad {pad}: shared iff aligned");
        }
    }

    #[test]
    fn mismatches_name_the_input_and_the_problem() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "input 'x': shape [3] needs 3 elements but data has 2",
            ),
            (
                br#"{"inputs":[{"data":[1,2],"name":"x","shape":[3],"datatype":"FP32"}]}"#,
                "input 'x': shape [3] needs 3 elements but data has 2",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2],"data":[3,4]}]}"#,
                "duplicate field `data`",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[-2],"datatype":"FP32","data":[1,2]}]}"#,
                "input 'x': shape [-2] has a negative dimension",
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
            let err = decode(None, &Bytes::from_static(body)).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.contains(expected),
                "{} does not contain {expected}",
                err.message
            );
        }
    }
}
