//! Why a placement failed: Oakestra's negative scheduling statuses plus a readable detail.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Oakestra's `NegativeSchedulingStatus`, serialised with exactly Oakestra's strings so that
/// clients that switch on them keep working.
///
/// The first four are root-level outcomes (which cluster), the last three cluster-level ones
/// (which worker). `NO_WORKER_CAPACITY` is the transient one: the cluster retries instances in
/// that state, so it is used whenever waiting could help (capacity, inactive workers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NegativeSchedulingStatus {
    /// The `direct` constraint names a cluster that is not among the candidates.
    TargetClusterNotFound,
    /// The `direct` constraint names a cluster that is known but not active.
    TargetClusterNotActive,
    /// The `direct` constraint names an active cluster that cannot host the instance.
    TargetClusterNoCapacity,
    /// No active cluster satisfies the request.
    NoActiveClusterWithCapacity,
    /// Some workers qualify, but none of them has the free capacity right now.
    #[serde(rename = "NO_WORKER_CAPACITY")]
    NoWorkerCapacity,
    /// No worker satisfies the static constraints (virtualization, arch, geo, latency, …).
    #[serde(rename = "NO_QUALIFIED_WORKER_FOUND")]
    NoQualifiedWorkerFound,
    /// None of the workers named by the `direct` node list is an active candidate.
    #[serde(rename = "NO_NODE_FOUND")]
    NoNodeFound,
}

impl NegativeSchedulingStatus {
    /// The exact Oakestra string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TargetClusterNotFound => "TargetClusterNotFound",
            Self::TargetClusterNotActive => "TargetClusterNotActive",
            Self::TargetClusterNoCapacity => "TargetClusterNoCapacity",
            Self::NoActiveClusterWithCapacity => "NoActiveClusterWithCapacity",
            Self::NoWorkerCapacity => "NO_WORKER_CAPACITY",
            Self::NoQualifiedWorkerFound => "NO_QUALIFIED_WORKER_FOUND",
            Self::NoNodeFound => "NO_NODE_FOUND",
        }
    }
}

impl fmt::Display for NegativeSchedulingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed placement: the status to store on the job, and a sentence saying which
/// constraint excluded how many candidates, e.g.
/// `"3 workers: 1 inactive, 2 lack memory (need 512 MB, best has 256 MB)"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct NoPlacement {
    /// Oakestra's negative status.
    pub status: NegativeSchedulingStatus,
    /// Human-readable reason.
    pub detail: String,
}
