//! The HTTP routes: Open Inference Protocol v2, Triton's repository API and
//! Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::oip;
use super::upstream::{self, Reason};
use crate::bundle::BundleSource;
use crate::metrics::RequestLabels;
use crate::registry::LoadedModel;
use crate::runtime::{PoolError, TensorMetadata};

type Shared = State<Arc<AppState>>;

/// `GET /v2`: server metadata.
pub async fn server_metadata(State(app): Shared) -> Json<Value> {
    let devices = app.registry.devices();
    let describe = |d: edgeserve_tensor::BackendInfo| json!({ "kind": d.kind, "name": d.device, "api": d.api, "driver": d.driver });
    Json(json!({
        "name": "edgeserve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository", "metrics"],
        "device": describe(devices.default_info()),
        "devices": devices.all().into_iter().map(describe).collect::<Vec<_>>(),
        "allocator": app.registry.runtime().allocator(),
    }))
}

/// `GET /v2/health/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: 200 once startup loading finished, 503 while
/// starting or shutting down.
pub async fn ready(State(app): Shared) -> Response {
    let ready = app.ready.load(Ordering::Relaxed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn specs(specs: &[TensorMetadata]) -> Value {
    specs
        .iter()
        .map(|s| json!({ "name": s.name, "datatype": s.datatype, "shape": s.shape }))
        .collect()
}

/// The local model, or the response to send instead: the upstream's when
/// this server lacks the model, else the error.
async fn local_model(
    app: &AppState,
    name: &str,
    version: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Arc<LoadedModel>, Response> {
    match app.registry.get(name, version) {
        Ok(model) => Ok(model),
        Err(e) => {
            Err(
                upstream::or_local_error(app, name, e, Method::GET, uri, headers, Body::empty())
                    .await,
            )
        }
    }
}

async fn model_metadata(
    app: &AppState,
    name: &str,
    version: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let model = match local_model(app, name, version, uri, headers).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    Json(json!({
        "name": model.name,
        "versions": app.registry.versions(name).iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": "edgeserve_wasm",
        "inputs": specs(&model.metadata.inputs),
        "outputs": specs(&model.metadata.outputs),
        "parameters": { "device": model.device.kind, "instances": model.pool.live() },
    }))
    .into_response()
}

async fn model_readiness(
    app: &AppState,
    name: &str,
    version: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    match local_model(app, name, version, uri, headers).await {
        Ok(model) => Json(json!({ "name": model.name, "ready": true })).into_response(),
        Err(response) => response,
    }
}

/// `GET /v2/models/{m}`.
pub async fn metadata(
    State(app): Shared,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    model_metadata(&app, &name, None, &uri, &headers).await
}

/// `GET /v2/models/{m}/versions/{v}`.
pub async fn version_metadata(
    State(app): Shared,
    Path((name, version)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    model_metadata(&app, &name, Some(&version), &uri, &headers).await
}

/// `GET /v2/models/{m}/ready`.
pub async fn model_ready(
    State(app): Shared,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    model_readiness(&app, &name, None, &uri, &headers).await
}

/// `GET /v2/models/{m}/versions/{v}/ready`.
pub async fn version_ready(
    State(app): Shared,
    Path((name, version)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    model_readiness(&app, &name, Some(&version), &uri, &headers).await
}

/// `POST /v2/models/{m}/infer`.
pub async fn infer(
    State(app): Shared,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&app, &name, None, &uri, &headers, body).await
}

/// `POST /v2/models/{m}/versions/{v}/infer`.
pub async fn version_infer(
    State(app): Shared,
    Path((name, version)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&app, &name, Some(&version), &uri, &headers, body).await
}

/// Holds the in-flight gauge up for the life of a request.
struct InFlight<'a>(&'a AppState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.inflight.dec();
    }
}

async fn run_infer(
    app: &AppState,
    name: &str,
    version: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    app.metrics.inflight.inc();
    let _inflight = InFlight(app);
    let model = match app.registry.get(name, version) {
        Ok(model) => model,
        Err(e) => {
            return upstream::or_local_error(app, name, e, Method::POST, uri, headers, body).await;
        }
    };
    let result = infer_on(app, &model, uri, headers, body).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(_) => "failure",
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            model: model.labels.model.clone(),
            version: model.labels.version.clone(),
            outcome,
        })
        .inc();
    result.map_or_else(IntoResponse::into_response, |(response, _)| response)
}

