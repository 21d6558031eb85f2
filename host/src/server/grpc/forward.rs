//! Offload of a gRPC inference, mapped onto the upstream's REST: the
//! message is decoded by the same codec as a local request, sent as OIP
//! REST with the binary tensor extension (raw little-endian elements both
//! ways, so the answer is the upstream's bit for bit) and the upstream's
//! answer, or error, comes back as a gRPC response or status. The upstream
//! is configured by its REST URL, which every edgeserve serves.

use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use edgeserve_tensor::Tensor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::codec::{self, Envelope};
use super::proto::{ModelInferRequest, ModelInferResponse};
use super::status;
use crate::protocol::{self, Datatype, HEADER_LENGTH};
use crate::runtime::{ParameterValue, Value};
use crate::server::error::ApiError;
use crate::server::infer::InferRequest;
use crate::server::state::AppState;
use crate::server::upstream::{self, Reason};

/// Sends `message` to the upstream for `reason` and answers with its reply.
pub async fn forward(
    app: &AppState,
    reason: Reason,
    message: ModelInferRequest,
    metadata: &MetadataMap,
) -> Result<ModelInferResponse, Status> {
    let path = infer_path(&message.model_name, &message.model_version);
    let model = message.model_name.clone();
    let (request, envelope) = codec::decode(message).map_err(status::of_api)?;
    let (body, json_len) = rest_body(&envelope, &request);
    // The client's metadata supplies what offload carries (its key, its
    // request id); the body's encoding is this module's.
    let mut headers = metadata.clone().into_headers();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    headers.remove(header::ACCEPT);
    let uri: Uri = path.parse().expect("an encoded path is a valid URI");
    let response = upstream::forward(
        app,
        &model,
        reason,
        Method::POST,
        &uri,
        &headers,
        body.into(),
    )
    .await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, app.max_body)
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "the upstream's answer for model {model} could not be read: {e}"
            ))
        })?;
    if !parts.status.is_success() {
        return Err(status::of_api(upstream_error(parts.status, &body)));
    }
    from_rest(&parts.headers, &body, envelope).map_err(|e| {
        Status::internal(format!(
            "the upstream's answer for model {model} is not a valid OIP response: {e}"
        ))
    })
}

/// `/v2/models/{name}[/versions/{version}]/infer`, each segment encoded.
fn infer_path(name: &str, version: &str) -> String {
    let name = utf8_percent_encode(name, NON_ALPHANUMERIC);
    if version.is_empty() {
        format!("/v2/models/{name}/infer")
    } else {
        let version = utf8_percent_encode(version, NON_ALPHANUMERIC);
        format!("/v2/models/{name}/versions/{version}/infer")
    }
}

/// The request as a binary-extension body (JSON, then each input's raw
/// bytes), asking for binary outputs; and the JSON part's length.
fn rest_body(envelope: &Envelope, request: &InferRequest) -> (Vec<u8>, usize) {
    let mut raw = Vec::new();
    let inputs: Vec<Json> = request
        .inputs
        .iter()
        .map(|(name, value)| {
            let start = raw.len();
            codec::append_raw(value, &mut raw);
            json!({
                "name": name,
                "datatype": Datatype::of(value).name(),
                "shape": value.shape(),
                "parameters": {"binary_data_size": raw.len() - start},
            })
        })
        .collect();
    let mut parameters: Map<String, Json> = request
        .parameters
        .iter()
        .map(|(key, value)| (key.clone(), parameter(value)))
        .collect();
    parameters.insert("binary_data_output".into(), Json::Bool(true));
    let mut head = json!({"parameters": parameters, "inputs": inputs});
    if !envelope.id.is_empty() {
        head["id"] = Json::String(envelope.id.clone());
    }
    if let Some(outputs) = &request.outputs {
        head["outputs"] = outputs
            .iter()
            .map(|name| json!({"name": name, "parameters": {"binary_data": true}}))
            .collect();
    }
    let mut body = serde_json::to_vec(&head).expect("a JSON value serializes");
    let json_len = body.len();
    body.extend_from_slice(&raw);
    (body, json_len)
}

fn parameter(value: &ParameterValue) -> Json {
    match value {
        ParameterValue::Boolean(b) => json!(b),
        ParameterValue::Integer(i) => json!(i),
        ParameterValue::Double(d) => json!(d),
        ParameterValue::Text(s) => json!(s),
    }
}

/// An upstream's (or a failed offload's) error answer: its status and the
/// message of its `{"error": ...}` body.
fn upstream_error(status: axum::http::StatusCode, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|json| json.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ApiError::new(status, message)
}

#[derive(Deserialize)]
struct ResponseJson {
    model_name: String,
    model_version: String,
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    #[serde(default)]
    parameters: Map<String, Json>,
}

/// The upstream's binary-extension answer as the gRPC response the client
/// asked for (raw or typed, per its request).
fn from_rest(
    headers: &HeaderMap,
    body: &[u8],
    envelope: Envelope,
) -> Result<ModelInferResponse, String> {
    let json_len = headers
        .get(HEADER_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .filter(|&n| n <= body.len())
        .ok_or_else(|| format!("no valid {HEADER_LENGTH} header"))?;
    let (head, mut raw) = body.split_at(json_len);
    let head: ResponseJson = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    let version = head
        .model_version
        .parse::<u64>()
        .map_err(|_| format!("model_version '{}' is not a number", head.model_version))?;
    let mut outputs = Vec::with_capacity(head.outputs.len());
    for output in head.outputs {
        let size = output
            .parameters
            .get("binary_data_size")
            .and_then(Json::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= raw.len())
            .ok_or_else(|| format!("output '{}' has no valid binary_data_size", output.name))?;
        let (bytes, rest) = raw.split_at(size);
        raw = rest;
        let value = match Datatype::parse(&output.datatype)? {
            Datatype::Numeric(dtype) => Tensor::from_bytes(dtype, &output.shape, bytes)
                .map(Value::Numeric)
                .map_err(|e| format!("output '{}': {e}", output.name))?,
            Datatype::Bytes => Value::Bytes {
                elements: protocol::split_bytes(bytes)?,
                shape: output.shape,
            },
        };
        outputs.push((output.name, value));
    }
    Ok(codec::encode(&head.model_name, version, envelope, &outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_each_segment() {
        assert_eq!(infer_path("linear", ""), "/v2/models/linear/infer");
        assert_eq!(
            infer_path("a/b c", "2"),
            "/v2/models/a%2Fb%20c/versions/2/infer"
        );
    }
}
