//! The dashboard's forms (POST): sign in and out, a run's moves, bulk replay and cancel with a
//! confirmation, a resolution, pause and resume. Each checks the session's CSRF token first
//! (the `Origin` was checked before), acts through the runtime's operator calls, and answers
//! with a redirect to a page that says what happened (or the refusal, as the API says it).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{Filter, resolve_page};
use super::session::{self, Session};
use super::{error_page, render, unavailable};
use crate::lifecycle::{RunId, RunState};
use crate::ops::Ops;
use crate::runtime::RuntimeError;
use crate::store::Actor;

/// The most runs one bulk action takes.
const BULK_LIMIT: usize = 10_000;

/// A refusal unless `offered` is the session's CSRF token.
fn check(ops: &Ops, session: &Session, offered: &str) -> Option<Response> {
    (!session::csrf_matches(session, offered)).then(|| {
        error_page(
            ops,
            session,
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or stale; reload the page and try again",
        )
    })
}

fn actor(session: &Session) -> Actor {
    Actor::Operator(session.operator.clone())
}

/// Back to `to` (a dashboard path), saying `message` there.
fn done(ops: &Ops, session: &Session, message: String, to: &str) -> Response {
    ops.dashboard.sessions.flash(session, message);
    let to = if to.starts_with("/ui") && !to.starts_with("//") { to } else { "/ui" };
    Redirect::to(to).into_response()
}

/// A refused call as a page with the API's status for it.
fn refused(ops: &Ops, session: &Session, error: RuntimeError) -> Response {
    let error = crate::ops::error::ApiError::from(error);
    error_page(ops, session, error.status(), error.message())
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
}

pub(super) async fn login(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    if let Some(token) = &ops.config.token
        && !token.matches(form.token.trim())
    {
        let values = minijinja::context! { needs_token => true, wrong => true };
        let mut page = render(&ops, &session, "login.html", "Sign in", values);
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let name = match form.name.trim() {
        "" => "dashboard",
        name if crate::ops::is_operator_name(name) => name,
        _ => {
            // Not replaced by a default: what this session does is recorded under its name.
            let values =
                minijinja::context! { needs_token => ops.config.token.is_some(), bad_name => true };
            let mut page = render(&ops, &session, "login.html", "Sign in", values);
            *page.status_mut() = StatusCode::BAD_REQUEST;
            return page;
        }
    };
    let signed = ops.dashboard.sessions.sign_in(&session, name.to_owned());
    let mut response = Redirect::to("/ui").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&signed));
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    ops.dashboard.sessions.sign_out(&session);
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    response
}

/// A move on one run.
#[derive(Debug, Deserialize)]
pub(super) struct RunForm {
    #[serde(default)]
    csrf: String,
    /// The note of an approval, a rejection, or a note itself.
    #[serde(default)]
    note: String,
    /// Where to go back to.
    #[serde(default)]
    back: String,
}

pub(super) async fn on_run(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<RunForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    let Ok(id) = id.parse::<RunId>() else {
        return error_page(
            &ops,
            &session,
            StatusCode::BAD_REQUEST,
            &format!("`{id}` is not a run id"),
        );
    };
    let rt = &ops.runtime;
    let note = Some(form.note.trim()).filter(|n| !n.is_empty());
    let by = actor(&session);
    let moved = match action.as_str() {
        "approve" => {
            rt.approve(id, by, note).await.map(|r| format!("approved run {id}: now {}", r.state))
        }
        "reject" => {
            rt.reject(id, by, note).await.map(|r| format!("rejected run {id}: now {}", r.state))
        }
        "replay" => {
            rt.replay(id, by, false).await.map(|r| format!("replayed run {id}: now {}", r.state))
        }
        "cancel" => rt.cancel(id, by).await.map(|r| format!("cancelled run {id}: now {}", r.state)),
        "note" => rt.note(id, by, &form.note).await.map(|_| format!("noted on run {id}")),
        _ => {
            return error_page(
                &ops,
                &session,
                StatusCode::NOT_FOUND,
                &format!("no action `{action}`"),
            );
        }
    };
    let back = if form.back.is_empty() { format!("/ui/runs/{id}") } else { form.back };
    match moved {
        Ok(message) => done(&ops, &session, message, &back),
        Err(error) => refused(&ops, &session, error),
    }
}

/// A resolution: the output, as JSON text.
#[derive(Debug, Deserialize)]
pub(super) struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    output: String,
}

pub(super) async fn resolve(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    let Ok(run) = id.parse::<RunId>() else {
        return error_page(
            &ops,
            &session,
            StatusCode::BAD_REQUEST,
            &format!("`{id}` is not a run id"),
        );
    };
    let output: serde_json::Value = match serde_json::from_str(&form.output) {
        Ok(output) => output,
        Err(error) => {
            let violation = crate::schema::Violation {
                pointer: String::new(),
                keyword: "json".into(),
                message: format!("not JSON: {error}"),
            };
            return resolve_page(&ops, &session, &id, Some(&form.output), &[violation]).await;
        }
    };
    match ops.runtime.resolve(run, actor(&session), output).await {
        Ok(_) => done(&ops, &session, format!("resolved run {run}: it succeeded"), "/ui/review"),
        Err(RuntimeError::InvalidOutput { source, .. }) => {
            resolve_page(&ops, &session, &id, Some(&form.output), source.violations()).await
        }
        Err(error) => refused(&ops, &session, error),
    }
}

