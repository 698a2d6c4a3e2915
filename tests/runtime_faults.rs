//! The runtime from a user's side, on tokio's paused clock (no real sleeps): each fault class
//! ends where the table says with the right attempts and history, backoff stays in its jitter
//! bounds, waits resume on a signal and time out without one, reviews and replays do what they
//! say and refuse what the lifecycle forbids, concurrency stays within its limit, and the
//! schema gate guards inputs and outputs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steadfast::clock::TokioClock;
use steadfast::prelude::*;
use steadfast::runtime::{AgentOptions, RuntimeBuilder, RuntimeError};
use steadfast::store::{Actor, MemoryStore, StoreError};

fn ada() -> Actor {
    Actor::Operator("ada".into())
}

fn builder() -> RuntimeBuilder {
    let store = MemoryStore::with_clock(Arc::new(TokioClock::new()));
    Runtime::builder().store(store).workers(4).lease(Duration::from_secs(30))
}

/// Fails with `fault` for its first `failures` attempts, then succeeds with the attempt number.
#[derive(Clone)]
struct Flaky {
    name: &'static str,
    fault: Fault,
    failures: u32,
    calls: Arc<AtomicU32>,
    cleanups: Arc<AtomicU32>,
    policy: RetryPolicy,
}

impl Flaky {
    fn new(name: &'static str, fault: Fault, failures: u32) -> Self {
        Flaky {
            name,
            fault,
            failures,
            calls: Arc::default(),
            cleanups: Arc::default(),
            policy: RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

#[async_trait]
impl Agent for Flaky {
    type Input = String;
    type Output = u32;

    fn name(&self) -> &str {
        self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn run(&self, ctx: &mut Context, _input: String) -> Result<Outcome<u32>, AgentError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.failures {
            let cause = std::io::Error::other("upstream said no");
            return Err(
                AgentError::from_source(self.fault, cause).context(format!("call {call} failed"))
            );
        }
        Ok(Outcome::Done(ctx.attempt()))
    }

    async fn cleanup(&self, _ctx: &Context, _error: &AgentError) {
        self.cleanups.fetch_add(1, Ordering::SeqCst);
    }
}

async fn state_of(rt: &Runtime, id: RunId) -> steadfast::store::RunRecord {
    rt.store().get(id).await.unwrap().unwrap()
}

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

/// Asks for review on its first attempt, then succeeds with the reviewer's note.
struct Reviewed;

#[async_trait]
impl Agent for Reviewed {
    type Input = u32;
    type Output = Verdict;
    fn name(&self) -> &str {
        "reviewed"
    }
    async fn run(&self, ctx: &mut Context, _: u32) -> Result<Outcome<Verdict>, AgentError> {
        Ok(match ctx.review_note() {
            Some(note) => Outcome::Done(Verdict { note: note.to_owned(), score: 1 }),
            None => Outcome::Review("amount above the limit".into()),
        })
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Verdict {
    note: String,
    #[schemars(range(min = 0, max = 10))]
    score: u8,
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

#[tokio::test(start_paused = true)]
async fn concurrency_never_exceeds_the_limit() {
    #[derive(Clone, Default)]
    struct Busy {
        now: Arc<AtomicU32>,
        max: Arc<AtomicU32>,
    }
    #[async_trait]
    impl Agent for Busy {
        type Input = u32;
        type Output = ();
        fn name(&self) -> &str {
            "busy"
        }
        async fn run(&self, _ctx: &mut Context, _: u32) -> Result<Outcome<()>, AgentError> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome::Done(()))
        }
    }
    let busy = Busy::default();
    let rt = builder()
        .workers(8)
        .register_with(busy.clone(), AgentOptions::new().concurrency(3))
        .build()
        .unwrap();
    for i in 0..1000 {
        rt.submit("busy", i).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    assert_eq!(rt.store().counts().await.unwrap().get(RunState::Succeeded), 1000);
    assert_eq!(
        busy.max.load(Ordering::SeqCst),
        3,
        "never more than 3 at once, and the limit was used"
    );
}

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

/// Records when each call happened; fails the first `failures` calls.
#[derive(Clone, Default)]
struct Timed {
    failures: u32,
    calls: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
}

#[async_trait]
impl Agent for Timed {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "timed"
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(10)
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
    }
    async fn run(&self, ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(tokio::time::Instant::now());
            calls.len() as u32
        };
        if call <= self.failures {
            return Err(AgentError::transient("503 Service Unavailable"));
        }
        let _ = ctx;
        Ok(Outcome::Done(n))
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_defers_half_opens_and_closes() {
    use steadfast::runtime::{BreakerPolicy, BreakerState};
    let agent = Timed { failures: 3, ..Timed::default() };
    let options = AgentOptions::new().breaker(BreakerPolicy::new(3, Duration::from_secs(60)));
    let rt = builder().workers(1).register_with(agent.clone(), options).build().unwrap();
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(rt.submit("timed", n).await.unwrap().id);
    }
    rt.run_until_idle().await.unwrap();
    assert_eq!(rt.breaker("timed"), Some(BreakerState::Closed { failures: 0 }));
    let calls = agent.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 13, "3 failures, then each of the 10 runs once");
    let opened = calls[2];
    assert!(
        calls[3] >= opened + Duration::from_secs(60),
        "no call while open: the probe came {:?} after",
        calls[3] - opened
    );
    let mut attempts = Vec::new();
    for id in ids {
        let run = state_of(&rt, id).await;
        assert_eq!(run.state, RunState::Succeeded);
        attempts.push(run.attempt);
    }
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        [1, 1, 1, 1, 1, 1, 1, 2, 2, 2],
        "deferred runs are not charged an attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spaces_out_starts() {
    let agent = Timed::default();
    let rt = builder()
        .workers(8)
        .register_with(agent.clone(), AgentOptions::new().rate_limit(10.0, 2))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    for n in 0..30 {
        rt.submit("timed", n).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    let calls = agent.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 30);
    // 2 at once, then one every 100 ms: 28 more take at least 2.8 s.
    assert!(calls[29] - start >= Duration::from_millis(2790), "{:?}", calls[29] - start);
    for (i, window_start) in calls.iter().enumerate() {
        let in_window =
            calls[i..].iter().take_while(|t| **t < *window_start + Duration::from_secs(1)).count();
        assert!(in_window <= 12, "{in_window} starts within one second");
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_chains_degrade_in_order() {
    use steadfast::Fallback;
    let primary = Flaky::new("llm", Fault::Transient, u32::MAX);
    let rules = Flaky::new("rules", Fault::Logic, 0);
    let chain = Fallback::new("classify", primary.clone()).or(rules.clone());
    let rt = builder().register(chain).build().unwrap();
    let id = rt.submit("classify", "text").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!((run.state, run.attempt, run.output), (RunState::Succeeded, 1, Some(json!(1))));
    assert_eq!((primary.calls.load(Ordering::SeqCst), rules.calls.load(Ordering::SeqCst)), (1, 1));

    // Every step failing: the last error is routed, named with its step.
    let all_down = Fallback::new("all-down", Flaky::new("a", Fault::Transient, u32::MAX))
        .or(Flaky::new("b", Fault::Permanent, u32::MAX));
    let rt = builder().register(all_down).build().unwrap();
    let id = rt.submit("all-down", "text").await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let run = state_of(&rt, id).await;
    assert_eq!(run.state, RunState::FailedPermanent);
    assert_eq!(run.last_error.unwrap().message, "`b` (step 2 of 2)");
}

#[tokio::test(start_paused = true)]
async fn runs_with_one_concurrency_key_never_overlap() {
    #[derive(Clone, Default)]
    struct Mailer {
        busy: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
        overlaps: Arc<AtomicU32>,
        done: Arc<AtomicU32>,
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Mail {
        mailbox: String,
        n: u32,
    }
    #[async_trait]
    impl Agent for Mailer {
        type Input = Mail;
        type Output = ();
        fn name(&self) -> &str {
            "mailer"
        }
        fn concurrency_key(&self, mail: &Mail) -> Option<String> {
            Some(format!("mailbox:{}", mail.mailbox))
        }
        async fn run(&self, _ctx: &mut Context, mail: Mail) -> Result<Outcome<()>, AgentError> {
            let now = {
                let mut busy = self.busy.lock().unwrap();
                let n = busy.entry(mail.mailbox.clone()).or_default();
                *n += 1;
                *n
            };
            if now > 1 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            *self.busy.lock().unwrap().get_mut(&mail.mailbox).unwrap() -= 1;
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Done(()))
        }
    }
    let mailer = Mailer::default();
    let rt = builder().workers(8).register(mailer.clone()).build().unwrap();
    let start = tokio::time::Instant::now();
    for n in 0..12 {
        let mailbox = if n % 2 == 0 { "ops" } else { "sales" };
        rt.submit("mailer", Mail { mailbox: mailbox.into(), n }).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    assert_eq!(mailer.done.load(Ordering::SeqCst), 12);
    assert_eq!(mailer.overlaps.load(Ordering::SeqCst), 0, "never two runs of one mailbox at once");
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "the two mailboxes still ran side by side: {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_attempts_finish_then_releases_the_rest_uncharged() {
    struct Sleepy(Duration);
    #[async_trait]
    impl Agent for Sleepy {
        type Input = u32;
        type Output = u32;
        fn name(&self) -> &str {
            "sleepy"
        }
        async fn run(&self, _ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
            tokio::time::sleep(self.0 * n).await;
            Ok(Outcome::Done(n))
        }
    }
    let rt = builder()
        .workers(2)
        .grace(Duration::from_secs(5))
        .register(Sleepy(Duration::from_secs(2)))
        .build()
        .unwrap();
    let quick = rt.submit("sleepy", 1).await.unwrap().id; // 2 s: finishes within the grace period
    let slow = rt.submit("sleepy", 3600).await.unwrap().id; // 2 h: released
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&rt, slow).await.state, RunState::Processing);
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
    assert_eq!(state_of(&rt, quick).await.state, RunState::Succeeded);
    let run = state_of(&rt, slow).await;
    assert_eq!(
        (run.state, run.attempt),
        (RunState::FailedTransient, 0),
        "released, the attempt not charged"
    );
    let last = rt.store().history(slow).await.unwrap().pop().unwrap();
    assert_eq!(last.reason, "released at shutdown");
}

mod model {
    //! Property test: random fault scripts per run; the runtime's final states, attempt counts,
    //! histories, dead letters and effect counts agree with a model of the fault table, whatever
    //! the breaker and the scheduling did on the way.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use proptest::prelude::*;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use steadfast::prelude::*;
    use steadfast::testing::Harness;

    const MAX_ATTEMPTS: u32 = 4;
    const RESOURCE_BUDGET: u32 = 2;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    enum Step {
        Ok,
        Transient,
        Resource,
        Logic,
        Permanent,
        Unknown,
        Panic,
        Review,
    }

    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    struct Script {
        id: u32,
        steps: Vec<Step>,
    }

    #[derive(Clone, Default)]
    struct Scripted {
        effects: Arc<Mutex<HashMap<u32, u32>>>,
    }

    #[async_trait]
    impl Agent for Scripted {
        type Input = Script;
        type Output = u32;
        fn name(&self) -> &str {
            "scripted"
        }
        fn retry_policy(&self) -> RetryPolicy {
            RetryPolicy::default()
                .max_attempts(MAX_ATTEMPTS)
                .resource(std::time::Duration::from_secs(5), RESOURCE_BUDGET)
        }
        async fn run(&self, ctx: &mut Context, script: Script) -> Result<Outcome<u32>, AgentError> {
            let effects = self.effects.clone();
            ctx.effect("e", |_| async move {
                *effects.lock().unwrap().entry(script.id).or_default() += 1;
                Ok(())
            })
            .await?;
            let step = script.steps.get(ctx.attempt() as usize - 1).copied().unwrap_or(Step::Ok);
            match step {
                Step::Ok => Ok(Outcome::Done(ctx.attempt())),
                Step::Transient => Err(AgentError::transient("t")),
                Step::Resource => Err(AgentError::resource("r")),
                Step::Logic => Err(AgentError::logic("l")),
                Step::Permanent => Err(AgentError::permanent("p")),
                Step::Unknown => Err(AgentError::unknown("u")),
                Step::Panic => panic!("scripted panic"),
                Step::Review => Ok(Outcome::Review("scripted review".into())),
            }
        }
    }

    /// The fault table, applied to a script: (final state, attempts).
    fn expected(steps: &[Step]) -> (RunState, u32) {
        let (mut resources, mut unknowns) = (0, 0);
        for attempt in 1.. {
            let step = steps.get(attempt as usize - 1).copied().unwrap_or(Step::Ok);
            match step {
                Step::Ok => return (RunState::Succeeded, attempt),
                Step::Review | Step::Logic => return (RunState::NeedsReview, attempt),
                Step::Permanent => return (RunState::FailedPermanent, attempt),
                Step::Transient if attempt >= MAX_ATTEMPTS => {
                    return (RunState::FailedPermanent, attempt);
                }
                Step::Transient => {}
                Step::Resource => {
                    resources += 1;
                    if resources >= RESOURCE_BUDGET {
                        return (RunState::NeedsReview, attempt);
                    }
                }
                Step::Unknown | Step::Panic => {
                    unknowns += 1;
                    if unknowns > 1 {
                        return (RunState::FailedPermanent, attempt);
                    }
                }
            }
        }
        unreachable!()
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Ok),
            4 => Just(Step::Transient),
            1 => Just(Step::Resource),
            1 => Just(Step::Logic),
            1 => Just(Step::Permanent),
            1 => Just(Step::Unknown),
            1 => Just(Step::Panic),
            1 => Just(Step::Review),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn final_states_follow_the_fault_table(
            scripts in proptest::collection::vec(proptest::collection::vec(step(), 0..6), 1..12),
            workers in 1usize..5,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            runtime.block_on(async {
                let agent = Scripted::default();
                let harness = Harness::new(|rt| rt.workers(workers).register(agent.clone()));
                let mut ids = Vec::new();
                for (id, steps) in scripts.iter().enumerate() {
                    let script = Script { id: id as u32, steps: steps.clone() };
                    ids.push(harness.runtime().submit("scripted", script).await.unwrap().id);
                }
                harness.runtime().run_until_idle().await.unwrap();
                let mut dead = 0;
                for (i, id) in ids.iter().enumerate() {
                    let report = harness.report(*id).await;
                    let (state, attempts) = expected(&scripts[i]);
                    prop_assert_eq!(report.run.state, state, "script {:?}{}", scripts[i], report.timeline());
                    prop_assert_eq!(report.run.attempt, attempts, "script {:?}{}", scripts[i], report.timeline());
                    for pair in report.history.windows(2) {
                        prop_assert!(pair[0].to.can_transition(pair[1].to));
                    }
                    prop_assert_eq!(agent.effects.lock().unwrap().get(&(i as u32)).copied(), Some(1), "the effect ran once");
                    dead += usize::from(state == RunState::FailedPermanent);
                }
                prop_assert_eq!(harness.runtime().store().dead_letters(None, 1000).await.unwrap().len(), dead);
                Ok(())
            })?;
        }
    }
}
