//! The cluster with `--store mongodb://…` (a throwaway nx-27017, the store crate's harness):
//! registered workers, their MQTT logins and the instances placed on them survive a `kill -9`.

mod support;

#[path = "../../store/tests/support/mod.rs"]
mod nx;

use std::collections::BTreeMap;
use std::time::Duration;

use oakestra_core::status::Status;
use serde_json::Value;
use support::{Broker, ClusterProcess, FakeWorker, RootProcess, eventually, free_port};

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

/// The worker instance 0 of `service` is RUNNING on, as the root shows it.
async fn running_on(admin: &oakestra_client::Client, service: &str) -> Option<String> {
    let record = admin.service(service).await.ok()?;
    let instance = record.instance(0)?;
    (instance.status? == Status::RUNNING)
        .then(|| instance.worker_id.as_ref().map(ToString::to_string))
        .flatten()
}

/// Every copy running on the workers: (job, instance) → the workers running it.
fn copies(workers: &[&FakeWorker]) -> BTreeMap<(String, u32), Vec<String>> {
    let mut all: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    for w in workers {
        for k in w.running() {
            all.entry(k).or_default().push(w.id.clone());
        }
    }
    all
}

fn deploys(workers: &[&FakeWorker]) -> usize {
    workers
        .iter()
        .map(|w| w.deploys.lock().unwrap().len())
        .sum()
}

/// The cluster's instances by (job, instance number).
fn instances_by_key(status: &Value) -> BTreeMap<(String, u64), Value> {
    status["instances"]
        .as_array()
        .expect("instances in /api/cluster/status")
        .iter()
        .map(|i| {
            (
                (
                    i["job_id"].as_str().unwrap().to_owned(),
                    i["instance_number"].as_u64().unwrap(),
                ),
                i.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_keeps_workers_and_instances_across_kill_9() {
    let server = nx::NxServer::start().await;
    let root_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let store = server.url("cluster");
    let mut cluster = ClusterProcess::start(
        "mongo",
        dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &["--store", &store],
    )
    .await;
    let token = cluster.worker_token();
    let w1 = FakeWorker::start(&cluster.http, &token, "edge-1", 2048).await;
    let w2 = FakeWorker::start(&cluster.http, &token, "edge-2", 2048).await;
    let workers = [&w1, &w2];
    eventually("both workers active", || async {
        let s = cluster.status().await;
        let active = s["workers"].as_array()?.iter();
        (active.filter(|w| w["active"] == true).count() == 2).then_some(())
    })
    .await;

    // Both clientsrvr services RUNNING, placed by this cluster.
    let admin = root.admin().await;
    eventually("the cluster active at the root with 2 workers", || async {
        let clusters = admin.clusters().await.ok()?;
        clusters
            .iter()
            .any(|c| c.cluster_name == "mongo" && c.active && c.active_nodes == 2)
            .then_some(())
    })
    .await;
    let apps = admin
        .create_applications(&serde_json::from_str::<Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let ids: Vec<String> = services.iter().map(|s| s.id.to_string()).collect();
    for id in &ids {
        admin.deploy_instance(id).await.unwrap();
    }
    let mut placed = BTreeMap::new();
    for id in &ids {
        let worker = eventually(&format!("{id} RUNNING at the root"), || {
            running_on(&admin, id)
        })
        .await;
        placed.insert(id.clone(), worker);
    }
    let before = cluster.status().await;
    let instances_before = instances_by_key(&before);
    assert_eq!(instances_before.len(), 2, "{before}");
    assert!(
        instances_before.values().all(|i| i["status"] == "RUNNING"),
        "{before}"
    );
    let deploys_before = deploys(&workers);

    cluster.restart().await;

    // The workers: same ids, reconnect on their own with the password they got before the
    // restart (the cluster knows it from MongoDB), and their reports keep them active past
    // the 3 s timeout.
    let s = cluster.status().await;
    let mut ids_after: Vec<&str> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    ids_after.sort_unstable();
    let mut ids_before = vec![w1.id.as_str(), w2.id.as_str()];
    ids_before.sort_unstable();
    assert_eq!(ids_after, ids_before, "{s}");
    // The instances: every one still there, RUNNING on the same worker, straight from the
    // store (before any worker has reported again).
    let instances_after = instances_by_key(&s);
    assert_eq!(instances_after.len(), instances_before.len(), "{s}");
    for (key, was) in &instances_before {
        let now = instances_after
            .get(key)
            .unwrap_or_else(|| panic!("instance {key:?} lost by kill -9: {s}"));
        assert_eq!(now["worker_id"], was["worker_id"], "{key:?}: {s}");
        assert_eq!(now["status"], "RUNNING", "{key:?}: {s}");
        assert_eq!(now["job_name"], was["job_name"], "{key:?}: {s}");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = cluster.status().await;
    assert_eq!(s["workers"].as_array().unwrap().len(), 2, "{s}");
    assert!(
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["active"] == true),
        "{s}"
    );
    // Nothing deployed again, no duplicate copies, and the root sees the same placement.
    assert_eq!(
        deploys(&workers),
        deploys_before,
        "deploys after the restart"
    );
    let running = copies(&workers);
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.values().all(|ws| ws.len() == 1), "{running:?}");
    for (id, worker) in &placed {
        assert_eq!(
            running_on(&admin, id).await.as_ref(),
            Some(worker),
            "{id} at the root after the cluster's restart"
        );
    }
}
