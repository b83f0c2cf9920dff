//! The engine with the overlay: an instance's network namespace exists before the runtime
//! starts it (and is what the containerd runtime is told to join), and goes when the instance
//! is deleted or fails to start. Once with the in-memory data plane, once for real (root:
//! bridge, namespaces, veths, iptables, with a tag and subnet of this test's own).

#[path = "support/dns_upstream.rs"]
mod dns_upstream;
use dns_upstream::Upstream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_core::status::DeploymentStatus;
use oakestra_net::dataplane::{DataPlaneConfig, Naming};
use oakestra_node::engine::{Engine, Reporter};
use oakestra_node::overlay::{Overlay, PlaneKind};
use oakestra_node::state::{NodeState, StateFile};
use oakestra_proto::mqtt::{DeleteCommand, DeployCommand, JobStatusReport};
use oakestra_runtime::{FakeConfig, FakeRuntime, InstanceId};

#[derive(Debug, Default)]
struct Reports(Mutex<Vec<JobStatusReport>>);

impl Reporter for Reports {
    fn job_status(&self, report: JobStatusReport) {
        self.0.lock().unwrap().push(report);
    }
}

impl Reports {
    fn last(&self, n: u32) -> Option<JobStatusReport> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r.instance == n)
            .cloned()
    }
}

fn deploy(n: u32, port: &str) -> DeployCommand {
    serde_json::from_value(serde_json::json!({
        "_id": "6b026d263370213c22d0dac7", "job_name": "app.ns.web.ns", "instance_number": n,
        "image": "docker.io/library/nginx:latest", "virtualization": "container", "port": port
    }))
    .unwrap()
}

fn delete(n: u32) -> DeleteCommand {
    serde_json::from_value(serde_json::json!({
        "_id": "6b026d263370213c22d0dac7", "job_name": "app.ns.web.ns", "instance_number": n
    }))
    .unwrap()
}

/// Removes what a real-plane test made, also when it fails.
struct Cleanup(Option<DataPlaneConfig>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(config) = self.0.take() else { return };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use oakestra_net::dataplane::DataPlane;
                    if let Ok(plane) = oakestra_net::dataplane::LinuxDataPlane::new(config) {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(10), plane.teardown_host())
                                .await;
                    }
                });
        })
        .join();
    }
}

