//! Many worker processes on one PostgreSQL queue, through the public API, with real kills.
//!
//! - Four worker processes (this test binary, re-run with an environment variable set) work
//!   `STEADFAST_PG_RUNS` runs (2,000 by default; `.ci/run` runs 20,000), each making two
//!   journaled effects into a receiver file outside them. The parent SIGKILLs one at random
//!   moments `STEADFAST_PG_KILLS` times (10 by default; CI 50) and starts it again; every
//!   fifth cycle it freezes one instead (SIGSTOP past its leases, then SIGCONT), so that a late
//!   worker comes back to runs that were recovered and claimed by others: its outcomes must be
//!   refused by the fence; and every seventh PostgreSQL drops every connection of every worker
//!   (`pg_terminate_backend`, as in a restart or a failover): the workers reconnect. Then: lost 0, every run succeeded, legal histories, no move out of
//!   `processing` but by the lease's holder (or the timer), every effect delivered, only under
//!   its own key, re-deliveries only for effects in flight at a kill or a freeze.
//! - The listening connection killed (`pg_terminate_backend`): work submitted afterwards in
//!   another process still reaches an idle worker (the polling fallback, then the reconnect).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/postgres.rs"]
mod postgres;

use async_trait::async_trait;
use steadfast::prelude::*;
use steadfast::store::{Actor, PostgresOptions, PostgresStore, Store};

const CHILD_ENV: &str = "STEADFAST_PG_CHILD";
/// Worker processes, and workers (concurrent attempts) in each.
const PROCESSES: usize = 4;
const WORKERS: usize = 4;
const LEASE: Duration = Duration::from_millis(1_000);

use common::deliver;

/// Two journaled effects per run.
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
            let (receiver, logical) = (self.0.clone(), format!("{n}/{name}"));
            ctx.effect(name, |key| async move { deliver(&receiver, &logical, &key) }).await?;
        }
        Ok(Outcome::Done(n))
    }
}

async fn runtime(url: &str, schema: &str, dir: &Path) -> Runtime {
    let options = PostgresOptions::default().schema(schema);
    let store = PostgresStore::connect_with(url, options).await.expect("PostgreSQL");
    Runtime::builder()
        .store(store)
        .workers(WORKERS)
        .lease(LEASE)
        .register(Send(dir.join("receiver.log")))
        .build()
        .unwrap()
}

#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_worker() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let _ = steadfast::logging::init_or("warn");
    let (url, schema) = (std::env::var("PG_URL").unwrap(), std::env::var("PG_SCHEMA").unwrap());
    let rt = runtime(&url, &schema, Path::new(&dir)).await;
    println!("@@ working");
    // Until the parent says the work is done: a store fault (PostgreSQL restarted, its
    // connections killed) is waited out, as `steadfast work --until-signal` does.
    rt.run_until_signal().await.unwrap();
}

/// A worker process; its standard error goes to `dir/worker-<n>.stderr` (appended).
fn spawn(dir: &Path, n: usize, url: &str, schema: &str) -> Child {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("worker-{n}.stderr")))
        .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pg_worker", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env("PG_URL", url)
        .env("PG_SCHEMA", schema)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {name}");
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

