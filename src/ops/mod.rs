//! Operating a running system over HTTP (feature `serve`): the JSON API under `/api/v1` and
//! the health checks, as an axum [`Router`] over a [`Runtime`].
//!
//! `steadfast serve` (and the same command of a user's binary built on `steadfast::cli`) runs
//! the workers and this router together; a program that has its own axum app mounts
//! [`router`] in it:
//!
//! ```no_run
//! # async fn demo(runtime: steadfast::Runtime) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use steadfast::ops::{self, OpsConfig};
//!
//! let runtime = Arc::new(runtime);
//! let app = ops::router(runtime.clone(), OpsConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7420").await?;
//! // Not `axum::serve`: `ops::serve` cuts off a client slow to send its headers.
//! ops::serve(listener, app, ops::ServeLimits::default(), std::future::pending()).await
//! # }
//! ```
//!
//! `/healthz` answers while the process does; `/readyz` answers 200 when the store answers
//! and the workers' dispatcher runs, 503 with the reason otherwise; `/metrics` is Prometheus
//! text (see [`Metrics`]); `/alarms` answers 503 with the agents whose due work has waited
//! longer than their window with no success within it (see [`Alarm`]), 200 otherwise. Every answer is JSON; an error is `{"error", "code"}` as the CLI prints it with `--json`
//! (code 1 refused, 2 usage, 3 store unavailable), with the HTTP status that says the same:
//! 400 a malformed call, 401 no token or the wrong one, 404 no such run, 409 refused in the
//! run's state (the message names it and what is allowed), 413 a body over the limit, 422 an
//! output that does not fit the kept schema (with `violations`, JSON pointers), 503 the store
//! unavailable.

mod api;
mod dashboard;
mod error;
mod extract;
pub(crate) mod guard;
mod health;
mod metrics;
mod openapi;
mod serve;
#[cfg(unix)]
mod socket;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aide::axum::ApiRouter;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::runtime::Runtime;

#[cfg(feature = "cli")]
pub(crate) use self::extract::OPERATOR_MAX;
pub(crate) use self::extract::is_operator_name;
pub use self::metrics::{Metrics, notify_alarms};
pub use self::serve::{ServeLimits, serve};
#[cfg(all(unix, feature = "cli"))]
pub(crate) use self::socket::own_uid;
#[cfg(unix)]
pub use self::socket::{LocalSocket, SOCKET_FILE, make_private};
/// The silent-failure alarm, computed by the engine (see [`crate::runtime::AlarmWatch`]);
/// here, as before, for the programs that name them from `ops`.
pub use crate::runtime::{Alarm, Raised};

/// The least length of a server token, in bytes.
pub const MIN_TOKEN_BYTES: usize = 32;

/// A server token: compared in constant time, never printed (`Debug` shows `***`).
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// A token of at least [`MIN_TOKEN_BYTES`] bytes (surrounding whitespace is not part of
    /// it, so a token file may end with a newline).
    pub fn new(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the token has {} bytes; a server token needs at least {MIN_TOKEN_BYTES} (for example `openssl rand -hex 32`)",
                text.len()
            ));
        }
        Ok(Token(text.into()))
    }

    /// Whether `offered` is this token, in time independent of where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// How the router behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OpsConfig {
    /// When set, every `/api` call must carry it (`Authorization: Bearer <token>`); the
    /// health checks stay open. Default: none (for a loopback bind only).
    pub token: Option<Token>,
    /// The largest request body, in bytes (default 1 MiB); a larger one is refused with 413.
    pub body_limit: usize,
    /// How long a call may take before it is answered 503 (default 30 s).
    pub timeout: Duration,
    /// The metrics `/metrics` renders and `/alarms` reads; give the same to the runtime with
    /// `RuntimeBuilder::observe` so that attempts are counted. Default: metrics of their own,
    /// with the store's and runtime's gauges only, and the default alarm.
    pub metrics: Option<Arc<Metrics>>,
    /// Host names a request's `Host` header may carry besides IP literals and `localhost`
    /// (see [`allow_host`](OpsConfig::allow_host)). Default: none.
    pub allowed_hosts: Vec<String>,
    /// Whether `/readyz`, `/metrics` and `/alarms` answer without the token when one is set
    /// (for probes and scrapers that cannot carry it). Default: `false`, they need it too.
    /// `/healthz` (which says only that the process answers) is always open.
    pub public_health: bool,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            token: None,
            body_limit: 1 << 20,
            timeout: Duration::from_secs(30),
            metrics: None,
            allowed_hosts: Vec::new(),
            public_health: false,
        }
    }
}

