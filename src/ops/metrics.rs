//! Metrics in Prometheus text (`GET /metrics`), and the silent-failure alarm (`GET /alarms`).
//!
//! [`Metrics`] is an [`Observer`] of the runtime (attempts by agent, outcome and fault; every
//! move as `steadfast_transitions_total` by agent, from, to and who moved it (`worker`,
//! `operator`, `timer`, `system`); dead letters however they came; attempt, run and commit
//! durations as histograms with explicit buckets) and, at each scrape, reads what the store
//! keeps in O(1) (runs by agent and state, the oldest due run of each agent) and the runtime's
//! state (breakers, pauses). It records into its own recorder, never the process-wide one, so a
//! program's own `metrics` setup is left alone. The alarm is the engine's
//! ([`AlarmWatch`]); these metrics keep one and render what it finds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Recorder, counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::runtime::{
    Alarm, AlarmWatch, AttemptEvent, BreakerState, MoveEvent, Observer, Raised, Runtime,
};
use crate::store::{Actor, ListQuery, StoreError};

/// Histogram buckets for attempt and run durations, in seconds.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];
/// Histogram buckets for commit latency, in seconds.
const COMMIT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// The runtime's metrics and the alarm (see the module docs).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The alarm, computed by the engine (its last successes seen through these metrics).
    watch: Arc<AlarmWatch>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("alarm", self.watch.alarm()).finish_non_exhaustive()
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
        Arc::new(Metrics { recorder, handle, watch: AlarmWatch::new(alarm) })
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder as &dyn Recorder, f)
    }

    /// The agents the alarm is raised for now (see [`AlarmWatch::check`]).
    pub async fn alarms(&self, runtime: &Runtime) -> Result<Vec<Raised>, StoreError> {
        self.watch.check(runtime).await
    }

    /// The alarm's watch these metrics keep (see [`AlarmWatch`]).
    pub fn watch(&self) -> &Arc<AlarmWatch> {
        &self.watch
    }

    /// The metrics in Prometheus text, the store's and runtime's gauges read now.
    pub async fn render(&self, runtime: &Runtime) -> Result<String, StoreError> {
        let store = runtime.store();
        let counts = store.counts_by_agent().await?;
        let now = store.now();
        let alarms = self.alarms(runtime).await?;
        let mut oldest = HashMap::new();
        let mut waiting = HashMap::new();
        for agent in runtime.agents() {
            oldest.insert(agent, store.oldest_queued(agent).await?);
            // A run stuck waiting for a signal is the quietest failure there is.
            let query = ListQuery::new()
                .state(RunState::WaitingExternal)
                .agent(agent)
                .oldest_first()
                .limit(1);
            let first = store.list(query).await?.runs.into_iter().next();
            waiting.insert(agent, first.map(|r| r.updated_at));
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
                let age = waiting[agent].map_or(0.0, |since| now.since(since).as_secs_f64());
                gauge!("steadfast_oldest_waiting_age_seconds", "agent" => agent.to_owned())
                    .set(age);
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
            gauge!("steadfast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            for (agent, at) in self.watch.last_successes() {
                gauge!("steadfast_last_success_timestamp_seconds", "agent" => agent)
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
        "Runs moved to the dead letter queue (failed_permanent), however they came: an attempt, an operator's reject or cancel, a poison pill"
    );
    describe_counter!(
        "steadfast_transitions_total",
        "Every move of a run, by agent, the state it left, the state it entered and who moved it (worker, operator, timer, system)"
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
        "steadfast_oldest_waiting_age_seconds",
        Unit::Seconds,
        "How long the agent's oldest run waiting for a signal (waiting_external) has waited since its last move (0: none)"
    );
    describe_gauge!(
        "steadfast_build_info",
        "1, with the version of steadfast that serves these metrics"
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

/// Sends the notifications of the silent-failure alarm that `metrics` watches (see
/// [`crate::runtime::notify_alarms`]).
pub async fn notify_alarms(runtime: Arc<Runtime>, metrics: Arc<Metrics>, period: Duration) {
    crate::runtime::notify_alarms(runtime, metrics.watch.clone(), period).await
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
    }

    fn moved(&self, event: &MoveEvent<'_>) {
        self.watch.moved(event);
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
