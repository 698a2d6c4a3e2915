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
