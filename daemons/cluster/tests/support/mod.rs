//! Processes for the end-to-end tests: the real `oakestra-cluster` and `oakestra-root`
//! binaries, mosquitto with a generated config, and a fake worker that speaks the real HTTP +
//! MQTT protocol (registers, reports `information`, runs deploys instantly).
// Waits on real processes on the real clock: std's Instant is right here (the cluster's and
// the node's clippy.toml ban it for code under tokio's paused clock).
#![allow(clippy::disallowed_types)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_core::status::DeploymentStatus;
use oakestra_proto::mqtt::{
    DeleteCommand, DeployCommand, JobStatusReport, NodeInfo, Payload, RegisterResponse,
    ResourcesReport, ServiceUsage, WireVersion,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// How long the tests wait for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(20);

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    // The kernel may hand the same just-released port out twice; a test that asks for several
    // (a cluster's HTTP and MQTT ports, two clusters) must get distinct ones.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, check).await
}

/// [`eventually`] with its own limit.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How the cluster process reaches its broker.
#[derive(Debug, Clone)]
pub enum Broker {
    /// Embedded rumqttd on this port.
    Embedded(u16),
    /// External broker at 127.0.0.1:port, with the cluster's and the workers' credentials.
    External {
        port: u16,
        cluster_user: String,
        cluster_password: String,
        worker_user: String,
        worker_password: String,
    },
}

/// A running `oakestra-cluster`.
pub struct ClusterProcess {
    child: Option<Child>,
    pub name: String,
    pub http: String,
    pub http_port: u16,
    pub broker: Broker,
    pub data_dir: PathBuf,
    pub root: Option<(String, String)>,
    pub extra: Vec<String>,
}

