//! Effects across real crashes, through the public API, with worker processes killed by
//! SIGKILL (`abort` in the reproductions) and a receiver outside them (a file the parent owns,
//! one appended line per delivery: the logical effect and the key it came with).
//!
//! - The soak: plain runs and three-stage pipelines (an inline stage, a fan-out, an inline
//!   stage), every agent making journaled effects. The parent kills the worker a while after
//!   it reports it is working, `STEADFAST_SOAK_KILLS` times (20 by default; `.ci/run` runs
//!   200), and checks each cycle made progress and that kills landed on work in flight; after
//!   a final drain: lost 0, unexpected 0, illegal histories 0, every logical effect delivered
//!   under exactly one key (re-deliveries only under that key, at most one per agent running
//!   at a kill).
//! - An effect cut off by a crash, for each kind of run (plain, a stage run inline by its
//!   pipeline, a fan-out item, a compensation step): redone under the same key.
//! - A poison pill: an agent that kills its worker on every attempt ends in the dead letters.
//!
//! The workers are this test binary, re-run with an environment variable set.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod common;

use async_trait::async_trait;
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;
use steadfast::store::{Durability, SledStoreOptions, Store};

const CHILD_ENV: &str = "STEADFAST_EFFECTS_CHILD";
/// Workers in the soak: at most this many agents run at a kill.
const WORKERS: usize = 2;

use common::deliver;

/// Makes logical effect `logical` once through `ctx.effect`, telling the parent (stdout) when
/// it starts and when it is journaled.
async fn effect(
    ctx: &mut Context,
    receiver: &Path,
    name: &str,
    logical: String,
) -> Result<(), AgentError> {
    println!("@@ start {logical}");
    let what = logical.clone();
    ctx.effect(name, |key| async move { deliver(receiver, &what, &key) }).await?;
    println!("@@ journaled {logical}");
    Ok(())
}

/// A plain run: two effects.
struct Send(PathBuf);

#[async_trait]
impl Agent for Send {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "send"
    }
    async fn run(&self, ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        for name in ["first", "second"] {
            effect(ctx, &self.0, name, format!("plain/{n}/{name}")).await?;
        }
        Ok(Outcome::Done(n))
    }
}

/// Stage 0 of `mix` (inline): `n` → `[10n, 10n+1]`.
struct Fetch(PathBuf);

#[async_trait]
impl Agent for Fetch {
    type Input = u32;
    type Output = Vec<u32>;
    fn name(&self) -> &str {
        "fetch"
    }
    async fn run(&self, ctx: &mut Context, n: u32) -> Result<Outcome<Vec<u32>>, AgentError> {
        effect(ctx, &self.0, "fetch", format!("mix/{n}/fetch")).await?;
        Ok(Outcome::Done(vec![10 * n, 10 * n + 1]))
    }
}

/// Stage 1 of `mix`: one run per item, through the queue.
struct Item(PathBuf);

#[async_trait]
impl Agent for Item {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "item"
    }
    async fn run(&self, ctx: &mut Context, m: u32) -> Result<Outcome<u32>, AgentError> {
        effect(ctx, &self.0, "item", format!("mix/{}/item/{}", m / 10, m % 10)).await?;
        Ok(Outcome::Done(m))
    }
}

/// Stage 2 of `mix` (inline).
struct Sum(PathBuf);

#[async_trait]
impl Agent for Sum {
    type Input = Vec<u32>;
    type Output = u32;
    fn name(&self) -> &str {
        "sum"
    }
    async fn run(&self, ctx: &mut Context, items: Vec<u32>) -> Result<Outcome<u32>, AgentError> {
        let n = items.first().copied().unwrap_or_default() / 10;
        effect(ctx, &self.0, "sum", format!("mix/{n}/sum")).await?;
        Ok(Outcome::Done(items.iter().sum()))
    }
}

