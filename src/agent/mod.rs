//! Agents: units of automated work with a typed input and output, and the [`Context`] an
//! attempt runs in.
//!
//! An agent fails by returning an [`AgentError`], whose [`Fault`] decides what
//! happens to the run; a panic inside an agent is caught and treated as an unknown fault.

pub(crate) mod erased;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::fault::{AgentError, Fault, RetryPolicy};
use crate::lifecycle::RunId;
use crate::store::{RunRecord, Store, StoreError};

/// What agents take and produce: values with a JSON form and a JSON Schema (for the schema
/// gate), that can cross threads. Every such type is `Data`; there is nothing to implement.
pub trait Data: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static> Data for T {}

/// A unit of automated work: fetch a feed, classify a text, send a mail.
///
/// ```
/// use async_trait::async_trait;
/// use steadfast::prelude::*;
///
/// struct Greeter;
///
/// #[async_trait]
/// impl Agent for Greeter {
///     type Input = String;
///     type Output = String;
///
///     fn name(&self) -> &str {
///         "greeter"
///     }
///
///     async fn run(&self, ctx: &mut Context, name: String) -> Result<Outcome<String>, AgentError> {
///         // Journaled: on a retry, the recorded greeting comes back without running again.
///         let greeting = ctx.effect("greet", |_key| async move { Ok(format!("hello, {name}")) }).await?;
///         Ok(Outcome::Done(greeting))
///     }
/// }
/// ```
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// What a run of this agent takes (validated against its JSON Schema at submission).
    type Input: Data;
    /// What a run produces (validated before it is stored or handed on).
    type Output: Data;

    /// The agent's name: runs are registered, claimed and shown under it.
    fn name(&self) -> &str;

    /// One attempt. It may run more than once for the same run (after a retry, a wait or a
    /// crash); side effects belong in [`Context::effect`], which runs each at most once per
    /// run once it has been recorded.
    async fn run(
        &self,
        ctx: &mut Context,
        input: Self::Input,
    ) -> Result<Outcome<Self::Output>, AgentError>;

    /// The key that deduplicates submissions: the same key never creates a second run. The
    /// default is the agent's name and a hash of the input's JSON.
    ///
    /// Used for runs submitted to the agent ([`Runtime::submit`](crate::Runtime::submit)).
    /// When the agent runs as a stage of a pipeline, its runs are keyed by their place
    /// instead (`<pipeline run>/<stage>` and, in a fan-out, `/<item>`), since the pipeline run
    /// already is the unit that is deduplicated; this method is not called then. The key
    /// effects pass to a receiver ([`Context::effect`]) derives from the run's key either way.
    fn idempotency_key(&self, input: &Self::Input) -> IdempotencyKey {
        IdempotencyKey::of(self.name(), input)
    }

    /// Runs whose inputs give the same key never process at the same time, across all
    /// workers (one mailbox, one account, one file). The default is none.
    fn concurrency_key(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// What happens when an output fails the schema gate: `false` (the default) makes it a
    /// permanent fault (dead letter); `true` holds the run for review, where an operator can
    /// resolve it with a corrected output.
    fn review_invalid_output(&self) -> bool {
        false
    }

    /// How failures are retried.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Called after a [`Fault::Resource`] failure, before the cooldown (L2): free what the
    /// attempt held (temporary files, connections).
    async fn cleanup(&self, _ctx: &Context, _error: &AgentError) {}

    /// Undoes a completed run's effects when a later pipeline stage fails with a logic fault
    /// (L3, saga compensation).
    async fn compensate(
        &self,
        _ctx: &Context,
        _input: &Self::Input,
        _output: &Self::Output,
    ) -> Result<(), AgentError> {
        Ok(())
    }
}

/// How an attempt ended, when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T> {
    /// Finished with this output.
    Done(T),
    /// Park the run until a signal arrives (or the wait times out); the next attempt starts
    /// from the top of `run`, with the signal's payload in [`Context::signal`].
    Wait(WaitFor),
    /// Hold the run for a human, with the reason shown to them.
    Review(String),
}

/// What a waiting run waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitFor {
    /// The signal's name (an operator or a system sends it with `Runtime::signal`).
    pub signal: String,
    /// How long to wait before the wait fails as a transient fault; `None` waits forever.
    pub timeout: Option<Duration>,
}

impl WaitFor {
    /// Waits for `signal`, forever.
    pub fn signal(signal: impl Into<String>) -> Self {
        WaitFor { signal: signal.into(), timeout: None }
    }

    /// Gives up after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The key that deduplicates submissions of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A key from any string the caller chooses (an order id, a date).
    pub fn new(key: impl Into<String>) -> Self {
        IdempotencyKey(key.into())
    }

    /// `agent:` followed by a hash of `input`'s JSON (serde_json writes struct fields in
    /// declaration order and maps sorted, so equal inputs give equal keys).
    pub fn of<T: Serialize + ?Sized>(agent: &str, input: &T) -> Self {
        let json = serde_json::to_vec(input).unwrap_or_default();
        let hash = crate::hash::fnv1a(&json);
        IdempotencyKey(format!("{agent}:{hash:016x}"))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one attempt of a run knows and can do.
pub struct Context {
    pub(crate) run: RunId,
    pub(crate) agent: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) key: String,
    pub(crate) signal: Option<Value>,
    pub(crate) review_note: Option<String>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) span: tracing::Span,
    /// The engine running this attempt (a pipeline run asks it to run a stage itself);
    /// `None` for work done on a stage's behalf (its compensation).
    pub(crate) engine: Option<Arc<dyn Engine>>,
}

