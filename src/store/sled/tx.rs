//! One batch of writes as one commit: every request of a batch reads through and writes into
//! a write set over the trees (a refused request's writes are rolled back, the others kept);
//! the committer then journals the whole set under one key and applies it with plain inserts
//! and removes (see `committer` and `journal`). No sled `Batch` or transaction is used
//! anywhere: each costs sled two log writes of its own and switches on its process-wide lock.

use std::cell::RefCell;
use std::collections::BTreeMap;

use ::sled::{IVec, Tree};
use serde_json::Value;

use super::codec::{decode_run, encode_run, to_bin, to_json};
use super::keys::{counter_keys, decode_count, idempotency_key, index_entries, run_key_with};
use super::{Trees, backend};
use crate::lifecycle::RunId;
use crate::store::backend::{CountDelta, DeadLetterChange, LockChange, Payload, Plan, plan_create};
use crate::store::{Conflict, RunHead, StoreError};

/// Why a request gave up: it refused itself (nothing it wrote is kept), or the storage failed.
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

/// A request's failure: its own refusal, or sled's error reading a tree.
#[derive(Debug)]
pub(super) enum TxError {
    Abort(Abort),
    Storage(::sled::Error),
}

impl From<::sled::Error> for TxError {
    fn from(error: ::sled::Error) -> Self {
        TxError::Storage(error)
    }
}

pub(super) type TxResult<T> = Result<T, TxError>;

pub(super) fn abort<T>(why: Abort) -> TxResult<T> {
    Err(TxError::Abort(why))
}

/// A tree's id in the journal (its index in [`Trees::written`]).
pub(super) type TreeId = u8;

/// A key of a tree.
type TreeKey = (TreeId, Vec<u8>);

/// A value written, or `None` for a removal.
type Written = Option<IVec>;

/// The writes of one batch: the last value (or removal) of every key written, and how to
/// undo a request's writes when it refuses itself.
#[derive(Default)]
pub(super) struct WriteSet {
    writes: RefCell<BTreeMap<TreeKey, Written>>,
    /// (key, what the write set held for it before, if anything): popped to roll back.
    undo: RefCell<Vec<(TreeKey, Option<Written>)>>,
}

impl WriteSet {
    /// Where a request starts, to roll back to.
    pub(super) fn mark(&self) -> usize {
        self.undo.borrow().len()
    }

    /// Forgets every write made since `mark`.
    pub(super) fn rollback(&self, mark: usize) {
        let mut undo = self.undo.borrow_mut();
        let mut writes = self.writes.borrow_mut();
        while undo.len() > mark {
            let (key, before) = undo.pop().expect("above the mark");
            match before {
                Some(value) => writes.insert(key, value),
                None => writes.remove(&key),
            };
        }
    }

    /// Whether nothing was written.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.borrow().is_empty()
    }

    /// The writes, `(tree, key, Some(value) | None for a removal)`, in the order readers of
    /// a commit being applied are best served by: what a run points to (its input, output,
    /// history, counts) first, then the run, then the indexes that lead to it (the ranks of
    /// `Trees::written`). A reader that meets a commit half-applied finds at worst an index
    /// entry of the old state (a listing filters by the record) or a run not yet indexed,
    /// never an index entry to a run or an input not written yet.
    pub(super) fn into_writes(self, trees: &Trees) -> Vec<(TreeId, Vec<u8>, Option<IVec>)> {
        let written = trees.written();
        let rank = |tree: TreeId| written.get(usize::from(tree)).map_or(0, |(_, rank)| *rank);
        let mut writes: Vec<_> = self
            .writes
            .into_inner()
            .into_iter()
            .map(|((tree, key), value)| (tree, key, value))
            .collect();
        writes.sort_by_key(|(tree, ..)| rank(*tree)); // stable: key order within a rank
        writes
    }

    fn put(&self, tree: TreeId, key: &[u8], value: Option<IVec>) {
        let key = (tree, key.to_vec());
        let before = self.writes.borrow_mut().insert(key.clone(), value);
        self.undo.borrow_mut().push((key, before));
    }

    /// What the write set holds for a key: `None` if it was not written, `Some(None)` if it
    /// was removed.
    fn get(&self, tree: TreeId, key: &[u8]) -> Option<Option<IVec>> {
        self.writes.borrow().get(&(tree, key.to_vec())).cloned()
    }
}

