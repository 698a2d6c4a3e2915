//! `steadfast demo`: the digest pipeline on bundled sample items, offline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use steadfast::agents::{
    self, ChatClient, Classifier, Collector, Edition, Mailer, Receipt, Report, Reporter, Rules,
    Transport,
};
use steadfast::prelude::*;
use steadfast::store::{ListQuery, RunRecord};

use crate::samples::SAMPLES;
use crate::{CliError, Paths};

/// What `steadfast demo` was asked to do.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Label with the OpenAI-compatible model from the environment (STEADFAST_LLM_BASE_URL,
    /// STEADFAST_LLM_MODEL, STEADFAST_LLM_API_KEY) instead of the bundled rules.
    #[arg(long)]
    llm: bool,
    /// Mail through the SMTP server from the environment (STEADFAST_SMTP_HOST, ...) instead of
    /// the file outbox.
    #[arg(long)]
    smtp: bool,
    /// The digest's edition: the same edition is collected, reported and mailed once.
    #[arg(long, default_value = "demo")]
    edition: String,
    /// Read items from this folder instead of the bundled samples.
    #[arg(long, value_name = "DIR")]
    items: Option<PathBuf>,
    /// Label with the rules in this TOML file instead of the bundled ones (see
    /// `src/agents/rules.toml` for the format).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Send the digest to this address (repeatable).
    #[arg(long = "to", value_name = "ADDRESS", default_value = "team@example.com")]
    to: Vec<String>,
}

/// Writes the bundled samples into `dir`, leaving files that exist alone (the user may have
/// edited them).
fn unpack_samples(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut written = 0;
    for (name, bytes) in SAMPLES {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(path, bytes)?;
            written += 1;
        }
    }
    Ok(written)
}

