//! `/runs`: list, show, submit, and the operator's moves on one run.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Answer, RunPath, check_limit};
use crate::lifecycle::RunId;
use crate::ops::Ops;
use crate::ops::error::ApiError;
use crate::ops::extract::{Body, Operator, OptionalBody, Params, PathParams};
use crate::runtime::Operate;
use crate::store::{Note, RunRecord};
use crate::view::{Replay, RunFilter, RunView, RunsPage};

pub(in crate::ops) async fn runs(
    State(ops): State<Arc<Ops>>,
    Params(filter): Params<RunFilter>,
) -> Answer<RunsPage> {
    check_limit(filter.limit)?;
    Ok(Json(Operate::runs(&*ops.runtime, filter).await?))
}

/// A run to submit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct SubmitBody {
    /// The agent or pipeline, as registered.
    agent: String,
    /// Its input: checked against the agent's input schema before anything is stored.
    input: Value,
}

/// A submitted run.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct Submitted {
    /// The run: the new one, or the one with the same idempotency key.
    id: RunId,
    /// Whether this call created it.
    created: bool,
}

/// 201 when created, 200 with the existing run's id when the idempotency key was taken.
pub(in crate::ops) async fn submit(
    State(ops): State<Arc<Ops>>,
    Body(body): Body<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    ops.runtime.check_submittable(&body.agent)?;
    let submitted = ops.runtime.submit(&body.agent, body.input).await?;
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Submitted { id: submitted.id, created: submitted.created })))
}

pub(in crate::ops) async fn run(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
) -> Answer<RunView> {
    Ok(Json(Operate::run(&*ops.runtime, id).await?))
}

/// How to replay.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct ReplayBody {
    /// Replay even though the agent's input type changed since the run was created.
    #[serde(default)]
    force: bool,
}

pub(in crate::ops) async fn replay(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<ReplayBody>,
) -> Answer<Replay> {
    Ok(Json(Operate::replay(&*ops.runtime, id, by, body.force).await?))
}

/// A cancellation: nothing to say but the call itself (`{}`), sent as JSON as every call that
/// changes something is.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct CancelBody {}

pub(in crate::ops) async fn cancel(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    OptionalBody(CancelBody {}): OptionalBody<CancelBody>,
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.cancel(id, by).await?))
}

/// The signal a waiting run waits for.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct SignalBody {
    /// The signal's name (the run's `waiting_for`).
    name: String,
    /// Its payload, for the run's next attempt.
    #[serde(default)]
    payload: Value,
}

pub(in crate::ops) async fn signal(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    Body(body): Body<SignalBody>,
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.signal(id, &body.name, body.payload, by).await?))
}

/// A note on a run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct NoteBody {
    /// What to note (not only white space).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    text: String,
}

pub(in crate::ops) async fn note(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    Body(body): Body<NoteBody>,
) -> Answer<Note> {
    Ok(Json(ops.runtime.note(id, by, &body.text).await?))
}
