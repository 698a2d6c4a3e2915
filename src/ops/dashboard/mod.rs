//! The dashboard under `/ui`: server-rendered pages (minijinja, every value escaped), usable
//! without JavaScript, on the same runtime calls and `view` model as the API.
//!
//! Security: with a server token, every page needs a session signed in with it (`/ui/login`);
//! sessions live in an HttpOnly, SameSite=Strict cookie; every form carries the session's
//! CSRF token and every POST's `Origin` must be this server; every answer carries a
//! `Content-Security-Policy` of `default-src 'self'` (no inline script or style, nothing from
//! another host) and may not be framed.

mod actions;
mod chart;
mod diagram;
mod live;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;

use self::session::{Session, Sessions};
use super::Ops;

/// The templates and the sessions.
pub(crate) struct Dashboard {
    templates: minijinja::Environment<'static>,
    sessions: Sessions,
    live: live::Live,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    pub(crate) fn new() -> Self {
        let mut templates = minijinja::Environment::new();
        // Names end in `.html`: minijinja escapes every value for HTML.
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("runs.html", include_str!("templates/runs.html")),
            ("run.html", include_str!("templates/run.html")),
            ("confirm.html", include_str!("templates/confirm.html")),
            ("review.html", include_str!("templates/review.html")),
            ("resolve.html", include_str!("templates/resolve.html")),
            ("dlq.html", include_str!("templates/dlq.html")),
            ("agents.html", include_str!("templates/agents.html")),
            ("error.html", include_str!("templates/error.html")),
            ("graphs.html", include_str!("templates/graphs.html")),
        ] {
            templates.add_template(name, source).expect("the dashboard's templates parse");
        }
        Dashboard { templates, sessions: Sessions::default(), live: live::Live::default() }
    }
}

/// The dashboard's routes, under `/ui`.
pub(super) fn routes(ops: Arc<Ops>) -> Router<Arc<Ops>> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/login", get(pages::login).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/bulk", post(actions::bulk))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/runs/{id}/{action}", post(actions::on_run))
        .route("/ui/review", get(pages::review))
        .route("/ui/review/{id}", get(pages::resolve_form).post(actions::resolve))
        .route("/ui/dlq", get(pages::dlq))
        .route("/ui/dlq/replay", post(actions::dlq_replay))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/graphs", get(pages::graphs))
        .route("/ui/agents/{name}/{action}", post(actions::on_agent))
        .route("/ui/events", get(live::events))
        .route("/ui/static/app.css", get(stylesheet))
        .route("/ui/static/app.js", get(script))
        .route("/", get(|| async { Redirect::to("/ui") }))
        .layer(middleware::from_fn_with_state(ops, guard))
}

/// Every dashboard request: its session (started when there is none, its cookie set), a
/// sign-in when the server has a token, the `Origin` of every POST, and the security headers.
async fn guard(State(ops): State<Arc<Ops>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/ui/static/") || !(path == "/ui" || path.starts_with("/ui/")) {
        // No session for a style sheet, nor for what is not a page (the browser's
        // `/favicon.ico`, which reaches this layer as the router's fallback): one started
        // there would replace the page's own.
        let mut response = next.run(request).await;
        security_headers(response.headers_mut());
        return response;
    }
    let open = ops.config.token.is_none();
    let (session, new) = ops.dashboard.sessions.get_or_start(request.headers(), open);
    let path = request.uri().path().to_owned();
    let mut response = if request.method() == Method::POST
        && !crate::ops::guard::same_origin(request.headers())
    {
        error_page(
            &ops,
            &session,
            StatusCode::FORBIDDEN,
            "refused: this form was not sent from this dashboard's own pages (its Origin is another site's)",
        )
    } else if !session.signed_in && path != "/ui/login" {
        Redirect::to("/ui/login").into_response()
    } else {
        request.extensions_mut().insert(session.clone());
        next.run(request).await
    };
    let headers = response.headers_mut();
    if new && !headers.contains_key(header::SET_COOKIE) {
        headers.insert(header::SET_COOKIE, session::set_cookie(&session));
    }
    security_headers(headers);
    response
}

/// The headers every dashboard answer carries.
fn security_headers(headers: &mut axum::http::HeaderMap) {
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// What every page is given besides its own values.
#[derive(Serialize)]
struct Frame<'a> {
    title: &'a str,
    nav: &'a str,
    csrf: &'a str,
    operator: &'a str,
    signed_in: bool,
    /// Whether signing out means anything (the server has a token).
    guarded: bool,
    flash: Option<String>,
}

/// `template` rendered with the frame and `values`.
fn render(
    ops: &Ops,
    session: &Session,
    template: &str,
    title: &str,
    values: minijinja::Value,
) -> Response {
    let frame = Frame {
        title,
        nav: template.trim_end_matches(".html"),
        csrf: &session.csrf,
        operator: &session.operator,
        signed_in: session.signed_in,
        guarded: ops.config.token.is_some(),
        flash: ops.dashboard.sessions.take_flash(session),
    };
    let context = minijinja::context! { frame => frame, ..values };
    let rendered = ops.dashboard.templates.get_template(template).and_then(|t| t.render(context));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(template, %error, "a dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; see the server's log")
                .into_response()
        }
    }
}

/// A page that says what went wrong, with `status`.
fn error_page(ops: &Ops, session: &Session, status: StatusCode, message: &str) -> Response {
    let values = minijinja::context! { message => message, status => status.as_u16() };
    let mut response = render(ops, session, "error.html", "Refused", values);
    *response.status_mut() = status;
    response
}

/// The page for a store that does not answer (503).
fn unavailable(ops: &Ops, session: &Session, error: &impl std::fmt::Display) -> Response {
    error_page(ops, session, StatusCode::SERVICE_UNAVAILABLE, &error.to_string())
}

async fn script() -> Response {
    let js = include_str!("static/app.js");
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], js).into_response()
}

async fn stylesheet() -> Response {
    let css = include_str!("static/app.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}
