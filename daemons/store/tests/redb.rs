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

/// The file holds the root's signing key and password hashes: owner only, in new directories
/// that are owner only too; a file that others may read is fixed when it is opened.
#[tokio::test]
async fn redb_files_and_new_directories_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("new/oakestra.redb");
    drop(RedbStore::open_async(&path).await.unwrap());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(
        mode(dir.path()),
        0o755,
        "an existing directory is left alone"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_async(&path).await.unwrap());
    assert_eq!(
        mode(&path),
        0o600,
        "a world-readable store file is fixed at open"
    );
    drop(store);
}
