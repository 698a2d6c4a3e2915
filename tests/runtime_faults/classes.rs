//! Each fault class ends where the table says, with the right attempts and history; backoff
//! stays in its jitter bounds; an attempt times out as transient.

use super::*;

#[tokio::test(start_paused = true)]
async fn transient_faults_retry_with_backoff_then_succeed() {
    let agent = Flaky::new("flaky", Fault::Transient, 3);
    let calls = agent.calls.clone();
    let rt = builder().register(agent.clone()).build().unwrap();
    let id = rt.submit("flaky", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output, Some(json!(4)));
    assert_eq!(run.attempt, 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Each retry waited within its full-jitter bound: [0, min(60 s, 1 s * 2^(attempt-1))].
    let history = rt.store().history(id).await.unwrap();
    let failures: Vec<_> = history.iter().filter(|h| h.to == RunState::FailedTransient).collect();
    assert_eq!(failures.len(), 3);
    for failed in failures {
        let requeued = &history[failed.seq as usize + 1];
        assert_eq!((requeued.to, &requeued.actor), (RunState::Queued, &Actor::Timer));
        let waited = requeued.at.since(failed.at);
        let ceiling = agent.policy.backoff_ceiling(failed.attempt);
        assert!(
            waited <= ceiling + Duration::from_millis(5),
            "attempt {}: waited {waited:?} > {ceiling:?}",
            failed.attempt
        );
        let error = failed.error.as_ref().unwrap();
        assert_eq!(error.fault, Fault::Transient);
        assert_eq!(error.chain, ["upstream said no"]);
    }
}

#[tokio::test(start_paused = true)]
async fn transient_faults_exhaust_attempts_into_the_dead_letter_queue() {
    let mut agent = Flaky::new("down", Fault::Transient, u32::MAX);
    agent.policy = agent.policy.max_attempts(3);
    let dead = Arc::new(AtomicU32::new(0));
    let seen = dead.clone();
    let rt = builder()
        .register(agent)
        .on_dead_letter(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let id = rt.submit("down", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.attempt), (RunState::FailedPermanent, 3));
    let letters = rt.store().dead_letters(None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.starts_with("gave up after 3 attempts"), "{}", letters[0].reason);
    assert_eq!(letters[0].error.as_ref().unwrap().fault, Fault::Transient);
    assert_eq!(dead.load(Ordering::SeqCst), 1, "the dead letter hook ran once");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    struct Limited(Arc<AtomicU32>);
    #[async_trait]
    impl Agent for Limited {
        type Input = ();
        type Output = ();
        fn name(&self) -> &str {
            "limited"
        }
        async fn run(&self, _ctx: &mut Context, _: ()) -> Result<Outcome<()>, AgentError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(AgentError::transient("HTTP 429").retry_after(Duration::from_secs(120)));
            }
            Ok(Outcome::Done(()))
        }
    }
    let rt = builder().register(Limited(Arc::default())).build().unwrap();
    let id = rt.submit("limited", ()).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let history = rt.store().history(id).await.unwrap();
    let failed = history.iter().find(|h| h.to == RunState::FailedTransient).unwrap();
    let requeued = &history[failed.seq as usize + 1];
    assert!(requeued.at.since(failed.at) >= Duration::from_secs(120));
    assert_eq!(state_of(&rt, id).await.state, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn resource_faults_clean_up_cool_down_then_pause_for_review() {
    let agent = Flaky::new("disk", Fault::Resource, u32::MAX);
    let (calls, cleanups) = (agent.calls.clone(), agent.cleanups.clone());
    let reviews = Arc::new(AtomicU32::new(0));
    let seen = reviews.clone();
    let rt = builder()
        .register(agent)
        .on_review(move |run| {
            assert_eq!(run.state, RunState::NeedsReview);
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let id = rt.submit("disk", "x").await.unwrap().id;
    let start = tokio::time::Instant::now();
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(run.state, RunState::NeedsReview, "budget of 3 resource faults");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cleanups.load(Ordering::SeqCst), 3, "cleanup after every resource fault");
    assert!(start.elapsed() >= Duration::from_secs(60), "two cooldowns of 30 s");
    assert_eq!(reviews.load(Ordering::SeqCst), 1);
    let last = rt.store().history(id).await.unwrap().pop().unwrap();
    assert!(last.reason.contains("paused until manual cleanup"), "{}", last.reason);
}

#[tokio::test(start_paused = true)]
async fn logic_and_permanent_faults_do_not_retry() {
    let logic = Flaky::new("logic", Fault::Logic, u32::MAX);
    let permanent = Flaky::new("permanent", Fault::Permanent, u32::MAX);
    let (logic_calls, permanent_calls) = (logic.calls.clone(), permanent.calls.clone());
    let rt = builder().register(logic).register(permanent).build().unwrap();
    let l = rt.submit("logic", "x").await.unwrap().id;
    let p = rt.submit("permanent", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, l).await.state, RunState::NeedsReview);
    let dead = state_of(&rt, p).await;
    assert_eq!(dead.state, RunState::FailedPermanent);
    let error = dead.last_error.unwrap();
    assert_eq!((error.fault, error.message.as_str()), (Fault::Permanent, "call 1 failed"));
    assert_eq!(error.chain, ["upstream said no"], "the full chain is kept");
    assert_eq!(
        (logic_calls.load(Ordering::SeqCst), permanent_calls.load(Ordering::SeqCst)),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_faults_and_panics_get_one_retry() {
    struct Panics;
    #[async_trait]
    impl Agent for Panics {
        type Input = ();
        type Output = ();
        fn name(&self) -> &str {
            "panics"
        }
        async fn run(&self, _ctx: &mut Context, _: ()) -> Result<Outcome<()>, AgentError> {
            panic!("index out of bounds")
        }
    }
    let once = Flaky::new("unknown-once", Fault::Unknown, 1);
    let rt = builder().register(Panics).register(once).build().unwrap();
    let panics = rt.submit("panics", ()).await.unwrap().id;
    let once = rt.submit("unknown-once", "x").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, panics).await;
    assert_eq!(
        (run.state, run.attempt),
        (RunState::FailedPermanent, 2),
        "one retry, then the dead letter"
    );
    let error = run.last_error.unwrap();
    assert_eq!(error.fault, Fault::Unknown);
    assert_eq!(error.message, "the agent panicked: index out of bounds");
    let run = state_of(&rt, once).await;
    assert_eq!((run.state, run.attempt), (RunState::Succeeded, 2));
}

#[tokio::test(start_paused = true)]
async fn attempts_time_out_as_transient() {
    struct Slow;
    #[async_trait]
    impl Agent for Slow {
        type Input = ();
        type Output = ();
        fn name(&self) -> &str {
            "slow"
        }
        fn retry_policy(&self) -> RetryPolicy {
            RetryPolicy::default().max_attempts(2).attempt_timeout(Some(Duration::from_secs(5)))
        }
        async fn run(&self, _ctx: &mut Context, _: ()) -> Result<Outcome<()>, AgentError> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Outcome::Done(()))
        }
    }
    let rt = builder().register(Slow).build().unwrap();
    let id = rt.submit("slow", ()).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.attempt), (RunState::FailedPermanent, 2));
    assert!(run.last_error.unwrap().message.contains("timed out after 5s"));
}
