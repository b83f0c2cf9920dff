//! Oakestra-rs networking.
//!
//! - [`ipam`]: the pure IP address manager (no I/O, deterministic) used by the root (service,
//!   instance and worker-subnet pools) and by workers (container addresses).
//! - `dataplane` (cargo feature `dataplane`): the worker data plane — bridge, one network
//!   namespace + veth per instance, NAT and port mappings — behind the `DataPlane` trait, with
//!   a fake for tests.

pub mod ipam;

#[cfg(feature = "dataplane")]
pub mod dataplane;
