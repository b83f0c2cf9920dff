//! LDP on hand-built topologies whose latency-optimal answer is known.

use oakestra_sched::{
    Algorithm, BestFit, Candidate, ConnectivityConstraint, Endpoint, FirstFit, GeoConstraint,
    LatencyConstraint, Ldp, NegativeSchedulingStatus as S, PlacementRequest, Scheduler,
};

use crate::common::{at, request, root_request, viv, worker};

fn user(name: &str, vector: &[f64]) -> Endpoint {
    Endpoint {
        name: name.into(),
        location: None,
        vivaldi: Some(viv(vector, 0.0)),
    }
}

fn with_latency(mut r: PlacementRequest, to: Endpoint, threshold_ms: f64) -> PlacementRequest {
    r.constraints.latency.push(LatencyConstraint {
        user: to,
        threshold_ms,
    });
    r
}

/// Users at the origin; near = 6 ms (3-4-5 triangle plus 1 ms height), mid = 10 ms,
/// far = 50 ms. `mid` is the tightest fit, `near` the loosest.
fn vivaldi_topology() -> Vec<Candidate> {
    let mut far = worker("far", 4.0, 0.0, 4096, 512);
    far.vivaldi = Some(viv(&[30.0, 40.0], 0.0));
    let mut near = worker("near", 4.0, 0.0, 4096, 4096);
    near.vivaldi = Some(viv(&[3.0, 4.0], 1.0));
    let mut mid = worker("mid", 4.0, 0.0, 4096, 1024);
    mid.vivaldi = Some(viv(&[6.0, 8.0], 0.0));
    vec![far, near, mid]
}

#[test]
fn ldp_picks_the_lowest_latency_and_others_stay_within_the_threshold() {
    let r = with_latency(request(1.0, 256), user("munich", &[0.0, 0.0]), 20.0);
    let p = Ldp.place(&r, &vivaldi_topology()).unwrap();
    assert_eq!(p.candidate, "near");
    assert_eq!(p.expected_latency_ms, Some(6.0));
    // The constraint is hard for every algorithm; only the preference differs.
    assert_eq!(
        BestFit.place(&r, &vivaldi_topology()).unwrap().candidate,
        "mid"
    );
    assert_eq!(
        FirstFit.place(&r, &vivaldi_topology()).unwrap().candidate,
        "near"
    );
}

#[test]
fn unreachable_latency_threshold_is_no_qualified_worker() {
    let r = with_latency(request(1.0, 256), user("munich", &[0.0, 0.0]), 5.0);
    let err = Ldp.place(&r, &vivaldi_topology()).unwrap_err();
    assert_eq!(err.status, S::NoQualifiedWorkerFound);
    assert_eq!(
        err.detail,
        "3 workers: 3 too slow to the users (need at most 5 ms, best has 6.0 ms)"
    );
}

#[test]
fn measured_rtt_overrides_the_vivaldi_estimate() {
    let mut topology = vivaldi_topology();
    topology[1].rtt_ms.insert("munich".into(), 25.0);
    let r = with_latency(request(1.0, 256), user("munich", &[0.0, 0.0]), 20.0);
    assert_eq!(Ldp.place(&r, &topology).unwrap().candidate, "mid");
}

#[test]
fn workers_without_any_latency_estimate_are_excluded() {
    let mut topology = vivaldi_topology();
    for w in &mut topology {
        w.vivaldi = None;
    }
    topology[2].rtt_ms.insert("munich".into(), 12.0);
    let r = with_latency(request(1.0, 256), user("munich", &[0.0, 0.0]), 20.0);
    assert_eq!(Ldp.place(&r, &topology).unwrap().candidate, "mid");
    topology[2].rtt_ms.clear();
    let err = Ldp.place(&r, &topology).unwrap_err();
    assert_eq!(
        err.detail,
        "3 workers: 3 have no latency estimate to the users"
    );
}

/// Munich users, 120 km (the paper's SLA): Garching ≈ 13 km, Augsburg ≈ 57 km, Berlin ≈ 504 km.
fn geo_topology() -> Vec<Candidate> {
    let place = |name: &str, lat: f64, long: f64, free_mb: u64| {
        let mut w = worker(name, 4.0, 0.0, 4096, free_mb);
        w.location = Some(at(lat, long));
        w
    };
    vec![
        place("augsburg", 48.3705, 10.8978, 512),
        place("berlin", 52.5200, 13.4050, 300),
        place("garching", 48.2489, 11.6532, 4096),
        worker("unknown", 4.0, 0.0, 4096, 4096),
    ]
}

