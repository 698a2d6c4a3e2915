//! `/healthz`, `/readyz`, `/metrics` and `/alarms`.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::{Ops, Raised};

/// The 401 of a probe.
const NEEDS_TOKEN: &str =
    "No token, or the wrong one (when the server has one and does not make the probes public)";

/// `/healthz`: open without the token, for liveness probes (it says only that the process
/// answers).
pub(super) fn routes() -> ApiRouter<Arc<Ops>> {
    ApiRouter::new().api_route(
        "/healthz",
        get_with(healthz, |op| op.tag("health").summary("Alive: the process answers")),
    )
}

/// `/readyz`, `/metrics` and `/alarms`: with a token set they need it too, unless the server
/// makes them public (`OpsConfig::public_health`, `serve --public-health`).
pub(super) fn probes() -> ApiRouter<Arc<Ops>> {
    ApiRouter::new()
        .api_route(
            "/readyz",
            get_with(readyz, |op| {
                op.tag("health")
                    .summary("Ready: the store answers and the workers' dispatcher runs")
                    .response_with::<200, Json<Readiness>, _>(|r| r.description("Ready"))
                    .response_with::<401, Json<ErrorBody>, _>(|r| r.description(NEEDS_TOKEN))
                    .response_with::<503, Json<Readiness>, _>(|r| {
                        r.description("Not ready, with the reasons")
                    })
            }),
        )
        .api_route(
            "/metrics",
            get_with(metrics, |op| {
                op.tag("health")
                    .summary("Prometheus metrics")
                    .description("The Prometheus text exposition format, version 0.0.4.")
                    .response_with::<200, String, _>(|r| r.description("The metrics"))
            }),
        )
        .api_route(
            "/alarms",
            get_with(alarms, |op| {
                op.tag("health")
                    .summary("The silent-failure alarm")
                    .description("The agents whose due work has waited longer than their window with no success within it.")
                    .response_with::<200, Json<Alarms>, _>(|r| r.description("No alarm is raised"))
                    .response_with::<401, Json<ErrorBody>, _>(|r| r.description(NEEDS_TOKEN))
                    .response_with::<503, Json<Alarms>, _>(|r| {
                        r.description("An alarm is raised, for these agents")
                    })
            }),
        )
}

/// The process answers.
#[derive(Debug, Serialize, JsonSchema)]
struct Alive {
    /// `ok`.
    status: &'static str,
}

async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Whether the server is ready for work.
#[derive(Debug, Serialize, JsonSchema)]
struct Readiness {
    /// `ready` or `unready`.
    status: &'static str,
    /// Why not, when unready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

/// Ready: the store answers and the workers' dispatcher runs; otherwise 503 with the reasons.
async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, Json<Readiness>) {
    let mut reasons = Vec::new();
    if let Err(error) = ops.runtime.store().counts().await {
        reasons.push(format!("the store does not answer: {error}"));
    }
    if !ops.runtime.is_working() {
        reasons.push("no worker is running (the dispatcher has stopped)".to_owned());
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(Readiness { status: "ready", reasons }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "unready", reasons }))
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(ops): State<Arc<Ops>>) -> Result<Response, ApiError> {
    let text = ops.metrics.render(&ops.runtime).await?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

/// The agents the silent-failure alarm is raised for.
#[derive(Debug, Serialize, JsonSchema)]
struct Alarms {
    /// Empty when none is.
    alarms: Vec<Raised>,
}

/// `GET /alarms`: 503 with the agents the alarm is raised for, 200 when none.
async fn alarms(State(ops): State<Arc<Ops>>) -> Response {
    match ops.metrics.alarms(&ops.runtime).await {
        Ok(alarms) if alarms.is_empty() => {
            (StatusCode::OK, Json(Alarms { alarms })).into_response()
        }
        Ok(alarms) => (StatusCode::SERVICE_UNAVAILABLE, Json(Alarms { alarms })).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}
