//! The runtime: registered agents, workers that claim due runs under leases, fault routing,
//! timers, and the operator's calls (signal, approve, reject, resolve, replay, cancel, note).
//!
//! A refused operator call is a [`RuntimeError`] that names the run's state and what the call
//! is allowed from, and changes nothing; a failing agent never fails the runtime: its error is
//! routed by fault class into the run's lifecycle.
//!
//! ```
//! use async_trait::async_trait;
//! use steadfast::prelude::*;
//! use steadfast::runtime::Runtime;
//!
//! struct Double;
//!
//! #[async_trait]
//! impl Agent for Double {
//!     type Input = u32;
//!     type Output = u32;
//!     fn name(&self) -> &str { "double" }
//!     async fn run(&self, _ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
//!         Ok(Outcome::Done(n * 2))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let rt = Runtime::builder().store(SledStore::open(dir.path())?).register(Double).build()?;
//! let run = rt.submit("double", 21).await?;
//! assert!(run.created);
//! assert!(!rt.submit("double", 21).await?.created); // same input, same run
//! rt.run_until_idle().await?;
//! let record = rt.store().get(run.id).await?.unwrap();
//! assert_eq!(record.state, RunState::Succeeded);
//! assert_eq!(record.output, Some(serde_json::json!(42)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod breaker;
mod builder;
mod error;
mod limit;
pub(crate) mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

pub use self::breaker::{BreakerPolicy, BreakerState};
pub use self::builder::{AgentOptions, RuntimeBuilder};
pub use self::error::RuntimeError;
pub use self::limit::RateLimit;
use crate::agent::erased::ErasedAgent;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Conflict, NewRun, Note, RunRecord, Store, Transition};

/// A callback on a run that entered `needs_review` or the dead letter queue.
pub(crate) type Hook = Arc<dyn Fn(&RunRecord) + Send + Sync>;

pub(crate) struct Registered {
    pub(crate) agent: Arc<dyn ErasedAgent>,
    /// The agent's own concurrency limit, if it has one.
    pub(crate) permits: Option<Arc<Semaphore>>,
    pub(crate) breaker: Option<breaker::Breaker>,
    pub(crate) bucket: Option<limit::TokenBucket>,
    /// A pipeline run's own agent (it waits on its stages), if this is one.
    pub(crate) pipeline: Option<Arc<crate::pipeline::PipelineAgent>>,
}

impl Registered {
    /// Whether this is a pipeline run's agent.
    pub(crate) fn is_pipeline(&self) -> bool {
        self.pipeline.is_some()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agents: HashMap<String, Registered>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) workers: usize,
    pub(crate) lease: Duration,
    pub(crate) worker_id: String,
    pub(crate) on_review: Vec<Hook>,
    pub(crate) on_dead_letter: Vec<Hook>,
    pub(crate) on_success: Vec<Hook>,
    pub(crate) grace: Duration,
    /// Wakes the dispatcher: new work, a signal, an attempt finished.
    pub(crate) wake: Notify,
    pub(crate) in_flight: AtomicUsize,
    /// Of `in_flight`, the attempts whose agent has returned and whose outcome is being
    /// recorded: they hold no worker slot, so they do not count against claiming ahead.
    pub(crate) recording: AtomicUsize,
    /// Of `in_flight`, the pipeline runs' attempts (they hold no worker slot).
    pub(crate) coordinating: AtomicUsize,
    /// Attempts in flight: run → (fencing token, abort handle), for a graceful release.
    pub(crate) attempts: Mutex<HashMap<RunId, (u64, tokio::task::AbortHandle)>>,
    pub(crate) stopping: AtomicBool,
    pub(crate) rng: Mutex<fastrand::Rng>,
    /// Set once the registered agents' schemas are kept in the store.
    pub(crate) schemas_kept: tokio::sync::OnceCell<()>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: Arc<dyn Store>,
        agents: HashMap<String, Registered>,
        workers: usize,
        lease: Duration,
        worker_id: String,
        on_review: Vec<Hook>,
        on_dead_letter: Vec<Hook>,
        on_success: Vec<Hook>,
        grace: Duration,
    ) -> Self {
        Shared {
            store,
            agents,
            slots: Arc::new(Semaphore::new(workers)),
            workers,
            lease,
            worker_id,
            on_review,
            on_dead_letter,
            on_success,
            grace,
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            recording: AtomicUsize::new(0),
            coordinating: AtomicUsize::new(0),
            attempts: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            rng: Mutex::new(fastrand::Rng::new()),
            schemas_kept: tokio::sync::OnceCell::new(),
        }
    }

    /// Keeps the JSON Schemas of every registered agent's input and output in the store
    /// (once per runtime), for tools that validate without the Rust types. A failure is
    /// logged, not fatal: it only costs those tools their check.
    pub(crate) async fn keep_schemas(&self) {
        self.schemas_kept
            .get_or_init(|| async {
                for registered in self.agents.values() {
                    let agent = &registered.agent;
                    for hash in [agent.input_schema(), agent.output_schema()] {
                        let Some(text) = crate::schema::text_by_hash(&hash) else { continue };
                        if let Err(error) = self.store.put_schema(&hash, &text).await {
                            tracing::warn!(%error, agent = agent.name(), "could not keep a schema");
                        }
                    }
                }
            })
            .await;
    }

    /// Calls the hooks for a run that just moved.
    pub(crate) fn notify_hooks(&self, run: &RunRecord) {
        let hooks = match run.state {
            RunState::NeedsReview => &self.on_review,
            RunState::FailedPermanent => &self.on_dead_letter,
            RunState::Succeeded => &self.on_success,
            _ => return,
        };
        for hook in hooks {
            hook(run);
        }
    }
}

