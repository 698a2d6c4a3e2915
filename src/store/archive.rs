//! [`RunArchive`]: everything a store keeps of one run, to move a deployment between stores
//! (`steadfast export` / `import`, [`Store::restore`](super::Store::restore)), and
//! [`archive`], which reads one through the contract.

use serde::{Deserialize, Serialize};

use super::records::{DeadLetter, EffectRecord, HistoryEntry, Note, RunRecord};
use super::{Store, StoreError};

/// One run with everything kept for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunArchive {
    /// The run, with its payloads.
    pub run: RunRecord,
    /// Its history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Its journaled effects.
    pub effects: Vec<EffectRecord>,
    /// The attempts whose start was recorded.
    pub starts: Vec<u32>,
    /// Operators' notes, oldest first.
    pub notes: Vec<Note>,
    /// Its dead letter entry, while it is a dead letter.
    pub dead_letter: Option<DeadLetter>,
}

impl RunArchive {
    /// Checks what a store must not take: history that does not match the run (its length is
    /// the run's move count, entries numbered from 0 and ending in its state), effects, starts
    /// or notes of another run, a dead letter entry on a run that is not one.
    pub fn check(&self) -> Result<(), StoreError> {
        let run = &self.run;
        let bad = |why: String| Err(StoreError::InvalidRequest(format!("run {}: {why}", run.id)));
        if run.agent.is_empty() || run.idempotency_key.is_empty() || run.agent.contains('\0') {
            return bad("a run needs an agent name (without NUL) and an idempotency key".into());
        }
        if run.moves == 0
            || self.history.len() != run.moves as usize
            || self.history.iter().enumerate().any(|(i, e)| e.seq as usize != i)
        {
            return bad(format!(
                "{} history entries numbered 0.. were expected, as the run has moved {} times",
                run.moves, run.moves
            ));
        }
        if self.history.last().is_some_and(|e| e.to != run.state) {
            return bad("its last history entry does not end in its state".into());
        }
        if self.effects.iter().any(|e| e.run != run.id)
            || self.notes.iter().any(|n| n.run != run.id)
        {
            return bad("an effect or a note of another run".into());
        }
        let dead = run.state == crate::lifecycle::RunState::FailedPermanent;
        if self.dead_letter.as_ref().is_some_and(|d| d.run != run.id || !dead) {
            return bad("a dead letter entry on a run that is not this dead letter".into());
        }
        Ok(())
    }
}

/// Reads run `run` with everything kept for it, through the contract; `None` if it is gone.
pub async fn archive<S: Store + ?Sized>(
    store: &S,
    run: RunRecord,
    dead_letter: Option<DeadLetter>,
) -> Result<RunArchive, StoreError> {
    let id = run.id;
    Ok(RunArchive {
        history: store.history(id).await?,
        effects: store.effects(id).await?,
        starts: store.starts(id).await?,
        notes: store.notes(id).await?,
        dead_letter,
        run,
    })
}

/// The plan that writes `archive`'s run as a creation would (its key, input, parent link,
/// indexes, counter, concurrency key if it is processing, dead letter entry, payloads) with
/// its last history entry; the backend writes the earlier entries, the effects, starts and
/// notes itself. Call [`RunArchive::check`] first.
pub(crate) fn restore_plan(archive: &RunArchive) -> super::backend::Plan {
    use super::backend::{CountDelta, DeadLetterChange, LockChange, Payload, Plan, RunHead};
    let run = &archive.run;
    let head = RunHead::of(run);
    let lock = (run.state == crate::lifecycle::RunState::Processing)
        .then(|| run.concurrency_key.clone().map(LockChange::Take))
        .flatten();
    Plan {
        run: run.id,
        from: None,
        head,
        history: archive.history.last().cloned().expect("checked: a run has a history"),
        input: Some(run.input.clone()),
        output: run.output.clone().map_or(Payload::Keep, Payload::Put),
        signal: run.signal.clone().map_or(Payload::Keep, Payload::Put),
        dead_letter: archive.dead_letter.clone().map(DeadLetterChange::Add),
        lock,
        counts: vec![CountDelta { state: run.state, delta: 1 }],
        follow_ups: Vec::new(),
    }
}
