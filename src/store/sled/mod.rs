//! [`SledStore`]: the embedded default store, on sled 0.34.
//!
//! Trees: `runs` (id → the run's moving part), `inputs`, `outputs` and `signals` (id → JSON
//! payload), `history` (id|seq → entry), `keys` (agent|key → id), `ready` (kind|due|id →
//! state|agent: queued runs, and timers), `leases` (expiry|id → token), `by_state` (state|id),
//! `effects` (id|name → record), `starts` (id|attempt: the attempts whose start was
//! recorded), `dead_letter` (id → entry), `notes` (id|seq → note),
//! `counts` (per state, and per agent and state), `journal` (commits not yet known applied) and
//! `meta` (format, schemas). A commit (the writes of a batch of moves from concurrent callers)
//! is journaled as one entry and then applied, so after a crash it is there whole or not at
//! all and the indexes and counts always agree with the records; it is made durable (see
//! [`Durability`]) with one flush of sled's log and one `fdatasync` before any caller hears of
//! it. No sled transaction or `Batch` is used (see `journal`).

mod codec;
mod committer;
mod contract;
mod durable;
mod engine;
mod journal;
mod keys;
mod open;
mod prune;
mod reads;
mod repair;
mod starts;
mod tx;
mod writes;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::sled::{IVec, Tree};
use serde_json::Value;

use self::codec::{decode_run, from_json};
use self::engine::Engine;
use self::keys::*;
use self::tx::{Abort, Tx};
use super::{ListQuery, Page, RunRecord, StoreError};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::lifecycle::RunId;

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

/// The layout of a sled database, stored in it: 1, moves as sled transactions and counts by
/// scanning; 2, commits through a journal and counts kept with every commit. A database of
/// layout 1 is migrated on open (its counts computed once); a steadfast that knows only
/// layout 1 refuses one of layout 2 as newer (it would not replay the journal after a crash).
pub const SLED_FORMAT: u32 = 2;

/// The embedded store: one directory, one process at a time (sled takes a file lock).
///
/// ```no_run
/// # async fn demo() -> Result<(), steadfast::store::StoreError> {
/// use steadfast::store::{NewRun, SledStore, Store};
///
/// // The `db` folder of the data directory (`steadfast --data steadfast-data` finds it).
/// let store = SledStore::open("steadfast-data/db")?;
/// let created = store.create(NewRun::new("mailer", "digest-2026-11-23", serde_json::json!({}))).await?;
/// assert!(created.created);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; replaced after a failed write (see `engine`). `None` only while a
    /// reopen after a failed write has not succeeded yet.
    engine: std::sync::RwLock<Option<Arc<Engine>>>,
    path: PathBuf,
    durability: Durability,
    clock: Arc<dyn Clock>,
    /// What the store was opened with, to open it again.
    options: SledStoreOptions,
    /// When the database was last opened again after a failed write.
    reopened: std::sync::Mutex<Option<std::time::Instant>>,
    /// Runs whose latest claim (or creation already claimed) was acknowledged before its
    /// sync, with the number of the batch that applied it; see `Store::wait_durable`.
    unsynced_claims: std::sync::Mutex<std::collections::HashMap<RunId, engine::Applied>>,
    /// The leases found when the database was opened, by run, with their fencing token: sled
    /// lets one process open a database, so their process is gone, and `recover_expired`
    /// recovers them at once instead of when they expire. Emptied as they are recovered.
    orphans: std::sync::Mutex<std::collections::HashMap<RunId, u64>>,
    /// Tells runtimes of new or newly due work (see `Store::work_signal`).
    signal: crate::store::WorkSignal,
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
    /// The attempts whose start was recorded: id | attempt (4, big-endian) → nothing.
    starts: Tree,
    dead_letter: Tree,
    notes: Tree,
    meta: Tree,
    /// Counts per state and per agent and state, kept with every commit (`keys::counter_keys`).
    counts: Tree,
    /// The commits not yet known durable, each as one entry (see `journal`).
    journal: Tree,
}

