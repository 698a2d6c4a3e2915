//! The command line as a library (feature `cli`): a user's own binary registers its agents
//! and pipelines and gets steadfast's commands for them: `work` (run the workers until idle,
//! or until a signal with `--until-signal`), `runs`, `review`, `replay`, `dlq`, `signal`,
//! `cancel`, `note`, `stats`, `agents`, `graph` of its own pipelines and `prune` (retention). The `steadfast`
//! binary is this, with the flagship digest registered and a `demo` command of its own.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use steadfast::cli::App;
//! use steadfast::prelude::*;
//!
//! struct Greet;
//!
//! #[async_trait]
//! impl Agent for Greet {
//!     type Input = String;
//!     type Output = String;
//!     fn name(&self) -> &str {
//!         "greet"
//!     }
//!     async fn run(&self, _: &mut Context, who: String) -> Result<Outcome<String>, AgentError> {
//!         Ok(Outcome::Done(format!("hello, {who}")))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     // `my-agents work`, `my-agents runs list`, `my-agents review list`, ...
//!     App::new("my-agents").setup(|runtime, _session| runtime.register(Greet)).run()
//! }
//! ```
//!
//! Every command takes `--data DIR` (or `STEADFAST_DATA`; default `steadfast-data`): the data
//! directory, whose `db` folder is the sled store ([`Session::store_dir`]; a program that
//! opens the store itself opens `SledStore::open("steadfast-data/db")`). `--json` prints JSON
//! instead of tables. Exit codes: 0 done, 1 the operation was refused (nothing changed), 2
//! usage (bad arguments or environment), 3 the store is unavailable (missing, locked, damaged).
//! A closed pipe (`… | head`) ends a command quietly.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, FromArgMatches, Subcommand};

use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};
use crate::store::{MemoryStore, SledStore, Store, StoreError};

mod act;
mod agents;
mod args;
mod dlq;
mod error;
mod input;
mod notify;
mod numbers;
mod output;
mod private;
mod prune;
mod remote;
mod runs;
mod serve;
mod shared;
mod work;

use self::args::{Builtin, Global};
pub use self::error::CliError;
use self::output::Out;

