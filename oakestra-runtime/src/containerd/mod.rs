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

pub mod reference;
pub mod registry;
pub mod spec;

mod pull;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_client::Client;
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, UsageRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest,
    GetContainerRequest, GetImageRequest, GetRequest, KillRequest, ListContainersRequest,
    PluginsRequest, PublishRequest, ReadContentRequest, StartRequest, SubscribeRequest,
    WaitRequest,
};
use containerd_client::tonic::{self, Code};
use containerd_client::types::v1::Status as ProcessStatus;
use prost::Message;
use tokio::sync::mpsc;

use crate::{
    ExitEvent, InstanceId, InstanceSpec, InstanceState, InstanceStats, InstanceStatus, Runtime,
    RuntimeError,
};

pub use reference::{ImageRef, PlatformSpec};
pub use registry::RegistryCredentials;
pub use spec::NetworkSetup;

use pull::{PulledImage, chain_ids};
use registry::Registry;
use spec::ImageConfig;

/// Label marking a container as managed by this runtime.
pub const LABEL_MANAGED: &str = "oakestra.io/managed";
/// Label holding the incarnation of a container.
pub const LABEL_INCARNATION: &str = "oakestra.io/incarnation";
/// Container extension holding the [`InstanceSpec`] JSON.
pub const EXTENSION_SPEC: &str = "oakestra.io/spec";
/// Reason of an exit caused by the memory limit.
pub const OOM_KILLED: &str = "OOMKilled";

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

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

/// A connection to containerd in one namespace with one snapshotter.
pub(crate) struct Connection {
    client: Client,
    namespace: String,
    snapshotter: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("namespace", &self.namespace)
            .field("snapshotter", &self.snapshotter)
            .finish()
    }
}