/// Runs registered agents' runs to completion, durably. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut agents: Vec<&String> = self.shared.agents.keys().collect();
        agents.sort();
        f.debug_struct("Runtime")
            .field("worker_id", &self.shared.worker_id)
            .field("agents", &agents)
            .finish_non_exhaustive()
    }
}

/// The answer to [`Runtime::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Submitted {
    /// The run.
    pub id: RunId,
    /// Whether this call created it (`false`: the idempotency key already had a run).
    pub created: bool,
}

impl Runtime {
    /// A builder; see [`RuntimeBuilder`].
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The registered agents' names, sorted.
    pub fn agents(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.shared.agents.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The state of `agent`'s circuit breaker (`None` if it has none or is not registered).
    pub fn breaker(&self, agent: &str) -> Option<BreakerState> {
        self.shared.agents.get(agent)?.breaker.as_ref().map(breaker::Breaker::state)
    }

    fn agent(&self, name: &str) -> Result<&Registered, RuntimeError> {
        self.shared.agents.get(name).ok_or_else(|| RuntimeError::UnknownAgent {
            name: name.to_owned(),
            known: self.agents().join(", "),
        })
    }

    /// Submits a run of `agent` with `input`, validated against the agent's input schema
    /// (nothing is stored if it does not fit) and deduplicated by the agent's idempotency key.
    pub async fn submit<I: Serialize>(
        &self,
        agent: &str,
        input: I,
    ) -> Result<Submitted, RuntimeError> {
        let registered = self.agent(agent)?;
        let input = serde_json::to_value(input).map_err(RuntimeError::NotJson)?;
        let (key, concurrency_key) = registered
            .agent
            .admit(&input)
            .map_err(|source| RuntimeError::InvalidInput { agent: agent.to_owned(), source })?;
        let mut new = NewRun::new(agent, key, input)
            .schemas(registered.agent.input_schema(), registered.agent.output_schema());
        if let Some(ckey) = concurrency_key {
            new = new.concurrency_key(ckey);
        }
        self.shared.keep_schemas().await;
        let created = self.shared.store.create(new).await?;
        if created.created {
            self.shared.wake.notify_one();
        }
        Ok(Submitted { id: created.run.id, created: created.created })
    }

    /// Works until nothing is left that can progress without outside input: no run of a
    /// registered agent queued, processing or waiting out a backoff. Runs waiting for a
    /// signal or a human, succeeded or dead-lettered, are left as they are. Backoff delays
    /// are real time (use tokio's paused clock in tests).
    pub async fn run_until_idle(&self) -> Result<(), RuntimeError> {
        worker::dispatch(self.shared.clone(), worker::Until::Idle).await
    }

    /// Works until [`shutdown`](Runtime::shutdown) is called (from another task), for programs
    /// that manage their own lifetime; [`serve`](Runtime::serve) adds the signal handling.
    pub async fn run_until_shutdown(&self) -> Result<(), RuntimeError> {
        worker::dispatch(self.shared.clone(), worker::Until::Stopped).await
    }

    /// Works until SIGINT or SIGTERM, then shuts down gracefully: stops claiming, lets
    /// attempts in flight finish within the grace period, and releases the rest (back to the
    /// queue without charging an attempt).
    pub async fn serve(&self) -> Result<(), RuntimeError> {
        let shared = self.shared.clone();
        let signal = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        tokio::select! {
            result = worker::dispatch(shared.clone(), worker::Until::Stopped) => result?,
            () = signal => tracing::info!("shutdown requested"),
        }
        self.shutdown().await
    }

    /// Stops claiming, waits up to the grace period for attempts in flight, then releases the
    /// ones still running back to the queue (their attempt is not charged).
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        shared.wake.notify_waiters();
        let deadline = tokio::time::Instant::now() + shared.grace;
        while shared.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        let left: Vec<(RunId, (u64, tokio::task::AbortHandle))> =
            shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for (run, (token, handle)) in left {
            handle.abort();
            let release = Transition::new(run, RunState::Processing, RunState::FailedTransient)
                .fenced(token)
                .refund_attempt()
                .by(Actor::Worker(shared.worker_id.clone()))
                .reason("released at shutdown");
            match shared.store.transition(release).await? {
                Ok(_) => tracing::info!(run_id = %run, "released at shutdown"),
                Err(conflict) => {
                    tracing::warn!(run_id = %run, %conflict, "could not release at shutdown")
                }
            }
        }
        Ok(())
    }

