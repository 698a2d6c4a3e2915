//! The sled store's writes: each through the committer (group commit), checking before it
//! writes, so a refused one aborts only itself.

use std::time::Duration;

use serde_json::Value;

use super::codec::{decode_run, encode_run, from_json, to_json};
use super::keys::*;
use super::tx::{Abort, Tx, TxResult, abort};
use super::{SledStore, backend};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::store::backend::{
    Expiry, Plan, RunHead, check_new_run, check_transition, plan_claim, plan_create, plan_expiry,
    plan_heartbeat, plan_move,
};
use crate::store::{
    Actor, Claim, ConflictResult, Created, EffectRecord, NewRun, Note, RunRecord, StoreError,
    Transition,
};

pub(super) async fn create(store: &SledStore, new: NewRun) -> Result<Created, StoreError> {
    check_new_run(&new)?;
    let now = store.now();
    let id = RunId::new();
    let key = idempotency_key(&new.agent, &new.idempotency_key);
    let input = new.input.clone();
    let lazy = new.claim_for.is_some() && !new.durable_claim;
    let create = move |tx: &Tx<'_>| {
        if let Some(existing) = tx.keys.get(&key)? {
            return abort(Abort::Exists(run_from_value(&existing)));
        }
        let mut run = tx.apply(None, plan_create(id, &new, now))?;
        if let Some((owner, lease)) = &new.claim_for
            && let Some(claimed) = claim_plan(tx, id, &run, owner, *lease, now)?
        {
            run = tx.apply(Some(&run), claimed)?;
        }
        Ok(run)
    };
    let outcome = if lazy {
        let (outcome, batch) = store.write_lazy(create).await?;
        if outcome.as_ref().is_ok_and(|run| run.state == RunState::Processing) {
            store.claimed_unsynced([id], batch);
        }
        outcome
    } else {
        store.write(create).await?
    };
    match outcome {
        Ok(run) => Ok(Created { run: run.into_record(id, input, None, None), created: true }),
        Err(Abort::Exists(existing)) => {
            // Written by an earlier batch; durable unless that was a lazy creation, so
            // make sure before answering.
            if !lazy {
                store.engine()?.committer.sync().await?;
            }
            let run = store.get_record(existing)?.ok_or(StoreError::NotFound(existing))?;
            Ok(Created { run, created: false })
        }
        Err(other) => Err(other.into_error()),
    }
}

pub(super) async fn wait_durable(store: &SledStore, run: RunId) -> Result<(), StoreError> {
    let applied =
        store.inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner()).remove(&run);
    let Some(applied) = applied else { return Ok(()) };
    // Only the opening that applied the claim can tell whether it synced it: once it failed
    // (a write of anyone's met a full disk), a batch it did not sync may be gone from disk,
    // whoever opens the database again, and whenever.
    match store.current_engine() {
        Some(engine) if engine.id == applied.engine => {
            if engine.committer.is_synced(applied.batch) {
                Ok(())
            } else if engine.committer.failed() {
                Err(lost_claim(run))
            } else {
                // Joins the next group commit, which covers every batch applied before it.
                engine.committer.sync().await
            }
        }
        _ => Err(lost_claim(run)),
    }
}

/// The refusal of a claim that a failed write may have lost.
fn lost_claim(run: RunId) -> StoreError {
    StoreError::Backend {
        context: "making a claim durable",
        source: Box::new(std::io::Error::other(format!(
            "the claim of run {run} was lost with a failed write; the run is claimed again"
        ))),
    }
}

pub(super) async fn transition(
    store: &SledStore,
    request: Transition,
) -> ConflictResult<RunRecord> {
    let id = request.run;
    check_transition(&request)?;
    let now = store.now();
    let outcome = store
        .write(move |tx| {
            let before = tx.run(id)?;
            match plan_move(id, &before, &request, now) {
                Ok(plan) => tx.apply(Some(&before), plan),
                Err(conflict) => abort(Abort::Conflict(conflict)),
            }
        })
        .await?;
    match conflict_result(outcome)? {
        Ok(run) => Ok(Ok(store.assemble(id, run)?)),
        Err(conflict) => Ok(Err(conflict)),
    }
}

