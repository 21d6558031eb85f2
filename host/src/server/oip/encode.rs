//! Outputs into response bodies.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use edgeserve_tensor::DType;
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
            data: None,
        };
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
            entry.data = Some(Data::of(value));
        }
        entries.push(entry);
    }
    let response = ResponseJson {
        model_name: model,
        model_version: version,
        id,
        outputs: entries,
    };
    // Sized for the envelope and the elements as JSON text usually run, so
    // that a small response is written without growing the buffer.
    let mut body = Vec::with_capacity(256 + 16 * json_elements + binary.len());
    serde_json::to_writer(&mut body, &response).expect("responses always serialize");
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
    /// The version number, written as a JSON string (OIP's type).
    #[serde(serialize_with = "as_text")]
    model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputJson<'a>>,
}

/// Writes `n` as a JSON string, without an intermediate `String`.
fn as_text<S: serde::Serializer>(n: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(n)
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
