//! The JSON API's handlers, under `/api/v1`: the CLI's operator calls, on the same runtime
//! methods and the same `view` model, so the answers agree.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Ops;
use super::error::ApiError;
use crate::clock::parse_duration;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, ListQuery};
use crate::view::{RunView, Stats, last_reason};

type Answer = Result<Json<Value>, ApiError>;

/// The operator the call acts for: the `X-Steadfast-Operator` header, else `api`.
pub(super) fn operator(headers: &axum::http::HeaderMap) -> Actor {
    let name = headers
        .get("x-steadfast-operator")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 64 && !n.chars().any(char::is_control))
        .unwrap_or("api");
    Actor::Operator(name.to_owned())
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse().map_err(|_| ApiError::usage(format!("`{text}` is not a run id")))
}

/// `GET /runs?state=&agent=&since=2h&limit=50&cursor=`
#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    state: Option<String>,
    agent: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(super) async fn runs(State(ops): State<Arc<Ops>>, Query(q): Query<RunsQuery>) -> Answer {
    let limit = q.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::usage(format!("limit {limit} is out of range 1..=10000")));
    }
    let mut query = ListQuery::new().limit(limit as usize);
    if let Some(state) = &q.state {
        let state: RunState = state.parse().map_err(|_| {
            ApiError::usage(format!(
                "`{state}` is not a state (queued, processing, waiting_external, succeeded, failed_transient, failed_permanent, needs_review)"
            ))
        })?;
        query = query.state(state);
    }
    if let Some(agent) = q.agent {
        query = query.agent(agent);
    }
    let store = ops.runtime.store();
    if let Some(since) = &q.since {
        let since = parse_duration(since).map_err(ApiError::usage)?;
        query = query.since(store.now().before(since));
    }
    if let Some(cursor) = &q.cursor {
        query = query.cursor(run_id(cursor)?);
    }
    let page = store.list(query).await?;
    Ok(Json(json!({"runs": page.runs, "next": page.next})))
}

/// `POST /runs {"agent", "input"}`: a run submitted, its input checked against the agent's
/// schema (422 with the violations, nothing stored, when it does not fit) and deduplicated by
/// the agent's idempotency key: 201 when created, 200 with the existing run's id otherwise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    agent: String,
    input: Value,
}

pub(super) async fn submit(
    State(ops): State<Arc<Ops>>,
    Json(body): Json<SubmitBody>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let submitted = ops.runtime.submit(&body.agent, body.input).await?;
    let status = if submitted.created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((status, Json(json!({"id": submitted.id, "created": submitted.created}))))
}

pub(super) async fn run(State(ops): State<Arc<Ops>>, Path(id): Path<String>) -> Answer {
    let id = run_id(&id)?;
    let view = RunView::load(ops.runtime.store().as_ref(), id).await?;
    let view = view.ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(json!(view)))
}

/// The body of `replay` and `dlq/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    #[serde(default)]
    force: bool,
    /// `dlq/replay` only: every dead letter of this agent (else every one).
    #[serde(default)]
    agent: Option<String>,
}

pub(super) async fn replay(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<ReplayBody>>,
) -> Answer {
    let id = run_id(&id)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let run = ops.runtime.replay(id, operator(&headers), body.force).await?;
    Ok(Json(json!(run)))
}

pub(super) async fn cancel(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    let run = ops.runtime.cancel(run_id(&id)?, operator(&headers)).await?;
    Ok(Json(json!(run)))
}

/// `POST /runs/{id}/signal {"name", "payload"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignalBody {
    name: String,
    #[serde(default)]
    payload: Value,
}

pub(super) async fn signal(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<SignalBody>,
) -> Answer {
    let id = run_id(&id)?;
    let run = ops.runtime.signal(id, &body.name, body.payload, operator(&headers)).await?;
    Ok(Json(json!(run)))
}

/// `POST /runs/{id}/notes {"text"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoteBody {
    text: String,
}

pub(super) async fn note(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<NoteBody>,
) -> Answer {
    let note = ops.runtime.note(run_id(&id)?, operator(&headers), &body.text).await?;
    Ok(Json(json!(note)))
}

/// `GET /review`: the runs held for review, newest first, with why.
pub(super) async fn review(State(ops): State<Arc<Ops>>) -> Answer {
    let store = ops.runtime.store();
    let query = ListQuery::new().state(RunState::NeedsReview).limit(10_000);
    let runs = store.list(query).await?.runs;
    let mut items = Vec::with_capacity(runs.len());
    for run in runs {
        let why = last_reason(store.as_ref(), &run).await;
        items.push(json!({"run": run, "why": why}));
    }
    Ok(Json(json!({"review": items})))
}

/// `GET /review/{id}`: a run with why it is where it is and the output schema kept for its
/// agent (what `review show` shows).
pub(super) async fn review_item(State(ops): State<Arc<Ops>>, Path(id): Path<String>) -> Answer {
    let id = run_id(&id)?;
    let store = ops.runtime.store();
    let run = store.get(id).await?.ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let schema = match run.output_schema.as_deref() {
        Some(hash) => store.schema(hash).await?,
        None => None,
    };
    let schema: Option<Value> = schema.and_then(|s| serde_json::from_str(&s).ok());
    let reason = last_reason(store.as_ref(), &run).await;
    Ok(Json(json!({"run": run, "reason": reason, "output_schema": schema})))
}

/// The body of `approve` and `reject`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerdictBody {
    #[serde(default)]
    note: Option<String>,
}

