//! Metrics in Prometheus text (`GET /metrics`), and the silent-failure alarm (`GET /alarms`).
//!
//! [`Metrics`] is an [`Observer`] of the runtime (attempts by agent, outcome and fault; every
//! move as `steadfast_transitions_total` by agent, from, to and who moved it (`worker`,
//! `operator`, `timer`, `system`); dead letters however they came; attempt, run and commit durations as histograms with explicit buckets) and, at each
//! scrape, reads what the store keeps in O(1) (runs by agent and state, the oldest due run of
//! each agent) and the runtime's state (breakers, pauses). It records into its own recorder,
//! never the process-wide one, so a program's own `metrics` setup is left alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Recorder, counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use serde::Serialize;

use crate::clock::Timestamp;
use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::runtime::{AttemptEvent, BreakerState, MoveEvent, Observer, Runtime};
use crate::store::{Actor, ListQuery, StoreError};

/// Histogram buckets for attempt and run durations, in seconds.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];
/// Histogram buckets for commit latency, in seconds.
const COMMIT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

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

/// The runtime's metrics and the alarm (see the module docs).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    alarm: Alarm,
    /// When these metrics were first read (by the store's clock): the alarm's baseline for an
    /// agent with no success seen yet.
    started: Mutex<Option<Timestamp>>,
    last_success: Mutex<HashMap<String, Timestamp>>,
    raised: Mutex<HashMap<String, bool>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("alarm", &self.alarm).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics with the alarm's settings; give it to the runtime with
    /// `RuntimeBuilder::observe` and to the router with `OpsConfig::metrics`.
    pub fn new(alarm: Alarm) -> Arc<Metrics> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("steadfast_commit_seconds".into()),
                    COMMIT_BUCKETS,
                )
            })
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder as &dyn Recorder, describe);
        Arc::new(Metrics {
            recorder,
            handle,
            alarm,
            started: Mutex::new(None),
            last_success: Mutex::new(HashMap::new()),
            raised: Mutex::new(HashMap::new()),
        })
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder as &dyn Recorder, f)
    }

    /// The agents the alarm is raised for now. Logs at WARN when it is raised for an agent,
    /// and at INFO when it is cleared.
    pub async fn alarms(&self, runtime: &Runtime) -> Result<Vec<Raised>, StoreError> {
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

    /// The metrics in Prometheus text, the store's and runtime's gauges read now.
    pub async fn render(&self, runtime: &Runtime) -> Result<String, StoreError> {
        let store = runtime.store();
        let counts = store.counts_by_agent().await?;
        let now = store.now();
        let alarms = self.alarms(runtime).await?;
        let mut oldest = HashMap::new();
        for agent in runtime.agents() {
            oldest.insert(agent, store.oldest_queued(agent).await?);
        }
        self.record(|| {
            for agent in runtime.agents() {
                let mine = counts.get(agent).cloned().unwrap_or_default();
                for &state in RunState::STATES {
                    gauge!("steadfast_runs", "agent" => agent.to_owned(), "state" => state.name())
                        .set(mine.get(state) as f64);
                }
                gauge!("steadfast_queue_depth", "agent" => agent.to_owned())
                    .set(mine.get(RunState::Queued) as f64);
                let age = oldest[agent].map_or(0.0, |due| now.since(due).as_secs_f64());
                gauge!("steadfast_oldest_due_age_seconds", "agent" => agent.to_owned()).set(age);
                let open = matches!(runtime.breaker(agent), Some(BreakerState::Open { .. }));
                gauge!("steadfast_breaker_open", "agent" => agent.to_owned())
                    .set(f64::from(u8::from(open)));
                let paused = runtime.agent_control(agent).is_some_and(|c| c.paused);
                gauge!("steadfast_agent_paused", "agent" => agent.to_owned())
                    .set(f64::from(u8::from(paused)));
                let alarmed = alarms.iter().any(|r| r.agent == agent);
                gauge!("steadfast_alarm", "agent" => agent.to_owned())
                    .set(f64::from(u8::from(alarmed)));
            }
            for (agent, at) in self.last_success.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                gauge!("steadfast_last_success_timestamp_seconds", "agent" => agent.clone())
                    .set(at.as_millis() as f64 / 1000.0);
            }
        });
        Ok(self.handle.render())
    }
}

