//! The conformance suite against the redb backend, plus redb-specific behaviour.

use oakestra_store::{RedbStore, Store, StoreError, conformance};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_async(dir.path().join("oakestra.redb"))
        .await
        .unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn redb_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/oakestra.redb");
    let user = conformance::sample_user("persisted");
    {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open_async(&path).await.unwrap());
        store.create_user(&user).await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_async(&path).await.unwrap());
    assert_eq!(store.user_by_name("persisted").await.unwrap(), Some(user));
}

#[tokio::test]
async fn redb_open_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oakestra.redb");
    let _first = RedbStore::open_async(&path).await.unwrap();
    let second = RedbStore::open_async(&path).await.unwrap_err();
    let msg = second.to_string();
    assert!(matches!(second, StoreError::Open { .. }), "{msg}");
    assert!(
        msg.contains("oakestra.redb") && msg.contains("another process"),
        "{msg}"
    );

    let junk = dir.path().join("junk.redb");
    std::fs::write(
        &junk,
        b"this is not a database, just some text padding it out",
    )
    .unwrap();
    let msg = RedbStore::open_async(&junk).await.unwrap_err().to_string();
    assert!(msg.contains("junk.redb"), "{msg}");
}
