//! The sled store's reads: straight from its trees, never through the committer.

use ::sled::IVec;
use ::sled::Tree;
use serde::de::DeserializeOwned;

use super::codec::{from_bin, from_json};
use super::keys::*;
use super::{SledStore, backend};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::store::{
    DeadLetter, EffectRecord, HistoryEntry, ListQuery, Note, Page, RunRecord, StateCounts,
    StoreError,
};

pub(super) async fn get(store: &SledStore, run: RunId) -> Result<Option<RunRecord>, StoreError> {
    store.get_record(run)
}

pub(super) async fn find_by_key(
    store: &SledStore,
    agent: &str,
    idempotency_key: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let key = super::keys::idempotency_key(agent, idempotency_key);
    match store.engine()?.trees.keys.get(key).map_err(|e| backend("reading a key", e))? {
        Some(id) => store.get_record(run_from_value(&id)),
        None => Ok(None),
    }
}

pub(super) async fn due_timers(
    store: &SledStore,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    let now = store.now();
    let mut due = Vec::new();
    for entry in store.due_entries(READY_TIMER)? {
        if due.len() >= limit {
            break;
        }
        let (id, _, _) = entry?;
        if let Some(record) = store.get_record(id)?.filter(|r| {
            matches!(r.state, RunState::FailedTransient | RunState::WaitingExternal)
                && r.due_at.is_some_and(|d| d <= now)
        }) {
            due.push(record);
        }
    }
    Ok(due)
}

pub(super) async fn next_due(store: &SledStore) -> Result<Option<Timestamp>, StoreError> {
    let engine = store.engine()?;
    let t = &engine.trees;
    let read = |e| backend("reading due times", e);
    let mut times = Vec::with_capacity(3);
    for kind in [READY_QUEUED, READY_TIMER] {
        if let Some((key, _)) = t.ready.scan_prefix([kind]).next().transpose().map_err(read)? {
            times.push(ready_key_due(&key));
        }
    }
    if let Some((key, _)) = t.leases.first().map_err(read)? {
        times.push(lease_key_parts(&key).0);
    }
    // The leases of an ended process are due for recovery now (see `recover_expired`).
    if !store.inner.orphans.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        times.push(store.now());
    }
    Ok(times.into_iter().min())
}

pub(super) async fn effect(
    store: &SledStore,
    run: RunId,
    name: &str,
) -> Result<Option<EffectRecord>, StoreError> {
    let key = run_key_with(run, name.as_bytes());
    match store.engine()?.trees.effects.get(key).map_err(|e| backend("reading an effect", e))? {
        Some(bytes) => from_json("effects", &bytes).map(Some),
        None => Ok(None),
    }
}

pub(super) async fn effects(
    store: &SledStore,
    run: RunId,
) -> Result<Vec<EffectRecord>, StoreError> {
    scan_run(&store.engine()?.trees.effects, run, |b| from_json("effects", b))
}

pub(super) async fn history(
    store: &SledStore,
    run: RunId,
) -> Result<Vec<HistoryEntry>, StoreError> {
    scan_run(&store.engine()?.trees.history, run, |b| from_bin("history", b))
}

pub(super) async fn notes(store: &SledStore, run: RunId) -> Result<Vec<Note>, StoreError> {
    scan_run(&store.engine()?.trees.notes, run, |b| from_json("notes", b))
}

pub(super) async fn dead_letters(
    store: &SledStore,
    cursor: Option<RunId>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = cursor.map_or(Unbounded, |c| Excluded(c.to_bytes().to_vec()));
    store
        .engine()?
        .trees
        .dead_letter
        .range((start, Unbounded))
        .take(limit)
        .map(|item| {
            let (_, bytes) = item.map_err(|e| backend("scanning dead letters", e))?;
            from_bin("dead_letter", &bytes)
        })
        .collect()
}

