//! The API's errors: `{"error", "code"}` as the CLI prints them with `--json` (the code is the
//! CLI's exit code: 1 refused, 2 usage, 3 store unavailable), with an HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::runtime::RuntimeError;
use crate::schema::Violation;
use crate::store::StoreError;

/// A refused or failed API call.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: u8,
    message: String,
    violations: Vec<Violation>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u8, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), violations: Vec::new() }
    }

    /// A malformed request (400, code 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 2, message)
    }

    /// No such thing (404, code 1).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, 1, message)
    }

    /// No token, or the wrong one (401, code 2).
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            2,
            "this server requires its token: `Authorization: Bearer <token>` (STEADFAST_TOKEN)",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound(_) => Self::not_found(error.to_string()),
            StoreError::IllegalTransition { .. } => {
                Self::new(StatusCode::CONFLICT, 1, error.to_string())
            }
            StoreError::InvalidRequest(_) => {
                Self::new(StatusCode::BAD_REQUEST, 1, error.to_string())
            }
            _ => Self::new(StatusCode::SERVICE_UNAVAILABLE, 3, error.to_string()),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        use RuntimeError::*;
        let message = error.to_string();
        match error {
            Store(store) => store.into(),
            NotFound(_) | UnknownAgent { .. } => Self::not_found(message),
            Refused { .. } | WrongSignal { .. } | SchemaChanged { .. } | Raced { .. } => {
                Self::new(StatusCode::CONFLICT, 1, message)
            }
            InvalidInput { source, .. } | InvalidOutput { source, .. } => ApiError {
                violations: source.violations().to_vec(),
                ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, 1, message)
            },
            NoSchema { .. } => Self::new(StatusCode::CONFLICT, 1, message),
            // Refused, as the CLI says it (code 1): the call was well formed, its content not.
            NotJson(_) | InvalidRequest(_) => Self::new(StatusCode::BAD_REQUEST, 1, message),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, 1, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if !self.violations.is_empty() {
            body["violations"] = json!(self.violations);
        }
        (self.status, Json(body)).into_response()
    }
}
