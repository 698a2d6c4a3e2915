//! The flagship agents against real peers: a local HTTP server serving RSS and Atom feeds, a
//! local OpenAI-compatible server with scripted answers, aiosmtpd, and (when it runs) a real
//! small model behind llama.cpp's server.

#[path = "common/peers.rs"]
mod peers;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peers::{HttpServer, Reply, Smtp};
use serde_json::{Value, json};
use steadfast::agents::{
    self, ChatClient, Classifier, Collector, Edition, FetchError, Fetcher, Item, Label, Labeled,
    LabeledBy, Mailer, Receipt, Report, Reporter, Rules, Secret, SmtpSecurity, Transport,
};
use steadfast::fault::Classify;
use steadfast::prelude::*;
use steadfast::store::{ListQuery, MemoryStore, RunRecord};

const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Eng blog</title><link>https://example.com</link>
<item><guid>rss-1</guid><title>Critical vulnerability in libfoo</title>
<description>&lt;p&gt;CVE-2026-1111 allows &lt;b&gt;remote code execution&lt;/b&gt;.&lt;/p&gt;</description>
<link>https://example.com/a</link><pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate></item>
<item><guid>rss-2</guid><title>Our API outage post-mortem</title>
<description>The root cause of the incident was a bad config push.</description></item>
</channel></rss>"#;

const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Releases</title><id>urn:releases</id>
<updated>2026-11-23T08:00:00Z</updated>
<entry><id>urn:rel:1</id><title>Widget 2.0 released</title><updated>2026-11-22T08:00:00Z</updated>
<summary>Widget 2.0 is now available with a new changelog format.</summary>
<link href="https://example.com/widget-2"/></entry>
</feed>"#;

/// Runs `input` through `agent` on a fresh runtime and returns the store and the run.
async fn run_one<A: Agent>(agent: A, input: A::Input) -> (Runtime, RunRecord) {
    let name = agent.name().to_owned();
    let rt = Runtime::builder().store(MemoryStore::new()).register(agent).build().unwrap();
    let run = rt.submit(&name, input).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let record = rt.store().get(run.id).await.unwrap().unwrap();
    (rt, record)
}

fn output<T: serde::de::DeserializeOwned>(run: &RunRecord) -> T {
    serde_json::from_value(run.output.clone().expect("an output")).unwrap()
}

fn local() -> Fetcher {
    Fetcher::new().allow("127.0.0.1").timeout(Duration::from_millis(500))
}

mod collector {
    use super::*;

