//! `runs list` and `runs show`.

use std::time::Duration;

use super::input::parse_duration;
use super::output::say;
use super::output::{Out, age, clip, clip_lines, indent, table};
use super::remote::{operate, operate_error};
use super::{CliError, Session};
use crate::lifecycle::{RunId, RunState};
use crate::runtime::Operate;
use crate::view::{RunFilter, RunView, is_internal_effect};

pub(super) async fn runs(
    session: &Session,
    out: Out,
    command: RunsCommand,
) -> Result<(), CliError> {
    let ops = operate(session).await?;
    match command {
        RunsCommand::List { state, agent, since, limit, cursor } => {
            let mut filter = RunFilter::new().limit(u32::from(limit));
            if let Some(state) = state {
                filter = filter.state(state);
            }
            if let Some(agent) = agent {
                filter = filter.agent(resolve_agent(session, ops.as_ref(), &agent).await?);
            }
            if let Some(since) = since {
                filter = filter.since(since);
            }
            if let Some(cursor) = cursor {
                filter = filter.cursor(cursor);
            }
            let page = ops.runs(filter).await.map_err(operate_error)?;
            list(out, page.runs, page.next, crate::clock::Timestamp::now())
        }
        RunsCommand::Show { id } => show(out, ops.run(id).await.map_err(operate_error)?),
    }
}

fn list(
    out: Out,
    runs: Vec<crate::store::RunRecord>,
    next: Option<RunId>,
    now: crate::clock::Timestamp,
) -> Result<(), CliError> {
    let page = crate::store::Page { runs, next };
    if out.json {
        return out.print_json(&serde_json::json!({"runs": page.runs, "next": page.next}));
    }
    if page.runs.is_empty() {
        return say!("no runs");
    }
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                out.state(r.state),
                r.agent.clone(),
                r.attempt.to_string(),
                age(now, r.updated_at),
                r.last_error.as_ref().map(|e| clip(&e.to_string(), 70)).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["RUN", "STATE", "AGENT", "ATTEMPT", "UPDATED", "LAST ERROR"], &rows)?;
    if let Some(next) = page.next {
        say!("… more runs: add --cursor {next}")?;
    }
    Ok(())
}

/// The registered agent `asked` names: itself, or the one pipeline stage it is the short name
/// of; `None` if it names none (it may still be another program's agent).
pub(super) fn registered_agent(session: &Session, asked: &str) -> Result<Option<String>, CliError> {
    let registered = session.registrations()?;
    let names = registered.agents();
    if names.contains(&asked) {
        return Ok(Some(asked.to_owned()));
    }
    let suffix = format!(".{asked}");
    let matching: Vec<&str> = names.iter().copied().filter(|n| n.ends_with(&suffix)).collect();
    match matching.as_slice() {
        [one] => Ok(Some((*one).to_owned())),
        [] => Ok(None),
        many => Err(CliError::usage(format!(
            "`{asked}` is a stage of several pipelines: give one of {}",
            many.join(", ")
        ))),
    }
}

/// The refusal of an agent name that is neither registered nor has runs.
fn unknown_agent(session: &Session, asked: &str) -> Result<CliError, CliError> {
    let registered = session.registrations()?;
    let names = registered.agents();
    Ok(CliError::usage(format!(
        "no agent `{asked}`: no runs of it, and {} registers {}",
        session.program(),
        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
    )))
}

/// The agent name `asked` stands for: a registered name as it is; a short name that exactly
/// one registered pipeline stage ends with (`mailer` → `digest.3.mailer`); else, if the store
/// has no runs of it, a refusal that names the registered agents.
pub(super) async fn resolve_agent(
    session: &Session,
    ops: &dyn Operate,
    asked: &str,
) -> Result<String, CliError> {
    if let Some(name) = registered_agent(session, asked)? {
        return Ok(name);
    }
    // Runs of an agent this program does not register (another program's) are listed too.
    let any = ops.runs(RunFilter::new().agent(asked).limit(1)).await.map_err(operate_error)?;
    if any.runs.is_empty() {
        return Err(unknown_agent(session, asked)?);
    }
    Ok(asked.to_owned())
}

