//! The silent-failure alarm, computed by the engine: an agent with due work older than its
//! window and no success within it is raised (a queue that silently stopped moving). The
//! [`AlarmWatch`] observes the runtime (when each agent last succeeded) and checks the store;
//! `steadfast::ops` only renders what it finds (`/alarms`, the `steadfast_alarm` metric), and a
//! program without the server uses it as it is:
//!
//! ```no_run
//! # async fn demo(builder: steadfast::runtime::RuntimeBuilder) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use steadfast::runtime::{Alarm, AlarmWatch};
//!
//! let watch = AlarmWatch::new(Alarm::window(Duration::from_secs(600)));
//! let runtime = builder.observe(watch.clone()).build()?;
//! for raised in watch.check(&runtime).await? {
//!     eprintln!("{}: {}", raised.agent, raised.reason);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{MoveEvent, Observer, Runtime};
use crate::clock::Timestamp;
use crate::lifecycle::RunState;
use crate::store::{ListQuery, StoreError};

/// The silent-failure alarm: an agent with due work older than its window and no success
/// within it (default window 15 minutes).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Alarm {
    /// The window of every agent without one of its own.
    pub window: Duration,
    /// Windows per agent.
    pub per_agent: HashMap<String, Duration>,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { window: Duration::from_secs(15 * 60), per_agent: HashMap::new() }
    }
}

impl Alarm {
    /// Every agent's window is `window` unless set with [`Alarm::agent`].
    pub fn window(window: Duration) -> Self {
        Alarm { window, per_agent: HashMap::new() }
    }

    /// `agent`'s own window.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>, window: Duration) -> Self {
        self.per_agent.insert(agent.into(), window);
        self
    }

    fn window_of(&self, agent: &str) -> Duration {
        self.per_agent.get(agent).copied().unwrap_or(self.window)
    }
}

/// An agent the alarm is raised for, and why.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Raised {
    /// The agent.
    pub agent: String,
    /// In words: how old its oldest due run is, and when it last succeeded.
    pub reason: String,
    /// When the oldest work it is about was created: the same for as long as that work
    /// waits, so it names this alarm (its notifications are keyed by it).
    pub since: Timestamp,
}

/// The alarm's memory and its check (see the module docs): give it to the runtime with
/// `RuntimeBuilder::observe`, so that it sees every success.
#[derive(Debug)]
pub struct AlarmWatch {
    alarm: Alarm,
    /// When it was first checked (by the store's clock): the baseline for an agent with no
    /// success seen yet.
    started: Mutex<Option<Timestamp>>,
    last_success: Mutex<HashMap<String, Timestamp>>,
    raised: Mutex<HashMap<String, bool>>,
}

impl AlarmWatch {
    /// A watch with these settings.
    pub fn new(alarm: Alarm) -> Arc<AlarmWatch> {
        Arc::new(AlarmWatch {
            alarm,
            started: Mutex::new(None),
            last_success: Mutex::new(HashMap::new()),
            raised: Mutex::new(HashMap::new()),
        })
    }

    /// Its settings.
    pub fn alarm(&self) -> &Alarm {
        &self.alarm
    }

    /// When each agent last succeeded, as this process saw it.
    pub fn last_successes(&self) -> Vec<(String, Timestamp)> {
        let last = self.last_success.lock().unwrap_or_else(|p| p.into_inner());
        last.iter().map(|(agent, at)| (agent.clone(), *at)).collect()
    }

