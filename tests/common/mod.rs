//! Helpers for the tests that run a worker in a child process (this test binary, re-run with
//! an environment variable that makes one `#[test]` act as the worker) and kill it.
// Each test binary that includes this module uses some of its helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Appends `<logical> <key>` to a receiver outside the workers (a file): one write of one
/// short line, atomic with `O_APPEND`, so that processes killed at any moment leave whole
/// lines.
pub(crate) fn deliver(
    receiver: &Path,
    logical: &str,
    key: &str,
) -> Result<(), steadfast::prelude::AgentError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(receiver)?;
    file.write_all(format!("{logical} {key}\n").as_bytes())?;
    Ok(())
}

/// Starts this test binary running only the test `test`, with `env` set to `dir`.
/// Its standard error goes to `dir/worker.stderr` (appended), shown if a drain fails.
pub(crate) fn spawn_worker(test: &str, env: &str, dir: &Path) -> Child {
    spawn_worker_with(test, env, dir, &[])
}

/// [`spawn_worker`] with more environment variables.
pub(crate) fn spawn_worker_with(test: &str, env: &str, dir: &Path, vars: &[(&str, &str)]) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("worker.stderr"))
        .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .envs(vars.iter().copied())
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Starts a worker and lets it drain the queue: it must exit successfully, having printed
/// `@@ idle`, within two minutes.
pub(crate) fn drain(test: &str, env: &str, dir: &Path) {
    drain_with(test, env, dir, &[]);
}

/// [`drain`] with more environment variables.
pub(crate) fn drain_with(test: &str, env: &str, dir: &Path, vars: &[(&str, &str)]) {
    let mut child = spawn_worker_with(test, env, dir, vars);
    // Read as it comes: a worker that prints more than a pipe holds would block on it.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the draining worker did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap();
    if !(status.success() && out.contains("@@ idle")) {
        // The draining worker's own report: its panic or error, not the killed ones' noise.
        let err = std::fs::read_to_string(dir.join("worker.stderr")).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the draining worker failed: {status}\n{out}\n--- its stderr (tail) ---\n{}",
            tail.join("\n")
        );
    }
}

/// Starts a worker, waits until it prints a line starting with `marker` (at most 60 s), lets
/// it work for `after`,
/// then SIGKILLs it. Returns what it printed, each line from its `@@ ` marker on.
pub(crate) fn kill_after_line(
    test: &str,
    env: &str,
    dir: &Path,
    marker: &str,
    after: Duration,
) -> Vec<String> {
    use std::io::BufRead;
    let mut child = spawn_worker(test, env, dir);
    let stdout = child.stdout.take().unwrap();
    let (tell, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("@@ ") {
                let _ = tell.send(line[at..].to_owned());
            }
        }
    });
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !said.iter().any(|l: &String| l.starts_with(marker)) {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => said.push(line),
            // A worker that finished (nothing left to do) is not killed: what it said tells.
            Err(_) if child.try_wait().unwrap().is_some() => {
                reader.join().unwrap();
                said.extend(lines.try_iter());
                return said;
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the worker did not say `{marker}` within 60 s: {said:?}");
            }
        }
    }
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the worker");
    child.wait().unwrap();
    reader.join().unwrap();
    said.extend(lines.try_iter());
    said
}

/// Every run in `store`, oldest first.
pub(crate) async fn all_runs(
    store: &dyn steadfast::store::Store,
) -> Vec<steadfast::store::RunRecord> {
    let mut runs = Vec::new();
    let mut query = steadfast::store::ListQuery::new().oldest_first().limit(1000);
    loop {
        let page = store.list(query.clone()).await.unwrap();
        runs.extend(page.runs);
        match page.next {
            Some(next) => query = query.cursor(next),
            None => return runs,
        }
    }
}

/// Whether `run`'s history is a chain of legal moves from its creation to its state, one entry
/// per move, with a lease exactly while it is processing.
pub(crate) async fn history_is_legal(
    store: &dyn steadfast::store::Store,
    run: &steadfast::store::RunRecord,
) -> bool {
    use steadfast::{RunState, StateMachine};
    let history = store.history(run.id).await.unwrap();
    history.len() == run.moves as usize
        && history.first().is_some_and(|h| h.from.is_none() && h.to == RunState::INITIAL)
        && history.windows(2).all(|p| p[1].from == Some(p[0].to) && p[0].to.can_transition(p[1].to))
        && history.last().is_some_and(|h| h.to == run.state)
        && (run.state == RunState::Processing) == run.lease.is_some()
}
