//! Why a call failed, as a gRPC status: the same errors REST answers with
//! an HTTP status, each keeping its message.

use axum::http::StatusCode;
use tonic::{Code, Status};

use crate::registry::RegistryError;
use crate::runtime::{Fault, PoolError};
use crate::server::error::ApiError;
use crate::server::infer::InferError;
use crate::server::upstream;

/// The status of a failed inference.
pub fn of_infer(e: InferError) -> Status {
    match e {
        InferError::Model(e) => of_registry(e),
        InferError::Decode(e) => of_api(e),
        InferError::Invalid(message) => Status::invalid_argument(message),
        InferError::Pool(busy @ PoolError::Busy { .. }) => Status::unavailable(busy.to_string()),
        InferError::Pool(PoolError::Fault(fault)) => of_fault(fault),
    }
}

/// The status of a model lookup that failed: a model (version) this
/// server does not serve is NOT_FOUND, whether unknown or unloaded.
pub fn of_registry(e: RegistryError) -> Status {
    if upstream::lacks(&e) {
        Status::not_found(e.to_string())
    } else {
        of_api(e.into())
    }
}

fn of_fault(fault: Fault) -> Status {
    let code = match &fault {
        Fault::Deadline { .. } => Code::DeadlineExceeded,
        Fault::DeviceLost { .. } => Code::Unavailable,
        fault if fault.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, fault.to_string())
}

/// The status for an error REST would answer with `e.status`.
pub fn of_api(e: ApiError) -> Status {
    let code = match e.status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    Status::new(code, e.message)
}