    /// The agents the alarm is raised for now. Logs at WARN when it is raised for an agent,
    /// and at INFO when it is cleared.
    pub async fn check(&self, runtime: &Runtime) -> Result<Vec<Raised>, StoreError> {
        let store = runtime.store();
        let now = store.now();
        let started = *self.started.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(now);
        let mut raised = Vec::new();
        for agent in runtime.agents() {
            // A paused agent waits for an operator, who knows.
            if runtime.agent_control(agent).is_some_and(|c| c.paused) {
                continue;
            }
            let window = self.alarm.window_of(agent);
            let Some(since) = oldest_due_work(runtime, agent, now).await? else { continue };
            let waiting = now.since(since);
            if waiting <= window {
                continue;
            }
            let last =
                self.last_success.lock().unwrap_or_else(|p| p.into_inner()).get(agent).copied();
            if now.since(last.unwrap_or(started)) <= window {
                continue;
            }
            let succeeded = match last {
                Some(at) => format!("its last success was {} s ago", now.since(at).as_secs()),
                None => format!(
                    "no success seen since these metrics started {} s ago",
                    now.since(started).as_secs()
                ),
            };
            raised.push(Raised {
                agent: agent.to_owned(),
                since,
                reason: format!(
                    "`{agent}` has had due work waiting for {} s (window {} s) and {succeeded}",
                    waiting.as_secs(),
                    window.as_secs()
                ),
            });
        }
        let mut was = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        for agent in runtime.agents() {
            let now_raised = raised.iter().find(|r| r.agent == agent);
            let before = was.insert(agent.to_owned(), now_raised.is_some()).unwrap_or(false);
            match (before, now_raised) {
                (false, Some(r)) => {
                    tracing::warn!(agent, reason = %r.reason, "silent-failure alarm raised")
                }
                (true, None) => tracing::info!(agent, "silent-failure alarm cleared"),
                _ => {}
            }
        }
        Ok(raised)
    }
}

impl Observer for AlarmWatch {
    fn moved(&self, event: &MoveEvent<'_>) {
        if event.to == RunState::Succeeded {
            let mut last = self.last_success.lock().unwrap_or_else(|p| p.into_inner());
            last.insert(event.agent.to_owned(), event.at);
        }
    }
}

/// When `agent`'s oldest due work was created: a run queued and due, retrying, or in an
/// attempt (a run that keeps failing and retrying is the failure this alarm is for).
async fn oldest_due_work(
    runtime: &Runtime,
    agent: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let mut oldest: Option<Timestamp> = None;
    for state in [RunState::Queued, RunState::FailedTransient, RunState::Processing] {
        let query = ListQuery::new().state(state).agent(agent).oldest_first().limit(1);
        let page = runtime.store().list(query).await?;
        if let Some(run) = page.runs.first()
            && (state != RunState::Queued || run.due_at.is_none_or(|due| due <= now))
        {
            oldest = Some(oldest.map_or(run.created_at, |o| o.min(run.created_at)));
        }
    }
    Ok(oldest)
}

/// Sends the notifications of the silent-failure alarm (see
/// [`Runtime::notify_alarm`](super::Runtime::notify_alarm)): looks every `period` and submits, for each alarm raised, the
/// runs of the notifiers subscribed to alarms, keyed by the alarm's agent and
/// [`Raised::since`], so that an alarm is notified once however often it is seen, here or by
/// another process, before or after a restart. Runs until the runtime stops working after
/// having started; `steadfast serve` spawns it when a notifier is subscribed.
pub async fn notify_alarms(runtime: Arc<Runtime>, watch: Arc<AlarmWatch>, period: Duration) {
    let mut started = false;
    loop {
        tokio::time::sleep(period).await;
        let working = runtime.is_working();
        if started && !working {
            return;
        }
        started |= working;
        let raised = match watch.check(&runtime).await {
            Ok(raised) => raised,
            Err(error) => {
                tracing::warn!(%error, "could not read the alarms to notify them");
                continue;
            }
        };
        for alarm in raised {
            match runtime.notify_alarm(&alarm.agent, &alarm.reason, alarm.since).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(agent = %alarm.agent, notifiers = n, "alarm notified"),
                Err(error) => {
                    tracing::warn!(agent = %alarm.agent, %error, "could not notify an alarm")
                }
            }
        }
    }
}
