//! The records a [`Store`](super::Store) keeps, and the requests it takes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

/// The format version written into every record; a store refuses to open data of a newer
/// version.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the store knows about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// One recorded move of a run. The first entry of every run is its creation (`from: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// A request to create a run (`queued`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NewRun {
    /// The agent that will run it.
    pub agent: String,
    /// The validated input.
    pub input: Value,
    /// The deduplication key, unique per agent.
    pub idempotency_key: String,
    /// Not claimable before this time; `None` means now.
    pub due_at: Option<Timestamp>,
    /// The parent pipeline run.
    pub parent: Option<RunId>,
    /// The stage index within the parent.
    pub stage: Option<u32>,
    /// A hash of the input type's schema.
    pub input_schema: Option<String>,
    /// A hash of the output type's schema.
    pub output_schema: Option<String>,
    /// Runs with the same concurrency key never process at the same time.
    pub concurrency_key: Option<String>,
    /// Who asked for it.
    pub actor: Actor,
    /// A hint from the runtime, for a pipeline stage the pipeline run is about to run itself:
    /// claim the new run for this owner and lease in the same write if it is due and its
    /// concurrency key is free, and answer before the write is durable, like a claim (any
    /// durable write after it, the stage's effects or outcome, makes it durable; a creation
    /// lost in a crash is made again by the pipeline run). Stores may ignore it: the run is
    /// then claimed separately.
    pub(crate) claim_for: Option<(String, Duration)>,
}

impl NewRun {
    /// A run of `agent` with `input`, deduplicated by `idempotency_key`.
    pub fn new(agent: impl Into<String>, idempotency_key: impl Into<String>, input: Value) -> Self {
        NewRun {
            agent: agent.into(),
            input,
            idempotency_key: idempotency_key.into(),
            due_at: None,
            parent: None,
            stage: None,
            input_schema: None,
            output_schema: None,
            concurrency_key: None,
            actor: Actor::System,
            claim_for: None,
        }
    }

    /// Not claimable before `at`.
    #[must_use]
    pub fn due_at(mut self, at: Timestamp) -> Self {
        self.due_at = Some(at);
        self
    }

    /// A stage of the pipeline run `parent`.
    #[must_use]
    pub fn child_of(mut self, parent: RunId, stage: u32) -> Self {
        self.parent = Some(parent);
        self.stage = Some(stage);
        self
    }

    /// The schema hashes of the agent's input and output types.
    #[must_use]
    pub fn schemas(mut self, input: impl Into<String>, output: impl Into<String>) -> Self {
        self.input_schema = Some(input.into());
        self.output_schema = Some(output.into());
        self
    }

    /// Runs sharing `key` never process at the same time, across all workers.
    #[must_use]
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Who asked for the run (recorded in the first history entry).
    #[must_use]
    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }
}

/// The answer to [`Store::create`](super::Store::create).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Created {
    /// The run: the new one, or the one that already had the idempotency key.
    pub run: RunRecord,
    /// Whether this call created it.
    pub created: bool,
}

/// A request to move a run, checked against the lifecycle and compare-and-set on `from`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The run to move.
    pub run: RunId,
    /// The state the caller believes the run is in; the move is refused otherwise.
    pub from: RunState,
    /// The state to move to.
    pub to: RunState,
    /// Who moves it.
    pub actor: Actor,
    /// Why, in words (recorded in the history).
    pub reason: String,
    /// The fencing token of the caller's lease; required when moving out of `processing`.
    pub fence: Option<u64>,
    /// The due time for `queued`, `failed_transient` (retry at) and `waiting_external`
    /// (timeout); ignored for other states. `None` means now, or no timeout for a wait.
    pub due_at: Option<Timestamp>,
    /// The due time as a delay from the store's clock (takes precedence over `due_at`).
    pub due_in: Option<std::time::Duration>,
    /// The output, for a move to `succeeded`.
    pub output: Option<Value>,
    /// An operator's note to hand to the run's next attempt (an approval's note).
    pub review_note: Option<String>,
    /// The failure behind the move; also stored on the dead letter entry.
    pub error: Option<ErrorInfo>,
    /// The signal a move to `waiting_external` waits for.
    pub waiting_for: Option<String>,
    /// The signal payload delivered by a move out of `waiting_external`.
    pub signal: Option<Value>,
    /// Give back the attempt the claim charged (a graceful release, a deferral).
    pub refund_attempt: bool,
    /// Start counting attempts afresh (an operator's replay).
    pub reset_attempts: bool,
}

