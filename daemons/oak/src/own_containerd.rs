//! `oak up`'s own containerd. When no containerd answers on the configured socket and a
//! `containerd` binary is installed, `oak up` starts one with its config, state and socket under
//! the data directory (as K3s brings its own), restarts it if it dies, and stops it on exit.
//! Containers keep running across that stop (their shims outlive containerd) and the worker
//! adopts them again at the next `oak up`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 100;
/// How long a (re)started containerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between restarts of a containerd that keeps dying.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// What is missing for real containers, with what to do about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Missing {
    /// Not root.
    #[error(
        "real containers need root (containerd, cgroups, network namespaces and iptables): run \
         `sudo oak up`, or `oak up --runtime fake` to run the control plane alone (instances are \
         scheduled and reported but run no code)"
    )]
    Root,
    /// A binary is not installed.
    #[error(
        "no containerd answers on {socket} and `{binary}` is not installed: install containerd \
         with `sudo apt install containerd runc` (the README's `scripts/up` does it for you), \
         point --containerd-socket at a running containerd, or run `oak up --runtime fake`"
    )]
    Binary {
        /// `containerd` or `runc`.
        binary: &'static str,
        /// The socket that did not answer.
        socket: String,
    },
}

/// Where our containerd keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Config, root, state and log.
    pub dir: PathBuf,
    /// Its gRPC socket.
    pub socket: PathBuf,
}

impl Layout {
    /// Everything under `<data>/containerd`; the socket too unless that path is too long for
    /// a Unix socket, then under `/run/oakestra/containerd-<hash of the data dir>`.
    pub fn under(data: &Path) -> Layout {
        let dir = data.join("containerd");
        let socket = dir.join("containerd.sock");
        let socket = if socket.as_os_str().len() <= MAX_SOCKET_PATH {
            socket
        } else {
            let hash = data
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            PathBuf::from(format!("/run/oakestra/containerd-{:08x}", hash as u32))
                .join("containerd.sock")
        };
        Layout { dir, socket }
    }

    /// containerd's configuration: its own root, state and sockets; only the plugins the
    /// worker uses (the CRI plugin would want CNI and more).
    pub fn config_toml(&self) -> String {
        let dir = self.dir.display();
        let sock = self.socket.display();
        format!(
            "# Written by `oak up` at every start: its own containerd, apart from any system one.\n\
             version = 2\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             root = \"{dir}/root\"\n\
             state = \"{dir}/state\"\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{sock}.debug\"\n\
             [metrics]\n  address = \"\"\n"
        )
    }
}

/// Whether something accepts connections on `socket`.
pub async fn answers(socket: &Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}

