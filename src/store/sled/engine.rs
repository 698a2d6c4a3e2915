//! The open database behind a [`SledStore`], and its reopening after a failed write.
//!
//! When a commit fails (a full disk, an I/O error), sled 0.34 refuses every later write of
//! that `Db` (its global error), and its memory may hold writes of the failed commit that
//! never reached the disk. So the committer fails that commit's callers and every request
//! after it, and the next call on the store drops this engine and opens the database again
//! from its files: sled recovers a prefix of its log, and the journal's replay completes the
//! failed commit if its entry got there whole, or it is absent; never half. Until the disk
//! takes writes again, the reopening itself fails, and so does the call (a resource fault).

use std::sync::Arc;

use super::committer::Committer;
use super::{SledStore, Trees, open};
use crate::store::StoreError;

/// One opening of the database.
pub(super) struct Engine {
    /// Which opening this is, in this process (see [`next_id`]): a lazy write's batch number
    /// means something only to the committer of the opening that applied it.
    pub(super) id: u64,
    pub(super) db: ::sled::Db,
    pub(super) trees: Trees,
    /// Every write goes through it (see `committer`).
    pub(super) committer: Committer,
}

/// The least time between two openings after failed writes.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A fresh id for an opening of a database (unique in this process).
pub(super) fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Where a write applied without waiting for its sync: the opening and its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Applied {
    /// The opening ([`Engine::id`]).
    pub(super) engine: u64,
    /// The batch of that opening's committer.
    pub(super) batch: u64,
}

impl SledStore {
    /// The open database as it is now, without opening it again if its committer failed.
    pub(super) fn current_engine(&self) -> Option<Arc<Engine>> {
        self.inner.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The open database: the current engine, or a new one if the current one's committer
    /// failed a write.
    pub(super) fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        let inner = &self.inner;
        {
            let slot = inner.engine.read().unwrap_or_else(|p| p.into_inner());
            if let Some(engine) = slot.as_ref().filter(|e| !e.committer.failed()) {
                return Ok(engine.clone());
            }
        }
        let mut slot = inner.engine.write().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = slot.as_ref().filter(|e| !e.committer.failed()) {
            return Ok(engine.clone()); // another caller reopened it meanwhile
        }
        // Opening reads the whole log: while the disk stays full, at most once a second.
        let mut last = inner.reopened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *last
            && at.elapsed() < REOPEN_EVERY
        {
            return Err(StoreError::Backend {
                context: "reopening the database after a failed write",
                source: Box::new(std::io::Error::other(
                    "the last attempt was less than a second ago; tried again at the next call after that",
                )),
            });
        }
        *last = Some(std::time::Instant::now());
        drop(last);
        if let Some(old) = slot.take() {
            // Claims acknowledged before their sync may be gone with the old engine's memory:
            // their claimers must not act on them. The ones it synced are durable: forget them.
            // The rest stay, naming an opening that is gone, which `Store::wait_durable`
            // reports lost.
            let mut unsynced = inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner());
            unsynced.retain(|_, at| !(at.engine == old.id && old.committer.is_synced(at.batch)));
            drop(unsynced);
            tracing::warn!(
                path = %inner.path.display(),
                "reopening the database after a failed write"
            );
            drop(old); // its committer thread ends; sled lets go of the files
        }
        let engine = Arc::new(open::open_engine(&inner.path, &inner.options, false, true)?);
        tracing::warn!(path = %inner.path.display(), "the database is open again and takes writes");
        *slot = Some(engine.clone());
        Ok(engine)
    }
}