/// One tree as a request sees it: its writes so far in the batch over the tree's contents.
pub(super) struct TreeTx<'a> {
    id: TreeId,
    tree: &'a Tree,
    set: &'a WriteSet,
}

impl TreeTx<'_> {
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<IVec>> {
        let key = key.as_ref();
        match self.set.get(self.id, key) {
            Some(written) => Ok(written),
            None => Ok(self.tree.get(key)?),
        }
    }

    pub(super) fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<IVec>) -> TxResult<()> {
        self.set.put(self.id, key.as_ref(), Some(value.into()));
        Ok(())
    }

    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> TxResult<()> {
        self.set.put(self.id, key.as_ref(), None);
        Ok(())
    }

    /// The keys under `prefix` as the batch sees them: the tree's, plus the ones written
    /// earlier in the batch, less the ones removed in it.
    pub(super) fn keys_with_prefix(&self, prefix: &[u8]) -> TxResult<Vec<Vec<u8>>> {
        let mut keys = std::collections::BTreeSet::new();
        for item in self.tree.scan_prefix(prefix) {
            keys.insert(item?.0.to_vec());
        }
        for ((tree, key), written) in self.set.writes.borrow().range((self.id, prefix.to_vec())..) {
            if *tree != self.id || !key.starts_with(prefix) {
                break;
            }
            match written {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().collect())
    }
}

/// The view of every tree a move may touch, within one batch.
pub(super) struct Tx<'a> {
    pub(super) runs: TreeTx<'a>,
    pub(super) by_state: TreeTx<'a>,
    pub(super) ready: TreeTx<'a>,
    pub(super) queue: TreeTx<'a>,
    pub(super) locks: TreeTx<'a>,
    pub(super) children: TreeTx<'a>,
    pub(super) leases: TreeTx<'a>,
    pub(super) history: TreeTx<'a>,
    pub(super) dead_letter: TreeTx<'a>,
    pub(super) keys: TreeTx<'a>,
    pub(super) inputs: TreeTx<'a>,
    pub(super) outputs: TreeTx<'a>,
    pub(super) signals: TreeTx<'a>,
    pub(super) notes: TreeTx<'a>,
    pub(super) counts: TreeTx<'a>,
    /// Written through a commit only by `prune` (an effect is recorded straight into its
    /// tree, see `writes::record_effect`).
    pub(super) effects: TreeTx<'a>,
    /// Written through a commit only by `prune` too (see `writes::record_start`).
    pub(super) starts: TreeTx<'a>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(trees: &'a Trees, set: &'a WriteSet) -> Self {
        let w = trees.written();
        let t = |id: usize| TreeTx { id: id as TreeId, tree: w[id].0, set };
        Tx {
            runs: t(0),
            by_state: t(1),
            ready: t(2),
            queue: t(3),
            locks: t(4),
            children: t(5),
            leases: t(6),
            history: t(7),
            dead_letter: t(8),
            keys: t(9),
            inputs: t(10),
            outputs: t(11),
            signals: t(12),
            notes: t(13),
            counts: t(14),
            effects: t(15),
            starts: t(16),
        }
    }
}

/// Applies `writes` to `trees` with plain inserts and removes (idempotent: replaying them
/// again gives the same trees).
pub(super) fn apply_writes(
    trees: &Trees,
    writes: &[(TreeId, Vec<u8>, Option<IVec>)],
) -> Result<(), StoreError> {
    let w = trees.written();
    for (tree, key, value) in writes {
        let (tree, _) = w.get(usize::from(*tree)).ok_or_else(|| StoreError::Corrupt {
            tree: "journal",
            source: format!("a write names tree {tree}, which does not exist").into(),
        })?;
        match value {
            Some(value) => tree.insert(key, value.clone()),
            None => tree.remove(key),
        }
        .map_err(|e| backend("applying a commit", e))?;
    }
    Ok(())
}