impl Transition {
    /// A move of `run` from `from` to `to`, by the system, with no reason given.
    pub fn new(run: RunId, from: RunState, to: RunState) -> Self {
        Transition {
            run,
            from,
            to,
            actor: Actor::System,
            reason: String::new(),
            fence: None,
            due_at: None,
            due_in: None,
            output: None,
            review_note: None,
            error: None,
            waiting_for: None,
            signal: None,
            refund_attempt: false,
            reset_attempts: false,
        }
    }

    /// Who makes the move.
    #[must_use]
    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// Why.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The caller's lease token (required out of `processing`).
    #[must_use]
    pub fn fenced(mut self, token: u64) -> Self {
        self.fence = Some(token);
        self
    }

    /// The due time of the new state.
    #[must_use]
    pub fn due_at(mut self, at: Timestamp) -> Self {
        self.due_at = Some(at);
        self
    }

    /// Due `delay` after now, by the store's clock.
    #[must_use]
    pub fn due_in(mut self, delay: std::time::Duration) -> Self {
        self.due_in = Some(delay);
        self
    }

    /// A note for the run's next attempt (see [`RunRecord::review_note`]).
    #[must_use]
    pub fn review_note(mut self, note: impl Into<String>) -> Self {
        self.review_note = Some(note.into());
        self
    }

    /// The run's output (for `succeeded`).
    #[must_use]
    pub fn output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }

    /// The failure behind the move.
    #[must_use]
    pub fn error(mut self, error: ErrorInfo) -> Self {
        self.error = Some(error);
        self
    }

    /// The signal to wait for (for `waiting_external`).
    #[must_use]
    pub fn waiting_for(mut self, signal: impl Into<String>) -> Self {
        self.waiting_for = Some(signal.into());
        self
    }

    /// The signal payload to hand to the next attempt.
    #[must_use]
    pub fn signal(mut self, payload: Value) -> Self {
        self.signal = Some(payload);
        self
    }

    /// Give back the attempt the claim charged.
    #[must_use]
    pub fn refund_attempt(mut self) -> Self {
        self.refund_attempt = true;
        self
    }

    /// Start counting attempts afresh.
    #[must_use]
    pub fn reset_attempts(mut self) -> Self {
        self.reset_attempts = true;
        self
    }

    /// What the move does to the run's own fields, the same in every store: the new state with
    /// its due time and lease (see [`enter`]), attempts refunded or reset, the signal awaited,
    /// the approval's note kept until the run next needs review or ends, and the last error.
    /// The payloads (output, signal) are the store's to write.
    pub(crate) fn apply(&self, run: MoveFields<'_>, now: Timestamp) {
        let due_at = self.due_in.map(|d| now.after(d)).or(self.due_at);
        enter(run.state, run.due_at, run.lease, self.to, due_at, now);
        if self.review_note.is_some() {
            *run.review_note = self.review_note.clone();
        } else if matches!(self.to, RunState::NeedsReview | RunState::Succeeded) {
            *run.review_note = None;
        }
        if self.refund_attempt {
            *run.attempt = run.attempt.saturating_sub(1);
        }
        if self.reset_attempts {
            *run.attempt = 0;
        }
        *run.waiting_for =
            if self.to == RunState::WaitingExternal { self.waiting_for.clone() } else { None };
        if self.to == RunState::Succeeded {
            *run.last_error = None;
        }
        if let Some(error) = &self.error {
            *run.last_error = Some(error.clone());
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
        Ok(())
    }
}

/// A request to claim due runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim {
    /// The worker claiming.
    pub owner: String,
    /// Claim only runs of these agents; empty means any agent.
    pub agents: Vec<String>,
    /// Claim only these runs (each if it is queued and due); empty means any run.
    pub runs: Vec<RunId>,
    /// At most this many runs.
    pub limit: usize,
    /// How long the lease lasts unless heartbeated.
    pub lease: Duration,
}

impl Claim {
    /// Up to `limit` due runs of any agent for worker `owner`, leased for `lease`.
    pub fn new(owner: impl Into<String>, limit: usize, lease: Duration) -> Self {
        Claim { owner: owner.into(), agents: Vec::new(), runs: Vec::new(), limit, lease }
    }

    /// Only these runs, each if it is queued and due (a pipeline run claims the stage it is
    /// about to run itself).
    #[must_use]
    pub fn runs(mut self, runs: impl IntoIterator<Item = RunId>) -> Self {
        self.runs = runs.into_iter().collect();
        self
    }

