//! The cluster's state machine: the worker registry, the instances it manages, placement
//! bookkeeping and self-healing.
//!
//! No I/O here. Every input (a worker report, a root command, a clock tick) is a method that
//! takes the current time and leaves [`Effect`]s (MQTT commands, reports to the root) and
//! dirty records (to persist) behind; the actor in [`crate::cluster`] executes them. Time is a
//! parameter (`tokio::time::Instant`), so tests drive it with `tokio::time::pause`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use oakestra_core::model::ServiceRecord;
use oakestra_core::status::{
    DeploymentStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_proto::mqtt::{
    DeleteCommand, DeployCommand, JobStatusReport, NodeInfo, ResourcesReport, ServiceDeployed,
    ServiceIp, ServiceUsage, TableEntryInstance, TableQueryRequest, TableQueryResult, UpdateKind,
    WireVersion,
};

pub use crate::tables::{ROOT_QUERY_TIMEOUT, RemoteService, RootTable};
use crate::tables::{RootQuery, Tables};
use oakestra_sched::capacity::{CapacityPolicy, WorkerResources};
use oakestra_sched::{Candidate, Level, NoPlacement, PlacementRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

/// `(job id, instance number)`.
pub type InstanceKey = (String, u32);

/// The store id of an instance: `<job id>/<instance number>`.
pub fn instance_doc_id(key: &InstanceKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// A registered worker, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Worker id (also its MQTT username).
    #[serde(rename = "_id")]
    pub id: String,
    /// What it sent at registration (static resources, identity) and, later, its latest
    /// `information` report.
    pub info: NodeInfo,
    /// SHA-256 (hex) of its MQTT password.
    pub mqtt_password_sha256: String,
}

/// A worker in memory.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The persisted part.
    pub record: WorkerRecord,
    /// Last `information` (or registration).
    pub last_seen: Instant,
    /// Reported within the timeout.
    pub active: bool,
    /// Whether an `information` came since the worker registered (or the cluster started):
    /// only then is its broker session known to be subscribed to its control topics.
    pub session_seen: bool,
}

/// An instance the cluster manages, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Job (service) id.
    pub job_id: String,
    /// Instance number.
    pub instance_number: u32,
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// What a worker gets on `control/deploy`.
    pub command: DeployCommand,
    /// The placement request derived from the SLA.
    pub request: PlacementRequest,
    /// Current status.
    pub status: Status,
    /// Detail of the status.
    #[serde(default)]
    pub status_detail: String,
    /// Worker it is placed on (none while waiting for a placement).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Worker address as it reported it.
    #[serde(default)]
    pub public_ip: String,
    /// Redeploys since it last reached RUNNING (drives the backoff).
    #[serde(default)]
    pub attempts: u32,
    /// Workers that may still hold an old copy: told to delete it when they are back.
    #[serde(default)]
    pub stale_copies: BTreeSet<String>,
    /// Usage from the last `jobs/resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ServiceUsage>,
    /// Earliest next placement attempt (not persisted: after a restart, try at once).
    #[serde(skip)]
    pub retry_at: Option<Instant>,
    /// When it last reached RUNNING (the backoff starts over once it ran long enough).
    #[serde(skip)]
    pub running_since: Option<Instant>,
    /// When its usage was last sent to the root (not persisted: the snapshot of a reconnect
    /// carries it anyway).
    #[serde(skip)]
    pub usage_forwarded_at: Option<Instant>,
    /// Where its network is, as its worker reported it (`net/service/deployed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<InstanceNetwork>,
}

/// An instance's overlay network on its worker (issue 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNetwork {
    /// Its address in the worker's subnet.
    pub nsip: String,
    /// Its IPv6 address in the worker's subnet.
    #[serde(default)]
    pub nsipv6: String,
    /// The worker's address.
    pub host_ip: String,
    /// The worker's tunnel port.
    pub host_port: u16,
}

impl Instance {
    fn key(&self) -> InstanceKey {
        (self.job_id.clone(), self.instance_number)
    }

    /// Waiting for a worker (never placed, its worker lost, failed, or refused by the scheduler).
    pub fn needs_placement(&self) -> bool {
        self.worker_id.is_none() && self.status != Status::Deployment(DeploymentStatus::Completed)
    }

    fn delete_command(&self) -> DeleteCommand {
        DeleteCommand {
            wire_version: WireVersion::CURRENT,
            job_name: self.job_name.clone(),
            virtualization: self.command.virtualization.clone(),
            instance_number: self.instance_number,
        }
    }
}

/// Something the actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish `nodes/<worker>/control/deploy`.
    Deploy {
        /// Target worker.
        worker: String,
        /// Payload.
        command: Box<DeployCommand>,
    },
    /// Publish `nodes/<worker>/control/delete`.
    Delete {
        /// Target worker.
        worker: String,
        /// Payload.
        command: DeleteCommand,
    },
    /// Publish `nodes/<worker>/control/error`.
    ControlError {
        /// Target worker.
        worker: String,
        /// Message.
        message: String,
    },
    /// Send the instance's current status to the root.
    Report(InstanceKey),
    /// Publish `nodes/<worker>/net/tablequery/result`: the answer to the worker's table
    /// query, or an update of a service it is interested in.
    Table {
        /// Target worker.
        worker: String,
        /// Payload.
        result: Box<TableQueryResult>,
    },
    /// Publish Oakestra's `jobs/<job_name>/updates_available` (for NetManagers that follow
    /// that signal; ours get the table pushed).
    JobUpdate {
        /// The job.
        job_name: String,
        /// Whether routable instances were removed or added/moved.
        kind: UpdateKind,
    },
    /// Ask the root about a service this cluster does not hold (`TableQuery`).
    AskRoot {
        /// Identifies the answer.
        request_id: String,
        /// The job name asked for (or empty).
        job_name: String,
        /// The service IP asked for (or empty).
        ip: String,
    },
    /// Tell the root this cluster no longer needs updates of a service (`TableInterestRemove`).
    DropRootInterest {
        /// The job.
        job_name: String,
    },
}

