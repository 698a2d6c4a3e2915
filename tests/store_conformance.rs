//! `SledStore` against the store conformance suite, in every durability mode.

use std::time::Duration;

#[path = "common/mod.rs"]
mod common;
#[path = "storage/full_disk.rs"]
mod full_disk;
#[path = "storage/lost_claim.rs"]
mod lost_claim;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/postgres.rs"]
mod postgres;

use steadfast::store::{Durability, MemoryStore, SledStore, SledStoreOptions, conformance};

async fn conforms(durability: Durability) {
    let root = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run(|clock| {
        n += 1;
        let path = root.path().join(format!("db{n}"));
        async move {
            SledStore::open_with(
                path,
                SledStoreOptions::default().clock(clock).durability(durability),
            )
            .unwrap()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_with_fsync() {
    conforms(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_with_flush() {
    conforms(Durability::Flush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(|clock| async move { MemoryStore::with_clock(clock) }).await;
}

/// `PostgresStore` on the local server, each case in a fresh schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    use steadfast::store::PostgresStore;
    let Some((url, options)) = postgres::fresh().await else { return };
    conformance::run(|clock| {
        let url = url.clone();
        let options = options.clone().schema(postgres::fresh_schema()).clock(clock);
        async move { PostgresStore::connect_with(&url, options).await.unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_with_periodic_flush() {
    conforms(Durability::Periodic(Duration::from_millis(50))).await;
}

mod opening {
    use steadfast::store::{SledStore, StoreError};

    #[test]
    fn a_file_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "hello").unwrap();
        let err = SledStore::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
        assert!(err.to_string().contains("is a file"), "{err}");
    }

    #[test]
    fn a_directory_of_other_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.tex"), "precious").unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["thesis.tex"], "nothing was created next to the user's files");
    }

    #[test]
    fn a_locked_database_names_its_holder_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        match &err {
            StoreError::Locked { holder: Some(holder), .. } => {
                assert!(holder.starts_with(&format!("pid {} (", std::process::id())), "{holder}");
            }
            other => panic!("expected Locked with a holder, got {other:?}"),
        }
        assert!(err.to_string().contains("is locked by pid"), "{err}");
    }

    #[test]
    fn a_reopened_database_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            use steadfast::store::{NewRun, Store};
            let id = {
                let store = SledStore::open(dir.path()).unwrap();
                store.create(NewRun::new("a", "k", serde_json::json!(1))).await.unwrap().run.id
            };
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.get(id).await.unwrap().unwrap().input, serde_json::json!(1));
        });
    }
}

mod formats {
    use steadfast::store::{
        ListQuery, Retention, SLED_FORMAT, SledStore, Store, StoreError, Transition,
    };
    use steadfast::{RunState, StateMachine};

    /// Opens a directory with sled directly. A store this process has just dropped may hold
    /// sled's file lock a moment longer (its I/O threads finish first), so a lock is waited
    /// out, for at most 5 s.
    fn raw_sled(path: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("sled::open({}): {e}", path.display()),
            }
        }
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        {
            let db = raw_sled(dir.path());
            let newer = SLED_FORMAT + 1;
            db.open_tree("meta").unwrap().insert("format", &newer.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerFormat { found, supported, .. } if found == SLED_FORMAT + 1 && supported == SLED_FORMAT),
            "{err}"
        );
        assert!(err.to_string().ends_with("upgrade steadfast"), "{err}");
    }

    /// The demo's database of layout 1 (`tests/fixtures/layout1-demo.tar.gz`), unpacked in a
    /// fresh directory: the directory (kept alive by the caller) and the store's path.
    fn layout1_demo() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layout1-demo.tar.gz");
        let status = std::process::Command::new("tar")
            .args(["xzf", fixture, "-C"])
            .arg(dir.path())
            .status()
            .expect("run tar");
        assert!(status.success());
        let path = dir.path().join("db");
        (dir, path)
    }

    /// A database made by `steadfast demo` before the journal (layout 1, commit b085726;
    /// `tests/fixtures/layout1-demo.tar.gz`) opens, is migrated (its counts computed), and
    /// goes on counting with every move.
    #[tokio::test]
    async fn a_database_of_the_previous_layout_is_migrated_on_open() {
        let (_dir, path) = layout1_demo();
        let store = SledStore::open(&path).unwrap();
        // The counts agree with the runs, state by state.
        let counts = store.counts().await.unwrap();
        let mut total = 0;
        for &state in RunState::STATES {
            let listed = store.list(ListQuery::new().state(state).limit(10_000)).await.unwrap();
            assert_eq!(counts.get(state), listed.runs.len() as u64, "{state}");
            total += listed.runs.len();
        }
        assert_eq!(total, 39, "the digest run, its collector, 35 items, reporter and mailer");
        // The per-agent counters, computed by the migration, add up to the same.
        let by_agent = store.counts_by_agent().await.unwrap();
        assert_eq!(by_agent.values().map(|c| c.total()).sum::<u64>(), 39);
        assert_eq!(by_agent["digest.1.classifier"].total(), 35, "{by_agent:?}");
        assert_eq!(counts.get(RunState::NeedsReview), 2);
        // A move is counted.
        let held = store.list(ListQuery::new().state(RunState::NeedsReview)).await.unwrap().runs;
        store
            .transition(Transition::new(
                held[0].id,
                RunState::NeedsReview,
                RunState::FailedPermanent,
            ))
            .await
            .unwrap()
            .unwrap();
        let after = store.counts().await.unwrap();
        assert_eq!(after.get(RunState::NeedsReview), 1);
        assert_eq!(after.get(RunState::FailedPermanent), counts.get(RunState::FailedPermanent) + 1);
        drop(store);
        // The marker says layout 2 now, and the store reopens as such.
        {
            let db = raw_sled(&path);
            let format = db.open_tree("meta").unwrap().get("format").unwrap().unwrap();
            assert_eq!(u32::from_be_bytes(format.as_ref().try_into().unwrap()), SLED_FORMAT);
        }
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.counts().await.unwrap(), after);
    }

    /// Pruning every run of the demo's database (a pipeline with its stages, effects, notes,
    /// runs in review and dead letters) leaves no key behind in any tree but `meta`.
    #[tokio::test]
    async fn pruning_every_run_leaves_no_key_behind() {
        let (_dir, path) = layout1_demo();
        let store = SledStore::open(&path).unwrap();
        let total = store.counts().await.unwrap().total();
        let everything =
            Retention::older_than(std::time::Duration::ZERO).dead_letters(true).in_review(true);
        let pruned = store.prune(everything).await.unwrap();
        assert_eq!((pruned.runs, pruned.kept), (total, 0));
        assert_eq!(store.counts().await.unwrap().total(), 0);
        drop(store);
        let db = raw_sled(&path);
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name == "meta" || name == "__sled__default" {
                continue;
            }
            let left: Vec<_> = db.open_tree(&name).unwrap().iter().keys().take(3).collect();
            assert!(left.is_empty(), "`{name}` still holds {left:?}");
        }
    }

    #[test]
    fn a_foreign_sled_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_sled(dir.path());
            db.insert("someone", "else's data").unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
        assert!(err.to_string().contains("without steadfast's format marker"), "{err}");
    }

    #[test]
    fn a_creation_cut_off_before_the_marker_is_finished_on_open() {
        // What a SIGKILL between sled creating its files and the marker being written leaves
        // (found by the demo's crash test): a sled database with empty trees only.
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_sled(dir.path());
            db.open_tree("runs").unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).expect("an empty database is taken as new");
        drop(store);
        SledStore::open(dir.path()).expect("and has its marker now");
    }
}
