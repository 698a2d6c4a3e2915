//! Typed pipelines from a user's side, on tokio's paused clock: stages run as child runs in
//! order, fan-out respects its concurrency, fan-in policies decide on failures, a stage held
//! for review holds the pipeline until approved, and a retried stage never redoes the ones
//! before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use serde_json::json;
use steadfast::agent::Data;
use steadfast::pipeline::{FanIn, Pipeline};
use steadfast::prelude::*;
use steadfast::store::{Actor, ListQuery, SledStore, Store};
use steadfast::testing::Harness;

/// Counts its calls; `Fn` does the work.
#[derive(Clone)]
struct Step<I, O> {
    name: &'static str,
    calls: Arc<AtomicU32>,
    f: fn(&Context, I) -> Result<Outcome<O>, AgentError>,
}

fn step<I, O>(
    name: &'static str,
    f: fn(&Context, I) -> Result<Outcome<O>, AgentError>,
) -> Step<I, O> {
    Step { name, calls: Arc::default(), f }
}

#[async_trait]
impl<I, O> Agent for Step<I, O>
where
    I: Data,
    O: Data,
{
    type Input = I;
    type Output = O;
    fn name(&self) -> &str {
        self.name
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(1))
    }
    async fn run(&self, ctx: &mut Context, input: I) -> Result<Outcome<O>, AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.f)(ctx, input)
    }
}

fn four_stages() -> (Pipeline<u32, u64>, [Arc<AtomicU32>; 4]) {
    let make =
        step("make", |_, n: u32| Ok(Outcome::Done(format!("{n} apples and {} pears", n * 2))));
    let split = step("split", |_, text: String| {
        Ok(Outcome::Done(text.split(' ').map(str::to_owned).collect::<Vec<_>>()))
    });
    // Fails transiently on its first attempt for "and": a retried stage item.
    let measure = step("measure", |ctx, word: String| {
        if word == "and" && ctx.attempt() == 1 {
            return Err(AgentError::transient("flaky"));
        }
        Ok(Outcome::Done(word.len() as u64))
    });
    let sum = step("sum", |_, lengths: Vec<u64>| Ok(Outcome::Done(lengths.iter().sum::<u64>())));
    let calls = [make.calls.clone(), split.calls.clone(), measure.calls.clone(), sum.calls.clone()];
    (Pipeline::new("count").then(make).then(split).fan_out(measure, 8).then(sum), calls)
}

/// How many runs of an agent are in its `run` at once, and the most there were.
#[derive(Default)]
struct Gauge {
    now: AtomicU32,
    max: AtomicU32,
}

impl Gauge {
    fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }
}

/// Takes 50 ms (on the paused clock) per run, measured by its gauge; `out` does the work.
#[derive(Clone)]
struct Gauged {
    name: &'static str,
    out: fn(u32) -> u32,
    gauge: Arc<Gauge>,
}

impl Gauged {
    fn new(name: &'static str, out: fn(u32) -> u32) -> Self {
        Gauged { name, out, gauge: Arc::default() }
    }
}

#[async_trait]
impl Agent for Gauged {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&self, _ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        let now = self.gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.gauge.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.gauge.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome::Done((self.out)(n)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_four_stage_pipeline_runs_end_to_end_as_child_runs() {
    let (pipeline, calls) = four_stages();
    let mermaid = pipeline.mermaid();
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert!(mermaid.contains("s2[[\"count.2.measure ×8 (all must succeed)\"]]"), "{mermaid}");
    let harness = Harness::new(|rt| rt.workers(4).pipeline(pipeline));
    let report = harness.run("count", 3).await;
    report.assert_state(RunState::Succeeded);
    // "3 apples and 6 pears": 1 + 6 + 3 + 1 + 5 letters.
    assert_eq!(report.output::<u64>(), 16);
    let counts: Vec<u32> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 1, 6, 1], "no completed stage ran again; one item retried once");

