//! README command 1, `scripts/up`, on a machine that lacks every package: it installs what
//! building and running need (protoc among them) with apt, and only that, then builds and
//! runs `oak up` with the arguments given. `apt-get`, `dpkg-query`, `id` and `cargo` are
//! recording stand-ins on PATH, so the test changes nothing on the machine; the real `oak up`
//! path after it is `up_containerd.rs`'s first-run test.

use std::path::Path;
use std::process::Command;

fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
}

/// Runs scripts/up with stand-ins; `installed` says whether dpkg reports the packages present.
fn run_up(installed: bool, uid: u32) -> (std::process::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let record = format!("echo \"$(basename \"$0\") $*\" >> {}", calls.display());
    let status = if installed {
        "install ok installed"
    } else {
        "unknown ok not-installed"
    };
    stub(dir.path(), "dpkg-query", &format!("printf '{status}'"));
    stub(dir.path(), "apt-get", &record);
    stub(dir.path(), "sudo", &format!("{record}\nshift 0"));
    stub(dir.path(), "cargo", &record);
    stub(dir.path(), "id", &format!("echo {uid}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/up");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--data-dir", "/tmp/x"])
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    (out, calls)
}

#[test]
fn a_fresh_machine_gets_protoc_containerd_and_the_network_tools_then_oak_up() {
    let (out, calls) = run_up(false, 0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines[0], "apt-get update -qq", "{calls}");
    let install = lines[1];
    for pkg in [
        "protobuf-compiler",
        "containerd",
        "runc",
        "iptables",
        "iproute2",
    ] {
        assert!(
            install.split_whitespace().any(|w| w == pkg),
            "{pkg} not installed: {install}"
        );
    }
    // Only what running needs: none of the test-only packages.
    for test_only in [
        "mosquitto",
        "docker-registry",
        "wrk",
        "chromium",
        "prometheus",
    ] {
        assert!(
            !install.contains(test_only),
            "{test_only} installed by scripts/up"
        );
    }
    assert_eq!(
        lines[2], "cargo run --release --locked -p oak -- up --data-dir /tmp/x",
        "{calls}"
    );
}

#[test]
fn nothing_is_installed_twice() {
    let (out, calls) = run_up(true, 0);
    assert!(out.status.success());
    assert_eq!(
        calls.trim(),
        "cargo run --release --locked -p oak -- up --data-dir /tmp/x"
    );
}

#[test]
fn a_plain_user_installs_through_sudo() {
    let (out, calls) = run_up(false, 1000);
    assert!(out.status.success());
    assert!(calls.lines().all(|l| !l.starts_with("apt-get")), "{calls}");
    assert!(calls.contains("sudo apt-get update -qq"), "{calls}");
}
