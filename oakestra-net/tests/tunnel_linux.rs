//! Service IPs across two workers, for real: each worker's host side is a network namespace of
//! its own (joined to the other by a veth "underlay"), with the data plane (bridge, instance
//! namespaces), the TUN device and the UDP tunnel running inside it (`support/two_workers.rs`,
//! shared with `benches/overlay.rs`). A client instance on worker 1 reaches a server instance on
//! worker 2 through the server's rr_ip, over TCP and with ping, and only ever sees the rr_ip;
//! the server sees the client's instance IP. The same over IPv6 through the rr_ip_v6 (TCP, UDP
//! and ping -6), round robin across two server instances, and a tear-down that leaves no IPv6
//! route or rule behind.
//!
//! Root. Deleting the two host namespaces removes their bridges, TUN devices and rules; the
//! guard also deletes the instance namespaces, also when the test fails.

#![cfg(target_os = "linux")]

#[path = "support/two_workers.rs"]
mod two_workers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use oakestra_net::dataplane::{Attachment, netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use two_workers::{TwoWorkers, WAIT, must};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_a_server_on_another_worker_through_its_rr_ip() {
    let net = TwoWorkers::start('w').await;
    let (client, server, rr) = (net.client.clone(), net.server.clone(), net.rr);
    let client_ip: Ipv4Addr = net.client_ip;

    // TCP: the server listens in its namespace, the client dials the rr_ip from its own.
    let serve = serve_tcp_once(
        server.netns.clone(),
        SocketAddr::from(([0u8; 4], 8080)),
        "hello from nginx",
    )
    .await;
    let to = SocketAddr::from((rr, 8080));
    let (answer, seen_by_client) = dial_tcp(client.netns.clone(), to).await;
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
    ping_answers_from(&client, rr.into());

