//! Typed pipelines: agents chained so that each stage's input type is the previous stage's
//! output type, checked at compile time, and run durably as child runs of a pipeline run.
//!
//! A mismatched stage does not compile. At run time the pipeline run creates one child run per
//! stage (one per item for a fan-out stage), each with its own lifecycle, retries and review,
//! and moves on only when the stage's output is stored, so a crash resumes at the stage it was
//! in and never redoes a completed one. A sequential stage is run by the pipeline run itself,
//! inside its own attempt: its child run is created already claimed, its agent runs with the
//! same attempt machinery a worker uses (timeout, panic isolation, heartbeat, fault table),
//! and its outcome is stored before the next stage starts; no trip through the queue, no wait
//! and wake-up. The items of a fan-out, a stage whose agent has a concurrency limit, and a
//! stage being retried go through the queue, and the pipeline run waits for them. A stage that fails permanently fails the pipeline; a
//! stage held for review or waiting for a signal holds it until an operator lets it go on.
//!
//! ```
//! use async_trait::async_trait;
//! use steadfast::pipeline::Pipeline;
//! use steadfast::prelude::*;
//!
//! struct Split;
//! struct Shout;
//!
//! #[async_trait]
//! impl Agent for Split {
//!     type Input = String;
//!     type Output = Vec<String>;
//!     fn name(&self) -> &str { "split" }
//!     async fn run(&self, _: &mut Context, text: String) -> Result<Outcome<Vec<String>>, AgentError> {
//!         Ok(Outcome::Done(text.split(' ').map(str::to_owned).collect()))
//!     }
//! }
//!
//! #[async_trait]
//! impl Agent for Shout {
//!     type Input = String;
//!     type Output = String;
//!     fn name(&self) -> &str { "shout" }
//!     async fn run(&self, _: &mut Context, word: String) -> Result<Outcome<String>, AgentError> {
//!         Ok(Outcome::Done(word.to_uppercase()))
//!     }
//! }
//!
//! let pipeline = Pipeline::new("shouting").then(Split).fan_out(Shout, 4);
//! assert!(pipeline.mermaid().contains("shouting.1.shout"));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let rt = Runtime::builder().store(steadfast::store::MemoryStore::new()).pipeline(pipeline).build()?;
//! let run = rt.submit("shouting", "hello typed world").await?;
//! rt.run_until_idle().await?;
//! let done = rt.store().get(run.id).await?.unwrap();
//! assert_eq!(done.output, Some(serde_json::json!(["HELLO", "TYPED", "WORLD"])));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::erased::{ErasedAgent, Typed};
use crate::agent::{Agent, Context, Data, IdempotencyKey, Outcome, WaitFor};
use crate::fault::{AgentError, RetryPolicy};
use crate::lifecycle::{RunId, RunState};
use crate::schema::{self, SchemaError};
use crate::store::{ListQuery, NewRun, RunRecord, Store};

/// How long a waiting pipeline run sleeps before it looks at its stages again even without a
/// signal from them (a backstop: stages signal their pipeline when they finish).
pub(crate) const RECHECK: Duration = Duration::from_secs(60);

/// How many items of a fan-out stage must succeed for the pipeline to go on.
///
/// Under `All` the pipeline waits for every item, including one held for review until an
/// operator settles it. Under `AtLeast` and `Fraction`, an item that failed permanently or is
/// held for review is left out (noted on the pipeline run; the item stays in review for the
/// operator), and the pipeline goes on once every other item is done and enough succeeded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum FanIn {
    /// Every item (the default).
    All,
    /// At least this many items.
    AtLeast(usize),
    /// At least this fraction of the items (0.0–1.0).
    Fraction(f64),
}

impl FanIn {
    fn satisfied(self, succeeded: usize, total: usize) -> bool {
        match self {
            FanIn::All => succeeded == total,
            FanIn::AtLeast(n) => succeeded >= n.min(total),
            FanIn::Fraction(f) => succeeded as f64 >= (f.clamp(0.0, 1.0) * total as f64).ceil(),
        }
    }
}

/// One stage: its agent, registered under `<pipeline>.<index>.<agent>`.
pub(crate) struct Stage {
    pub(crate) agent: Arc<dyn ErasedAgent>,
    pub(crate) registered: String,
    pub(crate) fan_out: Option<(usize, FanIn)>,
}

/// The first step of a pipeline's declaration; see [`Pipeline::new`].
#[derive(Debug)]
#[must_use]
pub struct PipelineBuilder {
    name: String,
}

/// A typed chain of agents from `I` to `O`, registered on the runtime with
/// [`RuntimeBuilder::pipeline`](crate::runtime::RuntimeBuilder::pipeline) and submitted like
/// an agent.
#[must_use]
pub struct Pipeline<I, O> {
    name: String,
    stages: Vec<Stage>,
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> std::fmt::Debug for Pipeline<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<&str> = self.stages.iter().map(|s| s.registered.as_str()).collect();
        f.debug_struct("Pipeline").field("name", &self.name).field("stages", &stages).finish()
    }
}

