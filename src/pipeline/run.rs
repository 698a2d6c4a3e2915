//! The agent of a pipeline run: it creates its stages' child runs, runs the sequential ones
//! inside its own attempt, waits for fan-outs, collects outputs, and compensates on a logic
//! fault (saga).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{FanIn, RECHECK, STAGE_SIGNAL};
use crate::agent::erased::ErasedAgent;
use crate::agent::{Context, IdempotencyKey, Outcome, WaitFor};
use crate::fault::{AgentError, RetryPolicy};
use crate::lifecycle::{RunId, RunState};
use crate::schema::SchemaError;
use crate::store::{ListQuery, NewRun, RunRecord, Store};

pub(super) struct StageRef {
    pub(super) registered: String,
    pub(super) agent: Arc<dyn ErasedAgent>,
    pub(super) fan_out: Option<(usize, FanIn)>,
}

/// The agent of a pipeline run: it creates the stages' child runs and collects their outputs.
pub(crate) struct PipelineAgent {
    pub(super) name: String,
    pub(super) stages: Vec<StageRef>,
    pub(super) check_input: fn(&Value) -> Result<(), SchemaError>,
    pub(super) check_output: fn(&Value) -> Result<(), SchemaError>,
    pub(super) input_schema: String,
    pub(super) output_schema: String,
}

/// The idempotency key of stage `k` (and item `i` of a fan-out) of pipeline run `parent`.
fn child_key(parent: RunId, stage: usize, item: Option<usize>) -> String {
    match item {
        Some(i) => format!("{parent}/{stage}/{i}"),
        None => format!("{parent}/{stage}"),
    }
}

/// Whether a child run is done, one way or the other.
pub(crate) fn settled(state: RunState) -> bool {
    matches!(state, RunState::Succeeded | RunState::FailedPermanent)
}

/// Whether a stage's move is one its pipeline run must see now: the stage finished, or it
/// stopped for review: on a logic fault (L3), which the pipeline answers with compensation,
/// or otherwise (an item a lenient fan-in leaves out).
pub(crate) fn wakes_pipeline(run: &RunRecord) -> bool {
    settled(run.state) || run.state == RunState::NeedsReview
}

fn logic_fault(run: &RunRecord) -> bool {
    run.state == RunState::NeedsReview
        && run.last_error.as_ref().is_some_and(|e| e.fault == crate::fault::Fault::Logic)
}

/// Whether an item of a fan-out stage is done for its fan-in: settled, or (under a lenient
/// fan-in) held for review, which leaves it out like a failed one while it stays in review
/// for the operator; under `All` the pipeline waits for it.
fn item_done(fan_in: FanIn, child: &RunRecord) -> bool {
    settled(child.state) || (fan_in != FanIn::All && child.state == RunState::NeedsReview)
}

impl PipelineAgent {
    /// Whether `agent` is the registered name of one of its stages.
    pub(crate) fn has_stage(&self, agent: &str) -> bool {
        self.stages.iter().any(|s| s.registered == agent)
    }

    /// The pipeline's stages as a graph.
    pub(crate) fn graph(&self) -> super::PipelineGraph {
        super::PipelineGraph::new(
            &self.name,
            self.stages.iter().map(|s| (s.registered.as_str(), s.fan_out)),
        )
    }

    /// The same test `run` makes before it waits: every child of the stage done (for a
    /// fan-out, by its fan-in), or one stopped on a logic fault (compensation). Used when the
    /// pipeline has just started waiting, to catch children that finished while it looked.
    pub(crate) fn stage_ready(&self, stage: usize, children: &[&RunRecord]) -> bool {
        let Some(declared) = self.stages.get(stage) else { return false };
        if children.is_empty() {
            return false;
        }
        if children.iter().any(|c| logic_fault(c)) {
            return true;
        }
        match declared.fan_out {
            None => children.iter().all(|c| settled(c.state)),
            Some((_, fan_in)) => children.iter().all(|c| item_done(fan_in, c)),
        }
    }