pub(crate) async fn run(paths: &Paths, args: DemoArgs) -> Result<(), CliError> {
    let items = match &args.items {
        Some(dir) => dir.clone(),
        None => {
            let dir = paths.data.join("sample-items");
            unpack_samples(&dir).map_err(|e| {
                CliError::store(format!("cannot write the sample items to {}: {e}", dir.display()))
            })?;
            dir
        }
    };
    // A model is asked two items at a time (local servers answer one request at a time;
    // more would only queue there and run into the client's timeout).
    let (rules, rules_name) = match &args.rules {
        Some(path) => (
            Rules::load(path).map_err(|e| CliError::usage(e.to_string()))?,
            format!("the rules in {}", path.display()),
        ),
        None => (Rules::builtin(), "the bundled rules".to_owned()),
    };
    let (classifier, labeller, concurrency) = if args.llm {
        let client = ChatClient::from_env().map_err(CliError::usage)?.max_tokens(160);
        let labeller = format!("model `{}` ({rules_name} as the fallback)", client.model());
        (Classifier::llm(client).fallback(Some(rules)), labeller, 2)
    } else {
        (Classifier::rules(rules), rules_name, 8)
    };
    let transport = if args.smtp {
        Transport::smtp_from_env().map_err(CliError::usage)?
    } else {
        Transport::outbox(paths.data.join("outbox"))
    };
    let mail = match &transport {
        Transport::Outbox(dir) => format!("outbox {}", dir.display()),
        Transport::Smtp { host, port, .. } => format!("SMTP {host}:{port}"),
        _ => "elsewhere".to_owned(),
    };
    let mailer =
        Mailer::new(transport, "steadfast-demo@example.com", args.to.iter().map(String::as_str))
            .map_err(|e| CliError::usage(e.to_string()))?;
    let pipeline = agents::digest_with(
        Collector::folder(&items),
        classifier,
        Reporter::new(paths.data.join("reports")).title(format!("Digest {}", args.edition)),
        mailer,
        concurrency,
    );

    let store = paths.open_store()?;
    let rt = Runtime::builder()
        .shared_store(store)
        .workers(4)
        .lease(Duration::from_secs(3))
        .pipeline(pipeline)
        .build()
        .map_err(|e| CliError::refused(e.to_string()))?;

    println!("steadfast demo: collector → classifier → reporter → mailer");
    println!("  data   {} (sled store in {})", paths.data.display(), paths.db().display());
    println!("  items  {}", items.display());
    println!("  labels by {labeller}");
    println!("  mail   {mail}");
    println!();

    let started = Instant::now();
    let submitted = rt
        .submit("digest", Edition::new(&args.edition))
        .await
        .map_err(|e| CliError::refused(e.to_string()))?;
    let before = rt.store().get(submitted.id).await.map_err(CliError::from_store)?;
    let already = before.as_ref().is_some_and(|r| r.state.is_terminal());
    if already {
        println!(
            "Edition `{}` was already run as {} ({}): nothing new to do, no mail sent.",
            args.edition,
            submitted.id,
            before.as_ref().map(|r| r.state.to_string()).unwrap_or_default()
        );
        // Runs an operator approved or replayed since (`steadfast review approve`, `replay`)
        // are waiting for a worker: this is one.
        let counts = rt.store().counts().await.map_err(CliError::from_store)?;
        let waiting = counts.get(RunState::Queued) + counts.get(RunState::FailedTransient);
        if waiting > 0 {
            println!("Working off {waiting} run(s) queued by operators (approved or replayed).");
            rt.run_until_idle().await.map_err(|e| CliError::store(e.to_string()))?;
        }
        println!();
    } else {
        if !submitted.created {
            println!("Resuming the digest run {} where it stopped.\n", submitted.id);
        }
        let progress = tokio::spawn(show_progress(rt.store().clone(), submitted.id));
        let result = rt.run_until_idle().await;
        progress.abort();
        let _ = progress.await;
        result.map_err(|e| CliError::store(e.to_string()))?;
    }
    summarize(&rt, submitted.id, if already { None } else { Some(started.elapsed()) }, paths)
        .await?;
    let state = rt.store().get(submitted.id).await.map_err(CliError::from_store)?.map(|r| r.state);
    match state {
        Some(RunState::Succeeded) => Ok(()),
        Some(state) => Err(CliError::refused(format!(
            "the digest run {} ended `{state}`, not `succeeded` (see above)",
            submitted.id
        ))),
        None => Err(CliError::store(format!("the digest run {} vanished", submitted.id))),
    }
}

