//! Oakestra-rs networking.
//!
//! - [`ipam`]: the pure IP address manager (no I/O, deterministic) used by the root (service,
//!   instance and worker-subnet pools) and by workers (container addresses).
//! - [`proxy`]: the service-IP proxy's translation (pure): service IP → instance rewrite,
//!   round robin, sticky flows, reply rewrite, for TCP, UDP and ICMP echo.
//! - [`dns`]: the overlay's DNS messages (pure): parse a query, build A / NXDOMAIN / NOERROR
//!   answers, map `<service>.<servicens>.<app>.<appns>` to the job name.
//! - `dataplane` (cargo feature `dataplane`): the worker data plane — bridge, one network
//!   namespace + veth per instance, NAT and port mappings — behind the `DataPlane` trait, with
//!   a fake for tests.
//!
//! # Example
//!
//! The root's address plan: service IPs (a user-given `rr_ip` is reserved), instance IPs and
//! worker subnets, all in one plain value that a store persists and restores.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use oakestra_net::ipam::AddressManager;
//!
//! let mut ipam = AddressManager::new();
//! let service = ipam.assign_service("clientsrvr.test.nginx.test", Some("10.30.55.55"), None).unwrap();
//! assert_eq!(service.rr_ipv4, Ipv4Addr::new(10, 30, 55, 55));
//! // The address is held: another service asking for it is told who holds it.
//! let taken = ipam.assign_service("other.test.web.test", Some("10.30.55.55"), None).unwrap_err();
//! assert!(taken.to_string().contains("clientsrvr.test.nginx.test"), "{taken}");
//!
//! let instance = ipam.assign_instance("clientsrvr.test.nginx.test", 0).unwrap();
//! assert_eq!(instance.ipv4, Ipv4Addr::new(10, 30, 0, 1));
//! let worker = ipam.assign_worker("worker-1").unwrap();
//! assert_eq!(worker.ipv4.bridge(), Ipv4Addr::new(10, 18, 0, 1));
//!
//! // Persisted and restored, nothing changes: the same worker gets the same subnet back.
//! let saved = serde_json::to_string(&ipam).unwrap();
//! let mut restored: AddressManager = serde_json::from_str(&saved).unwrap();
//! assert_eq!(restored.assign_worker("worker-1").unwrap(), worker);
//! ```

#![deny(missing_docs)]

pub mod dns;
pub mod ipam;
pub mod proxy;

#[cfg(feature = "dataplane")]
pub mod dataplane;
