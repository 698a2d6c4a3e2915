//! [`RunHead`]: a run without its payloads, the part every move rewrites.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};

use super::records::{Lease, RunRecord};

/// A run without its id and its payloads (input, output, signal): what a move changes, and
/// what a backend keeps per run besides the payloads, which are written once each (see
/// [`Plan`](super::backend::Plan)). [`RunHead::into_record`] puts a [`RunRecord`] back
/// together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunHead {
    /// The agent (or pipeline) that runs it.
    pub agent: String,
    /// Where the run is in its lifecycle.
    pub state: RunState,
    /// The key that deduplicates submissions, unique per agent.
    pub idempotency_key: String,
    /// Attempts started so far.
    pub attempt: u32,
    /// When the run is next due (see [`RunRecord::due_at`]).
    pub due_at: Option<Timestamp>,
    /// The current lease, while `processing`.
    pub lease: Option<Lease>,
    /// The last fencing token handed out.
    pub fence: u64,
    /// The parent run, for a pipeline's stage.
    pub parent: Option<RunId>,
    /// The stage index within the parent pipeline.
    pub stage: Option<u32>,
    /// A hash of the input type's JSON Schema.
    pub input_schema: Option<String>,
    /// A hash of the output type's JSON Schema.
    pub output_schema: Option<String>,
    /// Runs with the same concurrency key never process at the same time.
    pub concurrency_key: Option<String>,
    /// The signal a `waiting_external` run waits for.
    pub waiting_for: Option<String>,
    /// The note of the operator who last approved the run out of review.
    pub review_note: Option<String>,
    /// The last failure.
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

impl RunHead {
    /// The full record of run `id`, with its payloads.
    pub fn into_record(
        self,
        id: RunId,
        input: Value,
        output: Option<Value>,
        signal: Option<Value>,
    ) -> RunRecord {
        RunRecord {
            id,
            agent: self.agent,
            state: self.state,
            input,
            output,
            idempotency_key: self.idempotency_key,
            attempt: self.attempt,
            due_at: self.due_at,
            lease: self.lease,
            fence: self.fence,
            parent: self.parent,
            stage: self.stage,
            input_schema: self.input_schema,
            output_schema: self.output_schema,
            concurrency_key: self.concurrency_key,
            waiting_for: self.waiting_for,
            signal,
            review_note: self.review_note,
            last_error: self.last_error,
            moves: self.moves,
            format: self.format,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The head of `run`, copied without its payloads (the input, output and signal, which a
    /// plan never reads).
    pub fn of(run: &RunRecord) -> Self {
        RunHead {
            agent: run.agent.clone(),
            state: run.state,
            idempotency_key: run.idempotency_key.clone(),
            attempt: run.attempt,
            due_at: run.due_at,
            lease: run.lease.clone(),
            fence: run.fence,
            parent: run.parent,
            stage: run.stage,
            input_schema: run.input_schema.clone(),
            output_schema: run.output_schema.clone(),
            concurrency_key: run.concurrency_key.clone(),
            waiting_for: run.waiting_for.clone(),
            review_note: run.review_note.clone(),
            last_error: run.last_error.clone(),
            moves: run.moves,
            format: run.format,
            created_at: run.created_at,
            updated_at: run.updated_at,
        }
    }

    /// The token of the run's current lease, or its last fencing token if it holds none: what
    /// a move's fence is compared with.
    pub fn lease_token(&self) -> u64 {
        self.lease.as_ref().map_or(self.fence, |l| l.token)
    }
}

impl RunRecord {
    /// Takes the fields of `head`, keeping the payloads (a plan's payload changes are the
    /// caller's to apply).
    pub(crate) fn set_head(&mut self, head: RunHead) {
        let (input, output, signal) =
            (std::mem::take(&mut self.input), self.output.take(), self.signal.take());
        *self = head.into_record(self.id, input, output, signal);
    }
}
