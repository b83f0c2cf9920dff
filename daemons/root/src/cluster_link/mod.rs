//! The root's side of the cluster link (DESIGN.md §4.3): the registry of clusters, their live
//! streams, commands down, reports up, liveness, and reconciliation on reconnect.
//!
//! * **Registry.** Clusters are [`ClusterRecord`]s in the store (id, name, location, address,
//!   resources, `active`, `last_seen`). [`ClusterLink::register`] keeps the id of a known name.
//! * **Sessions.** A connected cluster has one session: the sender half of its command stream.
//!   A newer `Session` of the same cluster replaces the older one. Session secrets live in
//!   memory only: after a root restart a cluster gets `UNAUTHENTICATED` on `Session` and simply
//!   registers again (clusters call `Register` before every `Session`).
//! * **Liveness.** A cluster is active from its first snapshot on. When its stream ends, a timer
//!   of [`LinkConfig::inactive_after`] (default 30 s) starts; if the cluster has not reconnected
//!   when it fires, the cluster is marked inactive and its instances are placed on other
//!   clusters (or left pending, see `instances.rs` and `cluster_link/instances.rs`). Timers use
//!   tokio time, so tests drive them with `tokio::time::pause`.
//! * **Reports.** Resources update the record (and wake the retry of pending instances when
//!   capacity grew); instance statuses update the service records atomically. A report about
//!   a service or instance the root does not place on that cluster is answered with `Undeploy`.
//! * **Reconnect.** The first message of every stream is a full snapshot: unknown instances
//!   are undeployed, instances the root placed there but the snapshot lacks are sent again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::resources::ClusterResources;
use oakestra_core::status::{DeploymentStatus, Status};
use oakestra_sched::Algorithm;
use oakestra_store::{ClusterRecord, Store, StoreError};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_stream::{Stream, StreamExt};

use crate::tokens::{self, TokenError};
use oakestra_proto::grpc::{
    ClusterMessage, InstanceStatus, LogsRequest, RegisterReply, RegisterRequest, Resources,
    RootMessage, Snapshot, WorkerSubnetReply, WorkerSummary, WorkersRequest, cluster_message,
    root_message,
};

mod instances;
mod questions;
mod resources;
mod session;
mod subnets;
mod tables;

pub(crate) use crate::instances::{Reserved, is_finished, undeploy_message};
pub(crate) use resources::{candidate_of, resources_from_proto};

/// Settings of the link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// How long a cluster's stream may be gone before the cluster is inactive and its
    /// instances move (default 30 s).
    pub inactive_after: Duration,
    /// HTTP/2 keep-alive ping interval of the gRPC server, which detects dead connections
    /// (default 10 s; `None` disables it).
    pub keepalive: Option<Duration>,
    /// The root's cluster selection algorithm (default LDP, which is best fit without latency
    /// or geo constraints).
    pub algorithm: Algorithm,
    /// Commands buffered per cluster before sending waits.
    pub command_buffer: usize,
    /// IPv4 prefix length of the overlay subnet a worker gets when it has none yet (22–26,
    /// default 26); a worker that holds one keeps it.
    pub worker_subnet_prefix: u8,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            inactive_after: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(10)),
            algorithm: Algorithm::default(),
            command_buffer: 1024,
            worker_subnet_prefix: oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN,
        }
    }
}

/// A link operation failed; converts into the gRPC status the cluster sees.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Bad join token, or bad/missing session credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// An address pool is full.
    #[error("{0}")]
    Exhausted(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TokenError> for LinkError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => LinkError::Store(s),
            other => LinkError::Unauthenticated(other.to_string()),
        }
    }
}

impl From<LinkError> for tonic::Status {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            LinkError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            LinkError::Exhausted(m) => tonic::Status::resource_exhausted(m),
            LinkError::Store(s) => tonic::Status::unavailable(format!(
                "the root cannot reach its store ({s}); retry later"
            )),
        }
    }
}

mod ask;

use ask::Answer;

/// Why a question to a cluster ([`ClusterLink::fetch_logs`], [`ClusterLink::fetch_workers`])
/// got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The cluster has no live stream (or it ended while waiting).
    #[error("cluster {0} is not connected")]
    NotConnected(ClusterId),
    /// No answer in time (the worker may be gone or busy).
    #[error("cluster {cluster} did not answer within {after:?}")]
    Timeout {
        /// The cluster asked.
        cluster: ClusterId,
        /// How long the root waited.
        after: Duration,
    },
    /// The cluster or worker answered with an error.
    #[error("{0}")]
    Refused(String),
}

type Outbound = mpsc::Sender<Result<RootMessage, tonic::Status>>;

#[derive(Debug)]
struct Session {
    generation: u64,
    tx: Outbound,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<ClusterId, Session>,
    /// SHA-256 (hex) of each cluster's current session secret.
    secrets: HashMap<ClusterId, String>,
    /// Clusters without a stream, with the generation their loss timer belongs to.
    disconnected: HashMap<ClusterId, u64>,
    /// Demand placed on and released from each cluster since its last resources report:
    /// taken off and given back to what it reported, so a burst of deploys does not pile onto
    /// one cluster beyond its capacity, and an undeploy makes room at once.
    reserved: HashMap<ClusterId, Unreported>,
    generation: u64,
    /// Questions (log tails, worker lists) waiting for their cluster's answer.
    asks: ask::Pending,
}

