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

/// A move of `run` from state `$from` to state `$to` (variants of `RunState`), checked against
/// the lifecycle table at compile time: a move the table forbids does not compile. Every move
/// the runtime makes with a fixed pair is built with it; the operator's replay and cancel,
/// whose `from` is the run's current state, are checked by the store against the same table.
macro_rules! checked_move {
    ($run:expr, $from:ident => $to:ident) => {{
        const _: () = assert!(
            $crate::lifecycle::RunState::$from.can_transition($crate::lifecycle::RunState::$to),
            concat!("the lifecycle forbids ", stringify!($from), " -> ", stringify!($to))
        );
        $crate::store::Transition::new(
            $run,
            $crate::lifecycle::RunState::$from,
            $crate::lifecycle::RunState::$to,
        )
    }};
}

mod alarm;
mod attempt;
mod breaker;
mod builder;
mod commit;
mod control;
mod crashes;
mod dead_letters;
mod dispatch;
mod error;
mod limit;
mod notices;
mod observe;
mod operate;
mod operator;
mod retention;
mod route;
mod wakeups;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

pub use self::alarm::{Alarm, AlarmWatch, Raised, notify_alarms};
pub use self::breaker::{BreakerPolicy, BreakerState};
pub use self::builder::{AgentOptions, RuntimeBuilder};
pub use self::dead_letters::Replayed;
pub use self::error::RuntimeError;
pub use self::limit::RateLimit;
pub use self::observe::{AttemptEvent, MoveEvent, Observer};
pub use self::operate::{MAX_PAGE, Operate, OperateError};
use crate::agent::erased::ErasedAgent;
use crate::fault::RetryPolicy;
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
    /// The options it was registered with.
    pub(crate) options: AgentOptions,
}

