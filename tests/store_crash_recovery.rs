//! A real crash: a child process makes thousands of durable moves and effect writes on a sled
//! database and is killed with SIGKILL at a random moment, 30 times over. After each kill the
//! database is reopened and checked in the terms of Jepsen's queue checker:
//!
//! - lost: an operation the child reported done (it prints `done ...` only after the call
//!   returned) that is not in the database — must be 0;
//! - duplicated: two runs for one idempotency key — must be 0;
//! - unexpected: a run the child never tried to create — must be 0;
//! - recovered: an operation that was under way at the kill and is in the database anyway.
//!
//! Claims are the one write that returns before it is synced (a lost claim only means the run
//! is claimed again); one counts as lost only if a later durable write of the same run was
//! acknowledged, since that write's sync covers it.
//!
//! Beyond that, every run's history must explain its state, and the indexes (state counts,
//! the by-state listing) must agree with the records.
//!
//! The child is this same test binary, re-run with `STEADFAST_CRASH_CHILD` set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use serde_json::json;
use steadfast::clock::{ManualClock, Timestamp};
use steadfast::store::{
    Actor, Claim, ListQuery, NewRun, RunRecord, SledStore, SledStoreOptions, Store, Transition,
};
use steadfast::{RunState, StateMachine};

const CHILD_ENV: &str = "STEADFAST_CRASH_CHILD";
const AGENT: &str = "crash";
const KILLS: usize = 30;

/// The child's side: create runs, claim them, journal an effect, succeed; forever.
#[ignore = "a worker process that another test starts"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    println!("@@ started");
    let store = SledStore::open(&path).expect("child opens the database");
    // stdout is a pipe and println! flushes per line; the marker separates our lines from the
    // test harness's text, which may share the first one.
    let say = |line: String| println!("@@ {line}");
    say("opened".into());
    let mut next = 0u64;
    while store.find_by_key(AGENT, &format!("k{next}")).await.unwrap().is_some() {
        next += 1;
    }
    loop {
        let key = format!("k{next}");
        say(format!("attempt {key}"));
        let created = store.create(NewRun::new(AGENT, &key, json!({ "n": next }))).await.unwrap();
        say(format!("done create {key} {}", created.run.id));
        next += 1;

        for run in store.recover_expired(16).await.unwrap() {
            say(format!("done recover {}", run.id));
        }
        for run in store.due_timers(16).await.unwrap() {
            store
                .transition(
                    Transition::new(run.id, RunState::FailedTransient, RunState::Queued)
                        .by(Actor::Timer),
                )
                .await
                .unwrap()
                .unwrap();
        }
        for run in store.claim(Claim::new("child", 2, Duration::from_millis(200))).await.unwrap() {
            let token = run.lease.as_ref().unwrap().token;
            // What the runtime does before an agent acts on a claim.
            store.wait_durable(run.id).await.unwrap();
            say(format!("done claim {}", run.id));
            store.record_effect(run.id, "send", json!({ "attempt": run.attempt })).await.unwrap();
            say(format!("done effect {}", run.id));
            let moved = store
                .transition(
                    Transition::new(run.id, RunState::Processing, RunState::Succeeded)
                        .fenced(token)
                        .output(run.input.clone()),
                )
                .await
                .unwrap();
            if moved.is_ok() {
                say(format!("done succeed {}", run.id));
            }
        }
    }
}

#[derive(Default)]
struct Report {
    acknowledged: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
    unexpected: Vec<String>,
    recovered: usize,
    /// Children that started, and that said they had opened the database before the kill.
    children: usize,
    opened: usize,
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut attempted: HashSet<String> = HashSet::new();
    let mut total = Report::default();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for cycle in 0..KILLS {
        let lines = run_child_and_kill(&db, Duration::from_millis(rng.u64(30..250)), "@@ done ");
        let report = verify(&db, &lines, &mut attempted);
        assert!(
            report.lost.is_empty() && report.duplicated.is_empty() && report.unexpected.is_empty(),
            "cycle {cycle}: lost {:?}, duplicated {:?}, unexpected {:?}",
            report.lost,
            report.duplicated,
            report.unexpected
        );
        total.acknowledged += report.acknowledged;
        total.recovered += report.recovered;
    }
    assert!(total.acknowledged > 1000, "the child did too little work: {}", total.acknowledged);
    eprintln!(
        "{KILLS} kills: {} acknowledged operations, lost 0, duplicated 0, unexpected 0, recovered {}",
        total.acknowledged, total.recovered
    );
    drain_and_check(&db);
}

