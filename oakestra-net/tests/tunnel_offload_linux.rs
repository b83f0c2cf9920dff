//! Bulk TCP through the tunnel with offloads, for real (the topology of `tunnel_linux.rs`),
//! over IPv4 and IPv6:
//! the TUN devices hand the proxies 64 KB super-packets with partial checksums, which cross
//! the underlay as chunked frames in UDP segmentation offload sends and come back together
//! from UDP GRO reads. Every byte must arrive intact both ways, and the tunnel's counters must
//! show that the offloaded path (not the plain one) carried the bulk — while ping, which has no
//! offload, still travels plain (Oakestra's wire format).
//!
//! Root, `iproute2`, `iptables`, `iputils-ping`.

#![cfg(target_os = "linux")]

#[path = "support/two_workers.rs"]
mod two_workers;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use oakestra_net::dataplane::netns;
use oakestra_net::dataplane::tunnel::Carried;
use two_workers::{TwoWorkers, must};

/// Bytes each way.
const BULK: usize = 24 << 20;
const PORT: u16 = 9090;

/// The byte at position `i` of the test stream (not periodic in anything TCP or IP does).
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

fn send_stream(s: &mut TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0;
    while at < BULK {
        let n = buf.len().min(BULK - at);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = byte(at + k);
        }
        s.write_all(&buf[..n]).unwrap();
        at += n;
    }
}

/// Reads `BULK` bytes; returns how many differ from the stream and the first that does.
fn check_stream(s: &mut TcpStream) -> (usize, Option<usize>) {
    let mut buf = vec![0u8; 1 << 16];
    let (mut at, mut wrong, mut first) = (0, 0, None);
    while at < BULK {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {at} of {BULK} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            if *b != byte(at + k) {
                wrong += 1;
                first.get_or_insert(at + k);
            }
        }
        at += n;
    }
    (wrong, first)
}

/// The client sends the stream to `to`, the server (listening on `bind`) checks it and sends it
/// back, the client checks that: (server's check, (client's check, bytes after the stream)).
async fn bulk_both_ways(
    client: &Path,
    server: &Path,
    bind: SocketAddr,
    to: SocketAddr,
) -> ((usize, Option<usize>), ((usize, Option<usize>), usize)) {
    let listener = netns::run_in(server, move || TcpListener::bind(bind))
        .await
        .unwrap()
        .unwrap();
    let serve = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let checked = check_stream(&mut s);
        send_stream(&mut s);
        s.shutdown(Shutdown::Write).unwrap();
        checked
    });
    let client_side = netns::run_in(client, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        send_stream(&mut s);
        let checked = check_stream(&mut s);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (checked, rest.len())
    })
    .await
    .unwrap();
    (serve.join().unwrap(), client_side)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_tcp_crosses_the_tunnel_offloaded_and_intact_both_ways() {
    let net = TwoWorkers::start('o').await;
    let (client, server, rr) = (net.client.clone(), net.server.clone(), net.rr);

    // Ping first: ICMP has no offload, so it travels plain.
    let ping = must(&[
        "ip",
        "netns",
        "exec",
        &TwoWorkers::netns_name(&client),
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        &rr.to_string(),
    ]);
    assert!(ping.contains(&format!("from {rr}")), "{ping}");
    assert!(net.one.stats.sent(Carried::Plain) >= 2);
    assert!(net.two.stats.received(Carried::Plain) >= 2);

    // IPv4 (TSO4 super-packets) through the rr_ip, then IPv6 (TSO6) through the rr_ip_v6.
    for (bind, to) in [
        (
            SocketAddr::from(([0u8; 4], PORT)),
            SocketAddr::from((rr, PORT)),
        ),
        (
            SocketAddr::from(([0u16; 8], PORT + 1)),
            SocketAddr::from((net.rr_v6, PORT + 1)),
        ),
    ] {
        let (one, two) = (&net.one.stats, &net.two.stats);
        let counters = || {
            [
                ("client's worker sent chunked", one.sent(Carried::Chunked)),
                (
                    "server's worker received chunked",
                    two.received(Carried::Chunked),
                ),
                ("server's worker sent chunked", two.sent(Carried::Chunked)),
                (
                    "client's worker received chunked",
                    one.received(Carried::Chunked),
                ),
                ("server's worker coalesced reads", two.coalesced_reads()),
                ("client's worker coalesced reads", one.coalesced_reads()),
            ]
        };
        let before = counters();
        let (server_side, client_side) =
            bulk_both_ways(&client.netns, &server.netns, bind, to).await;
        assert_eq!(
            server_side,
            (0, None),
            "client → server via {to}: bytes changed on the way"
        );
        assert_eq!(
            client_side,
            ((0, None), 0),
            "server → client via {to}: bytes changed on the way"
        );
        // The bulk went as chunked frames both ways, in coalesced reads: 24 MB in frames of at
        // most 64 KB is well over a hundred each way.
        for ((what, was), (_, now)) in before.into_iter().zip(counters()) {
            assert!(now - was >= 100, "via {to}: {what}: {}", now - was);
        }
    }
    let one = &net.one.stats;

    // Nearly every byte was offloaded: plain packets are the handshake, ping and a few more.
    assert!(
        one.sent(Carried::Plain) < 100,
        "plain sends: {}",
        one.sent(Carried::Plain)
    );
    net.stop().await;
}