/// A bulk action on every run the filter matches; without `confirm`, the count to confirm.
#[derive(Debug, Deserialize)]
pub(super) struct BulkForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    confirm: String,
    #[serde(flatten)]
    filter: Filter,
}

pub(super) async fn bulk(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Form(form): Form<BulkForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    let store = ops.runtime.store();
    let mut filter = form.filter;
    filter.cursor.clear();
    let allowed: &[RunState] = match form.action.as_str() {
        "replay" => &[RunState::FailedPermanent, RunState::NeedsReview],
        "cancel" => &[RunState::Queued, RunState::WaitingExternal, RunState::FailedTransient],
        _ => {
            return error_page(
                &ops,
                &session,
                StatusCode::BAD_REQUEST,
                "bulk actions are `replay` and `cancel`",
            );
        }
    };
    let mut query = match filter.query(store.now(), 1000) {
        Ok(query) => query,
        Err(message) => return error_page(&ops, &session, StatusCode::BAD_REQUEST, &message),
    };
    // Everything the filter matches in the states the action takes, page by page (a filter
    // without a state matches runs in other states too, which must not hide older ones).
    let mut runs = Vec::new();
    while runs.len() < BULK_LIMIT {
        let page = match store.list(query.clone()).await {
            Ok(page) => page,
            Err(error) => {
                return unavailable(&ops, &session, &error);
            }
        };
        runs.extend(page.runs.into_iter().filter(|r| allowed.contains(&r.state)));
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    runs.truncate(BULK_LIMIT);
    if form.confirm != "yes" {
        let values = minijinja::context! {
            action => form.action, count => runs.len(), filter,
            states => allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            target => "/ui/runs/bulk", back => "/ui/runs",
        };
        return render(&ops, &session, "confirm.html", "Confirm", values);
    }
    let (mut moved, mut failed) = (0, 0);
    for run in runs {
        let by = actor(&session);
        let result = match form.action.as_str() {
            "replay" => ops.runtime.replay(run.id, by, false).await,
            _ => ops.runtime.cancel(run.id, by).await,
        };
        match result {
            Ok(_) => moved += 1,
            Err(_) => failed += 1,
        }
    }
    let verb = if form.action == "replay" { "replayed" } else { "cancelled" };
    done(&ops, &session, format!("{moved} runs {verb}, {failed} refused"), "/ui/runs")
}

/// Replays the dead letters of one agent (or all); without `confirm`, the count to confirm.
#[derive(Debug, Deserialize)]
pub(super) struct DlqForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn dlq_replay(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Form(form): Form<DlqForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    let agent = Some(form.agent.as_str()).filter(|a| !a.is_empty());
    if form.confirm != "yes" {
        let count = match ops.runtime.store().counts_by_agent().await {
            Ok(counts) => counts
                .iter()
                .filter(|(a, _)| agent.is_none_or(|wanted| wanted == a.as_str()))
                .map(|(_, c)| c.get(RunState::FailedPermanent))
                .sum::<u64>(),
            Err(error) => {
                return unavailable(&ops, &session, &error);
            }
        };
        let filter = Filter { agent: form.agent.clone(), ..Filter::default() };
        let values = minijinja::context! {
            action => "replay", count, filter, states => ["failed_permanent"],
            target => "/ui/dlq/replay", back => "/ui/dlq",
        };
        return render(&ops, &session, "confirm.html", "Confirm", values);
    }
    match ops.runtime.replay_dead_letters(agent, actor(&session), false).await {
        Ok(report) => {
            let refused = report.iter().filter(|r| !r.replayed).count();
            let message =
                format!("{} dead letters replayed, {refused} refused", report.len() - refused);
            done(&ops, &session, message, "/ui/dlq")
        }
        Err(error) => refused(&ops, &session, error),
    }
}

/// Pause (with a reason) or resume (at an optional rate).
#[derive(Debug, Deserialize)]
pub(super) struct AgentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    rate: String,
}

pub(super) async fn on_agent(
    State(ops): State<Arc<Ops>>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<AgentForm>,
) -> Response {
    if let Some(refusal) = check(&ops, &session, &form.csrf) {
        return refusal;
    }
    let by = actor(&session);
    let result = match action.as_str() {
        "pause" => ops
            .runtime
            .pause(&name, by, form.reason.trim())
            .await
            .map(|_| format!("paused `{name}`: its runs stay queued")),
        "resume" => {
            let rate = match form.rate.trim() {
                "" => None,
                text => match text.parse::<f64>() {
                    Ok(rate) => Some(rate),
                    Err(_) => {
                        return error_page(
                            &ops,
                            &session,
                            StatusCode::BAD_REQUEST,
                            &format!("`{text}` is not a number of runs per second"),
                        );
                    }
                },
            };
            ops.runtime.resume(&name, by, rate).await.map(|_| format!("resumed `{name}`"))
        }
        _ => {
            return error_page(
                &ops,
                &session,
                StatusCode::NOT_FOUND,
                &format!("no action `{action}`"),
            );
        }
    };
    match result {
        Ok(message) => done(&ops, &session, message, "/ui/agents"),
        Err(error) => refused(&ops, &session, error),
    }
}
