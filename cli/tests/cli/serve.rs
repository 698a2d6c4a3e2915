//! `steadfast serve` as a process: the JSON API over real HTTP on a free port (every refusal
//! with its status and message), the health checks, the token, the body limit, and a clean
//! stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::Child;

use serde_json::{Value, json};
use steadfast::reqwest;

use super::ops::{ids, json_of, prepared};
use super::*;

/// A running `steadfast serve`, stopped with SIGTERM when dropped.
pub(super) struct Server {
    child: Child,
    pub(super) url: String,
}

impl Server {
    pub(super) fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(dir, env, &[])
    }

    /// With more arguments to `serve`.
    pub(super) fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--workers", "2"])
            .args(args)
            .arg("--data")
            .arg(dir)
            .env_remove("STEADFAST_TOKEN")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            // Its log, for tests that read it (`serve.log` in the data directory).
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start steadfast serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("serving on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Server { child, url }
    }

    /// SIGTERM, then the exit status.
    pub(super) fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A call: (status, JSON body).
pub(super) async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    } else {
        // A call that changes something is JSON even with no body (a cross-site page's is not).
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn the_api_answers_and_refuses_like_the_cli() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let gates = ids(dir.path(), "gate");
    let dead = ids(dir.path(), "reader");
    let server = Server::start(dir.path(), &[]);
    assert!(dir.path().join("steadfast.sock").exists(), "the server opens its socket");
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    block_on(async {
        let c = reqwest::Client::new();
        let api = |path: &str| format!("{}/api/v1{path}", server.url);
        assert_eq!(
            call(&c, get.clone(), format!("{}/healthz", server.url), None, None).await.0,
            200
        );
        let (status, ready) =
            call(&c, get.clone(), format!("{}/readyz", server.url), None, None).await;
        assert_eq!((status, &ready["status"]), (200, &json!("ready")), "{ready}");

        let (status, page) = call(&c, get.clone(), api("/runs?limit=100"), None, None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["runs"].as_array().unwrap().len(), 7);
        let (_, page) = call(&c, get.clone(), api("/runs?state=needs_review"), None, None).await;
        assert_eq!(page["runs"].as_array().unwrap().len(), 2);
        let (status, view) =
            call(&c, get.clone(), api(&format!("/runs/{}", held[0])), None, None).await;
        assert_eq!(status, 200);
        assert_eq!(view["run"]["state"], "needs_review");
        assert!(!view["history"].as_array().unwrap().is_empty());
        let (_, review) = call(&c, get.clone(), api("/review"), None, None).await;
        assert_eq!(review["review"][0]["why"], "a person must decide");

        // Refusals: status, code and message, and nothing changed.
        let (status, error) = call(&c, get.clone(), api("/runs/nope"), None, None).await;
        assert_eq!((status, &error["code"]), (400, &json!(2)), "{error}");
        let missing = steadfast::RunId::new();
        let (status, error) =
            call(&c, get.clone(), api(&format!("/runs/{missing}")), None, None).await;
        assert_eq!((status, &error["code"]), (404, &json!(1)), "{error}");
        let (status, error) = call(&c, get.clone(), api("/runs?state=sleeping"), None, None).await;
        assert_eq!(status, 400, "{error}");
        let (status, error) = call(&c, get.clone(), api("/runs?limit=0"), None, None).await;
        assert_eq!(status, 400, "{error}");
        let bad = json!({"output": {"approved": "yes"}});
        let (status, error) =
            call(&c, post.clone(), api(&format!("/review/{}/resolve", held[0])), Some(bad), None)
                .await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["violations"][0]["pointer"], "/approved", "{error}");
        let (status, error) =
            call(&c, post.clone(), api(&format!("/review/{}/approve", gates[0])), None, None).await;
        assert_eq!(status, 409, "{error}");
        assert!(error["error"].as_str().unwrap().contains("waiting_external"), "{error}");
        let wrong = json!({"name": "stop", "payload": 1});
        let (status, error) =
            call(&c, post.clone(), api(&format!("/runs/{}/signal", gates[0])), Some(wrong), None)
                .await;
        assert_eq!(status, 409, "{error}");
        let (status, error) = call(
            &c,
            post.clone(),
            api(&format!("/runs/{}/notes", held[0])),
            Some(json!({"text": ""})),
            None,
        )
        .await;
        assert_eq!(status, 400, "{error}");
        let (status, _) = call(
            &c,
            post.clone(),
            api(&format!("/runs/{}/notes", held[0])),
            Some(json!({"txt": "x"})),
            None,
        )
        .await;
        assert!((400..500).contains(&status), "an unknown field is refused: {status}");
        let huge = json!({"text": "x".repeat(2 << 20)});
        // Its own connection: the server answers 413 without reading the body, then closes it.
        let once = reqwest::Client::new();
        let (status, _) =
            call(&once, post.clone(), api(&format!("/runs/{}/notes", held[0])), Some(huge), None)
                .await;
        assert_eq!(status, 413, "a body over the limit");
        let (status, _) = call(&c, get.clone(), api("/nothing"), None, None).await;
        assert_eq!(status, 404);

        // Acting: resolve, approve, signal, note, replay, cancel.
        let good = json!({"output": {"approved": true}});
        let (status, run) =
            call(&c, post.clone(), api(&format!("/review/{}/resolve", held[0])), Some(good), None)
                .await;
        assert_eq!((status, &run["state"]), (200, &json!("succeeded")), "{run}");
        let (status, run) = call(
            &c,
            post.clone(),
            api(&format!("/review/{}/approve", held[1])),
            Some(json!({"note": "yes"})),
            None,
        )
        .await;
        assert_eq!((status, &run["state"]), (200, &json!("queued")), "{run}");
        let go = json!({"name": "go", "payload": {"by": "api"}});
        let (status, run) =
            call(&c, post.clone(), api(&format!("/runs/{}/signal", gates[0])), Some(go), None)
                .await;
        assert_eq!(status, 200, "{run}");
        let (status, note) = call(
            &c,
            post.clone(),
            api(&format!("/runs/{}/notes", gates[1])),
            Some(json!({"text": "paged the vendor"})),
            None,
        )
        .await;
        assert_eq!((status, &note["text"]), (200, &json!("paged the vendor")), "{note}");
        let (status, run) =
            call(&c, post.clone(), api(&format!("/runs/{}/cancel", gates[1])), None, None).await;
        assert_eq!((status, &run["state"]), (200, &json!("failed_permanent")), "{run}");
        let (status, report) =
            call(&c, post.clone(), api("/dlq/replay"), Some(json!({"agent": "reader"})), None)
                .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report.as_array().unwrap().len(), 2, "{report}");
        assert!(report.as_array().unwrap().iter().all(|r| r["replayed"] == true), "{report}");
        let (_, dlq) = call(&c, get.clone(), api("/dlq"), None, None).await;
        assert_eq!(dlq.as_array().unwrap().len(), 1, "the cancelled gate is left: {dlq}");
        let (status, stats) = call(&c, get.clone(), api("/stats?window=2h"), None, None).await;
        assert_eq!(status, 200, "{stats}");
        let (status, graph) = call(&c, get.clone(), api("/graph/digest"), None, None).await;
        assert_eq!(status, 200, "{graph}");
        let (status, _) = call(&c, get.clone(), api("/graph/nope"), None, None).await;
        assert_eq!(status, 404);
        let (_, agents) = call(&c, get.clone(), api("/agents"), None, None).await;
        assert!(agents["agents"].as_array().unwrap().iter().any(|a| a["name"] == "digest"));
    });
    let _ = dead;
    let status = server.stop();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status}");
    assert!(!dir.path().join("steadfast.sock").exists(), "the socket is removed");
    // What the API did is in the store.
    let shown = json_of(&steadfast(dir.path(), &["runs", "show", &held[0], "--json"]));
    assert_eq!(shown["run"]["state"], "succeeded");
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["actor"], "operator:api", "{shown}");
}