/// A commit torn on purpose: the child aborts (`STEADFAST_CRASH_AT=commit-half:N`, a test
/// build's crash point) after the N-th commit's journal entry and half of its writes reached
/// sled's log, the other half not: the state a crash between two of a commit's inserts
/// leaves, a window of microseconds that random kills rarely hit. Then a second process dies
/// in the middle of replaying that commit (`replay:1`: the replay applied and durable, the
/// journal not yet emptied). The next open must find every acknowledged operation, the torn
/// commit whole (its indexes and counts agreeing with its records), and nothing unexpected.
#[test]
fn a_commit_torn_in_half_is_completed_on_open_even_if_the_replay_is_cut_off() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let mut replays = 0;
    for tear_at in [2, 5, 17, 40] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let at = format!("commit-half:{tear_at}");
        let (lines, aborted) = run_child_until_it_exits(&db, &[("STEADFAST_CRASH_AT", &at)]);
        assert!(aborted, "commit {tear_at}: the child did not crash at its torn commit");
        // Opening replays the torn commit: a process that dies in the middle of that replay
        // must not have opened (proof that there was something to replay).
        let (replay_lines, aborted) =
            run_child_until_it_exits(&db, &[("STEADFAST_CRASH_AT", "replay:1")]);
        let opened = replay_lines.iter().any(|l| l.contains("@@ opened"));
        assert!(aborted && !opened, "commit {tear_at}: the reopening replayed nothing");
        replays += 1;
        let mut attempted = HashSet::new();
        let report = verify(&db, &lines, &mut attempted);
        assert!(
            report.lost.is_empty() && report.duplicated.is_empty() && report.unexpected.is_empty(),
            "commit {tear_at}: lost {:?}, duplicated {:?}, unexpected {:?}",
            report.lost,
            report.duplicated,
            report.unexpected
        );
        assert!(report.acknowledged > 0);
        drain_and_check(&db);
    }
    eprintln!("{replays} torn commits completed on open, each after a replay cut off by a crash");
}

/// Runs the child with `vars` until it exits by itself (at most 20 s: the child works
/// forever unless its crash point fires); returns its lines and whether it aborted (SIGABRT,
/// a crash point) rather than being stopped.
fn run_child_until_it_exits(db: &Path, vars: &[(&str, &str)]) -> (Vec<String>, bool) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (reader.join().unwrap(), status.signal() == Some(6))
}

/// Runs the child and SIGKILLs it `after` the first line it prints that contains `from` (so
/// that the kill lands where it is aimed however slow the process starts under load; a child
/// that dies first ends the wait too).
fn run_child_and_kill(db: &Path, after: Duration, from: &'static str) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (working, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(from) {
                let _ = working.send(());
            }
            lines.push(line);
        }
        lines
    });
    let start = Instant::now();
    let _ = started.recv_timeout(Duration::from_secs(30));
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the child"); // Child::kill sends SIGKILL on Unix
    child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(60));
    reader.join().unwrap()
}

fn verify(db: &Path, lines: &[String], attempted: &mut HashSet<String>) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = SledStore::open(db).expect("the database reopens after SIGKILL");
        let mut report = Report::default();
        let mut in_flight: Option<String> = None;
        let mut claims: Vec<String> = Vec::new();
        for line in lines {
            let Some(at) = line.find("@@ ") else { continue };
            let line = &line[at + 3..];
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["attempt", key] => {
                    attempted.insert((*key).to_owned());
                    in_flight = Some((*key).to_owned());
                }
                ["done", "create", key, id] => {
                    report.acknowledged += 1;
                    in_flight = None;
                    match store.find_by_key(AGENT, key).await.unwrap() {
                        Some(run) if run.id.to_string() == *id => {}
                        other => report.lost.push(format!("create {key} {id}: found {other:?}")),
                    }
                }
                ["done", "claim", id] => {
                    // A claim returns before it is synced, but not `wait_durable` after it.
                    claims.push((*id).to_owned());
                }
                ["opened"] => report.opened += 1,
                ["started"] => report.children += 1,
                ["done", what, id] => {
                    report.acknowledged += 1;
                    let run = store.get(id.parse().unwrap()).await.unwrap();
                    let history = store.history(id.parse().unwrap()).await.unwrap();
                    let present = match *what {
                        "effect" => {
                            store.effect(id.parse().unwrap(), "send").await.unwrap().is_some()
                        }
                        "succeed" => run.as_ref().is_some_and(|r| r.state == RunState::Succeeded),
                        "recover" => history.iter().any(|h| h.actor == Actor::Timer),
                        _ => panic!("unknown line {line}"),
                    };
                    if !present {
                        report.lost.push(line.to_owned());
                    }
                }
                _ => panic!("unexpected line from the child: {line}"),
            }
        }
        for id in claims {
            let history = store.history(id.parse().unwrap()).await.unwrap();
            report.acknowledged += 1;
            if !history.iter().any(|h| h.to == RunState::Processing) {
                report.lost.push(format!("claim {id}, made durable by `wait_durable`"));
            }
        }
        if let Some(key) = in_flight
            && store.find_by_key(AGENT, &key).await.unwrap().is_some()
        {
            report.recovered += 1;
        }
        let runs = common::all_runs(&store).await;
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for run in &runs {
            *by_key.entry(&run.idempotency_key).or_default() += 1;
            if !attempted.contains(&run.idempotency_key) {
                report.unexpected.push(run.idempotency_key.clone());
            }
            check_history_explains(&store, run).await;
        }
        report.duplicated =
            by_key.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k.to_owned()).collect();
        check_indexes(&store, &runs).await;
        report
    })
}

