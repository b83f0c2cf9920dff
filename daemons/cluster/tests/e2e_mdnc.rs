//! Service IPs across clusters (issue 8, MDNC): the real root, two real clusters and one real
//! `oakestra-node` worker in each, every worker in a host network namespace of its own. The
//! server service is pinned to cluster B, the client to cluster A (`direct` constraints), so
//! neither cluster holds the other's service: each worker's table query misses in its own
//! cluster, which asks the root (`TableQuery` on the Session stream) and answers the worker.
//! The client reaches the server through its rr_ip. Then the server's instances change in
//! cluster B (one added, one undeployed): the root pushes the new table to cluster A, which
//! pushes it to its worker, well before the worker's 30 s safety-net refresh. Finally the root
//! is killed: connections through what the clusters learned keep working, and a service IP
//! nobody knows does not hold them up.
//!
//! Root. Addresses (203.0.113.0/24) and namespace tags (`m…`) differ from e2e_overlay.rs's
//! (198.18.0.0/15, `e…`), so both files' tests run in parallel.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

#[path = "support/overlay_hosts.rs"]
mod overlay_hosts;
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use oakestra_core::model::ServiceRecord;
use overlay_hosts::{Guard, Host, request, serve, spawn_cluster};
use support::{RootProcess, eventually, free_port};

const RR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 30, 55, 55)), 8080);
const SERVER_JOB: &str = "demo.test.nginx.test";

/// The demo app: the `curl` client in cluster `mdnc-a` on worker `wa`, the `nginx` server in
/// cluster `mdnc-b` on worker `wb`.
fn sla() -> String {
    let microservice = |name: &str, cluster: &str, node: &str, rr: &str| {
        format!(
            r#"{{"microserviceID": "", "microservice_name": "{name}", "microservice_namespace": "test",
               "virtualization": "container", "code": "docker.io/library/busybox:latest",
               "memory": 10, "vcpus": 0, "addresses": {{"rr_ip": "{rr}"}},
               "constraints": [{{"type": "direct", "cluster": "{cluster}", "node": "{node}"}}]}}"#
        )
    };
    format!(
        r#"{{"sla_version": "v2.0", "customerID": "Admin",
  "applications": [{{"applicationID": "", "application_name": "demo", "application_namespace": "test",
    "application_desc": "service IPs across clusters", "microservices": [{}, {}]}}]}}"#,
        microservice("curl", "mdnc-a", "wa", "10.30.55.54"),
        microservice("nginx", "mdnc-b", "wb", "10.30.55.55"),
    )
}