    #[tokio::test]
    async fn reads_rss_and_atom_from_a_real_server() {
        let server = HttpServer::start(|r| match r.path.as_str() {
            "/rss.xml" => Reply::ok("application/rss+xml", RSS),
            "/atom.xml" => Reply::ok("application/atom+xml", ATOM),
            _ => Reply::new(404, "no"),
        })
        .await;
        let collector = Collector::feed(server.url("/rss.xml"))
            .source(agents::Source::Feed(server.url("/atom.xml")))
            .fetcher(local());
        let (_, run) = run_one(collector, Edition::new("e1")).await;
        assert_eq!(run.state, RunState::Succeeded, "{:?}", run.last_error);
        let items: Vec<Item> = output(&run);
        let titles: Vec<&str> = items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Critical vulnerability in libfoo",
                "Our API outage post-mortem",
                "Widget 2.0 released"
            ]
        );
        assert_eq!(items[0].id, "rss-1");
        assert_eq!(items[0].body, "CVE-2026-1111 allows remote code execution .");
        assert_eq!(items[0].link.as_deref(), Some("https://example.com/a"));
        assert!(items[0].published.as_deref().unwrap().starts_with("2026-11-23T08:00:00"));
        assert_eq!(items[2].link.as_deref(), Some("https://example.com/widget-2"));
    }

    #[tokio::test]
    async fn a_slow_server_times_out_as_transient() {
        let server =
            HttpServer::start(|_| Reply::ok("text/xml", RSS).delay(Duration::from_secs(3))).await;
        let err = local().get(&server.url("/rss.xml")).await.unwrap_err();
        assert!(matches!(err, FetchError::Http { .. }), "{err}");
        assert_eq!(err.fault(), Fault::Transient, "{err}");
    }

    #[tokio::test]
    async fn a_404_is_permanent_and_a_503_transient_with_retry_after() {
        let server = HttpServer::start(|r| match r.path.as_str() {
            "/busy" => Reply::new(503, "busy").header("retry-after", "7"),
            _ => Reply::new(404, "gone"),
        })
        .await;
        let err = local().get(&server.url("/gone")).await.unwrap_err();
        assert_eq!(err.fault(), Fault::Permanent, "{err}");
        assert!(err.to_string().contains("HTTP 404"), "{err}");
        let err = local().get(&server.url("/busy")).await.unwrap_err();
        assert_eq!(err.fault(), Fault::Transient, "{err}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

        // The collector with only a missing feed fails permanently, saying which feed.
        let (rt, run) =
            run_one(Collector::feed(server.url("/gone")).fetcher(local()), Edition::new("e")).await;
        assert_eq!(run.state, RunState::FailedPermanent);
        assert!(run.last_error.unwrap().to_string().contains("/gone"));
        let notes = rt.store().notes(run.id).await.unwrap();
        assert!(notes[0].text.contains("HTTP 404"), "{notes:?}");
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_with_or_without_a_length() {
        let big = vec![b'x'; 64 * 1024];
        let body = big.clone();
        let server = HttpServer::start(move |r| match r.path.as_str() {
            "/chunked" => Reply::ok("text/xml", body.clone()).chunked(),
            _ => Reply::ok("text/xml", body.clone()),
        })
        .await;
        let fetcher = local().max_bytes(10 * 1024);
        for path in ["/sized", "/chunked"] {
            let err = fetcher.get(&server.url(path)).await.unwrap_err();
            assert!(matches!(err, FetchError::TooLarge { limit: 10240, .. }), "{path}: {err}");
            assert_eq!(err.fault(), Fault::Permanent);
        }
        assert_eq!(local().max_bytes(big.len()).get(&server.url("/sized")).await.unwrap().1, big);
    }

    #[tokio::test]
    async fn redirects_are_checked_at_every_hop() {
        let server = HttpServer::start(|r| match r.path.as_str() {
            "/to-private" => Reply::new(302, "").header("location", "http://10.0.0.7/feed.xml"),
            "/to-metadata" => {
                Reply::new(301, "").header("location", "http://169.254.169.254/latest/meta-data/")
            }
            "/to-file" => Reply::new(302, "").header("location", "file:///etc/passwd"),
            "/loop" => Reply::new(302, "").header("location", "/loop"),
            "/hop" => Reply::new(307, "").header("location", "/rss.xml"),
            _ => Reply::ok("text/xml", RSS),
        })
        .await;
        let err = local().get(&server.url("/to-private")).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Refused { kind: "private", url, .. } if url.contains("10.0.0.7")),
            "{err}"
        );
        let err = local().get(&server.url("/to-metadata")).await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { kind: "cloud metadata", .. }), "{err}");
        let err = local().get(&server.url("/to-file")).await.unwrap_err();
        assert!(matches!(err, FetchError::Scheme { .. }), "{err}");
        let err = local().get(&server.url("/loop")).await.unwrap_err();
        assert!(matches!(err, FetchError::TooManyRedirects { limit: 5, .. }), "{err}");
        assert_eq!(server.requests().iter().filter(|r| r.path == "/loop").count(), 6);
        let (url, body) = local().get(&server.url("/hop")).await.unwrap();
        assert!(url.ends_with("/rss.xml") && body == RSS.as_bytes());
        // Without the allow-list, the local server itself is refused before any connection.
        let before = server.requests().len();
        let err = Fetcher::new().get(&server.url("/rss.xml")).await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { kind: "loopback", .. }), "{err}");
        assert_eq!(server.requests().len(), before);
    }

    #[tokio::test]
    async fn https_feeds_are_fetched_through_the_checked_resolver_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("rss.xml"), RSS).unwrap();
        let Some(server) = peers::HttpsServer::start(dir.path(), &www) else { return };
        // `localhost`: the name goes through the fetcher's resolver, which checks (and here
        // allows) both of its addresses.
        let url = format!("https://localhost:{}/rss.xml", server.port);
        let ca = std::fs::read(dir.path().join("cert.pem")).unwrap();
        let trusting = local().allow("::1").ca_pem(&ca).unwrap();
        let (_, body) = trusting.get(&url).await.unwrap();
        assert_eq!(body, RSS.as_bytes());

        let err = local().allow("::1").get(&url).await.unwrap_err();
        assert_eq!(err.fault(), Fault::Permanent, "an untrusted certificate: {err}");
        let err = Fetcher::new().ca_pem(&ca).unwrap().get(&url).await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { kind: "loopback", .. }), "{err}");
    }

    #[tokio::test]
    async fn folders_skip_what_they_cannot_read_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.md"), "# Alpha released\n\nVersion 1.0.").unwrap();
        std::fs::write(dir.path().join("b.txt"), "Beta outage\nroot cause: DNS").unwrap();
        std::fs::write(dir.path().join("c.json"), r#"{"title": "Gamma", "body": "g", "id": "g1"}"#)
            .unwrap();
        std::fs::write(dir.path().join("d.json"), "{broken").unwrap();
        std::fs::write(dir.path().join("e.md"), "# Alpha released\n\nVersion 1.0.").unwrap(); // duplicate
        std::fs::write(dir.path().join("ignored.png"), [0u8, 1, 2]).unwrap();
        let (rt, run) = run_one(Collector::folder(dir.path()), Edition::new("e")).await;
        let items: Vec<Item> = output(&run);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["file:a.md", "file:b.txt", "g1"]);
        let notes = rt.store().notes(run.id).await.unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].text.contains("d.json: not JSON"), "{}", notes[0].text);

        let (_, run) =
            run_one(Collector::folder(dir.path().join("missing")), Edition::new("e")).await;
        assert_eq!(run.state, RunState::FailedPermanent);
        assert!(run.last_error.unwrap().to_string().contains("reading the folder"));
    }

    /// Issue 16, defects 1 and 2: an edition over the item cap says how many it left out, an
    /// item file over the size cap is skipped with a reason, and a title is bounded.
    #[tokio::test]
    async fn caps_on_items_file_sizes_and_titles_are_said_not_silent() {
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<Value> = (0..3000)
            .map(|i| json!({"id": format!("i{i}"), "title": format!("item {i}")}))
            .collect();
        std::fs::write(dir.path().join("many.json"), serde_json::to_vec(&many).unwrap()).unwrap();
        let (rt, run) = run_one(Collector::folder(dir.path()), Edition::new("e")).await;
        let items: Vec<Item> = output(&run);
        assert_eq!(items.len(), 500, "the default cap");
        let notes = rt.store().notes(run.id).await.unwrap();
        assert!(
            notes.iter().any(|n| n.text.contains("left out 2500 of 3000 items")),
            "the cap is said in a note: {notes:?}"
        );
        let (rt, run) =
            run_one(Collector::folder(dir.path()).max_items(3000), Edition::new("e")).await;
        assert_eq!(output::<Vec<Item>>(&run).len(), 3000, "the cap is a setting");
        assert!(rt.store().notes(run.id).await.unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("huge.txt"), "x".repeat(3 * 1024 * 1024)).unwrap();
        std::fs::write(dir.path().join("long.txt"), format!("{}\nbody", "t".repeat(5000))).unwrap();
        let (rt, run) = run_one(Collector::folder(dir.path()), Edition::new("e")).await;
        let items: Vec<Item> = output(&run);
        assert_eq!(items.len(), 1, "the oversized file is skipped: {items:?}");
        assert_eq!(items[0].title.chars().count(), agents::MAX_TITLE_CHARS + 1);
        let notes = rt.store().notes(run.id).await.unwrap();
        assert!(
            notes.iter().any(|n| n.text.contains("huge.txt") && n.text.contains("limit")),
            "{notes:?}"
        );
        let (_, run) = run_one(
            Collector::folder(dir.path()).max_file_bytes(4 * 1024 * 1024),
            Edition::new("e"),
        )
        .await;
        assert_eq!(output::<Vec<Item>>(&run).len(), 2);
    }
}

