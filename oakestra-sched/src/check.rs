//! The hard constraints every algorithm applies, and the diagnosis of a failed placement.
//!
//! [`check`] tests one candidate against a request without allocating. Qualification checks come
//! before capacity checks, so a candidate rejected for capacity is known to qualify otherwise;
//! that is what separates `NO_WORKER_CAPACITY` from `NO_QUALIFIED_WORKER_FOUND`.

use std::fmt::Write as _;

use crate::distance::{haversine_km, instance_latency_ms, user_latency_ms};
use crate::model::{Candidate, Level, PlacementRequest};
use crate::status::{NegativeSchedulingStatus, NoPlacement};

/// Why a candidate was excluded, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exclusion {
    /// Not named by the `direct` constraint (node list, or target cluster at root).
    NotListed,
    /// Not in the `clusters` constraint's allowed list.
    ClusterNotAllowed,
    /// Not active.
    Inactive,
    /// Does not support the requested virtualization.
    Virtualization,
    /// None of the allowed architectures.
    Arch,
    /// Misses a CSI driver the volumes need.
    CsiDriver,
    /// Misses an add-on of the `addons` constraint.
    Addon,
    /// Has no GPU at all while GPUs are requested.
    NoGpu,
    /// Has no location while a `geo` constraint exists.
    GeoUnknown,
    /// Farther than a `geo` threshold.
    Geo,
    /// No RTT estimate to a user endpoint.
    LatencyUnknown,
    /// RTT to users above a `latency` threshold.
    Latency,
    /// No RTT estimate to any placed instance of a `connectivity` target.
    ConnectivityUnknown,
    /// RTT to the closest target instance above a `connectivity` threshold.
    Connectivity,
    /// Not enough free CPU.
    Cpu,
    /// Not enough free memory.
    Memory,
    /// Not enough free GPUs.
    Gpu,
    /// Root level: no single worker of the cluster has enough free CPU.
    WorkerCpu,
    /// Root level: no single worker of the cluster has enough free memory.
    WorkerMemory,
    /// Root level: no single worker of the cluster has enough free GPUs.
    WorkerGpu,
}

const EXCLUSION_COUNT: usize = 20;

impl Exclusion {
    const ALL: [Exclusion; EXCLUSION_COUNT] = [
        Exclusion::NotListed,
        Exclusion::ClusterNotAllowed,
        Exclusion::Inactive,
        Exclusion::Virtualization,
        Exclusion::Arch,
        Exclusion::CsiDriver,
        Exclusion::Addon,
        Exclusion::NoGpu,
        Exclusion::GeoUnknown,
        Exclusion::Geo,
        Exclusion::LatencyUnknown,
        Exclusion::Latency,
        Exclusion::ConnectivityUnknown,
        Exclusion::Connectivity,
        Exclusion::Cpu,
        Exclusion::Memory,
        Exclusion::Gpu,
        Exclusion::WorkerCpu,
        Exclusion::WorkerMemory,
        Exclusion::WorkerGpu,
    ];

    fn index(self) -> usize {
        // Fieldless enum in declaration order, the same order as `ALL`.
        self as usize
    }

    /// True for "not now" reasons (free capacity), false for "never here" reasons.
    pub fn is_capacity(self) -> bool {
        matches!(
            self,
            Exclusion::Cpu
                | Exclusion::Memory
                | Exclusion::Gpu
                | Exclusion::WorkerCpu
                | Exclusion::WorkerMemory
                | Exclusion::WorkerGpu
        )
    }

    /// For reasons with a measured value: is a larger observation closer to passing?
    fn larger_is_better(self) -> bool {
        self.is_capacity()
    }
}

/// A rejected candidate: the first failing check, with the value it needed and the value the
/// candidate had (both 0 for yes/no checks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejection {
    /// Which check failed.
    pub reason: Exclusion,
    /// What the request needed (cores, MB, GPUs, km, ms).
    pub required: f64,
    /// What the candidate had.
    pub observed: f64,
}

