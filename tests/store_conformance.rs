//! `SledStore` against the store conformance suite, in every durability mode.

use std::time::Duration;

use steadfast::store::{Durability, SledStore, SledStoreOptions, conformance};

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
async fn sled_store_conforms_with_periodic_flush() {
    conforms(Durability::Periodic(Duration::from_millis(50))).await;
}
