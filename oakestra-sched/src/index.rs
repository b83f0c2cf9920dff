//! A placement index: the candidates kept ordered by what best fit and least loaded rank them
//! by, so that a placement looks at the few candidates near the answer instead of all of them,
//! and a change of one candidate (a report, a placement) costs `O(log n)`.
//!
//! The answers are those of the plain scan ([`BestFit`], [`LeastLoaded`], [`Ldp`] without
//! latency or geo constraints), including ties broken by name; requests the index cannot
//! narrow (first fit, whose order is the input's; LDP with latency or geo constraints; a
//! `direct` node list or a cluster list) are answered by the scan over the same candidates.
//!
//! # How best fit is narrowed
//!
//! Best fit ranks by the CPU, memory (and, for GPU requests, GPU) left after placement, each
//! as a fraction of the candidate's total: `(free_cpu − req_cpu) / cores + (free_mem − req_mem)
//! / mem_total`. Candidates of one *shape* (cores, memory, GPUs) share the denominators, so
//! among them the rank is the request-independent `free_cpu / cores + free_mem / mem_total`
//! minus a constant. Each shape keeps its candidates ordered by that base, in blocks that know
//! their largest free CPU, memory and GPUs; a placement walks each shape upwards from the
//! smallest base that could hold the request to its first feasible candidate (plus any within
//! rounding distance of it), skipping blocks too small for the request (the candidates best
//! fit has filled), and compares the shapes' winners. Edge fleets have few shapes, so this is
//! a handful of short walks.
//!
//! ```
//! use oakestra_sched::{Algorithm, Candidate, Level, PlacementIndex, PlacementRequest, Scheduler};
//!
//! let worker = |name: &str, free_mb| Candidate {
//!     name: name.into(),
//!     cpu_cores: 4.0,
//!     memory_total_mb: 8192,
//!     memory_free_mb: free_mb,
//!     virtualization: vec!["container".into()],
//!     active: true,
//!     ..Candidate::default()
//! };
//! let mut index = PlacementIndex::new(vec![worker("w1", 8192), worker("w2", 1024)]);
//! let request = PlacementRequest {
//!     level: Level::Cluster,
//!     vcpus: 1.0,
//!     memory_mb: 512,
//!     virtualization: "container".into(),
//!     ..PlacementRequest::default()
//! };
//! // Best fit packs: the fuller worker first, and the index agrees with the scan.
//! let placed = index.place(Algorithm::BestFit, &request).unwrap();
//! assert_eq!(placed.candidate, "w2");
//! assert_eq!(Algorithm::BestFit.place(&request, index.candidates()).unwrap(), placed);
//! index.commit(&request, "w2");
//! assert_eq!(index.get("w2").unwrap().memory_free_mb, 512);
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

mod blocks;
use blocks::{Blocks, Item};

use crate::algorithms::{leftover, may_fit, placement};
use crate::check::{Fit, check, diagnose};
use crate::model::{Candidate, Level, Placement, PlacementRequest};
use crate::status::NoPlacement;
use crate::{Algorithm, Scheduler, commit};

/// Candidates whose best-fit base is within this of the first feasible one are compared by
/// their exact score: the base and the scan's score may differ by rounding.
const EPSILON: f64 = 1e-9;

/// An `f64` ordered by [`f64::total_cmp`].
#[derive(Debug, Clone, Copy)]
struct Total(f64);

impl PartialEq for Total {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Total {}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Position of a candidate in one ordering: its rank keys, then its name (ties), then its
/// index in the candidate list.
type Entry = (Total, Total, String, usize);

/// Candidates of one shape (cores, memory, GPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    cores: u64,
    memory_total_mb: u64,
    gpus: u32,
}

impl Shape {
    fn of(c: &Candidate) -> Shape {
        Shape {
            cores: c.cpu_cores.to_bits(),
            memory_total_mb: c.memory_total_mb,
            gpus: c.gpus,
        }
    }

    fn cores(self) -> f64 {
        f64::from_bits(self.cores)
    }
}

/// The best-fit orderings of one shape: without and (for shapes with GPUs) with the GPU term.
#[derive(Debug, Default)]
struct ShapeOrder {
    plain: Blocks,
    gpu: Blocks,
}