    async fn get(&self, run: RunId) -> Result<RunRecord, RuntimeError> {
        self.shared.store.get(run).await?.ok_or(RuntimeError::NotFound(run))
    }

    /// The run, if it is in one of the states `action` is `allowed` from; otherwise the
    /// refusal naming its state and those states.
    async fn get_in(
        &self,
        run: RunId,
        action: &'static str,
        allowed: &[RunState],
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get(run).await?;
        if !allowed.contains(&record.state) {
            return Err(refused(&record, action, allowed));
        }
        Ok(record)
    }

    /// Moves `run` from `state` for an operator, mapping a race to [`RuntimeError::Raced`].
    async fn operate(&self, transition: Transition) -> Result<RunRecord, RuntimeError> {
        let run = transition.run;
        match self.shared.store.transition(transition).await? {
            Ok(record) => {
                self.shared.notify_hooks(&record);
                worker::after_move(&self.shared, &record, false, false).await;
                if record.state == RunState::Queued {
                    self.shared.wake.notify_one();
                }
                Ok(record)
            }
            Err(Conflict::State { current, .. }) => Err(RuntimeError::Raced { run, current }),
            Err(Conflict::Fenced { .. }) => {
                Err(RuntimeError::Raced { run, current: RunState::Processing })
            }
        }
    }

