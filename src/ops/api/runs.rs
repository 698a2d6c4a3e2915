//! `/runs`: list, show, submit, and the operator's moves on one run.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Answer, RunPath, check_limit};
use crate::clock::DurationText;
use crate::lifecycle::{RunId, RunState};
use crate::ops::Ops;
use crate::ops::error::ApiError;
use crate::ops::extract::{Body, Operator, OptionalBody, Params, PathParams};
use crate::store::{ListQuery, Note, RunRecord};
use crate::view::RunView;

/// The filters and page of `GET /runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct RunsQuery {
    /// Only runs in this state.
    state: Option<RunState>,
    /// Only runs of this agent (or pipeline, or stage: `digest.1.classifier`).
    agent: Option<String>,
    /// Only runs created within this long: `90s`, `15m`, `2h`, `7d`.
    since: Option<DurationText>,
    /// At most this many runs (default 50).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<u32>,
    /// The page after this run: the `next` of the previous page.
    cursor: Option<RunId>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct RunsPage {
    /// The runs.
    runs: Vec<RunRecord>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<RunId>,
}

pub(in crate::ops) async fn runs(
    State(ops): State<Arc<Ops>>,
    Params(q): Params<RunsQuery>,
) -> Answer<RunsPage> {
    let mut query = ListQuery::new().limit(check_limit(q.limit)?);
    if let Some(state) = q.state {
        query = query.state(state);
    }
    if let Some(agent) = q.agent {
        query = query.agent(agent);
    }
    let store = ops.runtime.store();
    if let Some(DurationText(since)) = q.since {
        query = query.since(store.now().before(since));
    }
    if let Some(cursor) = q.cursor {
        query = query.cursor(cursor);
    }
    let page = store.list(query).await?;
    Ok(Json(RunsPage { runs: page.runs, next: page.next }))
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
    let view = RunView::load(ops.runtime.store().as_ref(), id).await?;
    Ok(Json(view.ok_or_else(|| ApiError::not_found(format!("no run {id}")))?))
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
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.replay(id, by, body.force).await?))
}

pub(in crate::ops) async fn cancel(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
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