#[test]
fn four_worker_processes_share_one_queue_through_kills_and_freezes() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (runs, kills) =
        (env_number("STEADFAST_PG_RUNS", 2_000), env_number("STEADFAST_PG_KILLS", 10));
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let Some((url, options)) = tokio.block_on(postgres::fresh()) else { return };
    let schema = options.schema.clone().unwrap();
    tokio.block_on(async {
        let rt = runtime(&url, &schema, dir.path()).await;
        for chunk in (0..runs as u32).collect::<Vec<_>>().chunks(500) {
            let submitted =
                futures_util::future::try_join_all(chunk.iter().map(|n| rt.submit("send", *n)))
                    .await
                    .unwrap();
            assert!(submitted.iter().all(|r| r.created));
        }
    });

    let started = Instant::now();
    let mut children: Vec<Child> =
        (0..PROCESSES).map(|n| spawn(dir.path(), n, &url, &schema)).collect();
    let mut rng = fastrand::Rng::with_seed(0x9e57);
    let (mut killed, mut frozen, mut cut) = (0, 0, 0);
    for cycle in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.u64(100..400)));
        let n = rng.usize(..PROCESSES);
        if cycle % 7 == 3 {
            // PostgreSQL drops every connection of every worker, as on a restart or a
            // failover: the workers reconnect.
            let sql = format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'steadfast:{schema}'"
            );
            tokio.block_on(postgres::admin(&url, &sql));
            cut += 1;
        } else if cycle % 5 == 4 {
            // A late worker: frozen past its leases, then back.
            signal(&children[n], "-STOP");
            std::thread::sleep(LEASE * 3);
            signal(&children[n], "-CONT");
            frozen += 1;
        } else {
            let _ = children[n].kill();
            let _ = children[n].wait();
            children[n] = spawn(dir.path(), n, &url, &schema);
            killed += 1;
        }
    }
    // Then the workers drain the queue; once every run succeeded, they are stopped.
    let deadline = Instant::now() + Duration::from_secs(600);
    tokio.block_on(async {
        let store = PostgresStore::connect_with(&url, options.clone()).await.unwrap();
        loop {
            let counts = store.counts().await.unwrap();
            if counts.get(RunState::Succeeded) == runs as u64 {
                break;
            }
            for child in &mut children {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("a worker ended by itself: {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "the workers did not finish within 600 s: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for child in &mut children {
        signal(child, "-TERM");
        let status = child.wait().unwrap();
        assert!(status.success(), "a worker failed to stop: {status}");
    }
    let took = started.elapsed();

    tokio.block_on(async {
        let store = PostgresStore::connect_with(&url, options.clone()).await.unwrap();
        let all = common::all_runs(&store).await;
        let lost = runs.saturating_sub(all.len());
        let unexpected = all.iter().filter(|r| r.agent != "send").count();
        let not_done = all.iter().filter(|r| r.state != RunState::Succeeded).count();
        let (mut illegal, mut unfenced) = (0, 0);
        for run in &all {
            illegal += usize::from(!common::history_is_legal(&store, run).await);
            // Every move out of `processing` is the last claimer's, or the timer's.
            let mut holder = None;
            for entry in store.history(run.id).await.unwrap() {
                if entry.to == RunState::Processing {
                    holder = Some(entry.actor.clone());
                } else if entry.from == Some(RunState::Processing)
                    && entry.actor != Actor::Timer
                    && Some(&entry.actor) != holder.as_ref()
                {
                    unfenced += 1;
                }
            }
        }
        let log = std::fs::read_to_string(dir.path().join("receiver.log")).unwrap();
        let mut keys: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in log.lines() {
            let (logical, key) = line.rsplit_once(' ').expect("a whole receiver line");
            keys.entry(logical).or_default().push(key);
        }
        let under_two_keys = keys.values().filter(|got| got.iter().any(|k| k != &got[0])).count();
        let redeliveries: usize = keys.values().map(|got| got.len() - 1).sum();
        let missing = (0..runs)
            .flat_map(|n| ["first", "second"].map(|e| format!("{n}/{e}")))
            .filter(|l| !keys.contains_key(l.as_str()))
            .count();
        let refusals: usize = (0..PROCESSES)
            .map(|n| {
                let err = std::fs::read_to_string(dir.path().join(format!("worker-{n}.stderr")))
                    .unwrap_or_default();
                err.matches("lease lost").count() + err.matches("moved under this attempt").count()
            })
            .sum();
        eprintln!(
            "{PROCESSES} processes, {runs} runs in {took:.1?}: {killed} kills, {frozen} freezes, \
             {cut} times every connection cut; \
             lost {lost}, unexpected {unexpected}, not succeeded {not_done}, illegal histories \
             {illegal}, moves out of processing by a stale holder {unfenced}; fencing refusals \
             {refusals}; {} deliveries, {redeliveries} re-deliveries, under two keys \
             {under_two_keys}, missing {missing}",
            log.lines().count()
        );
        assert_eq!((lost, unexpected, not_done, illegal, unfenced), (0, 0, 0, 0, 0));
        assert_eq!((under_two_keys, missing), (0, 0));
        assert!(
            redeliveries <= (killed + frozen + cut * PROCESSES) * WORKERS,
            "{redeliveries} re-deliveries for {killed} kills and {frozen} freezes"
        );
        if frozen >= 2 {
            assert!(refusals > 0, "no late worker's outcome was refused by the fence");
        }
    });
}

#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_idle_worker() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (url, schema) = (std::env::var("PG_URL").unwrap(), std::env::var("PG_SCHEMA").unwrap());
    let rt = runtime(&url, &schema, Path::new(&dir)).await;
    println!("@@ working");
    rt.run_until_signal().await.unwrap();
}

/// A worker waiting for work in one process is woken by a run submitted in another (through
/// `NOTIFY`), also after its listening connection was killed.
#[test]
fn a_worker_wakes_for_work_submitted_elsewhere_even_after_its_listener_dies() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let Some((url, options)) = tokio.block_on(postgres::fresh()) else { return };
    let schema = options.schema.clone().unwrap();
    let mut worker = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pg_idle_worker", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .env("PG_URL", &url)
        .env("PG_SCHEMA", &schema)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outcome = tokio.block_on(async {
        let store = PostgresStore::connect_with(&url, options.clone()).await.unwrap();
        let rt = Runtime::builder()
            .store(store.clone())
            .register(Send(dir.path().join("receiver.log")))
            .build()
            .unwrap();
        let succeeded = |run: RunId| {
            let store = store.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let state = store.get(run).await.unwrap().expect("submitted").state;
                    if state == RunState::Succeeded {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "run {run} was not worked within 30 s");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // Once the worker listens (its wake-up connection is named `steadfast` and LISTENs).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = Instant::now();
        let run = rt.submit("send", 1).await.unwrap().id;
        let first = succeeded(run).await - t0;
        // Kill the connections listening on this test's channel (the worker's and ours);
        // once they are gone, submit again: the polling fallback finds it.
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = 'LISTEN \"steadfast_work_{schema}\"'"
        );
        let killed = postgres::admin(&url, &sql).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t1 = Instant::now();
        let run = rt.submit("send", 2).await.unwrap().id;
        let second = succeeded(run).await - t1;
        // And once the listener is back, through it again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t2 = Instant::now();
        let run = rt.submit("send", 3).await.unwrap().id;
        let third = succeeded(run).await - t2;
        (first, killed, second, third)
    });
    let _ = worker.kill();
    let _ = worker.wait();
    let (first, killed, second, third) = outcome;
    eprintln!(
        "woken in {first:?}; listening connections killed: {killed}; then woken in {second:?} \
         (the fallback), and in {third:?} once the listener was back"
    );
    assert!(killed >= 2, "the listening connections were not there to kill: {killed}");
}
