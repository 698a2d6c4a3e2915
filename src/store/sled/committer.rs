//! The committer: one thread applies every write, many callers' writes per sled transaction,
//! then makes them durable with one flush (and one fsync) before answering any of them.
//!
//! Why one writer: sled 0.34 writes and `sync_file_range`s its log buffer twice for every
//! transaction or batch (its `pin_log` rolls the buffer before and after), so a transaction
//! per move would cost two device writes per move however the syncs are shared. Batching the
//! moves of concurrent callers into one transaction makes that cost, and the flush after it,
//! per batch: group commit at the transaction level. A move that is refused (a stale `from`,
//! a stale lease) aborts only itself, never the batch, because every operation checks before
//! it writes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use ::sled::Transactional;
use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::oneshot;

use super::tx::{Abort, Tx, TxResult};
use super::{Durability, Trees, backend, io_error, open};
use crate::store::StoreError;

/// One caller's write: re-runnable (sled may retry a transaction), checking before writing.
pub(super) type Apply<T> = Box<dyn Fn(&Tx<'_>) -> TxResult<T> + Send>;

/// The largest number of writes one transaction takes.
const MAX_BATCH: usize = 1024;

/// A write's value, typed again by the caller that asked for it.
type Value = Box<dyn std::any::Any + Send>;
/// A write with its value type erased, as the committer thread sees it.
type ErasedApply = Apply<Value>;
type Reply = Box<dyn FnOnce(Result<Value, Failure>) + Send>;

/// Why a write did not happen.
pub(super) enum Failure {
    Abort(Abort),
    Store(StoreError),
}

struct Request {
    apply: ErasedApply,
    reply: Reply,
}

/// The handle to the committer thread. Dropping it stops the thread and waits for it, so the
/// database can be reopened at once.
pub(super) struct Committer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
}

/// What the committer thread owns.
pub(super) struct Writer {
    pub(super) db: ::sled::Db,
    pub(super) trees: Trees,
    pub(super) path: PathBuf,
    pub(super) durability: Durability,
    pub(super) group_commit: bool,
    pub(super) log: File,
}

impl Committer {
    pub(super) fn start(writer: Writer) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Request>();
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = syncs.clone();
        let thread = std::thread::Builder::new()
            .name("steadfast-committer".into())
            .spawn(move || writer.run(&receiver, &counter))?;
        Ok(Committer { sender: Some(sender), thread: Some(thread), syncs })
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
        let (tell, answer) = oneshot::channel();
        let request = Request {
            apply: Box::new(move |tx| {
                apply(tx).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)
            }),
            reply: Box::new(move |result| {
                let _ = tell.send(result);
            }),
        };
        let stopped = || StoreError::Io {
            context: "writing to the database".into(),
            source: std::io::Error::other("the committer thread has stopped"),
        };
        self.sender.as_ref().ok_or_else(stopped)?.send(request).map_err(|_| stopped())?;
        match answer.await.map_err(|_| stopped())? {
            Ok(value) => Ok(Ok(*value
                .downcast::<T>()
                .expect("the committer answers with the requested type"))),
            Err(Failure::Abort(abort)) => Ok(Err(abort)),
            Err(Failure::Store(error)) => Err(error),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    fn run(self, receiver: &mpsc::Receiver<Request>, syncs: &AtomicU64) {
        let limit = if self.group_commit { MAX_BATCH } else { 1 };
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            while batch.len() < limit {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let (requests, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|r| (r.apply, r.reply)).unzip();
            match self.apply(&requests) {
                Ok(results) => {
                    let wrote = results.iter().any(Result::is_ok);
                    let synced = if wrote { self.sync() } else { Ok(()) };
                    if wrote
                        && synced.is_ok()
                        && !matches!(self.durability, Durability::Periodic(_))
                    {
                        syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        reply(match (&synced, result) {
                            (Err(e), Ok(_)) => Err(Failure::Store(copy_error(e))),
                            (_, Ok(value)) => Ok(value),
                            (_, Err(abort)) => Err(Failure::Abort(abort)),
                        });
                    }
                }
                Err(error) => {
                    for reply in replies {
                        reply(Err(Failure::Store(copy_error(&error))));
                    }
                }
            }
        }
    }

    /// Applies every request in one transaction; each gets its own value or abort.
    fn apply(&self, requests: &[ErasedApply]) -> Result<Vec<Result<Value, Abort>>, StoreError> {
        let t = &self.trees;
        let trees = (
            &t.runs,
            &t.by_state,
            &t.ready,
            &t.leases,
            &t.history,
            &t.dead_letter,
            &t.keys,
            &t.inputs,
            &t.outputs,
            &t.signals,
            &t.effects,
            &t.notes,
        );
        let result = trees.transaction(
            |(
                runs,
                by_state,
                ready,
                leases,
                history,
                dead_letter,
                keys,
                inputs,
                outputs,
                signals,
                effects,
                notes,
            )| {
                let tx = Tx {
                    runs,
                    by_state,
                    ready,
                    leases,
                    history,
                    dead_letter,
                    keys,
                    inputs,
                    outputs,
                    signals,
                    effects,
                    notes,
                };
                let mut results = Vec::with_capacity(requests.len());
                for apply in requests {
                    match apply(&tx) {
                        Ok(value) => results.push(Ok(value)),
                        Err(ConflictableTransactionError::Abort(abort)) => results.push(Err(abort)),
                        Err(other) => return Err(other), // a conflict or storage error: sled retries or fails
                    }
                }
                Ok(results)
            },
        );
        match result {
            Ok(results) => Ok(results),
            Err(TransactionError::Abort(never)) => Err(never.into_error()),
            Err(TransactionError::Storage(e)) => Err(backend("transaction", e)),
        }
    }

    /// Makes everything applied so far durable per the durability mode.
    fn sync(&self) -> Result<(), StoreError> {
        if let Durability::Periodic(_) = self.durability {
            return Ok(());
        }
        self.db.flush().map_err(|e| backend("flushing the database", e))?;
        if self.durability == Durability::Fsync {
            self.log.sync_data().map_err(|e| io_error("fsync of the database log", e))?;
            open::sync_blobs(&self.path).map_err(|e| io_error("fsync of the database blobs", e))?;
        }
        Ok(())
    }
}

/// The same failure for every caller of a failed batch (errors are not `Clone`).
fn copy_error(error: &StoreError) -> StoreError {
    StoreError::Io {
        context: "writing to the database".into(),
        source: std::io::Error::other(error.to_string()),
    }
}
