//! `steadfast`: the operator's command line.
//!
//! Exit codes: 0 done, 1 the operation was refused (nothing changed), 2 usage (bad arguments
//! or environment), 3 the store is unavailable (missing, locked by another process, damaged).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use steadfast::store::StoreError;
use steadfast::{RunState, SledStore, StateMachine};

mod demo;
mod samples;

/// Typed, durable state machines for agents and automation pipelines.
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the digest pipeline (collector → classifier → reporter → mailer) on bundled sample
    /// items, offline; a second run does nothing new.
    Demo(demo::DemoArgs),
    /// Print the run lifecycle as a diagram.
    Graph {
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
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

    /// Opens (or creates) the store.
    pub(crate) fn open_store(&self) -> Result<SledStore, CliError> {
        let db = self.db();
        SledStore::open(&db).map_err(|e| {
            CliError::store(format!(
                "cannot open the store at {}: {e} (is another steadfast process using it?)",
                db.display()
            ))
        })
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
    let result = match cli.command {
        Command::Graph { format } => {
            let diagram = match format {
                Format::Mermaid => RunState::mermaid(),
                Format::Dot => RunState::dot(),
            };
            print!("{diagram}");
            Ok(())
        }
        Command::Demo(args) => block_on(demo::run(&paths, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
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
