//! Starts a throwaway `nx-27017` (a MongoDB-wire-compatible server backed by SQLite) on a free
//! loopback port with its data in a temp dir, and kills it when dropped.
// Waits on real processes on the real clock: std's Instant is right here (the cluster's and
// the node's clippy.toml ban it for code under tokio's paused clock).
#![allow(clippy::disallowed_types)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/setup installs the server.
const DEFAULT_NX: &str = "/opt/oakestra-test/venv/bin/nx-27017";

/// A running nx-27017.
pub struct NxServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NxServer {
    /// The binary: `$OAKESTRA_NX_27017` or the venv of scripts/setup. Panics (fails the test)
    /// with instructions when it is missing: these tests are never skipped silently.
    pub fn binary() -> PathBuf {
        let path = std::env::var_os("OAKESTRA_NX_27017")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_NX));
        assert!(
            path.is_file(),
            "the MongoDB-wire test server nx-27017 is not installed at {}: run scripts/setup \
             (it installs it into /opt/oakestra-test/venv), or set OAKESTRA_NX_27017 to its path",
            path.display()
        );
        path
    }

    /// Starts a fresh server and waits until it accepts connections.
    pub async fn start() -> Self {
        let bin = Self::binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.path().join("nx.log");
        let child = Command::new(&bin)
            // --data-dir keeps one SQLite file per logical database; with --db all databases
            // would share one file.
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["-p", &port.to_string(), "--host", "127.0.0.1"])
            .arg("--log-file")
            .arg(&log)
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "nx-27017 exited with {status} before accepting connections:\n{}",
                    server.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nx-27017 did not listen on 127.0.0.1:{port} within 30 s:\n{}",
                server.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }

    fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("stderr:\n{}\nlog:\n{}", read("stderr"), read("nx.log"))
    }
}

impl Drop for NxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
