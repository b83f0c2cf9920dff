//! Issue 19: TLS on the cluster's worker API (`oakestra-cluster --tls-cert/--tls-key`) and a
//! worker that pins the cluster's CA (`oakestra-node --cluster-ca`), with the real binaries.
//! The certificates (a CA and a server certificate it signed, for 127.0.0.1) are made with the
//! `openssl` command (scripts/setup installs it).
// Real processes on the real clock.
#![allow(clippy::disallowed_types)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{eventually_within, free_port, node_binary};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA named `name` and a server certificate for 127.0.0.1 signed by it:
/// (ca.pem, cert.pem, key.pem).
fn ca_and_server(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca-key.pem"));
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &args);
    let (key, csr, cert) = (
        format!("{name}-key.pem"),
        format!("{name}.csr"),
        format!("{name}-cert.pem"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(ca), dir.join(cert), dir.join(key))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(cluster: &str, token: &str, ca: &Path, data: &Path) -> Killed {
    Killed(
        Command::new(node_binary())
            .args(["--cluster", cluster, "--token", token, "--runtime", "fake"])
            .args(["--report-interval", "500ms", "--metrics-listen", "off"])
            .arg("--cluster-ca")
            .arg(ca)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .env_remove("OAKESTRA_NODE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oakestra-node"),
    )
}

fn registered_id(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("node-state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state["identity"]["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_over_tls_only_with_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_server(dir.path(), "cluster");
    let (other_ca, _, _) = ca_and_server(dir.path(), "other");
    let port = free_port();
    let data = dir.path().join("cluster");
    let _cluster = Killed(
        Command::new(env!("CARGO_BIN_EXE_oakestra-cluster"))
            .args(["--name", "tls"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--mqtt-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(&data)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("RUST_LOG", "warn")
            .env_remove("OAKESTRA_CLUSTER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oakestra-cluster"),
    );

    // The API answers over TLS to a client that trusts the CA, and not in plain HTTP.
    let pem = std::fs::read(&ca).unwrap();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let health = format!("https://127.0.0.1:{port}/health");
    eventually_within(
        "the cluster's /health over TLS",
        Duration::from_secs(60),
        || {
            let (https, health) = (https.clone(), health.clone());
            async move {
                let r = https.get(&health).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "the cluster answered plain HTTP"
    );

    let token = std::fs::read_to_string(data.join("worker-join-token"))
        .unwrap()
        .trim()
        .to_owned();
    let cluster = format!("127.0.0.1:{port}");
    // A worker that pins another CA does not register; one that pins the cluster's does.
    let wrong = dir.path().join("wrong");
    let _wrong = start_node(&cluster, &token, &other_ca, &wrong);
    let right = dir.path().join("right");
    let _right = start_node(&cluster, &token, &ca, &right);
    let id = eventually_within(
        "the worker's registration over TLS",
        Duration::from_secs(60),
        || {
            let right = right.clone();
            async move { registered_id(&right) }
        },
    )
    .await;
    assert!(!id.is_empty());
    // The other worker had as long and more: it still has no identity.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        registered_id(&wrong),
        None,
        "a worker registered with a cluster whose certificate its --cluster-ca did not sign"
    );
}
