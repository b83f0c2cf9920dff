//! The real data plane on this host: bridges, network namespaces, veths and iptables rules.
//! Runs as root. Every test uses its own tag (bridge, namespace, veth and chain names) and its
//! own worker subnet derived from the process id, so tests run in parallel; a guard removes
//! everything the test made, also when it fails.

#![cfg(target_os = "linux")]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oakestra_net::dataplane::{
    Attachment, DataPlane, DataPlaneConfig, InstanceKey, LinuxDataPlane, Naming, PortForward,
    Protocol, netns,
};
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A test's names and subnets, unique per process and `letter`.
struct Env {
    config: DataPlaneConfig,
    /// Extra namespaces and links the test made itself.
    extra_netns: Vec<String>,
    extra_links: Vec<String>,
}

impl Env {
    fn new(letter: char) -> Env {
        let pid = std::process::id();
        let tag = format!("t{}{letter}", pid % 100_000);
        // One /26 per (process, letter) in 10.18.0.0–10.28.x (10.29 is the node tests').
        let slot = (pid % 1800) * 6 + (letter as u32 - 'a' as u32) % 6;
        let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 18, 0, 0)) + slot * 64);
        let v6 = format!("fc00::{:x}:{:x}00", pid % 0xffff, letter as u32);
        let subnets = WorkerSubnets {
            ipv4: Ipv4Subnet::new(v4).unwrap(),
            ipv6: Ipv6Subnet::new(v6.parse().unwrap()).unwrap(),
        };
        let mut config = DataPlaneConfig::new(subnets);
        config.naming = Naming::new(&tag).unwrap();
        Env {
            config,
            extra_netns: Vec::new(),
            extra_links: Vec::new(),
        }
    }

    fn tag(&self) -> &str {
        self.config.naming.tag()
    }

    fn bridge(&self) -> String {
        self.config.naming.bridge()
    }

    fn subnets(&self) -> WorkerSubnets {
        self.config.subnets
    }

    fn plane(&self) -> LinuxDataPlane {
        LinuxDataPlane::new(self.config.clone()).unwrap()
    }
}

impl Drop for Env {
    /// Removes everything of this tag: through the data plane's own teardown (on a thread of
    /// its own, outside the test's runtime), then with `ip`/`iptables` for anything left.
    fn drop(&mut self) {
        let config = self.config.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(plane) = LinuxDataPlane::new(config) {
                    let _ = tokio::time::timeout(WAIT, plane.teardown_host()).await;
                }
            });
        })
        .join();
        for ns in &self.extra_netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in &self.extra_links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let prefix = self.config.naming.netns_prefix();
        for ns in netns::list(&prefix).unwrap_or_default() {
            let _ = netns::delete(&netns::path_of(&ns));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = sh(program, args);
    assert!(ok, "{program} {}: {text}", args.join(" "));
    text
}

/// Every iptables line (nat and filter) that mentions this tag.
fn our_rules(tag: &str) -> Vec<String> {
    rules_of("iptables", tag)
}

/// Every ip6tables line (nat and filter) that mentions this tag.
fn our_rules_v6(tag: &str) -> Vec<String> {
    rules_of("ip6tables", tag)
}

