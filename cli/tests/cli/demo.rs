//! `steadfast demo`: once, twice, with its options, and killed mid-run.

use super::*;

#[test]
fn runs_once_and_a_second_time_does_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let first = steadfast(dir.path(), &["demo"]);
    let out = text(&first);
    assert!(first.status.success(), "{out}");
    assert!(out.contains(": succeeded in"), "{out}");
    assert!(out.contains("Held for review (2)"), "{out}");
    assert!(out.contains("Dead letters (1)"), "{out}");
    assert!(out.contains("Skipped while collecting (4)"), "{out}");
    assert!(
        out.contains(
            "labels   community 6 · incident 7 · release 7 · research 5 · security 7 (32 items)"
        ),
        "{out}"
    );
    let outbox = files(&dir.path().join("outbox"));
    assert_eq!(outbox.len(), 1);
    let mail = std::fs::read(&outbox[0]).unwrap();
    let reports: Vec<_> = std::fs::read_dir(dir.path().join("reports")).unwrap().collect();
    assert_eq!(reports.len(), 2, "the Markdown and the HTML digest");

    let second = steadfast(dir.path(), &["demo"]);
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert!(
        out.contains("was already run as") && out.contains("nothing new to do, no mail sent"),
        "{out}"
    );
    let outbox = files(&dir.path().join("outbox"));
    assert_eq!(outbox.len(), 1);
    assert_eq!(std::fs::read(&outbox[0]).unwrap(), mail, "the mail was not written again");

    // A new edition is new work.
    let third = steadfast(dir.path(), &["demo", "--edition", "second"]);
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(files(&dir.path().join("outbox")).len(), 2);
}

#[test]
fn rules_come_from_a_toml_file_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"lunch\"\nlabel = \"community\"\nkeywords = [\"menu\", \"plants\"]\n",
    )
    .unwrap();
    // Only two items match the one rule: below the digest's fan-in of a half, so the
    // digest fails (exit 1) and says why; the other items wait in review.
    let output = steadfast(dir.path(), &["demo", "--rules", rules.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("labels by the rules in"), "{out}");
    assert!(out.contains("2 of 35 items succeeded; 50% must succeed"), "{out}");
    assert!(out.contains("Held for review (32)"), "{out}");

    std::fs::write(&rules, "[[rule]]\nname = \"x\"\nlabel = \"weather\"\nkeywords = [\"a\"]\n")
        .unwrap();
    let output =
        steadfast(&dir.path().join("other"), &["demo", "--rules", rules.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("unknown variant `weather`"), "{}", text(&output));
}

#[test]
fn a_locked_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _held = steadfast::SledStore::open(dir.path().join("db")).unwrap();
    let output = steadfast(dir.path(), &["demo"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let out = text(&output);
    assert!(out.contains("is locked by") && out.contains("stop it first"), "{out}");
    assert!(!dir.path().join("sample-items").exists(), "nothing written on refusal");
}

#[test]
fn llm_without_an_endpoint_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["demo", "--llm", "--data"])
        .arg(dir.path())
        .env_remove("STEADFAST_LLM_BASE_URL")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("set STEADFAST_LLM_BASE_URL"), "{}", text(&output));
}

/// Starts the demo and SIGKILLs it after `after`; returns whether it had already finished.
fn kill_demo_after(dir: &Path, extra: &[&str], envs: &[(&str, String)], after: Duration) -> bool {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(extra)
        .arg("--data")
        .arg(dir)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

fn finish(dir: &Path, extra: &[&str], envs: &[(&str, String)]) -> String {
    let output = Command::new(BIN)
        .arg("demo")
        .args(extra)
        .arg("--data")
        .arg(dir)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let out = text(&output);
    assert!(output.status.success(), "the restarted demo failed:\n{out}");
    assert!(out.contains(": succeeded") || out.contains("already run"), "{out}");
    out
}

/// Kill times spread over the demo's run (its first run takes ~100-300 ms in a debug build).
fn kill_times() -> impl Iterator<Item = Duration> {
    [15u64, 40, 60, 80, 100, 130, 160, 200, 250, 320].into_iter().map(Duration::from_millis)
}

#[test]
fn killed_mid_run_ten_times_it_completes_with_one_digest_in_the_outbox() {
    let mut finished_before_kill = 0;
    for (i, after) in kill_times().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        if kill_demo_after(dir.path(), &[], &[], after) {
            finished_before_kill += 1;
        }
        finish(dir.path(), &[], &[]);
        let outbox = files(&dir.path().join("outbox"));
        assert_eq!(outbox.len(), 1, "trial {i} (killed after {after:?}): {outbox:?}");
        let again = finish(dir.path(), &[], &[]);
        assert!(again.contains("already run"), "{again}");
        assert_eq!(files(&dir.path().join("outbox")).len(), 1);
    }
    eprintln!("{finished_before_kill} of 10 runs had finished before their kill");
    assert!(finished_before_kill < 10, "no kill landed mid-run");
}

#[test]
fn killed_mid_run_over_smtp_every_copy_carries_the_same_message_id() {
    let peer_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = peers::Smtp::start(peer_dir.path()) else { return };
    let envs = [
        ("STEADFAST_SMTP_HOST", "127.0.0.1".to_owned()),
        ("STEADFAST_SMTP_PORT", smtp.port.to_string()),
        ("STEADFAST_SMTP_SECURITY", "none".to_owned()),
    ];
    let mut delivered = 0;
    let mut extra_copies = 0;
    for (i, after) in kill_times().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let edition = format!("smtp-{i}");
        let args = ["--smtp", "--edition", edition.as_str()];
        kill_demo_after(dir.path(), &args, &envs, after);
        finish(dir.path(), &args, &envs);
        let subject = format!("Digest {edition} ");
        let copies: Vec<String> = smtp
            .messages()
            .into_iter()
            .filter(|m| peers::header(m, "Subject").is_some_and(|s| s.contains(&subject)))
            .collect();
        assert!(!copies.is_empty(), "trial {i}: no mail arrived");
        let ids: Vec<String> =
            copies.iter().map(|m| peers::header(m, "Message-ID").unwrap()).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "trial {i}: copies with different Message-IDs: {ids:?}"
        );
        delivered += 1;
        extra_copies += copies.len() - 1;
    }
    eprintln!(
        "SMTP crash test: {delivered} digests delivered; {extra_copies} extra copies (a kill between sending and journaling), each with the same Message-ID"
    );
}