/// Shortest interval between two usage reports of one instance to the root.
pub const USAGE_FORWARD_INTERVAL: Duration = Duration::from_secs(5);

/// Whether new usage differs from what the root has enough to send it again.
fn usage_moved(old: Option<&ServiceUsage>, new: &ServiceUsage) -> bool {
    let Some(old) = old else { return true };
    old.logs != new.logs
        || (old.cpu_percent - new.cpu_percent).abs() >= 1.0
        || (old.memory_percent - new.memory_percent).abs() >= 1.0
        || old.disk.abs_diff(new.disk) >= 1 << 20
}

/// Timing of liveness and healing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A worker silent for longer is inactive.
    pub worker_timeout: Duration,
    /// First redeploy delay after a failure (the very first redeploy is immediate).
    pub backoff_base: Duration,
    /// Longest redeploy delay.
    pub backoff_cap: Duration,
    /// How long an instance the scheduler could not place waits before the next attempt
    /// (sooner when a worker registers or comes back).
    pub unplaced_retry: Duration,
    /// An instance RUNNING at least this long before it fails starts the backoff over.
    pub stable_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            worker_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            unplaced_retry: Duration::from_secs(2),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// Delay before redeploy number `attempt` (0-based): 0, base, 2·base, 4·base … ≤ cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (attempt - 1).min(16);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_cap)
    }
}

