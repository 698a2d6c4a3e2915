//! [`SledStore`]: the embedded default store, on sled 0.34.
//!
//! Trees: `runs` (id → record), `history` (id|seq → entry), `keys` (agent|key → id),
//! `ready` (kind|due|id → state|agent: queued runs, and timers), `leases` (expiry|id → token),
//! `by_state` (state|id), `effects` (id|name → record), `dead_letter` (id → entry), `notes`
//! (id|seq → note) and `meta` (format version). Every move is one transaction over the run
//! record, its history entry and its index entries, so the indexes always agree with the
//! records, and is made durable (see [`Durability`]) before the caller hears of it.

mod commit;
mod open;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use ::sled::{IVec, Transactional, Tree};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::commit::GroupCommit;
use super::{
    Actor, Claim, Conflict, ConflictResult, Created, DeadLetter, EffectRecord, ErrorInfo,
    FORMAT_VERSION, HistoryEntry, Lease, ListQuery, NewRun, Note, Page, RunRecord, StateCounts,
    Store, StoreError, Transition,
};
use crate::StateMachine;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::fault::Fault;
use crate::lifecycle::{RunId, RunState};

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
    commit: GroupCommit,
    group_commit: bool,
    /// Serializes syncs when group commit is off.
    solo_sync: std::sync::Mutex<()>,
    /// sled's log file, for `fdatasync` in [`Durability::Fsync`].
    log: Arc<File>,
}

#[derive(Clone)]
struct Trees {
    runs: Tree,
    history: Tree,
    keys: Tree,
    ready: Tree,
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

/// The two kinds of entries in the `ready` tree.
const READY_QUEUED: u8 = 0;
const READY_TIMER: u8 = 1;

/// Why a transaction gave up (never a storage failure: those are sled's own errors).
#[derive(Debug)]
enum Abort {
    NotFound(RunId),
    Conflict(Conflict),
    Exists(RunId),
    Skip,
    Corrupt(&'static str, serde_json::Error),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

/// The transactional view of the trees a move touches.
struct Tx<'a> {
    runs: &'a TransactionalTree,
    by_state: &'a TransactionalTree,
    ready: &'a TransactionalTree,
    leases: &'a TransactionalTree,
    history: &'a TransactionalTree,
    dead_letter: &'a TransactionalTree,
    keys: &'a TransactionalTree,
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
    /// fewer than the moves it made.
    pub fn syncs(&self) -> u64 {
        self.inner.commit.syncs()
    }

    /// Makes everything written so far durable, whatever the durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.sync(Durability::Fsync))
            .await
            .map_err(|e| io_error("flush", std::io::Error::other(e)))?
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Waits until the write behind `ticket` is durable per the store's mode.
    async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mode = self.inner.durability;
        if let Durability::Periodic(_) = mode {
            return Ok(());
        }
        let inner = self.inner.clone();
        if !self.inner.group_commit {
            return tokio::task::spawn_blocking(move || {
                let _one_at_a_time = inner.solo_sync.lock().unwrap_or_else(|p| p.into_inner());
                inner.sync(mode)
            })
            .await
            .map_err(|e| io_error("making a write durable", std::io::Error::other(e)))?;
        }
        self.inner
            .commit
            .wait(ticket, move || inner.sync(mode).map_err(std::io::Error::other))
            .await
            .map_err(|e| io_error("making a write durable", e))
    }