/// `name` on `PATH` (and in the sbin directories, which a plain user's PATH may lack).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Checks what running our own containerd needs, in the order a user fixes it (`find` looks a
/// binary up, as [`find_binary`]).
pub fn check_prerequisites(
    is_root: bool,
    socket: &Path,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf, Missing> {
    let missing = |binary| Missing::Binary {
        binary,
        socket: socket.display().to_string(),
    };
    let containerd = find("containerd").ok_or_else(|| missing("containerd"))?;
    find("runc").ok_or_else(|| missing("runc"))?;
    if !is_root {
        return Err(Missing::Root);
    }
    Ok(containerd)
}

/// A containerd started and watched by `oak up`.
#[derive(Debug)]
pub struct OwnContainerd {
    /// Its socket.
    pub socket: PathBuf,
    stop: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl OwnContainerd {
    /// Starts containerd with `layout` and waits until it answers; then keeps it running.
    pub async fn start(binary: PathBuf, layout: Layout) -> Result<OwnContainerd> {
        for dir in [
            layout.dir.clone(),
            layout
                .socket
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let config = layout.dir.join("config.toml");
        std::fs::write(&config, layout.config_toml())
            .with_context(|| format!("writing {}", config.display()))?;
        let child = spawn(&binary, &layout).await?;
        let (stop, stopped) = watch::channel(false);
        let socket = layout.socket.clone();
        let supervisor = tokio::spawn(supervise(binary, layout, child, stopped));
        Ok(OwnContainerd {
            socket,
            stop,
            supervisor,
        })
    }

    /// Stops containerd (SIGTERM, then SIGKILL after a few seconds). Running containers stay.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

/// Starts containerd and waits until its socket answers.
async fn spawn(binary: &Path, layout: &Layout) -> Result<Child> {
    // A socket file left by a containerd that was killed would make the new one fail.
    let _ = std::fs::remove_file(&layout.socket);
    let log_path = layout.dir.join("containerd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(layout.dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in the terminal reaches `oak up`, which stops the
        // workers first and containerd last.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while !answers(&layout.socket).await {
        if let Some(status) = child.try_wait()? {
            bail!(
                "containerd exited ({status}) before answering on {}; its log {} ends with:\n{}",
                layout.socket.display(),
                log_path.display(),
                tail(&log_path, 15)
            );
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "containerd did not answer on {} within {START_TIMEOUT:?}; see {}",
                layout.socket.display(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(socket = %layout.socket.display(), pid = child.id(), "own containerd running");
    Ok(child)
}

/// Resolves once `stop` holds `true` (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Restarts containerd whenever it exits, until told to stop. The pause before a restart
/// doubles (up to half a minute) while containerd keeps dying within a minute of its start.
async fn supervise(
    binary: PathBuf,
    layout: Layout,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_secs(1);
    let mut started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop_requested(&mut stop) => {
                terminate(&mut child).await;
                return;
            }
            status = child.wait() => {
                if started.elapsed() > Duration::from_secs(60) {
                    delay = Duration::from_secs(1);
                }
                tracing::warn!(
                    "containerd exited ({}); restarting it in {delay:?} (log: {})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    layout.dir.join("containerd.log").display()
                );
            }
        }
        loop {
            tokio::select! {
                _ = stop_requested(&mut stop) => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
            match spawn(&binary, &layout).await {
                Ok(new) => {
                    child = new;
                    started = tokio::time::Instant::now();
                    break;
                }
                Err(e) => tracing::error!("restarting containerd: {e:#}; next try in {delay:?}"),
            }
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited after five seconds.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// The last `n` lines of a file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_live_under_the_data_dir_and_long_socket_paths_move_to_run() {
        let short = Layout::under(Path::new("/var/lib/oakestra"));
        assert_eq!(short.dir, Path::new("/var/lib/oakestra/containerd"));
        assert_eq!(
            short.socket,
            Path::new("/var/lib/oakestra/containerd/containerd.sock")
        );
        let deep = PathBuf::from(format!("/home/{}/oakestra", "x".repeat(120)));
        let long = Layout::under(&deep);
        assert_eq!(long.dir, deep.join("containerd"));
        assert!(long.socket.starts_with("/run/oakestra/"));
        assert!(long.socket.as_os_str().len() <= MAX_SOCKET_PATH);
        assert_eq!(
            long,
            Layout::under(&deep),
            "the same data dir, the same socket"
        );
        let config = short.config_toml();
        assert!(config.contains("root = \"/var/lib/oakestra/containerd/root\""));
        assert!(config.contains("address = \"/var/lib/oakestra/containerd/containerd.sock\""));
        assert!(config.contains("io.containerd.grpc.v1.cri"));
    }

    #[test]
    fn missing_pieces_are_named_with_what_to_do() {
        let socket = Path::new("/run/containerd/containerd.sock");
        let installed = |name: &str| Some(PathBuf::from("/usr/bin").join(name));
        let without = |gone: &'static str| {
            move |name: &str| (name != gone).then(|| PathBuf::from("/usr/bin").join(name))
        };
        assert_eq!(
            check_prerequisites(true, socket, installed),
            Ok(PathBuf::from("/usr/bin/containerd"))
        );
        assert_eq!(
            check_prerequisites(false, socket, installed),
            Err(Missing::Root)
        );
        for gone in ["containerd", "runc"] {
            match check_prerequisites(false, socket, without(gone)) {
                Err(Missing::Binary { binary, .. }) => assert_eq!(binary, gone),
                other => panic!("{gone} missing: {other:?}"),
            }
        }
        let text = check_prerequisites(true, socket, without("containerd"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("apt install containerd runc"), "{text}");
        assert!(text.contains("--runtime fake"), "{text}");
        assert!(text.contains("/run/containerd/containerd.sock"), "{text}");
        assert!(Missing::Root.to_string().contains("sudo oak up"));
    }
}
