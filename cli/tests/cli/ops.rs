//! The operator commands against a database a test program prepared with agents the
//! `steadfast` binary has never heard of (as in production: the CLI operates, the user's
//! program works).
use super::*;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steadfast::prelude::*;

/// Reads a file; a missing file is a permanent fault (until someone puts it there).
struct Reader;
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ReadFile {
    path: String,
}
#[async_trait]
impl Agent for Reader {
    type Input = ReadFile;
    type Output = String;
    fn name(&self) -> &str {
        "reader"
    }
    async fn run(&self, _: &mut Context, input: ReadFile) -> Result<Outcome<String>, AgentError> {
        std::fs::read_to_string(&input.path)
            .map(Outcome::Done)
            .map_err(|e| AgentError::permanent(format!("cannot read {}: {e}", input.path)))
    }
}

/// Waits for the signal `go` and answers with its payload.
struct Gate;
#[async_trait]
impl Agent for Gate {
    type Input = u32;
    type Output = Value;
    fn name(&self) -> &str {
        "gate"
    }
    async fn run(&self, ctx: &mut Context, _: u32) -> Result<Outcome<Value>, AgentError> {
        Ok(match ctx.signal() {
            Some(payload) => Outcome::Done(payload.clone()),
            None => Outcome::Wait(WaitFor::signal("go")),
        })
    }
}

/// Always asks a human.
pub(super) struct Held;
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Decision {
    approved: bool,
}
#[async_trait]
impl Agent for Held {
    type Input = u32;
    type Output = Decision;
    fn name(&self) -> &str {
        "held"
    }
    async fn run(&self, ctx: &mut Context, _: u32) -> Result<Outcome<Decision>, AgentError> {
        Ok(match ctx.review_note() {
            Some(note) => Outcome::Done(Decision { approved: note.contains("yes") }),
            None => Outcome::Review("a person must decide".into()),
        })
    }
}

/// Opens the store in `dir`, registers the test agents, runs `f`, works until idle, and
/// closes everything again (the store's lock with it) so the CLI can open it.
pub(super) fn work<F, Fut>(dir: &Path, f: F)
where
    F: FnOnce(std::sync::Arc<Runtime>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = steadfast::SledStore::open(dir.join("db")).unwrap();
        let rt = std::sync::Arc::new(
            Runtime::builder()
                .store(store)
                .register(Reader)
                .register(Gate)
                .register(Held)
                .build()
                .unwrap(),
        );
        f(rt.clone()).await;
        rt.run_until_idle().await.unwrap();
    });
    drop(runtime);
}

pub(super) fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(output)))
}

fn state_of(dir: &Path, id: &str) -> String {
    let shown = steadfast(dir, &["runs", "show", id, "--json"]);
    json_of(&shown)["run"]["state"].as_str().unwrap().to_owned()
}

/// Ids of the runs of `agent`, oldest first.
pub(super) fn ids(dir: &Path, agent: &str) -> Vec<String> {
    let listed = steadfast(dir, &["runs", "list", "--agent", agent, "--json"]);
    let mut ids: Vec<String> = json_of(&listed)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.reverse();
    ids
}

/// A database with: two dead letters of `reader`, two `gate` runs waiting for `go`, two
/// `held` runs in review, and one succeeded `reader` run.
pub(super) fn prepared() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present.txt");
    std::fs::write(&present, "hello").unwrap();
    let missing = |n: u32| dir.path().join(format!("missing-{n}.txt")).display().to_string();
    let (present, m1, m2) = (present.display().to_string(), missing(1), missing(2));
    work(dir.path(), |rt| async move {
        rt.submit("reader", ReadFile { path: present }).await.unwrap();
        rt.submit("reader", ReadFile { path: m1 }).await.unwrap();
        rt.submit("reader", ReadFile { path: m2 }).await.unwrap();
        rt.submit("gate", 1).await.unwrap();
        rt.submit("gate", 2).await.unwrap();
        rt.submit("held", 1).await.unwrap();
        rt.submit("held", 2).await.unwrap();
    });
    dir
}

