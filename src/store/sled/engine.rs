//! One opening of the database behind a [`SledStore`](super::SledStore); its reopening
//! after a failed write is `open`'s.
//!
//! When a commit fails (a full disk, an I/O error), sled 0.34 refuses every later write of
//! that `Db` (its global error), and its memory may hold writes of the failed commit that
//! never reached the disk. So the committer fails that commit's callers and every request
//! after it, and the next call on the store drops this engine and opens the database again
//! from its files: sled recovers a prefix of its log, and the journal's replay completes the
//! failed commit if its entry got there whole, or it is absent; never half. Until the disk
//! takes writes again, the reopening itself fails, and so does the call (a resource fault).

use super::Trees;
use super::committer::Committer;

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
