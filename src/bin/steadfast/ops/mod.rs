//! The operator commands: see runs, replay them, review them, signal, cancel, annotate, and
//! the numbers (`stats`).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use steadfast::agents::{self, Classifier, Collector, Mailer, Reporter, Rules, Transport};
use steadfast::prelude::*;
use steadfast::store::{Actor, ListQuery, RunRecord};
use steadfast::view::{RunView, Stats};
use steadfast::{RuntimeError, StateMachine};

use crate::{CliError, Paths};

mod act;
mod dlq;
mod numbers;
mod output;
mod runs;

pub(crate) use self::act::{cancel, note, replay, review, signal};
pub(crate) use self::dlq::dlq;
pub(crate) use self::numbers::{graph, stats};
pub(crate) use self::output::Out;
use self::output::*;
pub(crate) use self::runs::runs;

/// `runs ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this state (queued, processing, waiting_external, succeeded,
        /// failed_transient, failed_permanent, needs_review).
        #[arg(long)]
        state: Option<RunState>,
        /// Only runs of this agent (as registered: `digest.1.classifier`).
        #[arg(long)]
        agent: Option<String>,
        /// Only runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one run: its record, input, output, history, effects, notes and stages.
    Show {
        /// The run's id.
        id: RunId,
    },
}

/// `review ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReviewCommand {
    /// List the runs held for review, with why.
    List,
    /// Approve a run: it is queued again with a fresh attempt budget.
    Approve {
        /// The run's id.
        id: RunId,
        /// A note for the run's next attempt and its history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a run: it goes to the dead letter queue.
    Reject {
        /// The run's id.
        id: RunId,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// Succeed a run with an output you provide, checked against the agent's output schema.
    Resolve {
        /// The run's id.
        id: RunId,
        /// A file with the output as JSON, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        output: PathBuf,
    },
}

/// `dlq ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List the dead letters, newest first, with why.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Replay dead letters (each reported).
    Replay {
        /// Every dead letter (required: bulk replay is deliberate).
        #[arg(long, required = true)]
        all: bool,
        /// Only those of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Replay even if the agent's input type changed.
        #[arg(long)]
        force: bool,
    },
}

/// A duration like `90s`, `15m`, `2h` or `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 2h or 7d"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: give a unit: s, m, h or d (like 90s, 15m, 2h, 7d)")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Who the operator is: `$STEADFAST_OPERATOR`, else `$USER`, else `cli`.
fn operator() -> Actor {
    let name = std::env::var("STEADFAST_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "cli".to_owned());
    Actor::Operator(name)
}

/// Opens the existing store (a read or an operation never creates one).
fn existing_store(paths: &Paths) -> Result<Arc<dyn Store>, CliError> {
    let db = paths.db();
    if !db.is_dir() {
        return Err(CliError::store(format!(
            "no steadfast database at {} (run `steadfast demo` to make one, or point --data at yours)",
            db.display()
        )));
    }
    paths.open_store()
}

/// The flagship digest as this binary knows it (the demo's stages and names), for its
/// schemas and its diagram; the CLI never runs it.
fn known_digest(paths: &Paths) -> steadfast::pipeline::Pipeline<agents::Edition, agents::Receipt> {
    let mailer = Mailer::new(
        Transport::outbox(paths.data.join("outbox")),
        "steadfast@example.com",
        ["team@example.com"],
    )
    .expect("valid built-in addresses");
    agents::digest(
        Collector::folder(paths.data.join("sample-items")),
        Classifier::rules(Rules::builtin()),
        Reporter::new(paths.data.join("reports")),
        mailer,
    )
}

/// A runtime over the store for the operator calls, with the flagship digest registered so
/// its runs get their full checks; it never runs an attempt.
fn operator_runtime(paths: &Paths) -> Result<Runtime, CliError> {
    let store = existing_store(paths)?;
    Runtime::builder()
        .shared_store(store)
        .pipeline(known_digest(paths))
        .build()
        .map_err(|e| CliError::store(e.to_string()))
}

/// A runtime error as the CLI reports it: refusals exit 1, the store 3.
fn runtime_error(error: RuntimeError) -> CliError {
    match error {
        RuntimeError::Store(store) => CliError::from_store(store),
        other => CliError::refused(other.to_string()),
    }
}

/// Reads JSON from a file or standard input (`-`).
fn read_json(path: &Path) -> Result<Value, CliError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("reading standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{} is not JSON: {e}", path.display())))
}

/// The reason of a run's last move (why it is held, why it failed).
async fn last_reason(store: &dyn Store, run: &RunRecord) -> String {
    if let Some(error) = &run.last_error
        && run.state == RunState::FailedPermanent
    {
        return error.to_string();
    }
    store
        .history(run.id)
        .await
        .ok()
        .and_then(|h| h.last().map(|e| e.reason.clone()))
        .unwrap_or_default()
}
