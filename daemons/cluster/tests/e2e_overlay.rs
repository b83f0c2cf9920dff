//! Service IPs end to end (issue 8): the real root, the real cluster and two real
//! `oakestra-node` workers, each worker in a host network namespace of its own (joined to this
//! host by a veth pair, as separate machines would be), with the overlay on. The workers get
//! their subnets from the root, create each instance's namespace (the fake runtime runs nothing,
//! so the test plays the containers: it listens and dials inside those namespaces), report them
//! to the cluster and fill their proxies through table queries. A client instance on worker 1
//! reaches the server instance on worker 2 through the server's rr_ip and sees only the rr_ip,
//! and likewise through its rr_ip_v6;
//! with two server instances, new connections alternate between them (round robin); when the
//! worker of one of them dies, new connections reach the survivor within 15 s. Through the
//! server's closest IP, with a server instance on the client's worker and one on the other,
//! new connections reach the local one; with the client's worker told (`--rtt-override`) that
//! the other worker is nearer than itself, they reach the remote one.
//!
//! The Oakestra demo runs for real too: each worker with a containerd of its own, the
//! clientsrvr app's `nginx` (the busybox httpd test image) on one worker and its `curl`
//! (busybox `wget` in a loop) on the other; the client's log, read through the API, shows the
//! server's page fetched through 10.30.55.55, the server's name resolves through the overlay
//! DNS, its port mapping answers from outside the worker, and undeploying leaves nothing. The
//! client's worker sits behind a 1,400-byte link (the server's 1,500): each worker detects its
//! overlay MTU (1,360 and 1,460), puts it on its instances' veths and reports it in the root's
//! worker list.
//!
//! Health probes with real containers (issue 18): a container whose readiness endpoint answers
//! 503 gets no traffic through its rr_ip until it answers 200 (the delay is printed), and a
//! failing liveness probe restarts it, counted at the root with the reason in its events.
//!
//! Root. A guard kills the workers and deletes their namespaces, also when the test fails.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