    let children = harness
        .runtime()
        .store()
        .list(ListQuery::new().parent(report.run.id).oldest_first())
        .await
        .unwrap()
        .runs;
    assert_eq!(children.len(), 1 + 1 + 5 + 1);
    assert!(children.iter().all(|c| c.state == RunState::Succeeded));
    let stages: Vec<Option<u32>> = children.iter().map(|c| c.stage).collect();
    assert_eq!(stages, [Some(0), Some(1), Some(2), Some(2), Some(2), Some(2), Some(2), Some(3)]);
    assert_eq!(children[0].agent, "count.0.make");
    assert_eq!(children[2].agent, "count.2.measure");

    // Submitting the same input again is the same pipeline run.
    let again = harness.runtime().submit("count", 3).await.unwrap();
    assert_eq!((again.id, again.created), (report.run.id, false));
}

/// What a pipeline run whose stages it ran itself leaves behind, on `store`: each sequential
/// stage a run of its own (created, claimed, done: one attempt), the fan-out's items worked
/// by the queue (the pipeline waited for them once), and the stage that failed transiently
/// on its first attempt retried by the queue (the pipeline waited for it too).
async fn stages_run_in_the_pipeline_run_keep_their_own_history(store: impl Store) {
    let make = step("make", |_, n: u32| Ok(Outcome::Done(vec![n, n + 1])));
    let double = step("double", |_, n: u32| Ok(Outcome::Done(n * 2)));
    let flaky = step("flaky", |ctx, v: Vec<u32>| {
        if ctx.attempt() == 1 {
            return Err(AgentError::transient("flaky"));
        }
        Ok(Outcome::Done(v.iter().sum::<u32>()))
    });
    let last = step("last", |_, n: u32| Ok(Outcome::Done(n + 1)));
    let pipeline = Pipeline::new("inline").then(make).fan_out(double, 2).then(flaky).then(last);
    let rt = Runtime::builder().store(store).workers(2).pipeline(pipeline).build().unwrap();
    let run = rt.submit("inline", 5).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let done = rt.store().get(run.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.output), (RunState::Succeeded, Some(json!(5 * 2 + 6 * 2 + 1))));

    let children =
        rt.store().list(ListQuery::new().parent(run.id).oldest_first()).await.unwrap().runs;
    let path = async |id| -> Vec<(RunState, String)> {
        let history = rt.store().history(id).await.unwrap();
        history.into_iter().map(|h| (h.to, h.reason)).collect()
    };
    let by_agent = |name: &str| children.iter().find(|c| c.agent == name).unwrap().id;
    let ran_here = [
        (RunState::Queued, "created".to_owned()),
        (RunState::Processing, "claimed".to_owned()),
        (RunState::Succeeded, "done".to_owned()),
    ];
    assert_eq!(path(by_agent("inline.0.make")).await, ran_here);
    assert_eq!(path(by_agent("inline.3.last")).await, ran_here);
    let flaky = path(by_agent("inline.2.flaky")).await;
    let states: Vec<RunState> = flaky.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        states,
        [
            RunState::Queued,
            RunState::Processing,
            RunState::FailedTransient,
            RunState::Queued,
            RunState::Processing,
            RunState::Succeeded
        ]
    );
    // The pipeline run waited for the fan-out and for the retried stage, and for nothing else.
    let waits: Vec<String> = rt
        .store()
        .history(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.to == RunState::WaitingExternal)
        .map(|h| h.reason)
        .collect();
    assert_eq!(waits, ["waiting for signal `stage:1`", "waiting for signal `stage:2`"]);
}

#[tokio::test]
async fn stages_run_in_the_pipeline_run_keep_their_own_history_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    stages_run_in_the_pipeline_run_keep_their_own_history(SledStore::open(dir.path()).unwrap())
        .await;
}

#[tokio::test]
async fn stages_run_in_the_pipeline_run_keep_their_own_history_in_memory() {
    stages_run_in_the_pipeline_run_keep_their_own_history(steadfast::store::MemoryStore::new())
        .await;
}

