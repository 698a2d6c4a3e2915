//! `steadfast serve --webhook URL --notify-mail ADDRESS`: a run rejected through the API
//! reaches a real HTTP receiver, signed, and the mail outbox, linked to the dashboard; a
//! missing or short secret is a usage error.

use serde_json::{Value, json};
use steadfast::agents;
use steadfast::reqwest;

use super::ops::{ids, prepared};
use super::peers::{HttpServer, Reply};
use super::serve::{Server, block_on, call};
use super::*;

const SECRET: &str = "cli-test-webhook-secret-32-bytes";

#[test]
fn serve_notifies_a_webhook_and_a_mailbox_of_a_new_dead_letter() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let receiving =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let receiver = receiving.block_on(HttpServer::start(|_| Reply::new(202, "")));
    let hook = receiver.url("/hooks/ops");
    let args = ["--webhook", hook.as_str(), "--notify-mail", "ops@example.com"];
    let server = Server::start_with(dir.path(), &[("STEADFAST_WEBHOOK_SECRET", SECRET)], &args);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let shown = format!("webhook to http://{}, mail to ops@example.com", receiver.addr);
    assert!(log.contains(&shown), "the configuration is logged:\n{log}");
    assert!(!log.contains(SECRET) && !log.contains("/hooks/ops"), "secret or path logged:\n{log}");
    block_on(async {
        let c = steadfast::reqwest::Client::new();
        let api = |path: &str| format!("{}/api/v1{path}", server.url);
        let agents = c.get(format!("{}/ui/agents", server.url)).send().await.unwrap();
        let agents = agents.text().await.unwrap();
        assert!(agents.contains("notifier: every event about every agent"), "{agents}");
        let note = json!({"note": "not ours"});
        let reject = api(&format!("/review/{}/reject", held[0]));
        let (status, body) = call(&c, reqwest::Method::POST, reject, Some(note), None).await;
        assert_eq!(status, 200, "{body}");
        let start = Instant::now();
        loop {
            let mut done = 0;
            for agent in ["webhook", "mail-notifier"] {
                let url = api(&format!("/runs?agent={agent}&state=succeeded"));
                let (_, page) = call(&c, reqwest::Method::GET, url, None, None).await;
                done += page["runs"].as_array().map_or(0, Vec::len);
            }
            if done == 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "not delivered within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "one notification, delivered once");
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/ops");
    let signature = request.header(agents::SIGNATURE_HEADER).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let body = request.body.as_bytes();
    assert!(agents::verify(
        SECRET.as_bytes(),
        signature,
        body,
        now.as_secs(),
        Duration::from_secs(300)
    ));
    assert!(readme_verify_accepts(signature, &request.body, SECRET), "the README's snippet");
    assert!(!readme_verify_accepts(signature, &request.body.replace("dead", "live"), SECRET));
    let notification: Value = request.json();
    assert_eq!(notification["event"], "dead_letter");
    assert_eq!(notification["run"], held[0].as_str());
    assert_eq!(notification["actor"], "operator:api");
    assert_eq!(notification["reason"], "rejected: not ours");
    let mails = files(&dir.path().join("notifications"));
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(
        mail.contains(&format!("Subject: [steadfast] dead_letter: held run {}", held[0])),
        "{mail}"
    );
    assert!(mail.contains(&format!("{}/ui/runs/{}", server.url, held[0])), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(server.stop().success());
}

/// Whether the README's Python verification snippet accepts `body` signed by `header`.
fn readme_verify_accepts(header: &str, body: &str, secret: &str) -> bool {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("```python\n").expect("the README's verification snippet") + 10;
    let snippet = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), body).unwrap();
    let program = format!(
        "{snippet}\nimport sys\nbody = open(sys.argv[1], 'rb').read()\n\
         sys.exit(0 if verify(sys.argv[2].encode(), sys.argv[3], body) else 1)\n"
    );
    let status = Command::new("python3")
        .args(["-c", &program])
        .arg(dir.path().join("body"))
        .args([secret, header])
        .status()
        .expect("python3 runs");
    status.success()
}

#[test]
fn a_webhook_without_a_usable_secret_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |secret: Option<&str>, url: &str| {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--webhook", url, "--data"])
            .arg(dir.path())
            .env_remove("STEADFAST_WEBHOOK_SECRET")
            .env("NO_COLOR", "1");
        if let Some(secret) = secret {
            command.env("STEADFAST_WEBHOOK_SECRET", secret);
        }
        command.output().unwrap()
    };
    let missing = serve(None, "http://127.0.0.1:9/x");
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("STEADFAST_WEBHOOK_SECRET"), "{}", text(&missing));
    let short = serve(Some("short"), "http://127.0.0.1:9/x");
    assert_eq!(short.status.code(), Some(2), "{}", text(&short));
    assert!(text(&short).contains("at least 16 bytes"), "{}", text(&short));
    let ftp = serve(Some(SECRET), "ftp://127.0.0.1/x");
    assert_eq!(ftp.status.code(), Some(2), "{}", text(&ftp));
    assert!(text(&ftp).contains("not an http or https URL"), "{}", text(&ftp));
    // `work` takes the same flags, with the same checks.
    let work = Command::new(BIN)
        .args(["work", "--webhook", "http://127.0.0.1:9/x", "--data"])
        .arg(dir.path())
        .env_remove("STEADFAST_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert_eq!(work.status.code(), Some(2), "{}", text(&work));
    assert!(text(&work).contains("STEADFAST_WEBHOOK_SECRET"), "{}", text(&work));
    let work = steadfast(dir.path(), &["work", "--notify-mail", "ops@example.com"]);
    assert!(work.status.success(), "{}", text(&work));
    assert!(text(&work).contains("notifications=mail to ops@example.com"), "{}", text(&work));
}
