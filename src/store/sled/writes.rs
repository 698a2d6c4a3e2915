//! The sled store's writes: each through the committer (group commit), checking before it
//! writes, so a refused one aborts only itself.

use std::time::Duration;

use serde_json::Value;

use super::codec::{StoredRun, from_bin, from_json, to_json};
use super::keys::*;
use super::tx::{Abort, Move, Tx, TxResult, abort, moved};
use super::{SledStore, backend};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::store::{
    Actor, Claim, ConflictResult, Created, EffectRecord, FORMAT_VERSION, NewRun, Note, RunRecord,
    StoreError, Transition,
};

pub(super) async fn create(store: &SledStore, new: NewRun) -> Result<Created, StoreError> {
    new.check()?;
    let now = store.now();
    let id = RunId::new();
    let key = idempotency_key(&new.agent, &new.idempotency_key);
    let input = new.input.clone();
    let lazy = new.claim_for.is_some() && !new.durable_claim;
    let create = move |tx: &Tx<'_>| {
        if let Some(existing) = tx.keys.get(&key)? {
            return abort(Abort::Exists(run_from_value(&existing)));
        }
        let mut run = insert_run(tx, id, &new, now)?;
        if let Some((owner, lease)) = &new.claim_for
            && let Some((mut claimed, m)) = claim_step(tx, &run, owner, *lease, now)
        {
            tx.write_move(id, Some(&run), &mut claimed, &m)?;
            run = claimed;
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

/// Writes the new `queued` run `id` (its key, input, parent link and first history entry);
/// whether its key is free is the caller's to check.
fn insert_run(tx: &Tx<'_>, id: RunId, new: &NewRun, now: Timestamp) -> TxResult<StoredRun> {
    let mut run = StoredRun {
        agent: new.agent.clone(),
        state: RunState::INITIAL,
        idempotency_key: new.idempotency_key.clone(),
        attempt: 0,
        due_at: Some(new.due_at.unwrap_or(now)),
        lease: None,
        fence: 0,
        parent: new.parent.map(RunId::to_bytes),
        stage: new.stage,
        input_schema: new.input_schema.clone(),
        output_schema: new.output_schema.clone(),
        concurrency_key: new.concurrency_key.clone(),
        waiting_for: None,
        review_note: None,
        last_error: None,
        moves: 0,
        format: FORMAT_VERSION,
        created_at: now,
        updated_at: now,
    };
    tx.keys
        .insert(idempotency_key(&new.agent, &new.idempotency_key).as_slice(), &id.to_bytes()[..])?;
    Tx::put_payload(&tx.inputs, id, &new.input)?;
    if let Some(parent) = new.parent {
        tx.children.insert([&parent.to_bytes()[..], &id.to_bytes()].concat(), &[][..])?;
    }
    let m = Move { actor: new.actor.clone(), reason: "created".into(), error: None, now };
    tx.write_move(id, None, &mut run, &m)?;
    Ok(run)
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
    request.validate()?;
    let now = store.now();
    let outcome = store
        .write(move |tx| {
            let before = tx.run(id)?;
            let lease_token = before.lease.as_ref().map_or(before.fence, |l| l.token);
            if let Some(conflict) = request.conflict(before.state, lease_token) {
                return abort(Abort::Conflict(conflict));
            }
            let mut run = before.clone();
            request.apply(run.fields(), now);
            match request.to {
                RunState::Succeeded => {
                    if let Some(output) = &request.output {
                        Tx::put_payload(&tx.outputs, id, output)?;
                    }
                }
                RunState::WaitingExternal => {
                    tx.signals.remove(id.to_bytes())?;
                }
                _ => {}
            }
            if let Some(signal) = &request.signal {
                Tx::put_payload(&tx.signals, id, signal)?;
            }
            let m = Move {
                actor: request.actor.clone(),
                reason: request.reason.clone(),
                error: request.error.clone(),
                now,
            };
            let seq = before.moves;
            tx.write_move(id, Some(&before), &mut run, &m)?;
            for new in request.follow_ups_of(seq) {
                if tx.keys.get(idempotency_key(&new.agent, &new.idempotency_key))?.is_none() {
                    insert_run(tx, RunId::new(), &new, now)?;
                }
            }
            Ok(run)
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
            move_each(tx, &candidates, claim.limit, |_, before| {
                claim_step(tx, &before, &claim.owner, claim.lease, now)
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
            let mut run = tx.run(id)?;
            let before = run.lease.as_ref().map(|l| l.expires_at);
            let expires = match crate::store::rules::heartbeat(
                id,
                run.state,
                run.fence,
                &mut run.lease,
                token,
                extend,
                now,
            ) {
                Ok(expires) => expires,
                Err(conflict) => return abort(Abort::Conflict(conflict)),
            };
            if let Some(before) = before {
                tx.leases.remove(lease_key(before, id))?;
            }
            tx.leases.insert(lease_key(expires, id), &token.to_be_bytes()[..])?;
            tx.runs.insert(id.to_bytes(), super::codec::to_bin(&run))?;
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
                let lease =
                    before.lease.as_ref().filter(|_| before.state == RunState::Processing)?;
                // An ended process's lease (the same one found at open), or an expired one;
                // heartbeated or finished since the scan, it is left alone.
                let (reason, error) = if found.get(&id) == Some(&lease.token) {
                    crate::store::lease_orphaned(lease)
                } else if lease.expires_at <= now {
                    crate::store::lease_expiry(lease)
                } else {
                    return None;
                };
                let mut run = moved(&before, RunState::FailedTransient, Some(now), now);
                run.last_error = Some(error.clone());
                let m = Move { actor: Actor::Timer, reason, error: Some(error), now };
                Some((run, m))
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
    let stored: StoredRun = match store
        .engine()?
        .trees
        .runs
        .get(run.to_bytes())
        .map_err(|e| backend("reading a run", e))?
    {
        Some(bytes) => from_bin("runs", &bytes)?,
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

/// Moves each of `candidates` that `step` accepts, up to `limit`, within one transaction;
/// candidates that changed since the caller's scan are skipped.
/// `before` claimed by `owner` with a lease of `lease` from `now`: the claimed run and the move
/// to record, or `None` if it is not queued, not due yet (or taken by an earlier claim in the
/// batch), or a run with the same concurrency key is processing.
fn claim_step(
    tx: &Tx<'_>,
    before: &StoredRun,
    owner: &str,
    lease: Duration,
    now: Timestamp,
) -> Option<(StoredRun, Move)> {
    if !crate::store::rules::claimable(before.state, before.due_at, now) {
        return None;
    }
    if let Some(key) = &before.concurrency_key
        && tx.locks.get(key.as_bytes()).map_or(true, |held| held.is_some())
    {
        return None;
    }
    let mut run = before.clone();
    crate::store::rules::claim(run.fields(), owner, lease, now);
    let m =
        Move { actor: Actor::Worker(owner.to_owned()), reason: "claimed".into(), error: None, now };
    Some((run, m))
}

fn move_each(
    tx: &Tx<'_>,
    candidates: &[RunId],
    limit: usize,
    step: impl Fn(RunId, StoredRun) -> Option<(StoredRun, Move)>,
) -> super::tx::TxResult<Vec<(RunId, StoredRun)>> {
    let mut moved = Vec::new();
    for &id in candidates {
        if moved.len() >= limit {
            break;
        }
        let before = match tx.run(id) {
            Ok(run) => run,
            Err(super::tx::TxError::Abort(Abort::NotFound(_))) => {
                continue;
            }
            Err(other) => return Err(other),
        };
        if let Some((mut run, m)) = step(id, before.clone()) {
            tx.write_move(id, Some(&before), &mut run, &m)?;
            moved.push((id, run));
        }
    }
    Ok(moved)
}
