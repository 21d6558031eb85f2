//! OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`,
//! so the official clients raise their typed exceptions (`BadRequestError`
//! for a 400, `NotFoundError` for a 404, …).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::error::ApiError;
use crate::server::fields::FieldError;

/// An error answer in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

impl OpenAiError {
    /// `type` as OpenAI spells it for the status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                "invalid_request_error"
            }
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// `code`, for the errors OpenAI gives one.
    fn code(&self) -> Option<&'static str> {
        match self.status {
            StatusCode::NOT_FOUND => Some("model_not_found"),
            StatusCode::SERVICE_UNAVAILABLE => Some("model_busy"),
            _ => None,
        }
    }

    /// The error object, for a response body or a stream event.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code(),
        }})
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        OpenAiError {
            status: e.status,
            message: e.message,
            param: None,
            retry_after: e.retry_after,
        }
    }
}

impl From<FieldError> for OpenAiError {
    fn from(e: FieldError) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: e.message,
            param: e.param,
            retry_after: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
