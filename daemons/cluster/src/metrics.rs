//! Prometheus metrics of the cluster (`GET /metrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::{Aggregate, ClusterState};

/// Counters and gauges; clones share the values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// MQTT messages received from workers.
    pub mqtt_messages: Counter,
    /// Successful placements.
    pub placements_ok: Counter,
    /// Failed placement attempts.
    pub placements_failed: Counter,
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
            placements_failed: Counter::default(),
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
        r.register(
            "placement_failures",
            "Placement attempts that found no worker",
            m.placements_failed.clone(),
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
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
