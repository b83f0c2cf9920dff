//! The overlay MTU follows the underlay, for real (the topology of `tunnel_linux.rs` with a
//! router between the workers): worker 1's link has MTU 1,400 (an LTE link), worker 2's 1,500. Each
//! worker detects its own overlay MTU (1,360 and 1,460: 40 bytes of tunnel), so TCP between
//! them settles on the smaller MSS by itself, and worker 2's tunnel cuts its offloaded frames
//! into chunks worker 1's underlay carries (the router fragments nothing). A 20 MB transfer through the rr_ip completes both
//! ways within a bound and intact; ping with DF set passes at the detected size and fails one
//! byte above it.
//!
//! Root, `iproute2`, `iptables`, `iputils-ping` (for `-M do`).

#![cfg(target_os = "linux")]

#[path = "support/two_workers.rs"]
mod two_workers;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use oakestra_net::dataplane::netns;
use oakestra_net::dataplane::tunnel::Carried;
use two_workers::{TwoWorkers, must};

/// Bytes each way.
const BULK: usize = 20 << 20;
const PORT: u16 = 9190;
/// Both directions of the transfer together; a stalled transfer (packets too big for the
/// underlay, retransmitted until TCP gives up) takes far longer.
const BOUND: Duration = Duration::from_secs(30);

fn byte(i: usize) -> u8 {
    (i.wrapping_mul(29) ^ (i >> 11)) as u8
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

/// Reads until the sender closes: (bytes received, bytes that differ from the stream).
fn receive_stream(s: &mut TcpStream) -> (usize, usize) {
    let mut buf = vec![0u8; 1 << 16];
    let (mut at, mut wrong) = (0, 0);
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return (at, wrong),
            Ok(n) => n,
        };
        wrong += buf[..n]
            .iter()
            .enumerate()
            .filter(|(k, b)| **b != byte(at + k))
            .count();
        at += n;
    }
}

/// The MTU of `dev` in namespace `ns`.
fn mtu_of(ns: &str, dev: &str) -> u32 {
    let out = must(&["ip", "-n", ns, "-o", "link", "show", dev]);
    let after = out.split(" mtu ").nth(1).expect("ip link shows the MTU");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The `Ip:` counter `name` of namespace `ns` (`/proc/net/snmp` is per namespace).
fn ip_counter(ns: &str, name: &str) -> u64 {
    let snmp = must(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]);
    let mut rows = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let at = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// `ping -M do -s <payload>` from namespace `ns` to `to`: (passed, output).
fn ping_df(ns: &str, payload: u32, to: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-M", "do", "-c", "2", "-W", "2",
        ])
        .args(["-s", &payload.to_string(), to])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_underlay_carries_full_size_tcp_both_ways_and_df_pings_up_to_its_mtu() {
    let net = TwoWorkers::start_with_underlay_mtus('m', [1400, 1500]).await;
    let (client, server, rr) = (net.client.clone(), net.server.clone(), net.rr);
    let (client_ns, server_ns) = (
        TwoWorkers::netns_name(&client),
        TwoWorkers::netns_name(&server),
    );

    // Detected: the underlay's MTU minus 40 bytes (IPv4 20, UDP 8, frame header 12).
    assert_eq!(mtu_of(&client_ns, "eth0"), 1360);
    assert_eq!(mtu_of(&server_ns, "eth0"), 1460);

    // DF pings from the small side: 1,360 − 28 bytes of IP and ICMP pass (and their
    // 1,360-byte replies come back over the 1,400-byte link); one byte more does not leave.
    let (ok, text) = ping_df(&client_ns, 1332, &rr.to_string());
    assert!(ok, "ping -M do -s 1332 through the rr_ip: {text}");
    assert!(text.contains(&format!("from {rr}")), "{text}");
    let (ok, text) = ping_df(&client_ns, 1333, &rr.to_string());
    assert!(!ok, "ping -M do -s 1333 must fail: {text}");
    assert!(
        text.to_lowercase().contains("message too long") || text.contains("mtu"),
        "fails for its size: {text}"
    );

    let router = net.router.clone().unwrap();
    let fragmented_before = ip_counter(&router, "FragCreates");

    // 20 MB client → server, then 20 MB server → client, on one connection via the rr_ip.
    let before = net.two.stats.sent(Carried::Chunked);
    let started = Instant::now();
    let listener = netns::run_in(&server.netns, || {
        TcpListener::bind(SocketAddr::from(([0u8; 4], PORT)))
    })
    .await
    .unwrap()
    .unwrap();
    let serve = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        let mut upload = s.try_clone().unwrap();
        let received = {
            // Read the client's stream until it shuts its side down.
            receive_stream(&mut upload)
        };
        send_stream(&mut s);
        s.shutdown(Shutdown::Write).unwrap();
        received
    });
    let to = SocketAddr::from((rr, PORT));
    let client_side = netns::run_in(&client.netns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        send_stream(&mut s);
        s.shutdown(Shutdown::Write).unwrap();
        receive_stream(&mut s)
    })
    .await
    .unwrap();
    let server_side = serve.join().unwrap();
    let took = started.elapsed();

    assert_eq!(
        server_side,
        (BULK, 0),
        "client → server: bytes received, wrong"
    );
    assert_eq!(
        client_side,
        (BULK, 0),
        "server → client: bytes received, wrong"
    );
    assert!(took < BOUND, "40 MB took {took:?}");
    // The large side's offloaded path carried it (in chunks cut for the small side).
    assert!(
        net.two.stats.sent(Carried::Chunked) - before >= 100,
        "chunked sends of the 1,500-byte worker: {}",
        net.two.stats.sent(Carried::Chunked) - before
    );
    // Nothing was too big for the 1,400-byte link: the router cut no datagram into fragments.
    assert_eq!(
        ip_counter(&router, "FragCreates") - fragmented_before,
        0,
        "fragments the router made"
    );
    eprintln!("40 MB through a 1,400/1,500 underlay in {took:?}");
    net.stop().await;
}
