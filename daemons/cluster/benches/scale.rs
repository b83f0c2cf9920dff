//! Scale benchmarks of the cluster orchestrator (figures in benches/RESULTS.md). A bench
//! target without the libtest harness: `main` runs the benchmarks named on the command line,
//! or all of them.
//!
//! ```sh
//! cargo bench -p oakestra-cluster --bench scale                          # all four
//! cargo bench -p oakestra-cluster --bench scale -- cluster_deploy_latency # one
//! ```
//!
//! `cargo bench` builds the `oakestra-cluster` binary and this process with the bench (release)
//! profile; the root is `target/release/oakestra-root` (or `$OAKESTRA_ROOT_BIN`), built when it
//! is missing. `$OAKESTRA_CLUSTER_BIN` still overrides the cluster binary.
//!
//! * `deploy_latency`: root + cluster + 3 simulated workers; REST deploy call → RUNNING seen
//!   through the REST API, sequentially, p50/p95/max.
//! * `cluster_deploy_latency`: the same, cluster only — a fake root sends `Deploy` over gRPC
//!   and waits for the `RUNNING` status on the session.
//! * `thousand_workers_cluster_only`: 1,000 simulated workers, CPU and RSS of the cluster, then
//!   1,000 `Deploy`s sent at once by a fake root, until every one is reported RUNNING.
//! * `thousand_workers`: one cluster, `BENCH_WORKERS` (1,000) simulated workers in this
//!   process reporting every 2 s: the cluster's CPU and RSS over 20 s, then `BENCH_INSTANCES`
//!   (1,000) instances requested at once through the root and the time until all RUNNING.
//!
//! Each benchmark gets its own 2-thread tokio runtime (what the `#[tokio::test]`s it replaces
//! had). Run without `--bench` and without names (as `cargo test --benches` does), it only
//! prints how to run it.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/fake_root.rs"]
mod fake_root;

use std::time::{Duration, Instant};

use oakestra_core::status::Status;
use serde_json::Value;
use support::{Broker, ClusterProcess, FakeWorker, RootProcess, eventually_within, free_port};

const ONE_SERVICE: &str = r#"{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "bench", "application_namespace": "test",
    "application_desc": "benchmark",
    "microservices": [
      {"microserviceID": "", "microservice_name": "svc", "microservice_namespace": "test",
       "virtualization": "container", "code": "docker.io/library/nginx:latest",
       "memory": 10, "vcpus": 0}
    ]
  }]
}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in clock ticks (100 Hz).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn setup(
    workers: usize,
    report_every: Duration,
    extra: &[&str],
) -> (
    tempfile::TempDir,
    RootProcess,
    ClusterProcess,
    Vec<FakeWorker>,
    oakestra_client::Client,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    std::fs::create_dir_all(dir.path().join("cluster")).unwrap();
    let root = RootProcess::start(&dir.path().join("root"));
    let cluster = ClusterProcess::start(
        "bench",
        &dir.path().join("cluster"),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        extra,
    )
    .await;
    let token = cluster.worker_token();
    let mut fleet = Vec::with_capacity(workers);
    for i in 0..workers {
        fleet.push(
            FakeWorker::start_with(&cluster.http, &token, &format!("w{i}"), 4000, report_every)
                .await,
        );
    }
    let admin = root.admin().await;
    let n = workers as u64;
    eventually_within(
        "every worker active at the root",
        Duration::from_secs(120),
        || async {
            admin
                .clusters()
                .await
                .ok()?
                .iter()
                .any(|c| c.active && c.active_nodes == n)
                .then_some(())
        },
    )
    .await;
    (dir, root, cluster, fleet, admin)
}

async fn service_id(admin: &oakestra_client::Client) -> String {
    let apps = admin
        .create_applications(&serde_json::from_str::<Value>(ONE_SERVICE).unwrap())
        .await
        .unwrap();
    admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap()[0]
        .id
        .to_string()
}

