//! `SledStore` against the store conformance suite, in every durability mode.

use std::time::Duration;

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
    use steadfast::store::{FORMAT_VERSION, SledStore, StoreError};

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        {
            let db = sled::open(dir.path()).unwrap();
            let newer = FORMAT_VERSION + 1;
            db.open_tree("meta").unwrap().insert("format", &newer.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerFormat { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
            "{err}"
        );
        assert!(err.to_string().ends_with("upgrade steadfast"), "{err}");
    }

    #[test]
    fn a_foreign_sled_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
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
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("runs").unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).expect("an empty database is taken as new");
        drop(store);
        SledStore::open(dir.path()).expect("and has its marker now");
    }
}
