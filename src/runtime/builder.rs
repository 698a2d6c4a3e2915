//! [`RuntimeBuilder`]: the store, the workers, the agents and their options, the hooks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, BreakerPolicy};
use super::limit::{RateLimit, TokenBucket};
use super::{Hook, Registered, Runtime, RuntimeError, Shared};
use crate::agent::erased::{ErasedAgent, Typed};
use crate::agent::{Agent, Data};
use crate::store::{Retention, RunRecord, Store};

/// Per-agent options.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AgentOptions {
    /// At most this many runs of the agent in flight at once in this runtime (default: no limit
    /// beyond the runtime's workers).
    pub concurrency: Option<usize>,
    /// The agent's circuit breaker (default: opens after 5 consecutive transient, resource or
    /// unknown failures, for 30 s); `None` for none.
    pub breaker: Option<BreakerPolicy>,
    /// At most this many runs started per second (default: no limit).
    pub rate: Option<RateLimit>,
    /// Whether the agent's runs are made only by the program itself, never submitted from
    /// outside through the API or the dashboard (default: `false`; a pipeline's stages and
    /// notifiers are always internal). See [`Runtime::check_submittable`].
    pub internal: bool,
}

impl AgentOptions {
    /// The default breaker, no other limits beyond the runtime's.
    pub fn new() -> Self {
        AgentOptions {
            concurrency: None,
            breaker: Some(BreakerPolicy::default()),
            rate: None,
            internal: false,
        }
    }

    /// A circuit breaker with this policy.
    #[must_use]
    pub fn breaker(mut self, policy: BreakerPolicy) -> Self {
        self.breaker = Some(policy);
        self
    }

    /// No circuit breaker.
    #[must_use]
    pub fn no_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// At most `per_second` runs started per second on average, `burst` at once.
    #[must_use]
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Some(RateLimit::new(per_second, burst));
        self
    }

    /// At most `n` runs at once.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Runs of the agent are made by the program only: the API and the dashboard refuse to
    /// submit one (403). For agents whose input must come from the program itself: one that
    /// mails a fixed list of people, one that acts on another agent's checked output.
    #[must_use]
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// An agent as registered: its name, the agent, its options, and for a pipeline's own agent
/// the pipeline (which the runtime asks whether a stage is ready).
type Registration =
    (String, Arc<dyn ErasedAgent>, AgentOptions, Option<Arc<crate::pipeline::PipelineAgent>>);

/// Builds a [`Runtime`].
#[must_use]
pub struct RuntimeBuilder {
    store: Option<Arc<dyn Store>>,
    workers: usize,
    lease: Duration,
    worker_id: Option<String>,
    /// (registered name, agent, options, whether it is a pipeline's own agent)
    agents: Vec<Registration>,
    on_review: Vec<Hook>,
    on_dead_letter: Vec<Hook>,
    on_success: Vec<Hook>,
    grace: Duration,
    retention: Option<(Retention, Duration)>,
    observers: Vec<Arc<dyn super::Observer>>,
    notify: Vec<(String, crate::notify::Subscription)>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("workers", &self.workers)
            .field("lease", &self.lease)
            .field(
                "agents",
                &self.agents.iter().map(|(name, ..)| name.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            store: None,
            workers: 4,
            lease: Duration::from_secs(30),
            worker_id: None,
            agents: Vec::new(),
            on_review: Vec::new(),
            on_dead_letter: Vec::new(),
            on_success: Vec::new(),
            grace: Duration::from_secs(30),
            retention: None,
            observers: Vec::new(),
            notify: Vec::new(),
        }
    }
}

impl RuntimeBuilder {
    /// The store runs live in (required).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared with other code.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// How many attempts run at once (default 4).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// How long a claim's lease lasts between heartbeats (default 30 s): a run whose worker
    /// died is retried by another after at most this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// This runtime's worker id in histories (default `<host>-<pid>`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// How long a graceful shutdown lets attempts in flight finish (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Registers an agent under its name, with the default options ([`AgentOptions::new`]):
    /// **a circuit breaker that opens after 5 transient, resource or unknown failures in a
    /// row and defers the agent's runs for 30 s** (stored as a deferral in their history, so
    /// a restarted worker waits it out too; no attempt is charged), then lets one probe
    /// through. Its opening and closing are logged at WARN. For an agent that fails often by
    /// design, or in tests, use [`register_with`](Self::register_with) and
    /// `AgentOptions::new().no_breaker()` or a [`BreakerPolicy`] of your own.
    pub fn register<A: Agent>(self, agent: A) -> Self {
        self.register_with(agent, AgentOptions::new())
    }

    /// Registers an agent with options.
    pub fn register_with<A: Agent>(mut self, agent: A, options: AgentOptions) -> Self {
        self.agents.push((agent.name().to_owned(), Arc::new(Typed(agent)), options, None));
        self
    }

