//! `POST /generate`: text generation without the Open Inference Protocol
//! envelope.
//!
//! The body is a form (`application/x-www-form-urlencoded`) or a JSON
//! object with `text` and, optionally, `model` (default [`DEFAULT_MODEL`]),
//! `max_tokens`, `temperature`, `top_k`, `top_p` and `seed`. The route asks
//! the model for its `text` output given input `text` (BYTES `[1]`) and the
//! options as request parameters, through the typed path every protocol
//! shares (validation, queueing, metrics, errors and offloading included),
//! and answers `{"generated_text": "..."}` with that output (the
//! continuation, without the prompt). A request the upstream is to serve is
//! forwarded as received.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::body::read_body;
use super::error::ApiError;
use super::infer::{self, InFlight, InferRequest, InferResponse, ModelRef, Outcome};
use super::state::AppState;
use super::upstream;
use crate::runtime::{Parameter, ParameterValue, Value};

/// The model `/generate` runs when the body names none.
pub const DEFAULT_MODEL: &str = "gpt2";

/// The model's input (the prompt) and output (the continuation).
const TEXT: &str = "text";

/// The fields `/generate` accepts, from a form or a JSON object.
#[derive(Deserialize)]
struct GenerateBody {
    text: Option<String>,
    model: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_k: Option<u32>,
    top_p: Option<f64>,
    seed: Option<i64>,
}

impl GenerateBody {
    /// The options given, as request parameters.
    fn parameters(&self) -> Vec<Parameter> {
        let integer = |n: u32| ParameterValue::Integer(n.into());
        let options = [
            ("max_tokens", self.max_tokens.map(integer)),
            ("temperature", self.temperature.map(ParameterValue::Double)),
            ("top_k", self.top_k.map(integer)),
            ("top_p", self.top_p.map(ParameterValue::Double)),
            ("seed", self.seed.map(ParameterValue::Integer)),
        ];
        options
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect()
    }
}

/// `POST /generate`.
pub async fn generate(State(app): State<Arc<AppState>>, request: Request) -> Response {
    match run(&app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(app: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, app.max_body).await?;
    let body = parse(&parts, &bytes).await?;
    let parameters = body.parameters();
    let text = body
        .text
        .ok_or_else(|| ApiError::bad_request("the body has no `text` field (the prompt)"))?;
    let model = ModelRef {
        name: body.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        version: None,
    };
    let request = InferRequest {
        inputs: vec![(
            TEXT.to_owned(),
            Value::Bytes {
                shape: vec![1],
                elements: vec![text.into_bytes()],
            },
        )],
        parameters,
        outputs: Some(vec![TEXT.to_owned()]),
    };
    let _inflight = InFlight::enter(app);
    let forwardable = upstream::may_forward(app, &parts.headers);
    match infer::infer(app, &model, forwardable, request).await? {
        Outcome::Served(response) => {
            let generated = generated_text(response).ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "model {} did not answer with a text output: no BYTES output `{TEXT}` with an element",
                        model.name
                    ),
                )
            })?;
            Ok(Json(json!({ "generated_text": generated })).into_response())
        }
        Outcome::Offload(reason) => Ok(upstream::forward(
            app,
            &model.name,
            reason,
            parts.method,
            &parts.uri,
            &parts.headers,
            bytes,
        )
        .await),
    }
}

/// Reads the body as a form or as JSON.
///
/// A form content type with a body that opens with `{` is read as JSON:
/// that is what `curl -d '{...}'` sends.
async fn parse(parts: &Parts, bytes: &Bytes) -> Result<GenerateBody, ApiError> {
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let json_object = bytes.trim_ascii_start().starts_with(b"{");
    if form_type && !json_object {
        let request = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        let Form(body) = Form::<GenerateBody>::from_request(request, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(body)
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// The first element of the model's `text` output, when it has one.
fn generated_text(response: InferResponse) -> Option<String> {
    let (_, text) = response
        .outputs
        .into_iter()
        .find(|(name, _)| name == TEXT)?;
    match text {
        Value::Bytes { elements, .. } => elements
            .first()
            .map(|e| String::from_utf8_lossy(e).into_owned()),
        Value::Numeric(_) => None,
    }
}