#[test]
fn a_token_guards_every_api_call_and_a_public_bind_needs_one() {
    let dir = prepared();
    let refused = steadfast(dir.path(), &["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("refusing to listen on 0.0.0.0:0 without a token"));
    let short = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("STEADFAST_TOKEN", "too-short")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2), "{}", text(&short));
    assert!(text(&short).contains("at least 32"), "{}", text(&short));

    let token = "a-canary-token-that-is-long-enough-0123456789";
    let held = ids(dir.path(), "held");
    let server = Server::start(dir.path(), &[("STEADFAST_TOKEN", token)]);
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    block_on(async {
        let c = reqwest::Client::new();
        let api = |path: &str| format!("{}/api/v1{path}", server.url);
        assert_eq!(
            call(&c, get.clone(), format!("{}/healthz", server.url), None, None).await.0,
            200
        );
        let (status, error) = call(&c, get.clone(), api("/runs"), None, None).await;
        assert_eq!(status, 401, "{error}");
        assert!(!error.to_string().contains(token), "the token is never in an answer");
        let approve = api(&format!("/review/{}/approve", held[0]));
        let (status, _) = call(&c, post.clone(), approve.clone(), None, Some("wrong")).await;
        assert_eq!(status, 401);
        let (_, view) =
            call(&c, get.clone(), api(&format!("/runs/{}", held[0])), None, Some(token)).await;
        assert_eq!(view["run"]["state"], "needs_review", "a refused call changed nothing");
        let (status, run) = call(&c, post.clone(), approve, None, Some(token)).await;
        assert_eq!((status, &run["state"]), (200, &json!("queued")), "{run}");
        let metrics = c.get(format!("{}/metrics", server.url)).send().await.unwrap();
        assert!(!metrics.text().await.unwrap().contains(token), "the token is never in a metric");
    });
    assert!(server.stop().success());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("token=\"set (redacted)\""), "the configuration is logged: {log}");
    assert!(!log.contains(token), "the token is never in the log: {log}");
}

