//! The records a [`Store`](super::Store) keeps: runs, their leases, history, effects, dead
//! letters and notes, and who made a move.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};

/// The format version written into every record; a store refuses to open data of a newer
/// version.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the store knows about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// The agent (or pipeline) that runs it.
    pub agent: String,
    /// Where the run is in its lifecycle.
    pub state: RunState,
    /// The input, as JSON (validated against the agent's schema before it was stored).
    pub input: Value,
    /// The output, once the run succeeded.
    pub output: Option<Value>,
    /// The key that deduplicates submissions: the same key never creates a second run.
    pub idempotency_key: String,
    /// Attempts started so far (incremented by each claim; reset by a replay).
    pub attempt: u32,
    /// When the run is next due: claimable from (`queued`), retried at (`failed_transient`),
    /// or timed out at (`waiting_external`). `None` otherwise.
    pub due_at: Option<Timestamp>,
    /// The current lease, while `processing`.
    pub lease: Option<Lease>,
    /// The last fencing token handed out; the next claim gets a larger one.
    pub fence: u64,
    /// The parent run, for a pipeline's stage.
    pub parent: Option<RunId>,
    /// The stage index within the parent pipeline.
    pub stage: Option<u32>,
    /// A hash of the input type's JSON Schema when the run was created.
    pub input_schema: Option<String>,
    /// A hash of the output type's JSON Schema when the run was created.
    pub output_schema: Option<String>,
    /// Runs with the same concurrency key never process at the same time.
    pub concurrency_key: Option<String>,
    /// The signal a `waiting_external` run waits for.
    pub waiting_for: Option<String>,
    /// The payload of the signal that woke the run, for its next attempt.
    pub signal: Option<Value>,
    /// The note of the operator who last approved the run out of `needs_review`, for its
    /// attempts; cleared when the run next needs review or succeeds.
    pub review_note: Option<String>,
    /// The last failure, with its class and error chain.
    pub last_error: Option<ErrorInfo>,
    /// The number of moves recorded in the history (the next entry's sequence number).
    pub moves: u32,
    /// The format version the record was written with.
    pub format: u32,
    /// When the run was created.
    pub created_at: Timestamp,
    /// When the run last moved.
    pub updated_at: Timestamp,
}

/// A worker's hold on a `processing` run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Lease {
    /// The worker that holds it.
    pub owner: String,
    /// The fencing token of this claim: a move made with an older token is refused.
    pub token: u64,
    /// When the lease runs out unless heartbeated.
    pub expires_at: Timestamp,
}

/// Who made a move: `worker:<id>`, `operator:<name>`, `timer` or `system`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Actor {
    /// A worker, by its id.
    Worker(String),
    /// A human, by name.
    Operator(String),
    /// A due time passing: backoff elapsed, a wait timed out, a lease expired.
    Timer,
    /// The framework itself (a submission, a pipeline moving on).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Worker(id) => write!(f, "worker:{id}"),
            Actor::Operator(name) => write!(f, "operator:{name}"),
            Actor::Timer => f.write_str("timer"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl FromStr for Actor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("worker", id)) => Ok(Actor::Worker(id.to_owned())),
            Some(("operator", name)) => Ok(Actor::Operator(name.to_owned())),
            None if s == "timer" => Ok(Actor::Timer),
            None if s == "system" => Ok(Actor::System),
            _ => Err(format!(
                "`{s}` is not an actor; expected `worker:<id>`, `operator:<name>`, `timer` or `system`"
            )),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Actor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Who made a move: `worker:<id>`, `operator:<name>`, `timer` or `system`.",
            "pattern": "^(worker:.*|operator:.*|timer|system)$",
        })
    }
}

/// One recorded move of a run. The first entry of every run is its creation (`from: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The entry's position in the run's history, from 0.
    pub seq: u32,
    /// The state before the move; `None` for the creation.
    pub from: Option<RunState>,
    /// The state after the move.
    pub to: RunState,
    /// When the move was made.
    pub at: Timestamp,
    /// The run's attempt count after the move.
    pub attempt: u32,
    /// Why, in words.
    pub reason: String,
    /// Who made it.
    pub actor: Actor,
    /// The failure that caused the move, if one did.
    pub error: Option<ErrorInfo>,
}

/// A journaled side effect: its result, recorded under (run, name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct EffectRecord {
    /// The run that performed it.
    pub run: RunId,
    /// The effect's name within the run.
    pub name: String,
    /// The effect's result, as JSON.
    pub result: Value,
    /// The attempt that recorded it.
    pub attempt: u32,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// An entry of the dead letter queue: a run that ended in `failed_permanent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The run.
    pub run: RunId,
    /// Its agent.
    pub agent: String,
    /// The failure that sent it here, with its class and error chain.
    pub error: Option<ErrorInfo>,
    /// Attempts made.
    pub attempt: u32,
    /// Why, in words.
    pub reason: String,
    /// When it arrived.
    pub at: Timestamp,
}

/// An operator's note on a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Note {
    /// The run.
    pub run: RunId,
    /// Who wrote it.
    pub author: Actor,
    /// What they wrote.
    pub text: String,
    /// When.
    pub at: Timestamp,
}

/// An operator's control over an agent, kept durably: paused (its runs stay queued and no
/// attempt starts), or resumed at a rate (at most `rate` runs start per second) until resumed
/// without one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct AgentControl {
    /// No attempt of the agent starts.
    pub paused: bool,
    /// At most this many runs of the agent start per second (after a resume at a rate).
    pub rate: Option<f64>,
    /// Who set it.
    pub by: Actor,
    /// Why, in words.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

impl AgentControl {
    /// Paused by `by`, for `reason`, at `at`.
    pub fn paused(by: Actor, reason: impl Into<String>, at: Timestamp) -> Self {
        AgentControl { paused: true, rate: None, by, reason: reason.into(), at }
    }

    /// Running, at most `per_second` runs started per second, set by `by` at `at`.
    pub fn throttled(by: Actor, per_second: f64, at: Timestamp) -> Self {
        AgentControl {
            paused: false,
            rate: Some(per_second),
            by,
            reason: format!("resumed at {per_second} runs/s"),
            at,
        }
    }
}
