//! Notifications as durable runs, through the public API, against a real HTTP receiver on
//! 127.0.0.1 (and, for the crashes, worker processes killed by SIGKILL or `abort`):
//!
//! - a receiver that is down, then up, gets every notification (review items, dead letters,
//!   a run held a second time) exactly once per id, each with a valid signature;
//! - a receiver that refuses a notification dead-letters it, with no notification about the
//!   notifier's own dead letter, and the URL's path (often a token) is nowhere in the store;
//! - a worker that dies right after a move that needs a notification is acknowledged loses
//!   no notification (the move and the notifier's run are one write);
//! - a delivery cut off by a crash (the receiver got it, the journal did not) is made again
//!   under the same id, with a valid signature.

#[path = "common/peers.rs"]
mod peers;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use peers::{HttpServer, Reply, Request};
use serde_json::Value;
use steadfast::agents::{self, MailNotifier, Mailer, Secret, SmtpSecurity, Transport, Webhook};
use steadfast::notify::{Event, Subscription};
use steadfast::prelude::*;
use steadfast::runtime::AgentOptions;
use steadfast::store::{Actor, ListQuery, MemoryStore, SledStoreOptions};

const SECRET: &str = "a-test-secret-of-32-bytes-000000";

/// Fails with a logic fault: held for review.
struct Held;

#[async_trait]
impl Agent for Held {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "held"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::logic(format!("item {n} needs a person <b>")))
    }
}

/// Fails with a permanent fault: a dead letter.
struct Doomed;

#[async_trait]
impl Agent for Doomed {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "doomed"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        Err(AgentError::permanent(format!("item {n} cannot be done")))
    }
}

