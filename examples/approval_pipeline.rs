//! A pipeline with a human in it: trigger → approval (waits for a person's signal) → executor
//! → notify, run end to end with the approval given by this program as an operator would.
//!
//! Shows: typed stages, a stage that waits for a signal and holds the pipeline, the operator's
//! `signal` call, each stage as its own child run, and the pipeline as a Mermaid flowchart.
//!
//! Run it with `cargo run --example approval_pipeline`.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;
use steadfast::store::{Actor, ListQuery};

/// A change someone asked for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Change {
    service: String,
    version: String,
}

/// A change with who approved it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Approved {
    change: Change,
    approver: String,
}

/// What the executor did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Deployed {
    change: Change,
    approver: String,
    deployment: String,
}

struct Trigger;
struct Approval;
struct Executor;
struct Notify;

#[async_trait]
impl Agent for Trigger {
    type Input = Change;
    type Output = Change;
    fn name(&self) -> &str {
        "trigger"
    }
    async fn run(&self, _: &mut Context, change: Change) -> Result<Outcome<Change>, AgentError> {
        if change.version.is_empty() {
            return Err(AgentError::permanent("a change needs a version"));
        }
        Ok(Outcome::Done(change))
    }
}

#[async_trait]
impl Agent for Approval {
    type Input = Change;
    type Output = Approved;
    fn name(&self) -> &str {
        "approval"
    }
    async fn run(
        &self,
        ctx: &mut Context,
        change: Change,
    ) -> Result<Outcome<Approved>, AgentError> {
        // First attempt: wait for a person. After the signal: its payload says who approved.
        match ctx.signal().and_then(|s| s["approver"].as_str()) {
            Some(approver) => Ok(Outcome::Done(Approved { change, approver: approver.to_owned() })),
            None => Ok(Outcome::Wait(
                WaitFor::signal("approved").timeout(Duration::from_secs(24 * 3600)),
            )),
        }
    }
}

#[async_trait]
impl Agent for Executor {
    type Input = Approved;
    type Output = Deployed;
    fn name(&self) -> &str {
        "executor"
    }
    async fn run(&self, ctx: &mut Context, a: Approved) -> Result<Outcome<Deployed>, AgentError> {
        // Journaled: a retry after a crash does not deploy twice.
        let deployment =
            ctx.effect("deploy", |key| async move {
                Ok(format!("deploy-{}", key[20..26].to_lowercase()))
            })
            .await?;
        Ok(Outcome::Done(Deployed { change: a.change, approver: a.approver, deployment }))
    }
}

#[async_trait]
impl Agent for Notify {
    type Input = Deployed;
    type Output = String;
    fn name(&self) -> &str {
        "notify"
    }
    async fn run(&self, _: &mut Context, d: Deployed) -> Result<Outcome<String>, AgentError> {
        Ok(Outcome::Done(format!(
            "{} {} deployed as {} (approved by {})",
            d.change.service, d.change.version, d.deployment, d.approver
        )))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pipeline =
        Pipeline::new("release").then(Trigger).then(Approval).then(Executor).then(Notify);
    println!("{}", pipeline.mermaid());

    let data = tempfile::tempdir()?;
    let rt = Runtime::builder().store(SledStore::open(data.path())?).pipeline(pipeline).build()?;
    let run =
        rt.submit("release", Change { service: "billing".into(), version: "2.4.1".into() }).await?;
    rt.run_until_idle().await?;

    // The pipeline is held by its approval stage, which waits for a person.
    let stages = rt.store().list(ListQuery::new().parent(run.id).oldest_first()).await?.runs;
    let waiting = stages
        .iter()
        .find(|s| s.state == RunState::WaitingExternal)
        .expect("the approval stage waits");
    println!("pipeline {}: {}", run.id, rt.store().get(run.id).await?.unwrap().state);
    println!(
        "stage {} ({}) is waiting for `{}`",
        waiting.id,
        waiting.agent,
        waiting.waiting_for.as_deref().unwrap_or("?")
    );

    // An operator approves (the CLI and the dashboard make the same call).
    rt.signal(
        waiting.id,
        "approved",
        serde_json::json!({ "approver": "ada" }),
        Actor::Operator("ada".into()),
    )
    .await?;
    rt.run_until_idle().await?;

    let done = rt.store().get(run.id).await?.unwrap();
    println!("pipeline {}: {} -> {}", run.id, done.state, done.output.unwrap_or_default());
    for stage in rt.store().list(ListQuery::new().parent(run.id).oldest_first()).await?.runs {
        println!(
            "  stage {:?} {:<20} {} after {} attempt(s)",
            stage.stage.unwrap_or(0),
            stage.agent,
            stage.state,
            stage.attempt
        );
    }
    Ok(())
}
