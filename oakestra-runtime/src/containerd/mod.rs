//! The containerd runtime (DESIGN.md §6): containers run by the real containerd daemon, driven
//! over its gRPC socket with `containerd-client`.
//!
//! - Images are pulled client-side (containerd 1.6 has no transfer service): the manifest for
//!   this architecture and its blobs go from the registry into containerd's content store, the
//!   image record is created, and the layers are unpacked into snapshots (named by chain id) by
//!   containerd's diff service. Pulls of one image are serialised (concurrent deploys pull it
//!   once) and a present image is never pulled again.
//! - An instance is a container named by its task id (`<job>.instance.<n>`) in the namespace
//!   (`oakestra`), labelled as ours, with its [`InstanceSpec`] kept in a container extension so
//!   a restarted worker re-adopts it; its snapshot has the same key. The OCI runtime spec is
//!   built by [`spec::runtime_spec`]: command, environment, privileges, network namespace and
//!   cgroup limits (memory MB, CPU quota).
//! - stdout and stderr go to `<log_dir>/<task id>.log` through the shim's `binary://` logging,
//!   with a small `sh` + `cat` logger of ours (`LOGGER_SCRIPT`) that lives with the task; the
//!   file is rotated to `.log.1` when it passes `log_max_bytes`.
//! - Exits come from containerd's event stream (`/tasks/exit`, `/tasks/oom`); an exit of a
//!   task whose cgroup recorded an OOM kill is reported as `OOMKilled`
//!   ([`Runtime::exit_reason`]) and noted in its log.

pub mod cgroup;
pub mod reference;
pub mod registry;
pub mod spec;

mod connection;
mod events;
mod exec;
mod logs;
mod pull;
mod task;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_client::Client;
use containerd_client::services::v1::snapshots::UsageRequest;
use containerd_client::services::v1::{Container, DeleteContainerRequest, DeleteTaskRequest};
use containerd_client::tonic::{self, Code};
use containerd_client::types::v1::Status as ProcessStatus;
use tokio::sync::mpsc;

use crate::{
    ExitEvent, InstanceId, InstanceSpec, InstanceState, InstanceStats, InstanceStatus, Runtime,
    RuntimeError,
};

pub use reference::{ImageRef, PlatformSpec};
pub use registry::RegistryCredentials;
pub use spec::NetworkSetup;

use cgroup::{CgroupFs, SysFsCgroup};
use connection::{Connection, pick_snapshotter};
use pull::PulledImage;
use registry::Registry;

/// Label marking a container as managed by this runtime.
pub const LABEL_MANAGED: &str = "oakestra.io/managed";
/// Label holding the incarnation of a container.
pub const LABEL_INCARNATION: &str = "oakestra.io/incarnation";
/// Container extension holding the [`InstanceSpec`] JSON.
pub const EXTENSION_SPEC: &str = "oakestra.io/spec";
/// Reason of an exit caused by the memory limit.
pub const OOM_KILLED: &str = "OOMKilled";

pub(crate) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Settings of the containerd runtime. `Default` works with a system containerd.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// containerd namespace of our containers, images and snapshots.
    pub namespace: String,
    /// Snapshotter; `None` picks `overlayfs` when containerd loaded it, else `native`.
    pub snapshotter: Option<String>,
    /// Shim runtime.
    pub runtime: String,
    /// Where instance logs are written (`<task id>.log`).
    pub log_dir: PathBuf,
    /// A log is rotated (to `.log.1`) when it passes this size.
    pub log_max_bytes: u64,
    /// Parent cgroup (cgroupfs path) of the containers.
    pub cgroup_parent: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry host (`docker.io`, `ghcr.io`, `reg.lan:5000`).
    pub credentials: HashMap<String, RegistryCredentials>,
    /// Network of containers with no namespace from [`ContainerdRuntime::set_netns_resolver`].
    pub default_network: NetworkSetup,
    /// Architecture picked from multi-arch images; `None` is this machine's.
    pub arch: Option<String>,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "oakestra".into(),
            snapshotter: None,
            runtime: "io.containerd.runc.v2".into(),
            log_dir: PathBuf::from("/var/lib/oakestra/logs"),
            log_max_bytes: 10 << 20,
            cgroup_parent: "/oakestra".into(),
            insecure_registries: Vec::new(),
            credentials: HashMap::new(),
            default_network: NetworkSetup::Isolated,
            arch: None,
        }
    }
}

