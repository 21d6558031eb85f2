//! Outputs into response bodies.

use std::io::Write as _;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use edgeserve_tensor::{DType, cpu};
use serde::Serialize;

use super::OutputRequest;
use crate::protocol::{self, Datatype, HEADER_LENGTH};
use crate::runtime::Value;

/// An encoded response body and, for binary bodies, the JSON part's length.
pub struct Encoded {
    /// The body.
    pub body: Vec<u8>,
    /// `Some(json length)` when binary data follows the JSON.
    pub json_len: Option<usize>,
}

impl IntoResponse for Encoded {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        let content_type = match self.json_len {
            Some(n) => {
                response
                    .headers_mut()
                    .insert(HEADER_LENGTH, HeaderValue::from(n));
                "application/octet-stream"
            }
            None => "application/json",
        };
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
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
    let mut json_elements = 0;
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
        let mut entry = OutputJson {
            name,
            datatype: Datatype::of(value).name(),
            shape: value.shape(),
            parameters: None,
        };
        let mut data = None;
        if as_binary {
            any_binary = true;
            let start = binary.len();
            match value {
                Value::Numeric(t) => {
                    binary.extend_from_slice(t.host().map(|h| h.bytes()).unwrap_or_default())
                }
                Value::Bytes { elements, .. } => protocol::join_bytes(elements, &mut binary),
            }
            entry.parameters = Some(BinarySize {
                binary_data_size: binary.len() - start,
            });
        } else {
            json_elements += value.shape().iter().product::<usize>();
            data = Some(Data::of(value));
        }
        entries.push((entry, data));
    }
    // Sized for the envelope and the elements as JSON text usually run, so
    // that a small response is written without growing the buffer.
    let mut body = Vec::with_capacity(256 + 16 * json_elements + binary.len());
    write_json(&mut body, (model, version, id.as_deref()), &entries);
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

/// Writes the response's JSON: the model's name and version (a JSON string,
/// OIP's type), the request's id if it had one, and each output's fields,
/// its `data` last, written by [`Data::write`] so that long arrays are
/// written in parts.
fn write_json(
    body: &mut Vec<u8>,
    (model, version, id): (&str, u64, Option<&str>),
    outputs: &[(OutputJson, Option<Data>)],
) {
    body.extend_from_slice(b"{\"model_name\":");
    json(body, model);
    write!(body, ",\"model_version\":\"{version}\"").expect("writing to memory");
    if let Some(id) = id {
        body.extend_from_slice(b",\"id\":");
        json(body, id);
    }
    body.extend_from_slice(b",\"outputs\":[");
    for (i, (output, data)) in outputs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        json(body, output);
        if let Some(data) = data {
            // The object's closing brace reopened, for `data` to follow.
            body.pop();
            body.extend_from_slice(b",\"data\":");
            data.write(body);
            body.push(b'}');
        }
    }
    body.extend_from_slice(b"]}");
}

