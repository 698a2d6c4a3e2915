//! Store throughput and latency, printed as a table (`cargo bench --bench store`).
//!
//! Measures, on the disk under the target directory (or `STEADFAST_BENCH_DIR`):
//! - the raw limit: `fdatasync`s per second of a plain file, one thread;
//! - durable moves per second with 1, 16 and 128 concurrent movers, with group commit and with
//!   every move syncing on its own, in `Fsync` mode;
//! - the p50/p99 latency of one move by a lone mover;
//! - claims per second.
//!
//! Each mover owns one run and moves it `queued → failed_permanent → queued → ...` (an
//! operator's cancel and replay: two legal moves, each one transaction over the record, its
//! history entry and its indexes, made durable before the call returns).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use steadfast::store::{Claim, Durability, NewRun, SledStore, SledStoreOptions, Store, Transition};
use steadfast::{RunId, RunState};

const WINDOW: Duration = Duration::from_secs(3);

fn main() {
    let root = std::env::var_os("STEADFAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-bench"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // `cargo bench --bench store -- profile`: only the CPU path (128 movers, no sync), for perf.
    if std::env::args().any(|a| a == "profile") {
        let written = || {
            let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        };
        let before = written();
        let periodic = Durability::Periodic(Duration::from_millis(500));
        let t = runtime.block_on(moves_per_second_with(&root.join("profile"), 128, periodic, true));
        let bytes = written() - before;
        println!(
            "128 movers, no sync: {:.0} moves/s, {:.0} bytes written per move",
            t.rate,
            bytes as f64 / (t.rate * WINDOW.as_secs_f64())
        );
        return;
    }

    // `cargo bench --bench store -- lone`: 1,000 durable moves of one run and nothing else, to
    // count the system calls of one commit (`strace -f -c -e trace=pwrite64,sync_file_range,
    // fdatasync,fsync`).
    if std::env::args().any(|a| a == "lone") {
        let moves = 1000;
        let store = open(&root.join("lone"), true);
        let run = runtime.block_on(seed(&store, 1))[0];
        let start = Instant::now();
        runtime.block_on(async {
            let mut state = RunState::Queued;
            for _ in 0..moves {
                state = step(&store, run, state).await;
            }
        });
        println!("{moves} durable moves in {:.3} s", start.elapsed().as_secs_f64());
        return;
    }

    // `cargo bench --bench store -- counts N`: N runs created (256 at a time, `Periodic`), then
    // the time `counts()` takes (what a metrics scrape or a dashboard reads every few seconds).
    if let Some(n) = std::env::args().skip_while(|a| a != "counts").nth(1) {
        let n: usize = n.parse().expect("counts N");
        let periodic = Durability::Periodic(Duration::from_millis(500));
        let store = Arc::new(open_with(&root.join("counts"), periodic, true));
        let start = Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..256)
                .map(|t| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in (t..n).step_by(256) {
                            let new =
                                NewRun::new(format!("agent{}", i % 7), format!("r{i}"), json!(i));
                            store.create(new).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        let created = start.elapsed();
        let mut samples = Vec::new();
        runtime.block_on(async {
            for _ in 0..50 {
                let t = Instant::now();
                let counts = store.counts().await.unwrap();
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(counts.total(), n as u64);
            }
        });
        samples.sort_by(f64::total_cmp);
        println!(
            "{n} runs (created in {:.1} s): counts() p50 {:.3} ms, max {:.3} ms",
            created.as_secs_f64(),
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
        return;
    }

    // `cargo bench --bench store -- prune N`: N succeeded runs (created, claimed, succeeded,
    // 256 movers, `Periodic`), the database's size, a prune of all of them, the size after,
    // after reopening, and after N more runs (does freed space get reused?).
    if let Some(n) = std::env::args().skip_while(|a| a != "prune").nth(1) {
        let n: usize = n.parse().expect("prune N");
        runtime.block_on(prune_space(&root.join("prune"), n));
        return;
    }

    let fsyncs = raw_fsyncs_per_second(&root.join("raw"));
    println!("raw fdatasync, 1 thread: {fsyncs:.0}/s ({:.3} ms each)", 1000.0 / fsyncs);
    println!();
    println!(
        "| movers | group commit moves/s | syncs/s | moves per sync | one sync per move, moves/s | speed-up | no sync (Periodic), moves/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut n = 0;
    for movers in [1, 16, 128] {
        n += 1;
        let grouped = runtime.block_on(moves_per_second(&root.join(format!("g{n}")), movers, true));
        let solo = runtime.block_on(moves_per_second(&root.join(format!("s{n}")), movers, false));
        let periodic = Durability::Periodic(Duration::from_millis(500));
        let unsynced = runtime.block_on(moves_per_second_with(
            &root.join(format!("p{n}")),
            movers,
            periodic,
            true,
        ));
        println!(
            "| {movers} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1}x | {:.0} |",
            grouped.rate,
            grouped.syncs_per_second,
            grouped.rate / grouped.syncs_per_second.max(1.0),
            solo.rate,
            grouped.rate / solo.rate,
            unsynced.rate
        );
    }
    let (p50, p99) = runtime.block_on(lone_mover_latency(&root.join("latency")));
    println!();
    println!(
        "lone mover, one durable move: p50 {:.3} ms, p99 {:.3} ms (p50 = {:.2}x one raw fdatasync)",
        p50,
        p99,
        p50 / (1000.0 / fsyncs)
    );
    let claims = runtime.block_on(claims_per_second(&root.join("claims")));
    println!("claims (batches of 32, 2 claimers, Fsync): {claims:.0} runs/s");
    let _ = std::fs::remove_dir_all(&root);
}

fn raw_fsyncs_per_second(path: &Path) -> f64 {
    let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < WINDOW {
        file.write_all(&[0u8; 128]).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn open(path: &Path, group_commit: bool) -> SledStore {
    open_with(path, Durability::Fsync, group_commit)
}

fn open_with(path: &Path, durability: Durability, group_commit: bool) -> SledStore {
    let options = SledStoreOptions::default().durability(durability).group_commit(group_commit);
    SledStore::open_with(path, options).unwrap()
}

async fn seed(store: &SledStore, runs: usize) -> Vec<RunId> {
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        ids.push(
            store
                .create(NewRun::new("bench", format!("r{i}"), json!({ "i": i })))
                .await
                .unwrap()
                .run
                .id,
        );
    }
    ids
}

/// One move of `run`, away from `state`; returns the new state.
async fn step(store: &SledStore, run: RunId, state: RunState) -> RunState {
    let to = if state == RunState::Queued { RunState::FailedPermanent } else { RunState::Queued };
    store.transition(Transition::new(run, state, to)).await.unwrap().unwrap();
    to
}

struct Throughput {
    rate: f64,
    syncs_per_second: f64,
}

async fn moves_per_second(path: &Path, movers: usize, group_commit: bool) -> Throughput {
    moves_per_second_with(path, movers, Durability::Fsync, group_commit).await
}

async fn moves_per_second_with(
    path: &Path,
    movers: usize,
    durability: Durability,
    group_commit: bool,
) -> Throughput {
    let store = Arc::new(open_with(path, durability, group_commit));
    let ids = seed(&store, movers).await;
    let syncs_before = store.syncs();
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|run| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut state = RunState::Queued;
                let mut moves = 0u64;
                while start.elapsed() < WINDOW {
                    state = step(&store, run, state).await;
                    moves += 1;
                }
                moves
            })
        })
        .collect();
    let mut moves = 0;
    for task in tasks {
        moves += task.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    Throughput {
        rate: moves as f64 / secs,
        syncs_per_second: (store.syncs() - syncs_before) as f64 / secs,
    }
}

async fn lone_mover_latency(path: &Path) -> (f64, f64) {
    let store = open(path, true);
    let run = seed(&store, 1).await[0];
    let mut state = RunState::Queued;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        let t = Instant::now();
        state = step(&store, run, state).await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99))
}

