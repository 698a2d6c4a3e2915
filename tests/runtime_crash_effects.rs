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