/// What an attempt may ask of the engine that runs it: a pipeline run runs its sequential
/// stages itself, inside its own attempt. The runtime implements it, so that this module (and
/// every agent) knows nothing of the runtime.
#[async_trait]
pub(crate) trait Engine: Send + Sync {
    /// Whether this attempt may run a stage of `agent` itself, now; if so, the owner and lease
    /// to claim the stage's run with. A `Some` must be followed by
    /// [`run_stage`](Engine::run_stage) or given back with
    /// [`unadmit_stage`](Engine::unadmit_stage).
    fn admit_stage(&self, agent: &str) -> Option<(String, Duration)>;

    /// Gives back an admission that ran nothing.
    fn unadmit_stage(&self, agent: &str);

    /// Runs admitted stage `child` inside this attempt (`claimed`: its creation claimed it
    /// already); the stage's run after the move its attempt made, or `None` if someone else
    /// claimed it first.
    async fn run_stage(
        &self,
        child: &RunRecord,
        claimed: bool,
    ) -> Result<Option<RunRecord>, StoreError>;
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("run", &self.run)
            .field("agent", &self.agent)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for work done on behalf of `child` (a pipeline stage's compensation): its
    /// run, agent, attempt and key, this context's store.
    pub(crate) fn for_child(&self, child: &RunRecord) -> Context {
        Context {
            run: child.id,
            agent: child.agent.as_str().into(),
            attempt: child.attempt,
            key: child.idempotency_key.clone(),
            signal: None,
            review_note: None,
            store: self.store.clone(),
            span: self.span.clone(),
            engine: None,
        }
    }

    /// See [`Engine::admit_stage`]; `None` without an engine.
    pub(crate) fn admit_stage(&self, agent: &str) -> Option<(String, Duration)> {
        self.engine.as_ref()?.admit_stage(agent)
    }

    /// See [`Engine::unadmit_stage`].
    pub(crate) fn unadmit_stage(&self, agent: &str) {
        if let Some(engine) = &self.engine {
            engine.unadmit_stage(agent);
        }
    }

    /// See [`Engine::run_stage`]; `None` without an engine.
    pub(crate) async fn run_stage(
        &self,
        child: &RunRecord,
        claimed: bool,
    ) -> Result<Option<RunRecord>, StoreError> {
        match &self.engine {
            Some(engine) => engine.run_stage(child, claimed).await,
            None => Ok(None),
        }
    }

    /// The run this attempt belongs to.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// 1 for the first attempt, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The run's idempotency key.
    pub fn idempotency_key(&self) -> &str {
        &self.key
    }

    /// The payload of the signal that woke the run from its last wait, if any.
    pub fn signal(&self) -> Option<&Value> {
        self.signal.as_ref()
    }

    /// The note of the operator who approved the run out of review, for this attempt.
    pub fn review_note(&self) -> Option<&str> {
        self.review_note.as_deref()
    }

    /// The attempt's tracing span (fields `run_id`, `agent`, `attempt`, ...).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The key of effect `name`: the same for every attempt of this run. Hand it to the
    /// receiving system (an SMTP Message-ID, an HTTP `Idempotency-Key`) so that an effect cut
    /// off between doing and recording takes effect once there anyway.
    pub fn effect_key(&self, name: &str) -> String {
        format!("{}/{name}", self.run)
    }

    /// Adds a note to this run (shown by `steadfast runs show` and the dashboard), once: a
    /// later attempt that adds the same text does not add it again.
    pub async fn note(&mut self, text: &str) -> Result<(), AgentError> {
        let hash = crate::hash::fnv1a(text.as_bytes());
        let (store, run, text) = (self.store.clone(), self.run, text.to_owned());
        self.effect(&format!("note {hash:016x}"), |_| async move {
            store.add_note(run, crate::store::Actor::System, &text).await?;
            Ok(())
        })
        .await
    }

    /// Runs a side effect at most once per run, once recorded: if effect `name` of this run
    /// has a journaled result, it is returned without calling `f`; otherwise `f` runs with the
    /// effect's key and its result is journaled (durably) before it is returned. An error is
    /// not journaled: the next attempt calls `f` again.
    pub async fn effect<T, F, Fut>(&mut self, name: &str, f: F) -> Result<T, AgentError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, AgentError>>,
    {
        let journaled = self.store.effect(self.run, name).await.map_err(|e| {
            AgentError::from(e).context(format!("reading effect `{name}` of run {}", self.run))
        })?;
        if let Some(record) = journaled {
            tracing::debug!(parent: &self.span, effect = name, "effect already journaled; not run again");
            return serde_json::from_value(record.result).map_err(|e| {
                AgentError::from_source(Fault::Permanent, e)
                    .context(format!("effect `{name}` was journaled with another type"))
            });
        }
        let value = f(self.effect_key(name)).await?;
        let json = serde_json::to_value(&value).map_err(|e| {
            AgentError::from_source(Fault::Permanent, e)
                .context(format!("effect `{name}` result is not JSON"))
        })?;
        let recorded = self.store.record_effect(self.run, name, json).await.map_err(|e| {
            AgentError::from(e).context(format!("journaling effect `{name}` of run {}", self.run))
        })?;
        tracing::debug!(parent: &self.span, effect = name, "effect run and journaled");
        // If a concurrent attempt journaled first, its result is the one that counts.
        serde_json::from_value(recorded.result).map_err(|e| {
            AgentError::from_source(Fault::Permanent, e)
                .context(format!("effect `{name}` was journaled with another type"))
        })
    }
}
