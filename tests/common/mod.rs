//! Helpers for the tests that run a worker in a child process (this test binary, re-run with
//! an environment variable that makes one `#[test]` act as the worker) and kill it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts this test binary running only the test `test`, with `env` set to `dir`.
pub(crate) fn spawn_worker(test: &str, env: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let mut child = spawn_worker(test, env, dir);
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
    assert!(
        status.success() && out.contains("@@ idle"),
        "the draining worker failed: {status}\n{out}"
    );
}
