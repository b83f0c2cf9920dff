//! Unikernels under qemu (`virtualization: unikernel`).
//!
//! * **Image**: the SLA `code` holds one `.tar.gz` URL per `arch` entry (comma-separated, same
//!   order). The URL for this worker's arch is downloaded once (concurrent starts share the
//!   download), unpacked into `<data>/images/<sha256(url)>/` and reused. The archive holds
//!   `kernel` and optionally `initrd` or `initramfs.cpio`, and `files/` / `files1/`, which
//!   each instance gets a copy of, shared with the guest over virtio-9p as `fs0` / `fs1`.
//! * **Start**: `qemu-system-<arch>` runs the kernel with `-m` = `memory` (MB, default
//!   [`UnikernelConfig::default_memory_mb`]), `-smp` = `vcpus` (at least 1), the SLA `cmd`
//!   joined by spaces as the kernel command line (`-append`), the serial console written to
//!   the instance log, a QMP socket and a pid file. KVM (`-enable-kvm -cpu host`) is used when
//!   a probe guest runs under it (see [`Accel::Auto`]); otherwise TCG.
//! * **Exit codes**: a guest that powers off makes qemu exit 0 → exit code 0. A guest reports
//!   a non-zero code n (1..=63) by writing n to I/O port 0xf4, where an `isa-debug-exit`
//!   device makes qemu exit with (n << 1) | 1; the runtime maps that back to n. See
//!   [`exit_code`] for the whole table.
//! * **Stop**: QMP `system_powerdown` (ACPI), then after the grace period QMP `quit` (the
//!   instance then reports 143, as a SIGTERMed process would), then SIGKILL (137).
//! * **Re-adoption**: qemu runs under a tiny `sh` wrapper in its own process group that
//!   records qemu's exit status in the instance directory, so qemu outlives a worker restart
//!   and a new runtime on the same data directory finds it (pid file, QMP socket, `meta.json`)
//!   and still learns its exit code.
//!
//! * **Logs**: the serial console (and qemu's stderr) in `console.log`, rotated once to
//!   `console.log.1` past [`UnikernelConfig::log_max_bytes`].
//!
//! Not done yet: networking (the NetManager's tap in the instance's namespace, Unikraft
//! `netdev.*` arguments).

mod image;
mod launch;
mod log;
mod procfs;
mod qemu;
mod qmp;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::{
    ExitEvent, InstanceId, InstanceSpec, InstanceState, InstanceStats, InstanceStatus, Runtime,
    RuntimeError,
};

pub use image::{select_url, worker_arch};
pub use qemu::{Accel, exit_code, qemu_binary_name, unikernel_available};

/// The virtualization this runtime runs.
pub const VIRTUALIZATION: &str = "unikernel";

/// Exit code reported for an instance whose qemu and wrapper vanished without a record
/// (e.g. the machine rebooted): as if killed.
const LOST_EXIT_CODE: i32 = 137;

/// Settings of a [`UnikernelRuntime`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnikernelConfig {
    /// Images, instances and QMP sockets live here (keep the path short: unix socket paths
    /// are limited to 107 bytes).
    pub data_dir: PathBuf,
    /// Directory holding `qemu-system-<arch>`; `None` searches `PATH`.
    pub qemu_dir: Option<PathBuf>,
    /// KVM, TCG, or probe.
    pub accel: Accel,
    /// Guest memory when the SLA gives none.
    pub default_memory_mb: u64,
    /// How long qemu may take to come up (pid file written, QMP answering).
    pub start_timeout: Duration,
    /// How long the KVM probe guest may take.
    pub probe_timeout: Duration,
    /// Connect timeout of image downloads.
    pub download_connect_timeout: Duration,
    /// Whole-download timeout.
    pub download_timeout: Duration,
    /// The console log is rotated past this size (one previous part is kept); 0 = unbounded.
    pub log_max_bytes: u64,
}

impl UnikernelConfig {
    /// Defaults, with everything under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            qemu_dir: None,
            accel: Accel::Auto,
            default_memory_mb: 128,
            start_timeout: Duration::from_secs(15),
            probe_timeout: Duration::from_secs(3),
            download_connect_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(600),
            log_max_bytes: 4 << 20,
        }
    }
}

/// What a running or exited instance keeps on disk, for re-adoption.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    spec: InstanceSpec,
    incarnation: u64,
    wrapper_pid: u32,
}

#[derive(Debug)]
struct Instance {
    spec: InstanceSpec,
    incarnation: u64,
    dir: PathBuf,
    qmp: PathBuf,
    state: InstanceState,
    /// Becomes true when qemu has exited.
    exited: watch::Sender<bool>,
    /// (when, CPU seconds) of the last stats call.
    cpu_sample: Option<(Instant, f64)>,
}

