//! What a [`Store`](super::Store) is asked to do: create a run, move it, claim due runs; and
//! the conflict a move can meet.

use std::time::Duration;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};

use super::records::{Actor, RunRecord};

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
    /// With `claim_for`: answer only once the creation and its claim are durable (a
    /// submission whose run the runtime starts at once).
    pub(crate) durable_claim: bool,
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
            durable_claim: false,
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
    /// Runs to create with the move, in the same atomic write: an outbox, for what must
    /// follow the move even if the process dies right after it (a notification of a run held
    /// for review, say). Each is created `queued` unless its agent already has a run with
    /// its key. The store suffixes each key with `:` and the move's sequence number in the
    /// run's history ([`HistoryEntry::seq`](super::HistoryEntry::seq)), so every move's
    /// follow-ups are its own: a move made again later (held for review a second time) is
    /// followed again, and nothing is followed twice. A refused move creates nothing.
    pub follow_ups: Vec<NewRun>,
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
            follow_ups: Vec::new(),
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

    /// Also creates `run` in the same write as the move (see [`Transition::follow_ups`]; its
    /// key gets the move's sequence number).
    #[must_use]
    pub fn follow_up(mut self, run: NewRun) -> Self {
        self.follow_ups.push(run);
        self
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
