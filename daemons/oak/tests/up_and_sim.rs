//! `oak up` end to end through the real binary: the REST API answers with the default login,
//! the clientsrvr descriptor's services reach RUNNING on the in-process worker; and `oak sim`
//! workers register with the cluster of an `oak up --workers 0` and run instances.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oakestra_core::status::Status;

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str], stderr_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oak"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_file).unwrap())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line containing `needle`.
    fn line_with(&self, needle: &str, within: Duration, stderr_file: &Path) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line with {needle:?}; stderr:\n{}",
                    std::fs::read_to_string(stderr_file).unwrap_or_default()
                ),
            }
        }
    }

    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::yield_now();
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(dir: &Path, workers: u32) -> (Proc, String, u16, std::path::PathBuf) {
    let cluster_port = free_port();
    let mqtt_port = free_port();
    let err = dir.join("up.err");
    let up = Proc::spawn(
        &[
            "up",
            "--data-dir",
            dir.join("state").to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--cluster-listen",
            &format!("127.0.0.1:{cluster_port}"),
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt_port}"),
            "--workers",
            &workers.to_string(),
            // The test machine may be busy: advertise fixed resources so placement does not
            // depend on the host's load.
            "--worker-cpus",
            "4",
            "--worker-memory-mb",
            "4096",
        ],
        &err,
    );
    let api_line = up.line_with("  API ", Duration::from_secs(60), &err);
    let api = api_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    (up, api, cluster_port, err)
}

async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the clientsrvr application, deploys one instance of each service and waits until
/// the root shows both RUNNING. Returns the service ids.
async fn deploy_clientsrvr(api: &str) -> Vec<String> {
    let admin = oakestra_client::Client::new(api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    eventually("an active cluster", Duration::from_secs(30), || async {
        let cs = admin.active_clusters().await.ok()?;
        (!cs.is_empty()).then_some(())
    })
    .await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    assert_eq!(services.len(), 2);
    let ids: Vec<String> = services.iter().map(|s| s.id.to_string()).collect();
    for id in &ids {
        admin.deploy_instance(id).await.unwrap();
    }
    for id in &ids {
        eventually(
            &format!("service {id} RUNNING at the root"),
            Duration::from_secs(30),
            || async {
                (admin.service(id).await.ok()?.status == Some(Status::RUNNING)).then_some(())
            },
        )
        .await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_up_runs_the_clientsrvr_services() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, api, _, err) = start_up(dir.path(), 1);
    deploy_clientsrvr(&api).await;
    assert_eq!(
        up.terminate(),
        Some(0),
        "oak up did not stop cleanly:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_sim_workers_join_a_cluster_and_run_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, cluster_port, up_err) = start_up(dir.path(), 0);
    let token = std::fs::read_to_string(dir.path().join("state/cluster/worker-join-token"))
        .unwrap_or_else(|e| {
            panic!(
                "worker token: {e}\n{}",
                std::fs::read_to_string(&up_err).unwrap_or_default()
            )
        });
    let sim_err = dir.path().join("sim.err");
    let sim = Proc::spawn(
        &[
            "sim",
            "--cluster",
            &format!("127.0.0.1:{cluster_port}"),
            "--token",
            token.trim(),
            "--workers",
            "5",
            "--data-dir",
            dir.path().join("sim").to_str().unwrap(),
            "--locations",
            "48.1,11.5;52.5,13.4",
            "--report-interval",
            "500ms",
        ],
        &sim_err,
    );
    sim.line_with(
        "all 5 workers registered",
        Duration::from_secs(30),
        &sim_err,
    );
    deploy_clientsrvr(&api).await;
}
