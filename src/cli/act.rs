//! The commands that act on a run: replay, review (list, show, approve, reject, resolve),
//! cancel, signal, note.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::input::{operator, read_json};
use super::output::say;
use super::output::{Out, age, clip, done, indent, listing};
use super::remote::{operate, operate_error};
use super::{CliError, Session};
use crate::lifecycle::{RunId, RunState};
use crate::runtime::Operate;
use crate::store::RunRecord;
use crate::view::{Held, ReviewItem};

/// After an operator queued a run: nothing runs it while this command holds the store, so
/// say what will (a server's workers take it up at once).
fn queued_hint(
    session: &Session,
    out: Out,
    ops: &dyn Operate,
    run: &RunRecord,
) -> Result<(), CliError> {
    if out.json || run.state != RunState::Queued || ops.is_remote() {
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
    let ops = operate(session).await?;
    let replay = ops.replay(id, operator(), force).await.map_err(operate_error)?;
    if out.json {
        return out.print_json(&replay);
    }
    done(out, "replayed", &replay.run)?;
    // A failed pipeline run's dead stage is replayed with it.
    if !out.json {
        for stage in &replay.stages {
            say!(
                "  and its stage run {} ({}): now {}",
                stage.id,
                stage.agent,
                out.state(stage.state)
            )?;
        }
    }
    queued_hint(session, out, ops.as_ref(), &replay.run)
}

pub(super) async fn review(
    session: &Session,
    out: Out,
    command: ReviewCommand,
) -> Result<(), CliError> {
    let ops = operate(session).await?;
    match command {
        ReviewCommand::List => {
            let held = ops.review().await.map_err(operate_error)?;
            review_list(out, &held, crate::clock::Timestamp::now())
        }
        ReviewCommand::Show { id, template } => {
            let item = ops.review_item(id).await.map_err(operate_error)?;
            review_show(session, out, item, template)
        }
        ReviewCommand::Approve { id, note } => {
            let run = ops.approve(id, operator(), note.as_deref()).await.map_err(operate_error)?;
            done(out, "approved", &run)?;
            queued_hint(session, out, ops.as_ref(), &run)
        }
        ReviewCommand::Reject { id, note } => {
            let run = ops.reject(id, operator(), note.as_deref()).await.map_err(operate_error)?;
            done(out, "rejected", &run)
        }
        ReviewCommand::Resolve { id, output } => {
            let value = read_json(&output)?;
            let run = ops.resolve(id, operator(), value).await.map_err(operate_error)?;
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
    // Each line pastes as it is: with `--data` when it is not the default.
    let program = match session.data_dir() {
        dir if dir == std::path::Path::new("steadfast-data") => session.program().to_owned(),
        dir => format!("{} --data {}", session.program(), dir.display()),
    };
    say!("\nNext:")?;
    say!("  {program} review approve {id} --note \"…\"      try again, with the note")?;
    say!("  {program} review show {id} --template > out.json   then edit out.json and")?;
    say!("  {program} review resolve {id} --output out.json   succeed it with that output")?;
    say!("  {program} review reject {id} --note \"…\"       dead-letter it")
}

pub(super) async fn cancel(session: &Session, out: Out, id: RunId) -> Result<(), CliError> {
    let ops = operate(session).await?;
    let run = ops.cancel(id, operator()).await.map_err(operate_error)?;
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
    let ops = operate(session).await?;
    let run = ops.signal(id, name, payload, operator()).await.map_err(operate_error)?;
    done(out, &format!("signalled `{name}` to"), &run)?;
    queued_hint(session, out, ops.as_ref(), &run)
}

pub(super) async fn note(
    session: &Session,
    out: Out,
    id: RunId,
    text: &str,
) -> Result<(), CliError> {
    let ops = operate(session).await?;
    let note = ops.note(id, operator(), text).await.map_err(operate_error)?;
    if out.json { out.print_json(&note) } else { say!("noted on {id} by {}", note.author) }
}

/// `review ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum ReviewCommand {
    /// List the runs held for review, with why.
    List,
    /// Show a run held for review: why, its input, and the output `resolve` expects (its
    /// JSON Schema, and a template filled from the run, ready to edit).
    Show {
        /// The run's id.
        id: RunId,
        /// Print only the template, to edit and give to `resolve`
        /// (`review show ID --template > out.json`).
        #[arg(long)]
        template: bool,
    },
    /// Approve a run: try again. It is queued with fresh attempt and fault budgets, and the
    /// note reaches its next attempt (the digest's classifier takes a label from it:
    /// `--note "label: security"`). To give the output yourself, use `resolve`.
    Approve {
        /// The run's id.
        id: RunId,
        /// A note for the run's next attempt and its history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a run: it goes to the dead letter queue.
    Reject {
        /// The run's id.
        id: RunId,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// Succeed a run with an output you provide, checked against the agent's output schema
    /// (`review show ID --template` prints one to start from).
    Resolve {
        /// The run's id.
        id: RunId,
        /// A file with the output as JSON, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        output: PathBuf,
    },
}
