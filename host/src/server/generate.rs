//! `POST /generate`: text generation without the Open Inference Protocol
//! envelope.
//!
//! The body is a form (`application/x-www-form-urlencoded`) or a JSON
//! object with `text` and, optionally, `model` (default [`DEFAULT_MODEL`]),
//! `max_tokens`, `temperature`, `top_k`, `top_p` and `seed`. The route turns
//! it into an OIP request (input `text`, BYTES `[1]`; the options as request
//! parameters) for the model's `infer`, through the same path as
//! `POST /v2/models/{m}/infer` — validation, queueing, metrics, errors and
//! offloading included — and answers `{"generated_text": "..."}` with the model's
//! `text` output (the continuation, without the prompt).

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::routes;

/// The model `/generate` runs when the body names none.
pub const DEFAULT_MODEL: &str = "gpt2";

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

/// `POST /generate`.
pub async fn generate(State(app): State<Arc<AppState>>, request: Request) -> Response {
    match run(app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(app: Arc<AppState>, request: Request) -> Result<Response, ApiError> {
    let body = parse(&app, request).await?;
    let text = body
        .text
        .ok_or_else(|| ApiError::bad_request("the body has no `text` field (the prompt)"))?;
    let model = body.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    // The OIP path of the same request: where the infer route would forward
    // it if this server does not serve the model.
    let uri: Uri = format!("/v2/models/{model}/infer")
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{model:?} is not a model name")))?;

    let mut parameters = Map::new();
    let options = [
        ("max_tokens", body.max_tokens.map(Value::from)),
        ("temperature", body.temperature.map(Value::from)),
        ("top_k", body.top_k.map(Value::from)),
        ("top_p", body.top_p.map(Value::from)),
        ("seed", body.seed.map(Value::from)),
    ];
    for (key, value) in options {
        if let Some(value) = value {
            parameters.insert(key.to_owned(), value);
        }
    }
    let infer = json!({
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
        "parameters": parameters,
        "outputs": [{"name": "text"}],
    });
    let infer = serde_json::to_vec(&infer).expect("JSON values serialize");
    let response = routes::infer(
        State(app.clone()),
        Path(model.clone()),
        uri,
        HeaderMap::new(),
        Body::from(infer),
    )
    .await;
    if !response.status().is_success() {
        // Already a JSON error naming the problem.
        return Ok(response);
    }
    let generated = generated_text(response).await.map_err(|why| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model {model} did not answer with a text output: {why}"),
        )
    })?;
    Ok(Json(json!({ "generated_text": generated })).into_response())
}

/// Reads the body as a form or as JSON, within the server's body limit.
///
/// A form content type with a body that opens with `{` is read as JSON:
/// that is what `curl -d '{...}'` sends.
async fn parse(app: &AppState, request: Request) -> Result<GenerateBody, ApiError> {
    let form_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (parts, body) = request.into_parts();
    let bytes = routes::read_body(body, &parts.headers, app.max_body).await?;
    let json_object = bytes.trim_ascii_start().starts_with(b"{");
    if form_type && !json_object {
        let request = Request::from_parts(parts, Body::from(bytes));
        let Form(body) = Form::<GenerateBody>::from_request(request, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(body)
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// The first element of the `text` output of a successful OIP response.
async fn generated_text(response: Response) -> Result<String, String> {
    let bytes = to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    body["outputs"]
        .as_array()
        .and_then(|outputs| outputs.iter().find(|o| o["name"] == "text"))
        .and_then(|o| o["data"][0].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("no BYTES output `text` in {body}"))
}
