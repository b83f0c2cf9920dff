//! The application commands of the real `oak` binary against a real root (`oak up` on free
//! loopback ports, fake runtime, temporary data directory), and against a stub root that
//! answers like Oakestra's (JSON inside a JSON string, no instance in the deploy answer).
//! Every test has its own HOME and XDG_CONFIG_HOME, so the stored logins never mix.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTSRVR: &str = "../../examples/sla-clientsrvr-container.json";

/// How long one `oak` command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A user's environment: its own home and config directory.
struct User {
    home: PathBuf,
}

/// What one `oak` run gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "oak failed: {self:#?}");
        self
    }

    #[track_caller]
    fn code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit status: {self:#?}");
        self
    }
}

impl User {
    fn new(dir: &Path) -> Self {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        Self { home }
    }

    fn config_file(&self) -> PathBuf {
        self.home.join("config/oakestra/oak.json")
    }

    fn stored(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.config_file()).unwrap()).unwrap()
    }

    fn store(&self, login: &Value) {
        std::fs::write(self.config_file(), login.to_string()).unwrap();
    }

    /// Runs `oak args…` with `stdin` as its input.
    fn oak_with_input(&self, args: &[&str], stdin: &str) -> Run {
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_oak"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_DATA_HOME", self.home.join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("oak {args:?} did not finish within {COMMAND_TIMEOUT:?}");
            }
        };
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn oak(&self, args: &[&str]) -> Run {
        self.oak_with_input(args, "")
    }
}

/// A running `oak up`.
struct Up {
    child: Child,
    api: String,
    state: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(dir: &Path, workers: u32) -> Up {
    let state = dir.join("state");
    let err_file = dir.join("up.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oak"))
        .args([
            "up",
            "--data-dir",
            state.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--cluster-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--mqtt-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--workers",
            &workers.to_string(),
            "--runtime",
            "fake",
            // Fixed resources, so placement does not depend on the test machine's size.
            "--worker-cpus",
            "4",
            "--worker-memory-mb",
            "4096",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let api = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim_start().starts_with("API ") => {
                break line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .unwrap()
                    .to_owned();
            }
            Ok(_) => {}
            Err(_) => panic!(
                "oak up printed no API address; stderr:\n{}",
                std::fs::read_to_string(&err_file).unwrap_or_default()
            ),
        }
    };
    // Keep draining stdout so `oak up` never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Up { child, api, state }
}

/// Polls `probe` every 100 ms until it gives a value, failing after `within`.
#[track_caller]
fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    // These tests are synchronous (they run processes); the pause between probes is a tokio
    // timer on a runtime of their own, as the house rules want no std::thread::sleep.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        timer.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

fn login(user: &User, api: &str) {
    let run = user
        .oak_with_input(&["login", "--url", api, "--username", "Admin"], "Admin\n")
        .ok();
    assert!(run.stdout.contains("logged in to"), "{run:#?}");
}

/// A JWT-shaped token whose `exp` claim lies in the past (the signature does not matter: the
/// client reads `exp` only to decide when to refresh).
fn expired_token() -> String {
    // {"alg":"HS256","typ":"JWT"} . {"sub":"Admin","exp":1000} . "sig"
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJBZG1pbiIsImV4cCI6MTAwMH0.c2ln".to_owned()
}

