//! The lifecycle every run goes through: [`RunState`], declared with the derive.
//!
//! A move outside the table of [`RunState`] is refused with a
//! [`TransitionError`](crate::machine::TransitionError) and changes nothing.

use serde::{Deserialize, Serialize};

use crate::StateMachine;

/// Where a run is in its life.
///
/// | from | allowed to | who moves it |
/// |---|---|---|
/// | `queued` | `processing`, `failed_permanent` | a worker's claim; operator cancel |
/// | `processing` | `succeeded`, `failed_transient`, `failed_permanent`, `waiting_external`, `needs_review` | the agent's outcome, routed by fault; lease expiry → `failed_transient` |
/// | `waiting_external` | `queued`, `failed_transient`, `failed_permanent`, `needs_review` | a signal (→ `queued`); the wait's timeout; cancel |
/// | `failed_transient` | `queued`, `failed_permanent` | backoff elapsed; attempts exhausted or cancel |
/// | `needs_review` | `queued`, `succeeded`, `failed_permanent` | operator: approve, resolve with an output, reject |
/// | `failed_permanent` | `queued` | operator replay only (dead letter → queue) |
/// | `succeeded` | — | terminal |
///
/// Only a claim enters `processing`, so exactly one worker holds a run at a time. The
/// serialized names (snake_case) are the same everywhere: store, logs, CLI and HTTP.
///
/// ```
/// use steadfast::{RunState, StateMachine};
///
/// assert_eq!(RunState::INITIAL, RunState::Queued);
/// assert_eq!(RunState::WaitingExternal.name(), "waiting_external");
/// assert!(RunState::Succeeded.is_terminal());
/// let err = RunState::Succeeded.transition(RunState::Queued).unwrap_err();
/// assert_eq!(err.to_string(), "cannot move from `succeeded` to `queued`; `succeeded` is terminal");
/// ```
#[derive(
    StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a worker to claim it (possibly not before a due time).
    #[machine(initial, to(Processing, FailedPermanent))]
    Queued,
    /// Claimed by exactly one worker, under a lease.
    #[machine(to(Succeeded, FailedTransient, FailedPermanent, WaitingExternal, NeedsReview))]
    Processing,
    /// Parked until a named signal arrives or its timeout passes.
    #[machine(to(Queued, FailedTransient, FailedPermanent, NeedsReview))]
    WaitingExternal,
    /// Failed in a way worth retrying; queued again once its backoff elapses.
    #[machine(to(Queued, FailedPermanent))]
    FailedTransient,
    /// Dead-lettered: nothing moves it but an operator's replay.
    #[machine(to(Queued))]
    FailedPermanent,
    /// Held for a human: approve, resolve with an output, or reject.
    #[machine(to(Queued, Succeeded, FailedPermanent))]
    NeedsReview,
    /// Done; the output is recorded. Terminal.
    #[machine(terminal)]
    Succeeded,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RunState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <RunState as StateMachine>::from_name(s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A string that names no [`RunState`]; its message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run state `{0}`; expected one of: queued, processing, waiting_external, succeeded, failed_transient, failed_permanent, needs_review"
)]
pub struct UnknownState(String);

// The moves the runtime makes, proven against the table at compile time: if someone edits the
// table so that one of them becomes illegal, the crate stops compiling here.
use RunState::*;
const _: () = {
    assert!(Queued.can_transition(Processing)); // claim
    assert!(Queued.can_transition(FailedPermanent)); // cancel
    assert!(Processing.can_transition(Succeeded)); // Outcome::Done
    assert!(Processing.can_transition(WaitingExternal)); // Outcome::Wait
    assert!(Processing.can_transition(NeedsReview)); // Outcome::Review, L3 after compensation
    assert!(Processing.can_transition(FailedTransient)); // L1, L2, lease expiry
    assert!(Processing.can_transition(FailedPermanent)); // permanent fault, attempts exhausted
    assert!(WaitingExternal.can_transition(Queued)); // signal
    assert!(WaitingExternal.can_transition(FailedTransient)); // wait timeout
    assert!(FailedTransient.can_transition(Queued)); // backoff elapsed
    assert!(FailedTransient.can_transition(FailedPermanent)); // attempts exhausted, cancel
    assert!(NeedsReview.can_transition(Queued)); // approve
    assert!(NeedsReview.can_transition(Succeeded)); // resolve
    assert!(NeedsReview.can_transition(FailedPermanent)); // reject
    assert!(FailedPermanent.can_transition(Queued)); // replay
    assert!(!Succeeded.can_transition(Queued)); // a success is final
    assert!(!Queued.can_transition(Succeeded)); // nothing succeeds without being processed
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case_and_match_serde() {
        for &state in RunState::STATES {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(state.to_string().parse::<RunState>(), Ok(state));
        }
        let err = "done".parse::<RunState>().unwrap_err();
        assert!(err.to_string().starts_with("unknown run state `done`; expected one of"));
    }
}