pub(super) async fn approve(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<VerdictBody>>,
) -> Answer {
    let note = body.and_then(|Json(b)| b.note);
    let run = ops.runtime.approve(run_id(&id)?, operator(&headers), note.as_deref()).await?;
    Ok(Json(json!(run)))
}

pub(super) async fn reject(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<VerdictBody>>,
) -> Answer {
    let note = body.and_then(|Json(b)| b.note);
    let run = ops.runtime.reject(run_id(&id)?, operator(&headers), note.as_deref()).await?;
    Ok(Json(json!(run)))
}

/// `POST /review/{id}/resolve {"output"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    output: Value,
}

pub(super) async fn resolve(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<ResolveBody>,
) -> Answer {
    let run = ops.runtime.resolve(run_id(&id)?, operator(&headers), body.output).await?;
    Ok(Json(json!(run)))
}

/// `GET /dlq?limit=50`
#[derive(Debug, Deserialize)]
pub(super) struct DlqQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(super) async fn dlq(State(ops): State<Arc<Ops>>, Query(q): Query<DlqQuery>) -> Answer {
    let limit = q.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::usage(format!("limit {limit} is out of range 1..=10000")));
    }
    let cursor = q.cursor.as_deref().map(run_id).transpose()?;
    let dead = ops.runtime.store().dead_letters(cursor, limit as usize).await?;
    Ok(Json(json!(dead)))
}

/// `POST /dlq/replay {"agent"?, "force"?}`: every dead letter (of the agent), each reported.
pub(super) async fn dlq_replay(
    State(ops): State<Arc<Ops>>,
    headers: axum::http::HeaderMap,
    body: Option<Json<ReplayBody>>,
) -> Answer {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let store = ops.runtime.store();
    let mut dead = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.dead_letters(cursor, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.run);
        dead.extend(page.into_iter().filter(|d| body.agent.as_ref().is_none_or(|a| *a == d.agent)));
    }
    let (mut replayed, mut refused) = (0, 0);
    let mut report = Vec::with_capacity(dead.len());
    for d in dead {
        match ops.runtime.replay(d.run, operator(&headers), body.force).await {
            Ok(run) => {
                replayed += 1;
                report.push(json!({"id": run.id, "agent": run.agent, "replayed": true}));
            }
            Err(error) => {
                refused += 1;
                report.push(json!({"id": d.run, "agent": d.agent, "replayed": false, "error": error.to_string()}));
            }
        }
    }
    tracing::info!(replayed, refused, "dead letters replayed through the API");
    Ok(Json(json!(report)))
}

/// `POST /prune {"older_than_secs", "states"?}`: runs at rest deleted (see `Retention`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PruneBody {
    older_than_secs: u64,
    #[serde(default)]
    states: Vec<RunState>,
}

pub(super) async fn prune(State(ops): State<Arc<Ops>>, Json(body): Json<PruneBody>) -> Answer {
    let mut policy =
        crate::store::Retention::older_than(std::time::Duration::from_secs(body.older_than_secs));
    if !body.states.is_empty() {
        policy = policy.states(body.states);
    }
    policy.check().map_err(ApiError::usage)?;
    let pruned = ops.runtime.store().prune(policy.clone()).await?;
    let states: Vec<String> = policy.states.iter().map(ToString::to_string).collect();
    Ok(Json(json!({
        "pruned": pruned.runs,
        "kept": pruned.kept,
        "states": states,
        "older_than_secs": body.older_than_secs,
    })))
}

/// `GET /stats?window=24h`
#[derive(Debug, Deserialize)]
pub(super) struct StatsQuery {
    window: Option<String>,
}

pub(super) async fn stats(State(ops): State<Arc<Ops>>, Query(q): Query<StatsQuery>) -> Answer {
    let window = parse_duration(q.window.as_deref().unwrap_or("24h")).map_err(ApiError::usage)?;
    let stats = Stats::compute(ops.runtime.store().as_ref(), window).await?;
    Ok(Json(json!(stats)))
}

/// `GET /agents`: the registered agents, their options and breaker state.
pub(super) async fn agents(State(ops): State<Arc<Ops>>) -> Answer {
    let rt = &ops.runtime;
    let agents: Vec<Value> = rt
        .agents()
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "pipeline": rt.pipelines().contains(&name),
                "breaker": rt.breaker(name).map(|b| format!("{b:?}")),
                "control": rt.agent_control(name),
            })
        })
        .collect();
    Ok(Json(json!({"agents": agents})))
}

/// `POST /agents/{name}/pause {"reason"?}`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn pause(
    State(ops): State<Arc<Ops>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<PauseBody>>,
) -> Answer {
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    let control = ops.runtime.pause(&name, operator(&headers), &reason).await?;
    Ok(Json(json!({"agent": name, "control": control})))
}

/// `POST /agents/{name}/resume {"rate"?}`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    #[serde(default)]
    rate: Option<f64>,
}

pub(super) async fn resume(
    State(ops): State<Arc<Ops>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<ResumeBody>>,
) -> Answer {
    let rate = body.and_then(|Json(b)| b.rate);
    let control = ops.runtime.resume(&name, operator(&headers), rate).await?;
    Ok(Json(json!({"agent": name, "control": control})))
}

/// `GET /graph/{target}`: `lifecycle` or a pipeline, as nodes and edges.
pub(super) async fn graph(State(ops): State<Arc<Ops>>, Path(target): Path<String>) -> Answer {
    if target == "lifecycle" {
        return Ok(Json(crate::view::lifecycle_graph()));
    }
    let graph = ops
        .runtime
        .pipeline_graph(&target)
        .ok_or_else(|| ApiError::not_found(format!("no pipeline named `{target}`")))?;
    Ok(Json(json!(graph)))
}
