//! Two workers on this machine, for real: each worker's host side is a network namespace of its
//! own (joined to the other by a veth "underlay"), with the data plane (bridge, instance
//! namespaces), the TUN device and the UDP tunnel running inside it; a client instance on worker
//! 1 and a server instance (behind the rr_ip 10.30.55.55 and the rr_ip_v6 fdff:2000::55) on
//! worker 2 (or several, [`TwoWorkers::start_with`]), with the table the cluster's table query
//! would answer already in both proxies.
//!
//! Shared through `#[path]` by `tests/tunnel_linux.rs` and `benches/overlay.rs`. Needs root.
//! Names and addresses come from the process id, so several test processes can run at once.
//! Deleting the two host namespaces removes their bridges, TUN devices and rules; the guard also
//! deletes the instance namespaces, also on panic.

// Each user reads the fields it needs (the test the instance IPs, the bench the underlay).
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_net::dataplane::tunnel::{Tunnel, TunnelConfig, TunnelStats};
use oakestra_net::dataplane::{
    Attachment, DataPlane, DataPlaneConfig, InstanceKey, LinuxDataPlane, Naming, netns,
};
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_net::proxy::{InstanceRoute, Proxy, ServiceRoutes};
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(10);

/// Runs a command and returns its stdout and stderr; panics with both when it fails.
pub fn must(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", args.join(" "));
    text
}

/// The two host namespaces and every instance namespace of both tags.
pub struct Guard {
    hosts: Vec<String>,
    prefixes: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for prefix in &self.prefixes {
            for ns in netns::list(prefix).unwrap_or_default() {
                let _ = netns::delete(&netns::path_of(&ns));
            }
        }
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", host]).output();
        }
    }
}

/// A worker running inside its host namespace on a thread of its own.
pub struct Worker {
    pub proxy: Arc<Mutex<Proxy>>,
    /// How its tunnel's datagrams went out and came in.
    #[allow(dead_code)]
    pub stats: TunnelStats,
    pub attachments: Vec<Attachment>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// `detect_mtu`: the overlay MTU follows the underlay link holding `listen`'s address
    /// (as a worker's does), instead of the fixed default.
    async fn start(
        host: PathBuf,
        mut config: DataPlaneConfig,
        listen: SocketAddr,
        instances: Vec<InstanceKey>,
        detect_mtu: bool,
    ) -> Worker {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let device = format!("{}tun", config.naming.tag());
        let done = tokio::spawn(async move {
            let result = netns::run_in(&host, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if detect_mtu {
                        let underlay = LinuxDataPlane::detect_underlay(Some(listen.ip()), None)
                            .await
                            .unwrap()
                            .expect("the underlay link holds the tunnel address");
                        config.mtu = underlay.overlay_mtu();
                    }
                    let mtu = config.mtu;
                    let plane = LinuxDataPlane::new(config).unwrap();
                    plane.setup_host().await.unwrap();
                    let mut attachments = Vec::new();
                    for key in &instances {
                        attachments.push(plane.attach(key, &[]).await.unwrap());
                    }
                    let proxy = Arc::new(Mutex::new(Proxy::new(listen)));
                    let tunnel = Tunnel::start(
                        TunnelConfig {
                            device,
                            listen,
                            mtu,
                        },
                        Arc::clone(&proxy),
                        None,
                    )
                    .await
                    .unwrap();
                    let _ = ready_tx.send((attachments, proxy, tunnel.stats()));
                    let _ = stop_rx.await;
                    drop(tunnel);
                    let _ = plane.teardown_host().await;
                });
            })
            .await;
            result.unwrap();
        });
        let (attachments, proxy, stats) = tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("the worker came up within the wait")
            .expect("the worker came up (see its panic above)");
        Worker {
            proxy,
            stats,
            attachments,
            stop: Some(stop_tx),
            done: Some(done),
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = tokio::time::timeout(WAIT, d).await;
        }
    }
}

fn config(tag: &str, slot: u32) -> DataPlaneConfig {
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 29, 128, 0)) + slot * 64);
    let v6 = format!(
        "fc00::4:{:x}:{:x}00",
        std::process::id() % 0xffff,
        slot % 0xff
    )
    .parse()
    .unwrap();
    let mut c = DataPlaneConfig::new(WorkerSubnets {
        ipv4: Ipv4Subnet::new(v4).unwrap(),
        ipv6: Ipv6Subnet::new(v6).unwrap(),
    });
    c.naming = Naming::new(tag).unwrap();
    c
}

