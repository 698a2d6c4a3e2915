//! `/dlq`, `/prune` and `/stats`: the queue of dead letters, retention, the numbers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Answer, check_limit};
use crate::clock::DurationText;
use crate::lifecycle::{RunId, RunState};
use crate::ops::Ops;
use crate::ops::error::ApiError;
use crate::ops::extract::{Body, Operator, OptionalBody, Params};
use crate::runtime::Replayed;
use crate::store::{DeadLetter, Retention};
use crate::view::Stats;

/// A page of dead letters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct DlqQuery {
    /// At most this many (default 50).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<u32>,
    /// The page after this run: the last one of the previous page.
    cursor: Option<RunId>,
}

pub(in crate::ops) async fn dlq(
    State(ops): State<Arc<Ops>>,
    Params(q): Params<DlqQuery>,
) -> Answer<Vec<DeadLetter>> {
    let limit = check_limit(q.limit)?;
    Ok(Json(ops.runtime.store().dead_letters(q.cursor, limit).await?))
}

/// Which dead letters to replay.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct DlqReplayBody {
    /// Only this agent's (default: every dead letter).
    #[serde(default)]
    agent: Option<String>,
    /// Replay even runs whose agent's input type changed since they were created.
    #[serde(default)]
    force: bool,
}

/// Every dead letter (of the agent) replayed, each reported: replayed or refused and why.
pub(in crate::ops) async fn dlq_replay(
    State(ops): State<Arc<Ops>>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<DlqReplayBody>,
) -> Answer<Vec<Replayed>> {
    Ok(Json(ops.runtime.replay_dead_letters(body.agent.as_deref(), by, body.force).await?))
}

/// A retention policy to apply once.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct PruneBody {
    /// Runs that have not moved for this many seconds.
    #[serde(deserialize_with = "crate::ops::extract::whole_number")]
    #[schemars(range(max = u64::MAX))]
    older_than_secs: u64,
    /// In these states (default `succeeded`); only states at rest: `succeeded`,
    /// `failed_permanent`, `needs_review`.
    #[serde(default)]
    #[schemars(schema_with = "states_at_rest")]
    states: Vec<RunState>,
}

/// The states a prune may take: those at rest.
fn states_at_rest(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": ["succeeded", "failed_permanent", "needs_review"]},
    })
}

/// What a prune deleted.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct PruneReport {
    /// Runs deleted, stage runs included.
    pruned: u64,
    /// Pipeline runs matched but kept for a stage in a state not taken.
    kept: u64,
    /// The states taken.
    states: Vec<RunState>,
    /// The age taken, in seconds.
    older_than_secs: u64,
}

pub(in crate::ops) async fn prune(
    State(ops): State<Arc<Ops>>,
    Body(body): Body<PruneBody>,
) -> Answer<PruneReport> {
    let mut policy = Retention::older_than(Duration::from_secs(body.older_than_secs));
    if !body.states.is_empty() {
        policy = policy.states(body.states);
    }
    policy.check().map_err(ApiError::usage)?;
    let pruned = ops.runtime.store().prune(policy.clone()).await?;
    Ok(Json(PruneReport {
        pruned: pruned.runs,
        kept: pruned.kept,
        states: policy.states,
        older_than_secs: body.older_than_secs,
    }))
}

/// The window of `GET /stats`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct StatsQuery {
    /// Over the runs created within this long (default `24h`): `90s`, `15m`, `2h`, `7d`.
    window: Option<DurationText>,
}

pub(in crate::ops) async fn stats(
    State(ops): State<Arc<Ops>>,
    Params(q): Params<StatsQuery>,
) -> Answer<Stats> {
    let window = q.window.map_or(Duration::from_secs(86_400), |DurationText(w)| w);
    Ok(Json(crate::runtime::Operate::stats(&*ops.runtime, window).await?))
}
