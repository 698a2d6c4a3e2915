//! Cases: claims, leases and their recovery, heartbeats, timers, concurrency keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::ManualClock;
use crate::fault::Fault;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Claim, Conflict, ErrorInfo, NewRun, Store, Transition};

use super::*;

pub(super) async fn claims_are_exclusive_under_concurrency<S: Store>(
    store: Arc<S>,
    _: Arc<ManualClock>,
) {
    const RUNS: usize = 200;
    for i in 0..RUNS {
        queued(&*store, "busy", &format!("run-{i}")).await;
    }
    let claimers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(Claim::new(format!("w{w}"), 7, LEASE)).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            })
        })
        .collect();
    let mut seen = HashMap::new();
    for claimer in claimers {
        for run in claimer.await.unwrap() {
            assert_eq!(run.state, RunState::Processing);
            assert_eq!(run.attempt, 1);
            let lease = run.lease.clone().unwrap();
            assert!(seen.insert(run.id, lease.owner).is_none(), "run {} claimed twice", run.id);
        }
    }
    assert_eq!(seen.len(), RUNS, "every run claimed exactly once");
    assert_eq!(store.counts().await.unwrap().get(RunState::Processing), RUNS as u64);
}

pub(super) async fn claims_respect_due_time_and_agents<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let later = clock.now_plus(Duration::from_secs(60));
    let scheduled =
        store.create(NewRun::new("a", "later", json!(1)).due_at(later)).await.unwrap().run.id;
    let other = queued(&*store, "b", "now").await;
    assert!(store.claim(Claim::new("w", 10, LEASE).agents(["a"])).await.unwrap().is_empty());
    assert_eq!(
        store.next_due().await.unwrap().map(|t| t <= clock.now_plus(Duration::ZERO)),
        Some(true)
    );
    let got = store.claim(Claim::new("w", 10, LEASE).agents(["b"])).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [other]);
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(clock.now_plus(LEASE)),
        "the claimed run's lease expiry comes before the scheduled run"
    );
    clock.advance(Duration::from_secs(60));
    let got = store.claim(Claim::new("w", 10, LEASE)).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [scheduled]);
    assert!(store.claim(Claim::new("w", 0, LEASE)).await.unwrap().is_empty());
}

pub(super) async fn claims_can_name_their_runs<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let first = queued(&*store, "a", "first").await;
    let second = queued(&*store, "a", "second").await;
    let other = queued(&*store, "b", "other").await;
    let later = clock.now_plus(Duration::from_secs(60));
    let scheduled =
        store.create(NewRun::new("a", "later", json!(1)).due_at(later)).await.unwrap().run.id;
    let ids = |runs: Vec<crate::store::RunRecord>| runs.iter().map(|r| r.id).collect::<Vec<_>>();

    // Only the named run, though an older one of the same agent is due too.
    let got = store.claim(Claim::new("w", 10, LEASE).runs([second])).await.unwrap();
    assert_eq!(ids(got), [second]);
    assert_eq!(store.get(second).await.unwrap().unwrap().state, RunState::Processing);
    assert_eq!(store.get(first).await.unwrap().unwrap().state, RunState::Queued);
    // Not again (processing), not before it is due, not outside the named agents.
    assert!(store.claim(Claim::new("w", 10, LEASE).runs([second])).await.unwrap().is_empty());
    assert!(store.claim(Claim::new("w", 10, LEASE).runs([scheduled])).await.unwrap().is_empty());
    let got = store.claim(Claim::new("w", 10, LEASE).runs([other, first]).agents(["a"])).await;
    assert_eq!(ids(got.unwrap()), [first]);
    assert_eq!(store.get(other).await.unwrap().unwrap().state, RunState::Queued);
    // An unknown run is not an error: nothing to claim.
    let unknown = RunId::new();
    assert!(store.claim(Claim::new("w", 10, LEASE).runs([unknown])).await.unwrap().is_empty());
}

pub(super) async fn expired_leases_are_recovered_and_fenced<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let run = queued(&*store, "slow", "r").await;
    let (_, old_token) = claim_one(&*store, "slow").await;
    clock.advance(LEASE - Duration::from_millis(1));
    assert!(store.recover_expired(10).await.unwrap().is_empty(), "not expired yet");
    clock.advance(Duration::from_millis(1));
    let recovered = store.recover_expired(10).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].state, RunState::FailedTransient);
    assert!(recovered[0].lease.is_none());
    let last = store.history(run).await.unwrap().pop().unwrap();
    assert_eq!(last.actor, Actor::Timer);
    assert!(last.reason.contains("expired"), "{}", last.reason);
    // The timer requeues it, another worker claims it with a larger token.
    let due = store.due_timers(10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [run]);
    store
        .transition(
            Transition::new(run, RunState::FailedTransient, RunState::Queued).by(Actor::Timer),
        )
        .await
        .unwrap()
        .unwrap();
    let (_, new_token) = claim_one(&*store, "slow").await;
    assert!(new_token > old_token);
    // The first worker wakes up late: its move is refused and changes nothing.
    let late = store
        .transition(
            Transition::new(run, RunState::Processing, RunState::Succeeded)
                .fenced(old_token)
                .output(json!("stale")),
        )
        .await
        .unwrap();
    assert_eq!(late, Err(Conflict::Fenced { run, token: old_token, current: new_token }));
    let heartbeat = store.heartbeat(run, old_token, LEASE).await.unwrap();
    assert!(matches!(heartbeat, Err(Conflict::Fenced { .. })));
    let done = store
        .transition(
            Transition::new(run, RunState::Processing, RunState::Succeeded)
                .fenced(new_token)
                .output(json!("fresh")),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.output, Some(json!("fresh")));
    assert_eq!(done.attempt, 2);
}

