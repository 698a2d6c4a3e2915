//! `steadfast demo`: the digest pipeline on bundled sample items, offline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use steadfast::agents::{
    self, ChatClient, Classifier, Collector, DEFAULT_MAX_ITEMS, Edition, Mailer, Reporter, Rules,
    Transport,
};
use steadfast::cli::{CliError, Session};
use steadfast::prelude::*;
use steadfast::store::{ListQuery, RunRecord};

use crate::samples::SAMPLES;
use crate::summary::Summary;

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
    /// Keep at most this many items in the edition (the rest are left out, and the summary
    /// says how many).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ITEMS)]
    max_items: usize,
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

/// What the demo runs with, from its arguments (checked before anything is written).
struct Setup {
    pipeline: steadfast::pipeline::Pipeline<Edition, agents::Receipt>,
    items: PathBuf,
    labeller: String,
    mail: String,
    llm: Option<String>,
}

fn setup(session: &Session, args: &DemoArgs) -> Result<Setup, CliError> {
    let data = session.data_dir();
    let items = args.items.clone().unwrap_or_else(|| data.join("sample-items"));
    let (rules, rules_name) = match &args.rules {
        Some(path) => (
            Rules::load(path).map_err(|e| CliError::usage(e.to_string()))?,
            format!("the rules in {}", path.display()),
        ),
        None => (Rules::builtin(), "the bundled rules".to_owned()),
    };
    // A model is asked two items at a time (local servers answer one request at a time;
    // more would only queue there and run into the client's timeout).
    let (classifier, labeller, concurrency, llm) = if args.llm {
        let client = ChatClient::from_env().map_err(CliError::usage)?.max_tokens(160);
        let labeller = format!("model `{}` ({rules_name} as the fallback)", client.model());
        let model = client.model().to_owned();
        (Classifier::llm(client).fallback(Some(rules)), labeller, 2, Some(model))
    } else {
        (Classifier::rules(rules), rules_name, 8, None)
    };
    let transport = if args.smtp {
        Transport::smtp_from_env().map_err(CliError::usage)?
    } else {
        Transport::outbox(data.join("outbox"))
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
        Collector::folder(&items).max_items(args.max_items),
        classifier,
        Reporter::new(data.join("reports")).title(format!("Digest {}", args.edition)),
        mailer,
        concurrency,
    );
    Ok(Setup { pipeline, items, labeller, mail, llm })
}

pub(crate) async fn run(session: &Session, args: DemoArgs) -> Result<(), CliError> {
    let json = session.json();
    // Every argument is checked, then the store opened, before anything is written.
    let Setup { pipeline, items, labeller, mail, llm } = setup(session, &args)?;
    let store = session.open_store()?;
    if args.items.is_none() {
        unpack_samples(&items).map_err(|e| {
            CliError::store(format!("cannot write the sample items to {}: {e}", items.display()))
        })?;
    }
    let rt = Runtime::builder()
        .shared_store(store)
        .workers(4)
        .lease(Duration::from_secs(3))
        .pipeline(pipeline)
        .build()
        .map_err(|e| CliError::refused(e.to_string()))?;

    if !json {
        say!("steadfast demo: collector → classifier → reporter → mailer")?;
        say!(
            "  data   {} (sled store in {})",
            session.data_dir().display(),
            session.store_dir().display()
        )?;
        say!("  items  {}", items.display())?;
        say!("  labels by {labeller}")?;
        say!("  mail   {mail}")?;
        say!()?;
    }

    let started = Instant::now();
    let submitted = rt
        .submit("digest", Edition::new(&args.edition))
        .await
        .map_err(|e| CliError::refused(e.to_string()))?;
    let before = rt.store().get(submitted.id).await.map_err(CliError::from_store)?;
    // Settled (or held for review): nothing runs it again until an operator replays it.
    let already = before.as_ref().filter(|r| {
        matches!(r.state, RunState::Succeeded | RunState::FailedPermanent | RunState::NeedsReview)
    });
    let mut worked_off = 0;
    if let Some(before) = already {
        // Runs an operator approved or replayed since (`steadfast review approve`, `replay`)
        // wait for a worker: this is one.
        let counts = rt.store().counts().await.map_err(CliError::from_store)?;
        worked_off = counts.get(RunState::Queued) + counts.get(RunState::FailedTransient);
        if !json {
            already_said(session, &args, before)?;
            if worked_off > 0 {
                say!(
                    "Working off {worked_off} run(s) queued by operators (approved or replayed)."
                )?;
            }
            say!()?;
        }
        if worked_off > 0 {
            rt.run_until_idle().await.map_err(|e| CliError::store(e.to_string()))?;
        }
    } else {
        if !submitted.created && !json {
            say!(
                "Resuming the digest run {} (edition `{}`) where it stopped, with the items in {}.\n",
                submitted.id,
                args.edition,
                items.display()
            )?;
        }
        let progress =
            (!json).then(|| tokio::spawn(show_progress(rt.store().clone(), submitted.id)));
        let result = rt.run_until_idle().await;
        if let Some(progress) = progress {
            progress.abort();
            let _ = progress.await;
        }
        result.map_err(|e| CliError::store(e.to_string()))?;
    }
    let took = already.is_none().then(|| started.elapsed());
    let summary = Summary::load(&rt, submitted.id, &args.edition, took, llm.as_deref()).await?;
    if json {
        print_json(&summary, already.is_some(), worked_off)?;
    } else {
        summary.print(session)?;
    }
    match summary.state {
        RunState::Succeeded => Ok(()),
        state => Err(CliError::refused(format!(
            "the digest run {} ended `{state}`, not `succeeded` (see above)",
            submitted.id
        ))),
    }
}

