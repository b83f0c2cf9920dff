//! Oakestra-rs networking.
//!
//! - [`ipam`]: the pure IP address manager (no I/O, deterministic) used by the root (service,
//!   instance and worker-subnet pools) and by workers (container addresses).

pub mod ipam;