/// The two workers with a client instance on the first and a server instance on the second.
pub struct TwoWorkers {
    /// The host namespaces' names (`ip -n <name> …`).
    pub hosts: [String; 2],
    /// The workers' underlay addresses, on the veth `u0` (in `hosts[0]`) and `u1` (in `hosts[1]`).
    pub underlay: [Ipv4Addr; 2],
    /// The router namespace between them ([`TwoWorkers::start_with_underlay_mtus`]).
    pub router: Option<String>,
    /// The workers' /26 subnets (network address; prefix length 26).
    pub subnets: [Ipv4Addr; 2],
    pub one: Worker,
    pub two: Worker,
    /// The client instance on worker 1 and the (first) server instance on worker 2.
    pub client: Attachment,
    pub server: Attachment,
    /// Every server instance on worker 2, by instance number.
    pub servers: Vec<Attachment>,
    /// The overlay's instance IPs of the client and the server, and the server's rr_ip.
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub rr: Ipv4Addr,
    /// The same in IPv6 (fdff::/16). Server instance n has `10.30.0.3 + n` and `fdff::3 + n`.
    pub client_ip_v6: Ipv6Addr,
    pub server_ip_v6: Ipv6Addr,
    pub rr_v6: Ipv6Addr,
    // Last, so it runs after everything above has been dropped.
    _guard: Guard,
}

impl TwoWorkers {
    /// Builds both hosts, starts both workers and fills their proxies. `letter` keeps the names
    /// of different users (test, bench) apart.
    pub async fn start(letter: char) -> TwoWorkers {
        Self::start_with(letter, 1).await
    }

    /// [`TwoWorkers::start`] with `servers` (≥ 1) instances of the server on worker 2.
    pub async fn start_with(letter: char, servers: u32) -> TwoWorkers {
        Self::build(letter, servers, None).await
    }

    /// [`TwoWorkers::start`] with a router between the hosts: worker 1's link to it has MTU
    /// `mtus[0]`, worker 2's `mtus[1]`; each worker's overlay MTU is detected from its link.
    pub async fn start_with_underlay_mtus(letter: char, mtus: [u32; 2]) -> TwoWorkers {
        Self::build(letter, 1, Some(mtus)).await
    }

