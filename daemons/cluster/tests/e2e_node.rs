//! Root + cluster + real `oakestra-node` workers (fake runtime), all separate processes.
//!
//! The workers measure this host, whose CPU is shared with builds: the descriptors ask for
//! 0 cores so that a busy machine cannot turn these tests into capacity tests.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oakestra_core::status::{DeploymentStatus, Status};
use serde_json::Value;
use support::{
    Broker, ClusterProcess, Mosquitto, RootProcess, eventually, eventually_within, free_port,
    node_binary,
};

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

struct NodeProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    cluster: String,
    token: String,
}

impl NodeProcess {
    fn start(cluster: &ClusterProcess, token: &str, name: &str) -> NodeProcess {
        let mut n = NodeProcess {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            name: name.into(),
            cluster: format!("127.0.0.1:{}", cluster.http_port),
            token: token.into(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(node_binary())
            .args(["--cluster", &self.cluster, "--token", &self.token])
            .args(["--name", &self.name, "--report-interval", "500ms"])
            .args(["--runtime", "fake"])
            .arg("--data-dir")
            .arg(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_NODE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oakestra-node");
        self.child = Some(child);
    }

    fn state(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("node-state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn id(&self) -> Option<String> {
        self.state()?["identity"]["id"].as_str().map(str::to_owned)
    }

    /// `(job name, instance)` of what it runs.
    fn running(&self) -> Vec<(String, u32)> {
        let Some(state) = self.state() else {
            return Vec::new();
        };
        let Some(instances) = state["instances"].as_object() else {
            return Vec::new();
        };
        instances
            .values()
            .filter(|i| i["status"] == "RUNNING" && i["deleting"] != true)
            .map(|i| {
                (
                    i["deploy"]["job_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    i["deploy"]["instance_number"].as_u64().unwrap_or_default() as u32,
                )
            })
            .collect()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn copies(nodes: &[&NodeProcess]) -> BTreeMap<(String, u32), usize> {
    let mut all = BTreeMap::new();
    for n in nodes {
        for k in n.running() {
            *all.entry(k).or_default() += 1;
        }
    }
    all
}

async fn instance0(admin: &oakestra_client::Client, id: &str) -> Option<(Status, String)> {
    let s = admin.service(id).await.ok()?;
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

async fn create_app(
    admin: &oakestra_client::Client,
    sla: &str,
) -> (String, BTreeMap<String, String>) {
    let apps = admin
        .create_applications(&serde_json::from_str::<Value>(sla).unwrap())
        .await
        .unwrap();
    let app = apps[0].id.to_string();
    let services = admin
        .application_services(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.service_name.clone(), s.id.to_string()))
        .collect();
    (app, services)
}

async fn cluster_active(admin: &oakestra_client::Client, name: &str, workers: u64) {
    eventually(
        &format!("cluster {name} with {workers} active workers"),
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
async fn real_workers_clientsrvr_healing_and_restarts() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let mut cluster = ClusterProcess::start(
        "edge",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let token = cluster.worker_token();
    let mut nodes: Vec<NodeProcess> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| NodeProcess::start(&cluster, &token, n))
        .collect();
    let admin = root.admin().await;
    cluster_active(&admin, "edge", 3).await;

    let sla = CLIENTSRVR.replace("\"vcpus\": 1", "\"vcpus\": 0");
    let (app, services) = create_app(&admin, &sla).await;
    let (curl, nginx) = (services["curl"].clone(), services["nginx"].clone());
    let t0 = std::time::Instant::now();
    admin.deploy_instance(&curl).await.unwrap();
    admin.deploy_instance(&nginx).await.unwrap();
    let nginx_on = eventually("nginx RUNNING at the root", || running_on(&admin, &nginx)).await;
    eventually("curl RUNNING at the root", || running_on(&admin, &curl)).await;
    eprintln!(
        "clientsrvr RUNNING at the root after {:?} (real workers)",
        t0.elapsed()
    );

    // kill -9 the worker running nginx: RUNNING elsewhere within 15 s
    let victim = nodes
        .iter()
        .position(|n| n.id().as_deref() == Some(&nginx_on))
        .unwrap();
    nodes[victim].kill();
    let killed = std::time::Instant::now();
    let moved = eventually_within(
        "nginx RUNNING on another worker",
        Duration::from_secs(15),
        || async { running_on(&admin, &nginx).await.filter(|w| *w != nginx_on) },
    )
    .await;
    eprintln!(
        "nginx moved from {nginx_on} to {moved} after {:?}",
        killed.elapsed()
    );

    // the worker restarts with its state (it re-adopts its copy): the cluster has it deleted
    nodes[victim].spawn();
    eventually("one copy of each instance across the workers", || async {
        let all = copies(&nodes.iter().collect::<Vec<_>>());
        (all.len() == 2 && all.values().all(|n| *n == 1)).then_some(())
    })
    .await;
    assert_eq!(
        nodes[victim].id().as_deref(),
        Some(nginx_on.as_str()),
        "same identity after restart"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        running_on(&admin, &nginx).await.as_deref(),
        Some(moved.as_str())
    );

    // kill -9 the cluster and restart it: nothing lost, nothing duplicated
    let before = cluster.status().await["instances"].clone();
    cluster.restart().await;
    assert_eq!(cluster.status().await["instances"], before);
    cluster_active(&admin, "edge", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = copies(&nodes.iter().collect::<Vec<_>>());
    assert!(all.len() == 2 && all.values().all(|n| *n == 1), "{all:?}");
    assert_eq!(
        running_on(&admin, &nginx).await.as_deref(),
        Some(moved.as_str())
    );

    // undeploy nginx, then delete the application: the workers are cleaned up
    admin.undeploy_instance(&nginx, Some(0)).await.unwrap();
    eventually("nginx gone from the workers", || async {
        let all = copies(&nodes.iter().collect::<Vec<_>>());
        (!all.keys().any(|(j, _)| j.contains(".nginx."))).then_some(())
    })
    .await;
    admin.delete_application(&app).await.unwrap();
    eventually("nothing left on the workers", || async {
        copies(&nodes.iter().collect::<Vec<_>>())
            .is_empty()
            .then_some(())
    })
    .await;
}

const BATCH: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "batch", "application_namespace": "test",
    "application_desc": "one-shot and crashing services on the fake runtime",
    "microservices": [
      {"microserviceID": "", "microservice_name": "job", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "one_shot": true, "memory": 10, "vcpus": 0,
       "environment": ["OAK_FAKE_EXIT_AFTER_MS=200", "OAK_FAKE_EXIT_CODE=0"]},
      {"microserviceID": "", "microservice_name": "crash", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "memory": 10, "vcpus": 0,
       "environment": ["OAK_FAKE_EXIT_AFTER_MS=100", "OAK_FAKE_EXIT_CODE=1"]}
    ]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_worker_one_shot_completes_and_failures_back_off() {
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
    let _node = NodeProcess::start(&cluster, &cluster.worker_token(), "n1");
    let admin = root.admin().await;
    cluster_active(&admin, "batch", 1).await;
    let (_, services) = create_app(&admin, BATCH).await;
    let job = services["job"].clone();
    admin.deploy_instance(&job).await.unwrap();
    eventually("the one-shot job COMPLETED at the root", || async {
        matches!(
            instance0(&admin, &job).await,
            Some((Status::Deployment(DeploymentStatus::Completed), _))
        )
        .then_some(())
    })
    .await;

    let crash = services["crash"].clone();
    admin.deploy_instance(&crash).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = cluster.status().await;
    let find = |id: &str| {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["job_id"] == id)
            .cloned()
            .unwrap()
    };
    let attempts = find(&crash)["attempts"].as_u64().unwrap();
    eprintln!("crashing instance: {attempts} redeploys in 5 s");
    // 0 + 0.5 + 1 + 2 s … of backoff: a handful, not dozens
    assert!((2..=7).contains(&attempts), "{attempts} redeploys in 5 s");
    assert_eq!(find(&job)["status"], "COMPLETED");
    assert_eq!(find(&job)["attempts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_worker_over_mosquitto() {
    let broker = Mosquitto::start(&[
        ("oakestra-cluster", "cluster-secret"),
        ("oakestra-worker", "worker-secret"),
    ])
    .await;
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "mosq",
        cluster_dir.path(),
        Broker::External {
            port: broker.port,
            cluster_user: "oakestra-cluster".into(),
            cluster_password: "cluster-secret".into(),
            worker_user: "oakestra-worker".into(),
            worker_password: "worker-secret".into(),
        },
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let node = NodeProcess::start(&cluster, &cluster.worker_token(), "n1");
    let admin = root.admin().await;
    cluster_active(&admin, "mosq", 1).await;
    let sla = CLIENTSRVR.replace("\"vcpus\": 1", "\"vcpus\": 0");
    let (_, services) = create_app(&admin, &sla).await;
    let nginx = services["nginx"].clone();
    admin.deploy_instance(&nginx).await.unwrap();
    let on = eventually("nginx RUNNING through mosquitto", || {
        running_on(&admin, &nginx)
    })
    .await;
    assert_eq!(Some(on), node.id());
    // the worker keeps reporting through mosquitto: still active after the 3 s timeout
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = cluster.status().await;
    assert_eq!(status["workers"][0]["active"], true, "{status}");
}

const CHATTY: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "chatty", "application_namespace": "test",
    "application_desc": "a service whose log is far longer than the 4 KiB of a usage report",
    "microservices": [
      {"microserviceID": "", "microservice_name": "talker", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "memory": 10, "vcpus": 0,
       "environment": ["OAK_FAKE_LOG_LINES=1000"]}
    ]
  }]
}"#;

/// `GET /api/service/<id>/instance/0/logs?tail=<tail>` as JSON.
async fn logs_of_instance0(admin: &oakestra_client::Client, id: &str, tail: u32) -> Value {
    admin
        .call::<Value, ()>(
            reqwest::Method::GET,
            &format!("/api/service/{id}/instance/0/logs?tail={tail}"),
            None,
        )
        .await
        .unwrap()
}

fn output_lines(from: u32, to: u32) -> String {
    (from..=to)
        .map(|i| format!("fake: output line {i}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_logs_come_from_the_worker_on_demand_and_from_the_report_when_it_is_gone() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "logs",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let mut node = NodeProcess::start(&cluster, &cluster.worker_token(), "n1");
    let admin = root.admin().await;
    cluster_active(&admin, "logs", 1).await;
    let (_, services) = create_app(&admin, CHATTY).await;
    let talker = services["talker"].clone();
    admin.deploy_instance(&talker).await.unwrap();
    eventually("the talker RUNNING", || running_on(&admin, &talker)).await;
    // Its usage report (and with it the last 4 KiB of its log) has reached the root.
    eventually("a reported log tail at the root", || async {
        let service = admin.service(&talker).await.ok()?;
        service
            .instance(0)?
            .logs
            .as_deref()
            .is_some_and(|l| l.trim_end().ends_with("fake: output line 1000"))
            .then_some(())
    })
    .await;

    // The log (about 23 KB) is far longer than the reported tail: the worker reads it.
    let answer = logs_of_instance0(&admin, &talker, 1000).await;
    assert_eq!(answer["source"], "worker", "{answer}");
    assert_eq!(answer["logs"], output_lines(1, 1000));
    assert!(answer.get("source_detail").is_none(), "{answer}");
    let answer = logs_of_instance0(&admin, &talker, 1001).await;
    let all = answer["logs"].as_str().unwrap();
    assert!(all.starts_with("fake: started "), "{all:.80}");
    assert_eq!(all.lines().count(), 1001);
    let answer = logs_of_instance0(&admin, &talker, 5).await;
    assert_eq!(answer["logs"], output_lines(996, 1000));
    assert_eq!(
        admin.logs(&talker, 0, Some(3)).await.unwrap(),
        output_lines(998, 1000)
    );

    // The worker is gone: the answer is the reported tail (the end of the log), and says so.
    node.kill();
    let answer = logs_of_instance0(&admin, &talker, 1000).await;
    assert_eq!(answer["source"], "report", "{answer}");
    assert!(
        answer["source_detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{answer}"
    );
    let reported = answer["logs"].as_str().unwrap();
    assert!(reported.ends_with(&output_lines(990, 1000)), "{reported}");
    assert!(reported.len() <= 4096, "{} bytes", reported.len());
    assert!(reported.lines().count() < 1000);
}

const REPLICATED: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "replicated", "application_namespace": "test",
    "microservices": [
      {"microserviceID": "", "microservice_name": "web", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/busybox:latest",
       "memory": 10, "vcpus": 0, "replicas": 3}
    ]
  }]
}"#;

/// Numbers of the RUNNING instances at the root, and the desired count in the record.
async fn running_replicas(admin: &oakestra_client::Client, id: &str) -> (Vec<u32>, Option<u32>) {
    let Ok(s) = admin.service(id).await else {
        return (Vec::new(), None);
    };
    let mut running: Vec<u32> = s
        .instance_list
        .iter()
        .filter(|i| i.status == Some(Status::RUNNING))
        .map(|i| i.instance_number)
        .collect();
    running.sort_unstable();
    (running, s.microservice.replicas)
}

async fn wait_running(admin: &oakestra_client::Client, id: &str, want: &[u32]) {
    eventually_within(
        &format!("instances {want:?} RUNNING, nothing else"),
        Duration::from_secs(30),
        || async {
            let s = admin.service(id).await.ok()?;
            let mut all: Vec<u32> = s.instance_list.iter().map(|i| i.instance_number).collect();
            all.sort_unstable();
            (all == want && running_replicas(admin, id).await.0 == want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_replicas_are_deployed_scaled_and_kept_across_a_worker_loss() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "replicas",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let token = cluster.worker_token();
    let mut nodes: Vec<NodeProcess> = ["n1", "n2"]
        .into_iter()
        .map(|n| NodeProcess::start(&cluster, &token, n))
        .collect();
    let admin = root.admin().await;
    cluster_active(&admin, "replicas", 2).await;

    // replicas: 3 in the descriptor → three instances, with no deploy call.
    let (_, services) = create_app(&admin, REPLICATED).await;
    let web = services["web"].clone();
    wait_running(&admin, &web, &[0, 1, 2]).await;

    // Scale up and down: the highest numbered go first.
    let up = admin.scale_service(&web, 5).await.unwrap();
    assert_eq!((up.replicas, up.deployed.as_slice()), (5, &[3, 4][..]));
    assert_eq!(up.instances, [0, 1, 2, 3, 4]);
    wait_running(&admin, &web, &[0, 1, 2, 3, 4]).await;
    let down = admin.scale_service(&web, 1).await.unwrap();
    assert_eq!(down.removed, [4, 3, 2, 1]);
    assert_eq!(down.instances, [0]);
    wait_running(&admin, &web, &[0]).await;
    eventually("one copy left on the workers", || async {
        (copies(&nodes.iter().collect::<Vec<_>>()).len() == 1).then_some(())
    })
    .await;
    let e = admin.scale_service(&web, 10_001).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("10000"), "{e}");

    // The per-instance API adjusts the count.
    admin.deploy_instance(&web).await.unwrap();
    assert_eq!(running_replicas(&admin, &web).await.1, Some(2));
    admin.undeploy_instance(&web, Some(0)).await.unwrap();
    assert_eq!(running_replicas(&admin, &web).await.1, Some(1));
    let again = admin.scale_service(&web, 3).await.unwrap();
    assert_eq!(again.instances.len(), 3, "{again:?}");
    let want = again.instances.clone();
    wait_running(&admin, &web, &want).await;

    // kill -9 the worker holding most of them: three run again on the other one (its cluster
    // moves them; the count stays).
    let on = |n: &NodeProcess| {
        n.running()
            .iter()
            .filter(|(j, _)| j.contains(".web."))
            .count()
    };
    let victim = if on(&nodes[0]) >= on(&nodes[1]) { 0 } else { 1 };
    let survivor = nodes[1 - victim].id().unwrap();
    nodes[victim].kill();
    let killed = std::time::Instant::now();
    eventually_within(
        "three RUNNING on the surviving worker",
        Duration::from_secs(30),
        || async {
            let s = admin.service(&web).await.ok()?;
            let running = s
                .instance_list
                .iter()
                .filter(|i| {
                    i.status == Some(Status::RUNNING)
                        && i.worker_id.as_ref().map(ToString::to_string).as_deref()
                            == Some(survivor.as_str())
                })
                .count();
            (running == 3 && s.instance_list.len() == 3).then_some(())
        },
    )
    .await;
    eprintln!(
        "3 replicas RUNNING again {:?} after the worker loss",
        killed.elapsed()
    );
    assert_eq!(running_replicas(&admin, &web).await.1, Some(3));
}