    /// The saga: after a logic fault in stage `k`, undo the completed stages k-1..0 in reverse
    /// (the items of a fan-out stage in reverse too), each compensation journaled so that a
    /// crash in the middle resumes without repeating one; then hold the pipeline for review. A
    /// compensation that fails stops there and holds the pipeline with both errors.
    async fn compensate(
        &self,
        ctx: &mut Context,
        existing: &std::collections::HashMap<String, RunRecord>,
        k: usize,
        failed: &RunRecord,
    ) -> Result<Outcome<Value>, AgentError> {
        let fault = failed.last_error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        let mut done = Vec::new();
        for j in (0..k).rev() {
            let stage = &self.stages[j];
            let mut completed: Vec<&RunRecord> = existing
                .values()
                .filter(|c| c.stage == Some(j as u32) && c.state == RunState::Succeeded)
                .collect();
            completed.sort_by(|a, b| b.idempotency_key.cmp(&a.idempotency_key)); // reverse item order
            for child in completed {
                let (agent, input, output) = (
                    stage.agent.clone(),
                    child.input.clone(),
                    child.output.clone().unwrap_or(Value::Null),
                );
                let step = format!("compensate {}", child.idempotency_key);
                let context = ctx.for_child(child);
                let result =
                    ctx.effect(&step, |_| async move {
                        agent.compensate(&context, input, output).await
                    })
                    .await;
                if let Err(error) = result {
                    return Ok(Outcome::Review(format!(
                        "logic fault in stage {k} (`{}`): {fault}; then compensating stage {j} (`{}`, run {}) failed: {error}",
                        self.stages[k].registered, stage.registered, child.id
                    )));
                }
                done.push(format!("{j}"));
            }
        }
        done.dedup();
        Ok(Outcome::Review(format!(
            "logic fault in stage {k} (`{}`): {fault}; compensated stages {}",
            self.stages[k].registered,
            if done.is_empty() { "none".to_owned() } else { done.join(", ") }
        )))
    }

    /// The child of `key`, created with `input` if it does not exist yet, and whether its
    /// creation claimed it for `claim_for` (owner, lease: a stage this attempt runs itself at
    /// once; such a creation does not wait for the store's sync, any durable write after it
    /// makes it durable and a lost one is created again).
    #[allow(clippy::too_many_arguments)]
    async fn ensure(
        &self,
        store: &Arc<dyn Store>,
        existing: &std::collections::HashMap<String, RunRecord>,
        parent: RunId,
        k: usize,
        key: String,
        input: &Value,
        claim_for: Option<(String, Duration)>,
    ) -> Result<(RunRecord, bool), AgentError> {
        if let Some(run) = existing.get(&key) {
            return Ok((run.clone(), false));
        }
        let stage = &self.stages[k];
        let (_, concurrency_key) = stage.agent.admit(input).map_err(|e| {
            AgentError::from(e)
                .context(format!("stage {k} (`{}`) refused its input", stage.registered))
        })?;
        let mut new = NewRun::new(&stage.registered, key, input.clone())
            .child_of(parent, k as u32)
            .schemas(stage.agent.input_schema(), stage.agent.output_schema());
        if let Some(ckey) = concurrency_key {
            new = new.concurrency_key(ckey);
        }
        new.claim_for = claim_for;
        let created = store.create(new).await?;
        let claimed = created.created && created.run.state == RunState::Processing;
        Ok((created.run, claimed))
    }
}

