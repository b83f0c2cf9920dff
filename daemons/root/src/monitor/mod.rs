//! What happened and how loaded things are, for people: [`events`] (the event log behind
//! `GET /api/events`) and [`history`] (per-instance usage behind `cpu_history` /
//! `memory_history` and `GET /api/service/<id>/usage`). One [`Monitor`] per root, shared by
//! the cluster link (which records) and the REST API (which reads).

pub mod events;
pub mod history;
pub mod metrics;
pub mod persist;
pub mod record;
pub mod timed_store;

pub use events::{Event, EventFilter, EventLog, ObjectKind};
pub use history::UsageHistory;

/// The event log and the usage history of one root.
#[derive(Debug, Default)]
pub struct Monitor {
    /// What happened to which object: kept, persisted and streamed to `GET /api/events`.
    pub events: EventLog,
    /// Usage history per instance.
    pub history: UsageHistory,
    /// Prometheus metrics of decisions and link traffic.
    pub metrics: metrics::RootMetrics,
}

impl Monitor {
    /// Records an event and counts it.
    pub fn emit(&self, event: Event) -> std::sync::Arc<Event> {
        self.metrics
            .events
            .get_or_create(&metrics::KindLabel {
                kind: event.kind.clone(),
            })
            .inc();
        self.events.emit(event)
    }
}