/// The part of the best-fit score that does not depend on the request: what is free, as
/// fractions of the totals (the request's share is subtracted per shape).
fn base(c: &Candidate, with_gpu: bool) -> f64 {
    let cpu = if c.cpu_cores > 0.0 {
        c.free_vcpus() / c.cpu_cores
    } else {
        0.0
    };
    let memory = if c.memory_total_mb > 0 {
        c.memory_free_mb as f64 / c.memory_total_mb as f64
    } else {
        0.0
    };
    let gpu = if with_gpu && c.gpus > 0 {
        f64::from(c.gpus_free) / f64::from(c.gpus)
    } else {
        0.0
    };
    cpu + memory + gpu
}

/// The smallest base a candidate of `shape` that holds `request` can have.
fn least_base(shape: Shape, request: &PlacementRequest, with_gpu: bool) -> f64 {
    let cores = shape.cores();
    let cpu = if cores > 0.0 {
        request.vcpus / cores
    } else {
        0.0
    };
    let memory = if shape.memory_total_mb > 0 {
        request.memory_mb as f64 / shape.memory_total_mb as f64
    } else {
        0.0
    };
    let gpu = if with_gpu && shape.gpus > 0 {
        f64::from(request.vgpus) / f64::from(shape.gpus)
    } else {
        0.0
    };
    cpu + memory + gpu
}

/// Candidates kept ordered for best fit, least loaded and LDP without spatial constraints.
/// How the search is narrowed: the crate README, section "The placement index".
#[derive(Debug, Default)]
pub struct PlacementIndex {
    candidates: Vec<Candidate>,
    by_name: HashMap<String, usize>,
    shapes: HashMap<Shape, ShapeOrder>,
    least_loaded: BTreeSet<Entry>,
}

