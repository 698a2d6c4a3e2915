//! Limits and degradation: concurrency, circuit breakers, rate limits, fallback chains,
//! concurrency keys, graceful shutdown.

use super::*;

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
    // The paused clock's runtime is this thread's: its log lines land here.
    let logs = steadfast::logging::Capture::default();
    let _logging = tracing::subscriber::set_default(steadfast::logging::json(logs.clone()));
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
    for &id in &ids {
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
    // The failure that opened the breaker says its retry waits for the breaker, and until
    // when, instead of calling that wait a backoff.
    let mut opened_by = None;
    for id in &ids {
        for entry in rt.store().history(*id).await.unwrap() {
            if entry.reason.contains("the circuit breaker is open: retry in 60000 ms, at ") {
                opened_by = Some(entry);
            }
        }
    }
    let entry = opened_by.expect("a failure's move names the open breaker");
    assert_eq!(entry.to, RunState::FailedTransient);
    // Opening and closing are warnings that name the agent.
    let warnings: Vec<String> = logs
        .text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\""))
        .map(str::to_owned)
        .collect();
    let said =
        |what: &str| warnings.iter().any(|l| l.contains(what) && l.contains("\"agent\":\"timed\""));
    assert!(said("circuit breaker opened after 3 failures in a row"), "{warnings:#?}");
    assert!(said("circuit breaker closed"), "{warnings:#?}");
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
