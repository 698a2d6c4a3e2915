//! What the runtime reports as it works, to the observers it is given: metrics and
//! notifications are observers, so the engine imports no metrics or HTTP crate.

use std::time::Duration;

use crate::fault::Fault;
use crate::lifecycle::{RunId, RunState};
use crate::store::Actor;

/// A run moved, whoever moved it: a worker recording an attempt, an operator, a timer, a
/// lease expiry, the runtime itself. Every move the runtime commits is told once.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MoveEvent<'a> {
    /// The agent (its registered name).
    pub agent: &'a str,
    /// The run.
    pub run: RunId,
    /// The state it left.
    pub from: RunState,
    /// The state it is in now.
    pub to: RunState,
    /// Who moved it.
    pub actor: &'a Actor,
    /// Why, in words (as recorded in its history).
    pub reason: &'a str,
    /// When, by the store's clock.
    pub at: crate::clock::Timestamp,
}

/// An attempt that ended with its outcome recorded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptEvent<'a> {
    /// The agent (its registered name).
    pub agent: &'a str,
    /// The run.
    pub run: RunId,
    /// Where the outcome moved the run.
    pub to: RunState,
    /// The class of the failure, if the attempt failed.
    pub fault: Option<Fault>,
    /// How long the agent ran.
    pub duration: Duration,
    /// For a run that succeeded: how long from its creation to now.
    pub run_duration: Option<Duration>,
    /// When, by the store's clock.
    pub at: crate::clock::Timestamp,
}

/// Told what happens; every method has an empty default. Called on the runtime's tasks: keep
/// each call short and never block (count, set a gauge, send to a channel).
pub trait Observer: Send + Sync + 'static {
    /// An attempt's outcome was recorded (its move is also told to [`moved`](Observer::moved)).
    fn attempt_finished(&self, _event: &AttemptEvent<'_>) {}

    /// A run moved: every move the runtime commits, whoever made it.
    fn moved(&self, _event: &MoveEvent<'_>) {}

    /// An attempt's outcome took `took` to commit (the store's write latency, its sync
    /// included).
    fn committed(&self, _took: Duration) {}
}
