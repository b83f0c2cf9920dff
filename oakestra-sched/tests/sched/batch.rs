//! Batch placement and custom schedulers.

use oakestra_sched::{
    BestFit, Candidate, LeastLoaded, NegativeSchedulingStatus as S, NoPlacement, Placement,
    PlacementRequest, Scheduler, check, commit, diagnose, place_each, place_replicas, validate,
};

use crate::common::{request, root_request, worker};

fn three() -> Vec<Candidate> {
    vec![
        worker("a", 2.0, 0.0, 2048, 1024),
        worker("b", 2.0, 0.0, 2048, 1024),
        worker("c", 2.0, 0.0, 2048, 1024),
    ]
}

fn chosen(placements: &[Placement]) -> Vec<&str> {
    placements.iter().map(|p| p.candidate.as_str()).collect()
}

#[test]
fn best_fit_packs_and_stops_when_full() {
    let mut workers = three();
    let out = place_replicas(&BestFit, &request(1.0, 512), 10, &mut workers);
    assert_eq!(chosen(&out.placements), ["a", "a", "b", "b", "c", "c"]);
    let failure = out.failure.unwrap();
    assert_eq!(failure.status, S::NoWorkerCapacity);
    assert_eq!(
        failure.detail,
        "3 workers: 3 lack CPU (need 1 cores, best has 0.00 free)"
    );
    for w in &workers {
        assert_eq!(w.memory_free_mb, 0);
        assert!((w.cpu_load_percent - 100.0).abs() < 1e-9);
    }
}

#[test]
fn least_loaded_spreads() {
    let mut workers = three();
    let out = place_replicas(&LeastLoaded, &request(1.0, 512), 6, &mut workers);
    assert_eq!(chosen(&out.placements), ["a", "b", "c", "a", "b", "c"]);
    assert_eq!(out.failure, None);
}

#[test]
fn place_each_goes_on_after_a_failure() {
    let mut workers = three();
    let requests = [request(1.0, 2000), request(1.0, 1000), request(0.5, 10)];
    let results = place_each(&BestFit, &requests, &mut workers);
    assert_eq!(results[0].as_ref().unwrap_err().status, S::NoWorkerCapacity);
    assert_eq!(results[1].as_ref().unwrap().candidate, "a");
    // a now has 1 core and 24 MB left: the tightest fit for the small one.
    assert_eq!(results[2].as_ref().unwrap().candidate, "a");
}

#[test]
fn root_level_commit_keeps_the_largest_worker_bound() {
    let mut cluster = Candidate::cluster_of(
        "c",
        &[
            worker("w1", 2.0, 0.0, 2048, 2048),
            worker("w2", 2.0, 0.0, 2048, 512),
        ],
    );
    let r = root_request(1.0, 1536);
    commit(&r, &mut cluster);
    assert_eq!(cluster.memory_free_mb, 1024);
    let w = cluster.max_worker_free.unwrap();
    assert_eq!(
        w.memory_mb, 1024,
        "no worker can have more free than the cluster"
    );
    // So the root does not send a second such instance there.
    let err = BestFit.place(&r, &[cluster]).unwrap_err();
    assert_eq!(err.status, S::NoActiveClusterWithCapacity);
}

/// How to write your own scheduler: reuse [`check`] for the hard constraints and
/// [`diagnose`] for failures, and rank feasible candidates however you like.
#[derive(Debug)]
struct MostMemory;

impl Scheduler for MostMemory {
    fn name(&self) -> &str {
        "most_memory"
    }

    fn place(&self, r: &PlacementRequest, cands: &[Candidate]) -> Result<Placement, NoPlacement> {
        cands
            .iter()
            .enumerate()
            .filter(|(_, c)| check(r, c).is_ok())
            .max_by(|(_, a), (_, b)| {
                a.memory_free_mb
                    .cmp(&b.memory_free_mb)
                    .then_with(|| b.name.cmp(&a.name))
            })
            .map(|(i, c)| Placement {
                candidate: c.name.clone(),
                index: Some(i),
                expected_latency_ms: None,
                distance_km: None,
            })
            .ok_or_else(|| diagnose(r, cands))
    }
}

#[test]
fn a_custom_scheduler_plugs_into_the_batch_helper() {
    let mut workers = three();
    workers[1].memory_free_mb = 2048;
    let out = place_replicas(&MostMemory, &request(0.5, 512), 3, &mut workers);
    assert_eq!(chosen(&out.placements), ["b", "b", "a"]);
}

/// A scheduler that ignores the constraints, like a buggy external one.
#[derive(Debug)]
struct AlwaysFirst;

impl Scheduler for AlwaysFirst {
    fn name(&self) -> &str {
        "always_first"
    }

    fn place(&self, _: &PlacementRequest, cands: &[Candidate]) -> Result<Placement, NoPlacement> {
        Ok(Placement {
            candidate: cands[0].name.clone(),
            index: None,
            expected_latency_ms: None,
            distance_km: None,
        })
    }
}

#[test]
fn batch_refuses_an_answer_that_breaks_the_constraints() {
    let mut workers = three();
    workers[0].active = false;
    let out = place_replicas(&AlwaysFirst, &request(1.0, 1), 1, &mut workers);
    let failure = out.failure.unwrap();
    assert!(
        failure.detail.starts_with("scheduler always_first chose \"a\", which fails the Inactive check; 3 workers: 1 inactive, 2 feasible but not chosen"),
        "{}",
        failure.detail
    );
    assert_eq!(workers[0].memory_free_mb, 1024, "nothing committed");

    let ghost = Placement {
        candidate: "ghost".into(),
        index: Some(1),
        expected_latency_ms: None,
        distance_km: None,
    };
    assert_eq!(
        validate(&request(1.0, 1), &workers, &ghost),
        Err("chose \"ghost\", which is not a candidate".to_owned())
    );
    let right = Placement {
        candidate: "c".into(),
        index: None,
        ..ghost
    };
    assert_eq!(validate(&request(1.0, 1), &workers, &right), Ok(2));
}
