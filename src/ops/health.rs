//! `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Ops;

/// The process answers.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the store answers and the workers' dispatcher runs; otherwise 503 with the reasons.
pub(super) async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, Json<Value>) {
    let mut reasons = Vec::new();
    if let Err(error) = ops.runtime.store().counts().await {
        reasons.push(format!("the store does not answer: {error}"));
    }
    if !ops.runtime.is_working() {
        reasons.push("no worker is running (the dispatcher has stopped)".to_owned());
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unready", "reasons": reasons})))
    }
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(ops): State<Arc<Ops>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ops.metrics.render(&ops.runtime).await {
        Ok(text) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                .into_response()
        }
        Err(error) => super::error::ApiError::from(error).into_response(),
    }
}

/// `GET /alarms`: 503 with the agents the silent-failure alarm is raised for, 200 when none.
pub(super) async fn alarms(State(ops): State<Arc<Ops>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ops.metrics.alarms(&ops.runtime).await {
        Ok(raised) if raised.is_empty() => {
            (StatusCode::OK, Json(json!({"alarms": raised}))).into_response()
        }
        Ok(raised) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"alarms": raised}))).into_response()
        }
        Err(error) => super::error::ApiError::from(error).into_response(),
    }
}
