//! `steadfast serve` attacked as an attacker would: a hostile page in headless Chromium
//! (no-cors fetches and a text/plain form against a token-less server), requests under a
//! foreign `Host` (DNS rebinding), cross-site API writes, forged submissions to a notifier and
//! a pipeline's stage, a planted server file and a fake socket that would collect the token,
//! another user's data directory, a token file others can read, and secrets in the owner file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde_json::{Value, json};
use steadfast::reqwest;

use super::driver::{Browser, runtime};
use super::ops::{json_of, prepared};
use super::serve::{Server, block_on};
use super::*;

/// The agent the attacks try to pause (one the stock binary registers).
const AGENT: &str = "digest.1.classifier";

fn paused(dir: &Path) -> bool {
    let listed = json_of(&steadfast(dir, &["agents", "list", "--json"]));
    let agent = listed.as_array().unwrap().iter().find(|a| a["name"] == AGENT).cloned();
    agent.unwrap_or_else(|| panic!("{AGENT} is listed: {listed}"))["control"]["paused"] == true
}

fn dead_letters(dir: &Path) -> usize {
    json_of(&steadfast(dir, &["dlq", "list", "--json"])).as_array().unwrap().len()
}

/// A raw request: (status, body).
async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("the server answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[test]
fn a_hostile_page_cannot_drive_a_server_without_a_token() {
    let dir = prepared();
    let dead = dead_letters(dir.path());
    assert!(dead > 0, "the prepared store has dead letters to replay");
    let runs = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]))["runs"]
        .as_array()
        .unwrap()
        .len();
    let server = Server::start(dir.path(), &[]);
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let target = server.url.clone();
        // Every call a page may send without asking first: no-cors fetches with no body (no
        // Content-Type at all), a text/plain body, a form's body, and a form posted into a frame
        // with a text/plain body that reads as JSON; then a JSON call, which needs a preflight.
        let page = format!(
            r#"<!doctype html><title>win a prize</title>
<iframe name=sink></iframe>
<form id=f target=sink method=post enctype=text/plain action="{target}/api/v1/agents/{AGENT}/pause"><input name='{{"reason":"pwned","x":"' value='"}}'></form>
<script>
const t = "{target}";
const simple = [
  [t + "/api/v1/agents/{AGENT}/pause", {{}}],
  [t + "/api/v1/agents/{AGENT}/pause", {{headers: {{"Content-Type": "text/plain"}}, body: '{{"reason":"pwned"}}'}}],
  [t + "/api/v1/dlq/replay", {{}}],
  [t + "/api/v1/dlq/replay", {{headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}}],
  [t + "/api/v1/runs", {{headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body: "agent=digest&input=1"}}],
  [t + "/api/v1/runs", {{headers: {{"Content-Type": "text/plain"}}, body: '{{"agent":"digest","input":{{"edition":"pwned"}}}}'}}],
];
(async () => {{
  for (const [url, init] of simple) {{
    try {{ await fetch(url, Object.assign({{method: "POST", mode: "no-cors"}}, init)); }} catch (e) {{}}
  }}
  try {{
    await fetch(t + "/api/v1/agents/{AGENT}/pause", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: '{{"reason":"pwned"}}'}});
  }} catch (e) {{}}
  document.querySelector("iframe").onload = () => {{ document.title = "done"; }};
  document.getElementById("f").submit();
}})();
</script>"#
        );
        let attacker = peers::HttpServer::start(move |_| {
            peers::Reply::ok("text/html; charset=utf-8", page.clone())
        })
        .await;
        browser.visit(&attacker.url("/")).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.client().title().await.unwrap() != "done" {
            assert!(Instant::now() < deadline, "the hostile page's calls did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        browser.close().await;
    });
    drop(server);
    assert!(!paused(dir.path()), "no call of the hostile page paused the agent");
    assert_eq!(dead_letters(dir.path()), dead, "no call replayed the dead letters");
    let after = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]))["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, runs, "no call submitted a run");
}

#[test]
fn a_page_under_a_rebound_name_reaches_nothing_in_the_browser() {
    let dir = prepared();
    let server = Server::start(dir.path(), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        // The browser resolves rebind.example to 127.0.0.1 (as a rebinding DNS server would
        // after the page loaded): its requests carry that name as their Host.
        for path in ["/api/v1/runs", "/ui/agents", "/ui", "/metrics"] {
            browser.visit(&format!("http://rebind.example:{port}{path}")).await;
            let text = browser.text().await;
            assert!(text.contains("does not name this server"), "{path}: {text}");
            assert!(!text.contains("digest"), "{path} shows nothing of the server's: {text}");
        }
        browser.visit(&format!("http://localhost:{port}/ui/agents")).await;
        assert!(browser.text().await.contains(AGENT), "localhost is the server's own name");
        browser.close().await;
    });
}

