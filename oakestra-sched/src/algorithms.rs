//! The built-in schedulers. All apply every hard constraint of [`check`]; they differ only in
//! which feasible candidate they prefer. Ties are broken by candidate name, so the answer does
//! not depend on the order of the candidates (except for first-fit, whose point is the order).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Scheduler;
use crate::check::{Fit, check, diagnose};
use crate::model::{Candidate, Placement, PlacementRequest};
use crate::status::NoPlacement;

/// The first feasible candidate in input order. The cheapest; the caller's order is the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstFit;

/// The feasible candidate left with the least free CPU + memory after placement, each as a
/// fraction of the candidate's total (so cores and MB are comparable), then the one with the
/// lowest measured CPU usage. Packs instances and keeps big candidates free for big instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BestFit;

/// The feasible candidate that is least busy ([`Candidate::busy_percent`]: the larger of its
/// taken CPU share and its measured usage), then the one with the most free memory. With
/// usage-based capacity this is what Oakestra's `bestCpuMemFit` effectively does (its memory
/// term cancels out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeastLoaded;

/// Latency- and distance-aware placement: among feasible candidates (every `geo`, `latency`
/// and `connectivity` constraint holds), the lowest expected RTT, then the shortest distance
/// to the `geo` centres, then best fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ldp;

/// The built-in algorithms by name, for configuration files and flags
/// (`first_fit`, `best_fit`, `least_loaded`, `ldp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// [`FirstFit`].
    FirstFit,
    /// [`BestFit`].
    BestFit,
    /// [`LeastLoaded`].
    LeastLoaded,
    /// [`Ldp`]; without latency or geo constraints it is best fit.
    #[default]
    Ldp,
}

impl Algorithm {
    /// Every built-in algorithm.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::FirstFit,
        Algorithm::BestFit,
        Algorithm::LeastLoaded,
        Algorithm::Ldp,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FirstFit => "first_fit",
            Algorithm::BestFit => "best_fit",
            Algorithm::LeastLoaded => "least_loaded",
            Algorithm::Ldp => "ldp",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scheduling algorithm {0:?}; expected one of first_fit, best_fit, least_loaded, ldp"
)]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

impl Scheduler for Algorithm {
    fn name(&self) -> &str {
        self.as_str()
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        match self {
            Algorithm::FirstFit => FirstFit.place(request, candidates),
            Algorithm::BestFit => BestFit.place(request, candidates),
            Algorithm::LeastLoaded => LeastLoaded.place(request, candidates),
            Algorithm::Ldp => Ldp.place(request, candidates),
        }
    }
}

impl Scheduler for FirstFit {
    fn name(&self) -> &str {
        "first_fit"
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| may_fit(request, c))
            .find_map(|(i, c)| check(request, c).ok().map(|fit| (i, fit)))
            .map(|(i, fit)| placement(request, candidates, i, fit))
            .ok_or_else(|| diagnose(request, candidates))
    }
}

impl Scheduler for BestFit {
    fn name(&self) -> &str {
        "best_fit"
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        pick(request, candidates, false, |c, fit| {
            [leftover(request, c, fit), c.cpu_usage_percent]
        })
    }
}

impl Scheduler for LeastLoaded {
    fn name(&self) -> &str {
        "least_loaded"
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        pick(request, candidates, false, |c, _| {
            [c.busy_percent(), -(c.memory_free_mb as f64)]
        })
    }
}

impl Scheduler for Ldp {
    fn name(&self) -> &str {
        "ldp"
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        pick(request, candidates, true, |c, fit| {
            [
                fit.latency_ms,
                fit.distance_km,
                leftover(request, c, fit),
                c.cpu_usage_percent,
            ]
        })
    }
}

/// Best-fit score, lower is tighter: the CPU, memory (and, for GPU requests, GPU) left free
/// after placement, each as a fraction of the candidate's total.
pub fn leftover(request: &PlacementRequest, c: &Candidate, fit: &Fit) -> f64 {
    let cpu = if c.cpu_cores > 0.0 {
        (fit.free_vcpus - request.vcpus) / c.cpu_cores
    } else {
        0.0
    };
    let memory = if c.memory_total_mb > 0 {
        (c.memory_free_mb as f64 - request.memory_mb as f64) / c.memory_total_mb as f64
    } else {
        0.0
    };
    let gpu = if request.vgpus > 0 && c.gpus > 0 {
        (f64::from(c.gpus_free) - f64::from(request.vgpus)) / f64::from(c.gpus)
    } else {
        0.0
    };
    cpu + memory + gpu
}

/// The feasible candidate with the smallest key (lexicographic, total order on floats), ties
/// broken by name. One pass, no allocation until the answer is built.
///
/// Speed: numeric necessary conditions (active, free CPU, memory, GPUs) come first, and when
/// the key does not depend on latency or distance (`spatial_key` false, or no such
/// constraints) the key is computed from the numbers alone and the full [`check`] — whose
/// string comparisons dominate the cost — runs only for candidates that would become the new
/// best. The answer is the same as checking every candidate: one that does not beat the best
/// feasible candidate so far cannot be the minimum.
fn pick<const N: usize>(
    request: &PlacementRequest,
    candidates: &[Candidate],
    spatial_key: bool,
    key: impl Fn(&Candidate, &Fit) -> [f64; N],
) -> Result<Placement, NoPlacement> {
    let k = &request.constraints;
    let eager = spatial_key && (!k.geo.is_empty() || k.has_latency());
    let mut best: Option<(usize, [f64; N], Fit)> = None;
    let beats = |c: &Candidate, new: &[f64; N], best: &Option<(usize, [f64; N], Fit)>| match best {
        None => true,
        Some((j, best_key, _)) => match compare_keys(new, best_key) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => c.name < candidates[*j].name,
        },
    };
    for (i, c) in candidates.iter().enumerate() {
        if !may_fit(request, c) {
            continue;
        }
        if eager {
            let Ok(fit) = check(request, c) else {
                continue;
            };
            let new = key(c, &fit);
            if beats(c, &new, &best) {
                best = Some((i, new, fit));
            }
        } else {
            let numeric = Fit {
                free_vcpus: c.free_vcpus(),
                ..Fit::default()
            };
            let new = key(c, &numeric);
            if !beats(c, &new, &best) {
                continue;
            }
            if let Ok(fit) = check(request, c) {
                best = Some((i, new, fit));
            }
        }
    }
    match best {
        Some((i, _, fit)) => Ok(placement(request, candidates, i, fit)),
        None => Err(diagnose(request, candidates)),
    }
}

/// Necessary conditions of [`check`] that need no string comparison or pointer chasing.
#[inline(always)]
pub(crate) fn may_fit(request: &PlacementRequest, c: &Candidate) -> bool {
    c.active
        && c.memory_free_mb >= request.memory_mb
        && c.gpus_free >= request.vgpus
        && c.free_vcpus() >= request.vcpus
}

fn compare_keys<const N: usize>(a: &[f64; N], b: &[f64; N]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

pub(crate) fn placement(
    request: &PlacementRequest,
    candidates: &[Candidate],
    index: usize,
    fit: Fit,
) -> Placement {
    let k = &request.constraints;
    Placement {
        candidate: candidates[index].name.clone(),
        index: Some(index),
        expected_latency_ms: k.has_latency().then_some(fit.latency_ms),
        distance_km: (!k.geo.is_empty()).then_some(fit.distance_km),
    }
}