#[derive(Debug, Default)]
struct Inner {
    instances: HashMap<InstanceId, Instance>,
    starting: HashSet<InstanceId>,
    subscribers: Vec<mpsc::UnboundedSender<ExitEvent>>,
}

/// A unikernel's network: the instance's network namespace (qemu runs in it), the TAP device
/// there that the guest's virtio-net device uses, and what the guest is told about its address
/// on the kernel command line (e.g. the Linux `ip=` syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    /// `/run/netns/<name>`.
    pub netns: PathBuf,
    /// TAP device in that namespace.
    pub tap: String,
    /// Appended to the kernel command line.
    pub kernel_arg: String,
}

/// Gives the network of an instance, if it has one (the worker's overlay).
pub type GuestNetResolver = Arc<dyn Fn(&InstanceId) -> Option<GuestNet> + Send + Sync>;

struct Shared {
    config: UnikernelConfig,
    qemu: Option<PathBuf>,
    images: image::ImageCache,
    inner: Mutex<Inner>,
    /// Next incarnation; persisted in `<data>/next_incarnation`.
    next_incarnation: tokio::sync::Mutex<u64>,
    /// Networks of instances; without it (or without an answer) a guest has no network device.
    net: Mutex<Option<GuestNetResolver>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("qemu", &self.qemu)
            .finish_non_exhaustive()
    }
}

/// The qemu unikernel runtime. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct UnikernelRuntime {
    shared: Arc<Shared>,
}

fn backend(what: impl Into<String>, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend {
        what: what.into(),
        reason: e.to_string(),
    }
}

