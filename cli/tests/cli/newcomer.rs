//! What a new user met on the `steadfast` binary (issue 16), each as it was met: a closed
//! pipe, `--json`, a failed or empty edition, someone else's folder, paging and short names,
//! the review template and an approving note, the logs.

use std::process::Stdio;

use serde_json::Value;

use super::*;

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(output)))
}

/// A data directory after one demo.
fn demoed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let first = steadfast(dir.path(), &["demo"]);
    assert!(first.status.success(), "{}", text(&first));
    dir
}

/// A folder of `n` Markdown items that the bundled rules label.
fn items(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("{i}.md")),
            format!("# Widget {i}.0 released\n\nThe changelog lists new features."),
        )
        .unwrap();
    }
    dir
}

/// The ids of the runs `runs list --json` gives with `args`, and its `next` cursor.
fn page(dir: &Path, args: &[&str]) -> (Vec<String>, Option<String>) {
    let mut all = vec!["runs", "list", "--json"];
    all.extend_from_slice(args);
    let listed = json(&steadfast(dir, &all));
    let ids = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, listed["next"].as_str().map(str::to_owned))
}

/// The id of the demo's digest run.
fn digest_run(dir: &Path) -> String {
    let listed = json(&steadfast(dir, &["runs", "list", "--agent", "digest", "--json"]));
    // (A plain array before runs lists paged with a cursor.)
    let runs = listed.get("runs").unwrap_or(&listed);
    runs[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let dir = demoed();
    let ids = [digest_run(dir.path())];
    let commands: [&[&str]; 5] = [
        &["runs", "list", "--json"],
        &["runs", "show", &ids[0]],
        &["demo"],
        &["graph", "digest"],
        &["stats"],
    ];
    for args in commands {
        // The reader is gone before the command writes anything.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .env_remove("STEADFAST_DATA")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn json_is_honoured_by_demo_and_graph() {
    let dir = tempfile::tempdir().unwrap();
    let demo = steadfast(dir.path(), &["demo", "--json"]);
    assert!(demo.status.success(), "{}", text(&demo));
    let summary = json(&demo);
    assert_eq!(summary["state"], "succeeded");
    assert_eq!(summary["already_run"], false);
    assert_eq!(summary["labelled_by"]["rules"], 32);
    assert_eq!(summary["report"]["total"], 32);
    assert_eq!(summary["review"].as_array().unwrap().len(), 2);
    assert!(summary["mail"]["sent"].as_bool().unwrap());
    let again = json(&steadfast(dir.path(), &["demo", "--json"]));
    assert_eq!(
        (&again["already_run"], &again["state"]),
        (&Value::from(true), &Value::from("succeeded"))
    );

    let graph = json(&steadfast(dir.path(), &["graph", "digest", "--json"]));
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 6, "input, four stages, output");
    assert_eq!(graph["edges"].as_array().unwrap().len(), 5);
    assert_eq!(graph["nodes"][2]["label"], "digest.1.classifier");
    let lifecycle = json(&steadfast(dir.path(), &["graph", "lifecycle", "--json"]));
    assert_eq!(lifecycle["nodes"].as_array().unwrap().len(), 7);
    let dot = steadfast(dir.path(), &["graph", "digest", "--format", "dot"]);
    assert!(text(&dot).starts_with("digraph \"digest\" {"), "{}", text(&dot));
}

#[test]
fn a_failed_or_empty_edition_says_what_to_do_and_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let good = items(2);
    let good_path = good.path().to_str().unwrap();
    let failed = steadfast(dir.path(), &["demo", "--items", "/nonexistent-folder"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));

    let again = steadfast(dir.path(), &["demo", "--items", good_path]);
    let out = text(&again);
    assert_eq!(again.status.code(), Some(1), "{out}");
    assert!(!out.contains("Resuming"), "a failed edition does not pretend to resume:\n{out}");
    assert!(out.contains("ended `failed_permanent`") && out.contains("--edition <NAME>"), "{out}");
    let replay_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("steadfast replay "))
        .unwrap_or_else(|| panic!("the replay command is given:\n{out}"));
    let id = replay_line.split_whitespace().nth(2).unwrap();

    // Do as the message says: replay, then the demo with the new folder.
    let replayed = steadfast(dir.path(), &["replay", id]);
    let out = text(&replayed);
    assert!(replayed.status.success(), "{out}");
    assert!(out.contains("and its stage run") && out.contains("digest.0.collector"), "{out}");
    let resumed = steadfast(dir.path(), &["demo", "--items", good_path]);
    let out = text(&resumed);
    assert!(resumed.status.success(), "{out}");
    assert!(out.contains("release 2 (2 items)"), "{out}");

    // An empty folder makes an empty edition; the next demo of it says how to collect again.
    let empty = tempfile::tempdir().unwrap();
    let empty_path = empty.path().to_str().unwrap();
    let ran = steadfast(dir.path(), &["demo", "--edition", "e2", "--items", empty_path]);
    assert!(text(&ran).contains("not sent: the digest is empty"), "{}", text(&ran));
    let again = steadfast(dir.path(), &["demo", "--edition", "e2", "--items", good_path]);
    assert!(text(&again).contains("run a new edition"), "{}", text(&again));
    let new = steadfast(dir.path(), &["demo", "--edition", "e3", "--items", good_path]);
    assert!(text(&new).contains("release 2 (2 items)"), "{}", text(&new));
}

