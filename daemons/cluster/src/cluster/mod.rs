//! The actor that owns the [`ClusterState`]: it receives worker registrations, MQTT messages,
//! root commands and clock ticks one at a time, runs the scheduler, persists what changed and
//! then sends the resulting commands to workers (MQTT) and reports to the root.
//!
//! Its outputs are two channels ([`Outputs`]): MQTT publications and messages for the root.
//! The real ones feed the MQTT publisher and the root link; tests read them directly.

use std::sync::Arc;
use std::time::Duration;

use oakestra_core::addresses::ServiceAddresses;
use oakestra_core::status::Status;
use oakestra_proto::mqtt::{
    ControlError, InterestRemove, JobStatusReport, LogsReply, LogsRequest, NodeInfo, NodeTopic,
    Payload, RegisterResponse, ResourcesReport, ServiceDeployed, ServiceIp, TableEntryInstance,
    TableQueryRequest, WireVersion,
};
use oakestra_store::{Collection, Store, Write};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::broker::{Credentials, random_secret, sha256_hex};
use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::proto;
use crate::sched::{Placer, SchedulerChoice};
use crate::state::{
    Aggregate, ClusterState, Effect, Instance, InstanceKey, RemoteService, RootTable, Timing,
    WorkerRecord, instance_doc_id,
};
use oakestra_sched::PlacementRequest;

mod placing;
mod root;

pub use root::{instance_status, resources_message, root_table};

/// What the actor is asked to do.
#[derive(Debug)]
pub enum Command {
    /// `POST /api/node/register` (the join token is already checked).
    Register {
        /// The worker's description.
        info: Box<NodeInfo>,
        /// The answer, or why the registration is refused.
        reply: oneshot::Sender<Result<RegisterResponse, String>>,
    },
    /// A message on `nodes/<worker>/<kind>`.
    Mqtt {
        /// The worker id from the topic.
        worker: String,
        /// Which topic.
        kind: NodeTopic,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A command from the root.
    Root(proto::root_message::Kind),
    /// The root link (re)connected and needs the full picture.
    Snapshot(oneshot::Sender<proto::Snapshot>),
    /// `GET /api/cluster/status`.
    Status(oneshot::Sender<Value>),
    /// An external scheduler's answer for one instance.
    Placed {
        /// The instance.
        key: InstanceKey,
        /// The answer.
        outcome: Result<String, oakestra_sched::NoPlacement>,
    },
    /// The external scheduler answered the whole batch.
    PlacedAll,
}

/// Where the actor's output goes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `(topic, payload)` to publish.
    pub mqtt: mpsc::UnboundedSender<(String, Vec<u8>)>,
    /// Messages for the root (dropped by the link while it is down: the snapshot on
    /// reconnect carries the latest state).
    pub root: mpsc::UnboundedSender<proto::cluster_message::Kind>,
}

/// What a worker is told about the broker at registration.
#[derive(Debug, Clone, Default)]
pub struct BrokerAdvert {
    /// Host to dial (empty: the cluster's host).
    pub host: String,
    /// Port workers dial for MQTT.
    pub port: u16,
    /// With the embedded broker every worker gets its own password.
    pub per_worker_credentials: bool,
    /// Otherwise: the shared worker credentials of the external broker (may be empty).
    pub shared_username: String,
    /// Password for `shared_username`.
    pub shared_password: String,
}

/// The actor.
#[derive(Debug)]
pub struct Actor {
    state: ClusterState,
    store: Arc<dyn Store>,
    outputs: Outputs,
    placer: Placer,
    credentials: Credentials,
    broker: BrokerAdvert,
    metrics: Metrics,
    name: String,
    last_resources: Option<(proto::Resources, Instant)>,
    last_aggregate: Option<Instant>,
    /// The actor's own inbox, for answers computed off the actor.
    commands: Option<mpsc::Sender<Command>>,
    /// Instances an external scheduler is deciding about.
    external_batch: Option<std::collections::BTreeSet<InstanceKey>>,
    /// Workers' heartbeats and usage reports, drained every tick.
    reports: Inbox,
    /// Registration answers held until the next flush has stored the workers' records.
    registrations: Vec<RegistrationAnswer>,
}

/// A registration's answer channel and its answer.
type RegistrationAnswer = (
    oneshot::Sender<Result<RegisterResponse, String>>,
    Result<RegisterResponse, String>,
);

