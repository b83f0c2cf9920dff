//! Root + cluster + workers as separate processes: the real `oakestra-root` and
//! `oakestra-cluster` binaries, and fake workers speaking the real HTTP + MQTT protocol.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use oakestra_core::model::ServiceRecord;
use oakestra_core::status::{DeploymentStatus, Status};
use support::{
    Behaviour, Broker, ClusterProcess, FakeWorker, RootProcess, eventually, eventually_within,
    free_port,
};

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

async fn service(admin: &oakestra_client::Client, id: &str) -> ServiceRecord {
    admin.service(id).await.unwrap()
}

/// `(status, worker)` of instance 0 as the root shows it.
async fn instance0(admin: &oakestra_client::Client, id: &str) -> Option<(Status, String)> {
    let s = service(admin, id).await;
    let i = s.instance(0)?;
    Some((
        i.status?,
        i.worker_id
            .clone()
            .map(|w| w.to_string())
            .unwrap_or_default(),
    ))
}

async fn running_on(admin: &oakestra_client::Client, id: &str) -> Option<String> {
    match instance0(admin, id).await {
        Some((Status::RUNNING, w)) if !w.is_empty() => Some(w),
        _ => None,
    }
}

/// Every copy running anywhere, by (job, instance) → workers.
fn copies(workers: &[&FakeWorker]) -> BTreeMap<(String, u32), Vec<String>> {
    let mut all: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    for w in workers {
        for k in w.running() {
            all.entry(k).or_default().push(w.id.clone());
        }
    }
    all
}

fn no_duplicates(workers: &[&FakeWorker]) -> bool {
    copies(workers).values().all(|ws| ws.len() == 1)
}

async fn create_app(admin: &oakestra_client::Client, sla: &str) -> (String, Vec<ServiceRecord>) {
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(sla).unwrap())
        .await
        .unwrap();
    let app = apps[0].id.to_string();
    let services = admin.application_services(&app).await.unwrap();
    (app, services)
}

fn id_of(services: &[ServiceRecord], name: &str) -> String {
    services
        .iter()
        .find(|s| s.service_name == name)
        .unwrap()
        .id
        .to_string()
}