#[test]
fn the_demo_says_how_many_items_the_cap_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let folder = items(3);
    let capped = steadfast(
        dir.path(),
        &["demo", "--items", folder.path().to_str().unwrap(), "--max-items", "2"],
    );
    let out = text(&capped);
    assert!(capped.status.success(), "{out}");
    assert!(out.contains("Collector: left out 1 of 3 items: an edition keeps at most 2"), "{out}");
    assert!(out.contains("release 2 (2 items)"), "{out}");
}

#[test]
fn the_demo_checks_the_store_before_it_writes_anything() {
    // Someone else's folder where the store would be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("db")).unwrap();
    std::fs::write(dir.path().join("db").join("notes.txt"), "mine").unwrap();
    let refused = steadfast(dir.path(), &["demo"]);
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(3), "{out}");
    assert!(out.contains("is not a steadfast database"), "{out}");
    assert!(!out.contains("another steadfast process"), "no lock hint for a foreign folder: {out}");
    for written in ["sample-items", "outbox", "reports"] {
        assert!(!dir.path().join(written).exists(), "{written} written on refusal");
    }

    // The store's own folder given as the data directory: one layout, said plainly.
    let dir = demoed();
    let db = dir.path().join("db");
    for args in [&["demo"][..], &["runs", "list"]] {
        let refused = steadfast(&db, args);
        let out = text(&refused);
        assert_eq!(refused.status.code(), Some(2), "{out}");
        assert!(out.contains(&format!("give --data {}", dir.path().display())), "{out}");
    }
    assert!(!db.join("sample-items").exists(), "nothing written inside sled's folder");
}

#[test]
fn runs_list_pages_with_a_cursor_and_finds_stages_by_short_name() {
    let dir = demoed();
    let (everything, next) = page(dir.path(), &["--limit", "10000"]);
    assert_eq!(next, None);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "7"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (ids, next) = page(dir.path(), &args);
        assert!(ids.len() <= 7);
        seen.extend(ids);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, everything, "the pages add up to the whole list, once each");
    let listed = steadfast(dir.path(), &["runs", "list", "--limit", "3"]);
    assert!(text(&listed).contains("… more runs: add --cursor "), "{}", text(&listed));
    let zero = steadfast(dir.path(), &["runs", "list", "--limit", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero));

    let (mailer, _) = page(dir.path(), &["--agent", "mailer"]);
    assert_eq!(mailer.len(), 1, "`mailer` is the digest's stage `digest.3.mailer`");
    let unknown = steadfast(dir.path(), &["runs", "list", "--agent", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown).contains("registers digest, digest.0.collector"), "{}", text(&unknown));
}