impl OpsConfig {
    /// `metrics` for `/metrics` and `/alarms` (see [`OpsConfig::metrics`]).
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Requires `token` on every API call.
    #[must_use]
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Takes requests whose `Host` header names `name` (with any port), besides IP literals
    /// and `localhost`, which are always taken. Any other `Host` is answered 421 before any
    /// handler runs, so that a page whose DNS name an attacker points at this server (DNS
    /// rebinding) can neither read nor change anything. Give the name the server is reached
    /// by behind a reverse proxy or on a network.
    #[must_use]
    pub fn allow_host(mut self, name: impl Into<String>) -> Self {
        self.allowed_hosts.push(name.into());
        self
    }

    /// Lets `/readyz`, `/metrics` and `/alarms` answer without the token (see
    /// [`OpsConfig::public_health`]).
    #[must_use]
    pub fn public_health(mut self, public: bool) -> Self {
        self.public_health = public;
        self
    }
}

/// What the handlers share.
pub(crate) struct Ops {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) config: OpsConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) dashboard: dashboard::Dashboard,
}

/// The API (`/api/v1/...`), its OpenAPI document (`/api/v1/openapi.json`), `/healthz`,
/// `/readyz`, `/metrics` and `/alarms` over `runtime`.
pub fn router(runtime: Arc<Runtime>, config: OpsConfig) -> Router {
    let limit = config.body_limit;
    let timeout = config.timeout;
    let metrics = config.metrics.clone().unwrap_or_else(|| Metrics::new(Alarm::default()));
    let mut hosts = guard::AllowedHosts::default();
    for name in &config.allowed_hosts {
        hosts.add(name);
    }
    let ops = Arc::new(Ops { runtime, config, metrics, dashboard: dashboard::Dashboard::new() });
    let (routes, document) = openapi::document(|| {
        // The token is asked for before anything else, an unknown call's 404 included (a
        // caller without it learns nothing of what exists).
        let api = api::routes()
            .fallback(|| async { error::ApiError::not_found("no such API call (see /api/v1)") })
            .layer(middleware::from_fn(guard::check_api_write))
            .layer(middleware::from_fn_with_state(ops.clone(), authorize));
        let probes = health::probes()
            .route_layer(middleware::from_fn_with_state(ops.clone(), authorize_probe));
        ApiRouter::new().nest("/api/v1", api).merge(health::routes()).merge(probes)
    });
    routes
        .route("/api/v1/openapi.json", get(move || openapi::serve(document.clone())))
        .merge(dashboard::routes(ops.clone()))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |request: Request, next: Next| async move {
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => error::ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    3,
                    format!("the call took longer than {} s", timeout.as_secs()),
                )
                .into_response(),
            }
        }))
        // The outermost check: a request for another host reaches nothing.
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let hosts = hosts.clone();
            async move { guard::check_host(&hosts, request, next).await }
        }))
        .with_state(ops)
}

/// Refuses a probe (`/readyz`, `/metrics`, `/alarms`) without the token, when one is set and
/// the probes are not public.
async fn authorize_probe(State(ops): State<Arc<Ops>>, request: Request, next: Next) -> Response {
    if ops.config.public_health {
        return next.run(request).await;
    }
    authorize(State(ops), request, next).await
}

/// Refuses an API call without the token (when one is set), before it does anything.
async fn authorize(State(ops): State<Arc<Ops>>, request: Request, next: Next) -> Response {
    if let Some(token) = &ops.config.token {
        let offered = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or(""));
        if !offered.is_some_and(|offered| token.matches(offered.trim())) {
            return error::ApiError::unauthorized(offered.is_some()).into_response();
        }
    }
    next.run(request).await
}