/// Appends `value`'s JSON to `body`.
fn json(body: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(body, value).expect("response fields always serialize");
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Output elements, written straight from the tensor (f32 as the shortest
/// decimal that round-trips, like Triton).
enum Data<'a> {
    F32(&'a [f32]),
    F16(Vec<f32>),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    Bytes(Vec<std::borrow::Cow<'a, str>>),
}

/// Elements of an output from which its JSON is written in parts on
/// the compute threads: about half a megabyte of text. `linear` over HTTP, JSON
/// out, parts against one thread: 12 288 and 24 576 floats 1.03× and
/// 1.12–1.14× the time (waking the threads costs more than they save),
/// 36 864 and 65 536 0.97–0.99×, 196 608 0.70×.
const PARALLEL_ELEMENTS: usize = 1 << 15;

impl<'a> Data<'a> {
    /// Appends the elements as a JSON array.
    fn write(&self, body: &mut Vec<u8>) {
        match self {
            Data::F32(v) => write_array(body, v),
            Data::F16(v) => write_array(body, v),
            Data::I32(v) => write_array(body, v),
            Data::I64(v) => write_array(body, v),
            Data::U8(v) => write_array(body, v),
            Data::Bytes(v) => write_array(body, v),
        }
    }

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

/// Appends `items` as a JSON array, text for text what serde_json writes,
/// in parts on the compute threads when there are [`PARALLEL_ELEMENTS`]: one
/// thread writing a large output (GPT-2's hidden states at batch 8, 196 608
/// floats) took 5% of its request.
fn write_array<T: Serialize + Sync>(body: &mut Vec<u8>, items: &[T]) {
    let threads = cpu::threads();
    if items.len() < PARALLEL_ELEMENTS || threads < 2 {
        json(body, items);
        return;
    }
    let per_part = items.len().div_ceil(threads);
    let parts = cpu::map_tasks(items.len().div_ceil(per_part), |i| {
        let part = &items[i * per_part..items.len().min((i + 1) * per_part)];
        serde_json::to_vec(part).expect("elements always serialize")
    });
    body.push(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Each part's own brackets dropped.
        body.extend_from_slice(&part[1..part.len() - 1]);
    }
    body.push(b']');
}

#[cfg(test)]
mod tests {
    use edgeserve_tensor::Tensor;
    use serde_json::{Value as Json, json};

    use super::*;

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
        assert_eq!(
            text,
            r#"{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[0.1]}]}"#
        );
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

    /// Long outputs, written in parts on several threads, come out text for
    /// text as serde_json writes them whole, in order, next to a short one
    /// and a binary one.
    #[test]
    fn long_outputs_are_written_in_parts_as_whole() {
        let n = 3 * PARALLEL_ELEMENTS + 7;
        let floats: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.37).sin() * 1e3 / (i + 1) as f32)
            .collect();
        let ints: Vec<i64> = (0..n as i64).map(|i| (i - 5000) * 1_000_003).collect();
        let outputs = vec![
            (
                "f".to_string(),
                Value::Numeric(Tensor::from_f32(&[n], floats.clone()).unwrap()),
            ),
            (
                "s".to_string(),
                Value::Numeric(Tensor::from_f32(&[1], vec![2.5]).unwrap()),
            ),
            (
                "b".to_string(),
                Value::Numeric(Tensor::from_f32(&[1], vec![1.0]).unwrap()),
            ),
            (
                "i".to_string(),
                Value::Numeric(
                    Tensor::from_bytes(DType::I64, &[n], bytemuck::cast_slice(&ints)).unwrap(),
                ),
            ),
        ];
        let asked = ["f", "s", "b", "i"].map(|name| OutputRequest {
            name: name.to_string(),
            binary: Some(name == "b"),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let encoded =
            pool.install(|| encode("m", 2, Some("r\"1".into()), &outputs, Some(&asked), false));
        let json_len = encoded.json_len.expect("one output is binary");
        let text = std::str::from_utf8(&encoded.body[..json_len]).unwrap();
        let expected = format!(
            concat!(
                r#"{{"model_name":"m","model_version":"2","id":"r\"1","outputs":["#,
                r#"{{"name":"f","datatype":"FP32","shape":[{n}],"data":{}}},"#,
                r#"{{"name":"s","datatype":"FP32","shape":[1],"data":[2.5]}},"#,
                r#"{{"name":"b","datatype":"FP32","shape":[1],"parameters":{{"binary_data_size":4}}}},"#,
                r#"{{"name":"i","datatype":"INT64","shape":[{n}],"data":{}}}]}}"#
            ),
            serde_json::to_string(&floats).unwrap(),
            serde_json::to_string(&ints).unwrap(),
            n = n,
        );
        assert!(
            text == expected,
            "the long outputs' text differs from serde_json's"
        );
        assert_eq!(&encoded.body[json_len..], 1.0f32.to_le_bytes());
    }
}
