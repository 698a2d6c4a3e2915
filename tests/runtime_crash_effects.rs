//! Effects across real crashes: a worker process runs 500 runs whose agent performs two
//! journaled effects each against a receiver outside the process (a file the parent owns, one
//! appended line per call, with the effect key and the attempt). The parent SIGKILLs the worker
//! at random moments, 20 times, then lets a last one drain the queue. Required:
//!
//! - every run succeeded;
//! - every (run, effect) reached the receiver, always under the same key;
//! - an effect that was journaled was never called again by a later attempt;
//! - re-deliveries (a kill between doing and journaling) are counted, and are at most one per
//!   kill.
//!
//! The worker is this test binary, re-run with `STEADFAST_EFFECTS_CHILD` set.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod common;

use async_trait::async_trait;
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;
use steadfast::store::{Durability, ListQuery, SledStoreOptions};

const CHILD_ENV: &str = "STEADFAST_EFFECTS_CHILD";
const RUNS: u32 = 500;
const KILLS: usize = 20;

/// Appends one line per effect call to the receiver file.
struct TwoEffects {
    receiver: PathBuf,
}

impl TwoEffects {
    fn deliver(&self, effect: &str, run: RunId, key: &str, attempt: u32) -> Result<(), AgentError> {
        let mut file = OpenOptions::new().create(true).append(true).open(&self.receiver)?;
        // One write of one short line: atomic with O_APPEND.
        file.write_all(format!("{effect} {run} {key} {attempt}\n").as_bytes())?;
        Ok(())
    }
}

#[async_trait]
impl Agent for TwoEffects {
    type Input = u32;
    type Output = u32;

    fn name(&self) -> &str {
        "two-effects"
    }

    async fn run(&self, ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        let (run, attempt) = (ctx.run_id(), ctx.attempt());
        for effect in ["first", "second"] {
            ctx.effect(effect, |key| async move {
                self.deliver(effect, run, &key, attempt)?;
                Ok(key)
            })
            .await?;
        }
        Ok(Outcome::Done(n))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    // `Flush` survives a killed process, which is what this test does to it.
    let options = SledStoreOptions::default().durability(Durability::Flush);
    let store =
        SledStore::open_with(dir.join("db"), options).expect("the worker opens the database");
    let rt = Runtime::builder()
        .store(store)
        // One attempt at a time, so a kill interrupts at most one effect: the bound on
        // re-deliveries below is then exactly one per kill.
        .workers(1)
        .lease(Duration::from_millis(600))
        .register(TwoEffects { receiver: dir.join("receiver.log") })
        .build()
        .unwrap();
    for n in 0..RUNS {
        rt.submit("two-effects", n).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    println!("@@ idle");
}

#[test]
fn sigkilled_workers_never_repeat_a_journaled_effect() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0xeffec7);
    for _ in 0..KILLS {
        common::kill_after(
            "effects_child",
            CHILD_ENV,
            dir.path(),
            Duration::from_millis(rng.u64(40..400)),
        );
    }
    // The last worker drains the queue (expired leases are recovered first).
    common::drain("effects_child", CHILD_ENV, dir.path());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let runs = store.list(ListQuery::new().limit(10_000)).await.unwrap().runs;
        assert_eq!(runs.len(), RUNS as usize);
        let not_done: Vec<_> = runs.iter().filter(|r| r.state != RunState::Succeeded).map(|r| (r.id, r.state)).collect();
        assert!(not_done.is_empty(), "runs not succeeded: {not_done:?}");

        let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap();
        let mut calls: HashMap<(String, String), Vec<(String, u32)>> = HashMap::new();
        for line in log.lines() {
            let [effect, run, key, attempt] = line.split(' ').collect::<Vec<_>>()[..] else {
                panic!("torn receiver line: {line:?}");
            };
            calls.entry((run.to_owned(), effect.to_owned())).or_default().push((key.to_owned(), attempt.parse().unwrap()));
        }
        let mut redeliveries = 0;
        for run in &runs {
            for effect in ["first", "second"] {
                let got = calls.get(&(run.id.to_string(), effect.to_owned())).unwrap_or_else(|| {
                    panic!("run {}: effect `{effect}` never reached the receiver", run.id)
                });
                let expected_key = format!("{}/{effect}", run.id);
                assert!(got.iter().all(|(key, _)| *key == expected_key), "run {}: keys {got:?}", run.id);
                let journaled = store.effect(run.id, effect).await.unwrap().expect("journaled");
                assert!(
                    got.iter().all(|(_, attempt)| *attempt <= journaled.attempt),
                    "run {}: `{effect}` was called again after attempt {} journaled it: {got:?}",
                    run.id,
                    journaled.attempt
                );
                redeliveries += got.len() - 1;
            }
        }
        eprintln!(
            "{KILLS} kills, {RUNS} runs x 2 effects: {} deliveries, {redeliveries} re-deliveries of an unjournaled effect",
            log.lines().count()
        );
        assert!(redeliveries <= KILLS, "{redeliveries} re-deliveries for {KILLS} kills");
    });
}