/// Pipeline runs hold no worker slot of their own; the stages they run themselves take one
/// each while their agent runs, so 30 pipelines on 2 workers never run more than 2 agents at
/// once, and all finish.
#[tokio::test(start_paused = true)]
async fn stages_run_in_pipeline_runs_share_the_worker_slots() {
    let busy = Gauged::new("busy", |n| n + 1);
    let pipeline = Pipeline::new("busy").then(busy.clone()).then(busy.clone()).then(busy.clone());
    let harness = Harness::new(|rt| rt.workers(2).pipeline(pipeline));
    let mut runs = Vec::new();
    for n in 0..30 {
        runs.push(harness.runtime().submit("busy", n).await.unwrap().id);
    }
    harness.runtime().run_until_idle().await.unwrap();
    for (n, id) in runs.into_iter().enumerate() {
        let run = harness.runtime().store().get(id).await.unwrap().unwrap();
        assert_eq!((run.state, run.output), (RunState::Succeeded, Some(json!(n + 3))));
    }
    assert_eq!(busy.gauge.max(), 2, "two workers, two agents at a time at most");
}

/// A shutdown while a pipeline run is running a stage itself: a stage that finishes within the
/// grace period is recorded and the next one is left queued (not started); a stage still
/// running when it ends is released with its pipeline run, uncharged. Either way a later
/// worker finishes the pipeline.
#[tokio::test(start_paused = true)]
async fn a_shutdown_lets_a_stage_run_in_a_pipeline_run_finish_or_releases_it() {
    let nap = step("nap", |_, secs: u64| Ok(Outcome::Done(secs)));
    struct Sleep;
    #[async_trait]
    impl Agent for Sleep {
        type Input = u64;
        type Output = u64;
        fn name(&self) -> &str {
            "sleep"
        }
        async fn run(&self, _ctx: &mut Context, secs: u64) -> Result<Outcome<u64>, AgentError> {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok(Outcome::Done(secs))
        }
    }
    let store =
        steadfast::store::MemoryStore::with_clock(Arc::new(steadfast::clock::TokioClock::new()));
    let runtime = || {
        Runtime::builder()
            .store(store.clone())
            .workers(2)
            .grace(Duration::from_secs(5))
            .pipeline(Pipeline::new("naps").then(Sleep).then(nap.clone()))
            .build()
            .unwrap()
    };
    let rt = runtime();
    let short = rt.submit("naps", 2).await.unwrap().id; // done within the grace period
    let long = rt.submit("naps", 200).await.unwrap().id; // still running when it ends
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();

    let stages = async |run| {
        let list = rt.store().list(ListQuery::new().parent(run).oldest_first()).await.unwrap();
        list.runs.iter().map(|c| (c.agent.clone(), c.state, c.attempt)).collect::<Vec<_>>()
    };
    let last_reason = async |run| rt.store().history(run).await.unwrap().pop().unwrap().reason;
    assert_eq!(rt.store().get(short).await.unwrap().unwrap().state, RunState::WaitingExternal);
    assert_eq!(
        stages(short).await,
        [
            ("naps.0.sleep".to_owned(), RunState::Succeeded, 1),
            ("naps.1.nap".to_owned(), RunState::Queued, 0)
        ],
        "the next stage is not started once the runtime is stopping"
    );
    assert_eq!(rt.store().get(long).await.unwrap().unwrap().state, RunState::FailedTransient);
    assert_eq!(last_reason(long).await, "released at shutdown");
    assert_eq!(stages(long).await, [("naps.0.sleep".to_owned(), RunState::FailedTransient, 0)]);
    let stage = rt.store().list(ListQuery::new().parent(long)).await.unwrap().runs[0].id;
    assert_eq!(last_reason(stage).await, "released at shutdown");

    let rt = runtime();
    rt.run_until_idle().await.unwrap();
    for (run, secs) in [(short, 2), (long, 200)] {
        let done = rt.store().get(run).await.unwrap().unwrap();
        assert_eq!((done.state, done.output), (RunState::Succeeded, Some(json!(secs))));
    }
    assert_eq!(nap.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn fan_out_never_exceeds_its_concurrency() {
    let slow = Gauged::new("slow", |n| n * 2);
    let items = step("items", |_, n: u32| Ok(Outcome::Done((0..n).collect::<Vec<u32>>())));
    let pipeline = Pipeline::new("many").then(items).fan_out(slow.clone(), 8);
    let harness = Harness::new(|rt| rt.workers(32).pipeline(pipeline));
    let report = harness.run("many", 100).await;
    report.assert_state(RunState::Succeeded);
    let output: Vec<u32> = report.output();
    assert_eq!(output, (0..100).map(|n| n * 2).collect::<Vec<_>>(), "outputs in item order");
    assert_eq!(slow.gauge.max(), 8, "never more than 8 items at once, and 8 were used");
}

#[tokio::test(start_paused = true)]
async fn fan_in_policies_decide_on_failed_items() {
    let items = || step("items", |_, n: u32| Ok(Outcome::Done((0..n).collect::<Vec<u32>>())));
    // Items divisible by 4 fail permanently: 3 of 10 (0, 4, 8).
    let check = || {
        step("check", |_, n: u32| {
            if n.is_multiple_of(4) {
                Err(AgentError::permanent(format!("{n} is not allowed")))
            } else {
                Ok(Outcome::Done(n))
            }
        })
    };
    let lenient =
        Pipeline::new("lenient").then(items()).fan_out_with(check(), 4, FanIn::AtLeast(7));
    let strict = Pipeline::new("strict").then(items()).fan_out(check(), 4);
    let fraction =
        Pipeline::new("fraction").then(items()).fan_out_with(check(), 4, FanIn::Fraction(0.7));
    let harness = Harness::new(|rt| rt.pipeline(lenient).pipeline(strict).pipeline(fraction));

    let report = harness.run("lenient", 10).await;
    report.assert_state(RunState::Succeeded);
    assert_eq!(report.output::<Vec<u32>>(), [1, 2, 3, 5, 6, 7, 9]);
    let notes = harness.runtime().store().notes(report.run.id).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .text
            .starts_with("stage 1: 3 item(s) failed or are held for review and were left out: "),
        "{}",
        notes[0].text
    );

    let report = harness.run("strict", 10).await;
    report.assert_state(RunState::FailedPermanent);
    assert_eq!(
        report.run.last_error.unwrap().message,
        "stage 1 (`strict.1.check`): 7 of 10 items succeeded; all must succeed"
    );

    harness.run("fraction", 10).await.assert_state(RunState::Succeeded); // 7 of 10 ≥ 70%
    harness.run("fraction", 5).await.assert_state(RunState::FailedPermanent); // 3 of 5 < 70%
}

/// Items held for review: a lenient fan-in leaves them out and goes on, `All` waits for them,
/// on real time with concurrent workers (the wake-up of a pipeline whose last item went to
/// review while it was looking at its stage must not be lost, nor loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_held_for_review_are_left_out_by_a_lenient_fan_in_and_awaited_by_all() {
    let items = || step("items", |_, n: u32| Ok(Outcome::Done((0..n).collect::<Vec<u32>>())));
    let check = || {
        step("check", |_, n: u32| match n {
            0 => Ok(Outcome::Review(format!("{n} needs a person"))),
            n => Ok(Outcome::Done(n)),
        })
    };
    let lenient =
        Pipeline::new("lenient").then(items()).fan_out_with(check(), 4, FanIn::Fraction(0.5));
    let strict = Pipeline::new("strict").then(items()).fan_out(check(), 4);
    let rt = Runtime::builder()
        .store(steadfast::store::MemoryStore::new())
        .workers(4)
        .pipeline(lenient)
        .pipeline(strict)
        .build()
        .unwrap();
    let mut lenient_runs = Vec::new();
    for n in 1..=20 {
        lenient_runs.push(rt.submit("lenient", n + 1).await.unwrap().id);
    }
    let strict_run = rt.submit("strict", 5).await.unwrap().id;
    // A lost wake-up would leave a pipeline run to the backstop timer (a minute later), which
    // records "re-checking its stages": the history says whether that happened, whatever the
    // clock did. The timeout only turns a hang (a wake-up loop) into a failure.
    tokio::time::timeout(Duration::from_secs(300), rt.run_until_idle())
        .await
        .expect("run_until_idle returns: no wake-up loop")
        .unwrap();
    for id in lenient_runs.iter().chain([&strict_run]) {
        let history = rt.store().history(*id).await.unwrap();
        assert!(
            history.iter().all(|h| h.reason != "re-checking its stages"),
            "pipeline run {id} was found by the backstop timer, not woken: {history:?}"
        );
    }
    for (n, id) in (2..).zip(lenient_runs) {
        let run = rt.store().get(id).await.unwrap().unwrap();
        assert_eq!(
            run.state,
            RunState::Succeeded,
            "lenient run of {n} items: {:?}",
            run.last_error
        );
        let output: Vec<u32> = serde_json::from_value(run.output.unwrap()).unwrap();
        assert_eq!(output, (1..n).collect::<Vec<u32>>(), "item 0 was left out");
    }
    let strict = rt.store().get(strict_run).await.unwrap().unwrap();
    assert_eq!(strict.state, RunState::WaitingExternal, "`All` waits for the held item");
}

