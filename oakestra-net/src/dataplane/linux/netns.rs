//! Named network namespaces, the way `ip netns` keeps them: a file under `/run/netns` with the
//! namespace bind-mounted on it, so it lives without a process in it and containerd (or
//! `ip netns exec`) can join it by path.
//!
//! A namespace is created by a short-lived thread that unshares its own network namespace and
//! bind-mounts it; code runs inside one on a fresh thread that joins it with `setns` and exits
//! afterwards, so no pooled thread (tokio's) ever changes namespace.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where named namespaces live (iproute2's directory).
pub const NETNS_DIR: &str = "/run/netns";

/// Path of namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Where files for the processes of a namespace live, by iproute2's convention: `ip netns
/// exec <name>` bind-mounts `/etc/netns/<name>/resolv.conf` over `/etc/resolv.conf`, and the
/// worker's container runtime does the same for a container that joins the namespace.
pub const ETC_NETNS_DIR: &str = "/etc/netns";

/// `/etc/netns/<name>`.
pub fn etc_dir(name: &str) -> PathBuf {
    Path::new(ETC_NETNS_DIR).join(name)
}

/// Writes `/etc/netns/<name>/resolv.conf` (atomically: readers see the old or the new file).
/// [`delete`] removes it with the namespace.
pub fn write_resolv_conf(name: &str, contents: &str) -> io::Result<PathBuf> {
    let dir = etc_dir(name);
    fs::create_dir_all(&dir)?;
    let path = dir.join("resolv.conf");
    let tmp = dir.join(".resolv.conf.tmp");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Whether something is mounted on `path` (reads `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    let wanted = path.to_string_lossy();
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == wanted)))
}

/// Creates namespace `name` unless it exists. Returns its path.
pub fn create(name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(NETNS_DIR)?;
    let path = path_of(name);
    if path.exists() && is_mounted(&path)? {
        return Ok(path);
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io_err)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io_err)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Removes namespace `name` (unmounts and deletes its file, and its `/etc/netns/<name>`
/// files when it lives in [`NETNS_DIR`]). Missing is fine. The kernel frees the namespace,
/// and the interfaces in it, once nothing else holds it.
pub fn delete(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(io_err(e)),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && parent == Path::new(NETNS_DIR)
    {
        match fs::remove_dir_all(Path::new(ETC_NETNS_DIR).join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Names of the namespaces under [`NETNS_DIR`] that start with `prefix`.
pub fn list(prefix: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `f` on a fresh thread inside the namespace at `path` and returns its result. The thread
/// ends afterwards, so the namespace switch never leaks.
pub async fn run_in<R, F>(path: &Path, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = fs::File::open(path)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("oakestra-netns".into())
        .spawn(move || {
            let result = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(io_err)
                .map(|()| f());
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Runs the future made by `f` on a current-thread runtime inside the namespace at `path` (for
/// netlink connections that must be opened there).
pub async fn run_async_in<R, F, Fut>(path: &Path, f: F) -> io::Result<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R>,
    R: Send + 'static,
{
    run_in(path, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| io::Error::other(format!("runtime in namespace: {e}")))?;
        Ok(runtime.block_on(f()))
    })
    .await?
}
