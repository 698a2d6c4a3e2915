//! `steadfast export` / `import` between the embedded store and PostgreSQL: the demo's
//! deployment (runs with history, effects, notes, dead letters, runs in review, schemas, a
//! paused agent) moved to PostgreSQL and back shows the same `--json` views, and every export
//! of it is the same file, byte for byte.

use serde_json::Value;

use super::*;

#[path = "../../../tests/common/postgres.rs"]
mod postgres;

/// The views an operator reads, as the CLI prints them with `--json`.
fn views(dir: &Path, store: &[&str]) -> Vec<Value> {
    let run = |args: &[&str]| {
        let args: Vec<&str> = args.iter().chain(store).copied().collect();
        let output = steadfast(dir, &args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        super::ops::json_of(&output)
    };
    let listed = run(&["runs", "list", "--limit", "500", "--json"]);
    let mut views = vec![
        listed.clone(),
        run(&["review", "list", "--json"]),
        run(&["dlq", "list", "--json"]),
        run(&["agents", "--json"]),
    ];
    for id in listed["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()) {
        views.push(run(&["runs", "show", id, "--json"]));
    }
    views
}

#[test]
fn a_deployment_moves_to_postgres_and_back_unchanged() {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some((url, options)) = tokio.block_on(postgres::fresh()) else { return };
    let schema = options.schema.clone().unwrap();
    // The CLI reaches the test's own schema through libpq's `options`.
    let pg = format!("{url}?options=-c%20search_path%3D{schema}");
    let root = tempfile::tempdir().unwrap();
    let (sled, shared, back) =
        (root.path().join("sled"), root.path().join("pg"), root.path().join("back"));
    assert!(steadfast(&sled, &["demo"]).status.success());
    let review = super::ops::json_of(&steadfast(&sled, &["review", "list", "--json"]));
    let held = review[0]["id"].as_str().expect("the demo holds items for review").to_owned();
    assert!(steadfast(&sled, &["note", &held, "looked at it"]).status.success());
    let paused = steadfast(&sled, &["agents", "pause", "digest.3.mailer", "--reason", "move"]);
    assert!(paused.status.success(), "{}", text(&paused));
    let before = views(&sled, &[]);

    let first = root.path().join("first.jsonl");
    let exported = steadfast(&sled, &["export", first.to_str().unwrap(), "--json"]);
    let exported = super::ops::json_of(&exported);
    assert!(exported["runs"].as_u64().unwrap() > 30, "{exported}");

    let into_pg = ["--store", pg.as_str()];
    let import = |dir: &Path, file: &Path, store: &[&str]| {
        let args: Vec<&str> =
            ["import", file.to_str().unwrap(), "--json"].iter().chain(store).copied().collect();
        let output = steadfast(dir, &args);
        assert!(output.status.success(), "{}", text(&output));
        super::ops::json_of(&output)
    };
    let imported = import(&shared, &first, &into_pg);
    assert_eq!(imported["runs"], exported["runs"]);
    assert_eq!(imported["skipped"], 0);
    // Twice is once.
    let again = import(&shared, &first, &into_pg);
    assert_eq!(
        (again["runs"].as_u64(), again["skipped"].clone()),
        (Some(0), exported["runs"].clone())
    );
    assert_eq!(views(&shared, &into_pg), before, "the views on PostgreSQL");

    let second = root.path().join("second.jsonl");
    let args = ["export", second.to_str().unwrap(), "--store", pg.as_str()];
    assert!(steadfast(&shared, &args).status.success());
    assert_eq!(std::fs::read(&second).unwrap(), std::fs::read(&first).unwrap(), "the exports");

    import(&back, &second, &[]);
    assert_eq!(views(&back, &[]), before, "the views back on the embedded store");

    // Bad input changes nothing: a file that is not an export is refused with its line.
    let junk = root.path().join("junk.jsonl");
    std::fs::write(&junk, "{\"run\": 1}\n").unwrap();
    let refused = steadfast(&back, &["import", junk.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("line 1"), "{}", text(&refused));
    assert_eq!(views(&back, &[]), before);
}
