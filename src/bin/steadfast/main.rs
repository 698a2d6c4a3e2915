//! `steadfast`: the operator's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use steadfast::{RunState, StateMachine};

/// Typed, durable state machines for agents and automation pipelines.
#[derive(Debug, Parser)]
#[command(name = "steadfast", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = steadfast::logging::init();
    match cli.command {
        Command::Graph { format } => {
            let diagram = match format {
                Format::Mermaid => RunState::mermaid(),
                Format::Dot => RunState::dot(),
            };
            print!("{diagram}");
        }
    }
    ExitCode::SUCCESS
}
