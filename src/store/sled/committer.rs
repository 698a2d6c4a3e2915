//! The committer: one thread applies every write, many callers' writes per commit, then
//! makes the commit durable with one flush of sled's log and one `fdatasync` before answering
//! its durable writes. Writes that need no sync (claims, heartbeats) are answered as soon as
//! they are applied.
//!
//! A commit is the writes of a batch of requests, gathered in a write set (each request reads
//! through it, so it sees the writes of the requests before it; one that refuses itself is
//! rolled back alone), then journaled as one entry and applied with plain inserts and removes
//! (see `journal`): no sled transaction or `Batch`, which would cost two device writes of
//! their own per commit and a process-wide lock around every read.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::durable::make_durable;
use super::journal;
use super::tx::{Abort, Tx, TxError, TxResult, WriteSet, apply_writes};
use super::{Durability, Trees, backend, io_error};
use crate::store::StoreError;

/// One caller's write, checking before it writes (a refusal is rolled back anyway).
pub(super) type Apply<T> = Box<dyn Fn(&Tx<'_>) -> TxResult<T> + Send>;

/// The largest number of requests one commit takes.
const MAX_BATCH: usize = 1024;

/// A write's value, typed again by the caller that asked for it.
type Value = Box<dyn std::any::Any + Send>;
/// A write with its value type erased, as the committer thread sees it.
type ErasedApply = Apply<Value>;
/// The answer to a request: its result, and the number of the batch that applied it.
type Reply = Box<dyn FnOnce(Result<Value, Failure>, u64) + Send>;

/// Why a write did not happen.
pub(super) enum Failure {
    Abort(Abort),
    Store(StoreError),
}

struct Request {
    /// The write; `None` for a sync barrier (see [`Committer::sync`]).
    apply: Option<ErasedApply>,
    reply: Reply,
    /// Whether the caller waits for the sync (see [`Committer::write_lazy`]).
    durable: bool,
}

/// The handle to the committer thread. Dropping it stops the thread and waits for it, so the
/// database can be reopened at once.
pub(super) struct Committer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
    /// The number of the last batch a sync covered (batches are numbered from 1, applied and
    /// synced in order): every write applied in a batch up to it is durable.
    synced: Arc<AtomicU64>,
    /// Set when a commit failed: the database is reopened before the next write (`engine`).
    failed: Arc<AtomicBool>,
    /// Set by a test build's fault point: the next sync fails.
    fail_sync: Arc<AtomicBool>,
}

/// What the committer thread owns.
pub(super) struct Writer {
    pub(super) db: ::sled::Db,
    pub(super) trees: Trees,
    pub(super) path: PathBuf,
    pub(super) durability: Durability,
    pub(super) group_commit: bool,
    pub(super) log: File,
    /// The number of the last commit in the journal at open (commits are numbered after it).
    pub(super) first_batch: u64,
}

/// Makes applied writes durable.
struct Syncer {
    failed: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    db: ::sled::Db,
    log: File,
    path: PathBuf,
    durability: Durability,
    syncs: Arc<AtomicU64>,
    synced: Arc<AtomicU64>,
}

impl Committer {
    pub(super) fn start(writer: Writer) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Request>();
        let syncs = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let fail_sync = Arc::new(AtomicBool::new(false));
        let syncer = Syncer {
            failed: failed.clone(),
            fail_sync: fail_sync.clone(),
            db: writer.db.clone(),
            log: writer.log.try_clone()?,
            path: writer.path.clone(),
            durability: writer.durability,
            syncs: syncs.clone(),
            synced: synced.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("steadfast-committer".into())
            .spawn(move || writer.run(&receiver, &syncer))?;
        Ok(Committer {
            sender: Some(sender),
            thread: Some(thread),
            syncs,
            synced,
            failed,
            fail_sync,
        })
    }

    /// Makes the next sync fail as an I/O error would (a test build's fault point).
    pub(super) fn fail_next_sync(&self) {
        self.fail_sync.store(true, Ordering::SeqCst);
    }

    /// Whether a commit failed (the disk full, an I/O error): this committer takes no more
    /// writes, and the database must be opened again.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the write applied in batch `batch` is durable already.
    pub(super) fn is_synced(&self, batch: u64) -> bool {
        self.synced.load(Ordering::Acquire) >= batch
    }

