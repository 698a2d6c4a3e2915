//! Group commit: concurrent writers share one flush (and one fsync).
//!
//! Each write takes a ticket after it is applied in memory. A writer that needs its write
//! durable waits until the synced mark passes its ticket; if no sync is running, it becomes the
//! leader, reads the newest ticket, syncs once, and publishes that ticket as synced. One sync
//! therefore covers every write that finished before it began, and under load the number of
//! syncs per second stays near what the disk allows while the writes per sync grow.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) struct GroupCommit {
    written: AtomicU64,
    synced: AtomicU64,
    syncs: AtomicU64,
    leader: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    pub(super) fn new() -> Self {
        GroupCommit {
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            leader: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes a ticket for a write that has just been applied.
    pub(super) fn ticket(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The newest ticket handed out: waiting for it makes everything written so far durable
    /// (used when returning data another writer wrote).
    pub(super) fn latest(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// How many syncs ran (for benchmarks and tests).
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once the write behind `ticket` is durable, running `sync` (on the blocking
    /// pool) if no sync already in progress or completed covers it.
    pub(super) async fn wait<F>(&self, ticket: u64, sync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()> + Send + 'static,
    {
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let _leader = self.leader.lock().await;
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(()); // the sync that just ran covered us
        }
        let target = self.written.load(Ordering::SeqCst);
        tokio::task::spawn_blocking(sync).await.map_err(io::Error::other)??;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(target, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_sync_covers_concurrent_writers() {
        let commit = Arc::new(GroupCommit::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (commit, calls) = (commit.clone(), calls.clone());
                tokio::spawn(async move {
                    let ticket = commit.ticket();
                    commit
                        .wait(ticket, move || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let syncs = calls.load(Ordering::SeqCst);
        assert!((1..64).contains(&syncs), "64 writers needed {syncs} syncs");
        assert_eq!(commit.synced.load(Ordering::SeqCst), 64);
    }

    #[tokio::test]
    async fn failed_sync_is_reported_and_not_marked() {
        let commit = GroupCommit::new();
        let ticket = commit.ticket();
        let err = commit.wait(ticket, || Err(io::Error::other("disk gone"))).await.unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
        assert_eq!(commit.synced.load(Ordering::SeqCst), 0);
        commit.wait(ticket, || Ok(())).await.unwrap();
        assert_eq!(commit.synced.load(Ordering::SeqCst), 1);
    }
}