/// The soak's runtime on `dir` (the parent submits through it, the workers work with it).
fn soak_runtime(dir: &Path) -> Runtime {
    let receiver = dir.join("receiver.log");
    // `Flush` survives a killed process, which is what this test does to it.
    let options = SledStoreOptions::default().durability(Durability::Flush);
    let store = SledStore::open_with(dir.join("db"), options).expect("the database opens");
    Runtime::builder()
        .store(store)
        .workers(WORKERS)
        .lease(Duration::from_millis(500))
        .register(Send(receiver.clone()))
        .pipeline(
            Pipeline::new("mix")
                .then(Fetch(receiver.clone()))
                .fan_out(Item(receiver.clone()), 4)
                .then(Sum(receiver)),
        )
        .build()
        .unwrap()
}

#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = soak_runtime(Path::new(&dir));
    println!("@@ working");
    rt.run_until_idle().await.unwrap();
    println!("@@ idle");
}

/// The logical effects the soak's work must deliver, `plain` runs and `mix` pipelines.
fn soak_effects(plain: u32, mix: u32) -> HashSet<String> {
    let mut all = HashSet::new();
    for n in 0..plain {
        all.extend(["first", "second"].map(|e| format!("plain/{n}/{e}")));
    }
    for n in 0..mix {
        all.extend(["fetch", "item/0", "item/1", "sum"].map(|e| format!("mix/{n}/{e}")));
    }
    all
}

#[test]
fn sigkill_soak_delivers_every_logical_effect_under_one_key() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills: usize =
        std::env::var("STEADFAST_SOAK_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    // Enough work that the workers are busy at every kill.
    let (plain, mix) = (150 * kills as u32, 30 * kills as u32);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let rt = soak_runtime(dir.path());
        let plain = futures_util::future::try_join_all((0..plain).map(|n| rt.submit("send", n)));
        let mix = futures_util::future::try_join_all((0..mix).map(|n| rt.submit("mix", n)));
        let (plain, mix) = futures_util::future::try_join(plain, mix).await.unwrap();
        assert!(plain.iter().chain(&mix).all(|run| run.created));
    });

    let receiver = dir.path().join("receiver.log");
    let delivered = |from: usize| -> Vec<String> {
        let log = std::fs::read_to_string(&receiver).unwrap_or_default();
        log.lines().skip(from).map(|l| l.rsplit_once(' ').unwrap().0.to_owned()).collect()
    };
    let mut rng = fastrand::Rng::with_seed(0x50a4);
    let (mut progressed, mut effect_in_flight, mut agent_mid_run) = (0, 0, 0);
    let started = std::time::Instant::now();
    for _ in 0..kills {
        let before = delivered(0).len();
        // From the worker's first agent on: the kill falls in its work, not in its start-up.
        let lines = common::kill_after_line(
            "effects_child",
            CHILD_ENV,
            dir.path(),
            "@@ start ",
            Duration::from_millis(rng.u64(30..200)),
        );
        let this_cycle: HashSet<String> = delivered(before).into_iter().collect();
        let said = |what: &str| -> HashSet<String> {
            lines.iter().filter_map(|l| l.strip_prefix(what)).map(str::to_owned).collect()
        };
        let (starts, journaled) = (said("@@ start "), said("@@ journaled "));
        progressed += usize::from(!journaled.is_empty());
        effect_in_flight += usize::from(this_cycle.difference(&journaled).next().is_some());
        agent_mid_run += usize::from(starts.difference(&journaled).next().is_some());
    }
    common::drain("effects_child", CHILD_ENV, dir.path());
    let soak_time = started.elapsed();

    let expected = soak_effects(plain, mix);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let runs = common::all_runs(store.as_ref()).await;
        let top: Vec<_> = runs.iter().filter(|r| r.parent.is_none()).collect();
        let lost = plain as usize + mix as usize - top.len().min(plain as usize + mix as usize);
        let unexpected = top.iter().filter(|r| !matches!(r.agent.as_str(), "send" | "mix")).count();
        let mut illegal = 0;
        for run in &runs {
            illegal += usize::from(!common::history_is_legal(store.as_ref(), run).await);
        }
        let not_done: Vec<_> = runs
            .iter()
            .filter(|r| r.state != RunState::Succeeded)
            .map(|r| (r.id, r.agent.clone(), r.state, r.last_error.clone()))
            .collect();

        let log = std::fs::read_to_string(&receiver).unwrap();
        let mut keys: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in log.lines() {
            let (logical, key) = line.rsplit_once(' ').expect("a whole receiver line");
            keys.entry(logical).or_default().push(key);
        }
        let mut under_two_keys = Vec::new();
        let mut redeliveries = 0;
        for (logical, got) in &keys {
            if got.iter().any(|k| k != &got[0]) {
                under_two_keys.push(format!("{logical}: {got:?}"));
            }
            let run: RunId = got[0].split('/').next().unwrap().parse().unwrap();
            if store.get(run).await.unwrap().is_none() {
                under_two_keys.push(format!("{logical}: made by run {run}, which is gone"));
            }
            redeliveries += got.len() - 1;
        }
        let delivered: HashSet<String> = keys.keys().map(|k| (*k).to_owned()).collect();
        let missing: Vec<_> = expected.difference(&delivered).take(5).collect();
        let foreign: Vec<_> = delivered.difference(&expected).take(5).collect();
        eprintln!(
            "{kills} kills in {soak_time:.1?}: {} runs ({plain} plain, {mix} pipelines and their \
             stages); cycles with progress {progressed}, with an effect in flight at the kill \
             {effect_in_flight}, with an agent mid-run {agent_mid_run}; lost {lost}, unexpected \
             {unexpected}, illegal histories {illegal}, not succeeded {}; {} logical effects, {} \
             deliveries, {redeliveries} re-deliveries (same key), under another key {}",
            runs.len(),
            not_done.len(),
            delivered.len(),
            log.lines().count(),
            under_two_keys.len(),
        );
        assert_eq!((lost, unexpected, illegal), (0, 0, 0), "lost, unexpected, illegal histories");
        assert!(
            not_done.is_empty(),
            "runs not succeeded: {:?}",
            &not_done[..not_done.len().min(5)]
        );
        assert!(under_two_keys.is_empty(), "{under_two_keys:?}");
        assert!(
            missing.is_empty() && foreign.is_empty(),
            "missing {missing:?}, foreign {foreign:?}"
        );
        assert!(redeliveries <= kills * WORKERS, "{redeliveries} re-deliveries for {kills} kills");
        // The kills hit work, not a worker starting up or idle.
        assert!(progressed * 10 >= kills * 9, "only {progressed} of {kills} cycles made progress");
        assert!(
            agent_mid_run * 2 >= kills,
            "only {agent_mid_run} of {kills} kills hit an agent mid-run"
        );
        assert!(effect_in_flight > 0, "no kill landed between an effect and its journal entry");
    });
}