#[path = "../../../oakestra-runtime/tests/containerd_support/mod.rs"]
mod containerd_support;
#[path = "support/overlay_hosts.rs"]
mod overlay_hosts;
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oakestra_core::model::ServiceRecord;
use oakestra_net::dataplane::netns;
use overlay_hosts::{Guard, binary, must, request};
use support::{RootProcess, eventually, eventually_within, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the workers run instances with.
enum Workers {
    /// The fake runtime: the test plays the containers in their namespaces.
    Fake,
    /// Real containers: each worker gets a containerd of its own and pulls from the plain-HTTP
    /// registry at this port of the host (`containerd_support::open_registry`).
    Containerd { registry_port: u16 },
}

/// One test's world: root, cluster and two workers, each worker in its own host namespace.
struct World {
    admin: oakestra_client::Client,
    tags: [String; 2],
    /// The host's address on each worker's link (how a worker reaches this host).
    host_side: [Ipv4Addr; 2],
    /// Each worker's own address (in its host namespace).
    worker_side: [Ipv4Addr; 2],
    /// Directories of the workers' own containerds (real containers only).
    containerds: Vec<PathBuf>,
    guard: Guard,
    _root: RootProcess,
    _dirs: Vec<tempfile::TempDir>,
}

/// The underlay address of worker `i`'s host namespace in the world of `slot`.
fn worker_ip(slot: u8, i: usize) -> Ipv4Addr {
    let y = (std::process::id() % 256) as u8;
    Ipv4Addr::new(198, 18 + i as u8, y, slot * 4 + 2)
}

impl World {
    /// `slot` (0–63) keeps parallel tests apart; `cluster_args` go to the cluster.
    async fn start(slot: u8, cluster_args: &[&str]) -> World {
        Self::start_with(slot, cluster_args, Workers::Fake, [&[], &[]], &[]).await
    }

    /// [`World::start`] with workers that run `workers`, with extra arguments for each
    /// worker's `oakestra-node` and for the root.
    async fn start_with(
        slot: u8,
        cluster_args: &[&str],
        workers: Workers,
        worker_args: [&[String]; 2],
        root_args: &[&str],
    ) -> World {
        let pid = std::process::id();
        let tags = [0, 1].map(|i| format!("e{}{}{}", pid % 10_000, slot, ["a", "b"][i]));
        let hosts = tags.clone().map(|t| format!("{t}h"));
        let mut guard = Guard {
            children: Vec::new(),
            hosts: hosts.to_vec(),
            links: tags.iter().map(|t| format!("{t}x")).collect(),
            prefixes: tags.iter().map(|t| format!("{t}-")).collect(),
            cleanups: Vec::new(),
        };
        let mut containerds = Vec::new();
        // Each worker's host namespace hangs off this host by a /30 in 198.18.0.0/15 (the
        // oakestra-net tests use 100.64.0.0/10).
        let y = (pid % 256) as u8;
        let here = |i: usize| Ipv4Addr::new(198, 18 + i as u8, y, slot * 4 + 1);
        let there = |i: usize| worker_ip(slot, i);
        for (i, host) in hosts.iter().enumerate() {
            let link = guard.links[i].clone();
            must(&["ip", "netns", "add", host]);
            must(&["ip", "-n", host, "link", "set", "lo", "up"]);
            must(&[
                "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", host,
            ]);
            must(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", here(i)),
                "dev",
                &link,
            ]);
            must(&["ip", "link", "set", &link, "up"]);
            let inside = format!("{}/30", there(i));
            must(&["ip", "-n", host, "addr", "add", &inside, "dev", "eth0"]);
            must(&["ip", "-n", host, "link", "set", "eth0", "up"]);
            if i == 0 && matches!(workers, Workers::Containerd { .. }) {
                // Worker 1 sits behind a smaller link (LTE-like): its overlay MTU follows.
                must(&["ip", "link", "set", &link, "mtu", "1400"]);
                must(&["ip", "-n", host, "link", "set", "eth0", "mtu", "1400"]);
            }
            let gateway = here(i).to_string();
            must(&["ip", "-n", host, "route", "add", "default", "via", &gateway]);
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();

        let root_dir = tempfile::tempdir().unwrap();
        let root = RootProcess::start_with(root_dir.path(), root_args);
        let cluster_dir = tempfile::tempdir().unwrap();
        let (http, mqtt) = (free_port(), free_port());
        let worker_token = "overlay-worker-token";
        guard.children.push(
            Command::new(binary("oakestra-cluster"))
                .args(["--name", "overlay", "--listen", &format!("0.0.0.0:{http}")])
                .args(["--mqtt-listen", &format!("0.0.0.0:{mqtt}")])
                .args(["--root", &root.grpc, "--join-token", &root.join_token()])
                .args(["--worker-join-token", worker_token])
                .args(cluster_args)
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
        let mut dirs = vec![root_dir, cluster_dir];
        for (i, host) in hosts.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let runtime: Vec<String> = match workers {
                Workers::Fake => vec!["--runtime".into(), "fake".into()],
                Workers::Containerd { registry_port } => {
                    let containerd = PathBuf::from(format!("/run/oakestra-test/ctrd-{}", tags[i]));
                    containerds.push(containerd.clone());
                    let dir = containerd.clone();
                    guard
                        .cleanups
                        .push(Box::new(move || containerd_support::stop_containerd(&dir)));
                    let socket = containerd_support::containerd_in(&containerd);
                    vec![
                        "--runtime".into(),
                        "containerd".into(),
                        "--containerd-socket".into(),
                        socket.display().to_string(),
                        "--insecure-registry".into(),
                        format!("{}:{registry_port}", here(0)),
                    ]
                }
            };
            // nsenter joins only the network namespace (`ip netns exec` would also give the
            // worker a mount namespace of its own, hiding its instance namespaces from us).
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{host}"))
                .arg(binary("oakestra-node"))
                .args(["--cluster", &format!("{}:{http}", here(i))])
                .args(["--token", worker_token, "--name", ["w1", "w2"][i]])
                .args(&runtime)
                .args(["--overlay", "on", "--overlay-tag", &tags[i]])
                .args(["--advertise-ip", &there(i).to_string()])
                .args(["--metrics-listen", &format!("{}:10101", there(i))])
                .args(["--report-interval", "500ms"])
                .args(worker_args[i])
                .arg("--data-dir")
                .arg(dir.path())
                .env(
                    "RUST_LOG",
                    std::env::var("NODE_LOG").unwrap_or("warn".into()),
                )
                .env_remove("OAKESTRA_NODE_CONFIG")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            guard.children.push(child);
            dirs.push(dir);
        }
        // Deploys sent before a worker's MQTT session is up would wait for the cluster's
        // retry: start once both sessions are up (the workers' metrics say so).
        for i in 0..2 {
            let url = format!("http://{}:10101/metrics", there(i));
            eventually(&format!("worker {i}'s broker session"), || async {
                let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
                text.lines()
                    .any(|l| l == "oakestra_node_mqtt_connected 1")
                    .then_some(())
            })
            .await;
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
        World {
            admin,
            tags,
            host_side: [here(0), here(1)],
            worker_side: [there(0), there(1)],
            containerds,
            guard,
            _root: root,
            _dirs: dirs,
        }
    }

    /// Kills worker `i`'s `oakestra-node` with SIGKILL, as a crash or a power cut would.
    fn kill_worker(&mut self, i: usize) {
        // children: the cluster, then the workers in order.
        let worker = &mut self.guard.children[1 + i];
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    /// Total memory of one worker as the cluster sees it (MB).
    async fn worker_memory_mb(&self) -> u64 {
        let clusters = self.admin.clusters().await.unwrap();
        let cluster = clusters
            .iter()
            .find(|c| c.cluster_name == "overlay")
            .unwrap();
        cluster.memory_in_mb / cluster.active_nodes
    }

    /// Namespace of instance `n` of service `svc` of the demo app on worker `i`.
    fn ns(&self, i: usize, svc: &str, n: u32) -> PathBuf {
        netns::path_of(&format!("{}-demo.test.{svc}.test.{n}", self.tags[i]))
    }

    /// Waits for the client's namespace at `client_ns` and a server instance on each worker
    /// (up to 60 s: placement waits while a busy host's free memory is below the ask), plays
    /// those servers ("nginx on w1", "nginx on w2") and checks that new connections through
    /// the rr_ip alternate between them. Returns the servers, w1's first.
    async fn serve_on_each_worker(&self, client_ns: &Path) -> Vec<tokio::task::JoinHandle<()>> {
        let servers_ns = eventually_within(
            "the client's namespace and a server on each worker",
            Duration::from_secs(60),
            || async {
                let on = |i: usize| (0..2).map(|n| self.ns(i, "nginx", n)).find(|p| p.exists());
                client_ns.exists().then_some(())?;
                Some([on(0)?, on(1)?])
            },
        )
        .await;
        let (peers_tx, _peers) = tokio::sync::mpsc::unbounded_channel();
        let mut servers = Vec::new();
        for (i, path) in servers_ns.iter().enumerate() {
            let name = format!("nginx on w{}", i + 1);
            servers.push(overlay_hosts::serve(path, 8080, name, peers_tx.clone()).await);
        }
        alternating_answers(client_ns, 2).await;
        servers
    }

    /// Creates the demo app and deploys `instances` instances of each service.
    async fn deploy(&self, sla: &str, instances: &[(&str, u32)]) -> Vec<ServiceRecord> {
        let apps = self
            .admin
            .create_applications(&serde_json::from_str::<serde_json::Value>(sla).unwrap())
            .await
            .unwrap();
        let services = self
            .admin
            .application_services(&apps[0].id.to_string())
            .await
            .unwrap();
        for (name, count) in instances {
            let s = services.iter().find(|s| s.service_name == *name).unwrap();
            for _ in 0..*count {
                self.admin.deploy_instance(&s.id.to_string()).await.unwrap();
            }
        }
        services
    }
}

/// `count` consecutive new connections from the namespace at `from` to the rr_ip: their
/// answers, or the first failure.
async fn answers(from: &Path, count: usize) -> Result<Vec<String>, String> {
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(request(from, RR).await?.0);
    }
    Ok(answers)
}

/// Waits until all `instances` server instances answer the client at `from` through the
/// rr_ip, then asserts that consecutive new connections alternate between them (round robin;
/// Oakestra picked at random).
async fn alternating_answers(from: &Path, instances: usize) {
    eventually("answers from every server instance", || async {
        let seen: std::collections::BTreeSet<String> = answers(from, 2 * instances)
            .await
            .ok()?
            .into_iter()
            .collect();
        (seen.len() == instances).then_some(())
    })
    .await;
    let answers = answers(from, 3 * instances).await.unwrap();
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "alternating: {answers:?}");
    }
}

