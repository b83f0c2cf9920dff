//! Issue 19: TLS on the root's REST API (`--tls-cert`, `--tls-key`) with the real binary; a
//! client pins the root's certificate (`oakestra_client::Client::with_ca_cert`). The
//! certificates are made with the `openssl` command (scripts/setup installs it).

#[allow(unused_macros)]
mod api_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use api_common::{Backend, Root};
use oakestra_client::Client;

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let status = Command::new("openssl")
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
        // A server certificate, not a CA: webpki refuses a CA certificate as the server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup installs it)");
    assert!(status.success());
    (cert, key)
}

fn refused_start(data_dir: &Path, args: &[&Path]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oakestra-root"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--store",
        "memory:",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .env_remove("OAKESTRA_ROOT_CONFIG");
    for (flag, path) in ["--tls-cert", "--tls-key"].iter().zip(args) {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "the root started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_over_tls_with_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "root");
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let root = Root::start_on_with_args(&dir.path().join("data"), Backend::Redb, &args).await;
    assert!(root.url.starts_with("https://127.0.0.1:"), "{}", root.url);

    // Pinned to the root's certificate: log in, use the API.
    let pem = std::fs::read(&cert).unwrap();
    let client = Client::with_ca_cert(&root.url, &pem).unwrap();
    client.login("Admin", "Admin").await.unwrap();
    assert!(client.applications().await.unwrap().is_empty());

    // The system's CAs do not know it; another certificate is not it; plain HTTP is not served.
    assert!(
        Client::new(&root.url)
            .unwrap()
            .login("Admin", "Admin")
            .await
            .is_err()
    );
    let (other, _) = self_signed(dir.path(), "other");
    let stranger = Client::with_ca_cert(&root.url, &std::fs::read(other).unwrap()).unwrap();
    assert!(stranger.login("Admin", "Admin").await.is_err());
    let plain = root.url.replacen("https://", "http://", 1);
    assert!(
        Client::new(&plain)
            .unwrap()
            .login("Admin", "Admin")
            .await
            .is_err()
    );

    // Any HTTPS client that trusts the certificate gets the API (here reqwest itself).
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let answer = h2.get(format!("{}/health", root.url)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[test]
fn a_wrong_tls_set_up_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key) = self_signed(dir.path(), "a");
    let (_, other_key) = self_signed(dir.path(), "b");
    let err = refused_start(dir.path(), &[&cert]);
    assert!(err.contains("--tls-cert and --tls-key"), "{err}");
    let err = refused_start(dir.path(), &[&cert, &other_key]);
    assert!(err.contains("do not go together"), "{err}");
    let err = refused_start(dir.path(), &[&dir.path().join("absent.pem"), &other_key]);
    assert!(err.contains("absent.pem"), "{err}");
}
