//! Oakestra-rs placement (pure: no I/O, no tokio, deterministic).
//!
//! One [`Scheduler`] trait serves both orchestrator levels: the root places an instance on a
//! cluster (candidates are clusters with aggregated resources, see [`Candidate::cluster_of`]),
//! a cluster places it on a worker. Built in: [`FirstFit`], [`BestFit`], [`LeastLoaded`] and
//! [`Ldp`] (latency- and distance-aware placement). Every algorithm applies every hard
//! constraint (see [`check()`]); a failure is a [`NoPlacement`] carrying Oakestra's negative
//! status and a sentence naming what excluded how many candidates.
//!
//! ```
//! use oakestra_sched::{BestFit, Candidate, Level, PlacementRequest, Scheduler};
//!
//! let workers = vec![Candidate {
//!     name: "w1".into(),
//!     cpu_cores: 4.0,
//!     memory_total_mb: 8192,
//!     memory_free_mb: 4096,
//!     virtualization: vec!["container".into()],
//!     ..Candidate::default()
//! }];
//! let request = PlacementRequest {
//!     level: Level::Cluster,
//!     vcpus: 1.0,
//!     memory_mb: 512,
//!     virtualization: "container".into(),
//!     ..PlacementRequest::default()
//! };
//! assert_eq!(BestFit.place(&request, &workers).unwrap().candidate, "w1");
//! ```
//!
//! The JSON shapes (for external schedulers) are documented in the crate's README.

#![deny(missing_docs)]

mod aggregate;
mod algorithms;
mod batch;
pub mod capacity;
mod check;
mod distance;
mod index;
mod model;
mod sla;
mod status;

pub use algorithms::{Algorithm, BestFit, FirstFit, Ldp, LeastLoaded, UnknownAlgorithm, leftover};
pub use batch::{BatchOutcome, commit, place_each, place_replicas, validate};
pub use check::{Exclusion, Fit, Rejection, check, diagnose};
pub use distance::{EARTH_RADIUS_KM, haversine_km, instance_latency_ms, user_latency_ms};
pub use index::PlacementIndex;
pub use model::{
    Candidate, ConnectivityConstraint, Constraints, Endpoint, GeoConstraint, GeoPoint,
    GeoPointParseError, LatencyConstraint, Level, Placement, PlacementInput, PlacementRequest,
    Vivaldi, WorkerCapacity,
};
pub use sla::ConstraintError;
pub use status::{NegativeSchedulingStatus, NoPlacement};

/// A placement policy. Implementations must be deterministic: the same request and
/// candidates give the same answer.
pub trait Scheduler {
    /// A short name for logs and configuration.
    fn name(&self) -> &str;

    /// Choose one candidate for one instance, or say why none fits.
    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement>;
}

impl<S: Scheduler + ?Sized> Scheduler for &S {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        (**self).place(request, candidates)
    }
}

impl<S: Scheduler + ?Sized> Scheduler for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        (**self).place(request, candidates)
    }
}