/// How often the actor checks liveness, retries placements and reports resources.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the aggregated resources are computed (sent when they changed).
pub const AGGREGATE_EVERY: Duration = Duration::from_millis(500);
/// Resources go to the root when they change, and at least this often.
pub const RESOURCES_EVERY: Duration = Duration::from_secs(3);

impl Actor {
    /// Loads the state from `store` and builds the actor. Workers' credentials are loaded
    /// into `credentials`.
    #[allow(clippy::too_many_arguments)]
    pub async fn load(
        name: String,
        store: Arc<dyn Store>,
        timing: Timing,
        outputs: Outputs,
        placer: Placer,
        credentials: Credentials,
        broker: BrokerAdvert,
        metrics: Metrics,
    ) -> Result<Actor, oakestra_store::StoreError> {
        let mut workers = Vec::new();
        for doc in store.list(Collection::Workers).await? {
            match serde_json::from_value::<WorkerRecord>(doc.body) {
                Ok(w) => workers.push(w),
                Err(e) => tracing::error!(id = %doc.id, "unreadable worker record skipped: {e}"),
            }
        }
        let mut instances = Vec::new();
        for doc in store.list(Collection::ClusterInstances).await? {
            match serde_json::from_value::<Instance>(doc.body) {
                Ok(i) => instances.push(i),
                Err(e) => tracing::error!(id = %doc.id, "unreadable instance record skipped: {e}"),
            }
        }
        for w in &workers {
            credentials.allow_hashed(&w.id, &w.mqtt_password_sha256);
        }
        tracing::info!(
            workers = workers.len(),
            instances = instances.len(),
            "state loaded from {}",
            store.describe()
        );
        let now = Instant::now();
        let state = ClusterState::restore(timing, workers, instances, now);
        let mut actor = Actor {
            state,
            store,
            outputs,
            placer,
            credentials,
            broker,
            metrics,
            name,
            last_resources: None,
            last_aggregate: None,
            commands: None,
            external_batch: None,
            reports: Inbox::default(),
            registrations: Vec::new(),
        };
        actor.resend_unconfirmed_deploys();
        Ok(actor)
    }

    /// A deploy persisted just before a crash may never have been published: send every
    /// deploy that no worker confirmed yet again (workers ignore a deploy of an instance they
    /// already run).
    fn resend_unconfirmed_deploys(&mut self) {
        let pending: Vec<(String, Box<oakestra_proto::mqtt::DeployCommand>)> = self
            .state
            .instances()
            .filter(|i| {
                i.status
                    == Status::Positive(
                        oakestra_core::status::PositiveSchedulingStatus::NodeScheduled,
                    )
            })
            .filter_map(|i| {
                i.worker_id
                    .clone()
                    .map(|w| (w, Box::new(i.command.clone())))
            })
            .collect();
        for (worker, command) in pending {
            self.publish(NodeTopic::ControlDeploy, &worker, command.to_bytes());
        }
    }

    /// Sets how the workers' free capacity is computed.
    pub fn set_capacity(&mut self, policy: oakestra_sched::capacity::CapacityPolicy) {
        self.state.set_capacity(policy);
    }

    /// Gives the actor a sender of its own inbox (needed by the external scheduler, whose
    /// calls run off the actor).
    pub fn set_inbox(&mut self, commands: mpsc::Sender<Command>) {
        self.commands = Some(commands);
    }

    /// Where the MQTT loop leaves workers' heartbeats and usage reports (and the time it
    /// heard from each worker): applied every tick, before liveness is checked.
    pub fn set_reports(&mut self, reports: Inbox) {
        self.reports = reports;
    }

    /// Runs until `commands` closes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        /// Most commands applied before one placement pass and one flush.
        const MAX_COMMAND_BATCH: usize = 4096;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => {
                        // What has already arrived is applied with it, then placed and
                        // persisted once: a burst of thousands of root deploys costs one
                        // placement pass and one store commit per batch, not per command, so
                        // the workers' reports queued behind it are not delayed into
                        // "silent" (each command still sees the state its predecessors left).
                        let mut place = self.apply(c).await;
                        for _ in 1..MAX_COMMAND_BATCH {
                            match commands.try_recv() {
                                Ok(c) => place |= self.apply(c).await,
                                Err(_) => break,
                            }
                        }
                        if place {
                            self.place_due(Instant::now()).await;
                        }
                        self.flush().await;
                    }
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    /// Handles one command: applies it, places what is due and persists and publishes.
    pub async fn handle(&mut self, command: Command) {
        if self.apply(command).await {
            self.place_due(Instant::now()).await;
        }
        self.flush().await;
    }

