//! Every way a run moves goes through one door: an attempt's outcome, an operator's call, a
//! timer (a poison pill dead-lettered), a lease expiry, a stage run inline. For each, the hook,
//! the observer and the notification fire exactly once.

use std::collections::HashMap;
use std::sync::Mutex;

use steadfast::notify::{Notification, Subscription};
use steadfast::runtime::{MoveEvent, Observer};
use steadfast::store::{Claim, ListQuery, MemoryStore};

use super::*;

/// Every move told, as (run, from, to, who moved it).
#[derive(Default)]
struct Moves(Mutex<Vec<(RunId, RunState, RunState, String)>>);

impl Observer for Moves {
    fn moved(&self, event: &MoveEvent<'_>) {
        let by = match event.actor {
            Actor::Worker(_) => "worker".to_owned(),
            other => other.to_string(),
        };
        self.0.lock().unwrap().push((event.run, event.from, event.to, by));
    }
}

impl Moves {
    /// How many times `run` was told to move `from` → `to` by `by`.
    fn count(&self, run: RunId, from: RunState, to: RunState, by: &str) -> usize {
        let moves = self.0.lock().unwrap();
        moves.iter().filter(|m| (m.0, m.1, m.2, m.3.as_str()) == (run, from, to, by)).count()
    }
}

/// The notifier: takes every notification and is done.
struct Sink;

#[async_trait]
impl Agent for Sink {
    type Input = Notification;
    type Output = bool;
    fn name(&self) -> &str {
        "sink"
    }
    async fn run(&self, _: &mut Context, _: Notification) -> Result<Outcome<bool>, AgentError> {
        Ok(Outcome::Done(true))
    }
}

/// Fails permanently, at once.
struct Doomed;

#[async_trait]
impl Agent for Doomed {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "doomed"
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::permanent("no such account"))
    }
}

/// Takes its worker down every time (in this test, a worker that claims it and dies).
struct Pill;

#[async_trait]
impl Agent for Pill {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "pill"
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().max_crashes(1)
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        panic!("this runtime's workers never run it (paused): only the dying worker claims it")
    }
}

/// What fired for each run: its hooks by state, and the notifications about it by event.
#[derive(Default)]
struct Fired {
    hooks: Mutex<HashMap<(RunId, RunState), usize>>,
}

impl Fired {
    fn hooked(&self, run: RunId, state: RunState) -> usize {
        self.hooks.lock().unwrap().get(&(run, state)).copied().unwrap_or(0)
    }
}

/// A runtime with the observer, the hooks and the notifier subscribed to every event.
fn doors(
    store: MemoryStore,
    register: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> (Runtime, Arc<Moves>, Arc<Fired>) {
    let moves = Arc::new(Moves::default());
    let fired = Arc::new(Fired::default());
    let (review, dead) = (fired.clone(), fired.clone());
    let builder = Runtime::builder()
        .store(store)
        .workers(4)
        .lease(Duration::from_secs(30))
        .register(Sink)
        .notify("sink", Subscription::all())
        .observe(moves.clone())
        .on_review(move |r| *review.hooks.lock().unwrap().entry((r.id, r.state)).or_default() += 1)
        .on_dead_letter(move |r| {
            *dead.hooks.lock().unwrap().entry((r.id, r.state)).or_default() += 1
        });
    (register(builder).build().unwrap(), moves, fired)
}

/// The notifications made about `run`, by their idempotency key's event (`review`,
/// `dead_letter`).
async fn notified(rt: &Runtime, run: RunId, event: &str) -> usize {
    let page = rt.store().list(ListQuery::new().agent("sink").limit(1000)).await.unwrap();
    let prefix = format!("{event}:{run}:");
    page.runs.iter().filter(|r| r.idempotency_key.starts_with(&prefix)).count()
}

fn store() -> MemoryStore {
    MemoryStore::with_clock(Arc::new(TokioClock::new()))
}

#[tokio::test(start_paused = true)]
async fn an_attempts_dead_letter_fires_each_once() {
    let (rt, moves, fired) = doors(store(), |b| b.register(Doomed));
    let id = rt.submit("doomed", 1).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, id).await.state, RunState::FailedPermanent);
    let (from, to) = (RunState::Processing, RunState::FailedPermanent);
    assert_eq!(moves.count(id, from, to, "worker"), 1);
    assert_eq!(fired.hooked(id, to), 1);
    assert_eq!(notified(&rt, id, "dead_letter").await, 1);
}

