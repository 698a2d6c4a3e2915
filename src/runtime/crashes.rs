//! Runs whose worker died under them: a run found in a dead worker is watched, and one whose
//! watched attempts keep taking their worker down (a poison pill) is dead-lettered.

use super::{Registered, Shared};
use crate::fault::AgentError;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, LEGACY_START, RunRecord, Transition};

/// The move of a `failed_transient` run whose backoff elapsed: back to the queue, unless its
/// agent keeps taking its worker process down with it (a poison pill: an agent that aborts, is
/// OOM-killed or segfaults every time), which would otherwise crash-loop every worker forever.
///
/// A run whose lease expired (its worker gone) cannot be blamed at once: it may only have
/// been claimed ahead, or running beside the run that crashed the process. So it is watched
/// from then on: each later attempt durably records that its agent started before it runs
/// ([`watch_start`]), and once [`RetryPolicy::max_crashes`] such attempts in a row ended
/// with their worker gone, having journaled nothing, the run is dead-lettered. A run back from
/// an expiry waits a jittered backoff first, so that the runs that shared a crashed process do
/// not all come back together.
///
/// [`RetryPolicy::max_crashes`]: crate::fault::RetryPolicy::max_crashes
pub(super) async fn after_backoff(shared: &Shared, run: &RunRecord) -> Transition {
    let back = |reason: &str| checked_move!(run.id, FailedTransient => Queued).reason(reason);
    // Its wait is over: a backoff, a cooldown, or the circuit breaker's (its move in says which).
    let Some(registered) = shared.agents.get(&run.agent) else { return back("retry due") };
    if !registered.kind().can_crash_its_worker || !ended_by_lease_expiry(run) {
        return back("retry due");
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
        return checked_move!(run.id, FailedTransient => FailedPermanent)
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
/// start recorded by [`watch_start`]) and ended with their lease expiring, having journaled
/// no effect. An unwatched expiry (the one that made the run watched), an attempt that ended
/// any other way, one that journaled an effect (progress: not what crashes), or an operator's
/// move ends the count.
pub(crate) async fn crashes_in_a_row(
    store: &dyn crate::store::Store,
    run: RunId,
) -> Result<u32, crate::store::StoreError> {
    let history = store.history(run).await?;
    let effects = store.effects(run).await?;
    let starts = store.starts(run).await?;
    let mut crashes = 0;
    for entry in history.iter().rev() {
        match (entry.from, &entry.actor) {
            (_, Actor::Operator(_)) => break,
            (Some(RunState::Processing), Actor::Timer) => {
                // A start recorded apart, or (a database written before) in the journal.
                let legacy = format!("{LEGACY_START}{}", entry.attempt);
                let watched =
                    starts.contains(&entry.attempt) || effects.iter().any(|e| e.name == legacy);
                let progressed = effects
                    .iter()
                    .any(|e| e.attempt == entry.attempt && !e.name.starts_with(LEGACY_START));
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

/// Right before the agent of claimed `run` starts, its worker slot in hand: for a run whose
/// previous attempt ended with its worker gone, journals (durably) that this attempt started,
/// so that if this worker dies too, the crash is known to be the run's own (see
/// [`crashes_in_a_row`]). Kept apart from the effects journal (`Store::record_start`). One
/// sync, paid only by such runs; pipeline runs are never blamed.
pub(super) async fn watch_start(
    store: &dyn crate::store::Store,
    registered: &Registered,
    run: &RunRecord,
) -> Result<(), crate::store::StoreError> {
    if registered.kind().can_crash_its_worker && ended_by_lease_expiry(run) {
        store.record_start(run.id, run.attempt).await?;
    }
    Ok(())
}