/// The demo app: the `curl` client on w1 and the `nginx` server on `servers_on` (`;`-joined
/// hostnames), each server instance asking for `server_memory_mb`.
fn sla(servers_on: &str, server_memory_mb: u64) -> String {
    let microservice = |name: &str, node: &str, rr: &str, memory: u64| {
        // The server also has an IPv6 rr_ip.
        let rr_v6 = if name == "nginx" {
            format!(r#", "rr_ip_v6": "{}""#, RR_V6.ip())
        } else {
            String::new()
        };
        format!(
            r#"{{"microserviceID": "", "microservice_name": "{name}", "microservice_namespace": "test",
               "virtualization": "container", "code": "docker.io/library/busybox:latest",
               "memory": {memory}, "vcpus": 0, "addresses": {{"rr_ip": "{rr}"{rr_v6}}},
               "constraints": [{{"type": "direct", "cluster": "overlay", "node": "{node}"}}]}}"#
        )
    };
    format!(
        r#"{{"sla_version": "v2.0", "customerID": "Admin",
  "applications": [{{"applicationID": "", "application_name": "demo", "application_namespace": "test",
    "application_desc": "service IPs", "microservices": [{}, {}]}}]}}"#,
        microservice("curl", "w1", "10.30.55.54", 10),
        microservice("nginx", servers_on, "10.30.55.55", server_memory_mb),
    )
}

