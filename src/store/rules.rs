//! The rules of the store contract, written once for every backend: what a move changes in
//! a run, what a claim, a heartbeat and a lease expiry write, when a move is refused. A
//! backend reads and writes; it decides none of these itself.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

use super::head::RunHead;
use super::records::Lease;
use super::requests::{Conflict, NewRun, Transition};

/// A due `queued` run claimed by `owner` for `lease` from `now`: it enters `processing`, its
/// attempt and fencing token grow by one, and it holds a lease under that token. (Whether the
/// run may be claimed, see [`claimable`], and its concurrency key are the caller's to check.)
pub(crate) fn claim(run: &mut RunHead, owner: &str, lease: Duration, now: Timestamp) {
    enter(run, RunState::Processing, None, now);
    run.attempt += 1;
    run.fence += 1;
    run.lease =
        Some(Lease { owner: owner.to_owned(), token: run.fence, expires_at: now.after(lease) });
}

/// Whether a run in `state`, due at `due_at`, may be claimed at `now`.
pub(crate) fn claimable(state: RunState, due_at: Option<Timestamp>, now: Timestamp) -> bool {
    state == RunState::Queued && due_at.is_none_or(|due| due <= now)
}

/// A heartbeat of run `id` by the holder of lease
/// `token`: the lease now expires at `now + extend`, returned; a conflict if the run is not
/// processing or the lease is not the caller's any more.
pub(crate) fn heartbeat(
    id: RunId,
    run: &mut RunHead,
    token: u64,
    extend: Duration,
    now: Timestamp,
) -> Result<Timestamp, Conflict> {
    let state = run.state;
    if state != RunState::Processing {
        return Err(Conflict::State { run: id, expected: RunState::Processing, current: state });
    }
    let current = run.lease_token();
    match run.lease.as_mut().filter(|l| l.token == token) {
        Some(lease) => {
            lease.expires_at = now.after(extend);
            Ok(lease.expires_at)
        }
        None => Err(Conflict::Fenced { run: id, token, current }),
    }
}

/// How the message of a lease expiry's error starts (see [`lease_expiry`]), for those who
/// tell a crashed attempt from a failed one.
pub(crate) const LEASE_EXPIRED: &str = "lease of worker:";

/// What recovering an expired `lease` records, the same in every store: the reason of the
/// move to `failed_transient` and its error.
pub(crate) fn lease_expiry(lease: &Lease) -> (String, ErrorInfo) {
    let reason = format!("{LEASE_EXPIRED}{} expired at {}", lease.owner, lease.expires_at);
    let error = ErrorInfo::new(crate::fault::Fault::Transient, reason.clone());
    (reason, error)
}

/// What recovering a `lease` whose process is gone records, without waiting for it to expire:
/// the embedded store lets one process open a database, so a lease found when it is opened
/// belongs to a process that ended (a crash, `kill -9`). The same move and crash accounting as
/// an expiry ([`LEASE_EXPIRED`] starts its message too).
pub(crate) fn lease_orphaned(lease: &Lease) -> (String, ErrorInfo) {
    let reason = format!(
        "{LEASE_EXPIRED}{} ended with its process (the database was opened again before it expired at {})",
        lease.owner, lease.expires_at
    );
    let error = ErrorInfo::new(crate::fault::Fault::Transient, reason.clone());
    (reason, error)
}

/// A run entering state `to`: `queued` and `failed_transient` are due at `due_at` or now, a
/// wait has an optional timeout, other states no due time; only `processing` holds a lease.
pub(crate) fn enter(run: &mut RunHead, to: RunState, due_at: Option<Timestamp>, now: Timestamp) {
    run.state = to;
    run.due_at = match to {
        RunState::Queued | RunState::FailedTransient => Some(due_at.unwrap_or(now)),
        RunState::WaitingExternal => due_at,
        _ => None,
    };
    if to != RunState::Processing {
        run.lease = None;
    }
}

impl Transition {
    /// What the move does to the run's own fields, the same in every store: the new state with
    /// its due time and lease (see [`enter`]), attempts refunded or reset, the signal awaited,
    /// the approval's note kept until the run next needs review or ends, and the last error.
    /// The payloads (output, signal) are the store's to write.
    pub(crate) fn apply(&self, run: &mut RunHead, now: Timestamp) {
        let due_at = self.due_in.map(|d| now.after(d)).or(self.due_at);
        enter(run, self.to, due_at, now);
        if self.review_note.is_some() {
            run.review_note = self.review_note.clone();
        } else if matches!(self.to, RunState::NeedsReview | RunState::Succeeded) {
            run.review_note = None;
        }
        if self.refund_attempt {
            run.attempt = run.attempt.saturating_sub(1);
        }
        if self.reset_attempts {
            run.attempt = 0;
        }
        run.waiting_for =
            if self.to == RunState::WaitingExternal { self.waiting_for.clone() } else { None };
        if self.to == RunState::Succeeded {
            run.last_error = None;
        }
        if let Some(error) = &self.error {
            run.last_error = Some(error.clone());
        }
    }

