//! The operator's calls, one interface two ways: `Operate` on the local runtime and on
//! `client::Client` over HTTP to the same runtime's API give the same answers, the replay of a
//! failed pipeline's dead stage included.

use std::sync::Arc;

use async_trait::async_trait;
use steadfast::client::Client;
use steadfast::ops::{self, OpsConfig, ServeLimits};
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;
use steadfast::runtime::{Operate, OperateError};
use steadfast::store::{Actor, MemoryStore};
use steadfast::view::RunFilter;

/// Passes its input on.
struct Pass;

#[async_trait]
impl Agent for Pass {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "pass"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        Ok(Outcome::Done(n))
    }
}

/// Fails for good.
struct Broken;

#[async_trait]
impl Agent for Broken {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "broken"
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::permanent("the ledger is closed"))
    }
}

fn ada() -> Actor {
    Actor::Operator("ada".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_and_the_client_answer_alike() {
    let pipeline = Pipeline::new("books").then(Pass).then(Broken);
    let rt =
        Arc::new(Runtime::builder().store(MemoryStore::new()).pipeline(pipeline).build().unwrap());
    let (a, b) = (rt.submit("books", 1).await.unwrap().id, rt.submit("books", 2).await.unwrap().id);
    rt.run_until_idle().await.unwrap();
    for id in [a, b] {
        assert_eq!(rt.store().get(id).await.unwrap().unwrap().state, RunState::FailedPermanent);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = ops::router(rt.clone(), OpsConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(ops::serve(listener, app, ServeLimits::default(), async {
        let _ = stopped.await;
    }));
    let client = Client::new(&url, None).unwrap();
    let local: &dyn Operate = rt.as_ref();
    let remote: &dyn Operate = &client;
    assert!(remote.is_remote() && !local.is_remote());

    // Reads: the same values.
    let filter = RunFilter::new().state(RunState::FailedPermanent).limit(10);
    let (l, r) = (local.runs(filter.clone()).await.unwrap(), remote.runs(filter).await.unwrap());
    let ids = |p: &steadfast::view::RunsPage| p.runs.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&l), ids(&r));
    assert_eq!(l.runs.len(), 4, "two pipeline runs and their two dead stages");
    let (l, r) = (local.run(a).await.unwrap(), remote.run(a).await.unwrap());
    assert_eq!(serde_json::to_value(&l).unwrap(), serde_json::to_value(&r).unwrap());
    let (l, r) = (local.dead_letters(10).await.unwrap(), remote.dead_letters(10).await.unwrap());
    assert_eq!(serde_json::to_value(&l).unwrap(), serde_json::to_value(&r).unwrap());

    // Replay of twin failed pipelines: each reports its dead stage replayed with it.
    let through_client = remote.replay(a, ada(), false).await.unwrap();
    let locally = local.replay(b, ada(), false).await.unwrap();
    for replay in [&through_client, &locally] {
        assert_eq!(replay.run.state, RunState::Queued);
        assert_eq!(replay.stages.len(), 1, "{replay:?}");
        assert_eq!(replay.stages[0].agent, "books.1.broken");
        assert_eq!(replay.stages[0].state, RunState::Queued);
        assert_eq!(replay.stages[0].parent, Some(replay.run.id));
    }

    // Refusals: the same words; the client's carries the CLI's exit code.
    let missing = RunId::new();
    let l = local.cancel(missing, ada()).await.unwrap_err();
    let r = remote.cancel(missing, ada()).await.unwrap_err();
    assert_eq!(l.to_string(), r.to_string());
    assert!(matches!(r, OperateError::Server { status: 404, code: 1, .. }), "{r:?}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();

    // A server that is gone: unreachable, saying why.
    let gone = remote.runs(RunFilter::new()).await.unwrap_err();
    assert!(matches!(gone, OperateError::Unreachable(_)), "{gone:?}");
    assert!(gone.to_string().contains("cannot reach the server"), "{gone}");
}