    /// Registers a pipeline under its name, and each of its stages as an agent named
    /// `<pipeline>.<index>.<agent>` (a fan-out stage with its concurrency as its limit), each
    /// with the default circuit breaker of [`register`](Self::register).
    pub fn pipeline<I, O>(mut self, pipeline: crate::pipeline::Pipeline<I, O>) -> Self
    where
        I: Data,
        O: Data,
    {
        let (parent, stages) = pipeline.into_parts();
        // Waiting on stages is not a failure of the pipeline's own service: no breaker.
        self.agents.push((
            parent.name().to_owned(),
            parent.clone(),
            AgentOptions::new().no_breaker(),
            Some(parent),
        ));
        for stage in stages {
            // A stage's input is the previous stage's checked output: never taken from outside.
            let mut options = AgentOptions::new().internal();
            if let Some((concurrency, _)) = stage.fan_out {
                options = options.concurrency(concurrency);
            }
            self.agents.push((stage.registered, stage.agent, options, None));
        }
        self
    }

    /// Prunes the store by `policy` (see [`Retention`]) when the runtime starts working until
    /// shut down ([`run_until_signal`](Runtime::run_until_signal),
    /// [`run_until_shutdown`](Runtime::run_until_shutdown)) and then every `every` (at least
    /// one second). Not while working [until idle](Runtime::run_until_idle). A failed prune is
    /// logged and tried again at the next period. `build` refuses a policy that
    /// [`Retention::check`] refuses.
    pub fn retention(mut self, policy: Retention, every: Duration) -> Self {
        self.retention = Some((policy, every.max(Duration::from_secs(1))));
        self
    }

    /// Tells `observer` what happens: attempts and their outcomes, commit latencies (metrics
    /// and notifications are observers; `steadfast::ops::Metrics` is one).
    pub fn observe(mut self, observer: Arc<dyn super::Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Subscribes the registered agent `notifier`, whose input is
    /// [`Notification`](crate::notify::Notification), to the events `subscription` takes:
    /// every move that holds a run for review or dead-letters it then creates a run of
    /// `notifier` in the same write (see [`crate::notify`]), and
    /// [`Runtime::notify_alarm`] one per alarm. `build` refuses a notifier that is not
    /// registered or does not take a `Notification`.
    ///
    /// ```no_run
    /// # use steadfast::runtime::Runtime;
    /// # use steadfast::notify::{Event, Subscription};
    /// # fn f(notifier: impl steadfast::Agent<Input = steadfast::notify::Notification>) {
    /// let builder = Runtime::builder()
    ///     .register(notifier) // named "webhook", say
    ///     .notify("webhook", Subscription::all().events([Event::DeadLetter, Event::Alarm]));
    /// # }
    /// ```
    pub fn notify(
        mut self,
        notifier: impl Into<String>,
        subscription: crate::notify::Subscription,
    ) -> Self {
        self.notify.push((notifier.into(), subscription));
        self
    }

    /// Calls `hook` whenever a run enters `needs_review`.
    pub fn on_review(mut self, hook: impl Fn(&RunRecord) + Send + Sync + 'static) -> Self {
        self.on_review.push(Arc::new(hook));
        self
    }

    /// Calls `hook` whenever a run enters the dead letter queue (`failed_permanent`).
    pub fn on_dead_letter(mut self, hook: impl Fn(&RunRecord) + Send + Sync + 'static) -> Self {
        self.on_dead_letter.push(Arc::new(hook));
        self
    }

    /// Calls `hook` whenever a run succeeds.
    pub fn on_success(mut self, hook: impl Fn(&RunRecord) + Send + Sync + 'static) -> Self {
        self.on_success.push(Arc::new(hook));
        self
    }

    /// The runtime; fails without a store or with two agents of one name.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let store = self.store.ok_or(RuntimeError::NoStore)?;
        if let Some((policy, _)) = &self.retention {
            policy.check().map_err(RuntimeError::InvalidRequest)?;
        }
        let mut agents = HashMap::new();
        for (name, agent, options, pipeline) in self.agents {
            let registered = Registered {
                agent,
                permits: options.concurrency.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
                breaker: options.breaker.map(|policy| Breaker::new(name.clone(), policy)),
                bucket: options.rate.map(TokenBucket::new),
                pipeline,
                options: options.clone(),
            };
            if agents.insert(name.clone(), registered).is_some() {
                return Err(RuntimeError::DuplicateAgent(name));
            }
        }
        let worker_id = self.worker_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let host = host.trim();
            format!("{}-{}", if host.is_empty() { "local" } else { host }, std::process::id())
        });
        let mut shared = Shared::new(
            store,
            agents,
            self.workers,
            self.lease,
            worker_id,
            self.on_review,
            self.on_dead_letter,
            self.on_success,
            self.grace,
        );
        shared.notices = super::notices::Notices::new(self.notify, &shared.agents)?;
        shared.retention = self.retention;
        shared.observers = self.observers;
        Ok(Runtime { shared: Arc::new(shared) })
    }
}