impl Rejection {
    fn flag(reason: Exclusion) -> Self {
        Rejection {
            reason,
            required: 0.0,
            observed: 0.0,
        }
    }

    fn value(reason: Exclusion, required: f64, observed: f64) -> Self {
        Rejection {
            reason,
            required,
            observed,
        }
    }
}

/// A feasible candidate's figures that the rankings use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fit {
    /// Free CPU cores before placement.
    pub free_vcpus: f64,
    /// Expected RTT summed over latency and connectivity constraints, ms.
    pub latency_ms: f64,
    /// Distance summed over geo constraints, km.
    pub distance_km: f64,
}

/// `docker` is what Oakestra stores for `container`.
fn same_virtualization(a: &str, b: &str) -> bool {
    a == b || (is_container(a) && is_container(b))
}

fn is_container(v: &str) -> bool {
    v == "container" || v == "docker"
}

fn canonical_arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn same_arch(a: &str, b: &str) -> bool {
    a == b || canonical_arch(a) == canonical_arch(b)
}

/// `value <= limit`, false when either is NaN, so that bad input rejects rather than passes.
#[inline]
fn at_most(value: f64, limit: f64) -> bool {
    value <= limit
}

fn contains(list: &[String], wanted: &str) -> bool {
    list.iter().any(|s| s == wanted)
}

/// Test one candidate against every hard constraint of the request.
pub fn check(request: &PlacementRequest, c: &Candidate) -> Result<Fit, Rejection> {
    let k = &request.constraints;
    match request.level {
        Level::Cluster => {
            if !k.nodes.is_empty() && !contains(&k.nodes, &c.name) {
                return Err(Rejection::flag(Exclusion::NotListed));
            }
        }
        Level::Root => {
            if let Some(target) = &k.cluster
                && *target != c.name
            {
                return Err(Rejection::flag(Exclusion::NotListed));
            }
            if !k.clusters.is_empty() && !contains(&k.clusters, &c.name) {
                return Err(Rejection::flag(Exclusion::ClusterNotAllowed));
            }
        }
    }
    if !c.active {
        return Err(Rejection::flag(Exclusion::Inactive));
    }
    if !request.virtualization.is_empty()
        && !c
            .virtualization
            .iter()
            .any(|v| same_virtualization(v, &request.virtualization))
    {
        return Err(Rejection::flag(Exclusion::Virtualization));
    }
    if !request.arch.is_empty()
        && !request
            .arch
            .iter()
            .any(|want| c.arch.iter().any(|have| same_arch(want, have)))
    {
        return Err(Rejection::flag(Exclusion::Arch));
    }
    if !request
        .csi_drivers
        .iter()
        .all(|d| contains(&c.csi_drivers, d))
    {
        return Err(Rejection::flag(Exclusion::CsiDriver));
    }
    if !k.addons.iter().all(|a| contains(&c.addons, a)) {
        return Err(Rejection::flag(Exclusion::Addon));
    }
    if request.vgpus > 0 && c.gpus == 0 {
        return Err(Rejection::flag(Exclusion::NoGpu));
    }

    let mut fit = Fit::default();
    for g in &k.geo {
        let Some(at) = c.location else {
            return Err(Rejection::flag(Exclusion::GeoUnknown));
        };
        let d = haversine_km(at, g.location);
        if !at_most(d, g.threshold_km) {
            return Err(Rejection::value(Exclusion::Geo, g.threshold_km, d));
        }
        fit.distance_km += d;
    }
    for l in &k.latency {
        let Some(ms) = user_latency_ms(c, &l.user) else {
            return Err(Rejection::flag(Exclusion::LatencyUnknown));
        };
        if !at_most(ms, l.threshold_ms) {
            return Err(Rejection::value(Exclusion::Latency, l.threshold_ms, ms));
        }
        fit.latency_ms += ms;
    }
    for s in &k.connectivity {
        if s.instances.is_empty() {
            continue;
        }
        let closest = s
            .instances
            .iter()
            .filter_map(|i| instance_latency_ms(c, i))
            .fold(f64::INFINITY, f64::min);
        if closest == f64::INFINITY {
            return Err(Rejection::flag(Exclusion::ConnectivityUnknown));
        }
        if !at_most(closest, s.threshold_ms) {
            return Err(Rejection::value(
                Exclusion::Connectivity,
                s.threshold_ms,
                closest,
            ));
        }
        fit.latency_ms += closest;
    }

    fit.free_vcpus = c.free_vcpus();
    if !at_most(request.vcpus, fit.free_vcpus) {
        return Err(Rejection::value(
            Exclusion::Cpu,
            request.vcpus,
            fit.free_vcpus,
        ));
    }
    if c.memory_free_mb < request.memory_mb {
        return Err(Rejection::value(
            Exclusion::Memory,
            request.memory_mb as f64,
            c.memory_free_mb as f64,
        ));
    }
    if c.gpus_free < request.vgpus {
        return Err(Rejection::value(
            Exclusion::Gpu,
            f64::from(request.vgpus),
            f64::from(c.gpus_free),
        ));
    }
    if let Some(w) = &c.max_worker_free {
        if !at_most(request.vcpus, w.vcpus) {
            return Err(Rejection::value(
                Exclusion::WorkerCpu,
                request.vcpus,
                w.vcpus,
            ));
        }
        if w.memory_mb < request.memory_mb {
            return Err(Rejection::value(
                Exclusion::WorkerMemory,
                request.memory_mb as f64,
                w.memory_mb as f64,
            ));
        }
        if w.gpus < request.vgpus {
            return Err(Rejection::value(
                Exclusion::WorkerGpu,
                f64::from(request.vgpus),
                f64::from(w.gpus),
            ));
        }
    }
    Ok(fit)
}

