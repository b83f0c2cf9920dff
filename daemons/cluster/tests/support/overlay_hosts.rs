//! Pieces of the real-namespace overlay tests: "hosts" (network namespaces joined to this
//! machine by a veth pair, as separate machines would be), the real `oakestra-cluster` and
//! `oakestra-node` processes on them, and the test playing the containers (a server that
//! answers with its name, a client request) inside the instances' namespaces.
//!
//! Include with `#[path = "support/overlay_hosts.rs"] mod overlay_hosts;` next to `mod support;`.
//! Needs root. The [`Guard`] kills the processes and deletes the namespaces and links, also
//! when a test fails.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oakestra_net::dataplane::netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a command that must succeed.
pub fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon binary of the workspace next to the test's (built when missing).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let candidate = exe.parent().and_then(Path::parent).unwrap().join(name);
    if !candidate.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building {name} failed");
    }
    candidate
}

/// Processes, namespaces and links of a test.
#[derive(Default)]
pub struct Guard {
    /// Killed first.
    pub children: Vec<Child>,
    /// Host namespaces (`ip netns`).
    pub hosts: Vec<String>,
    /// Links in this namespace.
    pub links: Vec<String>,
    /// Prefixes of instance namespaces the workers created.
    pub prefixes: Vec<String>,
    /// Run after the processes are killed, before the namespaces go (e.g. stopping a worker's
    /// own containerd).
    pub cleanups: Vec<Box<dyn FnOnce() + Send>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cleanup in self.cleanups.drain(..) {
            cleanup();
        }
        for prefix in &self.prefixes {
            for ns in netns::list(prefix).unwrap_or_default() {
                let _ = netns::delete(&netns::path_of(&ns));
            }
        }
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", host]).output();
        }
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// One worker "machine": namespace `<tag>h`, reached from here over the /30 `here`–`there`.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short unique tag (also the worker's `--overlay-tag`); at most 7 characters, since
    /// interface names derive from it.
    pub tag: String,
    /// The namespace's name.
    pub ns: String,
    /// This machine's end of the /30.
    pub here: Ipv4Addr,
    /// The host namespace's address (the worker's advertised address).
    pub there: Ipv4Addr,
}

impl Host {
    /// Creates the namespace and its veth pair (registered with `guard` for removal).
    pub fn create(guard: &mut Guard, tag: &str, here: Ipv4Addr, there: Ipv4Addr) -> Host {
        let host = Host {
            tag: tag.to_owned(),
            ns: format!("{tag}h"),
            here,
            there,
        };
        let link = format!("{tag}x");
        guard.hosts.push(host.ns.clone());
        guard.links.push(link.clone());
        guard.prefixes.push(format!("{tag}-"));
        let ns = host.ns.as_str();
        must(&["ip", "netns", "add", ns]);
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        must(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        must(&["ip", "addr", "add", &format!("{here}/30"), "dev", &link]);
        must(&["ip", "link", "set", &link, "up"]);
        must(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{there}/30"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        must(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &here.to_string(),
        ]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        host
    }

    /// Where the worker on this host serves its metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://{}:10101/metrics", self.there)
    }

    /// The namespace of instance `n` of `job_name` created by the worker on this host.
    pub fn instance_ns(&self, job_name: &str, n: u32) -> PathBuf {
        netns::path_of(&format!("{}-{job_name}.{n}", self.tag))
    }

    /// Starts `oakestra-node` (fake runtime, overlay on) inside this host, registering with
    /// the cluster API at `cluster_http` (`ip:port` as seen from the host).
    pub fn spawn_worker(&self, cluster_http: &str, token: &str, name: &str, data: &Path) -> Child {
        // nsenter joins only the network namespace (`ip netns exec` would also give the
        // worker a mount namespace of its own, hiding its instance namespaces from us).
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(binary("oakestra-node"))
            .args(["--cluster", cluster_http, "--token", token, "--name", name])
            .args(["--runtime", "fake", "--overlay", "on", "--overlay-tag"])
            .arg(&self.tag)
            .args(["--advertise-ip", &self.there.to_string()])
            .args(["--metrics-listen", &format!("{}:10101", self.there)])
            .args(["--report-interval", "500ms"])
            .arg("--data-dir")
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_NODE_CONFIG")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// Starts `oakestra-cluster` named `name` on this machine, linked to the root at `root_grpc`,
/// with its API on `0.0.0.0:http` and its embedded broker on `0.0.0.0:mqtt`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_cluster(
    name: &str,
    http: u16,
    mqtt: u16,
    root_grpc: &str,
    join_token: &str,
    worker_token: &str,
    data: &Path,
    extra: &[&str],
) -> Child {
    Command::new(binary("oakestra-cluster"))
        .args(["--name", name, "--listen", &format!("0.0.0.0:{http}")])
        .args(["--mqtt-listen", &format!("0.0.0.0:{mqtt}")])
        .args(["--root", root_grpc, "--join-token", join_token])
        .args(["--worker-join-token", worker_token])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env(
            "RUST_LOG",
            std::env::var("CLUSTER_LOG").unwrap_or("warn".into()),
        )
        .env_remove("OAKESTRA_CLUSTER_CONFIG")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Plays a server container: answers every connection in the namespace at `path` on `port`
/// (IPv4) with `name`; reports each peer.
pub async fn serve(
    path: &Path,
    port: u16,
    name: String,
    peers: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    serve_at(path, SocketAddr::from(([0, 0, 0, 0], port)), name, peers).await
}

/// [`serve`] on the address `at` (e.g. `[::]:port` for IPv6).
pub async fn serve_at(
    path: &Path,
    at: SocketAddr,
    name: String,
    peers: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    let listener = netns::run_in(path, move || std::net::TcpListener::bind(at))
        .await
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, peer)) = listener.accept().await else {
                return;
            };
            let _ = peers.send(peer);
            let name = name.clone();
            tokio::spawn(async move {
                let mut hello = [0u8; 5];
                if s.read_exact(&mut hello).await.is_ok() {
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    })
}

/// One request from inside the namespace at `from` to `to`: the answer and the peer address
/// the client saw.
pub async fn request(from: &Path, to: SocketAddr) -> Result<(String, SocketAddr), String> {
    let stream = netns::run_in(from, move || {
        // Long enough for the SYN sent again after a table miss (1 s), short enough that a
        // dead instance costs little.
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("connect to {to}: {e}"))?;
    let seen = stream.peer_addr().map_err(|e| e.to_string())?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
    let talk = async {
        stream.write_all(b"hello").await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((answer, seen))
}