impl PlacementIndex {
    /// An index over `candidates` (their order is kept: first fit and the answers' `index`
    /// refer to it). A later candidate with the name of an earlier one replaces it.
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let mut index = PlacementIndex::default();
        for c in candidates {
            index.upsert(c);
        }
        index
    }

    /// The candidates, in their order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The candidate named `name`.
    pub fn get(&self, name: &str) -> Option<&Candidate> {
        self.by_name.get(name).map(|&i| &self.candidates[i])
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Whether there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Adds `candidate`, or replaces the one with its name (a new report): `O(log n)`.
    pub fn upsert(&mut self, candidate: Candidate) {
        match self.by_name.get(&candidate.name) {
            Some(&i) => {
                self.unlink(i);
                self.candidates[i] = candidate;
                self.link(i);
            }
            None => {
                let i = self.candidates.len();
                self.by_name.insert(candidate.name.clone(), i);
                self.candidates.push(candidate);
                self.link(i);
            }
        }
    }

    /// Removes the candidate named `name` (the last candidate takes its place in the order).
    pub fn remove(&mut self, name: &str) -> Option<Candidate> {
        let i = *self.by_name.get(name)?;
        self.unlink(i);
        let last = self.candidates.len() - 1;
        if i != last {
            self.unlink(last);
        }
        let removed = self.candidates.swap_remove(i);
        self.by_name.remove(name);
        if i != last {
            self.by_name.insert(self.candidates[i].name.clone(), i);
            self.link(i);
        }
        Some(removed)
    }

    /// Takes `request`'s demand off the candidate named `name` ([`commit`]), as after
    /// placing it there. `false` if there is no such candidate.
    pub fn commit(&mut self, request: &PlacementRequest, name: &str) -> bool {
        let Some(&i) = self.by_name.get(name) else {
            return false;
        };
        self.unlink(i);
        commit(request, &mut self.candidates[i]);
        self.link(i);
        true
    }

    /// Places `request` with `algorithm`: the same answer as `algorithm.place(request,
    /// self.candidates())`.
    pub fn place(
        &self,
        algorithm: Algorithm,
        request: &PlacementRequest,
    ) -> Result<Placement, NoPlacement> {
        let k = &request.constraints;
        let listed = match request.level {
            Level::Cluster => !k.nodes.is_empty(),
            Level::Root => k.cluster.is_some() || !k.clusters.is_empty(),
        };
        let spatial = !k.geo.is_empty() || k.has_latency();
        let found = match algorithm {
            _ if listed => return algorithm.place(request, &self.candidates),
            Algorithm::FirstFit => return algorithm.place(request, &self.candidates),
            Algorithm::Ldp if spatial => return algorithm.place(request, &self.candidates),
            Algorithm::BestFit | Algorithm::Ldp => self.best_fit(request),
            Algorithm::LeastLoaded => self.least_loaded(request),
        };
        match found {
            Some((i, fit)) => Ok(placement(request, &self.candidates, i, fit)),
            None => Err(diagnose(request, &self.candidates)),
        }
    }

    /// Places `request` and commits it to the chosen candidate.
    pub fn place_and_commit(
        &mut self,
        algorithm: Algorithm,
        request: &PlacementRequest,
    ) -> Result<Placement, NoPlacement> {
        let placed = self.place(algorithm, request)?;
        self.commit(request, &placed.candidate);
        Ok(placed)
    }

    fn entry(&self, i: usize, a: f64, b: f64) -> Entry {
        (Total(a), Total(b), self.candidates[i].name.clone(), i)
    }

    fn keys(&self, i: usize) -> (Shape, Item, Option<Item>, Entry) {
        let c = &self.candidates[i];
        let usage = c.cpu_usage_percent;
        let item = |entry| Item {
            entry,
            free_vcpus: c.free_vcpus(),
            free_memory_mb: c.memory_free_mb,
            free_gpus: c.gpus_free,
        };
        let plain = item(self.entry(i, base(c, false), usage));
        let gpu = (c.gpus > 0).then(|| item(self.entry(i, base(c, true), usage)));
        let loaded = self.entry(i, c.busy_percent(), -(c.memory_free_mb as f64));
        (Shape::of(c), plain, gpu, loaded)
    }

    fn link(&mut self, i: usize) {
        if !self.candidates[i].active {
            return;
        }
        let (shape, plain, gpu, loaded) = self.keys(i);
        let order = self.shapes.entry(shape).or_default();
        order.plain.insert(plain);
        if let Some(gpu) = gpu {
            order.gpu.insert(gpu);
        }
        self.least_loaded.insert(loaded);
    }

    fn unlink(&mut self, i: usize) {
        if !self.candidates[i].active {
            return;
        }
        let (shape, plain, gpu, loaded) = self.keys(i);
        if let Some(order) = self.shapes.get_mut(&shape) {
            order.plain.remove(&plain.entry);
            if let Some(gpu) = gpu {
                order.gpu.remove(&gpu.entry);
            }
            if order.plain.is_empty() {
                self.shapes.remove(&shape);
            }
        }
        self.least_loaded.remove(&loaded);
    }

    /// Best fit: each shape's winner, walked up from the least base that could hold the
    /// request, then the best of the winners by the scan's key.
    fn best_fit(&self, request: &PlacementRequest) -> Option<(usize, Fit)> {
        let with_gpu = request.vgpus > 0;
        let mut best: Option<(usize, [f64; 2], Fit)> = None;
        for (&shape, order) in &self.shapes {
            if with_gpu && shape.gpus == 0 {
                continue;
            }
            let set = if with_gpu { &order.gpu } else { &order.plain };
            let from = least_base(shape, request, with_gpu) - EPSILON;
            let start = (Total(from), Total(f64::NEG_INFINITY), String::new(), 0);
            // The walk ends past the first candidate that became or failed to beat the best:
            // later ones leave more free, so they cannot beat it (up to rounding).
            let mut stop_at: Option<f64> = None;
            let walk = set.walk(&start, request.vcpus, request.memory_mb, request.vgpus);
            for item in walk {
                let (base, _, _, i) = &item.entry;
                if stop_at.is_some_and(|b| base.0 > b + EPSILON) {
                    break;
                }
                if item.free_vcpus < request.vcpus
                    || item.free_memory_mb < request.memory_mb
                    || item.free_gpus < request.vgpus
                {
                    continue;
                }
                let c = &self.candidates[*i];
                if !may_fit(request, c) {
                    continue;
                }
                let numeric = Fit {
                    free_vcpus: c.free_vcpus(),
                    ..Fit::default()
                };
                let key = [leftover(request, c, &numeric), c.cpu_usage_percent];
                if !beats(&self.candidates, c, &key, &best) {
                    stop_at.get_or_insert(base.0);
                    continue;
                }
                if let Ok(fit) = check(request, c) {
                    stop_at.get_or_insert(base.0);
                    best = Some((*i, key, fit));
                }
            }
        }
        best.map(|(i, _, fit)| (i, fit))
    }

    /// Least loaded: the first feasible candidate in (busy, most free memory, name) order.
    fn least_loaded(&self, request: &PlacementRequest) -> Option<(usize, Fit)> {
        self.least_loaded.iter().find_map(|(_, _, _, i)| {
            let c = &self.candidates[*i];
            if !may_fit(request, c) {
                return None;
            }
            check(request, c).ok().map(|fit| (*i, fit))
        })
    }
}

