//! How many durable commits a run costs: the hot path's writes that can be one are one.

use super::*;
use steadfast::store::SledStore;

/// Succeeds at once.
struct Noop;

#[async_trait]
impl Agent for Noop {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "noop"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        Ok(Outcome::Done(n))
    }
}

/// A run submitted while the workers run is created already claimed, in one durable commit
/// with its creation, and started by the submission: two syncs per lone run (that commit, and
/// the outcome), not three (creation, claim, outcome). A submission while no worker runs only
/// creates the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_run_submitted_to_running_workers_costs_two_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    let rt = Arc::new(Runtime::builder().store(store.clone()).register(Noop).build().unwrap());

    let idle = rt.submit("noop", 0).await.unwrap().id;
    assert_eq!(state_of(&rt, idle).await.state, RunState::Queued, "no worker runs yet");
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    while state_of(&rt, idle).await.state != RunState::Succeeded {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // the dispatcher goes to sleep
    for n in 1..=5 {
        let before = store.syncs();
        let id = rt.submit("noop", n).await.unwrap().id;
        let submitted = store.syncs() - before;
        while state_of(&rt, id).await.state != RunState::Succeeded {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let history = rt.store().history(id).await.unwrap();
        let path: Vec<RunState> = history.iter().map(|h| h.to).collect();
        assert_eq!(path, [RunState::Queued, RunState::Processing, RunState::Succeeded]);
        assert_eq!(submitted, 1, "the submission is one sync, its claim with it");
        // The outcome is visible as soon as it is applied; its sync follows.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.syncs() - before < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.syncs() - before, 2, "run {n}: syncs for a lone no-op run");
    }
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}
