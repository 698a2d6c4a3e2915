//! The commands that act on a run: replay, review (approve, reject, resolve), cancel,
//! signal, note.

use super::*;

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