#[tokio::test(start_paused = true)]
async fn a_stage_held_for_review_holds_the_pipeline_until_approved() {
    let draft = step("draft", |_, topic: String| Ok(Outcome::Done(format!("post about {topic}"))));
    let approve = step("approve", |ctx, post: String| match ctx.review_note() {
        Some(note) => Ok(Outcome::Done(format!("{post} ({note})"))),
        None => Ok(Outcome::Review("a human must read it first".into())),
    });
    let publish = step("publish", |_, post: String| Ok(Outcome::Done(post.len() as u32)));
    let publish_calls = publish.calls.clone();
    let pipeline = Pipeline::new("blog").then(draft).then(approve).then(publish);
    let harness = Harness::new(|rt| rt.pipeline(pipeline));

    let report = harness.run("blog", "rust").await;
    report.assert_state(RunState::WaitingExternal);
    let children = harness
        .runtime()
        .store()
        .list(ListQuery::new().parent(report.run.id).oldest_first())
        .await
        .unwrap()
        .runs;
    assert_eq!(
        children.iter().map(|c| c.state).collect::<Vec<_>>(),
        [RunState::Succeeded, RunState::NeedsReview]
    );
    assert_eq!(publish_calls.load(Ordering::SeqCst), 0, "nothing after the held stage ran");

    harness
        .runtime()
        .approve(children[1].id, Actor::Operator("ada".into()), Some("ok by ada"))
        .await
        .unwrap();
    let report = harness.settle(report.run.id).await;
    report.assert_state(RunState::Succeeded);
    assert_eq!(report.output::<u32>(), "post about rust (ok by ada)".len() as u32);
}

