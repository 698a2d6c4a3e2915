//! The dispatcher: fires due timers, recovers expired leases, claims due runs as far as each
//! agent's limits allow (slots, its own concurrency, its breaker, its rate limit) and starts an
//! attempt for each; sleeps until the earliest due time or until woken, never on a fixed poll.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::attempt::attempt;
use super::crashes::after_backoff;
use super::wakeups::after_move;
use super::{Registered, RuntimeError, Shared};
use crate::fault::{AgentError, Classify};
use crate::lifecycle::RunState;
use crate::store::{Actor, Claim, ListQuery};

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

pub(crate) async fn dispatch(shared: Arc<Shared>, until: Until) -> Result<(), RuntimeError> {
    shared.dispatching.fetch_add(1, Ordering::SeqCst);
    let _dispatching = Dispatching(&shared);
    shared.keep_schemas().await;
    let _retention = match (&shared.retention, until) {
        (Some((policy, every)), Until::Stopped) => Some(super::retention::Scheduled(tokio::spawn(
            super::retention::keep(shared.clone(), policy.clone(), *every),
        ))),
        _ => None,
    };
    let names: Vec<String> = shared.agents.keys().cloned().collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        match work(&shared, &names, until).await {
            // The store's own resource fault (a full disk) does not end a runtime that works
            // until shut down: it waits, then goes on (the store reopens itself once it can
            // write again). Working until idle, the caller hears of it.
            Err(RuntimeError::Store(error))
                if until == Until::Stopped && error.fault() == crate::fault::Fault::Resource =>
            {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "the store failed; the workers wait and try again");
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            result => return result,
        }
    }
}

/// Counts a dispatcher as working while it lives.
struct Dispatching<'a>(&'a Shared);