/// Every metric's type, unit and help text (Prometheus' `# HELP`).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "steadfast_attempts_total",
        "Attempts whose outcome was recorded, by agent, the state it moved the run to, and the fault class of a failure"
    );
    describe_counter!(
        "steadfast_dead_letters_total",
        "Runs moved to the dead letter queue (failed_permanent) by an attempt"
    );
    describe_histogram!(
        "steadfast_attempt_duration_seconds",
        Unit::Seconds,
        "How long an agent ran in an attempt"
    );
    describe_histogram!(
        "steadfast_run_duration_seconds",
        Unit::Seconds,
        "From a run's creation to its success"
    );
    describe_histogram!(
        "steadfast_commit_seconds",
        Unit::Seconds,
        "How long recording an attempt's outcome took in the store, its sync included"
    );
    describe_gauge!("steadfast_runs", "Runs by agent and state, from the store's counters");
    describe_gauge!("steadfast_queue_depth", "Queued runs by agent");
    describe_gauge!(
        "steadfast_oldest_due_age_seconds",
        Unit::Seconds,
        "How long the agent's oldest queued run has been due (0: none)"
    );
    describe_gauge!(
        "steadfast_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the agent last succeeded (Unix time), as seen by this process"
    );
    describe_gauge!("steadfast_breaker_open", "1 while the agent's circuit breaker is open");
    describe_gauge!("steadfast_agent_paused", "1 while an operator has the agent paused");
    describe_gauge!(
        "steadfast_alarm",
        "1 while the silent-failure alarm is raised for the agent: due work older than its window and no success within it"
    );
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
/// [`Runtime::notify_alarm`]): looks every `period` and submits, for each alarm raised, the
/// runs of the notifiers subscribed to alarms, keyed by the alarm's agent and
/// [`Raised::since`], so that an alarm is notified once however often it is seen, here or by
/// another process, before or after a restart. Runs until the runtime stops working after
/// having started; `steadfast serve` spawns it when a notifier is subscribed.
pub async fn notify_alarms(runtime: Arc<Runtime>, metrics: Arc<Metrics>, period: Duration) {
    let mut started = false;
    loop {
        tokio::time::sleep(period).await;
        let working = runtime.is_working();
        if started && !working {
            return;
        }
        started |= working;
        let raised = match metrics.alarms(&runtime).await {
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

impl Observer for Metrics {
    fn attempt_finished(&self, event: &AttemptEvent<'_>) {
        let agent = event.agent.to_owned();
        let fault = event.fault.map_or("none".to_owned(), |f| f.to_string());
        self.record(|| {
            counter!(
                "steadfast_attempts_total",
                "agent" => agent.clone(),
                "outcome" => event.to.name(),
                "fault" => fault
            )
            .increment(1);
            histogram!("steadfast_attempt_duration_seconds", "agent" => agent.clone())
                .record(event.duration.as_secs_f64());
            if let Some(took) = event.run_duration {
                histogram!("steadfast_run_duration_seconds", "agent" => agent.clone())
                    .record(took.as_secs_f64());
            }
        });
        if event.to == RunState::Succeeded {
            self.last_success.lock().unwrap_or_else(|p| p.into_inner()).insert(agent, event.at);
        }
    }

    fn moved(&self, event: &MoveEvent<'_>) {
        let by = match event.actor {
            Actor::Worker(_) => "worker",
            Actor::Operator(_) => "operator",
            Actor::Timer => "timer",
            Actor::System => "system",
        };
        self.record(|| {
            counter!(
                "steadfast_transitions_total",
                "agent" => event.agent.to_owned(),
                "from" => event.from.name(),
                "to" => event.to.name(),
                "by" => by
            )
            .increment(1);
            // Every way into the dead letter queue: an attempt, an operator's reject or
            // cancel, a timer's poison pill.
            if event.to == RunState::FailedPermanent {
                counter!("steadfast_dead_letters_total", "agent" => event.agent.to_owned())
                    .increment(1);
            }
        });
    }

    fn committed(&self, took: Duration) {
        self.record(|| histogram!("steadfast_commit_seconds").record(took.as_secs_f64()));
    }
}
