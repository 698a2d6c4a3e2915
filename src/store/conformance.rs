//! The conformance suite every [`Store`] must pass (feature `testing`).
//!
//! A failed check panics with the case's name and what differed. Run it from a test with a
//! factory that opens a fresh, empty store on the given clock:
//!
//! ```no_run
//! use steadfast::store::{SledStore, SledStoreOptions, conformance};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn sled_store_conforms() {
//!     conformance::run(|clock| async move {
//!         let dir = tempfile::tempdir().unwrap().keep();
//!         SledStore::open_with(dir, SledStoreOptions::default().clock(clock)).unwrap()
//!     })
//!     .await;
//! }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Actor, Claim, Conflict, ErrorInfo, ListQuery, NewRun, Store, StoreError, Transition};
use crate::clock::{ManualClock, Timestamp};
use crate::fault::Fault;
use crate::lifecycle::{RunId, RunState};

const LEASE: Duration = Duration::from_secs(30);

/// Runs every case, each on a fresh store made by `factory` around a [`ManualClock`].
pub async fn run<S, F, Fut>(mut factory: F)
where
    S: Store,
    F: FnMut(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
            let store = Arc::new(factory(clock.clone()).await);
            $case(store, clock).await;
        )*};
    }
    cases!(
        create_deduplicates_by_key,
        transition_is_compare_and_set,
        illegal_moves_change_nothing,
        claims_are_exclusive_under_concurrency,
        claims_respect_due_time_and_agents,
        claims_can_name_their_runs,
        expired_leases_are_recovered_and_fenced,
        heartbeat_keeps_a_lease,
        timers_come_due,
        effects_first_record_wins,
        history_is_ordered_and_explains_the_state,
        dead_letters_follow_failed_permanent,
        list_pages_with_cursors,
        counts_and_notes,
        attempts_refund_and_reset,
        concurrency_keys_serialize_processing,
        children_are_listed_by_parent,
        schemas_are_kept_by_hash,
    );
}

async fn queued<S: Store>(store: &S, agent: &str, key: &str) -> RunId {
    store.create(NewRun::new(agent, key, json!({ "key": key }))).await.unwrap().run.id
}

/// Claims exactly `run` (the only due run of its agent), returning its fencing token.
async fn claim_one<S: Store>(store: &S, agent: &str) -> (RunId, u64) {
    let claimed = store.claim(Claim::new("w1", 1, LEASE).agents([agent])).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due run of `{agent}`");
    let run = &claimed[0];
    (run.id, run.lease.as_ref().expect("a claimed run has a lease").token)
}

async fn create_deduplicates_by_key<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let first = store.create(NewRun::new("mailer", "k1", json!({"to": "a"}))).await.unwrap();
    assert!(first.created);
    assert_eq!(first.run.state, RunState::Queued);
    assert_eq!(first.run.attempt, 0);
    let again = store.create(NewRun::new("mailer", "k1", json!({"to": "b"}))).await.unwrap();
    assert!(!again.created, "same key: no new run");
    assert_eq!(again.run.id, first.run.id);
    assert_eq!(again.run.input, json!({"to": "a"}), "the first input is kept");
    let other = store.create(NewRun::new("reporter", "k1", json!({}))).await.unwrap();
    assert!(other.created, "keys are per agent");
    assert_eq!(store.find_by_key("mailer", "k1").await.unwrap().unwrap().id, first.run.id);
    assert!(store.find_by_key("mailer", "k2").await.unwrap().is_none());
    assert_eq!(store.history(first.run.id).await.unwrap().len(), 1);
    assert!(matches!(
        store.create(NewRun::new("", "k", json!(null))).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(store.counts().await.unwrap().total(), 2);
}

async fn transition_is_compare_and_set<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "a", "cas").await;
    let stale = store
        .transition(Transition::new(run, RunState::WaitingExternal, RunState::Queued))
        .await
        .unwrap();
    assert_eq!(
        stale,
        Err(Conflict::State {
            run,
            expected: RunState::WaitingExternal,
            current: RunState::Queued
        })
    );
    let cancelled = store
        .transition(
            Transition::new(run, RunState::Queued, RunState::FailedPermanent)
                .by(Actor::Operator("ada".into()))
                .reason("cancelled"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, RunState::FailedPermanent);
    // The same move again is now stale: exactly one of two racing movers wins.
    let again = store
        .transition(Transition::new(run, RunState::Queued, RunState::FailedPermanent))
        .await
        .unwrap();
    assert!(matches!(again, Err(Conflict::State { current: RunState::FailedPermanent, .. })));
    let missing = RunId::new();
    assert!(matches!(
        store.transition(Transition::new(missing, RunState::Queued, RunState::FailedPermanent)).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
}

async fn illegal_moves_change_nothing<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "a", "illegal").await;
    let before = store.get(run).await.unwrap().unwrap();
    let err = store
        .transition(Transition::new(run, RunState::Queued, RunState::Succeeded))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }), "{err}");
    assert!(err.to_string().contains("allowed from `queued`"), "{err}");
    // Only a claim enters `processing`.
    let err = store
        .transition(Transition::new(run, RunState::Queued, RunState::Processing))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
    // Out of `processing` only with the lease's token.
    let (run2, _) = {
        let id = queued(&*store, "fenced", "f").await;
        (id, claim_one(&*store, "fenced").await.1)
    };
    let err = store
        .transition(Transition::new(run2, RunState::Processing, RunState::Succeeded))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
    assert_eq!(store.get(run).await.unwrap().unwrap(), before);
    assert_eq!(store.history(run).await.unwrap().len(), 1);
}