    /// How many syncs (flushes, with fsync in `Fsync` mode) ran.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Applies `apply` in the next batch and returns once it is durable: `Ok(Ok(value))`, or
    /// `Ok(Err(abort))` if the operation refused itself (nothing was written for it).
    pub(super) async fn write<T: Send + 'static>(
        &self,
        apply: Apply<T>,
    ) -> Result<Result<T, Abort>, StoreError> {
        Ok(self.submit(apply, true).await?.0)
    }

    /// Like [`write`](Committer::write), but returns as soon as the write is applied, without
    /// waiting for a sync: the write becomes durable with the next sync, which every later
    /// durable write runs (writes are applied and synced in order). For writes whose loss in
    /// a crash costs nothing as long as nobody acts on it first: a claim (the run is simply
    /// claimed again; [`is_synced`](Committer::is_synced) and [`sync`](Committer::sync) let
    /// the claimer wait before its agent acts) and a heartbeat. Also returns the number of
    /// the batch that applied the write.
    pub(super) async fn write_lazy<T: Send + 'static>(
        &self,
        apply: Apply<T>,
    ) -> Result<(Result<T, Abort>, u64), StoreError> {
        self.submit(apply, false).await
    }

    /// Returns once every write applied so far, and every single-tree write made directly on
    /// sled before this call (an effect's journal entry), is durable. Costs no transaction:
    /// barriers that meet in a batch share its sync.
    pub(super) async fn sync(&self) -> Result<(), StoreError> {
        match self.send(None, true).await?.0 {
            Ok(_) => Ok(()),
            Err(Failure::Store(error)) => Err(error),
            Err(Failure::Abort(abort)) => Err(abort.into_error()),
        }
    }

    async fn submit<T: Send + 'static>(
        &self,
        apply: Apply<T>,
        durable: bool,
    ) -> Result<(Result<T, Abort>, u64), StoreError> {
        let erased: ErasedApply = Box::new(move |tx| apply(tx).map(|v| Box::new(v) as Value));
        let (result, batch) = self.send(Some(erased), durable).await?;
        match result {
            Ok(value) => Ok((
                Ok(*value.downcast::<T>().expect("the committer answers with the requested type")),
                batch,
            )),
            Err(Failure::Abort(abort)) => Ok((Err(abort), batch)),
            Err(Failure::Store(error)) => Err(error),
        }
    }

    /// Hands a request to the committer thread and waits for its answer.
    async fn send(
        &self,
        apply: Option<ErasedApply>,
        durable: bool,
    ) -> Result<(Result<Value, Failure>, u64), StoreError> {
        let (tell, answer) = oneshot::channel();
        let reply: Reply = Box::new(move |result, batch| {
            let _ = tell.send((result, batch));
        });
        let stopped = || StoreError::Io {
            context: "writing to the database".into(),
            source: std::io::Error::other("the committer thread has stopped"),
        };
        let request = Request { apply, reply, durable };
        self.sender.as_ref().ok_or_else(stopped)?.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.sender.take(); // the committer finishes its batch and ends
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    fn run(self, receiver: &mpsc::Receiver<Request>, syncer: &Syncer) {
        let limit = if self.group_commit { MAX_BATCH } else { 1 };
        let mut number = self.first_batch;
        while let Ok(first) = receiver.recv() {
            number += 1;
            let mut batch = vec![first];
            while batch.len() < limit {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let durable: Vec<bool> = batch.iter().map(|r| r.durable).collect();
            let (requests, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|r| (r.apply, r.reply)).unzip();
            if syncer.failed.load(Ordering::Acquire) {
                // After a failed commit nothing more is applied on this opening: sled refuses
                // its writes, and its memory may hold the failed commit's.
                for reply in replies {
                    reply(Err(Failure::Store(reopening())), number);
                }
                continue;
            }
            match self.apply(&requests, number) {
                Ok(results) => {
                    let mut waiting = Vec::new();
                    for ((reply, result), durable) in replies.into_iter().zip(results).zip(durable)
                    {
                        match result {
                            Err(abort) => reply(Err(Failure::Abort(abort)), number),
                            Ok(value)
                                if !durable
                                    || matches!(self.durability, Durability::Periodic(_)) =>
                            {
                                reply(Ok(value), number); // applied; synced later
                            }
                            Ok(value) => waiting.push((reply, value)),
                        }
                    }
                    if waiting.is_empty() {
                        continue;
                    }
                    syncer.sync_and_reply(waiting, number);
                }
                Err(error) => {
                    syncer.fail(&error);
                    for reply in replies {
                        reply(Err(Failure::Store(copy_error(&error))), number);
                    }
                }
            }
        }
    }

    /// Applies every request into one write set, then commits it as commit `number`: each
    /// request gets its own value, or its abort (and its writes are rolled back).
    fn apply(
        &self,
        requests: &[Option<ErasedApply>],
        number: u64,
    ) -> Result<Vec<Result<Value, Abort>>, StoreError> {
        let set = WriteSet::default();
        let mut results = Vec::with_capacity(requests.len());
        {
            let tx = Tx::new(&self.trees, &set);
            for apply in requests {
                let Some(apply) = apply else {
                    results.push(Ok(Box::new(()) as Value));
                    continue;
                };
                let mark = set.mark();
                match apply(&tx) {
                    Ok(value) => results.push(Ok(value)),
                    Err(TxError::Abort(abort)) => {
                        set.rollback(mark);
                        results.push(Err(abort));
                    }
                    Err(TxError::Storage(e)) => return Err(backend("reading the database", e)),
                }
            }
        }
        if !set.is_empty() {
            self.commit(number, &set.into_writes(&self.trees))?;
        }
        Ok(results)
    }

    /// The journal entry, the writes, the entry's removal: in that order in sled's log.
    fn commit(
        &self,
        number: u64,
        writes: &[(super::tx::TreeId, Vec<u8>, Option<::sled::IVec>)],
    ) -> Result<(), StoreError> {
        let keys = journal::write(&self.trees, number, writes)?;
        if journal::armed("commit-half") {
            // A test build asked for the torn state a crash leaves: the entry and half the
            // writes in sled's log, the rest not.
            let half = writes.len() / 2;
            apply_writes(&self.trees, &writes[..half])?;
            self.db.flush().map_err(|e| backend("flushing the database", e))?;
            journal::crash_point("commit-half");
            apply_writes(&self.trees, &writes[half..])?;
        } else {
            apply_writes(&self.trees, writes)?;
        }
        journal::remove(&self.trees, &keys)
    }
}

impl Syncer {
    /// One sync covers every write applied before it began, so all of `waiting` may be told.
    /// `batch` is the number of the batch just applied: the sync covers it and every one
    /// before it.
    fn sync_and_reply(&self, waiting: Vec<(Reply, Value)>, batch: u64) {
        let synced = self.sync();
        match &synced {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.synced.store(batch, Ordering::Release);
            }
            // A failed fsync may have dropped the pages it was to write (Linux forgets them):
            // what this opening holds in memory can no longer be trusted to be on disk.
            Err(error) => self.fail(error),
        }
        for (reply, value) in waiting {
            reply(
                match &synced {
                    Ok(()) => Ok(value),
                    Err(e) => Err(Failure::Store(copy_error(e))),
                },
                batch,
            );
        }
    }

    /// Marks the committer failed after `error`.
    fn fail(&self, error: &StoreError) {
        tracing::error!(%error, "a commit failed: its callers are told so, and the database is opened again before the next write");
        self.failed.store(true, Ordering::Release);
    }

    /// Makes everything applied so far durable per the durability mode.
    fn sync(&self) -> Result<(), StoreError> {
        if self.fail_sync.swap(false, Ordering::SeqCst) {
            eprintln!("steadfast: failing this sync, as a fault point asked");
            let injected = std::io::Error::other("a sync failure injected by a fault point");
            return Err(io_error("fsync of the database log", injected));
        }
        match self.durability {
            Durability::Fsync => make_durable(&self.db, &self.log, &self.path),
            _ => self.db.flush().map(drop).map_err(|e| backend("flushing the database", e)),
        }
    }
}

