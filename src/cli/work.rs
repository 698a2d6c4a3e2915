//! `work`: run the program's workers over the store.

use std::time::{Duration, Instant};

use serde_json::json;

use super::output::Out;
use super::output::say;
use super::{CliError, Session, runtime_error};
use crate::lifecycle::RunState;
use crate::machine::StateMachine;

/// What `work` was asked to do.
#[derive(Debug, clap::Args)]
pub(super) struct WorkArgs {
    /// Keep working (and wait for new runs) until SIGINT or SIGTERM instead of stopping when
    /// no work is left.
    #[arg(long)]
    until_signal: bool,
    /// How many runs at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
    /// With --until-signal: prune runs at rest that have not moved for this long (as the
    /// `prune` command does), at start and then every --prune-every.
    #[arg(long, value_name = "AGE", value_parser = super::input::parse_duration, requires = "until_signal")]
    prune_older_than: Option<Duration>,
    /// A state --prune-older-than prunes (repeat for several; default succeeded).
    #[arg(long = "prune-state", value_name = "STATE", requires = "prune_older_than")]
    prune_states: Vec<RunState>,
    /// How often --prune-older-than prunes.
    #[arg(long, value_name = "PERIOD", default_value = "1h", value_parser = super::input::parse_duration)]
    prune_every: Duration,
    #[command(flatten)]
    notify: super::notify::NotifyArgs,
}

pub(super) async fn work(session: &Session, args: WorkArgs) -> Result<(), CliError> {
    let out: Out = session.out;
    if super::remote::find(session).await?.is_some() {
        return Err(CliError::refused(
            "a process works on this data directory already (it answers on its socket, steadfast.sock): its workers run",
        ));
    }
    let store = session.open_store()?;
    let mut builder = session.runtime(store.clone()).workers(usize::from(args.workers));
    if let Some(older_than) = args.prune_older_than {
        let policy = super::prune::policy(older_than, args.prune_states)?;
        builder = builder.retention(policy, args.prune_every);
    }
    let (builder, notifiers) = args.notify.apply(builder, session.data_dir(), None)?;
    let rt = std::sync::Arc::new(builder.build().map_err(runtime_error)?);
    // The CLI on this machine operates this process through its socket while it works.
    let socket =
        super::serve::open_socket(session, rt.clone(), crate::ops::OpsConfig::default()).await;
    let before = store.counts().await.map_err(CliError::from_store)?;
    let started = Instant::now();
    tracing::info!(
        data = %session.data_dir().display(),
        workers = args.workers,
        agents = %rt.agents().join(", "),
        notifications = %if notifiers.is_empty() { "none".to_owned() } else { notifiers.join(", ") },
        "working until {}",
        if args.until_signal { "SIGINT or SIGTERM" } else { "no work is left" }
    );
    let result =
        if args.until_signal { rt.run_until_signal().await } else { rt.run_until_idle().await };
    if let Some(socket) = socket {
        socket.close().await;
    }
    result.map_err(|e| CliError::store(e.to_string()))?;
    let after = store.counts().await.map_err(CliError::from_store)?;
    let took = started.elapsed();
    let counts: serde_json::Map<String, serde_json::Value> =
        RunState::STATES.iter().map(|s| (s.name().to_owned(), json!(after.get(*s)))).collect();
    let settled = |c: &crate::store::StateCounts| {
        c.get(RunState::Succeeded) + c.get(RunState::FailedPermanent)
    };
    let newly = settled(&after).saturating_sub(settled(&before));
    if out.json {
        return out.print_json(&json!({
            "took_ms": took.as_millis() as u64,
            "settled": newly,
            "counts": counts,
        }));
    }
    say!("worked for {}: {newly} run(s) settled", secs(took))?;
    let shown: Vec<String> = RunState::STATES
        .iter()
        .filter(|s| after.get(**s) > 0)
        .map(|s| format!("{s} {}", after.get(*s)))
        .collect();
    say!(
        "  the store now holds: {}",
        if shown.is_empty() { "no runs".into() } else { shown.join(" · ") }
    )?;
    if after.get(RunState::NeedsReview) > 0 {
        say!(
            "  `{} review list --data {}` shows what waits for a person",
            session.program(),
            session.data_dir().display()
        )?;
    }
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