async fn claims_are_exclusive_under_concurrency<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

async fn claims_respect_due_time_and_agents<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
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

async fn claims_can_name_their_runs<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let first = queued(&*store, "a", "first").await;
    let second = queued(&*store, "a", "second").await;
    let other = queued(&*store, "b", "other").await;
    let later = clock.now_plus(Duration::from_secs(60));
    let scheduled =
        store.create(NewRun::new("a", "later", json!(1)).due_at(later)).await.unwrap().run.id;
    let ids = |runs: Vec<super::RunRecord>| runs.iter().map(|r| r.id).collect::<Vec<_>>();

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

async fn expired_leases_are_recovered_and_fenced<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
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

async fn heartbeat_keeps_a_lease<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
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

async fn timers_come_due<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
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

async fn effects_first_record_wins<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "fx", "r").await;
    assert!(store.effect(run, "send").await.unwrap().is_none());
    let first = store.record_effect(run, "send", json!({"id": 1})).await.unwrap();
    let second = store.record_effect(run, "send", json!({"id": 2})).await.unwrap();
    assert_eq!(second, first, "a recorded effect is never overwritten");
    store.record_effect(run, "fetch", json!("page")).await.unwrap();
    let names: Vec<_> = store.effects(run).await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["fetch", "send"]);
    let other = queued(&*store, "fx", "other").await;
    assert!(store.effects(other).await.unwrap().is_empty(), "effects are per run");
    assert!(matches!(
        store.record_effect(RunId::new(), "send", json!(1)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn history_is_ordered_and_explains_the_state<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "h", "r").await;
    for _ in 0..3 {
        let (_, token) = claim_one(&*store, "h").await;
        store
            .transition(
                Transition::new(run, RunState::Processing, RunState::FailedTransient).fenced(token),
            )
            .await
            .unwrap()
            .unwrap();
        store
            .transition(
                Transition::new(run, RunState::FailedTransient, RunState::Queued).by(Actor::Timer),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let history = store.history(run).await.unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history[0].from, None);
    for (i, pair) in history.windows(2).enumerate() {
        assert_eq!(pair[0].seq as usize, i);
        assert_eq!(pair[1].from, Some(pair[0].to), "entry {} follows entry {}", i + 1, i);
        assert!(pair[1].at >= pair[0].at);
    }
    let record = store.get(run).await.unwrap().unwrap();
    assert_eq!(history.last().unwrap().to, record.state);
    assert_eq!(record.moves as usize, history.len());
    assert_eq!(record.attempt, 3);
}

async fn dead_letters_follow_failed_permanent<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "dl", "r").await;
    let (_, token) = claim_one(&*store, "dl").await;
    let error = ErrorInfo {
        fault: Fault::Permanent,
        message: "bad input".into(),
        chain: vec!["missing field `to`".into()],
    };
    store
        .transition(
            Transition::new(run, RunState::Processing, RunState::FailedPermanent)
                .fenced(token)
                .error(error.clone())
                .reason("permanent fault"),
        )
        .await
        .unwrap()
        .unwrap();
    let letters = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].run, run);
    assert_eq!(letters[0].error.as_ref(), Some(&error));
    assert_eq!(store.get(run).await.unwrap().unwrap().last_error, Some(error));
    store
        .transition(
            Transition::new(run, RunState::FailedPermanent, RunState::Queued)
                .by(Actor::Operator("ada".into()))
                .reset_attempts(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty(), "a replay leaves the queue");
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = queued(&*store, "dl", &format!("c{i}")).await;
        store
            .transition(Transition::new(id, RunState::Queued, RunState::FailedPermanent))
            .await
            .unwrap()
            .unwrap();
        ids.push(id);
    }
    let first = store.dead_letters(None, 3).await.unwrap();
    let rest = store.dead_letters(Some(first.last().unwrap().run), 3).await.unwrap();
    let all: Vec<_> = first.iter().chain(&rest).map(|d| d.run).collect();
    assert_eq!(all, ids);
}

