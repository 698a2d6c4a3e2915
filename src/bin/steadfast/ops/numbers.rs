//! `stats` and `graph`.

use super::*;

/// Rates and latencies per agent over the runs created within `window`.
pub(crate) async fn stats(paths: &Paths, out: Out, window: Duration) -> Result<(), CliError> {
    let store = existing_store(paths)?;
    let stats = Stats::compute(store.as_ref(), window).await.map_err(CliError::from_store)?;
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