fn webhook(url: &str) -> Webhook {
    Webhook::new(url, Secret::new(SECRET))
        .unwrap()
        .retry(RetryPolicy::default().max_attempts(40).backoff(ms(20), ms(150)))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime(store: impl Store, url: &str, lease: Duration) -> Runtime {
    Runtime::builder()
        .store(store)
        .workers(4)
        .lease(lease)
        .register(Held)
        .register(Doomed)
        .register_with(webhook(url), AgentOptions::new().no_breaker())
        .notify("webhook", Subscription::all())
        .build()
        .unwrap()
}

async fn runs_of(store: &dyn Store, agent: &str) -> Vec<steadfast::store::RunRecord> {
    store.list(ListQuery::new().agent(agent).limit(1000)).await.unwrap().runs
}

/// Waits (in real time, at most `secs`) until `done` holds of the webhook's runs.
async fn until(
    store: &dyn Store,
    secs: u64,
    what: &str,
    done: impl Fn(&[steadfast::store::RunRecord]) -> bool,
) {
    let start = Instant::now();
    loop {
        let runs = runs_of(store, "webhook").await;
        if done(&runs) {
            return;
        }
        let states: Vec<String> =
            runs.iter().map(|r| format!("{}#{}", r.state, r.attempt)).collect();
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}: {states:?}"
        );
        tokio::time::sleep(ms(20)).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Every delivery the receiver got, checked: its signature is valid, its id header is its
/// body's id, its event header its body's event. Returns the bodies by id, each id's
/// deliveries in order.
fn checked(requests: &[Request]) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for request in requests {
        assert_eq!(request.method, "POST");
        let signature = request.header(agents::SIGNATURE_HEADER).expect("a signature header");
        assert!(
            agents::verify(
                SECRET.as_bytes(),
                signature,
                request.body.as_bytes(),
                unix_now(),
                Duration::from_secs(300)
            ),
            "a bad signature {signature} on {}",
            request.body
        );
        assert!(!agents::verify(
            b"another secret, wrong",
            signature,
            request.body.as_bytes(),
            unix_now(),
            Duration::from_secs(300)
        ));
        let body = request.json();
        let id = request.header(agents::ID_HEADER).expect("an id header");
        assert_eq!(body["id"], id, "the id header is the body's id");
        assert_eq!(request.header(agents::EVENT_HEADER), body["event"].as_str());
        by_id.entry(id.to_owned()).or_default().push(body);
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_notification_once_with_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let port = HttpServer::free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/steadfast");
    let rt = runtime(SledStore::open(dir.path()).unwrap(), &url, Duration::from_secs(30));
    let store = rt.store().clone();
    let mut expected = BTreeSet::new();
    for n in 1..=3 {
        expected.insert(("review", rt.submit("held", n).await.unwrap().id));
        expected.insert(("dead_letter", rt.submit("doomed", n).await.unwrap().id));
    }
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    // The receiver is down: every notification is tried at least twice, and kept.
    until(&*store, 60, "six notifications failed twice", |runs| {
        runs.len() == 6 && runs.iter().all(|r| r.attempt >= 2 && r.state != RunState::Succeeded)
    })
    .await;
    // A run approved and held again is notified again, under another id.
    let (_, again) = expected.iter().find(|(event, _)| *event == "review").copied().unwrap();
    rt.approve(again, Actor::Operator("ada".into()), Some("try again")).await.unwrap();
    until(&*store, 30, "a seventh notification", |runs| runs.len() == 7).await;

    let receiver = HttpServer::start_on(port, |_| Reply::new(204, "")).await;
    until(&*store, 60, "every notification delivered", |runs| {
        runs.len() == 7 && runs.iter().all(|r| r.state == RunState::Succeeded)
    })
    .await;
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();

    let delivered = checked(&receiver.requests());
    assert_eq!(delivered.len(), 7, "seven notifications: {:?}", delivered.keys());
    for (id, bodies) in &delivered {
        assert_eq!(bodies.len(), 1, "{id} delivered {} times", bodies.len());
    }
    let mut got = BTreeSet::new();
    for (id, bodies) in &delivered {
        let body = &bodies[0];
        let run: RunId = body["run"].as_str().unwrap().parse().unwrap();
        let event = body["event"].as_str().unwrap();
        assert!(id.starts_with(&format!("{event}:{run}:")), "{id}");
        let state = if event == "review" { "needs_review" } else { "failed_permanent" };
        assert_eq!(body["state"], state);
        assert!(body["error"]["message"].as_str().unwrap().contains("item"), "{body}");
        assert!(body.get("input").is_none(), "a notification carries no run input");
        got.insert((if event == "review" { "review" } else { "dead_letter" }, run));
    }
    assert_eq!(got, expected);
    let again_ids: Vec<&String> =
        delivered.keys().filter(|id| id.contains(&again.to_string())).collect();
    assert_eq!(again_ids.len(), 2, "the run held twice was notified twice: {again_ids:?}");
    for run in runs_of(&*store, "webhook").await {
        assert_eq!(run.output.as_ref().unwrap()["status"], 204);
        assert_eq!(run.output.as_ref().unwrap()["to"], format!("http://127.0.0.1:{port}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_a_dead_letter_that_notifies_nobody_and_shows_no_path() {
    let receiver = HttpServer::start(|_| Reply::new(400, "unknown hook")).await;
    let url = receiver.url("/hooks/T0KEN-IN-PATH?sig=QUERYSECRET");
    let rt = runtime(MemoryStore::new(), &url, Duration::from_secs(30));
    rt.submit("doomed", 1).await.unwrap();
    rt.submit("held", 1).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let store = rt.store().clone();
    let runs = runs_of(&*store, "webhook").await;
    assert_eq!(runs.len(), 2, "one notification each, none about the notifier itself");
    assert!(runs.iter().all(|r| r.state == RunState::FailedPermanent && r.attempt == 1));
    assert_eq!(receiver.requests().len(), 2);
    for run in &runs {
        let message = &run.last_error.as_ref().unwrap().message;
        assert!(message.starts_with("HTTP 400 Bad Request from http://127.0.0.1:"), "{message}");
        let everything = format!(
            "{run:?}{:?}{:?}",
            store.history(run.id).await.unwrap(),
            store.effects(run.id).await.unwrap()
        );
        assert!(
            !everything.contains("T0KEN") && !everything.contains("QUERYSECRET"),
            "{everything}"
        );
    }
    let letters = store.dead_letters(None, 100).await.unwrap();
    assert_eq!(letters.len(), 3, "the doomed run and both notifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_takes_only_its_events_and_agents() {
    let receiver = HttpServer::start(|_| Reply::new(200, "ok")).await;
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .register(Held)
        .register(Doomed)
        .register(webhook(&receiver.url("/")))
        .notify("webhook", Subscription::all().events([Event::DeadLetter]).agents(["doomed"]))
        .build()
        .unwrap();
    let doomed = rt.submit("doomed", 1).await.unwrap().id;
    rt.submit("held", 1).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let held = rt.store().list(ListQuery::new().agent("held")).await.unwrap().runs[0].id;
    // An operator's rejection is a dead letter too, but of `held`: not subscribed.
    rt.reject(held, Actor::Operator("ada".into()), None).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let ids: Vec<String> = checked(&receiver.requests()).into_keys().collect();
    assert_eq!(ids, [format!("dead_letter:{doomed}:2")]);
    // A notifier that is not registered, or does not take notifications, is refused.
    let unregistered =
        Runtime::builder().store(MemoryStore::new()).notify("webhook", Subscription::all()).build();
    assert!(unregistered.unwrap_err().to_string().contains("`webhook` is not registered"));
    let wrong = Runtime::builder()
        .store(MemoryStore::new())
        .register(Held)
        .notify("held", Subscription::all())
        .build();
    assert!(wrong.unwrap_err().to_string().contains("its input is not"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_notifier_mails_through_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = peers::Smtp::start(dir.path()) else { return };
    let transport = Transport::smtp("127.0.0.1", smtp.port, SmtpSecurity::None);
    let mailer = Mailer::new(transport, "steadfast@example.com", ["ops@example.com"]).unwrap();
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .register(Doomed)
        .register(MailNotifier::new(mailer).link("http://127.0.0.1:7420"))
        .notify("mail-notifier", Subscription::all())
        .build()
        .unwrap();
    let doomed = rt.submit("doomed", 4).await.unwrap().id;
    rt.run_until_idle().await.unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    let subject = peers::header(message, "Subject").unwrap();
    assert_eq!(subject, format!("[steadfast] dead_letter: doomed run {doomed}"));
    assert_eq!(peers::header(message, "To").as_deref(), Some("ops@example.com"));
    let id = format!("dead_letter:{doomed}:2");
    assert!(message.contains(&format!("Notification {id}")), "{message}");
    assert!(message.contains(&format!("http://127.0.0.1:7420/ui/runs/{doomed}")), "{message}");
    assert!(message.contains("item 4 cannot be done"), "{message}");
    let notice = rt.store().find_by_key("mail-notifier", &id).await.unwrap().unwrap();
    assert_eq!(notice.state, RunState::Succeeded);
}

/// Takes a while: with one at a time, the next run waits behind it.
struct Slow;

#[async_trait]
impl Agent for Slow {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "slow"
    }
    async fn run(&self, _: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(Outcome::Done(n))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_seen_again_and_again_is_notified_once() {
    use steadfast::ops::{Alarm, Metrics, notify_alarms};
    let receiver = HttpServer::start(|_| Reply::new(200, "ok")).await;
    let metrics = Metrics::new(Alarm::window(ms(300)));
    let rt = std::sync::Arc::new(
        Runtime::builder()
            .store(MemoryStore::new())
            .observe(metrics.clone())
            .register_with(Slow, AgentOptions::new().concurrency(1))
            .register(webhook(&receiver.url("/")))
            .notify("webhook", Subscription::all().events([Event::Alarm]))
            .build()
            .unwrap(),
    );
    rt.submit("slow", 1).await.unwrap();
    rt.submit("slow", 2).await.unwrap();
    let watcher = tokio::spawn(notify_alarms(rt.clone(), metrics.clone(), ms(50)));
    let worker = tokio::spawn({
        let rt = rt.clone();
        async move { rt.run_until_shutdown().await }
    });
    // The second run waits behind the first for 3 s, with no success in a 300 ms window: the
    // alarm is raised, seen every 50 ms, and notified once.
    let start = Instant::now();
    while receiver.requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no alarm was notified");
        tokio::time::sleep(ms(20)).await;
    }
    tokio::time::sleep(ms(500)).await;
    rt.shutdown().await.unwrap();
    worker.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops")
        .unwrap();
    let delivered = checked(&receiver.requests());
    assert_eq!(delivered.len(), 1, "one alarm, one notification: {:?}", delivered.keys());
    let (id, bodies) = delivered.into_iter().next().unwrap();
    assert!(id.starts_with("alarm:slow:"), "{id}");
    assert_eq!(bodies.len(), 1, "delivered once");
    assert_eq!(bodies[0]["event"], "alarm");
    assert_eq!(bodies[0]["run"], Value::Null);
    assert!(bodies[0]["reason"].as_str().unwrap().contains("window"), "{}", bodies[0]);
    let again = rt
        .notify_alarm(
            "slow",
            "seen again",
            id.rsplit(':')
                .next()
                .unwrap()
                .parse::<u64>()
                .map(steadfast::clock::Timestamp::from_millis)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again, 0, "the same alarm is not notified twice");
}

// ---- Crashes ------------------------------------------------------------------------------

const CHILD_ENV: &str = "STEADFAST_NOTIFY_CHILD";

/// A worker on the database in `$STEADFAST_NOTIFY_CHILD/db`, posting to
/// `$STEADFAST_NOTIFY_URL`. With `STEADFAST_NOTIFY_ABORT=1` it submits a `held` run and aborts
/// the moment the run's hold for review is acknowledged (the review hook); otherwise it
/// works until idle.
#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let url = std::env::var("STEADFAST_NOTIFY_URL").unwrap();
    let abort = std::env::var("STEADFAST_NOTIFY_ABORT").is_ok();
    let store = SledStore::open_with(PathBuf::from(dir).join("db"), SledStoreOptions::default())
        .expect("the worker opens the database");
    let mut builder = Runtime::builder()
        .store(store)
        .workers(2)
        .lease(ms(400))
        .register(Held)
        .register_with(webhook(&url), AgentOptions::new().no_breaker())
        .notify("webhook", Subscription::all());
    if abort {
        builder = builder.on_review(|_| std::process::abort());
    }
    let rt = builder.build().unwrap();
    if abort {
        rt.submit("held", 7).await.unwrap();
    }
    rt.run_until_idle().await.unwrap();
    println!("@@ idle");
}

fn open(dir: &Path) -> (tokio::runtime::Runtime, SledStore) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store = SledStore::open(dir.join("db")).unwrap();
    (runtime, store)
}

#[test]
fn a_worker_killed_right_after_the_move_or_during_the_delivery_loses_no_notification() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let receiving =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The receiver holds its answer to a notification's first delivery for a minute (the
    // worker is killed meanwhile), and answers the next at once.
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let receiver = receiving.block_on(HttpServer::start(move |request| {
        let id = request.header(agents::ID_HEADER).unwrap_or("").to_owned();
        let first = seen.lock().unwrap().insert(id);
        if first {
            Reply::new(200, "ok").delay(Duration::from_secs(60))
        } else {
            Reply::new(200, "ok")
        }
    }));
    let url = receiver.url("/hook");
    let vars = [("STEADFAST_NOTIFY_URL", url.as_str()), ("STEADFAST_NOTIFY_ABORT", "1")];

    // 1. Dies the moment the hold is acknowledged: the notification was written with it.
    let status =
        common::spawn_worker_with("notify_child", CHILD_ENV, dir.path(), &vars).wait().unwrap();
    assert!(!status.success(), "the worker was to abort: {status}");
    let (rt, store) = open(dir.path());
    let held = rt.block_on(runs_of(&store, "held"));
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].state, RunState::NeedsReview);
    let id = format!("review:{}:2", held[0].id);
    let notice = rt.block_on(store.find_by_key("webhook", &id)).unwrap();
    assert_eq!(notice.expect("the notification outlived the crash").state, RunState::Queued);
    assert!(receiver.requests().is_empty(), "nothing was delivered yet");
    drop(store);

    // 2. Killed while the receiver holds the delivery: the journal has no record of it.
    let vars = [("STEADFAST_NOTIFY_URL", url.as_str())];
    let mut child = common::spawn_worker_with("notify_child", CHILD_ENV, dir.path(), &vars);
    let start = Instant::now();
    while receiver.requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "the worker never delivered");
        std::thread::sleep(ms(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // 3. Another worker delivers it again, under the same id; the receiver answers at once.
    common::drain_with("notify_child", CHILD_ENV, dir.path(), &vars);
    let delivered = checked(&receiver.requests());
    assert_eq!(delivered.keys().collect::<Vec<_>>(), [&id]);
    let bodies = &delivered[&id];
    assert_eq!(bodies.len(), 2, "cut off once, then delivered: {bodies:?}");
    assert_eq!(bodies[0], bodies[1], "the same notification both times");
    let (rt, store) = open(dir.path());
    let notice = rt.block_on(store.find_by_key("webhook", &id)).unwrap().unwrap();
    assert_eq!(notice.state, RunState::Succeeded);
    let history = rt.block_on(store.history(notice.id)).unwrap();
    assert!(
        history.iter().any(|h| h.actor == Actor::Timer && h.reason.contains("lease")),
        "{history:?}"
    );
}