/// The history is a chain of legal moves from creation to the current state.
async fn check_history_explains(store: &SledStore, run: &RunRecord) {
    let history = store.history(run.id).await.unwrap();
    assert_eq!(history.len(), run.moves as usize, "run {}: history length", run.id);
    assert_eq!(history[0].from, None);
    assert_eq!(history[0].to, RunState::INITIAL);
    for pair in history.windows(2) {
        assert_eq!(pair[1].from, Some(pair[0].to), "run {}: broken chain", run.id);
        assert!(pair[0].to.can_transition(pair[1].to), "run {}: illegal move in history", run.id);
    }
    assert_eq!(history.last().unwrap().to, run.state, "run {}: history ends elsewhere", run.id);
    if run.state == RunState::Succeeded {
        assert!(
            store.effect(run.id, "send").await.unwrap().is_some(),
            "run {}: succeeded without its effect",
            run.id
        );
    }
    assert_eq!(run.state == RunState::Processing, run.lease.is_some(), "run {}: lease", run.id);
}

/// The state index and counts agree with the records.
async fn check_indexes(store: &SledStore, runs: &[RunRecord]) {
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.total(), runs.len() as u64);
    for &state in RunState::STATES {
        let listed = store.list(ListQuery::new().state(state).limit(100_000)).await.unwrap().runs;
        let expected = runs.iter().filter(|r| r.state == state).count();
        assert_eq!(listed.len(), expected, "by_state index for `{state}`");
        assert_eq!(counts.get(state), expected as u64);
        assert!(listed.iter().all(|r| r.state == state));
    }
}

/// After the last kill, a worker far in the future recovers every lease and finishes every
/// run: nothing is stuck.
fn drain_and_check(db: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let clock = Arc::new(ManualClock::new(Timestamp::now().after(Duration::from_secs(3600))));
        let store = SledStore::open_with(db, SledStoreOptions::default().clock(clock)).unwrap();
        store.recover_expired(usize::MAX).await.unwrap();
        for run in store.due_timers(usize::MAX).await.unwrap() {
            store
                .transition(Transition::new(run.id, RunState::FailedTransient, RunState::Queued))
                .await
                .unwrap()
                .unwrap();
        }
        loop {
            let claimed =
                store.claim(Claim::new("drain", 256, Duration::from_secs(60))).await.unwrap();
            if claimed.is_empty() {
                break;
            }
            for run in claimed {
                store.record_effect(run.id, "send", json!("drain")).await.unwrap();
                let token = run.lease.unwrap().token;
                store
                    .transition(
                        Transition::new(run.id, RunState::Processing, RunState::Succeeded)
                            .fenced(token),
                    )
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        let counts = store.counts().await.unwrap();
        assert_eq!(
            counts.get(RunState::Succeeded),
            counts.total(),
            "every run finished: {counts:?}"
        );
    });
}

