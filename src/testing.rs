//! Testing agents in-process, with no server and no real sleeps (feature `testing`).
//!
//! [`Harness`] is a runtime on a [`MemoryStore`] whose clock follows tokio's, so under
//! `#[tokio::test(start_paused = true)]` backoff, cooldowns, wait timeouts and leases pass in
//! no real time; [`inject`] makes an agent fail by fault class a given number of times; and
//! [`Report`] asserts on a run's final state, attempts and path through the lifecycle, with
//! the whole history in the panic message when an assertion fails.
//!
//! ```
//! use async_trait::async_trait;
//! use steadfast::prelude::*;
//! use steadfast::testing::{Harness, inject};
//!
//! struct Fetch;
//!
//! #[async_trait]
//! impl Agent for Fetch {
//!     type Input = String;
//!     type Output = usize;
//!     fn name(&self) -> &str { "fetch" }
//!     async fn run(&self, _ctx: &mut Context, url: String) -> Result<Outcome<usize>, AgentError> {
//!         Ok(Outcome::Done(url.len()))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! // Two transient faults, then the real agent: three attempts, and the run succeeds.
//! let harness = Harness::new(|rt| rt.register(inject(Fetch, Fault::Transient, 2)));
//! let report = harness.run("fetch", "https://example.com/feed").await;
//! report.assert_state(RunState::Succeeded).assert_attempts(3);
//! assert_eq!(report.output::<usize>(), 24);
//! use RunState::*;
//! report.assert_path(&[Queued, Processing, FailedTransient, Queued, Processing, FailedTransient,
//!                      Queued, Processing, Succeeded]);
//! # });
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::{Agent, Context, IdempotencyKey, Outcome};
use crate::clock::TokioClock;
use crate::fault::{AgentError, Fault, RetryPolicy};
use crate::lifecycle::{RunId, RunState};
use crate::runtime::{Runtime, RuntimeBuilder};
use crate::store::{EffectRecord, HistoryEntry, MemoryStore, RunRecord};

/// A runtime on a fresh [`MemoryStore`] on tokio's clock.
#[derive(Debug, Clone)]
pub struct Harness {
    runtime: Runtime,
}

impl Harness {
    /// A harness whose runtime `configure` sets up (register agents, set workers, hooks); the
    /// store is already set.
    pub fn new(configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder) -> Self {
        let store = MemoryStore::with_clock(Arc::new(TokioClock::new()));
        let runtime =
            configure(Runtime::builder().store(store)).build().expect("the harness runtime builds");
        Harness { runtime }
    }

    /// The runtime, for operator calls (`signal`, `approve`, ...).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Submits a run, works until idle, and reports on it.
    pub async fn run<I: Serialize>(&self, agent: &str, input: I) -> Report {
        let id = self.runtime.submit(agent, input).await.expect("the input is accepted").id;
        self.settle(id).await
    }

    /// Works until idle and reports on `run` (after a signal or an approval, say).
    pub async fn settle(&self, run: RunId) -> Report {
        self.runtime.run_until_idle().await.expect("the runtime works until idle");
        self.report(run).await
    }

    /// The report on `run` as it is now.
    pub async fn report(&self, run: RunId) -> Report {
        let store = self.runtime.store();
        Report {
            run: store.get(run).await.expect("the store answers").expect("the run exists"),
            history: store.history(run).await.expect("the store answers"),
            effects: store.effects(run).await.expect("the store answers"),
        }
    }
}

/// A run's record, history and effects, with assertions that explain themselves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The run as stored.
    pub run: RunRecord,
    /// Every move, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The journaled effects.
    pub effects: Vec<EffectRecord>,
}

impl Report {
    /// The states the run went through, from `queued` to where it is.
    pub fn path(&self) -> Vec<RunState> {
        self.history.iter().map(|h| h.to).collect()
    }

    /// The history as readable lines, for failure messages.
    pub fn timeline(&self) -> String {
        let mut out = String::new();
        for h in &self.history {
            let from = h.from.map_or("-".to_owned(), |s| s.to_string());
            let _ = write!(
                out,
                "\n  #{} {from} -> {} (attempt {}, {}): {}",
                h.seq, h.to, h.attempt, h.actor, h.reason
            );
        }
        out
    }

    /// Panics unless the run is in `state`.
    #[track_caller]
    pub fn assert_state(&self, state: RunState) -> &Self {
        assert_eq!(
            self.run.state,
            state,
            "run {} is `{}`, expected `{state}`; history:{}",
            self.run.id,
            self.run.state,
            self.timeline()
        );
        self
    }

    /// Panics unless the run made exactly `attempts` attempts.
    #[track_caller]
    pub fn assert_attempts(&self, attempts: u32) -> &Self {
        assert_eq!(
            self.run.attempt,
            attempts,
            "run {} made {} attempts, expected {attempts}; history:{}",
            self.run.id,
            self.run.attempt,
            self.timeline()
        );
        self
    }

    /// Panics unless the run went exactly through `path`.
    #[track_caller]
    pub fn assert_path(&self, path: &[RunState]) -> &Self {
        assert_eq!(
            self.path(),
            path,
            "run {} took another path; history:{}",
            self.run.id,
            self.timeline()
        );
        self
    }

    /// The output, typed; panics if there is none or it does not fit `T`.
    #[track_caller]
    pub fn output<T: DeserializeOwned>(&self) -> T {
        let output = self.run.output.clone().unwrap_or_else(|| {
            panic!("run {} has no output; history:{}", self.run.id, self.timeline())
        });
        serde_json::from_value(output).expect("the output fits the requested type")
    }
}

/// Wraps `agent` so that its first `times` attempts fail with `fault` before it runs.
pub fn inject<A: Agent>(agent: A, fault: Fault, times: u32) -> Injected<A> {
    Injected { agent, fault, remaining: AtomicU32::new(times) }
}

/// An agent whose first attempts fail by design; see [`inject`].
#[derive(Debug)]
pub struct Injected<A> {
    agent: A,
    fault: Fault,
    remaining: AtomicU32,
}

#[async_trait]
impl<A: Agent> Agent for Injected<A> {
    type Input = A::Input;
    type Output = A::Output;

    fn name(&self) -> &str {
        self.agent.name()
    }

    async fn run(
        &self,
        ctx: &mut Context,
        input: A::Input,
    ) -> Result<Outcome<A::Output>, AgentError> {
        let left =
            self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            return Err(AgentError::new(self.fault, format!("injected {} fault", self.fault)));
        }
        self.agent.run(ctx, input).await
    }

    fn idempotency_key(&self, input: &A::Input) -> IdempotencyKey {
        self.agent.idempotency_key(input)
    }

    fn review_invalid_output(&self) -> bool {
        self.agent.review_invalid_output()
    }

    fn concurrency_key(&self, input: &A::Input) -> Option<String> {
        self.agent.concurrency_key(input)
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.agent.retry_policy()
    }

    async fn cleanup(&self, ctx: &Context, error: &AgentError) {
        self.agent.cleanup(ctx, error).await;
    }

    async fn compensate(
        &self,
        ctx: &Context,
        input: &A::Input,
        output: &A::Output,
    ) -> Result<(), AgentError> {
        self.agent.compensate(ctx, input, output).await
    }
}
