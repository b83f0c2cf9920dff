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
//!   clusters (or left pending, see `instances.rs`). Timers use tokio time, so tests drive them
//!   with `tokio::time::pause`.
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
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};

use crate::grpc::proto::{
    ClusterMessage, InstanceStatus, LogsReply, LogsRequest, RegisterReply, RegisterRequest,
    Resources, RootMessage, Snapshot, Undeploy, WorkerSubnetReply, cluster_message, root_message,
};
use crate::tokens::{self, TokenError};

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
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            inactive_after: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(10)),
            algorithm: Algorithm::default(),
            command_buffer: 1024,
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

/// Why [`ClusterLink::fetch_logs`] got no log.
#[derive(Debug, thiserror::Error)]
pub enum LogsFetchError {
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

/// Removes a waiting log request when its caller stops waiting.
struct ForgetLogsRequest<'a> {
    link: &'a ClusterLink,
    request_id: String,
}

impl Drop for ForgetLogsRequest<'_> {
    fn drop(&mut self) {
        self.link.state().logs_waiting.remove(&self.request_id);
    }
}

/// Error of the IPAM update of [`ClusterLink::worker_subnet`].
#[derive(Debug)]
enum WorkerSubnetStep {
    Store(StoreError),
    Ipam(oakestra_net::ipam::IpamError),
}

impl From<StoreError> for WorkerSubnetStep {
    fn from(e: StoreError) -> Self {
        WorkerSubnetStep::Store(e)
    }
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
    /// Log requests waiting for their cluster's answer, by request id.
    logs_waiting: HashMap<String, (ClusterId, oneshot::Sender<LogsReply>)>,
    logs_requests: u64,
}

/// Resources of instances a cluster has not yet accounted for in a report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Reserved {
    pub(crate) vcpus: f64,
    pub(crate) memory_mb: u64,
    pub(crate) gpus: u32,
}

impl Reserved {
    fn add(&mut self, other: Reserved) {
        self.vcpus += other.vcpus;
        self.memory_mb = self.memory_mb.saturating_add(other.memory_mb);
        self.gpus = self.gpus.saturating_add(other.gpus);
    }
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
/// [`ClusterLink::new`]; the REST handlers call the instance operations in `instances.rs`
/// (`deploy_instance`, `undeploy_instance`, `release_service`), and [`crate::grpc::serve`]
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
    /// Clusters' interests in service tables (MDNC, see `tables.rs`).
    tables: Mutex<crate::tables::Interests>,
    /// Events and usage history (`crate::monitor`).
    pub(crate) monitor: Arc<crate::monitor::Monitor>,
    this: Weak<ClusterLink>,
}

