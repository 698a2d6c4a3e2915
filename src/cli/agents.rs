//! `agents`: what the program registers, and how each agent retries, breaks and is limited.

use serde_json::json;

use super::output::table;
use super::{CliError, Session};
use crate::say;

/// Lists the registered agents and pipelines with their retry policy, circuit breaker and
/// limits (the breaker's live state is the running workers': they log it opening and closing
/// at WARN, and a run it defers says so in its history).
pub(super) fn agents(session: &Session) -> Result<(), CliError> {
    let rt = session.registrations()?;
    let pipelines = rt.pipelines();
    let mut items = Vec::new();
    for name in rt.agents() {
        let kind = if pipelines.contains(&name) {
            "pipeline"
        } else if pipelines.iter().any(|p| name.starts_with(&format!("{p}."))) {
            "stage"
        } else {
            "agent"
        };
        let (Some(options), Some(policy)) = (rt.agent_options(name), rt.retry_policy(name)) else {
            continue;
        };
        let breaker = options
            .breaker
            .map(|b| json!({"failures": b.failures, "open_for_secs": b.open_for.as_secs_f64()}));
        let rate = options.rate.map(|r| json!({"per_second": r.per_second, "burst": r.burst}));
        items.push(json!({
            "name": name,
            "kind": kind,
            "max_attempts": policy.max_attempts,
            "resource_budget": policy.resource_budget,
            "max_crashes": policy.max_crashes,
            "attempt_timeout_secs": policy.attempt_timeout.map(|t| t.as_secs_f64()),
            "breaker": breaker,
            "concurrency": options.concurrency,
            "rate": rate,
        }));
    }
    if session.json() {
        return session.out.print_json(&items);
    }
    if items.is_empty() {
        return say!("{} registers no agents", session.program());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            let or_dash = |v: &serde_json::Value, f: &dyn Fn(&serde_json::Value) -> String| {
                if v.is_null() { "-".to_owned() } else { f(v) }
            };
            vec![
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["kind"].as_str().unwrap_or_default().to_owned(),
                a["max_attempts"].to_string(),
                or_dash(&a["breaker"], &|b| {
                    format!("after {} failures, {} s", b["failures"], b["open_for_secs"])
                }),
                or_dash(&a["concurrency"], &|c| c.to_string()),
                or_dash(&a["rate"], &|r| format!("{}/s, burst {}", r["per_second"], r["burst"])),
            ]
        })
        .collect();
    table(&["AGENT", "KIND", "ATTEMPTS", "BREAKER OPENS", "CONCURRENCY", "RATE"], &rows)?;
    say!(
        "A breaker defers an agent's runs (no attempt charged) while open; its opening and \
         closing are logged at WARN by the workers."
    )
}