    /// Sends signal `name` to a run waiting for it; its payload reaches the next attempt as
    /// [`Context::signal`](crate::Context::signal).
    pub async fn signal(
        &self,
        run: RunId,
        name: &str,
        payload: Value,
        by: Actor,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "signal", &[RunState::WaitingExternal]).await?;
        if let Some(waiting) = record.waiting_for.as_deref().filter(|w| *w != name) {
            return Err(RuntimeError::WrongSignal {
                run,
                waiting: waiting.to_owned(),
                sent: name.to_owned(),
            });
        }
        self.operate(
            Transition::new(run, RunState::WaitingExternal, RunState::Queued)
                .by(by)
                .signal(payload)
                .reason(format!("signal `{name}` received")),
        )
        .await
    }

    /// Approves a run held for review: it is queued again with a fresh attempt budget, and
    /// `note` reaches its next attempt as [`Context::review_note`](crate::Context::review_note).
    pub async fn approve(
        &self,
        run: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, RuntimeError> {
        self.get_in(run, "approve", &[RunState::NeedsReview]).await?;
        let mut t = Transition::new(run, RunState::NeedsReview, RunState::Queued)
            .by(by.clone())
            .reset_attempts()
            .reason(reason_with("approved", note));
        if let Some(note) = note {
            t = t.review_note(note);
            self.shared.store.add_note(run, by, note).await?;
        }
        self.operate(t).await
    }

    /// Rejects a run held for review: it goes to the dead letter queue.
    pub async fn reject(
        &self,
        run: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, RuntimeError> {
        self.get_in(run, "reject", &[RunState::NeedsReview]).await?;
        if let Some(note) = note {
            self.shared.store.add_note(run, by.clone(), note).await?;
        }
        self.operate(
            Transition::new(run, RunState::NeedsReview, RunState::FailedPermanent)
                .by(by)
                .reason(reason_with("rejected", note)),
        )
        .await
    }

    /// Resolves a run held for review with an output the operator provides, validated against
    /// the agent's output schema: the run succeeds with it.
    pub async fn resolve(
        &self,
        run: RunId,
        by: Actor,
        output: Value,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "resolve", &[RunState::NeedsReview]).await?;
        // With the agent registered here, its Rust type decides; otherwise the schema the
        // store kept for the run's output (the CLI resolves runs of agents it has no types of).
        match self.shared.agents.get(&record.agent) {
            Some(agent) => agent.agent.check_output(&output),
            None => {
                let hash = record.output_schema.as_deref().unwrap_or_default();
                let Some(schema) = self.shared.store.schema(hash).await? else {
                    return Err(RuntimeError::NoSchema { run, agent: record.agent.clone() });
                };
                crate::schema::check_with(&schema, "the agent's output", &output)
            }
        }
        .map_err(|source| RuntimeError::InvalidOutput { run, source })?;
        self.operate(
            Transition::new(run, RunState::NeedsReview, RunState::Succeeded)
                .by(by)
                .output(output)
                .reason("resolved by an operator"),
        )
        .await
    }

    /// Replays a dead letter or a run held for review: queued again with the same input and a
    /// fresh attempt budget. Refused if the agent's input type changed since the run was
    /// created, unless `force`.
    pub async fn replay(
        &self,
        run: RunId,
        by: Actor,
        force: bool,
    ) -> Result<RunRecord, RuntimeError> {
        let allowed = [RunState::FailedPermanent, RunState::NeedsReview];
        let record = self.get_in(run, "replay", &allowed).await?;
        // The schema check needs the agent's current type: only a process that registers the
        // agent has it. Elsewhere (the CLI) the run is replayed unchecked, and the worker that
        // claims it refuses an input its type no longer takes.
        let mut reason = if force { "replayed (forced)" } else { "replayed" }.to_owned();
        match self.shared.agents.get(&record.agent) {
            Some(agent) => {
                let current = agent.agent.input_schema();
                if let Some(stored) =
                    record.input_schema.as_ref().filter(|s| **s != current && !force)
                {
                    return Err(RuntimeError::SchemaChanged {
                        run,
                        agent: record.agent.clone(),
                        stored: stored.clone(),
                        current,
                    });
                }
            }
            None => reason.push_str(" (input schema not checked: agent not registered here)"),
        }
        self.operate(
            Transition::new(run, record.state, RunState::Queued)
                .by(by)
                .reset_attempts()
                .reason(reason),
        )
        .await
    }

    /// Cancels a run that is not being processed: it goes to the dead letter queue.
    pub async fn cancel(&self, run: RunId, by: Actor) -> Result<RunRecord, RuntimeError> {
        let allowed = [
            RunState::Queued,
            RunState::WaitingExternal,
            RunState::FailedTransient,
            RunState::NeedsReview,
        ];
        let record = self.get_in(run, "cancel", &allowed).await?;
        self.operate(
            Transition::new(run, record.state, RunState::FailedPermanent)
                .by(by)
                .reason("cancelled"),
        )
        .await
    }

    /// Adds an operator's note to a run.
    pub async fn note(&self, run: RunId, by: Actor, text: &str) -> Result<Note, RuntimeError> {
        Ok(self.shared.store.add_note(run, by, text).await?)
    }
}

fn reason_with(what: &str, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{what}: {note}"),
        None => what.to_owned(),
    }
}

fn refused(record: &RunRecord, action: &'static str, allowed: &[RunState]) -> RuntimeError {
    let names: Vec<String> = allowed.iter().map(|s| format!("`{s}`")).collect();
    let allowed = match names.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => "nowhere".into(),
    };
    RuntimeError::Refused { run: record.id, state: record.state, action, allowed }
}
