//! What happened and how loaded things are, for people: [`events`] (the event log behind
//! `GET /api/events`) and [`history`] (per-instance usage behind `cpu_history` /
//! `memory_history` and `GET /api/service/<id>/usage`). One [`Monitor`] per root, shared by
//! the cluster link (which records) and the REST API (which reads).

pub mod events;
pub mod history;
pub mod record;

pub use events::{Event, EventFilter, EventLog, ObjectKind};
pub use history::UsageHistory;

/// The event log and the usage history of one root.
#[derive(Debug, Default)]
pub struct Monitor {
    /// Events.
    pub events: EventLog,
    /// Usage history per instance.
    pub history: UsageHistory,
}