pub(super) async fn claim(store: &SledStore, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    // Scan more candidates than needed: some may be taken by an earlier claim in the batch.
    let want = claim.limit.saturating_mul(2).max(claim.limit + 8);
    let candidates = if !claim.runs.is_empty() {
        // Named runs: `move_each` below checks that each is queued and due.
        let mut ids = Vec::with_capacity(claim.runs.len());
        for id in &claim.runs {
            if claim.agents.is_empty()
                || store.get_record(*id)?.is_some_and(|r| claim.agents.contains(&r.agent))
            {
                ids.push(*id);
            }
        }
        ids
    } else if claim.agents.is_empty() {
        let queued = state_byte(RunState::Queued);
        let mut ids = Vec::new();
        for entry in store.due_entries(READY_QUEUED)? {
            let (id, state, _) = entry?;
            if state == queued {
                ids.push(id);
                if ids.len() >= want {
                    break;
                }
            }
        }
        ids
    } else {
        // Each agent's own queue, merged by due time.
        let end = store.now().after(Duration::from_millis(1));
        let mut due = Vec::new();
        for agent in &claim.agents {
            let from = queue_key(agent, Timestamp::ZERO, RunId::from_bytes([0; 16]));
            let to = queue_key(agent, end, RunId::from_bytes([0; 16]));
            for item in store.engine()?.trees.queue.range(from..to).take(want) {
                let (key, _) = item.map_err(|e| backend("scanning an agent's queue", e))?;
                due.push(queue_key_parts(&key, agent.len()));
            }
        }
        due.sort_unstable();
        due.into_iter().take(want).map(|(_, id)| id).collect()
    };
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let now = store.now();
    // Not waiting for the sync: a claim lost in a crash only means the run is claimed
    // again, as long as nothing acted on it; the claimer waits with `wait_durable` before
    // its agent runs, and any durable write after it makes it durable.
    let (claimed, batch) = store
        .write_lazy(move |tx| {
            move_each(tx, &candidates, claim.limit, |id, before| {
                claim_plan(tx, id, before, &claim.owner, claim.lease, now)
            })
        })
        .await?;
    let claimed = claimed.map_err(Abort::into_error)?;
    store.claimed_unsynced(claimed.iter().map(|(id, _)| *id), batch);
    claimed.into_iter().map(|(id, run)| store.assemble(id, run)).collect()
}

pub(super) async fn heartbeat(
    store: &SledStore,
    id: RunId,
    token: u64,
    extend: Duration,
) -> ConflictResult<Timestamp> {
    let now = store.now();
    // A lost heartbeat costs at most an early lease expiry after a crash, which the crash
    // makes moot: no sync.
    let (outcome, _) = store
        .write_lazy(move |tx| {
            let before = tx.run(id)?;
            let run = match plan_heartbeat(id, &before, token, extend, now) {
                Ok(run) => run,
                Err(conflict) => return abort(Abort::Conflict(conflict)),
            };
            let expires = run.lease.as_ref().map_or(now, |l| l.expires_at);
            if let Some(lease) = &before.lease {
                tx.leases.remove(lease_key(lease.expires_at, id))?;
            }
            tx.leases.insert(lease_key(expires, id), &token.to_be_bytes()[..])?;
            tx.runs.insert(id.to_bytes(), encode_run(&run))?;
            Ok(expires)
        })
        .await?;
    conflict_result(outcome)
}