    async fn build(letter: char, servers: u32, mtus: Option<[u32; 2]>) -> TwoWorkers {
        let pid = std::process::id();
        let tags = [
            format!("{letter}{}a", pid % 100_000),
            format!("{letter}{}b", pid % 100_000),
        ];
        let hosts = [format!("{}host", tags[0]), format!("{}host", tags[1])];
        let router = format!("{}rt", tags[0]);
        let guard = Guard {
            hosts: [hosts[0].clone(), hosts[1].clone(), router.clone()].to_vec(),
            prefixes: tags.iter().map(|t| format!("{t}-")).collect(),
        };
        // The underlay: 100.64.0.0/10, one /30 per process.
        let (x, y) = (64 + (pid / 64 % 64) as u8, ((pid % 64) * 4) as u8);
        let mut underlay = [Ipv4Addr::new(100, x, y, 1), Ipv4Addr::new(100, x, y, 2)];
        for host in &hosts {
            must(&["ip", "netns", "add", host]);
            must(&["ip", "-n", host, "link", "set", "lo", "up"]);
        }
        match mtus {
            None => {
                // One veth between the two hosts.
                must(&[
                    "ip", "-n", &hosts[0], "link", "add", "u0", "type", "veth", "peer", "name",
                    "u1", "netns", &hosts[1],
                ]);
                for (i, host) in hosts.iter().enumerate() {
                    let (dev, address) = (format!("u{i}"), format!("{}/30", underlay[i]));
                    must(&["ip", "-n", host, "addr", "add", &address, "dev", &dev]);
                    must(&["ip", "-n", host, "link", "set", &dev, "up"]);
                }
            }
            Some(mtus) => {
                // host 1 (u0) —[mtus[0]]— router —[mtus[1]]— host 2 (u1), as two sites behind
                // a router. The router drops its ICMP "fragmentation needed" messages (a path
                // MTU black hole, common on mobile links), so nothing but the workers' own MTUs
                // keeps the tunnel's datagrams small enough.
                underlay[1] = Ipv4Addr::new(198, 18, 0, 2);
                must(&["ip", "netns", "add", &router]);
                let links = [
                    (
                        &hosts[0],
                        "r0",
                        Ipv4Addr::new(100, x, y, 2),
                        underlay[0],
                        30,
                    ),
                    (
                        &hosts[1],
                        "r1",
                        Ipv4Addr::new(198, 18, 0, 1),
                        underlay[1],
                        30,
                    ),
                ];
                for (i, (host, router_dev, router_ip, host_ip, len)) in links.iter().enumerate() {
                    let dev = format!("u{i}");
                    let mtu = mtus[i].to_string();
                    must(&[
                        "ip", "-n", host, "link", "add", &dev, "mtu", &mtu, "type", "veth", "peer",
                        "name", router_dev, "mtu", &mtu, "netns", &router,
                    ]);
                    let (host_addr, router_addr) =
                        (format!("{host_ip}/{len}"), format!("{router_ip}/{len}"));
                    must(&["ip", "-n", host, "addr", "add", &host_addr, "dev", &dev]);
                    must(&["ip", "-n", host, "link", "set", &dev, "up"]);
                    must(&[
                        "ip",
                        "-n",
                        &router,
                        "addr",
                        "add",
                        &router_addr,
                        "dev",
                        router_dev,
                    ]);
                    must(&["ip", "-n", &router, "link", "set", router_dev, "up"]);
                    let via = router_ip.to_string();
                    must(&["ip", "-n", host, "route", "add", "default", "via", &via]);
                }
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    &router,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ]);
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    &router,
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "icmp",
                    "--icmp-type",
                    "fragmentation-needed",
                    "-j",
                    "DROP",
                ]);
            }
        }

        // Slots in 10.29.128.0/17 (the node tests use 10.29.0.0/17).
        let slot = (pid % 256) * 2;
        let configs = [config(&tags[0], slot), config(&tags[1], slot + 1)];
        let subnets = [
            configs[0].subnets.ipv4.base(),
            configs[1].subnets.ipv4.base(),
        ];
        let endpoints = [
            SocketAddr::from((underlay[0], 50103)),
            SocketAddr::from((underlay[1], 50103)),
        ];
        let [config_one, config_two] = configs;
        let one = Worker::start(
            netns::path_of(&hosts[0]),
            config_one,
            endpoints[0],
            vec![InstanceKey::new("app.ns.curl.ns", 0).unwrap()],
            mtus.is_some(),
        )
        .await;
        let two = Worker::start(
            netns::path_of(&hosts[1]),
            config_two,
            endpoints[1],
            (0..servers.max(1))
                .map(|n| InstanceKey::new("app.ns.nginx.ns", n).unwrap())
                .collect(),
            mtus.is_some(),
        )
        .await;
        let client = one.attachments[0].clone();
        let server = two.attachments[0].clone();
        let servers = two.attachments.clone();

        // What the cluster's table query would answer (instance and rr IPs from the root).
        let rr: Ipv4Addr = "10.30.55.55".parse().unwrap();
        let rr_v6: Ipv6Addr = "fdff:2000::55".parse().unwrap();
        let (client_ip, server_ip): (Ipv4Addr, Ipv4Addr) =
            ("10.30.0.2".parse().unwrap(), "10.30.0.3".parse().unwrap());
        let (client_ip_v6, server_ip_v6): (Ipv6Addr, Ipv6Addr) =
            ("fdff::2".parse().unwrap(), "fdff::3".parse().unwrap());
        let table = [
            ServiceRoutes {
                job_name: "app.ns.curl.ns".into(),
                rr_ip: Some("10.30.0.1".parse().unwrap()),
                closest_ip: None,
                rr_ip_v6: Some("fdff:2000::1".parse().unwrap()),
                closest_ip_v6: None,
                instances: vec![InstanceRoute {
                    number: 0,
                    instance_ip: client_ip,
                    nsip: client.ipv4,
                    instance_ip_v6: Some(client_ip_v6),
                    nsip_v6: Some(client.ipv6),
                    node: endpoints[0],
                }],
            },
            ServiceRoutes {
                job_name: "app.ns.nginx.ns".into(),
                rr_ip: Some(rr),
                closest_ip: Some("10.30.66.66".parse().unwrap()),
                rr_ip_v6: Some(rr_v6),
                closest_ip_v6: Some("fdff:2000::66".parse().unwrap()),
                instances: servers
                    .iter()
                    .map(|s| {
                        let n = s.key.number();
                        InstanceRoute {
                            number: n,
                            instance_ip: Ipv4Addr::from(u32::from(server_ip) + n),
                            nsip: s.ipv4,
                            instance_ip_v6: Some(Ipv6Addr::from(
                                u128::from(server_ip_v6) + n as u128,
                            )),
                            nsip_v6: Some(s.ipv6),
                            node: endpoints[1],
                        }
                    })
                    .collect(),
            },
        ];
        for worker in [&one, &two] {
            let mut proxy = worker.proxy.lock().unwrap();
            for s in &table {
                proxy.set_service(s.clone());
            }
        }
        TwoWorkers {
            hosts,
            underlay,
            router: mtus.map(|_| router),
            subnets,
            one,
            two,
            client,
            server,
            servers,
            client_ip,
            server_ip,
            rr,
            client_ip_v6,
            server_ip_v6,
            rr_v6,
            _guard: guard,
        }
    }

    /// The name of an instance namespace, for `ip netns exec`.
    pub fn netns_name(attachment: &Attachment) -> String {
        attachment
            .netns
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Stops both workers (their data planes remove the instance namespaces), then the guard
    /// removes the hosts.
    pub async fn stop(mut self) {
        self.stop_workers().await;
    }

    /// Stops both workers but keeps the host namespaces (to look at what the workers left).
    pub async fn stop_workers(&mut self) {
        self.one.stop().await;
        self.two.stop().await;
    }
}
