//! The `steadfast` binary, driven as a user drives it: `steadfast demo` (twice, and killed
//! mid-run), and the operator commands against the database the demo leaves.

#[path = "../../../tests/common/peers.rs"]
mod peers;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

/// Runs `steadfast args...` with `--data dir` and returns its output.
fn steadfast(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(dir)
        .env_remove("STEADFAST_DATA")
        .env("NO_COLOR", "1")
        .output()
        .expect("run steadfast")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

mod attack;
mod browser;
mod dashboard;
mod demo;
mod driver;
mod metrics;
mod newcomer;
mod notify;
mod openapi;
mod operate;
mod ops;
mod serve;
mod shop;
mod transfer;
