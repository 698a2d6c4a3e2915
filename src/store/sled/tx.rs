//! One move as one sled transaction: the run, its history entry, its index entries and its
//! dead letter entry change together or not at all.

use ::sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use serde_json::Value;

use super::codec::{StoredRun, to_bin, to_json};
use super::keys::{index_entries, run_key_with};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Conflict, DeadLetter, ErrorInfo, HistoryEntry, StoreError};

/// Why a transaction gave up (never a storage failure: those are sled's own errors).
#[derive(Debug)]
pub(super) enum Abort {
    NotFound(RunId),
    Conflict(Conflict),
    Exists(RunId),
    Corrupt(StoreError),
}

impl Abort {
    /// The error for an abort the caller did not expect.
    pub(super) fn into_error(self) -> StoreError {
        match self {
            Abort::Corrupt(error) => error,
            Abort::NotFound(run) => StoreError::NotFound(run),
            other => {
                StoreError::InvalidRequest(format!("unexpected transaction outcome: {other:?}"))
            }
        }
    }
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

pub(super) fn abort<T>(why: Abort) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(why))
}

/// The transactional view of every tree a move may touch.
pub(super) struct Tx<'a> {
    pub(super) runs: &'a TransactionalTree,
    pub(super) by_state: &'a TransactionalTree,
    pub(super) ready: &'a TransactionalTree,
    pub(super) queue: &'a TransactionalTree,
    pub(super) locks: &'a TransactionalTree,
    pub(super) children: &'a TransactionalTree,
    pub(super) leases: &'a TransactionalTree,
    pub(super) history: &'a TransactionalTree,
    pub(super) dead_letter: &'a TransactionalTree,
    pub(super) keys: &'a TransactionalTree,
    pub(super) inputs: &'a TransactionalTree,
    pub(super) outputs: &'a TransactionalTree,
    pub(super) signals: &'a TransactionalTree,
    pub(super) notes: &'a TransactionalTree,
}

/// What a move records besides the new state.
pub(super) struct Move {
    pub(super) actor: Actor,
    pub(super) reason: String,
    pub(super) error: Option<ErrorInfo>,
    pub(super) now: Timestamp,
}

impl Tx<'_> {
    /// The stored run, or an abort if there is none.
    pub(super) fn run(&self, id: RunId) -> TxResult<StoredRun> {
        match self.runs.get(id.to_bytes())? {
            Some(bytes) => super::codec::from_bin("runs", &bytes)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e))),
            None => abort(Abort::NotFound(id)),
        }
    }

    /// Writes a payload (input, output, signal) as JSON.
    pub(super) fn put_payload(
        tree: &TransactionalTree,
        id: RunId,
        value: &Value,
    ) -> Result<(), UnabortableTransactionError> {
        tree.insert(&id.to_bytes(), to_json(value))?;
        Ok(())
    }

    /// Writes `run` (already moved to its new state) with its history entry and its index
    /// entries, replacing the entries of `before` (`None` for a new run).
    pub(super) fn write_move(
        &self,
        id: RunId,
        before: Option<&StoredRun>,
        run: &mut StoredRun,
        m: &Move,
    ) -> Result<(), UnabortableTransactionError> {
        if let Some(before) = before {
            let old = index_entries(id, before);
            self.by_state.remove(old.by_state)?;
            if let Some((key, _)) = old.ready {
                self.ready.remove(key)?;
            }
            if let Some(key) = old.queue {
                self.queue.remove(key)?;
            }
            if let Some((key, _)) = old.lease {
                self.leases.remove(key)?;
            }
            if before.state == RunState::FailedPermanent {
                self.dead_letter.remove(&id.to_bytes())?;
            }
        }
        // A processing run holds its concurrency key.
        if let Some(key) = &run.concurrency_key {
            let was = before.is_some_and(|b| b.state == RunState::Processing);
            let is = run.state == RunState::Processing;
            if was && !is {
                self.locks.remove(key.as_bytes())?;
            } else if is && !was {
                self.locks.insert(key.as_bytes(), &id.to_bytes())?;
            }
        }
        let new = index_entries(id, run);
        self.by_state.insert(new.by_state, &[])?;
        if let Some((key, value)) = new.ready {
            self.ready.insert(key, value)?;
        }
        if let Some(key) = new.queue {
            self.queue.insert(key, &[])?;
        }
        if let Some((key, value)) = new.lease {
            self.leases.insert(key, value)?;
        }
        if run.state == RunState::FailedPermanent {
            let entry = DeadLetter {
                run: id,
                agent: run.agent.clone(),
                error: m.error.clone().or_else(|| run.last_error.clone()),
                attempt: run.attempt,
                reason: m.reason.clone(),
                at: m.now,
            };
            self.dead_letter.insert(&id.to_bytes(), to_bin(&entry))?;
        }
        let entry = HistoryEntry {
            seq: run.moves,
            from: before.map(|b| b.state),
            to: run.state,
            at: m.now,
            attempt: run.attempt,
            reason: m.reason.clone(),
            actor: m.actor.clone(),
            error: m.error.clone(),
        };
        self.history.insert(run_key_with(id, &run.moves.to_be_bytes()), to_bin(&entry))?;
        run.moves += 1;
        run.updated_at = m.now;
        self.runs.insert(&id.to_bytes(), to_bin(run))?;
        Ok(())
    }
}

/// Where a run stands after moving to `to`, as far as the move itself decides (see
/// [`enter`](crate::store::enter)).
pub(super) fn moved(
    before: &StoredRun,
    to: RunState,
    due_at: Option<Timestamp>,
    now: Timestamp,
) -> StoredRun {
    let mut run = before.clone();
    crate::store::enter(&mut run.state, &mut run.due_at, &mut run.lease, to, due_at, now);
    run
}
