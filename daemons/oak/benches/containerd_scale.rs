//! Real containers through `oak up` (figures in benches/RESULTS.md). A bench target without the
//! libtest harness:
//!
//! ```sh
//! cargo build --release -p oakestra-node                 # the worker the scale part measures
//! cargo bench -p oak --bench containerd_scale            # both parts
//! cargo bench -p oak --bench containerd_scale -- latency # API call → RUNNING only
//! cargo bench -p oak --bench containerd_scale -- scale   # 100 instances only
//! ```
//!
//! * `latency`: `oak up` with its defaults (`--runtime auto`, overlay network on; one
//!   in-process worker) on the test containerd; with the busybox test image cached, a service
//!   of 1 vCPU and 100 MB (the seeds' nginx), `POST /api/service/<id>/instance` until the root
//!   shows the new instance `RUNNING` (root scheduling, gRPC to the cluster, MQTT to the worker,
//!   network namespace and veth, container start, the worker's report back up), 20 times;
//!   p50/p90. Then the same while two busy loops saturate both cores: capacity is reserved,
//!   not measured, so no deploy waits for CPU.
//! * `scale`: `oak up --workers 0` plus one `oakestra-node --runtime containerd` process
//!   (release, built if missing), 100 instances of the test image (busybox httpd) on it; with
//!   all RUNNING, CPU (from /proc/<pid>/schedstat) and RSS over 30 s of the worker, of the
//!   instances' containerd shims and of containerd.
//!
//! Needs root and the fixtures of `scripts/setup` (test containerd and loopback registry of
//! `oakestra-runtime/tests/containerd_support/`). Containers live in the containerd namespaces
//! `oak-bench-latency` / `oak-bench-scale` and are removed at the end. Run without `--bench` (as
//! `cargo test --benches` does), it only prints how to run it.

#[path = "../../../oakestra-runtime/tests/containerd_support/mod.rs"]
mod containerd_support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oakestra_core::status::Status;
use serde_json::json;

