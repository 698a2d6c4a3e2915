//! The built-in commands' arguments, and the dispatch to them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{CliError, Session, runtime_error};
use crate::lifecycle::{RunId, RunState};
use crate::runtime::Runtime;
use crate::store::Actor;

/// The options every command takes.
#[derive(Debug, clap::Args)]
pub(super) struct Global {
    /// The data directory (the store lives in its `db` folder).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "STEADFAST_DATA",
        default_value = "steadfast-data"
    )]
    pub(super) data: PathBuf,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Send operator commands to the server at this address (`http://host:7420`) instead of
    /// opening the store; with `$STEADFAST_TOKEN` if it needs one. Without it, a server that
    /// works on the data directory is found there.
    #[arg(long, global = true, value_name = "URL", env = "STEADFAST_SERVER")]
    pub(super) server: Option<String>,
}

/// The commands every program built on [`App`](super::App) has.
#[derive(Debug, clap::Subcommand)]
pub(super) enum Builtin {
    /// Run the workers and the HTTP API (JSON under /api/v1, /healthz, /readyz) until SIGINT
    /// or SIGTERM, on 127.0.0.1:7420 by default.
    Serve(super::serve::ServeArgs),
    /// Run the workers over the store until no work is left (or, with --until-signal, until
    /// SIGINT or SIGTERM), then print what the store holds.
    Work(super::work::WorkArgs),
    /// List and show runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Queue a dead letter or a run held for review again: same input, fresh attempts and
    /// fault budgets. A failed pipeline run replays its dead stage too.
    Replay {
        /// The run's id.
        id: RunId,
        /// Replay even if the agent's input type changed since the run was created.
        #[arg(long)]
        force: bool,
    },
    /// The runs held for review: list, show, approve (try again), reject (dead letter),
    /// resolve (give the output).
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Cancel a run that is not being processed (it becomes a dead letter).
    Cancel {
        /// The run's id.
        id: RunId,
    },
    /// Send a signal to a run waiting for it.
    Signal {
        /// The run's id.
        id: RunId,
        /// The signal's name (`runs show` says what the run waits for).
        name: String,
        /// A file with the signal's JSON payload, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        payload: Option<PathBuf>,
    },
    /// Add a note to a run.
    Note {
        /// The run's id.
        id: RunId,
        /// The note (not empty).
        text: String,
    },
    /// The dead letter queue: list, replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Runs per state, success, retry and dead-letter rates, p50/p95 latency, per agent.
    Stats {
        /// Over the runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        window: Duration,
    },
    /// The registered agents and pipelines: kind, retry policy, circuit breaker, limits,
    /// paused or not (`agents pause NAME`, `agents resume NAME [--rate N]`).
    Agents {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<AgentsCommand>,
    },
    /// Delete runs at rest that have not moved for a while, with their history, effects and
    /// notes: succeeded runs by default; dead letters and runs in review only when named.
    Prune(super::prune::PruneArgs),
    /// Print the run lifecycle, or a registered pipeline's stages, as a diagram (--json:
    /// nodes and edges).
    Graph {
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
        /// `lifecycle`, or a registered pipeline (`agents` lists them).
        #[arg(default_value = "lifecycle")]
        target: String,
    },
}

/// A diagram language.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    /// Mermaid (`stateDiagram-v2`, `flowchart`).
    Mermaid,
    /// A Graphviz `digraph`.
    Dot,
}

/// Runs a built-in command.
pub(super) fn execute(session: &Session, command: Builtin) -> Result<(), CliError> {
    let out = session.out;
    match command {
        Builtin::Work(args) => session.block_on(super::work::work(session, args)),
        Builtin::Serve(args) => session.block_on(super::serve::serve(session, args)),
        Builtin::Graph { format, target } => {
            super::numbers::graph(session, &target, matches!(format, Format::Dot))
        }
        Builtin::Agents { action: None | Some(AgentsCommand::List) } => {
            session.block_on(super::agents::agents(session))
        }
        Builtin::Agents { action: Some(action) } => {
            session.block_on(super::agents::control(session, out, action))
        }
        Builtin::Runs(command) => session.block_on(super::runs::runs(session, out, command)),
        Builtin::Replay { id, force } => {
            session.block_on(super::act::replay(session, out, id, force))
        }
        Builtin::Review(command) => session.block_on(super::act::review(session, out, command)),
        Builtin::Cancel { id } => session.block_on(super::act::cancel(session, out, id)),
        Builtin::Signal { id, name, payload } => {
            session.block_on(super::act::signal(session, out, id, &name, payload))
        }
        Builtin::Note { id, text } => session.block_on(super::act::note(session, out, id, &text)),
        Builtin::Dlq(command) => session.block_on(super::dlq::dlq(session, out, command)),
        Builtin::Stats { window } => session.block_on(super::numbers::stats(session, out, window)),
        Builtin::Prune(args) => session.block_on(super::prune::prune(session, out, args)),
    }
}

