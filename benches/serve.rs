//! The API under load while the workers work (`cargo bench --bench serve`): 20,000 no-op runs
//! submitted, then worked off by 4 workers on sled (`Fsync`) with and without 32 API clients
//! listing runs, showing runs and approving runs held for review, over real HTTP on loopback.
//! Prints the workers' throughput both ways and the API's requests/s and p50/p99 per call, and
//! checks that nothing failed and nothing was lost (every run succeeded, every approval is in
//! its run's history).
//!
//! The server requires a token, as it would on any address but loopback. The clients run in a
//! second process (this binary again, `client URL`), so that they do not share the server's
//! runtime; `cargo bench --bench serve -- in-process` runs them on the server's runtime
//! instead, as earlier figures did.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use steadfast::ops::{self, OpsConfig};
use steadfast::prelude::*;
use steadfast::reqwest;
use steadfast::store::ListQuery;

const RUNS: u64 = 20_000;
const HELD: u64 = 2_000;
const CLIENTS: usize = 32;

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

/// Held for review until approved; then done.
struct Held;

#[async_trait]
impl Agent for Held {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "held"
    }
    async fn run(&self, ctx: &mut Context, n: u64) -> Result<Outcome<u64>, AgentError> {
        Ok(match ctx.review_note() {
            Some(_) => Outcome::Done(n),
            None => Outcome::Review("a person must decide".into()),
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The token the bench's server requires.
const TOKEN: &str = "a-bench-token-of-more-than-32-bytes-0123456789";

/// `CLIENTS` API clients listing, showing and approving (the `held` runs, each once) until
/// `stop`; each call's latencies in ms.
async fn load(
    url: String,
    held: Vec<RunId>,
    stop: Arc<AtomicBool>,
) -> Vec<(&'static str, Vec<f64>)> {
    let held = Arc::new(std::sync::Mutex::new(held));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, held, stop) = (url.clone(), held.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut times: Vec<(&'static str, f64)> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let started = Instant::now();
                    let request = match (c + i) % 3 {
                        0 => ("list", client.get(format!("{url}/api/v1/runs?limit=50"))),
                        1 => {
                            let id = held.lock().unwrap().last().copied();
                            let Some(id) = id else { continue };
                            ("show", client.get(format!("{url}/api/v1/runs/{id}")))
                        }
                        _ => {
                            let id = held.lock().unwrap().pop();
                            let Some(id) = id else { continue };
                            let body = serde_json::json!({"note": "approved under load"});
                            let approve = format!("{url}/api/v1/review/{id}/approve");
                            ("approve", client.post(approve).json(&body))
                        }
                    };
                    let (what, request) = request;
                    let response =
                        request.bearer_auth(TOKEN).send().await.expect("the API answers");
                    assert_eq!(response.status().as_u16(), 200, "{what}");
                    let _ = response.bytes().await.unwrap();
                    times.push((what, started.elapsed().as_secs_f64() * 1000.0));
                }
                times
            })
        })
        .collect();
    let mut by_call: Vec<(&'static str, Vec<f64>)> =
        vec![("list", Vec::new()), ("show", Vec::new()), ("approve", Vec::new())];
    for client in clients {
        for (what, ms) in client.await.unwrap() {
            by_call.iter_mut().find(|(w, _)| *w == what).unwrap().1.push(ms);
        }
    }
    by_call
}

/// The clients' process (`client URL`): the held runs' ids on the first line of its input,
/// load until its input ends, then each call's latencies as JSON on its output.
fn client(url: String) {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let held: Vec<RunId> = line.split_whitespace().map(|id| id.parse().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::read_to_string(std::io::stdin());
        stopper.store(true, Ordering::Relaxed);
    });
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let by_call = runtime.block_on(load(url, held, stop));
    println!("{}", serde_json::to_string(&by_call).unwrap());
}

