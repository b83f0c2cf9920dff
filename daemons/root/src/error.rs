//! The one error type of the REST API and its JSON body.
//!
//! Every error answer is `{"code": <int>, "status": "<reason phrase>", "message": "<what was
//! wrong>"}`; an invalid SLA adds `"violations": [{"path", "message"}]`. Oakestra sends the
//! first two keys only (its messages are lost by flask-smorest), so clients that read `code`
//! and `status` keep working and people finally see what went wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oakestra_core::sla::Violation;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer of the REST API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong, and where.
    pub message: String,
    /// Every SLA rule broken, with its JSON pointer (422 only).
    pub violations: Vec<Violation>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// HTTP status code, repeated.
    #[schema(example = 404)]
    pub code: u16,
    /// HTTP reason phrase.
    #[schema(example = "Not Found")]
    pub status: String,
    /// What was wrong and, where it helps, what to do about it.
    #[schema(example = "no application with id 65f1a2b3c4d5e6f708192a3b")]
    pub message: String,
    /// SLA violations (only for 422 answers to a deployment descriptor).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ViolationDoc>)]
    pub violations: Vec<Violation>,
}

/// One violated SLA rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationDoc {
    /// JSON pointer (RFC 6901) of the offending value.
    #[schema(example = "/applications/0/microservices/1/port")]
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    /// 400: the request cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no, expired or invalid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: unknown (or not the caller's) resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: conflicts with existing state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422 with the list of violated SLA rules.
    pub fn invalid_sla(violations: Vec<Violation>) -> Self {
        let message = match violations.as_slice() {
            [one] if one.path.is_empty() => {
                format!("invalid deployment descriptor: {}", one.message)
            }
            [one] => format!(
                "invalid deployment descriptor: {}: {}",
                one.path, one.message
            ),
            many => format!(
                "invalid deployment descriptor: {} violations, listed in \"violations\"",
                many.len()
            ),
        };
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            violations,
        }
    }

    /// 500: a fault of the root itself (the message says which part failed).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 501: an Oakestra endpoint this root deliberately does not offer.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.status.as_u16(),
            status: self
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .to_owned(),
            message: self.message.clone(),
            violations: self.violations.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        (self.status, Json(self.body())).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
