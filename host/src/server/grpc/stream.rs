//! `ModelStreamInfer`: Triton's decoupled streaming. Each request on the
//! stream runs on the typed infer path with an output sink; a model that
//! streams (a text generator sending chunks through the contract's output
//! interface) answers with one response per chunk, its `text` output
//! holding that chunk's text; any other model answers with one response
//! holding its outputs. A client that sets the request parameter
//! `triton_enable_empty_final_response` gets Triton's end marker: the
//! parameter `triton_final_response` on every response, true on the last
//! one (after chunks, an empty response). Errors travel in the stream
//! (`error_message`), as Triton sends them, and end only their request.
//! A request for a model this server lacks goes to the upstream, when
//! there is one, as a unary gRPC request would
//! ([`super::forward`]): its answer comes back whole, as one response.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

use super::codec::{self, Envelope};
use super::forward;
use super::proto::infer_parameter::ParameterChoice;
use super::proto::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse,
};
use super::status;
use crate::runtime::{OutputSink, TextChunk, Value};
use crate::server::generation::TokenMeter;
use crate::server::infer::{self, InFlight, ModelRef, Outcome, Protocol};
use crate::server::state::AppState;
use crate::server::upstream::{self, Reason};

/// The responses of one call, as tonic sends them.
pub type Responses =
    Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send + 'static>>;

/// The client's request parameter that asks for the end marker.
const ENABLE_FINAL: &str = "triton_enable_empty_final_response";
/// The response parameter that marks the last response of a request.
const FINAL: &str = "triton_final_response";
/// Responses buffered for a slow reader before requests wait for it.
const BUFFERED: usize = 64;