/// `count` consecutive new connections from `from` to the rr_ip: their answers, or the first
/// failure.
async fn answers(from: &std::path::Path, count: usize) -> Result<Vec<String>, String> {
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(request(from, RR).await?.0);
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_cluster_a_reaches_a_server_in_cluster_b_through_its_rr_ip() {
    let pid = std::process::id() % 10_000;
    let mut guard = Guard::default();
    let hosts = [0u8, 1].map(|i| {
        Host::create(
            &mut guard,
            &format!("m{pid}{}", ["a", "b"][usize::from(i)]),
            Ipv4Addr::new(203, 0, 113, i * 4 + 1),
            Ipv4Addr::new(203, 0, 113, i * 4 + 2),
        )
    });

    let root_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let worker_token = "mdnc-worker-token";
    let mut dirs = Vec::new();
    let mut cluster_http = Vec::new();
    for name in ["mdnc-a", "mdnc-b"] {
        let dir = tempfile::tempdir().unwrap();
        let (http, mqtt) = (free_port(), free_port());
        guard.children.push(spawn_cluster(
            name,
            http,
            mqtt,
            &root.grpc,
            &root.join_token(),
            worker_token,
            dir.path(),
            &[],
        ));
        cluster_http.push(http);
        dirs.push(dir);
    }
    for (i, host) in hosts.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = format!("{}:{}", host.here, cluster_http[i]);
        guard
            .children
            .push(host.spawn_worker(&cluster, worker_token, ["wa", "wb"][i], dir.path()));
        dirs.push(dir);
    }
    for host in &hosts {
        let url = host.metrics_url();
        eventually(&format!("{}'s broker session", host.ns), || async {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.lines()
                .any(|l| l == "oakestra_node_mqtt_connected 1")
                .then_some(())
        })
        .await;
    }
    let admin = root.admin().await;
    eventually("both clusters active with their worker", || async {
        let clusters = admin.clusters().await.ok()?;
        ["mdnc-a", "mdnc-b"]
            .iter()
            .all(|n| {
                clusters
                    .iter()
                    .any(|c| c.cluster_name == *n && c.active && c.active_nodes == 1)
            })
            .then_some(())
    })
    .await;

    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(&sla()).unwrap())
        .await
        .unwrap();
    let services: Vec<ServiceRecord> = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let id = |name: &str| {
        services
            .iter()
            .find(|s| s.service_name == name)
            .unwrap()
            .id
            .to_string()
    };
    let (curl, nginx) = (id("curl"), id("nginx"));
    admin.deploy_instance(&curl).await.unwrap();
    admin.deploy_instance(&nginx).await.unwrap();

    let client_ns = hosts[0].instance_ns("demo.test.curl.test", 0);
    let server_ns = hosts[1].instance_ns(SERVER_JOB, 0);
    eventually(
        "the client's namespace in A and the server's in B",
        || async { (client_ns.exists() && server_ns.exists()).then_some(()) },
    )
    .await;
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    let server0 = serve(&server_ns, 8080, "nginx-0".into(), peers_tx.clone()).await;

    // Both workers miss in their own cluster (A knows no nginx, B no curl for the replies):
    // the clusters ask the root. The first SYNs may go while that happens (TCP sends them
    // again), so the first request is retried.
    let (answer, seen) = eventually("an answer through the rr_ip across clusters", || async {
        request(&client_ns, RR).await.ok()
    })
    .await;
    assert_eq!(answer, "nginx-0");
    assert_eq!(seen, RR, "the client sees the rr_ip");
    let peer = peers.recv().await.unwrap();
    let curl_ip = admin
        .service(&curl)
        .await
        .unwrap()
        .instance(0)
        .unwrap()
        .instance_ip;
    assert_eq!(
        Some(peer.ip()),
        curl_ip.map(std::net::IpAddr::V4),
        "the server sees the client's instance IP"
    );

    // The server's closest IP (allocated by the root) resolves across clusters too: the root's
    // table carries it, and with one instance that instance answers.
    let closest = admin.service(&nginx).await.unwrap().closest_ip.unwrap();
    let closest = SocketAddr::from((closest, 8080));
    let (answer, seen) = eventually(
        "an answer through the closest IP across clusters",
        || async { request(&client_ns, closest).await.ok() },
    )
    .await;
    assert_eq!(answer, "nginx-0");
    assert_eq!(seen, closest, "the client sees the closest IP");
    let _ = peers.recv().await.unwrap();

    // A second server instance comes up in B: the root pushes the service's new table to A,
    // and A to its worker; new connections alternate between the two.
    admin.deploy_instance(&nginx).await.unwrap();
    let server1_ns = hosts[1].instance_ns(SERVER_JOB, 1);
    eventually("the second server's namespace", || async {
        server1_ns.exists().then_some(())
    })
    .await;
    let _server1 = serve(&server1_ns, 8080, "nginx-1".into(), peers_tx).await;
    let started = Instant::now();
    eventually("answers from both server instances", || async {
        let seen: std::collections::BTreeSet<String> =
            answers(&client_ns, 4).await.ok()?.into_iter().collect();
        (seen.len() == 2).then_some(())
    })
    .await;
    eprintln!(
        "the new instance was reachable from A after {:?}",
        started.elapsed()
    );

    // Instance 0 is undeployed in B: within 10 s (the workers' periodic refresh is 30 s) every
    // new connection from A reaches instance 1.
    admin.undeploy_instance(&nginx, Some(0)).await.unwrap();
    server0.abort();
    let undeployed = Instant::now();
    let deadline = undeployed + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() <= deadline,
            "10 s after the undeploy, connections from A still fail or reach the removed instance"
        );
        match answers(&client_ns, 4).await {
            Ok(a) if a.iter().all(|x| x == "nginx-1") => break,
            Ok(a) => eprintln!("{:?} after the undeploy: {a:?}", undeployed.elapsed()),
            Err(e) => eprintln!("{:?} after the undeploy: {e}", undeployed.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "every connection from A reaches the remaining instance {:?} after the undeploy",
        undeployed.elapsed()
    );

    // The root goes away: what the clusters learned keeps working, and a service IP nobody
    // knows (asked of the unreachable root, answered "unknown" after the cluster's timeout)
    // holds up no other traffic.
    let mut root = root;
    root.kill();
    let unknown = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 30, 99, 99)), 8080);
    let stray = {
        let client_ns = client_ns.clone();
        tokio::spawn(async move { request(&client_ns, unknown).await })
    };
    let answers = answers(&client_ns, 4).await.unwrap();
    assert!(answers.iter().all(|a| a == "nginx-1"), "{answers:?}");
    assert!(
        stray.await.unwrap().is_err(),
        "nothing answers an unknown service IP"
    );
    drop(guard);
}