#[derive(Clone, Copy)]
struct Tally {
    count: usize,
    best: Option<Rejection>,
}

/// Explain why no candidate fits: pick the status and count the candidates per reason.
///
/// Called only after a scheduler found nothing, so it may take a second pass and allocate.
/// Schedulers that add their own exclusions can use it too; candidates that pass every hard
/// constraint are reported as "feasible but not chosen".
pub fn diagnose(request: &PlacementRequest, candidates: &[Candidate]) -> NoPlacement {
    let mut tallies = [Tally {
        count: 0,
        best: None,
    }; EXCLUSION_COUNT];
    let mut feasible = 0usize;
    for c in candidates {
        match check(request, c) {
            Ok(_) => feasible += 1,
            Err(r) => {
                let t = &mut tallies[r.reason.index()];
                t.count += 1;
                let better = match t.best {
                    None => true,
                    Some(b) if r.reason.larger_is_better() => r.observed > b.observed,
                    Some(b) => r.observed < b.observed,
                };
                if better {
                    t.best = Some(r);
                }
            }
        }
    }
    let count = |e: Exclusion| tallies[e.index()].count;
    let k = &request.constraints;
    let qualified = feasible
        + Exclusion::ALL
            .iter()
            .filter(|e| e.is_capacity())
            .map(|&e| count(e))
            .sum::<usize>();

    let status = match request.level {
        Level::Root => match &k.cluster {
            Some(target) => match candidates.iter().find(|c| c.name == *target) {
                None => NegativeSchedulingStatus::TargetClusterNotFound,
                Some(c) if !c.active => NegativeSchedulingStatus::TargetClusterNotActive,
                Some(_) => NegativeSchedulingStatus::TargetClusterNoCapacity,
            },
            None => NegativeSchedulingStatus::NoActiveClusterWithCapacity,
        },
        Level::Cluster => {
            let listed_active = k.nodes.is_empty()
                || candidates
                    .iter()
                    .any(|c| c.active && contains(&k.nodes, &c.name));
            if !listed_active {
                NegativeSchedulingStatus::NoNodeFound
            } else if qualified > 0 || count(Exclusion::Inactive) > 0 || candidates.is_empty() {
                // Waiting may help: capacity frees up, inactive workers come back, workers join.
                NegativeSchedulingStatus::NoWorkerCapacity
            } else {
                NegativeSchedulingStatus::NoQualifiedWorkerFound
            }
        }
    };

    let noun = request.level.candidates_noun(candidates.len());
    let mut detail = format!("{} {noun}", candidates.len());
    let mut parts: Vec<String> = Vec::new();
    for e in Exclusion::ALL {
        let t = tallies[e.index()];
        if t.count > 0 {
            parts.push(describe(request, e, t.count, t.best));
        }
    }
    if feasible > 0 {
        parts.push(format!("{feasible} feasible but not chosen"));
    }
    if parts.is_empty() {
        detail.push_str(" to choose from");
    } else {
        let _ = write!(detail, ": {}", parts.join(", "));
    }
    if let (Level::Root, Some(target)) = (request.level, &k.cluster) {
        let _ = write!(detail, " (target cluster {target:?})");
    }
    NoPlacement { status, detail }
}

