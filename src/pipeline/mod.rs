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

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::erased::{ErasedAgent, Typed};
use crate::agent::{Agent, Data};
use crate::schema::{self};

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

impl std::fmt::Display for FanIn {
    /// In words: `all must succeed`, `at least 3 must succeed`, `80% must succeed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FanIn::All => f.write_str("all must succeed"),
            FanIn::AtLeast(n) => write!(f, "at least {n} must succeed"),
            FanIn::Fraction(x) => {
                write!(f, "{}% must succeed", (x.clamp(0.0, 1.0) * 100.0).round())
            }
        }
    }
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
        self.graph().mermaid()
    }

    /// The stages as a graph (nodes and edges), to draw or to serialize.
    pub fn graph(&self) -> PipelineGraph {
        PipelineGraph::new(
            &self.name,
            self.stages.iter().map(|s| (s.registered.as_str(), s.fan_out)),
        )
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

mod graph;
mod run;

pub use self::graph::{GraphNode, PipelineGraph};

/// The prefix of the signal a pipeline run waits on while its stage runs (`stage:2`); the
/// runtime sends it when the stage settles, and refuses it from an operator.
pub(crate) const STAGE_SIGNAL: &str = "stage:";

/// The stage a pipeline run waits on, from the signal it waits for (`stage:<k>`).
pub(crate) fn waited_stage(waiting_for: &str) -> Option<u32> {
    waiting_for.strip_prefix(STAGE_SIGNAL)?.parse().ok()
}

/// Whether `signal` is one the runtime keeps for pipelines (only it may send it).
pub(crate) fn is_stage_signal(signal: &str) -> bool {
    signal.starts_with(STAGE_SIGNAL)
}

use self::run::StageRef;
pub(crate) use self::run::{PipelineAgent, wakes_pipeline};