/// A scripted OpenAI-compatible server: answers are taken from a queue, one per request.
struct FakeModel {
    server: HttpServer,
}

fn completion(content: &str, finish_reason: &str) -> Reply {
    let body = json!({
        "id": "x", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}]
    });
    Reply::ok("application/json", body.to_string())
}

impl FakeModel {
    async fn start(replies: Vec<Reply>) -> FakeModel {
        let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
        let server = HttpServer::start(move |_| {
            queue.lock().unwrap().pop_front().unwrap_or_else(|| Reply::new(500, "script ran out"))
        })
        .await;
        FakeModel { server }
    }

    fn client(&self) -> ChatClient {
        ChatClient::new(self.server.url("/v1"), "fake").api_key(Secret::new("sk-canary-7f3a"))
    }

    fn bodies(&self) -> Vec<Value> {
        self.server.requests().iter().map(|r| r.json()).collect()
    }
}

fn item(title: &str, body: &str) -> Item {
    Item {
        id: title.to_lowercase().replace(' ', "-"),
        source: "test".into(),
        title: title.into(),
        body: body.into(),
        link: None,
        published: None,
    }
}

const GOOD: &str =
    r#"{"label": "security", "confidence": 0.9, "summary": "A remote code execution bug."}"#;

mod classifier {
    use super::*;

