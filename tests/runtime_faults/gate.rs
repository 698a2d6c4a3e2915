//! The schema gate on inputs and outputs, effects across retries, the builder's refusals and
//! the testing harness.

use super::*;

#[tokio::test(start_paused = true)]
async fn the_schema_gate_guards_inputs_and_outputs() {
    struct Scorer;
    #[async_trait]
    impl Agent for Scorer {
        type Input = Verdict;
        type Output = Verdict;
        fn name(&self) -> &str {
            "scorer"
        }
        async fn run(
            &self,
            _ctx: &mut Context,
            v: Verdict,
        ) -> Result<Outcome<Verdict>, AgentError> {
            Ok(Outcome::Done(Verdict { note: v.note, score: v.score * 10 })) // 7 → 70: out of range
        }
    }
    let rt = builder().register(Scorer).build().unwrap();
    let err = rt.submit("scorer", json!({"note": "x", "score": 11})).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "input for `scorer` rejected: schema validation failed: 1 violation (at /score"
        ),
        "{err}"
    );
    assert_eq!(rt.store().counts().await.unwrap().total(), 0, "nothing stored");
    let err = rt.submit("nobody", 1).await.unwrap_err();
    assert_eq!(err.to_string(), "no agent named `nobody` is registered (registered: scorer)");

    let id = rt.submit("scorer", Verdict { note: "x".into(), score: 7 }).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(run.state, RunState::FailedPermanent);
    assert_eq!(run.output, None, "an invalid output is never stored");
    let error = run.last_error.unwrap();
    assert_eq!(error.message, "the output failed the schema gate");
    assert!(error.chain[0].contains("70 is greater than the maximum of 10"), "{:?}", error.chain);

    // An agent may ask for review instead; the operator resolves with a valid output.
    struct ReviewedScorer;
    #[async_trait]
    impl Agent for ReviewedScorer {
        type Input = Verdict;
        type Output = Verdict;
        fn name(&self) -> &str {
            "reviewed-scorer"
        }
        fn review_invalid_output(&self) -> bool {
            true
        }
        async fn run(
            &self,
            _ctx: &mut Context,
            v: Verdict,
        ) -> Result<Outcome<Verdict>, AgentError> {
            Ok(Outcome::Done(Verdict { note: v.note, score: v.score * 10 }))
        }
    }
    let rt = builder().register(ReviewedScorer).build().unwrap();
    let id = rt.submit("reviewed-scorer", Verdict { note: "x".into(), score: 7 }).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.output.as_ref()), (RunState::NeedsReview, None));
    let reason = rt.store().history(id).await.unwrap().pop().unwrap().reason;
    assert!(
        reason.starts_with("the output failed the schema gate: schema validation failed"),
        "{reason}"
    );
    rt.resolve(id, ada(), json!({"note": "x", "score": 10})).await.unwrap();
    assert_eq!(state_of(&rt, id).await.state, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn effects_run_once_across_retries() {
    #[derive(Clone, Default)]
    struct Sender {
        sent: Arc<AtomicU32>,
        calls: Arc<AtomicU32>,
    }
    #[async_trait]
    impl Agent for Sender {
        type Input = String;
        type Output = String;
        fn name(&self) -> &str {
            "sender"
        }
        async fn run(&self, ctx: &mut Context, to: String) -> Result<Outcome<String>, AgentError> {
            let sent = self.sent.clone();
            let id = ctx
                .effect("send", |key| async move {
                    sent.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("<{key}@mail>"))
                })
                .await?;
            if self.calls.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err(AgentError::transient(format!("archiving the mail to {to} failed")));
            }
            Ok(Outcome::Done(id))
        }
    }
    let sender = Sender::default();
    let rt = builder().register(sender.clone()).build().unwrap();
    let id = rt.submit("sender", "ops@example.com").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.attempt), (RunState::Succeeded, 3));
    assert_eq!(
        sender.sent.load(Ordering::SeqCst),
        1,
        "the journaled effect ran once in three attempts"
    );
    assert_eq!(run.output, Some(json!(format!("<{id}/send@mail>"))));
}

#[tokio::test(start_paused = true)]
async fn builder_refusals() {
    let err = Runtime::builder().build().unwrap_err();
    assert_eq!(err.to_string(), "no store: call `Runtime::builder().store(...)`");
    let err = builder().register(Reviewed).register(Reviewed).build().unwrap_err();
    assert_eq!(err.to_string(), "an agent named `reviewed` is registered twice");
    let store_err: RuntimeError = StoreError::NotFound(RunId::new()).into();
    assert!(store_err.to_string().ends_with("does not exist"));
}

#[tokio::test(start_paused = true)]
async fn the_testing_harness_injects_faults_by_class() {
    use RunState::*;
    use steadfast::testing::{Harness, inject};

    let harness = Harness::new(|rt| {
        rt.register(inject(Flaky::new("twice", Fault::Transient, 0), Fault::Transient, 2))
            .register(inject(Flaky::new("broken", Fault::Transient, 0), Fault::Permanent, 1))
            .register(inject(Flaky::new("confused", Fault::Transient, 0), Fault::Logic, 1))
    });
    let report = harness.run("twice", "x").await;
    report.assert_state(Succeeded).assert_attempts(3);
    assert_eq!(report.output::<u32>(), 3);
    report.assert_path(&[
        Queued,
        Processing,
        FailedTransient,
        Queued,
        Processing,
        FailedTransient,
        Queued,
        Processing,
        Succeeded,
    ]);

    harness.run("broken", "x").await.assert_state(FailedPermanent).assert_path(&[
        Queued,
        Processing,
        FailedPermanent,
    ]);

    let report = harness.run("confused", "x").await;
    report.assert_state(NeedsReview);
    harness.runtime().approve(report.run.id, ada(), Some("data fixed")).await.unwrap();
    harness.settle(report.run.id).await.assert_state(Succeeded).assert_attempts(1);

    let failed = std::panic::catch_unwind(|| {
        report.assert_attempts(7);
    })
    .unwrap_err();
    let message = failed.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("made 1 attempts, expected 7; history:\n  #0 - -> queued"),
        "{message}"
    );
}
