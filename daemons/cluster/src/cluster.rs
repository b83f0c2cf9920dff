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
use crate::metrics::Metrics;
use crate::proto;
use crate::sched::{Placer, SchedulerChoice};
use crate::state::{
    Aggregate, ClusterState, Effect, Instance, InstanceKey, RemoteService, RootTable, Timing,
    WorkerRecord, instance_doc_id,
};
use oakestra_sched::PlacementRequest;

/// What the actor is asked to do.
#[derive(Debug)]
pub enum Command {
    /// `POST /api/node/register` (the join token is already checked).
    Register {
        /// The worker's description.
        info: Box<NodeInfo>,
        /// The answer.
        reply: oneshot::Sender<RegisterResponse>,
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
    /// Port.
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
}

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

    /// Runs until `commands` closes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.handle(c).await,
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    /// Handles one command.
    pub async fn handle(&mut self, command: Command) {
        let now = Instant::now();
        let mut place = false;
        match command {
            Command::Register { info, reply } => {
                let response = self.register(*info, now);
                place = true;
                self.flush().await;
                let _ = reply.send(response);
            }
            Command::Mqtt {
                worker,
                kind,
                payload,
            } => {
                self.metrics.mqtt_messages.inc();
                match kind {
                    NodeTopic::Information => match NodeInfo::from_bytes(&payload) {
                        Ok(info) => self.state.worker_information(&worker, info, now),
                        Err(e) => tracing::warn!(worker = %worker, "{e}"),
                    },
                    NodeTopic::Job => match JobStatusReport::from_bytes(&payload) {
                        Ok(report) => {
                            self.state.job_report(&worker, report, now);
                            place = true;
                        }
                        Err(e) => tracing::warn!(worker = %worker, "{e}"),
                    },
                    NodeTopic::JobsResources => match ResourcesReport::from_bytes(&payload) {
                        Ok(report) => self.state.resources_report(&worker, report, now),
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
                    NodeTopic::NetTableQueryRequest => {
                        match TableQueryRequest::from_bytes(&payload) {
                            Ok(request) => self.state.worker_table_query(&worker, &request, now),
                            Err(e) => tracing::warn!(worker = %worker, "{e}"),
                        }
                    }
                    NodeTopic::NetInterestRemove => match InterestRemove::from_bytes(&payload) {
                        Ok(r) => {
                            if !self.state.interest_remove(&worker, &r.appname) {
                                tracing::debug!(worker = %worker, job = %r.appname, "interest/remove of an interest the cluster does not keep");
                            }
                        }
                        Err(e) => tracing::warn!(worker = %worker, "{e}"),
                    },
                    _ => {}
                }
            }
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
        if place {
            self.place_due(now).await;
        }
        self.flush().await;
    }

    fn register(&mut self, mut info: NodeInfo, now: Instant) -> RegisterResponse {
        let id = if valid_worker_id(&info.id) {
            info.id.clone()
        } else {
            oakestra_store::new_object_id().to_string()
        };
        info.id = id.clone();
        let password = random_secret();
        let hash = sha256_hex(&password);
        let known = self.state.worker(&id).is_some();
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
        let (username, password) = if self.broker.per_worker_credentials {
            (id.clone(), password)
        } else {
            (
                self.broker.shared_username.clone(),
                self.broker.shared_password.clone(),
            )
        };
        RegisterResponse {
            wire_version: WireVersion::CURRENT,
            id,
            mqtt_broker_port: self.broker.port,
            mqtt_broker_host: self.broker.host.clone(),
            mqtt_username: username,
            mqtt_password: password,
            subnet: None,
            subnet_v6: None,
        }
    }

    fn root_command(&mut self, kind: proto::root_message::Kind, now: Instant) {
        match kind {
            proto::root_message::Kind::Deploy(d) => {
                // The addresses travel once, typed, in the service record.
                if let Err(e) = self.state.deploy(
                    &d.job_id,
                    d.instance_number,
                    &d.job_name,
                    &d.service_json,
                    now,
                ) {
                    tracing::error!("deploy from the root refused: {e}");
                    let _ = self
                        .outputs
                        .root
                        .send(proto::cluster_message::Kind::InstanceStatus(
                            proto::InstanceStatus {
                                job_id: d.job_id,
                                instance_number: d.instance_number,
                                status: "NO_QUALIFIED_WORKER_FOUND".into(),
                                status_detail: e.to_string(),
                                ..Default::default()
                            },
                        ));
                }
            }
            proto::root_message::Kind::Undeploy(u) => {
                let n = self.state.undeploy(&u.job_id, u.instance_number);
                tracing::info!(job = %u.job_id, instance = ?u.instance_number, removed = n, reason = %u.reason, "undeploy");
            }
            proto::root_message::Kind::LogsRequest(r) => self.ask_worker_for_logs(r),
            proto::root_message::Kind::ServiceTable(t) => self.state.root_table(root_table(t)),
        }
    }

    /// Passes the root's log request to the instance's worker, whose answer comes back on
    /// `nodes/<id>/logs` (see [`Self::forward_logs_reply`]); answers at once with an error when
    /// no active worker holds the instance. The root times the request out; nothing waits here.
    fn ask_worker_for_logs(&self, r: proto::LogsRequest) {
        let key: InstanceKey = (r.job_id.clone(), r.instance_number);
        let target = match self.state.instance(&key) {
            None => Err("this cluster does not hold it".to_owned()),
            Some(i) => match i.worker_id.as_deref() {
                None => Err(format!("it is not on a worker ({})", i.status)),
                Some(w) if !self.state.worker(w).is_some_and(|w| w.active) => {
                    Err(format!("its worker {w} is not active"))
                }
                Some(w) => Ok((w.to_owned(), i.command.job_name.clone())),
            },
        };
        match target {
            Ok((worker, job_name)) => {
                let request = LogsRequest {
                    wire_version: WireVersion::CURRENT,
                    request_id: r.request_id,
                    job_name,
                    instance_number: r.instance_number,
                    tail_lines: r.tail_lines,
                    max_bytes: r.max_bytes,
                };
                self.publish(NodeTopic::ControlLogs, &worker, request.to_bytes());
            }
            Err(why) => {
                let _ = self
                    .outputs
                    .root
                    .send(proto::cluster_message::Kind::LogsReply(proto::LogsReply {
                        request_id: r.request_id,
                        logs: String::new(),
                        error: format!(
                            "no log of instance {} of service {} from a worker: {why}",
                            r.instance_number, r.job_id
                        ),
                    }));
            }
        }
    }

    /// A worker's answer to a log request, up to the root.
    fn forward_logs_reply(&self, reply: LogsReply) {
        let _ = self
            .outputs
            .root
            .send(proto::cluster_message::Kind::LogsReply(proto::LogsReply {
                request_id: reply.request_id,
                logs: reply.logs,
                error: reply.error.unwrap_or_default(),
            }));
    }

    /// Liveness, due placements, resources.
    pub async fn tick(&mut self) {
        let now = Instant::now();
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

    async fn place_due(&mut self, now: Instant) {
        if self.external_batch.is_some() {
            // One external batch at a time; its answers come back as `Command::Placed`.
            return;
        }
        let due = self.state.due_for_placement(now);
        if due.is_empty() {
            return;
        }
        let mut candidates = self.state.candidates();
        let batch: Vec<(InstanceKey, PlacementRequest)> = due
            .into_iter()
            .filter_map(|key| self.state.request(&key).map(|r| (key, r)))
            .collect();
        if matches!(self.placer.choice(), SchedulerChoice::External(_))
            && let Some(commands) = self.commands.clone()
        {
            // An external scheduler may be slow or gone: ask it off the actor, so worker
            // reports and root commands keep flowing meanwhile.
            self.external_batch = Some(batch.iter().map(|(k, _)| k.clone()).collect());
            let placer = self.placer.clone();
            tokio::spawn(async move {
                for (key, request) in batch {
                    let outcome = placer.place(&request, &candidates).await;
                    if let Ok(worker) = &outcome
                        && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
                    {
                        oakestra_sched::commit(&request, c);
                    }
                    if commands
                        .send(Command::Placed { key, outcome })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = commands.send(Command::PlacedAll).await;
            });
            return;
        }
        for (key, request) in batch {
            let outcome = self.placer.place(&request, &candidates).await;
            if let Ok(worker) = &outcome
                && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
            {
                oakestra_sched::commit(&request, c);
            }
            self.record_placement(&key, outcome, now);
        }
    }

    fn record_placement(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, oakestra_sched::NoPlacement>,
        now: Instant,
    ) {
        match &outcome {
            Ok(_) => {
                self.metrics.placements_ok.inc();
            }
            Err(no) => {
                self.metrics.placements_failed.inc();
                tracing::debug!(job = %key.0, instance = key.1, "not placed: {no}");
            }
        }
        self.state.placed(key, outcome, now);
    }

    /// An external scheduler's answer, checked again against the current workers (they may
    /// have changed while it decided).
    fn external_answer(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, oakestra_sched::NoPlacement>,
        now: Instant,
    ) {
        let outcome = match outcome {
            Ok(worker) => {
                let request = self.state.request(key);
                let candidates = self.state.candidates();
                let still_fits = request.as_ref().is_some_and(|r| {
                    candidates
                        .iter()
                        .find(|c| c.name == worker)
                        .is_some_and(|c| oakestra_sched::check(r, c).is_ok())
                });
                if still_fits {
                    Ok(worker)
                } else {
                    Err(oakestra_sched::NoPlacement {
                        status: oakestra_sched::NegativeSchedulingStatus::NoWorkerCapacity,
                        detail: format!(
                            "the external scheduler chose {worker}, which no longer fits"
                        ),
                    })
                }
            }
            Err(no) => Err(no),
        };
        self.record_placement(key, outcome, now);
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
        let effects = self.state.take_effects();
        // A status is sent once per flush, with its latest value (several reports of one
        // instance in a flush would all carry the same, current, status).
        let mut reported = std::collections::HashSet::new();
        for effect in effects {
            match effect {
                Effect::Deploy { worker, command } => {
                    tracing::info!(worker = %worker, job = %command.job_name, instance = command.instance_number, "deploy");
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

/// The root's view of an instance.
pub fn instance_status(i: &Instance) -> proto::InstanceStatus {
    proto::InstanceStatus {
        job_id: i.job_id.clone(),
        instance_number: i.instance_number,
        status: i.status.as_str().to_owned(),
        status_detail: i.status_detail.clone(),
        worker_id: i.worker_id.clone().unwrap_or_default(),
        host_ip: i
            .network
            .as_ref()
            .map_or_else(|| i.public_ip.clone(), |n| n.host_ip.clone()),
        host_port: i.network.as_ref().map_or(0, |n| u32::from(n.host_port)),
        public_ip: i.public_ip.clone(),
        namespace_ip: i
            .network
            .as_ref()
            .map(|n| n.nsip.clone())
            .unwrap_or_default(),
        namespace_ip_v6: i
            .network
            .as_ref()
            .map(|n| n.nsipv6.clone())
            .unwrap_or_default(),
        cpu_percent: i.usage.as_ref().map(|u| u.cpu_percent),
        memory_percent: i.usage.as_ref().map(|u| u.memory_percent),
        disk_bytes: i.usage.as_ref().map(|u| u.disk),
        logs: i.usage.as_ref().map(|u| u.logs.clone()).unwrap_or_default(),
    }
}

/// The root's `ServiceTable` as the state takes it: the addresses parsed (text that is no
/// address is absent), instances in table-entry form (Oakestra's `service_ip` order: the RR
/// address, then the instance's own, then the closest address when the service has one; the
/// cluster in `cluster_id`).
pub fn root_table(t: proto::ServiceTable) -> RootTable {
    fn ip<T: std::str::FromStr>(text: &str) -> Option<T> {
        text.trim().parse().ok()
    }
    let addresses = ServiceAddresses {
        rr_ip: ip(&t.rr_ip),
        rr_ip_v6: ip(&t.rr_ip_v6),
        closest_ip: ip(&t.closest_ip),
        closest_ip_v6: ip(&t.closest_ip_v6),
        ..ServiceAddresses::default()
    };
    let service = t.found.then(|| RemoteService {
        addresses,
        instances: t
            .instances
            .iter()
            .map(|i| {
                let mut extra = oakestra_core::sla::Extra::new();
                if !i.cluster_id.is_empty() {
                    extra.insert("cluster_id".into(), Value::String(i.cluster_id.clone()));
                }
                TableEntryInstance {
                    instance_number: i.instance_number,
                    namespace_ip: i.namespace_ip.clone(),
                    namespace_ip_v6: i.namespace_ip_v6.clone(),
                    host_ip: i.host_ip.clone(),
                    host_port: u16::try_from(i.host_port).unwrap_or_default(),
                    service_ip: ServiceIp::list(&ServiceAddresses {
                        instance_ip: ip(&i.instance_ip),
                        instance_ip_v6: ip(&i.instance_ip_v6),
                        ..addresses
                    }),
                    extra,
                }
            })
            .collect(),
    });
    RootTable {
        request_id: t.request_id,
        job_name: t.job_name,
        service,
    }
}

/// The root's `Resources` from the aggregate.
pub fn resources_message(a: &Aggregate) -> proto::Resources {
    proto::Resources {
        active_workers: a.active_workers,
        cpu_cores: a.cpu_cores,
        cpu_load_percent: a.cpu_load_percent,
        cpu_usage_percent: a.cpu_usage_percent,
        memory_total_mb: a.memory_total_mb,
        memory_free_mb: a.memory_free_mb,
        gpus: a.gpus,
        gpus_free: a.gpus_free,
        max_worker_free_vcpus: a.max_worker_free_vcpus,
        max_worker_free_memory_mb: a.max_worker_free_memory_mb,
        max_worker_free_gpus: a.max_worker_free_gpus,
        virtualization: a.virtualization.clone(),
        arch: a.arch.clone(),
        csi_drivers: a.csi_drivers.clone(),
        addons: a.addons.clone(),
        gpu_drivers: Vec::new(),
    }
}