const SCALE_INSTANCES: u32 = 100;
const LATENCY_RUNS: u32 = 20;
const MEASURE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!(
            "benchmark real containers through oak up: run with `cargo bench -p oak --bench containerd_scale [-- latency|scale]`"
        );
        return;
    }
    let only = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if only.as_deref().is_none_or(|o| o == "latency") {
        runtime.block_on(latency());
    }
    if only.as_deref().is_none_or(|o| o == "scale") {
        runtime.block_on(scale());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ctr` in `namespace`, killed after 60 s.
fn ctr(socket: &Path, namespace: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("running ctr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes every task and container of `namespace`.
fn clean(socket: &Path, namespace: &str) {
    let ids: Vec<String> = ctr(socket, namespace, &["containers", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    for id in &ids {
        ctr(socket, namespace, &["tasks", "kill", "-s", "SIGKILL", id]);
    }
    for id in &ids {
        ctr(socket, namespace, &["tasks", "rm", "-f", id]);
        ctr(socket, namespace, &["containers", "rm", id]);
    }
}

/// A child process, killed when dropped; its stdout lines go to a channel.
struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut command: Command, stderr: &Path) -> Proc {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("starting a process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first `http://…` word of the line containing `needle` (within 60 s).
    fn url_after(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {needle:?} from the process"));
            if line.contains(needle) {
                return line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .unwrap()
                    .to_owned();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // Wait up to 15 s for it to stop (no sleep loop in a destructor), then kill.
        let _ = Command::new("timeout")
            .args(["15", "tail", "-f", "/dev/null", "--pid"])
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `oak up` on the test containerd, in `namespace`, with `workers` in-process workers, with
/// its defaults plus `extra`.
fn oak_up(
    dir: &Path,
    socket: &Path,
    namespace: &str,
    workers: u32,
    extra: &[&str],
) -> (Proc, String, u16) {
    let cluster_port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_oak"));
    command
        .arg("up")
        .arg("--data-dir")
        .arg(dir.join("state"))
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--cluster-listen")
        .arg(format!("127.0.0.1:{cluster_port}"))
        .arg("--mqtt-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--workers", &workers.to_string()])
        .arg("--containerd-socket")
        .arg(socket)
        .args(["--containerd-namespace", namespace, "--stop-grace", "1s"])
        .args(extra);
    let up = Proc::spawn(command, &dir.join("up.err"));
    let api = up.url_after("  API ");
    (up, api, cluster_port)
}

async fn admin(api: &str) -> oakestra_client::Client {
    let admin = oakestra_client::Client::new(api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin.active_clusters().await.map_or(true, |c| c.is_empty()) {
        assert!(Instant::now() < deadline, "no active cluster within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
}

/// An application with one service running `image` (its httpd) asking for `vcpus` and
/// `memory` MB; returns the service id.
async fn create_service(
    admin: &oakestra_client::Client,
    name: &str,
    image: &str,
    vcpus: u32,
    memory: u64,
) -> String {
    let sla = json!({
        "sla_version": "v2.0",
        "customerID": "Admin",
        "applications": [{
            "application_name": name, "application_namespace": "bench",
            "application_desc": "benchmark",
            "microservices": [{
                "microservice_name": "web", "microservice_namespace": "bench",
                "virtualization": "container", "code": image, "cmd": [],
                "memory": memory, "vcpus": vcpus, "storage": 0
            }]
        }]
    });
    let apps = admin.create_applications(&sla).await.unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    services[0].id.to_string()
}

/// Instance numbers of `service` that are RUNNING; panics on FAILED.
async fn running(admin: &oakestra_client::Client, service: &str) -> Vec<u32> {
    let Ok(s) = admin.service(service).await else {
        return Vec::new();
    };
    s.instance_list
        .iter()
        .filter(|i| {
            if i.status.as_ref().is_some_and(|s| s.to_string() == "FAILED") {
                panic!(
                    "instance {} FAILED: {:?}",
                    i.instance_number, i.status_detail
                );
            }
            i.status == Some(Status::RUNNING)
        })
        .map(|i| i.instance_number)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Two busy loops, one per core of this machine, until dropped.
struct CpuHog(Vec<Child>);

impl CpuHog {
    fn start(n: usize) -> CpuHog {
        CpuHog(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("starting a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// API call → RUNNING for `LATENCY_RUNS` instances of `service`, one at a time (each undeployed
/// before the next); prints p50/p90 under `label`.
async fn measure_deploys(admin: &oakestra_client::Client, service: &str, label: &str) {
    let mut times = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let t = Instant::now();
        let answer = admin.deploy_instance(service).await.unwrap();
        let n = answer.instance.expect("the new instance").instance_number;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !running(admin, service).await.contains(&n) {
            assert!(
                Instant::now() < deadline,
                "instance {n} never ran ({label}): {:?}",
                admin.service(service).await.map(|s| s
                    .instance_list
                    .iter()
                    .map(|i| format!("{:?} {:?}", i.status, i.status_detail))
                    .collect::<Vec<_>>())
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        admin.undeploy_instance(service, Some(n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "API call -> RUNNING at the root through oak up (defaults: runtime auto, overlay on), cached image, 1 vCPU + 100 MB, {label}, n={LATENCY_RUNS}: p50 {:.0} ms, p90 {:.0} ms, min {:.0} ms, max {:.0} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times[0],
        times[times.len() - 1]
    );
}

async fn latency() {
    const NS: &str = "oak-bench-latency";
    let f = containerd_support::fixtures();
    let image = containerd_support::shared_image(&f).await;
    clean(&f.socket, NS);
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, _) = oak_up(dir.path(), &f.socket, NS, 1, &["--overlay-tag", "oakbench"]);
    let admin = admin(&api).await;
    let service = create_service(&admin, "latency", &image, 1, 100).await;

    // Instance 0 pulls the image; it stays (and keeps its core reserved), so the worker is not
    // idle-special either.
    admin.deploy_instance(&service).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running(&admin, &service).await.contains(&0) {
        assert!(Instant::now() < deadline, "instance 0 never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    measure_deploys(&admin, &service, "idle machine").await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hog = CpuHog::start(cores);
    // Let the worker report the saturated CPU first (it reports every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    measure_deploys(
        &admin,
        &service,
        &format!("{cores} busy loops saturating every core"),
    )
    .await;
    drop(hog);
    admin.delete_service(&service).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    clean(&f.socket, NS);
}

/// CPU time (ns) and RSS (kB) of a process; zeros when it is gone.
fn usage(pid: u32) -> (u64, u64) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    (cpu, rss)
}

/// Pids of the containerd shims serving `namespace`.
fn shims(namespace: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"));
        let ours = args
            .windows(2)
            .any(|w| w[0] == b"-namespace" && w[1] == namespace.as_bytes());
        if is_shim && ours {
            out.push(pid);
        }
    }
    out
}

/// The `oakestra-node` to measure: `$OAKESTRA_NODE_BIN`, else the release build beside this
/// bench binary. Not built from here (cargo holds the target directory while benches run): build
/// it first, as the command in the module docs does, so it is not stale.
fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OAKESTRA_NODE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let node = profile_dir.join("oakestra-node");
    assert!(
        node.exists(),
        "{} is missing: run `cargo build --release -p oakestra-node` first",
        node.display()
    );
    node
}

async fn scale() {
    const NS: &str = "oak-bench-scale";
    let f = containerd_support::fixtures();
    let image = containerd_support::shared_image(&f).await;
    clean(&f.socket, NS);
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, cluster_port) = oak_up(dir.path(), &f.socket, NS, 0, &[]);
    let token = std::fs::read_to_string(dir.path().join("state/cluster/worker-join-token"))
        .expect("the cluster's worker token");
    let mut command = Command::new(node_binary());
    command
        .args(["--cluster", &format!("127.0.0.1:{cluster_port}")])
        .args(["--token", token.trim()])
        .arg("--data-dir")
        .arg(dir.path().join("worker"))
        .args(["--runtime", "containerd", "--containerd-socket"])
        .arg(&f.socket)
        .args(["--containerd-namespace", NS, "--metrics-listen", "off"])
        .args(["--stop-grace", "1s", "--name", "bench-worker"])
        // The runtime's footprint, without the overlay: a worker's /26 holds 61 instances.
        .args(["--overlay", "off"]);
    let worker = Proc::spawn(command, &dir.path().join("worker.err"));
    let admin = admin(&api).await;
    let service = create_service(&admin, "scale", &image, 0, 16).await;

    let t = Instant::now();
    for _ in 0..SCALE_INSTANCES {
        admin.deploy_instance(&service).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = running(&admin, &service).await.len() as u32;
        if n == SCALE_INSTANCES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {SCALE_INSTANCES} RUNNING after 600 s; worker log:\n{}",
            std::fs::read_to_string(dir.path().join("worker.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_running = t.elapsed();
    let tasks = ctr(&f.socket, NS, &["tasks", "ls"])
        .lines()
        .filter(|l| l.contains("RUNNING"))
        .count();

    // Settle (the last starts' reports), then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let containerd_pid: u32 = std::fs::read_to_string("/run/oakestra-test/containerd/pid")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let shim_pids = shims(NS);
    let sum = |pids: &[u32]| {
        pids.iter()
            .map(|p| usage(*p))
            .fold((0, 0), |a, u| (a.0 + u.0, a.1 + u.1))
    };
    let (w0, _) = usage(worker.pid());
    let (s0, _) = sum(&shim_pids);
    let (c0, _) = usage(containerd_pid);
    let t0 = Instant::now();
    let mut worker_peak = 0;
    while t0.elapsed() < MEASURE {
        worker_peak = worker_peak.max(usage(worker.pid()).1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (w1, worker_rss) = usage(worker.pid());
    let (s1, shim_rss) = sum(&shim_pids);
    let (c1, containerd_rss) = usage(containerd_pid);
    let pct = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / 1e9 / secs * 100.0;
    println!(
        "{SCALE_INSTANCES} instances RUNNING at the root {:.1} s after the first deploy call; containerd tasks running: {tasks}",
        all_running.as_secs_f64()
    );
    println!(
        "over {secs:.0} s with all running: worker CPU {:.2} % of one core, RSS {:.1} MiB (peak {:.1})",
        pct(w0, w1),
        worker_rss as f64 / 1024.0,
        worker_peak as f64 / 1024.0
    );
    println!(
        "  {} shims: CPU {:.2} %, RSS {:.1} MiB in all; containerd: CPU {:.2} %, RSS {:.1} MiB",
        shim_pids.len(),
        pct(s0, s1),
        shim_rss as f64 / 1024.0,
        pct(c0, c1),
        containerd_rss as f64 / 1024.0
    );
    println!(
        "  worker + shims + containerd: CPU {:.2} % of one core",
        pct(w0, w1) + pct(s0, s1) + pct(c0, c1)
    );

    let t = Instant::now();
    admin.delete_service(&service).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ctr(&f.socket, NS, &["containers", "ls", "-q"])
        .trim()
        .is_empty()
    {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "undeploying all {SCALE_INSTANCES}: containers gone after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(worker);
    clean(&f.socket, NS);
}
