//! Prometheus metrics of what the root decides and sees (registered into the root's
//! `/metrics` registry, prefix `oakestra_root_`): scheduling decisions by outcome and reason
//! with their latency, cluster link messages by direction and kind, events by kind, the time
//! from a deploy request to `RUNNING`, and, computed when scraped, instances by status and
//! clusters by state.

use std::collections::HashMap;
use std::sync::Mutex;

use oakestra_core::ids::ObjectId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `outcome` and `reason` of a scheduling decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `placed` or `pending`.
    pub outcome: String,
    /// `none` when placed, else the negative status (`NoActiveClusterWithCapacity`, …).
    pub reason: String,
}

/// `direction` and `kind` of a cluster link message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `received` or `sent`.
    pub direction: &'static str,
    /// The message kind (`instance_status`, `resources`, `deploy`, …).
    pub kind: &'static str,
}

/// One label `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// One label `status`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status.
    pub status: String,
}

/// One label `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `active` or `inactive`.
    pub state: &'static str,
}

/// The metrics (clones share the values).
#[derive(Debug)]
pub struct RootMetrics {
    /// Root scheduling decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Root scheduling latency (candidates + algorithm).
    pub decision_seconds: Histogram,
    /// Cluster link messages.
    pub messages: Family<MessageLabels, Counter>,
    /// Events recorded.
    pub events: Family<KindLabel, Counter>,
    /// Deploy request → first RUNNING report.
    pub deploy_to_running_seconds: Histogram,
    /// Instances by status (set when scraped).
    pub instances: Family<StatusLabel, Gauge>,
    /// Clusters by state (set when scraped).
    pub clusters: Family<StateLabel, Gauge>,
    /// Instances with a usage history.
    pub history_instances: Gauge,
    /// Bytes the usage history holds (samples and per-instance state).
    pub history_bytes: Gauge,
    /// Events kept.
    pub events_kept: Gauge,
    /// Bytes of usage-history documents written to the store (JSON bodies).
    pub history_written_bytes: Counter,
    /// When each instance still waiting for its first RUNNING was requested.
    requested_at: Mutex<HashMap<(ObjectId, u32), std::time::Instant>>,
}

impl Default for RootMetrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            // 10 µs … ~1.3 s.
            decision_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 18)),
            messages: Family::default(),
            events: Family::default(),
            // 10 ms … ~2.7 min.
            deploy_to_running_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            instances: Family::default(),
            clusters: Family::default(),
            history_instances: Gauge::default(),
            history_bytes: Gauge::default(),
            events_kept: Gauge::default(),
            history_written_bytes: Counter::default(),
            requested_at: Mutex::new(HashMap::new()),
        }
    }
}

impl RootMetrics {
    /// Registers every metric into `registry` (the root's, prefix `oakestra_root`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "scheduling_decisions",
            "Root scheduling decisions by outcome (placed, pending) and reason",
            self.decisions.clone(),
        );
        registry.register(
            "scheduling_duration_seconds",
            "Root scheduling latency: candidates and algorithm",
            self.decision_seconds.clone(),
        );
        registry.register(
            "cluster_messages",
            "Cluster link (gRPC) messages by direction and kind",
            self.messages.clone(),
        );
        registry.register("events", "Events recorded by kind", self.events.clone());
        registry.register(
            "deploy_to_running_seconds",
            "Time from a deploy request to the instance's first RUNNING report",
            self.deploy_to_running_seconds.clone(),
        );
        registry.register("instances", "Instances by status", self.instances.clone());
        registry.register(
            "clusters",
            "Clusters by state (active, inactive)",
            self.clusters.clone(),
        );
        registry.register(
            "usage_history_instances",
            "Instances with a usage history",
            self.history_instances.clone(),
        );
        registry.register(
            "usage_history_bytes",
            "Bytes held by the usage history (samples and per-instance state)",
            self.history_bytes.clone(),
        );
        registry.register("events_kept", "Events kept", self.events_kept.clone());
        registry.register(
            "usage_history_written_bytes",
            "Bytes of usage-history documents written to the store (JSON bodies)",
            self.history_written_bytes.clone(),
        );
    }

    /// Counts a cluster link message.
    pub fn message(&self, direction: &'static str, kind: &'static str) {
        self.messages
            .get_or_create(&MessageLabels { direction, kind })
            .inc();
    }

    /// Instance `n` of `service` was requested now.
    pub fn requested(&self, service: ObjectId, n: u32) {
        let mut map = self.requested_at.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((service, n), std::time::Instant::now());
    }

    /// Instance `n` of `service` reported RUNNING: observes its deploy time once.
    pub fn running(&self, service: ObjectId, n: u32) {
        let at = self
            .requested_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(service, n));
        if let Some(at) = at {
            self.deploy_to_running_seconds
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// Forgets instance `n` (or all with `None`) of `service`.
    pub fn forget(&self, service: ObjectId, n: Option<u32>) {
        self.requested_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, i), _| *s != service || n.is_some_and(|n| n != *i));
    }
}

/// The `kind` label of a message from a cluster.
pub fn cluster_message_kind(m: &oakestra_proto::grpc::ClusterMessage) -> &'static str {
    use oakestra_proto::grpc::cluster_message::Kind;
    match &m.kind {
        Some(Kind::Snapshot(_)) => "snapshot",
        Some(Kind::Resources(_)) => "resources",
        Some(Kind::InstanceStatus(_)) => "instance_status",
        Some(Kind::LogsReply(_)) => "logs_reply",
        Some(Kind::WorkersReply(_)) => "workers_reply",
        Some(Kind::TableQuery(_)) => "table_query",
        Some(Kind::TableInterestRemove(_)) => "table_interest_remove",
        None => "empty",
    }
}

/// The `kind` label of a message to a cluster.
pub fn root_message_kind(m: &oakestra_proto::grpc::RootMessage) -> &'static str {
    use oakestra_proto::grpc::root_message::Kind;
    match &m.kind {
        Some(Kind::Deploy(_)) => "deploy",
        Some(Kind::Undeploy(_)) => "undeploy",
        Some(Kind::LogsRequest(_)) => "logs_request",
        Some(Kind::WorkersRequest(_)) => "workers_request",
        Some(Kind::ServiceTable(_)) => "service_table",
        None => "empty",
    }
}

/// Sets the scrape-time gauges from the stored services and clusters.
pub async fn refresh(
    metrics: &RootMetrics,
    store: &std::sync::Arc<dyn oakestra_store::Store>,
    monitor: &super::Monitor,
) {
    if let Ok(services) = store.list_all_services().await {
        let mut by_status: HashMap<String, i64> = HashMap::new();
        for s in &services {
            for i in &s.instance_list {
                let status = i
                    .status
                    .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                *by_status.entry(status).or_default() += 1;
            }
        }
        metrics.instances.clear();
        for (status, n) in by_status {
            metrics
                .instances
                .get_or_create(&StatusLabel { status })
                .set(n);
        }
    }
    if let Ok(clusters) = store.list_clusters().await {
        let active = clusters.iter().filter(|c| c.active).count() as i64;
        let inactive = clusters.len() as i64 - active;
        metrics
            .clusters
            .get_or_create(&StateLabel { state: "active" })
            .set(active);
        metrics
            .clusters
            .get_or_create(&StateLabel { state: "inactive" })
            .set(inactive);
    }
    metrics.history_instances.set(monitor.history.len() as i64);
    metrics
        .history_bytes
        .set(i64::try_from(monitor.history.bytes()).unwrap_or(i64::MAX));
    metrics.events_kept.set(monitor.events.len() as i64);
}
