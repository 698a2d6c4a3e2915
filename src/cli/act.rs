//! The commands that act on a run: replay, review (list, show, approve, reject, resolve),
//! cancel, signal, note.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::args::{ReviewCommand, operator, operator_runtime, read_json};
use super::output::{Out, age, clip, done, indent, listing};
use super::remote::Remote;
use super::{CliError, Session, runtime_error};
use crate::lifecycle::{RunId, RunState};
use crate::say;
use crate::store::{ListQuery, RunRecord};
use crate::view::{Held, ReviewItem, held_for_review};

/// After an operator queued a run: nothing runs it while this command holds the store, so
/// say what will.
fn queued_hint(session: &Session, out: Out, run: &RunRecord) -> Result<(), CliError> {
    if out.json || run.state != RunState::Queued {
        return Ok(());
    }
    say!(
        "  queued: it runs when workers do (`{} work --data {}`, or your program's workers)",
        session.program(),
        session.data_dir().display()
    )
}

pub(super) async fn replay(
    session: &Session,
    out: Out,
    id: RunId,
    force: bool,
) -> Result<(), CliError> {
    if let Some(remote) = Remote::find(session).await? {
        let run: RunRecord =
            remote.post(&format!("/runs/{id}/replay"), &json!({"force": force})).await?;
        return done(out, "replayed", &run);
    }
    let rt = operator_runtime(session)?;
    let run = rt.replay(id, operator(), force).await.map_err(runtime_error)?;
    done(out, "replayed", &run)?;
    // A failed pipeline run's dead stage was replayed with it: its queued stage runs whose
    // last move says so (only the queued ones' histories are read).
    if !out.json {
        let query = ListQuery::new().parent(id).state(RunState::Queued).limit(1000);
        let queued = rt.store().list(query).await.map_err(CliError::from_store)?.runs;
        let with = format!("with its pipeline run {id}");
        for stage in queued {
            let history = rt.store().history(stage.id).await.map_err(CliError::from_store)?;
            if history.last().is_some_and(|e| e.reason.contains(&with)) {
                say!(
                    "  and its stage run {} ({}): now {}",
                    stage.id,
                    stage.agent,
                    out.state(stage.state)
                )?;
            }
        }
    }
    queued_hint(session, out, &run)
}

pub(super) async fn review(
    session: &Session,
    out: Out,
    command: ReviewCommand,
) -> Result<(), CliError> {
    if let Some(remote) = Remote::find(session).await? {
        return review_remote(session, out, &remote, command).await;
    }
    let rt = operator_runtime(session)?;
    let store = rt.store().clone();
    match command {
        ReviewCommand::List => {
            let held = held_for_review(&*store).await.map_err(CliError::from_store)?;
            review_list(out, &held, store.now())
        }
        ReviewCommand::Show { id, template } => {
            let item = ReviewItem::load(&*store, id)
                .await
                .map_err(CliError::from_store)?
                .ok_or_else(|| CliError::refused(format!("no run {id}")))?;
            review_show(session, out, item, template)
        }
        ReviewCommand::Approve { id, note } => {
            let run = rt.approve(id, operator(), note.as_deref()).await.map_err(runtime_error)?;
            done(out, "approved", &run)?;
            queued_hint(session, out, &run)
        }
        ReviewCommand::Reject { id, note } => {
            let run = rt.reject(id, operator(), note.as_deref()).await.map_err(runtime_error)?;
            done(out, "rejected", &run)
        }
        ReviewCommand::Resolve { id, output } => {
            let value = read_json(&output)?;
            let run = rt.resolve(id, operator(), value).await.map_err(runtime_error)?;
            done(out, "resolved", &run)
        }
    }
}

/// `review ...` through a server.
async fn review_remote(
    session: &Session,
    out: Out,
    remote: &Remote,
    command: ReviewCommand,
) -> Result<(), CliError> {
    match command {
        ReviewCommand::List => {
            #[derive(serde::Deserialize)]
            struct Answer {
                review: Vec<Held>,
            }
            let answer: Answer = remote.get("/review").await?;
            review_list(out, &answer.review, crate::clock::Timestamp::now())
        }
        ReviewCommand::Show { id, template } => {
            let item: ReviewItem = remote.get(&format!("/review/{id}")).await?;
            review_show(session, out, item, template)
        }
        ReviewCommand::Approve { id, note } => {
            let run: RunRecord =
                remote.post(&format!("/review/{id}/approve"), &json!({"note": note})).await?;
            done(out, "approved", &run)
        }
        ReviewCommand::Reject { id, note } => {
            let run: RunRecord =
                remote.post(&format!("/review/{id}/reject"), &json!({"note": note})).await?;
            done(out, "rejected", &run)
        }
        ReviewCommand::Resolve { id, output } => {
            let value = read_json(&output)?;
            let run: RunRecord =
                remote.post(&format!("/review/{id}/resolve"), &json!({"output": value})).await?;
            done(out, "resolved", &run)
        }
    }
}

