//! The operator commands: see runs, replay them, review them, signal, cancel, annotate, and
//! the numbers (`stats`).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use steadfast::agents::{self, Classifier, Collector, Mailer, Reporter, Rules, Transport};
use steadfast::prelude::*;
use steadfast::store::{Actor, ListQuery, RunRecord};
use steadfast::view::{RunView, Stats};
use steadfast::{RuntimeError, StateMachine};

use crate::{CliError, Paths};

/// `runs ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this state (queued, processing, waiting_external, succeeded,
        /// failed_transient, failed_permanent, needs_review).
        #[arg(long)]
        state: Option<RunState>,
        /// Only runs of this agent (as registered: `digest.1.classifier`).
        #[arg(long)]
        agent: Option<String>,
        /// Only runs created within this long (`90s`, `15m`, `2h`, `7d`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one run: its record, input, output, history, effects, notes and stages.
    Show {
        /// The run's id.
        id: RunId,
    },
}

/// `review ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReviewCommand {
    /// List the runs held for review, with why.
    List,
    /// Approve a run: it is queued again with a fresh attempt budget.
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
    /// Succeed a run with an output you provide, checked against the agent's output schema.
    Resolve {
        /// The run's id.
        id: RunId,
        /// A file with the output as JSON, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        output: PathBuf,
    },
}

/// `dlq ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List the dead letters, newest first, with why.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Replay dead letters (each reported).
    Replay {
        /// Every dead letter (required: bulk replay is deliberate).
        #[arg(long, required = true)]
        all: bool,
        /// Only those of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Replay even if the agent's input type changed.
        #[arg(long)]
        force: bool,
    },
}

/// A duration like `90s`, `15m`, `2h` or `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 2h or 7d"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: give a unit: s, m, h or d (like 90s, 15m, 2h, 7d)")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Who the operator is: `$STEADFAST_OPERATOR`, else `$USER`, else `cli`.
fn operator() -> Actor {
    let name = std::env::var("STEADFAST_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "cli".to_owned());
    Actor::Operator(name)
}

/// Output settings: `--json`, and colour (a terminal, and no `NO_COLOR`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out {
    pub(crate) json: bool,
    color: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Out { json, color }
    }

    fn state(&self, state: RunState) -> String {
        let name = state.to_string();
        if !self.color {
            return name;
        }
        let code = match state {
            RunState::Succeeded => "32",
            RunState::FailedPermanent => "31",
            RunState::NeedsReview | RunState::FailedTransient => "33",
            RunState::Processing | RunState::WaitingExternal => "36",
            RunState::Queued => "0",
        };
        format!("\x1b[{code}m{name}\x1b[0m")
    }

    fn print_json(&self, value: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(value).expect("JSON output serializes"));
    }
}

/// Opens the existing store (a read or an operation never creates one).
fn existing_store(paths: &Paths) -> Result<SledStore, CliError> {
    let db = paths.db();
    if !db.is_dir() {
        return Err(CliError::store(format!(
            "no steadfast database at {} (run `steadfast demo` to make one, or point --data at yours)",
            db.display()
        )));
    }
    paths.open_store()
}

/// The flagship digest as this binary knows it (the demo's stages and names), for its
/// schemas and its diagram; the CLI never runs it.
fn known_digest(paths: &Paths) -> steadfast::pipeline::Pipeline<agents::Edition, agents::Receipt> {
    let mailer = Mailer::new(
        Transport::outbox(paths.data.join("outbox")),
        "steadfast@example.com",
        ["team@example.com"],
    )
    .expect("valid built-in addresses");
    agents::digest(
        Collector::folder(paths.data.join("sample-items")),
        Classifier::rules(Rules::builtin()),
        Reporter::new(paths.data.join("reports")),
        mailer,
    )
}

/// A runtime over the store for the operator calls, with the flagship digest registered so
/// its runs get their full checks; it never runs an attempt.
fn operator_runtime(paths: &Paths) -> Result<Runtime, CliError> {
    let store = existing_store(paths)?;
    Runtime::builder()
        .store(store)
        .pipeline(known_digest(paths))
        .build()
        .map_err(|e| CliError::store(e.to_string()))
}

/// A runtime error as the CLI reports it: refusals exit 1, the store 3.
fn runtime_error(error: RuntimeError) -> CliError {
    match error {
        RuntimeError::Store(store) => CliError::from_store(store),
        other => CliError::refused(other.to_string()),
    }
}

