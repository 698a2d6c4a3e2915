//! A user's own binary on `steadfast::cli` (`examples/shop.rs`), run as a process: its own
//! command, its agents worked by `work`, and every operator command against its runs.

use std::path::PathBuf;

use serde_json::Value;

use super::*;

/// The example's binary, built (or found fresh) with the same profile as this test.
fn shop_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // The example is the library's (`examples/shop.rs` of the package `steadfast`).
    build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).args([
        "build",
        "--quiet",
        "-p",
        "steadfast",
        "--features",
        "cli",
        "--example",
        "shop",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo to build the shop example");
    assert!(status.success(), "building examples/shop.rs failed");
    let binary = profile_dir.join("examples").join("shop");
    assert!(binary.exists(), "no {}", binary.display());
    binary
}

struct Shop {
    binary: PathBuf,
    data: tempfile::TempDir,
}

impl Shop {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .arg("--data")
            .arg(self.data.path())
            .env_remove("STEADFAST_DATA")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "shop {args:?}: {}", text(&output));
        text(&output)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.run(&all);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("shop {args:?} --json ({e}): {}", text(&output)))
    }

    /// The runs of `agent` (short stage names work), newest first.
    fn runs(&self, agent: &str) -> Vec<Value> {
        self.json(&["runs", "list", "--agent", agent])["runs"].as_array().unwrap().clone()
    }

    fn state(&self, id: &str) -> String {
        self.json(&["runs", "show", id])["run"]["state"].as_str().unwrap().to_owned()
    }
}

#[test]
fn a_users_binary_runs_its_agents_and_every_operator_command() {
    let shop = Shop { binary: shop_binary(), data: tempfile::tempdir().unwrap() };
    let help = shop.ok(&["--help"]);
    for command in [
        "submit", "work", "runs", "review", "replay", "dlq", "signal", "cancel", "note", "stats",
        "agents", "graph",
    ] {
        assert!(help.contains(&format!("  {command} ")), "`{command}` in the help:\n{help}");
    }
    // Its own command, then the workers until idle.
    for (order, amount) in [("A-1", "40"), ("A-2", "4000"), ("A-3", "-5"), ("A-4", "70")] {
        assert!(shop.ok(&["submit", "--order", order, "--amount", amount]).contains("queued"));
    }
    assert!(shop.ok(&["submit", "--order", "A-1", "--amount", "40"]).contains("already submitted"));
    let worked = shop.json(&["work"]);
    assert_eq!(worked["counts"]["needs_review"], 1, "{worked}");

    // graph and agents know its pipeline.
    let graph = shop.ok(&["graph", "orders"]);
    assert!(graph.contains("orders.1.charge"), "{graph}");
    let agents = shop.json(&["agents"]);
    assert_eq!(agents.as_array().unwrap().len(), 4, "the pipeline and its three stages");

    // Review: show with a template, approve with a note; the order is charged.
    let held = shop.json(&["review", "list"]);
    let charge = held[0]["id"].as_str().unwrap().to_owned();
    assert!(held[0]["reason"].as_str().unwrap().contains("above the 1000 limit"));
    let template = shop.json(&["review", "show", &charge, "--template"]);
    assert_eq!(template["order"]["id"], "A-2", "{template}");
    let approved = shop.ok(&["review", "approve", &charge, "--note", "known customer"]);
    assert!(approved.contains("queued: it runs when workers do (`shop work"), "{approved}");
    shop.ok(&["work"]);
    assert_eq!(shop.state(&charge), "succeeded");

    // Signal: the shipping stages wait for `packed`; the pipeline's own wait is refused.
    let ships = shop.runs("ship");
    assert_eq!(ships.len(), 3, "A-1, A-2 and A-4 wait to ship");
    let ship = ships[0]["id"].as_str().unwrap().to_owned();
    let pipeline =
        shop.json(&["runs", "show", &ship])["run"]["parent"].as_str().unwrap().to_owned();
    let refused = shop.run(&["signal", &pipeline, "stage:2"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let payload = shop.data.path().join("packed.json");
    std::fs::write(&payload, r#"{"parcel": "P-9"}"#).unwrap();
    shop.ok(&["signal", &ship, "packed", "--payload", payload.to_str().unwrap()]);
    shop.ok(&["work"]);
    let done = shop.json(&["runs", "show", &pipeline]);
    assert_eq!(done["run"]["state"], "succeeded", "{done}");
    assert_eq!(done["run"]["output"]["parcel"], "P-9");

    // Cancel another waiting one; note it.
    let other = shop.runs("ship")[1]["id"].as_str().unwrap().to_owned();
    let other =
        if other == ship { shop.runs("ship")[2]["id"].as_str().unwrap().to_owned() } else { other };
    shop.ok(&["cancel", &other]);
    assert_eq!(shop.state(&other), "failed_permanent");
    shop.ok(&["note", &other, "customer withdrew"]);
    assert_eq!(shop.json(&["runs", "show", &other])["notes"][0]["text"], "customer withdrew");

    // Dead letters: the bad order's check stage, its pipeline, and the cancelled one.
    let dead = shop.json(&["dlq", "list"]);
    assert!(dead.as_array().unwrap().len() >= 3, "{dead}");
    let bad = shop.runs("orders").into_iter().find(|r| r["input"]["id"] == "A-3").unwrap();
    let bad = bad["id"].as_str().unwrap().to_owned();
    let replayed = shop.ok(&["replay", &bad]);
    assert!(
        replayed.contains("and its stage run") && replayed.contains("orders.0.check"),
        "{replayed}"
    );
    shop.ok(&["work"]);
    assert_eq!(shop.state(&bad), "failed_permanent", "a bad order stays bad");

    let stats = shop.json(&["stats"]);
    assert!(stats["agents"].as_array().unwrap().iter().any(|a| a["agent"] == "orders.1.charge"));
}