/// A deploy command from the root that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// `service_json` is not a service record.
    #[error("service_json of job {job_id} is not a service record: {source}")]
    ServiceJson {
        /// The job.
        job_id: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Aggregated resources of the active workers (what the root schedules on).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Aggregate {
    /// Active workers.
    pub active_workers: u32,
    /// All registered workers.
    pub workers: u32,
    /// Sum of cores.
    pub cpu_cores: f64,
    /// Load such that `cpu_cores × (100 − load) / 100` is the free cores.
    pub cpu_load_percent: f64,
    /// Measured CPU usage of the active workers, weighted by their cores, 0–100 %.
    pub cpu_usage_percent: f64,
    /// Sum of total memory, MB.
    pub memory_total_mb: u64,
    /// Sum of free memory, MB.
    pub memory_free_mb: u64,
    /// GPUs.
    pub gpus: u32,
    /// GPUs not assigned to an instance.
    pub gpus_free: u32,
    /// Largest free cores of one worker.
    pub max_worker_free_vcpus: f64,
    /// Largest free memory of one worker, MB.
    pub max_worker_free_memory_mb: u64,
    /// Largest free GPUs of one worker.
    pub max_worker_free_gpus: u32,
    /// Union of runtimes.
    pub virtualization: Vec<String>,
    /// Union of architectures.
    pub arch: Vec<String>,
    /// Union of CSI drivers.
    pub csi_drivers: Vec<String>,
    /// Union of add-ons.
    pub addons: Vec<String>,
}

/// The whole cluster state.
#[derive(Debug)]
pub struct ClusterState {
    timing: Timing,
    capacity: CapacityPolicy,
    workers: BTreeMap<String, Worker>,
    instances: BTreeMap<InstanceKey, Instance>,
    by_job_name: HashMap<String, String>,
    effects: Vec<Effect>,
    dirty_instances: BTreeSet<InstanceKey>,
    removed_instances: BTreeSet<InstanceKey>,
    dirty_workers: BTreeSet<String>,
    /// Set when capacity may have appeared: the next tick retries unplaced instances at once.
    capacity_changed: bool,
    /// Interests, services of other clusters, queries waiting for the root.
    pub(crate) tables: Tables,
}

impl ClusterState {
    /// An empty cluster.
    pub fn new(timing: Timing) -> Self {
        ClusterState {
            timing,
            capacity: CapacityPolicy::default(),
            workers: BTreeMap::new(),
            instances: BTreeMap::new(),
            by_job_name: HashMap::new(),
            effects: Vec::new(),
            dirty_instances: BTreeSet::new(),
            removed_instances: BTreeSet::new(),
            dirty_workers: BTreeSet::new(),
            capacity_changed: false,
            tables: Tables::default(),
        }
    }

    /// State restored from the store: workers get a full timeout to report before they count
    /// as lost, instances waiting for a worker are retried at once.
    pub fn restore(
        timing: Timing,
        workers: Vec<WorkerRecord>,
        instances: Vec<Instance>,
        now: Instant,
    ) -> Self {
        let mut state = ClusterState::new(timing);
        for record in workers {
            state.workers.insert(
                record.id.clone(),
                Worker {
                    record,
                    last_seen: now,
                    active: true,
                    // Unconfirmed deploys are sent again at load (`resend_unconfirmed_deploys`).
                    session_seen: true,
                },
            );
        }
        for instance in instances {
            state
                .by_job_name
                .insert(instance.job_name.clone(), instance.job_id.clone());
            state.instances.insert(instance.key(), instance);
        }
        state
    }

    /// Timing in use.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Sets how free capacity is computed (reservations by default).
    pub fn set_capacity(&mut self, policy: CapacityPolicy) {
        self.capacity = policy;
        self.capacity_changed = true;
    }

    /// Capacity accounting in use.
    pub fn capacity(&self) -> CapacityPolicy {
        self.capacity
    }

    /// Registered workers.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// A worker.
    pub fn worker(&self, id: &str) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// Managed instances.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// One instance.
    pub fn instance(&self, key: &InstanceKey) -> Option<&Instance> {
        self.instances.get(key)
    }

    /// Takes the effects produced so far, with the updates of every service whose instances
    /// changed for the workers interested in it.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.fan_out_changes();
        std::mem::take(&mut self.effects)
    }

    /// Takes what must be persisted: changed instances, removed instance keys, changed workers.
    pub fn take_dirty(&mut self) -> (Vec<Instance>, Vec<InstanceKey>, Vec<WorkerRecord>) {
        let instances = std::mem::take(&mut self.dirty_instances)
            .into_iter()
            .filter_map(|k| self.instances.get(&k).cloned())
            .collect();
        let removed = std::mem::take(&mut self.removed_instances)
            .into_iter()
            .collect();
        let workers = std::mem::take(&mut self.dirty_workers)
            .into_iter()
            .filter_map(|id| self.workers.get(&id).map(|w| w.record.clone()))
            .collect();
        (instances, removed, workers)
    }

    // ---- workers -------------------------------------------------------------------------

    /// A worker registered (new, or again with its id). It is active at once.
    pub fn register_worker(&mut self, record: WorkerRecord, now: Instant) {
        let id = record.id.clone();
        let was_inactive = self.workers.get(&id).is_some_and(|w| !w.active);
        self.workers.insert(
            id.clone(),
            Worker {
                record,
                last_seen: now,
                active: true,
                session_seen: false,
            },
        );
        self.dirty_workers.insert(id.clone());
        self.capacity_changed = true;
        self.worker_back(&id, was_inactive);
    }

    /// `nodes/<id>/information`.
    pub fn worker_information(&mut self, id: &str, info: NodeInfo, now: Instant) {
        let Some(worker) = self.workers.get_mut(id) else {
            self.effects.push(Effect::ControlError {
                worker: id.to_owned(),
                message: "Node not registered to the cluster".into(),
            });
            return;
        };
        let was_inactive = !worker.active;
        let first_since_registration = !worker.session_seen;
        worker.last_seen = now;
        worker.active = true;
        worker.session_seen = true;
        merge_dynamic(&mut worker.record.info, info);
        if first_since_registration {
            // A deploy published between the worker's registration and its subscription
            // reached nobody: send what it has not confirmed again (deploys are idempotent).
            for instance in self.instances.values().filter(|i| {
                i.worker_id.as_deref() == Some(id)
                    && i.status == Status::Positive(PositiveSchedulingStatus::NodeScheduled)
            }) {
                self.effects.push(Effect::Deploy {
                    worker: id.to_owned(),
                    command: Box::new(instance.command.clone()),
                });
            }
        }
        if was_inactive {
            self.dirty_workers.insert(id.to_owned());
            self.capacity_changed = true;
        }
        self.worker_back(id, was_inactive);
    }

    /// A worker is (again) reachable: it deletes the copies it may hold of moved instances.
    fn worker_back(&mut self, id: &str, was_inactive: bool) {
        if !was_inactive {
            return;
        }
        tracing::info!(worker = id, "worker is back");
        for instance in self.instances.values_mut() {
            if instance.stale_copies.remove(id) {
                self.effects.push(Effect::Delete {
                    worker: id.to_owned(),
                    command: instance.delete_command(),
                });
                self.dirty_instances.insert(instance.key());
            }
        }
    }

    /// `nodes/<id>/job`: an instance changed status on a worker.
    pub fn job_report(&mut self, worker: &str, report: JobStatusReport, now: Instant) {
        let key = self
            .by_job_name
            .get(&report.sname)
            .map(|job| (job.clone(), report.instance));
        let Some(instance) = key.as_ref().and_then(|k| self.instances.get_mut(k)) else {
            // Nobody wants this instance (undeployed while the worker was away): remove it.
            if !matches!(
                report.status,
                DeploymentStatus::Undeployed | DeploymentStatus::Completed
            ) {
                self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: DeleteCommand {
                        wire_version: WireVersion::CURRENT,
                        job_name: report.sname,
                        virtualization: String::new(),
                        instance_number: report.instance,
                    },
                });
            }
            return;
        };
        if instance.worker_id.as_deref() != Some(worker) {
            // An old copy (the instance moved): never two running copies.
            if !matches!(
                report.status,
                DeploymentStatus::Undeployed | DeploymentStatus::Completed
            ) {
                self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: instance.delete_command(),
                });
            }
            return;
        }
        let key = instance.key();
        if report.status == DeploymentStatus::Undeployed {
            // Only ever the answer to a delete the cluster sent (possibly for an older copy
            // on this same worker): never a reason to change or redeploy anything.
            return;
        }
        if !report.publicip.is_empty() {
            instance.public_ip = report.publicip.clone();
        }
        let new_status = Status::Deployment(report.status);
        let changed =
            instance.status != new_status || instance.status_detail != report.status_detail;
        instance.status = new_status;
        instance.status_detail = report.status_detail;
        match report.status {
            DeploymentStatus::Running => {
                if instance.running_since.is_none() {
                    instance.running_since = Some(now);
                }
            }
            DeploymentStatus::Failed | DeploymentStatus::Dead => {
                // A crash loop backs off; an instance that ran for a while starts over.
                if instance
                    .running_since
                    .take()
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.timing.stable_after)
                {
                    instance.attempts = 0;
                }
                // Heal: place it again after the backoff. The ended copy stays on its worker
                // until the new placement: a redeploy on the same worker restarts it there,
                // one elsewhere sends that worker a delete.
                instance.worker_id = None;
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.stale_copies.insert(worker.to_owned());
                instance.retry_at = Some(now + self.timing.backoff(instance.attempts));
                instance.attempts = instance.attempts.saturating_add(1);
                self.capacity_changed = true;
            }
            DeploymentStatus::Undeployed => {}
            DeploymentStatus::Completed => {
                self.capacity_changed = true;
            }
            DeploymentStatus::Creating | DeploymentStatus::Created => {}
        }
        if changed {
            self.effects.push(Effect::Report(key.clone()));
        }
        self.dirty_instances.insert(key);
    }

    /// `nodes/<id>/jobs/resources`: usage of the instances on a worker. Also a duplicate guard:
    /// an instance the worker runs but should not is deleted there.
    ///
    /// Usage (CPU, memory, disk, log tail) goes on to the root as an instance report: the
    /// first one at once, later ones when they differ noticeably (new log output, CPU or
    /// memory moved by a point or more), at most every [`USAGE_FORWARD_INTERVAL`] per
    /// instance, so a hundred idle instances cost the root nothing.
    pub fn resources_report(&mut self, worker: &str, report: ResourcesReport, now: Instant) {
        for usage in report.services {
            let key = self
                .by_job_name
                .get(&usage.job_name)
                .map(|job| (job.clone(), usage.instance));
            match key.as_ref().and_then(|k| self.instances.get_mut(k)) {
                Some(instance) if instance.worker_id.as_deref() == Some(worker) => {
                    let due = match instance.usage_forwarded_at {
                        None => true,
                        Some(at) => {
                            now.saturating_duration_since(at) >= USAGE_FORWARD_INTERVAL
                                && usage_moved(instance.usage.as_ref(), &usage)
                        }
                    };
                    instance.usage = Some(usage);
                    if due {
                        instance.usage_forwarded_at = Some(now);
                        let key = instance.key();
                        self.effects.push(Effect::Report(key));
                    }
                }
                Some(instance) => self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: instance.delete_command(),
                }),
                None => self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: DeleteCommand {
                        wire_version: WireVersion::CURRENT,
                        job_name: usage.job_name.clone(),
                        virtualization: usage.virtualization.clone(),
                        instance_number: usage.instance,
                    },
                }),
            }
        }
    }

    /// Liveness: workers silent for longer than the timeout become inactive and their
    /// instances are placed again. Returns the workers that just became inactive.
    pub fn check_liveness(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.timing.worker_timeout;
        let lost: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.active && now.saturating_duration_since(w.last_seen) > timeout)
            .map(|w| w.record.id.clone())
            .collect();
        for id in &lost {
            tracing::warn!(worker = %id, "worker silent for more than {timeout:?}: inactive");
            if let Some(w) = self.workers.get_mut(id) {
                w.active = false;
            }
            let timing = self.timing;
            for instance in self.instances.values_mut() {
                if instance.worker_id.as_deref() != Some(id.as_str()) {
                    continue;
                }
                if instance.status == Status::Deployment(DeploymentStatus::Completed) {
                    continue;
                }
                if instance
                    .running_since
                    .take()
                    .is_some_and(|t| now.saturating_duration_since(t) >= timing.stable_after)
                {
                    instance.attempts = 0;
                }
                instance.worker_id = None;
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.stale_copies.insert(id.clone());
                instance.status = Status::Deployment(DeploymentStatus::Failed);
                instance.status_detail = format!("worker {id} is inactive; rescheduling");
                instance.retry_at = Some(now + timing.backoff(instance.attempts));
                instance.attempts = instance.attempts.saturating_add(1);
                self.effects.push(Effect::Report(instance.key()));
                self.dirty_instances.insert(instance.key());
            }
        }
        lost
    }

    // ---- root commands -------------------------------------------------------------------

    /// The root's `Deploy`. Idempotent: an instance the cluster already holds is only
    /// reported again.
    pub fn deploy(
        &mut self,
        job_id: &str,
        instance_number: u32,
        job_name: &str,
        service_json: &str,
        now: Instant,
    ) -> Result<(), DeployError> {
        let key = (job_id.to_owned(), instance_number);
        if self.instances.contains_key(&key) {
            self.effects.push(Effect::Report(key));
            return Ok(());
        }
        let service: ServiceRecord =
            serde_json::from_str(service_json).map_err(|source| DeployError::ServiceJson {
                job_id: job_id.to_owned(),
                source,
            })?;
        let job_name = if job_name.is_empty() {
            service.job_name.clone()
        } else {
            job_name.to_owned()
        };
        let command = deploy_command(&service, job_id, &job_name, instance_number);
        let (request, status, detail) =
            match PlacementRequest::from_microservice(&service.microservice, Level::Cluster) {
                Ok(mut r) => {
                    r.service = job_name.clone();
                    (
                        r,
                        Status::Positive(PositiveSchedulingStatus::ClusterScheduled),
                        String::new(),
                    )
                }
                Err(e) => (
                    PlacementRequest::default(),
                    Status::Negative(NegativeSchedulingStatus::NoQualifiedWorkerFound),
                    format!("invalid constraints: {e}"),
                ),
            };
        let unusable = !detail.is_empty();
        let instance = Instance {
            job_id: job_id.to_owned(),
            instance_number,
            job_name: job_name.clone(),
            command,
            request,
            status,
            status_detail: detail,
            worker_id: None,
            public_ip: String::new(),
            attempts: 0,
            stale_copies: BTreeSet::new(),
            usage: None,
            running_since: None,
            usage_forwarded_at: None,
            network: None,
            // An SLA whose constraints do not parse never becomes placeable.
            retry_at: unusable.then(|| now + Duration::from_secs(365 * 24 * 3600)),
        };
        self.by_job_name.insert(job_name, job_id.to_owned());
        self.instances.insert(key.clone(), instance);
        self.dirty_instances.insert(key.clone());
        self.effects.push(Effect::Report(key));
        Ok(())
    }

    /// `net/service/deployed` from `worker`: where an instance's network is. Ignored (`false`)
    /// unless the instance is placed on that worker.
    pub fn service_deployed(&mut self, worker: &str, report: &ServiceDeployed) -> bool {
        let key = self
            .by_job_name
            .get(&report.appname)
            .map(|job| (job.clone(), report.instance_number));
        let Some(instance) = key.as_ref().and_then(|k| self.instances.get_mut(k)) else {
            return false;
        };
        if instance.worker_id.as_deref() != Some(worker) || report.nsip.is_empty() {
            return false;
        }
        let network = InstanceNetwork {
            nsip: report.nsip.clone(),
            nsipv6: report.nsipv6.clone(),
            host_ip: report.host_ip.clone(),
            host_port: report.host_port,
        };
        if instance.network.as_ref() != Some(&network) {
            instance.network = Some(network);
            let key = instance.key();
            self.dirty_instances.insert(key.clone());
            self.effects.push(Effect::Report(key));
            self.tables.changed.insert(report.appname.clone());
        }
        // A worker hosting an instance of a job follows that job.
        self.tables.add_interest(&report.appname, worker);
        true
    }

    /// Answers a table query (`net/tablequery/request`) from what this cluster knows: the
    /// service named `sname`, or the one `sip` belongs to (its `rr_ip`, closest IP or an
    /// instance IP), with every instance whose network its worker has reported, plus the
    /// instances in other clusters the root told it about. Unknown: `app_name` null and no
    /// instances.
    pub fn table_query(&self, request: &TableQueryRequest) -> TableQueryResult {
        let job_name = if request.sip.is_empty() {
            (self.by_job_name.contains_key(&request.sname)
                || self.tables.remote.contains_key(&request.sname))
            .then(|| request.sname.clone())
        } else {
            // Compared as addresses, so an IPv6 service IP matches in any spelling.
            request.sip.trim().parse::<IpAddr>().ok().and_then(|ip| {
                self.instances
                    .values()
                    .find(|i| i.command.addresses.contains(ip))
                    .map(|i| i.job_name.clone())
                    .or_else(|| self.tables.remote_job_of_ip(ip))
            })
        };
        let instance_list = job_name
            .as_deref()
            .map(|name| self.table_entries(name))
            .unwrap_or_default();
        TableQueryResult {
            wire_version: WireVersion::CURRENT,
            app_name: job_name,
            instance_list,
            query_key: request.query_key().to_owned(),
        }
    }

    /// The routable instances of `job_name`: this cluster's with a reported network, then
    /// those of other clusters (an instance number this cluster holds is its own, whatever
    /// the root's possibly older view says).
    fn table_entries(&self, job_name: &str) -> Vec<TableEntryInstance> {
        let local: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| i.job_name == job_name)
            .collect();
        let mut entries: Vec<TableEntryInstance> = local
            .iter()
            .filter_map(|i| {
                let net = i.network.as_ref()?;
                Some(TableEntryInstance {
                    instance_number: i.instance_number,
                    namespace_ip: net.nsip.clone(),
                    namespace_ip_v6: net.nsipv6.clone(),
                    host_ip: net.host_ip.clone(),
                    host_port: net.host_port,
                    service_ip: ServiceIp::list(&i.command.addresses),
                    extra: Default::default(),
                })
            })
            .collect();
        if let Some(remote) = self.tables.remote.get(job_name) {
            entries.extend(
                remote
                    .instances
                    .iter()
                    .filter(|r| !local.iter().any(|i| i.instance_number == r.instance_number))
                    .cloned(),
            );
        }
        entries
    }

    /// A worker's table query: answered at once when this cluster knows the service (and the
    /// worker becomes interested in it); otherwise the root is asked and the worker gets the
    /// answer when it comes (or "unknown" after [`ROOT_QUERY_TIMEOUT`]). A service this
    /// cluster holds is also asked of the root once, in the background, since other clusters
    /// may run instances of it too.
    pub fn worker_table_query(&mut self, worker: &str, request: &TableQueryRequest, now: Instant) {
        let answer = self.table_query(request);
        if let Some(job) = answer.app_name.clone() {
            self.tables.add_interest(&job, worker);
            if !self.tables.remote.contains_key(&job) {
                self.ask_root(&job, "", None, now);
            }
            self.effects.push(Effect::Table {
                worker: worker.to_owned(),
                result: Box::new(answer),
            });
            return;
        }
        if request.query_key().is_empty() {
            self.effects.push(Effect::Table {
                worker: worker.to_owned(),
                result: Box::new(answer),
            });
            return;
        }
        let (job, ip) = if request.sip.is_empty() {
            (request.sname.as_str(), "")
        } else {
            ("", request.sip.as_str())
        };
        self.ask_root(job, ip, Some((worker, request.query_key())), now);
    }

    /// Asks the root about `job`/`ip` unless the same question is already out; `waiting` gets
    /// the answer.
    fn ask_root(&mut self, job: &str, ip: &str, waiting: Option<(&str, &str)>, now: Instant) {
        let existing = self
            .tables
            .pending
            .values_mut()
            .find(|q| q.job_name == job && q.ip == ip);
        let query = match existing {
            Some(q) => q,
            None => {
                self.tables.requests += 1;
                let request_id = format!("tq-{}", self.tables.requests);
                self.effects.push(Effect::AskRoot {
                    request_id: request_id.clone(),
                    job_name: job.to_owned(),
                    ip: ip.to_owned(),
                });
                self.tables
                    .pending
                    .entry(request_id.clone())
                    .or_insert(RootQuery {
                        job_name: job.to_owned(),
                        ip: ip.to_owned(),
                        waiting: BTreeMap::new(),
                        asked_at: now,
                    })
            }
        };
        if let Some((worker, key)) = waiting {
            query.waiting.insert(worker.to_owned(), key.to_owned());
        }
    }

    /// After a (re)connect to the root: every service of other clusters this cluster caches
    /// is asked again, so the root (which may have restarted) knows the interest.
    pub fn ask_root_again(&mut self, now: Instant) {
        let jobs: Vec<String> = self.tables.remote.keys().cloned().collect();
        for job in jobs {
            self.ask_root(&job, "", None, now);
        }
    }

    /// The root's `ServiceTable`: the answer to a `TableQuery` (the waiting workers get it and
    /// become interested) or a pushed update (interested workers get the new table).
    pub fn root_table(&mut self, table: RootTable) {
        let pending = if table.request_id.is_empty() {
            None
        } else {
            self.tables.pending.remove(&table.request_id)
        };
        let job = table.job_name;
        let waiting = pending.map(|p| p.waiting).unwrap_or_default();
        match table.service {
            Some(service) => {
                for worker in waiting.keys() {
                    self.tables.add_interest(&job, worker);
                }
                if !self.tables.interests.contains_key(&job) {
                    // A service nobody here follows (any more).
                    self.effects
                        .push(Effect::DropRootInterest { job_name: job });
                    return;
                }
                if self.tables.remote.get(&job) != Some(&service) {
                    self.tables.remote.insert(job.clone(), service);
                    self.tables.changed.insert(job.clone());
                }
                for (worker, key) in waiting {
                    let mut result = self.table_query(&TableQueryRequest {
                        sname: job.clone(),
                        ..TableQueryRequest::default()
                    });
                    result.query_key = key;
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(result),
                    });
                }
            }
            None => {
                if self.tables.remote.remove(&job).is_some() {
                    self.tables.changed.insert(job);
                }
                for (worker, key) in waiting {
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(unknown(key)),
                    });
                }
            }
        }
    }

    /// Questions to the root unanswered for [`ROOT_QUERY_TIMEOUT`] (root unreachable or
    /// slow): their workers hear "unknown" and ask again later. Returns how many expired.
    pub fn expire_root_queries(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .tables
            .pending
            .iter()
            .filter(|(_, q)| now.saturating_duration_since(q.asked_at) >= ROOT_QUERY_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(query) = self.tables.pending.remove(id) {
                for (worker, key) in query.waiting {
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(unknown(key)),
                    });
                }
            }
        }
        expired.len()
    }

    /// `net/interest/remove` from `worker`: it no longer follows `job_name`. Unknown interests
    /// are ignored (`false`), and so is a worker that still hosts an instance of the job. When
    /// nobody here follows a service of other clusters any more, the root is told.
    pub fn interest_remove(&mut self, worker: &str, job_name: &str) -> bool {
        let hosts = self.instances.values().any(|i| {
            i.job_name == job_name && i.worker_id.as_deref() == Some(worker) && i.network.is_some()
        });
        if hosts {
            return false;
        }
        let removed = self.tables.remove_interest(job_name, worker);
        if removed
            && !self.tables.interests.contains_key(job_name)
            && self.tables.remote.remove(job_name).is_some()
        {
            self.effects.push(Effect::DropRootInterest {
                job_name: job_name.to_owned(),
            });
        }
        removed
    }

    /// Workers interested in `job_name`.
    pub fn interested_workers(&self, job_name: &str) -> Vec<String> {
        self.tables
            .interests
            .get(job_name)
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The services of other clusters this cluster caches.
    pub fn remote_service(&self, job_name: &str) -> Option<&RemoteService> {
        self.tables.remote.get(job_name)
    }

    /// Every changed service's table to each worker interested in it.
    fn fan_out_changes(&mut self) {
        for job in std::mem::take(&mut self.tables.changed) {
            let result = self.table_query(&TableQueryRequest {
                sname: job.clone(),
                ..TableQueryRequest::default()
            });
            // Oakestra's signal too: UNDEPLOYMENT when fewer instances are routable than at
            // the last signal, else DEPLOYMENT.
            let count = result.instance_list.len();
            let before = self.tables.signalled.insert(job.clone(), count);
            self.effects.push(Effect::JobUpdate {
                job_name: job.clone(),
                kind: if before.is_some_and(|b| count < b) {
                    UpdateKind::Undeployment
                } else {
                    UpdateKind::Deployment
                },
            });
            let Some(workers) = self.tables.interests.get(&job) else {
                continue;
            };
            let workers: Vec<String> = workers.iter().cloned().collect();
            for worker in workers {
                self.effects.push(Effect::Table {
                    worker,
                    result: Box::new(result.clone()),
                });
            }
        }
    }

    /// The root's `Undeploy`: every matching instance is deleted on its worker and forgotten.
    /// Returns how many were removed.
    pub fn undeploy(&mut self, job_id: &str, instance_number: Option<u32>) -> usize {
        let keys: Vec<InstanceKey> = self
            .instances
            .keys()
            .filter(|(j, n)| j == job_id && instance_number.is_none_or(|m| m == *n))
            .cloned()
            .collect();
        for key in &keys {
            let Some(instance) = self.instances.remove(key) else {
                continue;
            };
            let targets = instance
                .worker_id
                .iter()
                .chain(instance.stale_copies.iter());
            for worker in targets {
                self.effects.push(Effect::Delete {
                    worker: worker.clone(),
                    command: instance.delete_command(),
                });
            }
            self.dirty_instances.remove(key);
            self.removed_instances.insert(key.clone());
            self.capacity_changed = true;
            self.tables.changed.insert(instance.job_name.clone());
        }
        if !self.instances.keys().any(|(j, _)| j == job_id) {
            self.by_job_name.retain(|_, j| j != job_id);
        }
        keys.len()
    }

    // ---- placement -----------------------------------------------------------------------

    /// Instances to place now, oldest key first. Clears the "capacity appeared" flag: after a
    /// capacity change every unplaced instance is due at once.
    pub fn due_for_placement(&mut self, now: Instant) -> Vec<InstanceKey> {
        let capacity_changed = std::mem::take(&mut self.capacity_changed);
        self.instances
            .values()
            .filter(|i| i.needs_placement())
            .filter(|i| match i.retry_at {
                None => true,
                Some(at) => {
                    at <= now
                        || (capacity_changed
                            && matches!(i.status, Status::Negative(_))
                            && !i.status_detail.starts_with("invalid constraints"))
                }
            })
            .map(Instance::key)
            .collect()
    }

    /// The active workers as scheduling candidates. Free capacity follows the cluster's
    /// [`CapacityPolicy`]: by default a worker's capacity minus the system reserve minus what
    /// the instances placed on it reserve (derived from the instances each time, so it cannot
    /// drift and survives a restart), with memory also capped by what the worker measures free.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut demand: HashMap<&str, (f64, u64, u32)> = HashMap::new();
        for i in self.instances.values() {
            if let Some(w) = i.worker_id.as_deref()
                && i.status != Status::Deployment(DeploymentStatus::Completed)
            {
                let d = demand.entry(w).or_default();
                d.0 += i.request.vcpus;
                d.1 += i.request.memory_mb;
                d.2 += i.request.vgpus;
            }
        }
        self.workers
            .values()
            .filter(|w| w.active)
            .map(|w| {
                let (cpu, mem, gpu) = demand
                    .get(w.record.id.as_str())
                    .copied()
                    .unwrap_or_default();
                worker_candidate(w, &self.capacity, cpu, mem, gpu)
            })
            .collect()
    }

    /// Places every due instance with `scheduler`, taking each placement's demand off the
    /// chosen candidate before the next, as the actor does with a built-in scheduler (tests,
    /// simulation). Returns the instances it tried.
    pub fn place_due_with(
        &mut self,
        scheduler: &dyn oakestra_sched::Scheduler,
        now: Instant,
    ) -> Vec<InstanceKey> {
        let due = self.due_for_placement(now);
        let mut candidates = self.candidates();
        for key in &due {
            let Some(request) = self.request(key) else {
                continue;
            };
            let outcome = scheduler.place(&request, &candidates).map(|p| p.candidate);
            if let Ok(worker) = &outcome
                && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
            {
                oakestra_sched::commit(&request, c);
            }
            self.placed(key, outcome, now);
        }
        due
    }

    /// The placement request of an instance, with `direct` node names that are worker
    /// hostnames resolved to worker ids (candidates are named by id; users write hostnames).
    pub fn request(&self, key: &InstanceKey) -> Option<PlacementRequest> {
        let mut request = self.instances.get(key)?.request.clone();
        let mut ids = Vec::new();
        for name in &request.constraints.nodes {
            for w in self.workers.values() {
                if &w.record.info.host == name && &w.record.id != name {
                    ids.push(w.record.id.clone());
                }
            }
        }
        request.constraints.nodes.extend(ids);
        Some(request)
    }

    /// Records a scheduling outcome.
    pub fn placed(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, NoPlacement>,
        now: Instant,
    ) {
        let timing = self.timing;
        let Some(instance) = self.instances.get_mut(key) else {
            return;
        };
        if !instance.needs_placement() {
            return;
        }
        match outcome {
            Ok(worker) => {
                instance.worker_id = Some(worker.clone());
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.retry_at = None;
                instance.running_since = None;
                instance.status = Status::Positive(PositiveSchedulingStatus::NodeScheduled);
                instance.status_detail = String::new();
                instance.usage = None;
                instance.usage_forwarded_at = None;
                // The new worker must not be asked to delete what it is about to run; other
                // reachable holders of an old copy delete it now, unreachable ones when back.
                instance.stale_copies.remove(&worker);
                let reachable: Vec<String> = instance
                    .stale_copies
                    .iter()
                    .filter(|w| self.workers.get(*w).is_some_and(|w| w.active))
                    .cloned()
                    .collect();
                for holder in reachable {
                    instance.stale_copies.remove(&holder);
                    self.effects.push(Effect::Delete {
                        worker: holder,
                        command: instance.delete_command(),
                    });
                }
                self.effects.push(Effect::Deploy {
                    worker,
                    command: Box::new(instance.command.clone()),
                });
                self.effects.push(Effect::Report(key.clone()));
            }
            Err(no) => {
                let status = Status::Negative(no.status);
                let changed = instance.status != status || instance.status_detail != no.detail;
                instance.status = status;
                instance.status_detail = no.detail;
                instance.retry_at = Some(now + timing.unplaced_retry);
                if changed {
                    self.effects.push(Effect::Report(key.clone()));
                }
            }
        }
        self.dirty_instances.insert(key.clone());
    }

    // ---- aggregate -------------------------------------------------------------------------

    /// Aggregated resources of the active workers.
    pub fn aggregate(&self) -> Aggregate {
        let candidates = self.candidates();
        let mut a = Aggregate {
            workers: self.workers.len() as u32,
            ..Aggregate::default()
        };
        let mut free_cores = 0.0;
        let mut busy_cores = 0.0;
        for c in &candidates {
            a.active_workers += 1;
            a.cpu_cores += c.cpu_cores;
            free_cores += c.free_vcpus().max(0.0);
            busy_cores += c.cpu_cores * c.cpu_usage_percent / 100.0;
            a.memory_total_mb += c.memory_total_mb;
            a.memory_free_mb += c.memory_free_mb;
            a.gpus += c.gpus;
            a.gpus_free += c.gpus_free;
            a.max_worker_free_vcpus = a.max_worker_free_vcpus.max(c.free_vcpus().max(0.0));
            a.max_worker_free_memory_mb = a.max_worker_free_memory_mb.max(c.memory_free_mb);
            a.max_worker_free_gpus = a.max_worker_free_gpus.max(c.gpus_free);
            union(&mut a.virtualization, &c.virtualization);
            union(&mut a.arch, &c.arch);
            union(&mut a.csi_drivers, &c.csi_drivers);
            union(&mut a.addons, &c.addons);
        }
        (a.cpu_load_percent, a.cpu_usage_percent) = if a.cpu_cores > 0.0 {
            (
                (100.0 - free_cores * 100.0 / a.cpu_cores).clamp(0.0, 100.0),
                (busy_cores * 100.0 / a.cpu_cores).clamp(0.0, 100.0),
            )
        } else {
            (0.0, 0.0)
        };
        a
    }
}

