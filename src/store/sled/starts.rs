//! The attempts whose start was recorded (the runtime's crash accounting, see
//! `Store::record_start`), kept apart from the effects journal: the tree `starts`, keyed
//! run id | attempt (big-endian), with no value.

use super::{SledStore, backend};
use crate::lifecycle::RunId;
use crate::store::StoreError;

/// The key of attempt `attempt` of `run`.
fn key(run: RunId, attempt: u32) -> Vec<u8> {
    [&run.to_bytes()[..], &attempt.to_be_bytes()].concat()
}

pub(super) async fn record_start(
    store: &SledStore,
    run: RunId,
    attempt: u32,
) -> Result<(), StoreError> {
    let engine = store.engine()?;
    let known = engine.trees.runs.contains_key(run.to_bytes());
    if !known.map_err(|e| backend("reading a run", e))? {
        return Err(StoreError::NotFound(run));
    }
    // One insert, no transaction (as an effect's record), then a sync barrier that shares
    // the committer's next sync: durable before the agent starts.
    engine
        .trees
        .starts
        .insert(key(run, attempt), &[])
        .map_err(|e| backend("recording a start", e))?;
    engine.committer.sync().await
}

pub(super) async fn starts(store: &SledStore, run: RunId) -> Result<Vec<u32>, StoreError> {
    let engine = store.engine()?;
    let mut starts = Vec::new();
    for item in engine.trees.starts.scan_prefix(run.to_bytes()) {
        let (key, _) = item.map_err(|e| backend("reading starts", e))?;
        let attempt = key.get(16..20).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        starts.extend(attempt);
    }
    Ok(starts)
}
