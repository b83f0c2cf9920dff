//! Oakestra-rs domain model (pure: no I/O, no tokio, deterministic).
//!
//! * [`sla`] — the SLA v2.0 deployment descriptor: typed model, parser and a validator that
//!   reports every violation with its JSON path.
//! * [`naming`] — the name rule and `job_name` (`app.appns.service.servicens`).
//! * [`status`] — every Oakestra status string as enums.
//! * [`ids`] — object ids (`{"$oid"}`) and cluster/worker ids.
//! * [`model`] — application, service (job) and instance records.
//! * [`resources`] — worker and cluster resources, geo locations, identities.
//! * [`wire`] — MQTT payloads between cluster and worker, and topic names.
//! * [`duration`] — durations as operators write them (`30s`, `500ms`, `2m`).
//! * [`lenient`] — serde helpers for numbers Oakestra sends as strings.

pub mod duration;
pub mod ids;
pub mod lenient;
pub mod model;
pub mod naming;
pub mod resources;
pub mod sla;
pub mod status;
pub mod wire;