/// A progress bar over the pipeline's stages on a terminal; elsewhere (a log, CI) a line
/// every 10 s, so a slow run (a model) is not silent.
async fn show_progress(store: std::sync::Arc<dyn Store>, run: RunId) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos}/{len}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    loop {
        if let Ok(page) = store.list(ListQuery::new().parent(run).limit(1000)).await {
            let stage = page.runs.iter().filter_map(|r| r.stage).max().unwrap_or(0);
            let items: Vec<&RunRecord> = page.runs.iter().filter(|r| r.stage == Some(1)).collect();
            let done = items
                .iter()
                .filter(|r| {
                    !matches!(
                        r.state,
                        RunState::Queued | RunState::Processing | RunState::FailedTransient
                    )
                })
                .count();
            let message =
                ["collecting", "classifying", "reporting", "mailing"][stage.min(3) as usize];
            bar.set_message(message);
            bar.set_length(items.len().max(1) as u64);
            bar.set_position(done as u64);
            if !terminal && last_line.elapsed() >= Duration::from_secs(10) {
                eprintln!("… {message}: {done} of {} items classified", items.len());
                last_line = std::time::Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The children of `run`, oldest first.
async fn children(rt: &Runtime, run: RunId) -> Result<Vec<RunRecord>, CliError> {
    let page = rt
        .store()
        .list(ListQuery::new().parent(run).oldest_first().limit(10_000))
        .await
        .map_err(CliError::from_store)?;
    Ok(page.runs)
}

async fn summarize(
    rt: &Runtime,
    run: RunId,
    took: Option<Duration>,
    paths: &Paths,
) -> Result<(), CliError> {
    let store = rt.store();
    let record =
        store.get(run).await.map_err(CliError::from_store)?.ok_or_else(|| {
            CliError::store(format!("the digest run {run} vanished from the store"))
        })?;
    let stages = children(rt, run).await?;
    let took = took.map(|d| format!(" in {:.1} s", d.as_secs_f64())).unwrap_or_default();
    println!("Digest run {run}: {}{took}", record.state);

    let mut by_state: Vec<(RunState, usize)> = Vec::new();
    for r in std::iter::once(&record).chain(&stages) {
        match by_state.iter_mut().find(|(s, _)| *s == r.state) {
            Some((_, n)) => *n += 1,
            None => by_state.push((r.state, 1)),
        }
    }
    by_state.sort_by_key(|(s, _)| s.index());
    let shown: Vec<String> = by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("  runs     {} (the pipeline and its {} stage runs)", shown.join(" · "), stages.len());

    let output = |stage: u32| -> Option<serde_json::Value> {
        stages
            .iter()
            .find(|r| r.stage == Some(stage) && r.state == RunState::Succeeded)?
            .output
            .clone()
    };
    if let Some(report) = output(2).and_then(|v| serde_json::from_value::<Report>(v).ok()) {
        println!("  report   {}", report.markdown_path);
        println!("           {}", report.html_path);
        let counts: Vec<String> = report.counts.iter().map(|(l, n)| format!("{l} {n}")).collect();
        match report.total {
            0 => println!("  labels   none: no item was labelled"),
            n => println!("  labels   {} ({n} items)", counts.join(" · ")),
        }
    }
    if let Some(receipt) = output(3).and_then(|v| serde_json::from_value::<Receipt>(v).ok()) {
        match &receipt.path {
            _ if !receipt.sent => println!("  mail     not sent: the digest is empty"),
            Some(path) => println!("  mail     {path}"),
            None => println!(
                "  mail     sent via {} to {}",
                receipt.transport,
                receipt.recipients.join(", ")
            ),
        }
        if receipt.sent {
            println!("           Subject: {}", receipt.subject);
            println!("           Message-ID: {}", receipt.message_id);
        }
    }
    if let Some(error) = &record.last_error
        && record.state != RunState::Succeeded
    {
        println!("  why      {error}");
    }

    let review: Vec<&RunRecord> =
        stages.iter().filter(|r| r.state == RunState::NeedsReview).collect();
    if !review.is_empty() {
        println!("\nHeld for review ({}), left out of this digest:", review.len());
        for r in review {
            let reason = store
                .history(r.id)
                .await
                .ok()
                .and_then(|h| h.last().map(|e| e.reason.clone()))
                .unwrap_or_default();
            println!("  {}  {reason}", r.id);
        }
    }
    let dead: Vec<&RunRecord> =
        stages.iter().filter(|r| r.state == RunState::FailedPermanent).collect();
    if !dead.is_empty() {
        println!("\nDead letters ({}):", dead.len());
        for r in dead {
            let why = r.last_error.as_ref().map(|e| e.to_string()).unwrap_or_default();
            println!("  {}  {why}", r.id);
        }
    }
    if let Some(collector) = stages.iter().find(|r| r.stage == Some(0)) {
        let notes = store.notes(collector.id).await.map_err(CliError::from_store)?;
        if !notes.is_empty() {
            println!("\nSkipped while collecting ({}):", notes.len());
            for note in notes {
                println!("  {}", note.text.strip_prefix("skipped ").unwrap_or(&note.text));
            }
        }
    }

    let data = paths.data.display();
    println!("\nNext:");
    println!("  steadfast runs list --data {data}            every run, newest first");
    println!(
        "  steadfast runs show <RUN> --data {data}      a run's input, output, history and effects"
    );
    println!("  steadfast review list --data {data}          what waits for a person");
    println!("  steadfast review resolve <RUN> --output label.json --data {data}");
    println!(
        "  steadfast demo --data {data}                 again: nothing new is done, no mail is sent"
    );
    Ok(())
}