#[test]
fn runs_list_and_show_in_both_forms() {
    let dir = prepared();
    let listed = steadfast(dir.path(), &["runs", "list"]);
    let out = text(&listed);
    assert!(listed.status.success(), "{out}");
    assert!(out.starts_with("RUN "), "{out}");
    assert_eq!(out.lines().count(), 8, "a header and 7 runs:\n{out}");
    assert!(out.contains("cannot read"), "the last error is shown:\n{out}");

    let all = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(all["runs"].as_array().unwrap().len(), 7);
    assert_eq!(all["next"], Value::Null, "one page");
    let dead =
        json_of(&steadfast(dir.path(), &["runs", "list", "--state", "failed_permanent", "--json"]));
    assert_eq!(dead["runs"].as_array().unwrap().len(), 2);
    let recent = json_of(&steadfast(
        dir.path(),
        &["runs", "list", "--since", "1h", "--limit", "3", "--json"],
    ));
    assert_eq!(recent["runs"].as_array().unwrap().len(), 3);

    let id = &ids(dir.path(), "reader")[1];
    let shown = steadfast(dir.path(), &["runs", "show", id]);
    let out = text(&shown);
    assert!(shown.status.success(), "{out}");
    for expected in [
        "state     failed_permanent",
        "error     permanent fault: cannot read",
        "history",
        "queued → processing",
        "processing → failed_permanent",
        "\"path\":",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    let shown = json_of(&steadfast(dir.path(), &["runs", "show", id, "--json"]));
    assert_eq!(shown["run"]["id"], id.as_str());
    assert_eq!(shown["history"].as_array().unwrap().len(), 3);
}

#[test]
fn refusals_name_the_state_and_change_nothing() {
    let dir = prepared();
    let done = &ids(dir.path(), "reader")[0];
    assert_eq!(state_of(dir.path(), done), "succeeded");
    for (args, expected) in [
        (
            vec!["replay", done.as_str()],
            "is `succeeded`; replay is allowed only from `failed_permanent` or `needs_review`",
        ),
        (
            vec!["review", "approve", done.as_str()],
            "is `succeeded`; approve is allowed only from `needs_review`",
        ),
        (vec!["cancel", done.as_str()], "is `succeeded`; cancel is allowed only from"),
        (
            vec!["signal", done.as_str(), "go"],
            "is `succeeded`; signal is allowed only from `waiting_external`",
        ),
    ] {
        let output = steadfast(dir.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_eq!(state_of(dir.path(), done), "succeeded");
    }
    // The wrong signal for a waiting run.
    let gate = &ids(dir.path(), "gate")[0];
    let output = steadfast(dir.path(), &["signal", gate, "stop"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("`go`"), "{}", text(&output));
    assert_eq!(state_of(dir.path(), gate), "waiting_external");
    // An output that does not fit the agent's type (checked against the stored schema:
    // the CLI has no Rust type of `held`).
    let held = &ids(dir.path(), "held")[0];
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"approved": "maybe", "extra": 1}"#).unwrap();
    let output =
        steadfast(dir.path(), &["review", "resolve", held, "--output", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("2 violations"), "{}", text(&output));
    assert_eq!(state_of(dir.path(), held), "needs_review");
    // A run that does not exist.
    let output = steadfast(dir.path(), &["replay", "01JD3X4Q9ZK8M2N5P7R9T1V3W5"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("01JD3X4Q9ZK8M2N5P7R9T1V3W5"), "{}", text(&output));
    // JSON mode reports the error as JSON too.
    let output = steadfast(dir.path(), &["cancel", done.as_str(), "--json"]);
    assert_eq!(json_of(&output)["code"], 1);
}

#[test]
fn review_resolve_approve_reject_and_note() {
    let dir = prepared();
    let listed = steadfast(dir.path(), &["review", "list"]);
    assert!(text(&listed).contains("a person must decide"), "{}", text(&listed));
    let items = json_of(&steadfast(dir.path(), &["review", "list", "--json"]));
    assert_eq!(items.as_array().unwrap().len(), 2);

    let held = ids(dir.path(), "held");
    let mut child = Command::new(BIN)
        .args(["review", "resolve", &held[0], "--output", "-", "--data"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"approved": true}"#).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("now succeeded"));
    let shown = json_of(&steadfast(dir.path(), &["runs", "show", &held[0], "--json"]));
    assert_eq!(shown["run"]["output"], json!({"approved": true}));

    let output = steadfast(dir.path(), &["review", "approve", &held[1], "--note", "yes, go ahead"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(state_of(dir.path(), &held[1]), "queued");
    work(dir.path(), |_| async {});
    let shown = json_of(&steadfast(dir.path(), &["runs", "show", &held[1], "--json"]));
    assert_eq!(shown["run"]["state"], "succeeded");
    assert_eq!(shown["run"]["output"], json!({"approved": true}), "the note reached the attempt");

    let output = steadfast(dir.path(), &["note", &held[1], "checked by the night shift"]);
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&steadfast(dir.path(), &["runs", "show", &held[1]]));
    assert!(shown.contains("notes") && shown.contains("checked by the night shift"), "{shown}");
}

#[test]
fn reject_signal_and_cancel() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let output = steadfast(dir.path(), &["review", "reject", &held[0], "--note", "not ours"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(state_of(dir.path(), &held[0]), "failed_permanent");

    let gates = ids(dir.path(), "gate");
    let mut child = Command::new(BIN)
        .args(["signal", &gates[0], "go", "--payload", "-", "--json", "--data"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"by": "ops"}"#).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(json_of(&output)["state"], "queued");
    let output = steadfast(dir.path(), &["cancel", &gates[1]]);
    assert!(output.status.success(), "{}", text(&output));
    work(dir.path(), |_| async {});
    let shown = json_of(&steadfast(dir.path(), &["runs", "show", &gates[0], "--json"]));
    assert_eq!(shown["run"]["output"], json!({"by": "ops"}));
    assert_eq!(state_of(dir.path(), &gates[1]), "failed_permanent");
    let dead = json_of(&steadfast(dir.path(), &["dlq", "list", "--json"]));
    let dead_ids: Vec<&str> =
        dead.as_array().unwrap().iter().map(|d| d["run"].as_str().unwrap()).collect();
    assert!(
        dead_ids.contains(&gates[1].as_str()) && dead_ids.contains(&held[0].as_str()),
        "{dead_ids:?}"
    );
}

#[test]
fn a_dead_letter_replayed_after_the_fault_is_fixed_succeeds() {
    let dir = prepared();
    let listed = steadfast(dir.path(), &["dlq", "list"]);
    let out = text(&listed);
    assert!(out.contains("cannot read") && out.contains("missing-1.txt"), "{out}");
    let readers = ids(dir.path(), "reader");

    // Replaying before the fix: it fails again, the same way.
    let output = steadfast(dir.path(), &["replay", &readers[1]]);
    assert!(output.status.success(), "{}", text(&output));
    work(dir.path(), |_| async {});
    assert_eq!(state_of(dir.path(), &readers[1]), "failed_permanent");

    // The fix: the files appear. One replay by id, the rest in bulk.
    std::fs::write(dir.path().join("missing-1.txt"), "one").unwrap();
    std::fs::write(dir.path().join("missing-2.txt"), "two").unwrap();
    let output = steadfast(dir.path(), &["replay", &readers[1]]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("now queued"), "{}", text(&output));
    let output = steadfast(dir.path(), &["dlq", "replay", "--all", "--agent", "reader"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains(&format!("replayed {}", readers[2])) && out.contains("1 replayed, 0 refused"),
        "{out}"
    );
    work(dir.path(), |_| async {});
    for (id, expected) in [(&readers[1], "one"), (&readers[2], "two")] {
        let shown = json_of(&steadfast(dir.path(), &["runs", "show", id, "--json"]));
        assert_eq!(shown["run"]["state"], "succeeded");
        assert_eq!(shown["run"]["output"], expected);
        let reasons: Vec<&str> = shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["reason"].as_str().unwrap_or(""))
            .collect();
        assert!(reasons.iter().any(|r| r.starts_with("replayed")), "{reasons:?}");
    }
    let dead = json_of(&steadfast(dir.path(), &["dlq", "list", "--json"]));
    assert!(dead.as_array().unwrap().is_empty(), "{dead}");
}

#[test]
fn stats_graph_and_usage_errors() {
    let dir = prepared();
    let output = steadfast(dir.path(), &["stats"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("AGENT") && out.contains("reader") && out.contains("P95"), "{out}");
    let stats = json_of(&steadfast(dir.path(), &["stats", "--window", "2h", "--json"]));
    let reader =
        stats["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "reader").unwrap();
    assert_eq!(reader["runs"], 3);
    assert!((reader["dead_letter_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((reader["success_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);

    let graph = text(&steadfast(dir.path(), &["graph"]));
    assert!(graph.starts_with("stateDiagram-v2"), "{graph}");
    let dot = text(&steadfast(dir.path(), &["graph", "--format", "dot"]));
    assert!(dot.starts_with("digraph"), "{dot}");
    let digest = text(&steadfast(dir.path(), &["graph", "digest"]));
    assert!(digest.contains("digest.1.classifier"), "{digest}");
    assert_eq!(steadfast(dir.path(), &["graph", "nope"]).status.code(), Some(2));

    assert_eq!(steadfast(dir.path(), &["runs", "show", "not-an-id"]).status.code(), Some(2));
    assert_eq!(
        steadfast(dir.path(), &["dlq", "replay"]).status.code(),
        Some(2),
        "bulk replay needs --all"
    );
    assert_eq!(
        steadfast(dir.path(), &["runs", "list", "--state", "sleeping"]).status.code(),
        Some(2)
    );
    let missing = steadfast(&dir.path().join("nowhere"), &["runs", "list"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing).contains("no steadfast database at"), "{}", text(&missing));
}

#[test]
fn prune_deletes_runs_at_rest_and_only_the_states_named() {
    let dir = prepared();
    let before = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    let total = before["runs"].as_array().unwrap().len();
    // Nothing has been at rest for a day.
    let none = steadfast(dir.path(), &["prune", "--older-than", "1d"]);
    assert!(none.status.success(), "{}", text(&none));
    assert!(text(&none).contains("pruned 0 run(s) in succeeded that had not moved for 1d"));

    let pruned = json_of(&steadfast(dir.path(), &["prune", "--older-than", "0s", "--json"]));
    assert_eq!(pruned["pruned"], 1, "the one succeeded run: {pruned}");
    assert_eq!(pruned["states"], serde_json::json!(["succeeded"]));
    assert!(ids(dir.path(), "reader").len() == 2, "the two dead letters stay");

    let refused = steadfast(dir.path(), &["prune", "--older-than", "0s", "--state", "queued"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("`queued` are never pruned"), "{}", text(&refused));
    let no_age = steadfast(dir.path(), &["prune"]);
    assert_eq!(no_age.status.code(), Some(2), "--older-than is required");

    let dead = steadfast(
        dir.path(),
        &["prune", "--older-than", "0s", "--state", "failed_permanent", "--state", "needs_review"],
    );
    assert!(dead.status.success(), "{}", text(&dead));
    assert!(text(&dead).contains("pruned 4 run(s) in failed_permanent, needs_review"));
    let after = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    let left: Vec<&str> =
        after["runs"].as_array().unwrap().iter().map(|r| r["agent"].as_str().unwrap()).collect();
    assert_eq!(left, ["gate", "gate"], "only the waiting runs are left (of {total})");
    assert_eq!(json_of(&steadfast(dir.path(), &["dlq", "list", "--json"])), serde_json::json!([]));
}

/// `work --until-signal --prune-older-than` prunes as it starts working, then stops cleanly
/// on SIGTERM.
#[test]
fn work_until_signal_prunes_on_its_schedule_and_answers_on_its_socket() {
    use std::io::BufRead;
    let dir = prepared();
    let mut child = Command::new(BIN)
        .args(["work", "--until-signal", "--prune-older-than", "0s", "--prune-every", "1h"])
        .arg("--data")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tell, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tell.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("retention: pruned runs at rest")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match heard.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no prune logged within 60 s:\n{}", log.join("\n"));
            }
        }
    }
    // While it works, the CLI operates it through its socket (the store is held).
    let agents = steadfast(dir.path(), &["agents", "pause", "digest.2.reporter", "--json"]);
    assert!(agents.status.success(), "through the socket: {}", text(&agents));
    assert!(dir.path().join("steadfast.sock").exists());
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "work exits 0 on SIGTERM: {exit:?}\n{}", log.join("\n"));
    assert!(!dir.path().join("steadfast.sock").exists(), "the socket is gone with it");
    let listed = json_of(&steadfast(dir.path(), &["runs", "list", "--json"]));
    let states: Vec<&str> =
        listed["runs"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert!(!states.contains(&"succeeded"), "the succeeded run was pruned: {states:?}");
    assert_eq!(states.len(), 6, "{states:?}");
}

/// `review show`'s "Next:" lines paste as they are: with the data directory when it is not
/// the default (without it, a pasted line opened `./steadfast-data` and exited 3).
#[test]
fn review_shows_next_steps_that_paste_as_they_are() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let shown = steadfast(dir.path(), &["review", "show", &held[0]]);
    assert!(shown.status.success(), "{}", text(&shown));
    let out = text(&shown);
    let prefix = format!("steadfast --data {} review", dir.path().display());
    let next: Vec<&str> = out.lines().skip_while(|l| *l != "Next:").skip(1).collect();
    assert_eq!(next.len(), 4, "{out}");
    for line in &next {
        assert!(line.trim_start().starts_with(&prefix), "{line:?} in {out}");
    }
    // The reject line, pasted (its note filled in): it runs against this data directory.
    let reject = next.iter().find(|l| l.contains(" review reject ")).unwrap();
    assert!(reject.contains(&held[0]), "{reject}");
    let output = Command::new(BIN)
        .args(["--data", &dir.path().display().to_string(), "review", "reject", &held[0]])
        .args(["--note", "pasted"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}