async fn deploy_latency() {
    let (_dir, _root, _cluster, _fleet, admin) = setup(3, Duration::from_secs(2), &[]).await;
    let svc = service_id(&admin).await;
    let rounds = env_usize("BENCH_ROUNDS", 50);
    let mut latencies = Vec::with_capacity(rounds);
    for n in 0..rounds as u32 {
        let t0 = Instant::now();
        admin.deploy_instance(&svc).await.unwrap();
        loop {
            let s = admin.service(&svc).await.unwrap();
            if s.instance(n).and_then(|i| i.status) == Some(Status::RUNNING) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    eprintln!(
        "deploy latency over {rounds} deploys (REST call → RUNNING via REST): p50 {:?}, p95 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().unwrap()
    );
}

async fn thousand_workers() {
    let workers = env_usize("BENCH_WORKERS", 1000);
    let instances = env_usize("BENCH_INSTANCES", 1000);
    let t0 = Instant::now();
    let (_dir, _root, cluster, _fleet, admin) = setup(
        workers,
        Duration::from_secs(2),
        &["--worker-timeout", "10s"],
    )
    .await;
    eprintln!(
        "{workers} workers registered and active after {:?}",
        t0.elapsed()
    );
    let pid = cluster.pid().unwrap();

    let window = Duration::from_secs(20);
    let (c0, w0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_ticks(pid) - c0) as f64 / 100.0 / w0.elapsed().as_secs_f64() * 100.0;
    eprintln!(
        "cluster with {workers} workers reporting every 2 s: CPU {cpu:.1} % of one core, RSS {:.1} MB",
        rss_mb(pid)
    );

    let svc = service_id(&admin).await;
    let t1 = Instant::now();
    // "At once": every request issued without waiting for placements, 16 in flight (the
    // root's REST API is not what this measures).
    let admin = std::sync::Arc::new(admin);
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let calls: Vec<_> = (0..instances)
        .map(|_| {
            let admin = admin.clone();
            let svc = svc.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let _permit = in_flight.acquire().await.unwrap();
                admin.deploy_instance(&svc).await.unwrap()
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let requested = t1.elapsed();
    eventually_within(
        "every instance RUNNING at the root",
        Duration::from_secs(120),
        || async {
            let s = admin.service(&svc).await.ok()?;
            let running = s
                .instance_list
                .iter()
                .filter(|i| i.status == Some(Status::RUNNING))
                .count();
            (running == instances).then_some(())
        },
    )
    .await;
    eprintln!(
        "{instances} instances: requested in {requested:?}, all RUNNING at the root after {:?}; cluster RSS {:.1} MB",
        t1.elapsed(),
        rss_mb(pid)
    );
}

const JOB: &str = "65f1a2b3c4d5e6f708192a3b";

fn service_json() -> String {
    format!(
        r#"{{"_id":{{"$oid":"{JOB}"}},"applicationID":"65f1a2b3c4d5e6f708192a30",
        "app_name":"bench","app_ns":"test","service_name":"svc","service_ns":"test",
        "job_name":"bench.test.svc.test","image":"docker.io/library/nginx:latest",
        "microservice_name":"svc","microservice_namespace":"test","virtualization":"container",
        "code":"docker.io/library/nginx:latest","memory":10,"vcpus":0}}"#
    )
}

fn deploy(n: u32) -> oakestra_cluster::proto::RootMessage {
    use oakestra_cluster::proto::{Deploy, root_message};
    oakestra_cluster::proto::RootMessage {
        kind: Some(root_message::Kind::Deploy(Deploy {
            job_id: JOB.into(),
            instance_number: n,
            job_name: "bench.test.svc.test".into(),
            service_json: service_json(),
        })),
    }
}

async fn cluster_with_fake_root(
    workers: usize,
) -> (
    tempfile::TempDir,
    fake_root::FakeRoot,
    ClusterProcess,
    Vec<FakeWorker>,
) {
    use oakestra_cluster::proto::cluster_message::Kind;
    let dir = tempfile::tempdir().unwrap();
    let mut root = fake_root::FakeRoot::start().await;
    let cluster = ClusterProcess::start(
        "bench",
        dir.path(),
        Broker::Embedded(free_port()),
        Some((root.addr.to_string(), "any".into())),
        &["--worker-timeout", "10s"],
    )
    .await;
    let token = cluster.worker_token();
    let mut fleet = Vec::with_capacity(workers);
    for i in 0..workers {
        fleet.push(
            FakeWorker::start_with(
                &cluster.http,
                &token,
                &format!("w{i}"),
                4000,
                Duration::from_secs(2),
            )
            .await,
        );
    }
    let n = workers as u32;
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(m) = root.from_cluster.recv().await {
            let r = match m {
                Kind::Resources(r) => r,
                Kind::Snapshot(s) => s.resources.unwrap_or_default(),
                Kind::InstanceStatus(_)
                | Kind::LogsReply(_)
                | Kind::TableQuery(_)
                | Kind::TableInterestRemove(_)
                | Kind::WorkersReply(_) => continue,
            };
            if r.active_workers == n {
                return;
            }
        }
    })
    .await
    .expect("every worker active in the cluster's resources report");
    (dir, root, cluster, fleet)
}

