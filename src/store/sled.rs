//! [`SledStore`]: the embedded default store, on sled 0.34.
//!
//! Trees: `runs` (id → the run's moving part), `inputs`, `outputs` and `signals` (id → JSON
//! payload), `history` (id|seq → entry), `keys` (agent|key → id), `ready` (kind|due|id →
//! state|agent: queued runs, and timers), `leases` (expiry|id → token), `by_state` (state|id),
//! `effects` (id|name → record), `dead_letter` (id → entry), `notes` (id|seq → note) and `meta`
//! (format version). Every move is one transaction over the run, its history entry and its
//! index entries, so the indexes always agree with the records, and is made durable (see
//! [`Durability`]) before the caller hears of it.

mod codec;
mod committer;
mod keys;
mod open;
mod repair;
mod tx;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::sled::{IVec, Tree};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::codec::{StoredRun, from_bin, from_json, to_json};
use self::committer::Committer;
use self::keys::*;
use self::tx::{Abort, Move, Tx, abort, moved};
use super::{
    Actor, Claim, ConflictResult, Created, DeadLetter, EffectRecord, FORMAT_VERSION, HistoryEntry,
    ListQuery, NewRun, Note, Page, RunRecord, StateCounts, Store, StoreError, Transition,
};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

/// How durable a move is when the store says it happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// sled's flush, then `fdatasync` of its files: survives a killed process and a power loss
    /// (as far as the disk honours fsync). The default.
    #[default]
    Fsync,
    /// sled's flush alone, which on Linux writes with `sync_file_range`: survives a killed
    /// process, not a power loss or a kernel crash.
    Flush,
    /// No flush per move; sled flushes in the background every period. A crash loses up to
    /// that window of moves that were already reported as done. An explicit opt-out.
    Periodic(Duration),
}

/// How to open a [`SledStore`].
#[derive(Clone, Debug)]
pub struct SledStoreOptions {
    /// How durable a move is before it is reported (default [`Durability::Fsync`]).
    pub durability: Durability,
    /// The clock leases and due times are read from (default the system clock).
    pub clock: Arc<dyn Clock>,
    /// sled's page cache size in bytes (default 64 MiB).
    pub cache_capacity: u64,
    /// Whether concurrent moves share one flush (default `true`). `false` makes every move
    /// run its own flush (and fsync), one at a time: only useful as a benchmark baseline.
    pub group_commit: bool,
}

impl Default for SledStoreOptions {
    fn default() -> Self {
        SledStoreOptions {
            durability: Durability::Fsync,
            clock: Arc::new(SystemClock),
            cache_capacity: 64 << 20,
            group_commit: true,
        }
    }
}

impl SledStoreOptions {
    /// The given durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Group commit on or off (see [`SledStoreOptions::group_commit`]).
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// The given clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// The embedded store: one directory, one process at a time (sled takes a file lock).
///
/// ```no_run
/// # async fn demo() -> Result<(), steadfast::store::StoreError> {
/// use steadfast::store::{NewRun, SledStore, Store};
///
/// let store = SledStore::open("steadfast-data")?;
/// let created = store.create(NewRun::new("mailer", "digest-2026-11-23", serde_json::json!({}))).await?;
/// assert!(created.created);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: ::sled::Db,
    trees: Trees,
    path: PathBuf,
    durability: Durability,
    clock: Arc<dyn Clock>,
    /// Every write goes through it (see `committer`).
    committer: Committer,
    /// Runs whose latest claim (or creation already claimed) was acknowledged before its
    /// sync, with the number of the batch that applied it; see `Store::wait_durable`.
    unsynced_claims: std::sync::Mutex<std::collections::HashMap<RunId, u64>>,
    /// Counts the database as open in this process until the store is dropped.
    _registration: open::Registration,
}

