//! The `oakestra-node` binary against a real MQTT broker (mosquitto, started here on a free
//! loopback port with password authentication) and a stub of the cluster's registration
//! endpoint: registration with the join token, information and resources reports, deploys
//! through the fake runtime to RUNNING, DEAD/COMPLETED/FAILED, delete, and re-adoption after
//! SIGKILL without duplicates.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use oakestra_core::status::DeploymentStatus;
use oakestra_proto::mqtt::{JobStatusReport, NodeInfo, Payload, ResourcesReport};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const TOKEN: &str = "worker-token-for-tests";
const WORKER_ID: &str = "6650f00dcafe000000000001";
const MQTT_USER: &str = "worker";
const MQTT_PASSWORD: &str = "worker-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_mosquitto() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
    {
        let candidate = Path::new(dir).join("mosquitto");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("mosquitto not found (needed by this test): run scripts/setup");
}

/// A mosquitto on a free loopback port that only accepts MQTT_USER and "cluster".
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Self {
        Self::start_on(dir, None)
    }

    /// On `port` (a restart of the broker), or on a free one.
    fn start_on(dir: &Path, fixed_port: Option<u16>) -> Self {
        let mosquitto = find_mosquitto();
        let passwd = dir.join("passwd");
        for (i, (user, pass)) in [(MQTT_USER, MQTT_PASSWORD), ("cluster", "cluster-secret")]
            .into_iter()
            .enumerate()
        {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let status = cmd
                .args(["-b", passwd.to_str().unwrap(), user, pass])
                .status()
                .expect("mosquitto_passwd (package mosquitto) is missing: run scripts/setup");
            assert!(status.success());
        }
        // Another test may grab the same free port before mosquitto binds it: then this
        // mosquitto exits and we try another port.
        for _ in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                     persistence false\nuser root\nlog_dest file {}\n",
                    passwd.display(),
                    dir.join("mosquitto.log").display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Listening, and it is ours if it is still alive.
                    if child.try_wait().unwrap().is_none() {
                        return Self { child, port };
                    }
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "mosquitto did not listen on {port}; see {}",
                    dir.join("mosquitto.log").display()
                );
                std::thread::yield_now();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "mosquitto did not start; see {}",
            dir.join("mosquitto.log").display()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stub of the cluster's `POST /api/node/register`.
#[derive(Clone, Default)]
struct Registrations {
    bodies: Arc<Mutex<Vec<NodeInfo>>>,
    broker_port: u16,
}

async fn register(
    State(state): State<Registrations>,
    headers: HeaderMap,
    Json(body): Json<NodeInfo>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") {
        return Err((StatusCode::UNAUTHORIZED, "bad worker join token".into()));
    }
    state.bodies.lock().unwrap().push(body);
    Ok(Json(serde_json::json!({
        "id": WORKER_ID,
        "MQTT_BROKER_PORT": state.broker_port,
        "MQTT_BROKER_HOST": "127.0.0.1",
        "MQTT_USERNAME": MQTT_USER,
        "MQTT_PASSWORD": MQTT_PASSWORD,
    })))
}

