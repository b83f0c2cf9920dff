//! Oakestra-rs networking.
//!
//! - [`ipam`]: the pure IP address manager (no I/O, deterministic) used by the root (service,
//!   instance and worker-subnet pools) and by workers (container addresses).
//! - [`proxy`]: the service-IP proxy's translation (pure): service IP → instance rewrite,
//!   round robin, sticky flows, reply rewrite, for TCP, UDP and ICMP echo.
//! - `dataplane` (cargo feature `dataplane`): the worker data plane — bridge, one network
//!   namespace + veth per instance, NAT and port mappings — behind the `DataPlane` trait, with
//!   a fake for tests.

#![warn(missing_docs)]

pub mod ipam;
pub mod proxy;

#[cfg(feature = "dataplane")]
pub mod dataplane;
