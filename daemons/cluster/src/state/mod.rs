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

mod instances;
mod net;
mod placement;
mod workers;

use crate::tables::{RootQuery, Tables};
pub use instances::deploy_command;
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
    /// Restarts its worker made under the SLA's `restart_policy`, as the worker reported them.
    #[serde(default)]
    pub restart_count: u32,
    /// `DEAD`, and its worker restarts it itself after a back-off.
    #[serde(default)]
    pub restarting: bool,
    /// Its readiness probe's verdict as its worker reported it (none: no probe, ready when
    /// `RUNNING`). `Some(false)` keeps it out of the service tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
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

    /// In its service IPs' balancing: not reported unready by its readiness probe.
    pub fn is_ready(&self) -> bool {
        self.ready != Some(false)
    }

    /// Waiting for a worker (never placed, its worker lost, failed, or refused by the scheduler).
    pub fn needs_placement(&self) -> bool {
        self.worker_id.is_none() && !self.has_ended()
    }

    /// Ended for good: `COMPLETED`, or `DEAD` under `restart_policy: never`. It holds no
    /// capacity and is never placed again.
    pub fn has_ended(&self) -> bool {
        match self.status {
            Status::Deployment(DeploymentStatus::Completed) => true,
            Status::Deployment(DeploymentStatus::Dead) => {
                self.command.restart_policy == Some(oakestra_core::sla::RestartPolicy::Never)
            }
            _ => false,
        }
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
    /// Extra time a worker has after it registers for its first report: it still has to
    /// connect to the broker, which takes seconds when thousands of workers register at once
    /// (issue 20). After its first report the plain `worker_timeout` applies.
    pub first_report_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            worker_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            unplaced_retry: Duration::from_secs(2),
            stable_after: Duration::from_secs(10),
            first_report_grace: Duration::from_secs(20),
        }
    }
}

impl Timing {
    /// Delay before redeploy number `attempt` (0-based): 0, base, 2·base, 4·base … ≤ cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        oakestra_daemon::Backoff::new(self.backoff_base, self.backoff_cap).delay(attempt)
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
    /// Sum of the workers' GPUs.
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

    // ---- root commands -------------------------------------------------------------------

    // ---- placement -----------------------------------------------------------------------

    // ---- aggregate -------------------------------------------------------------------------
}
