//! The wake-ups of a pipeline run waiting on its stages: a finished stage wakes it once the
//! whole stage is ready, and a pipeline run that starts waiting looks once more itself.

use super::Shared;
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, ListQuery, RunRecord};

/// What a move means for pipelines: a stage that finished wakes its waiting pipeline run once
/// the whole stage is ready for it (every item of a fan-out done, or one stopped on a logic
/// fault), so a fan-out of n items wakes it once rather than n times; a pipeline run that just
/// started waiting wakes itself if its stage became ready meanwhile (a stage that finished
/// while the pipeline run was looking found it not yet waiting). Each side looks after its own
/// move is stored, so of two moves racing, the later look sees both: no wake-up is lost.
pub(crate) async fn after_move(
    shared: &Shared,
    moved: &RunRecord,
    waits_on_children: bool,
    parent_sees_it: bool,
) {
    if let (Some(parent), Some(stage)) = (moved.parent, moved.stage)
        && !parent_sees_it
        && crate::pipeline::wakes_pipeline(moved)
    {
        match shared.store.get(parent).await {
            Ok(Some(pipeline)) if pipeline.state == RunState::WaitingExternal => {
                if stage_ready(shared, &pipeline, stage).await.unwrap_or(true) {
                    wake(shared, parent).await;
                }
            }
            Ok(_) => {} // not waiting: it looks at its stages when it runs or starts waiting
            Err(_) => wake(shared, parent).await,
        }
    }
    if waits_on_children && moved.state == RunState::WaitingExternal {
        let stage = moved.waiting_for.as_deref().and_then(crate::pipeline::waited_stage);
        let Some(stage) = stage else { return };
        if stage_ready(shared, moved, stage).await == Some(true) {
            wake(shared, moved.id).await;
        }
    }
}

/// Whether stage `stage` of pipeline run `pipeline` is ready for it to look at (see
/// `PipelineAgent::stage_ready`); `None` if that cannot be told (the pipeline is not
/// registered here, the store could not list the stage).
async fn stage_ready(shared: &Shared, pipeline: &RunRecord, stage: u32) -> Option<bool> {
    let registered = shared.agents.get(&pipeline.agent)?;
    let mut children = Vec::new();
    let mut query = ListQuery::new().parent(pipeline.id).limit(1000);
    loop {
        let page = shared.store.list(query.clone()).await.ok()?;
        children.extend(page.runs.into_iter().filter(|c| c.stage == Some(stage)));
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    let children: Vec<&RunRecord> = children.iter().collect();
    Some(registered.pipeline.as_ref()?.stage_ready(stage as usize, &children))
}

/// Queues a waiting pipeline run to look at its stages.
async fn wake(shared: &Shared, run: RunId) {
    let transition =
        checked_move!(run, WaitingExternal => Queued).by(Actor::System).reason("a stage finished");
    // A conflict means it is not waiting (processing, or already woken): it will look anyway.
    if let Ok(Ok(record)) = shared.store.transition(transition).await {
        // Told as every move is (not through `commit`: this is part of what follows a move).
        shared.moved(&record, RunState::WaitingExternal, &Actor::System, "a stage finished");
        shared.wake.notify_one();
    }
}