/// Waits until instances `0..n` were all reported RUNNING; returns when each first was.
async fn until_running(root: &mut fake_root::FakeRoot, n: usize) -> Vec<Instant> {
    use oakestra_cluster::proto::cluster_message::Kind;
    let mut at = vec![None; n];
    let mut left = n;
    tokio::time::timeout(Duration::from_secs(120), async {
        while left > 0 {
            let Some(Kind::InstanceStatus(s)) = root.from_cluster.recv().await else {
                continue;
            };
            let i = s.instance_number as usize;
            if s.status == "RUNNING" && i < n && at[i].is_none() {
                at[i] = Some(Instant::now());
                left -= 1;
            }
        }
    })
    .await
    .expect("every instance RUNNING");
    at.into_iter().map(Option::unwrap).collect()
}

async fn cluster_deploy_latency() {
    let (_dir, mut root, _cluster, _fleet) = cluster_with_fake_root(3).await;
    let rounds = env_usize("BENCH_ROUNDS", 100);
    let mut latencies = Vec::with_capacity(rounds);
    for n in 0..rounds as u32 {
        let t0 = Instant::now();
        root.to_cluster.send(deploy(n)).await.unwrap();
        use oakestra_cluster::proto::cluster_message::Kind;
        loop {
            if let Some(Kind::InstanceStatus(s)) = root.from_cluster.recv().await
                && s.instance_number == n
                && s.status == "RUNNING"
            {
                break;
            }
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    eprintln!(
        "cluster-only deploy latency over {rounds} deploys (gRPC Deploy → RUNNING on the session): p50 {:?}, p95 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().unwrap()
    );
}

async fn thousand_workers_cluster_only() {
    let workers = env_usize("BENCH_WORKERS", 1000);
    let instances = env_usize("BENCH_INSTANCES", 1000);
    let t0 = Instant::now();
    let (_dir, mut root, cluster, _fleet) = cluster_with_fake_root(workers).await;
    eprintln!("{workers} workers active after {:?}", t0.elapsed());
    let pid = cluster.pid().unwrap();
    let window = Duration::from_secs(20);
    let (c0, w0) = (cpu_ticks(pid), Instant::now());
    // keep draining the session meanwhile
    let drain = tokio::time::timeout(window, async {
        while root.from_cluster.recv().await.is_some() {}
    });
    let _ = drain.await;
    let cpu = (cpu_ticks(pid) - c0) as f64 / 100.0 / w0.elapsed().as_secs_f64() * 100.0;
    let status = cluster.status().await;
    eprintln!(
        "cluster with {workers} workers reporting every 2 s: CPU {cpu:.1} % of one core, RSS {:.1} MB, active {}",
        rss_mb(pid),
        status["resources"]["active_workers"]
    );

    let t1 = Instant::now();
    for n in 0..instances as u32 {
        root.to_cluster.send(deploy(n)).await.unwrap();
    }
    let sent = t1.elapsed();
    let at = until_running(&mut root, instances).await;
    let last = at.iter().max().unwrap().duration_since(t1);
    eprintln!(
        "{instances} Deploys sent in {sent:?}; all RUNNING after {last:?}; cluster RSS {:.1} MB",
        rss_mb(pid)
    );
}

/// The benchmarks, in the order `cargo bench` without names runs them.
const BENCHES: &[&str] = &[
    "deploy_latency",
    "cluster_deploy_latency",
    "thousand_workers_cluster_only",
    "thousand_workers",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_bench = args.iter().any(|a| a == "--bench");
    let names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    if let Some(unknown) = names.iter().find(|n| !BENCHES.contains(n)) {
        eprintln!("unknown benchmark {unknown:?}; the benchmarks: {BENCHES:?}");
        std::process::exit(2);
    }
    if names.is_empty() && !as_bench {
        eprintln!(
            "benchmarks {BENCHES:?}: run with `cargo bench -p oakestra-cluster --bench scale [-- NAME…]`"
        );
        return;
    }
    let selected = if names.is_empty() {
        BENCHES.to_vec()
    } else {
        names
    };
    for name in selected {
        eprintln!("== {name}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        match name {
            "deploy_latency" => rt.block_on(deploy_latency()),
            "cluster_deploy_latency" => rt.block_on(cluster_deploy_latency()),
            "thousand_workers_cluster_only" => rt.block_on(thousand_workers_cluster_only()),
            "thousand_workers" => rt.block_on(thousand_workers()),
            _ => unreachable!("checked above"),
        }
    }
}
