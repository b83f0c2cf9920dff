//! Fixtures of the containerd tests: a test containerd and a loopback registry (started by
//! `scripts/fixtures/*.sh`, idempotently), and an OCI test image built here, with no network,
//! from Debian's `busybox-static`, then pushed to the registry.
//!
//! Missing binaries fail the tests with "run scripts/setup"; they are never skipped.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use oakestra_runtime::containerd::{ContainerdConfig, ContainerdRuntime, NetworkSetup};
use oakestra_runtime::{ExitEvent, InstanceId, InstanceSpec};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Namespace of the tests, apart from a worker's `oakestra`.
pub const NAMESPACE: &str = "oakestra-test";

/// Where the fixtures run.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// containerd socket.
    pub socket: PathBuf,
    /// Registry `127.0.0.1:<port>`.
    pub registry: String,
    /// A registry that requires basic auth with [`AUTH_USER`]:[`AUTH_PASSWORD`].
    pub auth_registry: String,
}

/// User of the auth registry.
pub const AUTH_USER: &str = "oak";
/// Password of the auth registry.
pub const AUTH_PASSWORD: &str = "test-secret";

/// `scripts/fixtures` of the workspace: this module is also included by other crates' tests
/// (`#[path]`), so it is looked up from the including crate upwards.
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("scripts/fixtures"))
        .find(|dir| dir.is_dir())
        .expect("scripts/fixtures above the crate directory")
}

fn run_script(name: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(scripts_dir().join(name))
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/fixtures/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/fixtures/{name} failed (run scripts/setup if a package is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts (or finds) containerd and the registry.
pub fn fixtures() -> Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            for binary in ["containerd", "runc", "docker-registry"] {
                assert!(
                    Command::new("sh")
                        .args(["-c", &format!("command -v {binary}")])
                        .output()
                        .is_ok_and(|o| o.status.success()),
                    "{binary} is not installed: run scripts/setup"
                );
            }
            assert!(
                Path::new(BUSYBOX).exists(),
                "{BUSYBOX} (busybox-static) is not installed: run scripts/setup"
            );
            Fixtures {
                socket: PathBuf::from(run_script("containerd.sh", &[])),
                registry: run_script("registry.sh", &[]),
                auth_registry: run_script(
                    "registry.sh",
                    &[
                        ("OAK_TEST_REGISTRY_PORT", "5056"),
                        ("OAK_TEST_REGISTRY_DIR", "/run/oakestra-test/registry-auth"),
                        (
                            "OAK_TEST_REGISTRY_AUTH",
                            &format!("{AUTH_USER}:{AUTH_PASSWORD}"),
                        ),
                    ],
                ),
            }
        })
        .clone()
}

/// A containerd of its own with root, state and socket under `dir` (a worker of a multi-worker
/// test; stop it with [`stop_containerd`]). Returns its socket.
pub fn containerd_in(dir: &Path) -> PathBuf {
    PathBuf::from(run_script(
        "containerd.sh",
        &[("OAK_TEST_CONTAINERD_DIR", &dir.display().to_string())],
    ))
}

/// Stops what [`containerd_in`] started: every task of every namespace killed and removed
/// (their shims exit with them), then the daemon; the directory is removed. Best effort, for
/// test guards.
pub fn stop_containerd(dir: &Path) {
    let sock = dir.join("containerd.sock").display().to_string();
    let ctr = |args: &[&str]| {
        Command::new("timeout")
            .arg("20")
            .args(["ctr", "--address", &sock])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for ns in ctr(&["namespaces", "ls", "-q"]).lines() {
        for task in ctr(&["-n", ns, "tasks", "ls", "-q"]).lines() {
            ctr(&["-n", ns, "tasks", "kill", "-s", "SIGKILL", task]);
            ctr(&["-n", ns, "tasks", "rm", "-f", task]);
        }
        for container in ctr(&["-n", ns, "containers", "ls", "-q"]).lines() {
            ctr(&["-n", ns, "containers", "rm", container]);
        }
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("pid")) {
        let _ = Command::new("kill").arg(pid.trim()).output();
        // Test guards call this from `Drop`, outside any async context.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(300));
    }
    // Mounts left under the root (snapshots) would keep the directory.
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "grep -o ' {}/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l",
                dir.display()
            ),
        ])
        .output();
    let _ = std::fs::remove_dir_all(dir);
}

/// A plain-HTTP registry listening on every address (port 5057, its own data directory), for
/// workers in network namespaces of their own that reach this host through a veth. Returns
/// `127.0.0.1:5057`, where this host pushes to it.
pub fn open_registry() -> String {
    run_script(
        "registry.sh",
        &[
            ("OAK_TEST_REGISTRY_PORT", "5057"),
            ("OAK_TEST_REGISTRY_DIR", "/run/oakestra-test/registry-open"),
            ("OAK_TEST_REGISTRY_LISTEN", "0.0.0.0"),
        ],
    )
}

/// Busybox from Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked in the test image.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "httpd", "env", "ls", "mkdir", "true", "false", "dd", "head",
    "tail", "yes", "hostname", "wget", "nslookup", "nc", "printf", "seq", "rm", "ps", "kill",
    "trap",
];

/// What the image runs by default: an httpd serving a page that names the instance.
const SERVE: &str = "#!/bin/sh\n\
mkdir -p /tmp/www\n\
echo \"hello from ${INSTANCE_NAME:-$(hostname)}\" > /tmp/www/index.html\n\
echo \"serving on :${PORT:-80}\"\n\
exec httpd -f -p \"${PORT:-80}\" -h /tmp/www\n";