#[derive(Clone)]
struct Trees {
    runs: Tree,
    inputs: Tree,
    outputs: Tree,
    signals: Tree,
    history: Tree,
    keys: Tree,
    ready: Tree,
    queue: Tree,
    locks: Tree,
    children: Tree,
    leases: Tree,
    by_state: Tree,
    effects: Tree,
    dead_letter: Tree,
    notes: Tree,
    meta: Tree,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the database in directory `path`, with the default options.
    ///
    /// Fails with a clear error, never a hang, when the path is not a steadfast database, was
    /// written by a newer steadfast, or is open in another process (named if possible).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledStoreOptions::default())
    }

    /// Opens (or creates) the database in `path` with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SledStoreOptions,
    ) -> Result<Self, StoreError> {
        open::open(path.as_ref(), options)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// How many flushes (with fsync, in `Fsync` mode) the store has run: with group commit,
    /// far fewer than the moves it made.
    pub fn syncs(&self) -> u64 {
        self.inner.committer.syncs()
    }

    /// Makes everything written so far durable, whatever the durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.db.flush().map_err(|e| backend("flushing the database", e))?;
            File::open(inner.path.join("db"))
                .and_then(|log| log.sync_data())
                .map_err(|e| io_error("fsync of the database log", e))?;
            committer::sync_blobs(&inner.path)
                .map_err(|e| io_error("fsync of the database blobs", e))
        })
        .await
        .map_err(|e| io_error("flush", std::io::Error::other(e)))?
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Applies `apply` through the committer; returns once it is durable.
    async fn write<T: Send + 'static>(
        &self,
        apply: impl Fn(&Tx<'_>) -> tx::TxResult<T> + Send + 'static,
    ) -> Result<Result<T, Abort>, StoreError> {
        self.inner.committer.write(Box::new(apply)).await
    }

    /// Applies `apply` through the committer; returns once it is applied, durable with the
    /// next sync, with the number of the batch that applied it.
    async fn write_lazy<T: Send + 'static>(
        &self,
        apply: impl Fn(&Tx<'_>) -> tx::TxResult<T> + Send + 'static,
    ) -> Result<(Result<T, Abort>, u64), StoreError> {
        self.inner.committer.write_lazy(Box::new(apply)).await
    }

    /// Remembers that the claims of `runs` were applied in batch `batch`, not yet synced.
    fn claimed_unsynced(&self, runs: impl IntoIterator<Item = RunId>, batch: u64) {
        if matches!(self.inner.durability, Durability::Periodic(_)) {
            return; // an explicit opt-out: nothing waits for a sync
        }
        let mut unsynced = self.inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner());
        unsynced.extend(runs.into_iter().map(|run| (run, batch)));
        if unsynced.len() > 4096 {
            // Claims whose claimer never asked (a user's own claim loop): forget synced ones.
            let committer = &self.inner.committer;
            unsynced.retain(|_, batch| !committer.is_synced(*batch));
        }
    }

    /// A payload of `run` from `tree` (inputs, outputs, signals).
    fn payload(
        &self,
        tree: &Tree,
        name: &'static str,
        run: RunId,
    ) -> Result<Option<Value>, StoreError> {
        match tree.get(run.to_bytes()).map_err(|e| backend("reading a payload", e))? {
            Some(bytes) => from_json(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The full record of a stored run.
    fn assemble(&self, id: RunId, run: StoredRun) -> Result<RunRecord, StoreError> {
        let t = &self.inner.trees;
        let input = self.payload(&t.inputs, "inputs", id)?.unwrap_or(Value::Null);
        let output = self.payload(&t.outputs, "outputs", id)?;
        let signal = self.payload(&t.signals, "signals", id)?;
        Ok(run.into_record(id, input, output, signal))
    }

    fn get_record(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        match self.inner.trees.runs.get(run.to_bytes()).map_err(|e| backend("reading a run", e))? {
            Some(bytes) => self.assemble(run, from_bin("runs", &bytes)?).map(Some),
            None => Ok(None),
        }
    }

    /// The records of the ids yielded by `ids` that pass `query`, a page at a time.
    fn page(
        &self,
        ids: impl Iterator<Item = Result<RunId, StoreError>>,
        query: &ListQuery,
    ) -> Result<Page, StoreError> {
        let size = query.page_size();
        let mut runs = Vec::with_capacity(size.min(1024));
        for id in ids {
            let Some(record) = self.get_record(id?)? else { continue };
            if !query.matches(&record) {
                continue;
            }
            if runs.len() == size {
                let next = runs.last().map(|r: &RunRecord| r.id);
                return Ok(Page { runs, next });
            }
            runs.push(record);
        }
        Ok(Page { runs, next: None })
    }

    /// `ready` entries of `kind` due now or earlier: (id, state byte, agent).
    fn due_entries(&self, kind: u8) -> impl Iterator<Item = Result<(RunId, u8, IVec), StoreError>> {
        let end =
            ready_key(kind, self.now().after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
        self.inner.trees.ready.range(vec![kind]..end).map(|item| {
            let (key, value) = item.map_err(|e| backend("scanning due runs", e))?;
            Ok((ready_key_run(&key), value[0], value.subslice(1, value.len() - 1)))
        })
    }
}

fn backend(
    context: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend { context, source: Box::new(error) }
}

fn io_error(context: &str, source: std::io::Error) -> StoreError {
    StoreError::Io { context: context.to_owned(), source }
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
    if !super::rules::claimable(before.state, before.due_at, now) {
        return None;
    }
    if let Some(key) = &before.concurrency_key
        && tx.locks.get(key.as_bytes()).map_or(true, |held| held.is_some())
    {
        return None;
    }
    let mut run = before.clone();
    super::rules::claim(run.fields(), owner, lease, now);
    let m =
        Move { actor: Actor::Worker(owner.to_owned()), reason: "claimed".into(), error: None, now };
    Some((run, m))
}

fn move_each(
    tx: &Tx<'_>,
    candidates: &[RunId],
    limit: usize,
    step: impl Fn(RunId, StoredRun) -> Option<(StoredRun, Move)>,
) -> tx::TxResult<Vec<(RunId, StoredRun)>> {
    let mut moved = Vec::new();
    for &id in candidates {
        if moved.len() >= limit {
            break;
        }
        let before = match tx.run(id) {
            Ok(run) => run,
            Err(::sled::transaction::ConflictableTransactionError::Abort(Abort::NotFound(_))) => {
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

#[async_trait]
impl Store for SledStore {
    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    async fn create(&self, new: NewRun) -> Result<Created, StoreError> {
        if new.agent.is_empty() || new.idempotency_key.is_empty() || new.agent.contains('\0') {
            return Err(StoreError::InvalidRequest(
                "a run needs a non-empty agent name (without NUL) and idempotency key".into(),
            ));
        }
        let now = self.now();
        let id = RunId::new();
        let key = idempotency_key(&new.agent, &new.idempotency_key);
        let input = new.input.clone();
        let lazy = new.claim_for.is_some();
        let create = move |tx: &Tx<'_>| {
            if let Some(existing) = tx.keys.get(&key)? {
                return abort(Abort::Exists(run_from_value(&existing)));
            }
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
            tx.keys.insert(key.as_slice(), &id.to_bytes())?;
            Tx::put_payload(tx.inputs, id, &new.input)?;
            if let Some(parent) = new.parent {
                tx.children.insert([&parent.to_bytes()[..], &id.to_bytes()].concat(), &[])?;
            }
            let m = Move { actor: new.actor.clone(), reason: "created".into(), error: None, now };
            tx.write_move(id, None, &mut run, &m)?;
            if let Some((owner, lease)) = &new.claim_for
                && let Some((mut claimed, m)) = claim_step(tx, &run, owner, *lease, now)
            {
                tx.write_move(id, Some(&run), &mut claimed, &m)?;
                run = claimed;
            }
            Ok(run)
        };
        let outcome = if lazy {
            let (outcome, batch) = self.write_lazy(create).await?;
            if outcome.as_ref().is_ok_and(|run| run.state == RunState::Processing) {
                self.claimed_unsynced([id], batch);
            }
            outcome
        } else {
            self.write(create).await?
        };
        match outcome {
            Ok(run) => Ok(Created { run: run.into_record(id, input, None, None), created: true }),
            Err(Abort::Exists(existing)) => {
                // Written by an earlier batch; durable unless that was a lazy creation, so
                // make sure before answering.
                if !lazy {
                    self.inner.committer.sync().await?;
                }
                let run = self.get_record(existing)?.ok_or(StoreError::NotFound(existing))?;
                Ok(Created { run, created: false })
            }
            Err(other) => Err(other.into_error()),
        }
    }

    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get_record(run)
    }

    async fn wait_durable(&self, run: RunId) -> Result<(), StoreError> {
        let batch =
            self.inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner()).remove(&run);
        match batch {
            // Joins the next group commit, which covers every batch applied before it.
            Some(batch) if !self.inner.committer.is_synced(batch) => {
                self.inner.committer.sync().await
            }
            _ => Ok(()),
        }
    }

    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let key = keys::idempotency_key(agent, idempotency_key);
        match self.inner.trees.keys.get(key).map_err(|e| backend("reading a key", e))? {
            Some(id) => self.get_record(run_from_value(&id)),
            None => Ok(None),
        }
    }

    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord> {
        let id = request.run;
        request.validate()?;
        let now = self.now();
        let outcome = self
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
                            Tx::put_payload(tx.outputs, id, output)?;
                        }
                    }
                    RunState::WaitingExternal => {
                        tx.signals.remove(&id.to_bytes())?;
                    }
                    _ => {}
                }
                if let Some(signal) = &request.signal {
                    Tx::put_payload(tx.signals, id, signal)?;
                }
                let m = Move {
                    actor: request.actor.clone(),
                    reason: request.reason.clone(),
                    error: request.error.clone(),
                    now,
                };
                tx.write_move(id, Some(&before), &mut run, &m)?;
                Ok(run)
            })
            .await?;
        match conflict_result(outcome)? {
            Ok(run) => Ok(Ok(self.assemble(id, run)?)),
            Err(conflict) => Ok(Err(conflict)),
        }
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
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
                    || self.get_record(*id)?.is_some_and(|r| claim.agents.contains(&r.agent))
                {
                    ids.push(*id);
                }
            }
            ids
        } else if claim.agents.is_empty() {
            let queued = state_byte(RunState::Queued);
            let mut ids = Vec::new();
            for entry in self.due_entries(READY_QUEUED) {
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
            let end = self.now().after(Duration::from_millis(1));
            let mut due = Vec::new();
            for agent in &claim.agents {
                let from = queue_key(agent, Timestamp::ZERO, RunId::from_bytes([0; 16]));
                let to = queue_key(agent, end, RunId::from_bytes([0; 16]));
                for item in self.inner.trees.queue.range(from..to).take(want) {
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
        let now = self.now();
        // Not waiting for the sync: a claim lost in a crash only means the run is claimed
        // again, as long as nothing acted on it; the claimer waits with `wait_durable` before
        // its agent runs, and any durable write after it makes it durable.
        let (claimed, batch) = self
            .write_lazy(move |tx| {
                move_each(tx, &candidates, claim.limit, |_, before| {
                    claim_step(tx, &before, &claim.owner, claim.lease, now)
                })
            })
            .await?;
        let claimed = claimed.map_err(Abort::into_error)?;
        self.claimed_unsynced(claimed.iter().map(|(id, _)| *id), batch);
        claimed.into_iter().map(|(id, run)| self.assemble(id, run)).collect()
    }

    async fn heartbeat(
        &self,
        id: RunId,
        token: u64,
        extend: Duration,
    ) -> ConflictResult<Timestamp> {
        let now = self.now();
        // A lost heartbeat costs at most an early lease expiry after a crash, which the crash
        // makes moot: no sync.
        let (outcome, _) = self
            .write_lazy(move |tx| {
                let mut run = tx.run(id)?;
                let before = run.lease.as_ref().map(|l| l.expires_at);
                let expires = match super::rules::heartbeat(
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
                tx.leases.insert(lease_key(expires, id), &token.to_be_bytes())?;
                tx.runs.insert(&id.to_bytes(), codec::to_bin(&run))?;
                Ok(expires)
            })
            .await?;
        conflict_result(outcome)
    }

    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let end = lease_key(now.after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
        let candidates: Vec<RunId> = self
            .inner
            .trees
            .leases
            .range(..end)
            .take(limit)
            .map(|item| {
                item.map(|(key, _)| lease_key_parts(&key).1)
                    .map_err(|e| backend("scanning leases", e))
            })
            .collect::<Result<_, _>>()?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let recovered = self
            .write(move |tx| {
                move_each(tx, &candidates, limit, |_, before| {
                    let lease = before
                        .lease
                        .as_ref()
                        .filter(|l| before.state == RunState::Processing && l.expires_at <= now)?; // heartbeated or finished since the scan
                    let (reason, error) = super::lease_expiry(lease);
                    let mut run = moved(&before, RunState::FailedTransient, Some(now), now);
                    run.last_error = Some(error.clone());
                    let m = Move { actor: Actor::Timer, reason, error: Some(error), now };
                    Some((run, m))
                })
            })
            .await?
            .map_err(Abort::into_error)?;
        recovered.into_iter().map(|(id, run)| self.assemble(id, run)).collect()
    }

    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let mut due = Vec::new();
        for entry in self.due_entries(READY_TIMER) {
            if due.len() >= limit {
                break;
            }
            let (id, _, _) = entry?;
            if let Some(record) = self.get_record(id)?.filter(|r| {
                matches!(r.state, RunState::FailedTransient | RunState::WaitingExternal)
                    && r.due_at.is_some_and(|d| d <= now)
            }) {
                due.push(record);
            }
        }
        Ok(due)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let t = &self.inner.trees;
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
        Ok(times.into_iter().min())
    }

    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError> {
        // One tree, one compare-and-swap: no transaction (which would cost sled two log
        // writes), then a sync barrier that shares the committer's next sync.
        let stored: StoredRun = match self
            .inner
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
            recorded_at: self.now(),
        };
        let swapped = self
            .inner
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
        self.inner.committer.sync().await?;
        match swapped {
            Ok(()) => Ok(effect),
            Err(existing) => from_json("effects", &existing.current.expect("a present value")),
        }
    }

    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError> {
        let key = run_key_with(run, name.as_bytes());
        match self.inner.trees.effects.get(key).map_err(|e| backend("reading an effect", e))? {
            Some(bytes) => from_json("effects", &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        scan_run(&self.inner.trees.effects, run, |b| from_json("effects", b))
    }

    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        scan_run(&self.inner.trees.history, run, |b| from_bin("history", b))
    }

    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError> {
        let seq = self.inner.db.generate_id().map_err(|e| backend("numbering a note", e))?;
        let note = Note { run, author, text: text.to_owned(), at: self.now() };
        let written = note.clone();
        self.write(move |tx| {
            tx.run(run)?;
            tx.notes.insert(run_key_with(run, &seq.to_be_bytes()), to_json(&written))?;
            Ok(())
        })
        .await?
        .map_err(Abort::into_error)?;
        Ok(note)
    }

    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        scan_run(&self.inner.trees.notes, run, |b| from_json("notes", b))
    }

    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = cursor.map_or(Unbounded, |c| Excluded(c.to_bytes().to_vec()));
        self.inner
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

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let t = &self.inner.trees;
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
            self.page(range.map(decode_id), &query)
        } else {
            self.page(range.rev().map(decode_id), &query)
        }
    }

    async fn counts(&self) -> Result<StateCounts, StoreError> {
        let mut counts = StateCounts::default();
        for &state in RunState::STATES {
            counts.0[state.index()] =
                self.inner.trees.by_state.scan_prefix([state_byte(state)]).count() as u64;
        }
        Ok(counts)
    }

    /// Kept in the `meta` tree under `schema/<hash>`; flushed before it returns.
    async fn put_schema(&self, hash: &str, schema: &str) -> Result<(), StoreError> {
        let key = format!("schema/{hash}");
        let meta = &self.inner.trees.meta;
        if meta.get(&key).map_err(|e| backend("reading a schema", e))?.is_some() {
            return Ok(());
        }
        meta.insert(key, schema.as_bytes()).map_err(|e| backend("keeping a schema", e))?;
        meta.flush_async().await.map_err(|e| backend("flushing a schema", e))?;
        Ok(())
    }

    async fn schema(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let found = self
            .inner
            .trees
            .meta
            .get(format!("schema/{hash}"))
            .map_err(|e| backend("reading a schema", e))?;
        Ok(found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
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
