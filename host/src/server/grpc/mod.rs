//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`
//! (with Triton's repository extension), `grpc.health.v1.Health` and server
//! reflection, on a port of their own.
//!
//! A thin codec (`codec`) over the typed infer path every protocol shares;
//! `service` answers the RPCs, `stream` serves Triton's decoupled
//! streaming, `forward` maps an offloaded call onto the upstream's REST,
//! `status` turns errors into gRPC statuses.
//! The services are tonic's, served as an axum router, so the layers in
//! [`router`] (access checks, message limits) wrap every RPC in one place.

mod codec;
mod forward;
mod service;
mod status;
mod stream;

/// The generated messages, server and client of `proto/inference.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");

    /// The encoded descriptors of `inference.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
}

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use tonic::service::Routes;
use tonic::{Code, Status};

use self::proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::auth::{self, AccessPolicy};
use super::state::AppState;
use crate::listen::{Quiet, Stalled};

/// Every gRPC service over `app`, behind `access`: messages up to the
/// server's body limit in both directions, larger ones RESOURCE_EXHAUSTED.
pub async fn router(app: Arc<AppState>, access: Arc<AccessPolicy>) -> auth::Protected {
    let limit = app.max_body;
    let inference = GrpcInferenceServiceServer::new(service::Inference::new(app))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let (health, health_service) = tonic_health::server::health_reporter();
    // Models are loaded before the gRPC server starts.
    health
        .set_serving::<GrpcInferenceServiceServer<service::Inference>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = Routes::new(inference).add_service(health_service);
    // Reflection is a convenience for grpcurl (v1, and v1alpha for older
    // clients): a descriptor that fails to register costs it, not the server.
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => tracing::warn!("gRPC reflection is off: {e}"),
    }
    let router = routes
        .into_axum_router()
        .layer(middleware::map_response_with_state(limit, too_large));
    auth::protect_with(router, access, denied_status)
}

/// gRPC's limits on quiet connections and bodies, `idle` long: a call's
/// request that stops arriving ends DEADLINE_EXCEEDED, but for the streams
/// whose client sends its next message whenever it has one (Triton's
/// decoupled inference, server reflection).
pub fn quiet(idle: Duration) -> Quiet {
    Quiet {
        open_ended: &[
            "/inference.GRPCInferenceService/ModelStreamInfer",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ],
        // tonic answers a body error that is a status with that status.
        stalled: |idle| Status::deadline_exceeded(Stalled(idle).to_string()).into(),
        over_budget: |refused| Status::resource_exhausted(refused.to_string()).into(),
        ..Quiet::new(idle)
    }
}

/// tonic refuses a message over the limit with OUT_OF_RANGE before any
/// handler runs; clients expect RESOURCE_EXHAUSTED, as gRPC's own servers
/// answer. (No handler here answers OUT_OF_RANGE.)
async fn too_large(State(limit): State<usize>, mut response: Response) -> Response {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == Code::OutOfRange {
        let status = Status::resource_exhausted(format!(
            "the request is over the server's limit of {limit} bytes (--max-body-bytes): {}",
            status.message()
        ));
        // A status always fits its own headers.
        let _ = status.add_header(response.headers_mut());
    }
    response
}

/// REST's access checks answered as gRPC statuses: health probes are open
/// (Kubernetes' gRPC probe sends no key), every other method is classed by
/// its path as [`AccessPolicy::classify`] does.
fn denied_status(denied: auth::Denied) -> Response {
    let code = if denied.status() == StatusCode::UNAUTHORIZED {
        Code::Unauthenticated
    } else {
        Code::PermissionDenied
    };
    Status::new(code, denied.to_string()).into_http()
}

/// Serves `router` on `listener` until `stop` turns true, then lets calls
/// in flight finish, within [`quiet`]'s limits for `idle`. With `tls`, over
/// the same TLS as REST (certificates, reloads and client-certificate
/// rule).
pub fn serve(
    listener: crate::accept::Bounded,
    router: auth::Protected,
    tls: Option<&crate::tls::Tls>,
    idle: Duration,
    memory: crate::body_memory::BodyMemory,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<crate::listen::Serving> {
    crate::tls::serve(listener, router, tls, quiet(idle), memory, stop)
}
