//! `agents`: what the program registers, and how each agent retries, breaks and is limited.

use serde_json::json;

use super::input::operator;
use super::output::say;
use super::output::table;
use super::{CliError, Session};

/// Lists the registered agents and pipelines with their retry policy, circuit breaker and
/// limits (the breaker's live state is the running workers': they log it opening and closing
/// at WARN, and a run it defers says so in its history).
pub(super) async fn agents(session: &Session) -> Result<(), CliError> {
    let rt = session.registrations()?;
    let controls = controls(session).await;
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
            "control": controls.get(name),
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
                match (&a["control"]["paused"], a["control"]["rate"].as_f64()) {
                    (serde_json::Value::Bool(true), _) => "paused".to_owned(),
                    (_, Some(rate)) => format!("resumed at {rate}/s"),
                    _ => "-".to_owned(),
                },
            ]
        })
        .collect();
    table(
        &["AGENT", "KIND", "ATTEMPTS", "BREAKER OPENS", "CONCURRENCY", "RATE", "OPERATOR"],
        &rows,
    )?;
    say!(
        "A breaker defers an agent's runs (no attempt charged) while open; its opening and \
         closing are logged at WARN by the workers."
    )
}

/// The agents' pause settings: from a server if one works on the data, else from the store
/// if it can be opened; none otherwise (`agents` needs no store).
async fn controls(
    session: &Session,
) -> std::collections::BTreeMap<String, crate::store::AgentControl> {
    if let Ok(Some(remote)) = super::remote::find(session).await {
        if let Ok(answer) = remote.get::<serde_json::Value>("/agents").await {
            return answer["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    let control = serde_json::from_value(a["control"].clone()).ok()?;
                    Some((a["name"].as_str()?.to_owned(), control))
                })
                .collect();
        }
        return Default::default();
    }
    match session.existing_store() {
        Ok(store) => store.agent_controls().await.unwrap_or_default(),
        Err(_) => Default::default(),
    }
}

/// `agents pause|resume NAME`: the control in force after it, as the API answers it.
pub(super) async fn control(
    session: &Session,
    out: super::output::Out,
    action: AgentsCommand,
) -> Result<(), CliError> {
    let ops = super::remote::operate(session).await?;
    let controlled = match action {
        AgentsCommand::Pause { name, reason } => {
            let name = resolve(session, &name)?;
            ops.pause(&name, operator(), &reason).await
        }
        AgentsCommand::Resume { name, rate } => {
            let name = resolve(session, &name)?;
            ops.resume(&name, operator(), rate).await
        }
        AgentsCommand::List => unreachable!("listed by `agents`"),
    };
    let controlled = controlled.map_err(super::remote::operate_error)?;
    let name = controlled.agent.clone();
    let answer = serde_json::to_value(&controlled).map_err(|e| CliError::store(e.to_string()))?;
    if out.json {
        return out.print_json(&answer);
    }
    let control = &answer["control"];
    if control["paused"] == json!(true) {
        say!(
            "paused {name}: its runs stay queued until `{} agents resume {name}`",
            session.program()
        )
    } else if let Some(rate) = control["rate"].as_f64() {
        say!(
            "resumed {name} at most {rate} runs started per second (resume without --rate to lift it)"
        )
    } else {
        say!("resumed {name}")
    }
}

/// The registered agent `asked` names (a stage's short name too).
fn resolve(session: &Session, asked: &str) -> Result<String, CliError> {
    super::runs::registered_agent(session, asked)?.ok_or_else(|| {
        // Refused, as the API answers an unknown agent (404, code 1).
        CliError::refused(format!("no agent `{asked}` is registered in {}", session.program()))
    })
}

/// `agents ...`
#[derive(Debug, clap::Subcommand)]
pub(super) enum AgentsCommand {
    /// The registered agents (the default).
    List,
    /// Pause an agent: its runs stay queued and none starts until it is resumed (kept in the
    /// store: a restart keeps it). Attempts already running finish.
    Pause {
        /// The agent (a stage's short name works as in `runs list`).
        name: String,
        /// Why, for whoever looks later.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused agent, at once or at most --rate runs started per second.
    Resume {
        /// The agent.
        name: String,
        /// At most this many runs started per second, until resumed without it.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<f64>,
    },
}