    /// Runs `f` as one transaction over every tree a move touches.
    fn transact<R>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<R>,
    ) -> Result<Result<R, Abort>, StoreError> {
        let t = &self.inner.trees;
        let result =
            (&t.runs, &t.by_state, &t.ready, &t.leases, &t.history, &t.dead_letter, &t.keys)
                .transaction(|(runs, by_state, ready, leases, history, dead_letter, keys)| {
                    f(&Tx { runs, by_state, ready, leases, history, dead_letter, keys })
                });
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(TransactionError::Abort(abort)) => Ok(Err(abort)),
            Err(TransactionError::Storage(e)) => Err(backend("transaction", e)),
        }
    }

    fn get_record(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        match self.inner.trees.runs.get(run.to_bytes()).map_err(|e| backend("reading a run", e))? {
            Some(bytes) => decode("runs", &bytes).map(Some),
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

    /// Scans `ready` entries of `kind` due at or before now, decoding (due, id, state, agent).
    fn due_entries(&self, kind: u8) -> impl Iterator<Item = Result<(RunId, u8, IVec), StoreError>> {
        let end =
            ready_key(kind, self.now().after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
        self.inner.trees.ready.range(vec![kind]..end).map(|item| {
            let (key, value) = item.map_err(|e| backend("scanning due runs", e))?;
            let id = RunId::from_bytes(key[9..25].try_into().expect("ready key layout"));
            Ok((id, value[0], value.subslice(1, value.len() - 1)))
        })
    }
}

impl Inner {
    /// Makes everything applied so far durable per `mode`.
    fn sync(&self, mode: Durability) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| backend("flushing the database", e))?;
        if mode == Durability::Fsync {
            self.log.sync_data().map_err(|e| io_error("fsync of the database log", e))?;
            open::sync_blobs(&self.path).map_err(|e| io_error("fsync of the database blobs", e))?;
        }
        Ok(())
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

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn tx_decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> TxResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(tree, e)))
}

fn abort<T>(why: Abort) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(why))
}

fn state_byte(state: RunState) -> u8 {
    state.index() as u8
}

fn ready_key(kind: u8, due: Timestamp, run: RunId) -> Vec<u8> {
    let mut key = Vec::with_capacity(25);
    key.push(kind);
    key.extend_from_slice(&due.to_be_bytes());
    key.extend_from_slice(&run.to_bytes());
    key
}

fn lease_key(expires: Timestamp, run: RunId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&expires.to_be_bytes());
    key.extend_from_slice(&run.to_bytes());
    key
}

fn state_key(state: RunState, run: RunId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(state_byte(state));
    key.extend_from_slice(&run.to_bytes());
    key
}

fn run_key_with(run: RunId, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + suffix.len());
    key.extend_from_slice(&run.to_bytes());
    key.extend_from_slice(suffix);
    key
}

fn idempotency_key(agent: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(agent.len() + key.len() + 1);
    k.extend_from_slice(agent.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// The index entries a record has in its current state: (by_state, ready, leases).
fn index_entries(record: &RunRecord) -> (Vec<u8>, Option<KeyValue>, Option<KeyValue>) {
    let ready = match (record.state, record.due_at) {
        (RunState::Queued, Some(_)) => Some(READY_QUEUED),
        (RunState::FailedTransient | RunState::WaitingExternal, Some(_)) => Some(READY_TIMER),
        _ => None,
    }
    .map(|kind| {
        let due = record.due_at.expect("checked above");
        let mut value = vec![state_byte(record.state)];
        value.extend_from_slice(record.agent.as_bytes());
        (ready_key(kind, due, record.id), value)
    });
    let lease = match (record.state, &record.lease) {
        (RunState::Processing, Some(lease)) => {
            Some((lease_key(lease.expires_at, record.id), lease.token.to_be_bytes().to_vec()))
        }
        _ => None,
    };
    (state_key(record.state, record.id), ready, lease)
}

/// What a move records besides the new state.
struct Move<'a> {
    actor: &'a Actor,
    reason: &'a str,
    error: Option<&'a ErrorInfo>,
    now: Timestamp,
}

impl Tx<'_> {
    fn record(&self, run: RunId) -> TxResult<RunRecord> {
        match self.runs.get(run.to_bytes())? {
            Some(bytes) => tx_decode("runs", &bytes),
            None => abort(Abort::NotFound(run)),
        }
    }

    /// Writes `record` (already moved to its new state) with its history entry and index
    /// entries, replacing the entries of `before` (`None` for a new run).
    fn write_move(
        &self,
        before: Option<&RunRecord>,
        record: &mut RunRecord,
        m: &Move<'_>,
    ) -> Result<(), UnabortableTransactionError> {
        if let Some(before) = before {
            let (state, ready, lease) = index_entries(before);
            self.by_state.remove(state)?;
            if let Some((key, _)) = ready {
                self.ready.remove(key)?;
            }
            if let Some((key, _)) = lease {
                self.leases.remove(key)?;
            }
            if before.state == RunState::FailedPermanent {
                self.dead_letter.remove(&record.id.to_bytes())?;
            }
        }
        let (state, ready, lease) = index_entries(record);
        self.by_state.insert(state, &[])?;
        if let Some((key, value)) = ready {
            self.ready.insert(key, value)?;
        }
        if let Some((key, value)) = lease {
            self.leases.insert(key, value)?;
        }
        if record.state == RunState::FailedPermanent {
            let entry = DeadLetter {
                run: record.id,
                agent: record.agent.clone(),
                error: m.error.cloned().or_else(|| record.last_error.clone()),
                attempt: record.attempt,
                reason: m.reason.to_owned(),
                at: m.now,
            };
            self.dead_letter.insert(&record.id.to_bytes(), encode(&entry))?;
        }
        let entry = HistoryEntry {
            seq: record.moves,
            from: before.map(|b| b.state),
            to: record.state,
            at: m.now,
            attempt: record.attempt,
            reason: m.reason.to_owned(),
            actor: m.actor.clone(),
            error: m.error.cloned(),
        };
        self.history
            .insert(run_key_with(record.id, &record.moves.to_be_bytes()), encode(&entry))?;
        record.moves += 1;
        record.updated_at = m.now;
        self.runs.insert(&record.id.to_bytes(), encode(record))?;
        Ok(())
    }
}

