//! `dlq list` and `dlq replay`.

use super::input::operator;
use super::output::say;
use super::output::{Out, age, clip, listing};
use super::remote::{operate, operate_error};
use super::{CliError, Session};

pub(super) async fn dlq(session: &Session, out: Out, command: DlqCommand) -> Result<(), CliError> {
    let ops = operate(session).await?;
    match command {
        DlqCommand::List { limit } => {
            let dead = ops.dead_letters(usize::from(limit)).await.map_err(operate_error)?;
            let now = crate::clock::Timestamp::now();
            listing(
                out,
                &dead,
                "the dead letter queue is empty",
                &["RUN", "AGENT", "ATTEMPTS", "DEAD", "WHY"],
                |dead| {
                    dead.iter()
                        .map(|d| {
                            let why = d
                                .error
                                .as_ref()
                                .map(|e| e.to_string())
                                .unwrap_or_else(|| d.reason.clone());
                            vec![
                                d.run.to_string(),
                                d.agent.clone(),
                                d.attempt.to_string(),
                                age(now, d.at),
                                clip(&why, 100),
                            ]
                        })
                        .collect()
                },
            )
        }
        DlqCommand::Replay { all: _, agent, force } => {
            let agent = match agent {
                Some(agent) => {
                    Some(super::runs::resolve_agent(session, ops.as_ref(), &agent).await?)
                }
                None => None,
            };
            let report = ops
                .replay_dead_letters(agent.as_deref(), operator(), force)
                .await
                .map_err(operate_error)?;
            let refused = report.iter().filter(|r| !r.replayed).count();
            let replayed = report.len() - refused;
            if out.json {
                out.print_json(&report)?;
            } else {
                for r in &report {
                    match (&r.error, r.with_pipeline) {
                        (Some(error), _) => say!("refused  {} ({}): {error}", r.id, r.agent)?,
                        (None, Some(pipeline)) => say!(
                            "replayed {} ({}) with its pipeline run {pipeline}",
                            r.id,
                            r.agent
                        )?,
                        (None, None) => say!("replayed {} ({})", r.id, r.agent)?,
                    }
                }
                say!("{replayed} replayed, {refused} refused")?;
                if replayed > 0 && !ops.is_remote() {
                    say!(
                        "  queued: they run when workers do (`{} work --data {}`, or your program's workers)",
                        session.program(),
                        session.data_dir().display()
                    )?;
                }
            }
            if refused > 0 {
                Err(CliError::refused(format!("{refused} dead letter(s) could not be replayed")))
            } else {
                Ok(())
            }
        }
    }
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