/// Prints the JSON document of `--json`: the summary, and whether the edition had run before.
fn print_json(summary: &Summary, already: bool, worked_off: u64) -> Result<(), CliError> {
    let mut value = serde_json::to_value(summary)
        .map_err(|e| CliError::store(format!("cannot write the summary as JSON: {e}")))?;
    value["already_run"] = already.into();
    value["operator_runs_worked_off"] = worked_off.into();
    say!("{}", serde_json::to_string_pretty(&value).map_err(|e| CliError::store(e.to_string()))?)
}

/// What to say when the edition was run before: nothing new is done, and what to do for
/// new work (a failed or empty edition is not silently "done").
fn already_said(session: &Session, args: &DemoArgs, before: &RunRecord) -> Result<(), CliError> {
    let data = session.data_dir().display();
    let items =
        args.items.as_ref().map(|d| format!(" --items {}", d.display())).unwrap_or_default();
    match before.state {
        RunState::Succeeded => {
            say!(
                "Edition `{}` was already run as {} (succeeded): nothing new to do, no mail sent.",
                args.edition,
                before.id
            )?;
            say!(
                "  To collect again, run a new edition: steadfast demo --edition <NAME>{items} --data {data}"
            )
        }
        state => {
            let why = before.last_error.as_ref().map(|e| e.to_string()).unwrap_or_default();
            say!(
                "Edition `{}` was already run as {} and ended `{state}`: {why}",
                args.edition,
                before.id
            )?;
            say!("  Nothing new is done. Either run a new edition:")?;
            say!("    steadfast demo --edition <NAME>{items} --data {data}")?;
            say!(
                "  or replay this one (its failed stage too) and run it with the source given now:"
            )?;
            say!("    steadfast replay {} --data {data}", before.id)?;
            say!("    steadfast demo --edition {}{items} --data {data}", args.edition)
        }
    }
}

/// A progress bar over the pipeline's stages on a terminal; elsewhere (a log, CI) a line
/// when the stage or the count changed, at most every 10 s, so a slow run (a model) is not
/// silent and a retried stage does not repeat itself.
async fn show_progress(store: std::sync::Arc<dyn Store>, run: RunId) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut last_said = None;
    let bar = indicatif::ProgressBar::new(1);
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
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
            let now = (message, done);
            if !terminal && last_said != Some(now) && last_line.elapsed() >= Duration::from_secs(10)
            {
                let _ = writeln!(
                    std::io::stderr(),
                    "… {message}: {done} of {} items classified",
                    items.len()
                );
                last_line = Instant::now();
                last_said = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
