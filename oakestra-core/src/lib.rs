//! Oakestra-rs domain model (pure: no I/O, no tokio, deterministic).
//!
//! * [`sla`] — the SLA v2.0 deployment descriptor: typed model, parser and a validator that
//!   reports every violation with its JSON path.
//! * [`naming`] — the name rule and `job_name` (`app.appns.service.servicens`).

pub mod naming;
pub mod sla;