async fn list_pages_with_cursors<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(queued(&*store, if i % 2 == 0 { "even" } else { "odd" }, &format!("l{i}")).await);
    }
    for id in &ids[..5] {
        store
            .transition(Transition::new(*id, RunState::Queued, RunState::FailedPermanent))
            .await
            .unwrap()
            .unwrap();
    }
    let mut newest_first = Vec::new();
    let mut query = ListQuery::new().limit(10);
    loop {
        let page = store.list(query.clone()).await.unwrap();
        assert!(page.runs.len() <= 10);
        newest_first.extend(page.runs.iter().map(|r| r.id));
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(newest_first, expected);
    let oldest: Vec<_> = store
        .list(ListQuery::new().oldest_first().limit(100))
        .await
        .unwrap()
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(oldest, ids);
    let failed =
        store.list(ListQuery::new().state(RunState::FailedPermanent).oldest_first()).await.unwrap();
    assert_eq!(failed.runs.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..5]);
    let mut odd_queued = Vec::new();
    let mut query = ListQuery::new().state(RunState::Queued).agent("odd").limit(4);
    let mut pages = 0;
    loop {
        let page = store.list(query.clone()).await.unwrap();
        pages += 1;
        assert!(page.runs.iter().all(|r| r.agent == "odd" && r.state == RunState::Queued));
        odd_queued.extend(page.runs.iter().map(|r| r.id));
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    let expected: Vec<_> = (5..25).rev().filter(|i| i % 2 == 1).map(|i| ids[i]).collect();
    assert_eq!(odd_queued, expected, "odd runs 5..25 are still queued, newest first");
    assert_eq!(pages, 3, "10 runs in pages of 4");
}

async fn counts_and_notes<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let a = queued(&*store, "c", "a").await;
    queued(&*store, "c", "b").await;
    store
        .transition(Transition::new(a, RunState::Queued, RunState::FailedPermanent))
        .await
        .unwrap()
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(RunState::Queued), 1);
    assert_eq!(counts.get(RunState::FailedPermanent), 1);
    assert_eq!(counts.total(), 2);
    store
        .add_note(a, Actor::Operator("ada".into()), "upstream fixed, replay tomorrow")
        .await
        .unwrap();
    store.add_note(a, Actor::Operator("bob".into()), "replayed").await.unwrap();
    let notes = store.notes(a).await.unwrap();
    assert_eq!(
        notes.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(),
        ["upstream fixed, replay tomorrow", "replayed"]
    );
    assert!(matches!(
        store.add_note(RunId::new(), Actor::System, "x").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn attempts_refund_and_reset<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "att", "r").await;
    let (_, token) = claim_one(&*store, "att").await;
    let released = store
        .transition(
            Transition::new(run, RunState::Processing, RunState::FailedTransient)
                .fenced(token)
                .refund_attempt(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.attempt, 0, "a released attempt is not charged");
    store
        .transition(Transition::new(run, RunState::FailedTransient, RunState::FailedPermanent))
        .await
        .unwrap()
        .unwrap();
    let replayed = store
        .transition(
            Transition::new(run, RunState::FailedPermanent, RunState::Queued).reset_attempts(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replayed.attempt, 0);
}

trait ClockExt {
    fn now_plus(&self, by: Duration) -> Timestamp;
}

impl ClockExt for ManualClock {
    fn now_plus(&self, by: Duration) -> Timestamp {
        crate::clock::Clock::now(self).after(by)
    }
}

async fn concurrency_keys_serialize_processing<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
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

async fn children_are_listed_by_parent<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let parent = queued(&*store, "pipeline", "p").await;
    let other = queued(&*store, "pipeline", "q").await;
    let mut children = Vec::new();
    for i in 0..5 {
        let new = NewRun::new("stage", format!("{parent}/{i}"), json!(i)).child_of(parent, i);
        children.push(store.create(new).await.unwrap().run.id);
    }
    store
        .create(NewRun::new("stage", format!("{other}/0"), json!(0)).child_of(other, 0))
        .await
        .unwrap();
    let page = store.list(ListQuery::new().parent(parent).oldest_first().limit(3)).await.unwrap();
    assert_eq!(page.runs.iter().map(|r| r.id).collect::<Vec<_>>(), children[..3]);
    assert!(page.runs.iter().all(|r| r.parent == Some(parent)));
    let rest = store
        .list(ListQuery::new().parent(parent).oldest_first().cursor(page.next.unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.runs.iter().map(|r| r.id).collect::<Vec<_>>(), children[3..]);
    let newest = store.list(ListQuery::new().parent(parent).limit(1)).await.unwrap();
    assert_eq!(newest.runs[0].id, children[4]);
    let queued_children =
        store.list(ListQuery::new().parent(parent).state(RunState::Queued)).await.unwrap();
    assert_eq!(queued_children.runs.len(), 5);
    assert!(store.list(ListQuery::new().parent(children[0])).await.unwrap().runs.is_empty());
}

async fn schemas_are_kept_by_hash<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    assert_eq!(store.schema("0123").await.unwrap(), None);
    store.put_schema("0123", r#"{"type":"string"}"#).await.unwrap();
    store.put_schema("0123", r#"{"type":"string"}"#).await.unwrap(); // idempotent
    store.put_schema("4567", r#"{"type":"integer"}"#).await.unwrap();
    assert_eq!(store.schema("0123").await.unwrap().as_deref(), Some(r#"{"type":"string"}"#));
    assert_eq!(store.schema("4567").await.unwrap().as_deref(), Some(r#"{"type":"integer"}"#));
}
