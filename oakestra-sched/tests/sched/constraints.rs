//! Hard constraints and failure statuses, the same for every algorithm.

use oakestra_sched::{
    Algorithm, BestFit, Candidate, FirstFit, LeastLoaded, NegativeSchedulingStatus as S,
    PlacementRequest, Scheduler, WorkerCapacity,
};

use crate::common::{request, root_request, worker};

fn all_choose(r: &PlacementRequest, c: &[Candidate], expected: &str) {
    for a in Algorithm::ALL {
        assert_eq!(a.place(r, c).expect("placement").candidate, expected, "{a}");
    }
}

fn all_fail(r: &PlacementRequest, c: &[Candidate], status: S) -> String {
    let mut details = Vec::new();
    for a in Algorithm::ALL {
        let err = a.place(r, c).expect_err("no placement");
        assert_eq!(err.status, status, "{a}: {}", err.detail);
        details.push(err.detail);
    }
    details.dedup();
    assert_eq!(details.len(), 1, "all algorithms explain a failure alike");
    details.remove(0)
}

fn three_workers() -> Vec<Candidate> {
    vec![
        worker("a", 4.0, 0.0, 4096, 4096),
        worker("b", 4.0, 0.0, 4096, 4096),
        worker("c", 4.0, 0.0, 4096, 4096),
    ]
}

#[test]
fn direct_node_list_restricts_the_choice() {
    let mut r = request(1.0, 100);
    r.constraints.nodes = vec!["c".into(), "x".into()];
    all_choose(&r, &three_workers(), "c");
}

#[test]
fn direct_node_list_naming_no_active_worker_is_no_node_found() {
    let mut workers = three_workers();
    workers[2].active = false;
    let mut r = request(1.0, 100);
    r.constraints.nodes = vec!["c".into(), "x".into()];
    let detail = all_fail(&r, &workers, S::NoNodeFound);
    assert_eq!(
        detail,
        "3 workers: 2 not in the node list (c, x), 1 inactive"
    );
}

#[test]
fn listed_node_without_capacity_is_no_worker_capacity() {
    let mut r = request(1.0, 8000);
    r.constraints.nodes = vec!["b".into()];
    let detail = all_fail(&r, &three_workers(), S::NoWorkerCapacity);
    assert_eq!(
        detail,
        "3 workers: 2 not in the node list (b), 1 lack memory (need 8000 MB, best has 4096 MB)"
    );
}

#[test]
fn detail_counts_every_reason() {
    let workers = vec![
        Candidate {
            active: false,
            ..worker("a", 4.0, 0.0, 1024, 1024)
        },
        worker("b", 4.0, 0.0, 1024, 128),
        worker("c", 4.0, 0.0, 1024, 256),
    ];
    let detail = all_fail(&request(1.0, 512), &workers, S::NoWorkerCapacity);
    assert_eq!(
        detail,
        "3 workers: 1 inactive, 2 lack memory (need 512 MB, best has 256 MB)"
    );
}

#[test]
fn no_worker_at_all_is_no_worker_capacity() {
    let detail = all_fail(&request(1.0, 1), &[], S::NoWorkerCapacity);
    assert_eq!(detail, "0 workers to choose from");
}

#[test]
fn only_unqualified_workers_is_no_qualified_worker_found() {
    let mut r = request(1.0, 100);
    r.virtualization = "unikernel".into();
    let detail = all_fail(&r, &three_workers(), S::NoQualifiedWorkerFound);
    assert_eq!(detail, "3 workers: 3 lack virtualization unikernel");
}

#[test]
fn inactive_workers_are_never_chosen_and_make_the_failure_transient() {
    let mut workers = three_workers();
    for w in &mut workers {
        w.active = false;
    }
    let detail = all_fail(&request(0.0, 0), &workers, S::NoWorkerCapacity);
    assert_eq!(detail, "3 workers: 3 inactive");
    workers[1].active = true;
    all_choose(&request(0.0, 0), &workers, "b");
}

#[test]
fn docker_and_container_are_the_same_virtualization() {
    let mut workers = three_workers();
    for w in &mut workers {
        w.virtualization = vec!["docker".into()];
    }
    workers[0].virtualization = vec!["unikernel".into()];
    workers[1].virtualization = vec!["unikernel".into()];
    all_choose(&request(1.0, 1), &workers, "c");
}

#[test]
fn unikernel_may_run_on_any_of_its_architectures() {
    let mut workers = three_workers();
    for w in &mut workers {
        w.virtualization = vec!["container".into(), "unikernel".into()];
    }
    workers[0].arch = vec!["riscv64".into()];
    workers[1].arch = vec!["aarch64".into()];
    workers[2].arch = vec!["s390x".into()];
    let mut r = request(1.0, 1);
    r.virtualization = "unikernel".into();
    r.arch = vec!["amd64".into(), "arm64".into()];
    // aarch64 is arm64.
    all_choose(&r, &workers, "b");
    r.arch = vec!["amd64".into()];
    let detail = all_fail(&r, &workers, S::NoQualifiedWorkerFound);
    assert_eq!(detail, "3 workers: 3 lack architecture (need one of amd64)");
}

