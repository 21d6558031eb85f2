//! HTTP errors: a status and a JSON `{"error": "..."}` body naming the problem.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::bundle::BundleError;
use crate::registry::RegistryError;
use crate::runtime::{Fault, PoolError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
    /// Seconds for a `Retry-After` header (503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 503 with `Retry-After: 1`: the model is coming back (its device is
    /// being replaced).
    pub fn retry_soon(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// An error of any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: the connection cannot
            // carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = match &e {
            RegistryError::UnknownModel(_) | RegistryError::UnknownVersion { .. } => {
                StatusCode::NOT_FOUND
            }
            RegistryError::Repository(crate::repository::RepositoryError::UnknownModel {
                ..
            }) => StatusCode::NOT_FOUND,
            RegistryError::NotLoaded { .. } => StatusCode::BAD_REQUEST,
            RegistryError::Recovering { .. } => return ApiError::retry_soon(e.to_string()),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> ApiError {
        let status = match &e {
            // The bundle server failed us.
            BundleError::Download { .. } | BundleError::Status { .. } => StatusCode::BAD_GATEWAY,
            BundleError::Occupied { .. } => StatusCode::CONFLICT,
            BundleError::NotAllowed { .. } => StatusCode::FORBIDDEN,
            BundleError::Client(_) | BundleError::Tls(_) | BundleError::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // What the request named is wrong: reference, digest, contents.
            BundleError::Spec { .. }
            | BundleError::TooLarge { .. }
            | BundleError::DigestMismatch { .. }
            | BundleError::Archive { .. }
            | BundleError::UnsafeEntry { .. }
            | BundleError::WrongModel { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        match e {
            PoolError::Busy { waited_ms, .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                retry_after: Some(waited_ms.div_ceil(1000).max(1)),
            },
            PoolError::Fault(fault) => fault.into(),
        }
    }
}

impl From<Fault> for ApiError {
    fn from(fault: Fault) -> ApiError {
        if let Fault::DeviceLost { .. } = fault {
            return ApiError::retry_soon(fault.to_string());
        }
        let status = if fault.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, fault.to_string())
    }
}