/// Works off `RUNS` no-op runs (and `HELD` runs into review) with or without API load;
/// returns the workers' runs/s and, with load, each call's latencies in ms.
async fn round(
    root: &std::path::Path,
    with_api: bool,
    in_process: bool,
) -> (f64, Vec<(&'static str, Vec<f64>)>) {
    let dir = root.join(if with_api { "with-api" } else { "without-api" });
    let _ = std::fs::remove_dir_all(&dir);
    let store = SledStore::open(dir.join("db")).unwrap();
    let rt = Arc::new(
        Runtime::builder().store(store).workers(4).register(Noop).register(Held).build().unwrap(),
    );
    for n in 0..HELD {
        rt.submit("held", n).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    for n in 0..RUNS {
        rt.submit("noop", n).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = OpsConfig::default().token(ops::Token::new(TOKEN).unwrap());
    let app = ops::router(rt.clone(), config);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let held: Vec<RunId> = rt
        .store()
        .list(ListQuery::new().state(RunState::NeedsReview).limit(HELD as usize))
        .await
        .unwrap()
        .runs
        .iter()
        .map(|r| r.id)
        .collect();
    let started = Instant::now();
    let by_call = if !with_api {
        rt.run_until_idle().await.unwrap();
        vec![("list", Vec::new()), ("show", Vec::new()), ("approve", Vec::new())]
    } else if in_process {
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(load(url.clone(), held, stop.clone()));
        rt.run_until_idle().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap()
    } else {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["client", &url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the clients' process");
        let mut stdin = child.stdin.take().unwrap();
        let ids: Vec<String> = held.iter().map(ToString::to_string).collect();
        use std::io::Write as _;
        writeln!(stdin, "{}", ids.join(" ")).unwrap();
        stdin.flush().unwrap();
        rt.run_until_idle().await.unwrap();
        drop(stdin); // the clients stop at the end of their input
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "the clients' process failed");
        let times: Vec<(String, Vec<f64>)> = serde_json::from_slice(&output.stdout).unwrap();
        ["list", "show", "approve"]
            .into_iter()
            .map(|w| (w, times.iter().find(|(n, _)| n == w).map(|(_, t)| t.clone()).unwrap()))
            .collect()
    };
    let took = started.elapsed();
    // Nothing lost: every no-op run succeeded; every approval answered 200 is in a history.
    let counts = rt.store().counts_by_agent().await.unwrap();
    assert_eq!(counts["noop"].get(RunState::Succeeded), RUNS, "every run succeeded");
    rt.run_until_idle().await.unwrap(); // the approved held runs
    let approved = by_call[2].1.len() as u64;
    assert_eq!(counts["held"].total(), HELD);
    let done = rt.store().counts_by_agent().await.unwrap()["held"].get(RunState::Succeeded);
    assert_eq!(done, approved, "every approval answered 200 moved its run");
    server.abort();
    (RUNS as f64 / took.as_secs_f64(), by_call)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "client") {
        return client(args[at + 1].clone());
    }
    let in_process = args.iter().any(|a| a == "in-process");
    let root = std::env::var_os("STEADFAST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-bench"));
    std::fs::create_dir_all(&root).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "rounds")
        .nth(1)
        .map_or(2, |n| n.parse().expect("rounds N"));
    for round_no in 1..=rounds {
        let (alone, _) = runtime.block_on(round(&root, false, in_process));
        let (loaded, calls) = runtime.block_on(round(&root, true, in_process));
        println!("round {round_no}: {RUNS} no-op runs worked off, 4 workers, sled Fsync");
        println!("  without API load: {alone:.0} runs/s");
        let clients = if in_process { "on the server's runtime" } else { "in another process" };
        println!("  with {CLIENTS} API clients ({clients}, with the token): {loaded:.0} runs/s");
        let calls_total: usize = calls.iter().map(|(_, ms)| ms.len()).sum();
        let seconds = RUNS as f64 / loaded;
        println!(
            "  API: {calls_total} calls while the workers worked ({:.0} requests/s), none failed",
            calls_total as f64 / seconds
        );
        for (what, mut ms) in calls {
            ms.sort_by(f64::total_cmp);
            println!(
                "  {what:>7}: {} calls, p50 {:.2} ms, p99 {:.2} ms",
                ms.len(),
                percentile(&ms, 0.5),
                percentile(&ms, 0.99)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
