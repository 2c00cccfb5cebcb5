//! The one place AWS error codes and HTTP statuses are produced.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::core::validate::ValidationError;
use crate::store::StoreError;

/// An error answered to a client, in the AWS JSON error format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// AWS error code (`__type` and `x-amzn-ErrorType`).
    pub code: &'static str,
    /// Human-readable message naming the field and the rule.
    pub message: String,
    /// Further members of the error body (e.g. `ModelError`'s `OriginalStatusCode`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// `ValidationException` (400): bad input, not found, already exists, in progress.
    pub fn validation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationException",
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `SerializationException` (400): malformed JSON or a member of the wrong type.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "SerializationException",
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `UnknownOperationException` (400): an operation spillway does not implement.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "UnknownOperationException",
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `InternalFailure` (500): a bug or a broken store, never bad input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalFailure",
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Any other code and status (runtime errors).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(err = %e, "store failure");
        Self::internal(format!("spillway could not access its store: {e}"))
    }
}

impl ApiError {
    /// The JSON error body: `__type`, `message` (and `Message`, which botocore's rest-json
    /// parser reads), then the extra members.
    pub fn body(&self) -> String {
        let mut body = json!({ "__type": self.code, "message": self.message, "Message": self.message });
        if let Value::Object(b) = &mut body {
            b.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        body.to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        resp
    }
}