#[test]
fn login_stores_the_tokens_privately_and_renews_them() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), 0);
    let user = User::new(dir.path());

    // Not logged in yet: exit 3 with a hint.
    let run = user.oak(&["app", "list"]).code(3);
    assert!(run.stderr.contains("oak login"), "{run:#?}");

    // Wrong password: exit 3, nothing stored.
    user.oak_with_input(
        &["login", "--url", &up.api, "--username", "Admin"],
        "wrong\n",
    )
    .code(3);
    assert!(!user.config_file().exists());

    // The password from stdin (not a terminal); the login is kept with mode 0600.
    login(&user, &up.api);
    let stored = user.stored();
    assert_eq!(stored["url"], up.api.as_str());
    assert_eq!(stored["username"], "Admin");
    assert!(stored["token"].as_str().unwrap().split('.').count() == 3);
    assert!(!stored.to_string().contains("\"password\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(user.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    user.oak(&["app", "list"]).ok();

    // An expired access token is renewed with the refresh token before the call, and the new
    // one is written back.
    let mut expired = stored.clone();
    expired["token"] = Value::String(expired_token());
    user.store(&expired);
    let run = user.oak(&["--json", "app", "list"]).ok();
    assert_eq!(run.json(), json!([]));
    let renewed = user.stored();
    assert_ne!(renewed["token"], expired["token"]);
    assert_eq!(renewed["refresh_token"], stored["refresh_token"]);

    // A token the root refuses (no expiry the client could see) is renewed after the 401.
    let mut refused = renewed.clone();
    refused["token"] = Value::String("not-a-jwt".into());
    user.store(&refused);
    user.oak(&["app", "list"]).ok();
    assert_ne!(user.stored()["token"], "not-a-jwt");

    // Both tokens refused: exit 3, telling the user to log in again.
    let mut dead = renewed.clone();
    dead["token"] = Value::String("not-a-jwt".into());
    dead["refresh_token"] = Value::String("not-a-jwt-either".into());
    user.store(&dead);
    let run = user.oak(&["app", "list"]).code(3);
    assert!(run.stderr.contains("oak login"), "{run:#?}");

    // With no worker, a deploy fails at scheduling and says why (exit 1).
    login(&user, &up.api);
    let created = user
        .oak(&["--json", "app", "create", CLIENTSRVR])
        .ok()
        .json();
    let service = created["services"][0]["_id"]["$oid"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = user
        .oak(&["service", "deploy", &service, "--wait", "--timeout", "60s"])
        .code(1);
    assert!(run.stderr.contains("failed:"), "{run:#?}");
    let reason = run.stderr.lines().find(|l| l.contains("failed:")).unwrap();
    let status = reason
        .split("failed: ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim();
    assert!(
        status.parse::<oakestra_core::status::Status>().is_ok(),
        "the failure names a status: {reason}"
    );
    assert!(
        matches!(
            status.parse::<oakestra_core::status::Status>().unwrap(),
            oakestra_core::status::Status::Negative(_)
        ),
        "{reason}"
    );

    // Logout forgets the login.
    user.oak(&["logout"]).ok();
    assert!(!user.config_file().exists());
    user.oak(&["app", "list"]).code(3);
}

#[test]
fn applications_and_services_through_their_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), 1);
    let user = User::new(dir.path());
    login(&user, &up.api);

    let clusters = eventually(
        "an active cluster with a worker",
        Duration::from_secs(60),
        || {
            let list = user.oak(&["--json", "cluster", "list"]).ok().json();
            let active = list
                .as_array()?
                .iter()
                .any(|c| c["active"] == true && c["active_nodes"].as_u64().unwrap_or(0) >= 1);
            active.then_some(list)
        },
    );
    assert_eq!(clusters[0]["cluster_name"], "local");
    let table = user.oak(&["cluster", "list"]).ok().stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("local"), "{table}");

    // The cluster's own worker list, asked through the root.
    let cluster_id = clusters[0]["_id"].as_str().unwrap().to_owned();
    let workers = user
        .oak(&["--json", "cluster", "workers", &cluster_id])
        .ok()
        .json();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["active"], true);
    assert!(workers[0]["cpu_cores"].as_f64().unwrap() >= 1.0);
    let table = user.oak(&["cluster", "workers", &cluster_id]).ok().stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("VCPUS_FREE"), "{table}");
    user.oak(&["cluster", "workers", "no-such-cluster"]).code(1);

    // Create: the new application and its two services.
    let created = user
        .oak(&["--json", "app", "create", CLIENTSRVR])
        .ok()
        .json();
    let app_id = created["applications"][0]["_id"]["$oid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(created["applications"][0]["application_name"], "clientsrvr");
    let services: Vec<String> = created["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["_id"]["$oid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(services.len(), 2);

    // List and show, as tables and as JSON.
    let list = user.oak(&["--json", "app", "list"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(user.oak(&["app", "list"]).ok().stdout.contains(&app_id));
    let shown = user.oak(&["app", "show", &app_id, "--json"]).ok().json();
    assert_eq!(shown["application"]["_id"]["$oid"], app_id.as_str());
    assert_eq!(shown["services"].as_array().unwrap().len(), 2);
    let text = user.oak(&["app", "show", &app_id]).ok().stdout;
    assert!(
        text.contains("clientsrvr.test") && text.contains("curl.test"),
        "{text}"
    );
    let of_app = user
        .oak(&["--json", "service", "list", "--app", &app_id])
        .ok()
        .json();
    assert_eq!(of_app.as_array().unwrap().len(), 2);

    // Deploy with --wait: each status on stderr (no terminal), the running instance on stdout.
    let service = &services[0];
    let run = user
        .oak(&[
            "--json",
            "service",
            "deploy",
            service,
            "--wait",
            "--timeout",
            "60s",
        ])
        .ok();
    let instance = run.json();
    assert_eq!(instance["status"], "RUNNING", "{run:#?}");
    assert_eq!(instance["instance_number"], 0);
    assert!(run.stderr.contains("instance 0: RUNNING"), "{run:#?}");
    let text = user
        .oak(&["service", "deploy", &services[1], "--wait"])
        .ok()
        .stdout;
    assert!(text.contains("RUNNING on cluster"), "{text}");

    let shown = user
        .oak(&["--json", "service", "show", service])
        .ok()
        .json();
    assert_eq!(shown["instance_list"][0]["status"], "RUNNING");
    let text = user.oak(&["service", "show", service]).ok().stdout;
    assert!(
        text.contains("INSTANCE") && text.contains("RUNNING"),
        "{text}"
    );

    // Logs of the running instance: the fake runtime logs its start, which reaches the root
    // with the worker's next report.
    let logs = eventually("the instance's log", Duration::from_secs(30), || {
        let run = user
            .oak(&[
                "service",
                "logs",
                service,
                "--instance",
                "0",
                "--tail",
                "10",
            ])
            .ok();
        run.stdout.contains("started").then_some(run.stdout)
    });
    assert!(
        logs.contains(service.as_str()) || logs.contains("curl"),
        "{logs}"
    );

    // Without --wait the request is only accepted.
    let run = user.oak(&["service", "deploy", service, "--no-wait"]).ok();
    assert!(run.stdout.contains("instance 1 of service"), "{run:#?}");

    // Undeploy one instance, then every instance.
    user.oak(&["service", "undeploy", service, "--instance", "1"])
        .ok();
    eventually("instance 1 gone", Duration::from_secs(30), || {
        let s = user
            .oak(&["--json", "service", "show", service])
            .ok()
            .json();
        let numbers: Vec<u64> = s["instance_list"]
            .as_array()?
            .iter()
            .filter_map(|i| i["instance_number"].as_u64())
            .collect();
        (!numbers.contains(&1)).then_some(())
    });
    user.oak(&["service", "undeploy", service]).ok();
    eventually("no instance left", Duration::from_secs(30), || {
        let s = user
            .oak(&["--json", "service", "show", service])
            .ok()
            .json();
        s["instance_list"].as_array()?.is_empty().then_some(())
    });

    // Join tokens: a new cluster token from the root, the worker token of oak up's cluster.
    let token = user
        .oak(&["token", "create", "--kind", "cluster", "--name", "edge"])
        .ok()
        .stdout;
    assert!(token.trim().starts_with("oakjoin_"), "{token}");
    let created = user
        .oak(&["--json", "token", "create", "--kind", "cluster"])
        .ok()
        .json();
    assert_ne!(created["token"], token.trim());
    let worker = user
        .oak(&[
            "token",
            "create",
            "--kind",
            "worker",
            "--cluster-data-dir",
            up.state.join("cluster").to_str().unwrap(),
        ])
        .ok()
        .stdout;
    let on_disk = std::fs::read_to_string(up.state.join("cluster/worker-join-token")).unwrap();
    assert_eq!(worker.trim(), on_disk.trim());
    user.oak(&[
        "token",
        "create",
        "--kind",
        "worker",
        "--cluster-data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
    ])
    .code(1);

    // A user without the Admin role sees only their own applications and services.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = oakestra_client::Client::new(&up.api).unwrap();
        admin.login("Admin", "Admin").await.unwrap();
        admin
            .register(&oakestra_client::NewUser {
                name: "alice".into(),
                password: "wonderland".into(),
                email: String::new(),
                roles: vec!["Application_Provider".into()],
            })
            .await
            .unwrap();
    });
    let alice = User::new(&dir.path().join("alice"));
    alice
        .oak_with_input(&["login", "--url", &up.api, "-u", "alice"], "wonderland\n")
        .ok();
    assert_eq!(alice.oak(&["--json", "app", "list"]).ok().json(), json!([]));
    alice.oak(&["app", "show", &app_id]).code(1);
    let mut own =
        serde_json::from_str::<Value>(&std::fs::read_to_string(CLIENTSRVR).unwrap()).unwrap();
    own["applications"][0]["application_name"] = json!("alices");
    // The RR addresses of the descriptor are taken by Admin's copy.
    for service in own["applications"][0]["microservices"]
        .as_array_mut()
        .unwrap()
    {
        service.as_object_mut().unwrap().remove("addresses");
    }
    std::fs::write(dir.path().join("alice.json"), own.to_string()).unwrap();
    alice
        .oak(&[
            "app",
            "create",
            dir.path().join("alice.json").to_str().unwrap(),
        ])
        .ok();
    let apps = alice.oak(&["--json", "app", "list"]).ok().json();
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps[0]["application_name"], "alices");
    let services = alice.oak(&["--json", "service", "list"]).ok().json();
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["app_name"] == "alices")
    );
    // Token creation needs the Admin role: exit 3.
    alice.oak(&["token", "create", "--kind", "cluster"]).code(3);

    // Delete; afterwards the application is not found (exit 1).
    user.oak(&["app", "delete", &app_id]).ok();
    let run = user.oak(&["app", "show", &app_id]).code(1);
    assert!(run.stderr.contains("not found"), "{run:#?}");
    user.oak(&["service", "show", service]).code(1);
    let left = user.oak(&["--json", "app", "list"]).ok().json();
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .all(|a| a["application_name"] == "alices"),
        "{left}"
    );
}