    /// The compare-and-set every store makes against the run as it is: refused if the run is
    /// not in `from`, or if it is processing under a lease whose token is not the caller's.
    /// `lease_token` is the token of the run's current lease (its last fence if it has none).
    pub(crate) fn conflict(&self, state: RunState, lease_token: u64) -> Option<Conflict> {
        let run = self.run;
        if state != self.from {
            return Some(Conflict::State { run, expected: self.from, current: state });
        }
        match (state, self.fence) {
            (RunState::Processing, Some(token)) if token != lease_token => {
                Some(Conflict::Fenced { run, token, current: lease_token })
            }
            _ => None,
        }
    }

    /// The checks every store makes before looking at the run: the lifecycle allows the move,
    /// only a claim enters `processing`, and a move out of it carries a fencing token.
    pub(crate) fn validate(&self) -> Result<(), super::StoreError> {
        use super::StoreError;
        let run = self.run;
        self.from
            .transition(self.to)
            .map_err(|source| StoreError::IllegalTransition { run, source })?;
        if self.to == RunState::Processing {
            return Err(StoreError::InvalidRequest(format!(
                "run {run}: only a claim moves a run to `processing` (use `Store::claim`)"
            )));
        }
        if self.from == RunState::Processing && self.fence.is_none() {
            return Err(StoreError::InvalidRequest(format!(
                "run {run}: a move out of `processing` must carry the lease's fencing token"
            )));
        }
        self.follow_ups.iter().try_for_each(NewRun::check)
    }

    /// The runs to create with this move, which the history records as move `seq`: each
    /// follow-up with its key suffixed by the move's number, created by the system as a
    /// plain `queued` run (never claimed by the store).
    pub(crate) fn follow_ups_of(&self, seq: u32) -> impl Iterator<Item = NewRun> + '_ {
        self.follow_ups.iter().map(move |new| {
            let mut new = new.clone();
            new.idempotency_key = format!("{}:{seq}", new.idempotency_key);
            new.claim_for = None;
            new.durable_claim = false;
            new
        })
    }
}

impl NewRun {
    /// The checks every store makes before creating a run: an agent name without NUL (a
    /// key separator) and an idempotency key, neither empty.
    pub(crate) fn check(&self) -> Result<(), super::StoreError> {
        if self.agent.is_empty() || self.idempotency_key.is_empty() || self.agent.contains('\0') {
            return Err(super::StoreError::InvalidRequest(
                "a run needs a non-empty agent name (without NUL) and idempotency key".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> RunHead {
        let at = Timestamp::from_millis(1_000);
        let mut run = super::super::plan::plan_create(
            RunId::new(),
            &NewRun::new("a", "k", serde_json::Value::Null),
            at,
        )
        .head;
        run.attempt = 2;
        run.fence = 7;
        run
    }

    #[test]
    fn a_claim_takes_the_next_attempt_and_token_under_a_lease() {
        let now = Timestamp::from_millis(2_000);
        assert!(claimable(RunState::Queued, Some(now), now));
        assert!(!claimable(RunState::Queued, Some(now.after(Duration::from_millis(1))), now));
        assert!(!claimable(RunState::FailedTransient, None, now));
        let mut run = queued();
        claim(&mut run, "w1", Duration::from_secs(30), now);
        assert_eq!(
            (run.state, run.attempt, run.fence, run.due_at),
            (RunState::Processing, 3, 8, None)
        );
        let lease = run.lease.clone().unwrap();
        assert_eq!((lease.owner.as_str(), lease.token), ("w1", 8));
        assert_eq!(lease.expires_at, now.after(Duration::from_secs(30)));
    }

    #[test]
    fn a_heartbeat_extends_only_the_callers_lease_of_a_processing_run() {
        let now = Timestamp::from_millis(2_000);
        let id = RunId::new();
        let mut run = queued();
        claim(&mut run, "w1", Duration::from_secs(1), now);
        let later = now.after(Duration::from_millis(500));
        let extended = heartbeat(id, &mut run, 8, Duration::from_secs(1), later);
        assert_eq!(extended, Ok(later.after(Duration::from_secs(1))));
        let stale = heartbeat(id, &mut run, 7, Duration::from_secs(1), later);
        assert_eq!(stale, Err(Conflict::Fenced { run: id, token: 7, current: 8 }));
        run.state = RunState::Succeeded;
        let done = heartbeat(id, &mut run, 8, Duration::from_secs(1), later);
        assert_eq!(
            done,
            Err(Conflict::State {
                run: id,
                expected: RunState::Processing,
                current: RunState::Succeeded
            })
        );
    }

    #[test]
    fn a_lease_expiry_is_a_transient_fault_that_names_the_worker() {
        let lease = Lease { owner: "w9".into(), token: 3, expires_at: Timestamp::from_millis(5) };
        let (reason, error) = lease_expiry(&lease);
        assert!(reason.starts_with(LEASE_EXPIRED) && reason.contains("w9"));
        assert_eq!(error.fault, crate::fault::Fault::Transient);
    }
}