async fn cluster_active(admin: &oakestra_client::Client, name: &str, workers: u64) {
    eventually(
        &format!("cluster {name} active at the root with {workers} workers"),
        || async {
            admin
                .clusters()
                .await
                .ok()?
                .iter()
                .any(|c| c.cluster_name == name && c.active && c.active_nodes == workers)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientsrvr_lifecycle_healing_and_restarts() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut root = RootProcess::start(root_dir.path());
    let mut cluster = ClusterProcess::start(
        "edge",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let token = cluster.worker_token();
    let mut w1 = FakeWorker::start(&cluster.http, &token, "w1", 2000).await;
    let mut w2 = FakeWorker::start(&cluster.http, &token, "w2", 2000).await;
    let mut w3 = FakeWorker::start(&cluster.http, &token, "w3", 2000).await;
    let admin = root.admin().await;
    cluster_active(&admin, "edge", 3).await;

    // Deploy both services: RUNNING at the root.
    let (app, services) = create_app(&admin, CLIENTSRVR).await;
    let curl = id_of(&services, "curl");
    let nginx = id_of(&services, "nginx");
    let started = std::time::Instant::now();
    admin.deploy_instance(&curl).await.unwrap();
    admin.deploy_instance(&nginx).await.unwrap();
    let nginx_worker = eventually("nginx RUNNING at the root", || running_on(&admin, &nginx)).await;
    eventually("curl RUNNING at the root", || running_on(&admin, &curl)).await;
    eprintln!(
        "both services RUNNING at the root after {:?}",
        started.elapsed()
    );
    assert!(no_duplicates(&[&w1, &w2, &w3]));

    // Kill the worker that runs nginx: RUNNING on another worker within 15 s.
    let victim = [&mut w1, &mut w2, &mut w3]
        .into_iter()
        .find(|w| w.id == nginx_worker)
        .unwrap();
    victim.stop();
    let killed = std::time::Instant::now();
    let moved_to = eventually_within(
        "nginx RUNNING on another worker",
        Duration::from_secs(15),
        || async {
            running_on(&admin, &nginx)
                .await
                .filter(|w| *w != nginx_worker)
        },
    )
    .await;
    eprintln!(
        "nginx rescheduled to {moved_to} after {:?}",
        killed.elapsed()
    );

    // The killed worker comes back (its copy still running): told to delete it, no duplicates.
    let victim = [&mut w1, &mut w2, &mut w3]
        .into_iter()
        .find(|w| w.id == nginx_worker)
        .unwrap();
    assert!(
        !victim.running().is_empty(),
        "the stopped worker kept its copy"
    );
    victim.connect(&cluster.http, &token).await;
    eventually("the old copy deleted", || async {
        no_duplicates(&[&w1, &w2, &w3]).then_some(())
    })
    .await;
    assert_eq!(copies(&[&w1, &w2, &w3]).len(), 2);
    assert_eq!(
        running_on(&admin, &nginx).await.as_deref(),
        Some(moved_to.as_str())
    );

    // kill -9 the cluster and restart it: same state, nothing deployed twice.
    let deploys_before: usize = [&w1, &w2, &w3]
        .iter()
        .map(|w| w.deploys.lock().unwrap().len())
        .sum();
    let status_before = cluster.status().await["instances"].clone();
    cluster.restart().await;
    let status_after = cluster.status().await["instances"].clone();
    assert_eq!(status_before, status_after, "instances survive kill -9");
    cluster_active(&admin, "edge", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deploys_after: usize = [&w1, &w2, &w3]
        .iter()
        .map(|w| w.deploys.lock().unwrap().len())
        .sum();
    assert_eq!(
        deploys_before, deploys_after,
        "no deploys after the restart"
    );
    assert!(no_duplicates(&[&w1, &w2, &w3]));
    assert_eq!(
        running_on(&admin, &nginx).await.as_deref(),
        Some(moved_to.as_str())
    );

    // Stop the root: workloads keep running and the cluster keeps healing; restart: converge.
    root.kill();
    let curl_worker = cluster.status().await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["job_id"] == curl.as_str())
        .unwrap()["worker_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lost = [&mut w1, &mut w2, &mut w3]
        .into_iter()
        .find(|w| w.id == curl_worker)
        .unwrap();
    lost.stop();
    root.restart();
    let admin = root.admin().await;
    let curl_now = eventually(
        "curl RUNNING elsewhere as seen by the restarted root",
        || async {
            running_on(&admin, &curl)
                .await
                .filter(|w| *w != curl_worker)
        },
    )
    .await;
    eprintln!("curl moved to {curl_now} while the root was down");
    // (nginx may have shared curl's worker and moved with it)
    eventually("nginx RUNNING as seen by the restarted root", || {
        running_on(&admin, &nginx)
    })
    .await;
    let lost = [&mut w1, &mut w2, &mut w3]
        .into_iter()
        .find(|w| w.id == curl_worker)
        .unwrap();
    lost.connect(&cluster.http, &token).await;
    eventually("no duplicates once the worker is back", || async {
        no_duplicates(&[&w1, &w2, &w3]).then_some(())
    })
    .await;

    // Undeploy one instance, then delete the application: the workers are cleaned up.
    admin.undeploy_instance(&nginx, Some(0)).await.unwrap();
    eventually("nginx gone from the workers", || async {
        (!copies(&[&w1, &w2, &w3])
            .keys()
            .any(|(job, _)| job.contains(".nginx.")))
        .then_some(())
    })
    .await;
    admin.delete_application(&app).await.unwrap();
    eventually("every instance gone from the workers", || async {
        copies(&[&w1, &w2, &w3]).is_empty().then_some(())
    })
    .await;
    eventually("the cluster forgot every instance", || async {
        cluster.status().await["instances"]
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .await;
}

const ONE_SHOT: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "batch", "application_namespace": "test",
    "application_desc": "one-shot and crashing services",
    "microservices": [
      {"microserviceID": "", "microservice_name": "job", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "cmd": ["true"], "one_shot": true, "memory": 10, "vcpus": 1},
      {"microserviceID": "", "microservice_name": "crash", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "cmd": ["false"], "memory": 10, "vcpus": 1}
    ]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_completes_and_crashes_back_off() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "batch",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let token = cluster.worker_token();
    let w = FakeWorker::start(&cluster.http, &token, "w1", 2000).await;
    let admin = root.admin().await;
    cluster_active(&admin, "batch", 1).await;
    let (_, services) = create_app(&admin, ONE_SHOT).await;
    let job = id_of(&services, "job");
    admin.deploy_instance(&job).await.unwrap();
    eventually("the one-shot job COMPLETED at the root", || async {
        matches!(
            instance0(&admin, &job).await,
            Some((Status::Deployment(DeploymentStatus::Completed), _))
        )
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.deploys.lock().unwrap().len(),
        1,
        "a COMPLETED job is not redeployed"
    );

    *w.behaviour.lock().unwrap() = Behaviour::Crash;
    let crash = id_of(&services, "crash");
    let t0 = std::time::Instant::now();
    admin.deploy_instance(&crash).await.unwrap();
    // backoff base 500 ms in the tests: 0, 0.5, 1, 2, 4 s … → about 5 deploys in 5 s
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = w
        .deploys
        .lock()
        .unwrap()
        .iter()
        .filter(|(job, _)| job.contains(".crash."))
        .count();
    eprintln!("crashing instance deployed {n} times in {:?}", t0.elapsed());
    assert!(
        (3..=7).contains(&n),
        "redeployed {n} times in 5 s: no backoff?"
    );
    let i = cluster.status().await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["job_id"] == crash.as_str())
        .cloned()
        .unwrap();
    assert!(i["attempts"].as_u64().unwrap() >= 3, "{i}");
}

fn direct_sla(cluster: &str, node: &str) -> String {
    format!(
        r#"{{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{{
    "applicationID": "", "application_name": "pinned", "application_namespace": "test",
    "application_desc": "direct constraints",
    "microservices": [
      {{"microserviceID": "", "microservice_name": "svc", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/nginx:latest",
       "memory": 10, "vcpus": 1,
       "constraints": [{{"type": "direct", "cluster": "{cluster}", "node": "{node}"}}]}}
    ]
  }}]
}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_constraints_across_two_clusters() {
    let root_dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = RootProcess::start(root_dir.path());
    let token = root.join_token();
    let c1 = ClusterProcess::start(
        "east",
        d1.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), token.clone())),
        &[],
    )
    .await;
    let c2 = ClusterProcess::start(
        "west",
        d2.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), token)),
        &[],
    )
    .await;
    let _e1 = FakeWorker::start(&c1.http, &c1.worker_token(), "east-1", 8000).await;
    let w1 = FakeWorker::start(&c2.http, &c2.worker_token(), "west-1", 8000).await;
    let w2 = FakeWorker::start(&c2.http, &c2.worker_token(), "west-2", 1000).await;
    let admin = root.admin().await;
    cluster_active(&admin, "east", 1).await;
    cluster_active(&admin, "west", 2).await;

    // best fit alone would pick west-2 (the tighter one); the constraint names west-1
    let (_, services) = create_app(&admin, &direct_sla("west", "west-1")).await;
    let svc = id_of(&services, "svc");
    admin.deploy_instance(&svc).await.unwrap();
    let on = eventually("the pinned service RUNNING", || running_on(&admin, &svc)).await;
    assert_eq!(on, w1.id, "placed on the named worker");
    let s = service(&admin, &svc).await;
    let west = admin
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.cluster_name == "west")
        .unwrap();
    assert_eq!(
        s.instance(0)
            .unwrap()
            .cluster_id
            .as_ref()
            .map(|c| c.to_string()),
        Some(west.id)
    );
    assert!(w2.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_scheduler_places_and_a_slow_one_does_not_stall_the_cluster() {
    use axum::Json;
    use axum::routing::post;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    // A scheduler that picks the candidate with the most free memory, or hangs when asked to.
    let hang = Arc::new(Mutex::new(false));
    let hang_flag = hang.clone();
    let app = axum::Router::new().route(
        "/place",
        post(move |Json(input): Json<Value>| {
            let hang = *hang_flag.lock().unwrap();
            async move {
                if hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let best = input["candidates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .max_by_key(|c| c["memory_free_mb"].as_u64().unwrap())
                    .unwrap()["name"]
                    .clone();
                Json(json!({ "candidate": best }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/place", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let scheduler = format!("external:{url}");
    let cluster = ClusterProcess::start(
        "ext",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &["--scheduler", &scheduler, "--scheduler-timeout", "10s"],
    )
    .await;
    let token = cluster.worker_token();
    let _small = FakeWorker::start(&cluster.http, &token, "small", 1000).await;
    let big = FakeWorker::start(&cluster.http, &token, "big", 6000).await;
    let admin = root.admin().await;
    cluster_active(&admin, "ext", 2).await;
    let (_, services) = create_app(&admin, CLIENTSRVR).await;
    let nginx = id_of(&services, "nginx");
    admin.deploy_instance(&nginx).await.unwrap();
    let on = eventually("nginx RUNNING where the external scheduler put it", || {
        running_on(&admin, &nginx)
    })
    .await;
    assert_eq!(on, big.id);

    // A hanging scheduler: the cluster keeps answering and keeps its workers active.
    *hang.lock().unwrap() = true;
    let curl = id_of(&services, "curl");
    admin.deploy_instance(&curl).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = std::time::Instant::now();
        let s = cluster.status().await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "status took {:?}",
            t.elapsed()
        );
        assert_eq!(s["resources"]["active_workers"], 2, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_started_before_its_root_joins_when_the_root_appears() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut root = RootProcess::start(root_dir.path());
    let token = root.join_token();
    root.kill();
    let cluster = ClusterProcess::start(
        "early",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), token)),
        &[],
    )
    .await;
    let _w = FakeWorker::start(&cluster.http, &cluster.worker_token(), "w1", 2000).await;
    // Working without the root: workers register, the status page says why the link is down.
    let s = eventually("the link error on the status page", || async {
        let s = cluster.status().await;
        s["root"]["last_error"].is_string().then_some(s)
    })
    .await;
    assert_eq!(s["root"]["connected"], false);
    assert_eq!(s["resources"]["active_workers"], 1);
    root.restart();
    let admin = root.admin().await;
    cluster_active(&admin, "early", 1).await;
    assert_eq!(cluster.status().await["root"]["connected"], true);
}