/// Serves the requests of one stream, each as soon as it arrives (requests
/// run side by side, so their responses may interleave; each carries its
/// request's id). The call ends once the client has closed its side and
/// every request has answered; a client that hangs up cancels what runs.
/// With a `deadline` (the client's `grpc-timeout`, which bounds the whole
/// call), the call ends there with DEADLINE_EXCEEDED, which cancels what
/// still runs as a hang-up does. `metadata` is the call's: what an
/// offloaded request carries to the upstream.
pub fn serve(
    app: Arc<AppState>,
    mut requests: Streaming<ModelInferRequest>,
    metadata: MetadataMap,
    deadline: Option<Duration>,
) -> Responses {
    let (sender, receiver) = mpsc::channel(BUFFERED);
    let metadata = Arc::new(metadata);
    tokio::spawn(async move {
        loop {
            match requests.message().await {
                Ok(Some(message)) => {
                    let call = (app.clone(), metadata.clone());
                    tokio::spawn(answer(call, message, sender.clone()));
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    let expired = Box::pin(async move {
        match deadline {
            Some(limit) => {
                tokio::time::sleep(limit).await;
                limit
            }
            None => std::future::pending().await,
        }
    });
    // The deadline's status is the call's last item: no timer after it.
    Box::pin(futures::stream::unfold(
        (receiver, Some(expired)),
        |(mut receiver, expired)| async move {
            let mut expired = expired?;
            tokio::select! {
                next = receiver.recv() => Some((next?, (receiver, Some(expired)))),
                limit = &mut expired => {
                    let status = Status::deadline_exceeded(format!(
                        "the stream did not finish within the client's deadline of {} ms (grpc-timeout)",
                        limit.as_millis()
                    ));
                    Some((Err(status), (receiver, None)))
                }
            }
        },
    ))
}

type Sender = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

/// Runs one request and sends its responses; returns early (dropping the
/// chunk receiver, which stops the model at its next chunk) once the
/// client is gone.
async fn answer(
    (app, metadata): (Arc<AppState>, Arc<MetadataMap>),
    mut message: ModelInferRequest,
    sender: Sender,
) {
    let marked = matches!(
        message.parameters.remove(ENABLE_FINAL),
        Some(InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true))
        })
    );
    let model = ModelRef {
        name: message.model_name.clone(),
        version: (!message.model_version.is_empty()).then(|| message.model_version.clone()),
    };
    let id = message.id.clone();
    let failed = |status: Status| ModelStreamInferResponse {
        error_message: status.message().to_owned(),
        infer_response: Some(ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.clone().unwrap_or_default(),
            id: id.clone(),
            ..ModelInferResponse::default()
        }),
    };
    // The version that runs it, for the chunks' responses.
    let loaded = match app.registry.get(&model.name, model.version.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) if upstream::lacks(&e) && upstream::may_forward(&app, (*metadata).as_ref()) => {
            let _inflight = InFlight::enter(&app);
            let answer = forward::forward(&app, Reason::Missing, message, &metadata).await;
            let response = match answer {
                Ok(mut response) => {
                    if marked {
                        response
                            .parameters
                            .insert(FINAL.to_owned(), final_marker(true));
                    }
                    ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    }
                }
                Err(status) => failed(status),
            };
            let _ = sender.send(Ok(response)).await;
            return;
        }
        Err(e) => {
            let _ = sender.send(Ok(failed(status::of_registry(e)))).await;
            return;
        }
    };
    let (request, envelope) = match codec::decode(message) {
        Ok(decoded) => decoded,
        Err(e) => {
            let _ = sender.send(Ok(failed(status::of_api(e)))).await;
            return;
        }
    };
    let reply = Reply {
        model: loaded.name.clone(),
        version: loaded.version,
        id: id.clone(),
        raw: envelope.raw,
        marked,
    };
    let _inflight = InFlight::enter(&app);
    let mut meter = TokenMeter::start(&app.metrics, loaded.labels.clone());
    let (sink, mut chunks) = OutputSink::channel();
    // Not forwardable: the stream is this server's.
    let run = async {
        let decode = async { Ok(request) };
        let outcome = infer::infer_via(&app, Protocol::Grpc, &model, false, decode, Some(sink));
        outcome.await.map(Outcome::served)
    };
    tokio::pin!(run);
    let mut streamed = false;
    let result = loop {
        tokio::select! {
            biased;
            Some(chunk) = chunks.recv() => {
                meter.observe(&chunk);
                if let Some(response) = reply.chunk(&chunk) {
                    streamed = true;
                    if sender.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
            result = &mut run => break result,
        }
    };
    // Chunks sent just before the handler returned.
    while let Ok(chunk) = chunks.try_recv() {
        meter.observe(&chunk);
        if let Some(response) = reply.chunk(&chunk) {
            streamed = true;
            if sender.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
    let last = match result {
        Err(e) => failed(status::of_infer(e)),
        Ok(_) if streamed && !marked => return,
        Ok(_) if streamed => reply.respond(&[], true),
        Ok(response) => reply.respond(&response.outputs, true),
    };
    let _ = sender.send(Ok(last)).await;
}

/// Triton's end marker: whether a response is its request's last.
fn final_marker(last: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(last)),
    }
}

/// What every response of one request carries.
struct Reply {
    model: String,
    version: u64,
    id: String,
    raw: bool,
    marked: bool,
}

impl Reply {
    /// A response holding `outputs`; with the end marker when asked for.
    fn respond(&self, outputs: &[(String, Value)], last: bool) -> ModelStreamInferResponse {
        let envelope = Envelope {
            id: self.id.clone(),
            raw: self.raw,
        };
        let mut response = codec::encode(&self.model, self.version, envelope, outputs);
        if self.marked {
            response.parameters = HashMap::from([(FINAL.to_owned(), final_marker(last))]);
        }
        ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(response),
        }
    }

    /// The response for a chunk: its text as the `text` output, with the
    /// prompt it continues as the `index` parameter; none while a chunk
    /// completes no text (a character or stop sequence still pending).
    fn chunk(&self, chunk: &TextChunk) -> Option<ModelStreamInferResponse> {
        if chunk.text.is_empty() {
            return None;
        }
        let text = Value::Bytes {
            shape: vec![1],
            elements: vec![chunk.text.clone().into_bytes()],
        };
        let mut response = self.respond(&[("text".to_owned(), text)], false);
        if let Some(inner) = response.infer_response.as_mut() {
            inner.parameters.insert(
                "index".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(chunk.index.into())),
                },
            );
        }
        Some(response)
    }
}