impl Tx<'_> {
    /// The stored run, or an abort if there is none.
    pub(super) fn run(&self, id: RunId) -> TxResult<RunHead> {
        match self.runs.get(id.to_bytes())? {
            Some(bytes) => decode_run(&bytes).map_err(|e| TxError::Abort(Abort::Corrupt(e))),
            None => abort(Abort::NotFound(id)),
        }
    }

    /// Writes a payload (input, output, signal) as JSON.
    pub(super) fn put_payload(tree: &TreeTx<'_>, id: RunId, value: &Value) -> TxResult<()> {
        tree.insert(id.to_bytes(), to_json(value))
    }

    /// Adds `delta` to the counter under `key` (counts per state and per agent and state).
    pub(super) fn count(&self, key: &[u8], delta: i64) -> TxResult<()> {
        let now = self.counts.get(key)?.map_or(0, |bytes| decode_count(&bytes));
        match now.saturating_add_signed(delta) {
            0 => self.counts.remove(key), // an absent counter reads 0: none is left behind
            count => self.counts.insert(key, &count.to_be_bytes()),
        }
    }

    /// Applies `plan` to the run read as `before` (`None` for a creation): the run, its
    /// history entry, payloads, dead letter entry, concurrency key and counters, its index
    /// entries in place of `before`'s, and the follow-ups whose keys are free. Returns the run
    /// as it is after the plan.
    pub(super) fn apply(&self, before: Option<&RunHead>, plan: Plan) -> TxResult<RunHead> {
        let Plan {
            run: id,
            head,
            history,
            input,
            output,
            signal,
            dead_letter,
            lock,
            counts,
            follow_ups,
            ..
        } = plan;
        for CountDelta { state, delta } in counts {
            for key in counter_keys(&head.agent, state) {
                self.count(&key, delta)?;
            }
        }
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
        }
        match lock {
            Some(LockChange::Take(key)) => self.locks.insert(key.as_bytes(), &id.to_bytes()[..])?,
            Some(LockChange::Release(key)) => self.locks.remove(key.as_bytes())?,
            None => {}
        }
        let new = index_entries(id, &head);
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
        match dead_letter {
            Some(DeadLetterChange::Add(entry)) => {
                self.dead_letter.insert(id.to_bytes(), to_bin(&entry))?;
            }
            Some(DeadLetterChange::Remove) => self.dead_letter.remove(id.to_bytes())?,
            None => {}
        }
        if let Some(input) = &input {
            let key = idempotency_key(&head.agent, &head.idempotency_key);
            self.keys.insert(key.as_slice(), &id.to_bytes()[..])?;
            Tx::put_payload(&self.inputs, id, input)?;
            if let Some(parent) = head.parent {
                self.children.insert([&parent.to_bytes()[..], &id.to_bytes()].concat(), &[][..])?;
            }
        }
        for (tree, payload) in [(&self.outputs, output), (&self.signals, signal)] {
            match payload {
                Payload::Keep => {}
                Payload::Put(value) => Tx::put_payload(tree, id, &value)?,
                Payload::Remove => tree.remove(id.to_bytes())?,
            }
        }
        self.history.insert(run_key_with(id, &history.seq.to_be_bytes()), to_bin(&history))?;
        self.runs.insert(id.to_bytes(), encode_run(&head))?;
        for new in follow_ups {
            if self.keys.get(idempotency_key(&new.agent, &new.idempotency_key))?.is_none() {
                self.apply(None, plan_create(RunId::new(), &new, history.at))?;
            }
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit's writes are applied payloads first, then runs, then indexes; a refused
    /// request's writes are gone.
    #[test]
    fn writes_come_out_in_apply_order_and_a_rollback_forgets_its_own() {
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        let trees = Trees::open(&db).unwrap();
        let set = WriteSet::default();
        let tx = Tx::new(&trees, &set);
        tx.by_state.insert(b"s", &b""[..]).unwrap();
        tx.runs.insert(b"r", &b"run"[..]).unwrap();
        tx.inputs.insert(b"i", &b"input"[..]).unwrap();
        tx.keys.insert(b"k", &b"id"[..]).unwrap();
        let mark = set.mark();
        tx.runs.insert(b"r", &b"refused"[..]).unwrap();
        tx.history.insert(b"h", &b"refused"[..]).unwrap();
        assert_eq!(
            tx.runs.get(b"r").unwrap().as_deref(),
            Some(&b"refused"[..]),
            "reads see writes"
        );
        set.rollback(mark);
        assert_eq!(tx.runs.get(b"r").unwrap().as_deref(), Some(&b"run"[..]));
        let w = trees.written();
        let name = |id: TreeId| {
            let tree = w[usize::from(id)].0;
            String::from_utf8_lossy(&tree.name()).into_owned()
        };
        let order: Vec<String> = set.into_writes(&trees).iter().map(|(t, ..)| name(*t)).collect();
        assert_eq!(order, ["inputs", "runs", "by_state", "keys"]);
    }
}
