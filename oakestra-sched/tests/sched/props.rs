//! Property tests: the invariants every algorithm keeps, checked against an oracle written
//! independently of the crate's own constraint code.

use std::collections::BTreeMap;

use oakestra_sched::{
    Algorithm, Candidate, Endpoint, FirstFit, GeoConstraint, GeoPoint, LatencyConstraint, Level,
    NegativeSchedulingStatus as S, PlacementRequest, Scheduler, Vivaldi, WorkerCapacity,
    place_replicas,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

const VIRTS: [&str; 3] = ["container", "docker", "unikernel"];
const ARCHS: [&str; 3] = ["amd64", "arm64", "x86_64"];
const CSI: [&str; 2] = ["nfs", "s3"];

fn strings(
    all: &[&'static str],
    size: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<String>> {
    subsequence(all.to_vec(), size).prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn point() -> impl Strategy<Value = GeoPoint> {
    (47.0..49.0f64, 10.0..12.0f64).prop_map(|(lat, long)| GeoPoint { lat, long })
}

fn vivaldi() -> impl Strategy<Value = Vivaldi> {
    (-20.0..20.0f64, -20.0..20.0f64, 0.0..2.0f64).prop_map(|(x, y, height)| Vivaldi {
        vector: vec![x, y],
        height,
    })
}

prop_compose! {
    fn candidate()(
        cores in 0u32..9,
        load in 0u32..=100,
        usage in 0u32..=4,
        total in 0u64..4096,
        free_fraction in 0.0..=1.0f64,
        gpus in 0u32..3,
        gpus_used in 0u32..3,
        virtualization in strings(&VIRTS, 1..=2),
        arch in strings(&ARCHS, 1..=1),
        csi in strings(&CSI, 0..=2),
        location in proptest::option::weighted(0.8, point()),
        viv in proptest::option::weighted(0.8, vivaldi()),
        rtt in proptest::option::weighted(0.3, 0.0..40.0f64),
        active in proptest::bool::weighted(0.85),
        worker in proptest::option::weighted(0.3, (0u32..9, 0u64..4096, 0u32..3)),
    ) -> Candidate {
        let mut rtt_ms = BTreeMap::new();
        if let Some(ms) = rtt {
            rtt_ms.insert("users".to_owned(), ms);
        }
        Candidate {
            name: String::new(),
            cpu_cores: f64::from(cores) / 2.0,
            cpu_load_percent: f64::from(load),
            // Few distinct values, so that ties on the main key meet different usages.
            cpu_usage_percent: f64::from(usage * 25),
            memory_total_mb: total,
            memory_free_mb: (total as f64 * free_fraction) as u64,
            gpus,
            gpus_free: gpus.saturating_sub(gpus_used),
            virtualization,
            arch,
            csi_drivers: csi,
            addons: vec![],
            location,
            vivaldi: viv,
            rtt_ms,
            active,
            max_worker_free: worker.map(|(c, m, g)| WorkerCapacity {
                vcpus: f64::from(c) / 2.0,
                memory_mb: m,
                gpus: g,
            }),
        }
    }
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(candidate(), 0..24).prop_map(|mut v| {
        for (i, c) in v.iter_mut().enumerate() {
            c.name = format!("n{i:02}");
        }
        v
    })
}

prop_compose! {
    fn placement_request()(
        root in any::<bool>(),
        vcpus in 0u32..5,
        memory_mb in 0u64..1024,
        vgpus in proptest::option::weighted(0.15, 1u32..3),
        virt in proptest::option::weighted(0.8, proptest::sample::select(VIRTS.to_vec())),
        arch in proptest::option::weighted(0.3, strings(&ARCHS, 1..=2)),
        csi in proptest::option::weighted(0.2, strings(&CSI, 1..=1)),
        nodes in proptest::option::weighted(0.2, prop::collection::vec(0usize..24, 1..4)),
        cluster in proptest::option::weighted(0.2, 0usize..24),
        clusters in proptest::option::weighted(0.2, prop::collection::vec(0usize..24, 1..6)),
        geo in proptest::option::weighted(0.3, (point(), 20.0..250.0f64)),
        latency in proptest::option::weighted(0.3, (vivaldi(), 5.0..60.0f64)),
    ) -> PlacementRequest {
        let name = |i: &usize| format!("n{i:02}");
        let mut r = PlacementRequest {
            level: if root { Level::Root } else { Level::Cluster },
            service: "s".into(),
            vcpus: f64::from(vcpus) / 2.0,
            memory_mb,
            vgpus: vgpus.unwrap_or(0),
            virtualization: virt.unwrap_or("").to_owned(),
            arch: arch.unwrap_or_default(),
            csi_drivers: csi.unwrap_or_default(),
            ..PlacementRequest::default()
        };
        r.constraints.nodes = nodes.map(|v| v.iter().map(name).collect()).unwrap_or_default();
        r.constraints.cluster = cluster.as_ref().map(name);
        r.constraints.clusters = clusters.map(|v| v.iter().map(name).collect()).unwrap_or_default();
        if let Some((location, threshold_km)) = geo {
            r.constraints.geo.push(GeoConstraint { location, threshold_km });
        }
        if let Some((v, threshold_ms)) = latency {
            r.constraints.latency.push(LatencyConstraint {
                user: Endpoint { name: "users".into(), location: None, vivaldi: Some(v) },
                threshold_ms,
            });
        }
        r
    }
}

// ---- the oracle: the contract, restated from the README, independent of src/check.rs ------

fn km(a: GeoPoint, b: GeoPoint) -> f64 {
    // Spherical law of cosines; agrees with haversine to well under a metre at these distances.
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dl = (b.long - a.long).to_radians();
    let c = (p1.sin() * p2.sin() + p1.cos() * p2.cos() * dl.cos()).clamp(-1.0, 1.0);
    6371.0088 * c.acos()
}

fn arch_eq(a: &str, b: &str) -> bool {
    let canon = |s: &str| match s {
        "x86_64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        o => o.to_owned(),
    };
    canon(a) == canon(b)
}

fn virt_eq(a: &str, b: &str) -> bool {
    a == b || (a == "docker" && b == "container") || (a == "container" && b == "docker")
}

/// Everything a chosen candidate must satisfy. `tolerance` absorbs float rounding at
/// thresholds (the oracle's distance formula differs from the crate's).
fn satisfies(r: &PlacementRequest, c: &Candidate, tolerance: f64) -> bool {
    let k = &r.constraints;
    let listed = match r.level {
        Level::Cluster => k.nodes.is_empty() || k.nodes.contains(&c.name),
        Level::Root => {
            k.cluster.as_ref().is_none_or(|t| *t == c.name)
                && (k.clusters.is_empty() || k.clusters.contains(&c.name))
        }
    };
    let free_cpu = c.cpu_cores * (1.0 - c.cpu_load_percent / 100.0);
    let worker_fits = c
        .max_worker_free
        .is_none_or(|w| w.vcpus >= r.vcpus && w.memory_mb >= r.memory_mb && w.gpus >= r.vgpus);
    let geo_ok = k.geo.iter().all(|g| {
        c.location
            .is_some_and(|at| km(at, g.location) <= g.threshold_km + tolerance)
    });
    let latency_ok = k.latency.iter().all(|l| {
        let estimate = c.rtt_ms.get(&l.user.name).copied().or_else(|| {
            let (a, b) = (c.vivaldi.as_ref()?, l.user.vivaldi.as_ref()?);
            let d2: f64 = a
                .vector
                .iter()
                .zip(&b.vector)
                .map(|(x, y)| (x - y).powi(2))
                .sum();
            Some(d2.sqrt() + a.height + b.height)
        });
        estimate.is_some_and(|ms| ms <= l.threshold_ms + tolerance)
    });
    listed
        && c.active
        && (r.virtualization.is_empty()
            || c.virtualization
                .iter()
                .any(|v| virt_eq(v, &r.virtualization)))
        && (r.arch.is_empty() || r.arch.iter().any(|a| c.arch.iter().any(|b| arch_eq(a, b))))
        && r.csi_drivers.iter().all(|d| c.csi_drivers.contains(d))
        && (r.vgpus == 0 || c.gpus > 0)
        && free_cpu + tolerance >= r.vcpus
        && c.memory_free_mb >= r.memory_mb
        && c.gpus_free >= r.vgpus
        && worker_fits
        && geo_ok
        && latency_ok
}

fn status_fits_level(level: Level, status: S) -> bool {
    let root = matches!(
        status,
        S::TargetClusterNotFound
            | S::TargetClusterNotActive
            | S::TargetClusterNoCapacity
            | S::NoActiveClusterWithCapacity
    );
    root == (level == Level::Root)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A placement satisfies every constraint and fits the chosen candidate's free capacity;
    /// a failure happens only when nothing satisfies everything (no false NoPlacement).
    #[test]
    fn placements_keep_every_constraint(r in placement_request(), cands in candidates()) {
        let strict_exists = cands.iter().any(|c| satisfies(&r, c, -1e-6));
        for a in Algorithm::ALL {
            match a.place(&r, &cands) {
                Ok(p) => {
                    let i = p.index.expect("built-ins report the index");
                    let c = &cands[i];
                    prop_assert_eq!(&c.name, &p.candidate);
                    prop_assert!(satisfies(&r, c, 1e-6), "{a} chose {c:?} for {r:?}");
                }
                Err(e) => {
                    prop_assert!(!strict_exists, "{a}: false NoPlacement {e}");
                    prop_assert!(status_fits_level(r.level, e.status), "{a}: {e}");
                    prop_assert!(!e.detail.is_empty());
                }
            }
        }
    }

    /// First-fit finds a candidate whenever one satisfies everything.
    #[test]
    fn first_fit_has_no_false_negatives(r in placement_request(), cands in candidates()) {
        if cands.iter().any(|c| satisfies(&r, c, -1e-6)) {
            prop_assert!(FirstFit.place(&r, &cands).is_ok());
        }
    }

    /// Same input, same output; and for the ranking algorithms, the candidates' order does
    /// not matter (ties are broken by name), failures included.
    #[test]
    fn deterministic_and_order_independent(
        r in placement_request(),
        (cands, shuffled) in candidates().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        for a in Algorithm::ALL {
            let once = a.place(&r, &cands);
            prop_assert_eq!(&once, &a.place(&r, &cands));
            if a == Algorithm::FirstFit {
                continue;
            }
            let other = a.place(&r, &shuffled);
            match (&once, &other) {
                (Ok(p), Ok(q)) => prop_assert_eq!(&p.candidate, &q.candidate, "{}", a),
                (Err(e), Err(f)) => prop_assert_eq!(e, f),
                _ => prop_assert!(false, "{a}: {once:?} vs {other:?}"),
            }
        }
    }

    /// Placing many instances in a row never gives a candidate more than it had free.
    #[test]
    fn batch_never_overcommits(
        r in placement_request(),
        cands in candidates(),
        count in 0usize..60,
        algorithm in proptest::sample::select(Algorithm::ALL.to_vec()),
    ) {
        let before = cands.clone();
        let mut after = cands;
        let out = place_replicas(&algorithm, &r, count, &mut after);
        prop_assert!(out.placements.len() == count || out.failure.is_some());
        for (b, a) in before.iter().zip(&after) {
            let n = out.placements.iter().filter(|p| p.candidate == b.name).count() as u64;
            prop_assert!(r.vcpus * n as f64 <= b.free_vcpus() + 1e-6, "{} × {} cores on {b:?}", n, r.vcpus);
            prop_assert!(r.memory_mb * n <= b.memory_free_mb);
            prop_assert!(u64::from(r.vgpus) * n <= u64::from(b.gpus_free));
            prop_assert_eq!(a.memory_free_mb, b.memory_free_mb - r.memory_mb * n);
            if n > 0 {
                prop_assert!(b.active);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The fast scan (numeric pre-filter, full check only for would-be winners) returns the
    /// same candidate as checking everything: the argmin of (key, name) over feasible ones.
    #[test]
    fn rankings_are_argmins_over_feasible_candidates(r in placement_request(), cands in candidates()) {
        let feasible: Vec<(&Candidate, oakestra_sched::Fit)> = cands
            .iter()
            .filter_map(|c| oakestra_sched::check(&r, c).ok().map(|f| (c, f)))
            .collect();
        let argmin = |key: &dyn Fn(&Candidate, &oakestra_sched::Fit) -> Vec<f64>| {
            feasible
                .iter()
                .min_by(|(a, fa), (b, fb)| {
                    let (ka, kb) = (key(a, fa), key(b, fb));
                    ka.iter()
                        .zip(&kb)
                        .map(|(x, y)| x.total_cmp(y))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then_with(|| a.name.cmp(&b.name))
                })
                .map(|(c, _)| c.name.clone())
        };
        let name = |a: Algorithm| a.place(&r, &cands).ok().map(|p| p.candidate);
        let leftover = |c: &Candidate, f: &oakestra_sched::Fit| {
            vec![oakestra_sched::leftover(&r, c, f), c.cpu_usage_percent]
        };
        prop_assert_eq!(name(Algorithm::BestFit), argmin(&leftover));
        prop_assert_eq!(
            name(Algorithm::LeastLoaded),
            argmin(&|c: &Candidate, _: &oakestra_sched::Fit| {
                vec![c.busy_percent(), -(c.memory_free_mb as f64)]
            })
        );
        prop_assert_eq!(
            name(Algorithm::Ldp),
            argmin(&|c: &Candidate, f: &oakestra_sched::Fit| {
                vec![
                    f.latency_ms,
                    f.distance_km,
                    oakestra_sched::leftover(&r, c, f),
                    c.cpu_usage_percent,
                ]
            })
        );
        prop_assert_eq!(name(Algorithm::FirstFit), feasible.first().map(|(c, _)| c.name.clone()));
    }
}