async fn start_stub(listener: tokio::net::TcpListener, state: Registrations) {
    let app = axum::Router::new()
        .route("/api/node/register", axum::routing::post(register))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

#[derive(Debug)]
enum Seen {
    Info(Box<NodeInfo>),
    Job(JobStatusReport),
    Resources(ResourcesReport),
}

/// The "cluster" side of MQTT: sees the worker's reports and sends commands.
struct ClusterSide {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl ClusterSide {
    async fn connect(port: u16) -> Self {
        let mut options = MqttOptions::new(format!("test-cluster-{port}"), "127.0.0.1", port);
        options.set_credentials("cluster", "cluster-secret");
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, seen) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sub = client.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in [
                            "nodes/+/information",
                            "nodes/+/job",
                            "nodes/+/jobs/resources",
                        ] {
                            sub.subscribe(t, QoS::AtLeastOnce).await.unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let item = if p.topic.ends_with("/information") {
                            Seen::Info(Box::new(NodeInfo::from_bytes(&p.payload).unwrap()))
                        } else if p.topic.ends_with("/jobs/resources") {
                            Seen::Resources(ResourcesReport::from_bytes(&p.payload).unwrap())
                        } else {
                            Seen::Job(JobStatusReport::from_bytes(&p.payload).unwrap())
                        };
                        assert!(
                            p.topic.starts_with(&format!("nodes/{WORKER_ID}/")),
                            "{}",
                            p.topic
                        );
                        let _ = tx.send(item);
                    }
                    Ok(_) => {}
                    // The broker may be restarted by a test: reconnect.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        timeout(Duration::from_secs(10), ready_rx)
            .await
            .unwrap()
            .unwrap();
        Self { client, seen }
    }

    async fn publish(&self, suffix: &str, payload: serde_json::Value) {
        self.client
            .publish(
                format!("nodes/{WORKER_ID}/{suffix}"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&payload).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn deploy(&self, instance: u32, env: &[&str], one_shot: bool) {
        self.publish(
            "control/deploy",
            serde_json::json!({
                "_id": "665000000000000000000abc", "job_name": "app.ns.svc.ns",
                "instance_number": instance, "image": "docker.io/library/nginx:latest",
                "virtualization": "docker", "environment": env, "one_shot": one_shot,
                "vcpus": 1, "memory": 100, "port": "8080:80"
            }),
        )
        .await;
    }

    /// Waits for the first report that `pick` accepts, skipping others.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.seen.recv()).await {
                Ok(Some(item)) => {
                    if let Some(found) = pick(&item) {
                        return found;
                    }
                }
                _ => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn wait_status(&mut self, instance: u32, status: DeploymentStatus) -> JobStatusReport {
        self.wait_for(&format!("instance {instance} {status}"), |s| match s {
            Seen::Job(r) if r.instance == instance && r.status == status => Some(r.clone()),
            _ => None,
        })
        .await
    }
}

struct Worker {
    child: Child,
    metrics: u16,
}

impl Worker {
    fn start(cluster: SocketAddr, data_dir: &Path) -> Self {
        let metrics = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_oakestra-node"))
            .args(["--cluster", &cluster.to_string(), "--token", TOKEN])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--report-interval", "300ms", "--name", "test-worker"])
            .args(["--runtime", "fake"])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, metrics }
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn kill9(&mut self) {
        // Child::kill sends SIGKILL.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fake_instances(data_dir: &Path) -> Vec<(u32, u64, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("fake-runtime.json")).unwrap())
            .unwrap();
    let mut out: Vec<(u32, u64, String)> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["spec"]["id"]["instance"].as_u64().unwrap() as u32,
                i["incarnation"].as_u64().unwrap(),
                serde_json::to_string(&i["state"]).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registers_reports_runs_instances_and_re_adopts_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let stub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster_addr = stub_listener.local_addr().unwrap();
    let registrations = Registrations {
        broker_port: broker.port,
        ..Registrations::default()
    };
    start_stub(stub_listener, registrations.clone()).await;
    let mut cluster = ClusterSide::connect(broker.port).await;
    let data_dir = dir.path().join("worker");
    let mut worker = Worker::start(cluster_addr, &data_dir);

    // Registration with the token, then information every tick.
    let info = cluster
        .wait_for("information", |s| match s {
            Seen::Info(i) => Some((**i).clone()),
            _ => None,
        })
        .await;
    assert_eq!(info.id, WORKER_ID);
    assert_eq!(info.host, "test-worker");
    assert!(info.vcpus >= 1 && info.memory_total.unwrap() > 0);
    assert!(info.virtualization.contains(&"docker".to_owned()));
    {
        let bodies = registrations.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].id, "", "first registration has no id");
    }

    // Deploy → RUNNING, reported by the worker itself, then resources.
    cluster.deploy(0, &[], false).await;
    let running = cluster.wait_status(0, DeploymentStatus::Running).await;
    assert_eq!(running.sname, "app.ns.svc.ns");
    assert_eq!(running.publicip, "127.0.0.1");
    let usage = cluster
        .wait_for("resources of instance 0", |s| match s {
            Seen::Resources(r) => r.services.iter().find(|u| u.instance == 0).cloned(),
            _ => None,
        })
        .await;
    assert_eq!(usage.job_name, "app.ns.svc.ns");
    assert!(usage.memory_percent > 0.0);

    // one_shot exit 0 → COMPLETED; exit 3 → DEAD; a failing start → FAILED with the reason.
    cluster
        .deploy(1, &["OAK_FAKE_EXIT_AFTER_MS=300"], true)
        .await;
    cluster.wait_status(1, DeploymentStatus::Running).await;
    let done = cluster.wait_status(1, DeploymentStatus::Completed).await;
    assert_eq!(done.status_detail, "exited with code 0");
    cluster
        .deploy(
            2,
            &["OAK_FAKE_EXIT_AFTER_MS=300", "OAK_FAKE_EXIT_CODE=3"],
            true,
        )
        .await;
    let dead = cluster.wait_status(2, DeploymentStatus::Dead).await;
    assert_eq!(dead.status_detail, "exited with code 3");
    cluster
        .deploy(3, &["OAK_FAKE_FAIL_START=no space left on device"], false)
        .await;
    let failed = cluster.wait_status(3, DeploymentStatus::Failed).await;
    assert!(failed.status_detail.contains("no space left on device"));

    // Delete → UNDEPLOYED; the runtime no longer holds it.
    cluster
        .publish(
            "control/delete",
            serde_json::json!({"job_name": "app.ns.svc.ns", "virtualization": "docker", "instance_number": 0}),
        )
        .await;
    cluster.wait_status(0, DeploymentStatus::Undeployed).await;

    cluster.deploy(4, &[], false).await;
    cluster.wait_status(4, DeploymentStatus::Running).await;
    let metrics = worker.metrics().await;
    for line in [
        "oakestra_node_instances{status=\"RUNNING\"} 1",
        "oakestra_node_mqtt_connected 1",
        "oakestra_node_deploys_total 5",
        "oakestra_node_deploy_failures_total 1",
        "oakestra_node_exits_total 2",
        "oakestra_node_deletes_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let before = fake_instances(&data_dir);
    assert_eq!(before.len(), 1, "only instance 4 runs: {before:?}");
    assert_eq!(before[0].0, 4);

    // SIGKILL and restart: same identity, instance 4 re-adopted (same incarnation, not
    // restarted), nothing duplicated, nothing deleted comes back.
    worker.kill9();
    let mut worker = Worker::start(cluster_addr, &data_dir);
    cluster.wait_status(4, DeploymentStatus::Running).await;
    {
        let bodies = registrations.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[1].id, WORKER_ID, "re-registers with its id");
    }
    let usage = cluster
        .wait_for("resources after the restart", |s| match s {
            Seen::Resources(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    let listed: Vec<u32> = usage.services.iter().map(|u| u.instance).collect();
    assert_eq!(listed, vec![4]);
    assert_eq!(fake_instances(&data_dir), before);

    // Still obeys commands after the restart.
    cluster
        .publish(
            "control/delete",
            serde_json::json!({"job_name": "app.ns.svc.ns", "virtualization": "docker", "instance_number": 4}),
        )
        .await;
    cluster.wait_status(4, DeploymentStatus::Undeployed).await;
    assert!(fake_instances(&data_dir).is_empty());
    worker.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let port = free_port();
    let cluster_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let data_dir = dir.path().join("worker");
    let _worker = Worker::start(cluster_addr, &data_dir);
    let log = data_dir.with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot reach the cluster") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no clear message in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cluster = ClusterSide::connect(broker.port).await;
    let listener = tokio::net::TcpListener::bind(cluster_addr).await.unwrap();
    start_stub(
        listener,
        Registrations {
            broker_port: broker.port,
            ..Registrations::default()
        },
    )
    .await;
    // Backoff is 1 s, 2 s, 4 s …: the worker registers within a few seconds.
    cluster
        .wait_for("information after the cluster appeared", |s| match s {
            Seen::Info(i) => Some((**i).clone()),
            _ => None,
        })
        .await;
}

#[test]
fn bad_flags_and_missing_settings_give_clear_messages() {
    let out = Command::new(env!("CARGO_BIN_EXE_oakestra-node"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bogus"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_oakestra-node"))
        .args(["--token", "t"])
        .env_remove("OAKESTRA_NODE_CLUSTER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster HOST[:PORT]"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_oakestra-node"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--cluster",
        "--token",
        "--data-dir",
        "--runtime",
        "--report-interval",
        "--location",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_keep_running_while_the_broker_is_down_and_exits_are_reported_after() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let port = broker.port;
    let stub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster_addr = stub_listener.local_addr().unwrap();
    start_stub(
        stub_listener,
        Registrations {
            broker_port: port,
            ..Registrations::default()
        },
    )
    .await;
    let mut cluster = ClusterSide::connect(port).await;
    let data_dir = dir.path().join("worker");
    let _worker = Worker::start(cluster_addr, &data_dir);
    // Subscribed once it reports.
    cluster
        .wait_for("information", |s| matches!(s, Seen::Info(_)).then_some(()))
        .await;
    cluster.deploy(0, &[], false).await;
    cluster
        .deploy(1, &["OAK_FAKE_EXIT_AFTER_MS=1500"], false)
        .await;
    cluster.wait_status(0, DeploymentStatus::Running).await;
    cluster.wait_status(1, DeploymentStatus::Running).await;
    let before = fake_instances(&data_dir);

    // The broker goes away; instance 1 exits meanwhile; instance 0 keeps running.
    drop(broker);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = fake_instances(&data_dir);
    assert_eq!(during.len(), 1, "the exited copy is cleaned up: {during:?}");
    assert_eq!(during[0], before[0], "instance 0 untouched");
    while cluster.seen.try_recv().is_ok() {}

    // Back: the worker reconnects and its snapshot carries the exit.
    let _broker = Broker::start_on(dir.path(), Some(port));
    let mut zero_running = false;
    let dead = cluster
        .wait_for("instance 1 DEAD after the reconnect", |s| match s {
            Seen::Job(r) if r.instance == 0 && r.status == DeploymentStatus::Running => {
                zero_running = true;
                None
            }
            Seen::Job(r) if r.instance == 1 && r.status == DeploymentStatus::Dead => {
                Some(r.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(dead.status_detail, "exited with code 0");
    if !zero_running {
        cluster.wait_status(0, DeploymentStatus::Running).await;
    }
    assert_eq!(fake_instances(&data_dir), during);
}