pub(super) async fn recover_expired(
    store: &SledStore,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    let now = store.now();
    let end = lease_key(now.after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
    let orphans: std::collections::HashMap<RunId, u64> = {
        let orphans = store.inner.orphans.lock().unwrap_or_else(|p| p.into_inner());
        orphans.iter().take(limit).map(|(id, token)| (*id, *token)).collect()
    };
    let mut candidates: Vec<RunId> = orphans.keys().copied().collect();
    let expired: Vec<RunId> = store
        .engine()?
        .trees
        .leases
        .range(..end)
        .take(limit)
        .map(|item| {
            item.map(|(key, _)| lease_key_parts(&key).1).map_err(|e| backend("scanning leases", e))
        })
        .collect::<Result<_, _>>()?;
    candidates.extend(expired.into_iter().filter(|id| !orphans.contains_key(id)));
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let found = orphans.clone();
    let recovered = store
        .write(move |tx| {
            move_each(tx, &candidates, limit, |id, before| {
                // An ended process's lease (the same one found at open), or an expired one;
                // heartbeated or finished since the scan, it is left alone.
                let why = found.get(&id).map_or(Expiry::Expired, |token| Expiry::Orphaned(*token));
                Ok(plan_expiry(id, before, why, now))
            })
        })
        .await?
        .map_err(Abort::into_error)?;
    // Looked at, moved or not (finished since, or claimed again under a new token): done with.
    if !orphans.is_empty() {
        let mut left = store.inner.orphans.lock().unwrap_or_else(|p| p.into_inner());
        left.retain(|id, _| !orphans.contains_key(id));
    }
    recovered.into_iter().map(|(id, run)| store.assemble(id, run)).collect()
}

pub(super) async fn record_effect(
    store: &SledStore,
    run: RunId,
    name: &str,
    result: Value,
) -> Result<EffectRecord, StoreError> {
    // One tree, one compare-and-swap: no transaction (which would cost sled two log
    // writes), then a sync barrier that shares the committer's next sync.
    let stored = match store
        .engine()?
        .trees
        .runs
        .get(run.to_bytes())
        .map_err(|e| backend("reading a run", e))?
    {
        Some(bytes) => decode_run(&bytes)?,
        None => return Err(StoreError::NotFound(run)),
    };
    let effect = EffectRecord {
        run,
        name: name.to_owned(),
        result,
        attempt: stored.attempt,
        recorded_at: store.now(),
    };
    let swapped = store
        .engine()?
        .trees
        .effects
        .compare_and_swap(
            run_key_with(run, name.as_bytes()),
            None as Option<&[u8]>,
            Some(to_json(&effect)),
        )
        .map_err(|e| backend("recording an effect", e))?;
    // Also when another caller recorded it first: that record must be durable before we
    // hand it out.
    store.engine()?.committer.sync().await?;
    match swapped {
        Ok(()) => Ok(effect),
        Err(existing) => from_json("effects", &existing.current.expect("a present value")),
    }
}

pub(super) async fn add_note(
    store: &SledStore,
    run: RunId,
    author: Actor,
    text: &str,
) -> Result<Note, StoreError> {
    let seq = store.engine()?.db.generate_id().map_err(|e| backend("numbering a note", e))?;
    let note = Note { run, author, text: text.to_owned(), at: store.now() };
    let written = note.clone();
    store
        .write(move |tx| {
            tx.run(run)?;
            tx.notes.insert(run_key_with(run, &seq.to_be_bytes()), to_json(&written))?;
            Ok(())
        })
        .await?
        .map_err(Abort::into_error)?;
    Ok(note)
}

/// Kept in the `meta` tree under `schema/<hash>`; flushed before it returns.
pub(super) async fn put_schema(
    store: &SledStore,
    hash: &str,
    schema: &str,
) -> Result<(), StoreError> {
    let key = format!("schema/{hash}");
    let meta = &store.engine()?.trees.meta;
    if meta.get(&key).map_err(|e| backend("reading a schema", e))?.is_some() {
        return Ok(());
    }
    meta.insert(key, schema.as_bytes()).map_err(|e| backend("keeping a schema", e))?;
    meta.flush_async().await.map_err(|e| backend("flushing a schema", e))?;
    Ok(())
}

/// `meta`: `agent/<name>` → the control as JSON; durable before it returns.
pub(super) async fn set_agent_control(
    store: &SledStore,
    agent: &str,
    control: Option<crate::store::AgentControl>,
) -> Result<(), StoreError> {
    let key = format!("agent/{agent}");
    let engine = store.engine()?;
    let meta = &engine.trees.meta;
    match control {
        Some(control) => meta.insert(key, to_json(&control)).map(drop),
        None => meta.remove(key).map(drop),
    }
    .map_err(|e| backend("keeping an agent control", e))?;
    // A direct write before it: the committer's next sync covers it.
    engine.committer.sync().await
}

/// A conflict-or-error answer from an operation's outcome.
fn conflict_result<T>(outcome: Result<T, Abort>) -> ConflictResult<T> {
    match outcome {
        Ok(value) => Ok(Ok(value)),
        Err(Abort::Conflict(conflict)) => Ok(Err(conflict)),
        Err(other) => Err(other.into_error()),
    }
}

/// The claim of `before` by `owner` with a lease of `lease` from `now`, or `None` if it is not
/// queued, not due yet (or taken by an earlier claim in the batch), or a run with the same
/// concurrency key is processing (see [`plan_claim`]).
fn claim_plan(
    tx: &Tx<'_>,
    id: RunId,
    before: &RunHead,
    owner: &str,
    lease: Duration,
    now: Timestamp,
) -> TxResult<Option<Plan>> {
    plan_claim(id, before, owner, lease, now, |key| Ok(tx.locks.get(key.as_bytes())?.is_some()))
}

/// Applies the plan `step` makes for each of `candidates`, up to `limit`, within one commit;
/// candidates gone since the caller's scan are skipped.
fn move_each(
    tx: &Tx<'_>,
    candidates: &[RunId],
    limit: usize,
    step: impl Fn(RunId, &RunHead) -> TxResult<Option<Plan>>,
) -> TxResult<Vec<(RunId, RunHead)>> {
    let mut moved = Vec::new();
    for &id in candidates {
        if moved.len() >= limit {
            break;
        }
        let before = match tx.run(id) {
            Ok(run) => run,
            Err(super::tx::TxError::Abort(Abort::NotFound(_))) => continue,
            Err(other) => return Err(other),
        };
        if let Some(plan) = step(id, &before)? {
            moved.push((id, tx.apply(Some(&before), plan)?));
        }
    }
    Ok(moved)
}

pub(super) async fn restore(
    store: &SledStore,
    archive: crate::store::RunArchive,
) -> Result<bool, StoreError> {
    archive.check()?;
    let id = archive.run.id;
    let engine = store.engine()?;
    let mut note_ids = Vec::with_capacity(archive.notes.len());
    for _ in &archive.notes {
        note_ids.push(engine.db.generate_id().map_err(|e| backend("numbering a note", e))?);
    }
    let restored = store
        .write(move |tx| {
            let key = idempotency_key(&archive.run.agent, &archive.run.idempotency_key);
            if tx.runs.get(id.to_bytes())?.is_some() || tx.keys.get(&key)?.is_some() {
                return abort(Abort::Exists(id));
            }
            tx.apply(None, crate::store::restore_plan(&archive))?;
            for entry in &archive.history[..archive.history.len() - 1] {
                let at = run_key_with(id, &entry.seq.to_be_bytes());
                tx.history.insert(at, super::codec::to_bin(entry))?;
            }
            for effect in &archive.effects {
                tx.effects.insert(run_key_with(id, effect.name.as_bytes()), to_json(effect))?;
            }
            for attempt in &archive.starts {
                tx.starts.insert([&id.to_bytes()[..], &attempt.to_be_bytes()].concat(), &[][..])?;
            }
            for (note, seq) in archive.notes.iter().zip(&note_ids) {
                tx.notes.insert(run_key_with(id, &seq.to_be_bytes()), to_json(note))?;
            }
            Ok(())
        })
        .await?;
    match restored {
        Ok(()) => Ok(true),
        Err(Abort::Exists(_)) => Ok(false),
        Err(other) => Err(other.into_error()),
    }
}
