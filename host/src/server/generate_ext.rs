//! The Open Inference Protocol's generate extension (KServe's
//! `generate_rest.yaml`, Triton's generate endpoint):
//! `POST /v2/models/{m}[/versions/{v}]/generate` answers
//! `{"text_output", "model_name", "model_version"}`, and `…/generate_stream`
//! sends the same as Server-Sent Events as the text grows, the last with
//! `"done": true`.
//!
//! The body is `{"text_input": "...", "parameters": {...}}` with
//! `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `stop` (a string
//! or a list) and `details`; with `details: true` the answer also carries
//! `details`: `finish_reason` (`length`, `stop` or `eos`), the token counts
//! and each generated token's `logprobs`. Errors are `{"error": "..."}`.
//! A request for a model this server lacks goes to the upstream, when there
//! is one, and its answer (its stream) is relayed as it arrives.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::body::read_body;
use super::error::ApiError;
use super::fields::{FieldError, Fields, empty_field, wrong};
use super::generation::{Completion, FinishReason, Generation, GenerationRequest, Options};
use super::infer::ModelRef;
use super::sse::{self, StreamCodec};
use super::state::AppState;
use super::upstream;
use crate::runtime::TextChunk;

/// The most stop sequences, as the extension's schema allows.
const MAX_STOPS: usize = 5;

/// The extension's two routes, each with and without a model version.
pub fn router() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for model in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
        router = router
            .route(&format!("{model}/generate"), post(generate::<false>))
            .route(&format!("{model}/generate_stream"), post(generate::<true>));
    }
    router
}

/// `POST /v2/models/{m}[/versions/{v}]/generate`, or with `STREAM`
/// `…/generate_stream`: the same request, answered whole or as events.
async fn generate<const STREAM: bool>(
    State(app): State<Arc<AppState>>,
    Path(model): Path<ModelRef>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, app.max_body).await?;
    if let Some(relayed) = upstream::relay_missing(&app, &model, &parts, bytes.clone()).await {
        return Ok(relayed);
    }
    let (prompt, options, details) = decode(&bytes)?;
    let generation = Generation::start(
        &app,
        &model,
        GenerationRequest {
            prompts: vec![prompt],
            options,
        },
        "generate",
    )?;
    let reply = Reply {
        model_name: model.name,
        model_version: generation.model_version().to_owned(),
        details,
    };
    if STREAM {
        return sse::stream(generation, reply).await;
    }
    let completion = generation
        .finish()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::bad_request("no text was generated"))?;
    let mut body = reply.body(&completion.text);
    if details {
        body["details"] = Reply::details(&completion);
    }
    Ok(Json(body).into_response())
}

/// The prompt, the options and whether `details` were asked for.
fn decode(bytes: &[u8]) -> Result<(String, Options, bool), FieldError> {
    let mut fields = Fields::parse(bytes, "the request body")?;
    let prompt = match fields.required("text_input")? {
        Value::String(s) if !s.is_empty() => s,
        Value::String(_) => return Err(empty_field("text_input", "give the text to continue")),
        other => return Err(wrong("text_input", "a string", &other)),
    };
    let mut parameters = match fields.take("parameters") {
        Some(value) => Fields::of(value, "parameters", Some("parameters"))?,
        None => Fields::of(Value::Null, "parameters", Some("parameters"))?,
    };
    fields.finish()?;
    let max_tokens = parameters.integer("max_tokens", 0, u32::MAX.into())?;
    let options = Options::read(&mut parameters, max_tokens, None, MAX_STOPS)?;
    let details = parameters.boolean("details")?.unwrap_or(false);
    // In the schema, accepted at their neutral values.
    parameters.integer("best_of", 1, 1)?;
    parameters.number(
        "frequency_penalty",
        "0..=0 (penalties are not supported)",
        |x| x == 0.0,
    )?;
    parameters.finish()?;
    Ok((
        prompt,
        Options {
            logprobs: details,
            ..options
        },
        details,
    ))
}

/// What every answer of one request shares.
struct Reply {
    model_name: String,
    model_version: String,
    details: bool,
}

impl Reply {
    fn body(&self, text: &str) -> Value {
        json!({
            "model_name": self.model_name,
            "model_version": self.model_version,
            "text_output": text,
        })
    }

    fn details(completion: &Completion) -> Value {
        json!({
            "finish_reason": match completion.finish_reason {
                FinishReason::Length => "length",
                FinishReason::Stop => "stop",
                FinishReason::EndOfText => "eos",
            },
            "prompt_tokens": completion.prompt_tokens,
            "generated_tokens": completion.completion_tokens,
            "logprobs": completion.logprobs,
        })
    }
}

impl StreamCodec for Reply {
    fn chunk(&mut self, chunk: TextChunk) -> Vec<SseEvent> {
        if chunk.text.is_empty() {
            return Vec::new();
        }
        let mut event = self.body(&chunk.text);
        event["done"] = json!(false);
        vec![SseEvent::default().data(event.to_string())]
    }

    fn done(&mut self, completions: Vec<Completion>) -> Vec<SseEvent> {
        let mut event = self.body("");
        event["done"] = json!(true);
        if let (true, Some(completion)) = (self.details, completions.first()) {
            event["details"] = Reply::details(completion);
        }
        vec![SseEvent::default().data(event.to_string())]
    }

    fn error(&mut self, error: ApiError) -> SseEvent {
        SseEvent::default().data(json!({"error": error.message}).to_string())
    }
}
