//! Why a placement failed: Oakestra's negative scheduling statuses plus a readable detail.

use serde::{Deserialize, Serialize};

/// Oakestra's negative scheduling statuses, from `oakestra-core` (exactly Oakestra's strings).
///
/// The first four are root-level outcomes (which cluster), the last three cluster-level ones
/// (which worker). `NO_WORKER_CAPACITY` is the transient one: the cluster retries instances in
/// that state, so the schedulers use it whenever waiting could help (capacity, inactive
/// workers). `NO_NODE_FOUND` means none of the workers named by a `direct` node list is an
/// active candidate.
pub use oakestra_core::status::NegativeSchedulingStatus;

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