#[test]
fn unreachable_root_bad_usage_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let user = User::new(dir.path());
    let closed = format!("http://127.0.0.1:{}", free_port());

    let run = user
        .oak_with_input(
            &["login", "--url", &closed, "--username", "Admin"],
            "Admin\n",
        )
        .code(4);
    assert!(run.stderr.contains("cannot reach"), "{run:#?}");
    user.oak(&["cluster", "list", "--url", &closed]).code(4);

    // A stored login whose root is gone.
    std::fs::create_dir_all(user.config_file().parent().unwrap()).unwrap();
    user.store(&json!({
        "url": closed, "username": "Admin", "token": "a", "refresh_token": "b",
    }));
    user.oak(&["service", "list"]).code(4);

    // Usage errors: exit 2.
    user.oak(&["service", "deploy"]).code(2);
    user.oak(&["token", "create", "--kind", "gateway"]).code(2);
    user.oak(&["service", "deploy", "x", "--timeout", "soon"])
        .code(2);

    // Every command has help that names the exit codes.
    for args in [
        vec!["--help"],
        vec!["login", "--help"],
        vec!["app", "--help"],
        vec!["app", "create", "--help"],
        vec!["service", "deploy", "--help"],
        vec!["service", "logs", "--help"],
        vec!["cluster", "list", "--help"],
        vec!["token", "create", "--help"],
    ] {
        let run = user.oak(&args).ok();
        assert!(run.stdout.contains("Usage:"), "{args:?}: {run:#?}");
        assert!(run.stdout.contains("Exit status"), "{args:?}: {run:#?}");
    }
    let help = user.oak(&["service", "--help"]).ok().stdout;
    assert!(
        help.contains("Exit status") && help.contains("4 root unreachable"),
        "{help}"
    );
    let help = user.oak(&["token", "create", "--help"]).ok().stdout;
    assert!(help.contains("no API creates one"), "{help}");
}