/// The fields of a run that differ between two runs of the same history.
fn same_shape(mut run: Value) -> Value {
    for field in ["id", "idempotency_key", "input", "created_at", "updated_at", "due_at"] {
        run.as_object_mut().unwrap().remove(field);
    }
    run
}

/// Every operator command, once against the database and once through a running server (the
/// CLI finds it in the data directory): the same `--json` output and the same exit code.
#[test]
fn every_command_answers_the_same_through_a_server() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let gates = ids(dir.path(), "gate");
    let missing = steadfast::RunId::new().to_string();
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, "{\"by\": \"test\"}").unwrap();
    let bad_output = dir.path().join("bad.json");
    std::fs::write(&bad_output, "{\"approved\": \"maybe\"}").unwrap();
    let payload = payload.display().to_string();
    let bad_output = bad_output.display().to_string();
    // Reads and refusals change nothing: the same calls, both ways.
    let calls: Vec<Vec<&str>> = vec![
        vec!["runs", "list"],
        vec!["runs", "list", "--state", "needs_review", "--limit", "1"],
        vec!["runs", "list", "--agent", "reader", "--since", "1h"],
        vec!["runs", "show", &held[0]],
        vec!["runs", "show", &missing],
        vec!["review", "list"],
        vec!["review", "show", &held[0]],
        vec!["review", "show", &held[0], "--template"],
        vec!["review", "approve", &gates[0]],
        vec!["review", "resolve", &held[0], "--output", &bad_output],
        vec!["signal", &gates[0], "stop", "--payload", &payload],
        vec!["note", &held[0], ""],
        vec!["cancel", &missing],
        vec!["replay", &gates[0]],
        vec!["dlq", "list"],
        vec!["dlq", "replay", "--all", "--agent", "nobody"],
        vec!["stats", "--window", "2h"],
        vec!["prune", "--older-than", "1d"],
        vec!["prune", "--older-than", "1d", "--state", "queued"],
    ];
    let run_all = |dir: &Path| -> Vec<(Option<i32>, String)> {
        calls
            .iter()
            .map(|args| {
                let mut args = args.clone();
                args.push("--json");
                let output = steadfast(dir, &args);
                (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
            })
            .collect()
    };
    let local = run_all(dir.path());
    let server = Server::start(dir.path(), &[]);
    let remote = run_all(dir.path());
    for ((args, local), remote) in calls.iter().zip(&local).zip(&remote) {
        assert_eq!(local, remote, "`{}` differs through the server", args.join(" "));
    }
    assert!(local.iter().any(|(code, _)| *code == Some(1)), "refusals were among the calls");
    assert!(local.iter().any(|(code, _)| *code == Some(0)), "answers were among the calls");

    // Acting, on twin runs: through the server first, then against the database.
    let acts = |held: &str, gate: &str| -> Vec<Value> {
        [
            vec!["review", "approve", held, "--note", "yes"],
            vec!["signal", gate, "go", "--payload", &payload],
            vec!["note", gate, "paged the vendor"],
        ]
        .iter()
        .map(|args| {
            let mut args = args.clone();
            args.push("--json");
            let output = steadfast(dir.path(), &args);
            assert!(output.status.success(), "{}: {}", args.join(" "), text(&output));
            json_of(&output)
        })
        .collect()
    };
    let through_server = acts(&held[1], &gates[1]);
    assert!(server.stop().success());
    let direct = acts(&held[0], &gates[0]);
    for (a, b) in through_server.into_iter().zip(direct) {
        if a.get("agent").is_some() {
            assert_eq!(same_shape(a), same_shape(b));
        } else {
            assert_eq!((&a["text"], &a["author"]), (&b["text"], &b["author"]));
        }
    }
}

