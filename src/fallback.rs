//! Degradation chains: try the primary agent, and when it fails, the next, down to the last
//! (an LLM classifier, then a rule-based one, then "needs review").
//!
//! Every agent of a chain runs within the same attempt and the same [`Context`]: their
//! journaled effects share the run's journal, so their effect names must differ.

use std::fmt;

use async_trait::async_trait;

use crate::agent::Data;

use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Fault, RetryPolicy};

/// An agent made of agents with the same input and output, tried in order.
///
/// ```
/// use async_trait::async_trait;
/// use steadfast::Fallback;
/// use steadfast::prelude::*;
///
/// struct Llm;
/// struct Rules;
///
/// #[async_trait]
/// impl Agent for Llm {
///     type Input = String;
///     type Output = String;
///     fn name(&self) -> &str { "llm" }
///     async fn run(&self, _: &mut Context, _: String) -> Result<Outcome<String>, AgentError> {
///         Err(AgentError::transient("HTTP 429"))
///     }
/// }
///
/// #[async_trait]
/// impl Agent for Rules {
///     type Input = String;
///     type Output = String;
///     fn name(&self) -> &str { "rules" }
///     async fn run(&self, _: &mut Context, text: String) -> Result<Outcome<String>, AgentError> {
///         Ok(Outcome::Done(if text.contains("CVE") { "security" } else { "other" }.into()))
///     }
/// }
///
/// let classify = Fallback::new("classify", Llm).or(Rules);
/// assert_eq!(classify.name(), "classify");
/// ```
pub struct Fallback<I, O> {
    name: String,
    chain: Vec<Box<dyn Agent<Input = I, Output = O>>>,
    names: Vec<String>,
    when: fn(Fault) -> bool,
}

impl<I, O> fmt::Debug for Fallback<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("name", &self.name)
            .field("chain", &self.names)
            .finish_non_exhaustive()
    }
}

impl<I, O> Fallback<I, O>
where
    I: Data + Clone,
    O: Data,
{
    /// A chain registered as `name`, starting with `primary`.
    pub fn new(name: impl Into<String>, primary: impl Agent<Input = I, Output = O>) -> Self {
        let names = vec![primary.name().to_owned()];
        Fallback { name: name.into(), chain: vec![Box::new(primary)], names, when: |_| true }
    }

    /// Tries `next` when everything before it failed.
    #[must_use]
    pub fn or(mut self, next: impl Agent<Input = I, Output = O>) -> Self {
        self.names.push(next.name().to_owned());
        self.chain.push(Box::new(next));
        self
    }

    /// Falls back only on the faults `when` accepts (default: every fault); any other error
    /// ends the chain and is routed as it is.
    #[must_use]
    pub fn when(mut self, when: fn(Fault) -> bool) -> Self {
        self.when = when;
        self
    }
}

#[async_trait]
impl<I, O> Agent for Fallback<I, O>
where
    I: Data + Clone,
    O: Data,
{
    type Input = I;
    type Output = O;

    fn name(&self) -> &str {
        &self.name
    }

    /// The primary's concurrency key.
    fn review_invalid_output(&self) -> bool {
        self.chain[0].review_invalid_output()
    }

    fn concurrency_key(&self, input: &I) -> Option<String> {
        self.chain[0].concurrency_key(input)
    }

    /// The primary's policy: the chain as a whole is retried like its primary.
    fn retry_policy(&self) -> RetryPolicy {
        self.chain[0].retry_policy()
    }

    async fn run(&self, ctx: &mut Context, input: I) -> Result<Outcome<O>, AgentError> {
        let last = self.chain.len() - 1;
        for (i, agent) in self.chain.iter().enumerate() {
            match agent.run(ctx, input.clone()).await {
                Ok(outcome) => {
                    ctx.span().record("step", agent.name());
                    if i > 0 {
                        tracing::info!(parent: ctx.span(), answered_by = agent.name(), "fallback answered");
                    }
                    return Ok(outcome);
                }
                Err(error) if i < last && (self.when)(error.fault()) => {
                    tracing::warn!(parent: ctx.span(), agent = agent.name(), %error, "falling back");
                }
                Err(error) => {
                    return Err(error.context(format!(
                        "`{}` (step {} of {})",
                        agent.name(),
                        i + 1,
                        last + 1
                    )));
                }
            }
        }
        unreachable!("a chain has at least its primary")
    }

    async fn cleanup(&self, ctx: &Context, error: &AgentError) {
        for agent in &self.chain {
            agent.cleanup(ctx, error).await;
        }
    }
}