#[test]
fn gpus_must_exist_and_be_free() {
    let mut workers = three_workers();
    workers[1].gpus = 2;
    workers[1].gpus_free = 0;
    workers[2].gpus = 1;
    workers[2].gpus_free = 1;
    let mut r = request(1.0, 1);
    r.vgpus = 1;
    all_choose(&r, &workers, "c");
    r.vgpus = 2;
    let detail = all_fail(&r, &workers, S::NoWorkerCapacity);
    assert_eq!(
        detail,
        "3 workers: 1 have no GPU, 2 lack free GPUs (need 2, best has 1)"
    );
}

#[test]
fn csi_drivers_and_addons_must_all_be_present() {
    let mut workers = three_workers();
    workers[0].csi_drivers = vec!["nfs".into()];
    workers[1].csi_drivers = vec!["nfs".into(), "s3".into()];
    workers[1].addons = vec!["flops".into()];
    workers[2].csi_drivers = vec!["nfs".into(), "s3".into()];
    workers[2].addons = vec!["flops".into(), "sgx".into()];
    let mut r = request(1.0, 1);
    r.csi_drivers = vec!["s3".into(), "nfs".into()];
    r.constraints.addons = vec!["sgx".into()];
    all_choose(&r, &workers, "c");
    r.constraints.addons = vec!["tpm".into()];
    let detail = all_fail(&r, &workers, S::NoQualifiedWorkerFound);
    assert_eq!(
        detail,
        "3 workers: 1 lack CSI drivers (need s3, nfs), 2 lack add-ons (need tpm)"
    );
}

#[test]
fn cpu_capacity_uses_free_cores() {
    let workers = vec![
        worker("a", 4.0, 75.0, 4096, 4096),
        worker("b", 2.0, 0.0, 4096, 4096),
    ];
    // a has 1 free core, b has 2.
    all_choose(&request(1.5, 1), &workers, "b");
    let detail = all_fail(&request(2.5, 1), &workers, S::NoWorkerCapacity);
    assert_eq!(
        detail,
        "2 workers: 2 lack CPU (need 2.5 cores, best has 2.00 free)"
    );
}

// ---- root level -------------------------------------------------------------------------

fn clusters() -> Vec<Candidate> {
    vec![
        worker("east", 16.0, 0.0, 32768, 32768),
        Candidate {
            active: false,
            ..worker("north", 16.0, 0.0, 32768, 32768)
        },
        worker("west", 16.0, 0.0, 32768, 1024),
    ]
}

#[test]
fn root_direct_cluster_statuses() {
    let mut r = root_request(1.0, 2048);
    r.constraints.cluster = Some("east".into());
    all_choose(&r, &clusters(), "east");

    r.constraints.cluster = Some("south".into());
    let detail = all_fail(&r, &clusters(), S::TargetClusterNotFound);
    assert_eq!(
        detail,
        "3 clusters: 3 not the target cluster (target cluster \"south\")"
    );

    r.constraints.cluster = Some("north".into());
    all_fail(&r, &clusters(), S::TargetClusterNotActive);

    r.constraints.cluster = Some("west".into());
    let detail = all_fail(&r, &clusters(), S::TargetClusterNoCapacity);
    assert_eq!(
        detail,
        "3 clusters: 2 not the target cluster, 1 lack memory (need 2048 MB, best has 1024 MB) \
         (target cluster \"west\")"
    );
}

#[test]
fn root_without_target_fails_with_no_active_cluster_with_capacity() {
    let detail = all_fail(
        &root_request(1.0, 65536),
        &clusters(),
        S::NoActiveClusterWithCapacity,
    );
    assert_eq!(
        detail,
        "3 clusters: 1 inactive, 2 lack memory (need 65536 MB, best has 32768 MB)"
    );
}

#[test]
fn root_clusters_constraint_allows_only_listed_clusters() {
    let mut r = root_request(1.0, 512);
    r.constraints.clusters = vec!["west".into(), "north".into()];
    all_choose(&r, &clusters(), "west");
    // Node lists are a cluster-level matter; the root ignores them.
    r.constraints.nodes = vec!["somewhere".into()];
    all_choose(&r, &clusters(), "west");
}

#[test]
fn root_never_picks_a_cluster_where_no_single_worker_fits() {
    // "big" has the most memory in total, but spread over four 1 GB workers.
    let big = Candidate::cluster_of(
        "big",
        &[
            worker("b1", 2.0, 0.0, 1024, 1024),
            worker("b2", 2.0, 0.0, 1024, 1024),
            worker("b3", 2.0, 0.0, 1024, 1024),
            worker("b4", 2.0, 0.0, 1024, 1024),
        ],
    );
    let small = Candidate::cluster_of("small", &[worker("s1", 4.0, 50.0, 2048, 2048)]);
    assert_eq!(big.memory_free_mb, 4096);
    let r = root_request(1.0, 1536);
    all_choose(&r, &[big.clone(), small], "small");
    let detail = all_fail(&r, &[big], S::NoActiveClusterWithCapacity);
    assert_eq!(
        detail,
        "1 cluster: 1 have no single worker with enough memory (need 1536 MB, largest has 1024 MB)"
    );
}

