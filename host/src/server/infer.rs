//! The typed inference path, one for every protocol.
//!
//! A protocol turns what it received into an [`InferRequest`] and calls
//! [`infer`]: the model is resolved, the request checked against what the
//! model declares, queued for an instance and run, and counted in the
//! metrics, whichever protocol it came in on. Offload is decided here too;
//! the protocol then forwards the request as it received it, since only it
//! can.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use super::error::ApiError;
use super::state::AppState;
use super::upstream::{self, Reason};
pub use crate::metrics::Protocol;
use crate::metrics::RequestOutcome;
use crate::protocol::Datatype;
use crate::registry::{LoadedModel, RegistryError};
use crate::runtime::{OutputSink, Parameter, PoolError, Value};

/// A model as a request names it. Deserializes from a route's `{name}` and,
/// when the route has one, `{version}`.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Version; `None`: the highest loaded.
    pub version: Option<String>,
}

/// An inference request, whichever protocol it came in on.
#[derive(Debug)]
pub struct InferRequest {
    /// Inputs by name, in request order.
    pub inputs: Vec<(String, Value)>,
    /// Request parameters for the handler.
    pub parameters: Vec<Parameter>,
    /// Outputs the client asked for; `None`: all of them.
    pub outputs: Option<Vec<String>>,
}

/// A model's answer.
pub struct InferResponse {
    /// The model version that ran the request.
    pub model: Arc<LoadedModel>,
    /// The outputs asked for, in the order the handler produced them.
    pub outputs: Vec<(String, Value)>,
}

impl InferResponse {
    /// The output called `name`, when the handler produced one.
    pub fn output(&self, name: &str) -> Option<&Value> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// What became of a request.
pub enum Outcome {
    /// This server ran it.
    Served(InferResponse),
    /// The upstream is to serve it: the protocol forwards it.
    Offload(Reason),
}

impl Outcome {
    /// The response of a request that the upstream may not take, which is
    /// therefore always served here.
    pub fn served(self) -> InferResponse {
        match self {
            Outcome::Served(response) => response,
            Outcome::Offload(_) => unreachable!("a request that may not be forwarded is not"),
        }
    }
}

/// Why a request failed here.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// This server does not serve the model (or version).
    #[error(transparent)]
    Model(#[from] RegistryError),
    /// The protocol could not read or decode the request.
    #[error("{}", .0.message)]
    Decode(ApiError),
    /// The request does not fit what the model declares.
    #[error("{0}")]
    Invalid(String),
    /// No instance within the queue deadline, or the handler failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> ApiError {
        match e {
            InferError::Model(e) => e.into(),
            InferError::Decode(e) => e,
            InferError::Invalid(message) => ApiError::bad_request(message),
            InferError::Pool(e) => e.into(),
        }
    }
}

/// Holds the in-flight gauge up for the life of a request. A protocol
/// holds one across [`infer`] and any forwarding that follows it.
/// It owns its handle on the gauge, so a streamed request's guard can
/// move into the task that runs it and outlive the route.
pub struct InFlight(Gauge);

