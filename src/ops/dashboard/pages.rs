//! The dashboard's pages (GET): overview, runs, a run, the review inbox and a resolution,
//! dead letters, agents, and the sign-in.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::session::Session;
use super::{chart, diagram, error_page, render, unavailable};
use crate::clock::{Timestamp, parse_duration};
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::ops::Ops;
use crate::store::{ListQuery, RunRecord};
use crate::view::{ReviewItem, RunView, Stats, ago, held_for_review, is_internal_effect};

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A run in a list.
#[derive(Serialize)]
struct Row {
    id: String,
    agent: String,
    state: &'static str,
    attempt: u32,
    updated: String,
    created: String,
    error: Option<String>,
}

fn row(now: Timestamp, run: &RunRecord) -> Row {
    Row {
        id: run.id.to_string(),
        agent: run.agent.clone(),
        state: run.state.name(),
        attempt: run.attempt,
        updated: ago(now, run.updated_at),
        created: run.created_at.to_string(),
        error: run.last_error.as_ref().map(ToString::to_string),
    }
}

pub(super) async fn login(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let values = minijinja::context! { needs_token => ops.config.token.is_some() };
    render(&ops, &session, "login.html", "Sign in", values)
}

pub(super) async fn overview(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = ops.runtime.store();
    let counts = match store.counts_by_agent().await {
        Ok(counts) => counts,
        Err(error) => {
            return unavailable(&ops, &session, &error);
        }
    };
    let states: Vec<&str> = RunState::STATES.iter().map(|s| s.name()).collect();
    let table: Vec<Value> = counts
        .iter()
        .map(|(agent, c)| {
            serde_json::json!({"agent": agent, "counts": c.iter().map(|(_, n)| n).collect::<Vec<_>>(), "total": c.total()})
        })
        .collect();
    let day = Duration::from_secs(86_400);
    let hour = Duration::from_secs(3600);
    let read = Stats::compute_with_series(store.as_ref(), day, hour, 24).await.ok();
    let (stats, series) = read.unzip();
    let alarms = ops.metrics.alarms(&ops.runtime).await.unwrap_or_default();
    let charts = series.map(|s| {
        let safe = minijinja::Value::from_safe_string;
        minijinja::context! {
            runs => safe(chart::runs(&s)),
            rates => safe(chart::rates(&s)),
            latency => safe(chart::latency(&s)),
        }
    });
    let values = minijinja::context! { states, table, stats, alarms, charts };
    render(&ops, &session, "overview.html", "Overview", values)
}

/// The runs page's filters (kept in the URL, so a filtered page can be linked).
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct Filter {
    #[serde(default)]
    pub(super) state: String,
    #[serde(default)]
    pub(super) agent: String,
    #[serde(default)]
    pub(super) since: String,
    /// A run id to go to.
    #[serde(default)]
    pub(super) q: String,
    #[serde(default)]
    pub(super) cursor: String,
}

impl Filter {
    /// The store query this filter means, or what is wrong with it.
    pub(super) fn query(&self, now: Timestamp, limit: usize) -> Result<ListQuery, String> {
        let mut query = ListQuery::new().limit(limit);
        if !self.state.is_empty() {
            let state: RunState =
                self.state.parse().map_err(|_| format!("`{}` is not a state", self.state))?;
            query = query.state(state);
        }
        if !self.agent.is_empty() {
            query = query.agent(self.agent.clone());
        }
        if !self.since.is_empty() {
            query = query.since(now.before(parse_duration(self.since.trim())?));
        }
        if !self.cursor.is_empty() {
            let cursor: RunId =
                self.cursor.parse().map_err(|_| format!("`{}` is not a run id", self.cursor))?;
            query = query.cursor(cursor);
        }
        Ok(query)
    }
}

pub(super) async fn runs(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Query(filter): Query<Filter>,
) -> Response {
    let q = filter.q.trim();
    let store = ops.runtime.store();
    if !q.is_empty() {
        if let Ok(id) = q.parse::<RunId>() {
            return Redirect::to(&format!("/ui/runs/{id}")).into_response();
        }
        // An idempotency key: of the agent filtered on, else of any agent with runs.
        let agents: Vec<String> = match filter.agent.as_str() {
            "" => store.counts_by_agent().await.unwrap_or_default().into_keys().collect(),
            agent => vec![agent.to_owned()],
        };
        for agent in &agents {
            match store.find_by_key(agent, q).await {
                Ok(Some(run)) => {
                    return Redirect::to(&format!("/ui/runs/{}", run.id)).into_response();
                }
                Ok(None) => {}
                Err(error) => {
                    return unavailable(&ops, &session, &error);
                }
            }
        }
        let message = format!("no run has the id or idempotency key `{q}`");
        return error_page(&ops, &session, StatusCode::NOT_FOUND, &message);
    }
    let now = store.now();
    let query = match filter.query(now, 50) {
        Ok(query) => query,
        Err(message) => return error_page(&ops, &session, StatusCode::BAD_REQUEST, &message),
    };
    let page = match store.list(query).await {
        Ok(page) => page,
        Err(error) => {
            return unavailable(&ops, &session, &error);
        }
    };
    let rows: Vec<Row> = page.runs.iter().map(|r| row(now, r)).collect();
    let next = page.next.map(|n| {
        let mut next = Filter { cursor: n.to_string(), ..Filter::default() };
        next.state.clone_from(&filter.state);
        next.agent.clone_from(&filter.agent);
        next.since.clone_from(&filter.since);
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("state", &next.state),
                ("agent", &next.agent),
                ("since", &next.since),
                ("cursor", &next.cursor),
            ])
            .finish()
    });
    let states: Vec<&str> = RunState::STATES.iter().map(|s| s.name()).collect();
    let agents = ops.runtime.agents();
    let values = minijinja::context! { rows, next, filter, states, agents };
    render(&ops, &session, "runs.html", "Runs", values)
}