/// A stub of an Oakestra root: login, applications, clusters and one service, every body a
/// JSON string holding JSON (as Oakestra's `json_util.dumps` answers), and a deploy answer
/// without the instance.
mod oakestra_stub {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    pub const SERVICE: &str = "65f1a2b3c4d5e6f708192a3c";
    pub const APP: &str = "65f1a2b3c4d5e6f708192a3b";
    /// A service whose instance cannot be placed.
    pub const FAILING: &str = "65f1a2b3c4d5e6f708192a3d";
    /// A service whose instance never leaves REQUESTED.
    pub const STUCK: &str = "65f1a2b3c4d5e6f708192a3e";

    #[derive(Default)]
    pub struct Stub {
        /// Per deployed service: status reads since its deploy.
        reads_since_deploy: HashMap<String, u32>,
    }

    fn string_body(value: &Value) -> axum::Json<Value> {
        axum::Json(Value::String(value.to_string()))
    }

    fn service(instances: Vec<Value>) -> Value {
        json!({
            "_id": {"$oid": SERVICE}, "applicationID": APP, "microserviceID": SERVICE,
            "app_name": "shop", "app_ns": "prod", "microservice_name": "web",
            "microservice_namespace": "prod", "service_name": "web", "service_ns": "prod",
            "job_name": "shop.prod.web.prod", "image": "nginx", "code": "nginx",
            "virtualization": "container", "memory": 100, "vcpus": 1,
            "status": if instances.is_empty() { "0" } else { "REQUESTED" },
            "instance_list": instances,
        })
    }