impl UnikernelRuntime {
    /// A runtime on `config.data_dir`. Instances a previous runtime left there are adopted:
    /// running ones are watched again, exited ones are listed with their exit code. Must be
    /// called inside a tokio runtime.
    pub fn new(config: UnikernelConfig) -> Result<Self, RuntimeError> {
        let data = &config.data_dir;
        for sub in ["images", "instances", "qmp"] {
            std::fs::create_dir_all(data.join(sub))
                .map_err(|e| backend(format!("creating {}", data.join(sub).display()), e))?;
        }
        let qemu = qemu::find_binary(&qemu::qemu_binary_name(), config.qemu_dir.as_deref());
        let mut next = std::fs::read_to_string(data.join("next_incarnation"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        let mut adopted = Vec::new();
        let entries = std::fs::read_dir(data.join("instances"))
            .map_err(|e| backend("listing unikernel instances", e))?;
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.path();
            let meta = std::fs::read(dir.join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
            match meta {
                Some(meta) => {
                    next = next.max(meta.incarnation + 1);
                    adopted.push((dir, meta));
                }
                None => {
                    // A start that never completed.
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        let images = image::ImageCache::new(
            data.join("images"),
            config.download_connect_timeout,
            config.download_timeout,
        );
        let runtime = Self {
            shared: Arc::new(Shared {
                qemu,
                images,
                inner: Mutex::new(Inner::default()),
                next_incarnation: tokio::sync::Mutex::new(next),
                net: Mutex::new(None),
                config,
            }),
        };
        for (dir, meta) in adopted {
            runtime.adopt(dir, meta);
        }
        Ok(runtime)
    }

    /// Where instances get their network from (the worker's overlay): qemu then runs in the
    /// instance's namespace with a virtio-net device on its TAP.
    pub fn set_network_resolver(&self, resolver: GuestNetResolver) {
        *self.shared.net.lock().unwrap_or_else(|p| p.into_inner()) = Some(resolver);
    }

    fn guest_net(&self, id: &InstanceId) -> Option<GuestNet> {
        let resolver = self
            .shared
            .net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        resolver(id)
    }

    /// The settings.
    pub fn config(&self) -> &UnikernelConfig {
        &self.shared.config
    }

    /// How many image archives were downloaded (cache misses) by this runtime.
    pub fn downloads(&self) -> u64 {
        self.shared.images.downloads()
    }

    /// Whether guests run under KVM (probing once per process under [`Accel::Auto`]).
    pub async fn uses_kvm(&self) -> bool {
        match &self.shared.qemu {
            Some(qemu) => {
                let c = &self.shared.config;
                qemu::use_kvm(c.accel, qemu, &c.data_dir, c.probe_timeout).await
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.shared
            .config
            .data_dir
            .join("instances")
            .join(id.to_string())
    }

    fn qmp_path(&self, id: &InstanceId) -> PathBuf {
        let hash: String = Sha256::digest(id.to_string().as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.shared
            .config
            .data_dir
            .join("qmp")
            .join(format!("{hash}.sock"))
    }

    /// Re-creates the in-memory record of an instance found on disk.
    fn adopt(&self, dir: PathBuf, meta: Meta) {
        let marker = dir.display().to_string();
        let recorded = read_exit_status(&dir);
        let state = match recorded {
            Some(status) => InstanceState::Exited {
                code: qemu::exit_code(status, dir.join("forced").exists()),
            },
            None if procfs::alive_with(meta.wrapper_pid, &marker) => InstanceState::Running,
            None => InstanceState::Exited {
                code: LOST_EXIT_CODE,
            },
        };
        let (exited, _) = watch::channel(state != InstanceState::Running);
        let id = meta.spec.id.clone();
        tracing::info!(
            "unikernel: adopted {id} (incarnation {}, {state:?})",
            meta.incarnation
        );
        self.lock().instances.insert(
            id.clone(),
            Instance {
                qmp: self.qmp_path(&id),
                spec: meta.spec,
                incarnation: meta.incarnation,
                dir: dir.clone(),
                state,
                exited,
                cpu_sample: None,
            },
        );
        if state == InstanceState::Running {
            if let Some(instance) = self.lock().instances.get(&id) {
                self.spawn_log_keeper(dir.clone(), instance.exited.subscribe());
            }
            let this = self.clone();
            tokio::spawn(async move {
                while read_exit_status(&dir).is_none()
                    && procfs::alive_with(meta.wrapper_pid, &marker)
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let status = read_exit_status(&dir).unwrap_or(LOST_EXIT_CODE);
                this.exited(&id, meta.incarnation, status);
            });
        }
    }

    /// Keeps the console log of a running instance under the size limit.
    fn spawn_log_keeper(&self, dir: PathBuf, mut exited: watch::Receiver<bool>) {
        let limit = self.shared.config.log_max_bytes;
        if limit == 0 {
            return;
        }
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = exited.wait_for(|e| *e) => return,
                }
                let dir = dir.clone();
                match tokio::task::spawn_blocking(move || log::rotate_if_needed(&dir, limit)).await
                {
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Ok(Err(e)) => tracing::warn!("unikernel: rotating a console log: {e}"),
                    _ => {}
                }
            }
        });
    }

    /// Records that qemu ended with `status` and tells the subscribers, if the instance is
    /// still that incarnation and running.
    fn exited(&self, id: &InstanceId, incarnation: u64, status: i32) {
        let mut inner = self.lock();
        let Some(instance) = inner.instances.get_mut(id) else {
            return;
        };
        if instance.incarnation != incarnation || instance.state != InstanceState::Running {
            return;
        }
        let code = qemu::exit_code(status, instance.dir.join("forced").exists());
        tracing::info!("unikernel: {id} exited with code {code} (qemu status {status})");
        instance.state = InstanceState::Exited { code };
        instance.exited.send_replace(true);
        let event = ExitEvent {
            id: id.clone(),
            incarnation,
            exit_code: code,
        };
        inner
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    async fn allocate_incarnation(&self) -> Result<u64, RuntimeError> {
        let mut next = self.shared.next_incarnation.lock().await;
        let incarnation = *next;
        *next += 1;
        let path = self.shared.config.data_dir.join("next_incarnation");
        tokio::fs::write(&path, next.to_string())
            .await
            .map_err(|e| backend(format!("writing {}", path.display()), e))?;
        Ok(incarnation)
    }

    fn check_virtualization(spec: &InstanceSpec) -> Result<(), RuntimeError> {
        if spec.virtualization == VIRTUALIZATION {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported {
                virtualization: spec.virtualization.clone(),
                runtime: "unikernel",
                supported: VIRTUALIZATION.into(),
            })
        }
    }

    async fn image_of(&self, spec: &InstanceSpec) -> Result<image::Image, RuntimeError> {
        Self::check_virtualization(spec)?;
        let url = image::select_url(&spec.image, &spec.arch, image::worker_arch())?;
        self.shared.images.get(&url).await
    }

    /// Waits until the instance's qemu exited, at most `timeout`; true when it did.
    async fn wait_exit(mut rx: watch::Receiver<bool>, timeout: Duration) -> bool {
        // A dropped sender means the instance record is gone: treat as exited.
        tokio::time::timeout(timeout, rx.wait_for(|exited| *exited))
            .await
            .is_ok()
    }
}

/// SIGKILLs the process group `pgid` (the wrapper and its qemu, which `start` put in a group
/// of their own); killing the wrapper alone would leave qemu running.
async fn kill_group(pgid: u32) {
    if pgid == 0 {
        return;
    }
    // The shell's builtin kill: no dependency on procps.
    let _ = tokio::process::Command::new("/bin/sh")
        .args(["-c", &format!("kill -KILL -- -{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// qemu's exit status as the wrapper recorded it.
fn read_exit_status(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("exit_status"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[async_trait]
impl Runtime for UnikernelRuntime {
    fn name(&self) -> &'static str {
        "unikernel"
    }

    fn virtualizations(&self) -> Vec<String> {
        if self.shared.qemu.is_some() {
            vec![VIRTUALIZATION.into()]
        } else {
            Vec::new()
        }
    }

    async fn ensure_image(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.image_of(spec).await.map(|_| ())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError> {
        Self::check_virtualization(spec)?;
        {
            let mut inner = self.lock();
            if inner.instances.contains_key(&spec.id) || !inner.starting.insert(spec.id.clone()) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
        }
        let result = self.launch(spec).await;
        self.lock().starting.remove(&spec.id);
        result
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let (qmp, dir, rx, running) = {
            let inner = self.lock();
            let instance = inner
                .instances
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            (
                instance.qmp.clone(),
                instance.dir.clone(),
                instance.exited.subscribe(),
                instance.state == InstanceState::Running,
            )
        };
        if !running {
            return Ok(());
        }
        let qmp_timeout = Duration::from_secs(2);
        if !grace.is_zero() {
            if let Err(e) = qmp::execute(&qmp, "system_powerdown", qmp_timeout).await {
                tracing::debug!("unikernel: {id}: {e}");
            }
            if Self::wait_exit(rx.clone(), grace).await {
                return Ok(());
            }
        }
        // The guest did not power off in time: qemu is told to quit, and the exit is
        // reported as a termination (143), not as the guest's own 0.
        let _ = tokio::fs::write(dir.join("forced"), b"").await;
        if let Err(e) = qmp::execute(&qmp, "quit", qmp_timeout).await {
            tracing::debug!("unikernel: {id}: {e}");
        }
        if Self::wait_exit(rx.clone(), Duration::from_secs(5)).await {
            return Ok(());
        }
        let marker = dir.display().to_string();
        if let Some(pid) = procfs::read_pid(&dir.join("qemu.pid"))
            && procfs::alive_with(pid, &marker)
        {
            tracing::warn!("unikernel: {id}: qemu {pid} ignored quit; killing it");
            let _ = tokio::process::Command::new("/bin/sh")
                .args(["-c", &format!("kill -KILL {pid}")])
                .status()
                .await;
        }
        if Self::wait_exit(rx, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(backend(
                format!("stopping {id}"),
                "qemu did not exit after QMP quit and SIGKILL",
            ))
        }
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.stop(id, Duration::ZERO).await?;
        let instance = self.lock().instances.remove(id);
        if let Some(instance) = instance {
            let _ = tokio::fs::remove_file(&instance.qmp).await;
            tokio::fs::remove_dir_all(&instance.dir)
                .await
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| backend(format!("removing {}", instance.dir.display()), e))?;
        }
        Ok(())
    }

    fn exit_events(&self) -> mpsc::UnboundedReceiver<ExitEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    async fn stats(&self, id: &InstanceId) -> Result<InstanceStats, RuntimeError> {
        let (dir, running) = {
            let inner = self.lock();
            let instance = inner
                .instances
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            (
                instance.dir.clone(),
                instance.state == InstanceState::Running,
            )
        };
        let disk_bytes = log::size(&dir);
        let mut stats = InstanceStats {
            disk_bytes,
            ..InstanceStats::default()
        };
        if !running {
            return Ok(stats);
        }
        let marker = dir.display().to_string();
        let Some(pid) =
            procfs::read_pid(&dir.join("qemu.pid")).filter(|&p| procfs::alive_with(p, &marker))
        else {
            return Ok(stats);
        };
        stats.memory_bytes = procfs::rss_bytes(pid).unwrap_or(0);
        if let Some((cpu, age)) = procfs::cpu_times(pid) {
            let now = Instant::now();
            let mut inner = self.lock();
            if let Some(instance) = inner.instances.get_mut(id) {
                stats.cpu_percent = match instance.cpu_sample {
                    Some((at, before)) if now > at => {
                        (cpu - before).max(0.0) / (now - at).as_secs_f64() * 100.0
                    }
                    _ if age > 0.0 => cpu / age * 100.0,
                    _ => 0.0,
                };
                instance.cpu_sample = Some((now, cpu));
            }
        }
        Ok(stats)
    }

    async fn logs_tail(&self, id: &InstanceId, max_bytes: usize) -> Result<String, RuntimeError> {
        let dir = self
            .lock()
            .instances
            .get(id)
            .map(|i| i.dir.clone())
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        tokio::task::spawn_blocking(move || log::tail(&dir, max_bytes))
            .await
            .map_err(|e| backend(format!("reading the log of {id}"), e))?
            .map_err(|e| backend(format!("reading the log of {id}"), e))
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut list: Vec<InstanceStatus> = self
            .lock()
            .instances
            .values()
            .map(|i| InstanceStatus {
                spec: i.spec.clone(),
                incarnation: i.incarnation,
                state: i.state,
            })
            .collect();
        list.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(list)
    }
}