    /// Only runs of these agents.
    #[must_use]
    pub fn agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.agents = agents.into_iter().map(Into::into).collect();
        self
    }
}

/// The fields of a run a move changes, borrowed from a store's own representation of it.
pub(crate) struct MoveFields<'a> {
    pub(crate) state: &'a mut RunState,
    pub(crate) due_at: &'a mut Option<Timestamp>,
    pub(crate) lease: &'a mut Option<Lease>,
    pub(crate) attempt: &'a mut u32,
    pub(crate) waiting_for: &'a mut Option<String>,
    pub(crate) review_note: &'a mut Option<String>,
    pub(crate) last_error: &'a mut Option<ErrorInfo>,
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

/// A run entering state `to`: `queued` and `failed_transient` are due at `due_at` or now, a
/// wait has an optional timeout, other states no due time; only `processing` holds a lease.
pub(crate) fn enter(
    state: &mut RunState,
    due: &mut Option<Timestamp>,
    lease: &mut Option<Lease>,
    to: RunState,
    due_at: Option<Timestamp>,
    now: Timestamp,
) {
    *state = to;
    *due = match to {
        RunState::Queued | RunState::FailedTransient => Some(due_at.unwrap_or(now)),
        RunState::WaitingExternal => due_at,
        _ => None,
    };
    if to != RunState::Processing {
        *lease = None;
    }
}

/// A refused move: the run is not where the caller thought. Expected under concurrency; the
/// caller reads the current state and decides.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// The run is in another state than the move's `from`.
    #[error("run {run} is `{current}`, not `{expected}`")]
    State {
        /// The run.
        run: RunId,
        /// The state the caller expected.
        expected: RunState,
        /// The state it is in.
        current: RunState,
    },
    /// The caller's lease is no longer the run's lease: it expired and the run was claimed
    /// again (or recovered), so this caller must not move it.
    #[error("run {run}: lease token {token} is stale (current token {current})")]
    Fenced {
        /// The run.
        run: RunId,
        /// The caller's token.
        token: u64,
        /// The run's current token.
        current: u64,
    },
}

/// Filters for [`Store::list`](super::Store::list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs of this agent.
    pub agent: Option<String>,
    /// Only runs created at or after this time.
    pub since: Option<Timestamp>,
    /// Only children of this run.
    pub parent: Option<RunId>,
    /// Continue after this run (the `next` of the previous page).
    pub cursor: Option<RunId>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// At most this many runs; 0 means 100.
    pub limit: usize,
}

impl ListQuery {
    /// The page size used when `limit` is 0.
    pub const DEFAULT_LIMIT: usize = 100;

    /// Every run, newest first, a page of 100.
    pub fn new() -> Self {
        ListQuery::default()
    }

    /// Only runs in `state`.
    #[must_use]
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only runs of `agent`.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Only runs created at or after `since`.
    #[must_use]
    pub fn since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Only children of `parent`.
    #[must_use]
    pub fn parent(mut self, parent: RunId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Continue after `cursor`.
    #[must_use]
    pub fn cursor(mut self, cursor: RunId) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Oldest first.
    #[must_use]
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    /// At most `limit` runs.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn page_size(&self) -> usize {
        if self.limit == 0 { Self::DEFAULT_LIMIT } else { self.limit }
    }

    /// Whether `run` passes the filters other than `state` and `cursor`.
    pub(crate) fn matches(&self, run: &RunRecord) -> bool {
        self.agent.as_deref().is_none_or(|a| a == run.agent)
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.parent.is_none_or(|p| run.parent == Some(p))
            && self.state.is_none_or(|s| run.state == s)
    }
}

/// One page of runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The runs, in the order asked for.
    pub runs: Vec<RunRecord>,
    /// The cursor for the next page; `None` when this is the last.
    pub next: Option<RunId>,
}

/// How many runs are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts(pub [u64; 7]);

impl StateCounts {
    /// The count for `state`.
    pub fn get(&self, state: RunState) -> u64 {
        use crate::machine::StateMachine;
        self.0[state.index()]
    }

    /// Every state with its count, in lifecycle order.
    pub fn iter(&self) -> impl Iterator<Item = (RunState, u64)> + '_ {
        use crate::machine::StateMachine;
        RunState::STATES.iter().map(|&s| (s, self.0[s.index()]))
    }

    /// All runs.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
