//! Oakestra-rs domain model (pure: no I/O, no tokio, deterministic).
//!
//! * [`sla`] — the SLA v2.0 deployment descriptor: typed model, parser and a validator that
//!   reports every violation with its JSON path.
//! * [`naming`] — the name rule and `job_name` (`app.appns.service.servicens`).
//! * [`status`] — every Oakestra status string as enums.
//! * [`ids`] — object ids (`{"$oid"}`) and cluster/worker ids.
//! * [`model`] — application, service (job) and instance records.
//! * [`resources`] — worker and cluster resources, geo locations, identities.
//! * [`addresses`] — the service addresses of an instance (RR, closest, instance; v4 and v6).
//! * [`duration`] — durations as operators write them (`30s`, `500ms`, `2m`).
//! * [`lenient`] — serde helpers for numbers Oakestra sends as strings.
//!
//! # Example
//!
//! Validate a deployment descriptor: a valid one becomes the typed model, an invalid one
//! yields every violation with its JSON pointer.
//!
//! ```
//! use oakestra_core::{naming, sla};
//!
//! let descriptor = r#"{
//!   "sla_version": "v2.0", "customerID": "Admin",
//!   "applications": [{
//!     "applicationID": "", "application_name": "clientsrvr",
//!     "application_namespace": "test", "application_desc": "demo",
//!     "microservices": [{
//!       "microserviceID": "", "microservice_name": "nginx",
//!       "microservice_namespace": "test", "virtualization": "container",
//!       "code": "docker.io/library/nginx:latest", "memory": 100, "vcpus": 1,
//!       "port": "80:80/tcp", "addresses": {"rr_ip": "10.30.55.55"}
//!     }]
//!   }]
//! }"#;
//! let sla = sla::parse_and_validate(descriptor).unwrap();
//! let app = &sla.applications[0];
//! let service = &app.microservices[0];
//! assert_eq!(
//!     naming::job_name(
//!         &app.application_name,
//!         &app.application_namespace,
//!         &service.microservice_name,
//!         &service.microservice_namespace,
//!     ),
//!     "clientsrvr.test.nginx.test"
//! );
//!
//! // An rr_ip outside 10.30.0.0/16 and an invalid name: both reported, each at its path.
//! let bad = descriptor
//!     .replace("10.30.55.55", "192.168.1.1")
//!     .replace("\"nginx\"", "\"web server\"");
//! let errors = sla::parse_and_validate(&bad).unwrap_err();
//! let paths: Vec<&str> = errors.violations().iter().map(|v| v.path.as_str()).collect();
//! assert!(paths.contains(&"/applications/0/microservices/0/microservice_name"));
//! assert!(paths.contains(&"/applications/0/microservices/0/addresses/rr_ip"));
//! ```

#![deny(missing_docs)]

pub mod addresses;
pub mod duration;
pub mod ids;
pub mod lenient;
pub mod model;
pub mod naming;
pub mod resources;
pub mod sla;
pub mod status;