fn digest(bytes: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The test image's blobs: (layer.tar.gz, diff id, config JSON, manifest JSON).
pub struct TestImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Builds the image; `marker` goes into `/etc/marker` so each distinct marker is an image
/// with its own layer (an uncached image for pull tests).
pub fn build_image(marker: &str) -> TestImage {
    let busybox = std::fs::read(BUSYBOX).expect("reading /bin/busybox");
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        let mut h = header(&format!("{dir}/"), tar::EntryType::Directory, 0o755, 0);
        if dir == "tmp" {
            h.set_mode(0o1777);
        }
        h.set_cksum();
        tar.append(&h, std::io::empty()).unwrap();
    }
    let mut h = header(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        busybox.len() as u64,
    );
    h.set_cksum();
    tar.append(&h, busybox.as_slice()).unwrap();
    for applet in APPLETS {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        tar.append(&h, std::io::empty()).unwrap();
    }
    for (path, body, mode) in [
        ("bin/serve", SERVE.as_bytes(), 0o755),
        ("etc/marker", marker.as_bytes(), 0o644),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".as_slice(),
            0o644,
        ),
    ] {
        let mut h = header(path, tar::EntryType::Regular, mode, body.len() as u64);
        h.set_cksum();
        tar.append(&h, body).unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = digest(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oakestra_runtime::containerd::registry::host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/serve"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config), "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(&layer), "size": layer.len()
        }]
    }))
    .unwrap();
    TestImage {
        layer,
        config,
        manifest,
    }
}

/// Pushes `image` as `<registry>/<repo>:<tag>` with the distribution API; returns the reference.
pub async fn push(registry: &str, repo: &str, tag: &str, image: &TestImage) -> String {
    push_as(registry, repo, tag, image, None).await
}

/// [`push`] with basic-auth credentials.
pub async fn push_as(
    registry: &str,
    repo: &str,
    tag: &str,
    image: &TestImage,
    auth: Option<(&str, &str)>,
) -> String {
    // Bounded, so a stuck registry fails the test instead of hanging it.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let with = |req: reqwest::RequestBuilder| match auth {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    };
    let base = format!("http://{registry}/v2/{repo}");
    for blob in [&image.layer, &image.config] {
        let d = digest(blob);
        let head = with(http.head(format!("{base}/blobs/{d}")))
            .send()
            .await
            .unwrap();
        if head.status().is_success() {
            continue;
        }
        let start = with(http.post(format!("{base}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            start.status().as_u16(),
            202,
            "upload start: {}",
            start.status()
        );
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("http://{registry}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = with(http.put(format!("{location}{sep}digest={d}")))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "blob upload: {}", put.status());
    }
    let put = with(http.put(format!("{base}/manifests/{tag}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.manifest.clone())
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_success(),
        "manifest upload: {}",
        put.status()
    );
    format!("{registry}/{repo}:{tag}")
}

/// The shared test image (`oaktest/busybox:v1`), built and pushed once per process.
pub async fn shared_image(f: &Fixtures) -> String {
    static IMAGE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            push(&f.registry, "oaktest/busybox", "v1", &build_image("shared")).await
        })
        .await
        .clone()
}

/// A unique name for this test run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}{nanos}", std::process::id())
}

/// Config of a test runtime: the test containerd, the test namespace, logs in `log_dir`.
pub fn config(f: &Fixtures, log_dir: &Path) -> ContainerdConfig {
    ContainerdConfig {
        socket: f.socket.clone(),
        namespace: NAMESPACE.into(),
        log_dir: log_dir.to_path_buf(),
        cgroup_parent: "/oakestra-test".into(),
        default_network: NetworkSetup::Isolated,
        ..ContainerdConfig::default()
    }
}

/// A runtime on the fixtures.
pub async fn runtime(f: &Fixtures, log_dir: &Path) -> ContainerdRuntime {
    ContainerdRuntime::connect(config(f, log_dir))
        .await
        .expect("connecting to the test containerd")
}

/// A spec of instance 0 of a fresh job running `cmd` (empty: the image's httpd).
pub fn spec(image: &str, cmd: &[&str]) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(unique("t.app.svc."), 0),
        image: image.to_string(),
        virtualization: "docker".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        ports: vec![],
        memory_limit_mb: 0,
        cpu_limit: 0.0,
        storage_mb: 0,
        one_shot: false,
        privileged: false,
        arch: vec![],
        platform: None,
    }
}

/// The next exit event of `id`, within `limit`.
pub async fn exit_of(
    events: &mut mpsc::UnboundedReceiver<ExitEvent>,
    id: &InstanceId,
    limit: Duration,
) -> ExitEvent {
    tokio::time::timeout(limit, async {
        loop {
            let e = events.recv().await.expect("event stream ended");
            if &e.id == id {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no exit event of {id} within {limit:?}"))
}

/// Polls `logs_tail` until it contains `needle`.
pub async fn wait_log(rt: &ContainerdRuntime, id: &InstanceId, needle: &str) -> String {
    use oakestra_runtime::Runtime;
    let mut last = String::new();
    for _ in 0..200 {
        last = rt.logs_tail(id, 64 * 1024).await.unwrap_or_default();
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("log of {id} never contained {needle:?}; it holds:\n{last}");
}
