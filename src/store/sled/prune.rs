//! Retention on sled: find the runs a [`Retention`] policy takes, then delete them, a bounded
//! number per commit, with everything that belongs to them.
//!
//! Candidates are read outside the committer (a scan of `by_state`); each commit checks its
//! runs again as the batch sees them and leaves alone any that moved since (an operator's
//! replay racing the prune), so a prune never deletes a run that is not at rest.
//!
//! Space: sled 0.34 is log-structured. A removal appends a tombstone; the pages it frees are
//! reclaimed when sled's segment cleaner rewrites the live pages of segments that fell below
//! its utilisation threshold into new ones and reuses the old segments. The file does not
//! shrink, but it stops growing: new writes reuse the freed segments (measured in
//! BENCHMARKS.md, "Retention").

use ::sled::IVec;

use super::codec::decode_run;
use super::keys::{counter_keys, idempotency_key, index_entries};
use super::tx::{Abort, Tx, TxError, TxResult};
use super::{SledStore, backend};
use crate::lifecycle::RunId;
use crate::store::retention::{Resting, gather};
use crate::store::{Pruned, Retention, StoreError};

/// A run to delete, with the number of moves it had when it was read: if it moved since, it
/// is no longer the run the policy took.
type Doomed = (RunId, u32);

pub(super) async fn prune(store: &SledStore, policy: Retention) -> Result<Pruned, StoreError> {
    policy.check().map_err(StoreError::InvalidRequest)?;
    let now = store.now();
    let mut pruned = Pruned::default();
    for state in policy.states.clone() {
        // The scan resumes after the last key it saw, so runs it keeps are read once.
        let mut from = super::keys::state_key(state, RunId::from_bytes([0; 16]));
        loop {
            let (groups, next, kept) = candidates(store, &policy, now, &from)?;
            pruned.kept += kept;
            if !groups.is_empty() {
                pruned.runs += delete(store, groups).await?;
            }
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    Ok(pruned)
}

/// Up to `policy.batch` runs to delete, as groups (a run and its stage runs), from the
/// `by_state` keys at `from` on; the key to resume at; how many matched but were kept.
#[allow(clippy::type_complexity)]
fn candidates(
    store: &SledStore,
    policy: &Retention,
    now: crate::clock::Timestamp,
    from: &[u8],
) -> Result<(Vec<Vec<Doomed>>, Option<Vec<u8>>, u64), StoreError> {
    let engine = store.engine()?;
    let t = &engine.trees;
    let state = from[0];
    let mut groups = Vec::new();
    let (mut runs, mut kept) = (0, 0);
    for item in t.by_state.range(from.to_vec()..) {
        let (key, _) = item.map_err(|e| backend("scanning runs by state", e))?;
        if key[0] != state {
            return Ok((groups, None, kept));
        }
        if runs >= policy.batch {
            return Ok((groups, Some(key.to_vec()), kept));
        }
        let id = RunId::from_bytes(key[1..17].try_into().expect("by_state key layout"));
        let Some(run) = resting(t, id)? else { continue };
        if !policy.takes_resting(&run, now) {
            continue;
        }
        match gather(policy, run, |parent| children(t, parent))? {
            Some(group) => {
                runs += group.len();
                groups.push(group.iter().map(|r| (r.id, r.moves)).collect());
            }
            None => kept += 1,
        }
    }
    Ok((groups, None, kept))
}

/// What the retention rule reads of run `id` (its stored part only, no payloads).
fn resting(t: &super::Trees, id: RunId) -> Result<Option<Resting>, StoreError> {
    let Some(bytes) = t.runs.get(id.to_bytes()).map_err(|e| backend("reading a run", e))? else {
        return Ok(None);
    };
    let run = decode_run(&bytes)?;
    Ok(Some(Resting {
        id,
        state: run.state,
        moves: run.moves,
        has_parent: run.parent.is_some(),
        moved_at: run.updated_at,
    }))
}

/// The stage runs of `parent`.
fn children(t: &super::Trees, parent: RunId) -> Result<Vec<Resting>, StoreError> {
    let mut runs = Vec::new();
    for item in t.children.scan_prefix(parent.to_bytes()) {
        let (key, _) = item.map_err(|e| backend("reading stage runs", e))?;
        let id = RunId::from_bytes(key[16..32].try_into().expect("children key layout"));
        if let Some(run) = resting(t, id)? {
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Deletes `groups` in one durable commit; a group any of whose runs moved since it was read
/// is left whole. Returns how many runs were deleted.
async fn delete(store: &SledStore, groups: Vec<Vec<Doomed>>) -> Result<u64, StoreError> {
    let deleted = store
        .write(move |tx| {
            let mut deleted = 0;
            'groups: for group in &groups {
                let mut runs = Vec::with_capacity(group.len());
                for (id, moves) in group {
                    let Some(bytes) = tx.runs.get(id.to_bytes())? else { continue 'groups };
                    let run = decode_run(&bytes).map_err(|e| TxError::Abort(Abort::Corrupt(e)))?;
                    if run.moves != *moves {
                        continue 'groups; // moved since: no longer what the policy took
                    }
                    runs.push((*id, run));
                }
                for (id, run) in &runs {
                    delete_run(tx, *id, run)?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await?;
    deleted.map_err(|abort| abort.into_error())
}

/// Removes `run` and everything kept for it: payloads, history, notes, effects, starts, its dead
/// letter, its idempotency key, its index entries and its place in its parent's stages, and
/// takes it off the counts.
fn delete_run(tx: &Tx<'_>, id: RunId, run: &crate::store::RunHead) -> TxResult<()> {
    let key = id.to_bytes();
    for tree in [&tx.runs, &tx.inputs, &tx.outputs, &tx.signals, &tx.dead_letter] {
        tree.remove(key)?;
    }
    for tree in [&tx.history, &tx.notes, &tx.effects, &tx.starts, &tx.children] {
        for entry in tree.keys_with_prefix(&key)? {
            tree.remove(entry)?;
        }
    }
    if let Some(parent) = run.parent {
        tx.children.remove([&parent.to_bytes()[..], &key[..]].concat())?;
    }
    // The key, unless a later run took it over (keys are unique per agent).
    let unique = idempotency_key(&run.agent, &run.idempotency_key);
    if tx.keys.get(&unique)?.is_some_and(|v: IVec| v.as_ref() == key) {
        tx.keys.remove(unique)?;
    }
    let entries = index_entries(id, run);
    tx.by_state.remove(entries.by_state)?;
    if let Some((ready, _)) = entries.ready {
        tx.ready.remove(ready)?;
    }
    if let Some(queue) = entries.queue {
        tx.queue.remove(queue)?;
    }
    if let Some((lease, _)) = entries.lease {
        tx.leases.remove(lease)?;
    }
    for counter in counter_keys(&run.agent, run.state) {
        tx.count(&counter, -1)?;
    }
    Ok(())
}