/// Where a record stands after moving to `to`, as far as the move itself decides.
fn moved(before: &RunRecord, to: RunState, due_at: Option<Timestamp>, now: Timestamp) -> RunRecord {
    let mut record = before.clone();
    record.state = to;
    record.due_at = match to {
        RunState::Queued | RunState::FailedTransient => Some(due_at.unwrap_or(now)),
        RunState::WaitingExternal => due_at,
        _ => None,
    };
    if to != RunState::Processing {
        record.lease = None;
    }
    record
}

#[async_trait]
impl Store for SledStore {
    async fn create(&self, new: NewRun) -> Result<Created, StoreError> {
        if new.agent.is_empty() || new.idempotency_key.is_empty() {
            return Err(StoreError::InvalidRequest(
                "a run needs a non-empty agent name and idempotency key".into(),
            ));
        }
        let now = self.now();
        let id = RunId::new();
        let key = idempotency_key(&new.agent, &new.idempotency_key);
        let outcome = self.transact(|tx| {
            if let Some(existing) = tx.keys.get(&key)? {
                return abort(Abort::Exists(RunId::from_bytes(
                    existing.as_ref().try_into().expect("id"),
                )));
            }
            let mut record = RunRecord {
                id,
                agent: new.agent.clone(),
                state: RunState::INITIAL,
                input: new.input.clone(),
                output: None,
                idempotency_key: new.idempotency_key.clone(),
                attempt: 0,
                due_at: Some(new.due_at.unwrap_or(now)),
                lease: None,
                fence: 0,
                parent: new.parent,
                stage: new.stage,
                input_schema: new.input_schema.clone(),
                output_schema: new.output_schema.clone(),
                waiting_for: None,
                signal: None,
                last_error: None,
                moves: 0,
                format: FORMAT_VERSION,
                created_at: now,
                updated_at: now,
            };
            tx.keys.insert(key.as_slice(), &id.to_bytes())?;
            let m = Move { actor: &new.actor, reason: "created", error: None, now };
            tx.write_move(None, &mut record, &m)?;
            Ok(record)
        })?;
        match outcome {
            Ok(run) => {
                self.durable(self.inner.commit.ticket()).await?;
                Ok(Created { run, created: true })
            }
            Err(Abort::Exists(existing)) => {
                self.durable(self.inner.commit.latest()).await?;
                let run = self.get_record(existing)?.ok_or(StoreError::NotFound(existing))?;
                Ok(Created { run, created: false })
            }
            Err(other) => Err(unexpected(other)),
        }
    }

    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get_record(run)
    }

    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let key = self::idempotency_key(agent, idempotency_key);
        match self.inner.trees.keys.get(key).map_err(|e| backend("reading a key", e))? {
            Some(id) => self.get_record(RunId::from_bytes(id.as_ref().try_into().expect("id"))),
            None => Ok(None),
        }
    }

    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord> {
        let run = request.run;
        request
            .from
            .transition(request.to)
            .map_err(|source| StoreError::IllegalTransition { run, source })?;
        if request.to == RunState::Processing {
            return Err(StoreError::InvalidRequest(format!(
                "run {run}: only a claim moves a run to `processing` (use `Store::claim`)"
            )));
        }
        if request.from == RunState::Processing && request.fence.is_none() {
            return Err(StoreError::InvalidRequest(format!(
                "run {run}: a move out of `processing` must carry the lease's fencing token"
            )));
        }
        let now = self.now();
        let outcome = self.transact(|tx| {
            let before = tx.record(run)?;
            if before.state != request.from {
                return abort(Abort::Conflict(Conflict::State {
                    run,
                    expected: request.from,
                    current: before.state,
                }));
            }
            if let Some(token) = request.fence {
                let current = before.lease.as_ref().map_or(before.fence, |l| l.token);
                if before.state == RunState::Processing && token != current {
                    return abort(Abort::Conflict(Conflict::Fenced { run, token, current }));
                }
            }
            let mut record = moved(&before, request.to, request.due_at, now);
            if request.refund_attempt {
                record.attempt = record.attempt.saturating_sub(1);
            }
            if request.reset_attempts {
                record.attempt = 0;
            }
            match request.to {
                RunState::Succeeded => {
                    record.output = request.output.clone();
                    record.last_error = None;
                }
                RunState::WaitingExternal => {
                    record.waiting_for = request.waiting_for.clone();
                    record.signal = None;
                }
                _ => {}
            }
            if request.to != RunState::WaitingExternal {
                record.waiting_for = None;
            }
            if request.signal.is_some() {
                record.signal = request.signal.clone();
            }
            if let Some(error) = &request.error {
                record.last_error = Some(error.clone());
            }
            let m = Move {
                actor: &request.actor,
                reason: &request.reason,
                error: request.error.as_ref(),
                now,
            };
            tx.write_move(Some(&before), &mut record, &m)?;
            Ok(record)
        })?;
        match outcome {
            Ok(record) => {
                self.durable(self.inner.commit.ticket()).await?;
                Ok(Ok(record))
            }
            Err(Abort::Conflict(conflict)) => Ok(Err(conflict)),
            Err(Abort::NotFound(run)) => Err(StoreError::NotFound(run)),
            Err(other) => Err(unexpected(other)),
        }
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let actor = Actor::Worker(claim.owner.clone());
        let mut claimed = Vec::new();
        let queued = state_byte(RunState::Queued);
        for entry in self.due_entries(READY_QUEUED) {
            if claimed.len() >= claim.limit {
                break;
            }
            let (run, state, agent) = entry?;
            if state != queued
                || !(claim.agents.is_empty()
                    || claim.agents.iter().any(|a| a.as_bytes() == agent.as_ref()))
            {
                continue;
            }
            let outcome = self.transact(|tx| {
                let before = tx.record(run)?;
                if before.state != RunState::Queued || before.due_at.is_some_and(|due| due > now) {
                    return abort(Abort::Skip); // another claimer took it first
                }
                let mut record = moved(&before, RunState::Processing, None, now);
                record.attempt += 1;
                record.fence += 1;
                record.lease = Some(Lease {
                    owner: claim.owner.clone(),
                    token: record.fence,
                    expires_at: now.after(claim.lease),
                });
                let m = Move { actor: &actor, reason: "claimed", error: None, now };
                tx.write_move(Some(&before), &mut record, &m)?;
                Ok(record)
            })?;
            match outcome {
                Ok(record) => claimed.push(record),
                Err(Abort::Skip | Abort::NotFound(_)) => continue,
                Err(other) => return Err(unexpected(other)),
            }
        }
        if !claimed.is_empty() {
            // One ticket taken after the last claim was applied covers them all.
            self.durable(self.inner.commit.ticket()).await?;
        }
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        run: RunId,
        token: u64,
        extend: Duration,
    ) -> ConflictResult<Timestamp> {
        let now = self.now();
        let outcome = self.transact(|tx| {
            let mut record = tx.record(run)?;
            let current = record.lease.as_ref().map_or(record.fence, |l| l.token);
            if record.state != RunState::Processing {
                return abort(Abort::Conflict(Conflict::State {
                    run,
                    expected: RunState::Processing,
                    current: record.state,
                }));
            }
            let Some(lease) = record.lease.as_mut().filter(|l| l.token == token) else {
                return abort(Abort::Conflict(Conflict::Fenced { run, token, current }));
            };
            tx.leases.remove(lease_key(lease.expires_at, run))?;
            lease.expires_at = now.after(extend);
            let expires = lease.expires_at;
            tx.leases.insert(lease_key(expires, run), &token.to_be_bytes())?;
            tx.runs.insert(&run.to_bytes(), encode(&record))?;
            Ok(expires)
        })?;
        // A lost heartbeat costs at most an early lease expiry after a crash, which the crash
        // makes moot: no fsync here.
        match outcome {
            Ok(expires) => Ok(Ok(expires)),
            Err(Abort::Conflict(conflict)) => Ok(Err(conflict)),
            Err(Abort::NotFound(run)) => Err(StoreError::NotFound(run)),
            Err(other) => Err(unexpected(other)),
        }
    }

    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let end = lease_key(now.after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
        let mut recovered = Vec::new();
        for item in self.inner.trees.leases.range(..end) {
            if recovered.len() >= limit {
                break;
            }
            let (key, token) = item.map_err(|e| backend("scanning leases", e))?;
            let run = RunId::from_bytes(key[8..24].try_into().expect("lease key layout"));
            let token = u64::from_be_bytes(token.as_ref().try_into().expect("lease token"));
            let outcome = self.transact(|tx| {
                let before = tx.record(run)?;
                let Some(lease) = before.lease.as_ref().filter(|l| {
                    before.state == RunState::Processing && l.token == token && l.expires_at <= now
                }) else {
                    return abort(Abort::Skip);
                };
                let reason =
                    format!("lease of worker:{} expired at {}", lease.owner, lease.expires_at);
                let error = ErrorInfo::new(Fault::Transient, reason.clone());
                let mut record = moved(&before, RunState::FailedTransient, Some(now), now);
                record.last_error = Some(error.clone());
                let m = Move { actor: &Actor::Timer, reason: &reason, error: Some(&error), now };
                tx.write_move(Some(&before), &mut record, &m)?;
                Ok(record)
            })?;
            match outcome {
                Ok(record) => recovered.push(record),
                Err(Abort::Skip | Abort::NotFound(_)) => continue,
                Err(other) => return Err(unexpected(other)),
            }
        }
        if !recovered.is_empty() {
            self.durable(self.inner.commit.ticket()).await?;
        }
        Ok(recovered)
    }

    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let mut due = Vec::new();
        for entry in self.due_entries(READY_TIMER) {
            if due.len() >= limit {
                break;
            }
            let (run, _, _) = entry?;
            if let Some(record) = self.get_record(run)?.filter(|r| {
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
        let mut earliest: Option<Timestamp> = None;
        for kind in [READY_QUEUED, READY_TIMER] {
            let first = t
                .ready
                .scan_prefix([kind])
                .next()
                .transpose()
                .map_err(|e| backend("reading due times", e))?;
            if let Some((key, _)) = first {
                let due = Timestamp::from_be_bytes(key[1..9].try_into().expect("ready key layout"));
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
            }
        }
        if let Some((key, _)) = t.leases.first().map_err(|e| backend("reading leases", e))? {
            let expires = Timestamp::from_be_bytes(key[0..8].try_into().expect("lease key layout"));
            earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
        }
        Ok(earliest)
    }

    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError> {
        let record = self.get_record(run)?.ok_or(StoreError::NotFound(run))?;
        let effect = EffectRecord {
            run,
            name: name.to_owned(),
            result,
            attempt: record.attempt,
            recorded_at: self.now(),
        };
        let key = run_key_with(run, name.as_bytes());
        let swapped = self
            .inner
            .trees
            .effects
            .compare_and_swap(key, None as Option<&[u8]>, Some(encode(&effect)))
            .map_err(|e| backend("recording an effect", e))?;
        match swapped {
            Ok(()) => {
                self.durable(self.inner.commit.ticket()).await?;
                Ok(effect)
            }
            Err(existing) => {
                self.durable(self.inner.commit.latest()).await?;
                decode(
                    "effects",
                    &existing
                        .current
                        .expect("compare_and_swap from None failed on a present value"),
                )
            }
        }
    }

    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError> {
        let key = run_key_with(run, name.as_bytes());
        match self.inner.trees.effects.get(key).map_err(|e| backend("reading an effect", e))? {
            Some(bytes) => decode("effects", &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        scan_prefix(&self.inner.trees.effects, "effects", run)
    }

    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        scan_prefix(&self.inner.trees.history, "history", run)
    }

    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError> {
        if self.get_record(run)?.is_none() {
            return Err(StoreError::NotFound(run));
        }
        let seq = self.inner.db.generate_id().map_err(|e| backend("numbering a note", e))?;
        let note = Note { run, author, text: text.to_owned(), at: self.now() };
        self.inner
            .trees
            .notes
            .insert(run_key_with(run, &seq.to_be_bytes()), encode(&note))
            .map_err(|e| backend("writing a note", e))?;
        self.durable(self.inner.commit.ticket()).await?;
        Ok(note)
    }

    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        scan_prefix(&self.inner.trees.notes, "notes", run)
    }

    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let start = cursor.map_or_else(Vec::new, |c| {
            let mut k = c.to_bytes().to_vec();
            k.push(0); // strictly after the cursor
            k
        });
        self.inner
            .trees
            .dead_letter
            .range(start..)
            .take(limit)
            .map(|item| {
                let (_, bytes) = item.map_err(|e| backend("scanning dead letters", e))?;
                decode("dead_letter", &bytes)
            })
            .collect()
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let t = &self.inner.trees;
        // `by_state` keys are state|id, `runs` keys are id: `offset` is where the id starts.
        let (tree, offset, lower, upper) = match query.state {
            Some(state) => {
                let s = state_byte(state);
                (&t.by_state, 1, Included(vec![s]), Excluded(vec![s + 1]))
            }
            None => (&t.runs, 0, Unbounded, Unbounded),
        };
        let at = |run: RunId| [&lower_prefix(offset, query.state)[..], &run.to_bytes()].concat();
        let range = match (query.cursor, query.oldest_first) {
            (None, _) => tree.range((lower, upper)),
            (Some(c), true) => tree.range((Excluded(at(c)), upper)),
            (Some(c), false) => tree.range((lower, Excluded(at(c)))),
        };
        let decode_id = move |item: Result<(IVec, IVec), ::sled::Error>| {
            let (key, _) = item.map_err(|e| backend("listing runs", e))?;
            Ok(RunId::from_bytes(key[offset..offset + 16].try_into().expect("id in key")))
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
}

fn lower_prefix(offset: usize, state: Option<RunState>) -> Vec<u8> {
    state.filter(|_| offset == 1).map(|s| vec![state_byte(s)]).unwrap_or_default()
}

fn scan_prefix<T: DeserializeOwned>(
    tree: &Tree,
    name: &'static str,
    run: RunId,
) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(run.to_bytes())
        .map(|item| {
            let (_, bytes) = item.map_err(|e| backend("scanning a run's entries", e))?;
            decode(name, &bytes)
        })
        .collect()
}

fn unexpected(abort: Abort) -> StoreError {
    match abort {
        Abort::Corrupt(tree, source) => StoreError::Corrupt { tree, source },
        Abort::NotFound(run) => StoreError::NotFound(run),
        other => StoreError::InvalidRequest(format!("unexpected transaction outcome: {other:?}")),
    }
}
