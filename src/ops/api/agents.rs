//! `/agents` (with pause and resume) and `/graph`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Answer;
use crate::ops::Ops;
use crate::ops::error::ApiError;
use crate::ops::extract::{Operator, OptionalBody, PathParams};
use crate::pipeline::PipelineGraph;
use crate::runtime::Operate;
use crate::store::AgentControl;
use crate::view::{Controlled, LifecycleGraph};

/// The registered agents.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct AgentList {
    /// By name.
    agents: Vec<AgentInfo>,
}

/// One registered agent.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct AgentInfo {
    /// As registered (a pipeline's stages as `<pipeline>.<index>.<agent>`).
    name: String,
    /// Whether it is a pipeline.
    pipeline: bool,
    /// Its circuit breaker's state in words, when it has one: `closed`, `closed (2 failures in
    /// a row)`, `open: a probe in 12 s`, `half-open: one probe decides`.
    breaker: Option<String>,
    /// The same, as values.
    breaker_state: Option<BreakerView>,
    /// Its pause or resume rate in force, if any.
    control: Option<AgentControl>,
}

/// A circuit breaker's state, as values.
#[derive(Debug, Serialize, JsonSchema)]
pub(in crate::ops) struct BreakerView {
    /// `closed` (runs go through), `open` (runs are deferred), `half_open` (one probe decides).
    state: &'static str,
    /// Closed: its failures in a row so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
    /// Open: seconds until a probe may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_in_secs: Option<f64>,
}

impl BreakerView {
    fn of(state: crate::runtime::BreakerState) -> Self {
        use crate::runtime::BreakerState::*;
        let (state, failures, probe_in_secs) = match state {
            Closed { failures } => ("closed", Some(failures), None),
            Open { remaining } => ("open", None, Some(remaining.as_secs_f64())),
            _ => ("half_open", None, None),
        };
        BreakerView { state, failures, probe_in_secs }
    }
}

pub(in crate::ops) async fn agents(State(ops): State<Arc<Ops>>) -> Answer<AgentList> {
    let rt = &ops.runtime;
    let pipelines = rt.pipelines();
    let agents = rt
        .agents()
        .into_iter()
        .map(|name| AgentInfo {
            name: name.to_owned(),
            pipeline: pipelines.contains(&name),
            breaker: rt.breaker(name).map(|b| b.to_string()),
            breaker_state: rt.breaker(name).map(BreakerView::of),
            control: rt.agent_control(name),
        })
        .collect();
    Ok(Json(AgentList { agents }))
}

/// An agent, by name.
#[derive(Debug, Deserialize, JsonSchema)]
pub(in crate::ops) struct AgentPath {
    /// As registered.
    name: String,
}

/// Why an agent is paused.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct PauseBody {
    /// In words, kept with the pause.
    #[serde(default)]
    reason: String,
}

pub(in crate::ops) async fn pause(
    State(ops): State<Arc<Ops>>,
    PathParams(AgentPath { name }): PathParams<AgentPath>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<PauseBody>,
) -> Answer<Controlled> {
    Ok(Json(Operate::pause(&*ops.runtime, &name, by, &body.reason).await?))
}

/// How to resume an agent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ops) struct ResumeBody {
    /// At most this many runs started per second (default: no limit).
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    rate: Option<f64>,
}

pub(in crate::ops) async fn resume(
    State(ops): State<Arc<Ops>>,
    PathParams(AgentPath { name }): PathParams<AgentPath>,
    Operator(by): Operator,
    OptionalBody(body): OptionalBody<ResumeBody>,
) -> Answer<Controlled> {
    Ok(Json(Operate::resume(&*ops.runtime, &name, by, body.rate).await?))
}

/// What to draw.
#[derive(Debug, Deserialize, JsonSchema)]
pub(in crate::ops) struct GraphPath {
    /// `lifecycle`, or a pipeline's name.
    target: String,
}

/// The lifecycle, or a pipeline's stages.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub(in crate::ops) enum Graph {
    /// `GET /graph/lifecycle`.
    Lifecycle(LifecycleGraph),
    /// `GET /graph/{pipeline}`.
    Pipeline(PipelineGraph),
}

pub(in crate::ops) async fn graph(
    State(ops): State<Arc<Ops>>,
    PathParams(GraphPath { target }): PathParams<GraphPath>,
) -> Answer<Graph> {
    if target == "lifecycle" {
        return Ok(Json(Graph::Lifecycle(LifecycleGraph::of_runs())));
    }
    let graph = ops.runtime.pipeline_graph(&target);
    let graph =
        graph.ok_or_else(|| ApiError::not_found(format!("no pipeline named `{target}`")))?;
    Ok(Json(Graph::Pipeline(graph)))
}
