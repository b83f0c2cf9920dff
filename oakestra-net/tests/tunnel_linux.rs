//! Service IPs across two workers, for real: each worker's host side is a network namespace of
//! its own (joined to the other by a veth "underlay"), with the data plane (bridge, instance
//! namespaces), the TUN device and the UDP tunnel running inside it (`support/two_workers.rs`,
//! shared with `benches/overlay.rs`). A client instance on worker 1 reaches a server instance on
//! worker 2 through the server's rr_ip, over TCP and with ping, and only ever sees the rr_ip;
//! the server sees the client's instance IP.
//!
//! Root. Deleting the two host namespaces removes their bridges, TUN devices and rules; the
//! guard also deletes the instance namespaces, also when the test fails.

#![cfg(target_os = "linux")]

#[path = "support/two_workers.rs"]
mod two_workers;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use oakestra_net::dataplane::netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use two_workers::{TwoWorkers, WAIT, must};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reaches_a_server_on_another_worker_through_its_rr_ip() {
    let net = TwoWorkers::start('w').await;
    let (client, server, rr) = (net.client.clone(), net.server.clone(), net.rr);
    let client_ip: Ipv4Addr = net.client_ip;

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
    let client_ns = TwoWorkers::netns_name(&client);
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

    net.stop().await;
    assert!(!client.netns.exists() && !server.netns.exists());
}