/// Reads JSON from a file or standard input (`-`).
fn read_json(path: &Path) -> Result<Value, CliError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("reading standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{} is not JSON: {e}", path.display())))
}

fn age(now: steadfast::clock::Timestamp, then: steadfast::clock::Timestamp) -> String {
    let secs = now.since(then).as_secs();
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The reason of a run's last move (why it is held, why it failed).
async fn last_reason(store: &dyn Store, run: &RunRecord) -> String {
    if let Some(error) = &run.last_error
        && run.state == RunState::FailedPermanent
    {
        return error.to_string();
    }
    store
        .history(run.id)
        .await
        .ok()
        .and_then(|h| h.last().map(|e| e.reason.clone()))
        .unwrap_or_default()
}

fn clip(text: &str, max: usize) -> String {
    let one: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one[..cut]),
        None => one,
    }
}

/// Prints a listing: `items` as JSON with `--json`; else `empty` when there are none, or the
/// rows `rows` makes as a table under `header`.
fn listing<T: serde::Serialize>(
    out: Out,
    items: &[T],
    empty: &str,
    header: &[&str],
    rows: impl FnOnce(&[T]) -> Vec<Vec<String>>,
) {
    if out.json {
        out.print_json(&items);
    } else if items.is_empty() {
        println!("{empty}");
    } else {
        table(header, &rows(items));
    }
}

/// Prints rows as aligned columns under `header`.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let width = |s: &str| s.chars().filter(|c| !c.is_control()).count() - visible_escape_len(s);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// The printable characters of ANSI colour codes (`[32m`), which take no column.
fn visible_escape_len(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s;
    while let Some(i) = rest.find('\x1b') {
        let tail = &rest[i + 1..];
        let end = tail.find('m').map(|e| e + 1).unwrap_or(0);
        n += end;
        rest = &tail[end..];
    }
    n
}

pub(crate) async fn runs(paths: &Paths, out: Out, command: RunsCommand) -> Result<(), CliError> {
    let store = existing_store(paths)?;
    match command {
        RunsCommand::List { state, agent, since, limit } => {
            let mut query = ListQuery::new().limit(limit.clamp(1, 10_000));
            if let Some(state) = state {
                query = query.state(state);
            }
            if let Some(agent) = agent {
                query = query.agent(agent);
            }
            if let Some(since) = since {
                query = query.since(steadfast::clock::Timestamp::from_millis(
                    store.now().as_millis().saturating_sub(since.as_millis() as u64),
                ));
            }
            let runs = store.list(query).await.map_err(CliError::from_store)?.runs;
            let now = store.now();
            listing(
                out,
                &runs,
                "no runs",
                &["RUN", "STATE", "AGENT", "ATTEMPT", "UPDATED", "LAST ERROR"],
                |runs| {
                    runs.iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                out.state(r.state),
                                r.agent.clone(),
                                r.attempt.to_string(),
                                age(now, r.updated_at),
                                r.last_error
                                    .as_ref()
                                    .map(|e| clip(&e.to_string(), 70))
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect()
                },
            );
            Ok(())
        }
        RunsCommand::Show { id } => show(&store, out, id).await,
    }
}