    async fn classify(model: &FakeModel, item: Item) -> (Runtime, RunRecord) {
        run_one(Classifier::llm(model.client()), item).await
    }

    fn by(run: &RunRecord) -> LabeledBy {
        output::<Labeled>(run).by
    }

    #[tokio::test]
    async fn a_valid_answer_is_taken_with_the_strict_schema_asked_for() {
        let model = FakeModel::start(vec![completion(GOOD, "stop")]).await;
        let (rt, run) = classify(&model, item("Bug in libfoo", "CVE-2026-1 lets anyone in")).await;
        assert_eq!(run.state, RunState::Succeeded);
        let labeled: Labeled = output(&run);
        assert_eq!(labeled.verdict.label, Label::Security);
        assert_eq!(labeled.by, LabeledBy::Model { model: "fake".into(), attempts: 1 });
        let request = &model.server.requests()[0];
        assert_eq!(request.header("authorization"), Some("Bearer sk-canary-7f3a"));
        let body = request.json();
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        assert_eq!(body["temperature"], 0);
        // The answer is journaled: the run's effect holds every attempt.
        let effects = rt.store().effects(run.id).await.unwrap();
        assert_eq!(effects[0].name, "classify");
        assert_eq!(effects[0].result["attempts"][0]["answer"], GOOD);
    }

    #[tokio::test]
    async fn a_fenced_answer_passes_the_gate() {
        let fenced = format!("Here you go:\n```json\n{GOOD}\n```");
        let model = FakeModel::start(vec![completion(&fenced, "stop")]).await;
        let (_, run) = classify(&model, item("Bug", "text")).await;
        assert_eq!(output::<Labeled>(&run).verdict.label, Label::Security);
    }