impl Pipeline<(), ()> {
    /// Starts declaring the pipeline `name`; the first [`then`](PipelineBuilder::then) fixes
    /// its input type.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder { name: name.into() }
    }
}

impl PipelineBuilder {
    /// The first stage.
    pub fn then<A: Agent>(self, agent: A) -> Pipeline<A::Input, A::Output> {
        let stages = push(&self.name, Vec::new(), agent, None);
        Pipeline { name: self.name, stages, types: PhantomData }
    }
}

/// Appends `agent` as the next stage.
fn push<A: Agent>(
    pipeline: &str,
    mut stages: Vec<Stage>,
    agent: A,
    fan_out: Option<(usize, FanIn)>,
) -> Vec<Stage> {
    let registered = format!("{pipeline}.{}.{}", stages.len(), agent.name());
    stages.push(Stage { agent: Arc::new(Typed(agent)), registered, fan_out });
    stages
}

impl<I, O> Pipeline<I, O>
where
    I: Data,
    O: Data,
{
    /// The next stage, which takes this stage's output: a stage of another input type does
    /// not compile.
    pub fn then<B: Agent<Input = O>>(self, agent: B) -> Pipeline<I, B::Output> {
        let stages = push(&self.name, self.stages, agent, None);
        Pipeline { name: self.name, stages, types: PhantomData }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stages as a Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = format!("flowchart LR\n    input([{} input])\n", self.name);
        let mut previous = "input".to_owned();
        for (k, stage) in self.stages.iter().enumerate() {
            let id = format!("s{k}");
            match stage.fan_out {
                Some((n, fan_in)) => {
                    let _ = writeln!(out, "    {id}[[\"{} ×{n} ({fan_in:?})\"]]", stage.registered);
                }
                None => {
                    let _ = writeln!(out, "    {id}[\"{}\"]", stage.registered);
                }
            }
            let _ = writeln!(out, "    {previous} --> {id}");
            previous = id;
        }
        let _ = writeln!(out, "    {previous} --> output([{} output])", self.name);
        out
    }

    /// The registrations: the pipeline run's agent, then each stage's agent with the
    /// concurrency of its fan-out.
    pub(crate) fn into_parts(self) -> (Arc<PipelineAgent>, Vec<Stage>) {
        let parent = PipelineAgent {
            name: self.name,
            stages: self
                .stages
                .iter()
                .map(|s| StageRef {
                    registered: s.registered.clone(),
                    agent: s.agent.clone(),
                    fan_out: s.fan_out,
                })
                .collect(),
            check_input: |v| schema::check::<I>(v),
            check_output: |v| schema::check::<O>(v),
            input_schema: schema::schema_hash::<I>(),
            output_schema: schema::schema_hash::<O>(),
        };
        (Arc::new(parent), self.stages)
    }
}

impl<I, T> Pipeline<I, Vec<T>>
where
    I: Data,
    T: Data,
{
    /// A stage that runs `agent` once per item of the previous stage's output, at most
    /// `concurrency` at a time, and goes on when every item succeeded.
    pub fn fan_out<B: Agent<Input = T>>(
        self,
        agent: B,
        concurrency: usize,
    ) -> Pipeline<I, Vec<B::Output>> {
        self.fan_out_with(agent, concurrency, FanIn::All)
    }

    /// A fan-out stage that goes on when `fan_in` is satisfied; the failed items are left out
    /// of the output and listed in a note on the pipeline run.
    pub fn fan_out_with<B: Agent<Input = T>>(
        self,
        agent: B,
        concurrency: usize,
        fan_in: FanIn,
    ) -> Pipeline<I, Vec<B::Output>> {
        let stages = push(&self.name, self.stages, agent, Some((concurrency.max(1), fan_in)));
        Pipeline { name: self.name, stages, types: PhantomData }
    }
}

struct StageRef {
    registered: String,
    agent: Arc<dyn ErasedAgent>,
    fan_out: Option<(usize, FanIn)>,
}

/// The agent of a pipeline run: it creates the stages' child runs and collects their outputs.
pub(crate) struct PipelineAgent {
    name: String,
    stages: Vec<StageRef>,
    check_input: fn(&Value) -> Result<(), SchemaError>,
    check_output: fn(&Value) -> Result<(), SchemaError>,
    input_schema: String,
    output_schema: String,
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
        let wait =
            |k: usize| Ok(Outcome::Wait(WaitFor::signal(format!("stage:{k}")).timeout(RECHECK)));
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
                            "stage {k} (`{}`): {} of {} items succeeded, {fan_in:?} required",
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