#[async_trait]
impl ErasedAgent for PipelineAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> crate::agent::erased::Kind {
        crate::agent::erased::Kind::COORDINATOR
    }

    /// A pipeline run never fails by itself for long: waiting on stages is not a fault. No
    /// attempt timeout of its own: the stages it runs itself have theirs.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().attempt_timeout(None)
    }

    fn admit(&self, input: &Value) -> Result<(String, Option<String>), SchemaError> {
        (self.check_input)(input)?;
        Ok((IdempotencyKey::of(&self.name, input).as_str().to_owned(), None))
    }

    fn input_schema(&self) -> String {
        self.input_schema.clone()
    }

    fn output_schema(&self) -> String {
        self.output_schema.clone()
    }

    fn check_output(&self, output: &Value) -> Result<(), SchemaError> {
        (self.check_output)(output)
    }

    async fn run(&self, ctx: &mut Context, input: Value) -> Result<Outcome<Value>, AgentError> {
        let store = ctx.store.clone();
        let parent = ctx.run;
        let mut existing = std::collections::HashMap::new();
        let mut query = ListQuery::new().parent(parent).oldest_first().limit(1000);
        loop {
            let page = store.list(query.clone()).await?;
            for run in page.runs {
                existing.insert(run.idempotency_key.clone(), run);
            }
            match page.next {
                Some(next) => query = query.cursor(next),
                None => break,
            }
        }
        let wait = |k: usize| {
            Ok(Outcome::Wait(WaitFor::signal(format!("{STAGE_SIGNAL}{k}")).timeout(RECHECK)))
        };
        let mut value = input;
        for (k, stage) in self.stages.iter().enumerate() {
            ctx.span().record("step", stage.registered.as_str());
            match stage.fan_out {
                None => {
                    // A stage whose agent needs no limit the dispatcher enforces runs right
                    // here, in this attempt: no trip through the queue, no wait and wake-up.
                    let admitted = ctx.admit_stage(&stage.registered);
                    let inline = admitted.is_some();
                    let key = child_key(parent, k, None);
                    let (mut child, claimed) =
                        self.ensure(&store, &existing, parent, k, key, &value, admitted).await?;
                    if inline {
                        if claimed || child.state == RunState::Queued {
                            if let Some(moved) = ctx.run_stage(&child, claimed).await? {
                                child = moved;
                            }
                        } else {
                            ctx.unadmit_stage(&stage.registered);
                        }
                    }
                    // Seen by a compensation later in this attempt.
                    existing.insert(child.idempotency_key.clone(), child.clone());
                    match child.state {
                        RunState::Succeeded => value = child.output.unwrap_or(Value::Null),
                        RunState::FailedPermanent => {
                            let why = child
                                .last_error
                                .map(|e| e.to_string())
                                .unwrap_or_else(|| "no error recorded".into());
                            return Err(AgentError::permanent(format!(
                                "stage {k} (`{}`, run {}) failed: {why}",
                                stage.registered, child.id
                            )));
                        }
                        _ if logic_fault(&child) => {
                            return self.compensate(ctx, &existing, k, &child).await;
                        }
                        _ => return wait(k),
                    }
                }
                Some((_, fan_in)) => {
                    let Value::Array(items) = value else {
                        return Err(AgentError::permanent(format!(
                            "stage {k} (`{}`) fans out over a non-array",
                            stage.registered
                        )));
                    };
                    // Created concurrently: the store commits them together (one sync for
                    // the whole fan-out instead of one per item).
                    let children: Vec<(RunRecord, bool)> = futures_util::future::try_join_all(
                        items.iter().enumerate().map(|(i, item)| {
                            let key = child_key(parent, k, Some(i));
                            self.ensure(&store, &existing, parent, k, key, item, None)
                        }),
                    )
                    .await?;
                    let children: Vec<RunRecord> = children.into_iter().map(|(c, _)| c).collect();
                    for child in &children {
                        existing.insert(child.idempotency_key.clone(), child.clone());
                    }
                    if let Some(failed) = children.iter().find(|c| logic_fault(c)) {
                        return self.compensate(ctx, &existing, k, failed).await;
                    }
                    if !children.iter().all(|c| item_done(fan_in, c)) {
                        return wait(k);
                    }
                    let failed: Vec<&RunRecord> =
                        children.iter().filter(|c| c.state != RunState::Succeeded).collect();
                    if !fan_in.satisfied(children.len() - failed.len(), children.len()) {
                        return Err(AgentError::permanent(format!(
                            "stage {k} (`{}`): {} of {} items succeeded; {fan_in}",
                            stage.registered,
                            children.len() - failed.len(),
                            children.len()
                        )));
                    }
                    if !failed.is_empty() {
                        let ids: Vec<String> = failed.iter().map(|c| c.id.to_string()).collect();
                        let text = format!(
                            "stage {k}: {} item(s) failed or are held for review and were left out: {}",
                            failed.len(),
                            ids.join(", ")
                        );
                        // Journaled: later attempts of this pipeline run do not repeat the note.
                        let store = store.clone();
                        ctx.effect(&format!("fan-in note {k}"), |_| async move {
                            store.add_note(parent, crate::store::Actor::System, &text).await?;
                            Ok(())
                        })
                        .await?;
                    }
                    value = Value::Array(
                        children
                            .into_iter()
                            .filter(|c| c.state == RunState::Succeeded)
                            .map(|c| c.output.unwrap_or(Value::Null))
                            .collect(),
                    );
                }
            }
        }
        Ok(Outcome::Done(value))
    }

    async fn cleanup(&self, _ctx: &Context, _error: &AgentError) {}

    /// A pipeline is not a stage of another pipeline: nothing to undo as a whole.
    async fn compensate(
        &self,
        _ctx: &Context,
        _input: Value,
        _output: Value,
    ) -> Result<(), AgentError> {
        Ok(())
    }
}
