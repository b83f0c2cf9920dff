//! The SLA's `restart_policy` with real containers (issue 18): root + cluster + an
//! `oakestra-node` on the test containerd, the image built from busybox and pulled from the
//! loopback registry. A container that exits 1 is restarted by its worker with a back-off, and
//! the count and the restarts with their exit code are visible over the root's API.
// Real daemons and processes on the real clock.
#![allow(clippy::disallowed_types)]

#[path = "../../../oakestra-runtime/tests/containerd_support/mod.rs"]
mod containerd_support;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use oakestra_core::status::{DeploymentStatus, Status};
use support::{Broker, ClusterProcess, RootProcess, eventually_within, free_port, node_binary};

fn sla(image: &str) -> serde_json::Value {
    serde_json::json!({
        "sla_version": "v2.0", "customerID": "Admin",
        "applications": [{
            "application_name": "restarts", "application_namespace": "test",
            "microservices": [{
                "microservice_name": "crash", "microservice_namespace": "test",
                "virtualization": "container", "code": image,
                "cmd": ["sh", "-c", "echo crashing; exit 1"],
                "restart_policy": "on-failure", "memory": 20, "vcpus": 0
            }]
        }]
    })
}

/// Kills the worker when the test ends, however it ends.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_is_restarted_on_its_worker_and_counted_at_the_root() {
    let f = containerd_support::fixtures();
    let image = containerd_support::shared_image(&f).await;
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "restarts",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let namespace = containerd_support::unique("restart");
    let _worker = Worker(
        Command::new(node_binary())
            .args(["--cluster", &format!("127.0.0.1:{}", cluster.http_port)])
            .args(["--token", &cluster.worker_token(), "--name", "n1"])
            .args(["--runtime", "containerd", "--overlay", "off"])
            .arg("--containerd-socket")
            .arg(&f.socket)
            .args(["--containerd-namespace", &namespace])
            .args(["--insecure-registry", &f.registry])
            .args(["--report-interval", "500ms"])
            .arg("--data-dir")
            .arg(node_dir.path())
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_NODE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start oakestra-node"),
    );
    let admin = root.admin().await;
    eventually_within("the worker active", Duration::from_secs(60), || async {
        admin
            .clusters()
            .await
            .ok()?
            .iter()
            .any(|c| c.cluster_name == "restarts" && c.active && c.active_nodes == 1)
            .then_some(())
    })
    .await;
    let apps = admin.create_applications(&sla(&image)).await.unwrap();
    let service = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap()[0]
        .id
        .to_string();
    assert_eq!(
        admin
            .service(&service)
            .await
            .unwrap()
            .microservice
            .restart_policy,
        Some(oakestra_core::sla::RestartPolicy::OnFailure)
    );
    admin.deploy_instance(&service).await.unwrap();

    // Restarts after 1 s and 2 s (plus pull and start): two within a minute, on one worker.
    let worker = eventually_within(
        "two restarts counted at the root",
        Duration::from_secs(60),
        || async {
            let s = admin.service(&service).await.ok()?;
            let i = s.instance(0)?;
            (i.restart_count >= 2).then(|| i.worker_id.clone())
        },
    )
    .await;
    let events = admin
        .events(&oakestra_client::EventQuery {
            service: Some(service.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let restarting: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "restarting")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        restarting
            .iter()
            .any(|m| m.contains("exited with code 1, restart 1 in 1 s")),
        "{restarting:?}"
    );
    assert!(
        restarting
            .iter()
            .any(|m| m.contains("exited with code 1, restart 2 in 2 s")),
        "{restarting:?}"
    );
    // Never placed anew while its worker restarts it.
    let s = admin.service(&service).await.unwrap();
    let i = s.instance(0).unwrap();
    assert_eq!(i.worker_id, worker);
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "node_scheduled" && e.timestamp > events[0].timestamp + 3.0),
        "not rescheduled: {events:?}"
    );

    // After five restarts the worker gives up: FAILED at the root with the reason (1+2+4+8+16
    // s of back-off), then the cluster places it again.
    let failed = eventually_within(
        "the worker giving up after five restarts",
        Duration::from_secs(90),
        || async {
            let events = admin
                .events(&oakestra_client::EventQuery {
                    service: Some(service.clone()),
                    kind: Some("failed".into()),
                    ..Default::default()
                })
                .await
                .ok()?;
            events
                .into_iter()
                .find(|e| e.message.contains("after 5 restarts"))
        },
    )
    .await;
    assert_eq!(failed.status.as_deref(), Some("FAILED"), "{failed:?}");
    admin.undeploy_instance(&service, Some(0)).await.unwrap();
    eventually_within("the instance gone", Duration::from_secs(30), || async {
        let s = admin.service(&service).await.ok()?;
        let gone = match s.instance(0) {
            None => true,
            Some(i) => i.status == Some(Status::Deployment(DeploymentStatus::Undeployed)),
        };
        gone.then_some(())
    })
    .await;
}
