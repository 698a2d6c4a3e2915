//! A run as people look at it: its record, history, effects, notes and stages.

use serde::{Deserialize, Serialize};

use crate::lifecycle::{RunId, RunState};
use crate::store::{EffectRecord, HistoryEntry, ListQuery, Note, RunRecord, Store, StoreError};

/// A run with everything recorded about it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct RunView {
    /// The run's record (input, output, state, lease, last error).
    pub run: RunRecord,
    /// Every move, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Its journaled effects (and the runtime's markers, named `steadfast/…`).
    pub effects: Vec<EffectRecord>,
    /// Notes by operators and agents, oldest first.
    pub notes: Vec<Note>,
    /// For a pipeline run, its stages' runs (a fan-out's items among them), oldest first.
    pub stages: Vec<StageView>,
}

/// One stage run of a pipeline run, in brief.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct StageView {
    /// The stage's run.
    pub id: RunId,
    /// Its agent, `<pipeline>.<index>.<agent>`.
    pub agent: String,
    /// Its state.
    pub state: RunState,
    /// The stage's index in the pipeline.
    pub stage: Option<u32>,
}

/// Whether an effect of a run's journal is the runtime's own bookkeeping (the markers named
/// `steadfast/…`, a pipeline's `fan-in note N`) rather than one its agent made.
pub fn is_internal_effect(name: &str) -> bool {
    name.starts_with("steadfast/") || name.starts_with("fan-in note ")
}

/// Why a run is where it is, in words: for a dead letter its error, otherwise the reason of
/// its last move (why it is held for review, why it waits). Empty if the store cannot say.
pub async fn last_reason(store: &dyn Store, run: &RunRecord) -> String {
    if let Some(error) = &run.last_error
        && run.state == RunState::FailedPermanent
    {
        return error.to_string();
    }
    store
        .history(run.id)
        .await
        .ok()
        .and_then(|h| h.last().map(|e| e.reason.clone()))
        .unwrap_or_default()
}

/// How many stage runs a view lists at most.
const MAX_STAGES: usize = 10_000;

impl RunView {
    /// The view of run `id`, or `None` if there is no such run.
    pub async fn load(store: &dyn Store, id: RunId) -> Result<Option<RunView>, StoreError> {
        let Some(run) = store.get(id).await? else { return Ok(None) };
        let history = store.history(id).await?;
        let effects = store.effects(id).await?;
        let notes = store.notes(id).await?;
        let stages = store
            .list(ListQuery::new().parent(id).oldest_first().limit(MAX_STAGES))
            .await?
            .runs
            .into_iter()
            .map(|s| StageView { id: s.id, agent: s.agent, state: s.state, stage: s.stage })
            .collect();
        Ok(Some(RunView { run, history, effects, notes, stages }))
    }
}
