//! `inference.GRPCInferenceService`: health, metadata, inference and the
//! repository extension over the state every protocol shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::model_repository_parameter::ParameterChoice;
use super::proto::repository_index_response::ModelIndex;
use super::proto::*;
use super::status;
use super::{codec, forward, stream};
use crate::registry::{LoadedModel, RegistryError};
use crate::runtime::TensorMetadata as Spec;
use crate::server::infer::{self, InFlight, ModelRef, Outcome, Protocol};
use crate::server::repository::load_model;
use crate::server::state::AppState;
use crate::server::upstream;

/// The inference service over the shared state.
pub struct Inference {
    app: Arc<AppState>,
}

impl Inference {
    /// The service over `app`.
    pub fn new(app: Arc<AppState>) -> Inference {
        Inference { app }
    }

    fn model(&self, name: &str, version: &str) -> Result<Arc<LoadedModel>, Status> {
        self.app
            .registry
            .get(name, version_of(version))
            .map_err(status::of_registry)
    }

    async fn infer(
        &self,
        message: ModelInferRequest,
        metadata: &MetadataMap,
    ) -> Result<ModelInferResponse, Status> {
        let app = &*self.app;
        let _inflight = InFlight::enter(app);
        let model = ModelRef {
            name: message.model_name.clone(),
            version: version_of(&message.model_version).map(str::to_owned),
        };
        // The same rule as REST: there is an upstream and the request was
        // not itself forwarded here. Decoding consumes the message, so the
        // upstream gets a copy.
        let forwardable = upstream::may_forward(app, metadata.as_ref());
        let copy = forwardable.then(|| message.clone());
        let mut envelope = None;
        let decode = async {
            let (request, wire) = codec::decode(message)?;
            envelope = Some(wire);
            Ok(request)
        };
        let response =
            match infer::infer_via(app, Protocol::Grpc, &model, forwardable, decode, None).await {
                Ok(Outcome::Served(response)) => response,
                Ok(Outcome::Offload(reason)) => {
                    let message = copy.expect("only a forwardable request is offloaded");
                    let answer = forward::forward(app, reason, message, metadata).await?;
                    return within_limit(app, answer);
                }
                Err(e) => return Err(status::of_infer(e)),
            };
        let envelope = envelope.expect("a served request was decoded");
        let encoded = codec::encode(
            &response.model.name,
            response.model.version,
            envelope,
            &response.outputs,
        );
        within_limit(app, encoded)
    }
}

/// `response`, unless it is over the server's message limit.
fn within_limit(
    app: &AppState,
    response: ModelInferResponse,
) -> Result<ModelInferResponse, Status> {
    let size = prost::Message::encoded_len(&response);
    if size > app.max_body {
        return Err(Status::resource_exhausted(format!(
            "the response of model {}:{} is {size} bytes, over the server's limit of {} bytes (--max-body-bytes)",
            response.model_name, response.model_version, app.max_body
        )));
    }
    Ok(response)
}

/// An empty version field means "the server's choice".
fn version_of(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// The client's deadline, from the `grpc-timeout` header: digits and a unit.
fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `bundle_url` and `sha256` of a load request's parameters, the only
/// ones taken, each a string.
fn load_parameters(
    parameters: HashMap<String, ModelRepositoryParameter>,
) -> Result<(Option<String>, Option<String>), Status> {
    let mut bundle_url = None;
    let mut sha256 = None;
    for (key, value) in parameters {
        let slot = match key.as_str() {
            "bundle_url" => &mut bundle_url,
            "sha256" => &mut sha256,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "load parameter '{key}' is not supported (edgeserve takes bundle_url and sha256)"
                )));
            }
        };
        match value.parameter_choice {
            Some(ParameterChoice::StringParam(text)) => *slot = Some(text),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "load parameter '{key}' must be a string"
                )));
            }
        }
    }
    Ok((bundle_url, sha256))
}

fn tensors(specs: &[Spec]) -> Vec<TensorMetadata> {
    specs
        .iter()
        .map(|s| TensorMetadata {
            name: s.name.clone(),
            datatype: s.datatype.clone(),
            shape: s.shape.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.app.ready.load(Ordering::Relaxed);
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        // An unloaded model is known but not ready; an unknown one is an error.
        let ready = match self
            .app
            .registry
            .get(&request.name, version_of(&request.version))
        {
            Ok(_) => true,
            Err(RegistryError::NotLoaded { .. } | RegistryError::Recovering { .. }) => false,
            Err(e) => return Err(status::of_registry(e)),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "edgeserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into(), "metrics".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.model(&request.name, &request.version)?;
        Ok(Response::new(ModelMetadataResponse {
            name: model.name.clone(),
            versions: self
                .app
                .registry
                .versions(&model.name)
                .iter()
                .map(u64::to_string)
                .collect(),
            platform: "edgeserve_wasm".into(),
            inputs: tensors(&model.metadata.inputs),
            outputs: tensors(&model.metadata.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
        let Some(limit) = deadline else {
            return self.infer(message, &metadata).await.map(Response::new);
        };
        let model = message.model_name.clone();
        // Past the deadline the client has given up: answer it, while a
        // handler already running finishes in the background and returns
        // its instance to the pool.
        match tokio::time::timeout(limit, self.infer(message, &metadata)).await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "model {model} did not answer within the client's deadline of {} ms (grpc-timeout)",
                limit.as_millis()
            ))),
        }
    }

    type ModelStreamInferStream = stream::Responses;

    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let deadline = deadline(request.metadata());
        let (metadata, _, requests) = request.into_parts();
        Ok(Response::new(stream::serve(
            self.app.clone(),
            requests,
            metadata,
            deadline,
        )))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let only_ready = request.into_inner().ready;
        let rows = self
            .app
            .registry
            .index()
            .map_err(|e| status::of_api(e.into()))?;
        let models = rows
            .into_iter()
            .filter(|row| !only_ready || row.state == "READY")
            .map(|row| ModelIndex {
                name: row.name,
                version: row.version.unwrap_or_default(),
                state: row.state.into(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let RepositoryModelLoadRequest {
            model_name,
            parameters,
            ..
        } = request.into_inner();
        let (bundle_url, sha256) = load_parameters(parameters)?;
        load_model(&self.app, model_name, bundle_url, sha256)
            .await
            .map_err(status::of_api)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        // Parameters (Triton's unload_dependents) have nothing to act on:
        // edgeserve models have no dependents.
        self.app
            .registry
            .unload(&request.into_inner().model_name)
            .map_err(status::of_registry)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse_and_junk_is_ignored() {
        let mut metadata = MetadataMap::new();
        for (value, expected) in [
            ("250m", Some(Duration::from_millis(250))),
            ("3S", Some(Duration::from_secs(3))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("1500u", Some(Duration::from_micros(1500))),
            ("99n", Some(Duration::from_nanos(99))),
            ("10x", None),
            ("m", None),
        ] {
            metadata.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(deadline(&metadata), expected, "{value}");
        }
    }
}
