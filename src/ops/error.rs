//! The API's errors: `{"error", "code"}` as the CLI prints them with `--json` (the code is the
//! CLI's exit code: 1 refused, 2 usage, 3 store unavailable), with an HTTP status.

use aide::OperationOutput;
use aide::generate::GenContext;
use aide::openapi::{Operation, StatusCode as OpenApiStatus};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

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

    /// The HTTP status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, in words.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// No token, or the wrong one (401, code 2): the message says which.
    pub(crate) fn unauthorized(offered: bool) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            2,
            if offered {
                "the token offered is not this server's (check STEADFAST_TOKEN against the server's --token-file)"
            } else {
                "this server requires its token: `Authorization: Bearer <token>` (STEADFAST_TOKEN)"
            },
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

impl From<crate::runtime::OperateError> for ApiError {
    fn from(error: crate::runtime::OperateError) -> Self {
        use crate::runtime::OperateError;
        match error {
            OperateError::Runtime(error) => error.into(),
            // Not made by a runtime in this process: passed on as said.
            OperateError::Server { status, code, message } => Self::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
                message,
            ),
            OperateError::Unreachable(message) => Self::new(StatusCode::BAD_GATEWAY, 3, message),
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
            NotSubmittable { .. } => Self::new(StatusCode::FORBIDDEN, 1, message),
            // Refused, as the CLI says it (code 1): the call was well formed, its content not.
            NotJson(_) | InvalidRequest(_) => Self::new(StatusCode::BAD_REQUEST, 1, message),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, 1, message),
        }
    }
}

/// An error as the API answers it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, in words (for a refusal: the run's state and what is allowed).
    error: String,
    /// The CLI's exit code for the same: 1 refused, 2 a malformed call, 3 the store
    /// unavailable.
    #[schemars(range(min = 1, max = 3))]
    code: u8,
    /// For an output or input that does not fit its schema (422): where and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    violations: Vec<Violation>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, code: self.code, violations: self.violations };
        (self.status, Json(body)).into_response()
    }
}

/// The statuses an API call may answer with an error, as the OpenAPI document lists them.
const ERROR_STATUSES: [(u16, &str); 10] = [
    (400, "A malformed call: a bad parameter, header or body"),
    (401, "No token, or the wrong one (when the server has one)"),
    (
        403,
        "Refused, nothing done: a call that changes something sent as a page of another site could send it (not `Content-Type: application/json`, or another site's `Origin`), or a submission of an agent that is not submitted from outside (a pipeline's stage, a notifier, an internal agent)",
    ),
    (404, "No such run, agent or pipeline"),
    (409, "Refused in the run's state; the message names it and what is allowed"),
    (413, "The request body is over the server's limit"),
    (415, "The request body is not JSON"),
    (
        421,
        "The `Host` header does not name this server (an IP address, `localhost`, or a name given with `--allow-host`)",
    ),
    (422, "The output or input does not fit its schema (see `violations`)"),
    (503, "The store is unavailable, or the call took longer than the server's timeout"),
];

impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<OpenApiStatus>, aide::openapi::Response)> {
        let Some(response) =
            <Json<ErrorBody> as OperationOutput>::operation_response(ctx, operation)
        else {
            return Vec::new();
        };
        ERROR_STATUSES
            .iter()
            .map(|&(status, description)| {
                let response = aide::openapi::Response {
                    description: description.to_owned(),
                    ..response.clone()
                };
                (Some(OpenApiStatus::Code(status)), response)
            })
            .collect()
    }
}
