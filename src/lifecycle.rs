//! The lifecycle every run goes through: [`RunState`], declared with the derive.
//!
//! A move outside the table of [`RunState`] is refused with a
//! [`TransitionError`](crate::machine::TransitionError) and changes nothing.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::machine::StateMachine;

/// The identity of a run: a ULID, so ids sort by creation time and are unique across
/// processes and machines (48 bits of milliseconds, 80 random bits; monotonic within a
/// process).
///
/// Displayed and parsed as 26 characters of Crockford base32: `01JD3X4Q9ZK8M2N5P7R9T1V3W5`.
///
/// ```
/// use steadfast::RunId;
///
/// let a = RunId::new();
/// let b = RunId::new();
/// assert!(a < b);
/// assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
/// assert!("not-an-id".parse::<RunId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(u128);

impl RunId {
    /// A new id, later than every id this process made before.
    #[allow(clippy::new_without_default)] // a fresh id is not a "default" value
    pub fn new() -> Self {
        static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
        let mut generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let generator = generator.get_or_insert_with(ulid::Generator::new);
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random id.
        let id = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
        RunId(id.0)
    }

    /// The id as 16 big-endian bytes, which sort in creation order (for store keys).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id from the 16 bytes of [`RunId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        RunId(u128::from_be_bytes(bytes))
    }

    /// The creation time encoded in the id.
    pub fn created_at(self) -> crate::clock::Timestamp {
        crate::clock::Timestamp::from_millis(ulid::Ulid(self.0).timestamp_ms())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ulid::Ulid(self.0).to_string())
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = InvalidRunId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s.trim())
            .map(|u| RunId(u.0))
            .map_err(|_| InvalidRunId(s.to_owned()))
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for RunId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RunId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A run id: a ULID, 26 characters of Crockford base 32 (upper or lower case).",
            "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
            "examples": ["01JDQ8Z5X7V4W3K2M1N0P9R8S7"],
        })
    }
}

/// A string that is not a run id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a run id; expected 26 characters of Crockford base32, like 01JD3X4Q9ZK8M2N5P7R9T1V3W5"
)]
pub struct InvalidRunId(String);

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
    StateMachine,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
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

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RunState {
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
        assert_eq!(RunState::Queued.index(), 0);
        assert!(err.to_string().starts_with("unknown run state `done`; expected one of"));
    }
}