    #[tokio::test]
    async fn an_invalid_answer_is_repaired_and_every_attempt_journaled() {
        let bad = r#"{"label": "SECURITY", "confidence": 1.5, "summary": "x"}"#;
        let model = FakeModel::start(vec![completion(bad, "stop"), completion(GOOD, "stop")]).await;
        let (rt, run) = classify(&model, item("Bug", "text")).await;
        assert_eq!(by(&run), LabeledBy::Model { model: "fake".into(), attempts: 2 });
        let bodies = model.bodies();
        let reask = bodies[1]["messages"].as_array().unwrap();
        assert_eq!(reask.len(), 4, "system, user, the bad answer, the repair prompt");
        assert_eq!(reask[2]["content"], bad);
        assert!(reask[3]["content"].as_str().unwrap().contains("/confidence"));
        let effects = rt.store().effects(run.id).await.unwrap();
        let attempts = effects[0].result["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        assert!(attempts[0]["error"].as_str().unwrap().contains("violation"));
        assert!(attempts[1]["error"].is_null());
    }

    #[tokio::test]
    async fn garbage_falls_back_to_the_rules() {
        let model = FakeModel::start(vec![
            completion("I think it is about security?", "stop"),
            completion("{\"label\": ", "stop"),
            completion("no", "stop"),
        ])
        .await;
        let (rt, run) = classify(&model, item("Widget 2.0 released", "now available")).await;
        assert_eq!(run.state, RunState::Succeeded);
        assert_eq!(by(&run), LabeledBy::Rules { rule: "releases".into() });
        assert_eq!(output::<Labeled>(&run).verdict.label, Label::Release);
        assert_eq!(model.server.requests().len(), 3);
        let effects = rt.store().effects(run.id).await.unwrap();
        assert_eq!(effects[0].result["outcome"], "gave_up");
        assert_eq!(effects[0].result["attempts"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_truncated_answer_is_not_repaired() {
        let model = FakeModel::start(vec![completion("{\"label\": \"secu", "length")]).await;
        let (_, run) =
            classify(&model, item("Outage in eu-west", "incident, root cause DNS")).await;
        assert_eq!(model.server.requests().len(), 1, "no re-ask after a cut-off answer");
        assert_eq!(by(&run), LabeledBy::Rules { rule: "outages".into() });
    }

    #[tokio::test]
    async fn a_429_is_retried_after_the_delay_it_asks_for() {
        let model = FakeModel::start(vec![
            Reply::new(429, "slow down").header("retry-after", "1"),
            completion(GOOD, "stop"),
        ])
        .await;
        let (rt, run) = classify(&model, item("Bug", "text")).await;
        assert_eq!(run.state, RunState::Succeeded);
        assert_eq!(run.attempt, 2);
        let history = rt.store().history(run.id).await.unwrap();
        let retry = history.iter().find(|h| h.to == RunState::FailedTransient).unwrap();
        assert!(retry.error.as_ref().unwrap().to_string().contains("429"));
        let queued_again = history.iter().rfind(|h| h.to == RunState::Queued).unwrap();
        assert!(
            queued_again.at.since(retry.at) >= Duration::from_secs(1),
            "waited for Retry-After: {history:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_response_format_steps_down() {
        let refused = Reply::new(
            500,
            r#"{"error": {"message": "body.response_format.type: Input should be 'text' or 'json_object'"}}"#,
        );
        let model =
            FakeModel::start(vec![refused, completion(GOOD, "stop"), completion(GOOD, "stop")])
                .await;
        let client = model.client();
        let (_, run) = run_one(Classifier::llm(client.clone()), item("Bug", "text")).await;
        assert_eq!(run.state, RunState::Succeeded);
        let bodies = model.bodies();
        assert_eq!(bodies[0]["response_format"]["type"], "json_schema");
        assert_eq!(bodies[1]["response_format"]["type"], "json_object");
        assert!(bodies[1]["response_format"]["schema"]["properties"]["label"].is_object());
        // The client remembers: the next call starts with json_object.
        assert_eq!(client.current_format(), agents::ResponseFormat::JsonObject);
    }

    #[tokio::test]
    async fn an_item_nobody_can_label_is_held_for_review() {
        let model = FakeModel::start(vec![
            completion("{}", "stop"),
            completion("{}", "stop"),
            completion("{}", "stop"),
        ])
        .await;
        let (rt, run) = classify(&model, item("Lunch", "soup and bread")).await;
        assert_eq!(run.state, RunState::NeedsReview);
        let history = rt.store().history(run.id).await.unwrap();
        let reason = &history.last().unwrap().reason;
        assert!(
            reason.contains("no valid answer in 3 tries") && reason.contains("no rule matched"),
            "{reason}"
        );

        let (_, run) = run_one(Classifier::rules(Rules::builtin()), item("  ", "")).await;
        assert_eq!(run.state, RunState::FailedPermanent, "an empty item is a dead letter");
    }
}

mod mailer {
    use super::*;

    /// The report the real `Reporter` makes of one item titled `title`.
    async fn report(title: &str) -> Report {
        let labeled = Labeled {
            item: item(title, "body"),
            verdict: agents::Verdict {
                label: Label::Security,
                confidence: 0.9,
                summary: "s".into(),
            },
            by: LabeledBy::Rules { rule: "r".into() },
        };
        let dir = tempfile::tempdir().unwrap();
        let (_, run) = run_one(Reporter::new(dir.path()), vec![labeled]).await;
        output(&run)
    }

    #[tokio::test]
    async fn the_digest_arrives_over_smtp_with_its_headers_and_no_injected_ones() {
        let dir = tempfile::tempdir().unwrap();
        let Some(smtp) = Smtp::start(dir.path()) else { return };
        let transport = Transport::smtp("127.0.0.1", smtp.port, SmtpSecurity::None);
        let mailer = Mailer::new(transport, "digest@example.com", ["team@example.com"]).unwrap();
        let evil = "Patch now\r\nBcc: attacker@evil.example\r\nX-Injected: yes";
        let (_, run) = run_one(mailer, report(evil).await).await;
        assert_eq!(run.state, RunState::Succeeded, "{:?}", run.last_error);
        let receipt: Receipt = output(&run);
        let messages = smtp.messages();
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert_eq!(
            peers::header(message, "Message-ID").as_deref(),
            Some(receipt.message_id.as_str())
        );
        assert_eq!(receipt.message_id, format!("<{}.send@steadfast>", run.id));
        assert_eq!(peers::header(message, "To").as_deref(), Some("team@example.com"));
        assert_eq!(peers::header(message, "From").as_deref(), Some("digest@example.com"));
        let subject = peers::header(message, "Subject").unwrap();
        assert!(
            subject.contains("Patch now Bcc: attacker@evil.example X-Injected: yes"),
            "{subject}"
        );
        let names = peers::header_names(message);
        assert!(
            !names
                .iter()
                .any(|n| n.eq_ignore_ascii_case("bcc") || n.eq_ignore_ascii_case("x-injected")),
            "{names:?}"
        );
        assert!(message.contains("multipart/alternative"));
    }

    #[tokio::test]
    async fn starttls_is_required_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let Some(smtp) = Smtp::start_tls(dir.path()) else { return };
        let ca = dir.path().join("cert.pem");
        let transport = Transport::smtp("localhost", smtp.port, SmtpSecurity::StartTls).ca(&ca);
        let mailer = Mailer::new(transport, "digest@example.com", ["team@example.com"]).unwrap();
        let (_, run) = run_one(mailer, report("Over TLS").await).await;
        assert_eq!(run.state, RunState::Succeeded, "{:?}", run.last_error);
        assert_eq!(smtp.messages().len(), 1);

        // Without trusting the test CA, the certificate is refused: a permanent fault (a
        // retry will not make it trusted), and nothing is sent.
        let transport = Transport::smtp("localhost", smtp.port, SmtpSecurity::StartTls);
        let mailer = Mailer::new(transport, "digest@example.com", ["team@example.com"]).unwrap();
        let (_, run) = run_one(mailer, report("Untrusted").await).await;
        assert_eq!(run.state, RunState::FailedPermanent, "{:?}", run.last_error);
        let error = run.last_error.unwrap().to_string();
        assert!(error.contains("sending through localhost"), "{error}");
        assert_eq!(smtp.messages().len(), 1);
    }

    #[tokio::test]
    async fn the_outbox_holds_one_file_named_by_the_effect_key() {
        let dir = tempfile::tempdir().unwrap();
        let mailer =
            Mailer::new(Transport::outbox(dir.path()), "a@example.com", ["b@example.com"]).unwrap();
        let (_, run) = run_one(mailer, report("Hello").await).await;
        let receipt: Receipt = output(&run);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(
            receipt.path.as_deref().unwrap(),
            dir.path().join(format!("{}-send.eml", run.id)).to_str().unwrap()
        );
        let text = std::fs::read_to_string(receipt.path.unwrap()).unwrap();
        assert!(text.contains(&receipt.message_id));
    }

    #[tokio::test]
    async fn an_empty_digest_is_not_mailed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, run) = run_one(Reporter::new(dir.path().join("reports")), Vec::new()).await;
        let empty: Report = output(&run);
        assert_eq!((empty.total, empty.headline.as_deref()), (0, None));
        let outbox = dir.path().join("outbox");
        let mailer =
            Mailer::new(Transport::outbox(&outbox), "a@example.com", ["b@example.com"]).unwrap();
        let (rt, run) = run_one(mailer, empty).await;
        assert_eq!(run.state, RunState::Succeeded);
        let receipt: Receipt = output(&run);
        assert!(!receipt.sent && receipt.path.is_none());
        assert!(!outbox.exists(), "nothing was written");
        assert!(rt.store().effects(run.id).await.unwrap().is_empty(), "no send was journaled");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let transport = Transport::smtp("127.0.0.1", port, SmtpSecurity::None);
        let mailer = Mailer::new(transport, "a@example.com", ["b@example.com"]).unwrap();
        let rt = Runtime::builder().store(MemoryStore::new()).register(mailer).build().unwrap();
        let run = rt.submit("mailer", report("x").await).await.unwrap();
        // Work until the first attempt's outcome is stored (the retry is a minute away), not
        // for a fixed time: the store says when it happened. The bound only ends a hang.
        let worker = {
            let rt = rt.clone();
            tokio::spawn(async move { rt.run_until_idle().await })
        };
        let failed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let history = rt.store().history(run.id).await.unwrap();
                if let Some(h) = history
                    .iter()
                    .find(|h| h.to != RunState::Queued && h.from == Some(RunState::Processing))
                {
                    return h.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first attempt ended within a minute");
        worker.abort();
        assert_eq!(failed.to, RunState::FailedTransient, "{failed:?}");
        let error = failed.error.unwrap();
        assert_eq!(error.fault, steadfast::fault::Fault::Transient, "{error}");
    }
}

/// Secrets never reach logs, `Debug` output or the store, even when the peer refuses them.
#[tokio::test]
async fn secrets_do_not_leak() {
    let logs = steadfast::logging::Capture::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish(),
    );
    const KEY: &str = "sk-canary-7f3a";
    const PASSWORD: &str = "pw-canary-91c2";
    let model = FakeModel::start(vec![Reply::new(401, "bad key"); 3]).await;
    let classifier = Classifier::llm(model.client());
    let transport = Transport::smtp("127.0.0.1", 9, SmtpSecurity::None)
        .credentials("user", Secret::new(PASSWORD));
    let mailer = Mailer::new(transport, "a@example.com", ["b@example.com"]).unwrap();
    let shown = format!("{classifier:?} {mailer:?} {:?}", model.client());
    assert!(!shown.contains(KEY) && !shown.contains(PASSWORD), "{shown}");

    let (rt, run) = run_one(classifier, item("Widget 2.0 released", "now available")).await;
    assert_eq!(run.state, RunState::Succeeded, "the rules label it after the 401");
    let stored = format!(
        "{:?} {:?} {:?}",
        rt.store().get(run.id).await.unwrap(),
        rt.store().history(run.id).await.unwrap(),
        rt.store().effects(run.id).await.unwrap()
    );
    let logs = logs.text();
    assert!(logs.contains("401"), "the failure is logged: {logs}");
    for text in [&stored, &logs] {
        assert!(!text.contains(KEY) && !text.contains(PASSWORD));
    }
}

/// The whole digest pipeline on a local feed, through the lenient fan-in.
#[tokio::test]
async fn the_digest_pipeline_runs_end_to_end() {
    let server = HttpServer::start(|_| Reply::ok("application/rss+xml", RSS)).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = agents::digest(
        Collector::feed(server.url("/rss.xml")).fetcher(local()),
        Classifier::rules(Rules::builtin()),
        Reporter::new(dir.path().join("reports")),
        Mailer::new(
            Transport::outbox(dir.path().join("outbox")),
            "a@example.com",
            ["b@example.com"],
        )
        .unwrap(),
    );
    let rt = Runtime::builder().store(MemoryStore::new()).pipeline(pipeline).build().unwrap();
    let run = rt.submit("digest", Edition::new("2026-11-23")).await.unwrap();
    rt.run_until_idle().await.unwrap();
    let record = rt.store().get(run.id).await.unwrap().unwrap();
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.last_error);
    let receipt: Receipt = output(&record);
    assert!(
        receipt.subject.starts_with("Digest — 2 items: Critical vulnerability"),
        "{}",
        receipt.subject
    );
    let stages = rt.store().list(ListQuery::new().parent(run.id)).await.unwrap().runs;
    assert_eq!(stages.len(), 5, "collector, two items, reporter, mailer");
    // The same edition again: the same run, nothing new.
    let again = rt.submit("digest", Edition::new("2026-11-23")).await.unwrap();
    assert_eq!((again.id, again.created), (run.id, false));
}

/// The classifier against a real small model (llama.cpp's server with Gemma 3 270M, started
/// by `scripts/llm-server.sh`): invariants, not labels.
#[tokio::test]
async fn a_real_small_model_is_gated() {
    let Ok(client) = ChatClient::from_env() else {
        peers::missing_peer::<()>(
            "a model endpoint (scripts/llm-server.sh, then STEADFAST_LLM_BASE_URL and STEADFAST_LLM_MODEL)",
        );
        return;
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/items");
    let (_, collected) = run_one(Collector::folder(dir), Edition::new("model")).await;
    let items: Vec<Item> = output(&collected);
    let items: Vec<Item> = items.into_iter().take(5).collect();
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .workers(2)
        .register(Classifier::llm(client.max_tokens(160)))
        .build()
        .unwrap();
    let mut runs = Vec::new();
    for item in &items {
        runs.push(rt.submit("classifier", item.clone()).await.unwrap().id);
    }
    rt.run_until_idle().await.unwrap();
    let (mut by_model, mut by_rules, mut review, mut unanswered) = (0, 0, 0, 0);
    for id in runs {
        let run = rt.store().get(id).await.unwrap().unwrap();
        let effects = rt.store().effects(id).await.unwrap();
        let classify = effects
            .iter()
            .find(|e| e.name == "classify")
            .expect("the model's answers are journaled");
        // Every attempt that reached the model is journaled; one that never got an answer
        // (a dead endpoint) gave up with none.
        let answers = classify.result["attempts"].as_array().map_or(0, Vec::len);
        if answers == 0 {
            unanswered += 1;
            assert_eq!(classify.result["outcome"], "gave_up", "{}", classify.result);
        }
        match run.state {
            RunState::Succeeded => {
                // Whatever the model said, what was stored passed the schema gate.
                let value = run.output.clone().unwrap();
                steadfast::schema::check::<Labeled>(&value).expect("a schema-valid output");
                match output::<Labeled>(&run).by {
                    LabeledBy::Model { attempts, .. } => {
                        by_model += 1;
                        assert_eq!(
                            attempts as usize,
                            classify.result["attempts"].as_array().unwrap().len()
                        );
                    }
                    LabeledBy::Rules { .. } => by_rules += 1,
                    LabeledBy::Operator => unreachable!(),
                }
            }
            RunState::NeedsReview => review += 1,
            other => panic!("run {id} ended {other}: {:?}", run.last_error),
        }
    }
    eprintln!(
        "real model: {by_model} labelled by the model, {by_rules} by the rules, {review} held for review, {unanswered} never answered"
    );
    assert_eq!(by_model + by_rules + review, items.len());
    // The point of the test: a real model's answers went through the gate. A dead or
    // crashing endpoint (every item falling back to the rules) fails it.
    assert!(
        by_model > 0,
        "the model labelled none of {} items ({unanswered} never answered): is the server alive?",
        items.len()
    );
}