/// `runs ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this state (queued, processing, waiting_external, succeeded,
        /// failed_transient, failed_permanent, needs_review).
        #[arg(long)]
        state: Option<RunState>,
        /// Only runs of this agent: its registered name (`digest.1.classifier`), or a
        /// pipeline stage's short name (`classifier`) when only one stage has it.
        #[arg(long)]
        agent: Option<String>,
        /// Only runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many runs on a page (1 to 10000); the last line says how to get the
        /// next page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Go on from where an earlier page stopped (the `--cursor` it printed).
        #[arg(long, value_name = "RUN")]
        cursor: Option<RunId>,
    },
    /// Show one run: its record, input, output, history, effects, notes and stages.
    Show {
        /// The run's id.
        id: RunId,
    },
}

/// `review ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum ReviewCommand {
    /// List the runs held for review, with why.
    List,
    /// Show a run held for review: why, its input, and the output `resolve` expects (its
    /// JSON Schema, and a template filled from the run, ready to edit).
    Show {
        /// The run's id.
        id: RunId,
        /// Print only the template, to edit and give to `resolve`
        /// (`review show ID --template > out.json`).
        #[arg(long)]
        template: bool,
    },
    /// Approve a run: try again. It is queued with fresh attempt and fault budgets, and the
    /// note reaches its next attempt (the digest's classifier takes a label from it:
    /// `--note "label: security"`). To give the output yourself, use `resolve`.
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
    /// Succeed a run with an output you provide, checked against the agent's output schema
    /// (`review show ID --template` prints one to start from).
    Resolve {
        /// The run's id.
        id: RunId,
        /// A file with the output as JSON, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        output: PathBuf,
    },
}

/// `agents ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum AgentsCommand {
    /// The registered agents (the default).
    List,
    /// Pause an agent: its runs stay queued and none starts until it is resumed (kept in the
    /// store: a restart keeps it). Attempts already running finish.
    Pause {
        /// The agent (a stage's short name works as in `runs list`).
        name: String,
        /// Why, for whoever looks later.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused agent, at once or at most --rate runs started per second.
    Resume {
        /// The agent.
        name: String,
        /// At most this many runs started per second, until resumed without it.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<f64>,
    },
}

/// `dlq ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum DlqCommand {
    /// List the dead letters, newest first, with why.
    List {
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
    },
    /// Replay dead letters (each reported).
    Replay {
        /// Every dead letter (required: bulk replay is deliberate).
        #[arg(long, required = true)]
        all: bool,
        /// Only those of this agent (a stage's short name works as in `runs list`).
        #[arg(long)]
        agent: Option<String>,
        /// Replay even if the agent's input type changed.
        #[arg(long)]
        force: bool,
    },
}

/// A duration argument (`90s`, `15m`, `2h`, `7d`), white space around it allowed.
pub(super) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::clock::parse_duration(text.trim())
}

/// Who the operator is: `$STEADFAST_OPERATOR`, else `$USER`, else `cli`.
pub(super) fn operator() -> Actor {
    let name = std::env::var("STEADFAST_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "cli".to_owned());
    Actor::Operator(name)
}

/// Reads JSON from a file or standard input (`-`).
pub(super) fn read_json(path: &Path) -> Result<Value, CliError> {
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

/// A runtime over the existing store with the program's agents and pipelines registered, so
/// their runs get their full checks; it never runs an attempt.
pub(super) fn operator_runtime(session: &Session) -> Result<Runtime, CliError> {
    let store = session.existing_store()?;
    session.runtime(store).build().map_err(runtime_error)
}