#[test]
fn a_pipeline_runs_history_shows_no_attempt_0_and_keeps_the_runtimes_journal_apart() {
    let dir = demoed();
    let shown = steadfast(dir.path(), &["runs", "show", &digest_run(dir.path())]);
    let out = text(&shown);
    assert!(!out.contains("attempt 0"), "{out}");
    let journal = out.split("steadfast's own journal").nth(1).unwrap_or_else(|| panic!("{out}"));
    assert!(journal.contains("fan-in note 1"), "{out}");
    assert!(!out.contains("\neffects\n"), "the digest run made no effect of its own:\n{out}");
}

#[test]
fn review_show_gives_a_template_and_an_approving_note_can_label_the_item() {
    let dir = demoed();
    let held = json(&steadfast(dir.path(), &["review", "list", "--json"]));
    let held: Vec<(String, String)> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_str().unwrap().to_owned(), h["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    let (first, second) = (&held[0].0, &held[1].0);

    let shown = steadfast(dir.path(), &["review", "show", first]);
    let out = text(&shown);
    assert!(shown.status.success(), "{out}");
    assert!(out.contains("(JSON Schema)") && out.contains("a template from this run"), "{out}");
    let template = steadfast(dir.path(), &["review", "show", first, "--template"]);
    let filled = json(&template);
    let input =
        json(&steadfast(dir.path(), &["runs", "show", first, "--json"]))["run"]["input"].clone();
    assert_eq!(filled["item"], input, "the template carries the run's input back");
    for field in ["verdict", "by"] {
        assert!(filled.get(field).is_some(), "{filled}");
    }
    // As it is, the template is refused (an empty summary), with the violation's pointer.
    let path = dir.path().join("out.json");
    std::fs::write(&path, serde_json::to_vec(&filled).unwrap()).unwrap();
    let refused =
        steadfast(dir.path(), &["review", "resolve", first, "--output", path.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("/verdict/summary"), "{}", text(&refused));

    // Approve with a note naming a label: the classifier takes it as the operator's verdict.
    let approved = steadfast(dir.path(), &["review", "approve", first, "--note", "it's community"]);
    assert!(text(&approved).contains("queued: it runs when workers do"), "{}", text(&approved));
    // A note naming none: back in review, saying so.
    steadfast(dir.path(), &["review", "approve", second, "--note", "looks fine to me"]);
    let worked = steadfast(dir.path(), &["work"]);
    assert!(worked.status.success(), "{}", text(&worked));
    let run = json(&steadfast(dir.path(), &["runs", "show", first, "--json"]));
    assert_eq!(run["run"]["state"], "succeeded", "{run}");
    assert_eq!(run["run"]["output"]["verdict"]["label"], "community");
    assert_eq!(run["run"]["output"]["by"]["by"], "operator");
    let again = json(&steadfast(dir.path(), &["runs", "show", second, "--json"]));
    assert_eq!(again["run"]["state"], "needs_review");
    let reason = again["history"].as_array().unwrap().last().unwrap()["reason"].clone();
    assert!(reason.as_str().unwrap().contains("names no label"), "{reason}");
}

#[test]
fn stats_and_agents_say_what_they_count() {
    let dir = demoed();
    let stats = steadfast(dir.path(), &["stats"]);
    assert!(text(&stats).contains("every rate is of all those runs"), "{}", text(&stats));
    let agents = steadfast(dir.path(), &["agents"]);
    let out = text(&agents);
    assert!(
        out.contains("digest.1.classifier") && out.contains("after 5 failures, 30.0 s"),
        "{out}"
    );
    let listed = json(&steadfast(dir.path(), &["agents", "--json"]));
    let digest = listed.as_array().unwrap().iter().find(|a| a["name"] == "digest").unwrap();
    assert_eq!(digest["kind"], "pipeline");
}

#[test]
fn json_logs_keep_the_quieter_default_of_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["demo", "--data"])
        .arg(dir.path())
        .env_remove("STEADFAST_LOG")
        .env_remove("RUST_LOG")
        .env("STEADFAST_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("\"level\":\"INFO\""), "the demo logs errors only:\n{stderr}");
    assert!(!stderr.contains("\"level\":\"WARN\""), "the demo logs errors only:\n{stderr}");
}
