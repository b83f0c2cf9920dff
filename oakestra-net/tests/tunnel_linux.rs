//! Service IPs across two workers, for real: each worker's host side is a network namespace of
//! its own (joined to the other by a veth "underlay"), with the data plane (bridge, instance
//! namespaces), the TUN device and the UDP tunnel running inside it. A client instance on
//! worker 1 reaches a server instance on worker 2 through the server's rr_ip, over TCP and with
//! ping, and only ever sees the rr_ip; the server sees the client's instance IP.
//!
//! Root. Deleting the two host namespaces removes their bridges, TUN devices and rules; the
//! guard also deletes the instance namespaces, also when the test fails.

#![cfg(target_os = "linux")]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_net::dataplane::tunnel::{Tunnel, TunnelConfig};
use oakestra_net::dataplane::{
    Attachment, DataPlane, DataPlaneConfig, InstanceKey, LinuxDataPlane, Naming, netns,
};
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_net::proxy::{InstanceRoute, Proxy, ServiceRoutes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

fn must(args: &[&str]) -> String {
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
struct Guard {
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
struct Worker {
    proxy: Arc<Mutex<Proxy>>,
    attachments: Vec<Attachment>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    async fn start(
        host: PathBuf,
        config: DataPlaneConfig,
        listen: SocketAddr,
        instances: Vec<InstanceKey>,
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
                            mtu: DataPlaneConfig::DEFAULT_MTU,
                        },
                        Arc::clone(&proxy),
                        None,
                    )
                    .await
                    .unwrap();
                    let _ = ready_tx.send((attachments, proxy));
                    let _ = stop_rx.await;
                    drop(tunnel);
                    let _ = plane.teardown_host().await;
                });
            })
            .await;
            result.unwrap();
        });
        let (attachments, proxy) = tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("the worker came up within the wait")
            .expect("the worker came up (see its panic above)");
        Worker {
            proxy,
            attachments,
            stop: Some(stop_tx),
            done: Some(done),
        }
    }

    async fn stop(mut self) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_a_server_on_another_worker_through_its_rr_ip() {
    let pid = std::process::id();
    let tags = [
        format!("w{}a", pid % 100_000),
        format!("w{}b", pid % 100_000),
    ];
    let hosts = [format!("{}host", tags[0]), format!("{}host", tags[1])];
    let _guard = Guard {
        hosts: hosts.to_vec(),
        prefixes: tags.iter().map(|t| format!("{t}-")).collect(),
    };
    // The underlay: 100.64.0.0/10, one /30 per test process.
    let (x, y) = (64 + (pid / 64 % 64) as u8, ((pid % 64) * 4) as u8);
    let underlay = [Ipv4Addr::new(100, x, y, 1), Ipv4Addr::new(100, x, y, 2)];
    for (i, host) in hosts.iter().enumerate() {
        must(&["ip", "netns", "add", host]);
        must(&["ip", "-n", host, "link", "set", "lo", "up"]);
        let _ = i;
    }
    must(&[
        "ip", "-n", &hosts[0], "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns",
        &hosts[1],
    ]);
    for (i, host) in hosts.iter().enumerate() {
        let dev = format!("u{i}");
        must(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{}/30", underlay[i]),
            "dev",
            &dev,
        ]);
        must(&["ip", "-n", host, "link", "set", &dev, "up"]);
    }

    // Slots in 10.29.128.0/17 (the node tests use 10.29.0.0/17).
    let slot = (pid % 256) * 2;
    let endpoints = [
        SocketAddr::from((underlay[0], 50103)),
        SocketAddr::from((underlay[1], 50103)),
    ];
    let client_key = InstanceKey::new("app.ns.curl.ns", 0).unwrap();
    let server_key = InstanceKey::new("app.ns.nginx.ns", 0).unwrap();
    let one = Worker::start(
        netns::path_of(&hosts[0]),
        config(&tags[0], slot),
        endpoints[0],
        vec![client_key],
    )
    .await;
    let two = Worker::start(
        netns::path_of(&hosts[1]),
        config(&tags[1], slot + 1),
        endpoints[1],
        vec![server_key],
    )
    .await;
    let client = one.attachments[0].clone();
    let server = two.attachments[0].clone();

    // What the cluster's table query would answer (instance and rr IPs from the root).
    let rr: Ipv4Addr = "10.30.55.55".parse().unwrap();
    let (client_ip, server_ip): (Ipv4Addr, Ipv4Addr) =
        ("10.30.0.2".parse().unwrap(), "10.30.0.3".parse().unwrap());
    let table = [
        ServiceRoutes {
            job_name: "app.ns.curl.ns".into(),
            rr_ip: Some("10.30.0.1".parse().unwrap()),
            instances: vec![InstanceRoute {
                number: 0,
                instance_ip: client_ip,
                nsip: client.ipv4,
                node: endpoints[0],
            }],
        },
        ServiceRoutes {
            job_name: "app.ns.nginx.ns".into(),
            rr_ip: Some(rr),
            instances: vec![InstanceRoute {
                number: 0,
                instance_ip: server_ip,
                nsip: server.ipv4,
                node: endpoints[1],
            }],
        },
    ];
    for worker in [&one, &two] {
        let mut proxy = worker.proxy.lock().unwrap();
        for s in &table {
            proxy.set_service(s.clone());
        }
    }

    // TCP: the server listens in its namespace, the client dials the rr_ip from its own.
    let listener = netns::run_in(&server.netns, || {
        std::net::TcpListener::bind("0.0.0.0:8080")
    })
    .await
    .unwrap()
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let serve = tokio::spawn(async move {
        let (mut s, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("a connection through the tunnel within the wait")
            .unwrap();
        let mut hello = [0u8; 5];
        tokio::time::timeout(WAIT, s.read_exact(&mut hello))
            .await
            .unwrap()
            .unwrap();
        s.write_all(b"hello from nginx").await.unwrap();
        s.shutdown().await.unwrap();
        (peer, s.local_addr().unwrap())
    });
    let to = SocketAddr::from((rr, 8080));
    let stream = netns::run_in(&client.netns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .expect("connect to the rr_ip");
    let seen_by_client = stream.peer_addr().unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "hello from nginx");
    assert_eq!(seen_by_client, to, "the client sees the rr_ip");
    let (peer, local) = serve.await.unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(client_ip),
        "the server sees the client's instance IP"
    );
    assert_eq!(local.ip(), std::net::IpAddr::V4(server.ipv4));

    // ICMP echo through the rr_ip (Oakestra dropped it).
    let client_ns = client
        .netns
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let ping = must(&[
        "ip",
        "netns",
        "exec",
        &client_ns,
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        &rr.to_string(),
    ]);
    assert!(ping.contains(&format!("from {rr}")), "{ping}");

    one.stop().await;
    two.stop().await;
    assert!(!client.netns.exists() && !server.netns.exists());
}