    /// Applies one command to the state; `true` when placement may be due. Persisting and
    /// publishing are left to the caller's flush (a registration is answered by that flush,
    /// once the worker's record is stored).
    async fn apply(&mut self, command: Command) -> bool {
        let now = Instant::now();
        let mut place = false;
        match command {
            Command::Register { info, reply } => {
                // Answered by the flush that stores the record: registrations arriving
                // together (a thousand workers starting at once) share one durable commit.
                let response = self.register(*info, now);
                self.registrations.push((reply, response));
                place = true;
            }
            Command::Mqtt {
                worker,
                kind,
                payload,
            } => match kind {
                NodeTopic::Information | NodeTopic::JobsResources => {
                    self.worker_report(&worker, kind, &payload, now)
                }
                NodeTopic::Job => match JobStatusReport::from_bytes(&payload) {
                    Ok(report) => {
                        self.state.job_report(&worker, report, now);
                        place = true;
                    }
                    Err(e) => tracing::warn!(worker = %worker, "{e}"),
                },
                NodeTopic::NetServiceDeployed => match ServiceDeployed::from_bytes(&payload) {
                    Ok(report) => {
                        if !self.state.service_deployed(&worker, &report) {
                            tracing::debug!(worker = %worker, job = %report.appname, "network report of an instance not placed there");
                        }
                    }
                    Err(e) => tracing::warn!(worker = %worker, "{e}"),
                },
                NodeTopic::Logs => match LogsReply::from_bytes(&payload) {
                    Ok(reply) => self.forward_logs_reply(reply),
                    Err(e) => tracing::warn!(worker = %worker, "{e}"),
                },
                NodeTopic::NetTableQueryRequest => match TableQueryRequest::from_bytes(&payload) {
                    Ok(request) => self.state.worker_table_query(&worker, &request, now),
                    Err(e) => tracing::warn!(worker = %worker, "{e}"),
                },
                NodeTopic::NetInterestRemove => match InterestRemove::from_bytes(&payload) {
                    Ok(r) => {
                        if !self.state.interest_remove(&worker, &r.appname) {
                            tracing::debug!(worker = %worker, job = %r.appname, "interest/remove of an interest the cluster does not keep");
                        }
                    }
                    Err(e) => tracing::warn!(worker = %worker, "{e}"),
                },
                _ => {}
            },
            Command::Root(kind) => {
                self.root_command(kind, now);
                place = true;
            }
            Command::Snapshot(reply) => {
                let snapshot = proto::Snapshot {
                    resources: Some(self.resources()),
                    instances: self.state.instances().map(instance_status).collect(),
                };
                // Sent after the snapshot: the (possibly restarted) root learns again which
                // services of other clusters this cluster follows.
                self.state.ask_root_again(now);
                let _ = reply.send(snapshot);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status_json(now));
            }
            Command::Placed { key, outcome } => {
                if let Some(batch) = &mut self.external_batch {
                    batch.remove(&key);
                }
                self.external_answer(&key, outcome, now);
            }
            Command::PlacedAll => {
                self.external_batch = None;
                place = true;
            }
        }
        place
    }

    fn register(&mut self, mut info: NodeInfo, now: Instant) -> Result<RegisterResponse, String> {
        let id = if valid_worker_id(&info.id) {
            info.id.clone()
        } else {
            oakestra_store::new_object_id().to_string()
        };
        info.id = id.clone();
        // A registered id is taken over only by the worker that holds its secret: the join
        // token alone would let anyone take another worker's identity and MQTT topics.
        let proof = std::mem::take(&mut info.worker_secret);
        let known = match self.state.worker(&id) {
            Some(w) if sha256_hex(&proof) != w.record.mqtt_password_sha256 => {
                tracing::warn!(worker = %id, "registration under a registered id without its secret refused");
                return Err(format!(
                    "worker id {id:?} is registered and this request does not carry its secret \
                     (worker_secret, kept in the worker's node-state.json); a worker with a new \
                     data directory registers without an id"
                ));
            }
            Some(_) => true,
            None => false,
        };
        let password = random_secret();
        let hash = sha256_hex(&password);
        self.credentials.allow_hashed(&id, &hash);
        self.state.register_worker(
            WorkerRecord {
                id: id.clone(),
                info,
                mqtt_password_sha256: hash,
            },
            now,
        );
        tracing::info!(worker = %id, again = known, "worker registered");
        let secret = password.clone();
        let (username, password) = if self.broker.per_worker_credentials {
            (id.clone(), password)
        } else {
            (
                self.broker.shared_username.clone(),
                self.broker.shared_password.clone(),
            )
        };
        Ok(RegisterResponse {
            wire_version: WireVersion::CURRENT,
            id,
            mqtt_broker_port: self.broker.port,
            mqtt_broker_host: self.broker.host.clone(),
            mqtt_username: username,
            mqtt_password: password,
            worker_secret: secret,
            subnet: None,
            subnet_v6: None,
            subnet_prefix_len: None,
        })
    }

    /// A worker's heartbeat (`information`) or usage report (`jobs/resources`).
    fn worker_report(&mut self, worker: &str, kind: NodeTopic, payload: &[u8], now: Instant) {
        match kind {
            NodeTopic::Information => match NodeInfo::from_bytes(payload) {
                Ok(info) => self.state.worker_information(worker, info, now),
                Err(e) => tracing::warn!(worker = %worker, "{e}"),
            },
            NodeTopic::JobsResources => match ResourcesReport::from_bytes(payload) {
                Ok(report) => self.state.resources_report(worker, report, now),
                Err(e) => tracing::warn!(worker = %worker, "{e}"),
            },
            _ => {}
        }
    }

    /// Applies the newest heartbeat and usage report of every worker that sent one since the
    /// last tick, and when each worker was last heard from.
    fn drain_reports(&mut self, now: Instant) {
        for (worker, latest) in self.reports.drain() {
            if let Some(payload) = latest.information {
                self.worker_report(&worker, NodeTopic::Information, &payload, now);
            }
            if let Some(payload) = latest.resources {
                self.worker_report(&worker, NodeTopic::JobsResources, &payload, now);
            }
            if let Some(at) = latest.heard {
                self.state.heard_from(&worker, at);
            }
        }
    }

    /// Liveness, due placements, resources.
    pub async fn tick(&mut self) {
        let now = Instant::now();
        self.drain_reports(now);
        let lost = self.state.check_liveness(now);
        self.metrics.workers_lost.inc_by(lost.len() as u64);
        let expired = self.state.expire_root_queries(now);
        if expired > 0 {
            tracing::debug!(expired, "table queries the root did not answer in time");
        }
        self.place_due(now).await;
        // The aggregate walks every worker: twice a second is enough for the root.
        let aggregate_due = self
            .last_aggregate
            .is_none_or(|at| now.saturating_duration_since(at) >= AGGREGATE_EVERY);
        if aggregate_due {
            self.last_aggregate = Some(now);
            let aggregate = self.state.aggregate();
            let resources = resources_message(&aggregate);
            let due = match &self.last_resources {
                None => true,
                Some((last, at)) => {
                    *last != resources || now.saturating_duration_since(*at) >= RESOURCES_EVERY
                }
            };
            if due {
                self.last_resources = Some((resources.clone(), now));
                let _ = self
                    .outputs
                    .root
                    .send(proto::cluster_message::Kind::Resources(resources));
            }
            self.metrics.observe(&self.state, &aggregate);
        }
        self.flush().await;
    }

    /// Persists what changed, then publishes commands and reports.
    async fn flush(&mut self) {
        let (instances, removed, workers) = self.state.take_dirty();
        let mut writes = Vec::with_capacity(instances.len() + removed.len() + workers.len());
        for i in &instances {
            let key: InstanceKey = (i.job_id.clone(), i.instance_number);
            match serde_json::to_value(i) {
                Ok(body) => writes.push(Write::upsert(
                    Collection::ClusterInstances,
                    instance_doc_id(&key),
                    body,
                )),
                Err(e) => tracing::error!("instance {} not serialisable: {e}", i.job_name),
            }
        }
        for key in &removed {
            writes.push(Write::delete_any(
                Collection::ClusterInstances,
                instance_doc_id(key),
            ));
        }
        for w in &workers {
            if let Ok(body) = serde_json::to_value(w) {
                writes.push(Write::upsert(Collection::Workers, w.id.clone(), body));
            }
        }
        if !writes.is_empty()
            && let Err(e) = self.store.commit(writes).await
        {
            self.metrics.store_errors.inc();
            tracing::error!("persisting the cluster state failed: {e}");
        }
        for (reply, response) in self.registrations.drain(..) {
            let _ = reply.send(response);
        }
        let effects = self.state.take_effects();
        // A status is sent once per flush, with its latest value (several reports of one
        // instance in a flush would all carry the same, current, status).
        let mut reported = std::collections::HashSet::new();
        for effect in effects {
            match effect {
                Effect::Deploy { worker, command } => {
                    tracing::info!(worker = %worker, job = %command.job_name, instance = command.instance_number, "deploy");
                    let attempts = self
                        .state
                        .instance(&(command.id.clone(), command.instance_number))
                        .map_or(0, |i| i.attempts);
                    self.metrics
                        .deployed(&command.job_name, command.instance_number, attempts);
                    self.publish(NodeTopic::ControlDeploy, &worker, command.to_bytes());
                }
                Effect::Delete { worker, command } => {
                    tracing::info!(worker = %worker, job = %command.job_name, instance = command.instance_number, "delete");
                    self.publish(NodeTopic::ControlDelete, &worker, command.to_bytes());
                }
                Effect::ControlError { worker, message } => {
                    let payload = ControlError {
                        wire_version: WireVersion::CURRENT,
                        message,
                    };
                    self.publish(NodeTopic::ControlError, &worker, payload.to_bytes());
                }
                Effect::Table { worker, result } => match serde_json::to_vec(&result) {
                    Ok(body) => self.publish(NodeTopic::NetTableQueryResult, &worker, body),
                    Err(e) => tracing::warn!("encoding a table query answer: {e}"),
                },
                Effect::JobUpdate { job_name, kind } => {
                    match oakestra_proto::mqtt::Topic::job_updates(job_name) {
                        Ok(topic) => {
                            let payload = oakestra_proto::mqtt::UpdatesAvailable {
                                wire_version: WireVersion::CURRENT,
                                kind,
                            };
                            match serde_json::to_vec(&payload) {
                                Ok(body) => {
                                    let _ = self.outputs.mqtt.send((topic.to_string(), body));
                                }
                                Err(e) => tracing::warn!("encoding updates_available: {e}"),
                            }
                        }
                        Err(e) => tracing::debug!("no updates_available signal: {e}"),
                    }
                }
                Effect::AskRoot {
                    request_id,
                    job_name,
                    ip,
                } => {
                    let _ = self
                        .outputs
                        .root
                        .send(proto::cluster_message::Kind::TableQuery(
                            proto::TableQuery {
                                request_id,
                                job_name,
                                ip,
                            },
                        ));
                }
                Effect::DropRootInterest { job_name } => {
                    let _ =
                        self.outputs
                            .root
                            .send(proto::cluster_message::Kind::TableInterestRemove(
                                proto::TableInterestRemove { job_name },
                            ));
                }
                Effect::Report(key) => {
                    if !reported.insert(key.clone()) {
                        continue;
                    }
                    if let Some(i) = self.state.instance(&key) {
                        tracing::debug!(job = %i.job_name, instance = i.instance_number, status = %i.status, "status");
                        let _ =
                            self.outputs
                                .root
                                .send(proto::cluster_message::Kind::InstanceStatus(
                                    instance_status(i),
                                ));
                    }
                }
            }
        }
    }

    fn publish(&self, topic: NodeTopic, worker: &str, payload: Vec<u8>) {
        let _ = self.outputs.mqtt.send((topic.for_node(worker), payload));
    }

    fn resources(&self) -> proto::Resources {
        resources_message(&self.state.aggregate())
    }

    fn status_json(&self, now: Instant) -> Value {
        let workers: Vec<Value> = self
            .state
            .workers()
            .map(|w| {
                let i = &w.record.info;
                json!({
                    "id": w.record.id,
                    "host": i.host,
                    "ip": i.ip,
                    "active": w.active,
                    "seconds_since_report": now.saturating_duration_since(w.last_seen).as_secs_f64(),
                    "vcpus": i.vcpus,
                    "cpu_percent": i.cpu_percent,
                    "memory_free_mb": i.memory,
                    "memory_total_mb": i.memory_total,
                    "architecture": i.architecture,
                    "virtualization": i.virtualization,
                    "location": i.location,
                })
            })
            .collect();
        let instances: Vec<Value> = self
            .state
            .instances()
            .map(|i| {
                json!({
                    "job_id": i.job_id,
                    "job_name": i.job_name,
                    "instance_number": i.instance_number,
                    "status": i.status.as_str(),
                    "status_detail": i.status_detail,
                    "worker_id": i.worker_id,
                    "attempts": i.attempts,
                })
            })
            .collect();
        json!({
            "name": self.name,
            "scheduler": self.placer.choice().to_string(),
            "resources": self.state.aggregate(),
            "workers": workers,
            "instances": instances,
        })
    }
}

fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
