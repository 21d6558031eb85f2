//! The HTTP routes of the Open Inference Protocol v2 (server and model
//! metadata, health, inference) and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::LazyBody;
use super::error::ApiError;
use super::infer::{self, InFlight, ModelRef, Outcome};
use super::oip;
use super::state::AppState;
use super::upstream;
use crate::registry::LoadedModel;
use crate::runtime::TensorMetadata;

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
    model: &ModelRef,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Arc<LoadedModel>, Response> {
    match app.registry.get(&model.name, model.version.as_deref()) {
        Ok(model) => Ok(model),
        Err(e) => Err(upstream::or_local_error(app, &model.name, e, uri, headers).await),
    }
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub async fn model_metadata(
    State(app): Shared,
    Path(model): Path<ModelRef>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let model = match local_model(&app, &model, &uri, &headers).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    Json(json!({
        "name": model.name,
        "versions": app.registry.versions(&model.name).iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": "edgeserve_wasm",
        "inputs": specs(&model.metadata.inputs),
        "outputs": specs(&model.metadata.outputs),
        "parameters": { "device": model.device.kind, "instances": model.pool.live(), "task": model.config.task },
    }))
    .into_response()
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`.
pub async fn model_ready(
    State(app): Shared,
    Path(model): Path<ModelRef>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match local_model(&app, &model, &uri, &headers).await {
        Ok(model) => Json(json!({ "name": model.name, "ready": true })).into_response(),
        Err(response) => response,
    }
}

/// `POST /v2/models/{m}[/versions/{v}]/infer`: the body (JSON, or JSON and
/// binary tensor data) is decoded once the model is found, and forwarded
/// as received when the upstream is to serve it.
pub async fn infer(State(app): Shared, Path(model): Path<ModelRef>, request: Request) -> Response {
    // The parts by value, not the `HeaderMap` extractor's copy of them.
    let (parts, body) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    let _inflight = InFlight::enter(&app);
    let forwardable = upstream::may_forward(&app, headers);
    let mut body = LazyBody::Unread(body);
    let mut envelope = None;
    let decode = async {
        let bytes = body.bytes(headers, app.max_body).await?;
        let (request, wire) = oip::decode(oip::json_len(headers)?, &bytes)?;
        envelope = Some(wire);
        Ok::<_, ApiError>(request)
    };
    match infer::infer_decoding(&app, &model, forwardable, decode).await {
        Ok(Outcome::Served(response)) => {
            let envelope = envelope.expect("a served request was decoded");
            oip::encode(
                &response.model.name,
                response.model.version,
                envelope.id,
                &response.outputs,
                envelope.outputs.as_deref(),
                envelope.binary_output,
            )
            .into_response()
        }
        Ok(Outcome::Offload(reason)) => match body.bytes(headers, app.max_body).await {
            Ok(bytes) => {
                upstream::forward(&app, &model.name, reason, Method::POST, uri, headers, bytes)
                    .await
            }
            Err(e) => e.into_response(),
        },
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): Shared) -> Response {
    let packed = edgeserve_tensor::cpu::packed_weight_bytes();
    app.metrics.packed_weight_bytes.set(packed as i64);
    if let Some(memory) = app.registry.devices().gpu_memory() {
        let states = [("allocated", memory.allocated), ("pooled", memory.pooled)];
        let device = memory.device.map(|bytes| ("device", bytes));
        for (state, bytes) in states.into_iter().chain(device) {
            app.metrics
                .device_memory
                .get_or_create(&crate::metrics::DeviceMemoryLabels {
                    device: memory.info.device.clone(),
                    state,
                })
                .set(bytes as i64);
        }
    }
    if let Some((device, total)) = app.registry.devices().gpu_read_backs() {
        let counter = app
            .metrics
            .device_read_backs
            .get_or_create(&crate::metrics::DeviceNameLabels { device });
        counter.inc_by(total.saturating_sub(counter.get()));
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
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {uri}"))
}

/// Wrong method on a known path.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}"),
    )
}
