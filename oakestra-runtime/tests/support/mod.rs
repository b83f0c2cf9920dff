//! Fixtures of the unikernel tests and benchmark: the test image of
//! `scripts/fixtures/unikernel-image.sh` (a Debian kernel and a busybox initramfs), served over
//! HTTP on loopback, instance specs, log waits and a guard that kills leftover guests.
// Waits on real processes on the real clock: std's Instant is right here (the cluster's and
// the node's clippy.toml ban it for code under tokio's paused clock).
#![allow(clippy::disallowed_types)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oakestra_runtime::unikernel::{UnikernelRuntime, unikernel_available};
use oakestra_runtime::{InstanceId, InstanceSpec, Runtime};

pub const MARKER: &str = "OAK-UNIKERNEL-READY";

pub fn fixture() -> Vec<u8> {
    let cache = std::env::var_os("OAKESTRA_FIXTURE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/oakestra-test/cache"));
    let path = cache.join("test-unikernel.tar.gz");
    assert!(
        unikernel_available(),
        "qemu-system-{} is not installed: run scripts/setup",
        std::env::consts::ARCH
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the unikernel test image {} is missing ({e}): run scripts/setup \
             (it runs scripts/fixtures/unikernel-image.sh)",
            path.display()
        )
    })
}

/// A tiny HTTP server on loopback: every GET gets `body` after `delay`; counts requests.
pub struct Server {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

pub fn serve(body: Vec<u8>, delay: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.tar.gz", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (body, counter) = (body.clone(), counter.clone());
            std::thread::spawn(move || answer(stream, &body, &counter, delay));
        }
    });
    Server { url, hits }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test server runs on its own std threads, not on the tokio runtime"
)]
fn answer(mut stream: TcpStream, body: &[u8], counter: &AtomicUsize, delay: Duration) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    counter.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(delay);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Kills every process whose command line names the test's data directory when dropped, so
/// a failing test leaves no guest behind (guests outlive their runtime by design).
pub struct KillGuests(pub PathBuf);

impl Drop for KillGuests {
    fn drop(&mut self) {
        let marker = self.0.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let pids: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains(&marker))
            })
            .collect();
        if !pids.is_empty() {
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", &format!("kill -KILL {}", pids.join(" "))])
                .status();
        }
    }
}

pub fn spec(name: &str, url: &str, cmd: &[&str]) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(format!("uk.test.{name}.test"), 0),
        image: url.to_owned(),
        virtualization: "unikernel".into(),
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![],
        ports: vec![],
        memory_limit_mb: 128,
        cpu_limit: 1.0,
        storage_mb: 0,
        one_shot: false,
        privileged: false,
        arch: vec!["amd64".into()],
        platform: None,
    }
}

pub async fn wait_for_log(rt: &UnikernelRuntime, id: &InstanceId, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let log = rt.logs_tail(id, 64 * 1024).await.unwrap();
        if log.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log of {id} within {within:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
