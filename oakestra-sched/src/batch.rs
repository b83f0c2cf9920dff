//! Placing many instances in a row, with the capacity each placement consumes taken off the
//! chosen candidate before the next one (for simulation, benchmarks and bulk scale-up).

use crate::Scheduler;
use crate::check::check;
use crate::model::{Candidate, Placement, PlacementRequest};
use crate::status::NoPlacement;

/// Take one instance's demand off a candidate: CPU load, free memory, free GPUs. At root level
/// the largest-free-worker figures can only shrink and never exceed the cluster's free totals.
pub fn commit(request: &PlacementRequest, candidate: &mut Candidate) {
    if candidate.cpu_cores > 0.0 {
        candidate.cpu_load_percent =
            (candidate.cpu_load_percent + request.vcpus * 100.0 / candidate.cpu_cores).min(100.0);
    }
    candidate.memory_free_mb = candidate.memory_free_mb.saturating_sub(request.memory_mb);
    candidate.gpus_free = candidate.gpus_free.saturating_sub(request.vgpus);
    let free_vcpus = candidate.free_vcpus().max(0.0);
    if let Some(w) = &mut candidate.max_worker_free {
        // Which worker got the instance is the cluster's decision; keep an upper bound.
        w.vcpus = w.vcpus.min(free_vcpus);
        w.memory_mb = w.memory_mb.min(candidate.memory_free_mb);
        w.gpus = w.gpus.min(candidate.gpus_free);
    }
}

/// Check a scheduler's answer (useful for external schedulers): the named candidate exists and
/// satisfies every hard constraint. Returns its index.
pub fn validate(
    request: &PlacementRequest,
    candidates: &[Candidate],
    placement: &Placement,
) -> Result<usize, String> {
    let index = match placement.index {
        Some(i)
            if candidates
                .get(i)
                .is_some_and(|c| c.name == placement.candidate) =>
        {
            i
        }
        _ => candidates
            .iter()
            .position(|c| c.name == placement.candidate)
            .ok_or_else(|| format!("chose {:?}, which is not a candidate", placement.candidate))?,
    };
    check(request, &candidates[index])
        .map(|_| index)
        .map_err(|r| {
            format!(
                "chose {:?}, which fails the {:?} check",
                placement.candidate, r.reason
            )
        })
}

/// The result of [`place_replicas`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// One entry per placed instance, in order.
    pub placements: Vec<Placement>,
    /// Why the batch stopped early, if it did.
    pub failure: Option<NoPlacement>,
}

/// Place `count` instances of the same request one after the other, committing each to its
/// candidate. Stops at the first failure (capacity only shrinks, so later ones would fail too).
pub fn place_replicas<S: Scheduler + ?Sized>(
    scheduler: &S,
    request: &PlacementRequest,
    count: usize,
    candidates: &mut [Candidate],
) -> BatchOutcome {
    let mut placements = Vec::with_capacity(count);
    for _ in 0..count {
        match place_one(scheduler, request, candidates) {
            Ok(p) => placements.push(p),
            Err(e) => {
                return BatchOutcome {
                    placements,
                    failure: Some(e),
                };
            }
        }
    }
    BatchOutcome {
        placements,
        failure: None,
    }
}

/// Place each request in turn, committing each success; a failure does not stop the rest.
pub fn place_each<S: Scheduler + ?Sized>(
    scheduler: &S,
    requests: &[PlacementRequest],
    candidates: &mut [Candidate],
) -> Vec<Result<Placement, NoPlacement>> {
    requests
        .iter()
        .map(|r| place_one(scheduler, r, candidates))
        .collect()
}

fn place_one<S: Scheduler + ?Sized>(
    scheduler: &S,
    request: &PlacementRequest,
    candidates: &mut [Candidate],
) -> Result<Placement, NoPlacement> {
    let placement = scheduler.place(request, candidates)?;
    match validate(request, candidates, &placement) {
        Ok(i) => {
            commit(request, &mut candidates[i]);
            Ok(placement)
        }
        Err(why) => {
            let mut failure = crate::check::diagnose(request, candidates);
            failure.detail = format!("scheduler {} {why}; {}", scheduler.name(), failure.detail);
            Err(failure)
        }
    }
}