#[test]
fn cluster_of_aggregates_active_workers_only() {
    let mut w3 = worker("w3", 64.0, 0.0, 65536, 65536);
    w3.active = false;
    let mut w2 = worker("w2", 2.0, 50.0, 2048, 512);
    w2.virtualization = vec!["unikernel".into()];
    w2.arch = vec!["arm64".into()];
    w2.csi_drivers = vec!["nfs".into()];
    w2.gpus = 1;
    w2.gpus_free = 1;
    let c = Candidate::cluster_of("c", &[worker("w1", 4.0, 25.0, 4096, 1024), w2, w3]);
    assert!(c.active);
    assert_eq!(c.cpu_cores, 6.0);
    assert!((c.free_vcpus() - 4.0).abs() < 1e-9, "3 + 1 free cores");
    assert_eq!((c.memory_total_mb, c.memory_free_mb), (6144, 1536));
    assert_eq!((c.gpus, c.gpus_free), (1, 1));
    assert_eq!(c.virtualization, ["container", "unikernel"]);
    assert_eq!(c.arch, ["amd64", "arm64"]);
    assert_eq!(c.csi_drivers, ["nfs"]);
    assert_eq!(
        c.max_worker_free,
        Some(WorkerCapacity {
            vcpus: 3.0,
            memory_mb: 1024,
            gpus: 1
        })
    );
    let none = Candidate::cluster_of("empty", &[]);
    assert!(!none.active);
}

// ---- rankings -----------------------------------------------------------------------------

#[test]
fn best_fit_takes_the_tightest_memory_after_placement() {
    // Same cores and load; c leaves the least memory free (as a fraction of its total).
    let workers = vec![
        worker("a", 4.0, 0.0, 8192, 4096),
        worker("b", 4.0, 0.0, 8192, 8192),
        worker("c", 4.0, 0.0, 8192, 1024),
    ];
    assert_eq!(
        BestFit
            .place(&request(1.0, 1000), &workers)
            .unwrap()
            .candidate,
        "c"
    );
    // Least-loaded prefers the most free memory at equal load.
    assert_eq!(
        LeastLoaded
            .place(&request(1.0, 1000), &workers)
            .unwrap()
            .candidate,
        "b"
    );
    assert_eq!(
        FirstFit
            .place(&request(1.0, 1000), &workers)
            .unwrap()
            .candidate,
        "a"
    );
}

#[test]
fn best_fit_weighs_cpu_and_memory_as_fractions() {
    // Left after placement, cpu + memory fractions: a: 0.25 + 0.5 = 0.75;
    // b: 0.75 + 0.0 = 0.75 (tie with a → name); c: 0.5 + 0.5 = 1.0.
    let workers = vec![
        worker("b", 4.0, 0.0, 2000, 500),
        worker("c", 4.0, 25.0, 2000, 1500),
        worker("a", 4.0, 50.0, 2000, 1500),
    ];
    assert_eq!(
        BestFit
            .place(&request(1.0, 500), &workers)
            .unwrap()
            .candidate,
        "a"
    );
}

#[test]
fn ties_are_broken_by_name_whatever_the_order() {
    let mut workers = vec![
        worker("w3", 4.0, 10.0, 4096, 4096),
        worker("w1", 4.0, 10.0, 4096, 4096),
        worker("w2", 4.0, 10.0, 4096, 4096),
    ];
    for _ in 0..3 {
        workers.rotate_left(1);
        for a in [Algorithm::BestFit, Algorithm::LeastLoaded, Algorithm::Ldp] {
            assert_eq!(a.place(&request(1.0, 1), &workers).unwrap().candidate, "w1");
        }
    }
}

#[test]
fn placement_reports_index_and_no_latency_without_latency_constraints() {
    let p = BestFit.place(&request(1.0, 1), &three_workers()).unwrap();
    assert_eq!(p.index, Some(0));
    assert_eq!(p.expected_latency_ms, None);
    assert_eq!(p.distance_km, None);
}

#[test]
fn algorithm_names_round_trip() {
    for a in Algorithm::ALL {
        assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        assert_eq!(a.name(), a.as_str());
    }
    let err = "random".parse::<Algorithm>().unwrap_err();
    assert!(
        err.to_string()
            .contains("first_fit, best_fit, least_loaded, ldp")
    );
    let boxed: Box<dyn Scheduler> = Box::new(LeastLoaded);
    assert_eq!(boxed.name(), "least_loaded");
}
