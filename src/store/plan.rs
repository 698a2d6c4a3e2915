//! The contract as plans: pure functions that take a run as a backend read it and return
//! everything the backend must write for a creation, a move, a claim, a heartbeat or a lease
//! expiry. A backend applies plans; it decides none of the rules itself.

use std::time::Duration;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

use super::head::RunHead;
use super::records::{Actor, DeadLetter, FORMAT_VERSION, HistoryEntry, Lease};
use super::requests::{Conflict, NewRun, Transition};
use super::{ErrorInfo, StoreError};

/// What a plan does to one payload of a run (its output or its signal).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Payload {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Write this value.
    Put(Value),
    /// Remove it.
    Remove,
}

/// What a plan does to the run's dead letter entry.
#[derive(Clone, Debug, PartialEq)]
pub enum DeadLetterChange {
    /// The run entered `failed_permanent`: add this entry (replacing any).
    Add(DeadLetter),
    /// The run left `failed_permanent`: remove its entry.
    Remove,
}

/// What a plan does to the run's concurrency key: a `processing` run holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange {
    /// The run entered `processing`: it now holds this key.
    Take(String),
    /// The run left `processing`: it no longer holds this key.
    Release(String),
}

/// A change of one of the per-state counters of the run's agent (and of the store's total
/// per state), which keep counts O(1) to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountDelta {
    /// The state counted.
    pub state: RunState,
    /// `+1` or `-1`.
    pub delta: i64,
}

/// Everything a backend writes for one move of one run (its creation included), atomically
/// with the other plans of the same call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The run.
    pub run: RunId,
    /// The state it left; `None` for its creation.
    pub from: Option<RunState>,
    /// The run after the move: write it whole, replacing what was read.
    pub head: RunHead,
    /// The history entry to append (its `seq` is the run's move number).
    pub history: HistoryEntry,
    /// The input, written once, at creation (with the key `(agent, idempotency_key)`, which
    /// must then be registered, and the parent's link to its child if `head.parent` is set).
    pub input: Option<Value>,
    /// What to do with the output.
    pub output: Payload,
    /// What to do with the signal payload.
    pub signal: Payload,
    /// What to do with the dead letter entry, if anything.
    pub dead_letter: Option<DeadLetterChange>,
    /// What to do with the concurrency key, if anything.
    pub lock: Option<LockChange>,
    /// The counters of `head.agent` to change (empty when the state did not change).
    pub counts: Vec<CountDelta>,
    /// Runs to create with this move, each only if its key is free (`plan_create` each, with a
    /// new id, in the same write).
    pub follow_ups: Vec<NewRun>,
}

impl Plan {
    /// Whether this plan creates its run.
    pub fn creates(&self) -> bool {
        self.from.is_none()
    }
}

/// Checks a creation request before anything is read: an agent name without NUL and an
/// idempotency key, neither empty.
pub fn check_new_run(new: &NewRun) -> Result<(), StoreError> {
    new.check()
}

/// Checks a move request before the run is read: the lifecycle allows `from → to`, only a
/// claim enters `processing`, a move out of it carries a fencing token, and its follow-ups are
/// valid creations.
pub fn check_transition(transition: &Transition) -> Result<(), StoreError> {
    transition.validate()
}

/// Whether `run` may be claimed at `now`: `queued` and due. (Its concurrency key is
/// [`plan_claim`]'s to check.)
pub fn claimable(run: &RunHead, now: Timestamp) -> bool {
    super::rules::claimable(run.state, run.due_at, now)
}

/// The creation of run `id` from `new` at `now`: a `queued` run, due at `new.due_at` or now,
/// attempt 0, fence 0, its first history entry (`from: None`, "created"). Whether its key is
/// free is the backend's to check first; if it is taken, the existing run is the answer.
pub fn plan_create(id: RunId, new: &NewRun, now: Timestamp) -> Plan {
    let head = RunHead {
        agent: new.agent.clone(),
        state: RunState::INITIAL,
        idempotency_key: new.idempotency_key.clone(),
        attempt: 0,
        due_at: Some(new.due_at.unwrap_or(now)),
        lease: None,
        fence: 0,
        parent: new.parent,
        stage: new.stage,
        input_schema: new.input_schema.clone(),
        output_schema: new.output_schema.clone(),
        concurrency_key: new.concurrency_key.clone(),
        waiting_for: None,
        review_note: None,
        last_error: None,
        moves: 0,
        format: FORMAT_VERSION,
        created_at: now,
        updated_at: now,
    };
    let mut plan = recorded(id, None, head, new.actor.clone(), "created".into(), None, now);
    plan.input = Some(new.input.clone());
    plan
}