impl Trees {
    /// Opens (or creates) every tree of the database.
    fn open(db: &::sled::Db) -> Result<Trees, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(|e| backend("opening a tree", e));
        Ok(Trees {
            runs: tree("runs")?,
            inputs: tree("inputs")?,
            outputs: tree("outputs")?,
            signals: tree("signals")?,
            history: tree("history")?,
            keys: tree("keys")?,
            ready: tree("ready")?,
            queue: tree("queue")?,
            locks: tree("locks")?,
            children: tree("children")?,
            leases: tree("leases")?,
            by_state: tree("by_state")?,
            effects: tree("effects")?,
            starts: tree("starts")?,
            dead_letter: tree("dead_letter")?,
            notes: tree("notes")?,
            meta: tree("meta")?,
            counts: tree("counts")?,
            journal: tree("journal")?,
        })
    }

    /// The trees a commit writes, by their id in the journal (never reorder: the ids are
    /// stored in journal entries), each with its rank in the order a commit's writes are
    /// applied (see `tx::WriteSet::into_writes`): what a run points to (0), the run (1), the
    /// indexes that lead to it (2).
    fn written(&self) -> [(&Tree, u8); 17] {
        [
            (&self.runs, 1),
            (&self.by_state, 2),
            (&self.ready, 2),
            (&self.queue, 2),
            (&self.locks, 2),
            (&self.children, 2),
            (&self.leases, 2),
            (&self.history, 0),
            (&self.dead_letter, 0),
            (&self.keys, 2),
            (&self.inputs, 0),
            (&self.outputs, 0),
            (&self.signals, 0),
            (&self.notes, 0),
            (&self.counts, 0),
            (&self.effects, 0),
            (&self.starts, 0),
        ]
    }
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
        self.inner
            .engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |e| e.committer.syncs())
    }

    /// Makes everything written so far durable, whatever the durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let engine = self.engine()?;
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            engine.db.flush().map_err(|e| backend("flushing the database", e))?;
            File::open(path.join("db"))
                .and_then(|log| log.sync_data())
                .map_err(|e| io_error("fsync of the database log", e))?;
            durable::sync_blobs(&path).map_err(|e| io_error("fsync of the database blobs", e))
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
        self.engine()?.committer.write(Box::new(apply)).await
    }

    /// Applies `apply` through the committer; returns once it is applied, durable with the
    /// next sync of the same opening, with where it was applied.
    async fn write_lazy<T: Send + 'static>(
        &self,
        apply: impl Fn(&Tx<'_>) -> tx::TxResult<T> + Send + 'static,
    ) -> Result<(Result<T, Abort>, engine::Applied), StoreError> {
        let engine = self.engine()?;
        let (outcome, batch) = engine.committer.write_lazy(Box::new(apply)).await?;
        Ok((outcome, engine::Applied { engine: engine.id, batch }))
    }

    /// Remembers that the claims of `runs` were applied where `batch` says, not yet synced.
    fn claimed_unsynced(&self, runs: impl IntoIterator<Item = RunId>, batch: engine::Applied) {
        if matches!(self.inner.durability, Durability::Periodic(_)) {
            return; // an explicit opt-out: nothing waits for a sync
        }
        let mut unsynced = self.inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner());
        unsynced.extend(runs.into_iter().map(|run| (run, batch)));
        if journal::fault_point("claim-unsynced")
            && let Some(engine) = self.current_engine()
        {
            engine.committer.fail_next_sync();
        }
        if unsynced.len() > 4096 {
            // Claims whose claimer never asked (a user's own claim loop): forget synced ones.
            // The opening as it is: reopening a failed one here would take this lock again.
            if let Some(engine) = self.current_engine() {
                // Claims another opening applied are kept: their claimers must hear they
                // are lost.
                unsynced.retain(|_, at| {
                    at.engine != engine.id || !engine.committer.is_synced(at.batch)
                });
            }
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
    fn assemble(&self, id: RunId, run: crate::store::RunHead) -> Result<RunRecord, StoreError> {
        let engine = self.engine()?;
        let t = &engine.trees;
        let input = self.payload(&t.inputs, "inputs", id)?.unwrap_or(Value::Null);
        let output = self.payload(&t.outputs, "outputs", id)?;
        let signal = self.payload(&t.signals, "signals", id)?;
        Ok(run.into_record(id, input, output, signal))
    }

    fn get_record(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        match self
            .engine()?
            .trees
            .runs
            .get(run.to_bytes())
            .map_err(|e| backend("reading a run", e))?
        {
            Some(bytes) => self.assemble(run, decode_run(&bytes)?).map(Some),
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
    fn due_entries(
        &self,
        kind: u8,
    ) -> Result<impl Iterator<Item = Result<(RunId, u8, IVec), StoreError>>, StoreError> {
        let end =
            ready_key(kind, self.now().after(Duration::from_millis(1)), RunId::from_bytes([0; 16]));
        let ready = self.engine()?.trees.ready.clone();
        Ok(ready.range(vec![kind]..end).map(|item| {
            let (key, value) = item.map_err(|e| backend("scanning due runs", e))?;
            Ok((ready_key_run(&key), value[0], value.subslice(1, value.len() - 1)))
        }))
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
