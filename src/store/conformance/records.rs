//! Cases: effects, listings, counts, notes, children, kept schemas.

use std::sync::Arc;

use serde_json::json;

use crate::clock::ManualClock;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, ListQuery, NewRun, Store, StoreError, Transition};

use super::*;

pub(super) async fn effects_first_record_wins<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn starts_are_kept_apart_from_effects<S: Store>(
    store: Arc<S>,
    _: Arc<ManualClock>,
) {
    let run = queued(&*store, "fx", "s").await;
    assert!(store.starts(run).await.unwrap().is_empty());
    store.record_start(run, 2).await.unwrap();
    store.record_start(run, 1).await.unwrap();
    store.record_start(run, 2).await.unwrap();
    assert_eq!(store.starts(run).await.unwrap(), [1, 2], "ascending, each once");
    assert!(store.effects(run).await.unwrap().is_empty(), "not in the effects journal");
    let other = queued(&*store, "fx", "other-s").await;
    assert!(store.starts(other).await.unwrap().is_empty(), "starts are per run");
    assert!(matches!(store.record_start(RunId::new(), 1).await, Err(StoreError::NotFound(_))));
}

pub(super) async fn list_pages_with_cursors<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn counts_and_notes<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    let a = queued(&*store, "c", "a").await;
    queued(&*store, "c", "b").await;
    store
        .transition(Transition::new(a, RunState::Queued, RunState::FailedPermanent))
        .await
        .unwrap()
        .unwrap();
    queued(&*store, "d", "c").await;
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(RunState::Queued), 2);
    assert_eq!(counts.get(RunState::FailedPermanent), 1);
    assert_eq!(counts.total(), 3);
    let by_agent = store.counts_by_agent().await.unwrap();
    assert_eq!(by_agent.keys().collect::<Vec<_>>(), ["c", "d"]);
    assert_eq!(by_agent["c"].get(RunState::Queued), 1);
    assert_eq!(by_agent["c"].get(RunState::FailedPermanent), 1);
    assert_eq!(by_agent["d"].get(RunState::Queued), 1);
    assert_eq!(by_agent["d"].total(), 1);
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

pub(super) async fn children_are_listed_by_parent<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
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

pub(super) async fn schemas_are_kept_by_hash<S: Store>(store: Arc<S>, _: Arc<ManualClock>) {
    assert_eq!(store.schema("0123").await.unwrap(), None);
    store.put_schema("0123", r#"{"type":"string"}"#).await.unwrap();
    store.put_schema("0123", r#"{"type":"string"}"#).await.unwrap(); // idempotent
    store.put_schema("4567", r#"{"type":"integer"}"#).await.unwrap();
    assert_eq!(store.schema("0123").await.unwrap().as_deref(), Some(r#"{"type":"string"}"#));
    assert_eq!(store.schema("4567").await.unwrap().as_deref(), Some(r#"{"type":"integer"}"#));
}

pub(super) async fn oldest_queued_is_the_earliest_due_of_the_agent<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    assert_eq!(store.oldest_queued("q").await.unwrap(), None);
    let first = clock.now_plus(std::time::Duration::ZERO);
    let a = queued(&*store, "q", "a").await;
    clock.advance(std::time::Duration::from_secs(5));
    queued(&*store, "q", "b").await;
    queued(&*store, "other", "c").await;
    store
        .create(
            NewRun::new("q", "later", json!(1))
                .due_at(clock.now_plus(std::time::Duration::from_secs(60))),
        )
        .await
        .unwrap();
    assert_eq!(store.oldest_queued("q").await.unwrap(), Some(first));
    store
        .transition(Transition::new(a, RunState::Queued, RunState::FailedPermanent))
        .await
        .unwrap()
        .unwrap();
    let b_due = clock.now_plus(std::time::Duration::ZERO);
    assert_eq!(
        store.oldest_queued("q").await.unwrap(),
        Some(b_due),
        "a cancelled run is not queued"
    );
    assert_eq!(store.oldest_queued("qq").await.unwrap(), None, "another agent's name is no prefix");
}