/// What changed on a cluster since its last resources report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Unreported {
    /// Demand of instances placed there.
    pub(crate) placed: Reserved,
    /// Demand of instances undeployed there (the cluster frees it at once).
    pub(crate) released: Reserved,
}

/// The registry of clusters and their live links. Create one per root with
/// [`ClusterLink::new`]; the REST handlers call the instance operations in
/// `cluster_link/instances.rs` (`deploy_instance`, `undeploy_instance`, `release_service`), and [`crate::grpc::serve`]
/// serves it to clusters.
#[derive(Debug)]
pub struct ClusterLink {
    pub(crate) store: Arc<dyn Store>,
    config: LinkConfig,
    state: Mutex<State>,
    /// Wakes the retry of pending instances.
    pub(crate) retry: Arc<Notify>,
    /// Set when some instance may be pending; cleared by a retry pass that placed them all.
    pub(crate) pending_hint: AtomicBool,
    started: AtomicBool,
    /// Clusters' interests in service tables (MDNC, see `crate::tables` and
    /// `cluster_link/tables.rs`).
    tables: Mutex<crate::tables::Interests>,
    /// Worker subnet requests, assigned in groups (`cluster_link/subnets.rs`).
    subnets: subnets::SubnetRequests,
    /// Events and usage history (`crate::monitor`).
    pub(crate) monitor: Arc<crate::monitor::Monitor>,
    this: Weak<ClusterLink>,
}

impl ClusterLink {
    /// A link over `store`. Call [`ClusterLink::start`] (or [`crate::grpc::serve`], which
    /// does) inside a tokio runtime to run its background work.
    pub fn new(store: Arc<dyn Store>, config: LinkConfig) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            store,
            config,
            state: Mutex::new(State::default()),
            retry: Arc::new(Notify::new()),
            pending_hint: AtomicBool::new(true),
            started: AtomicBool::new(false),
            tables: Mutex::new(crate::tables::Interests::default()),
            subnets: subnets::SubnetRequests::default(),
            monitor: Arc::new(crate::monitor::Monitor::default()),
            this: this.clone(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Events and usage history.
    pub fn monitor(&self) -> &Arc<crate::monitor::Monitor> {
        &self.monitor
    }

    pub(crate) fn interests(&self) -> MutexGuard<'_, crate::tables::Interests> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the background work once: the retry of pending instances, and loss timers for
    /// clusters the store lists as active but that have no stream (e.g. after a root restart,
    /// they have [`LinkConfig::inactive_after`] to reconnect).
    pub fn start(&self) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.this.clone();
        let notify = self.retry.clone();
        tokio::spawn(async move {
            loop {
                notify.notified().await;
                let Some(link) = weak.upgrade() else { break };
                if link.pending_hint.swap(false, Ordering::SeqCst) {
                    link.retry_pending().await;
                }
            }
        });
        self.retry.notify_one();
        let weak = self.this.clone();
        tokio::spawn(async move {
            let Some(link) = weak.upgrade() else { return };
            match link.store.list_clusters().await {
                Ok(clusters) => {
                    for c in clusters.into_iter().filter(|c| c.active) {
                        link.arm_loss_timer(c.id);
                    }
                }
                Err(e) => tracing::warn!("cannot list clusters to watch their liveness: {e}"),
            }
        });
    }

    /// Whether `cluster` has a live stream.
    pub fn is_connected(&self, cluster: &ClusterId) -> bool {
        self.state().sessions.contains_key(cluster)
    }

    /// Clusters with a live stream.
    pub fn connected_clusters(&self) -> Vec<ClusterId> {
        self.state().sessions.keys().cloned().collect()
    }

    // ----- log tails on demand ---------------------------------------------------------------

    // ----- Register --------------------------------------------------------------------------

