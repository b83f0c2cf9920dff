//! Shared by the `api_*` integration tests: starts the real `oakestra-root` binary on free
//! loopback ports with a temp data dir, and talks to it through `oakestra-client` and raw
//! HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use oakestra_client::Client;
use serde_json::Value;

/// The store engineer's nx-27017 harness (a MongoDB-wire server on a free loopback port).
#[path = "../../../store/tests/support/mod.rs"]
mod nx;

/// Runs each listed scenario `async fn name(backend: Backend)` as two tests, `redb::name` and
/// `mongo::name`, so every API test covers both store backends.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::api_common::Backend::Redb).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::api_common::Backend::Mongo).await
                }
            )*
        }
    };
}

/// Which store the root under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded redb file in the data dir.
    Redb,
    /// MongoDB (a fresh nx-27017 per test).
    Mongo,
}

pub const CLIENTSRVR: &str = include_str!("../../../../examples/sla-clientsrvr-container.json");

/// A running `oakestra-root` process.
pub struct Root {
    child: Child,
    pub url: String,
    /// The cluster-link gRPC address (a fake cluster dials it).
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub store: Option<String>,
    /// Further flags, kept across restarts.
    pub extra_args: Vec<String>,
    /// The MongoDB-wire server, kept alive as long as the root (and across restarts).
    nx: Option<nx::NxServer>,
}

impl Root {
    /// Starts a root with the embedded store in `data_dir`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, None)
    }

    /// Starts a root on `backend` (for MongoDB, a fresh nx-27017 first).
    pub async fn start_on(data_dir: &Path, backend: Backend) -> Self {
        Self::start_on_with_args(data_dir, backend, &[]).await
    }

    /// Starts a root on `backend` with further flags (e.g. `--access-token-ttl 2s`).
    pub async fn start_on_with_args(data_dir: &Path, backend: Backend, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        match backend {
            Backend::Redb => Self::launch(data_dir, None, args),
            Backend::Mongo => {
                let server = nx::NxServer::start().await;
                let mut root = Self::launch(data_dir, Some(&server.url("oakestra")), args);
                root.nx = Some(server);
                root
            }
        }
    }

    /// Starts a root with `store` (a redb path or a MongoDB URL), or the embedded default.
    pub fn start_with(data_dir: &Path, store: Option<&str>) -> Self {
        Self::launch(data_dir, store, Vec::new())
    }

    fn launch(data_dir: &Path, store: Option<&str>, extra_args: Vec<String>) -> Self {
        let cmd = Self::command(data_dir, store, &extra_args);
        let (child, url, grpc) = Self::spawn(cmd);
        Self {
            child,
            url,
            grpc,
            data_dir: data_dir.to_owned(),
            store: store.map(str::to_owned),
            extra_args,
            nx: None,
        }
    }

    fn command(data_dir: &Path, store: Option<&str>, extra_args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oakestra-root"));
        cmd.args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("OAKESTRA_ROOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(store) = store {
            cmd.args(["--store", store]);
        }
        cmd.args(extra_args);
        cmd
    }

    /// Starts the root and waits for its two "listening on" lines (REST, then gRPC).
    fn spawn(mut cmd: Command) -> (Child, String, SocketAddr) {
        let mut child = cmd.spawn().expect("start oakestra-root");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut url = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(u) = line.strip_prefix("oakestra-root: REST API listening on ") {
                    url = Some(u.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("oakestra-root: cluster gRPC listening on ")
                    && let (Some(url), Ok(grpc)) = (url.take(), addr.trim().parse::<SocketAddr>())
                {
                    let _ = tx.send((url, grpc));
                }
            }
        });
        let (url, grpc) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addresses) => addresses,
            Err(_) => {
                let status = child.try_wait();
                let _ = child.kill();
                panic!("oakestra-root did not report its addresses within 60 s (exit: {status:?})");
            }
        };
        (child, url, grpc)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts another root on the same data dir and store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, url, grpc) = Self::spawn(Self::command(
            &self.data_dir,
            self.store.as_deref(),
            &self.extra_args,
        ));
        self.child = child;
        self.url = url;
        self.grpc = grpc;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client, not logged in.
    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// A client logged in as Admin/Admin.
    pub async fn admin(&self) -> Client {
        let c = self.client();
        c.login("Admin", "Admin").await.expect("Admin login");
        c
    }

    /// Raw HTTP helper.
    pub fn raw(&self) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            base: self.url.clone(),
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raw HTTP requests with status and JSON body.
pub struct Raw {
    pub http: reqwest::Client,
    pub base: String,
}

impl Raw {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            token,
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::PUT,
            path,
            token,
            Some(body.as_bytes().to_vec()),
        )
        .await
    }
}

/// Asserts an error answer: status and the `{"code","status","message"}` body, and returns
/// the message.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16) -> String {
    let (code, body) = answer;
    assert_eq!(*code, status, "unexpected answer {body}");
    assert_eq!(body["code"], status, "{body}");
    assert!(body["status"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "error without a message: {body}");
    message
}

/// The clientsrvr descriptor with another application name (and optionally without the
/// fixed rr_ip, so several copies can coexist).
pub fn clientsrvr_named(name: &str, keep_rr_ip: bool) -> Value {
    let mut sla: Value = serde_json::from_str(CLIENTSRVR).expect("example parses");
    sla["applications"][0]["application_name"] = Value::String(name.to_owned());
    if !keep_rr_ip {
        sla["applications"][0]["microservices"][1]
            .as_object_mut()
            .expect("service object")
            .remove("addresses");
    }
    sla
}

/// A descriptor with one application holding one service.
pub fn one_service_app(app: &str, service: &str, rr_ip: Option<&str>) -> Value {
    let mut ms = serde_json::json!({
        "microservice_name": service,
        "microservice_namespace": "test",
        "virtualization": "container",
        "cmd": [],
        "memory": 100,
        "vcpus": 1,
        "code": "docker.io/library/nginx:latest",
        "port": "80:80/tcp"
    });
    if let Some(ip) = rr_ip {
        ms["addresses"] = serde_json::json!({"rr_ip": ip});
    }
    serde_json::json!({
        "sla_version": "v2.0",
        "customerID": "Admin",
        "applications": [{
            "application_name": app,
            "application_namespace": "test",
            "application_desc": "test",
            "microservices": [ms]
        }]
    })
}

/// The JSON payload of a JWT (unchecked).
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let mut bytes = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    serde_json::from_slice(&bytes).expect("JSON payload")
}
