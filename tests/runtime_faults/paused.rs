//! Pausing and resuming an agent: its runs stay queued while paused (and a worker working
//! until idle does not wait for them), a pause outlives a restart, and a resume at a rate
//! starts at most that many runs per second.

use super::*;
use steadfast::store::SledStore;

/// Succeeds at once.
struct Quick;

#[async_trait]
impl Agent for Quick {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "quick"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        Ok(Outcome::Done(n))
    }
}

async fn states(rt: &Runtime, ids: &[RunId]) -> Vec<RunState> {
    let mut states = Vec::new();
    for id in ids {
        states.push(state_of(rt, *id).await.state);
    }
    states
}

#[tokio::test(start_paused = true)]
async fn a_paused_agent_keeps_its_runs_queued_until_resumed_at_its_rate() {
    let rt = Arc::new(builder().register(Quick).build().unwrap());
    let paused = rt.pause("quick", ada(), "upstream is down").await.unwrap();
    assert!(paused.paused);
    assert_eq!(rt.agent_control("quick").unwrap().reason, "upstream is down");
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(rt.submit("quick", n).await.unwrap().id);
    }
    // Working until idle does not wait for a paused agent's runs.
    rt.run_until_idle().await.unwrap();
    assert_eq!(states(&rt, &ids).await, [RunState::Queued; 6]);
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(states(&rt, &ids).await, [RunState::Queued; 6], "nothing starts while paused");

    // At 2 runs per second: the first at once, the rest one every half second.
    let start = tokio::time::Instant::now();
    rt.resume("quick", ada(), Some(2.0)).await.unwrap();
    while states(&rt, &ids).await.iter().any(|s| *s != RunState::Succeeded) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(2400), "6 runs at 2/s took {took:?}");
    assert!(took < Duration::from_secs(5), "6 runs at 2/s took {took:?}");
    assert!(rt.agent_control("quick").unwrap().rate == Some(2.0));
    assert!(rt.resume("quick", ada(), None).await.unwrap().is_none());
    assert!(rt.agent_control("quick").is_none());
    assert!(matches!(
        rt.resume("quick", ada(), Some(0.0)).await,
        Err(RuntimeError::InvalidRequest(_))
    ));
    assert!(matches!(rt.pause("nobody", ada(), "").await, Err(RuntimeError::UnknownAgent { .. })));
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = SledStore::open(dir.path().join("db")).unwrap();
        let rt = Runtime::builder().store(store).register(Quick).build().unwrap();
        rt.pause("quick", ada(), "maintenance").await.unwrap();
        rt.submit("quick", 1).await.unwrap().id
    };
    let store = SledStore::open(dir.path().join("db")).unwrap();
    let rt = Runtime::builder().store(store).register(Quick).build().unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, id).await.state, RunState::Queued, "still paused after a restart");
    assert_eq!(rt.agent_control("quick").unwrap().reason, "maintenance");
    rt.resume("quick", ada(), None).await.unwrap();
    rt.run_until_idle().await.unwrap();
    assert_eq!(state_of(&rt, id).await.state, RunState::Succeeded);
}