pub(super) async fn list(store: &SledStore, query: ListQuery) -> Result<Page, StoreError> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let engine = store.engine()?;
    let t = &engine.trees;
    // `children` keys are parent|id, `by_state` keys are state|id, `runs` keys are id:
    // `prefix` is what precedes the id. A parent is the narrowest index, then a state.
    let (tree, prefix, lower, upper) = match (query.parent, query.state) {
        (Some(parent), _) => {
            let p = parent.to_bytes().to_vec();
            (
                &t.children,
                p.clone(),
                Included(p),
                Excluded([&parent.to_bytes()[..], &[0xff; 17]].concat()),
            )
        }
        (None, Some(state)) => {
            let s = state_byte(state);
            (&t.by_state, vec![s], Included(vec![s]), Excluded(vec![s + 1]))
        }
        (None, None) => (&t.runs, Vec::new(), Unbounded, Unbounded),
    };
    let at = |run: RunId| [&prefix[..], &run.to_bytes()].concat();
    let range = match (query.cursor, query.oldest_first) {
        (None, _) => tree.range((lower, upper)),
        (Some(c), true) => tree.range((Excluded(at(c)), upper)),
        (Some(c), false) => tree.range((lower, Excluded(at(c)))),
    };
    let offset = prefix.len();
    let decode_id = move |item: Result<(IVec, IVec), ::sled::Error>| {
        let (key, _) = item.map_err(|e| backend("listing runs", e))?;
        Ok(run_from_value(&key[offset..offset + 16]))
    };
    if query.oldest_first {
        store.page(range.map(decode_id), &query)
    } else {
        store.page(range.rev().map(decode_id), &query)
    }
}

/// The counters every commit keeps (O(1): seven reads, whatever the number of runs).
pub(super) async fn counts(store: &SledStore) -> Result<StateCounts, StoreError> {
    let mut counts = StateCounts::default();
    for &state in RunState::STATES {
        let value = store
            .engine()?
            .trees
            .counts
            .get(state_counter_key(state))
            .map_err(|e| backend("reading a count", e))?;
        counts.0[state.index()] = value.map_or(0, |v| decode_count(&v));
    }
    Ok(counts)
}

/// The per-agent counters: keys `a` | agent | 0 | state.
pub(super) async fn counts_by_agent(
    store: &SledStore,
) -> Result<std::collections::BTreeMap<String, StateCounts>, StoreError> {
    let mut counts: std::collections::BTreeMap<String, StateCounts> = Default::default();
    for item in store.engine()?.trees.counts.scan_prefix(b"a") {
        let (key, value) = item.map_err(|e| backend("reading the counts", e))?;
        let Some((&state, agent)) = key[1..].split_last() else { continue };
        let agent = agent.strip_suffix(&[0]).unwrap_or(agent);
        let Some(slot) = counts
            .entry(String::from_utf8_lossy(agent).into_owned())
            .or_default()
            .0
            .get_mut(usize::from(state))
        else {
            continue;
        };
        *slot = decode_count(&value);
    }
    counts.retain(|_, c| c.total() > 0);
    Ok(counts)
}

/// The first entry of the agent's part of the `queue` tree (agent | 0 | due | id).
pub(super) async fn oldest_queued(
    store: &SledStore,
    agent: &str,
) -> Result<Option<Timestamp>, StoreError> {
    let prefix = [agent.as_bytes(), &[0]].concat();
    let first = store.engine()?.trees.queue.scan_prefix(&prefix).next();
    match first {
        Some(item) => {
            let (key, _) = item.map_err(|e| backend("reading the queue", e))?;
            Ok(Some(queue_key_parts(&key, agent.len()).0))
        }
        None => Ok(None),
    }
}

pub(super) async fn agent_controls(
    store: &SledStore,
) -> Result<std::collections::BTreeMap<String, crate::store::AgentControl>, StoreError> {
    let mut controls = std::collections::BTreeMap::new();
    for item in store.engine()?.trees.meta.scan_prefix(b"agent/") {
        let (key, value) = item.map_err(|e| backend("reading the agent controls", e))?;
        let agent = String::from_utf8_lossy(&key[b"agent/".len()..]).into_owned();
        controls.insert(agent, from_json("meta", &value)?);
    }
    Ok(controls)
}

pub(super) async fn schema(store: &SledStore, hash: &str) -> Result<Option<String>, StoreError> {
    let found = store
        .engine()?
        .trees
        .meta
        .get(format!("schema/{hash}"))
        .map_err(|e| backend("reading a schema", e))?;
    Ok(found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Every entry of `run` in a tree keyed id|suffix, in key order.
fn scan_run<T>(
    tree: &Tree,
    run: RunId,
    decode: impl Fn(&[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    T: DeserializeOwned,
{
    tree.scan_prefix(run.to_bytes())
        .map(|item| {
            let (_, bytes) = item.map_err(|e| backend("scanning a run's entries", e))?;
            decode(&bytes)
        })
        .collect()
}
