//! A claim answered before its sync and lost with another caller's failed write: the claimer
//! must hear that its claim is not durable (`Store::wait_durable`), whoever reopens the
//! database first, and the run must be claimable again. The sync failure is injected by the
//! store's fault point (`STEADFAST_CRASH_AT=claim-unsynced:1`, test builds), in a child
//! process (this test binary, re-run with `STEADFAST_LOST_CLAIM_CHILD` set).

use std::time::Duration;

use serde_json::json;
use steadfast::RunState;
use steadfast::store::{Claim, NewRun, SledStore, Store};

const CHILD_ENV: &str = "STEADFAST_LOST_CLAIM_CHILD";

#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_claim_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = SledStore::open(std::path::Path::new(&dir).join("db")).unwrap();
    let run = store.create(NewRun::new("a", "claimed", json!(1))).await.unwrap().run.id;
    let claimed = store.claim(Claim::new("w1", 1, Duration::from_secs(30))).await.unwrap();
    assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [run]);
    // Another caller's durable write runs the sync the fault point fails.
    let other = store.create(NewRun::new("a", "other", json!(2))).await;
    println!("@@ other write failed: {}", other.is_err());
    // A third caller reopens the database before the claimer asks, or the claimer is first.
    if std::env::var("STEADFAST_LOST_CLAIM_READ").is_ok() {
        let reopened = store.get(run).await;
        println!("@@ read after the failure: {}", reopened.is_ok());
    }
    let asked = store.wait_durable(run).await;
    println!("@@ claim durable: {}", asked.is_ok());
    if let Err(error) = &asked {
        println!("@@ because: {error}");
    }
    println!("@@ idle");
}

/// Whoever reopens the database first, a claim whose batch never synced is reported lost.
#[test]
fn a_claim_lost_with_another_callers_failed_write_is_reported_lost() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    lost_claim(&[("STEADFAST_LOST_CLAIM_READ", "1")]);
    lost_claim(&[]);
}

fn lost_claim(vars: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut armed = vec![("STEADFAST_CRASH_AT", "claim-unsynced:1")];
    armed.extend_from_slice(vars);
    let child = super::common::spawn_worker_with(
        "lost_claim::lost_claim_child",
        CHILD_ENV,
        dir.path(),
        &armed,
    );
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(dir.path().join("worker.stderr")).unwrap_or_default();
    assert!(output.status.success(), "{vars:?}: {out}\n{log}");
    assert!(out.contains("@@ other write failed: true"), "the injected failure: {out}\n{log}");
    assert!(
        out.contains("@@ claim durable: false"),
        "{vars:?}: a lost claim passed for durable: {out}"
    );
    assert!(out.contains("lost with a failed write"), "{out}");
    // The run is claimable again (or, if the claim reached the disk after all, it is under a
    // lease that expires like any crashed worker's): never held by a claimer told it is not.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    let run = runtime.block_on(store.find_by_key("a", "claimed")).unwrap().unwrap();
    assert!(matches!(run.state, RunState::Queued | RunState::Processing), "{run:?}");
}
