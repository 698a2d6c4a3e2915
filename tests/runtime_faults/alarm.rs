//! The silent-failure alarm without the server: the engine's `AlarmWatch` observes the runtime
//! and raises an agent whose due work waits past its window with no success; a pause clears it.

use steadfast::runtime::{Alarm, AlarmWatch};

use super::*;

#[tokio::test(start_paused = true)]
async fn the_engine_raises_the_alarm_for_a_stalled_agent() {
    let watch = AlarmWatch::new(Alarm::window(Duration::from_secs(60)));
    let mut down = Flaky::new("down", Fault::Transient, u32::MAX);
    down.policy = down.policy.max_attempts(1000);
    let rt = Arc::new(
        builder()
            .register_with(down, AgentOptions::new().no_breaker())
            .register_with(Flaky::new("fine", Fault::Transient, 0), AgentOptions::new())
            .observe(watch.clone())
            .build()
            .unwrap(),
    );
    rt.submit("down", "a".to_owned()).await.unwrap();
    rt.submit("fine", "b".to_owned()).await.unwrap();
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(watch.check(&rt).await.unwrap().is_empty(), "within the window");
    assert!(watch.last_successes().iter().any(|(agent, _)| agent == "fine"));
    tokio::time::sleep(Duration::from_secs(70)).await;
    let raised = watch.check(&rt).await.unwrap();
    assert_eq!(raised.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(), ["down"]);
    assert!(raised[0].reason.contains("no success seen"), "{}", raised[0].reason);
    // Paused by an operator, who knows: cleared.
    rt.pause("down", ada(), "looking into it").await.unwrap();
    assert!(watch.check(&rt).await.unwrap().is_empty(), "paused: an operator knows");
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}