/// Runs one inference on `model`: the response, and the outcome it counts
/// as ("success", or "offloaded" when the queue deadline sent it upstream).
async fn infer_on(
    app: &AppState,
    model: &Arc<LoadedModel>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Response, &'static str), ApiError> {
    let body = read_body(body, headers, app.max_body).await?;
    let json_len = headers
        .get(oip::HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{} must be a byte count", oip::HEADER_LENGTH))
                })
        })
        .transpose()?;
    let request = oip::decode(json_len, &body)?;
    validate(model, &request)?;
    let batch = request
        .inputs
        .first()
        .and_then(|i| i.shape.first().copied())
        .unwrap_or(1) as u64;
    let inputs = request
        .inputs
        .into_iter()
        .map(|i| (i.name, i.value))
        .collect();
    let parameters = request.parameters;
    let wanted = request
        .outputs
        .as_ref()
        .map(|outputs| outputs.iter().map(|o| o.name.clone()).collect());
    let ran = model
        .pool
        .run(move |instance| instance.infer(inputs, parameters, wanted))
        .await;
    let (outputs, timing) = match ran {
        Err(PoolError::Busy { .. })
            if upstream::may_forward(app, headers)
                && app.upstream.as_deref().is_some_and(|upstream| {
                    upstream.offloads_on_queue_timeout(model.config.offload_on_queue_timeout)
                }) =>
        {
            let response = upstream::forward(
                app,
                &model.name,
                Reason::QueueTimeout,
                Method::POST,
                uri,
                headers,
                body,
            )
            .await;
            return Ok((response, "offloaded"));
        }
        ran => ran?,
    };
    app.metrics
        .queue_seconds
        .get_or_create(&model.labels)
        .observe(timing.queue.as_secs_f64());
    app.metrics
        .compute_seconds
        .get_or_create(&model.labels)
        .observe(timing.compute.as_secs_f64());
    app.metrics
        .inferences
        .get_or_create(&model.labels)
        .inc_by(batch);
    let encoded = oip::encode(
        &model.name,
        model.version,
        request.id,
        &outputs,
        request.outputs.as_deref(),
        request.binary_output,
    );
    let mut response = Response::new(Body::from(encoded.body));
    let content_type = match encoded.json_len {
        Some(n) => {
            response
                .headers_mut()
                .insert(oip::HEADER_LENGTH, HeaderValue::from(n));
            "application/octet-stream"
        }
        None => "application/json",
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok((response, "success"))
}

/// How far past the limit a body is still read (and discarded) before the
/// 413, so an ordinary client sees the answer instead of a broken pipe.
const DRAIN_CAP: usize = 16 << 20;

/// Reads the body, refusing more than `limit` bytes with a 413. Memory use
/// stays within `limit` whatever the client sends.
pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {limit} byte limit (--max-body-bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_CAP)) {
        return Err(too_large());
    }
    let mut body = body;
    let mut buffer = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buffer.extend_from_slice(&data);
        } else if seen > limit.saturating_add(DRAIN_CAP) {
            return Err(too_large());
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buffer.freeze())
}

/// Checks inputs and requested outputs against what the model declares.
fn validate(model: &LoadedModel, request: &oip::Request) -> Result<(), ApiError> {
    let label = format!("{}:{}", model.name, model.version);
    let declared = &model.metadata.inputs;
    for input in &request.inputs {
        let Some(spec) = declared.iter().find(|s| s.name == input.name) else {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "model {label} has no input '{}' (its inputs: {})",
                input.name,
                names.join(", ")
            )));
        };
        if spec.datatype != input.datatype {
            return Err(ApiError::bad_request(format!(
                "input '{}' of model {label} must be {}, got {}",
                input.name, spec.datatype, input.datatype
            )));
        }
        let fits = spec.shape.len() == input.shape.len()
            && spec
                .shape
                .iter()
                .zip(&input.shape)
                .all(|(&want, &got)| want == -1 || want == got as i64);
        if !fits {
            return Err(ApiError::bad_request(format!(
                "input '{}' of model {label} must have shape {:?} (-1: any size), got {:?}",
                input.name, spec.shape, input.shape
            )));
        }
    }
    if let Some(missing) = declared
        .iter()
        .find(|s| !request.inputs.iter().any(|i| i.name == s.name))
    {
        return Err(ApiError::bad_request(format!(
            "model {label} needs input '{}' ({} {:?})",
            missing.name, missing.datatype, missing.shape
        )));
    }
    for output in request.outputs.iter().flatten() {
        if !model.metadata.outputs.iter().any(|s| s.name == output.name) {
            let names: Vec<&str> = model
                .metadata
                .outputs
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(ApiError::bad_request(format!(
                "model {label} has no output '{}' (its outputs: {})",
                output.name,
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// `POST /v2/repository/index`.
pub async fn repository_index(State(app): Shared) -> Result<Json<Value>, ApiError> {
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
pub async fn repository_load(
    State(app): Shared,
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
    match (request.parameters.bundle_url, request.parameters.sha256) {
        (Some(url), sha256) => {
            let source = match sha256 {
                Some(sha256) => BundleSource::new(&url, &sha256)?,
                None => url.parse()?,
            };
            app.bundles
                .install(&source, app.registry.repository().root(), Some(&name))
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
    Ok(Json(json!({})))
}

/// `POST /v2/repository/models/{m}/unload`.
pub async fn repository_unload(
    State(app): Shared,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.registry.unload(&name)?;
    Ok(Json(json!({})))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): Shared) -> Response {
    if let Some(memory) = app.registry.devices().gpu_memory() {
        for (state, bytes) in [("allocated", memory.allocated), ("pooled", memory.pooled)] {
            app.metrics
                .device_memory
                .get_or_create(&crate::metrics::DeviceMemoryLabels {
                    device: memory.info.device.clone(),
                    state,
                })
                .set(bytes as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {uri}"))
}

/// Wrong method on a known path.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}"),
    )
}
