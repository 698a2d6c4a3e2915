//! `steadfast`: the operator's command line over the flagship digest, and `steadfast demo`.
//!
//! The commands are [`steadfast::cli`]'s, with the digest registered; `demo` is this binary's
//! own. Exit codes: 0 done, 1 the operation was refused (nothing changed), 2 usage (bad
//! arguments or environment), 3 the store is unavailable (missing, locked by another
//! process, damaged).

use std::process::ExitCode;

use steadfast::agents::{self, Classifier, Collector, Mailer, Reporter, Rules, Transport};
use steadfast::cli::{App, Session};

/// Prints a line to standard output; a closed pipe ends the command quietly.
macro_rules! say {
    () => {
        steadfast::cli::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        steadfast::cli::say(format_args!($($arg)*))
    };
}

mod demo;
mod samples;
mod summary;

// This binary's own commands, beside the library's (a `//` comment: clap would show a doc
// comment as the program's description).
#[derive(Debug, clap::Subcommand)]
enum Own {
    /// Run the digest pipeline (collector → classifier → reporter → mailer) on bundled sample
    /// items, offline; a second run does nothing new.
    Demo(demo::DemoArgs),
}

/// The flagship digest as this binary registers it for `work` and the operator commands:
/// the demo's stages and names, reading `sample-items/` and writing `reports/` and `outbox/`
/// in the data directory.
fn digest(session: &Session) -> steadfast::pipeline::Pipeline<agents::Edition, agents::Receipt> {
    let data = session.data_dir();
    let mailer = Mailer::new(
        Transport::outbox(data.join("outbox")),
        "steadfast-demo@example.com",
        ["team@example.com"],
    )
    .expect("valid built-in addresses");
    agents::digest(
        Collector::folder(data.join("sample-items")),
        Classifier::rules(Rules::builtin()),
        Reporter::new(data.join("reports")),
        mailer,
    )
}

fn main() -> ExitCode {
    App::new("steadfast")
        .about("Typed, durable state machines for agents and automation pipelines.")
        .version(env!("CARGO_PKG_VERSION"))
        .setup(|runtime, session| runtime.pipeline(digest(session)))
        // The demo prints its own summary of what went wrong.
        .own_commands_log("error")
        .run_with(|command, session| match command {
            Own::Demo(args) => session.block_on(demo::run(session, args)),
        })
}
