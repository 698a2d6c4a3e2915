//! `stats` and `graph`.

use std::time::Duration;

use super::output::say;
use super::output::{Out, humantime, table};
use super::{CliError, Session};
use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::view::Stats;

/// Rates and latencies per agent over the runs created within `window`.
pub(super) async fn stats(session: &Session, out: Out, window: Duration) -> Result<(), CliError> {
    let ops = super::remote::operate(session).await?;
    let stats: Stats = ops.stats(window).await.map_err(super::remote::operate_error)?;
    if out.json {
        return out.print_json(&stats);
    }
    if stats.agents.is_empty() {
        return say!("no runs in the last {}", humantime(window));
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
                format!("{} ({})", a.count(RunState::NeedsReview), show(a.review_rate)),
                ms(a.p50_ms),
                ms(a.p95_ms),
            ]
        })
        .collect();
    say!(
        "runs created in the last {}; every rate is of all those runs (in flight and in review \
         too); latency is creation to success",
        humantime(window)
    )?;
    table(&["AGENT", "RUNS", "SUCCESS", "RETRIED", "DEAD", "REVIEW", "P50", "P95"], &rows)
}

/// The diagram of the lifecycle, or of a registered pipeline's stages.
pub(super) fn graph(session: &Session, target: &str, dot: bool) -> Result<(), CliError> {
    if target == "lifecycle" {
        if session.json() {
            return session.out.print_json(&crate::view::lifecycle_graph());
        }
        return say!("{}", (if dot { RunState::dot() } else { RunState::mermaid() }).trim_end());
    }
    let registered = session.registrations()?;
    let Some(graph) = registered.pipeline_graph(target) else {
        let known = registered.pipelines();
        return Err(CliError::usage(format!(
            "no pipeline named `{target}` is registered in {}; try `lifecycle`{}",
            session.program(),
            if known.is_empty() { String::new() } else { format!(" or {}", known.join(", ")) }
        )));
    };
    if session.json() {
        return session.out.print_json(&graph);
    }
    say!("{}", (if dot { graph.dot() } else { graph.mermaid() }).trim_end())
}

#[cfg(test)]
mod tests {
    use super::super::input::parse_duration;
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
