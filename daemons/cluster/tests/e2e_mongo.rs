//! The cluster with `--store mongodb://…` (a throwaway nx-27017, the store crate's harness):
//! registered workers and their MQTT logins survive a `kill -9`.

mod support;

#[path = "../../store/tests/support/mod.rs"]
mod nx;

use std::time::Duration;

use support::{Broker, ClusterProcess, FakeWorker, eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_keeps_workers_across_kill_9() {
    let server = nx::NxServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = server.url("cluster");
    let mut cluster = ClusterProcess::start(
        "mongo",
        dir.path(),
        Broker::Embedded(free_port()),
        None,
        &["--store", &store],
    )
    .await;
    let token = cluster.worker_token();
    let worker = FakeWorker::start(&cluster.http, &token, "edge-1", 2048).await;
    eventually("the worker active", || async {
        let s = cluster.status().await;
        (s["workers"][0]["active"] == true).then_some(())
    })
    .await;

    cluster.restart().await;
    // The worker reconnects on its own with the password it got before the restart: the
    // cluster knows it from MongoDB, and its reports keep it active past the 3 s timeout.
    let s = cluster.status().await;
    assert_eq!(s["workers"][0]["id"], worker.id.as_str(), "{s}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = cluster.status().await;
    assert_eq!(s["workers"][0]["active"], true, "{s}");
    assert_eq!(s["workers"].as_array().unwrap().len(), 1);
}
