//! Triton's model repository extension: list, load and unload models.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::body::read_body;
use super::error::ApiError;
use super::state::AppState;
use crate::bundle::BundleSource;

/// `POST /v2/repository/index`.
pub async fn index(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(app.registry.index()?).expect("index rows serialize"),
    ))
}

/// Largest body of a load request: a few parameters.
const LOAD_BODY_LIMIT: usize = 64 << 10;

/// Body of a load request (every part optional).
#[derive(Default, serde::Deserialize)]
struct LoadRequest {
    #[serde(default)]
    parameters: LoadParameters,
}

#[derive(Default, serde::Deserialize)]
struct LoadParameters {
    /// Install the model from this bundle before loading it.
    bundle_url: Option<String>,
    /// The bundle's digest, unless the URL ends in `#sha256=<hex>`.
    sha256: Option<String>,
}

/// `POST /v2/repository/models/{m}/load`: (re)loads from disk without a
/// restart; with `{"parameters": {"bundle_url": …, "sha256": …}}`, first
/// fetches, verifies and installs that bundle of the model.
pub async fn load(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(body, &headers, LOAD_BODY_LIMIT).await?;
    let request: LoadRequest = if body.trim_ascii().is_empty() {
        LoadRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid load request: {e}")))?
    };
    load_model(
        &app,
        name,
        request.parameters.bundle_url,
        request.parameters.sha256,
    )
    .await?;
    Ok(Json(json!({})))
}

/// (Re)loads model `name` from disk, first installing the bundle at
/// `bundle_url` (checked against `sha256`, or the URL's `#sha256=`) when
/// given; every protocol's load request ends here.
pub async fn load_model(
    app: &AppState,
    name: String,
    bundle_url: Option<String>,
    sha256: Option<String>,
) -> Result<(), ApiError> {
    match (bundle_url, sha256) {
        (Some(url), sha256) => {
            let source = match sha256 {
                Some(sha256) => BundleSource::new(&url, &sha256)?,
                None => url.parse()?,
            };
            app.bundles
                .install_requested(&source, app.registry.repository().root(), &name)
                .await?;
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "parameter sha256 needs bundle_url next to it",
            ));
        }
        (None, None) => {}
    }
    let registry = app.registry.clone();
    tokio::task::spawn_blocking(move || registry.load(&name))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("load task failed: {e}"),
            )
        })??;
    Ok(())
}

/// `POST /v2/repository/models/{m}/unload`.
pub async fn unload(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.registry.unload(&name)?;
    Ok(Json(json!({})))
}