async fn claims_per_second(path: &Path) -> f64 {
    const RUNS: usize = 20_000;
    let store = Arc::new(open(path, true));
    seed(&store, RUNS).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut claimed = 0;
                loop {
                    let got = store
                        .claim(Claim::new(format!("w{w}"), 32, Duration::from_secs(60)))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return claimed;
                    }
                    claimed += got.len();
                }
            })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        claimed += task.await.unwrap();
    }
    assert_eq!(claimed, RUNS);
    RUNS as f64 / start.elapsed().as_secs_f64()
}

/// N runs to `succeeded` with an output, by 256 movers; returns how long it took.
async fn succeeded_runs(store: &Arc<SledStore>, n: usize, round: usize) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..256)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(256) {
                    let new = NewRun::new(
                        format!("agent{}", i % 7),
                        format!("r{round}-{i}"),
                        json!({"item": i, "title": "a title of some forty characters, roughly"}),
                    );
                    let id = store.create(new).await.unwrap().run.id;
                    let claim = Claim::new(format!("w{t}"), 1, Duration::from_secs(60)).runs([id]);
                    let token = store.claim(claim).await.unwrap()[0].lease.as_ref().unwrap().token;
                    let done = Transition::new(id, RunState::Processing, RunState::Succeeded)
                        .fenced(token)
                        .output(json!({"label": "news", "score": i % 100}));
                    store.transition(done).await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { dir_size(&e.path()) } else { meta.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn prune_space(path: &Path, n: usize) {
    let periodic = Durability::Periodic(Duration::from_millis(500));
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let store = Arc::new(open_with(path, periodic, true));
    let took = succeeded_runs(&store, n, 0).await;
    store.flush().await.unwrap();
    let full = dir_size(path);
    println!("{n} succeeded runs in {:.1} s: {:.1} MiB", took.as_secs_f64(), mib(full));
    let start = Instant::now();
    let pruned =
        store.prune(steadfast::store::Retention::older_than(Duration::ZERO)).await.unwrap();
    let took = start.elapsed();
    assert_eq!(pruned.runs, n as u64);
    store.flush().await.unwrap();
    println!(
        "prune of {n}: {:.1} s ({:.0} runs/s), size after {:.1} MiB",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        mib(dir_size(path))
    );
    drop(store);
    std::thread::sleep(Duration::from_millis(500)); // sled's threads let go of the lock
    let store = Arc::new(open_with(path, periodic, true));
    println!(
        "reopened: {:.1} MiB, {} runs",
        mib(dir_size(path)),
        store.counts().await.unwrap().total()
    );
    let took = succeeded_runs(&store, n, 1).await;
    store.flush().await.unwrap();
    println!(
        "{n} more succeeded runs in {:.1} s: {:.1} MiB (before the prune: {:.1} MiB)",
        took.as_secs_f64(),
        mib(dir_size(path)),
        mib(full)
    );
}