/// Prints a line to standard output, as [`cli::say`](crate::cli::say) does.
#[deprecated(
    since = "0.1.0",
    note = "the CLI's own macro: print with `steadfast::cli::say(format_args!(..))`"
)]
#[macro_export]
macro_rules! say {
    () => {
        $crate::cli::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints `text` and a newline to standard output; a closed pipe or another write error
/// becomes a [`CliError`] (a closed pipe ends the command quietly), so nothing panics on
/// output: `steadfast::cli::say(format_args!("{n} runs"))?`.
pub fn say(text: fmt::Arguments<'_>) -> Result<(), CliError> {
    print(format_args!("{text}\n"))
}

/// Writes `text` to standard output, as [`say()`] does without the newline.
pub fn print(text: fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(text).and_then(|()| out.flush()).map_err(CliError::output)
}

/// What registers a binary's agents and pipelines on a runtime builder.
type Setup = Arc<dyn Fn(RuntimeBuilder, &Session) -> RuntimeBuilder + Send + Sync>;

/// A command-line program over the agents and pipelines [`setup`](App::setup) registers.
#[must_use]
pub struct App {
    name: String,
    about: Option<String>,
    version: Option<String>,
    own_log: &'static str,
    setup: Setup,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App").field("name", &self.name).finish_non_exhaustive()
    }
}

impl App {
    /// A program called `name` (as its help and errors name it), with nothing registered.
    pub fn new(name: impl Into<String>) -> Self {
        App {
            name: name.into(),
            about: None,
            version: None,
            own_log: "warn",
            setup: Arc::new(|b, _| b),
        }
    }

    /// The one-line description its `--help` shows.
    pub fn about(mut self, text: impl Into<String>) -> Self {
        self.about = Some(text.into());
        self
    }

    /// The version `--version` prints.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The log filter of the program's own commands when `STEADFAST_LOG` / `RUST_LOG` set
    /// none (default `warn`; `work` logs at `info`, the other built-in commands at `warn`): a
    /// command that prints its own summary of what went wrong may want `error`.
    pub fn own_commands_log(mut self, filter: &'static str) -> Self {
        self.own_log = filter;
        self
    }

    /// Registers the program's agents and pipelines (and any runtime settings) on the builder
    /// every command uses; the [`Session`] says where the data directory is. Called for each
    /// runtime a command builds: `work` runs it, the operator commands check inputs and
    /// outputs against its agents' schemas, `graph` draws its pipelines.
    pub fn setup(
        mut self,
        setup: impl Fn(RuntimeBuilder, &Session) -> RuntimeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.setup = Arc::new(setup);
        self
    }

    /// Parses the process's arguments and runs the command.
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Parses `args` (the first is the program's name) and runs the command.
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        self.run_with_from::<NoCommands, _, _>(args, |never, _| match never {})
    }

    /// [`run`](App::run), with the program's own commands `E` beside the built-in ones;
    /// `handler` runs them.
    pub fn run_with<E: Subcommand>(
        self,
        handler: impl FnOnce(E, &Session) -> Result<(), CliError>,
    ) -> ExitCode {
        self.run_with_from(std::env::args_os(), handler)
    }

    /// [`run_with`](App::run_with) over `args`.
    pub fn run_with_from<E, I, T>(
        self,
        args: I,
        handler: impl FnOnce(E, &Session) -> Result<(), CliError>,
    ) -> ExitCode
    where
        E: Subcommand,
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = clap::Command::new(self.name.clone())
            .arg_required_else_help(true)
            .subcommand_required(true)
            .after_help(
                "Exit codes: 0 done; 1 the operation was refused (nothing changed); 2 usage; \
                 3 the store is unavailable (missing, locked by another process, damaged).",
            );
        if let Some(about) = &self.about {
            command = command.about(about.clone());
        }
        if let Some(version) = &self.version {
            command = command.version(version.clone());
        }
        let command =
            E::augment_subcommands(Builtin::augment_subcommands(Global::augment_args(command)));
        let matches = command.try_get_matches_from(args).unwrap_or_else(|e| e.exit());
        let parsed = Global::from_arg_matches(&matches).and_then(|global| {
            let name = matches.subcommand_name().unwrap_or_default();
            let which = if Builtin::has_subcommand(name) {
                Which::Builtin(Box::new(Builtin::from_arg_matches(&matches)?))
            } else {
                Which::Own(E::from_arg_matches(&matches)?)
            };
            Ok((global, which))
        });
        let (global, which) = parsed.unwrap_or_else(|e| e.exit());
        let session = Session {
            data: global.data,
            server: global.server,
            store: global.store,
            out: Out::new(global.json),
            setup: self.setup.clone(),
            name: self.name.clone(),
        };
        let _ = crate::logging::init_or(match &which {
            Which::Builtin(command)
                if matches!(**command, Builtin::Work(_) | Builtin::Serve(_)) =>
            {
                "info"
            }
            Which::Builtin(_) => "warn",
            Which::Own(_) => self.own_log,
        });
        let result = match which {
            Which::Builtin(command) => args::execute(&session, *command),
            Which::Own(command) => handler(command, &session),
        };
        session.finish(result)
    }
}

/// The built-in commands or the program's own.
enum Which<E> {
    Builtin(Box<Builtin>),
    Own(E),
}

/// No commands of the program's own.
enum NoCommands {}

impl FromArgMatches for NoCommands {
    fn from_arg_matches(_: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))
    }

    fn update_from_arg_matches(&mut self, _: &clap::ArgMatches) -> Result<(), clap::Error> {
        match *self {}
    }
}

impl Subcommand for NoCommands {
    fn augment_subcommands(command: clap::Command) -> clap::Command {
        command
    }

    fn augment_subcommands_for_update(command: clap::Command) -> clap::Command {
        command
    }

    fn has_subcommand(_: &str) -> bool {
        false
    }
}

/// What a command runs with: the data directory, the output settings, and the program's
/// registrations.
pub struct Session {
    data: PathBuf,
    /// `--server` / `STEADFAST_SERVER`.
    server: Option<String>,
    /// `--store` / `STEADFAST_STORE`: a PostgreSQL address, or the embedded store.
    store: Option<String>,
    out: Out,
    setup: Setup,
    name: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("data", &self.data)
            .field("json", &self.out.json)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The data directory (`--data`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The store's folder: `db` in the data directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data.join("db")
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.out.json
    }

    /// The program's name, as its commands are typed (`steadfast`, `my-agents`).
    pub fn program(&self) -> &str {
        &self.name
    }