impl ClusterProcess {
    /// Starts a cluster with state in `data_dir`. `root` is `(grpc address, join token)`.
    pub async fn start(
        name: &str,
        data_dir: &Path,
        broker: Broker,
        root: Option<(String, String)>,
        extra: &[&str],
    ) -> ClusterProcess {
        let mut c = ClusterProcess {
            child: None,
            name: name.to_owned(),
            http_port: free_port(),
            http: String::new(),
            broker,
            data_dir: data_dir.to_owned(),
            root,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        c.http = format!("http://127.0.0.1:{}", c.http_port);
        c.spawn().await;
        c
    }

    async fn spawn(&mut self) {
        // $OAKESTRA_CLUSTER_BIN: e.g. a release build for the benchmarks.
        let bin = std::env::var_os("OAKESTRA_CLUSTER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_oakestra-cluster")));
        let mut cmd = Command::new(bin);
        cmd.args(["--name", &self.name])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--worker-timeout", "3s", "--backoff-base", "500ms"])
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_CLUSTER_CONFIG")
            .env_remove("OAKESTRA_CLUSTER_STORE")
            .env_remove("OAKESTRA_CLUSTER_JOIN_TOKEN")
            .env("XDG_DATA_HOME", &self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        match &self.broker {
            Broker::Embedded(port) => {
                cmd.arg("--mqtt-listen").arg(format!("127.0.0.1:{port}"));
            }
            Broker::External {
                port,
                cluster_user,
                cluster_password,
                worker_user,
                worker_password,
            } => {
                cmd.arg("--mqtt")
                    .arg(format!("mqtt://127.0.0.1:{port}"))
                    .args(["--mqtt-username", cluster_user])
                    .args(["--mqtt-password", cluster_password])
                    .args(["--mqtt-worker-username", worker_user])
                    .args(["--mqtt-worker-password", worker_password]);
            }
        }
        if let Some((addr, token)) = &self.root {
            cmd.args(["--root", addr, "--join-token", token]);
        }
        self.child = Some(cmd.spawn().expect("start oakestra-cluster"));
        let health = format!("{}/health", self.http);
        eventually("the cluster's /health", || async {
            reqwest::get(&health)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
    }

    /// The worker join token.
    pub fn worker_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("worker-join-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `GET /api/cluster/status`.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("{}/api/cluster/status", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it again with the same settings and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `oakestra-root` binary: `$OAKESTRA_ROOT_BIN`, else next to this test's (or bench's)
/// target dir, else built with cargo in that dir's profile.
pub fn root_binary() -> PathBuf {
    daemon_binary("oakestra-root", "OAKESTRA_ROOT_BIN")
}

/// The `oakestra-node` binary: `$OAKESTRA_NODE_BIN`, else next to this test's target dir,
/// else built with cargo in that dir's profile.
pub fn node_binary() -> PathBuf {
    daemon_binary("oakestra-node", "OAKESTRA_NODE_BIN")
}

/// The workspace binary `name` (package and binary of the same name): `$env`, else next to
/// this test's (or bench's) target dir, else built with cargo in that dir's profile.
pub fn daemon_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> → target/debug/<name> (target/release/… for benches)
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let candidate = profile_dir.join(name);
    if candidate.exists() {
        return candidate;
    }
    let mut args = vec!["build", "-p", name, "--bin", name];
    if profile_dir.file_name().is_some_and(|d| d == "release") {
        args.push("--release");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(&args)
        .status()
        .unwrap_or_else(|e| panic!("run cargo build -p {name}: {e}"));
    assert!(status.success(), "building {name} failed");
    assert!(
        candidate.exists(),
        "{} missing after the build",
        candidate.display()
    );
    candidate
}

/// A running `oakestra-root`.
pub struct RootProcess {
    child: Option<Child>,
    pub rest: String,
    pub grpc: String,
    pub data_dir: PathBuf,
    rest_port: u16,
    grpc_port: u16,
    /// Extra flags of the next (re)start.
    extra_args: Vec<String>,
}

impl RootProcess {
    /// Starts a root with state in `data_dir`.
    pub fn start(data_dir: &Path) -> RootProcess {
        Self::start_with(data_dir, &[])
    }

    /// [`RootProcess::start`] with extra flags (kept for restarts).
    pub fn start_with(data_dir: &Path, args: &[&str]) -> RootProcess {
        let mut r = RootProcess {
            child: None,
            rest: String::new(),
            grpc: String::new(),
            data_dir: data_dir.to_owned(),
            rest_port: free_port(),
            grpc_port: free_port(),
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut child = Command::new(root_binary())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.rest_port))
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .args(["--cluster-timeout", "30s"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("ROOT_LOG").unwrap_or("warn".into()),
            )
            .env_remove("OAKESTRA_ROOT_CONFIG")
            .env_remove("OAKESTRA_ROOT_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oakestra-root");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut rest, mut grpc) = (None, None);
        while rest.is_none() || grpc.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("oakestra-root prints its addresses");
            if let Some(url) = line.strip_prefix("oakestra-root: REST API listening on ") {
                rest = Some(url.trim().to_owned());
            }
            if let Some(addr) = line.strip_prefix("oakestra-root: cluster gRPC listening on ") {
                grpc = Some(addr.trim().to_owned());
            }
        }
        self.rest = rest.unwrap();
        self.grpc = grpc.unwrap();
        self.child = Some(child);
    }

    /// The bootstrap cluster join token (1-DOC).
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("cluster-join-token"))
            .expect("the root's bootstrap token file")
            .trim()
            .to_owned()
    }