/// The answer for a name or IP nobody knows (Oakestra's shape: `app_name` null).
fn unknown(query_key: String) -> TableQueryResult {
    TableQueryResult {
        wire_version: WireVersion::CURRENT,
        app_name: None,
        instance_list: Vec::new(),
        query_key,
    }
}

fn union(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

/// Keeps the registration's static fields and takes the dynamic ones of a report.
fn merge_dynamic(record: &mut NodeInfo, report: NodeInfo) {
    record.cpu_percent = report.cpu_percent;
    record.memory_percent = report.memory_percent;
    record.memory = report.memory;
    if report.memory_total.is_some() {
        record.memory_total = report.memory_total;
    }
    if report.vcpus > 0 {
        record.vcpus = report.vcpus;
    }
    if !report.virtualization.is_empty() {
        record.virtualization = report.virtualization;
    }
    if !report.csi_drivers.is_empty() {
        record.csi_drivers = report.csi_drivers;
    }
    if !report.supported_addons.is_empty() {
        record.supported_addons = report.supported_addons;
    }
    if report.gpu_usage.is_some() {
        record.gpu_usage = report.gpu_usage;
    }
    if report.location.is_some() {
        record.location = report.location;
    }
    if !report.ip.is_empty() {
        record.ip = report.ip;
    }
}

fn worker_candidate(
    w: &Worker,
    policy: &CapacityPolicy,
    demand_cpu: f64,
    demand_mem: u64,
    demand_gpu: u32,
) -> Candidate {
    let info = &w.record.info;
    let cores = f64::from(info.vcpus);
    let usage = info.cpu_percent.clamp(0.0, 100.0);
    let memory_total = info.memory_total.unwrap_or(info.memory);
    let (cpu_load_percent, free_mem) = policy.allocatable(&WorkerResources {
        cores,
        cpu_usage_percent: usage,
        memory_total_mb: memory_total,
        memory_free_mb: info.memory,
        reserved_vcpus: demand_cpu,
        reserved_memory_mb: demand_mem,
    });
    let virtualization = info
        .virtualization
        .iter()
        .map(|v| {
            if v == "docker" {
                "container".to_owned()
            } else {
                v.clone()
            }
        })
        .collect();
    Candidate {
        name: w.record.id.clone(),
        cpu_cores: cores,
        cpu_load_percent,
        cpu_usage_percent: usage,
        memory_total_mb: memory_total,
        memory_free_mb: free_mem,
        gpus: info.vgpus,
        gpus_free: info.vgpus.saturating_sub(demand_gpu),
        virtualization,
        arch: if info.architecture.is_empty() {
            Vec::new()
        } else {
            vec![info.architecture.clone()]
        },
        csi_drivers: info
            .csi_drivers
            .iter()
            .map(|d| d.csi_driver_name.clone())
            .collect(),
        addons: info.supported_addons.clone(),
        location: info.location.as_deref().and_then(|l| l.parse().ok()),
        active: w.active,
        ..Candidate::default()
    }
}

/// What a worker gets on `control/deploy` for instance `n` of `service`.
pub fn deploy_command(
    service: &ServiceRecord,
    job_id: &str,
    job_name: &str,
    n: u32,
) -> DeployCommand {
    let ms = &service.microservice;
    let mut extra = oakestra_core::sla::Extra::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            extra.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("app_name", &service.app_name);
    put("app_ns", &service.app_ns);
    put("service_name", &service.service_name);
    put("service_ns", &service.service_ns);
    DeployCommand {
        wire_version: WireVersion::CURRENT,
        id: job_id.to_owned(),
        job_name: job_name.to_owned(),
        instance_number: n,
        image: ms.code.clone(),
        virtualization: ms.virtualization.as_str().to_owned(),
        cmd: ms.cmd.clone().unwrap_or_default(),
        environment: ms.environment.clone().unwrap_or_default(),
        port: ms
            .port
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        vcpus: u32::try_from(ms.vcpus.unwrap_or(0)).unwrap_or(u32::MAX),
        vgpus: u32::try_from(ms.vgpus.unwrap_or(0)).unwrap_or(u32::MAX),
        vtpus: u32::try_from(ms.vtpus.unwrap_or(0)).unwrap_or(u32::MAX),
        memory: ms.memory.unwrap_or(0),
        storage: ms.storage.unwrap_or(0),
        arch: ms.arch.clone().unwrap_or_default(),
        platform: ms
            .extra
            .get("platform")
            .and_then(Value::as_str)
            .map(str::to_owned),
        vm_images: Vec::new(),
        volumes: ms.volumes.clone().unwrap_or_default(),
        one_shot: ms.one_shot.unwrap_or(false),
        privileged: ms.privileged.unwrap_or(false),
        status: None,
        status_detail: None,
        addresses: service.addresses(n),
        extra,
    }
}