fn parse_id(text: &str) -> Result<RunId, String> {
    text.parse().map_err(|_| format!("`{text}` is not a run id"))
}

pub(super) async fn run(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(message) => return error_page(&ops, &session, StatusCode::BAD_REQUEST, &message),
    };
    let store = ops.runtime.store();
    let view = match RunView::load(store.as_ref(), id).await {
        Ok(Some(view)) => view,
        Ok(None) => {
            return error_page(&ops, &session, StatusCode::NOT_FOUND, &format!("no run {id}"));
        }
        Err(error) => {
            return unavailable(&ops, &session, &error);
        }
    };
    let now = store.now();
    let run = &view.run;
    let history: Vec<Value> = view
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // A move out of `processing` ends an attempt: how long it took since its claim.
            let took = (h.from == Some(RunState::Processing))
                .then(|| view.history[..i].iter().rev().find(|p| p.to == RunState::Processing))
                .flatten()
                .map(|claim| format!("{} ms", h.at.since(claim.at).as_millis()));
            serde_json::json!({
                "took": took,
                "seq": h.seq, "from": h.from.map(|s| s.name()), "to": h.to.name(),
                "at": h.at.to_string(), "ago": ago(now, h.at), "attempt": h.attempt,
                "actor": h.actor.to_string(), "reason": h.reason,
                "error": h.error.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    let effects: Vec<Value> = view
        .effects
        .iter()
        .filter(|e| !is_internal_effect(&e.name))
        .map(|e| serde_json::json!({"name": e.name, "attempt": e.attempt, "at": e.recorded_at.to_string(), "result": pretty(&e.result)}))
        .collect();
    let notes: Vec<Value> = view
        .notes
        .iter()
        .map(|n| serde_json::json!({"author": n.author.to_string(), "text": n.text, "at": n.at.to_string()}))
        .collect();
    let stages: Vec<Value> = view
        .stages
        .iter()
        .map(|s| serde_json::json!({"id": s.id.to_string(), "agent": s.agent, "state": s.state.name(), "stage": s.stage}))
        .collect();
    // A pipeline run's stages as a diagram, each coloured by its runs' states.
    let diagram = ops.runtime.pipeline_graph(&run.agent).map(|graph| {
        let mut states: std::collections::BTreeMap<u32, Vec<RunState>> = Default::default();
        for stage in &view.stages {
            if let Some(k) = stage.stage {
                states.entry(k).or_default().push(stage.state);
            }
        }
        minijinja::Value::from_safe_string(diagram::pipeline(&graph, &states))
    });
    let error = run.last_error.as_ref().map(|e| {
        serde_json::json!({"fault": format!("{:?}", e.fault), "message": e.message, "chain": e.chain})
    });
    let values = minijinja::context! {
        run => serde_json::json!({
            "id": run.id.to_string(), "agent": run.agent, "state": run.state.name(),
            "attempt": run.attempt, "key": run.idempotency_key,
            "created": run.created_at.to_string(), "updated": run.updated_at.to_string(),
            "due": run.due_at.map(|d| d.to_string()), "waiting_for": run.waiting_for,
            "parent": run.parent.map(|p| p.to_string()),
            "input": pretty(&run.input), "output": run.output.as_ref().map(pretty),
            "signal": run.signal.as_ref().map(pretty),
        }),
        history, effects, notes, stages, error, diagram,
        can_replay => matches!(run.state, RunState::FailedPermanent | RunState::NeedsReview),
        can_cancel => !run.state.is_terminal() && run.state != RunState::Processing,
        held => run.state == RunState::NeedsReview,
    };
    render(&ops, &session, "run.html", &format!("Run {id}"), values)
}

pub(super) async fn review(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = ops.runtime.store();
    let held = match held_for_review(store.as_ref()).await {
        Ok(held) => held,
        Err(error) => {
            return unavailable(&ops, &session, &error);
        }
    };
    let now = store.now();
    let items: Vec<Value> = held
        .iter()
        .map(|h| serde_json::json!({"id": h.run.id.to_string(), "agent": h.run.agent, "why": h.why, "held": ago(now, h.run.updated_at)}))
        .collect();
    render(&ops, &session, "review.html", "Review", minijinja::context! { items })
}

/// The resolution form of a run held for review: its output pre-filled from the template of
/// the kept schema (or the text the operator sent, with what was wrong with it).
pub(super) async fn resolve_form(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    resolve_page(&ops, &session, &id, None, &[]).await
}

/// The resolution page, with `text` in the editor and `violations` listed when given.
pub(super) async fn resolve_page(
    ops: &Ops,
    session: &Session,
    id: &str,
    text: Option<&str>,
    violations: &[crate::schema::Violation],
) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(message) => return error_page(ops, session, StatusCode::BAD_REQUEST, &message),
    };
    let item = match ReviewItem::load(ops.runtime.store().as_ref(), id).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            return error_page(ops, session, StatusCode::NOT_FOUND, &format!("no run {id}"));
        }
        Err(error) => {
            return unavailable(ops, session, &error);
        }
    };
    let template =
        item.output_schema.as_ref().map(|s| crate::schema::template(s, Some(&item.run.input)));
    let values = minijinja::context! {
        id => id.to_string(), agent => item.run.agent, state => item.run.state.name(),
        reason => item.reason, input => pretty(&item.run.input),
        schema => item.output_schema.as_ref().map(pretty),
        output => text.map(str::to_owned).or_else(|| template.as_ref().map(pretty)).unwrap_or_default(),
        violations, held => item.run.state == RunState::NeedsReview,
    };
    let mut response = render(ops, session, "resolve.html", &format!("Resolve {id}"), values);
    if !violations.is_empty() || text.is_some() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

