//! `--runtime` selection of the `oakestra-node` binary: `auto` with neither containerd nor qemu
//! fails at once with a message that says what to do, and `fake` starts without either.
// Real daemons and processes on the real clock: std's Instant is right here (this crate's
// clippy.toml bans it for the code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The worker, pointed at a cluster that is not there, with an empty PATH (so no qemu) and a
/// containerd socket that does not exist.
fn worker(dir: &Path, runtime: &str) -> Command {
    let empty_path = dir.join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oakestra-node"));
    cmd.args([
        "--cluster",
        "127.0.0.1:1",
        "--token",
        "t",
        "--runtime",
        runtime,
    ])
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--containerd-socket")
    .arg(dir.join("no-containerd.sock"))
    .args(["--metrics-listen", "off"])
    .env("PATH", &empty_path)
    .env_remove("OAKESTRA_NODE_CONFIG")
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

#[test]
fn auto_without_containerd_or_qemu_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = worker(dir.path(), "auto").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "no-containerd.sock",
        "qemu is not installed",
        "containerd",
        "--runtime fake",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }

    let out = worker(dir.path(), "unikernel").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("qemu is not installed"), "{err}");
}

#[tokio::test]
async fn fake_runs_without_containerd_or_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = worker(dir.path(), "fake").spawn().unwrap();
    // It keeps running (retrying the missing cluster) and has set up its fake runtime.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("oakestra-node --runtime fake exited ({status}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.path().join("data").is_dir());
}
