//! `prune`: delete runs at rest older than a policy (retention).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::output::Out;
use super::output::say;
use super::{CliError, Session};
use crate::lifecycle::RunState;
use crate::store::Retention;

/// `prune --older-than 30d [--state succeeded]...`
#[derive(Debug, clap::Args)]
pub(super) struct PruneArgs {
    /// Delete runs that have not moved for this long (`90s`, `15m`, `2h`, `30d`).
    #[arg(long, value_name = "AGE", value_parser = super::input::parse_duration)]
    older_than: Duration,
    /// Only runs in this state (repeat for several): succeeded (the default),
    /// failed_permanent (dead letters), needs_review (held for review).
    #[arg(long = "state", value_name = "STATE")]
    states: Vec<RunState>,
}

/// The policy of `--older-than` and `--state`s (none: succeeded); a state with work left is
/// a usage error.
pub(super) fn policy(older_than: Duration, states: Vec<RunState>) -> Result<Retention, CliError> {
    let mut policy = Retention::older_than(older_than);
    if !states.is_empty() {
        policy = policy.states(states);
    }
    policy.check().map_err(CliError::usage)?;
    Ok(policy)
}

pub(super) async fn prune(session: &Session, out: Out, args: PruneArgs) -> Result<(), CliError> {
    let policy = policy(args.older_than, args.states)?;
    let states: Vec<String> = policy.states.iter().map(ToString::to_string).collect();
    let body = json!({"older_than_secs": args.older_than.as_secs(), "states": states});
    let ((runs, kept), sizes) = match super::remote::find(session).await? {
        Some(remote) => {
            let by = super::input::operator();
            let answer: serde_json::Value =
                remote.post("/prune", &by, &body).await.map_err(super::remote::operate_error)?;
            let count = |key: &str| answer[key].as_u64().unwrap_or(0);
            ((count("pruned"), count("kept")), None)
        }
        None => {
            let store = session.existing_store()?;
            let dir = session.store_dir();
            let embedded = session.shared_store().is_none();
            let before = size_of(&dir);
            let pruned = store.prune(policy.clone()).await.map_err(CliError::from_store)?;
            let sizes = embedded.then(|| (before, size_of(&dir)));
            ((pruned.runs, pruned.kept), sizes)
        }
    };
    if out.json {
        return out.print_json(&json!({
            "pruned": runs,
            "kept": kept,
            "states": states,
            "older_than_secs": args.older_than.as_secs(),
        }));
    }
    say!(
        "pruned {} run(s) in {} that had not moved for {}",
        runs,
        states.join(", "),
        super::output::humantime(args.older_than)
    )?;
    if kept > 0 {
        say!(
            "kept {} pipeline run(s) with a stage in another state (held for review, say): add its state with --state to prune them too",
            kept
        )?;
    }
    if let Some((before, after)) = sizes.filter(|_| runs > 0) {
        say!(
            "the database's files: {} before, {} now (sled reuses the freed space for new writes; its files do not shrink)",
            mib(before),
            mib(after)
        )?;
    }
    Ok(())
}

/// The size of the files under `dir`, in bytes.
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size_of(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