    /// A client logged in as Admin.
    pub async fn admin(&self) -> oakestra_client::Client {
        let c = oakestra_client::Client::new(&self.rest).unwrap();
        c.login("Admin", "Admin").await.unwrap();
        c
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Restarts the root with `args` added to its flags (they stay for later restarts).
    #[allow(dead_code)]
    pub fn restart_with(&mut self, args: &[&str]) {
        self.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        self.restart();
    }
}

impl Drop for RootProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// mosquitto with a password file and an ACL, on a free port.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto. `users` are `(name, password)`: the cluster (read/write on `nodes/#`
    /// and `jobs/#`) and the workers' shared user (`nodes/#`, reading `jobs/#`); anonymous
    /// clients are refused.
    pub async fn start(users: &[(&str, &str)]) -> Mosquitto {
        let Ok(path) = which("mosquitto") else {
            panic!("mosquitto is not installed: run scripts/setup (Debian package mosquitto)");
        };
        let passwd_tool = which("mosquitto_passwd")
            .unwrap_or_else(|_| panic!("mosquitto_passwd is missing: run scripts/setup"));
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        for (i, (user, pass)) in users.iter().enumerate() {
            let mut cmd = Command::new(&passwd_tool);
            if i == 0 {
                cmd.arg("-c");
            }
            let ok = cmd
                .arg("-b")
                .arg(&passwd)
                .args([user, pass])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mosquitto_passwd failed");
        }
        let acl = dir.path().join("acl");
        let cluster = users[0].0;
        let workers = users.get(1).map_or("oakestra-worker", |u| u.0);
        std::fs::write(
            &acl,
            format!(
                "user {cluster}\ntopic readwrite nodes/#\ntopic readwrite jobs/#\n\n\
                 user {workers}\ntopic readwrite nodes/#\ntopic read jobs/#\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 acl_file {}\npersistence false\nlog_dest stderr\nlog_type error\n",
                passwd.display(),
                acl.display()
            ),
        )
        .unwrap();
        let child = Command::new(path)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Mosquitto { child, port, dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Result<PathBuf, ()> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(())
}

/// What a fake worker does with a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// RUNNING, and one_shot instances COMPLETED right after.
    Run,
    /// RUNNING, then DEAD (exit 1) after 200 ms.
    Crash,
}

/// A simulated worker over the real protocol.
pub struct FakeWorker {
    pub id: String,
    pub name: String,
    /// Instances it runs: job name + number → command.
    pub running: Arc<Mutex<BTreeMap<(String, u32), DeployCommand>>>,
    /// Every deploy it received, in order.
    pub deploys: Arc<Mutex<Vec<(String, u32)>>>,
    /// Every delete it received.
    pub deletes: Arc<Mutex<Vec<(String, u32)>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    memory: u64,
    report_every: Duration,
    /// The secret of its last registration (proves its id when it registers again).
    secret: String,
}

impl FakeWorker {
    /// Registers with the cluster at `http` and connects to its broker.
    pub async fn start(http: &str, token: &str, name: &str, memory: u64) -> FakeWorker {
        Self::start_with(http, token, name, memory, Duration::from_millis(500)).await
    }