    async fn get_service(
        State(stub): State<Arc<Mutex<Stub>>>,
        Path(id): Path<String>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if ![SERVICE, FAILING, STUCK].contains(&id.as_str()) {
            return (
                axum::http::StatusCode::NOT_FOUND,
                "{\"message\":\"Job not found\"}",
            )
                .into_response();
        }
        let mut stub = stub.lock().unwrap();
        let reads = stub.reads_since_deploy.get_mut(&id).map(|reads| {
            *reads += 1;
            *reads
        });
        let instances = match (id.as_str(), reads) {
            (_, None) => vec![],
            (FAILING, Some(_)) => vec![json!({
                "instance_number": 0, "status": "NO_WORKER_CAPACITY",
                "status_detail": "no worker has 100 MB of memory free",
            })],
            (STUCK, Some(_)) => vec![json!({"instance_number": 0, "status": "REQUESTED"})],
            (_, Some(reads)) => {
                let status = match reads {
                    1 => "REQUESTED",
                    2 => "CLUSTER_SCHEDULED",
                    3 => "NODE_SCHEDULED",
                    _ => "RUNNING",
                };
                vec![
                    json!({"instance_number": 0, "status": status, "cluster_id": "c1",
                            "worker_id": "w1", "cpu_percent": "1.5", "memory_percent": "2.0",
                            "logs": "line one\nline two\nline three"}),
                ]
            }
        };
        string_body(&service(instances)).into_response()
    }