/// Kills aimed at the first milliseconds of a process: while sled opens the database (and
/// writes its snapshot, which it does on every open that follows writes) and makes its first
/// writes; every tenth cycle on a new directory, so that some kills land in the very first
/// open (sled's `conf`). The database must open every time with nothing acknowledged missing.
#[test]
fn sigkill_while_opening_never_leaves_a_database_that_will_not_open() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: usize =
        std::env::var("STEADFAST_OPEN_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(0x0be7);
    let (mut in_open, mut after_open, mut acknowledged, mut set_aside) = (0, 0, 0, 0);
    let mut attempted: HashSet<String> = HashSet::new();
    let mut db = dir.path().join("db-0");
    let mut lines = Vec::new();
    let mut open_ms = 20;
    for cycle in 0..cycles {
        // A multiple of the checking period below: no unchecked lines of the old directory.
        if cycle % 48 == 0 {
            db = dir.path().join(format!("db-{cycle}"));
            attempted.clear();
        }
        // Most kills are aimed inside the child's open (between its `started` and `opened`
        // lines: within as long as the checker's own last open took, on the same machine under
        // the same load); one in five falls after it and lets the database grow, so that the
        // next open has a log to recover and a snapshot to write.
        let (after, from) = if cycle % 5 == 4 {
            (rng.u64(50..300), "@@ opened")
        } else {
            (rng.u64(0..=open_ms.max(1)), "@@ started")
        };
        lines.extend(run_child_and_kill(&db, Duration::from_millis(after), from));
        // Checked every few kills only: the checker's own open writes the snapshot that the
        // next child would otherwise be killed writing.
        if cycle % 3 != 2 && cycle + 1 != cycles {
            continue;
        }
        let opening = Instant::now();
        let report = verify(&db, &std::mem::take(&mut lines), &mut attempted);
        // An upper bound of an open (verify also reads every run), for aiming the next kills.
        open_ms = opening.elapsed().as_millis() as u64;
        assert!(
            report.lost.is_empty() && report.duplicated.is_empty() && report.unexpected.is_empty(),
            "cycle {cycle}: lost {} (first {:?}), duplicated {:?}, unexpected {:?}",
            report.lost.len(),
            report.lost.iter().take(5).collect::<Vec<_>>(),
            report.duplicated,
            report.unexpected
        );
        in_open += report.children - report.opened;
        after_open += report.opened;
        acknowledged += report.acknowledged;
        set_aside += std::fs::read_dir(db.join("set-aside")).map_or(0, |d| d.count());
    }
    eprintln!(
        "{cycles} kills: {in_open} before the child had opened the database, {after_open} after; \
         {acknowledged} acknowledged operations, lost 0, duplicated 0, unexpected 0; \
         files set aside on open: {set_aside}"
    );
    assert!(in_open >= cycles / 10, "too few kills landed while opening: {in_open}");
    assert!(after_open >= cycles / 10, "too few kills landed after opening: {after_open}");
}

/// The two files sled writes outside its log, left as a kill mid-write leaves them: the
/// database opens, loses nothing, and keeps what it set aside.
#[tokio::test]
async fn a_half_written_snapshot_or_config_does_not_stop_the_database_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let id = {
        let store = SledStore::open(&db).unwrap();
        store.create(NewRun::new(AGENT, "k", json!(1))).await.unwrap().run.id
    };
    // Reopened once, so sled wrote a snapshot; then one cut off, newer than any real one.
    drop(SledStore::open(&db).unwrap());
    let mut snapshots: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap."))
        .collect();
    snapshots.sort();
    let newest = snapshots.last().expect("sled wrote a snapshot").clone();
    let whole = std::fs::read(db.join(&newest)).unwrap();
    std::fs::write(db.join("snap.FFFFFFFFFFFFFFF0.generating"), &whole[..whole.len() / 2]).unwrap();
    {
        let store = SledStore::open(&db).expect("opens with a half-written snapshot");
        assert!(store.get(id).await.unwrap().is_some());
    }
    // A `conf` cut short, as a kill during the first open leaves it.
    let conf = std::fs::read(db.join("conf")).unwrap();
    std::fs::write(db.join("conf"), &conf[..conf.len() - 9]).unwrap();
    {
        let store = SledStore::open(&db).expect("opens with a cut `conf`");
        assert!(store.get(id).await.unwrap().is_some());
        store.create(NewRun::new(AGENT, "k2", json!(2))).await.unwrap();
    }
    // Every snapshot damaged: recovered from the log alone.
    for entry in std::fs::read_dir(&db).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("snap.") {
            std::fs::write(&path, b"not a snapshot at all").unwrap();
        }
    }
    let store = SledStore::open(&db).expect("opens from its log alone");
    assert!(store.get(id).await.unwrap().is_some());
    assert!(store.find_by_key(AGENT, "k2").await.unwrap().is_some());
    let set_aside = std::fs::read_dir(db.join("set-aside")).unwrap().count();
    assert!(set_aside >= 3, "{set_aside} files set aside");
}
