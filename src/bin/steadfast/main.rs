//! `steadfast`: the operator's command line.
//!
//! Exit codes: 0 done, 1 the operation was refused (nothing changed), 2 usage (bad arguments
//! or environment; clap's own usage errors exit 2 too), 3 the store is unavailable (missing,
//! locked by another process, damaged).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use steadfast::store::Store;
use steadfast::store::StoreError;
use steadfast::{RunId, SledStore};

mod demo;
mod ops;
mod samples;

/// Typed, durable state machines for agents and automation pipelines.
///
/// Exit codes: 0 done; 1 the operation was refused (nothing changed); 2 usage; 3 the store is
/// unavailable (missing, locked by another process, damaged).
#[derive(Debug, Parser)]
#[command(name = "steadfast", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// The data directory (the store lives in its `db` folder).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "STEADFAST_DATA",
        default_value = "steadfast-data"
    )]
    data: PathBuf,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the digest pipeline (collector → classifier → reporter → mailer) on bundled sample
    /// items, offline; a second run does nothing new.
    Demo(demo::DemoArgs),
    /// List and show runs.
    #[command(subcommand)]
    Runs(ops::RunsCommand),
    /// Queue a dead letter or a run held for review again, same input, fresh attempts.
    Replay {
        /// The run's id.
        id: RunId,
        /// Replay even if the agent's input type changed since the run was created.
        #[arg(long)]
        force: bool,
    },
    /// The runs held for review: list, approve, reject, resolve.
    #[command(subcommand)]
    Review(ops::ReviewCommand),
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
        /// The note.
        text: String,
    },
    /// The dead letter queue: list, replay.
    #[command(subcommand)]
    Dlq(ops::DlqCommand),
    /// Runs per state, success, retry and dead-letter rates, p50/p95 latency, per agent.
    Stats {
        /// Over the runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, default_value = "24h", value_parser = ops::parse_duration)]
        window: std::time::Duration,
    },
    /// Print the run lifecycle, or a pipeline's stages, as a diagram.
    Graph {
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
        /// `lifecycle`, or a pipeline this binary knows (`digest`).
        #[arg(default_value = "lifecycle")]
        target: String,
    },
}

/// A diagram language.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// A Mermaid `stateDiagram-v2`.
    Mermaid,
    /// A Graphviz `digraph`.
    Dot,
}

/// Where the data lives.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) data: PathBuf,
}

impl Paths {
    /// The store's folder.
    pub(crate) fn db(&self) -> PathBuf {
        self.data.join("db")
    }

    /// Opens (or creates) the store: the one place the command line chooses a backend;
    /// every command holds it as a `Store`.
    pub(crate) fn open_store(&self) -> Result<Arc<dyn Store>, CliError> {
        let db = self.db();
        let store = SledStore::open(&db).map_err(|e| {
            CliError::store(format!(
                "cannot open the store at {}: {e} (is another steadfast process using it?)",
                db.display()
            ))
        })?;
        Ok(Arc::new(store))
    }
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// The operation was refused; nothing changed (exit 1).
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        CliError { code: 1, message: message.into() }
    }

    /// Bad arguments or environment (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError { code: 2, message: message.into() }
    }

    /// The store is unavailable (exit 3).
    pub(crate) fn store(message: impl Into<String>) -> Self {
        CliError { code: 3, message: message.into() }
    }

    /// A store error: refused requests exit 1, the rest 3.
    pub(crate) fn from_store(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_)
            | StoreError::IllegalTransition { .. }
            | StoreError::InvalidRequest(_) => CliError::refused(error.to_string()),
            other => CliError::store(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own summary of what went wrong; other commands log warnings.
    let _ = steadfast::logging::init_or(if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "warn"
    });
    let paths = Paths { data: cli.data };
    let out = ops::Out::new(cli.json);
    let result = match cli.command {
        Command::Graph { format, target } => {
            ops::graph(&paths, &target, matches!(format, Format::Dot))
        }
        Command::Demo(args) => block_on(demo::run(&paths, args)),
        Command::Runs(command) => block_on(ops::runs(&paths, out, command)),
        Command::Replay { id, force } => block_on(ops::replay(&paths, out, id, force)),
        Command::Review(command) => block_on(ops::review(&paths, out, command)),
        Command::Cancel { id } => block_on(ops::cancel(&paths, out, id)),
        Command::Signal { id, name, payload } => {
            block_on(ops::signal(&paths, out, id, &name, payload))
        }
        Command::Note { id, text } => block_on(ops::note(&paths, out, id, &text)),
        Command::Dlq(command) => block_on(ops::dlq(&paths, out, command)),
        Command::Stats { window } => block_on(ops::stats(&paths, out, window)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if cli.json {
                let report = serde_json::json!({"error": error.message, "code": error.code});
                println!("{report}");
            }
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}

/// Runs `future` on a multi-threaded runtime.
fn block_on<F: Future<Output = Result<(), CliError>>>(future: F) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::store(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}
