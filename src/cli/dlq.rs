//! `dlq list` and `dlq replay`.

use serde_json::json;

use super::args::{DlqCommand, operator, operator_runtime};
use super::output::{Out, age, clip, listing};
use super::remote::Remote;
use super::{CliError, Session};
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
        DlqCommand::Replay { all: _, agent, force } if remote.is_some() => {
            let remote = remote.as_ref().expect("matched");
            let agent = match agent {
                Some(agent) => {
                    Some(super::runs::resolve_agent_remote(session, remote, &agent).await?)
                }
                None => None,
            };
            let body = json!({"agent": agent, "force": force});
            let report: Vec<serde_json::Value> = remote.post("/dlq/replay", &body).await?;
            let refused = report.iter().filter(|r| r["replayed"] != json!(true)).count();
            if out.json {
                out.print_json(&report)?;
            } else {
                for r in &report {
                    match r["error"].as_str() {
                        None => say!(
                            "replayed {} ({})",
                            r["id"].as_str().unwrap_or(""),
                            r["agent"].as_str().unwrap_or("")
                        )?,
                        Some(error) => say!(
                            "refused  {} ({}): {error}",
                            r["id"].as_str().unwrap_or(""),
                            r["agent"].as_str().unwrap_or("")
                        )?,
                    }
                }
                say!("{} replayed, {refused} refused", report.len() - refused)?;
            }
            if refused > 0 {
                Err(CliError::refused(format!("{refused} dead letter(s) could not be replayed")))
            } else {
                Ok(())
            }
        }
        DlqCommand::Replay { all: _, agent, force } => {
            let rt = operator_runtime(session)?;
            let agent = match agent {
                Some(agent) => {
                    Some(super::runs::resolve_agent(session, rt.store().as_ref(), &agent).await?)
                }
                None => None,
            };
            let mut dead = Vec::new();
            let mut cursor = None;
            loop {
                let page =
                    rt.store().dead_letters(cursor, 1000).await.map_err(CliError::from_store)?;
                let Some(last) = page.last() else { break };
                cursor = Some(last.run);
                dead.extend(
                    page.into_iter().filter(|d| agent.as_ref().is_none_or(|a| *a == d.agent)),
                );
            }
            let (mut replayed, mut refused) = (0, 0);
            let mut report = Vec::new();
            for d in dead {
                match rt.replay(d.run, operator(), force).await {
                    Ok(run) => {
                        replayed += 1;
                        if !out.json {
                            say!(
                                "replayed {} ({}): now {}",
                                run.id,
                                run.agent,
                                out.state(run.state)
                            )?;
                        }
                        report.push(json!({"id": run.id, "agent": run.agent, "replayed": true}));
                    }
                    Err(error) => {
                        refused += 1;
                        if !out.json {
                            say!("refused  {} ({}): {error}", d.run, d.agent)?;
                        }
                        report.push(json!({"id": d.run, "agent": d.agent, "replayed": false, "error": error.to_string()}));
                    }
                }
            }
            if out.json {
                out.print_json(&report)?;
            } else {
                say!("{replayed} replayed, {refused} refused")?;
                if replayed > 0 {
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
