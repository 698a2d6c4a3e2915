//! Agents with their types erased to JSON, so one runtime can hold agents of any types. The
//! schema gate sits here: inputs are checked on the way in, outputs on the way out.

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Fault, RetryPolicy};
use crate::schema::{self, SchemaError};

/// What the runtime asks of an agent's runs to schedule them, instead of asking what the agent
/// is: an ordinary agent's runs do work; a coordinator's (a pipeline run) only drive their
/// children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kind {
    /// Its attempts take a worker slot while they run (a coordinator's children take one
    /// each instead), and count against the slots claimed ahead.
    pub(crate) holds_slot: bool,
    /// A wait of its run is progress, not a failed attempt: the attempt is given back.
    pub(crate) wait_refunds_attempt: bool,
    /// Its waits are for its own children: an operator's signal is refused, a wait whose time
    /// is up is looked at again rather than failed, and a child that settles wakes it.
    pub(crate) waits_on_children: bool,
    /// Its attempts get the engine, to run children inline.
    pub(crate) runs_children: bool,
    /// A worker that dies under its attempt may have been killed by it: such attempts are
    /// watched, and a run that keeps killing its worker is a poison pill.
    pub(crate) can_crash_its_worker: bool,
}

impl Kind {
    /// An agent whose runs do the work.
    pub(crate) const WORKER: Kind = Kind {
        holds_slot: true,
        wait_refunds_attempt: false,
        waits_on_children: false,
        runs_children: false,
        can_crash_its_worker: true,
    };

    /// An agent whose runs drive their children (a pipeline run).
    pub(crate) const COORDINATOR: Kind = Kind {
        holds_slot: false,
        wait_refunds_attempt: true,
        waits_on_children: true,
        runs_children: true,
        can_crash_its_worker: false,
    };
}

#[async_trait]
pub(crate) trait ErasedAgent: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// How the runtime schedules its runs (default: [`Kind::WORKER`]).
    fn kind(&self) -> Kind {
        Kind::WORKER
    }
    fn retry_policy(&self) -> RetryPolicy;
    /// Checks a submitted input against the schema; returns its idempotency key and its
    /// concurrency key.
    fn admit(&self, input: &Value) -> Result<(String, Option<String>), SchemaError>;
    fn input_schema(&self) -> String;
    fn output_schema(&self) -> String;
    fn check_output(&self, output: &Value) -> Result<(), SchemaError>;
    async fn run(&self, ctx: &mut Context, input: Value) -> Result<Outcome<Value>, AgentError>;
    async fn cleanup(&self, ctx: &Context, error: &AgentError);
    /// Undoes a completed run's effects (saga), given its stored input and output.
    async fn compensate(
        &self,
        ctx: &Context,
        input: Value,
        output: Value,
    ) -> Result<(), AgentError>;
}

pub(crate) struct Typed<A>(pub(crate) A);

#[async_trait]
impl<A: Agent> ErasedAgent for Typed<A> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.0.retry_policy()
    }

    fn admit(&self, input: &Value) -> Result<(String, Option<String>), SchemaError> {
        let typed: A::Input = schema::from_value(input.clone())?;
        let key = self.0.idempotency_key(&typed).as_str().to_owned();
        Ok((key, self.0.concurrency_key(&typed)))
    }

    fn input_schema(&self) -> String {
        schema::schema_hash::<A::Input>()
    }

    fn output_schema(&self) -> String {
        schema::schema_hash::<A::Output>()
    }

    fn check_output(&self, output: &Value) -> Result<(), SchemaError> {
        schema::check::<A::Output>(output)
    }

    async fn run(&self, ctx: &mut Context, input: Value) -> Result<Outcome<Value>, AgentError> {
        let input: A::Input = schema::from_value(input).map_err(|e| {
            AgentError::from(e).context("the stored input no longer fits the agent's input type")
        })?;
        match self.0.run(ctx, input).await? {
            Outcome::Done(output) => {
                let output = serde_json::to_value(&output).map_err(|e| {
                    AgentError::from_source(Fault::Permanent, e).context("the output is not JSON")
                })?;
                // Nothing unvalidated is stored or handed on.
                match schema::check::<A::Output>(&output) {
                    Ok(()) => Ok(Outcome::Done(output)),
                    Err(e) if self.0.review_invalid_output() => {
                        Ok(Outcome::Review(format!("the output failed the schema gate: {e}")))
                    }
                    Err(e) => Err(AgentError::from(e).context("the output failed the schema gate")),
                }
            }
            Outcome::Wait(wait) => Ok(Outcome::Wait(wait)),
            Outcome::Review(reason) => Ok(Outcome::Review(reason)),
        }
    }

    async fn cleanup(&self, ctx: &Context, error: &AgentError) {
        self.0.cleanup(ctx, error).await;
    }

    async fn compensate(
        &self,
        ctx: &Context,
        input: Value,
        output: Value,
    ) -> Result<(), AgentError> {
        let input: A::Input = schema::from_value(input).map_err(|e| {
            AgentError::from(e).context("the stored input no longer fits the agent's input type")
        })?;
        let output: A::Output = schema::from_value(output).map_err(|e| {
            AgentError::from(e).context("the stored output no longer fits the agent's output type")
        })?;
        self.0.compensate(ctx, &input, &output).await
    }
}