#[tokio::test(start_paused = true)]
async fn a_failed_stage_fails_the_pipeline_with_its_reason() {
    let first = step("first", |_, n: u32| Ok(Outcome::Done(n)));
    let broken = step("broken", |_, _: u32| -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::permanent("bad input"))
    });
    let never = step("never", |_, n: u32| Ok(Outcome::Done(n)));
    let never_calls = never.calls.clone();
    let harness =
        Harness::new(|rt| rt.pipeline(Pipeline::new("p").then(first).then(broken).then(never)));
    let report = harness.run("p", 1).await;
    report.assert_state(RunState::FailedPermanent);
    let message = report.run.last_error.clone().unwrap().message;
    assert!(message.starts_with("stage 1 (`p.1.broken`, run "), "{message}");
    assert!(message.ends_with("failed: permanent fault: bad input"), "{message}");
    assert_eq!(never_calls.load(Ordering::SeqCst), 0);
    assert_eq!(json!(report.path().last().unwrap()), json!("failed_permanent"));
}

/// Issue 16, defect 7: replaying a pipeline run that failed on a dead stage replays that
/// stage too, and the pipeline goes on from there (the completed stage is not run again).
#[tokio::test(start_paused = true)]
async fn replaying_a_failed_pipeline_replays_its_dead_stage_and_goes_on() {
    let first = step("first", |_, n: u32| Ok(Outcome::Done(n + 1)));
    let first_calls = first.calls.clone();
    let broken = steadfast::testing::inject(
        step("broken", |_, n: u32| Ok(Outcome::Done(n * 10))),
        Fault::Permanent,
        1,
    );
    let harness = Harness::new(|rt| rt.pipeline(Pipeline::new("p").then(first).then(broken)));
    let report = harness.run("p", 1).await;
    report.assert_state(RunState::FailedPermanent);
    let rt = harness.runtime();
    let replayed = rt.replay(report.run.id, Actor::Operator("ada".into()), false).await.unwrap();
    assert_eq!(replayed.state, RunState::Queued);
    let report = harness.settle(report.run.id).await;
    report.assert_state(RunState::Succeeded);
    assert_eq!(report.output::<u32>(), 20);
    assert_eq!(first_calls.load(Ordering::SeqCst), 1, "the completed stage did not run again");
    let stages = rt.store().list(ListQuery::new().parent(report.run.id)).await.unwrap().runs;
    let dead = stages.iter().find(|s| s.stage == Some(1)).unwrap();
    let history = rt.store().history(dead.id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.reason.contains(&format!("with its pipeline run {}", report.run.id))),
        "the stage's history says why it was replayed: {history:#?}"
    );
}