/// The move `transition` of run `id`, read as `before`, at `now`; a [`Conflict`] if the run is
/// not in `transition.from` or the fence is stale. Call [`check_transition`] first.
pub fn plan_move(
    id: RunId,
    before: &RunHead,
    transition: &Transition,
    now: Timestamp,
) -> Result<Plan, Conflict> {
    if let Some(conflict) = transition.conflict(before.state, before.lease_token()) {
        return Err(conflict);
    }
    let mut head = before.clone();
    transition.apply(&mut head, now);
    let seq = before.moves;
    let mut plan = recorded(
        id,
        Some(before.state),
        head,
        transition.actor.clone(),
        transition.reason.clone(),
        transition.error.clone(),
        now,
    );
    plan.lock = lock_change(before, &plan.head);
    match transition.to {
        RunState::Succeeded => {
            if let Some(output) = &transition.output {
                plan.output = Payload::Put(output.clone());
            }
        }
        RunState::WaitingExternal => plan.signal = Payload::Remove,
        _ => {}
    }
    if let Some(signal) = &transition.signal {
        plan.signal = Payload::Put(signal.clone());
    }
    plan.follow_ups = transition.follow_ups_of(seq).collect();
    Ok(plan)
}

/// The claim of run `id`, read as `before`, by `owner` for `lease` at `now`: it enters
/// `processing` with the next attempt and a larger fencing token. `None` if it is not
/// claimable, or if `key_held` says a run with its concurrency key is processing.
pub fn plan_claim<E>(
    id: RunId,
    before: &RunHead,
    owner: &str,
    lease: Duration,
    now: Timestamp,
    key_held: impl FnOnce(&str) -> Result<bool, E>,
) -> Result<Option<Plan>, E> {
    if !claimable(before, now) {
        return Ok(None);
    }
    if let Some(key) = &before.concurrency_key
        && key_held(key)?
    {
        return Ok(None);
    }
    let mut head = before.clone();
    super::rules::claim(&mut head, owner, lease, now);
    let actor = Actor::Worker(owner.to_owned());
    let mut plan = recorded(id, Some(before.state), head, actor, "claimed".into(), None, now);
    plan.lock = lock_change(before, &plan.head);
    Ok(Some(plan))
}

/// A heartbeat of run `id`, read as `before`, by the holder of lease `token`: the run with its
/// lease extended to `now + extend` (no history entry, no move). A conflict if the run is not
/// processing or the lease is not the caller's any more.
pub fn plan_heartbeat(
    id: RunId,
    before: &RunHead,
    token: u64,
    extend: Duration,
    now: Timestamp,
) -> Result<RunHead, Conflict> {
    let mut head = before.clone();
    super::rules::heartbeat(id, &mut head, token, extend, now)?;
    Ok(head)
}

/// Why a lease is being recovered: see [`plan_expiry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Its time ran out.
    Expired,
    /// The process that held the lease under this token ended (a store that lets one process
    /// open a database knows this when it opens): recovered without waiting for its time.
    Orphaned(u64),
}

/// The recovery of run `id`'s lease, read as `before`, at `now`: the run moves to
/// `failed_transient`, due now, as the timer's move, with an error that names the worker.
/// `None` if it is not processing, or its lease has not expired (or, for
/// [`Expiry::Orphaned`], is not the one found: it was claimed again since).
pub fn plan_expiry(id: RunId, before: &RunHead, why: Expiry, now: Timestamp) -> Option<Plan> {
    let lease: &Lease = before.lease.as_ref().filter(|_| before.state == RunState::Processing)?;
    let (reason, error) = match why {
        Expiry::Orphaned(token) if token == lease.token => super::rules::lease_orphaned(lease),
        _ if lease.expires_at <= now => super::rules::lease_expiry(lease),
        _ => return None,
    };
    let mut head = before.clone();
    super::rules::enter(&mut head, RunState::FailedTransient, Some(now), now);
    head.last_error = Some(error.clone());
    let mut plan = recorded(id, Some(before.state), head, Actor::Timer, reason, Some(error), now);
    plan.lock = lock_change(before, &plan.head);
    Some(plan)
}

/// The plan of a move from `from` to `head` (already in its new state): the history entry at
/// the run's move number, the dead letter and counter changes; the move counted.
fn recorded(
    id: RunId,
    from: Option<RunState>,
    mut head: RunHead,
    actor: Actor,
    reason: String,
    error: Option<ErrorInfo>,
    now: Timestamp,
) -> Plan {
    let to = head.state;
    let dead_letter = if to == RunState::FailedPermanent {
        Some(DeadLetterChange::Add(DeadLetter {
            run: id,
            agent: head.agent.clone(),
            error: error.clone().or_else(|| head.last_error.clone()),
            attempt: head.attempt,
            reason: reason.clone(),
            at: now,
        }))
    } else if from == Some(RunState::FailedPermanent) {
        Some(DeadLetterChange::Remove)
    } else {
        None
    };
    let counts = match from {
        Some(from) if from == to => Vec::new(),
        Some(from) => {
            vec![CountDelta { state: from, delta: -1 }, CountDelta { state: to, delta: 1 }]
        }
        None => vec![CountDelta { state: to, delta: 1 }],
    };
    let history = HistoryEntry {
        seq: head.moves,
        from,
        to,
        at: now,
        attempt: head.attempt,
        reason,
        actor,
        error,
    };
    head.moves += 1;
    head.updated_at = now;
    Plan {
        run: id,
        from,
        head,
        history,
        input: None,
        output: Payload::Keep,
        signal: Payload::Keep,
        dead_letter,
        lock: None,
        counts,
        follow_ups: Vec::new(),
    }
}