// ---- An effect cut off by a crash, for every kind of run ---------------------------------

const ABORT_ENV: &str = "STEADFAST_ABORT_CHILD";

/// Delivers logical effect `what` to the receiver file under `key` (one line), then, if the
/// logical effect contains the `STEADFAST_ABORT_ON` text, kills its own process at once:
/// after the receiver has it, before the journal does.
fn deliver_or_die(receiver: &std::path::Path, what: &str, key: &str) -> Result<(), AgentError> {
    let mut file = OpenOptions::new().create(true).append(true).open(receiver)?;
    file.write_all(format!("{what} {key}\n").as_bytes())?;
    if std::env::var("STEADFAST_ABORT_ON").is_ok_and(|on| what.contains(&on)) {
        std::process::abort();
    }
    Ok(())
}

/// Posts its input as a journaled effect; its compensation posts `undo <input>`.
struct Post(PathBuf);

#[async_trait]
impl Agent for Post {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        "post"
    }
    async fn run(&self, ctx: &mut Context, what: String) -> Result<Outcome<String>, AgentError> {
        let key = ctx
            .effect("post", |key| async move {
                deliver_or_die(&self.0, &what, &key)?;
                Ok(key)
            })
            .await?;
        Ok(Outcome::Done(key))
    }
    async fn compensate(
        &self,
        ctx: &Context,
        input: &String,
        _: &String,
    ) -> Result<(), AgentError> {
        // The compensation step is journaled by the pipeline; its key here is the stage run's.
        deliver_or_die(&self.0, &format!("undo {input}"), &ctx.effect_key("undo"))
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().backoff(Duration::from_millis(20), Duration::from_millis(100))
    }
}

/// `x` → `x/post`, no effect.
struct Prep;

#[async_trait]
impl Agent for Prep {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        "prep"
    }
    async fn run(&self, _: &mut Context, what: String) -> Result<Outcome<String>, AgentError> {
        Ok(Outcome::Done(format!("{what}/post")))
    }
}

/// `x` → `[x/0, x/1]`.
struct Split;

#[async_trait]
impl Agent for Split {
    type Input = String;
    type Output = Vec<String>;
    fn name(&self) -> &str {
        "split"
    }
    async fn run(&self, _: &mut Context, what: String) -> Result<Outcome<Vec<String>>, AgentError> {
        Ok(Outcome::Done(vec![format!("{what}/0"), format!("{what}/1")]))
    }
}

/// Always a logic fault: the saga compensates the stages before it.
struct Refuse;

#[async_trait]
impl Agent for Refuse {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        "refuse"
    }
    async fn run(&self, _: &mut Context, _: String) -> Result<Outcome<String>, AgentError> {
        Err(AgentError::logic("refused on purpose"))
    }
}

