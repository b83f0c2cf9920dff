//! Overlay data plane benchmark (issue 8): what the TUN proxy and the UDP tunnel cost compared
//! with plain routing between the same two workers.
//!
//! Topology: `tests/support/two_workers.rs` (two workers in host namespaces of their own joined
//! by a veth underlay; a client instance on worker 1, a server instance on worker 2). For the
//! direct path, each host namespace also gets a route to the other worker's /26 via the
//! underlay, so the client reaches the server's namespace IP with no proxy and no tunnel.
//!
//! Measured, each from the client's instance namespace to a server in the server's:
//! - request/response RTT: N sequential 1-byte echoes over one TCP connection (`TCP_NODELAY`),
//!   and M new connections (connect + 1-byte echo + close), to (a) the rr_ip, (b) the server's
//!   overlay instance IP (both through proxy + tunnel), (c) the server's namespace IP (direct);
//! - TCP throughput with iperf3 (Debian package), through the rr_ip vs direct.
//!
//! Root, `iproute2`, `iptables`, `iperf3`. Run: `cargo bench -p oakestra-net --features
//! dataplane --bench overlay`. Environment: `OVERLAY_RTT_N` (default 5000), `OVERLAY_CONNS`
//! (500), `OVERLAY_IPERF_SECS` (5), `OVERLAY_IPERF_RUNS` (2).

#![cfg(target_os = "linux")]

#[path = "../tests/support/two_workers.rs"]
mod two_workers;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oakestra_net::dataplane::netns;
use two_workers::{TwoWorkers, must};

const PORT: u16 = 7007;
const IPERF_PORT: u16 = 5201;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Microseconds at the given quantile of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn summarise(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    Summary {
        p50: quantile(&samples, 0.5),
        p99: quantile(&samples, 0.99),
        mean: mean * 1e6,
    }
}

/// A 1-byte echo server in the server's namespace that serves `connections` connections, each
/// on a thread of its own, and then ends.
async fn echo_server(ns: &std::path::Path, connections: usize) -> std::thread::JoinHandle<()> {
    let listener = netns::run_in(ns, || TcpListener::bind(("0.0.0.0", PORT)))
        .await
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut served = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            served.push(std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b) {
                    if s.write_all(&b).is_err() {
                        break;
                    }
                }
            }));
        }
        for t in served {
            let _ = t.join();
        }
    })
}

/// N sequential 1-byte echoes over one connection, after a warm-up, from the client namespace.
async fn rtt_one_connection(ns: &std::path::Path, to: SocketAddr, n: usize) -> Summary {
    let samples = netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [7u8; 1];
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let start = Instant::now();
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
            if i >= n / 10 {
                samples.push(start.elapsed());
            }
        }
        samples
    })
    .await
    .unwrap();
    summarise(samples)
}

/// M new connections, each connect + one 1-byte echo + close, from the client namespace.
async fn rtt_new_connections(ns: &std::path::Path, to: SocketAddr, m: usize) -> Summary {
    let samples = netns::run_in(ns, move || {
        let mut samples = Vec::with_capacity(m);
        for _ in 0..m {
            let start = Instant::now();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            s.set_nodelay(true).unwrap();
            let mut b = [7u8; 1];
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
            samples.push(start.elapsed());
        }
        samples
    })
    .await
    .unwrap();
    summarise(samples)
}