/// Statuses after which an instance is not deployed anywhere and is never moved or re-sent.
pub(crate) fn is_finished(status: Option<Status>) -> bool {
    matches!(
        status,
        Some(Status::Deployment(
            DeploymentStatus::Completed | DeploymentStatus::Undeployed
        ))
    )
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

    /// Asks `cluster` for the last `tail_lines` lines of an instance's log (its worker reads
    /// them) and waits at most `wait` for the answer. The waiting request is forgotten when
    /// this returns or is dropped, so a late answer is ignored.
    pub async fn fetch_logs(
        &self,
        cluster: &ClusterId,
        job_id: &str,
        instance_number: u32,
        tail_lines: u32,
        wait: Duration,
    ) -> Result<String, LogsFetchError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (request_id, tx) = {
            let mut st = self.state();
            let Some(session) = st.sessions.get(cluster) else {
                return Err(LogsFetchError::NotConnected(cluster.clone()));
            };
            let tx = session.tx.clone();
            st.logs_requests += 1;
            let request_id = format!("logs-{}", st.logs_requests);
            st.logs_waiting
                .insert(request_id.clone(), (cluster.clone(), reply_tx));
            (request_id, tx)
        };
        let _forget = ForgetLogsRequest {
            link: self,
            request_id: request_id.clone(),
        };
        let message = RootMessage {
            kind: Some(root_message::Kind::LogsRequest(LogsRequest {
                request_id,
                job_id: job_id.to_owned(),
                instance_number,
                tail_lines,
                max_bytes: oakestra_proto::mqtt::MAX_LOG_REQUEST_BYTES,
            })),
        };
        let exchange = async {
            tx.send(Ok(message))
                .await
                .map_err(|_| LogsFetchError::NotConnected(cluster.clone()))?;
            reply_rx
                .await
                .map_err(|_| LogsFetchError::NotConnected(cluster.clone()))
        };
        let reply =
            tokio::time::timeout(wait, exchange)
                .await
                .map_err(|_| LogsFetchError::Timeout {
                    cluster: cluster.clone(),
                    after: wait,
                })??;
        if reply.error.is_empty() {
            Ok(reply.logs)
        } else {
            Err(LogsFetchError::Refused(reply.error))
        }
    }

    fn on_logs_reply(&self, cluster: &ClusterId, reply: LogsReply) {
        let mut st = self.state();
        // Only the cluster that was asked may answer.
        if st
            .logs_waiting
            .get(&reply.request_id)
            .is_some_and(|(asked, _)| asked == cluster)
            && let Some((_, tx)) = st.logs_waiting.remove(&reply.request_id)
        {
            let _ = tx.send(reply);
        }
    }

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
    /// worker gets the same /26 and /120 again, from any cluster and after root restarts.
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
            .store
            .update_ipam(|ipam: &mut oakestra_net::ipam::AddressManager| {
                ipam.assign_worker(worker).map_err(WorkerSubnetStep::Ipam)
            })
            .await
            .map_err(|e| match e {
                WorkerSubnetStep::Store(s) => LinkError::Store(s),
                WorkerSubnetStep::Ipam(e) => {
                    LinkError::Exhausted(format!("no overlay subnet for worker {worker}: {e}"))
                }
            })?;
        tracing::info!(
            cluster = %id,
            worker,
            subnet = %subnets.ipv4.base(),
            subnet_v6 = %subnets.ipv6.base(),
            "worker subnet"
        );
        Ok(WorkerSubnetReply {
            subnet_v4: subnets.ipv4.base().to_string(),
            subnet_v6: subnets.ipv6.base().to_string(),
        })
    }

    // ----- Session ---------------------------------------------------------------------------

    /// `Session`: checks the session credentials, installs the cluster's command stream
    /// (replacing an older one) and processes `inbound` in a task of its own. Returns the
    /// receiver of the commands for the cluster.
    pub fn connect<S>(
        &self,
        cluster_id: &str,
        secret: &str,
        inbound: S,
    ) -> Result<mpsc::Receiver<Result<RootMessage, tonic::Status>>, LinkError>
    where
        S: Stream<Item = Result<ClusterMessage, tonic::Status>> + Send + Unpin + 'static,
    {
        let id = ClusterId(cluster_id.trim().to_owned());
        let (tx, rx) = mpsc::channel(self.config.command_buffer.max(1));
        let generation = {
            let mut st = self.state();
            let ok = !secret.is_empty() && st.secrets.get(&id) == Some(&tokens::hash_token(secret));
            if !ok {
                return Err(LinkError::Unauthenticated(format!(
                    "cluster id {:?} with this session secret is not registered (the root may \
                     have restarted, or the cluster registered again elsewhere); call Register \
                     again and use the id and secret it returns",
                    id.0
                )));
            }
            st.generation += 1;
            let generation = st.generation;
            st.sessions.insert(id.clone(), Session { generation, tx });
            st.disconnected.remove(&id);
            generation
        };
        self.monitor.emit(crate::monitor::Event::cluster(
            &id,
            "cluster_connected",
            format!("cluster {id} connected its session"),
        ));
        let link = self.this.upgrade().expect("a ClusterLink lives in an Arc");
        tokio::spawn(async move { link.run_session(id, generation, inbound).await });
        Ok(rx)
    }

    fn is_current(&self, id: &ClusterId, generation: u64) -> bool {
        self.state()
            .sessions
            .get(id)
            .is_some_and(|s| s.generation == generation)
    }

    async fn run_session<S>(self: Arc<Self>, id: ClusterId, generation: u64, mut inbound: S)
    where
        S: Stream<Item = Result<ClusterMessage, tonic::Status>> + Send + Unpin + 'static,
    {
        match inbound.next().await {
            Some(Ok(ClusterMessage {
                kind: Some(cluster_message::Kind::Snapshot(snapshot)),
            })) => {
                if let Err(e) = self.on_snapshot(&id, snapshot).await {
                    tracing::warn!(cluster = %id, "cannot apply the snapshot: {e}");
                }
                while let Some(message) = inbound.next().await {
                    if !self.is_current(&id, generation) {
                        break;
                    }
                    let Ok(message) = message else { break };
                    if let Err(e) = self.on_message(&id, message).await {
                        tracing::warn!(cluster = %id, "cannot apply a report: {e}");
                    }
                }
            }
            Some(Ok(_)) => {
                let sender = self.state().sessions.get(&id).map(|s| s.tx.clone());
                if let Some(tx) = sender {
                    let _ = tx
                        .send(Err(tonic::Status::failed_precondition(
                            "the first message on the stream must be a Snapshot of every \
                             instance the cluster holds and its resources",
                        )))
                        .await;
                }
            }
            Some(Err(_)) | None => {}
        }
        self.on_disconnect(&id, generation);
    }

    fn on_disconnect(&self, id: &ClusterId, generation: u64) {
        {
            let mut st = self.state();
            if st.sessions.get(id).map(|s| s.generation) != Some(generation) {
                return; // replaced by a newer stream
            }
            st.sessions.remove(id);
        }
        tracing::info!(cluster = %id, "cluster stream closed");
        self.monitor.emit(crate::monitor::Event::cluster(
            id,
            "cluster_disconnected",
            format!(
                "cluster {id} closed its session; lost unless it is back within {:?}",
                self.config.inactive_after
            ),
        ));
        self.arm_loss_timer(id.clone());
    }

    /// Starts the timer after which a cluster without a stream is lost.
    fn arm_loss_timer(&self, id: ClusterId) {
        let generation = {
            let mut st = self.state();
            if st.sessions.contains_key(&id) {
                return;
            }
            st.generation += 1;
            let g = st.generation;
            st.disconnected.insert(id.clone(), g);
            g
        };
        let weak = self.this.clone();
        let after = self.config.inactive_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(link) = weak.upgrade() else { return };
            let expired = link.state().disconnected.get(&id) == Some(&generation);
            if expired {
                link.state().disconnected.remove(&id);
                if let Err(e) = link.cluster_lost(&id).await {
                    tracing::warn!(cluster = %id, "cannot move the instances of a lost cluster: {e}");
                }
            }
        });
    }

    /// Marks the cluster inactive and moves its instances.
    pub(crate) async fn cluster_lost(&self, id: &ClusterId) -> Result<(), StoreError> {
        if self.is_connected(id) {
            return Ok(()); // it came back just now
        }
        tracing::warn!(cluster = %id, after = ?self.config.inactive_after, "cluster lost");
        match self
            .store
            .update_cluster(id, |c| {
                c.active = false;
                Ok::<_, StoreError>(())
            })
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        self.monitor.emit(crate::monitor::Event::cluster(
            id,
            "cluster_lost",
            format!(
                "cluster {id} silent for {:?}: inactive, moving its instances to other clusters",
                self.config.inactive_after
            ),
        ));
        self.reschedule_from(id).await
    }

    // ----- reports ---------------------------------------------------------------------------

    async fn on_message(&self, id: &ClusterId, message: ClusterMessage) -> Result<(), StoreError> {
        self.monitor.metrics.message(
            "received",
            crate::monitor::metrics::cluster_message_kind(&message),
        );
        match message.kind {
            Some(cluster_message::Kind::Resources(r)) => self.on_resources(id, &r, false).await,
            Some(cluster_message::Kind::InstanceStatus(s)) => {
                self.on_instance_status(id, &s).await.map(|_| ())
            }
            // A later snapshot (e.g. after the cluster's own restart of a component).
            Some(cluster_message::Kind::Snapshot(s)) => self.on_snapshot(id, s).await,
            Some(cluster_message::Kind::LogsReply(r)) => {
                self.on_logs_reply(id, r);
                Ok(())
            }
            Some(cluster_message::Kind::TableQuery(q)) => {
                self.on_table_query(id, q).await;
                Ok(())
            }
            Some(cluster_message::Kind::TableInterestRemove(r)) => {
                self.on_table_interest_remove(id, r);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn on_resources(
        &self,
        id: &ClusterId,
        r: &Resources,
        activate: bool,
    ) -> Result<(), StoreError> {
        let (resources, extra) = resources_from_proto(r);
        let now = tokens::now_secs_f64();
        // The report accounts for everything placed before it.
        let had_reservations = self.state().reserved.remove(id).is_some();
        let (grew, workers_before) = self
            .store
            .update_cluster(id, |c| {
                let workers_before = c.resources.totals.workers;
                let grew = capacity_grew(c, &resources, &extra) || (activate && !c.active);
                c.resources = resources.clone();
                for (k, v) in &extra {
                    c.extra.insert(k.clone(), v.clone());
                }
                c.last_seen = Some(now);
                // Any report comes over a live session, so the cluster is active (this also
                // repairs a loss timer that fired just as the cluster came back).
                c.active = true;
                Ok::<_, StoreError>((grew, workers_before))
            })
            .await?;
        crate::monitor::record::workers_changed(
            &self.monitor,
            id,
            workers_before,
            resources.totals.workers,
        );
        if grew || had_reservations {
            self.retry.notify_one();
        }
        Ok(())
    }

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

    async fn on_snapshot(&self, id: &ClusterId, snapshot: Snapshot) -> Result<(), StoreError> {
        let resources = snapshot.resources.unwrap_or_default();
        self.on_resources(id, &resources, true).await?;
        let mut held = HashSet::new();
        for s in &snapshot.instances {
            if let Some(key) = self.on_instance_status(id, s).await? {
                held.insert(key);
            }
        }
        // Instances the root placed here that the cluster does not hold: send them again.
        for service in self.store.list_all_services().await? {
            for inst in &service.instance_list {
                let here = inst.cluster_id.as_ref() == Some(id);
                if here
                    && !is_finished(inst.status)
                    && !held.contains(&(service.id, inst.instance_number))
                    && let Some(msg) =
                        crate::instances::deploy_message(&service, inst.instance_number)
                {
                    tracing::info!(cluster = %id, job = %service.id, n = inst.instance_number,
                        "re-sending an instance the cluster's snapshot lacks");
                    self.send(id, msg).await;
                }
            }
        }
        self.retry.notify_one();
        Ok(())
    }

    /// Applies one instance report. Returns the instance's key when the root places it on
    /// this cluster; otherwise tells the cluster to undeploy it.
    async fn on_instance_status(
        &self,
        id: &ClusterId,
        report: &InstanceStatus,
    ) -> Result<Option<(ObjectId, u32)>, StoreError> {
        let Ok(job) = report.job_id.parse::<ObjectId>() else {
            tracing::warn!(cluster = %id, job = %report.job_id, "report about a malformed job id; ignored");
            return Ok(None);
        };
        let status = match Status::parse_optional(report.status.trim()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(cluster = %id, "report with {e}; ignored");
                return Ok(None);
            }
        };
        let n = report.instance_number;
        let outcome = self
            .store
            .update_service(job, |service| {
                let Some(inst) = service.instance_mut(n) else {
                    return Ok::<_, StoreError>(Report::Foreign);
                };
                if inst.cluster_id.as_ref() != Some(id) {
                    return Ok(Report::Foreign);
                }
                let before = inst.status;
                crate::instances::apply_report(inst, status, report);
                crate::instances::refresh_service_status(service);
                Ok(Report::Applied(crate::monitor::record::Change::of(
                    service, n, before,
                )))
            })
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.is_not_found() => Report::UnknownService,
            Err(e) => return Err(e),
        };
        let undeployed = status == Some(Status::Deployment(DeploymentStatus::Undeployed));
        match outcome {
            Report::Applied(change) => {
                crate::monitor::record::instance_report(&self.monitor, id, &change, report);
                if crate::instances::needs_relocation(status)
                    && !self
                        .schedule(job, n, crate::instances::Move::Relocate(id))
                        .await?
                {
                    // Nowhere else to go now; a cluster joining or growing retries it.
                    self.pending_hint.store(true, Ordering::SeqCst);
                }
                self.push_service_id(job).await;
                return Ok(Some((job, n)));
            }
            Report::Foreign if !undeployed => {
                self.send(
                    id,
                    undeploy_message(
                        job,
                        Some(n),
                        "the root does not place this instance on this cluster",
                    ),
                )
                .await;
            }
            Report::UnknownService if !undeployed => {
                self.send(
                    id,
                    undeploy_message(job, None, "the service does not exist at the root"),
                )
                .await;
            }
            _ => {}
        }
        Ok(None)
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

/// What became of an instance report.
enum Report {
    /// The root places the instance on this cluster; the record was updated.
    Applied(crate::monitor::record::Change),
    /// The root does not place this instance on this cluster.
    Foreign,
    /// The root has no such service.
    UnknownService,
}

pub(crate) fn undeploy_message(job: ObjectId, n: Option<u32>, reason: &str) -> RootMessage {
    RootMessage {
        kind: Some(root_message::Kind::Undeploy(Undeploy {
            job_id: job.to_string(),
            instance_number: n,
            reason: reason.to_owned(),
        })),
    }
}

/// Extra record keys for the parts of a report `ClusterResources` has no field for.
const EXTRA_MAX_FREE_VCPUS: &str = "max_worker_free_vcpus";
const EXTRA_MAX_FREE_GPUS: &str = "max_worker_free_gpus";
const EXTRA_GPUS_FREE: &str = "gpus_free";
const EXTRA_CPU_CORES: &str = "cpu_cores_exact";
/// Extra key: the cluster's measured CPU usage (the totals' `cpu_percent` is the taken share).
pub(crate) const EXTRA_CPU_USAGE: &str = "cpu_usage_percent";

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// A resources report as the record's [`ClusterResources`] plus the extra keys.
pub(crate) fn resources_from_proto(
    r: &Resources,
) -> (ClusterResources, serde_json::Map<String, Value>) {
    let mut res = ClusterResources::default();
    let t = &mut res.totals;
    t.workers = r.active_workers;
    t.cpu_cores = r.cpu_cores.max(0.0).round() as u64;
    t.cpu_percent = r.cpu_load_percent.clamp(0.0, 100.0);
    t.memory_total_mb = r.memory_total_mb;
    t.memory_free_mb = r.memory_free_mb;
    t.gpus = u64::from(r.gpus);
    // `ClusterResources` counts whole cores of the largest worker; the exact free figure is in
    // the extra key the scheduler reads.
    t.max_worker_cpu_cores = r.max_worker_free_vcpus.max(0.0).floor() as u32;
    t.max_worker_memory_free_mb = r.max_worker_free_memory_mb;
    res.virtualizations = sorted(r.virtualization.clone());
    res.archs = sorted(r.arch.clone());
    res.csi_drivers = sorted(r.csi_drivers.clone());
    res.supported_addons = sorted(r.addons.clone());
    res.gpu_drivers = sorted(r.gpu_drivers.clone());
    let mut extra = serde_json::Map::new();
    extra.insert(
        EXTRA_MAX_FREE_VCPUS.into(),
        Value::from(r.max_worker_free_vcpus.max(0.0)),
    );
    extra.insert(
        EXTRA_MAX_FREE_GPUS.into(),
        Value::from(r.max_worker_free_gpus),
    );
    extra.insert(EXTRA_GPUS_FREE.into(), Value::from(r.gpus_free));
    extra.insert(EXTRA_CPU_CORES.into(), Value::from(r.cpu_cores.max(0.0)));
    extra.insert(
        EXTRA_CPU_USAGE.into(),
        Value::from(r.cpu_usage_percent.clamp(0.0, 100.0)),
    );
    (res, extra)
}

fn extra_f64(extra: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    extra.get(key).and_then(Value::as_f64)
}

/// Whether a report offers more than the record did (so pending instances may now fit).
fn capacity_grew(
    old: &ClusterRecord,
    new: &ClusterResources,
    new_extra: &serde_json::Map<String, Value>,
) -> bool {
    let o = &old.resources.totals;
    let n = &new.totals;
    let free = |cores: f64, load: f64| cores * (100.0 - load) / 100.0;
    let old_cores = extra_f64(&old.extra, EXTRA_CPU_CORES).unwrap_or(o.cpu_cores as f64);
    let new_cores = extra_f64(new_extra, EXTRA_CPU_CORES).unwrap_or(n.cpu_cores as f64);
    let more_labels = |old: &[String], new: &[String]| new.iter().any(|x| !old.contains(x));
    n.workers > o.workers
        || n.memory_free_mb > o.memory_free_mb
        || n.max_worker_memory_free_mb > o.max_worker_memory_free_mb
        || free(new_cores, n.cpu_percent) > free(old_cores, o.cpu_percent) + 1e-9
        || extra_f64(new_extra, EXTRA_MAX_FREE_VCPUS).unwrap_or(0.0)
            > extra_f64(&old.extra, EXTRA_MAX_FREE_VCPUS).unwrap_or(0.0) + 1e-9
        || more_labels(&old.resources.virtualizations, &new.virtualizations)
        || more_labels(&old.resources.archs, &new.archs)
        || more_labels(&old.resources.csi_drivers, &new.csi_drivers)
        || more_labels(&old.resources.supported_addons, &new.supported_addons)
}

/// A stored cluster as a root-level scheduling candidate (named by the cluster's name, which
/// is what `direct` and `clusters` constraints use).
///
/// What was placed since the cluster's last report is taken off its totals, what was
/// undeployed is given back. The largest single worker keeps what it reported less nothing
/// (a placement may sit on another worker) plus what was released, within the new totals (the
/// released instance sat on one worker, which that much more is free on); the next report
/// corrects both anyway, and a cluster that gets an instance no worker fits keeps it pending
/// until one does.
pub(crate) fn candidate_of(
    c: &ClusterRecord,
    connected: bool,
    unreported: Unreported,
) -> oakestra_sched::Candidate {
    let t = &c.resources.totals;
    let gpus = u32::try_from(t.gpus).unwrap_or(u32::MAX);
    let mut candidate = oakestra_sched::Candidate {
        name: c.name.clone(),
        cpu_cores: extra_f64(&c.extra, EXTRA_CPU_CORES).unwrap_or(t.cpu_cores as f64),
        cpu_load_percent: t.cpu_percent,
        cpu_usage_percent: extra_f64(&c.extra, EXTRA_CPU_USAGE).unwrap_or(t.cpu_percent),
        memory_total_mb: t.memory_total_mb,
        memory_free_mb: t.memory_free_mb,
        gpus,
        gpus_free: extra_f64(&c.extra, EXTRA_GPUS_FREE).map_or(gpus, |g| g as u32),
        virtualization: c.resources.virtualizations.clone(),
        arch: c.resources.archs.clone(),
        csi_drivers: c.resources.csi_drivers.clone(),
        addons: c.resources.supported_addons.clone(),
        location: c.location.parse().ok(),
        active: c.active && connected && t.workers > 0,
        max_worker_free: Some(oakestra_sched::WorkerCapacity {
            vcpus: extra_f64(&c.extra, EXTRA_MAX_FREE_VCPUS)
                .unwrap_or(f64::from(t.max_worker_cpu_cores)),
            memory_mb: t.max_worker_memory_free_mb,
            gpus: extra_f64(&c.extra, EXTRA_MAX_FREE_GPUS).map_or(0, |g| g as u32),
        }),
        ..oakestra_sched::Candidate::default()
    };
    if unreported != Unreported::default() {
        let Unreported { placed, released } = unreported;
        candidate.memory_free_mb = (candidate.memory_free_mb + released.memory_mb)
            .saturating_sub(placed.memory_mb)
            .min(candidate.memory_total_mb);
        candidate.gpus_free = (candidate.gpus_free + released.gpus)
            .saturating_sub(placed.gpus)
            .min(candidate.gpus);
        let mut free_vcpus = candidate.free_vcpus();
        if candidate.cpu_cores > 0.0 {
            free_vcpus =
                (free_vcpus + released.vcpus - placed.vcpus).clamp(0.0, candidate.cpu_cores);
            candidate.cpu_load_percent = 100.0 * (1.0 - free_vcpus / candidate.cpu_cores);
        }
        if let Some(w) = &mut candidate.max_worker_free {
            w.vcpus = (w.vcpus + released.vcpus).min(free_vcpus.max(0.0));
            w.memory_mb = (w.memory_mb + released.memory_mb).min(candidate.memory_free_mb);
            w.gpus = (w.gpus + released.gpus).min(candidate.gpus_free);
        }
    }
    candidate
}