/// Replaying the whole dead letter queue replays a dead pipeline run and its dead stage once
/// each: the stage's own dead letter is reported as replayed with its pipeline, not refused.
#[tokio::test(start_paused = true)]
async fn bulk_replay_replays_a_dead_pipeline_and_its_stage_once() {
    let first = step("first", |_, n: u32| Ok(Outcome::Done(n + 1)));
    let broken = steadfast::testing::inject(
        step("broken", |_, n: u32| Ok(Outcome::Done(n * 10))),
        Fault::Permanent,
        1,
    );
    let harness = Harness::new(|rt| rt.pipeline(Pipeline::new("p").then(first).then(broken)));
    let report = harness.run("p", 1).await;
    report.assert_state(RunState::FailedPermanent);
    let rt = harness.runtime();
    let dead = rt.store().dead_letters(None, 100).await.unwrap();
    assert_eq!(dead.len(), 2, "the pipeline run and its stage are dead letters: {dead:#?}");

    let replayed =
        rt.replay_dead_letters(None, Actor::Operator("ada".into()), false).await.unwrap();
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|r| r.replayed && r.error.is_none()), "{replayed:#?}");
    assert_eq!(replayed[0].id, report.run.id);
    assert_eq!(replayed[1].with_pipeline, Some(report.run.id));
    let report = harness.settle(report.run.id).await;
    report.assert_state(RunState::Succeeded);
    assert_eq!(report.output::<u32>(), 20);
    assert!(rt.store().dead_letters(None, 100).await.unwrap().is_empty());

    let again = rt.replay_dead_letters(Some("p"), Actor::Operator("ada".into()), false).await;
    assert_eq!(again.unwrap(), Vec::new(), "nothing left to replay");
}

/// A booking step that can be undone; `charge` fails with a logic fault.
#[derive(Clone)]
struct Booking {
    name: &'static str,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    logic_fault: bool,
    undo_fails: bool,
}

#[async_trait]
impl Agent for Booking {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&self, _ctx: &mut Context, trip: String) -> Result<Outcome<String>, AgentError> {
        if self.logic_fault {
            return Err(AgentError::logic("card declined"));
        }
        self.log.lock().unwrap().push(format!("book {}", self.name));
        Ok(Outcome::Done(format!("{trip}+{}", self.name)))
    }
    async fn compensate(
        &self,
        _ctx: &Context,
        _input: &String,
        output: &String,
    ) -> Result<(), AgentError> {
        if self.undo_fails {
            return Err(AgentError::transient(format!(
                "cannot cancel {}: its API is down",
                self.name
            )));
        }
        self.log.lock().unwrap().push(format!("cancel {} ({output})", self.name));
        Ok(())
    }
}

fn trip(undo_hotel_fails: bool) -> (Pipeline<String, String>, Arc<std::sync::Mutex<Vec<String>>>) {
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let booking =
        |name, logic_fault, undo_fails| Booking { name, log: log.clone(), logic_fault, undo_fails };
    let pipeline = Pipeline::new("trip")
        .then(booking("flight", false, false))
        .then(booking("hotel", false, undo_hotel_fails))
        .then(booking("charge", true, false));
    (pipeline, log)
}

