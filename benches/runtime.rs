//! Runtime throughput and latency on sled in `Fsync` mode (`cargo bench --bench runtime`):
//! - runs/s of a no-op agent and of an agent with three journaled effects, 4 workers, 5,000
//!   runs submitted first and then worked off;
//! - p50/p99 from submit to succeeded of a no-op run, one at a time and with 64 in flight;
//! - the same for 4-stage pipelines.
//!
//! Sections: `throughput`, `latency`, `pipelines` (`cargo bench --bench runtime -- latency`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use steadfast::prelude::*;
use tokio::sync::oneshot;

struct Noop;

#[async_trait]
impl Agent for Noop {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "noop"
    }
    async fn run(&self, _ctx: &mut Context, n: u64) -> Result<Outcome<u64>, AgentError> {
        Ok(Outcome::Done(n))
    }
}

struct ThreeEffects;

#[async_trait]
impl Agent for ThreeEffects {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "three"
    }
    async fn run(&self, ctx: &mut Context, n: u64) -> Result<Outcome<u64>, AgentError> {
        for step in ["fetch", "transform", "send"] {
            ctx.effect(step, |_key| async move { Ok(n) }).await?;
        }
        Ok(Outcome::Done(n))
    }
}

type Waiters = Arc<Mutex<HashMap<RunId, oneshot::Sender<()>>>>;

struct Pass;

#[async_trait]
impl Agent for Pass {
    type Input = Vec<u64>;
    type Output = Vec<u64>;
    fn name(&self) -> &str {
        "pass"
    }
    async fn run(&self, _ctx: &mut Context, v: Vec<u64>) -> Result<Outcome<Vec<u64>>, AgentError> {
        Ok(Outcome::Done(v))
    }
}

struct Spread;

#[async_trait]
impl Agent for Spread {
    type Input = u64;
    type Output = Vec<u64>;
    fn name(&self) -> &str {
        "spread"
    }
    async fn run(&self, _ctx: &mut Context, n: u64) -> Result<Outcome<Vec<u64>>, AgentError> {
        Ok(Outcome::Done((0..8).map(|i| n + i).collect()))
    }
}

/// The 4-stage no-op pipeline (`fan_out`: its second stage fans out over 8 items).
fn pipelines(builder: steadfast::runtime::RuntimeBuilder) -> steadfast::runtime::RuntimeBuilder {
    use steadfast::pipeline::Pipeline;
    let four = Pipeline::new("four").then(Spread).then(Pass).then(Pass).then(Pass);
    let fan = Pipeline::new("fan").then(Spread).fan_out(Noop, 8).then(Pass).then(Pass);
    builder.pipeline(four).pipeline(fan)
}

fn runtime(path: &Path, waiters: Option<Waiters>) -> (Runtime, SledStore) {
    let store = SledStore::open(path).unwrap();
    let mut builder = pipelines(
        Runtime::builder().store(store.clone()).workers(4).register(Noop).register(ThreeEffects),
    );
    if let Some(waiters) = waiters {
        builder = builder.on_success(move |run| {
            if let Some(tell) = waiters.lock().unwrap().remove(&run.id) {
                let _ = tell.send(());
            }
        });
    }
    (builder.build().unwrap(), store)
}

async fn throughput(path: &Path, agent: &str, runs: u64) -> (f64, f64, f64) {
    let (rt, store) = runtime(path, None);
    let start = Instant::now();
    for n in 0..runs {
        rt.submit(agent, n).await.unwrap();
    }
    let submitted = start.elapsed();
    let start = Instant::now();
    let syncs = store.syncs();
    rt.run_until_idle().await.unwrap();
    let worked = start.elapsed();
    let syncs = store.syncs() - syncs;
    assert_eq!(rt.store().counts().await.unwrap().get(RunState::Succeeded), runs);
    (
        runs as f64 / submitted.as_secs_f64(),
        runs as f64 / worked.as_secs_f64(),
        runs as f64 / syncs as f64,
    )
}

/// Submit-to-succeeded latencies with `in_flight` submitters, each submitting and waiting.
async fn latency(path: &Path, in_flight: usize, per_submitter: usize) -> (f64, f64) {
    let (p50, p99, _) = latency_of(path, "noop", in_flight, per_submitter).await;
    (p50, p99)
}

/// Latencies of `agent` runs (p50, p99 in ms) and the rate they completed at.
async fn latency_of(
    path: &Path,
    agent: &'static str,
    in_flight: usize,
    per_submitter: usize,
) -> (f64, f64, f64) {
    let waiters: Waiters = Arc::default();
    let (rt, _) = runtime(path, Some(waiters.clone()));
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    let tasks: Vec<_> = (0..in_flight)
        .map(|s| {
            let (rt, waiters) = (rt.clone(), waiters.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_submitter);
                for i in 0..per_submitter {
                    let n = (s * per_submitter + i) as u64;
                    let (tell, done) = oneshot::channel();
                    let start = Instant::now();
                    // Register before submitting would need the id: register right after; the
                    // hook fires only after a claim, which needs at least one more store write.
                    let id = rt.submit(agent, n).await.unwrap().id;
                    waiters.lock().unwrap().insert(id, tell);
                    if rt.store().get(id).await.unwrap().unwrap().state == RunState::Succeeded {
                        waiters.lock().unwrap().remove(&id);
                    } else {
                        done.await.unwrap();
                    }
                    samples.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                samples
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), rate)
}

fn main() {
    let root = std::env::var_os("STEADFAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runtime-bench"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // `cargo bench --bench runtime -- SECTION...` runs only the named sections.
    let chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |section: &str| chosen.is_empty() || chosen.iter().any(|c| c == section);
    rt.block_on(async {
        if wants("throughput") {
            println!("| agent | submitted/s | worked off, runs/s | runs per sync |");
            println!("|---|---:|---:|---:|");
            let (s, w, r) = throughput(&root.join("noop"), "noop", 5_000).await;
            println!("| no-op | {s:.0} | {w:.0} | {r:.2} |");
            let (s, w, r) = throughput(&root.join("three"), "three", 5_000).await;
            println!("| 3 journaled effects | {s:.0} | {w:.0} | {r:.2} |");
            println!();
        }
        if wants("latency") {
            let (p50, p99) = latency(&root.join("lat1"), 1, 2_000).await;
            println!("no-op submit -> succeeded, 1 in flight:  p50 {p50:.3} ms, p99 {p99:.3} ms");
            let (p50, p99) = latency(&root.join("lat64"), 64, 80).await;
            println!("no-op submit -> succeeded, 64 in flight: p50 {p50:.3} ms, p99 {p99:.3} ms");
            println!();
        }
        if wants("pipelines") {
            println!(
                "| pipeline (4 stages, no-op) | runs/s, 64 in flight | p50, 64 in flight | lone p50 | lone p99 |"
            );
            println!("|---|---:|---:|---:|---:|");
            for (agent, label) in [("four", "sequential"), ("fan", "stage 2 fans out over 8")] {
                let (_, _, rate) =
                    latency_of(&root.join(format!("{agent}64")), agent, 64, 10).await;
                let (p50_64, _, _) =
                    latency_of(&root.join(format!("{agent}64b")), agent, 64, 10).await;
                let (p50, p99, _) =
                    latency_of(&root.join(format!("{agent}1")), agent, 1, 200).await;
                println!("| {label} | {rate:.0} | {p50_64:.1} ms | {p50:.2} ms | {p99:.2} ms |");
            }
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}