/// `--server` naming a server that is not there: exit 3, saying what failed; a server file
/// left behind by a killed server is ignored and the store opened.
#[test]
fn a_server_that_is_not_there_is_a_store_unavailable() {
    let dir = prepared();
    let output = steadfast(dir.path(), &["runs", "list", "--server", "http://127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        text(&output).contains("cannot reach the server at http://127.0.0.1:9"),
        "{}",
        text(&output)
    );
    std::fs::write(dir.path().join("steadfast.server"), "http://127.0.0.1:9\n").unwrap();
    let output = steadfast(dir.path(), &["runs", "list", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
}

/// `agents pause` and `agents resume`, against the database and through a server: the pause is
/// kept in the store, `agents` shows it either way, and the server's workers obey it at once.
#[test]
fn agents_pause_and_resume_both_ways() {
    let dir = prepared();
    let paused = steadfast(
        dir.path(),
        &["agents", "pause", "classifier", "--reason", "model is down", "--json"],
    );
    assert!(paused.status.success(), "{}", text(&paused));
    let paused = json_of(&paused);
    assert_eq!(paused["agent"], "digest.1.classifier");
    assert_eq!(paused["control"]["paused"], true);
    let unknown = steadfast(dir.path(), &["agents", "pause", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1), "refused, as the API's 404: {}", text(&unknown));

    let control_of = |listed: &Value| {
        listed.as_array().unwrap().iter().find(|a| a["name"] == "digest.1.classifier").unwrap()
                ["control"]
                .clone()
    };
    let listed = json_of(&steadfast(dir.path(), &["agents", "--json"]));
    assert_eq!(control_of(&listed)["reason"], "model is down");
    let table = text(&steadfast(dir.path(), &["agents"]));
    assert!(table.contains("paused"), "{table}");

    let server = Server::start(dir.path(), &[]);
    let listed = json_of(&steadfast(dir.path(), &["agents", "--json"]));
    assert_eq!(control_of(&listed)["paused"], true, "the server read the pause from the store");
    let resumed = steadfast(dir.path(), &["agents", "resume", "classifier", "--rate", "5"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed).contains("resumed digest.1.classifier at most 5 runs started per second")
    );
    let listed = json_of(&steadfast(dir.path(), &["agents", "--json"]));
    assert_eq!(control_of(&listed)["rate"], 5.0);
    assert!(server.stop().success());
    let listed = json_of(&steadfast(dir.path(), &["agents", "--json"]));
    assert_eq!(control_of(&listed)["paused"], false, "the resume is kept too");
}

/// A server killed with SIGKILL while 8 clients approve runs: after a restart, every approval
/// the server answered 200 is in the run's history (an acknowledged call is durable), and no
/// run is half-moved.
#[test]
fn every_approval_acknowledged_before_a_sigkill_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    super::ops::work(dir.path(), |rt| async move {
        for n in 0..300u32 {
            rt.submit("held", n).await.unwrap();
        }
    });
    let listed =
        steadfast(dir.path(), &["runs", "list", "--agent", "held", "--limit", "1000", "--json"]);
    let held: Vec<String> = json_of(&listed)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held.len(), 300);
    let mut server = Server::start(dir.path(), &[]);
    let url = server.url.clone();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = held
        .chunks(held.len() / 8)
        .map(|chunk| {
            let (chunk, url, acknowledged) = (chunk.to_vec(), url.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                block_on(async move {
                    let c = reqwest::Client::new();
                    for id in chunk {
                        let approve = format!("{url}/api/v1/review/{id}/approve");
                        // No note: the move is the call's only write.
                        match c.post(approve).json(&json!({})).send().await {
                            Ok(r) if r.status().as_u16() == 200 => {
                                acknowledged.lock().unwrap().push(id)
                            }
                            _ => return, // the server is gone
                        }
                    }
                })
            })
        })
        .collect();
    // Kill it once some approvals are through, while the clients still send.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 40 && acknowledged.len() < 300,
        "{} acknowledged",
        acknowledged.len()
    );
    // Reopened: every acknowledged approval is there; every run is in review or queued.
    let listed = json_of(&steadfast(
        dir.path(),
        &["runs", "list", "--agent", "held", "--limit", "1000", "--json"],
    ));
    let mut states = std::collections::HashMap::new();
    for run in listed["runs"].as_array().unwrap() {
        states.insert(
            run["id"].as_str().unwrap().to_owned(),
            run["state"].as_str().unwrap().to_owned(),
        );
    }
    for id in &acknowledged {
        assert_eq!(states[id], "queued", "{id}: approved with 200, then lost");
        let shown = json_of(&steadfast(dir.path(), &["runs", "show", id, "--json"]));
        let last = shown["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["actor"], "operator:api", "{id}: {last}");
    }
    assert!(states.values().all(|s| s == "queued" || s == "needs_review"), "{states:?}");
    eprintln!("{} of 300 approvals acknowledged before the kill, all kept", acknowledged.len());
}