#[test]
fn a_foreign_host_is_refused_before_any_handler_and_allowed_names_are_taken() {
    let dir = prepared();
    let server = Server::start_with(dir.path(), &[], &["--allow-host", "Steadfast.Test"]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    block_on(async {
        let c = reqwest::Client::new();
        let foreign = format!("rebind.example:{port}");
        for path in ["/api/v1/runs", "/ui/agents", "/ui/events", "/healthz", "/api/v1/nosuch"] {
            let (status, body) =
                send(c.get(format!("{}{path}", server.url)).header("host", &foreign)).await;
            assert_eq!(status, 421, "{path}: {body}");
            assert!(body.contains("does not name this server"), "{path}: {body}");
        }
        // The rebinding page's write, with an Origin that matches its Host.
        let (status, _) = send(
            c.post(format!("{}/api/v1/agents/{AGENT}/pause", server.url))
                .header("host", &foreign)
                .header("origin", format!("http://{foreign}"))
                .json(&json!({"reason": "pwned"})),
        )
        .await;
        assert_eq!(status, 421);
        for host in [format!("localhost:{port}"), format!("steadfast.test:{port}")] {
            let (status, body) =
                send(c.get(format!("{}/api/v1/runs", server.url)).header("host", &host)).await;
            assert_eq!(status, 200, "{host}: {body}");
        }
    });
    drop(server);
    assert!(!paused(dir.path()));
}

#[test]
fn a_cross_site_api_write_is_refused_and_changes_nothing() {
    let dir = prepared();
    let server = Server::start(dir.path(), &[]);
    let pause = format!("{}/api/v1/agents/{AGENT}/pause", server.url);
    block_on(async {
        let c = reqwest::Client::new();
        let refusals = [
            c.post(&pause),
            c.post(&pause).header("content-type", "text/plain").body(r#"{"reason":"x"}"#),
            c.post(&pause).header("content-type", "application/x-www-form-urlencoded").body("a=b"),
            c.post(&pause).json(&json!({"reason": "x"})).header("origin", "http://evil.example"),
            c.post(&pause).json(&json!({"reason": "x"})).header("origin", "null"),
            c.post(&pause)
                .json(&json!({"reason": "x"}))
                .header("referer", "http://evil.example/page"),
        ];
        for request in refusals {
            let (status, body) = send(request).await;
            assert_eq!(status, 403, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["code"], 1, "{body}");
        }
        let resume = format!("{}/api/v1/agents/{AGENT}/resume", server.url);
        let (status, body) = send(c.post(&resume).header("content-type", "text/plain")).await;
        assert_eq!(status, 403, "a resume is a write too: {body}");
        // A custom header is not enough: JSON it must be (the CLI and the client send it).
        let (status, body) = send(c.post(&pause).header("x-steadfast-operator", "ada")).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = send(
            c.post(&pause)
                .header("content-type", "application/json")
                .header("x-steadfast-operator", "ada"),
        )
        .await;
        assert_eq!(status, 200, "JSON with an empty body: {body}");
        let (status, body) = send(
            c.post(&resume)
                .header("content-type", "application/json")
                .header("origin", &server.url),
        )
        .await;
        assert_eq!(status, 200, "the server's own origin, and an empty JSON body: {body}");
    });
    drop(server);
    assert!(!paused(dir.path()), "paused by a program, then resumed");
}

#[test]
fn notifiers_and_stages_cannot_be_submitted_from_outside() {
    let dir = prepared();
    let env = [("STEADFAST_WEBHOOK_SECRET", "0123456789abcdef0123")];
    let hook = "http://127.0.0.1:9/hook/SECRETPATH?tok=hunter2";
    let server = Server::start_with(dir.path(), &env, &["--webhook", hook]);
    let notification = json!({
        "id": "alarm:digest:1", "event": "alarm", "agent": "digest",
        "reason": "forged", "at": "2026-12-07T20:00:00.000Z"
    });
    block_on(async {
        let c = reqwest::Client::new();
        let runs = format!("{}/api/v1/runs", server.url);
        for (agent, input, why) in [
            ("webhook", notification.clone(), "notifier"),
            ("digest.3.mailer", json!({"subject": "x", "html": "<b>pwned</b>"}), "stage"),
        ] {
            let (status, body) =
                send(c.post(&runs).json(&json!({"agent": agent, "input": input}))).await;
            assert_eq!(status, 403, "{agent}: {body}");
            assert!(body.contains(why), "{agent}: {body}");
        }
        let (status, body) =
            send(c.post(&runs).json(&json!({"agent": "nosuch", "input": 1}))).await;
        assert_eq!(status, 404, "{body}");
    });
    drop(server);
    let listed = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    let runs = listed["runs"].as_array().unwrap();
    assert!(
        runs.iter().all(|r| r["agent"] == "reader" || r["agent"] == "gate" || r["agent"] == "held"),
        "{listed}"
    );
    // The owner file names the process, not its command line.
    let owner = std::fs::read_to_string(dir.path().join("db/steadfast.owner")).unwrap();
    assert!(owner.starts_with("pid ") && owner.contains(" since "), "{owner}");
    for secret in ["SECRETPATH", "hunter2", "--webhook", "serve"] {
        assert!(!owner.contains(secret), "{secret} in the owner file: {owner}");
    }
    assert_eq!(std::fs::metadata(dir.path().join("db/steadfast.owner")).unwrap().mode() & 0o77, 0);
}

#[test]
fn the_token_goes_to_no_address_found_in_a_file_nor_through_the_socket() {
    let dir = prepared();
    let token = "t".repeat(40);
    runtime().block_on(async {
        // A planted (or stale) server file naming a listener that collects headers.
        let listener = peers::HttpServer::start(|_| {
            peers::Reply::ok("application/json", r#"{"runs": [], "next": null}"#)
        })
        .await;
        std::fs::write(dir.path().join("steadfast.server"), listener.url("") + "\n").unwrap();
        let output = Command::new(BIN)
            .args(["runs", "list", "--json", "--data"])
            .arg(dir.path())
            .env("STEADFAST_TOKEN", &token)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        assert_eq!(json_of(&output)["runs"].as_array().unwrap().len(), 7, "from the store");
        assert!(listener.requests().is_empty(), "the planted address was sent nothing");
    });
    // A socket in the data directory that answers is the user's own process: it is used, and
    // sent no token.
    let socket = dir.path().join("steadfast.sock");
    let fake = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for _ in 0..2 {
                let Ok((mut stream, _)) = fake.accept() else { return };
                let mut buffer = [0u8; 8192];
                let n = stream.read(&mut buffer).unwrap_or(0);
                seen.lock().unwrap().push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                let body = r#"{"status":"ok"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
    };
    let output = Command::new(BIN)
        .args(["runs", "list", "--json", "--data"])
        .arg(dir.path())
        .env("STEADFAST_TOKEN", &token)
        .output()
        .unwrap();
    recorder.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the CLI asked the socket: {seen:?} {}", text(&output));
    for request in seen.iter() {
        assert!(!request.to_ascii_lowercase().contains("authorization"), "{request}");
        assert!(!request.contains(&token), "{request}");
    }
    std::fs::remove_file(&socket).unwrap();
}

#[test]
fn a_data_directory_of_another_user_is_refused_and_an_open_one_is_closed() {
    let dir = prepared();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(dir.path().join("db"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    let output = steadfast(dir.path(), &["runs", "list"]);
    assert!(output.status.success(), "{}", text(&output));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join("db")), 0o700);
    assert_eq!(mode(&dir.path().join("db/conf")) & 0o077, 0);
    // Another user's directory: only root can make one here.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let theirs = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
        for args in [&["runs", "list"][..], &["work"][..]] {
            let output = steadfast(theirs.path(), args);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
            assert!(text(&output).contains("belongs to another user"), "{}", text(&output));
        }
        assert!(!theirs.path().join("db").exists(), "nothing was created in it");
    } else {
        eprintln!("not root: another user's data directory is not tried");
    }
}

#[test]
fn a_token_file_others_can_read_is_refused_and_the_probes_need_the_token() {
    let dir = prepared();
    let file = dir.path().join("token");
    let token = "s".repeat(40);
    std::fs::write(&file, &token).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--token-file"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path())
        .env_remove("STEADFAST_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("chmod 600"), "{}", text(&output));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_arg = file.display().to_string();
    for public in [false, true] {
        let mut args = vec!["--token-file", file_arg.as_str()];
        if public {
            args.push("--public-health");
        }
        let server = Server::start_with(dir.path(), &[], &args);
        block_on(async {
            let c = reqwest::Client::new();
            for path in ["/readyz", "/metrics", "/alarms"] {
                let (status, body) = send(c.get(format!("{}{path}", server.url))).await;
                if public {
                    assert!(status == 200 || status == 503, "{path} {status}: {body}");
                } else {
                    assert_eq!(status, 401, "{path}: {body}");
                }
                let (status, _) =
                    send(c.get(format!("{}{path}", server.url)).bearer_auth(&token)).await;
                assert!(status == 200 || status == 503, "{path} with the token: {status}");
            }
            let (status, _) = send(c.get(format!("{}/healthz", server.url))).await;
            assert_eq!(status, 200, "liveness stays open");
            // An unknown call says nothing of what exists to a caller without the token.
            let (status, body) = send(c.get(format!("{}/api/v1/nosuch", server.url))).await;
            assert_eq!(status, 401);
            assert!(body.contains("requires its token"), "{body}");
            let (status, body) =
                send(c.get(format!("{}/api/v1/runs", server.url)).bearer_auth("wrong")).await;
            assert_eq!(status, 401);
            assert!(
                body.contains("the token offered is not this server's"),
                "a wrong token says so: {body}"
            );
            let (status, _) =
                send(c.get(format!("{}/api/v1/nosuch", server.url)).bearer_auth(&token)).await;
            assert_eq!(status, 404);
        });
    }
}

/// A client that sends its headers a byte at a time (slowloris) is cut off after the header
/// timeout, and while it holds the only connection slot, the next client waits for it.
#[tokio::test(start_paused = true)]
async fn a_slow_client_is_cut_off_and_the_connection_cap_holds() {
    use std::sync::Arc;

    use steadfast::ops::{self, OpsConfig, ServeLimits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime =
        steadfast::Runtime::builder().store(steadfast::store::MemoryStore::new()).build().unwrap();
    let app = ops::router(Arc::new(runtime), OpsConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits =
        ServeLimits::default().header_read_timeout(Duration::from_secs(10)).max_connections(1);
    tokio::spawn(ops::serve(listener, app, limits, std::future::pending()));
    let started = tokio::time::Instant::now();
    let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let drip = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".iter().cycle() {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let second = tokio::time::timeout(Duration::from_secs(120), async {
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        second.read_to_string(&mut answer).await.unwrap();
        answer
    })
    .await
    .expect("the second client was answered within 120 s (of the paused clock)");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10), "it waited for the slot: {waited:?}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), slow_read.read_to_end(&mut rest))
        .await
        .expect("the slow client was cut off within 120 s (of the paused clock)")
        .ok();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 408"), "cut off: {rest}");
    drip.abort();
}

/// A user's own program opens the operator socket with one call, and the CLI operates it while
/// it holds the store: it lists the program's runs and approves one, as `operator:<user>`; once
/// the socket is closed, the CLI opens the store itself.
#[test]
fn the_cli_operates_a_users_own_program_through_its_socket() {
    let dir = prepared();
    let held = super::ops::ids(dir.path(), "held");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = steadfast::SledStore::open(dir.path().join("db")).unwrap();
        let rt = std::sync::Arc::new(
            steadfast::Runtime::builder().store(store).register(super::ops::Held).build().unwrap(),
        );
        let socket = steadfast::ops::LocalSocket::open(
            rt.clone(),
            dir.path(),
            steadfast::ops::OpsConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(socket.path(), dir.path().join("steadfast.sock"));
        let mode = std::fs::metadata(socket.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "the socket is the user's alone");
        let data = dir.path().to_owned();
        let held0 = held[0].clone();
        let (listed, approved) = tokio::task::spawn_blocking(move || {
            let listed = steadfast(&data, &["runs", "list", "--json"]);
            let approved = Command::new(BIN)
                .args(["review", "approve", &held0, "--json", "--data"])
                .arg(&data)
                .env("STEADFAST_OPERATOR", "ada")
                .output()
                .unwrap();
            (listed, approved)
        })
        .await
        .unwrap();
        assert_eq!(json_of(&listed)["runs"].as_array().unwrap().len(), 7, "{}", text(&listed));
        assert!(approved.status.success(), "{}", text(&approved));
        let history = rt.store().history(held[0].parse().unwrap()).await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(last.actor.to_string(), "operator:ada", "approved through the socket");
        socket.close().await;
    });
    drop(runtime);
    assert!(!dir.path().join("steadfast.sock").exists(), "closing removes the socket");
    let listed = steadfast(dir.path(), &["runs", "list", "--json"]);
    assert!(listed.status.success(), "the store, opened by the CLI itself: {}", text(&listed));
}
