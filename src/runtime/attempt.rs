//! One attempt of a claimed run: its lease kept alive, its claim durable before its agent
//! starts, its agent in a task of its own under the attempt timeout with panics caught, its
//! outcome routed (see `route`) and recorded. The sequential stages of a pipeline run are
//! attempts too, run inside their pipeline run's attempt (the runtime as `agent::Engine`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::crashes::watch_start;
use super::route::route;
use super::{Registered, Shared};
use crate::agent::Context;
use crate::fault::AgentError;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Claim, RunRecord, Transition};

/// One attempt of one run, from claim to its next state. `_own` is the agent's own
/// concurrency permit, if it has a limit.
pub(super) async fn attempt(
    shared: Arc<Shared>,
    run: RunRecord,
    _own: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let registered = &shared.agents[&run.agent];
    let token = run.lease.as_ref().map_or(0, |l| l.token);
    // The lease is kept alive while the run waits for a worker slot.
    let beat = AbortOnDrop(tokio::spawn(heartbeat(shared.clone(), run.id, token)));
    // Nothing may act on a claim a crash could undo (see `Store::wait_durable`): at load a
    // later group commit has synced it already and this returns at once.
    let claimed = shared.store.wait_durable(run.id).await;
    // A pipeline run only coordinates: the stages it runs itself take a slot each while
    // their agent runs (see `run_stage`), so it holds none, and waits for none.
    let slot = if registered.kind().holds_slot { Some(take_slot(&shared).await) } else { None };
    // Claimed ahead, but the breaker opened meanwhile: defer the run, uncharged.
    if let Some(wait) = registered.breaker.as_ref().and_then(|b| b.open_for()) {
        drop(beat);
        let defer = checked_move!(run.id, Processing => FailedTransient)
            .fenced(token)
            .refund_attempt()
            .due_in(wait)
            .by(Actor::Worker(shared.worker_id.clone()))
            .reason("deferred: the circuit breaker is open");
        if let Err(error) = shared.commit(&run.agent, defer, false).await {
            tracing::error!(run_id = %run.id, %error, "could not defer the run");
        }
        finish(&shared, &run);
        return;
    }
    // With the slot in hand: a run claimed ahead and waiting for a slot has not started,
    // and is not to be blamed for a crash.
    let ready = match claimed {
        Ok(()) => watch_start(shared.store.as_ref(), registered, &run).await,
        Err(error) => Err(error),
    };
    if let Err(error) = ready {
        drop((beat, slot));
        release_unstarted(&shared, &run, token, &error).await;
        finish(&shared, &run);
        return;
    }
    let (transition, span, took) = execute(&shared, registered, &run, token).await;
    drop(beat);
    // The agent is done: its slot goes to the next run while the outcome is made durable, so
    // the outcomes of consecutive runs share the store's syncs instead of each worker waiting
    // out one sync per run. The agent's own permit is kept until the outcome is recorded.
    drop(slot);
    shared.recording.fetch_add(1, Ordering::SeqCst);
    shared.wake.notify_one();
    record(&shared, &run.agent, transition, &span, took, false).await;
    shared.recording.fetch_sub(1, Ordering::SeqCst);
    finish(&shared, &run);
}

