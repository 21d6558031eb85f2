//! The OpenAI-compatible API under `/v1`: models, completions, chat
//! completions and embeddings, so the `openai` SDK (and what is built on
//! it) talks to edgeserve unchanged.
//!
//! Each route is a thin codec: it reads OpenAI's request shape, runs the
//! model through the typed path ([`generation`](super::generation) for
//! text, [`infer`](super::infer) for embeddings) and writes OpenAI's answer,
//! streamed as Server-Sent Events when asked. A model serves an endpoint
//! when its `config.toml` declares the matching `task`
//! (`text-generation`, `embeddings`); errors are OpenAI error objects. A
//! request for a model this server lacks goes to the upstream, when there
//! is one, and its answer (a stream too) is relayed as it arrives.

mod completions;
mod embeddings;
mod error;
mod template;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use self::error::OpenAiError;
use super::body::read_body;
use super::fields::{Fields, wrong};
use super::infer::ModelRef;
use super::state::AppState;
use super::upstream;

/// The `/v1` routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/embeddings", post(embeddings::embeddings))
}

/// `GET /v1/models`: every model being served.
async fn models(State(app): State<Arc<AppState>>) -> Response {
    let index = match app.registry.index() {
        Ok(index) => index,
        Err(e) => return OpenAiError::from(super::error::ApiError::from(e)).into_response(),
    };
    let created = unix_time();
    let data: Vec<Value> = index
        .into_iter()
        .filter(|entry| app.registry.get(&entry.name, None).is_ok())
        .map(|entry| {
            json!({"id": entry.name, "object": "model", "created": created, "owned_by": "edgeserve"})
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// What a `/v1` request turned out to be.
enum Received {
    /// For this server: the model it names and the rest of its fields.
    Here {
        /// The `model` field.
        model: String,
        /// The other fields.
        fields: Fields,
    },
    /// For a model only the upstream serves: its answer, relayed.
    Relayed(Response),
}

/// Reads `request`'s body and its `model`; a request for a model this
/// server lacks goes to the upstream as received, when there is one.
async fn receive(app: &AppState, request: Request) -> Result<Received, OpenAiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, app.max_body).await?;
    let mut fields = Fields::parse(&bytes, "the request body")?;
    let model = match fields.required("model")? {
        Value::String(name) => name,
        other => return Err(wrong("model", "a string", &other).into()),
    };
    let named = ModelRef {
        name: model.clone(),
        version: None,
    };
    Ok(
        match upstream::relay_missing(app, &named, &parts, bytes).await {
            Some(relayed) => Received::Relayed(relayed),
            None => Received::Here { model, fields },
        },
    )
}

/// An id for a response: `prefix` and a number unique in this process.
fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Seconds since the epoch (OpenAI's `created`).
fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