    /// [`FakeWorker::start`] reporting every `report_every`.
    pub async fn start_with(
        http: &str,
        token: &str,
        name: &str,
        memory: u64,
        report_every: Duration,
    ) -> FakeWorker {
        let mut w = FakeWorker {
            report_every,
            id: String::new(),
            name: name.to_owned(),
            running: Arc::default(),
            deploys: Arc::default(),
            deletes: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Run)),
            tasks: Vec::new(),
            memory,
            secret: String::new(),
        };
        w.connect(http, token).await;
        w
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            host: self.name.clone(),
            ip: "127.0.0.1".into(),
            vcpus: 8,
            memory: self.memory,
            memory_total: Some(self.memory),
            architecture: "amd64".into(),
            virtualization: vec!["docker".into()],
            worker_secret: self.secret.clone(),
            ..NodeInfo::default()
        }
    }

    /// Registers (again, keeping its id) and starts the MQTT session.
    pub async fn connect(&mut self, http: &str, token: &str) {
        let response = reqwest::Client::new()
            .post(format!("{http}/api/node/register"))
            .bearer_auth(token)
            .json(&self.info())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "register: {}",
            response.status()
        );
        let reg: RegisterResponse = response.json().await.unwrap();
        assert!(
            self.id.is_empty() || self.id == reg.id,
            "a re-registering worker keeps its id"
        );
        self.id = reg.id.clone();
        self.secret = reg.worker_secret.clone();
        let mut options =
            MqttOptions::new(&self.id, reg.broker_host("127.0.0.1"), reg.mqtt_broker_port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(4 << 20, 4 << 20);
        if !reg.mqtt_username.is_empty() {
            options.set_credentials(reg.mqtt_username.clone(), reg.mqtt_password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let id = self.id.clone();
        let running = self.running.clone();
        let deploys = self.deploys.clone();
        let deletes = self.deletes.clone();
        let behaviour = self.behaviour.clone();
        let info = self.info();
        // Reports on their own task: EventLoop::poll must not be cancelled by a select.
        let reporter = client.clone();
        let report_id = id.clone();
        let report_running = running.clone();
        let every = self.report_every;
        let reports = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let topic = format!("nodes/{report_id}/information");
                let _ = reporter
                    .publish(topic, QoS::AtMostOnce, false, info.to_bytes())
                    .await;
                let services = report_running
                    .lock()
                    .unwrap()
                    .values()
                    .map(|c| ServiceUsage {
                        cpu_percent: 1.0,
                        memory_percent: 1.0,
                        disk: 0,
                        logs: String::new(),
                        job_name: c.job_name.clone(),
                        virtualization: c.virtualization.clone(),
                        instance: c.instance_number,
                    })
                    .collect();
                let report = ResourcesReport {
                    wire_version: WireVersion::CURRENT,
                    services,
                };
                let topic = format!("nodes/{report_id}/jobs/resources");
                let _ = reporter
                    .publish(topic, QoS::AtLeastOnce, false, report.to_bytes())
                    .await;
            }
        });
        let session = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe(format!("nodes/{id}/control/#"), QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("control/deploy") {
                            let cmd = DeployCommand::from_bytes(&p.payload).unwrap();
                            let key = (cmd.job_name.clone(), cmd.instance_number);
                            deploys.lock().unwrap().push(key.clone());
                            let client = client.clone();
                            let running = running.clone();
                            let b = *behaviour.lock().unwrap();
                            let topic = format!("nodes/{id}/job");
                            tokio::spawn(async move {
                                let job = |status| {
                                    JobStatusReport {
                                        wire_version: WireVersion::CURRENT,
                                        sname: cmd.job_name.clone(),
                                        status,
                                        status_detail: String::new(),
                                        instance: cmd.instance_number,
                                        publicip: "127.0.0.1".into(),
                                        restart_count: 0,
                                        restarting: false,
                                        ready: None,
                                    }
                                    .to_bytes()
                                };
                                if b == Behaviour::Run && !cmd.one_shot {
                                    running.lock().unwrap().insert(key, cmd.clone());
                                }
                                let running_report = job(DeploymentStatus::Running);
                                let _ = client
                                    .publish(&topic, QoS::AtLeastOnce, false, running_report)
                                    .await;
                                if cmd.one_shot && b == Behaviour::Run {
                                    let done = job(DeploymentStatus::Completed);
                                    let _ =
                                        client.publish(&topic, QoS::AtLeastOnce, false, done).await;
                                } else if b == Behaviour::Crash {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    let dead = job(DeploymentStatus::Dead);
                                    let _ =
                                        client.publish(&topic, QoS::AtLeastOnce, false, dead).await;
                                }
                            });
                        } else if p.topic.ends_with("control/delete") {
                            let cmd = DeleteCommand::from_bytes(&p.payload).unwrap();
                            let key = (cmd.job_name.clone(), cmd.instance_number);
                            deletes.lock().unwrap().push(key.clone());
                            running.lock().unwrap().remove(&key);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        self.tasks = vec![reports, session];
    }

    /// Stops talking (like a killed process whose instances keep running).
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Instances it runs.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.running.lock().unwrap().keys().cloned().collect()
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The root's cluster records.
pub async fn clusters(admin: &oakestra_client::Client) -> Vec<oakestra_client::Cluster> {
    admin.clusters().await.unwrap()
}