#[tokio::test(start_paused = true)]
async fn an_operators_reject_fires_each_once() {
    let (rt, moves, fired) = doors(store(), |b| b.register(Reviewed));
    let id = rt.submit("reviewed", 1).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    assert_eq!(moves.count(id, RunState::Processing, RunState::NeedsReview, "worker"), 1);
    assert_eq!(fired.hooked(id, RunState::NeedsReview), 1);
    rt.reject(id, ada(), Some("not ours")).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let (from, to) = (RunState::NeedsReview, RunState::FailedPermanent);
    assert_eq!(moves.count(id, from, to, "operator:ada"), 1, "the observer sees an operator");
    assert_eq!(fired.hooked(id, to), 1, "on_dead_letter for an operator's reject");
    assert_eq!(notified(&rt, id, "review").await, 1);
    assert_eq!(notified(&rt, id, "dead_letter").await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lease_expiry_and_a_timers_poison_pill_fire_each_once() {
    let store = store();
    let (rt, moves, fired) = doors(store.clone(), |b| b.register(Pill));
    let id = rt.submit("pill", 1).await.unwrap().id;
    // This runtime's own workers leave it alone (paused); its timers still fire.
    rt.pause("pill", ada(), "only the dying worker takes it").await.unwrap();
    // A worker claims it and dies, twice: the second time watched (its start recorded as the
    // runtime records it, apart from the effects journal), so the timer takes it for a poison
    // pill (`max_crashes(1)`).
    for attempt in 1..=2 {
        let claimed = store
            .claim(Claim::new("doomed-worker", 1, Duration::from_secs(30)).runs([id]))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt} claimed by the dying worker");
        if attempt == 2 {
            store.record_start(id, claimed[0].attempt).await.unwrap();
        }
        // The lease expires and the timer moves it; after its backoff, the timer queues it
        // again (the first time) or dead-letters it (the second).
        let mut waited = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(31)).await;
            rt.run_until_idle().await.unwrap();
            let state = state_of(&rt, id).await.state;
            if state == RunState::Queued {
                // Queued with its backoff as its due time (at most the policy's 300 s).
                tokio::time::sleep(Duration::from_secs(301)).await;
                break;
            }
            if state == RunState::FailedPermanent {
                break;
            }
            waited += 1;
            assert!(waited < 40, "attempt {attempt}: still {state} after 20 minutes");
        }
    }
    let run = state_of(&rt, id).await;
    assert_eq!(run.state, RunState::FailedPermanent, "{:?}", run.last_error);
    let expiry = (RunState::Processing, RunState::FailedTransient);
    assert_eq!(moves.count(id, expiry.0, expiry.1, "timer"), 2, "each lease expiry told once");
    let pill = (RunState::FailedTransient, RunState::FailedPermanent);
    assert_eq!(moves.count(id, pill.0, pill.1, "timer"), 1, "the poison pill told once");
    assert_eq!(fired.hooked(id, RunState::FailedPermanent), 1, "on_dead_letter on the timer path");
    assert_eq!(notified(&rt, id, "dead_letter").await, 1);
}

#[tokio::test(start_paused = true)]
async fn an_inline_stages_review_fires_each_once() {
    let pipeline = steadfast::pipeline::Pipeline::new("checked").then(Reviewed);
    let (rt, moves, fired) = doors(store(), |b| b.pipeline(pipeline));
    let parent = rt.submit("checked", 1).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let stages = rt.store().list(ListQuery::new().parent(parent)).await.unwrap().runs;
    assert_eq!(stages.len(), 1);
    let stage = stages[0].id;
    assert_eq!(stages[0].state, RunState::NeedsReview);
    assert_eq!(moves.count(stage, RunState::Processing, RunState::NeedsReview, "worker"), 1);
    assert_eq!(fired.hooked(stage, RunState::NeedsReview), 1);
    assert_eq!(notified(&rt, stage, "review").await, 1);
    // The operator's approval moves the stage on, and the pipeline finishes.
    rt.approve(stage, ada(), Some("fine")).await.unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, parent).await.state, RunState::Succeeded);
    assert_eq!(moves.count(stage, RunState::NeedsReview, RunState::Queued, "operator:ada"), 1);
    assert_eq!(moves.count(parent, RunState::Processing, RunState::Succeeded, "worker"), 1);
}
