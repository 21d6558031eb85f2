//! `POST /v1/embeddings`: sentence embeddings in OpenAI's shape, as JSON
//! floats or (what the official client asks for by default) base64 of the
//! little-endian float32 bytes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use edgeserve_tensor::DType;
use serde_json::{Value, json};

use super::error::OpenAiError;
use super::{Received, receive};
use crate::runtime::Value as Tensor;
use crate::server::error::ApiError;
use crate::server::fields::{FieldError, texts, wrong};
use crate::server::generation::require_task;
use crate::server::infer::{self, InFlight, InferRequest, ModelRef};
use crate::server::state::AppState;

/// The `task` of models that embed text.
pub const EMBEDDINGS: &str = "embeddings";

/// The model's input and outputs.
const TEXT: &str = "text";
const EMBEDDING: &str = "embedding";
const INPUT_IDS: &str = "input_ids";

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, OpenAiError> {
    run(&app, request).await
}

async fn run(app: &Arc<AppState>, request: Request) -> Result<Response, OpenAiError> {
    let (name, mut fields) = match receive(app, request).await? {
        Received::Here { model, fields } => (model, fields),
        Received::Relayed(response) => return Ok(response),
    };
    let texts = texts("input", fields.required("input")?, "give the text to embed")?;
    let base64 = match fields.string("encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(FieldError::new(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {other:?}"),
            )
            .into());
        }
    };
    if let Some(dimensions) = fields.take("dimensions") {
        return Err(wrong(
            "dimensions",
            "unset (the model's width is fixed)",
            &dimensions,
        )
        .into());
    }
    fields.ignore(&["user"]);
    fields.finish()?;

    let model = ModelRef {
        name: name.clone(),
        version: None,
    };
    let loaded = app
        .registry
        .get(&name, None)
        .map_err(|e| OpenAiError::from(ApiError::from(e)))?;
    require_task(&loaded, EMBEDDINGS, "/v1/embeddings")?;
    let count = texts.len();
    let request = InferRequest {
        inputs: vec![(
            TEXT.to_owned(),
            Tensor::Bytes {
                shape: vec![count],
                elements: texts.into_iter().map(String::into_bytes).collect(),
            },
        )],
        parameters: Vec::new(),
        outputs: Some(vec![EMBEDDING.to_owned(), INPUT_IDS.to_owned()]),
    };
    let _inflight = InFlight::enter(app);
    let response = infer::infer(app, &model, false, request)
        .await
        .map_err(|e| OpenAiError::from(ApiError::from(e)))?
        .served();
    let bad = |what: &str| {
        OpenAiError::from(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model {name} did not answer with {what}"),
        ))
    };
    let (vectors, width) = match response.output(EMBEDDING) {
        Some(Tensor::Numeric(t)) if t.dtype() == DType::F32 && t.shape().len() == 2 => {
            let data: Vec<f32> = t
                .host()
                .map(|h| bytemuck::pod_collect_to_vec(h.bytes()))
                .ok_or_else(|| bad("host-readable embeddings"))?;
            (data, t.shape()[1])
        }
        _ => return Err(bad("an FP32 [n, width] `embedding` output")),
    };
    if vectors.len() != count * width {
        return Err(bad("one embedding per input"));
    }
    let data: Vec<Value> = vectors
        .chunks(width.max(1))
        .take(count)
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: &[u8] = bytemuck::cast_slice(vector);
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                // Each float as its shortest f32 decimal, as OIP writes
                // it: a client parsing it gets the same float32 back.
                let shortest = |x: &f32| {
                    x.to_string()
                        .parse::<f64>()
                        .map_or(Value::Null, Value::from)
                };
                Value::Array(vector.iter().map(shortest).collect())
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = match response.output(INPUT_IDS) {
        Some(value) => real_tokens(value).ok_or_else(|| bad("an INT64 `input_ids` output"))?,
        None => 0,
    };
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// Tokens the model saw: the non-padding ids (BERT vocabularies' `[PAD]`
/// is id 0).
fn real_tokens(value: &Tensor) -> Option<usize> {
    match value {
        Tensor::Numeric(t) if t.dtype() == DType::I64 => {
            let ids: Vec<i64> = bytemuck::pod_collect_to_vec(t.host()?.bytes());
            Some(ids.iter().filter(|&&id| id != 0).count())
        }
        _ => None,
    }
}