    /// `Register`: checks the join token, creates or refreshes the cluster record (same name →
    /// same id) and issues a new session secret.
    pub async fn register(
        &self,
        request: RegisterRequest,
        peer: Option<SocketAddr>,
    ) -> Result<RegisterReply, LinkError> {
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(LinkError::InvalidArgument(
                "cluster name is empty; set the cluster's name (it must be unique among the \
                 clusters of this root)"
                    .into(),
            ));
        }
        let token = tokens::verify(self.store.as_ref(), &request.join_token).await?;
        let ip = if request.manager_address.trim().is_empty() {
            peer.map(|p| match p.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            })
            .map(|ip| ip.to_string())
        } else {
            Some(request.manager_address.trim().to_owned())
        };
        let port = u16::try_from(request.manager_port).ok().filter(|p| *p != 0);
        let now = tokens::now_secs_f64();
        let mut extra = serde_json::Map::new();
        extra.insert("network_port".into(), Value::from(request.network_port));
        extra.insert("version".into(), Value::from(request.version.clone()));
        let candidate = ClusterRecord {
            id: ClusterId(oakestra_store::new_object_id().to_string()),
            name: name.clone(),
            location: request.location.trim().to_owned(),
            ip: ip.clone(),
            port,
            resources: ClusterResources::default(),
            active: false,
            last_seen: Some(now),
            registered_at: Some(now),
            join_token_id: Some(token.id.clone()),
            extra: extra.clone(),
        };
        let record = self
            .store
            .register_cluster(&candidate, |c| {
                c.location = candidate.location.clone();
                c.ip = ip.clone();
                c.port = port;
                c.last_seen = Some(now);
                c.join_token_id = Some(token.id.clone());
                for (k, v) in &extra {
                    c.extra.insert(k.clone(), v.clone());
                }
            })
            .await?;
        let secret = tokens::random_hex(32)?;
        self.state()
            .secrets
            .insert(record.id.clone(), tokens::hash_token(&secret));
        tracing::info!(cluster = %record.id, name = %name, "cluster registered");
        crate::monitor::record::cluster_registered(&self.monitor, &record);
        self.retry.notify_one();
        Ok(RegisterReply {
            cluster_id: record.id.0,
            session_secret: secret,
            inactive_after_secs: u32::try_from(self.config.inactive_after.as_secs())
                .unwrap_or(u32::MAX),
        })
    }

    // ----- WorkerSubnet ----------------------------------------------------------------------

    /// `WorkerSubnet`: the overlay subnets of `worker_id` (a worker of the cluster with these
    /// session credentials) from the persisted IPAM. The holder is the worker id, so the same
    /// worker gets the same subnets again (of the size it got first), from any cluster and
    /// after root restarts; a new worker gets one of `worker_subnet_prefix`.
    pub async fn worker_subnet(
        &self,
        cluster_id: &str,
        secret: &str,
        worker_id: &str,
    ) -> Result<WorkerSubnetReply, LinkError> {
        let id = ClusterId(cluster_id.trim().to_owned());
        let known = !secret.is_empty()
            && self.state().secrets.get(&id) == Some(&tokens::hash_token(secret));
        if !known {
            return Err(LinkError::Unauthenticated(format!(
                "cluster id {:?} with this session secret is not registered; call Register again \
                 and use the id and secret it returns",
                id.0
            )));
        }
        let worker = worker_id.trim();
        if worker.is_empty() {
            return Err(LinkError::InvalidArgument(
                "worker_id is empty; send the id the cluster gave the worker".into(),
            ));
        }
        let subnets = self
            .subnets
            .assign(
                self.store.as_ref(),
                worker,
                self.config.worker_subnet_prefix,
            )
            .await?;
        tracing::info!(
            cluster = %id,
            worker,
            subnet = %subnets.ipv4,
            subnet_v6 = %subnets.ipv6,
            "worker subnet"
        );
        Ok(WorkerSubnetReply {
            subnet_v4: subnets.ipv4.base().to_string(),
            subnet_v6: subnets.ipv6.base().to_string(),
            prefix_len: Some(u32::from(subnets.ipv4.prefix_len())),
        })
    }

    // ----- Session ---------------------------------------------------------------------------

    // ----- reports ---------------------------------------------------------------------------

    /// Records demand placed on `cluster` until its next resources report.
    pub(crate) fn reserve(&self, cluster: &ClusterId, demand: Reserved) {
        self.state()
            .reserved
            .entry(cluster.clone())
            .or_default()
            .placed
            .add(demand);
    }

    /// Records demand undeployed from `cluster` until its next resources report, and retries
    /// pending instances: they may fit now.
    pub(crate) fn release(&self, cluster: &ClusterId, demand: Reserved) {
        self.state()
            .reserved
            .entry(cluster.clone())
            .or_default()
            .released
            .add(demand);
        self.retry.notify_one();
    }

    /// What was placed on and released from each cluster since its last report.
    pub(crate) fn reservations(&self) -> HashMap<ClusterId, Unreported> {
        self.state().reserved.clone()
    }

    // ----- commands --------------------------------------------------------------------------

    /// Sends a command to a connected cluster. `false` when the cluster has no stream (the
    /// reconciliation on its next connect catches up).
    pub(crate) async fn send(&self, id: &ClusterId, message: RootMessage) -> bool {
        self.monitor
            .metrics
            .message("sent", crate::monitor::metrics::root_message_kind(&message));
        let tx = self.state().sessions.get(id).map(|s| s.tx.clone());
        match tx {
            Some(tx) => tx.send(Ok(message)).await.is_ok(),
            None => false,
        }
    }
}

/// Extra record keys for the parts of a report `ClusterResources` has no field for.
const EXTRA_MAX_FREE_VCPUS: &str = "max_worker_free_vcpus";
const EXTRA_MAX_FREE_GPUS: &str = "max_worker_free_gpus";
const EXTRA_GPUS_FREE: &str = "gpus_free";
const EXTRA_CPU_CORES: &str = "cpu_cores_exact";
/// Extra key: the cluster's measured CPU usage (the totals' `cpu_percent` is the taken share).
pub(crate) const EXTRA_CPU_USAGE: &str = "cpu_usage_percent";