fn geo_request(threshold_km: f64) -> PlacementRequest {
    let mut r = request(1.0, 256);
    r.constraints.geo.push(GeoConstraint {
        location: at(48.1372, 11.5756),
        threshold_km,
    });
    r
}

#[test]
fn geo_threshold_is_hard_and_ldp_prefers_the_nearest() {
    let p = Ldp.place(&geo_request(120.0), &geo_topology()).unwrap();
    assert_eq!(p.candidate, "garching");
    let d = p.distance_km.unwrap();
    assert!((12.0..15.0).contains(&d), "{d}");
    // Berlin is the tightest fit but out of range; Augsburg is the tightest in range.
    assert_eq!(
        BestFit
            .place(&geo_request(120.0), &geo_topology())
            .unwrap()
            .candidate,
        "augsburg"
    );

    let err = Ldp.place(&geo_request(10.0), &geo_topology()).unwrap_err();
    assert_eq!(err.status, S::NoQualifiedWorkerFound);
    assert_eq!(
        err.detail,
        "4 workers: 1 have no location, 3 too far (need within 10 km, nearest is 14 km)"
    );
}

/// Service-to-service: the target `db` runs on w2 (full) and w5 (not a candidate).
fn s2s_topology() -> Vec<Candidate> {
    let rtts = |pairs: &[(&str, f64)]| pairs.iter().map(|(n, ms)| ((*n).to_owned(), *ms)).collect();
    let mut w1 = worker("w1", 4.0, 0.0, 4096, 4096);
    w1.rtt_ms = rtts(&[("w2", 30.0), ("w5", 40.0)]);
    let mut w2 = worker("w2", 4.0, 0.0, 4096, 100);
    w2.rtt_ms = rtts(&[("w5", 20.0)]);
    let mut w3 = worker("w3", 4.0, 0.0, 4096, 4096);
    w3.rtt_ms = rtts(&[("w2", 12.0), ("w5", 4.0)]);
    let mut w4 = worker("w4", 4.0, 0.0, 4096, 1024);
    w4.rtt_ms = rtts(&[("w2", 8.0)]);
    let w6 = worker("w6", 4.0, 0.0, 4096, 4096);
    vec![w1, w2, w3, w4, w6]
}

fn s2s_request(threshold_ms: f64, on: &[&str]) -> PlacementRequest {
    let mut r = request(1.0, 256);
    r.constraints.connectivity.push(ConnectivityConstraint {
        target_service: "db".into(),
        threshold_ms,
        instances: on
            .iter()
            .map(|n| Endpoint {
                name: (*n).into(),
                ..Endpoint::default()
            })
            .collect(),
    });
    r
}

#[test]
fn s2s_connectivity_uses_the_closest_target_instance() {
    let p = Ldp
        .place(&s2s_request(15.0, &["w2", "w5"]), &s2s_topology())
        .unwrap();
    assert_eq!(p.candidate, "w3");
    assert_eq!(p.expected_latency_ms, Some(4.0));
    // Best fit chooses the tighter w4 (8 ms), still within the threshold.
    assert_eq!(
        BestFit
            .place(&s2s_request(15.0, &["w2", "w5"]), &s2s_topology())
            .unwrap()
            .candidate,
        "w4"
    );
}

#[test]
fn s2s_on_the_same_worker_is_zero_latency() {
    let mut topology = s2s_topology();
    topology[1].memory_free_mb = 4096;
    let p = Ldp
        .place(&s2s_request(15.0, &["w2", "w5"]), &topology)
        .unwrap();
    assert_eq!(
        (p.candidate.as_str(), p.expected_latency_ms),
        ("w2", Some(0.0))
    );
}

#[test]
fn s2s_failure_names_the_best_latency() {
    let err = Ldp
        .place(&s2s_request(3.0, &["w2", "w5"]), &s2s_topology())
        .unwrap_err();
    assert_eq!(err.status, S::NoWorkerCapacity);
    assert_eq!(
        err.detail,
        "5 workers: 1 have no latency estimate to the target service's instances, \
         3 too slow to the target service (need at most 3 ms, best has 4.0 ms), \
         1 lack memory (need 256 MB, best has 100 MB)"
    );
}