    pub fn router() -> Router {
        let state = Arc::new(Mutex::new(Stub::default()));
        Router::new()
            .route(
                "/api/auth/login",
                post(|| async {
                    string_body(&json!({"token": "access-token", "refresh_token": "refresh-token"}))
                }),
            )
            .route(
                "/api/applications",
                get(|| async {
                    string_body(&json!([{
                        "_id": {"$oid": APP}, "applicationID": APP, "application_name": "shop",
                        "application_namespace": "prod", "application_desc": "",
                        "userId": "Admin", "microservices": [SERVICE],
                    }]))
                }),
            )
            .route(
                "/api/clusters",
                get(|| async {
                    string_body(&json!([{
                        "_id": "c1", "cluster_name": "edge", "cluster_location": "Munich",
                        "active": true, "active_nodes": 2, "total_cpu_cores": 8,
                        "memory_in_mb": 16384, "aggregated_cpu_percent": 12.5,
                        "virtualization": ["docker"],
                    }]))
                }),
            )
            // Oakestra's quirk: a found application is answered with `null`.
            .route(
                "/api/application/{id}",
                get(|| async { axum::Json(Value::Null) }),
            )
            .route(
                "/api/services/{app}",
                get(|| async { string_body(&Value::Array(vec![service(vec![])])) }),
            )
            .route("/api/service/{id}", get(get_service))
            .route(
                "/api/service/{id}/instance",
                post(
                    |State(stub): State<Arc<Mutex<Stub>>>, Path(id): Path<String>| async move {
                        stub.lock().unwrap().reads_since_deploy.insert(id, 0);
                        axum::Json(json!({"message": "ok"}))
                    },
                ),
            )
            .with_state(state)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_against_an_oakestra_shaped_root() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, oakestra_stub::router()).await });
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>, input: &'static str| {
        let user = User::new(dir.path());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            user.oak_with_input(&args, input)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    run(
        args(&["login", "--url", &url, "--username", "Admin"]),
        "Admin\n",
    )
    .await
    .unwrap()
    .ok();

    let apps = run(args(&["--json", "app", "list"]), "")
        .await
        .unwrap()
        .ok()
        .json();
    assert_eq!(apps[0]["application_name"], "shop");
    let table = run(args(&["app", "list"]), "").await.unwrap().ok().stdout;
    assert!(table.contains(oakestra_stub::APP), "{table}");

    let shown = run(args(&["--json", "app", "show", oakestra_stub::APP]), "")
        .await
        .unwrap()
        .ok()
        .json();
    assert_eq!(shown["application"]["application_name"], "shop");
    assert_eq!(shown["services"][0]["service_name"], "web");
    run(args(&["app", "show", "65f1a2b3c4d5e6f708192aff"]), "")
        .await
        .unwrap()
        .code(1);

    let clusters = run(args(&["cluster", "list", "--json"]), "")
        .await
        .unwrap()
        .ok()
        .json();
    assert_eq!(clusters[0]["cluster_name"], "edge");
    assert_eq!(clusters[0]["active_nodes"], 2);

    // The deploy answer names no instance: the new one is recognised in the service record
    // and followed through the lifecycle to RUNNING.
    let run_deploy = run(
        args(&[
            "service",
            "deploy",
            oakestra_stub::SERVICE,
            "--wait",
            "--timeout",
            "30s",
        ]),
        "",
    )
    .await
    .unwrap()
    .ok();
    for status in [
        "REQUESTED",
        "CLUSTER_SCHEDULED",
        "NODE_SCHEDULED",
        "RUNNING",
    ] {
        assert!(
            run_deploy.stderr.contains(&format!("instance 0: {status}")),
            "{status}: {run_deploy:#?}"
        );
    }
    assert!(
        run_deploy
            .stdout
            .contains("RUNNING on cluster c1 worker w1"),
        "{run_deploy:#?}"
    );

    // A placement failure: its status and detail, exit 1.
    let failed = run(
        args(&["service", "deploy", oakestra_stub::FAILING, "--wait"]),
        "",
    )
    .await
    .unwrap()
    .code(1);
    assert!(
        failed.stderr.contains(
            "instance 0 of service 65f1a2b3c4d5e6f708192a3d failed: NO_WORKER_CAPACITY: \
             no worker has 100 MB of memory free"
        ),
        "{failed:#?}"
    );

    // Still REQUESTED when --timeout passes: exit 5 with the last status.
    let stuck = run(
        args(&[
            "service",
            "deploy",
            oakestra_stub::STUCK,
            "--wait",
            "--timeout",
            "1s",
        ]),
        "",
    )
    .await
    .unwrap()
    .code(5);
    assert!(
        stuck.stderr.contains("last status: instance 0: REQUESTED"),
        "{stuck:#?}"
    );

    // No logs endpoint: the log tail of the service record.
    let logs = run(
        args(&["service", "logs", oakestra_stub::SERVICE, "--tail", "2"]),
        "",
    )
    .await
    .unwrap()
    .ok()
    .stdout;
    assert_eq!(logs, "line two\nline three\n");

    // An unknown service: the root's 404 gives exit 1 with its message.
    let run_missing = run(args(&["service", "show", "65f1a2b3c4d5e6f708192a3f"]), "")
        .await
        .unwrap()
        .code(1);
    assert!(
        run_missing.stderr.contains("Job not found"),
        "{run_missing:#?}"
    );
}

/// Issue 19: `oak login --ca-cert` pins an https:// root's certificate, and the other commands
/// use the pinned certificate from the stored login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_pins_an_https_roots_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup installs it)");
    assert!(made.success());
    let root = oakestra_root::start(oakestra_root::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("root"),
        store: oakestra_root::StoreLocation::Memory,
        tls: Some(oakestra_root::config::TlsFiles {
            cert: cert.clone(),
            key,
        }),
        ..oakestra_root::Config::default()
    })
    .await
    .unwrap();
    let url = format!("https://{}", root.rest_addr);
    let user = User::new(dir.path());
    let cert_arg = cert.to_str().unwrap().to_owned();
    let (u, c) = (url.clone(), cert_arg.clone());
    let user = tokio::task::spawn_blocking(move || {
        // Without the certificate the system's CAs do not know the root.
        let refused =
            user.oak_with_input(&["login", "--url", &u, "--username", "Admin"], "Admin\n");
        assert_ne!(refused.code, Some(0), "{refused:#?}");
        let run = user
            .oak_with_input(
                &["login", "--url", &u, "--username", "Admin", "--ca-cert", &c],
                "Admin\n",
            )
            .ok();
        assert!(run.stdout.contains("logged in to"), "{run:#?}");
        assert_eq!(user.stored()["ca_cert"], c);
        // Another command: the stored login carries the certificate.
        let apps = user.oak(&["--json", "app", "list"]).ok();
        assert_eq!(apps.json(), serde_json::json!([]));
        user
    })
    .await
    .unwrap();
    drop(user);
    root.stop().await.unwrap();
}
