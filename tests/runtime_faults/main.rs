//! The runtime from a user's side, on tokio's paused clock (no real sleeps): each fault class
//! ends where the table says with the right attempts and history, backoff stays in its jitter
//! bounds, waits resume on a signal and time out without one, reviews and replays do what they
//! say and refuse what the lifecycle forbids, concurrency stays within its limit, and the
//! schema gate guards inputs and outputs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steadfast::clock::TokioClock;
use steadfast::prelude::*;
use steadfast::runtime::{AgentOptions, RuntimeBuilder, RuntimeError};
use steadfast::store::{Actor, MemoryStore, StoreError};

fn ada() -> Actor {
    Actor::Operator("ada".into())
}

fn builder() -> RuntimeBuilder {
    let store = MemoryStore::with_clock(Arc::new(TokioClock::new()));
    Runtime::builder().store(store).workers(4).lease(Duration::from_secs(30))
}

/// Fails with `fault` for its first `failures` attempts, then succeeds with the attempt number.
#[derive(Clone)]
struct Flaky {
    name: &'static str,
    fault: Fault,
    failures: u32,
    calls: Arc<AtomicU32>,
    cleanups: Arc<AtomicU32>,
    policy: RetryPolicy,
}

impl Flaky {
    fn new(name: &'static str, fault: Fault, failures: u32) -> Self {
        Flaky {
            name,
            fault,
            failures,
            calls: Arc::default(),
            cleanups: Arc::default(),
            policy: RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

#[async_trait]
impl Agent for Flaky {
    type Input = String;
    type Output = u32;

    fn name(&self) -> &str {
        self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn run(&self, ctx: &mut Context, _input: String) -> Result<Outcome<u32>, AgentError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.failures {
            let cause = std::io::Error::other("upstream said no");
            return Err(
                AgentError::from_source(self.fault, cause).context(format!("call {call} failed"))
            );
        }
        Ok(Outcome::Done(ctx.attempt()))
    }

    async fn cleanup(&self, _ctx: &Context, _error: &AgentError) {
        self.cleanups.fetch_add(1, Ordering::SeqCst);
    }
}

async fn state_of(rt: &Runtime, id: RunId) -> steadfast::store::RunRecord {
    rt.store().get(id).await.unwrap().unwrap()
}

/// Asks for review on its first attempt, then succeeds with the reviewer's note.
struct Reviewed;

#[async_trait]
impl Agent for Reviewed {
    type Input = u32;
    type Output = Verdict;
    fn name(&self) -> &str {
        "reviewed"
    }
    async fn run(&self, ctx: &mut Context, _: u32) -> Result<Outcome<Verdict>, AgentError> {
        Ok(match ctx.review_note() {
            Some(note) => Outcome::Done(Verdict { note: note.to_owned(), score: 1 }),
            None => Outcome::Review("amount above the limit".into()),
        })
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Verdict {
    note: String,
    #[schemars(range(min = 0, max = 10))]
    score: u8,
}

#[path = "../common/mod.rs"]
mod common;

mod alarm;
mod classes;
mod commits;
mod doors;
mod gate;
mod limits;
mod model;
mod operators;
mod paused;