#[tokio::test(start_paused = true)]
async fn a_logic_fault_compensates_earlier_stages_in_reverse_once() {
    let (pipeline, log) = trip(false);
    let harness = Harness::new(|rt| rt.pipeline(pipeline));
    let report = harness.run("trip", "rome").await;
    report.assert_state(RunState::NeedsReview);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "book flight",
            "book hotel",
            "cancel hotel (rome+flight+hotel)",
            "cancel flight (rome+flight)"
        ]
    );
    let reason = report.history.last().unwrap().reason.clone();
    assert_eq!(
        reason,
        "logic fault in stage 2 (`trip.2.charge`): logic fault: card declined; compensated stages 1, 0"
    );

    // Looking again (an operator approving the pipeline run) repeats no compensation.
    harness.runtime().approve(report.run.id, Actor::Operator("ada".into()), None).await.unwrap();
    harness.settle(report.run.id).await.assert_state(RunState::NeedsReview);
    assert_eq!(log.lock().unwrap().len(), 4, "compensations are journaled");
}

#[tokio::test(start_paused = true)]
async fn a_failing_compensation_escalates_with_both_errors() {
    let (pipeline, log) = trip(true);
    let harness = Harness::new(|rt| rt.pipeline(pipeline));
    let report = harness.run("trip", "oslo").await;
    report.assert_state(RunState::NeedsReview);
    let reason = report.history.last().unwrap().reason.clone();
    assert!(reason.starts_with("logic fault in stage 2 (`trip.2.charge`): logic fault: card declined; then compensating stage 1 (`trip.1.hotel`, run "), "{reason}");
    assert!(reason.ends_with("failed: cannot cancel hotel: its API is down"), "{reason}");
    assert_eq!(
        *log.lock().unwrap(),
        ["book flight", "book hotel"],
        "the flight is not cancelled past the failure"
    );
}

mod crash {
    //! SIGKILL a worker process running 30 four-stage pipelines (one a fan-out), 20 times;
    //! after a last worker drains the queue, every pipeline succeeded with the right output,
    //! and no stage run that had completed ever ran again (every call is appended, with its
    //! run and attempt, to a file the parent owns).

    use std::collections::HashMap;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use async_trait::async_trait;
    use steadfast::pipeline::Pipeline;
    use steadfast::prelude::*;
    use steadfast::store::{Durability, ListQuery, SledStoreOptions};

    const CHILD_ENV: &str = "STEADFAST_PIPELINE_CHILD";
    const RUNS: u32 = 120;
    const KILLS: usize = 20;

    /// Appends "<run> <attempt>" to the receiver, then does its work, saying on stdout when it
    /// starts and when its agent is done (for the parent to tell where each kill landed).
    struct Logged<I, O> {
        name: &'static str,
        receiver: PathBuf,
        f: fn(I) -> O,
    }

    #[async_trait]
    impl<I, O> Agent for Logged<I, O>
    where
        I: Data,
        O: Data,
    {
        type Input = I;
        type Output = O;
        fn name(&self) -> &str {
            self.name
        }
        async fn run(&self, ctx: &mut Context, input: I) -> Result<Outcome<O>, AgentError> {
            println!("@@ start {}", ctx.run_id());
            let mut file = OpenOptions::new().create(true).append(true).open(&self.receiver)?;
            file.write_all(format!("{} {}\n", ctx.run_id(), ctx.attempt()).as_bytes())?;
            tokio::time::sleep(Duration::from_millis(3)).await;
            println!("@@ done {}", ctx.run_id());
            Ok(Outcome::Done((self.f)(input)))
        }
    }

    fn pipeline(receiver: &Path) -> Pipeline<u32, u32> {
        let r = receiver.to_owned();
        Pipeline::new("crashy")
            .then(Logged { name: "spread", receiver: r.clone(), f: |n: u32| vec![n, n + 1, n + 2] })
            .fan_out(Logged { name: "square", receiver: r.clone(), f: |n: u32| n * n }, 4)
            .then(Logged {
                name: "sum",
                receiver: r.clone(),
                f: |v: Vec<u32>| v.iter().sum::<u32>(),
            })
            .then(Logged { name: "halve", receiver: r, f: |n: u32| n / 2 })
    }