async fn show(store: &SledStore, out: Out, id: RunId) -> Result<(), CliError> {
    let view = RunView::load(store, id)
        .await
        .map_err(CliError::from_store)?
        .ok_or_else(|| CliError::refused(format!("no run {id}")))?;
    if out.json {
        out.print_json(&view);
        return Ok(());
    }
    let RunView { run, history, effects, notes, stages, .. } = view;
    println!("run       {}", run.id);
    println!("agent     {}", run.agent);
    println!("state     {}", out.state(run.state));
    println!("attempt   {}", run.attempt);
    println!("key       {}", run.idempotency_key);
    println!("created   {}", run.created_at);
    println!("updated   {}", run.updated_at);
    if let Some(parent) = run.parent {
        println!("parent    {parent} (stage {})", run.stage.unwrap_or(0));
    }
    if let Some(due) = run.due_at {
        println!("due       {due}");
    }
    if let Some(waiting) = &run.waiting_for {
        println!("waits for signal `{waiting}`");
    }
    if let Some(error) = &run.last_error {
        println!("error     {} fault: {}", error.fault, error.message);
        for cause in &error.chain {
            println!("          caused by: {cause}");
        }
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    println!("\ninput\n{}", indent(&pretty(&run.input)));
    if let Some(output) = &run.output {
        println!("\noutput\n{}", indent(&clip_lines(&pretty(output), 40)));
    }
    println!("\nhistory");
    for h in &history {
        let from = h.from.map(|s| s.to_string()).unwrap_or_else(|| "·".into());
        let mut line = format!(
            "  {:>3}  {}  {from} → {}  attempt {}  by {}",
            h.seq,
            h.at,
            out.state(h.to),
            h.attempt,
            h.actor
        );
        if !h.reason.is_empty() {
            line.push_str(&format!("  {}", clip(&h.reason, 160)));
        }
        println!("{line}");
        if let Some(error) = &h.error {
            println!("         {}", clip(&error.to_string(), 200));
        }
    }
    if !effects.is_empty() {
        println!("\neffects");
        for e in &effects {
            println!(
                "  {}  attempt {}  {}  {}",
                e.name,
                e.attempt,
                e.recorded_at,
                clip(&e.result.to_string(), 100)
            );
        }
    }
    if !notes.is_empty() {
        println!("\nnotes");
        for n in &notes {
            println!("  {}  {}  {}", n.at, n.author, n.text);
        }
    }
    if !stages.is_empty() {
        println!("\nstages");
        for s in &stages {
            println!("  {}  {}  {}", s.id, out.state(s.state), s.agent);
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn clip_lines(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= max {
        return text.to_owned();
    }
    format!("{}\n… {} more lines (--json shows all)", lines[..max].join("\n"), lines.len() - max)
}

/// Prints the outcome of an operation on one run.
fn done(out: Out, verb: &str, run: &RunRecord) {
    if out.json {
        out.print_json(run);
    } else {
        println!("{verb} {}: now {}", run.id, out.state(run.state));
    }
}

pub(crate) async fn replay(
    paths: &Paths,
    out: Out,
    id: RunId,
    force: bool,
) -> Result<(), CliError> {
    let rt = operator_runtime(paths)?;
    let run = rt.replay(id, operator(), force).await.map_err(runtime_error)?;
    done(out, "replayed", &run);
    Ok(())
}

pub(crate) async fn review(
    paths: &Paths,
    out: Out,
    command: ReviewCommand,
) -> Result<(), CliError> {
    let rt = operator_runtime(paths)?;
    let store = rt.store().clone();
    match command {
        ReviewCommand::List => {
            let runs = store
                .list(ListQuery::new().state(RunState::NeedsReview).limit(10_000))
                .await
                .map_err(CliError::from_store)?
                .runs;
            let mut items = Vec::new();
            for r in &runs {
                let reason = last_reason(&*store, r).await;
                items.push(json!({"id": r.id, "agent": r.agent, "updated_at": r.updated_at, "reason": reason}));
            }
            let now = store.now();
            listing(
                out,
                &items,
                "nothing waits for review",
                &["RUN", "AGENT", "HELD", "WHY"],
                |items| {
                    items
                        .iter()
                        .zip(&runs)
                        .map(|(item, r)| {
                            let reason = item["reason"].as_str().unwrap_or_default();
                            vec![
                                r.id.to_string(),
                                r.agent.clone(),
                                age(now, r.updated_at),
                                clip(reason, 110),
                            ]
                        })
                        .collect()
                },
            );
            Ok(())
        }
        ReviewCommand::Approve { id, note } => {
            let run = rt.approve(id, operator(), note.as_deref()).await.map_err(runtime_error)?;
            done(out, "approved", &run);
            Ok(())
        }
        ReviewCommand::Reject { id, note } => {
            let run = rt.reject(id, operator(), note.as_deref()).await.map_err(runtime_error)?;
            done(out, "rejected", &run);
            Ok(())
        }
        ReviewCommand::Resolve { id, output } => {
            let value = read_json(&output)?;
            let run = rt.resolve(id, operator(), value).await.map_err(runtime_error)?;
            done(out, "resolved", &run);
            Ok(())
        }
    }
}

pub(crate) async fn cancel(paths: &Paths, out: Out, id: RunId) -> Result<(), CliError> {
    let rt = operator_runtime(paths)?;
    let run = rt.cancel(id, operator()).await.map_err(runtime_error)?;
    done(out, "cancelled", &run);
    Ok(())
}

pub(crate) async fn signal(
    paths: &Paths,
    out: Out,
    id: RunId,
    name: &str,
    payload: Option<PathBuf>,
) -> Result<(), CliError> {
    let payload = match payload {
        Some(path) => read_json(&path)?,
        None => Value::Null,
    };
    let rt = operator_runtime(paths)?;
    let run = rt.signal(id, name, payload, operator()).await.map_err(runtime_error)?;
    done(out, &format!("signalled `{name}` to"), &run);
    Ok(())
}

pub(crate) async fn note(paths: &Paths, out: Out, id: RunId, text: &str) -> Result<(), CliError> {
    let rt = operator_runtime(paths)?;
    if rt.store().get(id).await.map_err(CliError::from_store)?.is_none() {
        return Err(CliError::refused(format!("no run {id}")));
    }
    let note = rt.note(id, operator(), text).await.map_err(runtime_error)?;
    if out.json {
        out.print_json(&note);
    } else {
        println!("noted on {id} by {}", note.author);
    }
    Ok(())
}

pub(crate) async fn dlq(paths: &Paths, out: Out, command: DlqCommand) -> Result<(), CliError> {
    match command {
        DlqCommand::List { limit } => {
            let store = existing_store(paths)?;
            let dead = store
                .dead_letters(None, limit.clamp(1, 10_000))
                .await
                .map_err(CliError::from_store)?;
            let now = store.now();
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
            );
            Ok(())
        }
        DlqCommand::Replay { all: _, agent, force } => {
            let rt = operator_runtime(paths)?;
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
                            println!(
                                "replayed {} ({}): now {}",
                                run.id,
                                run.agent,
                                out.state(run.state)
                            );
                        }
                        report.push(json!({"id": run.id, "agent": run.agent, "replayed": true}));
                    }
                    Err(error) => {
                        refused += 1;
                        if !out.json {
                            println!("refused  {} ({}): {error}", d.run, d.agent);
                        }
                        report.push(json!({"id": d.run, "agent": d.agent, "replayed": false, "error": error.to_string()}));
                    }
                }
            }
            if out.json {
                out.print_json(&report);
            } else {
                println!("{replayed} replayed, {refused} refused");
            }
            if refused > 0 {
                Err(CliError::refused(format!("{refused} dead letter(s) could not be replayed")))
            } else {
                Ok(())
            }
        }
    }
}

