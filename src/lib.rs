//! Typed, durable state machines for agents and automation pipelines.
//!
//! steadfast runs every unit of automated work (a *run*) through a fixed, typed lifecycle,
//! persists every move before acting on it, routes every failure by its class, and lets an
//! operator see, replay, approve or reject any run.
//!
//! # Example
//!
//! A state machine of your own, checked at compile time:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use steadfast::StateMachine;
//!
//! #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! #[serde(rename_all = "snake_case")]
//! enum Approval {
//!     #[machine(initial, to(Submitted))]
//!     Draft,
//!     #[machine(to(Approved, Rejected, Draft))]
//!     Submitted,
//!     #[machine(terminal)]
//!     Approved,
//!     #[machine(terminal)]
//!     Rejected,
//! }
//!
//! let state = Approval::INITIAL.transition(Approval::Submitted)?;
//! assert!(state.transition(Approval::Draft).is_ok());
//! assert!(Approval::Approved.transition(Approval::Draft).is_err());
//! println!("{}", Approval::mermaid());
//! # Ok::<(), steadfast::TransitionError<Approval>>(())
//! ```
//!
//! # The lifecycle
//!
//! Every run moves through [`RunState`]: `queued → processing → waiting_external | succeeded |
//! failed_transient | failed_permanent | needs_review`, and only along the table documented on
//! [`RunState`]. The table is declared with the same derive users have, so an impossible move
//! is refused with a [`TransitionError`] and changes nothing. Every move the runtime makes with
//! a fixed pair of states is built by one macro that asserts the pair against the table in a
//! `const`, so a move the table forbids does not compile; the two operator calls whose `from`
//! is the run's current state (replay, cancel) are checked by the store against the same table
//! at run time.
//!
//! # The derive
//!
//! `#[derive(StateMachine)]` turns a fieldless enum with `#[machine(...)]` attributes into a
//! [`StateMachine`](trait@StateMachine); see [`machine`] for the attribute, the rules it
//! enforces at compile time, and what it generates.
//!
//! # Agents and the runtime
//!
//! An [`Agent`] has a typed input and output and an async `run` that returns an [`Outcome`]
//! (done, wait for a signal, ask for review) or an [`AgentError`] whose [`Fault`] class
//! decides what happens next. The [`Runtime`] claims due runs under leases, runs attempts with
//! a heartbeat, a timeout and panic isolation, routes failures by class (backoff with full
//! jitter, cleanup and cooldown, review, dead letter), fires timers, and takes the operator's
//! calls. Side effects go through [`Context::effect`], which journals their results so a retry
//! does not repeat them. See [`runtime`] and, for tests, `steadfast::testing` (feature
//! `testing`).
//!
//! # Pipelines
//!
//! [`pipeline::Pipeline`] chains agents so that each stage's input type is the previous
//! stage's output type (checked at compile time), with `fan_out` over a list and a fan-in
//! policy. Each stage runs as a child run of the pipeline run; a logic fault compensates the
//! completed stages in reverse (saga). See [`pipeline`].
//!
//! # Notifications
//!
//! A run held for review, a dead letter and the silent-failure alarm can be notified by
//! notifier agents (a signed webhook, mail) subscribed with
//! [`RuntimeBuilder::notify`](runtime::RuntimeBuilder::notify). A notification is a durable
//! run created in the same write as the move it is about, so a crash loses none and a
//! receiver that is down gets it later. See [`notify`].
//!
//! # The store
//!
//! Every move of a run, every journaled effect, dead letter and note lives in a [`Store`]. The
//! default, [`SledStore`], is an embedded database in one directory: a move is one transaction
//! (record, history entry and indexes together) made durable before the call returns, with
//! [`Durability`](store::Durability) choosing how durable (`Fsync` by default, `Flush`, or an
//! explicit `Periodic` opt-out). Concurrent moves share one transaction and one fsync (group
//! commit). Claims hand out leases with fencing tokens, so a worker that wakes up after its
//! lease expired cannot move the run any more. See [`store`].
//!
//! # The schema gate
//!
//! [`schema::parse`] turns a model's answer into a typed value only after its JSON passed the
//! JSON Schema of the type: every violation is reported with its JSON pointer, and
//! [`SchemaError::repair_prompt`] renders them for a re-ask. See [`schema`].
//!
//! # The flagship agents and the CLI
//!
//! `steadfast::agents` (feature `agents`) holds the four stages of the digest pipeline that
//! `steadfast demo` runs: a collector of folders and feeds (with SSRF-safe fetching), a
//! classifier that asks an OpenAI-compatible model through the schema gate and falls back to
//! rules, a reporter (Markdown and HTML) and a mailer (SMTP or a file outbox).
//!
//! `steadfast::cli` (feature `cli`) is the command line as a library: a user's binary
//! registers its agents and pipelines on [`cli::App`] and gets `work`, `runs list|show`,
//! `review`, `replay`, `dlq`, `signal`, `cancel`, `note`, `stats`, `agents` and `graph` for
//! them. The `steadfast` binary is that, with the digest registered and a `demo` command.
//!
//! # Feature flags
//!
//! The default is the engine on sled and nothing else: `steadfast = "0.1"` compiles no HTTP
//! client or server, no command-line parser and no mail or TLS stack.
//!
//! - `sled` (default): [`SledStore`], the embedded store.
//! - `signal` (default): [`Runtime::run_until_signal`] (SIGINT, SIGTERM).
//! - `serve`: `steadfast::ops`, the operator API, the dashboard, metrics and health checks as
//!   an axum `Router` (axum, hyper, minijinja, metrics).
//! - `agents`: the flagship agents (`steadfast::agents`); implies `http` and `tls` (reqwest
//!   with rustls, lettre, feed-rs).
//! - `tls`: HTTPS for `reqwest` (rustls with reqwest's default provider).
//! - `http`: `Classify` for `reqwest` errors and `steadfast::http_fault` (HTTP statuses and
//!   `Retry-After` to faults).
//! - `client`: `steadfast::client::Client`, the operator's calls ([`runtime::Operate`]) over
//!   HTTP to a running server; implies `http`.
//! - `cli`: `steadfast::cli`, the command line as a library for a binary of your own, and
//!   `logging` (text or JSON log lines); implies `sled`, `signal`, `agents`, `serve` and
//!   `client`. The
//!   `steadfast` binary itself is the package `steadfast-cli`.
//! - `testing`: `steadfast::testing` (a harness to test agents in-process on tokio's paused
//!   clock, fault injection, assertions on runs) and `store::conformance`, the suite every
//!   `Store` implementation must pass.
//!
//! With `default-features = false` the engine runs on [`store::MemoryStore`] or a store of
//! your own.

