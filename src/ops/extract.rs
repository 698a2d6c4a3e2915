//! The API's extractors: axum's `Json`, `Query` and `Path` with their rejections answered as
//! the API's errors (`{"error", "code"}`, never axum's plain text), the operator a call acts
//! for, and what each adds to the OpenAPI document.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use aide::operation::{ParamLocation, add_parameters, parameters_from_schema};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::store::Actor;

/// A JSON body, required.
#[derive(Debug)]
pub(super) struct Body<T>(pub(super) T);

/// A JSON body that may be left out: no body, or an empty one, is `T::default()`.
#[derive(Debug)]
pub(super) struct OptionalBody<T>(pub(super) T);

/// The query string.
#[derive(Debug)]
pub(super) struct Params<T>(pub(super) T);

/// The path's parameters.
#[derive(Debug)]
pub(super) struct PathParams<T>(pub(super) T);

/// A body axum could not take, as the API's error.
fn body_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is over the server's limit".to_owned(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "the request body must be JSON, sent with `Content-Type: application/json`".to_owned()
        }
        _ => rejection.body_text(),
    };
    match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, 2, message)
        }
        // A body that is not the call's shape is a malformed call, as a bad flag is for the
        // CLI (axum says 422; that status is kept for outputs that do not fit their schema).
        _ => ApiError::usage(message),
    }
}

/// A body's JSON as `T`: every body of the API is an object (serde would also take an
/// array, as the fields in order).
fn object_as<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::usage("the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let at = error.path().to_string();
        let at = if at == "." { String::new() } else { format!("{at}: ") };
        ApiError::usage(format!("the request body does not fit the call: {at}{}", error.inner()))
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) =
            axum::Json::from_request(request, state).await.map_err(body_error)?;
        object_as(value).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    /// No body (none at all, or an empty one) is `T::default()`; a body must be JSON.
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let has_type = request.headers().contains_key(axum::http::header::CONTENT_TYPE);
        let (parts, body) = request.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|r| body_error(JsonRejection::from(r)))?;
        if bytes.is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        if !has_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                2,
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let axum::Json(value) =
            axum::Json::from_request(request, state).await.map_err(body_error)?;
        object_as(value).map(OptionalBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::from_request_parts(parts, state)
            .await
            .map_err(|r: QueryRejection| ApiError::usage(r.body_text()))?;
        Ok(Params(value))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::from_request_parts(parts, state)
            .await
            .map_err(|r: PathRejection| ApiError::usage(r.body_text()))?;
        Ok(PathParams(value))
    }
}

impl<T: JsonSchema> OperationInput for Body<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::Json<T> as OperationInput>::operation_input(ctx, operation);
    }
}

/// Documented as a required JSON body: a call that changes something is JSON, else refused as
/// a cross-site page's could be; `{}` or an empty body sent as JSON takes every default.
impl<T: JsonSchema> OperationInput for OptionalBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::Json<T> as OperationInput>::operation_input(ctx, operation);
    }
}

impl<T: JsonSchema> OperationInput for Params<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::extract::Query<T> as OperationInput>::operation_input(ctx, operation);
    }
}

impl<T: JsonSchema> OperationInput for PathParams<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::extract::Path<T> as OperationInput>::operation_input(ctx, operation);
    }
}

/// A whole number of a JSON body, written as an integer (`60`) or as a float with nothing
/// after the point (`60.0`): JSON Schema's `integer` takes both.
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    use serde::Deserialize;
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        // Below 2^64 (which is exactly representable, unlike u64::MAX).
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(f as u64)
        }
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number of 0 or more"))),
    }
}

/// The longest operator name, in bytes.
pub(crate) const OPERATOR_MAX: usize = 64;

/// Whether `name` can be recorded as who acts (`operator:<name>`) through the server: 1 to
/// [`OPERATOR_MAX`] printable ASCII characters, not starting or ending with a space (what an
/// HTTP header carries unchanged). The API, the dashboard's sign-in and the CLI over a server
/// all hold names to this.
pub(crate) fn is_operator_name(name: &str) -> bool {
    (1..=OPERATOR_MAX).contains(&name.len())
        && name.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !name.starts_with(' ')
        && !name.ends_with(' ')
}

/// The operator a call acts for, recorded as the actor of what it does: the
/// `X-Steadfast-Operator` header (1 to 64 printable ASCII characters), else `api`.
#[derive(Debug)]
pub(super) struct Operator(pub(super) Actor);

/// The header, as the OpenAPI document describes it.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct OperatorHeader {
    /// Who acts, recorded in the run's history as `operator:<name>` (default `api`).
    #[serde(rename = "X-Steadfast-Operator")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[!-~]([ -~]*[!-~])?$"))]
    operator: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("x-steadfast-operator") else {
            return Ok(Operator(Actor::Operator("api".into())));
        };
        let name = value.to_str().ok().filter(|n| is_operator_name(n));
        match name {
            Some(name) => Ok(Operator(Actor::Operator(name.to_owned()))),
            None => Err(ApiError::usage(format!(
                "X-Steadfast-Operator must be 1 to {OPERATOR_MAX} printable ASCII characters"
            ))),
        }
    }
}

impl OperationInput for Operator {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = ctx.schema.subschema_for::<OperatorHeader>();
        let params = parameters_from_schema(ctx, schema, ParamLocation::Header);
        add_parameters(ctx, operation, params);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn operator_names_are_what_a_header_carries_unchanged() {
        for good in ["ada", "Ada Lovelace", "a", &"x".repeat(64), "<img src=x>"] {
            assert!(super::is_operator_name(good), "{good:?}");
        }
        for bad in ["", " ada", "ada ", "José", "tab\there", &"x".repeat(65)] {
            assert!(!super::is_operator_name(bad), "{bad:?}");
        }
    }
}
