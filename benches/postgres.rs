//! `cargo bench --bench postgres [-- SECTION...]`: steadfast on the local PostgreSQL
//! (`STEADFAST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`), each
//! section in a schema of its own, dropped afterwards.
//!
//! - `commits`: PostgreSQL's own commit rate on this machine, the ceiling: one-row `INSERT`
//!   transactions from 1 and from 8 connections.
//! - `processes`: one-step no-op runs/s worked off by 1, 2 and 4 worker processes (this
//!   binary, re-run), each with 4 workers, from a queue filled beforehand.
//! - `claims`: claims/s of a batch claimer (64 at a time) on a filled queue.
//! - `latency`: a lone no-op run's submit-to-succeeded p50 and p99 (one process working).
//! - `pipeline`: the 4-stage pipeline, 64 in flight, runs/s, in one process.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;
use steadfast::store::{Claim, NewRun, PostgresOptions, PostgresStore, Store};
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

struct Pass;

#[async_trait]
impl Agent for Pass {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "pass"
    }
    async fn run(&self, _ctx: &mut Context, n: u64) -> Result<Outcome<u64>, AgentError> {
        Ok(Outcome::Done(n + 1))
    }
}

const WORKER_ENV: &str = "STEADFAST_PG_BENCH_WORKER";

fn url() -> String {
    std::env::var("STEADFAST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::default().schema(schema)
}

async fn runtime(schema: &str, waiters: Option<Waiters>) -> Runtime {
    let store = PostgresStore::connect_with(&url(), options(schema)).await.unwrap();
    let four = Pipeline::new("four").then(Pass).then(Pass).then(Pass).then(Pass);
    let mut builder = Runtime::builder().store(store).workers(4).register(Noop).pipeline(four);
    if let Some(waiters) = waiters {
        builder = builder.on_success(move |run| {
            if let Some(tell) = waiters.lock().unwrap().remove(&run.id) {
                let _ = tell.send(());
            }
        });
    }
    builder.build().unwrap()
}

type Waiters = Arc<Mutex<std::collections::HashMap<RunId, oneshot::Sender<()>>>>;

/// A worker process: connects, says `ready`, waits for a line on stdin, then works until its
/// stdin closes (a process cannot tell by itself that the others are done).
async fn worker(schema: &str) {
    let rt = runtime(schema, None).await;
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let working = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::task::spawn_blocking(|| {
        let mut rest = String::new();
        let _ = std::io::stdin().read_line(&mut rest);
    })
    .await
    .unwrap();
    rt.shutdown().await.unwrap();
    working.await.unwrap().unwrap();
}

async fn admin(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
}

fn schema(name: &str) -> String {
    format!("bench_{name}_{}", std::process::id())
}

/// `INSERT` commits per second from `connections` connections for `secs` seconds.
async fn commits(connections: usize, secs: u64) -> f64 {
    use sqlx::Connection;
    admin("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, v bigint)").await;
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = sqlx::PgConnection::connect(&url()).await.unwrap();
                let mut n = 0u64;
                while Instant::now() < stop {
                    sqlx::query("INSERT INTO bench_commits (v) VALUES ($1)")
                        .bind(n as i64)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    admin("DROP TABLE bench_commits").await;
    total as f64 / secs as f64
}

/// No-op runs/s worked off by `processes` worker processes from a queue of `runs`.
async fn processes(processes: usize, runs: u64) -> f64 {
    let schema = schema(&format!("p{processes}"));
    let rt = runtime(&schema, None).await;
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1000) {
        futures_util::future::try_join_all(chunk.iter().map(|n| rt.submit("noop", *n)))
            .await
            .unwrap();
    }
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env(WORKER_ENV, &schema)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let start = Instant::now();
    for child in &mut children {
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    // Until every run succeeded (read every 5 ms), then the workers are told to stop.
    while rt.store().counts().await.unwrap().get(RunState::Succeeded) < runs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    for child in &mut children {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    runs as f64 / took.as_secs_f64()
}

/// Claims per second, 64 at a time, from a queue of `runs`.
async fn claims(runs: u64) -> f64 {
    let schema = schema("claims");
    let store = PostgresStore::connect_with(&url(), options(&schema)).await.unwrap();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1000) {
        futures_util::future::try_join_all(
            chunk
                .iter()
                .map(|n| store.create(NewRun::new("noop", format!("k{n}"), serde_json::json!(n)))),
        )
        .await
        .unwrap();
    }
    let start = Instant::now();
    let mut claimed = 0;
    while claimed < runs as usize {
        let got = store.claim(Claim::new("bench", 64, Duration::from_secs(60))).await.unwrap();
        assert!(!got.is_empty());
        claimed += got.len();
    }
    let rate = claimed as f64 / start.elapsed().as_secs_f64();
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    rate
}

/// Submit-to-succeeded latencies (p50, p99 in ms) and the rate, `in_flight` submitters.
async fn latency(agent: &'static str, in_flight: usize, each: usize) -> (f64, f64, f64) {
    let schema = schema(&format!("lat_{agent}_{in_flight}"));
    let waiters: Waiters = Arc::default();
    let rt = runtime(&schema, Some(waiters.clone())).await;
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    let tasks: Vec<_> = (0..in_flight)
        .map(|s| {
            let (rt, waiters) = (rt.clone(), waiters.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(each);
                for i in 0..each {
                    let (tell, done) = oneshot::channel();
                    let start = Instant::now();
                    let id = rt.submit(agent, (s * each + i) as u64).await.unwrap().id;
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
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), rate)
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(schema) = std::env::var(WORKER_ENV) {
        rt.block_on(worker(&schema));
        return;
    }
    let chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |section: &str| chosen.is_empty() || chosen.iter().any(|c| c == section);
    rt.block_on(async {
        if wants("commits") {
            let one = commits(1, 5).await;
            let eight = commits(8, 5).await;
            println!(
                "PostgreSQL INSERT commits/s: 1 connection {one:.0}, 8 connections {eight:.0}"
            );
        }
        if wants("processes") {
            println!("| worker processes (4 workers each) | no-op runs/s |");
            println!("|---:|---:|");
            for n in [1, 2, 4] {
                println!("| {n} | {:.0} |", processes(n, 5_000).await);
            }
        }
        if wants("claims") {
            println!("claims/s, 64 per claim: {:.0}", claims(10_000).await);
        }
        if wants("latency") {
            let (p50, p99, _) = latency("noop", 1, 300).await;
            println!("lone no-op run, submit -> succeeded: p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        if wants("pipeline") {
            let (p50, _, rate) = latency("four", 64, 10).await;
            println!("4-stage pipeline, 64 in flight: {rate:.0} runs/s (p50 {p50:.1} ms)");
            let (p50, p99, _) = latency("four", 1, 100).await;
            println!("lone 4-stage pipeline: p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
    });
}