/// `serve --prune-older-than` prunes on its schedule, starting at once.
#[test]
fn serve_prunes_on_its_schedule() {
    let dir = prepared();
    let server = Server::start_with(dir.path(), &[], &["--prune-older-than", "0s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed =
            json_of(&steadfast(dir.path(), &["runs", "list", "--state", "succeeded", "--json"]));
        if listed["runs"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the succeeded run was not pruned: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(all["runs"].as_array().unwrap().len(), 6, "only the succeeded run went");
    assert!(server.stop().success());
}

/// `steadfast serve` runs the digest on the bundled items: a new edition submitted through the
/// API is worked by the server's workers, and from a second shell the CLI follows it.
#[test]
fn serve_runs_the_digest_submitted_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let demo = steadfast(dir.path(), &["demo"]);
    assert!(demo.status.success(), "{}", text(&demo));
    let server = Server::start(dir.path(), &[]);
    let post = reqwest::Method::POST;
    let id = block_on(async {
        let c = reqwest::Client::new();
        let runs = format!("{}/api/v1/runs", server.url);
        let edition = json!({"agent": "digest", "input": {"name": "api-edition"}});
        let (status, created) =
            call(&c, post.clone(), runs.clone(), Some(edition.clone()), None).await;
        assert_eq!((status, &created["created"]), (201, &json!(true)), "{created}");
        let (status, again) = call(&c, post.clone(), runs.clone(), Some(edition), None).await;
        assert_eq!(
            (status, &again["id"]),
            (200, &created["id"]),
            "the same edition is the same run"
        );
        let empty = json!({"agent": "digest", "input": {"name": ""}});
        let (status, error) = call(&c, post.clone(), runs.clone(), Some(empty), None).await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["violations"][0]["pointer"], "/name", "{error}");
        let nobody = json!({"agent": "nobody", "input": {}});
        assert_eq!(call(&c, post.clone(), runs, Some(nobody), None).await.0, 404);
        created["id"].as_str().unwrap().to_owned()
    });
    // The CLI, from a second shell, through the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = json_of(&steadfast(dir.path(), &["runs", "show", &id, "--json"]));
        if shown["run"]["state"] == "succeeded" {
            // The collector, a classifier run per item (35), the reporter and the mailer.
            assert_eq!(shown["stages"].as_array().unwrap().len(), 3 + 35, "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "the edition did not finish: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [
        vec!["runs", "list", "--agent", "digest"],
        vec!["review", "list"],
        vec!["stats"],
        vec!["dlq", "list"],
    ] {
        let output = steadfast(dir.path(), &args);
        assert!(output.status.success(), "{}: {}", args.join(" "), text(&output));
    }
    assert!(server.stop().success());
}
