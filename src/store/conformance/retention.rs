//! Cases: retention (`prune`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::ManualClock;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, Claim, ListQuery, NewRun, Retention, Store, StoreError, Transition};

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Moves the queued run `id` through `processing` to `to` (with an output for `succeeded`).
async fn settle<S: Store>(store: &S, id: RunId, to: RunState) {
    let claimed = store.claim(Claim::new("w", 1, LEASE).runs([id])).await.unwrap();
    let token = claimed[0].lease.as_ref().expect("claimed").token;
    let mut moved = Transition::new(id, RunState::Processing, to).fenced(token).reason("done");
    if to == RunState::Succeeded {
        moved = moved.output(json!({"done": true}));
    }
    store.transition(moved).await.unwrap().unwrap();
}

async fn run_in<S: Store>(store: &S, agent: &str, key: &str, to: RunState) -> RunId {
    let id = queued(store, agent, key).await;
    settle(store, id, to).await;
    id
}

async fn gone<S: Store>(store: &S, id: RunId, agent: &str, key: &str) -> bool {
    let gone = store.get(id).await.unwrap().is_none();
    if gone {
        assert!(store.history(id).await.unwrap().is_empty(), "{id}: history left behind");
        assert!(store.effects(id).await.unwrap().is_empty(), "{id}: effects left behind");
        assert!(store.starts(id).await.unwrap().is_empty(), "{id}: starts left behind");
        assert!(store.notes(id).await.unwrap().is_empty(), "{id}: notes left behind");
        assert!(store.find_by_key(agent, key).await.unwrap().is_none(), "{id}: key left behind");
        let listed = store.list(ListQuery::new().limit(1000)).await.unwrap().runs;
        assert!(listed.iter().all(|r| r.id != id), "{id}: still listed");
    }
    gone
}

pub(super) async fn prune_deletes_old_runs_at_rest_with_all_they_kept<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let old = run_in(&*store, "p", "old", RunState::Succeeded).await;
    store.record_effect(old, "send", json!({"id": 7})).await.unwrap();
    store.record_start(old, 1).await.unwrap();
    store.add_note(old, Actor::Operator("ada".into()), "fine").await.unwrap();
    let dead = run_in(&*store, "p", "dead", RunState::FailedPermanent).await;
    let review = run_in(&*store, "p", "review", RunState::NeedsReview).await;
    let waiting = queued(&*store, "p", "waiting").await;
    clock.advance(31 * DAY);
    let young = run_in(&*store, "p", "young", RunState::Succeeded).await;
    let before = store.counts().await.unwrap();

    let refused = store.prune(Retention::older_than(DAY).states([RunState::Queued])).await;
    assert!(
        matches!(&refused, Err(StoreError::InvalidRequest(why)) if why.contains("queued")),
        "a policy naming a state with work left is refused: {refused:?}"
    );
    assert_eq!(store.counts().await.unwrap(), before, "a refused prune changes nothing");

    let pruned = store.prune(Retention::older_than(30 * DAY)).await.unwrap();
    assert_eq!((pruned.runs, pruned.kept), (1, 0));
    assert!(gone(&*store, old, "p", "old").await);
    for (id, key) in [(dead, "dead"), (review, "review"), (waiting, "waiting"), (young, "young")] {
        assert!(!gone(&*store, id, "p", key).await, "`{key}` must stay");
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(RunState::Succeeded), before.get(RunState::Succeeded) - 1);
    let by_agent = store.counts_by_agent().await.unwrap();
    assert_eq!(by_agent["p"], counts, "one agent: its counts are all the counts");
    assert_eq!(counts.total(), before.total() - 1);
    // Its idempotency key is free again.
    assert!(store.create(NewRun::new("p", "old", json!(1))).await.unwrap().created);

    let dead_letters = Retention::older_than(30 * DAY).states([RunState::FailedPermanent]);
    assert_eq!(store.prune(dead_letters).await.unwrap().runs, 1);
    assert!(gone(&*store, dead, "p", "dead").await);
    assert!(store.dead_letters(None, 100).await.unwrap().iter().all(|d| d.run != dead));
    let review_too = Retention::older_than(30 * DAY).in_review(true);
    assert_eq!(store.prune(review_too).await.unwrap().runs, 1);
    assert!(gone(&*store, review, "p", "review").await);
    assert!(!gone(&*store, waiting, "p", "waiting").await);
    assert!(!gone(&*store, young, "p", "young").await);
    assert_eq!(store.counts().await.unwrap().total(), before.total() - 3 + 1);
}

pub(super) async fn a_pipeline_goes_with_its_stages_or_not_at_all<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let pipeline = queued(&*store, "pipe", "p").await;
    let mut stages = Vec::new();
    for (i, to) in [RunState::Succeeded, RunState::NeedsReview].into_iter().enumerate() {
        let key = format!("{pipeline}/{i}");
        let new = NewRun::new("stage", &key, json!(i)).child_of(pipeline, i as u32);
        let id = store.create(new).await.unwrap().run.id;
        settle(&*store, id, to).await;
        stages.push((id, key));
    }
    settle(&*store, pipeline, RunState::Succeeded).await;
    // A stage run whose pipeline is still at work.
    let busy = queued(&*store, "pipe", "busy").await;
    let key = format!("{busy}/0");
    let lone = store.create(NewRun::new("stage", &key, json!(0)).child_of(busy, 0)).await.unwrap();
    settle(&*store, lone.run.id, RunState::Succeeded).await;
    clock.advance(2 * DAY);

    let pruned = store.prune(Retention::older_than(DAY)).await.unwrap();
    assert_eq!((pruned.runs, pruned.kept), (0, 1), "a stage held for review keeps its pipeline");
    assert!(!gone(&*store, pipeline, "pipe", "p").await);
    assert!(!gone(&*store, lone.run.id, "stage", &key).await, "never a stage run alone");

    let pruned = store.prune(Retention::older_than(DAY).in_review(true)).await.unwrap();
    assert_eq!((pruned.runs, pruned.kept), (3, 0));
    assert!(gone(&*store, pipeline, "pipe", "p").await);
    for (id, key) in &stages {
        assert!(gone(&*store, *id, "stage", key).await);
    }
    assert!(store.list(ListQuery::new().parent(pipeline)).await.unwrap().runs.is_empty());
    assert!(!gone(&*store, lone.run.id, "stage", &key).await);
}

pub(super) async fn prune_works_in_batches_and_spares_runs_that_moved<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(run_in(&*store, "b", &format!("b{i}"), RunState::FailedPermanent).await);
    }
    clock.advance(2 * DAY);
    // Replayed by an operator just now: it has work to do again.
    store
        .transition(
            Transition::new(ids[3], RunState::FailedPermanent, RunState::Queued).reason("replay"),
        )
        .await
        .unwrap()
        .unwrap();
    let policy = Retention::older_than(DAY).dead_letters(true).batch(2);
    let pruned = store.prune(policy.clone()).await.unwrap();
    assert_eq!(pruned.runs, 6);
    assert!(store.get(ids[3]).await.unwrap().is_some());
    assert_eq!(store.counts().await.unwrap().total(), 1);
    let pruned = store.prune(policy).await.unwrap();
    assert_eq!(pruned.runs, 0, "nothing left to prune is not an error");
    assert!(store.dead_letters(None, 100).await.unwrap().is_empty());
}