// ---- An effect cut off by a crash, for every kind of run ---------------------------------

const ABORT_ENV: &str = "STEADFAST_ABORT_CHILD";

/// Delivers logical effect `what` to the receiver file under `key` (one line), then, if the
/// logical effect contains the `STEADFAST_ABORT_ON` text, kills its own process at once:
/// after the receiver has it, before the journal does.
fn deliver_or_die(receiver: &Path, what: &str, key: &str) -> Result<(), AgentError> {
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

#[ignore = "a worker process that another test starts"]
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

#[ignore = "a worker process that another test starts"]
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
    // The workers run first, so the first worker's submission starts its run itself (the
    // creation and the claim one commit): a crash must count against that claim too.
    let rt = Arc::new(rt);
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = rt.submit("poison", 7).await.unwrap().id;
    while rt.store().get(id).await.unwrap().unwrap().state != RunState::FailedPermanent {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
    println!("@@ idle");
}

/// An agent that kills its worker on every attempt, under a supervisor that restarts the
/// worker each time: the first crash makes the run watched (it cannot be blamed yet: it might
/// only have been claimed ahead), and after `max_crashes` (3) watched crashes it is
/// dead-lettered with that cause, and the next worker goes idle instead of crashing forever.
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
    assert_eq!(crashes, 1 + 3, "crashes before the run was dead-lettered");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = SledStore::open(dir.path().join("db")).unwrap();
        let letters = store.dead_letters(None, 10).await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let why = letters[0].error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(why.contains("crashed its worker 3 times") && why.contains("poison"), "{why}");
        assert_eq!(letters[0].attempt, 4, "each crash was an attempt");
    });
}