// Lets the derive's generated `::steadfast::...` paths resolve inside this crate too.
extern crate self as steadfast;

pub mod agent;
#[cfg(feature = "agents")]
pub mod agents;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod fallback;
pub mod fault;
mod hash;
/// The former name of [`http_fault`].
#[cfg(feature = "http")]
#[deprecated(since = "0.1.0", note = "renamed `http_fault` (`http` will name the server's side)")]
pub mod http {
    pub use crate::http_fault::{check, retry_after, status_fault};
}
#[cfg(feature = "http")]
pub mod http_fault;
/// The `reqwest` this crate is built with: [`Classify`](fault::Classify) and
/// [`http::check`] apply to its errors and responses (use it, or the same version, for the
/// HTTP calls of your agents).
#[cfg(feature = "http")]
pub use reqwest;
pub mod lifecycle;
#[cfg(feature = "cli")]
pub mod logging;
pub mod machine;
pub mod notify;
#[cfg(feature = "serve")]
pub mod ops;
pub mod pipeline;
pub mod runtime;
pub mod schema;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod view;

pub use agent::{Agent, Context, Outcome, WaitFor};
pub use fallback::Fallback;
pub use fault::{AgentError, Fault};
pub use lifecycle::{RunId, RunState};
pub use machine::{StateMachine, TransitionError};
pub use runtime::{Runtime, RuntimeError};
pub use schema::SchemaError;
#[cfg(feature = "sled")]
pub use store::SledStore;
pub use store::{Store, StoreError};

/// The items most programs need, for a glob import: `use steadfast::prelude::*;`.
pub mod prelude {
    pub use crate::agent::{Agent, Context, Data, IdempotencyKey, Outcome, WaitFor};
    pub use crate::fault::{AgentError, Classify, Fault, RetryPolicy};
    pub use crate::lifecycle::{RunId, RunState};
    pub use crate::machine::{StateMachine, TransitionError};
    pub use crate::runtime::Runtime;
    #[cfg(feature = "sled")]
    pub use crate::store::SledStore;
    pub use crate::store::Store;
}

#[doc(hidden)]
pub mod __private {}