/// Runs the agent of claimed `run` (in its own task, under its attempt timeout, a panic
/// caught) and returns the move its outcome calls for, with the attempt's span. The caller
/// keeps the lease alive meanwhile.
async fn execute(
    shared: &Arc<Shared>,
    registered: &Registered,
    run: &RunRecord,
    token: u64,
) -> (Transition, tracing::Span, Duration) {
    let span = tracing::info_span!(
        "attempt",
        run_id = %run.id,
        agent = %run.agent,
        idempotency_key = %run.idempotency_key,
        attempt = run.attempt,
        step = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let ctx = context_for(shared, registered, run, &span);
    let started = Instant::now();
    let agent = registered.agent.clone();
    let input = run.input.clone();
    let mut task = AbortOnDrop(tokio::spawn(
        async move {
            let mut ctx = ctx;
            let result = agent.run(&mut ctx, input).await;
            (ctx, result)
        }
        .instrument(span.clone()),
    ));
    let policy = registered.agent.retry_policy();
    let joined = match policy.attempt_timeout {
        Some(limit) => match tokio::time::timeout(limit, &mut task.0).await {
            Ok(joined) => joined,
            Err(_) => {
                task.0.abort();
                Ok((
                    context_for(shared, registered, run, &span),
                    Err(AgentError::transient(format!("the attempt timed out after {limit:?}"))),
                ))
            }
        },
        None => (&mut task.0).await,
    };
    let (ctx, result) = match joined {
        Ok(done) => done,
        Err(join) => {
            let what = if join.is_panic() {
                panic_message(join.into_panic())
            } else {
                "the attempt was cancelled".into()
            };
            (
                context_for(shared, registered, run, &span),
                Err(AgentError::unknown(format!("the agent panicked: {what}"))),
            )
        }
    };
    let took = started.elapsed();
    span.record("duration_ms", took.as_millis() as u64);
    (route(shared, registered, run, token, &ctx, result).await, span, took)
}

/// Gives back, uncharged, a claimed run whose agent cannot start because its claim could not
/// be made durable (the store is failing: the move may well fail too, and then the lease
/// expires).
async fn release_unstarted(
    shared: &Shared,
    run: &RunRecord,
    token: u64,
    error: &crate::store::StoreError,
) {
    tracing::error!(run_id = %run.id, %error, "the claim could not be made durable; the agent does not start");
    let release = checked_move!(run.id, Processing => FailedTransient)
        .fenced(token)
        .refund_attempt()
        .due_in(Duration::from_secs(1))
        .error(AgentError::transient(error.to_string()).to_info())
        .by(Actor::Worker(shared.worker_id.clone()))
        .reason(format!(
            "released before its agent started: the claim could not be made durable: {error}"
        ));
    if let Err(error) = shared.commit(&run.agent, release, false).await {
        tracing::error!(run_id = %run.id, %error, "could not release the run");
    }
}

/// One of the runtime's worker slots: at most `workers` agents run at a time.
async fn take_slot(shared: &Shared) -> tokio::sync::OwnedSemaphorePermit {
    shared.slots.clone().acquire_owned().await.expect("the slots semaphore is never closed")
}

/// A task aborted when its handle is dropped: an attempt cut short (its pipeline run's
/// attempt timed out or was cancelled) does not leave its agent or heartbeat running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bookkeeping when an attempt is over, whatever happened.
fn finish(shared: &Shared, run: &RunRecord) {
    shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
    if shared.agents.get(&run.agent).is_some_and(|r| !r.kind().holds_slot) {
        shared.coordinating.fetch_sub(1, Ordering::SeqCst);
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    shared.wake.notify_one();
}

/// The context of an attempt; only a pipeline run's has the engine (to run its stages).
fn context_for(
    shared: &Arc<Shared>,
    registered: &Registered,
    run: &RunRecord,
    span: &tracing::Span,
) -> Context {
    Context {
        run: run.id,
        agent: run.agent.as_str().into(),
        attempt: run.attempt,
        key: run.idempotency_key.clone(),
        signal: run.signal.clone(),
        review_note: run.review_note.clone(),
        store: shared.store.clone(),
        span: span.clone(),
        engine: registered
            .kind()
            .runs_children
            .then(|| Arc::new(Engine(shared.clone())) as Arc<dyn crate::agent::Engine>),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

/// Extends the lease every third of its length until aborted or the lease is lost.
async fn heartbeat(shared: Arc<Shared>, run: RunId, token: u64) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match shared.store.heartbeat(run, token, shared.lease).await {
            Ok(Ok(_)) => {}
            Ok(Err(conflict)) => {
                tracing::warn!(run_id = %run, %conflict, "lease lost; this attempt's outcome will be refused");
                return;
            }
            Err(error) => tracing::warn!(run_id = %run, %error, "heartbeat failed"),
        }
    }
}

/// Records the attempt's move, then tells whoever waits on it: the hooks, and the pipeline
/// the run is a stage of.
#[allow(clippy::too_many_arguments)]
async fn record(
    shared: &Shared,
    agent: &str,
    transition: Transition,
    span: &tracing::Span,
    took: Duration,
    inline: bool,
) -> Option<RunRecord> {
    let to = transition.to;
    span.record("outcome", to.to_string());
    let reason = transition.reason.clone();
    let fault = transition.error.as_ref().map(|e| e.fault);
    let committing = Instant::now();
    let recorded = shared.commit(agent, transition, inline).await;
    let committed = committing.elapsed();
    match recorded {
        Ok(Ok(moved)) => {
            if !shared.observers.is_empty() {
                let now = shared.store.now();
                let event = super::AttemptEvent {
                    agent: &moved.agent,
                    run: moved.id,
                    to: moved.state,
                    fault,
                    duration: took,
                    run_duration: (moved.state == RunState::Succeeded)
                        .then(|| now.since(moved.created_at)),
                    at: now,
                };
                for observer in &shared.observers {
                    observer.committed(committed);
                    observer.attempt_finished(&event);
                }
            }
            // What needs a person is a warning: a dead letter, a hold for review.
            match moved.state {
                RunState::FailedPermanent => {
                    tracing::warn!(parent: span, state = %moved.state, %reason, "attempt finished: dead letter");
                }
                RunState::NeedsReview => {
                    tracing::warn!(parent: span, state = %moved.state, %reason, "attempt finished: held for review");
                }
                _ => {
                    tracing::info!(parent: span, state = %moved.state, %reason, "attempt finished")
                }
            }
            Some(moved)
        }
        Ok(Err(conflict)) => {
            tracing::warn!(parent: span, %conflict, "the run moved under this attempt; its outcome is dropped");
            None
        }
        Err(error) => {
            tracing::error!(parent: span, %error, "could not record the attempt's outcome");
            None
        }
    }
}

/// The runtime as the engine of a pipeline run's attempt (see [`crate::agent::Engine`]).
struct Engine(Arc<Shared>);

#[async_trait::async_trait]
impl crate::agent::Engine for Engine {
    fn admit_stage(&self, agent: &str) -> Option<(String, Duration)> {
        admit_stage(&self.0, agent).then(|| (self.0.worker_id.clone(), self.0.lease))
    }

    fn unadmit_stage(&self, agent: &str) {
        unadmit_stage(&self.0, agent);
    }

    async fn run_stage(
        &self,
        child: &RunRecord,
        claimed: bool,
    ) -> Result<Option<RunRecord>, crate::store::StoreError> {
        run_stage(&self.0, child, claimed).await
    }
}

/// Asks whether the pipeline run whose attempt calls this may run a stage of `agent` itself,
/// now: the agent has no concurrency limit (the dispatcher counts its permits before it
/// claims), the runtime is not stopping, and the agent's circuit breaker and rate limit let
/// one run through, as the dispatcher asks them before it claims. A `true` must be followed
/// by [`run_stage`] or given back with [`unadmit_stage`].
pub(crate) fn admit_stage(shared: &Shared, agent: &str) -> bool {
    let Some(registered) = shared.agents.get(agent) else { return false };
    if registered.permits.is_some()
        || !registered.kind().holds_slot
        || shared.stopping.load(Ordering::SeqCst)
    {
        return false;
    }
    if let Some(breaker) = &registered.breaker
        && breaker.admit(1).0 == 0
    {
        return false; // open (or probing): the dispatcher defers it
    }
    if let Some(bucket) = &registered.bucket
        && bucket.take(1).0 == 0
    {
        if let Some(breaker) = &registered.breaker {
            breaker.unused(1);
        }
        return false;
    }
    true
}

/// Gives back an admission of [`admit_stage`] that ran nothing.
pub(crate) fn unadmit_stage(shared: &Shared, agent: &str) {
    let Some(registered) = shared.agents.get(agent) else { return };
    if let Some(breaker) = &registered.breaker {
        breaker.unused(1);
    }
    if let Some(bucket) = &registered.bucket {
        bucket.give_back(1);
    }
}

/// Runs stage `child` of the pipeline run whose attempt calls this (admitted by
/// [`admit_stage`]), inside that attempt: no second worker slot, no trip through the queue, no
/// wait and wake-up of the pipeline run, while the stage stays a run of its own (claimed, its
/// attempt and outcome in its history, its hooks called). `child` is claimed here unless
/// `claimed` says its creation claimed it already. Returns the stage's run after the move its
/// attempt made, or `None` if someone else claimed it first (the pipeline run then waits for
/// it as usual).
pub(crate) async fn run_stage(
    shared: &Arc<Shared>,
    child: &RunRecord,
    claimed: bool,
) -> Result<Option<RunRecord>, crate::store::StoreError> {
    let Some(registered) = shared.agents.get(&child.agent) else { return Ok(None) };
    let run = if claimed {
        child.clone()
    } else {
        let claim = Claim::new(shared.worker_id.clone(), 1, shared.lease).runs([child.id]);
        match shared.store.claim(claim).await {
            Ok(mut runs) if !runs.is_empty() => runs.remove(0),
            other => {
                unadmit_stage(shared, &child.agent);
                return other.map(|_| None);
            }
        }
    };
    let token = run.lease.as_ref().map_or(0, |l| l.token);
    let beat = AbortOnDrop(tokio::spawn(heartbeat(shared.clone(), run.id, token)));
    // Known to a shutdown like any attempt, so that a stage still running when the grace
    // period ends is released with its pipeline run (aborting that run's attempt aborts this).
    shared
        .attempts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(run.id, (token, beat.0.abort_handle()));
    let claimed = shared.store.wait_durable(run.id).await;
    let slot = take_slot(shared).await;
    let ready = match claimed {
        Ok(()) => watch_start(shared.store.as_ref(), registered, &run).await,
        Err(error) => Err(error),
    };
    if let Err(error) = ready {
        drop((beat, slot));
        release_unstarted(shared, &run, token, &error).await;
        shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
        return Err(error);
    }
    let (transition, span, took) = execute(shared, registered, &run, token).await;
    drop((slot, beat));
    let moved = record(shared, &run.agent, transition, &span, took, true).await;
    shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
    Ok(moved)
}
