//! Cases: creation, compare-and-set moves, refusals, history, dead letters, attempts.

use std::sync::Arc;

use serde_json::json;

use crate::clock::ManualClock;
use crate::fault::Fault;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Conflict, ErrorInfo, NewRun, Store, StoreError, Transition};

use super::*;

pub(super) async fn create_deduplicates_by_key<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn transition_is_compare_and_set<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn illegal_moves_change_nothing<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn history_is_ordered_and_explains_the_state<S: Store>(
    store: Arc<S>,
    _: Arc<ManualClock>,
) {
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

pub(super) async fn dead_letters_follow_failed_permanent<S: Store>(
    store: Arc<S>,
    _: Arc<ManualClock>,
) {
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

pub(super) async fn attempts_refund_and_reset<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn moves_create_their_follow_ups<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let run = queued(&*store, "a", "outbox").await;
    let (_, token) = claim_one(&*store, "a").await;
    let notice = |key: &str| NewRun::new("notify", key, json!({ "run": run.to_string() }));
    let hold = Transition::new(run, RunState::Processing, RunState::NeedsReview)
        .fenced(token)
        .reason("held")
        .follow_up(notice(&format!("review:{run}")))
        .follow_up(notice("second"));
    // A refused move creates nothing.
    let stale = Transition { fence: Some(token + 1), ..hold.clone() };
    assert!(matches!(store.transition(stale).await.unwrap(), Err(Conflict::Fenced { .. })));
    assert!(store.find_by_key("notify", &format!("review:{run}:2")).await.unwrap().is_none());
    assert_eq!(store.counts().await.unwrap().total(), 1, "a refused move created a follow-up");
    // The move is history entry 2 (created 0, claimed 1): its follow-ups' keys end in `:2`.
    store.transition(hold.clone()).await.unwrap().unwrap();
    let follow = store.find_by_key("notify", &format!("review:{run}:2")).await.unwrap();
    let follow = follow.expect("the move created its follow-up");
    assert_eq!(follow.state, RunState::Queued);
    assert_eq!(follow.input, json!({ "run": run.to_string() }));
    assert!(store.find_by_key("notify", "second:2").await.unwrap().is_some());
    assert_eq!(store.counts().await.unwrap().total(), 3);
    // Approved and held again: the second hold is move 5 and is followed again.
    let approve = Transition::new(run, RunState::NeedsReview, RunState::Queued);
    store.transition(approve).await.unwrap().unwrap();
    let (_, token) = claim_one(&*store, "a").await;
    let again = Transition { fence: Some(token), ..hold };
    store.transition(again).await.unwrap().unwrap();
    let second = store.find_by_key("notify", &format!("review:{run}:5")).await.unwrap();
    assert!(second.is_some_and(|r| r.id != follow.id), "the second hold's own follow-up");
    assert_eq!(store.counts().await.unwrap().total(), 5);
    // A follow-up whose key is taken is not created again; one without a name is refused.
    let taken = store.create(NewRun::new("notify", "taken:6", json!(1))).await.unwrap().run;
    let cancel = Transition::new(run, RunState::NeedsReview, RunState::FailedPermanent)
        .follow_up(NewRun::new("notify", "taken", json!(2)));
    let bad = cancel.clone().follow_up(NewRun::new("", "k", json!(3)));
    assert!(matches!(store.transition(bad).await, Err(StoreError::InvalidRequest(_))));
    assert_eq!(store.get(run).await.unwrap().unwrap().state, RunState::NeedsReview);
    store.transition(cancel).await.unwrap().unwrap();
    let kept = store.find_by_key("notify", "taken:6").await.unwrap().unwrap();
    assert_eq!((kept.id, kept.input), (taken.id, json!(1)));
    assert_eq!(store.counts().await.unwrap().total(), 6);
}