impl InFlight {
    /// Counts a request in until the guard drops.
    pub fn enter(app: &AppState) -> InFlight {
        app.metrics.inflight.inc();
        InFlight(app.metrics.inflight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs `request` on the model `model` names. `forwardable`: whether the
/// upstream may take the request ([`upstream::may_forward`]); when it
/// should, the answer is [`Outcome::Offload`].
pub async fn infer(
    app: &AppState,
    model: &ModelRef,
    forwardable: bool,
    request: InferRequest,
) -> Result<Outcome, InferError> {
    infer_decoding(app, model, forwardable, async { Ok(request) }).await
}

/// [`infer`] for a protocol that names the model outside the request body
/// (OIP over HTTP, in the path): `decode` runs only once the model is
/// found, so a request for a model that is missing here is refused or
/// forwarded without being read, and a body that fails to decode counts as
/// a failed request of its model.
pub async fn infer_decoding(
    app: &AppState,
    model: &ModelRef,
    forwardable: bool,
    decode: impl Future<Output = Result<InferRequest, ApiError>>,
) -> Result<Outcome, InferError> {
    infer_via(app, Protocol::Http, model, forwardable, decode, None).await
}

/// [`infer`] for a request whose output is streamed: the chunks the handler
/// sends while it runs go to `sink` (dropping its receiver cancels the
/// request at the handler's next chunk). A stream is never forwarded.
pub async fn infer_streaming(
    app: &AppState,
    model: &ModelRef,
    request: InferRequest,
    sink: OutputSink,
) -> Result<InferResponse, InferError> {
    let decode = async { Ok(request) };
    let outcome = infer_via(app, Protocol::Http, model, false, decode, Some(sink));
    outcome.await.map(Outcome::served)
}

/// [`infer`] with an output sink: what the handler sends while it runs goes
/// to `sink`, whether the protocol streams it or only counts it.
pub async fn infer_with_sink(
    app: &AppState,
    model: &ModelRef,
    forwardable: bool,
    request: InferRequest,
    sink: OutputSink,
) -> Result<Outcome, InferError> {
    let decode = async { Ok(request) };
    infer_via(app, Protocol::Http, model, forwardable, decode, Some(sink)).await
}

/// [`infer_decoding`] for a request that came in over `protocol`, with the
/// output `sink` of a request whose output is sent as it runs: resolves the
/// model, runs the request and counts its outcome.
pub async fn infer_via(
    app: &AppState,
    protocol: Protocol,
    model: &ModelRef,
    forwardable: bool,
    decode: impl Future<Output = Result<InferRequest, ApiError>>,
    sink: Option<OutputSink>,
) -> Result<Outcome, InferError> {
    let model = match app.registry.get(&model.name, model.version.as_deref()) {
        Ok(model) => model,
        Err(e) if forwardable && upstream::lacks(&e) => {
            return Ok(Outcome::Offload(Reason::Missing));
        }
        Err(e) => return Err(e.into()),
    };
    let result = run(app, &model, forwardable, decode, sink).await;
    let outcome = match &result {
        Ok(Outcome::Served(_)) => RequestOutcome::Success,
        Ok(Outcome::Offload(_)) => RequestOutcome::Offloaded,
        Err(_) => RequestOutcome::Failure,
    };
    model.series.requests(outcome, protocol).inc();
    result
}

/// Decodes, checks and runs a request on a found model.
async fn run(
    app: &AppState,
    model: &Arc<LoadedModel>,
    forwardable: bool,
    decode: impl Future<Output = Result<InferRequest, ApiError>>,
    sink: Option<OutputSink>,
) -> Result<Outcome, InferError> {
    let request = decode.await.map_err(InferError::Decode)?;
    validate(model, &request)?;
    // Inferences are batch elements: the first dimension of the first input.
    let batch = request
        .inputs
        .first()
        .and_then(|(_, value)| value.shape().first().copied())
        .unwrap_or(1) as u64;
    let InferRequest {
        inputs,
        parameters,
        outputs,
    } = request;
    // A streamed request runs alone: its chunks are its own.
    let ran = match sink {
        None => model.batcher.run(inputs, parameters, outputs).await,
        Some(sink) => {
            model
                .pool
                .run(move |instance| {
                    Box::pin(instance.infer_streaming(inputs, parameters, outputs, sink))
                })
                .await
        }
    };
    let (outputs, timing) = match ran {
        Err(PoolError::Busy { .. })
            if forwardable
                && app.upstream.as_deref().is_some_and(|upstream| {
                    upstream.offloads_on_queue_timeout(model.config.offload_on_queue_timeout)
                }) =>
        {
            return Ok(Outcome::Offload(Reason::QueueTimeout));
        }
        ran => ran?,
    };
    let series = &model.series;
    series.queue_seconds.observe(timing.queue.as_secs_f64());
    series.compute_seconds.observe(timing.compute.as_secs_f64());
    series.inferences.inc_by(batch);
    Ok(Outcome::Served(InferResponse {
        model: model.clone(),
        outputs,
    }))
}

/// Checks inputs and requested outputs against what the model declares.
fn validate(model: &LoadedModel, request: &InferRequest) -> Result<(), InferError> {
    let declared = &model.metadata.inputs;
    for (name, value) in &request.inputs {
        let Some(spec) = declared.iter().find(|s| s.name == *name) else {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            return Err(InferError::Invalid(format!(
                "model {model} has no input '{name}' (its inputs: {})",
                names.join(", ")
            )));
        };
        let datatype = Datatype::of(value);
        if spec.datatype != datatype.name() {
            return Err(InferError::Invalid(format!(
                "input '{name}' of model {model} must be {}, got {datatype}",
                spec.datatype
            )));
        }
        let shape = value.shape();
        let fits = spec.shape.len() == shape.len()
            && spec
                .shape
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want == -1 || want == got as i64);
        if !fits {
            return Err(InferError::Invalid(format!(
                "input '{name}' of model {model} must have shape {:?} (-1: any size), got {shape:?}",
                spec.shape
            )));
        }
    }
    if let Some(missing) = declared
        .iter()
        .find(|s| !request.inputs.iter().any(|(name, _)| *name == s.name))
    {
        return Err(InferError::Invalid(format!(
            "model {model} needs input '{}' ({} {:?})",
            missing.name, missing.datatype, missing.shape
        )));
    }
    let produced = &model.metadata.outputs;
    for output in request.outputs.iter().flatten() {
        if !produced.iter().any(|s| s.name == *output) {
            let names: Vec<&str> = produced.iter().map(|s| s.name.as_str()).collect();
            return Err(InferError::Invalid(format!(
                "model {model} has no output '{output}' (its outputs: {})",
                names.join(", ")
            )));
        }
    }
    Ok(())
}