#[test]
fn s2s_without_placed_target_instances_holds_trivially() {
    let p = Ldp.place(&s2s_request(1.0, &[]), &s2s_topology()).unwrap();
    assert_eq!(p.expected_latency_ms, None);
    assert_eq!(p.candidate, "w4", "best fit decides");
}

#[test]
fn expected_latency_sums_user_and_service_latency() {
    // a: 5 ms to users + 20 ms to db = 25; b: 10 + 5 = 15 → b.
    let mut a = worker("a", 4.0, 0.0, 4096, 4096);
    a.rtt_ms = [("users".to_owned(), 5.0), ("db1".to_owned(), 20.0)].into();
    let mut b = worker("b", 4.0, 0.0, 4096, 4096);
    b.rtt_ms = [("users".to_owned(), 10.0), ("db1".to_owned(), 5.0)].into();
    let mut r = s2s_request(30.0, &["db1"]);
    r = with_latency(
        r,
        Endpoint {
            name: "users".into(),
            ..Endpoint::default()
        },
        30.0,
    );
    let p = Ldp.place(&r, &[a, b]).unwrap();
    assert_eq!(
        (p.candidate.as_str(), p.expected_latency_ms),
        ("b", Some(15.0))
    );
}

#[test]
fn equal_latency_falls_back_to_best_fit() {
    let mut loose = worker("a-loose", 4.0, 0.0, 4096, 4096);
    let mut tight = worker("b-tight", 4.0, 50.0, 4096, 1024);
    loose.vivaldi = Some(viv(&[1.0], 0.0));
    tight.vivaldi = Some(viv(&[-1.0], 0.0));
    let r = with_latency(request(1.0, 256), user("u", &[0.0]), 10.0);
    assert_eq!(Ldp.place(&r, &[loose, tight]).unwrap().candidate, "b-tight");
}

#[test]
fn nearest_of_500_on_a_line_in_any_order() {
    let mut line: Vec<Candidate> = (0..500)
        .map(|i| {
            let mut w = worker(&format!("w{i:03}"), 4.0, 0.0, 4096, 4096);
            w.vivaldi = Some(viv(&[f64::from(i)], 0.5));
            w
        })
        .collect();
    let r = with_latency(request(1.0, 256), user("u", &[250.3]), 20.0);
    let p = Ldp.place(&r, &line).unwrap();
    assert_eq!(p.candidate, "w250");
    assert!((p.expected_latency_ms.unwrap() - 0.8).abs() < 1e-9);
    line.reverse();
    assert_eq!(Ldp.place(&r, &line).unwrap().candidate, "w250");
    line.rotate_left(123);
    assert_eq!(Ldp.place(&r, &line).unwrap().candidate, "w250");
}

#[test]
fn hierarchical_ldp_root_picks_the_near_cluster_then_the_near_worker() {
    let cluster_workers = |prefix: &str, base: f64| -> Vec<Candidate> {
        (0..3)
            .map(|i| {
                let mut w = worker(&format!("{prefix}{i}"), 4.0, 0.0, 4096, 4096);
                w.vivaldi = Some(viv(&[base + 5.0 * f64::from(i)], 0.0));
                w
            })
            .collect()
    };
    let eu = cluster_workers("eu", 0.0);
    let us = cluster_workers("us", 100.0);
    let mut eu_cluster = Candidate::cluster_of("eu", &eu);
    eu_cluster.vivaldi = Some(viv(&[5.0], 0.0));
    let mut us_cluster = Candidate::cluster_of("us", &us);
    us_cluster.vivaldi = Some(viv(&[105.0], 0.0));

    let users = user("berlin", &[9.0]);
    let root = with_latency(root_request(1.0, 256), users.clone(), 50.0);
    let cluster = Algorithm::Ldp
        .place(&root, &[us_cluster, eu_cluster])
        .unwrap();
    assert_eq!(cluster.candidate, "eu");

    let local = with_latency(request(1.0, 256), users, 50.0);
    assert_eq!(Ldp.place(&local, &eu).unwrap().candidate, "eu2");
}
