//! Helpers for the tests that run a worker in a child process (this test binary, re-run with
//! an environment variable that makes one `#[test]` act as the worker) and kill it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .envs(vars.iter().copied())
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Starts a worker and SIGKILLs it (`Child::kill` on Unix) after `after`.
pub(crate) fn kill_after(test: &str, env: &str, dir: &Path, after: Duration) {
    let mut child = spawn_worker(test, env, dir);
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the worker");
    child.wait().unwrap();
}

/// Starts a worker and lets it drain the queue: it must exit successfully, having printed
/// `@@ idle`, within two minutes.
pub(crate) fn drain(test: &str, env: &str, dir: &Path) {
    drain_with(test, env, dir, &[]);
}

/// [`drain`] with more environment variables.
pub(crate) fn drain_with(test: &str, env: &str, dir: &Path, vars: &[(&str, &str)]) {
    let mut child = spawn_worker_with(test, env, dir, vars);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the draining worker did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
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