fn describe(request: &PlacementRequest, e: Exclusion, n: usize, best: Option<Rejection>) -> String {
    let k = &request.constraints;
    let (need, have) = best.map_or((0.0, 0.0), |b| (b.required, b.observed));
    let list = |l: &[String]| l.join(", ");
    match e {
        Exclusion::NotListed => match request.level {
            Level::Cluster => format!("{n} not in the node list ({})", list(&k.nodes)),
            Level::Root => format!("{n} not the target cluster"),
        },
        Exclusion::ClusterNotAllowed => {
            format!("{n} not in the allowed clusters ({})", list(&k.clusters))
        }
        Exclusion::Inactive => format!("{n} inactive"),
        Exclusion::Virtualization => {
            format!("{n} lack virtualization {}", request.virtualization)
        }
        Exclusion::Arch => format!(
            "{n} lack architecture (need one of {})",
            list(&request.arch)
        ),
        Exclusion::CsiDriver => {
            format!("{n} lack CSI drivers (need {})", list(&request.csi_drivers))
        }
        Exclusion::Addon => format!("{n} lack add-ons (need {})", list(&k.addons)),
        Exclusion::NoGpu => format!("{n} have no GPU"),
        Exclusion::GeoUnknown => format!("{n} have no location"),
        Exclusion::Geo => format!("{n} too far (need within {need} km, nearest is {have:.0} km)"),
        Exclusion::LatencyUnknown => format!("{n} have no latency estimate to the users"),
        Exclusion::Latency => {
            format!("{n} too slow to the users (need at most {need} ms, best has {have:.1} ms)")
        }
        Exclusion::ConnectivityUnknown => {
            format!("{n} have no latency estimate to the target service's instances")
        }
        Exclusion::Connectivity => format!(
            "{n} too slow to the target service (need at most {need} ms, best has {have:.1} ms)"
        ),
        Exclusion::Cpu => {
            format!("{n} lack CPU (need {need} cores, best has {have:.2} free)")
        }
        Exclusion::Memory => format!("{n} lack memory (need {need} MB, best has {have} MB)"),
        Exclusion::Gpu => format!("{n} lack free GPUs (need {need}, best has {have})"),
        Exclusion::WorkerCpu => format!(
            "{n} have no single worker with enough CPU (need {need} cores, largest has {have:.2})"
        ),
        Exclusion::WorkerMemory => format!(
            "{n} have no single worker with enough memory (need {need} MB, largest has {have} MB)"
        ),
        Exclusion::WorkerGpu => {
            format!("{n} have no single worker with enough GPUs (need {need}, largest has {have})")
        }
    }
}