/// Kills the iperf3 server if the run ends early.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 run from the client namespace to `to`: received Gbit/s and the sender's
/// retransmissions.
async fn iperf(server_ns: &str, client_ns: &str, to: Ipv4Addr, secs: usize) -> (f64, u64) {
    let port = IPERF_PORT.to_string();
    let _server = Reaper(
        Command::new("ip")
            .args([
                "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", &port,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 (Debian package iperf3, scripts/setup)"),
    );
    // iperf3 says nothing when it listens; half a second is plenty on an idle namespace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", client_ns, "iperf3", "-c"])
        .arg(to.to_string())
        .args(["-p", &port, "-t", &secs.to_string(), "-J"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 -c {to}: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("iperf3 -J prints JSON");
    let end = &report["end"];
    let bits = end["sum_received"]["bits_per_second"].as_f64().unwrap();
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    (bits / 1e9, retransmits)
}

fn print_rtt(what: &str, s: Summary) {
    println!(
        "  {what:<44} p50 {:>7.1} µs   p99 {:>7.1} µs   mean {:>7.1} µs",
        s.p50, s.p99, s.mean
    );
}

fn main() {
    if !nix_is_root() {
        println!("overlay bench: needs root (namespaces, veths, iptables); skipped");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn nix_is_root() -> bool {
    // The effective uid, without a dependency: /proc/self/status "Uid: real effective …".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

async fn run() {
    let n = env_or("OVERLAY_RTT_N", 5000);
    let m = env_or("OVERLAY_CONNS", 500);
    let secs = env_or("OVERLAY_IPERF_SECS", 5);
    let runs = env_or("OVERLAY_IPERF_RUNS", 2);

    let net = TwoWorkers::start('b').await;
    // The direct path: each worker routes the other's /26 over the underlay (the NAT chain
    // returns early for 10.16.0.0/12, so nothing is masqueraded).
    for (i, host) in net.hosts.iter().enumerate() {
        let other = 1 - i;
        must(&[
            "ip",
            "-n",
            host,
            "route",
            "add",
            &format!("{}/26", net.subnets[other]),
            "via",
            &net.underlay[other].to_string(),
        ]);
    }
    let targets = [
        ("rr_ip (proxy + tunnel)", net.rr),
        ("instance IP (proxy + tunnel)", net.server_ip),
        ("namespace IP (direct route, no tunnel)", net.server.ipv4),
    ];
    println!(
        "overlay bench: client {} on worker 1 → server {} on worker 2; rr_ip {}, instance IP {}",
        net.client.ipv4, net.server.ipv4, net.rr, net.server_ip
    );

    let server = echo_server(&net.server.netns, targets.len() * (1 + m)).await;
    println!("request/response, {n} sequential 1-byte echoes over one TCP connection:");
    let mut one = Vec::new();
    for (what, ip) in targets {
        let s = rtt_one_connection(&net.client.netns, SocketAddr::from((ip, PORT)), n).await;
        print_rtt(what, s);
        one.push(s);
    }
    println!(
        "  added by the overlay (rr_ip − direct): p50 {:.1} µs, p99 {:.1} µs",
        one[0].p50 - one[2].p50,
        one[0].p99 - one[2].p99
    );
    println!("new connections, {m} × (connect + 1-byte echo + close):");
    let mut new = Vec::new();
    for (what, ip) in targets {
        let s = rtt_new_connections(&net.client.netns, SocketAddr::from((ip, PORT)), m).await;
        print_rtt(what, s);
        new.push(s);
    }
    println!(
        "  added by the overlay (rr_ip − direct): p50 {:.1} µs, p99 {:.1} µs",
        new[0].p50 - new[2].p50,
        new[0].p99 - new[2].p99
    );
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();

    println!("TCP throughput, iperf3 -t {secs}, {runs} runs each (alternating):");
    let (client_ns, server_ns) = (
        TwoWorkers::netns_name(&net.client),
        TwoWorkers::netns_name(&net.server),
    );
    let (rr, direct) = (net.rr, net.server.ipv4);
    let mut results = (Vec::new(), Vec::new());
    for _ in 0..runs {
        results
            .0
            .push(iperf(&server_ns, &client_ns, rr, secs).await);
        results
            .1
            .push(iperf(&server_ns, &client_ns, direct, secs).await);
    }
    let mean = |v: &[(f64, u64)]| v.iter().map(|r| r.0).sum::<f64>() / v.len() as f64;
    for (what, v) in [
        ("rr_ip (proxy + tunnel)", &results.0),
        ("direct", &results.1),
    ] {
        let each: Vec<String> = v
            .iter()
            .map(|(g, r)| format!("{g:.2} Gbit/s ({r} retr)"))
            .collect();
        println!(
            "  {what:<24} mean {:.2} Gbit/s: {}",
            mean(v),
            each.join(", ")
        );
    }
    println!(
        "  ratio tunnel / direct: {:.2}",
        mean(&results.0) / mean(&results.1)
    );

    net.stop().await;
}
