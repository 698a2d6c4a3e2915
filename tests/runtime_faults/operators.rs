//! Waits resume on a signal and time out without one; reviews, resolutions and replays do
//! what they say and refuse what the lifecycle forbids.

use super::*;

/// Waits for an approval signal, then returns its payload.
struct Approval(Option<Duration>);

#[async_trait]
impl Agent for Approval {
    type Input = String;
    type Output = serde_json::Value;
    fn name(&self) -> &str {
        "approval"
    }
    async fn run(
        &self,
        ctx: &mut Context,
        _: String,
    ) -> Result<Outcome<serde_json::Value>, AgentError> {
        match ctx.signal() {
            Some(payload) => Ok(Outcome::Done(payload.clone())),
            None => {
                let wait = WaitFor::signal("approved");
                Ok(Outcome::Wait(match self.0 {
                    Some(t) => wait.timeout(t),
                    None => wait,
                }))
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn waits_resume_on_a_signal() {
    let rt = builder().register(Approval(None)).build().unwrap();
    let id = rt.submit("approval", "deploy").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(
        (run.state, run.waiting_for.as_deref()),
        (RunState::WaitingExternal, Some("approved"))
    );
    let err = rt.signal(id, "rejected", json!(null), ada()).await.unwrap_err();
    assert_eq!(err.to_string(), format!("run {id} waits for signal `approved`, not `rejected`"));
    rt.signal(id, "approved", json!({"by": "ada"}), ada()).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.output), (RunState::Succeeded, Some(json!({"by": "ada"}))));
    let err = rt.signal(id, "approved", json!(null), ada()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Refused { state: RunState::Succeeded, .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn waits_time_out_without_a_signal() {
    let rt = builder().register(Approval(Some(Duration::from_secs(600)))).build().unwrap();
    let id = rt.submit("approval", "deploy").await.unwrap().id;
    let start = tokio::time::Instant::now();
    rt.run_until_idle().await.unwrap(); // parks: waiting for a signal counts as idle
    assert_eq!(state_of(&rt, id).await.state, RunState::WaitingExternal);
    assert!(start.elapsed() < Duration::from_secs(600));
    // Let the timer fire: the dispatcher sleeps until the wait's deadline.
    tokio::time::sleep(Duration::from_secs(601)).await;
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_idle().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.abort();
    let history = rt.store().history(id).await.unwrap();
    let timed_out = history.iter().find(|h| h.from == Some(RunState::WaitingExternal)).unwrap();
    assert_eq!((timed_out.to, &timed_out.actor), (RunState::FailedTransient, &Actor::Timer));
    assert_eq!(timed_out.reason, "timed out waiting for signal `approved`");
    // The retried attempt waits again.
    assert_eq!(state_of(&rt, id).await.state, RunState::WaitingExternal);
}

/// An operator's process that does not register the agent (the CLI) resolves against the
/// schema the workers' runtime kept in the store, and replays unchecked, saying so.
#[tokio::test(start_paused = true)]
async fn operators_without_the_agent_use_the_schema_the_store_kept() {
    let store: Arc<dyn steadfast::store::Store> =
        Arc::new(MemoryStore::with_clock(Arc::new(TokioClock::new())));
    let workers =
        Runtime::builder().shared_store(store.clone()).register(Reviewed).build().unwrap();
    let (a, b) = (
        workers.submit("reviewed", 1).await.unwrap().id,
        workers.submit("reviewed", 2).await.unwrap().id,
    );
    workers.run_until_idle().await.unwrap();
    let operator = Runtime::builder().shared_store(store.clone()).build().unwrap();

    let bad = operator.resolve(a, ada(), json!({"note": "x", "score": 99})).await.unwrap_err();
    assert!(matches!(bad, RuntimeError::InvalidOutput { .. }), "{bad}");
    assert!(bad.to_string().contains("/score"), "{bad}");
    operator.resolve(a, ada(), json!({"note": "x", "score": 9})).await.unwrap();
    assert_eq!(state_of(&operator, a).await.state, RunState::Succeeded);

    let replayed = operator.replay(b, ada(), false).await.unwrap();
    assert_eq!(replayed.state, RunState::Queued);
    let reason = store.history(b).await.unwrap().last().unwrap().reason.clone();
    assert_eq!(reason, "replayed (input schema not checked: agent not registered here)");

    // A run whose output schema was never kept cannot be resolved blind.
    let orphan = store
        .create(steadfast::store::NewRun::new("gone", "k", json!(1)).schemas("00", "11"))
        .await
        .unwrap()
        .run
        .id;
    let claim = steadfast::store::Claim::new("w", 1, Duration::from_secs(30)).agents(["gone"]);
    let token = store.claim(claim).await.unwrap()[0].lease.as_ref().unwrap().token;
    store
        .transition(
            steadfast::store::Transition::new(orphan, RunState::Processing, RunState::NeedsReview)
                .fenced(token)
                .reason("test"),
        )
        .await
        .unwrap()
        .unwrap_or_else(|c| panic!("{c}"));
    let err = operator.resolve(orphan, ada(), json!(1)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NoSchema { .. }), "{err}");
    assert_eq!(state_of(&operator, orphan).await.state, RunState::NeedsReview);
}

#[tokio::test(start_paused = true)]
async fn approve_reject_resolve_and_their_refusals() {
    let rt = builder().register(Reviewed).build().unwrap();
    let (a, b, c) = (
        rt.submit("reviewed", 1).await.unwrap().id,
        rt.submit("reviewed", 2).await.unwrap().id,
        rt.submit("reviewed", 3).await.unwrap().id,
    );
    rt.run_until_idle().await.unwrap();
    for id in [a, b, c] {
        assert_eq!(state_of(&rt, id).await.state, RunState::NeedsReview);
    }
    rt.approve(a, ada(), Some("checked with finance")).await.unwrap();
    rt.reject(b, ada(), Some("duplicate order")).await.unwrap();
    let bad = rt.resolve(c, ada(), json!({"note": "manual", "score": 99})).await.unwrap_err();
    assert!(matches!(bad, RuntimeError::InvalidOutput { .. }), "{bad}");
    assert_eq!(
        state_of(&rt, c).await.state,
        RunState::NeedsReview,
        "a refused resolve changes nothing"
    );
    rt.resolve(c, ada(), json!({"note": "manual", "score": 7})).await.unwrap();
    rt.run_until_idle().await.unwrap();

    let run = state_of(&rt, a).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output, Some(json!({"note": "checked with finance", "score": 1})));
    assert_eq!(rt.store().notes(a).await.unwrap()[0].text, "checked with finance");
    assert_eq!(state_of(&rt, b).await.state, RunState::FailedPermanent);
    assert_eq!(state_of(&rt, c).await.output, Some(json!({"note": "manual", "score": 7})));

    let err = rt.approve(a, ada(), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("run {a} is `succeeded`; approve is allowed only from `needs_review`")
    );
    let err = rt.replay(a, ada(), false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "run {a} is `succeeded`; replay is allowed only from `failed_permanent` or `needs_review`"
        )
    );
    let err = rt.cancel(a, ada()).await.unwrap_err();
    assert!(err.to_string().contains("cancel is allowed only from `queued`, `waiting_external`, `failed_transient` or `needs_review`"), "{err}");
    assert_eq!(rt.store().history(a).await.unwrap().last().unwrap().to, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn replay_turns_a_dead_letter_into_a_success_and_cancel_dead_letters() {
    let agent = Flaky::new("fixed-later", Fault::Permanent, 1);
    let rt = builder().register(agent).build().unwrap();
    let id = rt.submit("fixed-later", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, id).await.state, RunState::FailedPermanent);
    rt.replay(id, ada(), false).await.unwrap();
    assert!(rt.store().dead_letters(None, 10).await.unwrap().is_empty());
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(
        (run.state, run.attempt),
        (RunState::Succeeded, 1),
        "a replay starts a fresh attempt count"
    );

    let parked = rt.submit("fixed-later", "y").await.unwrap().id;
    rt.cancel(parked, ada()).await.unwrap();
    let run = state_of(&rt, parked).await;
    assert_eq!(run.state, RunState::FailedPermanent);
    assert_eq!(rt.store().history(parked).await.unwrap().last().unwrap().actor, ada());
    assert!(matches!(rt.cancel(RunId::new(), ada()).await, Err(RuntimeError::NotFound(_))));
}

/// Issue 16, defect 8: an operator's approve or replay starts fresh budgets for every fault
/// class, instead of counting the faults of the whole history.
#[tokio::test(start_paused = true)]
async fn an_operators_decision_starts_fresh_fault_budgets() {
    let disk = Flaky::new("disk", Fault::Resource, u32::MAX);
    let odd = Flaky::new("odd", Fault::Unknown, u32::MAX);
    let (disk_calls, odd_calls) = (disk.calls.clone(), odd.calls.clone());
    let rt = builder().register(disk).register(odd).build().unwrap();
    let d = rt.submit("disk", "x").await.unwrap().id;
    let o = rt.submit("odd", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, d).await.state, RunState::NeedsReview);
    assert_eq!(disk_calls.load(Ordering::SeqCst), 3, "a budget of 3 resource faults");
    assert_eq!(state_of(&rt, o).await.state, RunState::FailedPermanent);
    assert_eq!(odd_calls.load(Ordering::SeqCst), 2, "one retry of an unknown fault");

    rt.approve(d, ada(), Some("disk cleaned")).await.unwrap();
    rt.replay(o, ada(), false).await.unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(
        disk_calls.load(Ordering::SeqCst),
        6,
        "after the approve, three more resource faults before review again"
    );
    assert_eq!(odd_calls.load(Ordering::SeqCst), 4, "after the replay, one more retry");
    let history = rt.store().history(d).await.unwrap();
    let approved = history.iter().position(|h| h.reason.starts_with("approved")).unwrap();
    let after: Vec<RunState> = history[approved + 1..].iter().map(|h| h.to).collect();
    use RunState::*;
    assert_eq!(
        after,
        [
            Processing,
            FailedTransient,
            Queued,
            Processing,
            FailedTransient,
            Queued,
            Processing,
            NeedsReview
        ],
        "{history:#?}"
    );
}

/// Issue 16, defect 12: a pipeline's internal wake-up signal and an empty note are refused,
/// and change nothing.
#[tokio::test(start_paused = true)]
async fn internal_signals_and_empty_notes_are_refused() {
    let pipeline = steadfast::pipeline::Pipeline::new("gated").then(Approval(None));
    let rt = builder().pipeline(pipeline).build().unwrap();
    let id = rt.submit("gated", "deploy").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(
        (run.state, run.waiting_for.as_deref()),
        (RunState::WaitingExternal, Some("stage:0"))
    );
    let err = rt.signal(id, "stage:0", json!(null), ada()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("signal a stage's own run instead"), "{err}");
    assert_eq!(state_of(&rt, id).await.state, RunState::WaitingExternal, "nothing changed");

    let err = rt.note(id, ada(), "  ").await.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err}");
    assert!(rt.store().notes(id).await.unwrap().is_empty());
    let missing = RunId::new();
    assert!(matches!(
        rt.note(missing, ada(), "hello").await.unwrap_err(),
        RuntimeError::NotFound(_)
    ));
}

/// A retention policy given to the runtime is applied at start and then every period while
/// it works until shut down, not before its runs have rested for the policy's age.
#[tokio::test(start_paused = true)]
async fn retention_prunes_on_its_schedule_while_working() {
    let hour = Duration::from_secs(3600);
    let refused = builder()
        .retention(steadfast::store::Retention::older_than(hour).states([RunState::Queued]), hour)
        .build()
        .unwrap_err();
    assert!(refused.to_string().contains("never pruned"), "{refused}");

    let rt = Arc::new(
        builder()
            .register(Approval(None))
            .retention(steadfast::store::Retention::older_than(hour), Duration::from_secs(600))
            .build()
            .unwrap(),
    );
    let done = rt.submit("approval", "old").await.unwrap().id;
    let waiting = rt.submit("approval", "waiting").await.unwrap().id;
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    rt.signal(done, "approved", json!(1), ada()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state_of(&rt, done).await.state, RunState::Succeeded);
    tokio::time::sleep(Duration::from_secs(50 * 60)).await;
    assert!(rt.store().get(done).await.unwrap().is_some(), "at rest for 50 minutes only");
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    assert!(rt.store().get(done).await.unwrap().is_none(), "pruned by the 70-minute tick");
    assert_eq!(state_of(&rt, waiting).await.state, RunState::WaitingExternal);
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}