/// A processing run holds its concurrency key: taken on entering `processing`, released on
/// leaving it.
fn lock_change(before: &RunHead, after: &RunHead) -> Option<LockChange> {
    let key = after.concurrency_key.as_ref()?;
    let (was, is) = (before.state == RunState::Processing, after.state == RunState::Processing);
    match (was, is) {
        (false, true) => Some(LockChange::Take(key.clone())),
        (true, false) => Some(LockChange::Release(key.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn created() -> (RunId, Plan) {
        let id = RunId::new();
        let new = NewRun::new("a", "k", serde_json::json!({"n": 1})).concurrency_key("c");
        (id, plan_create(id, &new, at(1_000)))
    }

    #[test]
    fn a_creation_is_queued_due_now_with_its_first_entry_and_count() {
        let (id, plan) = created();
        assert!(plan.creates());
        assert_eq!(plan.run, id);
        assert_eq!((plan.head.state, plan.head.due_at), (RunState::Queued, Some(at(1_000))));
        assert_eq!((plan.history.seq, plan.head.moves), (0, 1));
        assert_eq!(plan.counts, [CountDelta { state: RunState::Queued, delta: 1 }]);
        assert_eq!(plan.input, Some(serde_json::json!({"n": 1})));
        assert_eq!((plan.dead_letter, plan.lock), (None, None));
    }

    #[test]
    fn a_claim_takes_the_key_unless_it_is_held_and_a_move_out_releases_it() {
        let (id, created) = created();
        let held = plan_claim(id, &created.head, "w", Duration::from_secs(5), at(1_000), |_| {
            Ok::<_, ()>(true)
        });
        assert_eq!(held, Ok(None));
        let early = plan_claim(id, &created.head, "w", Duration::from_secs(5), at(999), |_| {
            Ok::<_, ()>(false)
        });
        assert_eq!(early, Ok(None), "not due yet");
        let claim = plan_claim(id, &created.head, "w", Duration::from_secs(5), at(1_000), |_| {
            Ok::<_, ()>(false)
        })
        .unwrap()
        .unwrap();
        assert_eq!(claim.lock, Some(LockChange::Take("c".into())));
        assert_eq!(claim.head.lease.as_ref().map(|l| l.token), Some(1));
        let fail = Transition::new(id, RunState::Processing, RunState::FailedPermanent)
            .fenced(1)
            .reason("bad input");
        let dead = plan_move(id, &claim.head, &fail, at(2_000)).unwrap();
        assert_eq!(dead.lock, Some(LockChange::Release("c".into())));
        assert!(
            matches!(&dead.dead_letter, Some(DeadLetterChange::Add(d)) if d.reason == "bad input")
        );
        assert_eq!(dead.counts.len(), 2);
        let stale = Transition::new(id, RunState::Processing, RunState::Succeeded).fenced(0);
        assert_eq!(
            plan_move(id, &claim.head, &stale, at(2_000)),
            Err(Conflict::Fenced { run: id, token: 0, current: 1 })
        );
        let replay = Transition::new(id, RunState::FailedPermanent, RunState::Queued);
        let back = plan_move(id, &dead.head, &replay, at(3_000)).unwrap();
        assert_eq!(back.dead_letter, Some(DeadLetterChange::Remove));
    }

    #[test]
    fn an_expiry_moves_only_an_expired_or_orphaned_lease() {
        let (id, created) = created();
        let claim = plan_claim(id, &created.head, "w", Duration::from_secs(5), at(1_000), |_| {
            Ok::<_, ()>(false)
        })
        .unwrap()
        .unwrap();
        assert_eq!(plan_expiry(id, &claim.head, Expiry::Expired, at(2_000)), None);
        assert_eq!(plan_expiry(id, &claim.head, Expiry::Orphaned(9), at(2_000)), None);
        let orphan = plan_expiry(id, &claim.head, Expiry::Orphaned(1), at(2_000)).unwrap();
        assert_eq!(orphan.head.state, RunState::FailedTransient);
        assert_eq!(orphan.history.actor, Actor::Timer);
        let expired = plan_expiry(id, &claim.head, Expiry::Expired, at(6_000)).unwrap();
        assert_eq!(expired.head.due_at, Some(at(6_000)));
        assert_eq!(expired.lock, Some(LockChange::Release("c".into())));
    }

    #[test]
    fn a_move_to_waiting_clears_the_signal_and_a_wake_writes_it() {
        let (id, created) = created();
        let wait = Transition::new(id, RunState::Queued, RunState::WaitingExternal);
        let waiting = plan_move(id, &created.head, &wait.clone().waiting_for("s"), at(1)).unwrap();
        assert_eq!(waiting.signal, Payload::Remove);
        let wake = Transition::new(id, RunState::WaitingExternal, RunState::Queued)
            .signal(serde_json::json!(7));
        let woken = plan_move(id, &waiting.head, &wake, at(2)).unwrap();
        assert_eq!(woken.signal, Payload::Put(serde_json::json!(7)));
        assert_eq!(woken.head.waiting_for, None);
    }
}