/// The kinds of run an effect can be made in: (kind, what the abort waits for, the logical
/// effects that must reach the receiver).
const KINDS: [(&str, &str, &[&str]); 4] = [
    ("plain", "plain", &["plain"]),
    ("staged", "staged/post", &["staged/post"]),
    ("fanned", "fanned/0", &["fanned/0", "fanned/1"]),
    ("saga", "undo", &["saga", "undo saga"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_child() {
    let Ok(dir) = std::env::var(ABORT_ENV) else { return };
    let dir = PathBuf::from(dir);
    let kind = std::env::var("STEADFAST_ABORT_KIND").unwrap();
    let receiver = dir.join("receiver.log");
    let options = SledStoreOptions::default().durability(Durability::Flush);
    let store =
        SledStore::open_with(dir.join("db"), options).expect("the worker opens the database");
    let rt = Runtime::builder()
        .store(store)
        .workers(2)
        .lease(Duration::from_millis(400))
        .register(Post(receiver.clone()))
        .pipeline(Pipeline::new("staged").then(Prep).then(Post(receiver.clone())))
        .pipeline(Pipeline::new("fanned").then(Split).fan_out(Post(receiver.clone()), 2))
        .pipeline(Pipeline::new("saga").then(Post(receiver.clone())).then(Refuse))
        .build()
        .unwrap();
    let agent = if kind == "plain" { "post" } else { kind.as_str() };
    rt.submit(agent, kind.clone()).await.unwrap();
    rt.run_until_idle().await.unwrap();
    println!("@@ idle");
}

/// The reproduction, for every kind of run: a worker performs an effect and dies
/// (`abort`) before journaling it; a second worker on the same database finishes the work.
/// The receiver must have seen every logical effect under one key only, the one cut off twice
/// (the crash window), and every key must name a run the store has: an effect is never made
/// under an identity a crash can undo.
#[test]
fn an_effect_cut_off_by_a_crash_is_redone_under_the_same_key_in_every_kind_of_run() {
    if std::env::var(ABORT_ENV).is_ok() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for (kind, abort_on, logical) in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let vars = [("STEADFAST_ABORT_KIND", kind), ("STEADFAST_ABORT_ON", abort_on)];
        let status =
            common::spawn_worker_with("abort_child", ABORT_ENV, dir.path(), &vars).wait().unwrap();
        assert!(!status.success(), "{kind}: the first worker was to abort: {status}");
        let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap();
        assert!(log.contains(abort_on), "{kind}: the abort did not follow the effect: {log}");
        common::drain_with("abort_child", ABORT_ENV, dir.path(), &[("STEADFAST_ABORT_KIND", kind)]);

        let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap();
        let mut keys: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in log.lines() {
            let (what, key) = line.rsplit_once(' ').expect("a receiver line");
            keys.entry(what).or_default().push(key);
        }
        let mut seen: Vec<&str> = keys.keys().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, logical, "{kind}: logical effects delivered");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        for (what, delivered) in &keys {
            let first = delivered[0];
            assert!(
                delivered.iter().all(|k| *k == first),
                "{kind}: `{what}` delivered under different keys: {delivered:?}"
            );
            // The one the abort followed was cut off; one running beside it may have been.
            if what.contains(abort_on) {
                assert_eq!(delivered.len(), 2, "{kind}: `{what}` deliveries: {delivered:?}");
            } else {
                assert!(delivered.len() <= 2, "{kind}: `{what}` deliveries: {delivered:?}");
            }
            let run: RunId = first.split('/').next().unwrap().parse().unwrap();
            let stored = runtime.block_on(store.get(run)).unwrap();
            assert!(
                stored.is_some(),
                "{kind}: `{what}` was made by run {run}, which the store lost"
            );
        }
    }
}

// ---- A poison pill ------------------------------------------------------------------------

const POISON_ENV: &str = "STEADFAST_POISON_CHILD";

/// Kills its process on every attempt, before doing anything else.
struct Poison;

#[async_trait]
impl Agent for Poison {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "poison"
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        std::process::abort();
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().backoff(Duration::from_millis(20), Duration::from_millis(100))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_child() {
    let Ok(dir) = std::env::var(POISON_ENV) else { return };
    let store =
        SledStore::open(PathBuf::from(dir).join("db")).expect("the worker opens the database");
    let rt = Runtime::builder()
        .store(store)
        .lease(Duration::from_millis(300))
        .register(Poison)
        .build()
        .unwrap();
    rt.submit("poison", 7).await.unwrap();
    rt.run_until_idle().await.unwrap();
    println!("@@ idle");
}

/// An agent that kills its worker on every attempt, under a supervisor that restarts the
/// worker each time: after `max_crashes` (3) crashes the run is dead-lettered with that cause,
/// and the next worker goes idle instead of crashing forever.
#[test]
fn a_run_that_crashes_its_worker_every_time_ends_in_the_dead_letters() {
    if std::env::var(POISON_ENV).is_ok() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut crashes = 0;
    loop {
        let mut child = common::spawn_worker("poison_child", POISON_ENV, dir.path());
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
        crashes += 1;
        assert!(crashes <= 10, "still crashing after {crashes} restarts: a crash loop");
    }
    assert_eq!(crashes, 3, "crashes before the run was dead-lettered");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = SledStore::open(dir.path().join("db")).unwrap();
        let letters = store.dead_letters(None, 10).await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let why = letters[0].error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(why.contains("crashed their worker 3 times"), "{why}");
        assert_eq!(letters[0].attempt, 3, "each crash was an attempt");
    });
}
