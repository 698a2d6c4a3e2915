//! The store's own resource faults, for real: a sled database on a small tmpfs that fills up.
//! Every caller of a commit that meets the full disk gets a clear error classified
//! `Resource`; no commit is left half-applied; when space returns the store carries on (it
//! reopens the database itself), and a reopened database agrees with itself.
//!
//! Mounting needs root (`mount -t tmpfs`); without it the test is skipped, or fails under
//! `STEADFAST_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use steadfast::fault::{Classify, Fault};
use steadfast::store::{ListQuery, NewRun, SledStore, Store, StoreError};
use steadfast::{RunState, StateMachine};

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            return super::peers::missing_peer("a tmpfs mount (`mount -t tmpfs`, as root)");
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system under `dir` with one file until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Every state's count equals the runs listed in it.
async fn agrees_with_itself(store: &SledStore) -> u64 {
    let counts = store.counts().await.unwrap();
    for &state in RunState::STATES {
        let listed = store.list(ListQuery::new().state(state).limit(10_000)).await.unwrap();
        assert_eq!(counts.get(state), listed.runs.len() as u64, "count of {state}");
        for run in &listed.runs {
            let history = store.history(run.id).await.unwrap();
            assert_eq!(history.last().map(|h| h.to), Some(run.state), "history of {}", run.id);
        }
    }
    counts.total()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_commits_cleanly_and_the_store_carries_on_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("24m") else { return };
    let path = tmpfs.path().join("db");
    let store = SledStore::open(&path).unwrap();
    let input = json!({"text": "x".repeat(2000)});
    for i in 0..50 {
        store.create(NewRun::new("a", format!("before-{i}"), input.clone())).await.unwrap();
    }
    let filler = fill(tmpfs.path());

    // Until the store refuses: every error is a resource fault that says why.
    let mut created = 50;
    let mut failed: Option<StoreError> = None;
    for i in 0..20_000 {
        match store.create(NewRun::new("a", format!("full-{i}"), input.clone())).await {
            Ok(_) => created += 1,
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let error = failed.expect("a full disk must fail a commit");
    assert_eq!(error.fault(), Fault::Resource, "{error}");
    assert!(error.to_string().contains("No space left on device"), "{error}");
    eprintln!("the first failed commit: {error}");
    // Later calls fail the same way while the disk is full (or succeed, if the failed write
    // freed its own space); none of them panics or hangs.
    for i in 0..5 {
        if let Err(error) = store.create(NewRun::new("a", format!("still-{i}"), json!(i))).await {
            assert_eq!(error.fault(), Fault::Resource, "{error}");
        }
    }

    // Space returns: the store carries on by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut carried_on = false;
    for i in 0..50 {
        match store.create(NewRun::new("a", format!("after-{i}"), json!(i))).await {
            Ok(run) => {
                assert!(run.created);
                carried_on = true;
                break;
            }
            Err(error) => {
                assert_eq!(error.fault(), Fault::Resource, "{error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert!(carried_on, "the store did not carry on once space returned");
    let total = agrees_with_itself(&store).await;
    assert!(total > created, "acknowledged runs are all there: {total} <= {created}");
    drop(store);

    let store = SledStore::open(&path).unwrap();
    assert_eq!(agrees_with_itself(&store).await, total, "the reopened database holds the same");
    for i in 0..created - 50 {
        let key = format!("full-{i}");
        assert!(store.find_by_key("a", &key).await.unwrap().is_some(), "{key} was acknowledged");
    }
}

/// A worker that runs until shut down outlives a full disk: its own writes fail meanwhile (a
/// retry timer comes due while the disk is full), runs submitted are refused with a resource
/// fault, and once space returns the same runtime works off the retry and new runs, without
/// a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_outlives_a_full_disk() {
    use std::sync::Arc;
    use std::time::Duration;
    use steadfast::prelude::*;

    /// Fails its first attempt of `retry` with a retry 800 ms later.
    struct Echo;
    #[async_trait::async_trait]
    impl Agent for Echo {
        type Input = String;
        type Output = String;
        fn name(&self) -> &str {
            "echo"
        }
        async fn run(
            &self,
            ctx: &mut Context,
            text: String,
        ) -> Result<Outcome<String>, AgentError> {
            if text == "retry" && ctx.attempt() == 1 {
                let later = AgentError::transient("later").retry_after(Duration::from_millis(800));
                return Err(later);
            }
            Ok(Outcome::Done(text))
        }
    }
    async fn state(rt: &Runtime, id: RunId) -> RunState {
        rt.store().get(id).await.unwrap().unwrap().state
    }

    let Some(tmpfs) = Tmpfs::mount("24m") else { return };
    let store = SledStore::open(tmpfs.path().join("db")).unwrap();
    // A run claimed around the failure may be left `processing` on disk under a lease of this
    // runtime whose attempt is gone: it is recovered when the lease expires, as after a crash.
    // A short lease keeps the test short.
    let rt = Runtime::builder().store(store).register(Echo).lease(Duration::from_secs(2));
    let rt = Arc::new(rt.build().unwrap());
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    let first = rt.submit("echo", "before".to_owned()).await.unwrap().id;
    let retry = rt.submit("echo", "retry".to_owned()).await.unwrap().id;
    while state(&rt, retry).await != RunState::FailedTransient {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let filler = fill(tmpfs.path());
    tokio::time::sleep(Duration::from_millis(1500)).await; // the retry comes due meanwhile
    // Its move failed (reads fail too while the store cannot reopen: a resource fault).
    match rt.store().get(retry).await {
        Ok(run) => assert_eq!(run.unwrap().state, RunState::FailedTransient),
        Err(error) => assert_eq!(error.fault(), Fault::Resource, "{error}"),
    }
    let mut refused = 0;
    for i in 0..2_000 {
        if let Err(error) = rt.submit("echo", format!("{i} {}", "x".repeat(4000))).await {
            assert_eq!(error.fault(), Fault::Resource, "{error}");
            refused += 1;
            if refused > 3 {
                break;
            }
        }
    }
    assert!(refused > 0, "a full disk must refuse a submission");
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        match rt.submit("echo", "after".to_owned()).await {
            Ok(submitted) => break submitted.id,
            Err(error) => {
                assert_eq!(error.fault(), Fault::Resource, "{error}");
                assert!(std::time::Instant::now() < deadline, "no submission accepted: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = rt.store().get(after).await.unwrap().unwrap();
        if run.state == RunState::Succeeded {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run after the full disk: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!worker.is_finished(), "the worker outlived the full disk");
    while state(&rt, retry).await != RunState::Succeeded {
        assert!(std::time::Instant::now() < deadline, "the retry after the full disk");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = rt.store().get(first).await.unwrap().unwrap();
    assert_eq!(first.state, RunState::Succeeded);
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}
