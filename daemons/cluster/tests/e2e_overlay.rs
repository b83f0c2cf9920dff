//! Service IPs end to end (issue 8): the real root, the real cluster and two real
//! `oakestra-node` workers, each worker in a host network namespace of its own (joined to this
//! host by a veth pair, as separate machines would be), with the overlay on. The workers get
//! their subnets from the root, create each instance's namespace (the fake runtime runs nothing,
//! so the test plays the containers: it listens and dials inside those namespaces), report them
//! to the cluster and fill their proxies through table queries. A client instance on worker 1
//! reaches the server instance on worker 2 through the server's rr_ip and sees only the rr_ip.
//!
//! Root. A guard kills the workers and deletes their namespaces, also when the test fails.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oakestra_net::dataplane::netns;
use support::{RootProcess, eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let candidate = exe.parent().and_then(Path::parent).unwrap().join(name);
    if !candidate.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building {name} failed");
    }
    candidate
}

/// Processes and namespaces of the test.
struct Guard {
    children: Vec<Child>,
    hosts: Vec<String>,
    links: Vec<String>,
    prefixes: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for prefix in &self.prefixes {
            for ns in netns::list(prefix).unwrap_or_default() {
                let _ = netns::delete(&netns::path_of(&ns));
            }
        }
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", host]).output();
        }
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

fn sla() -> String {
    let microservice = |name: &str, node: &str, rr: &str| {
        format!(
            r#"{{"microserviceID": "", "microservice_name": "{name}", "microservice_namespace": "test",
               "virtualization": "container", "code": "docker.io/library/busybox:latest",
               "memory": 10, "vcpus": 0, "addresses": {{"rr_ip": "{rr}"}},
               "constraints": [{{"type": "direct", "cluster": "overlay", "node": "{node}"}}]}}"#
        )
    };
    format!(
        r#"{{"sla_version": "v2.0", "customerID": "Admin",
  "applications": [{{"applicationID": "", "application_name": "demo", "application_namespace": "test",
    "application_desc": "service IPs", "microservices": [{}, {}]}}]}}"#,
        microservice("curl", "w1", "10.30.55.54"),
        microservice("nginx", "w2", "10.30.55.55"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_a_server_on_another_worker_through_its_rr_ip() {
    let pid = std::process::id();
    let tag = |i: usize| format!("e{}{}", pid % 100_000, ["a", "b"][i]);
    let hosts = [format!("{}h", tag(0)), format!("{}h", tag(1))];
    let mut guard = Guard {
        children: Vec::new(),
        hosts: hosts.to_vec(),
        links: vec![format!("{}x", tag(0)), format!("{}x", tag(1))],
        prefixes: vec![format!("{}-", tag(0)), format!("{}-", tag(1))],
    };
    // Each worker's host namespace hangs off this host by a /30 in 198.18.0.0/15 (the
    // oakestra-net tests use 100.64.0.0/10).
    let y = (pid % 256) as u8;
    let here = |i: usize| Ipv4Addr::new(198, 18 + i as u8, y, 1);
    let there = |i: usize| Ipv4Addr::new(198, 18 + i as u8, y, 2);
    for (i, host) in hosts.iter().enumerate() {
        let link = &guard.links[i].clone();
        must(&["ip", "netns", "add", host]);
        must(&["ip", "-n", host, "link", "set", "lo", "up"]);
        must(&[
            "ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", host,
        ]);
        must(&["ip", "addr", "add", &format!("{}/30", here(i)), "dev", link]);
        must(&["ip", "link", "set", link, "up"]);
        must(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{}/30", there(i)),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", host, "link", "set", "eth0", "up"]);
        must(&[
            "ip",
            "-n",
            host,
            "route",
            "add",
            "default",
            "via",
            &here(i).to_string(),
        ]);
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();

    let root_dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(root_dir.path());
    let cluster_dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let worker_token = "overlay-worker-token";
    guard.children.push(
        Command::new(binary("oakestra-cluster"))
            .args(["--name", "overlay", "--listen", &format!("0.0.0.0:{http}")])
            .args(["--mqtt-listen", &format!("0.0.0.0:{mqtt}")])
            .args(["--root", &root.grpc, "--join-token", &root.join_token()])
            .args(["--worker-join-token", worker_token])
            .arg("--data-dir")
            .arg(cluster_dir.path())
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_CLUSTER_CONFIG")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (i, host) in hosts.iter().enumerate() {
        // nsenter joins only the network namespace (`ip netns exec` would also give the
        // worker a mount namespace of its own, hiding its instance namespaces from the test).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .arg(binary("oakestra-node"))
            .args([
                "--cluster",
                &format!("{}:{http}", here(i)),
                "--token",
                worker_token,
            ])
            .args(["--name", ["w1", "w2"][i], "--runtime", "fake"])
            .args(["--overlay", "on", "--overlay-tag", &tag(i)])
            .args([
                "--advertise-ip",
                &there(i).to_string(),
                "--metrics-listen",
                "off",
            ])
            .args(["--report-interval", "500ms"])
            .arg("--data-dir")
            .arg(node_dirs[i].path())
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_NODE_CONFIG")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        guard.children.push(child);
    }

    let admin = root.admin().await;
    eventually("the cluster active with both workers", || async {
        admin
            .clusters()
            .await
            .ok()?
            .iter()
            .any(|c| c.cluster_name == "overlay" && c.active && c.active_nodes == 2)
            .then_some(())
    })
    .await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(&sla()).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    for s in &services {
        admin.deploy_instance(&s.id.to_string()).await.unwrap();
    }
    // Both instances get their namespace on their worker.
    let ns = |i: usize, svc: &str| netns::path_of(&format!("{}-demo.test.{svc}.test.0", tag(i)));
    let (client_ns, server_ns) = (ns(0, "curl"), ns(1, "nginx"));
    eventually("both instance namespaces", || async {
        (client_ns.exists() && server_ns.exists()).then_some(())
    })
    .await;

    // The "server container" listens in its namespace.
    let listener = netns::run_in(&server_ns, || std::net::TcpListener::bind("0.0.0.0:8080"))
        .await
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let serve = tokio::spawn(async move {
        let (mut s, peer) = listener.accept().await.unwrap();
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).await.unwrap();
        s.write_all(b"hello from nginx").await.unwrap();
        s.shutdown().await.unwrap();
        peer
    });
    // The "client container" dials the rr_ip; the first SYNs may go while the workers' table
    // queries are answered (TCP sends them again).
    let rr = SocketAddr::from(([10, 30, 55, 55], 8080));
    let stream = eventually("a connection to the rr_ip", || {
        let client_ns = client_ns.clone();
        async move {
            netns::run_in(&client_ns, move || {
                std::net::TcpStream::connect_timeout(&rr, Duration::from_secs(5))
            })
            .await
            .ok()?
            .ok()
        }
    })
    .await;
    assert_eq!(stream.peer_addr().unwrap(), rr, "the client sees the rr_ip");
    stream.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("the answer within 10 s")
        .unwrap();
    assert_eq!(answer, "hello from nginx");
    let peer = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("the server saw the connection")
        .unwrap();
    let curl = services.iter().find(|s| s.service_name == "curl").unwrap();
    let curl = admin.service(&curl.id.to_string()).await.unwrap();
    let instance_ip = curl.instance(0).unwrap().instance_ip.unwrap();
    assert_eq!(
        peer.ip(),
        instance_ip,
        "the server sees the client's instance IP"
    );
}