    /// Refuses a data directory that is itself a sled store (someone gave the store's folder,
    /// `…/db`, or a folder a program opened with `SledStore::open` directly).
    pub fn check_layout(&self) -> Result<(), CliError> {
        if self.data.join("conf").is_file() && self.data.join("db").is_file() {
            let parent = self.data.parent().filter(|p| !p.as_os_str().is_empty());
            return Err(CliError::usage(format!(
                "{} is a sled store itself, not a data directory: a data directory holds the \
                 store in its `db` folder{}",
                self.data.display(),
                match parent {
                    Some(p) if self.data.ends_with("db") => {
                        format!(" (give --data {})", p.display())
                    }
                    _ => " (move the store into `<DIR>/db` and give --data <DIR>)".to_owned(),
                }
            )));
        }
        Ok(())
    }

    /// Opens the store, creating it if it does not exist. The data directory is created
    /// private (mode 0700); one another user owns is refused, and one open to others is
    /// closed (0700, its files 0600). With `--store postgres://…`, connects to PostgreSQL
    /// and brings its schema up to date instead (call it inside [`Session::block_on`]).
    pub fn open_store(&self) -> Result<Arc<dyn Store>, CliError> {
        self.check_layout()?;
        private::secure_data_dir(&self.data, true)?;
        self.open_checked()
    }

    /// The PostgreSQL address of `--store` / `STEADFAST_STORE`, if the store is shared
    /// there rather than embedded in the data directory.
    pub fn shared_store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// Opens the store of a data directory whose layout was checked.
    fn open_checked(&self) -> Result<Arc<dyn Store>, CliError> {
        if let Some(url) = &self.store {
            return shared::open(url, true);
        }
        let db = self.store_dir();
        // A lock names its holder and says what to do; other errors (permissions, a damaged
        // or foreign folder) speak for themselves.
        let store = SledStore::open(&db).map_err(|e| match e {
            StoreError::Locked { .. } => CliError::store(e.to_string()),
            e => CliError::store(format!("cannot open the store at {}: {e}", db.display())),
        })?;
        Ok(Arc::new(store))
    }

    /// Opens the store if it exists (a read or an operator call never creates one; on
    /// PostgreSQL, never changes the schema: an old one is refused until `migrate` runs).
    pub fn existing_store(&self) -> Result<Arc<dyn Store>, CliError> {
        if let Some(url) = &self.store {
            return shared::open(url, false);
        }
        self.check_layout()?;
        private::secure_data_dir(&self.data, false)?;
        let db = self.store_dir();
        if !db.is_dir() {
            return Err(CliError::store(format!(
                "no steadfast database at {} (run `{} work` or your program to make one, or \
                 point --data at yours)",
                db.display(),
                self.name
            )));
        }
        self.open_checked()
    }

    /// A runtime builder over `store` with the program's agents and pipelines registered.
    pub fn runtime(&self, store: Arc<dyn Store>) -> RuntimeBuilder {
        (self.setup)(Runtime::builder().shared_store(store), self)
    }

    /// The program's registrations on a store in memory: what its agents and pipelines are,
    /// without touching the data directory (`graph`, `agents`).
    pub fn registrations(&self) -> Result<Runtime, CliError> {
        self.runtime(Arc::new(MemoryStore::new())).build().map_err(runtime_error)
    }

    /// Runs `future` on a multi-threaded tokio runtime.
    pub fn block_on<F: Future<Output = Result<(), CliError>>>(
        &self,
        future: F,
    ) -> Result<(), CliError> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::store(format!("cannot start the async runtime: {e}")))?
            .block_on(future)
    }

    /// Reports `result` as the process's exit: an error as `error: …` on stderr (and as
    /// `{"error", "code"}` on stdout with `--json`), a closed pipe quietly.
    fn finish(&self, result: Result<(), CliError>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) if error.is_closed_pipe() => ExitCode::SUCCESS,
            Err(error) => {
                if self.out.json {
                    let report =
                        serde_json::json!({"error": error.message(), "code": error.code()});
                    let _ = print(format_args!("{report}\n"));
                }
                let _ = writeln!(std::io::stderr(), "error: {}", error.message());
                ExitCode::from(error.code())
            }
        }
    }
}

/// A runtime error as the CLI reports it: refusals exit 1, the store 3.
pub(crate) fn runtime_error(error: RuntimeError) -> CliError {
    match error {
        RuntimeError::Store(store) => CliError::from_store(store),
        other => CliError::refused(other.to_string()),
    }
}