fn show(out: Out, view: RunView) -> Result<(), CliError> {
    if out.json {
        return out.print_json(&view);
    }
    let RunView { run, history, effects, notes, stages, .. } = view;
    say!("run       {}", run.id)?;
    say!("agent     {}", run.agent)?;
    say!("state     {}", out.state(run.state))?;
    say!("attempt   {}", run.attempt)?;
    say!("key       {}", run.idempotency_key)?;
    say!("created   {}", run.created_at)?;
    say!("updated   {}", run.updated_at)?;
    if let Some(parent) = run.parent {
        say!("parent    {parent} (stage {})", run.stage.unwrap_or(0))?;
    }
    if let Some(due) = run.due_at {
        say!("due       {due}")?;
    }
    if let Some(waiting) = &run.waiting_for {
        say!("waits for signal `{waiting}`")?;
    }
    if let Some(error) = &run.last_error {
        say!("error     {} fault: {}", error.fault, error.message)?;
        for cause in &error.chain {
            say!("          caused by: {cause}")?;
        }
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    say!("\ninput\n{}", indent(&pretty(&run.input)))?;
    if let Some(output) = &run.output {
        say!("\noutput\n{}", indent(&clip_lines(&pretty(output), 40)))?;
    }
    say!("\nhistory")?;
    for h in &history {
        let from = h.from.map(|s| s.to_string()).unwrap_or_else(|| "·".into());
        // A pipeline's wait on its stages gives its attempt back: no "attempt 0".
        let attempt =
            if h.attempt > 0 { format!("  attempt {}", h.attempt) } else { String::new() };
        let mut line = format!(
            "  {:>3}  {}  {from} → {}{attempt}  by {}",
            h.seq,
            h.at,
            out.state(h.to),
            h.actor
        );
        if !h.reason.is_empty() {
            line.push_str(&format!("  {}", clip(&h.reason, 160)));
        }
        say!("{line}")?;
        if let Some(error) = &h.error {
            say!("         {}", clip(&error.to_string(), 200))?;
        }
    }
    let (internal, own): (Vec<_>, Vec<_>) =
        effects.iter().partition(|e| is_internal_effect(&e.name));
    if !own.is_empty() {
        say!("\neffects")?;
        for e in own {
            say!(
                "  {}  attempt {}  {}  {}",
                e.name,
                e.attempt,
                e.recorded_at,
                clip(&e.result.to_string(), 100)
            )?;
        }
    }
    if !internal.is_empty() {
        say!("\nsteadfast's own journal")?;
        for e in internal {
            say!("  {}  attempt {}  {}", e.name, e.attempt, e.recorded_at)?;
        }
    }
    if !notes.is_empty() {
        say!("\nnotes")?;
        for n in &notes {
            say!("  {}  {}  {}", n.at, n.author, n.text)?;
        }
    }
    if !stages.is_empty() {
        say!("\nstages")?;
        for s in &stages {
            say!("  {}  {}  {}", s.id, out.state(s.state), s.agent)?;
        }
    }
    Ok(())
}

/// `runs ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this state (queued, processing, waiting_external, succeeded,
        /// failed_transient, failed_permanent, needs_review).
        #[arg(long)]
        state: Option<RunState>,
        /// Only runs of this agent: its registered name (`digest.1.classifier`), or a
        /// pipeline stage's short name (`classifier`) when only one stage has it.
        #[arg(long)]
        agent: Option<String>,
        /// Only runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many runs on a page (1 to 10000); the last line says how to get the
        /// next page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Go on from where an earlier page stopped (the `--cursor` it printed).
        #[arg(long, value_name = "RUN")]
        cursor: Option<RunId>,
    },
    /// Show one run: its record, input, output, history, effects, notes and stages.
    Show {
        /// The run's id.
        id: RunId,
    },
}