fn review_list(out: Out, held: &[Held], now: crate::clock::Timestamp) -> Result<(), CliError> {
    let items: Vec<Value> = held
        .iter()
        .map(|h| json!({"id": h.run.id, "agent": h.run.agent, "updated_at": h.run.updated_at, "reason": h.why}))
        .collect();
    let runs: Vec<&RunRecord> = held.iter().map(|h| &h.run).collect();
    listing(out, &items, "nothing waits for review", &["RUN", "AGENT", "HELD", "WHY"], |items| {
        items
            .iter()
            .zip(&runs)
            .map(|(item, r)| {
                let reason = item["reason"].as_str().unwrap_or_default();
                vec![r.id.to_string(), r.agent.clone(), age(now, r.updated_at), clip(reason, 110)]
            })
            .collect()
    })
}

fn review_show(
    session: &Session,
    out: Out,
    item: ReviewItem,
    template: bool,
) -> Result<(), CliError> {
    let ReviewItem { run, reason, output_schema: schema } = item;
    let id = run.id;
    let filled = schema.as_ref().map(|s| crate::schema::template(s, Some(&run.input)));
    if template {
        let Some(filled) = filled else {
            return Err(CliError::refused(format!(
                "no output schema is kept for run {id} (agent `{}`): run it once under a \
                         program that registers the agent",
                run.agent
            )));
        };
        return out.print_json(&filled);
    }
    if out.json {
        return out.print_json(&json!({
            "run": run, "reason": reason, "output_schema": schema, "template": filled,
        }));
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    say!("run       {}", run.id)?;
    say!("agent     {}", run.agent)?;
    say!("state     {}", out.state(run.state))?;
    say!("why       {reason}")?;
    say!("\ninput\n{}", indent(&pretty(&run.input)))?;
    match (&schema, &filled) {
        (Some(schema), Some(filled)) => {
            say!("\nthe output `resolve` expects (JSON Schema)\n{}", indent(&pretty(schema)))?;
            say!("\na template from this run, to edit\n{}", indent(&pretty(filled)))?;
        }
        _ => say!("\nno output schema is kept for this run's agent")?,
    }
    let program = session.program();
    say!("\nNext:")?;
    say!("  {program} review approve {id} --note \"…\"      try again, with the note")?;
    say!("  {program} review show {id} --template > out.json   then edit out.json and")?;
    say!("  {program} review resolve {id} --output out.json   succeed it with that output")?;
    say!("  {program} review reject {id} --note \"…\"       dead-letter it")
}

pub(super) async fn cancel(session: &Session, out: Out, id: RunId) -> Result<(), CliError> {
    if let Some(remote) = Remote::find(session).await? {
        let run: RunRecord = remote.post(&format!("/runs/{id}/cancel"), &json!({})).await?;
        return done(out, "cancelled", &run);
    }
    let rt = operator_runtime(session)?;
    let run = rt.cancel(id, operator()).await.map_err(runtime_error)?;
    done(out, "cancelled", &run)
}

pub(super) async fn signal(
    session: &Session,
    out: Out,
    id: RunId,
    name: &str,
    payload: Option<PathBuf>,
) -> Result<(), CliError> {
    let payload = match payload {
        Some(path) => read_json(&path)?,
        None => Value::Null,
    };
    if let Some(remote) = Remote::find(session).await? {
        let body = json!({"name": name, "payload": payload});
        let run: RunRecord = remote.post(&format!("/runs/{id}/signal"), &body).await?;
        return done(out, &format!("signalled `{name}` to"), &run);
    }
    let rt = operator_runtime(session)?;
    let run = rt.signal(id, name, payload, operator()).await.map_err(runtime_error)?;
    done(out, &format!("signalled `{name}` to"), &run)?;
    queued_hint(session, out, &run)
}

pub(super) async fn note(
    session: &Session,
    out: Out,
    id: RunId,
    text: &str,
) -> Result<(), CliError> {
    let note: crate::store::Note = match Remote::find(session).await? {
        Some(remote) => remote.post(&format!("/runs/{id}/notes"), &json!({"text": text})).await?,
        None => {
            let rt = operator_runtime(session)?;
            rt.note(id, operator(), text).await.map_err(runtime_error)?
        }
    };
    if out.json { out.print_json(&note) } else { say!("noted on {id} by {}", note.author) }
}
