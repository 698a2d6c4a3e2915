//! `dlq list` and `dlq replay`.

use serde_json::json;

use super::args::{DlqCommand, operator, operator_runtime};
use super::output::{Out, age, clip, listing};
use super::remote::Remote;
use super::runtime_error;
use super::{CliError, Session};
use crate::runtime::Replayed;
use crate::say;

pub(super) async fn dlq(session: &Session, out: Out, command: DlqCommand) -> Result<(), CliError> {
    let remote = Remote::find(session).await?;
    match command {
        DlqCommand::List { limit } => {
            let (dead, now): (Vec<crate::store::DeadLetter>, _) = match &remote {
                Some(remote) => (
                    remote.get(&format!("/dlq?limit={limit}")).await?,
                    crate::clock::Timestamp::now(),
                ),
                None => {
                    let store = session.existing_store()?;
                    let dead = store
                        .dead_letters(None, usize::from(limit))
                        .await
                        .map_err(CliError::from_store)?;
                    (dead, store.now())
                }
            };
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
            let report: Vec<Replayed> = match &remote {
                Some(remote) => {
                    let agent = match agent {
                        Some(agent) => {
                            Some(super::runs::resolve_agent_remote(session, remote, &agent).await?)
                        }
                        None => None,
                    };
                    remote.post("/dlq/replay", &json!({"agent": agent, "force": force})).await?
                }
                None => {
                    let rt = operator_runtime(session)?;
                    let agent = match agent {
                        Some(agent) => Some(
                            super::runs::resolve_agent(session, rt.store().as_ref(), &agent)
                                .await?,
                        ),
                        None => None,
                    };
                    rt.replay_dead_letters(agent.as_deref(), operator(), force)
                        .await
                        .map_err(runtime_error)?
                }
            };
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
                if replayed > 0 && remote.is_none() {
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