fn rules_of(program: &str, tag: &str) -> Vec<String> {
    let upper = tag.to_ascii_uppercase();
    ["nat", "filter"]
        .iter()
        .flat_map(|t| {
            must(program, &["-w", "10", "-t", t, "-S"])
                .lines()
                .filter(|l| l.contains(&upper) || l.contains(&format!("{tag}:")))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn link_exists(name: &str) -> bool {
    sh("ip", &["link", "show", "dev", name]).0
}

fn key(n: u32) -> InstanceKey {
    InstanceKey::new("app.ns.svc.ns", n).unwrap()
}

fn tcp(host: u16, container: u16) -> PortForward {
    PortForward {
        host,
        container,
        protocol: Protocol::Tcp,
    }
}

/// A TCP listener bound inside the namespace at `path` (the socket stays in that namespace).
async fn listen_in(path: &Path, addr: SocketAddr) -> tokio::net::TcpListener {
    let listener = netns::run_in(path, move || std::net::TcpListener::bind(addr))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).unwrap()
}

/// Connects from inside the namespace at `path` (or the host's when `None`), sends `hello`
/// and returns what the server answered.
async fn exchange(path: Option<&Path>, to: SocketAddr) -> Result<String, String> {
    let connect = move || std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5));
    let stream = match path {
        Some(p) => netns::run_in(p, connect).await.unwrap(),
        None => tokio::task::spawn_blocking(connect).await.unwrap(),
    }
    .map_err(|e| format!("connect to {to}: {e}"))?;
    stream.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let talk = async {
        stream.write_all(b"hello").await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    tokio::time::timeout(WAIT, talk)
        .await
        .map_err(|_| format!("no answer from {to} within {WAIT:?}"))?
        .map_err(|e| format!("talking to {to}: {e}"))
}

/// Serves one connection on `listener`: reads `hello`, answers `answer`.
fn serve_one(
    listener: tokio::net::TcpListener,
    answer: &'static str,
) -> tokio::task::JoinHandle<SocketAddr> {
    tokio::spawn(async move {
        let (mut s, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("a connection within the wait")
            .unwrap();
        let mut hello = [0u8; 5];
        tokio::time::timeout(WAIT, s.read_exact(&mut hello))
            .await
            .expect("the greeting within the wait")
            .unwrap();
        assert_eq!(&hello, b"hello");
        s.write_all(answer.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        peer
    })
}

fn port_for(letter: char) -> u16 {
    20_000 + (std::process::id() % 20_000) as u16 + (letter as u16 - 'a' as u16) * 7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_setup_is_idempotent_and_teardown_removes_it() {
    let env = Env::new('a');
    let plane = env.plane();
    plane.setup_host().await.unwrap();
    plane.setup_host().await.unwrap();

    let bridge = env.bridge();
    let addresses = must("ip", &["-o", "addr", "show", "dev", &bridge]);
    let bridge_ip = format!("{}/26", env.subnets().ipv4.bridge());
    assert!(addresses.contains(&bridge_ip), "{addresses}");
    assert_eq!(addresses.matches(&bridge_ip).count(), 1);
    assert!(
        must("ip", &["link", "show", "dev", &bridge]).contains("state UP")
            || must("ip", &["link", "show", "dev", &bridge]).contains(",UP")
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    let rules = our_rules(env.tag());
    let upper = env.tag().to_ascii_uppercase();
    for jump in [
        format!("-A PREROUTING -m addrtype --dst-type LOCAL -j {upper}-DNAT"),
        format!("-A OUTPUT -m addrtype --dst-type LOCAL -j {upper}-DNAT"),
        format!("-A POSTROUTING -j {upper}-POST"),
        format!("-A FORWARD -j {upper}-FWD"),
    ] {
        assert_eq!(
            rules.iter().filter(|r| **r == jump).count(),
            1,
            "{jump} once in {rules:#?}"
        );
    }
    let masquerade = format!(
        "-A {upper}-POST -s {}/26 ! -o {bridge} -j MASQUERADE",
        env.subnets().ipv4.base()
    );
    assert_eq!(
        rules.iter().filter(|r| **r == masquerade).count(),
        1,
        "{rules:#?}"
    );

    // IPv6: forwarding on, and the ip6tables counterparts (no DNAT chain: port mappings are
    // IPv4), once each.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .unwrap()
            .trim(),
        "1"
    );
    let rules6 = our_rules_v6(env.tag());
    for jump in [
        format!("-A POSTROUTING -j {upper}-POST"),
        format!("-A FORWARD -j {upper}-FWD"),
        format!("-A PREROUTING -m addrtype --dst-type LOCAL -j {upper}-DNAT"),
        format!("-A OUTPUT -m addrtype --dst-type LOCAL -j {upper}-DNAT"),
        format!("-A {upper}-POST -d fc00::/7 -j RETURN"),
        format!("-A {upper}-FWD -i {bridge} -j ACCEPT"),
        format!("-A {upper}-FWD -o {bridge} -j ACCEPT"),
    ] {
        assert_eq!(
            rules6.iter().filter(|r| **r == jump).count(),
            1,
            "{jump} once in {rules6:#?}"
        );
    }
    // `-A <TAG>-POST -s <the worker's /120> ! -o <bridge> -j MASQUERADE`, the address in
    // whatever spelling ip6tables prints.
    let masquerades: Vec<std::net::Ipv6Addr> = rules6
        .iter()
        .filter_map(|r| {
            let rest = r.strip_prefix(&format!("-A {upper}-POST -s "))?;
            let (address, rest) = rest.split_once("/120 ")?;
            (rest == format!("! -o {bridge} -j MASQUERADE")).then(|| address.parse().unwrap())
        })
        .collect();
    assert_eq!(masquerades, [env.subnets().ipv6.base()], "{rules6:#?}");

    plane.teardown_host().await.unwrap();
    plane.teardown_host().await.unwrap();
    assert!(!link_exists(&bridge));
    assert_eq!(our_rules(env.tag()), Vec::<String>::new());
    assert_eq!(our_rules_v6(env.tag()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_their_address_and_reach_the_bridge_and_each_other() {
    let env = Env::new('b');
    let plane = env.plane();
    plane.setup_host().await.unwrap();
    let a = plane.attach(&key(0), &[]).await.unwrap();
    let b = plane.attach(&key(1), &[]).await.unwrap();
    assert_eq!(
        plane.attach(&key(0), &[]).await.unwrap(),
        a,
        "attach is idempotent"
    );

    let base = u32::from(env.subnets().ipv4.base());
    assert_eq!(a.ipv4, Ipv4Addr::from(base + 2));
    assert_eq!(b.ipv4, Ipv4Addr::from(base + 3));
    assert_eq!(
        a.netns,
        PathBuf::from(format!("/run/netns/{}-app.ns.svc.ns.0", env.tag()))
    );
    assert!(a.netns.exists());

    let ns_name = a.netns.file_name().unwrap().to_str().unwrap().to_owned();
    let inside = must(
        "ip",
        &[
            "netns", "exec", &ns_name, "ip", "-o", "addr", "show", "dev", "eth0",
        ],
    );
    assert!(inside.contains(&format!("{}/26", a.ipv4)), "{inside}");
    assert!(inside.contains(&format!("{}/120", a.ipv6)), "{inside}");
    let routes = must("ip", &["netns", "exec", &ns_name, "ip", "route"]);
    assert!(
        routes.contains(&format!(
            "default via {} dev eth0",
            env.subnets().ipv4.bridge()
        )),
        "{routes}"
    );
    let bridge_ports = must("ip", &["link", "show", "master", &env.bridge()]);
    assert!(
        bridge_ports.contains(&a.host_veth) && bridge_ports.contains(&b.host_veth),
        "{bridge_ports}"
    );

    // Instance → instance on the same worker.
    let to_b = SocketAddr::from((b.ipv4, 7000));
    let server = serve_one(listen_in(&b.netns, to_b).await, "hello from b");
    assert_eq!(
        exchange(Some(&a.netns), to_b).await.unwrap(),
        "hello from b"
    );
    let peer = server.await.unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(a.ipv4),
        "b sees a's own address"
    );

    // Instance → the bridge (the host).
    let bridge_addr = SocketAddr::from((env.subnets().ipv4.bridge(), port_for('b')));
    let host_listener = tokio::net::TcpListener::bind(bridge_addr).await.unwrap();
    let server = serve_one(host_listener, "hello from the host");
    assert_eq!(
        exchange(Some(&a.netns), bridge_addr).await.unwrap(),
        "hello from the host"
    );
    server.await.unwrap();

    // And the host reaches the instance directly.
    let to_a = SocketAddr::from((a.ipv4, 7001));
    let server = serve_one(listen_in(&a.netns, to_a).await, "hello from a");
    assert_eq!(exchange(None, to_a).await.unwrap(), "hello from a");
    server.await.unwrap();

    plane.teardown_host().await.unwrap();
    assert!(!a.netns.exists() && !b.netns.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_mapping_reaches_the_instance_from_outside_the_worker() {
    let mut env = Env::new('c');
    let plane = env.plane();
    plane.setup_host().await.unwrap();
    let host_port = port_for('c');
    let a = plane
        .attach(&key(0), &[tcp(host_port, 8080)])
        .await
        .unwrap();
    let upper = env.tag().to_ascii_uppercase();
    let rule = format!(
        "-A {upper}-DNAT -p tcp -m tcp --dport {host_port} -m comment --comment \"{}:app.ns.svc.ns.0\" -j DNAT --to-destination {}:8080",
        env.tag(),
        a.ipv4
    );
    assert!(
        our_rules(env.tag()).contains(&rule),
        "{rule} in {:#?}",
        our_rules(env.tag())
    );

    // Another "machine": a namespace joined to the host by a veth pair in 100.64.0.0/10.
    let outside = format!("{}x", env.tag());
    let host_end = format!("{}o", env.tag());
    env.extra_netns.push(outside.clone());
    env.extra_links.push(host_end.clone());
    let pid = std::process::id();
    let (x, y) = (64 + (pid / 64 % 64) as u8, ((pid % 64) * 4) as u8);
    let host_ip = format!("100.{x}.{y}.1");
    let outside_ip = format!("100.{x}.{y}.2");
    must("ip", &["netns", "add", &outside]);
    must(
        "ip",
        &[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &outside,
        ],
    );
    must(
        "ip",
        &["addr", "add", &format!("{host_ip}/30"), "dev", &host_end],
    );
    must("ip", &["link", "set", &host_end, "up"]);
    must(
        "ip",
        &[
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{outside_ip}/30"),
            "dev",
            "eth0",
        ],
    );
    must("ip", &["-n", &outside, "link", "set", "eth0", "up"]);
    must("ip", &["-n", &outside, "link", "set", "lo", "up"]);

    let server = serve_one(
        listen_in(&a.netns, SocketAddr::from(([0, 0, 0, 0], 8080))).await,
        "mapped",
    );
    let outside_path = netns::path_of(&outside);
    let target: SocketAddr = format!("{host_ip}:{host_port}").parse().unwrap();
    assert_eq!(
        exchange(Some(&outside_path), target).await.unwrap(),
        "mapped"
    );
    let peer = server.await.unwrap();
    assert_eq!(
        peer.ip().to_string(),
        outside_ip,
        "DNAT keeps the client's address"
    );

    // The same mapping over IPv6: to the worker's IPv6 address, DNAT to the instance's.
    let rule_v6 = format!(
        "-A {upper}-DNAT -p tcp -m tcp --dport {host_port} -m comment --comment \"{}:app.ns.svc.ns.0\" -j DNAT --to-destination [{}]:8080",
        env.tag(),
        a.ipv6
    );
    assert!(
        our_rules_v6(env.tag()).contains(&rule_v6),
        "{rule_v6} in {:#?}",
        our_rules_v6(env.tag())
    );
    let (host_ip6, outside_ip6) = (
        std::net::Ipv6Addr::new(0x2001, 0xdb8, x.into(), y.into(), 0, 0, 0, 1),
        std::net::Ipv6Addr::new(0x2001, 0xdb8, x.into(), y.into(), 0, 0, 0, 2),
    );
    must(
        "ip",
        &[
            "addr",
            "add",
            &format!("{host_ip6}/64"),
            "dev",
            &host_end,
            "nodad",
        ],
    );
    must(
        "ip",
        &[
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{outside_ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let server = serve_one(
        listen_in(&a.netns, "[::]:8080".parse().unwrap()).await,
        "mapped over IPv6",
    );
    let target_v6: SocketAddr = format!("[{host_ip6}]:{host_port}").parse().unwrap();
    assert_eq!(
        exchange(Some(&outside_path), target_v6).await.unwrap(),
        "mapped over IPv6"
    );
    assert_eq!(
        server.await.unwrap().ip(),
        std::net::IpAddr::V6(outside_ip6),
        "DNAT keeps the client's IPv6 address"
    );

    // A second instance may not take the same host port.
    let clash = plane
        .attach(&key(1), &[tcp(host_port, 9090)])
        .await
        .unwrap_err();
    assert!(clash.to_string().contains("app.ns.svc.ns.0"), "{clash}");
    assert!(!netns::path_of(&format!("{}-app.ns.svc.ns.1", env.tag())).exists());

    plane.detach(&key(0)).await.unwrap();
    assert!(!our_rules(env.tag()).iter().any(|r| r.contains("--comment")));
    assert!(
        !our_rules_v6(env.tag())
            .iter()
            .any(|r| r.contains("--comment"))
    );
    assert!(
        exchange(Some(&outside_path), target).await.is_err(),
        "the mapping is gone"
    );
    assert!(
        exchange(Some(&outside_path), target_v6).await.is_err(),
        "the IPv6 mapping is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_leaves_no_namespace_veth_rule_or_route_behind() {
    let env = Env::new('d');
    let plane = env.plane();
    plane.setup_host().await.unwrap();
    let rules_before = our_rules(env.tag());
    let routes_before = must("ip", &["route", "show", "table", "all"]);
    let a: Attachment = plane
        .attach(
            &key(0),
            &[
                tcp(port_for('d'), 80),
                PortForward {
                    protocol: Protocol::Udp,
                    ..tcp(port_for('d'), 53)
                },
            ],
        )
        .await
        .unwrap();
    assert!(link_exists(&a.host_veth));
    assert_eq!(our_rules(env.tag()).len(), rules_before.len() + 2);

    plane.detach(&key(0)).await.unwrap();
    plane.detach(&key(0)).await.unwrap();
    assert!(!a.netns.exists(), "namespace file");
    assert!(
        !netns::list(&env.config.naming.netns_prefix())
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".0"))
    );
    assert!(!link_exists(&a.host_veth), "host veth");
    assert_eq!(our_rules(env.tag()), rules_before, "rules");
    let routes = must("ip", &["route", "show", "table", "all"]);
    assert!(
        !routes.contains(&a.host_veth) && !routes.contains(&a.ipv4.to_string()),
        "{routes}"
    );
    // Only this test's routes: other tests add and remove theirs meanwhile. The bridge's
    // carrier (`linkdown`) and link-local route follow whether it has had a port, which is the
    // kernel's doing, not a leftover.
    let ours = |text: &str| {
        text.lines()
            .filter(|l| l.contains(env.tag()) && !l.starts_with("fe80::"))
            .map(|l| l.replace(" linkdown", ""))
            .collect::<Vec<_>>()
    };
    assert_eq!(ours(&routes), ours(&routes_before), "{routes}");
    assert!(plane.attachments().is_empty());

    // The address is free again.
    let again = plane.attach(&key(1), &[]).await.unwrap();
    assert_eq!(
        again.ipv4.octets()[3] % 64,
        3,
        "next-fit moves on, the old one is free: {}",
        again.ipv4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_reconcile_adopts_kept_instances_and_removes_the_rest() {
    let mut env = Env::new('e');
    let first = env.plane();
    first.setup_host().await.unwrap();
    let kept = first
        .attach(&key(0), &[tcp(port_for('e'), 80)])
        .await
        .unwrap();
    let gone = first
        .attach(&key(1), &[tcp(port_for('e') + 1, 80)])
        .await
        .unwrap();
    // The process "crashes" (nothing is cleaned up), also in the middle of an attach that
    // had just made its veth pair.
    drop(first);
    let stray_host = format!("{}v60", env.tag());
    let stray_peer = format!("{}p60", env.tag());
    env.extra_links.push(stray_host.clone());
    must(
        "ip",
        &[
            "link",
            "add",
            &stray_host,
            "type",
            "veth",
            "peer",
            "name",
            &stray_peer,
        ],
    );

    let second = env.plane();
    second.setup_host().await.unwrap();
    let adopted = second.reconcile(&[key(0), key(7)]).await.unwrap();
    assert_eq!(
        adopted,
        vec![kept.clone()],
        "same address, veth, namespace and ports"
    );
    assert_eq!(second.attachments(), vec![kept.clone()]);

    assert!(!gone.netns.exists());
    assert!(!link_exists(&gone.host_veth));
    assert!(!link_exists(&stray_host) && !link_exists(&stray_peer));
    let rules = our_rules(env.tag());
    assert!(
        !rules.iter().any(|r| r.contains("app.ns.svc.ns.1")),
        "{rules:#?}"
    );
    assert!(
        rules.iter().any(|r| r.contains("app.ns.svc.ns.0")),
        "{rules:#?}"
    );

    // The adopted instance still works, and its address is not handed out again.
    let to_kept = SocketAddr::from((kept.ipv4, 7002));
    let server = serve_one(listen_in(&kept.netns, to_kept).await, "still here");
    assert_eq!(exchange(None, to_kept).await.unwrap(), "still here");
    server.await.unwrap();
    let fresh = second.attach(&key(2), &[]).await.unwrap();
    assert_ne!(fresh.ipv4, kept.ipv4);
    // The adopted port is still taken.
    assert!(
        second
            .attach(&key(3), &[tcp(port_for('e'), 81)])
            .await
            .is_err()
    );

    // Reconciling again changes nothing.
    let again = second.reconcile(&[key(0), key(2)]).await.unwrap();
    assert_eq!(again.len(), 2);
    second.teardown_host().await.unwrap();
    assert!(
        netns::list(&env.config.naming.netns_prefix())
            .unwrap()
            .is_empty()
    );
    assert_eq!(our_rules(env.tag()), Vec::<String>::new());
}