/// Whether `c` with `key` beats the best so far (ties by name), as the scan decides.
fn beats(
    candidates: &[Candidate],
    c: &Candidate,
    key: &[f64; 2],
    best: &Option<(usize, [f64; 2], Fit)>,
) -> bool {
    match best {
        None => true,
        Some((j, best_key, _)) => {
            match key[0]
                .total_cmp(&best_key[0])
                .then(key[1].total_cmp(&best_key[1]))
            {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => c.name < candidates[*j].name,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Constraints;
    use proptest::prelude::*;

    fn worker(i: usize, cores: f64, load: f64, usage: f64, total: u64, free: u64) -> Candidate {
        Candidate {
            name: format!("w{i:03}"),
            cpu_cores: cores,
            cpu_load_percent: load,
            cpu_usage_percent: usage,
            memory_total_mb: total,
            memory_free_mb: free.min(total),
            gpus: u32::from(i.is_multiple_of(5)) * 2,
            gpus_free: u32::from(i.is_multiple_of(10)) * 2,
            virtualization: if i.is_multiple_of(3) {
                vec!["unikernel".into()]
            } else {
                vec!["container".into()]
            },
            arch: vec![
                if i.is_multiple_of(4) {
                    "arm64"
                } else {
                    "amd64"
                }
                .into(),
            ],
            active: !i.is_multiple_of(7),
            ..Candidate::default()
        }
    }

    fn arb_worker() -> impl Strategy<Value = (f64, f64, f64, u64, u64)> {
        (
            prop::sample::select(vec![0.0, 1.0, 2.0, 4.0]),
            prop::sample::select(vec![0.0, 25.0, 50.0, 75.0, 100.0, 37.5]),
            prop::sample::select(vec![0.0, 10.0, 50.0, 90.0]),
            prop::sample::select(vec![0u64, 1024, 2048, 4096]),
            prop::sample::select(vec![0u64, 100, 512, 1024, 2048, 4096]),
        )
    }

    fn arb_request() -> impl Strategy<Value = PlacementRequest> {
        (
            prop::sample::select(vec![0.0, 0.5, 1.0, 2.0]),
            prop::sample::select(vec![0u64, 100, 512, 1024]),
            prop::sample::select(vec![0u32, 0, 0, 1]),
            prop::sample::select(vec!["", "container", "unikernel"]),
            prop::sample::select(vec!["", "", "arm64"]),
        )
            .prop_map(|(vcpus, memory_mb, vgpus, virt, arch)| PlacementRequest {
                level: Level::Cluster,
                vcpus,
                memory_mb,
                vgpus,
                virtualization: virt.into(),
                arch: if arch.is_empty() {
                    Vec::new()
                } else {
                    vec![arch.into()]
                },
                constraints: Constraints::default(),
                ..PlacementRequest::default()
            })
    }

    proptest! {
        /// The index answers as the scan does, through a series of placements with capacity
        /// taken, reports that replace candidates, and removals.
        #[test]
        fn the_index_answers_as_the_scan(
            workers in prop::collection::vec(arb_worker(), 0..40),
            requests in prop::collection::vec(arb_request(), 1..12),
            replace in prop::collection::vec((0usize..40, arb_worker()), 0..6),
        ) {
            let candidates: Vec<Candidate> = workers
                .iter()
                .enumerate()
                .map(|(i, &(c, l, u, t, f))| worker(i, c, l, u, t, f))
                .collect();
            let mut index = PlacementIndex::new(candidates);
            let mut scan: Vec<Candidate> = index.candidates().to_vec();
            for (step, request) in requests.iter().enumerate() {
                for algorithm in [Algorithm::BestFit, Algorithm::Ldp, Algorithm::LeastLoaded, Algorithm::FirstFit] {
                    let want = algorithm.place(request, &scan).map(|p| p.candidate);
                    let got = index.place(algorithm, request).map(|p| p.candidate);
                    prop_assert_eq!(&got, &want, "{} step {}", algorithm, step);
                }
                if let Ok(p) = index.place_and_commit(Algorithm::BestFit, request) {
                    let i = scan.iter().position(|c| c.name == p.candidate).unwrap();
                    commit(request, &mut scan[i]);
                }
                if let Some(&(slot, (c, l, u, t, f))) = replace.get(step)
                    && !scan.is_empty()
                {
                    let i = slot % scan.len();
                    let n: usize = scan[i].name[1..].parse().unwrap();
                    let new = worker(n, c, l, u, t, f);
                    if step % 3 == 2 {
                        index.remove(&new.name);
                        scan.remove(i);
                    } else {
                        index.upsert(new.clone());
                        scan[i] = new;
                    }
                }
                // Removal reorders the index's list; compare as sets.
                let mut a: Vec<_> = index.candidates().to_vec();
                a.sort_by(|x, y| x.name.cmp(&y.name));
                let mut b = scan.clone();
                b.sort_by(|x, y| x.name.cmp(&y.name));
                prop_assert_eq!(a, b);
                // First fit depends on the order: keep the scan's list in the index's order.
                scan = index.candidates().to_vec();
            }
        }
    }

    #[test]
    fn an_empty_index_and_a_full_fleet_say_why_as_the_scan_does() {
        let request = PlacementRequest {
            level: Level::Cluster,
            vcpus: 8.0,
            memory_mb: 100,
            ..PlacementRequest::default()
        };
        let index = PlacementIndex::default();
        assert_eq!(
            index.place(Algorithm::BestFit, &request).unwrap_err(),
            Algorithm::BestFit.place(&request, &[]).unwrap_err()
        );
        let index = PlacementIndex::new(
            (1..4)
                .map(|i| worker(i, 4.0, 0.0, 0.0, 4096, 4096))
                .collect(),
        );
        let err = index.place(Algorithm::BestFit, &request).unwrap_err();
        assert_eq!(
            err,
            Algorithm::BestFit
                .place(&request, index.candidates())
                .unwrap_err()
        );
        assert!(!index.is_empty() && index.len() == 3);
    }

    #[test]
    fn upsert_remove_and_commit_keep_the_orderings_in_step() {
        let mut index = PlacementIndex::new(vec![
            worker(1, 4.0, 0.0, 0.0, 4096, 4096),
            worker(2, 4.0, 50.0, 0.0, 4096, 1024),
        ]);
        let request = PlacementRequest {
            level: Level::Cluster,
            vcpus: 1.0,
            memory_mb: 512,
            virtualization: "container".into(),
            ..PlacementRequest::default()
        };
        assert_eq!(
            index.place(Algorithm::BestFit, &request).unwrap().candidate,
            "w002"
        );
        assert_eq!(
            index
                .place(Algorithm::LeastLoaded, &request)
                .unwrap()
                .candidate,
            "w001"
        );
        // Two placements fill w002's memory; best fit then moves to w001.
        index
            .place_and_commit(Algorithm::BestFit, &request)
            .unwrap();
        index
            .place_and_commit(Algorithm::BestFit, &request)
            .unwrap();
        assert_eq!(index.get("w002").unwrap().memory_free_mb, 0);
        assert_eq!(
            index.place(Algorithm::BestFit, &request).unwrap().candidate,
            "w001"
        );
        // A report that frees w002 again, then w001 leaves.
        index.upsert(worker(2, 4.0, 0.0, 0.0, 4096, 2048));
        assert!(index.remove("w001").is_some());
        assert!(index.remove("w001").is_none());
        assert!(!index.commit(&request, "w001"));
        let placed = index.place(Algorithm::BestFit, &request).unwrap();
        assert_eq!((placed.candidate.as_str(), placed.index), ("w002", Some(0)));
    }
}
