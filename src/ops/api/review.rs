//! `/review`: what waits for an operator, and the verdicts.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{Answer, RunPath};
use crate::ops::Ops;
use crate::ops::extract::{Body, Operator, OptionalBody, PathParams};
use crate::runtime::Operate;
use crate::store::RunRecord;
use crate::view::{ReviewItem, ReviewList};

pub(in crate::ops) async fn review(State(ops): State<Arc<Ops>>) -> Answer<ReviewList> {
    Ok(Json(ReviewList { review: Operate::review(&*ops.runtime).await? }))
}

pub(in crate::ops) async fn review_item(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
) -> Answer<ReviewItem> {
    Ok(Json(Operate::review_item(&*ops.runtime, id).await?))
}

/// An approval or rejection.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct VerdictBody {
    /// Why, kept in the run's history (an approval's note goes to its next attempt).
    #[serde(default)]
    note: Option<String>,
}

pub(in crate::ops) async fn approve(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<VerdictBody>,
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.approve(id, by, body.note.as_deref()).await?))
}

pub(in crate::ops) async fn reject(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<VerdictBody>,
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.reject(id, by, body.note.as_deref()).await?))
}

/// The output a run held for review succeeds with.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct ResolveBody {
    /// Checked against the output schema kept for the run (422 with the violations).
    output: Value,
}

pub(in crate::ops) async fn resolve(
    State(ops): State<Arc<Ops>>,
    PathParams(RunPath { id }): PathParams<RunPath>,
    Operator(by): Operator,
    Body(body): Body<ResolveBody>,
) -> Answer<RunRecord> {
    Ok(Json(ops.runtime.resolve(id, by, body.output).await?))
}