const RR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 30, 55, 55)), 8080);
/// The server's rr_ip_v6, port 8081.
const RR_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0xfdff, 0x2000, 0, 0, 0, 0, 0, 0x55)),
    8081,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_a_server_on_another_worker_through_its_rr_ip() {
    let world = World::start(0, &[]).await;
    let services = world
        .deploy(&sla("w2", 10), &[("curl", 1), ("nginx", 1)])
        .await;
    let (client_ns, server_ns) = (world.ns(0, "curl", 0), world.ns(1, "nginx", 0));
    eventually("both instance namespaces", || async {
        (client_ns.exists() && server_ns.exists()).then_some(())
    })
    .await;
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    let _server = overlay_hosts::serve(&server_ns, 8080, "hello from nginx".into(), peers_tx).await;
    // The first SYNs may go while the workers' table queries are answered (TCP sends them
    // again), so the first request is retried.
    let (answer, seen) = eventually("an answer through the rr_ip", || async {
        request(&client_ns, RR).await.ok()
    })
    .await;
    assert_eq!(answer, "hello from nginx");
    assert_eq!(seen, RR, "the client sees the rr_ip");
    let peer = peers.recv().await.unwrap();
    let curl = services.iter().find(|s| s.service_name == "curl").unwrap();
    let curl = world.admin.service(&curl.id.to_string()).await.unwrap();
    let instance_ip = curl.instance(0).unwrap().instance_ip.unwrap();
    assert_eq!(
        peer.ip(),
        instance_ip,
        "the server sees the client's instance IP"
    );

    // IPv6: the same server through the rr_ip_v6 (the client's worker routes fdff::/16 to its
    // proxy and knows the service's IPv6 addresses from the cluster's table).
    let (peers6_tx, mut peers6) = tokio::sync::mpsc::unbounded_channel();
    let _server6 = overlay_hosts::serve_at(
        &server_ns,
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, RR_V6.port())),
        "hello over IPv6".into(),
        peers6_tx,
    )
    .await;
    let (answer, seen) = eventually("an answer through the rr_ip_v6", || async {
        request(&client_ns, RR_V6).await.ok()
    })
    .await;
    assert_eq!(answer, "hello over IPv6");
    assert_eq!(seen, RR_V6, "the client sees the rr_ip_v6");
    let peer = peers6.recv().await.unwrap();
    let instance_ip_v6 = curl.instance(0).unwrap().instance_ip_v6.unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::V6(instance_ip_v6),
        "the server sees the client's instance IPv6"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_to_an_rr_ip_alternate_between_its_instances() {
    // The root hands out /24s here (the other tests keep the default /26): the prefix goes from
    // the root through the cluster and the registration answer to each worker's data plane.
    let world = World::start_with(
        1,
        &[],
        Workers::Fake,
        [&[], &[]],
        &["--worker-subnet-prefix", "24"],
    )
    .await;
    world
        .deploy(&sla("w2", 10), &[("nginx", 2), ("curl", 1)])
        .await;
    let client_ns = world.ns(0, "curl", 0);
    let servers_ns = [world.ns(1, "nginx", 0), world.ns(1, "nginx", 1)];
    eventually("the client's and both servers' namespaces", || async {
        (client_ns.exists() && servers_ns.iter().all(|p| p.exists())).then_some(())
    })
    .await;
    let (peers_tx, _peers) = tokio::sync::mpsc::unbounded_channel();
    let mut servers = Vec::new();
    for (n, path) in servers_ns.iter().enumerate() {
        servers
            .push(overlay_hosts::serve(path, 8080, format!("nginx-{n}"), peers_tx.clone()).await);
    }
    alternating_answers(&client_ns, 2).await;
    // Every instance's eth0 holds its address with the /24's prefix, and the /118 for IPv6.
    for path in servers_ns.iter().chain([&client_ns]) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let out = Command::new("ip")
            .args(["-n", name, "-o", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("inet 10.") && text.contains("/24 "),
            "{name}: {text}"
        );
        assert!(text.contains("/118 "), "{name}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_server_instance_s_worker_dies_new_connections_reach_the_survivor_within_15_s() {
    // A worker silent for 3 s is dead (the default 10 s would leave too little of the 15 s).
    let mut world = World::start(2, &["--worker-timeout", "3s"]).await;
    // Each server instance asks for more than half a worker's memory: the two land on
    // different workers, and the dead worker's one cannot be placed again on the survivor
    // (so the survivor is the instance on w1, which the test plays).
    let server_memory = world.worker_memory_mb().await * 11 / 20;
    world
        .deploy(&sla("w1;w2", server_memory), &[("nginx", 2), ("curl", 1)])
        .await;
    let client_ns = world.ns(0, "curl", 0);
    let servers = world.serve_on_each_worker(&client_ns).await;

    // w2 dies with its server: the worker process is killed and, since with the fake runtime
    // the instance is the test's listener, that listener goes too.
    world.kill_worker(1);
    servers[1].abort();
    let died = Instant::now();
    let deadline = died + Duration::from_secs(15);
    // Every one of 6 consecutive new connections must succeed and reach the survivor, the
    // first of them starting within 15 s of the death. Each attempt is bounded by the
    // request timeouts, so the loop ends.
    loop {
        let started = Instant::now();
        assert!(
            started <= deadline,
            "15 s after w2 died, new connections through the rr_ip still fail or reach the dead instance"
        );
        match answers(&client_ns, 6).await {
            Ok(answers) if answers.iter().all(|a| a == "nginx on w1") => break,
            Ok(answers) => eprintln!("{:?} after the death: {answers:?}", died.elapsed()),
            Err(e) => eprintln!("{:?} after the death: {e}", died.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "every connection reaches the survivor {:?} after the death",
        died.elapsed()
    );
}

/// Output of a command run in the host namespace of worker `i` (its iptables, its links).
fn on_worker(world: &World, i: usize, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &world.guard.hosts[i]])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the workers still hold of instances: namespaces, `/etc/netns` files, veths, DNAT
/// rules, containers.
fn leftovers(world: &World) -> Vec<String> {
    let mut left = Vec::new();
    for (i, tag) in world.tags.iter().enumerate() {
        let prefix = format!("{tag}-");
        left.extend(
            netns::list(&prefix)
                .unwrap()
                .into_iter()
                .map(|n| format!("namespace {n}")),
        );
        if let Ok(dir) = std::fs::read_dir(netns::ETC_NETNS_DIR) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    left.push(format!("{}/{name}", netns::ETC_NETNS_DIR));
                }
            }
        }
        for link in on_worker(world, i, &["ip", "-o", "link", "show"]).lines() {
            let name = link.split(": ").nth(1).unwrap_or_default();
            if name.starts_with(&format!("{tag}v")) || name.starts_with(&format!("{tag}p")) {
                left.push(format!("veth {name} on w{}", i + 1));
            }
        }
        for table in ["nat", "filter"] {
            for rule in on_worker(world, i, &["iptables", "-w", "10", "-t", table, "-S"]).lines() {
                if rule.contains(&format!("{tag}:")) {
                    left.push(format!("rule on w{}: {rule}", i + 1));
                }
            }
        }
        let socket = world.containerds[i].join("containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "oakestra", "containers", "ls", "-q"])
            .output()
            .unwrap();
        for c in String::from_utf8_lossy(&out.stdout).lines() {
            left.push(format!("container {c} on w{}", i + 1));
        }
    }
    left
}

/// The demo with real containers, each worker with its own containerd: `nginx` (the busybox
/// httpd image, naming itself) on w2 with rr_ip 10.30.55.55 and port mapping 8080:80, `curl`
/// (busybox `nc` and `nslookup` in a loop; the static busybox's `wget` crashes in a rootfs
/// without glibc's NSS files) on w1.
fn clientsrvr_sla(image: &str) -> serde_json::Value {
    let client = r"while true; do printf 'GET / HTTP/1.0\r\n\r\n' | nc 10.30.55.55 80; nslookup nginx.test.demo.test; sleep 1; done";
    let service = |name: &str, node: &str| {
        serde_json::json!({
            "microserviceID": "", "microservice_name": name, "microservice_namespace": "test",
            "virtualization": "container", "code": image, "memory": 32, "vcpus": 0,
            "constraints": [{"type": "direct", "cluster": "overlay", "node": node}]
        })
    };
    let mut curl = service("curl", "w1");
    curl["cmd"] = serde_json::json!(["sh", "-c", client]);
    let mut nginx = service("nginx", "w2");
    nginx["environment"] = serde_json::json!(["INSTANCE_NAME=nginx-on-w2"]);
    nginx["port"] = "8080:80".into();
    nginx["addresses"] = serde_json::json!({"rr_ip": "10.30.55.55"});
    serde_json::json!({
        "sla_version": "v2.0", "customerID": "Admin",
        "applications": [{
            "applicationID": "", "application_name": "demo", "application_namespace": "test",
            "application_desc": "the clientsrvr demo", "microservices": [curl, nginx]
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clientsrvr_demo_runs_in_real_containers_across_two_workers() {
    let registry = containerd_support::open_registry();
    let registry_port: u16 = registry.rsplit(':').next().unwrap().parse().unwrap();
    let pushed = containerd_support::push(
        &registry,
        "oaktest/demo",
        "v1",
        &containerd_support::build_image("overlay-demo"),
    )
    .await;
    let world = World::start_with(
        3,
        &[],
        Workers::Containerd { registry_port },
        [&[], &[]],
        &[],
    )
    .await;
    // The workers pull through the host's address on their link.
    let image = pushed.replacen(
        &registry,
        &format!("{}:{registry_port}", world.host_side[0]),
        1,
    );
    let services = world
        .deploy(
            &clientsrvr_sla(&image).to_string(),
            &[("nginx", 1), ("curl", 1)],
        )
        .await;
    let id = |name: &str| {
        services
            .iter()
            .find(|s| s.service_name == name)
            .unwrap()
            .id
            .to_string()
    };
    let (curl, nginx) = (id("curl"), id("nginx"));

    // The client's own output, read through the API: the server's page through the rr_ip,
    // and the server's name resolved by the overlay DNS (its resolv.conf points there).
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let logs = world.admin.logs(&curl, 0, Some(200)).await;
        if let Ok(logs) = &logs
            && logs.contains("hello from nginx-on-w2")
            && logs.contains("Address: 10.30.55.55")
        {
            break logs.clone();
        }
        assert!(
            Instant::now() < deadline,
            "60 s after the deploy the client's log lacks the page or the name: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("client log:\n{logs}");

    // Each worker detected its overlay MTU from its link (1,400 and 1,500 bytes, less the
    // tunnel's 40), uses it on its instances' veths and reports it in the worker list.
    let clusters = world.admin.clusters().await.unwrap();
    let cluster = clusters
        .iter()
        .find(|c| c.cluster_name == "overlay")
        .unwrap();
    let workers = world.admin.cluster_workers(&cluster.id).await.unwrap();
    let mtu_of = |host: &str| workers.iter().find(|w| w.host == host).unwrap().overlay_mtu;
    assert_eq!(
        (mtu_of("w1"), mtu_of("w2")),
        (Some(1360), Some(1460)),
        "{workers:?}"
    );
    let curl_ns = world.ns(0, "curl", 0);
    let curl_ns = curl_ns.file_name().unwrap().to_str().unwrap();
    let eth0 = Command::new("ip")
        .args(["-n", curl_ns, "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    let eth0 = String::from_utf8_lossy(&eth0.stdout);
    assert!(eth0.contains("mtu 1360"), "the client's eth0: {eth0}");

    // Port mapping: from outside the worker (this host), the worker's port 8080.
    let outside = SocketAddr::from((world.worker_side[1], 8080));
    let page = eventually("the server on the worker's port 8080", || async {
        let mut s = tokio::net::TcpStream::connect(outside).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut page = String::new();
        s.read_to_string(&mut page).await.ok()?;
        Some(page)
    })
    .await;
    assert!(page.contains("hello from nginx-on-w2"), "{page}");

    let server = world.admin.service(&nginx).await.unwrap();
    assert_eq!(
        server
            .instance(0)
            .unwrap()
            .status
            .map(|s| s.to_string())
            .as_deref(),
        Some("RUNNING"),
        "{server:?}"
    );
    // Undeploying the application leaves nothing of its instances on either worker.
    world
        .admin
        .delete_application(&server.application_id.to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = leftovers(&world);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after the undeploy: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const CLOSEST: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 30, 66, 66)), 8080);

/// A world with a server instance on each worker behind the user-given closest IP 10.30.66.66
/// and the client on w1, both servers answering through the rr_ip (so the client's worker
/// knows both); returns the world and the client's namespace.
async fn closest_world(
    slot: u8,
    w1_args: &[String],
) -> (World, PathBuf, Vec<tokio::task::JoinHandle<()>>) {
    let world = World::start_with(slot, &[], Workers::Fake, [w1_args, &[]], &[]).await;
    // More than half a worker's total memory each: never two server instances on one worker
    // (the cluster subtracts placed demand from the total), whatever the host's load.
    let server_memory = world.worker_memory_mb().await * 51 / 100;
    let mut sla: serde_json::Value = serde_json::from_str(&sla("w1;w2", server_memory)).unwrap();
    sla["applications"][0]["microservices"][1]["addresses"]["closest_ip"] =
        CLOSEST.ip().to_string().into();
    let services = world
        .deploy(&sla.to_string(), &[("nginx", 2), ("curl", 1)])
        .await;
    let nginx = services.iter().find(|s| s.service_name == "nginx").unwrap();
    let nginx = world.admin.service(&nginx.id.to_string()).await.unwrap();
    assert_eq!(
        nginx.closest_ip.map(std::net::IpAddr::V4),
        Some(CLOSEST.ip()),
        "the root reserved the user-given closest IP"
    );
    assert!(
        nginx.closest_ip_v6.is_some(),
        "and allocated a closest IPv6"
    );
    let client_ns = world.ns(0, "curl", 0);
    let servers = world.serve_on_each_worker(&client_ns).await;
    (world, client_ns, servers)
}

/// `count` consecutive new connections from `from` to the closest IP: who answered each, all
/// of them seeing the closest IP as their peer.
async fn closest_answers(from: &Path, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..count {
        let (answer, seen) = request(from, CLOSEST).await.unwrap();
        assert_eq!(seen, CLOSEST, "the client sees the closest IP");
        out.push(answer);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closest_ip_answers_from_the_instance_on_the_client_s_own_worker() {
    let slot = 11;
    let (_world, client_ns, _servers) = closest_world(slot, &[]).await;
    assert_eq!(
        closest_answers(&client_ns, 6).await,
        vec!["nginx on w1"; 6],
        "the local instance (RTT 0) wins over the remote one"
    );
    // The client's worker measures the other worker's tunnel endpoint over the tunnel and
    // shows it in its metrics.
    let url = format!("http://{}:10101/metrics", worker_ip(slot, 0));
    let w2 = format!(
        "oakestra_node_overlay_rtt_seconds{{node=\"{}:50103\",source=\"measured\"}}",
        worker_ip(slot, 1)
    );
    let rtt: f64 = eventually("w1's measured RTT to w2", || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let line = text.lines().find(|l| l.starts_with(&w2))?;
        line.rsplit(' ').next()?.parse().ok()
    })
    .await;
    assert!(rtt > 0.0 && rtt < 0.5, "a veth RTT: {rtt} s");
    // Still the local one: a measured remote worker does not beat this worker's own 0.
    assert_eq!(closest_answers(&client_ns, 2).await, vec!["nginx on w1"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rtts_overridden_the_closest_ip_follows_them_to_the_other_worker() {
    let slot = 12;
    // The client's worker believes itself 50 ms away and w2 1 ms away.
    let overrides = format!("{}=50,{}=1", worker_ip(slot, 0), worker_ip(slot, 1));
    let (world, client_ns, _servers) =
        closest_world(slot, &["--rtt-override".into(), overrides]).await;
    assert_eq!(
        closest_answers(&client_ns, 6).await,
        vec!["nginx on w2"; 6],
        "the instance on the worker with the lower (overridden) RTT wins"
    );
    // The same through the service's closest IPv6 (allocated by the root).
    let nginx = world
        .admin
        .services()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.service_name == "nginx")
        .unwrap();
    let closest_v6 = SocketAddr::from((nginx.closest_ip_v6.unwrap(), 8081));
    let (peers_tx, _peers) = tokio::sync::mpsc::unbounded_channel();
    let mut servers_v6 = Vec::new();
    for i in 0..2 {
        let path = (0..2)
            .map(|n| world.ns(i, "nginx", n))
            .find(|p| p.exists())
            .unwrap();
        servers_v6.push(
            overlay_hosts::serve_at(
                &path,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, closest_v6.port())),
                format!("nginx on w{} over IPv6", i + 1),
                peers_tx.clone(),
            )
            .await,
        );
    }
    for _ in 0..4 {
        let (answer, seen) = eventually("an answer through the closest IPv6", || async {
            request(&client_ns, closest_v6).await.ok()
        })
        .await;
        assert_eq!(
            (answer.as_str(), seen),
            ("nginx on w2 over IPv6", closest_v6),
            "the closest IPv6 follows the RTTs too, and the client sees it"
        );
    }
    let url = format!("http://{}:10101/metrics", worker_ip(slot, 0));
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(&format!(
            "oakestra_node_overlay_rtt_seconds{{node=\"{}:50103\",source=\"override\"}} 0.05",
            worker_ip(slot, 0)
        )),
        "{text}"
    );
    // Those connections crossed the tunnel to w2 and back: TCP from a namespace has a partial
    // checksum, so it travels framed (with its offload metadata).
    for direction in ["sent", "received"] {
        let line = format!(
            "oakestra_node_overlay_tunnel_packets_total{{direction=\"{direction}\",kind=\"frame\"}} "
        );
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {text}"));
        assert!(n >= 6, "{direction}: {n} framed packets for 6 connections");
    }
}

/// The health-probe demo (issue 18): `web` on w2 behind rr_ip 10.30.57.57, whose readiness
/// endpoint (a CGI script of the busybox httpd) answers 503 until `/www/ready.flag` exists
/// and whose liveness probe (`exec`) fails once `/www/dead` exists; `client` (a sleeping
/// container) on w1, from whose namespace the test sends its requests.
fn probes_sla(image: &str) -> serde_json::Value {
    let cgi = r#"#!/bin/sh
if [ -e /www/ready.flag ]; then printf 'HTTP/1.0 200 OK\r\n\r\nready\n'; else printf 'HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n'; fi
"#;
    let script = format!(
        "mkdir -p /www/cgi-bin && echo 'hello from web' > /www/index.html && \
         cat > /www/cgi-bin/ready <<'EOF'\n{cgi}EOF\nchmod +x /www/cgi-bin/ready && exec httpd -f -p 80 -h /www"
    );
    let service = |name: &str, node: &str| {
        serde_json::json!({
            "microserviceID": "", "microservice_name": name, "microservice_namespace": "test",
            "virtualization": "container", "code": image, "memory": 32, "vcpus": 0,
            "constraints": [{"type": "direct", "cluster": "overlay", "node": node}]
        })
    };
    let mut client = service("client", "w1");
    client["cmd"] = serde_json::json!(["sleep", "3600"]);
    let mut web = service("web", "w2");
    web["cmd"] = serde_json::json!(["sh", "-c", script]);
    web["addresses"] = serde_json::json!({"rr_ip": PROBED.ip().to_string()});
    web["readiness_probe"] = serde_json::json!({
        "http_get": {"port": 80, "path": "/cgi-bin/ready"}, "period": 0.5, "failure_threshold": 1
    });
    web["liveness_probe"] = serde_json::json!({
        "exec": ["sh", "-c", "test ! -e /www/dead"], "period": 0.5, "failure_threshold": 2
    });
    serde_json::json!({
        "sla_version": "v2.0", "customerID": "Admin",
        "applications": [{
            "applicationID": "", "application_name": "demo", "application_namespace": "test",
            "microservices": [client, web]
        }]
    })
}

const PROBED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 30, 57, 57)), 80);

/// `GET /` from the namespace at `from` to `to`: the page, or why there is none.
async fn page_from(from: &Path, to: SocketAddr) -> Result<String, String> {
    let stream = netns::run_in(from, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("connect to {to}: {e}"))?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
    let talk = async {
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut page = String::new();
        stream.read_to_string(&mut page).await?;
        Ok::<_, std::io::Error>(page)
    };
    match tokio::time::timeout(Duration::from_secs(2), talk).await {
        Ok(Ok(page)) if page.contains("hello from web") => Ok(page),
        Ok(Ok(page)) => Err(format!("unexpected answer {page:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// Runs `cmd` in the `web` container on w2 through that worker's containerd (`ctr`).
fn in_web_container(world: &World, cmd: &[&str]) {
    let socket = world.containerds[1].join("containerd.sock");
    let exec_id = format!(
        "test-{}",
        cmd.len() * 7 + cmd.iter().map(|c| c.len()).sum::<usize>()
    );
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", "oakestra", "task", "exec", "--exec-id", &exec_id])
        .arg("demo.test.web.test.instance.0")
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr exec {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unready_container_gets_no_traffic_and_a_dead_one_is_restarted() {
    let registry = containerd_support::open_registry();
    let registry_port: u16 = registry.rsplit(':').next().unwrap().parse().unwrap();
    let pushed = containerd_support::push(
        &registry,
        "oaktest/probes",
        "v1",
        &containerd_support::build_image("overlay-probes"),
    )
    .await;
    let world = World::start_with(
        9,
        &[],
        Workers::Containerd { registry_port },
        [&[], &[]],
        &[],
    )
    .await;
    let image = pushed.replacen(
        &registry,
        &format!("{}:{registry_port}", world.host_side[0]),
        1,
    );
    let services = world
        .deploy(
            &probes_sla(&image).to_string(),
            &[("web", 1), ("client", 1)],
        )
        .await;
    let web = services
        .iter()
        .find(|s| s.service_name == "web")
        .unwrap()
        .id
        .to_string();
    let client_ns = world.ns(0, "client", 0);

    // RUNNING, but its readiness endpoint answers 503: not ready, and no traffic reaches it
    // through the rr_ip.
    eventually_within(
        "web RUNNING and unready",
        Duration::from_secs(60),
        || async {
            let s = world.admin.service(&web).await.ok()?;
            let i = s.instance(0)?;
            (i.status.map(|s| s.to_string()).as_deref() == Some("RUNNING")
                && i.ready == Some(false))
            .then_some(())
        },
    )
    .await;
    eventually("the client's namespace", || async {
        client_ns.exists().then_some(())
    })
    .await;
    let s = world.admin.service(&web).await.unwrap();
    assert_eq!(s.status_with_readiness(), "RUNNING 0/1 ready");
    assert_eq!(s.ready_instances, Some(0));
    for _ in 0..6 {
        let answer = page_from(&client_ns, PROBED).await;
        assert!(
            answer.is_err(),
            "an unready instance got traffic: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // It turns ready: traffic reaches it through the rr_ip.
    let ready_at = Instant::now();
    in_web_container(&world, &["sh", "-c", ": > /www/ready.flag"]);
    let page = loop {
        match page_from(&client_ns, PROBED).await {
            Ok(page) => break page,
            Err(e) => assert!(
                ready_at.elapsed() < Duration::from_secs(20),
                "20 s after it turned ready, still no traffic: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delay = ready_at.elapsed();
    eprintln!("readiness-to-traffic delay: {delay:?} (readiness period 0.5 s)");
    assert!(page.contains("hello from web"), "{page}");
    let s = world.admin.service(&web).await.unwrap();
    assert_eq!(s.instance(0).unwrap().ready, Some(true));
    assert_eq!(s.status_with_readiness(), "RUNNING 1/1 ready");
    let ready_events = world
        .admin
        .events(&oakestra_client::EventQuery {
            service: Some(web.clone()),
            kind: Some("ready".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ready_events.len(), 1, "{ready_events:?}");

    // Its liveness probe fails: the worker restarts it (counted at the root, with the
    // reason in the events), and the new run is unready until it proves itself again.
    in_web_container(&world, &["sh", "-c", ": > /www/dead"]);
    eventually_within(
        "a restart counted at the root",
        Duration::from_secs(30),
        || async {
            let s = world.admin.service(&web).await.ok()?;
            let i = s.instance(0)?;
            (i.restart_count >= 1 && i.status.map(|s| s.to_string()).as_deref() == Some("RUNNING"))
                .then_some(())
        },
    )
    .await;
    let events = world
        .admin
        .events(&oakestra_client::EventQuery {
            service: Some(web.clone()),
            kind: Some("restarting".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e
            .message
            .contains("liveness probe failed: exec sh -c test ! -e /www/dead")),
        "{events:?}"
    );
    eventually("the restarted run unready", || async {
        let s = world.admin.service(&web).await.ok()?;
        (s.instance(0)?.ready == Some(false)).then_some(())
    })
    .await;
    assert!(page_from(&client_ns, PROBED).await.is_err());
    let s = world.admin.service(&web).await.unwrap();
    world
        .admin
        .delete_application(&s.application_id.to_string())
        .await
        .unwrap();
}