    net.stop().await;
    assert!(!client.netns.exists() && !server.netns.exists());
}

/// One ping from `client`'s namespace to `to` (IPv4 or IPv6) is answered, from `to`.
fn ping_answers_from(client: &Attachment, to: IpAddr) {
    let (ns, to) = (TwoWorkers::netns_name(client), to.to_string());
    let family = if to.contains(':') { "-6" } else { "-4" };
    let ping = must(&[
        "ip", "netns", "exec", &ns, "ping", family, "-c", "1", "-W", "5", &to,
    ]);
    assert!(ping.contains(&format!("from {to}")), "{ping}");
}

/// Serves one TCP connection on `bind` in `netns`: reads 5 bytes, answers `name`, and returns
/// who it saw (peer, own address).
async fn serve_tcp_once(
    netns: std::path::PathBuf,
    bind: SocketAddr,
    name: &'static str,
) -> tokio::task::JoinHandle<(SocketAddr, SocketAddr)> {
    let listener = netns::run_in(&netns, move || std::net::TcpListener::bind(bind))
        .await
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let (mut s, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("a connection through the tunnel within the wait")
            .unwrap();
        let mut hello = [0u8; 5];
        tokio::time::timeout(WAIT, s.read_exact(&mut hello))
            .await
            .unwrap()
            .unwrap();
        s.write_all(name.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        (peer, s.local_addr().unwrap())
    })
}

/// Dials `to` from `netns`, says hello, returns (the answer, the peer address it saw).
async fn dial_tcp(netns: std::path::PathBuf, to: SocketAddr) -> (String, SocketAddr) {
    let stream = netns::run_in(&netns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .expect("connect through the tunnel");
    let seen = stream.peer_addr().unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    (answer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_reaches_two_servers_on_another_worker_in_turn_through_the_rr_ip_v6() {
    let mut net = TwoWorkers::start_with('x', 2).await;
    let (client, rr6) = (net.client.clone(), net.rr_v6);
    let servers = net.servers.clone();
    assert_eq!(servers.len(), 2);

    // The data plane routed the IPv6 service range to the TUN and set up ip6tables chains.
    let routes = must(&[
        "ip",
        "-n",
        &net.hosts[0],
        "-6",
        "route",
        "show",
        "fdff::/16",
    ]);
    assert!(
        routes.contains("dev x"),
        "fdff::/16 goes to the TUN: {routes}"
    );
    let chain = net.hosts[0].trim_end_matches("host").to_ascii_uppercase();
    let rules = must(&["ip", "netns", "exec", &net.hosts[0], "ip6tables", "-S"]);
    assert!(
        rules.contains(&format!("-A FORWARD -j {chain}-FWD")),
        "{rules}"
    );
    let nat = must(&[
        "ip",
        "netns",
        "exec",
        &net.hosts[0],
        "ip6tables",
        "-t",
        "nat",
        "-S",
    ]);
    assert!(nat.contains(&format!("-A {chain}-POST -s ")), "{nat}");
    assert!(nat.contains("MASQUERADE"), "{nat}");

    // TCP: two new connections to the rr_ip_v6 go to instance 0, then instance 1.
    let rr_to = SocketAddr::from((rr6, 8080));
    for (n, name) in [(0usize, "nginx 0"), (1, "nginx 1")] {
        let serve = serve_tcp_once(
            servers[n].netns.clone(),
            SocketAddr::from(([0u16; 8], 8080)),
            name,
        )
        .await;
        let (answer, seen) = dial_tcp(client.netns.clone(), rr_to).await;
        assert_eq!(
            answer, name,
            "round robin: connection {n} reaches instance {n}"
        );
        assert_eq!(seen, rr_to, "the client sees the rr_ip_v6");
        let (peer, local) = serve.await.unwrap();
        assert_eq!(
            peer.ip(),
            IpAddr::V6(net.client_ip_v6),
            "the server sees the client's instance IPv6"
        );
        assert_eq!(local.ip(), IpAddr::V6(servers[n].ipv6));
    }

    // UDP: an echo on every server; the reply comes from the rr_ip_v6.
    for server in &servers {
        let socket = netns::run_in(&server.netns, || std::net::UdpSocket::bind("[::]:9090"))
            .await
            .unwrap()
            .unwrap();
        socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
    }
    let socket = netns::run_in(&client.netns, || std::net::UdpSocket::bind("[::]:0"))
        .await
        .unwrap()
        .unwrap();
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
    let udp_to = SocketAddr::from((rr6, 9090));
    let mut buf = [0u8; 64];
    let mut answered = None;
    // The first datagram may meet neighbour discovery on the way; ask a few times.
    for _ in 0..5 {
        socket.send_to(b"ping over v6", udp_to).await.unwrap();
        if let Ok(r) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            answered = Some(r.unwrap());
            break;
        }
    }
    let (n, from) = answered.expect("a UDP echo through the rr_ip_v6");
    assert_eq!(&buf[..n], b"ping over v6");
    assert_eq!(from, udp_to, "the UDP reply comes from the rr_ip_v6");

    // ICMPv6 echo through the rr_ip_v6.
    ping_answers_from(&client, rr6.into());

    // Tear-down: no IPv6 route to the TUN, no ip6tables chain or jump of ours is left.
    net.stop_workers().await;
    for host in &net.hosts {
        let routes = must(&["ip", "-n", host, "-6", "route", "show"]);
        assert!(!routes.contains("fdff::/16"), "{host}: {routes}");
        let tag = host.trim_end_matches("host").to_ascii_uppercase();
        for table in ["filter", "nat"] {
            let rules = must(&["ip", "netns", "exec", host, "ip6tables", "-t", table, "-S"]);
            assert!(!rules.contains(&tag), "{host} {table}: {rules}");
        }
    }
    net.stop().await;
}

/// A UDP datagram bigger than the overlay MTU leaves the client in IP fragments (IPv4, and
/// IPv6 Fragment headers); the proxies send every fragment where the first one went, so the
/// server gets the whole datagram and its (equally fragmented) answer reaches the client from
/// the rr_ip (rr_ip_v6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_bigger_than_the_mtu_cross_in_fragments() {
    let net = TwoWorkers::start('g').await;
    let (client, server) = (net.client.clone(), net.server.clone());
    for (bind, to) in [
        (
            SocketAddr::from(([0u8; 4], 5353)),
            SocketAddr::from((net.rr, 5353)),
        ),
        (
            SocketAddr::from(([0u16; 8], 5354)),
            SocketAddr::from((net.rr_v6, 5354)),
        ),
    ] {
        let socket = netns::run_in(&server.netns, move || std::net::UdpSocket::bind(bind))
            .await
            .unwrap()
            .unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..n], from).unwrap();
            n
        });
        let datagram: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = datagram.clone();
        let (answer, from) = netns::run_in(&client.netns, move || {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = std::net::UdpSocket::bind(any).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.send_to(&sent, to).unwrap();
            let mut buf = vec![0u8; 65536];
            let (n, from) = s.recv_from(&mut buf).expect("the echo within the wait");
            (buf[..n].to_vec(), from)
        })
        .await
        .unwrap();
        assert_eq!(
            echo.join().unwrap(),
            datagram.len(),
            "{to}: the server got it whole"
        );
        assert_eq!(answer, datagram, "{to}: the echo came back whole");
        assert_eq!(from, to, "from the service IP");
    }
    net.stop().await;
}
