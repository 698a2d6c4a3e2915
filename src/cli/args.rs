//! The built-in commands and the dispatch to them; each command's own arguments live with it.

use std::path::PathBuf;
use std::time::Duration;

use super::{CliError, Session};
use crate::lifecycle::RunId;

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
    /// Print JSON instead of tables, for scripts (docs/json.md lists every command's shape).
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Send operator commands to the server at this address (`http://host:7420`) instead of
    /// opening the store; with `$STEADFAST_TOKEN` if it needs one (sent to this address only).
    /// Without it, a process working on the data directory is reached through its socket there.
    #[arg(long, global = true, value_name = "URL", env = "STEADFAST_SERVER")]
    pub(super) server: Option<String>,
    /// The store: a PostgreSQL address (`postgres://user@host:5432/db`), shared by every
    /// process that names it; without it, the embedded store in the data directory. The
    /// address may carry a password, but `STEADFAST_STORE` or `PGPASSWORD` keep it off the
    /// command line.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "STEADFAST_STORE",
        hide_env_values = true
    )]
    pub(super) store: Option<String>,
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
    Runs(super::runs::RunsCommand),
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
    Review(super::act::ReviewCommand),
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
    Dlq(super::dlq::DlqCommand),
    /// Runs per state, success, retry and dead-letter rates, p50/p95 latency, per agent.
    Stats {
        /// Over the runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = super::input::parse_duration)]
        window: Duration,
    },
    /// The registered agents and pipelines: kind, retry policy, circuit breaker, limits,
    /// paused or not (`agents pause NAME`, `agents resume NAME [--rate N]`).
    Agents {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<super::agents::AgentsCommand>,
    },
    /// Delete runs at rest that have not moved for a while, with their history, effects and
    /// notes: succeeded runs by default; dead letters and runs in review only when named.
    Prune(super::prune::PruneArgs),
    /// Write everything the store holds (runs with their history, effects and notes, dead
    /// letters, schemas, agent controls) as JSON lines, to move a deployment between the
    /// embedded store and PostgreSQL (`import` reads it). Stop the workers first.
    Export {
        /// The file to write, or `-` for standard output.
        #[arg(default_value = "-", value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Read an export into the store (`--store` or `--data`); runs already there are skipped,
    /// so importing twice imports once.
    Import {
        /// The export, or `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Bring the store's schema up to date (PostgreSQL: the embedded migrations; the embedded
    /// store upgrades its layout when opened) and print its version.
    Migrate,
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
        Builtin::Agents { action: None | Some(super::agents::AgentsCommand::List) } => {
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
        Builtin::Migrate => session.block_on(super::shared::migrate(session, out)),
        Builtin::Export { file } => session.block_on(super::shared::export(session, out, file)),
        Builtin::Import { file } => session.block_on(super::shared::import(session, out, file)),
    }
}
