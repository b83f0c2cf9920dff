//! The conformance suite against the MongoDB backend, talking to a fresh nx-27017
//! (MongoDB wire protocol) that the test starts on a free loopback port.

#![cfg(feature = "mongodb")]

mod support;

use std::sync::Arc;

use oakestra_store::{Atomicity, Collection, MongoStore, Store, StoreError, Write, conformance};
use serde_json::json;
use support::NxServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let server = NxServer::start().await;
    let store = oakestra_store::open(&server.url("oakestra")).await.unwrap();
    assert_eq!(store.atomicity(), Atomicity::PerDocument);
    assert!(store.describe().starts_with("MongoDB mongodb://127.0.0.1:"));
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_data_survives_reconnect_and_keeps_oakestra_ids() {
    let server = NxServer::start().await;
    let url = server.url("persist");
    let user = conformance::sample_user("persisted");
    let (app, services) = conformance::sample_application("persisted", "app");
    {
        let store: Arc<dyn Store> = Arc::new(MongoStore::open(&url).await.unwrap());
        store.create_user(&user).await.unwrap();
        store.create_application(&app, &services).await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(MongoStore::open(&url).await.unwrap());
    assert_eq!(store.user_by_name("persisted").await.unwrap(), Some(user));
    assert_eq!(store.list_services(app.id).await.unwrap(), services);
    // Documents keep Oakestra's `_id` shape when read back as JSON.
    let raw = store
        .get(Collection::Applications, &app.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.body["_id"], json!({"$oid": app.id.to_string()}));
    assert!(raw.body.get("_rev").is_none());
    // Databases are separate.
    let other: Arc<dyn Store> = Arc::new(MongoStore::open(&server.url("other")).await.unwrap());
    assert!(other.list_users().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_rolls_back_a_failed_batch_of_replacements() {
    let server = NxServer::start().await;
    let store = oakestra_store::open(&server.url("rollback")).await.unwrap();
    let c = Collection::JoinTokens;
    let a = json!({"_id": "a", "hash": "a1"});
    store
        .commit(vec![Write::insert(c, "a", a.clone())])
        .await
        .unwrap();
    store
        .commit(vec![Write::insert(
            c,
            "b",
            json!({"_id": "b", "hash": "b1"}),
        )])
        .await
        .unwrap();
    // Replace a, then fail on a stale b: a is restored.
    let res = store
        .commit(vec![
            Write::replace(c, "a", 1, a.clone(), json!({"_id": "a", "hash": "a2"})),
            Write::replace(c, "b", 9, json!({}), json!({"_id": "b", "hash": "b2"})),
        ])
        .await;
    assert!(matches!(res, Err(StoreError::Stale { .. })), "{res:?}");
    let now = store.get(c, "a").await.unwrap().unwrap();
    assert_eq!(now.body, a);
    // Delete a, then fail: a is back.
    let res = store
        .commit(vec![
            Write::delete(c, "a", now.rev, now.body.clone()),
            Write::insert(c, "b", json!({"_id": "b"})),
        ])
        .await;
    assert!(matches!(res, Err(StoreError::Conflict { .. })), "{res:?}");
    assert_eq!(store.get(c, "a").await.unwrap().unwrap().body, a);
}

#[tokio::test]
async fn mongo_open_error_names_the_server_and_what_to_do() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mongodb://user:pw@127.0.0.1:{port}/x?serverSelectionTimeoutMS=500");
    let err = oakestra_store::open(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("check that MongoDB is running"), "{msg}");
    assert!(!msg.contains("pw"), "credentials leaked: {msg}");
    let msg = oakestra_store::open("mongodb://")
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("connection string"), "{msg}");
}

#[test]
fn nx_27017_is_installed() {
    // Fails with instructions (run scripts/setup) instead of skipping when it is missing.
    NxServer::binary();
}