    fn expected(n: u32) -> u32 {
        (n * n + (n + 1) * (n + 1) + (n + 2) * (n + 2)) / 2
    }

    #[ignore = "a worker process that another test starts"]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_crash_child() {
        let Ok(dir) = std::env::var(CHILD_ENV) else { return };
        let dir = PathBuf::from(dir);
        let options = SledStoreOptions::default().durability(Durability::Flush);
        let store = SledStore::open_with(dir.join("db"), options).unwrap();
        let rt = Runtime::builder()
            .store(store)
            .workers(4)
            .lease(Duration::from_millis(600))
            .pipeline(pipeline(&dir.join("receiver.log")))
            .build()
            .unwrap();
        for n in 0..RUNS {
            rt.submit("crashy", n).await.unwrap();
        }
        rt.run_until_idle().await.unwrap();
        println!("@@ idle");
    }

    #[test]
    fn sigkilled_pipelines_resume_at_their_stage() {
        if std::env::var(CHILD_ENV).is_ok() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(0x919e);
        let (mut progressed, mut stage_mid_run) = (0, 0);
        for _ in 0..KILLS {
            // From the worker's first stage on: the kill falls in its work, not its start-up.
            let after = Duration::from_millis(rng.u64(10..120));
            let said = super::common::kill_after_line(
                "crash::pipeline_crash_child",
                CHILD_ENV,
                dir.path(),
                "@@ start ",
                after,
            );
            let of = |what: &str| -> std::collections::HashSet<&str> {
                said.iter().filter_map(|l| l.strip_prefix(what)).collect()
            };
            let (started, done) = (of("@@ start "), of("@@ done "));
            progressed += usize::from(!done.is_empty());
            stage_mid_run += usize::from(started.difference(&done).next().is_some());
        }
        super::common::drain("crash::pipeline_crash_child", CHILD_ENV, dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = SledStore::open(dir.path().join("db")).unwrap();
            let runs = store.list(ListQuery::new().limit(10_000)).await.unwrap().runs;
            let pipelines: Vec<_> = runs.iter().filter(|r| r.agent == "crashy").collect();
            assert_eq!(pipelines.len(), RUNS as usize);
            for run in &pipelines {
                assert_eq!(run.state, RunState::Succeeded, "pipeline {}", run.id);
                let n: u32 = serde_json::from_value(run.input.clone()).unwrap();
                assert_eq!(run.output, Some(serde_json::json!(expected(n))), "pipeline {}", run.id);
            }
            let stages: Vec<_> = runs.iter().filter(|r| r.parent.is_some()).collect();
            assert_eq!(
                stages.len(),
                RUNS as usize * 6,
                "one child per stage, three for the fan-out"
            );
            let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap();
            let mut calls: HashMap<String, Vec<u32>> = HashMap::new();
            for line in log.lines() {
                let (run, attempt) = line.split_once(' ').expect("an untorn line");
                calls.entry(run.to_owned()).or_default().push(attempt.parse().unwrap());
            }
            let (mut reruns, mut after_done) = (0, 0);
            for stage in &stages {
                assert_eq!(stage.state, RunState::Succeeded);
                let attempts = &calls[&stage.id.to_string()];
                after_done += attempts.iter().filter(|a| **a > stage.attempt).count();
                reruns += attempts.len() - 1;
            }
            eprintln!(
                "{KILLS} kills ({progressed} with progress, {stage_mid_run} with a stage mid-run), \
                 {RUNS} pipelines x 6 stage runs: {reruns} re-runs of unfinished stages, \
                 {after_done} of finished ones"
            );
            assert_eq!(after_done, 0, "a stage ran again after it had completed");
            assert!(
                progressed * 10 >= KILLS * 9,
                "only {progressed} of {KILLS} cycles made progress"
            );
            assert!(
                stage_mid_run * 2 >= KILLS,
                "only {stage_mid_run} of {KILLS} kills hit a stage mid-run"
            );
            assert!(reruns > 0, "no kill cut a stage off: the kills missed the work");
        });
    }
}