pub(super) async fn heartbeat_keeps_a_lease<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let run = queued(&*store, "hb", "r").await;
    let (_, token) = claim_one(&*store, "hb").await;
    for _ in 0..3 {
        clock.advance(LEASE / 2);
        let expires = store.heartbeat(run, token, LEASE).await.unwrap().unwrap();
        assert_eq!(expires, clock.now_plus(LEASE));
    }
    assert!(store.recover_expired(10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), Some(clock.now_plus(LEASE)));
    clock.advance(LEASE);
    assert_eq!(store.recover_expired(10).await.unwrap().len(), 1);
}

pub(super) async fn timers_come_due<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let backoff = queued(&*store, "t", "backoff").await;
    let wait = queued(&*store, "t", "wait").await;
    let claimed = store.claim(Claim::new("w", 2, LEASE)).await.unwrap();
    let token =
        |id: RunId| claimed.iter().find(|r| r.id == id).unwrap().lease.as_ref().unwrap().token;
    store
        .transition(
            Transition::new(backoff, RunState::Processing, RunState::FailedTransient)
                .fenced(token(backoff))
                .due_at(clock.now_plus(Duration::from_secs(10)))
                .error(ErrorInfo::new(Fault::Transient, "503")),
        )
        .await
        .unwrap()
        .unwrap();
    let waiting = store
        .transition(
            Transition::new(wait, RunState::Processing, RunState::WaitingExternal)
                .fenced(token(wait))
                .waiting_for("approval")
                .due_at(clock.now_plus(Duration::from_secs(20))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waiting.waiting_for.as_deref(), Some("approval"));
    assert!(store.due_timers(10).await.unwrap().is_empty());
    assert!(
        store.claim(Claim::new("w", 10, LEASE)).await.unwrap().is_empty(),
        "timers are not claimable"
    );
    clock.advance(Duration::from_secs(10));
    let due: Vec<_> = store.due_timers(10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(due, [backoff]);
    clock.advance(Duration::from_secs(10));
    let due: Vec<_> = store.due_timers(10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(due, [backoff, wait], "earliest first");
    // A signal wakes the wait and hands its payload on.
    let woken = store
        .transition(
            Transition::new(wait, RunState::WaitingExternal, RunState::Queued)
                .by(Actor::Operator("ada".into()))
                .signal(json!({"approved": true})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.signal, Some(json!({"approved": true})));
    assert_eq!(woken.waiting_for, None);
    assert_eq!(store.due_timers(10).await.unwrap().len(), 1);
}

pub(super) async fn concurrency_keys_serialize_processing<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let mailbox = |key: &str| NewRun::new("mail", key, json!(key)).concurrency_key("mailbox:ops");
    let a = store.create(mailbox("a")).await.unwrap().run.id;
    let b = store.create(mailbox("b")).await.unwrap().run.id;
    let free = queued(&*store, "mail", "c").await;
    let first: Vec<RunId> =
        store.claim(Claim::new("w", 10, LEASE)).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(first, [a, free], "one run per key at a time; keyless runs are not held back");
    assert!(store.claim(Claim::new("w", 10, LEASE)).await.unwrap().is_empty(), "b waits for a");
    // The key is released by any move out of processing, a lease expiry included.
    clock.advance(LEASE);
    store.recover_expired(10).await.unwrap();
    let next: Vec<RunId> =
        store.claim(Claim::new("w", 10, LEASE)).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(next, [b]);
    let token = store.get(b).await.unwrap().unwrap().lease.unwrap().token;
    store
        .transition(Transition::new(b, RunState::Processing, RunState::Succeeded).fenced(token))
        .await
        .unwrap()
        .unwrap();
    store
        .transition(Transition::new(a, RunState::FailedTransient, RunState::Queued))
        .await
        .unwrap()
        .unwrap();
    let last: Vec<RunId> =
        store.claim(Claim::new("w", 10, LEASE)).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(last, [a]);
}