/// Gives the network namespace path an instance joins (the NetManager's), or `None` for the
/// default network.
pub type NetnsResolver = Arc<dyn Fn(&InstanceId) -> Option<String> + Send + Sync>;

/// A containerd error as text: the operation, containerd's message and the gRPC code.
pub(crate) fn rpc_error(what: &str, status: &tonic::Status) -> String {
    format!(
        "containerd {what}: {} ({:?})",
        status.message(),
        status.code()
    )
}

/// A suffix unique within this process and across restarts.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Tracked {
    id: InstanceId,
    incarnation: u64,
    oom: bool,
    exited: bool,
}

#[derive(Debug, Clone, Copy)]
struct ExitRecord {
    incarnation: u64,
    oom: bool,
}

#[derive(Default)]
struct State {
    images: HashMap<String, Arc<PulledImage>>,
    pull_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    tracked: HashMap<String, Tracked>,
    last_exits: HashMap<String, ExitRecord>,
    cpu_samples: HashMap<String, (u64, tokio::time::Instant)>,
    subscribers: Vec<mpsc::UnboundedSender<ExitEvent>>,
    netns: Option<NetnsResolver>,
}

struct Inner {
    config: ContainerdConfig,
    conn: Connection,
    registry: Registry,
    arch: String,
    next_incarnation: AtomicU64,
    pulls: AtomicU64,
    state: Mutex<State>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    cgroups: Arc<dyn CgroupFs>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

/// The containerd runtime. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ContainerdRuntime {
    inner: Arc<Inner>,
}

impl fmt::Debug for ContainerdRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerdRuntime")
            .field("config", &self.inner.config)
            .field("snapshotter", &self.inner.conn.snapshotter)
            .finish()
    }
}

pub(crate) fn backend(what: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Backend {
        what: what.into(),
        reason: reason.into(),
    }
}

impl ContainerdRuntime {
    /// Connects to containerd, picks the snapshotter and subscribes to task events. Fails with
    /// a message naming the socket when containerd is not there.
    pub async fn connect(config: ContainerdConfig) -> Result<Self, RuntimeError> {
        let socket = config.socket.clone();
        let unreachable = |reason: String| {
            backend(
                format!("connecting to containerd at {}", socket.display()),
                format!("{reason}; is containerd running (and is this the right socket)?"),
            )
        };
        let channel = tokio::time::timeout(
            Duration::from_secs(5),
            containerd_client::connect(&config.socket),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(registry::error_chain(&e)))?;
        let client = Client::from(channel);
        client
            .version()
            .version(())
            .await
            .map_err(|s| unreachable(s.message().to_string()))?;
        let snapshotter = match &config.snapshotter {
            Some(s) => s.clone(),
            None => pick_snapshotter(&client).await?,
        };
        let registry = Registry::new(
            config.insecure_registries.clone(),
            config.credentials.clone(),
        )
        .map_err(|e| backend("registry client", e))?;
        let conn = Connection {
            client,
            namespace: config.namespace.clone(),
            snapshotter,
        };
        let arch = config
            .arch
            .clone()
            .unwrap_or_else(|| registry::host_arch().to_string());
        // The container logger every task's shim runs (see `LOGGER_SCRIPT`).
        let script = config.log_dir.join(logs::LOGGER_SCRIPT_NAME);
        let written = match tokio::fs::create_dir_all(&config.log_dir).await {
            Ok(()) => tokio::fs::write(&script, logs::LOGGER_SCRIPT).await,
            Err(e) => Err(e),
        };
        written.map_err(|e| backend(format!("writing {}", script.display()), e.to_string()))?;
        let runtime = Self {
            inner: Arc::new(Inner {
                config,
                conn,
                registry,
                arch,
                next_incarnation: AtomicU64::new(unix_ms()),
                pulls: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                tasks: Mutex::new(Vec::new()),
                cgroups: Arc::new(SysFsCgroup),
            }),
        };
        // Incarnations stay above every one a previous runtime gave.
        for container in runtime.our_containers().await? {
            if let Some(n) = container
                .labels
                .get(LABEL_INCARNATION)
                .and_then(|v| v.parse::<u64>().ok())
            {
                runtime
                    .inner
                    .next_incarnation
                    .fetch_max(n + 1, Ordering::SeqCst);
            }
        }
        let events = runtime.subscribe().await?;
        let weak = Arc::downgrade(&runtime.inner);
        let event_task = tokio::spawn(events::event_loop(weak.clone(), events));
        let rotate_task = tokio::spawn(logs::rotate_loop(weak));
        let mut tasks = runtime
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        tasks.push(event_task);
        tasks.push(rotate_task);
        drop(tasks);
        Ok(runtime)
    }