pub(super) async fn dlq(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = ops.runtime.store();
    let dead = match store.dead_letters(None, 500).await {
        Ok(dead) => dead,
        Err(error) => {
            return unavailable(&ops, &session, &error);
        }
    };
    let now = store.now();
    let mut by_agent: std::collections::BTreeMap<&str, u64> = Default::default();
    for d in &dead {
        *by_agent.entry(&d.agent).or_default() += 1;
    }
    let rows: Vec<Value> = dead
        .iter()
        .map(|d| serde_json::json!({
            "id": d.run.to_string(), "agent": d.agent, "attempt": d.attempt, "ago": ago(now, d.at),
            "why": d.error.as_ref().map_or_else(|| d.reason.clone(), ToString::to_string),
        }))
        .collect();
    let agents: Vec<Value> =
        by_agent.iter().map(|(a, n)| serde_json::json!({"agent": a, "count": n})).collect();
    render(&ops, &session, "dlq.html", "Dead letters", minijinja::context! { rows, agents })
}

pub(super) async fn agents(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let rt = &ops.runtime;
    let counts = rt.store().counts_by_agent().await.unwrap_or_default();
    let pipelines = rt.pipelines();
    let rows: Vec<Value> = rt
        .agents()
        .into_iter()
        .map(|name| {
            let control = rt.agent_control(name);
            let counts = counts.get(name);
            serde_json::json!({
                "name": name,
                "pipeline": pipelines.contains(&name),
                "notifies": rt.subscription(name).map(crate::notify::Subscription::describe),
                "breaker": rt.breaker(name).map(|b| b.to_string()),
                "paused": control.as_ref().is_some_and(|c| c.paused),
                "rate": control.as_ref().and_then(|c| c.rate),
                "control_by": control.as_ref().map(|c| c.by.to_string()),
                "control_reason": control.as_ref().map(|c| c.reason.clone()),
                "concurrency": rt.agent_options(name).and_then(|o| o.concurrency),
                "rate_limit": rt.agent_options(name).and_then(|o| o.rate).map(|r| format!("{} runs/s (burst {})", r.per_second, r.burst)),
                "queued": counts.map_or(0, |c| c.get(RunState::Queued)),
                "processing": counts.map_or(0, |c| c.get(RunState::Processing)),
            })
        })
        .collect();
    render(&ops, &session, "agents.html", "Agents", minijinja::context! { rows })
}

/// The lifecycle and every registered pipeline, as diagrams.
pub(super) async fn graphs(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
) -> Response {
    let safe = minijinja::Value::from_safe_string;
    let lifecycle = safe(diagram::lifecycle(&crate::view::LifecycleGraph::of_runs()));
    let pipelines: Vec<minijinja::Value> = ops
        .runtime
        .pipelines()
        .into_iter()
        .filter_map(|name| {
            let graph = ops.runtime.pipeline_graph(name)?;
            let svg = safe(diagram::pipeline(&graph, &Default::default()));
            Some(minijinja::context! { name, svg })
        })
        .collect();
    render(&ops, &session, "graphs.html", "Graphs", minijinja::context! { lifecycle, pipelines })
}
