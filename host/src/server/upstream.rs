//! Offload glue: which local answers are replaced by the upstream's, and
//! how its answer (or its failure) becomes this server's response.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use super::error::ApiError;
use super::infer::{InFlight, ModelRef};
use super::state::AppState;
use crate::metrics::OffloadLabels;
use crate::offload::{FORWARDED, SERVED_BY};
use crate::registry::RegistryError;
use crate::repository::RepositoryError;

/// Why a request is forwarded, as the offload counter labels it.
#[derive(Clone, Copy, Debug)]
pub enum Reason {
    /// This server does not serve the model (or version).
    Missing,
    /// No instance became free within the queue deadline.
    QueueTimeout,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::QueueTimeout => "queue_timeout",
        }
    }
}

/// Whether this request may go to the upstream: there is one, and the
/// request was not itself forwarded here.
pub fn may_forward(app: &AppState, headers: &HeaderMap) -> bool {
    app.upstream.is_some() && !headers.contains_key(FORWARDED)
}

/// Whether `e` says this server lacks the model, so the upstream may have it.
pub fn lacks(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::UnknownModel(_)
            | RegistryError::UnknownVersion { .. }
            | RegistryError::NotLoaded { .. }
            | RegistryError::Repository(RepositoryError::UnknownModel { .. })
    )
}

/// The answer for a model metadata or readiness request (a bodiless `GET`)
/// the registry could not serve: the upstream's, when there is one and the
/// model is missing here, else the local error.
pub async fn or_local_error(
    app: &AppState,
    model: &str,
    error: RegistryError,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    if !(may_forward(app, headers) && lacks(&error)) {
        return ApiError::from(error).into_response();
    }
    forward(
        app,
        model,
        Reason::Missing,
        Method::GET,
        uri,
        headers,
        Bytes::new(),
    )
    .await
}

/// Forwards the request to the upstream and answers with its response,
/// or with a 502/504 naming the upstream when it gives none.
///
/// # Panics
/// When the server has no upstream: callers check first.
pub async fn forward(
    app: &AppState,
    model: &str,
    reason: Reason,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let upstream = app
        .upstream
        .as_deref()
        .expect("forward is called only with an upstream");
    app.metrics
        .offloaded
        .get_or_create(&OffloadLabels {
            model: model.to_owned(),
            reason: reason.label(),
        })
        .inc();
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match upstream.forward(method, path, headers, body).await {
        Ok(response) => response.map(Body::from),
        Err(e) => {
            tracing::warn!(%model, upstream = upstream.url(), "offload failed: {e}");
            let mut response = ApiError::new(e.status(), e.to_string()).into_response();
            // The client can tell a failed offload from a local failure.
            response
                .headers_mut()
                .insert(SERVED_BY, HeaderValue::from_static("upstream-unavailable"));
            response
        }
    }
}

/// The upstream's answer to a request for a model this server lacks,
/// relayed as it arrives, so a stream of generated text goes through chunk
/// by chunk; `None` when the request is for this server (it has the model,
/// or the request may not be forwarded). The request goes as received:
/// `parts` and `body`. The in-flight gauge counts it until the relayed
/// answer has been sent.
pub async fn relay_missing(
    app: &AppState,
    model: &ModelRef,
    parts: &Parts,
    body: Bytes,
) -> Option<Response> {
    if !may_forward(app, &parts.headers) {
        return None;
    }
    match app.registry.get(&model.name, model.version.as_deref()) {
        Err(e) if lacks(&e) => {}
        _ => return None,
    }
    let upstream = app.upstream.as_deref()?;
    app.metrics
        .offloaded
        .get_or_create(&OffloadLabels {
            model: model.name.clone(),
            reason: Reason::Missing.label(),
        })
        .inc();
    let inflight = InFlight::enter(app);
    let uri = &parts.uri;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let relayed = upstream
        .relay(parts.method.clone(), path, &parts.headers, body)
        .await;
    Some(match relayed {
        Ok(response) => response.map(|body| {
            let chunks = body.into_data_stream().map(move |chunk| {
                let _counted = &inflight;
                chunk
            });
            Body::from_stream(chunks)
        }),
        Err(e) => {
            tracing::warn!(model = %model.name, upstream = upstream.url(), "offload failed: {e}");
            let mut response = ApiError::new(e.status(), e.to_string()).into_response();
            response
                .headers_mut()
                .insert(SERVED_BY, HeaderValue::from_static("upstream-unavailable"));
            response
        }
    })
}