impl Drop for Dispatching<'_> {
    fn drop(&mut self) {
        self.0.dispatching.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The dispatcher's rounds until `until` (see [`dispatch`]).
async fn work(shared: &Arc<Shared>, names: &[String], until: Until) -> Result<(), RuntimeError> {
    let shared = shared.clone();
    // Work created or made due by anyone else (another task, another process on a shared
    // database) wakes the dispatcher through the store.
    let mut signal = shared.store.work_signal();
    wake_stalled_pipelines(&shared, names).await?;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        shared.refresh_controls().await;
        let mut progressed = fire_timers(&shared).await?;
        progressed |= recover_expired(&shared).await?;
        // The earliest moment a breaker or a rate limit lets an agent's runs through again.
        let mut unblocked_in: Option<Duration> = None;
        for name in names {
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
        if until == Until::Idle && in_flight == 0 && !has_pending_work(&shared, names).await? {
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
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(()); // told to stop during this round
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = store_signal(&mut signal) => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Returns when the store signals work (see `Store::work_signal`); never if it sends none.
async fn store_signal(signal: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = signal
        && rx.changed().await.is_ok()
    {
        return;
    }
    // No signal, or its sender is gone: wait on the rest only.
    *signal = None;
    std::future::pending::<()>().await;
}

/// Wakes pipeline runs whose stage finished while no process was there to wake them (a crash
/// between a stage's end and its signal), instead of leaving them to the slow re-check timer.
async fn wake_stalled_pipelines(shared: &Shared, names: &[String]) -> Result<(), RuntimeError> {
    for name in names.iter().filter(|n| shared.agents[*n].kind().waits_on_children) {
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

/// Moves the runs whose lease expired (their worker gone) to `failed_transient`, through the
/// store, and tells of each move as the one door does.
async fn recover_expired(shared: &Shared) -> Result<bool, RuntimeError> {
    let recovered = shared.store.recover_expired(256).await?;
    for run in &recovered {
        let reason = run.last_error.as_ref().map_or("lease expired", |e| e.message.as_str());
        shared.moved(run, RunState::Processing, &Actor::Timer, reason);
        after_move(shared, run, shared.waits_on_children(&run.agent), false).await;
    }
    Ok(!recovered.is_empty())
}

/// Moves the runs whose timer is due: a backoff elapsed (→ `queued`), a wait timed out
/// (→ `failed_transient`, retried like any transient fault).
async fn fire_timers(shared: &Shared) -> Result<bool, RuntimeError> {
    let due = shared.store.due_timers(256).await?;
    let mut moves = Vec::with_capacity(due.len());
    for run in &due {
        let transition = match run.state {
            RunState::FailedTransient => after_backoff(shared, run).await,
            // A pipeline run looks at its stages again (a backstop for a lost wake-up).
            RunState::WaitingExternal if shared.waits_on_children(&run.agent) => {
                checked_move!(run.id, WaitingExternal => Queued).reason("re-checking its stages")
            }
            RunState::WaitingExternal => {
                let signal = run.waiting_for.as_deref().unwrap_or("?");
                let error =
                    AgentError::transient(format!("timed out waiting for signal `{signal}`"));
                checked_move!(run.id, WaitingExternal => FailedTransient)
                    .reason(format!("timed out waiting for signal `{signal}`"))
                    .error(error.to_info())
            }
            _ => continue,
        };
        moves.push(shared.commit(&run.agent, transition.by(Actor::Timer), false));
    }
    // Concurrently, so that the moves share the store's syncs instead of taking one each.
    for moved in futures_util::future::join_all(moves).await {
        // A conflict means someone else moved it first (a signal, an operator): fine.
        if let Ok(moved) = moved? {
            tracing::debug!(run_id = %moved.id, state = %moved.state, "timer fired");
        }
    }
    Ok(!due.is_empty())
}

/// What the limits of an agent let through now: a number of runs, with what was taken for
/// them (own concurrency permits, rate-limit tokens, breaker admissions), to give back what
/// goes unused.
pub(crate) struct Admission {
    pub(crate) permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) runs: usize,
    tokens: usize,
    /// How long until a breaker or rate limit that held runs back lets them through.
    pub(crate) blocked: Option<Duration>,
}

/// Admits up to `wanted` runs of agent `name` as far as its limits allow (slots claimed ahead,
/// its own concurrency, an operator's pause or resume rate, its breaker, its rate limit).
pub(crate) fn admit(
    shared: &Shared,
    name: &str,
    registered: &Registered,
    wanted: usize,
) -> Admission {
    // Claim up to one batch ahead of the workers: the next runs are leased and waiting for a
    // slot while the current ones finish, so claims overlap with attempts instead of
    // alternating with them. An agent with its own limit is claimed exactly.
    // Pipeline runs hold no slot (their stages take one while they run), so they have their
    // own, larger budget and do not count against the other agents'.
    let coordinating = shared.coordinating.load(Ordering::SeqCst);
    let mut free = if !registered.kind().holds_slot {
        (PIPELINES_AHEAD * shared.workers).saturating_sub(coordinating)
    } else {
        let holding_or_waiting = shared
            .in_flight
            .load(Ordering::SeqCst)
            .saturating_sub(shared.recording.load(Ordering::SeqCst) + coordinating);
        (CLAIM_AHEAD * shared.workers).saturating_sub(holding_or_waiting)
    };
    free = free.min(wanted);
    // The agent's own permits are taken now: a submission starting a run itself competes
    // with the dispatcher for them.
    let mut permits = Vec::new();
    if let Some(own) = &registered.permits {
        while permits.len() < free {
            match own.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        free = permits.len();
    }
    let mut admission = Admission { permits, runs: 0, tokens: 0, blocked: None };
    if free == 0 {
        return admission;
    }
    // An operator's pause or resume rate comes first: a paused agent takes nothing else.
    let (mut admitted, held) = shared.controls.admit(name, free);
    let controlled = admitted;
    admission.blocked = held;
    if admitted == 0 {
        admission.permits.clear();
        return admission;
    }
    if let Some(breaker) = &registered.breaker {
        let (n, wait) = breaker.admit(admitted);
        admitted = n;
        admission.blocked = admission.blocked.or(wait);
    }
    if let Some(bucket) = &registered.bucket
        && admitted > 0
    {
        let (n, wait) = bucket.take(admitted);
        admission.tokens = n;
        admitted = n;
        admission.blocked = admission.blocked.or(wait);
    }
    if admitted == 0
        && let Some(breaker) = &registered.breaker
    {
        breaker.unused(free.min(1));
    }
    shared.controls.give_back(name, controlled - admitted);
    admission.runs = admitted;
    admission.permits.truncate(admitted);
    admission
}

impl Admission {
    /// Gives back what `used` runs of the admitted ones did not need.
    pub(crate) fn settle(
        &mut self,
        shared: &Shared,
        name: &str,
        registered: &Registered,
        used: usize,
    ) {
        shared.controls.give_back(name, self.runs.saturating_sub(used));
        if let Some(bucket) = &registered.bucket {
            bucket.give_back(self.tokens.saturating_sub(used));
        }
        if used == 0
            && self.runs > 0
            && let Some(breaker) = &registered.breaker
        {
            breaker.unused(self.runs);
        }
        self.permits.truncate(used);
    }
}

/// Claims as many due runs of `name` as its limits allow, and starts an attempt for each.
/// Returns whether any started, and how long until a breaker or rate limit that held runs
/// back lets them through.
async fn claim_and_start(
    shared: &Arc<Shared>,
    name: &str,
) -> Result<(bool, Option<Duration>), RuntimeError> {
    let registered = &shared.agents[name];
    let mut admission = admit(shared, name, registered, usize::MAX);
    if admission.runs == 0 {
        return Ok((false, admission.blocked));
    }
    let claim = Claim::new(shared.worker_id.clone(), admission.runs, shared.lease).agents([name]);
    let claimed = match shared.store.claim(claim).await {
        Ok(claimed) => claimed,
        Err(error) => {
            admission.settle(shared, name, registered, 0);
            return Err(error.into());
        }
    };
    admission.settle(shared, name, registered, claimed.len());
    let started = !claimed.is_empty();
    for run in claimed {
        start(shared, registered, run, admission.permits.pop());
    }
    Ok((started, None))
}

/// Starts an attempt of `run`, claimed by this runtime, holding `own` (the agent's own
/// concurrency permit, if it has a limit).
pub(crate) fn start(
    shared: &Arc<Shared>,
    registered: &Registered,
    run: crate::store::RunRecord,
    own: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    if !registered.kind().holds_slot {
        shared.coordinating.fetch_add(1, Ordering::SeqCst);
    }
    let token = run.lease.as_ref().map_or(0, |l| l.token);
    // Held across the spawn, so that an attempt that finishes at once cannot remove its
    // entry before it is inserted (and leave a stale one behind).
    let mut attempts = shared.attempts.lock().unwrap_or_else(|p| p.into_inner());
    let id = run.id;
    let task = tokio::spawn(attempt(shared.clone(), run, own));
    attempts.insert(id, (token, task.abort_handle()));
}

/// Whether a registered agent has a run that will progress without outside input (a paused
/// agent's runs wait for an operator).
async fn has_pending_work(shared: &Shared, names: &[String]) -> Result<bool, RuntimeError> {
    for state in [RunState::Queued, RunState::Processing, RunState::FailedTransient] {
        for name in names {
            if state != RunState::Processing && shared.controls.get(name).is_some_and(|c| c.paused)
            {
                continue;
            }
            let page =
                shared.store.list(ListQuery::new().state(state).agent(name).limit(1)).await?;
            if !page.runs.is_empty() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
