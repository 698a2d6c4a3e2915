//! `dlq list` and `dlq replay`.

use super::args::{DlqCommand, operator};
use super::output::{Out, age, clip, listing};
use super::remote::{operate, operate_error};
use super::{CliError, Session};
use crate::say;

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