async fn lifecycle(kind: PlaneKind, subnet: (std::net::Ipv4Addr, std::net::Ipv6Addr)) {
    let dir = tempfile::tempdir().unwrap();
    let overlay = Overlay::new(kind.clone());
    let real = matches!(kind, PlaneKind::Linux { .. });
    // Port 53: `busybox nslookup` below cannot ask another; the bridge address is this test's.
    overlay.set_dns(oakestra_node::overlay::DnsListen::Bridge(53));
    // A systemd-resolved host: its resolv.conf lists only the stub on 127.0.0.53, which an
    // instance cannot reach; the responder forwards to it.
    let upstream = if real {
        Some(Upstream::start("127.0.0.53:53", &[("test.example", [192, 0, 2, 77])]).await)
    } else {
        None
    };
    let resolv = dir.path().join("host-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
    )
    .unwrap();
    overlay.set_host_resolv_conf(&resolv);
    overlay.enable(subnet.0, subnet.1, &[]).await.unwrap();
    let bridge = std::net::Ipv4Addr::from(u32::from(subnet.0) + 1);
    if real {
        // The DNS responder listens on the bridge address (the instances' gateway).
        let at = overlay
            .dns_addr()
            .expect("a DNS responder on the bridge, udp port 53 (is another DNS server bound to 0.0.0.0:53?)");
        assert_eq!(at, std::net::SocketAddr::from((bridge, 53)));
        let client = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let (rcode, _, _) = ask(&client, at, &dns_query(9, "example.com", 1)).await;
        assert_eq!(
            rcode, 3,
            "not a service name: the host's resolver says NXDOMAIN"
        );
        assert_eq!(upstream.as_ref().map(Upstream::queries), Some(1));
    } else {
        assert_eq!(overlay.dns_addr(), None, "the fake plane has no bridge");
    }
    let reports = Arc::new(Reports::default());
    let engine = Engine::new(
        Arc::new(FakeRuntime::new(FakeConfig::default()).unwrap()),
        StateFile::new(dir.path()),
        NodeState::default(),
        reports.clone(),
        "127.0.0.1".into(),
        Duration::from_secs(1),
    );
    engine.set_network(overlay.clone());
    let resolve = overlay.resolver();

    engine.deploy(deploy(0, "18080:80;15353:53/udp")).await;
    assert_eq!(reports.last(0).unwrap().status, DeploymentStatus::Running);
    let id = InstanceId::new("app.ns.web.ns", 0);
    let path = overlay.netns_of(&id).expect("a namespace for the instance");
    assert_eq!(
        resolve(&id),
        Some(path.clone()),
        "what containerd is told to join"
    );
    let plane = overlay.plane().unwrap();
    let attached = plane.attachments();
    assert_eq!(attached.len(), 1);
    let base = u32::from(subnet.0);
    assert_eq!(attached[0].ipv4, std::net::Ipv4Addr::from(base + 2));
    assert_eq!(attached[0].ports.len(), 2);
    if real {
        assert!(std::path::Path::new(&path).exists(), "{path}");
        // From inside the instance's namespace, the service's name resolves to its rr_ip
        // through the responder on the bridge.
        overlay.on_table_result(
            serde_json::from_value(serde_json::json!({
                "app_name": "app.ns.web.ns", "query_key": "app.ns.web.ns",
                "instance_list": [{
                    "instance_number": 0, "namespace_ip": attached[0].ipv4.to_string(),
                    "host_ip": "192.0.2.1", "host_port": 50103,
                    "service_ip": [{"IpType": "RR", "Address": "10.30.55.55"},
                                   {"IpType": "instance_ip", "Address": "10.30.0.3"}]
                }]
            }))
            .unwrap(),
        );
        let (netns, server) = (path.clone(), bridge.to_string());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("timeout")
                .args([
                    "20",
                    "nsenter",
                    &format!("--net={netns}"),
                    "busybox",
                    "nslookup",
                ])
                .args(["web.ns.app.ns", &server])
                .output()
                .expect("timeout, nsenter and busybox (run scripts/setup)")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("10.30.55.55"),
            "nslookup in the instance's namespace: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // With the instance's own resolv.conf (`ip netns exec` mounts it as the container
        // runtime does): a service name and an external name, through the responder.
        let name = std::path::Path::new(&path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let written = std::fs::read_to_string(format!("/etc/netns/{name}/resolv.conf")).unwrap();
        let servers: Vec<&str> = written
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(servers, [format!("nameserver {bridge}")], "{written}");
        for (lookup, expected) in [
            ("web.ns.app.ns", "10.30.55.55"),
            ("test.example", "192.0.2.77"),
        ] {
            let name = name.clone();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("timeout")
                    .args([
                        "20", "ip", "netns", "exec", &name, "busybox", "nslookup", lookup,
                    ])
                    .output()
                    .expect("timeout, ip and busybox (run scripts/setup)")
            })
            .await
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(expected),
                "nslookup {lookup} with the instance's resolv.conf: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // A second instance asking for the same host port fails with the reason, and leaves no
    // network behind.
    engine.deploy(deploy(1, "18080:8080")).await;
    let failed = reports.last(1).unwrap();
    assert_eq!(failed.status, DeploymentStatus::Failed);
    assert!(
        failed.status_detail.contains("18080"),
        "{}",
        failed.status_detail
    );
    assert_eq!(resolve(&InstanceId::new("app.ns.web.ns", 1)), None);
    assert_eq!(plane.attachments().len(), 1);

    engine.delete(delete(0)).await;
    assert_eq!(
        reports.last(0).unwrap().status,
        DeploymentStatus::Undeployed
    );
    assert_eq!(resolve(&id), None);
    assert!(plane.attachments().is_empty());
    if real {
        assert!(!std::path::Path::new(&path).exists(), "{path} removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_gives_instances_a_network_and_takes_it_away_fake_plane() {
    lifecycle(
        PlaneKind::Fake,
        ("10.18.0.64".parse().unwrap(), "fc00::100".parse().unwrap()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_gives_instances_a_network_and_takes_it_away_real_plane() {
    let pid = std::process::id();
    let naming = Naming::new(&format!("n{}", pid % 1_000_000)).unwrap();
    // 10.29.0.0/18: the oakestra-net tests use 10.18–10.28 and 10.29.128.0/17, the
    // containerd test 10.29.64.0/18.
    let slot = pid % 256;
    let subnet = (
        std::net::Ipv4Addr::new(10, 29, (slot / 4) as u8, ((slot % 4) * 64) as u8),
        format!("fc00::2:{:x}:100", pid % 0xffff).parse().unwrap(),
    );
    let mut config = DataPlaneConfig::new(oakestra_net::ipam::WorkerSubnets {
        ipv4: oakestra_net::ipam::Ipv4Subnet::new(subnet.0).unwrap(),
        ipv6: oakestra_net::ipam::Ipv6Subnet::new(subnet.1).unwrap(),
    });
    config.naming = naming.clone();
    let _cleanup = Cleanup(Some(config));
    lifecycle(
        PlaneKind::Linux {
            naming,
            mtu: DataPlaneConfig::DEFAULT_MTU,
        },
        subnet,
    )
    .await;
}

/// Records what the overlay publishes.
#[derive(Debug, Default)]
struct Published(Mutex<Vec<(oakestra_proto::mqtt::NodeTopic, serde_json::Value)>>);

impl oakestra_node::overlay::NetPublisher for Published {
    fn publish(&self, topic: oakestra_proto::mqtt::NodeTopic, payload: Vec<u8>) {
        self.0
            .lock()
            .unwrap()
            .push((topic, serde_json::from_slice(&payload).unwrap()));
    }
}

impl Published {
    fn take(&self) -> Vec<(oakestra_proto::mqtt::NodeTopic, serde_json::Value)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// This worker's tunnel endpoint in the fake-plane tests.
const ENDPOINT: &str = "192.0.2.1:50103";

/// An overlay on the fake plane, enabled with subnet 10.18.0.64/26 and a tunnel endpoint,
/// publishing into the returned recorder.
async fn enabled_overlay() -> (Arc<Overlay>, Arc<Published>) {
    let overlay = Overlay::new(PlaneKind::Fake);
    overlay.set_tunnel("0.0.0.0:50103".parse().unwrap(), ENDPOINT.parse().unwrap());
    let published = Arc::new(Published::default());
    overlay.set_publisher(published.clone());
    overlay
        .enable(
            "10.18.0.64".parse().unwrap(),
            "fc00::100".parse().unwrap(),
            &[],
        )
        .await
        .unwrap();
    (overlay, published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_instances_are_reported_and_table_answers_fill_the_proxy() {
    use oakestra_proto::mqtt::{NodeTopic, TableQueryRequest, TableQueryResult};
    let dir = tempfile::tempdir().unwrap();
    let (overlay, published) = enabled_overlay().await;
    let endpoint: std::net::SocketAddr = ENDPOINT.parse().unwrap();
    let engine = Engine::new(
        Arc::new(FakeRuntime::new(FakeConfig::default()).unwrap()),
        StateFile::new(dir.path()),
        NodeState::default(),
        Arc::new(Reports::default()),
        "192.0.2.1".into(),
        Duration::from_secs(1),
    );
    engine.set_network(overlay.clone());

    engine.deploy(deploy(0, "")).await;
    let sent = published.take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    // Oakestra's `net/service/deployed`, with the tunnel endpoint and the namespace address.
    assert_eq!(sent[0].0, NodeTopic::NetServiceDeployed);
    let d = &sent[0].1;
    assert_eq!(d["appname"], "app.ns.web.ns");
    assert_eq!(d["instance_number"], 0);
    assert_eq!(d["nsip"], "10.18.0.66");
    assert_eq!(d["host_ip"], "192.0.2.1");
    assert_eq!(d["host_port"], 50103);
    // Then a table query for its own service.
    assert_eq!(sent[1].0, NodeTopic::NetTableQueryRequest);
    assert_eq!(sent[1].1["sname"], "app.ns.web.ns");

    // The cluster's answer fills the proxy's table.
    let answer: TableQueryResult = serde_json::from_value(serde_json::json!({
        "app_name": "app.ns.web.ns", "query_key": "app.ns.web.ns",
        "instance_list": [{
            "instance_number": 0, "namespace_ip": "10.18.0.66", "namespace_ip_v6": "fc00::102",
            "host_ip": "192.0.2.1", "host_port": 50103,
            "service_ip": [
                {"IpType": "RR", "Address": "10.30.55.55", "Address_v6": "fdff:2000::55"},
                {"IpType": "instance_ip", "Address": "10.30.0.3", "Address_v6": "fdff::3"},
                {"IpType": "Closest", "Address": "10.30.66.66", "Address_v6": "fdff:2000::66"}
            ]
        }]
    }))
    .unwrap();
    // An RTT override for this worker's own host applies to the entries as they arrive.
    overlay.set_rtt_overrides([("192.0.2.1".parse().unwrap(), Duration::from_millis(7))].into());
    overlay.on_table_result(answer);
    {
        let proxy = overlay.proxy().unwrap().lock().unwrap();
        let routes = proxy.service("app.ns.web.ns").unwrap();
        assert_eq!(routes.rr_ip, Some("10.30.55.55".parse().unwrap()));
        assert_eq!(routes.closest_ip, Some("10.30.66.66".parse().unwrap()));
        assert_eq!(proxy.rtt(endpoint), Some(Duration::from_millis(7)));
        assert_eq!(routes.instances.len(), 1);
        assert_eq!(routes.instances[0].node, endpoint);
        assert_eq!(routes.instances[0].nsip.to_string(), "10.18.0.66");
        // The IPv6 addresses too, for IPv6 service traffic.
        assert_eq!(routes.rr_ip_v6, Some("fdff:2000::55".parse().unwrap()));
        assert_eq!(routes.closest_ip_v6, Some("fdff:2000::66".parse().unwrap()));
        assert_eq!(
            routes.instances[0].instance_ip_v6,
            Some("fdff::3".parse().unwrap())
        );
        assert_eq!(
            routes.instances[0].nsip_v6,
            Some("fc00::102".parse().unwrap())
        );
    }

    // A query is asked once while it is pending, and again after its answer.
    let by_ip = || TableQueryRequest {
        sip: "10.30.9.9".into(),
        ..Default::default()
    };
    overlay.query(by_ip());
    overlay.query(by_ip());
    assert_eq!(published.take().len(), 1);
    overlay.on_table_result(
        serde_json::from_value(
            serde_json::json!({"app_name": null, "instance_list": [], "query_key": "10.30.9.9"}),
        )
        .unwrap(),
    );
    overlay.query(by_ip());
    assert_eq!(published.take().len(), 1);

    // The RTT in use shows in the worker's metrics, marked as an override; without the
    // override the local worker is unmeasured (counts as 0) and shows none.
    let metrics = engine.metrics_text();
    assert!(
        metrics.contains(
            "oakestra_node_overlay_rtt_seconds{node=\"192.0.2.1:50103\",source=\"override\"} 0.007"
        ),
        "{metrics}"
    );
    overlay.set_rtt_overrides(Default::default());
    assert_eq!(overlay.proxy().unwrap().lock().unwrap().rtt(endpoint), None);
    assert!(!engine.metrics_text().contains("source="));
}

#[tokio::test(start_paused = true)]
async fn table_entries_are_asked_for_again_so_moved_instances_are_followed() {
    use oakestra_node::overlay::{QUERY_RETRY, TABLE_REFRESH};
    use oakestra_proto::mqtt::{NodeTopic, TableQueryRequest};
    let (overlay, published) = enabled_overlay().await;
    let answer = |instances: serde_json::Value| {
        serde_json::from_value(serde_json::json!({
            "app_name": "app.ns.web.ns", "query_key": "app.ns.web.ns", "instance_list": instances
        }))
        .unwrap()
    };
    let instance = |host: &str| {
        serde_json::json!({
            "instance_number": 0, "namespace_ip": "10.18.0.66", "host_ip": host, "host_port": 50103,
            "service_ip": [{"IpType": "RR", "Address": "10.30.55.55"},
                           {"IpType": "instance_ip", "Address": "10.30.0.3"}]
        })
    };
    overlay.on_table_result(answer(serde_json::json!([instance("192.0.2.2")])));
    published.take();

    // The periodic refresh asks for the service again …
    tokio::time::sleep(TABLE_REFRESH + Duration::from_millis(100)).await;
    let sent = published.take();
    assert!(
        sent.iter()
            .any(|(t, v)| *t == NodeTopic::NetTableQueryRequest && v["sname"] == "app.ns.web.ns"),
        "{sent:?}"
    );
    // … and the answer (the instance moved to another worker) replaces the entry.
    overlay.on_table_result(answer(serde_json::json!([instance("192.0.2.3")])));
    {
        let proxy = overlay.proxy().unwrap().lock().unwrap();
        let node = proxy.service("app.ns.web.ns").unwrap().instances[0].node;
        assert_eq!(node, "192.0.2.3:50103".parse().unwrap());
    }

    // An answer that never comes: the query is asked again after QUERY_RETRY, not before.
    let by_ip = || TableQueryRequest {
        sip: "10.30.9.9".into(),
        ..Default::default()
    };
    published.take();
    overlay.query(by_ip());
    overlay.query(by_ip());
    assert_eq!(published.take().len(), 1);
    tokio::time::sleep(QUERY_RETRY + Duration::from_millis(100)).await;
    published.take(); // a refresh may have run meanwhile
    overlay.query(by_ip());
    let again = published.take();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].1["sip"], "10.30.9.9");
}

#[tokio::test(start_paused = true)]
async fn pushed_updates_change_the_table_at_once_and_a_gone_service_drops_its_interest() {
    use oakestra_proto::mqtt::NodeTopic;
    let (overlay, published) = enabled_overlay().await;
    let table = |app: serde_json::Value, instances: serde_json::Value| {
        serde_json::from_value(serde_json::json!({
            "app_name": app, "query_key": "app.ns.web.ns", "instance_list": instances
        }))
        .unwrap()
    };
    let instance = |n: u32, host: &str| {
        serde_json::json!({
            "instance_number": n, "namespace_ip": format!("10.18.0.{}", 66 + n), "host_ip": host,
            "host_port": 50103,
            "service_ip": [{"IpType": "RR", "Address": "10.30.55.55"},
                           {"IpType": "instance_ip", "Address": format!("10.30.0.{}", 3 + n)}]
        })
    };
    let numbers = |o: &Overlay| -> Option<Vec<u32>> {
        let proxy = o.proxy().unwrap().lock().unwrap();
        let s = proxy.service("app.ns.web.ns")?;
        assert_eq!(s.rr_ip, Some("10.30.55.55".parse().unwrap()));
        Some(s.instances.iter().map(|i| i.number).collect())
    };
    overlay.on_table_result(table(
        "app.ns.web.ns".into(),
        serde_json::json!([instance(0, "192.0.2.2"), instance(1, "192.0.2.3")]),
    ));
    assert_eq!(numbers(&overlay), Some(vec![0, 1]));

    // Instance 1 died: the cluster pushes the table without it, and the proxy follows at once
    // (no periodic refresh, no query of the worker's own).
    overlay.on_table_result(table(
        "app.ns.web.ns".into(),
        serde_json::json!([instance(0, "192.0.2.2")]),
    ));
    assert_eq!(numbers(&overlay), Some(vec![0]));
    // The last one died too: the service stays known with its rr_ip and no instances.
    overlay.on_table_result(table("app.ns.web.ns".into(), serde_json::json!([])));
    assert_eq!(numbers(&overlay), Some(vec![]));
    assert!(published.take().is_empty(), "no queries were needed");

    // The service is gone (the cluster answers "unknown" for its name): it leaves the table
    // and the cluster hears that this worker no longer follows it, once.
    overlay.on_table_result(table(serde_json::Value::Null, serde_json::json!([])));
    assert_eq!(numbers(&overlay), None);
    overlay.on_table_result(table(serde_json::Value::Null, serde_json::json!([])));
    let sent = published.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, NodeTopic::NetInterestRemove);
    assert_eq!(sent[0].1["appname"], "app.ns.web.ns");
}

/// Answers table queries like the cluster would, for the services it knows.
#[derive(Debug)]
struct Cluster(tokio::sync::mpsc::UnboundedSender<String>);

impl oakestra_node::overlay::NetPublisher for Cluster {
    fn publish(&self, topic: oakestra_proto::mqtt::NodeTopic, payload: Vec<u8>) {
        if topic == oakestra_proto::mqtt::NodeTopic::NetTableQueryRequest {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let _ = self
                .0
                .send(v["sname"].as_str().unwrap_or_default().to_owned());
        }
    }
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Sends `query` to the responder; the reply's (rcode, answer count, last 4 bytes).
async fn ask(
    client: &tokio::net::UdpSocket,
    at: std::net::SocketAddr,
    query: &[u8],
) -> (u8, u16, [u8; 4]) {
    client.send_to(query, at).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
        .await
        .expect("a DNS reply within 10 s")
        .unwrap();
    assert_eq!(&buf[0..2], &query[0..2], "the query's id");
    assert_eq!(buf[2] & 0x80, 0x80, "a response");
    let tail: [u8; 4] = buf[n - 4..n].try_into().unwrap();
    (buf[3] & 0x0F, u16::from_be_bytes([buf[6], buf[7]]), tail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_names_resolve_to_their_rr_ip_over_real_udp() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = Overlay::new(PlaneKind::Fake);
    overlay.set_tunnel(
        "0.0.0.0:50103".parse().unwrap(),
        "192.0.2.1:50103".parse().unwrap(),
    );
    overlay.set_dns(oakestra_node::overlay::DnsListen::At(
        "127.0.0.1:0".parse().unwrap(),
    ));
    // The host's resolvers: one on 127.0.0.54 that also claims a service's name.
    let upstream = Upstream::start(
        "127.0.0.54:53",
        &[
            ("example.com", [192, 0, 2, 80]),
            ("web.ns.app.ns", [6, 6, 6, 6]),
        ],
    )
    .await;
    let resolv = dir.path().join("host-resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.54\n").unwrap();
    overlay.set_host_resolv_conf(&resolv);
    let (queries_tx, mut queries) = tokio::sync::mpsc::unbounded_channel();
    overlay.set_publisher(Arc::new(Cluster(queries_tx)));
    overlay
        .enable(
            "10.18.0.64".parse().unwrap(),
            "fc00::100".parse().unwrap(),
            &[],
        )
        .await
        .unwrap();
    let at = overlay.dns_addr().expect("the responder is bound");
    assert!(at.ip().is_loopback() && at.port() != 0, "{at}");

    // The cluster: knows app.ns.web.ns (deployed here) and app.ns.api.ns (elsewhere).
    let answer = |job: &str, rr: &str, nsip: &str| -> oakestra_proto::mqtt::TableQueryResult {
        // Only api has an IPv6 rr_ip.
        let rr_v6 = if job == "app.ns.api.ns" {
            "fdff:2000::7"
        } else {
            ""
        };
        serde_json::from_value(serde_json::json!({
            "app_name": job, "query_key": job,
            "instance_list": [{
                "instance_number": 0, "namespace_ip": nsip, "host_ip": "192.0.2.1",
                "host_port": 50103,
                "service_ip": [{"IpType": "RR", "Address": rr, "Address_v6": rr_v6},
                               {"IpType": "instance_ip", "Address": "10.30.0.3"}]
            }]
        }))
        .unwrap()
    };
    let cluster = {
        let overlay = overlay.clone();
        tokio::spawn(async move {
            while let Some(sname) = queries.recv().await {
                match sname.as_str() {
                    "app.ns.web.ns" => {
                        overlay.on_table_result(answer(&sname, "10.30.55.55", "10.18.0.66"))
                    }
                    "app.ns.api.ns" => {
                        overlay.on_table_result(answer(&sname, "10.30.7.7", "10.18.0.99"))
                    }
                    _ => {} // unknown: the cluster has nothing to say
                }
            }
        })
    };

    let engine = Engine::new(
        Arc::new(FakeRuntime::new(FakeConfig::default()).unwrap()),
        StateFile::new(dir.path()),
        NodeState::default(),
        Arc::new(Reports::default()),
        "192.0.2.1".into(),
        Duration::from_secs(1),
    );
    engine.set_network(overlay.clone());
    engine.deploy(deploy(0, "")).await;

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // The deployed service, by <service>.<servicens>.<app>.<appns> and by its job name.
    assert_eq!(
        ask(&client, at, &dns_query(1, "web.ns.app.ns", 1)).await,
        (0, 1, [10, 30, 55, 55])
    );
    assert_eq!(
        ask(&client, at, &dns_query(2, "App.NS.web.ns", 1)).await,
        (0, 1, [10, 30, 55, 55])
    );
    // A service this worker never heard of: asked of the cluster, answered when it replies.
    assert_eq!(
        ask(&client, at, &dns_query(3, "api.ns.app.ns", 1)).await,
        (0, 1, [10, 30, 7, 7])
    );
    // AAAA of a known name without an rr_ip_v6: NOERROR without answers.
    let (rcode, answers, _) = ask(&client, at, &dns_query(4, "web.ns.app.ns", 28)).await;
    assert_eq!((rcode, answers), (0, 0));
    // AAAA of a service with one: its rr_ip_v6 (fdff:2000::7, ending in 0, 0, 0, 7).
    assert_eq!(
        ask(&client, at, &dns_query(8, "api.ns.app.ns", 28)).await,
        (0, 1, [0, 0, 0, 7])
    );
    // Service names win over what the host's resolver says about them.
    assert_eq!(upstream.queries(), 0, "service names are not forwarded");
    // An unknown service name: the cluster stayed silent, so the host's resolver answers
    // (NXDOMAIN here).
    let (rcode, answers, _) = ask(&client, at, &dns_query(5, "nope.ns.app.ns", 1)).await;
    assert_eq!((rcode, answers), (3, 0));
    assert_eq!(upstream.queries(), 1);
    // Not a service name at all: forwarded, and the second time answered from the cache.
    assert_eq!(
        ask(&client, at, &dns_query(6, "example.com", 1)).await,
        (0, 1, [192, 0, 2, 80])
    );
    assert_eq!(
        ask(&client, at, &dns_query(16, "EXAMPLE.com", 1)).await,
        (0, 1, [192, 0, 2, 80])
    );
    assert_eq!(
        upstream.queries(),
        2,
        "the second answer came from the cache"
    );
    // The host's resolvers change (read again on a miss): none answers, so REFUSED.
    std::fs::write(&resolv, "nameserver 127.0.0.55\n").unwrap();
    let (rcode, answers, _) = ask(&client, at, &dns_query(17, "other.example", 1)).await;
    assert_eq!((rcode, answers), (5, 0));
    // Garbage with a header: FORMERR.
    let mut compressed = dns_query(7, "a", 1)[..12].to_vec();
    compressed.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    let (rcode, _, _) = ask(&client, at, &compressed).await;
    assert_eq!(rcode, 1);
    cluster.abort();
}