/// Rates and latencies per agent over the runs created within `window`.
pub(crate) async fn stats(paths: &Paths, out: Out, window: Duration) -> Result<(), CliError> {
    let store = existing_store(paths)?;
    let stats = Stats::compute(&store, window).await.map_err(CliError::from_store)?;
    if out.json {
        out.print_json(&stats);
        return Ok(());
    }
    if stats.agents.is_empty() {
        println!("no runs in the last {}", humantime(window));
        return Ok(());
    }
    let show =
        |r: Option<f64>| r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "-".into());
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = stats
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent.clone(),
                a.runs.to_string(),
                show(a.success_rate),
                show(a.retry_rate),
                show(a.dead_letter_rate),
                a.count(RunState::NeedsReview).to_string(),
                ms(a.p50_ms),
                ms(a.p95_ms),
            ]
        })
        .collect();
    println!("runs created in the last {}", humantime(window));
    table(&["AGENT", "RUNS", "SUCCESS", "RETRIED", "DEAD", "REVIEW", "P50", "P95"], &rows);
    Ok(())
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The diagram of the lifecycle, or of a pipeline's stages.
pub(crate) fn graph(paths: &Paths, target: &str, dot: bool) -> Result<(), CliError> {
    if target == "lifecycle" {
        print!("{}", if dot { RunState::dot() } else { RunState::mermaid() });
        return Ok(());
    }
    if target == "digest" {
        if dot {
            return Err(CliError::usage("pipelines are drawn in Mermaid only; drop --format dot"));
        }
        print!("{}", known_digest(paths).mermaid());
        return Ok(());
    }
    Err(CliError::usage(format!(
        "no pipeline named `{target}` is known to this binary; try `lifecycle` or `digest`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_a_sane_size() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("24").unwrap_err().contains("give a unit"));
        assert!(parse_duration("2w").unwrap_err().contains("give a unit"));
        assert!(parse_duration("h").unwrap_err().contains("is not a duration"));
        assert!(parse_duration("99999999999999999d").unwrap_err().contains("too long"));
    }
}
