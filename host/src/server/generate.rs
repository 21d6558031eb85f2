//! `POST /generate`: text generation without the Open Inference Protocol
//! envelope.
//!
//! The seed's Flask route, exact: the body is a form, as Flask's
//! `request.form` reads it (`application/x-www-form-urlencoded` or
//! `multipart/form-data`), or a JSON object, with `text` and, optionally,
//! `model` (default [`DEFAULT_MODEL`]), `max_tokens`, `temperature`,
//! `top_k`, `top_p`, `seed` and `return_full_text`. Any other content type
//! is a 415 naming these. The route asks the model for its `text` output
//! given input `text` (BYTES `[1]`) and the options as request parameters,
//! through the typed path every protocol shares (validation, queueing,
//! metrics, errors and offloading included; the tokens the handler streams
//! meanwhile are counted in the generation metrics), and answers
//! `{"generated_text": "..."}`: the prompt followed by the continuation, as
//! the Flask app's `tokenizer.decode(output[0])`, or the continuation alone
//! with `return_full_text` false. A request the upstream is to serve is
//! forwarded as received.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::body::read_body;
use super::error::ApiError;
use super::generation::{Options, TokenMeter};
use super::infer::{self, InFlight, InferRequest, InferResponse, ModelRef, Outcome};
use super::state::AppState;
use super::upstream;
use crate::runtime::{OutputSink, Value};

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
    return_full_text: Option<bool>,
}

impl GenerateBody {
    /// The sampling options given.
    fn options(&self) -> Options {
        Options {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            stop: Vec::new(),
            logprobs: false,
        }
    }
}

/// `POST /generate`.
pub async fn generate(State(app): State<Arc<AppState>>, request: Request) -> Response {
    match run(&app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(app: &Arc<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, app.max_body).await?;
    let body = parse(&parts, &bytes).await?;
    let parameters = body.options().parameters();
    let full_text = body.return_full_text.unwrap_or(true);
    let text = body
        .text
        .ok_or_else(|| ApiError::bad_request("the body has no `text` field (the prompt)"))?;
    let prompt = if full_text {
        text.clone()
    } else {
        String::new()
    };
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
    // The handler's chunks are only counted, as every generation's are.
    let (sink, mut chunks) = OutputSink::channel();
    let mut meter = app
        .registry
        .get(&model.name, None)
        .ok()
        .map(|loaded| TokenMeter::start(&app.metrics, loaded.labels.clone()));
    let count = async move {
        while let Some(chunk) = chunks.recv().await {
            if let Some(meter) = &mut meter {
                meter.observe(&chunk);
            }
        }
    };
    let (outcome, ()) = tokio::join!(
        infer::infer_with_sink(app, &model, forwardable, request, sink),
        count
    );
    match outcome? {
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
            Ok(Json(json!({ "generated_text": prompt + &generated })).into_response())
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

/// The content types `/generate` reads.
const ACCEPTED: &str = "application/x-www-form-urlencoded, multipart/form-data or application/json";

/// Reads the body as a form (URL-encoded or multipart) or as JSON.
///
/// A URL-encoded form whose body opens with `{` is read as JSON: that is
/// what `curl -d '{...}'` sends. No content type at all is read as JSON.
async fn parse(parts: &Parts, bytes: &Bytes) -> Result<GenerateBody, ApiError> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    let essence = content_type
        .as_deref()
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    let form = |bytes: &[u8]| {
        serde_urlencoded::from_bytes::<GenerateBody>(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed form field: {e}")))
    };
    match essence {
        Some("application/x-www-form-urlencoded")
            if !bytes.trim_ascii_start().starts_with(b"{") =>
        {
            form(bytes)
        }
        Some("multipart/form-data") => {
            let request = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
            let mut multipart = Multipart::from_request(request, &())
                .await
                .map_err(|e| ApiError::bad_request(e.body_text()))?;
            let mut pairs = Vec::new();
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::bad_request(format!("malformed multipart form: {e}")))?
            {
                let name = field.name().unwrap_or_default().to_owned();
                let value = field.text().await.map_err(|e| {
                    ApiError::bad_request(format!("malformed multipart field `{name}`: {e}"))
                })?;
                pairs.push((name, value));
            }
            // The fields go through the same typed decoding as a URL-encoded form.
            let encoded = serde_urlencoded::to_string(&pairs)
                .map_err(|e| ApiError::bad_request(format!("malformed multipart form: {e}")))?;
            form(encoded.as_bytes())
        }
        None | Some("application/json" | "application/x-www-form-urlencoded") => {
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("/generate reads {ACCEPTED}, not {other}"),
        )),
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
