//! Prometheus metrics of the cluster (`GET /metrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::{Aggregate, ClusterState};

/// One label `reason`: Oakestra's negative scheduling status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `NO_WORKER_CAPACITY`, `NO_QUALIFIED_WORKER_FOUND`, `NO_NODE_FOUND`, ….
    pub reason: String,
}

/// An instance, labelled as the worker labels its usage.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// The instance number.
    pub instance_number: u32,
}

/// Counters and gauges; clones share the values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// MQTT messages received from workers.
    pub mqtt_messages: Counter,
    /// Successful placements.
    pub placements_ok: Counter,
    /// Failed placement attempts by reason.
    pub placements_failed: Family<ReasonLabel, Counter>,
    /// Latency of one placement decision (the scheduler's call, external ones included).
    pub placement_seconds: Histogram,
    /// Redeploys of an instance after it failed or its worker was lost.
    pub instance_restarts: Family<InstanceLabels, Counter>,
    /// Workers that became inactive.
    pub workers_lost: Counter,
    /// Failed store commits.
    pub store_errors: Counter,
    /// Root link sessions opened.
    pub root_sessions: Counter,
    /// 1 while the root link is up.
    pub root_connected: Gauge,
    workers_active: Gauge,
    workers_total: Gauge,
    instances_total: Gauge,
    instances_running: Gauge,
    instances_unplaced: Gauge,
    cpu_cores: Gauge<f64, AtomicU64>,
    memory_free_mb: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("oakestra_cluster");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            mqtt_messages: Counter::default(),
            placements_ok: Counter::default(),
            placements_failed: Family::default(),
            // 10 µs … ~5 s (external schedulers answer over HTTP).
            placement_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 20)),
            instance_restarts: Family::default(),
            workers_lost: Counter::default(),
            store_errors: Counter::default(),
            root_sessions: Counter::default(),
            root_connected: Gauge::default(),
            workers_active: Gauge::default(),
            workers_total: Gauge::default(),
            instances_total: Gauge::default(),
            instances_running: Gauge::default(),
            instances_unplaced: Gauge::default(),
            cpu_cores: Gauge::default(),
            memory_free_mb: Gauge::default(),
        };
        r.register(
            "mqtt_messages",
            "MQTT messages from workers",
            m.mqtt_messages.clone(),
        );
        r.register(
            "placements",
            "Instances placed on a worker",
            m.placements_ok.clone(),
        );
        // Every cluster-level reason from the start, so a dashboard shows zeros, not "no data".
        for reason in [
            oakestra_core::status::NegativeSchedulingStatus::NoWorkerCapacity,
            oakestra_core::status::NegativeSchedulingStatus::NoQualifiedWorkerFound,
            oakestra_core::status::NegativeSchedulingStatus::NoNodeFound,
        ] {
            let _ = m.placements_failed.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        r.register(
            "placement_failures",
            "Placement attempts that found no worker, by reason",
            m.placements_failed.clone(),
        );
        r.register(
            "placement_duration_seconds",
            "Latency of one placement decision of the cluster scheduler",
            m.placement_seconds.clone(),
        );
        r.register(
            "instance_restarts",
            "Redeploys of an instance after it failed or its worker was lost",
            m.instance_restarts.clone(),
        );
        r.register(
            "workers_lost",
            "Workers that went silent",
            m.workers_lost.clone(),
        );
        r.register(
            "store_errors",
            "Failed store commits",
            m.store_errors.clone(),
        );
        r.register(
            "root_sessions",
            "Root link sessions opened",
            m.root_sessions.clone(),
        );
        r.register(
            "root_connected",
            "1 while the root link is up",
            m.root_connected.clone(),
        );
        r.register("workers_active", "Active workers", m.workers_active.clone());
        r.register("workers", "Registered workers", m.workers_total.clone());
        r.register("instances", "Managed instances", m.instances_total.clone());
        r.register(
            "instances_running",
            "Instances RUNNING",
            m.instances_running.clone(),
        );
        r.register(
            "instances_unplaced",
            "Instances waiting for a worker",
            m.instances_unplaced.clone(),
        );
        r.register(
            "cpu_cores",
            "Cores of the active workers",
            m.cpu_cores.clone(),
        );
        r.register(
            "memory_free_mb",
            "Free memory of the active workers, MB",
            m.memory_free_mb.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// A placement failed for `reason`.
    pub fn placement_failed(&self, reason: &oakestra_sched::NoPlacement) {
        self.placements_failed
            .get_or_create(&ReasonLabel {
                reason: reason.status.to_string(),
            })
            .inc();
    }

    /// A deploy of instance `n` of `job_name` went out; `attempts` > 0 makes it a restart.
    /// The series exists from the first deploy on, at zero until the first restart.
    pub fn deployed(&self, job_name: &str, n: u32, attempts: u32) {
        let restarts = self.instance_restarts.get_or_create(&InstanceLabels {
            job_name: job_name.to_owned(),
            instance_number: n,
        });
        if attempts > 0 {
            restarts.inc();
        }
    }

    /// Instance `n` of `job_name` is gone: its series goes too.
    pub fn forget_instance(&self, job_name: &str, n: u32) {
        self.instance_restarts.remove(&InstanceLabels {
            job_name: job_name.to_owned(),
            instance_number: n,
        });
    }

    /// Updates the gauges from the state.
    pub fn observe(&self, state: &ClusterState, a: &Aggregate) {
        self.workers_active.set(i64::from(a.active_workers));
        self.workers_total.set(i64::from(a.workers));
        self.cpu_cores.set(a.cpu_cores);
        self.memory_free_mb
            .set(i64::try_from(a.memory_free_mb).unwrap_or(i64::MAX));
        let (mut total, mut running, mut unplaced) = (0, 0, 0);
        for i in state.instances() {
            total += 1;
            if i.status == oakestra_core::status::Status::RUNNING {
                running += 1;
            }
            if i.needs_placement() {
                unplaced += 1;
            }
        }
        self.instances_total.set(total);
        self.instances_running.set(running);
        self.instances_unplaced.set(unplaced);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        oakestra_daemon::metrics::encode(&self.registry)
    }
}
