//! The dispatcher and the attempts: claim due runs under leases, run each attempt with a
//! heartbeat, a timeout and panic isolation, and route its outcome by fault class.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{Registered, RuntimeError, Shared};
use crate::agent::{Context, Outcome};
use crate::fault::{AgentError, Fault};
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Claim, ListQuery, RunRecord, Transition};

/// How many runs per worker slot the dispatcher keeps claimed (running or about to run).
const CLAIM_AHEAD: usize = 4;

/// How many pipeline runs per worker slot may be in an attempt at once.
const PIPELINES_AHEAD: usize = 16;

/// When the dispatcher returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// When nothing can progress without outside input.
    Idle,
    /// When the runtime is shutting down.
    Stopped,
}

// The moves this module makes, proven against the lifecycle table.
const _: () = {
    use RunState::*;
    assert!(FailedTransient.can_transition(Queued)); // backoff elapsed
    assert!(WaitingExternal.can_transition(FailedTransient)); // wait timed out
    assert!(Processing.can_transition(Succeeded));
    assert!(Processing.can_transition(WaitingExternal));
    assert!(Processing.can_transition(NeedsReview));
    assert!(Processing.can_transition(FailedTransient));
    assert!(Processing.can_transition(FailedPermanent));
};

pub(crate) async fn dispatch(shared: Arc<Shared>, until: Until) -> Result<(), RuntimeError> {
    shared.keep_schemas().await;
    let names: Vec<String> = shared.agents.keys().cloned().collect();
    wake_stalled_pipelines(&shared, &names).await?;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut progressed = fire_timers(&shared).await?;
        progressed |= !shared.store.recover_expired(256).await?.is_empty();
        // The earliest moment a breaker or a rate limit lets an agent's runs through again.
        let mut unblocked_in: Option<Duration> = None;
        for name in &names {
            let (started, blocked) = claim_and_start(&shared, name).await?;
            progressed |= started;
            if let Some(wait) = blocked {
                unblocked_in = Some(unblocked_in.map_or(wait, |w| w.min(wait)));
            }
        }
        if progressed {
            continue;
        }
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        if until == Until::Idle && in_flight == 0 && !has_pending_work(&shared, &names).await? {
            return Ok(());
        }
        // Sleep until the earliest due time, or until woken (new work, a signal, a finished
        // attempt); never a fixed polling interval.
        let now = shared.store.now();
        let mut sleep = match shared.store.next_due().await? {
            Some(due) if due > now => due.since(now),
            // Something is due but could not be claimed: all slots are busy (a finished
            // attempt wakes us), a breaker or a rate limit holds it (`unblocked_in`), or it
            // belongs to an agent this runtime does not run.
            Some(_) if in_flight > 0 || unblocked_in.is_some() => Duration::from_secs(60),
            Some(_) => Duration::from_millis(250),
            None => Duration::from_secs(60),
        };
        if let Some(wait) = unblocked_in {
            sleep = sleep.min(wait);
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Wakes pipeline runs whose stage finished while no process was there to wake them (a crash
/// between a stage's end and its signal), instead of leaving them to the slow re-check timer.
async fn wake_stalled_pipelines(shared: &Shared, names: &[String]) -> Result<(), RuntimeError> {
    for name in names.iter().filter(|n| shared.agents[*n].is_pipeline()) {
        let mut query = ListQuery::new().state(RunState::WaitingExternal).agent(name).limit(500);
        loop {
            let page = shared.store.list(query.clone()).await?;
            for run in &page.runs {
                after_move(shared, run, true, false).await;
            }
            match page.next {
                Some(next) => query = query.cursor(next),
                None => break,
            }
        }
    }
    Ok(())
}

/// Moves the runs whose timer is due: a backoff elapsed (→ `queued`), a wait timed out
/// (→ `failed_transient`, retried like any transient fault).
async fn fire_timers(shared: &Shared) -> Result<bool, RuntimeError> {
    let due = shared.store.due_timers(256).await?;
    // Concurrently, so that the moves share the store's syncs instead of taking one each.
    let mut moves = tokio::task::JoinSet::new();
    for run in &due {
        let transition = match run.state {
            RunState::FailedTransient => after_backoff(shared, run).await,
            // A pipeline run looks at its stages again (a backstop for a lost wake-up).
            RunState::WaitingExternal
                if shared.agents.get(&run.agent).is_some_and(|r| r.is_pipeline()) =>
            {
                Transition::new(run.id, RunState::WaitingExternal, RunState::Queued)
                    .reason("re-checking its stages")
            }
            RunState::WaitingExternal => {
                let signal = run.waiting_for.as_deref().unwrap_or("?");
                let error =
                    AgentError::transient(format!("timed out waiting for signal `{signal}`"));
                Transition::new(run.id, RunState::WaitingExternal, RunState::FailedTransient)
                    .reason(format!("timed out waiting for signal `{signal}`"))
                    .error(error.to_info())
            }
            _ => continue,
        };
        let store = shared.store.clone();
        moves.spawn(async move { store.transition(transition.by(Actor::Timer)).await });
    }
    while let Some(moved) = moves.join_next().await {
        // A conflict means someone else moved it first (a signal, an operator): fine.
        if let Ok(moved) = moved.map_err(|e| {
            RuntimeError::Store(crate::store::StoreError::Io {
                context: "firing a timer".into(),
                source: std::io::Error::other(e),
            })
        })?? {
            tracing::debug!(run_id = %moved.id, state = %moved.state, "timer fired");
        }
    }
    Ok(!due.is_empty())
}

/// The move of a `failed_transient` run whose backoff elapsed: back to the queue, unless its
/// agent keeps taking its worker process down with it (a poison pill: an agent that aborts, is
/// OOM-killed or segfaults every time), which would otherwise crash-loop every worker forever.
///
/// A run whose lease expired (its worker gone) cannot be blamed at once: it may only have
/// been claimed ahead, or running beside the run that crashed the process. So it is watched
/// from then on: each later attempt durably records that its agent started before it runs
/// ([`ready_to_start`]), and once [`RetryPolicy::max_crashes`] such attempts in a row ended
/// with their worker gone, having journaled nothing, the run is dead-lettered. A run back from
/// an expiry waits a jittered backoff first, so that the runs that shared a crashed process do
/// not all come back together.
///
/// [`RetryPolicy::max_crashes`]: crate::fault::RetryPolicy::max_crashes
async fn after_backoff(shared: &Shared, run: &RunRecord) -> Transition {
    let back = |reason: &str| {
        Transition::new(run.id, RunState::FailedTransient, RunState::Queued).reason(reason)
    };
    let Some(registered) = shared.agents.get(&run.agent) else { return back("backoff elapsed") };
    if registered.is_pipeline() || !ended_by_lease_expiry(run) {
        return back("backoff elapsed");
    }
    let crashes = match crashes_in_a_row(shared.store.as_ref(), run.id).await {
        Ok(crashes) => crashes,
        Err(error) => {
            tracing::warn!(run_id = %run.id, %error, "could not count the run's crashes");
            0
        }
    };
    let policy = registered.agent.retry_policy();
    if crashes >= policy.max_crashes {
        let error = AgentError::unknown(format!(
            "its agent crashed its worker {crashes} times in a row (it was running, watched, \
             each time the worker process ended and its lease expired): taken for a poison pill"
        ));
        return Transition::new(run.id, RunState::FailedTransient, RunState::FailedPermanent)
            .error(error.to_info())
            .reason(format!("dead-lettered: {error}"));
    }
    let delay = policy
        .backoff_delay(crashes + 1, &mut shared.rng.lock().unwrap_or_else(|p| p.into_inner()));
    let why = if crashes == 0 {
        "found in a worker that ended; watched from now on".to_owned()
    } else {
        format!(
            "its agent crashed its worker ({crashes} of at most {} times in a row)",
            policy.max_crashes
        )
    };
    back(&format!("{why}; back to the queue in {} ms", delay.as_millis())).due_in(delay)
}

/// Whether `run`'s last attempt ended with its lease expiring (the timer's move out of
/// `processing`).
fn ended_by_lease_expiry(run: &RunRecord) -> bool {
    run.last_error.as_ref().is_some_and(|e| e.message.starts_with(crate::store::LEASE_EXPIRED))
}

/// How many attempts of `run` in a row, counting back from its latest, were watched (their
/// start recorded by [`ready_to_start`]) and ended with their lease expiring, having journaled
/// no effect. An unwatched expiry (the one that made the run watched), an attempt that ended
/// any other way, one that journaled an effect (progress: not what crashes), or an operator's
/// move ends the count.
pub(crate) async fn crashes_in_a_row(
    store: &dyn crate::store::Store,
    run: RunId,
) -> Result<u32, crate::store::StoreError> {
    let history = store.history(run).await?;
    let effects = store.effects(run).await?;
    let mut crashes = 0;
    for entry in history.iter().rev() {
        match (entry.from, &entry.actor) {
            (_, Actor::Operator(_)) => break,
            (Some(RunState::Processing), Actor::Timer) => {
                let marker = started_marker(entry.attempt);
                let watched = effects.iter().any(|e| e.name == marker);
                let progressed = effects
                    .iter()
                    .any(|e| e.attempt == entry.attempt && !e.name.starts_with(STARTED));
                if !watched || progressed {
                    break;
                }
                crashes += 1;
            }
            (Some(RunState::Processing), _) => break,
            _ => {}
        }
    }
    Ok(crashes)
}

/// Claims as many due runs of `name` as its limits allow (slots, its own concurrency, its
/// breaker, its rate limit), and starts an attempt for each. Returns whether any started, and
/// how long until a breaker or rate limit that held runs back lets them through.
async fn claim_and_start(
    shared: &Arc<Shared>,
    name: &str,
) -> Result<(bool, Option<Duration>), RuntimeError> {
    let registered = &shared.agents[name];
    // Claim up to one batch ahead of the workers: the next runs are leased and waiting for a
    // slot while the current ones finish, so claims overlap with attempts instead of
    // alternating with them. An agent with its own limit is claimed exactly.
    // Pipeline runs hold no slot (their stages take one while they run), so they have their
    // own, larger budget and do not count against the other agents'.
    let coordinating = shared.coordinating.load(Ordering::SeqCst);
    let mut free = if registered.is_pipeline() {
        (PIPELINES_AHEAD * shared.workers).saturating_sub(coordinating)
    } else {
        let holding_or_waiting = shared
            .in_flight
            .load(Ordering::SeqCst)
            .saturating_sub(shared.recording.load(Ordering::SeqCst) + coordinating);
        (CLAIM_AHEAD * shared.workers).saturating_sub(holding_or_waiting)
    };
    if let Some(own) = &registered.permits {
        free = free.min(own.available_permits());
    }
    if free == 0 {
        return Ok((false, None));
    }
    let mut blocked = None;
    let mut admitted = free;
    if let Some(breaker) = &registered.breaker {
        let (n, wait) = breaker.admit(admitted);
        (admitted, blocked) = (n, wait);
    }
    let mut tokens = 0;
    if let Some(bucket) = &registered.bucket
        && admitted > 0
    {
        let (n, wait) = bucket.take(admitted);
        tokens = n;
        admitted = n;
        blocked = blocked.or(wait);
    }
    if admitted == 0 {
        if let Some(breaker) = &registered.breaker {
            breaker.unused(free.min(1));
        }
        return Ok((false, blocked));
    }
    let claim = Claim::new(shared.worker_id.clone(), admitted, shared.lease).agents([name]);
    let claimed = shared.store.claim(claim).await?;
    if let Some(bucket) = &registered.bucket {
        bucket.give_back(tokens - claimed.len());
    }
    if claimed.is_empty()
        && let Some(breaker) = &registered.breaker
    {
        breaker.unused(admitted);
    }
    for run in &claimed {
        // Free permits were counted above and only this task takes them: these cannot wait.
        let own = registered
            .permits
            .clone()
            .map(|p| p.try_acquire_owned().expect("a counted free permit"));
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        if registered.is_pipeline() {
            shared.coordinating.fetch_add(1, Ordering::SeqCst);
        }
        let token = run.lease.as_ref().map_or(0, |l| l.token);
        // Held across the spawn, so that an attempt that finishes at once cannot remove its
        // entry before it is inserted (and leave a stale one behind).
        let mut attempts = shared.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let task = tokio::spawn(attempt(shared.clone(), run.clone(), own));
        attempts.insert(run.id, (token, task.abort_handle()));
    }
    Ok((!claimed.is_empty(), None))
}

/// Whether a registered agent has a run that will progress without outside input.
async fn has_pending_work(shared: &Shared, names: &[String]) -> Result<bool, RuntimeError> {
    for state in [RunState::Queued, RunState::Processing, RunState::FailedTransient] {
        for name in names {
            let page =
                shared.store.list(ListQuery::new().state(state).agent(name).limit(1)).await?;
            if !page.runs.is_empty() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// One attempt of one run, from claim to its next state. `_own` is the agent's own
/// concurrency permit, if it has a limit.
async fn attempt(
    shared: Arc<Shared>,
    run: RunRecord,
    _own: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let registered = &shared.agents[&run.agent];
    let token = run.lease.as_ref().map_or(0, |l| l.token);
    // The lease is kept alive while the run waits for a worker slot.
    let beat = AbortOnDrop(tokio::spawn(heartbeat(shared.clone(), run.id, token)));
    // The claim synced while the run waits for its slot (at load, a later group commit has
    // synced it already and this returns at once).
    let claimed = shared.store.wait_durable(run.id).await;
    // A pipeline run only coordinates: the stages it runs itself take a slot each while
    // their agent runs (see `run_stage`), so it holds none, and waits for none.
    let slot = if registered.is_pipeline() { None } else { Some(take_slot(&shared).await) };
    // Claimed ahead, but the breaker opened meanwhile: defer the run, uncharged.
    if let Some(wait) = registered.breaker.as_ref().and_then(|b| b.open_for()) {
        drop(beat);
        let defer = Transition::new(run.id, RunState::Processing, RunState::FailedTransient)
            .fenced(token)
            .refund_attempt()
            .due_in(wait)
            .by(Actor::Worker(shared.worker_id.clone()))
            .reason("deferred: the circuit breaker is open");
        if let Err(error) = shared.store.transition(defer).await {
            tracing::error!(run_id = %run.id, %error, "could not defer the run");
        }
        finish(&shared, &run);
        return;
    }
    // Checked with the slot in hand: a run claimed ahead and waiting for a slot has not
    // started, and is not to be blamed for a crash (see `ready_to_start`).
    let ready = match claimed {
        Ok(()) => ready_to_start(&shared, &run).await,
        Err(error) => Err(error),
    };
    if let Err(error) = ready {
        drop((beat, slot));
        release_unstarted(&shared, &run, token, &error).await;
        finish(&shared, &run);
        return;
    }
    let (transition, span) = execute(&shared, registered, &run, token).await;
    drop(beat);
    // The agent is done: its slot goes to the next run while the outcome is made durable, so
    // the outcomes of consecutive runs share the store's syncs instead of each worker waiting
    // out one sync per run. The agent's own permit is kept until the outcome is recorded.
    drop(slot);
    shared.recording.fetch_add(1, Ordering::SeqCst);
    shared.wake.notify_one();
    record(&shared, registered, transition, &span, false).await;
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
) -> (Transition, tracing::Span) {
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
    let ctx = context_for(shared, run, &span);
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
                    context_for(shared, run, &span),
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
                context_for(shared, run, &span),
                Err(AgentError::unknown(format!("the agent panicked: {what}"))),
            )
        }
    };
    span.record("duration_ms", started.elapsed().as_millis() as u64);
    (route(shared, registered, run, token, &ctx, result).await, span)
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
        || registered.is_pipeline()
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
        Ok(()) => ready_to_start(shared, &run).await,
        Err(error) => Err(error),
    };
    if let Err(error) = ready {
        drop((beat, slot));
        release_unstarted(shared, &run, token, &error).await;
        shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
        return Err(error);
    }
    let (transition, span) = execute(shared, registered, &run, token).await;
    drop((slot, beat));
    let moved = record(shared, registered, transition, &span, true).await;
    shared.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
    Ok(moved)
}

/// Makes what the agent of claimed `run` may act on durable right before it starts, its worker
/// slot in hand: the claim (so
/// that no effect is made, and no crash happens, under an attempt a crash could undo), and,
/// for a run whose previous attempt ended with its worker gone, a marker that this attempt
/// started (so that if this worker dies too, the crash is known to be the run's own: see
/// [`crashes_in_a_row`]). The marker costs one sync, paid only by such runs.
async fn ready_to_start(shared: &Shared, run: &RunRecord) -> Result<(), crate::store::StoreError> {
    shared.store.wait_durable(run.id).await?; // at once: waited for before the slot
    let pipeline = shared.agents.get(&run.agent).is_some_and(|r| r.is_pipeline());
    if !pipeline && ended_by_lease_expiry(run) {
        shared.store.record_effect(run.id, &started_marker(run.attempt), true.into()).await?;
    }
    Ok(())
}

/// The name of the journaled marker that attempt `attempt` of a watched run started.
fn started_marker(attempt: u32) -> String {
    format!("{STARTED}{attempt}")
}

/// How the names of the runtime's own journal markers start (not an effect of the agent's).
const STARTED: &str = "steadfast/started attempt ";

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
    let release = Transition::new(run.id, RunState::Processing, RunState::FailedTransient)
        .fenced(token)
        .refund_attempt()
        .due_in(Duration::from_secs(1))
        .error(AgentError::transient(error.to_string()).to_info())
        .by(Actor::Worker(shared.worker_id.clone()))
        .reason(format!(
            "released before its agent started: the claim could not be made durable: {error}"
        ));
    if let Err(error) = shared.store.transition(release).await {
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
    if shared.agents.get(&run.agent).is_some_and(|r| r.is_pipeline()) {
        shared.coordinating.fetch_sub(1, Ordering::SeqCst);
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    shared.wake.notify_one();
}

fn context_for(shared: &Arc<Shared>, run: &RunRecord, span: &tracing::Span) -> Context {
    Context {
        run: run.id,
        agent: run.agent.as_str().into(),
        attempt: run.attempt,
        key: run.idempotency_key.clone(),
        signal: run.signal.clone(),
        review_note: run.review_note.clone(),
        store: shared.store.clone(),
        span: span.clone(),
        engine: Some(Arc::new(Engine(shared.clone()))),
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

/// The move the attempt's outcome calls for, by the fault table (a resource fault's
/// `cleanup` runs here, in the attempt's slot).
async fn route(
    shared: &Shared,
    registered: &Registered,
    run: &RunRecord,
    token: u64,
    ctx: &Context,
    result: Result<Outcome<serde_json::Value>, AgentError>,
) -> Transition {
    let policy = registered.agent.retry_policy();
    if let Some(breaker) = &registered.breaker {
        breaker.record(result.as_ref().err().map(AgentError::fault));
    }
    let base = |to: RunState| {
        Transition::new(run.id, RunState::Processing, to)
            .fenced(token)
            .by(Actor::Worker(shared.worker_id.clone()))
    };
    match result {
        Ok(Outcome::Done(output)) => base(RunState::Succeeded).output(output).reason("done"),
        Ok(Outcome::Wait(wait)) => {
            let mut t = base(RunState::WaitingExternal)
                .waiting_for(wait.signal.clone())
                .reason(format!("waiting for signal `{}`", wait.signal));
            if registered.is_pipeline() {
                // A pipeline run waits on its stages once per stage: that is progress, not a
                // failed attempt, so it does not use up its retry budget.
                t = t.refund_attempt();
            }
            if let Some(timeout) = wait.timeout {
                t = t.due_in(timeout);
            }
            t
        }
        Ok(Outcome::Review(reason)) => base(RunState::NeedsReview).reason(reason),
        Err(error) => {
            let info = error.to_info();
            match error.fault() {
                Fault::Transient if run.attempt >= policy.max_attempts => {
                    base(RunState::FailedPermanent)
                        .error(info)
                        .reason(format!("gave up after {} attempts: {error}", run.attempt))
                }
                Fault::Transient => {
                    let backoff = policy.backoff_delay(
                        run.attempt,
                        &mut shared.rng.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    let delay = backoff.max(error.retry_after_delay().unwrap_or_default());
                    base(RunState::FailedTransient).due_in(delay).error(info).reason(format!(
                        "transient fault, retry in {} ms: {error}",
                        delay.as_millis()
                    ))
                }
                Fault::Resource => {
                    registered.agent.cleanup(ctx, &error).await;
                    let earlier = faults_in_history(shared, run.id, Fault::Resource).await;
                    if earlier + 1 >= policy.resource_budget {
                        base(RunState::NeedsReview).error(info).reason(format!(
                            "resource fault {} times; paused until manual cleanup: {error}",
                            earlier + 1
                        ))
                    } else {
                        base(RunState::FailedTransient)
                            .due_in(policy.resource_cooldown)
                            .error(info)
                            .reason(format!(
                                "resource fault, cooling down {} ms: {error}",
                                policy.resource_cooldown.as_millis()
                            ))
                    }
                }
                Fault::Logic => {
                    base(RunState::NeedsReview).error(info).reason(format!("logic fault: {error}"))
                }
                Fault::Permanent => base(RunState::FailedPermanent)
                    .error(info)
                    .reason(format!("permanent fault: {error}")),
                _ => {
                    if faults_in_history(shared, run.id, Fault::Unknown).await == 0 {
                        base(RunState::FailedTransient)
                            .due_in(policy.unknown_retry_delay)
                            .error(info)
                            .reason(format!(
                                "unknown fault, one retry in {} ms: {error}",
                                policy.unknown_retry_delay.as_millis()
                            ))
                    } else {
                        base(RunState::FailedPermanent)
                            .error(info)
                            .reason(format!("unknown fault again: {error}"))
                    }
                }
            }
        }
    }
}

/// Records the attempt's move, then tells whoever waits on it: the hooks, and the pipeline
/// the run is a stage of.
async fn record(
    shared: &Shared,
    registered: &Registered,
    transition: Transition,
    span: &tracing::Span,
    inline: bool,
) -> Option<RunRecord> {
    let to = transition.to;
    span.record("outcome", to.to_string());
    match shared.store.transition(transition).await {
        Ok(Ok(moved)) => {
            tracing::info!(parent: span, state = %moved.state, reason = ?moved.last_error.as_ref().map(|e| &e.message), "attempt finished");
            shared.notify_hooks(&moved);
            // A stage run inline is seen by its pipeline run at once: nobody to wake.
            after_move(shared, &moved, registered.is_pipeline(), inline).await;
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

/// How many earlier moves of `run` were caused by a fault of class `fault`.
async fn faults_in_history(shared: &Shared, run: RunId, fault: Fault) -> u32 {
    match shared.store.history(run).await {
        Ok(history) => {
            history.iter().filter(|h| h.error.as_ref().is_some_and(|e| e.fault == fault)).count()
                as u32
        }
        Err(error) => {
            tracing::warn!(run_id = %run, %error, "could not read the history; counting no earlier faults");
            0
        }
    }
}

/// What a move means for pipelines: a stage that finished wakes its waiting pipeline run once
/// the whole stage is ready for it (every item of a fan-out done, or one stopped on a logic
/// fault), so a fan-out of n items wakes it once rather than n times; a pipeline run that just
/// started waiting wakes itself if its stage became ready meanwhile (a stage that finished
/// while the pipeline run was looking found it not yet waiting). Each side looks after its own
/// move is stored, so of two moves racing, the later look sees both: no wake-up is lost.
pub(crate) async fn after_move(
    shared: &Shared,
    moved: &RunRecord,
    is_pipeline: bool,
    parent_sees_it: bool,
) {
    if let (Some(parent), Some(stage)) = (moved.parent, moved.stage)
        && !parent_sees_it
        && crate::pipeline::wakes_pipeline(moved)
    {
        match shared.store.get(parent).await {
            Ok(Some(pipeline)) if pipeline.state == RunState::WaitingExternal => {
                if stage_ready(shared, &pipeline, stage).await.unwrap_or(true) {
                    wake(shared, parent).await;
                }
            }
            Ok(_) => {} // not waiting: it looks at its stages when it runs or starts waiting
            Err(_) => wake(shared, parent).await,
        }
    }
    if is_pipeline && moved.state == RunState::WaitingExternal {
        let stage = moved
            .waiting_for
            .as_deref()
            .and_then(|w| w.strip_prefix("stage:"))
            .and_then(|k| k.parse::<u32>().ok());
        let Some(stage) = stage else { return };
        if stage_ready(shared, moved, stage).await == Some(true) {
            wake(shared, moved.id).await;
        }
    }
}

/// Whether stage `stage` of pipeline run `pipeline` is ready for it to look at (see
/// `PipelineAgent::stage_ready`); `None` if that cannot be told (the pipeline is not
/// registered here, the store could not list the stage).
async fn stage_ready(shared: &Shared, pipeline: &RunRecord, stage: u32) -> Option<bool> {
    let registered = shared.agents.get(&pipeline.agent)?;
    let mut children = Vec::new();
    let mut query = ListQuery::new().parent(pipeline.id).limit(1000);
    loop {
        let page = shared.store.list(query.clone()).await.ok()?;
        children.extend(page.runs.into_iter().filter(|c| c.stage == Some(stage)));
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    let children: Vec<&RunRecord> = children.iter().collect();
    Some(registered.pipeline.as_ref()?.stage_ready(stage as usize, &children))
}

/// Queues a waiting pipeline run to look at its stages.
async fn wake(shared: &Shared, run: RunId) {
    let transition = Transition::new(run, RunState::WaitingExternal, RunState::Queued)
        .by(Actor::System)
        .reason("a stage finished");
    // A conflict means it is not waiting (processing, or already woken): it will look anyway.
    if let Ok(Ok(_)) = shared.store.transition(transition).await {
        shared.wake.notify_one();
    }
}