impl Registered {
    /// How the runtime schedules its runs (see [`Kind`](crate::agent::erased::Kind)).
    pub(crate) fn kind(&self) -> crate::agent::erased::Kind {
        self.agent.kind()
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
    /// Told what happens (see [`Observer`]).
    pub(crate) observers: Vec<Arc<dyn Observer>>,
    /// Agents paused or resumed at a rate by an operator.
    pub(crate) controls: control::Controls,
    /// How many dispatchers are working: while one is, a submission may start its run at
    /// once (see [`Runtime::submit`]).
    pub(crate) dispatching: AtomicUsize,
    /// The retention policy applied on a schedule while working until shut down.
    pub(crate) retention: Option<(crate::store::Retention, Duration)>,
    /// The subscribed notifiers (see [`crate::notify`]).
    pub(crate) notices: notices::Notices,
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
            retention: None,
            dispatching: AtomicUsize::new(0),
            controls: control::Controls::default(),
            observers: Vec::new(),
            notices: notices::Notices::default(),
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

    /// The registered pipelines' names, sorted.
    pub fn pipelines(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .shared
            .agents
            .iter()
            .filter(|(_, r)| r.pipeline.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The stages of the registered pipeline `name` as a graph (`None` if no pipeline has
    /// that name).
    pub fn pipeline_graph(&self, name: &str) -> Option<crate::pipeline::PipelineGraph> {
        Some(self.shared.agents.get(name)?.pipeline.as_ref()?.graph())
    }

    /// The options `agent` was registered with (`None` if it is not registered).
    pub fn agent_options(&self, agent: &str) -> Option<&AgentOptions> {
        Some(&self.shared.agents.get(agent)?.options)
    }

    /// `agent`'s retry policy (`None` if it is not registered).
    pub fn retry_policy(&self, agent: &str) -> Option<RetryPolicy> {
        Some(self.shared.agents.get(agent)?.agent.retry_policy())
    }

    /// Whether the workers run: a dispatcher is working ([`run_until_idle`](Runtime::run_until_idle),
    /// [`run_until_shutdown`](Runtime::run_until_shutdown) or
    /// [`run_until_signal`](Runtime::run_until_signal) has not returned).
    pub fn is_working(&self) -> bool {
        self.shared.dispatching.load(Ordering::SeqCst) > 0
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

    /// Whether `agent` may be submitted from outside the program (the API, the dashboard): a
    /// registered agent or pipeline, but not a pipeline's stage (its input is the previous
    /// stage's checked output), not a notifier (a forged notification would go out signed),
    /// and not an agent registered [`internal`](AgentOptions::internal). [`submit`](Runtime::submit)
    /// itself takes every registered agent: the program decides what it submits.
    pub fn check_submittable(&self, agent: &str) -> Result<(), RuntimeError> {
        let registered = self.agent(agent)?;
        let why = if self.shared.notices.is_notifier(agent) {
            "it is a notifier (its runs are notifications the runtime makes)"
        } else if registered.options.internal && self.is_stage(agent) {
            "it is a pipeline's stage (its input is the previous stage's output); submit the pipeline"
        } else if registered.options.internal {
            "it is registered as internal"
        } else {
            return Ok(());
        };
        Err(RuntimeError::NotSubmittable { agent: agent.to_owned(), why })
    }

    /// Whether `agent` is the name of a registered pipeline's stage.
    fn is_stage(&self, agent: &str) -> bool {
        self.shared.agents.values().filter_map(|r| r.pipeline.as_ref()).any(|p| p.has_stage(agent))
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
        // While the workers run and the agent's limits let one more through, the run is
        // created already claimed by this runtime, in the same durable commit (one sync
        // instead of two before the agent may start), and its attempt starts here.
        let shared = &self.shared;
        let mut admission = (shared.dispatching.load(Ordering::SeqCst) > 0
            && !shared.stopping.load(Ordering::SeqCst))
        .then(|| dispatch::admit(shared, agent, registered, 1))
        .filter(|a| a.runs > 0);
        if admission.is_some() {
            new.claim_for = Some((shared.worker_id.clone(), shared.lease));
            new.durable_claim = true;
        }
        let created = match shared.store.create(new).await {
            Ok(created) => created,
            Err(error) => {
                if let Some(admission) = &mut admission {
                    admission.settle(shared, agent, registered, 0);
                }
                return Err(error.into());
            }
        };
        let claimed = created.created
            && created.run.state == RunState::Processing
            && created.run.lease.as_ref().is_some_and(|l| l.owner == shared.worker_id);
        match admission {
            Some(mut admission) if claimed => {
                admission.settle(shared, agent, registered, 1);
                let own = admission.permits.pop();
                dispatch::start(shared, registered, created.run.clone(), own);
            }
            admission => {
                if let Some(mut admission) = admission {
                    admission.settle(shared, agent, registered, 0);
                }
                if created.created {
                    shared.wake.notify_one();
                }
            }
        }
        Ok(Submitted { id: created.run.id, created: created.created })
    }

    /// Works until nothing is left that can progress without outside input: no run of a
    /// registered agent queued, processing or waiting out a backoff. Runs waiting for a
    /// signal or a human, succeeded or dead-lettered, are left as they are. Backoff delays
    /// are real time (use tokio's paused clock in tests).
    pub async fn run_until_idle(&self) -> Result<(), RuntimeError> {
        dispatch::dispatch(self.shared.clone(), dispatch::Until::Idle).await
    }

    /// Works until [`shutdown`](Runtime::shutdown) is called (from another task), for programs
    /// that manage their own lifetime; [`run_until_signal`](Runtime::run_until_signal) adds the signal handling.
    pub async fn run_until_shutdown(&self) -> Result<(), RuntimeError> {
        dispatch::dispatch(self.shared.clone(), dispatch::Until::Stopped).await
    }

    /// Works until SIGINT or SIGTERM, then shuts down gracefully (see
    /// [`run_until_signal`](Runtime::run_until_signal)).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `run_until_signal`: `steadfast serve` is the HTTP server"
    )]
    #[cfg(feature = "signal")]
    pub async fn serve(&self) -> Result<(), RuntimeError> {
        self.run_until_signal().await
    }

    /// Works until SIGINT or SIGTERM, then shuts down gracefully: stops claiming, lets
    /// attempts in flight finish within the grace period, and releases the rest (back to the
    /// queue without charging an attempt). Feature `signal` (on by default).
    #[cfg(feature = "signal")]
    pub async fn run_until_signal(&self) -> Result<(), RuntimeError> {
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
            result = dispatch::dispatch(shared.clone(), dispatch::Until::Stopped) => result?,
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
        // And a permit, for a dispatcher between two waits (mid-round) when it was told.
        shared.wake.notify_one();
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
            let release = checked_move!(run, Processing => FailedTransient)
                .fenced(token)
                .refund_attempt()
                .by(Actor::Worker(shared.worker_id.clone()))
                .reason("released at shutdown");
            let agent = shared.store.get(run).await?.map(|r| r.agent).unwrap_or_default();
            match shared.commit(&agent, release, false).await? {
                Ok(_) => tracing::info!(run_id = %run, "released at shutdown"),
                Err(conflict) => {
                    tracing::warn!(run_id = %run, %conflict, "could not release at shutdown")
                }
            }
        }
        Ok(())
    }
}