impl Connection {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(ns) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", ns);
        }
        request
    }

    fn leased<T>(&self, message: T, lease: &str) -> tonic::Request<T> {
        let mut request = self.request(message);
        if let Ok(lease) = lease.parse() {
            request.metadata_mut().insert("containerd-lease", lease);
        }
        request
    }

    /// A lease that keeps what a pull writes from the garbage collector until the image record
    /// references it.
    async fn create_lease(&self) -> Result<String, String> {
        let id = format!("oakestra-pull-{}", unique_suffix());
        self.client
            .leases()
            .create(self.request(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| rpc_error("lease create", &s))?;
        Ok(id)
    }

    async fn delete_lease(&self, id: &str) {
        if let Err(s) = self
            .client
            .leases()
            .delete(self.request(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            tracing::warn!("containerd: deleting lease {id}: {}", s.message());
        }
    }

    async fn read_content(&self, digest: &str) -> Result<Vec<u8>, tonic::Status> {
        let mut stream = self
            .client
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    /// The image `name` as stored, if it is complete (record, manifest, config, snapshots).
    async fn stored_image(&self, name: &str) -> Result<Option<PulledImage>, String> {
        let image = match self
            .client
            .images()
            .get(self.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("image get", &s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let manifest = match self.read_content(&target.digest).await {
            Ok(bytes) => bytes,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("content read", &s)),
        };
        let Ok(manifest) = serde_json::from_slice::<registry::Manifest>(&manifest) else {
            return Ok(None);
        };
        let config = match self.read_content(&manifest.config.digest).await {
            Ok(bytes) => bytes,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("content read", &s)),
        };
        let Ok(config) = serde_json::from_slice::<ImageConfig>(&config) else {
            return Ok(None);
        };
        let Some(top_chain_id) = chain_ids(&config.rootfs.diff_ids).pop() else {
            return Ok(None);
        };
        if !self.has_snapshot(&top_chain_id).await? {
            return Ok(None);
        }
        Ok(Some(PulledImage {
            config,
            top_chain_id,
        }))
    }
}

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

fn backend(what: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
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
        let script = config.log_dir.join(LOGGER_SCRIPT_NAME);
        let written = match tokio::fs::create_dir_all(&config.log_dir).await {
            Ok(()) => tokio::fs::write(&script, LOGGER_SCRIPT).await,
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
        let event_task = tokio::spawn(event_loop(weak.clone(), events));
        let rotate_task = tokio::spawn(rotate_loop(weak));
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

    /// Subscribes to our task events. containerd sends the response headers of a subscription
    /// only with its first event, so marker events are published until the stream is open.
    async fn subscribe(
        &self,
    ) -> Result<tonic::Streaming<containerd_client::types::Envelope>, RuntimeError> {
        let conn = self.conn();
        let mut events = conn.client.events();
        let subscription = events.subscribe(SubscribeRequest {
            filters: event_filters(&self.inner.config.namespace),
        });
        tokio::pin!(subscription);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            let mut publisher = conn.client.events();
            let publish = publisher.publish(conn.request(PublishRequest {
                topic: SUBSCRIBED_TOPIC.into(),
                event: Some(containerd_client::to_any(
                    &containerd_client::events::TaskOom {
                        container_id: String::new(),
                    },
                )),
            }));
            let _ = publish.await;
            tokio::select! {
                result = &mut subscription => {
                    break result
                        .map_err(|s| backend("subscribing to containerd events", rpc_error("subscribe", &s)))?
                        .into_inner();
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(backend(
                    "subscribing to containerd events",
                    "containerd did not open the event stream within 10 s",
                ));
            }
        };
        Ok(stream)
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

    /// The shim's log URI for a task logging to `log`: our logger script (written when the
    /// runtime starts), run by `/bin/sh` (`binary:///bin/sh?<script>=<log>`, which the shim
    /// runs as `sh <script> <log>`).
    fn logger_uri(&self, log: &Path) -> String {
        let script = self.inner.config.log_dir.join(LOGGER_SCRIPT_NAME);
        format!(
            "binary:///bin/sh?{}={}",
            query_escape(&script),
            query_escape(log)
        )
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

    async fn our_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        let conn = self.conn();
        conn.client
            .containers()
            .list(conn.request(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_MANAGED}\"==true")],
            }))
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| backend("listing containers", rpc_error("container list", &s)))
    }

    async fn get_container(&self, id: &str) -> Result<Option<Container>, RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .containers()
            .get(conn.request(GetContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(backend(
                format!("getting container {id}"),
                rpc_error("container get", &s),
            )),
        }
    }

    /// The task's status and exit code, `None` when there is no task.
    async fn task_status(&self, id: &str) -> Result<Option<(ProcessStatus, u32)>, RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .tasks()
            .get(conn.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| {
                (
                    ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown),
                    p.exit_status,
                )
            })),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(backend(
                format!("getting task {id}"),
                rpc_error("task get", &s),
            )),
        }
    }

    /// Where the image of `spec` is recorded and cached, and for which platform it is pulled:
    /// the reference for this worker's platform; `<reference>#<platform>` for another one
    /// asked by the SLA's `platform`, so both can be held side by side.
    fn image_key(&self, spec: &InstanceSpec) -> Result<(ImageRef, PlatformSpec, String), String> {
        let image = ImageRef::parse(&spec.image)?;
        let native = PlatformSpec::linux(&self.inner.arch);
        let platform = match spec.platform.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => PlatformSpec::parse(p)?,
            _ => native.clone(),
        };
        let name = if platform == native {
            image.to_string()
        } else {
            format!("{image}#{platform}")
        };
        Ok((image, platform, name))
    }

    /// The image of `spec`, pulled when missing; one pull per image at a time.
    async fn image(&self, spec: &InstanceSpec) -> Result<Arc<PulledImage>, RuntimeError> {
        let image_err = |reason: String| RuntimeError::Image {
            image: spec.image.clone(),
            reason,
        };
        let (image, platform, name) = self.image_key(spec).map_err(image_err)?;
        let lock = {
            let mut state = self.state();
            if let Some(found) = state.images.get(&name) {
                return Ok(found.clone());
            }
            state.pull_locks.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(found) = self.state().images.get(&name) {
            return Ok(found.clone());
        }
        let fetched = match self.conn().stored_image(&name).await {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => {
                self.inner.pulls.fetch_add(1, Ordering::SeqCst);
                let started = tokio::time::Instant::now();
                let pulled = self
                    .conn()
                    .pull(&self.inner.registry, &image, &platform, &name)
                    .await;
                if pulled.is_ok() {
                    tracing::info!("pulled {name} in {:?}", started.elapsed());
                }
                pulled
            }
            Err(e) => Err(e),
        };
        let mut state = self.state();
        state.pull_locks.remove(&name);
        let pulled = Arc::new(fetched.map_err(image_err)?);
        state.images.insert(name, pulled.clone());
        Ok(pulled)
    }

    fn check_virtualization(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        if self.virtualizations().contains(&spec.virtualization) {
            return Ok(());
        }
        Err(RuntimeError::Unsupported {
            virtualization: spec.virtualization.clone(),
            runtime: "containerd",
            supported: self.virtualizations().join(", "),
        })
    }

    /// Removes what a failed start left behind.
    async fn cleanup(&self, id: &str) {
        let conn = self.conn();
        let _ = conn
            .client
            .tasks()
            .kill(conn.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await;
        let _ = conn
            .client
            .tasks()
            .delete(conn.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        let _ = conn
            .client
            .containers()
            .delete(conn.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        conn.remove_snapshot(id).await;
        self.state().tracked.remove(id);
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .tasks()
            .kill(conn.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: signal == 9,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(backend(
                format!("signalling {id}"),
                rpc_error("task kill", &s),
            )),
        }
    }

    /// Waits until the task exited, at most `limit`; true when it did.
    async fn wait_exit(&self, id: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let conn = self.conn();
        let mut tasks = conn.client.tasks();
        let wait = tasks.wait(conn.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(limit, wait).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(backend(
                format!("waiting for {id}"),
                rpc_error("task wait", &s),
            )),
        }
    }

    fn broadcast(&self, event: ExitEvent) {
        self.state()
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Records and announces the exit of container `cid` (once per incarnation).
    async fn handle_exit(&self, cid: &str, exit_status: u32) {
        let tracked = self.state().tracked.get(cid).cloned();
        let tracked = match tracked {
            Some(t) if t.exited => return,
            Some(t) => t,
            None => match self.get_container(cid).await {
                Ok(Some(c)) => match adopted(&c) {
                    Some((spec, incarnation)) => Tracked {
                        id: spec.id,
                        incarnation,
                        oom: false,
                        exited: false,
                    },
                    None => return,
                },
                _ => return,
            },
        };
        let code = i32::try_from(exit_status).unwrap_or(255);
        let oom = tracked.oom || (code == 137 && cgroup_oom_killed(&self.cgroup_path(cid)));
        {
            let mut state = self.state();
            let entry = state
                .tracked
                .entry(cid.to_string())
                .or_insert_with(|| tracked.clone());
            entry.exited = true;
            state.last_exits.insert(
                cid.to_string(),
                ExitRecord {
                    incarnation: tracked.incarnation,
                    oom,
                },
            );
        }
        if oom {
            let note = format!(
                "[oakestra] {OOM_KILLED}: the task exceeded its memory limit and was killed (exit code {code})\n"
            );
            append_log(&self.log_path(&tracked.id), &note).await;
        }
        tracing::info!(
            "{cid} exited with {code}{}",
            if oom { " (OOM)" } else { "" }
        );
        self.broadcast(ExitEvent {
            id: tracked.id,
            incarnation: tracked.incarnation,
            exit_code: code,
        });
    }

    /// After an event-stream gap: exits of tracked tasks that happened meanwhile.
    async fn reconcile(&self) {
        let running: Vec<String> = self
            .state()
            .tracked
            .iter()
            .filter(|(_, t)| !t.exited)
            .map(|(k, _)| k.clone())
            .collect();
        for cid in running {
            match self.task_status(&cid).await {
                Ok(Some((ProcessStatus::Stopped, code))) => self.handle_exit(&cid, code).await,
                Ok(None) => self.handle_exit(&cid, 255).await,
                _ => {}
            }
        }
    }

    async fn start_inner(
        &self,
        spec: &InstanceSpec,
        image: &PulledImage,
        cid: &str,
        incarnation: u64,
    ) -> Result<(), String> {
        let conn = self.conn();
        let network = {
            let state = self.state();
            state
                .netns
                .as_ref()
                .and_then(|resolve| resolve(&spec.id))
                .map(NetworkSetup::Join)
        }
        .unwrap_or_else(|| self.inner.config.default_network.clone());
        let oci = spec::runtime_spec(spec, &image.config, &network, &self.cgroup_path(cid))?;
        let oci = serde_json::to_vec(&oci).map_err(|e| format!("encoding the OCI spec: {e}"))?;
        let spec_json =
            serde_json::to_vec(spec).map_err(|e| format!("encoding the instance spec: {e}"))?;

        // The container record first: it references the snapshot key, so containerd's
        // garbage collector (run after any delete) cannot take the snapshot in between.
        let mut labels = HashMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_INCARNATION.to_string(), incarnation.to_string());
        let mut extensions = HashMap::new();
        extensions.insert(
            EXTENSION_SPEC.to_string(),
            prost_types::Any {
                type_url: "oakestra.io/InstanceSpec".into(),
                value: spec_json,
            },
        );
        conn.client
            .containers()
            .create(
                conn.request(CreateContainerRequest {
                    container: Some(Container {
                        id: cid.to_string(),
                        labels,
                        image: ImageRef::parse(&spec.image)
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                        runtime: Some(ContainerRuntimeInfo {
                            name: self.inner.config.runtime.clone(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: SPEC_TYPE_URL.into(),
                            value: oci,
                        }),
                        snapshotter: conn.snapshotter.clone(),
                        snapshot_key: cid.to_string(),
                        created_at: None,
                        updated_at: None,
                        extensions,
                        sandbox: String::new(),
                    }),
                }),
            )
            .await
            .map_err(|s| rpc_error("container create", &s))?;

        let prepare = || async {
            conn.client
                .snapshots()
                .prepare(conn.request(PrepareSnapshotRequest {
                    snapshotter: conn.snapshotter.clone(),
                    key: cid.to_string(),
                    parent: image.top_chain_id.clone(),
                    labels: HashMap::new(),
                }))
                .await
        };
        let mounts = match prepare().await {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                // A leftover of an earlier copy that was not cleaned up.
                conn.remove_snapshot(cid).await;
                prepare()
                    .await
                    .map_err(|s| rpc_error("snapshot prepare", &s))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(rpc_error("snapshot prepare", &s)),
        };

        let log = self.log_path(&spec.id);
        tokio::fs::create_dir_all(&self.inner.config.log_dir)
            .await
            .map_err(|e| format!("creating {}: {e}", self.inner.config.log_dir.display()))?;
        tokio::fs::write(&log, b"")
            .await
            .map_err(|e| format!("creating {}: {e}", log.display()))?;
        let _ = tokio::fs::remove_file(rotated(&log)).await;
        let uri = self.logger_uri(&log);

        self.state().tracked.insert(
            cid.to_string(),
            Tracked {
                id: spec.id.clone(),
                incarnation,
                oom: false,
                exited: false,
            },
        );
        conn.client
            .tasks()
            .create(conn.request(CreateTaskRequest {
                container_id: cid.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                // The shim runs the logger with both streams; it reads only stdout's URI.
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await
            .map_err(|s| rpc_error("task create", &s))?;
        conn.client
            .tasks()
            .start(conn.request(StartRequest {
                container_id: cid.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| rpc_error("task start", &s))?;
        Ok(())
    }
}

async fn pick_snapshotter(client: &Client) -> Result<String, RuntimeError> {
    let plugins = client
        .introspection()
        .plugins(PluginsRequest {
            filters: vec!["type==io.containerd.snapshotter.v1".into()],
        })
        .await
        .map_err(|s| backend("listing containerd plugins", rpc_error("introspection", &s)))?
        .into_inner()
        .plugins;
    let usable = |id: &str| plugins.iter().any(|p| p.id == id && p.init_err.is_none());
    if usable("overlayfs") {
        Ok("overlayfs".into())
    } else if usable("native") {
        tracing::info!("containerd has no usable overlayfs snapshotter; using native");
        Ok("native".into())
    } else {
        Err(backend(
            "choosing a snapshotter",
            "containerd has neither overlayfs nor native loaded; check its config",
        ))
    }
}

/// Topic of the marker events that open a subscription.
const SUBSCRIBED_TOPIC: &str = "/oakestra/subscribed";

fn event_filters(namespace: &str) -> Vec<String> {
    vec![
        format!("topic==\"{SUBSCRIBED_TOPIC}\",namespace==\"{namespace}\""),
        format!("topic==\"/tasks/exit\",namespace==\"{namespace}\""),
        format!("topic==\"/tasks/oom\",namespace==\"{namespace}\""),
    ]
}

/// Follows containerd's task events; resubscribes (and reconciles) when the stream breaks.
async fn event_loop(
    weak: Weak<Inner>,
    mut events: tonic::Streaming<containerd_client::types::Envelope>,
) {
    loop {
        loop {
            let envelope = match events.message().await {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => break,
            };
            let Some(inner) = weak.upgrade() else { return };
            let runtime = ContainerdRuntime { inner };
            let Some(event) = envelope.event else {
                continue;
            };
            match envelope.topic.as_str() {
                "/tasks/exit" => {
                    if let Ok(exit) = containerd_client::events::TaskExit::decode(&*event.value)
                        && exit.id == exit.container_id
                    {
                        runtime
                            .handle_exit(&exit.container_id, exit.exit_status)
                            .await;
                    }
                }
                "/tasks/oom" => {
                    if let Ok(oom) = containerd_client::events::TaskOom::decode(&*event.value) {
                        if let Some(t) = runtime.state().tracked.get_mut(&oom.container_id) {
                            t.oom = true;
                        }
                        if let Some(r) = runtime.state().last_exits.get_mut(&oom.container_id) {
                            r.oom = true;
                        }
                    }
                }
                _ => {}
            }
        }
        // The stream ended (containerd restarted?): resubscribe, then catch up.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(inner) = weak.upgrade() else { return };
            let runtime = ContainerdRuntime { inner };
            if let Ok(stream) = runtime.subscribe().await {
                events = stream;
                runtime.reconcile().await;
                break;
            }
        }
    }
}

/// Rotates instance logs that grew past the limit.
async fn rotate_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let runtime = ContainerdRuntime { inner };
        let ids: Vec<InstanceId> = runtime
            .state()
            .tracked
            .values()
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let path = runtime.log_path(&id);
            rotate_if_large(&path, runtime.inner.config.log_max_bytes).await;
        }
    }
}

/// The container logger the shim runs (`binary://` logging): fd 3 is the task's stdout, fd 4
/// its stderr, a byte on fd 5 tells the shim it is ready. Both streams are appended to the log
/// as they come, each by its own `cat` (the shell execs the second), until the task's side
/// closes them; the shim, a subreaper, reaps them. (The shim's own
/// `file://` logging gives both streams one writer that the first stream to end closes, so the
/// other stream's last output was now and then lost.) The logger lives with the task, not with
/// the worker, so logs keep flowing while a worker restarts.
const LOGGER_SCRIPT: &str =
    "# oakestra-runtime: container logger, run by the containerd shim as `sh <this> <log>`.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf r >&5
exec 5>&-
cat <&3 >>\"$1\" 3<&- 4<&- &
exec cat <&4 >>\"$1\" 3<&- 4<&-
";
const LOGGER_SCRIPT_NAME: &str = ".oakestra-logger.sh";

/// Percent-escapes a path for a URI query (the shim decodes it; `+` would become a space).
fn query_escape(path: &Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(b) {
            out.push(char::from(*b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Copies a too-large log to `.1` and truncates it. The shim appends (O_APPEND), so it goes on
/// writing at the new end; lines written between copy and truncation are lost.
async fn rotate_if_large(path: &Path, max: u64) {
    let Ok(meta) = tokio::fs::metadata(path).await else {
        return;
    };
    if meta.len() <= max {
        return;
    }
    if tokio::fs::copy(path, rotated(path)).await.is_ok()
        && let Ok(file) = tokio::fs::OpenOptions::new().write(true).open(path).await
    {
        let _ = file.set_len(0).await;
    }
}

async fn append_log(path: &Path, text: &str) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut file) = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .await
    {
        let _ = file.write_all(text.as_bytes()).await;
    }
}

/// Reads the tail of a file, at most `max` bytes.
async fn read_tail(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(max as u64);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut out = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut out).await?;
    Ok(out)
}

/// The cgroup root and whether it is the unified (v2) hierarchy.
fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: impl AsRef<Path>, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether the kernel OOM-killed a task of this cgroup.
fn cgroup_oom_killed(cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let kills = if cgroup_v2() {
        keyed(format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill")
    } else {
        keyed(
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill",
        )
    };
    kills.is_some_and(|n| n > 0)
}

/// CPU time used (ns) and memory in use (bytes) of a cgroup.
fn cgroup_usage(cgroup: &str) -> Option<(u64, u64)> {
    let rel = cgroup.trim_start_matches('/');
    if cgroup_v2() {
        let cpu = keyed(format!("/sys/fs/cgroup/{rel}/cpu.stat"), "usage_usec")? * 1000;
        let mem = read_u64(format!("/sys/fs/cgroup/{rel}/memory.current")).unwrap_or(0);
        Some((cpu, mem))
    } else {
        let cpu = read_u64(format!("/sys/fs/cgroup/cpuacct/{rel}/cpuacct.usage"))
            .or_else(|| read_u64(format!("/sys/fs/cgroup/cpu,cpuacct/{rel}/cpuacct.usage")))?;
        let mem =
            read_u64(format!("/sys/fs/cgroup/memory/{rel}/memory.usage_in_bytes")).unwrap_or(0);
        Some((cpu, mem))
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
        let log = self.log_path(id);
        let _ = tokio::fs::remove_file(rotated(&log)).await;
        let _ = tokio::fs::remove_file(&log).await;
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
        let sample = || cgroup_usage(&cgroup);
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
        let path = self.log_path(id);
        let mut bytes = match read_tail(&path, max_bytes).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if self.get_container(&id.to_string()).await?.is_some() {
                    Ok(String::new())
                } else {
                    Err(RuntimeError::NotFound(id.to_string()))
                };
            }
            Err(e) => {
                return Err(backend(
                    format!("reading {}", path.display()),
                    e.to_string(),
                ));
            }
        };
        if bytes.len() < max_bytes
            && let Ok(older) = read_tail(&rotated(&path), max_bytes - bytes.len()).await
        {
            let mut joined = older;
            joined.extend_from_slice(&bytes);
            bytes = joined;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(crate::tail(&text, max_bytes).to_string())
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

    async fn exit_reason(&self, id: &InstanceId, incarnation: u64) -> Option<String> {
        let record = self.state().last_exits.get(&id.to_string()).copied()?;
        (record.incarnation == incarnation && record.oom).then(|| OOM_KILLED.to_string())
    }
}
