//! The OpenAI-compatible API under `/v1`: models, completions, chat
//! completions and embeddings, so the `openai` SDK (and what is built on
//! it) talks to edgeserve unchanged.
//!
//! Each route is a thin codec: it reads OpenAI's request shape, runs the
//! model through the typed path ([`generation`](super::generation) for
//! text, [`infer`](super::infer) for embeddings) and writes OpenAI's answer,
//! streamed as Server-Sent Events when asked. A model serves an endpoint
//! when its `config.toml` declares the matching `task`
//! (`text-generation`, `embeddings`); errors are OpenAI error objects.

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
use super::fields::Fields;
use super::state::AppState;

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

/// The body of `request` as JSON fields.
async fn body_fields(app: &AppState, request: Request) -> Result<Fields, OpenAiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, app.max_body).await?;
    Ok(Fields::parse(&bytes, "the request body")?)
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
