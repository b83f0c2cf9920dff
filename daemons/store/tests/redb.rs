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

/// Group commit under contention: many concurrent batches, durable and relaxed, each with its
/// own result; racing inserts of one id have exactly one winner; every acknowledged batch is
/// there after the file is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_keep_their_own_results_and_survive_reopen() {
    use oakestra_store::{Collection, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oakestra.redb");
    let store = Arc::new(RedbStore::open_async(&path).await.unwrap());
    let c = Collection::ALL[0];
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let own = vec![Write::insert(
                c,
                format!("own{i}"),
                serde_json::json!({"i": i}),
            )];
            let own = if i % 2 == 0 {
                store.commit(own).await
            } else {
                store.commit_relaxed(own).await
            };
            let race = store
                .commit(vec![Write::insert(
                    c,
                    "contended",
                    serde_json::json!({"i": i}),
                )])
                .await;
            (own, race)
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let (own, race) = t.await.unwrap();
        own.unwrap();
        match race {
            Ok(()) => winners += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(winners, 1);
    drop(store);
    let store = RedbStore::open_async(&path).await.unwrap();
    for i in 0..64 {
        let doc = store.get(c, &format!("own{i}")).await.unwrap();
        assert_eq!(doc.unwrap().body, serde_json::json!({"i": i}));
    }
    assert!(store.get(c, "contended").await.unwrap().is_some());
}
