//! Metrics and the silent-failure alarm: what the runtime's observer counts, what a scrape
//! reads from the store, checked by Prometheus' own `promtool check metrics`; and the alarm
//! raised for an agent whose due work waits past its window with no success.

use std::sync::Arc;

use async_trait::async_trait;
use steadfast::clock::TokioClock;
use steadfast::ops::{Alarm, Metrics};
use steadfast::prelude::*;
use steadfast::store::MemoryStore;

use super::*;

/// Succeeds, unless its input is `"broken"`: then it fails transiently every time.
struct Flaky;

#[async_trait]
impl Agent for Flaky {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        "flaky"
    }
    async fn run(&self, _: &mut Context, input: String) -> Result<Outcome<String>, AgentError> {
        if input == "broken" {
            return Err(
                AgentError::transient("upstream says 503").retry_after(Duration::from_secs(5))
            );
        }
        Ok(Outcome::Done(input))
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().max_attempts(1000)
    }
}

/// Always fails transiently, under its own name.
struct Broken;

#[async_trait]
impl Agent for Broken {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "broken"
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::transient("upstream says 503").retry_after(Duration::from_secs(5)))
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().max_attempts(1000)
    }
}

/// Waits for a signal that never comes.
struct Waiter;

#[async_trait]
impl Agent for Waiter {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "waiter"
    }
    async fn run(&self, _: &mut Context, _: u32) -> Result<Outcome<u32>, AgentError> {
        Ok(Outcome::Wait(WaitFor::signal("approval")))
    }
}

/// The value of the sample `name{labels}` in Prometheus text (labels as rendered, sorted).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_and_a_stalled_agent_raises_the_alarm() {
    let metrics = Metrics::new(Alarm::window(Duration::from_secs(60)));
    let store = MemoryStore::with_clock(Arc::new(TokioClock::new()));
    let rt = Arc::new(
        Runtime::builder()
            .store(store)
            .register_with(Flaky, steadfast::runtime::AgentOptions::new().no_breaker())
            .register_with(Broken, steadfast::runtime::AgentOptions::new().no_breaker())
            .register(Waiter)
            .observe(metrics.clone())
            .build()
            .unwrap(),
    );
    for text in ["a", "b", "c"] {
        rt.submit("flaky", text.to_owned()).await.unwrap();
    }
    rt.submit("broken", 1).await.unwrap();
    rt.submit("waiter", 1).await.unwrap();
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    let text = metrics.render(&rt).await.unwrap();
    let ok = r#"steadfast_attempts_total{agent="flaky",outcome="succeeded",fault="none"}"#;
    assert_eq!(sample(&text, ok), Some(3.0), "{text}");
    let failed =
        r#"steadfast_attempts_total{agent="broken",outcome="failed_transient",fault="transient"}"#;
    assert!(sample(&text, failed).is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(sample(&text, r#"steadfast_runs{agent="flaky",state="succeeded"}"#), Some(3.0));
    assert_eq!(sample(&text, r#"steadfast_runs{agent="flaky",state="queued"}"#), Some(0.0));
    assert!(text.contains("steadfast_commit_seconds_bucket{le=\"0.001\"}"), "{text}");
    assert!(text.contains("steadfast_run_duration_seconds_bucket{agent=\"flaky\""), "{text}");
    assert!(sample(&text, r#"steadfast_last_success_timestamp_seconds{agent="flaky"}"#).is_some());
    let build = format!(r#"steadfast_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    let waiting = sample(&text, r#"steadfast_oldest_waiting_age_seconds{agent="waiter"}"#);
    assert!(waiting.is_some_and(|age| (10.0..13.0).contains(&age)), "{waiting:?} in {text}");
    let none = sample(&text, r#"steadfast_oldest_waiting_age_seconds{agent="flaky"}"#);
    assert_eq!(none, Some(0.0));
    assert!(metrics.alarms(&rt).await.unwrap().is_empty(), "within the window");

    // The window passes with the broken agent's run due and never a success.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let raised = metrics.alarms(&rt).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].agent, "broken");
    assert!(raised[0].reason.contains("due work waiting for"), "{}", raised[0].reason);
    let text = metrics.render(&rt).await.unwrap();
    assert_eq!(sample(&text, r#"steadfast_alarm{agent="broken"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"steadfast_alarm{agent="flaky"}"#), Some(0.0));
    // Paused, it waits for an operator: no alarm.
    rt.pause("broken", steadfast::store::Actor::Operator("ada".into()), "vendor outage")
        .await
        .unwrap();
    assert!(metrics.alarms(&rt).await.unwrap().is_empty());
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
}

/// `steadfast serve`'s `/metrics`, checked by `promtool check metrics` (Debian's `prometheus`
/// package; `scripts/peers.sh promtool`), and `/alarms` while nothing is stalled.
#[test]
fn the_served_metrics_pass_promtool() {
    let Ok(promtool) = which("promtool") else {
        super::peers::missing_peer::<()>("promtool (scripts/peers.sh promtool)");
        return;
    };
    let dir = super::ops::prepared();
    let server = super::serve::Server::start(dir.path(), &[]);
    let url = server.url.clone();
    let (text, alarms) =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
            async {
                let c = steadfast::reqwest::Client::new();
                let metrics = c.get(format!("{url}/metrics")).send().await.unwrap();
                assert_eq!(metrics.status().as_u16(), 200);
                let text = metrics.text().await.unwrap();
                let alarms = c.get(format!("{url}/alarms")).send().await.unwrap();
                (text, alarms.status().as_u16())
            },
        );
    assert_eq!(alarms, 200);
    assert!(text.contains(r#"steadfast_runs{agent="digest",state="queued"} 0"#), "{text}");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool: {}\n{text}", super::text(&checked));
    assert!(server.stop().success());
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
