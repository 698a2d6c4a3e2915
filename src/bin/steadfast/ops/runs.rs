//! `runs list` and `runs show`.

use super::*;

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
        RunsCommand::Show { id } => show(store.as_ref(), out, id).await,
    }
}

async fn show(store: &dyn Store, out: Out, id: RunId) -> Result<(), CliError> {
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