    /// The configuration.
    pub fn config(&self) -> &ContainerdConfig {
        &self.inner.config
    }

    /// The snapshotter in use.
    pub fn snapshotter(&self) -> &str {
        &self.inner.conn.snapshotter
    }

    /// How many pulls from a registry this runtime did (cache hits do not count).
    pub fn pulls_performed(&self) -> u64 {
        self.inner.pulls.load(Ordering::SeqCst)
    }

    /// Sets where instances get their network namespace (the NetManager's hook).
    pub fn set_netns_resolver(&self, resolver: NetnsResolver) {
        self.state().netns = Some(resolver);
    }

    /// The log file of an instance.
    pub fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.inner.config.log_dir.join(format!("{id}.log"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> &Connection {
        &self.inner.conn
    }

    fn cgroup_path(&self, container_id: &str) -> String {
        format!(
            "{}/{container_id}",
            self.inner.config.cgroup_parent.trim_end_matches('/')
        )
    }
}

/// The spec and incarnation of one of our containers.
fn adopted(container: &Container) -> Option<(InstanceSpec, u64)> {
    if container.labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    let incarnation = container.labels.get(LABEL_INCARNATION)?.parse().ok()?;
    let spec: InstanceSpec =
        serde_json::from_slice(&container.extensions.get(EXTENSION_SPEC)?.value).ok()?;
    Some((spec, incarnation))
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn virtualizations(&self) -> Vec<String> {
        vec!["docker".into(), "containerd".into()]
    }

    async fn ensure_image(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.check_virtualization(spec)?;
        self.image(spec).await.map(|_| ())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError> {
        self.check_virtualization(spec)?;
        let cid = spec.id.to_string();
        let image = self.image(spec).await?;
        if self.get_container(&cid).await?.is_some() {
            return Err(RuntimeError::AlreadyExists(cid));
        }
        let incarnation = self.inner.next_incarnation.fetch_add(1, Ordering::SeqCst);
        if let Err(reason) = self.start_inner(spec, &image, &cid, incarnation).await {
            self.cleanup(&cid).await;
            if reason.contains("container create") && reason.contains("AlreadyExists") {
                return Err(RuntimeError::AlreadyExists(cid));
            }
            if reason.contains("snapshot prepare") {
                // The image may have been removed behind our back: forget it, pull next time.
                if let Ok((_, _, name)) = self.image_key(spec) {
                    self.state().images.remove(&name);
                }
            }
            if reason.contains("has no entrypoint") {
                return Err(RuntimeError::InvalidSpec { id: cid, reason });
            }
            return Err(RuntimeError::Start { id: cid, reason });
        }
        Ok(incarnation)
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let cid = id.to_string();
        match self.task_status(&cid).await? {
            None => {
                return if self.get_container(&cid).await?.is_some() {
                    Ok(())
                } else {
                    Err(RuntimeError::NotFound(cid))
                };
            }
            Some((ProcessStatus::Stopped, _)) => return Ok(()),
            Some(_) => {}
        }
        if !grace.is_zero() {
            self.kill(&cid, 15).await?;
            if self.wait_exit(&cid, grace).await? {
                return Ok(());
            }
            tracing::info!("{cid} did not stop within {grace:?} of SIGTERM; killing it");
        }
        self.kill(&cid, 9).await?;
        if !self.wait_exit(&cid, Duration::from_secs(10)).await? {
            return Err(backend(
                format!("stopping {cid}"),
                "the task survived SIGKILL for 10 s",
            ));
        }
        Ok(())
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let cid = id.to_string();
        if self.get_container(&cid).await?.is_none() {
            return Err(RuntimeError::NotFound(cid));
        }
        self.stop(id, Duration::ZERO).await?;
        let conn = self.conn();
        match conn
            .client
            .tasks()
            .delete(conn.request(DeleteTaskRequest {
                container_id: cid.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(backend(
                    format!("deleting task {cid}"),
                    rpc_error("task delete", &s),
                ));
            }
        }
        match conn
            .client
            .containers()
            .delete(conn.request(DeleteContainerRequest { id: cid.clone() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(backend(
                    format!("deleting container {cid}"),
                    rpc_error("container delete", &s),
                ));
            }
        }
        conn.remove_snapshot(&cid).await;
        let log = self.log(id);
        let _ = tokio::task::spawn_blocking(move || log.remove()).await;
        let mut state = self.state();
        state.tracked.remove(&cid);
        state.cpu_samples.remove(&cid);
        Ok(())
    }

    fn exit_events(&self) -> mpsc::UnboundedReceiver<ExitEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().subscribers.push(tx);
        rx
    }

    async fn stats(&self, id: &InstanceId) -> Result<InstanceStats, RuntimeError> {
        let cid = id.to_string();
        let cgroup = self.cgroup_path(&cid);
        let sample = || cgroup::usage(&*self.inner.cgroups, &cgroup);
        let Some((cpu_ns, memory_bytes)) = sample() else {
            return match self.get_container(&cid).await? {
                Some(_) => Ok(InstanceStats::default()),
                None => Err(RuntimeError::NotFound(cid)),
            };
        };
        let now = tokio::time::Instant::now();
        let previous = self.state().cpu_samples.insert(cid.clone(), (cpu_ns, now));
        let (prev_ns, prev_at, cpu_ns, now) = match previous {
            Some((ns, at)) if now > at => (ns, at, cpu_ns, now),
            _ => {
                // First look: measure over a short window.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (ns2, _) = sample().unwrap_or((cpu_ns, memory_bytes));
                let now2 = tokio::time::Instant::now();
                self.state().cpu_samples.insert(cid.clone(), (ns2, now2));
                (cpu_ns, now, ns2, now2)
            }
        };
        let elapsed_ns = now.duration_since(prev_at).as_nanos().max(1) as f64;
        let cpu_percent = cpu_ns.saturating_sub(prev_ns) as f64 / elapsed_ns * 100.0;
        let conn = self.conn();
        let disk_bytes = conn
            .client
            .snapshots()
            .usage(conn.request(UsageRequest {
                snapshotter: conn.snapshotter.clone(),
                key: cid.clone(),
            }))
            .await
            .map(|r| r.into_inner().size.max(0) as u64)
            .unwrap_or(0);
        Ok(InstanceStats {
            cpu_percent,
            memory_bytes,
            disk_bytes,
        })
    }

    async fn logs_tail(&self, id: &InstanceId, max_bytes: usize) -> Result<String, RuntimeError> {
        let log = self.log(id);
        let shown = log.path().display().to_string();
        let tail = tokio::task::spawn_blocking(move || log.tail(max_bytes))
            .await
            .map_err(|e| backend(format!("reading {shown}"), e.to_string()))?;
        match tail {
            Ok(Some(text)) => Ok(text),
            Ok(None) => {
                if self.get_container(&id.to_string()).await?.is_some() {
                    Ok(String::new())
                } else {
                    Err(RuntimeError::NotFound(id.to_string()))
                }
            }
            Err(e) => Err(backend(format!("reading {shown}"), e.to_string())),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut out = Vec::new();
        for container in self.our_containers().await? {
            let Some((spec, incarnation)) = adopted(&container) else {
                tracing::warn!(
                    "container {} carries our label but no readable spec; ignoring it",
                    container.id
                );
                continue;
            };
            let state = match self.task_status(&container.id).await? {
                Some((ProcessStatus::Stopped, code)) => InstanceState::Exited {
                    code: i32::try_from(code).unwrap_or(255),
                },
                Some(_) => InstanceState::Running,
                None => InstanceState::Exited { code: 255 },
            };
            self.state()
                .tracked
                .entry(container.id.clone())
                .or_insert_with(|| Tracked {
                    id: spec.id.clone(),
                    incarnation,
                    oom: false,
                    exited: !matches!(state, InstanceState::Running),
                });
            out.push(InstanceStatus {
                spec,
                incarnation,
                state,
            });
        }
        out.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(out)
    }

    async fn exec(
        &self,
        id: &InstanceId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        self.exec_inner(id, argv, timeout).await
    }

    async fn exit_reason(&self, id: &InstanceId, incarnation: u64) -> Option<String> {
        let record = self.state().last_exits.get(&id.to_string()).copied()?;
        (record.incarnation == incarnation && record.oom).then(|| OOM_KILLED.to_string())
    }
}