/// The system's words for an I/O error: sled re-wraps the OS error in one whose text is its
/// `Debug` form (`Os { code: 28, kind: StorageFull, .. }`), so the code is read back from it.
fn os_error_text(error: &io::Error) -> String {
    let text = error.to_string();
    let code = error.raw_os_error().or_else(|| {
        let rest = text.split("Os { code: ").nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    });
    code.map_or(text, |code| io::Error::from_raw_os_error(code).to_string())
}

/// The answer to a write that came after a failed commit on the same opening.
fn reopening() -> StoreError {
    StoreError::Backend {
        context: "writing to the database",
        source: Box::new(io::Error::other(
            "an earlier commit failed; the database is opened again before the next write",
        )),
    }
}

/// The same failure for every caller of a failed batch (errors are not `Clone`): a resource
/// fault (the store's own disk), keeping the I/O error's kind (a full disk is `StorageFull`).
fn copy_error(error: &StoreError) -> StoreError {
    let mut found = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            found = Some(io);
            break;
        }
        if let Some(::sled::Error::Io(io)) = e.downcast_ref::<::sled::Error>() {
            found = Some(io);
            break;
        }
        source = e.source();
    }
    let (kind, why) = match found {
        Some(io) => (io.kind(), os_error_text(io)),
        None => (io::ErrorKind::Other, error.to_string()),
    };
    StoreError::Backend {
        context: "writing to the database",
        source: Box::new(io::Error::new(
            kind,
            format!(
                "{why}; this commit is applied whole or not at all, which the store shows once the disk takes writes again"
            ),
        )),
    }
}
